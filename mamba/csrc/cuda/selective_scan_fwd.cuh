// Selective scan forward kernel.
//
// One warp per (batch, channel) row, W warps (consecutive channels of one batch element and one
// B/C group) per block; see selective_scan.h for the chunking. For every chunk and every state n,
// each lane composes the affine maps h -> a*h + b of its K steps (a = exp2(delta * A * log2 e),
// b = delta * B * u), the warp scans the 32 lane maps with shuffles, seeded with the state carried
// from the previous chunk, and each lane re-runs its steps from its exclusive prefix to accumulate
// y += C * h. `reverse` runs the recurrence from the last step to the first on the unflipped data:
// the lanes and the steps inside a lane are simply visited in the opposite order.
// Steps past the end are masked explicitly (delta = 0 and u = 0, hence decay 1 and input 0), so
// the state after the last chunk is exact and the padding never reaches the outputs.
// The B/C tile of the next chunk is staged while this one computes (p.fwd_tiles == 2): each
// state iteration stores one B and one C value of the next tile per thread (see TileRows) into
// the other tile buffer, loaded at the end of the iteration before, so the global-memory latency
// hides behind a whole iteration of the scan instead of stalling the block between two barriers,
// and one barrier per chunk remains. Blocks with fewer threads than the next chunk has steps
// (under 8 warps before a 256-step chunk) stage it after the state loop instead.
#pragma once

#include "scan_common.cuh"

namespace mamba_cuda {

template <typename T, int K, bool kHasZ, bool kReverse>
__device__ __forceinline__ void fwd_chunk(const ScanParams& p, int64_t b, int64_t d, int64_t j, int64_t t0,
                                          const float* tile_b, const float* tile_c, float* carry, int lane,
                                          TileRows& next) {
  const int64_t L = p.seqlen;
  const int N = static_cast<int>(p.dstate);
  const int tl0 = lane * K;        // first step of this lane inside the chunk
  const int col0 = tile_col(tl0);   // K divides 32: a lane's steps share one padding group
  const int64_t tb = t0 + tl0;      // ... in the sequence
  const int vlane = kReverse ? 31 - lane : lane;  // position of the lane in processing order

  const T* u_row = static_cast<const T*>(p.u) + b * p.u_sb + d * p.u_sd;
  const T* delta_row = static_cast<const T*>(p.delta) + b * p.delta_sb + d * p.delta_sd;
  float u[K], dt[K];
  load_row<T, K>(u_row, tb, L, u);
  load_row<T, K>(delta_row, tb, L, dt);

  const float D = p.D != nullptr ? p.D[d] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;
  float dtu[K], y[K];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    float v = dt[k] + bias;
    if (p.delta_softplus) v = softplus_f(v);
    dt[k] = tb + k < L ? v : 0.f;  // padding: decay exp2(0) = 1, input 0 (u loaded as 0)
    dtu[k] = dt[k] * u[k];
    y[k] = D * u[k];
  }

  const float* A_row = p.A + d * p.dstate;
  float* states_row = p.states + ((b * p.dim + d) * p.n_chunks + j) * p.dstate;
  float a_lane = 0.f;  // A[n0 + lane] * log2(e) for the 32 states from n0 (see lane_slice)
  // The next tile's element this thread stores at the end of an iteration, loaded at the end of
  // the iteration before (loaded at the top of the same iteration, ptxas sinks the loads to just
  // before the store, and they would stall it).
  float next_b, next_c;
  load_next<T>(p, next, next_b, next_c);
  for (int n = 0; n < N; ++n) {
    if ((n & 31) == 0) a_lane = lane_slice(A_row, n, N, lane, kLog2e);
    const float a_scale = __shfl_sync(kFullMask, a_lane, n & 31);
    float a[K], x[K];
    lds_run<K>(tile_b + n * kTileStride + col0, x);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      a[k] = exp2f(dt[k] * a_scale);
      x[k] *= dtu[k];
    }
    // Compose this lane's steps in processing order.
    float prod = 1.f, h = 0.f;
#pragma unroll
    for (int i = 0; i < K; ++i) {
      const int k = kReverse ? K - 1 - i : i;
      h = fmaf(a[k], h, x[k]);
      prod *= a[k];
    }
    const float h_carry = carry[n];
    if (vlane == 0) h = fmaf(prod, h_carry, h);  // the first lane starts from the carried state
    warp_scan_affine<!kReverse>(prod, h, lane);
    float h_in = __shfl_sync(kFullMask, h, (kReverse ? lane + 1 : lane - 1) & 31);
    if (vlane == 0) h_in = h_carry;
    float c[K];
    lds_run<K>(tile_c + n * kTileStride + col0, c);
#pragma unroll
    for (int i = 0; i < K; ++i) {
      const int k = kReverse ? K - 1 - i : i;
      h_in = fmaf(a[k], h_in, x[k]);
      y[k] = fmaf(c[k], h_in, y[k]);
    }
    if (vlane == 31) {  // the last lane holds the state at the end of the chunk
      carry[n] = h;
      states_row[n] = h;
    }
    store_next(next, next_b, next_c);
    load_next<T>(p, next, next_b, next_c);
  }

  if constexpr (kHasZ) {
    const T* z_row = static_cast<const T*>(p.z) + b * p.z_sb + d * p.z_sd;
    float z[K];
    load_row<T, K>(z_row, tb, L, z);
#pragma unroll
    for (int k = 0; k < K; ++k) y[k] *= z[k] * sigmoid_f(z[k]);
  }
  T* out_row = static_cast<T*>(p.out) + b * p.out_sb + d * p.out_sd;
  store_row<T, K>(out_row, tb, L, y);
}

