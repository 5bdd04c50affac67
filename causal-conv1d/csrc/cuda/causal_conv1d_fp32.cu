// Causal conv1d forward and backward, fp32 inputs (one dtype per file so that the files compile in parallel).

#include "conv_kernels.cuh"

namespace conv_cuda {

cudaError_t conv_fwd_fp32(const ConvParams& p, cudaStream_t stream) { return conv_fwd<float>(p, stream); }
cudaError_t conv_bwd_fp32(const ConvParams& p, cudaStream_t stream) { return conv_bwd<float>(p, stream); }

}  // namespace conv_cuda
