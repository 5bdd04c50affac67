// Causal conv1d forward and backward, bf16 inputs (one dtype per file so that the files compile in parallel).

#include "conv_kernels.cuh"

namespace conv_cuda {

cudaError_t conv_fwd_bf16(const ConvParams& p, cudaStream_t stream) { return conv_fwd<__nv_bfloat16>(p, stream); }
cudaError_t conv_bwd_bf16(const ConvParams& p, cudaStream_t stream) { return conv_bwd<__nv_bfloat16>(p, stream); }

}  // namespace conv_cuda
