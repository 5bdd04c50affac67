// Selective scan backward, bf16 inputs (one dtype per file so that the files compile in parallel).

#include "selective_scan_bwd.cuh"

namespace mamba_cuda {

cudaError_t scan_bwd_bf16(const ScanParams& p, cudaStream_t stream) { return scan_bwd<__nv_bfloat16>(p, stream); }

}  // namespace mamba_cuda
