// Causal conv1d forward and backward, fp16 inputs (one dtype per file so that the files compile in parallel).

#include "conv_kernels.cuh"

namespace conv_cuda {

cudaError_t conv_fwd_fp16(const ConvParams& p, cudaStream_t stream) { return conv_fwd<__half>(p, stream); }
cudaError_t conv_bwd_fp16(const ConvParams& p, cudaStream_t stream) { return conv_bwd<__half>(p, stream); }

}  // namespace conv_cuda
