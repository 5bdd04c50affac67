// Selective scan forward, fp16 inputs (one dtype per file so that the files compile in parallel).

#include "selective_scan_fwd.cuh"

namespace mamba_cuda {

cudaError_t scan_fwd_fp16(const ScanParams& p, cudaStream_t stream) { return scan_fwd<__half>(p, stream); }

}  // namespace mamba_cuda