// 3 blocks of 8 warps per SM: ptxas fits the kernel in 80 registers without spills (sm_90), where
// 2 blocks let it take 110-119 and leave the SM at 16 warps; 4 blocks (64 registers) would spill.
// Shared memory allows 3 blocks on an H100 with two tiles up to N = 16 (72.5 KB each).
template <typename T, bool kHasZ, bool kReverse>
__global__ void __launch_bounds__(kFwdMaxWarps * 32, 3) scan_fwd_kernel(const ScanParams p) {
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t blocks_per_batch = p.dim / warps;
  const int64_t b = blockIdx.x / blocks_per_batch;
  const int64_t d0 = (blockIdx.x % blocks_per_batch) * warps;
  const int64_t d = d0 + warp;
  const int64_t g = d0 / p.dim_per_group;

  // Tile buffers (B rows then C rows of one chunk each), then each warp's carried state.
  const int64_t tile_floats = 2 * p.dstate * kTileStride;
  float* tiles = dynamic_smem<float>();
  float* carry = tiles + p.fwd_tiles * tile_floats + warp * p.dstate;
  for (int n = lane; n < p.dstate; n += 32) carry[n] = 0.f;

  const ChunkLayout cl = chunk_layout(p.seqlen);
  const int64_t nc = cl.total();
  const bool prefetch = p.fwd_tiles == 2;
  for (int64_t j = 0; j < nc; ++j) {  // processing order
    const int64_t c = kReverse ? nc - 1 - j : j;
    const int64_t t0 = cl.start(c);
    const bool tail = cl.is_tail(c);
    float* tile_b = tiles + (prefetch ? (j & 1) * tile_floats : 0);
    float* tile_c = tile_b + p.dstate * kTileStride;
    float* next_b = tiles + (prefetch ? ((j + 1) & 1) * tile_floats : 0);
    float* next_c = next_b + p.dstate * kTileStride;
    if (!prefetch || j == 0) {  // stage this chunk's tile now
      if (!prefetch) __syncthreads();  // every warp is done with the previous tile
      stage_tile<T>(p, tile_source(p, b, g, t0, tail), tile_b, tile_c);
    }
    TileSource next = {0, 0, 0, 0, 0};
    if (prefetch && j + 1 < nc) {
      const int64_t c_next = kReverse ? nc - 2 - j : j + 1;
      next = tile_source(p, b, g, cl.start(c_next), cl.is_tail(c_next));
    }
    const bool rows_in_loop = next.elems > 0 && static_cast<int>(blockDim.x) >= 1 << next.shift;
    TileRows rows = tile_rows<T>(p, next, next_b, next_c);
    if (!rows_in_loop) rows.count = 0;  // nothing to stage, or after the loop
    // This chunk's tile is complete; with prefetch also every warp is done with the previous
    // chunk, whose buffer now receives the next tile.
    __syncthreads();
    if (tail)
      fwd_chunk<T, kItemsTail, kHasZ, kReverse>(p, b, d, j, t0, tile_b, tile_c, carry, lane, rows);
    else
      fwd_chunk<T, kItemsFull, kHasZ, kReverse>(p, b, d, j, t0, tile_b, tile_c, carry, lane, rows);
    if (next.elems > 0 && !rows_in_loop) stage_tile<T>(p, next, next_b, next_c);
  }
}

template <typename T, bool kHasZ, bool kReverse>
cudaError_t launch_fwd(const ScanParams& p, cudaStream_t stream) {
  const auto kernel = scan_fwd_kernel<T, kHasZ, kReverse>;
  const size_t smem = fwd_smem_bytes(p.warps, p.dstate, p.fwd_tiles);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int64_t blocks = p.batch * (p.dim / p.warps);
  KERNEL_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks)), dim3(p.warps * 32), smem, stream)(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t scan_fwd(const ScanParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  if (p.z != nullptr)
    return p.reverse ? launch_fwd<T, true, true>(p, stream) : launch_fwd<T, true, false>(p, stream);
  return p.reverse ? launch_fwd<T, false, true>(p, stream) : launch_fwd<T, false, false>(p, stream);
}

}  // namespace mamba_cuda
