// Selective scan backward, fp32 inputs (one dtype per file so that the files compile in parallel).

#include "selective_scan_bwd.cuh"

namespace mamba_cuda {

cudaError_t scan_bwd_fp32(const ScanParams& p, cudaStream_t stream) { return scan_bwd<float>(p, stream); }

}  // namespace mamba_cuda
