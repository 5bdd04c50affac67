// The dtype-independent reductions of the selective-scan backward, both in a fixed order (no
// atomics): per-block dB/dC partials over the blocks of a group (deterministic mode), and per-row
// dA/dD/ddelta_bias partials over the batch.

#include "scan_common.cuh"

namespace mamba_cuda {

// ws_bc (count, G, blocks per group, 2, N, L) -> dB/dC[b0 + i] (G, N, L).
__global__ void scan_reduce_bc_kernel(const ScanParams p, int64_t b0, int64_t count) {
  const int64_t blocks = p.dim_per_group / p.warps;
  const int64_t L = p.seqlen, N = p.dstate;
  const int64_t total = count * p.n_groups * 2 * N * L;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = e % L, n = (e / L) % N, which = (e / (L * N)) % 2, bg = e / (L * N * 2);  // bg = i * G + g
    const float* src = p.ws_bc + ((bg * blocks * 2 + which) * N + n) * L + t;
    float s = 0.f;
    for (int64_t k = 0; k < blocks; ++k) s += src[k * 2 * N * L];
    const int64_t g = bg % p.n_groups, i = bg / p.n_groups;
    (which == 0 ? p.dB : p.dC)[(((b0 + i) * p.n_groups + g) * N + n) * L + t] = s;
  }
}

// ws_small (batch, dim, N + 2) -> dA (dim, N), dD (dim), ddelta_bias (dim).
__global__ void scan_reduce_small_kernel(const ScanParams p) {
  const int64_t per_row = p.dstate + 2;
  const int64_t total = p.dim * per_row;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = e / per_row, q = e % per_row;
    float s = 0.f;
    for (int64_t b = 0; b < p.batch; ++b) s += p.ws_small[(b * p.dim + d) * per_row + q];
    if (q < p.dstate)
      p.dA[d * p.dstate + q] = s;
    else if (q == p.dstate && p.dD != nullptr)
      p.dD[d] = s;
    else if (q == p.dstate + 1 && p.ddelta_bias != nullptr)
      p.ddelta_bias[d] = s;
  }
}

namespace {
unsigned grid_for(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}
}  // namespace

cudaError_t scan_reduce_bc(const ScanParams& p, int64_t batch_begin, int64_t batch_count, cudaStream_t stream) {
  const int64_t total = batch_count * p.n_groups * 2 * p.dstate * p.seqlen;
  KERNEL_LAUNCH(scan_reduce_bc_kernel, dim3(grid_for(total, 256)), dim3(256), 0, stream)(p, batch_begin, batch_count);
  return cudaGetLastError();
}

cudaError_t scan_reduce_small(const ScanParams& p, cudaStream_t stream) {
  const int64_t total = p.dim * (p.dstate + 2);
  KERNEL_LAUNCH(scan_reduce_small_kernel, dim3(grid_for(total, 256)), dim3(256), 0, stream)(p);
  return cudaGetLastError();
}

}  // namespace mamba_cuda
