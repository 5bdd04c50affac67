// Selective scan backward kernel.
//
// Same decomposition as the forward (one warp per row, W rows per block, lanes across a chunk).
// Chunks are walked against the processing order. Per chunk and state n:
//   1. recompute the states h_k of the chunk from the saved state before it (forward warp scan);
//   2. run the adjoint recurrence r <- a_k * (C_k * dy_k + r) in the opposite order (a second warp
//      scan), seeded with the adjoint carried from the chunk processed after this one; the state
//      gradient at step k is g_k = C_k * dy_k + r (r = what flows in from the later steps);
//   3. accumulate, with w_k = a_k * h_{k-1}:
//        du_k    += g_k * B_k * delta_k          ddelta_k += g_k * (A * w_k + B_k * u_k)
//        dA      += g_k * delta_k * w_k          dB_k     += g_k * delta_k * u_k   (over channels)
//        dC_k    += dy_k * h_k  (over channels)  y_k      += C_k * h_k (for dz and out_z)
// dB/dC are first summed over the W warps of the block in shared memory (fixed order), then leave
// the block according to ScanParams::bc_mode: written directly when the block is alone in its
// (batch, group), atomically added, or written as per-block partials that a second kernel sums
// in a fixed order (deterministic mode). dA, dD and ddelta_bias are summed per row in registers /
// shared memory and written as per-row partials, reduced over the batch by a second kernel:
// deterministic always. Steps past the end are masked (delta = u = dout = 0, B = C = 0) in both
// recurrences, and their gradients are never stored.
#pragma once

#include "scan_common.cuh"

namespace mamba_cuda {

// Shared memory, in this order so that every per-lane run (tile rows, red rows, y_acc) starts on
// a 16-byte boundary and moves as 128-bit accesses (lds_run / sts_run): lane l's run of K floats
// starts at tile_col(l K), 8 floats (+ padding) after lane l-1's, which is bank-conflict-free for
// 128-bit accesses only.
struct BwdShared {
  float* tile_b;    // [N][kTileStride]
  float* tile_c;    // [N][kTileStride]
  float* red;       // [2 parities][2 (dB, dC)][warps][kTileStride]
  float* y_acc;     // this warp's [kTileStride] output accumulators
  float* aw_acc;    // this warp's [kTileStride] accumulators of sum_n g A w
  float* dA_lanes;  // this warp's [N + 2][32] per-lane partials of dA[n], then dD and ddelta_bias
  float* rcarry;    // this warp's [N] adjoint carries
};

// Where a block's dB (which = 0) or dC (1) sums go: + n * L + t for state n, step t. Computed
// where it is used rather than held across the state loop (registers are the scarce resource).
__device__ __forceinline__ float* bc_out(const ScanParams& p, int which, int64_t b, int64_t g, int64_t blk_in_group,
                                         int warps) {
  if (p.bc_mode == kBCWorkspace) {
    const int64_t slot = ((b - p.batch_begin) * p.n_groups + g) * (p.dim_per_group / warps) + blk_in_group;
    return p.ws_bc + (slot * 2 + which) * p.dstate * p.seqlen;
  }
  return (which == 0 ? p.dB : p.dC) + (b * p.n_groups + g) * p.dstate * p.seqlen;
}

template <typename T, int K, bool kHasZ, bool kReverse>
__device__ __forceinline__ void bwd_chunk(const ScanParams& p, int64_t b, int64_t d, int64_t g, int64_t blk_in_group,
                                          int64_t j, int64_t t0, const BwdShared& sh, int warp, int lane,
                                          float* small_acc) {
  constexpr int kCap = 32 * K;
  const int64_t L = p.seqlen;
  const int N = static_cast<int>(p.dstate);
  const int warps = blockDim.x / 32;
  const int tl0 = lane * K;
  const int col0 = tile_col(tl0);  // K divides 32: a lane's steps share one padding group
  const int64_t tb = t0 + tl0;
  const int vlane = kReverse ? 31 - lane : lane;

  const T* u_row = static_cast<const T*>(p.u) + b * p.u_sb + d * p.u_sd;
  const T* delta_row = static_cast<const T*>(p.delta) + b * p.delta_sb + d * p.delta_sd;
  const T* dout_row = static_cast<const T*>(p.dout) + b * p.dout_sb + d * p.dout_sd;
  const T* z_row = kHasZ ? static_cast<const T*>(p.z) + b * p.z_sb + d * p.z_sd : nullptr;

  const float D = p.D != nullptr ? p.D[d] : 0.f;
  const float bias = p.delta_bias != nullptr ? p.delta_bias[d] : 0.f;

  float dt[K], dtu[K], dy[K];
  {
    float u[K], dout[K];
    load_row<T, K>(u_row, tb, L, u);
    load_row<T, K>(delta_row, tb, L, dt);
    load_row<T, K>(dout_row, tb, L, dout);
    float z[K];
    if constexpr (kHasZ) load_row<T, K>(z_row, tb, L, z);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float v = dt[k] + bias;
      if (p.delta_softplus) v = softplus_f(v);
      dt[k] = tb + k < L ? v : 0.f;  // padding: decay 1, input 0; u and dout loaded as 0
      dtu[k] = dt[k] * u[k];
      if constexpr (kHasZ)
        dy[k] = dout[k] * z[k] * sigmoid_f(z[k]);
      else
        dy[k] = dout[k];
    }
  }

  // sum_n g B in registers; sum_n g A w and the output sum_n C h in shared memory (registers are
  // the scarce resource here: every array below is K wide).
  float s_b[K], s_aw[K];
  float* y_acc = sh.y_acc + col0;
  float* aw_acc = sh.aw_acc + col0;
#pragma unroll
  for (int k = 0; k < K; ++k) s_b[k] = s_aw[k] = 0.f;
  sts_run<K>(y_acc, s_b);
  sts_run<K>(aw_acc, s_b);

  const float* A_row = p.A + d * p.dstate;
  const float* h_start = j > 0 ? p.states + ((b * p.dim + d) * p.n_chunks + (j - 1)) * p.dstate : nullptr;
  float A_lane = 0.f, h0_lane = 0.f;  // A[n0 + lane], h_start[n0 + lane] (see lane_slice)

#pragma unroll 1
  for (int n = 0; n < N; ++n) {
    if ((n & 31) == 0) {
      A_lane = lane_slice(A_row, n, N, lane);
      if (h_start != nullptr) h0_lane = lane_slice(h_start, n, N, lane);
    }
    const float A = __shfl_sync(kFullMask, A_lane, n & 31);
    const float a_scale = A * kLog2e;
    const float* bs = sh.tile_b + n * kTileStride + col0;
    const float* cs = sh.tile_c + n * kTileStride + col0;
    // B and C are re-read from the tile (128-bit loads) in each pass rather than held in registers.
    float a[K], h[K], bc[K];
#pragma unroll
    for (int k = 0; k < K; ++k) a[k] = exp2f(dt[k] * a_scale);

    // 1. States of the chunk.
    lds_run<K>(bs, bc);
    float prod = 1.f, hl = 0.f;
#pragma unroll
    for (int i = 0; i < K; ++i) {
      const int k = kReverse ? K - 1 - i : i;
      hl = fmaf(a[k], hl, dtu[k] * bc[k]);
      prod *= a[k];
    }
    const float h0 = __shfl_sync(kFullMask, h0_lane, n & 31);  // 0 for the first chunk
    if (vlane == 0) hl = fmaf(prod, h0, hl);
    {
      float scan_a = prod;
      warp_scan_affine<!kReverse>(scan_a, hl, lane);
    }
    float h_in = __shfl_sync(kFullMask, hl, (kReverse ? lane + 1 : lane - 1) & 31);
    if (vlane == 0) h_in = h0;
    float* red = sh.red + (n & 1) * (2 * warps * kTileStride);
    float* red_b = red + warp * kTileStride;
    float* red_c = red + (warps + warp) * kTileStride;
    {
      float hc = h_in;
#pragma unroll
      for (int i = 0; i < K; ++i) {
        const int k = kReverse ? K - 1 - i : i;
        hc = fmaf(a[k], hc, dtu[k] * bc[k]);
        h[k] = hc;
      }
    }
    lds_run<K>(cs, bc);  // bc holds C from here on
    {
      float v[K];
      lds_run<K>(y_acc, v);
#pragma unroll
      for (int k = 0; k < K; ++k) v[k] = fmaf(bc[k], h[k], v[k]);
      sts_run<K>(y_acc, v);
#pragma unroll
      for (int k = 0; k < K; ++k) v[k] = dy[k] * h[k];  // dC partial
      sts_run<K>(red_c + col0, v);
    }

    // 2. Adjoint: the lane's map r -> prod * r + rl, composed against the processing order.
    float rl = 0.f;
#pragma unroll
    for (int i = K - 1; i >= 0; --i) {
      const int k = kReverse ? K - 1 - i : i;
      rl = a[k] * fmaf(bc[k], dy[k], rl);
    }
    const float r_carry = sh.rcarry[n];
    if (vlane == 31) rl = fmaf(prod, r_carry, rl);  // the last lane (in processing order) goes first
    warp_scan_affine<kReverse>(prod, rl, lane);
    float r = __shfl_sync(kFullMask, rl, (kReverse ? lane - 1 : lane + 1) & 31);
    if (vlane == 31) r = r_carry;
    if (vlane == 0) sh.rcarry[n] = rl;  // what flows into the chunk processed before this one

    // 3. Gradients, walking the steps against the processing order.
    float dA_part = 0.f;
    {
      float bv[K];
      lds_run<K>(bs, bv);
      lds_run<K>(aw_acc, s_aw);
#pragma unroll
      for (int i = K - 1; i >= 0; --i) {
        const int k = kReverse ? K - 1 - i : i;
        const int k_prev = kReverse ? k + 1 : k - 1;  // the step before k in processing order
        const float h_prev = i == 0 ? h_in : h[k_prev];
        const float gk = fmaf(bc[k], dy[k], r);
        r = a[k] * gk;
        const float w = a[k] * h_prev;
        s_b[k] = fmaf(gk, bv[k], s_b[k]);
        s_aw[k] = fmaf(gk * A, w, s_aw[k]);
        dA_part = fmaf(gk * dt[k], w, dA_part);
        h[k] = gk * dtu[k];  // dB partial (h is not needed any more)
      }
      sts_run<K>(red_b + col0, h);
      sts_run<K>(aw_acc, s_aw);
    }
    sh.dA_lanes[n * 32 + lane] += dA_part;  // lane-consecutive: conflict-free

    // dB/dC: sum over the block's warps in a fixed order, then out of the block.
    __syncthreads();
    for (int e = threadIdx.x; e < 2 * kCap; e += blockDim.x) {
      const int which = e / kCap, tl = e % kCap;  // which: 0 = dB, 1 = dC
      if (t0 + tl >= L) continue;
      const float* src = red + which * warps * kTileStride + tile_col(tl);
      float s = 0.f;
      for (int w = 0; w < warps; ++w) s += src[w * kTileStride];
      float* dst = bc_out(p, which, b, g, blk_in_group, warps) + (n * L + t0 + tl);
      if (p.bc_mode == kBCAtomic)
        atomicAdd(dst, s);
      else
        *dst = s;
    }
    // The next state writes the other parity; this one is rewritten only after the next barrier.
  }

  // Per-step gradients (arrays reused to keep the register footprint down).
  float y[K];
  lds_run<K>(y_acc, y);
  lds_run<K>(aw_acc, s_aw);
  {
    // dD and ddelta_bias partials live in shared memory between chunks (registers are scarce).
    float dD_acc = small_acc[0], ddb_acc = small_acc[32];
    float u[K], raw[K];
    load_row<T, K>(u_row, tb, L, u);
    load_row<T, K>(delta_row, tb, L, raw);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float g_dt = fmaf(u[k], s_b[k], s_aw[k]);
      if (p.delta_softplus) {
        const float pre = raw[k] + bias;
        if (pre <= 20.f) g_dt *= sigmoid_f(pre);
      }
      if (tb + k < L) {
        dD_acc = fmaf(dy[k], u[k], dD_acc);
        ddb_acc += g_dt;
      }
      s_b[k] = fmaf(dt[k], s_b[k], D * dy[k]);  // du
      s_aw[k] = g_dt;                             // ddelta
      y[k] = fmaf(D, u[k], y[k]);                 // pre-gate output
    }
    small_acc[0] = dD_acc;
    small_acc[32] = ddb_acc;
  }
  store_row<T, K>(static_cast<T*>(p.du) + b * p.du_sb + d * p.du_sd, tb, L, s_b);
  store_row<T, K>(static_cast<T*>(p.ddelta) + b * p.ddelta_sb + d * p.ddelta_sd, tb, L, s_aw);
  if constexpr (kHasZ) {  // dt and dy are free again: they take dout and z
    // The row pointers again from the parameters: holding them across the state loop would spill.
    load_row<T, K>(static_cast<const T*>(p.dout) + b * p.dout_sb + d * p.dout_sd, tb, L, dt);
    load_row<T, K>(static_cast<const T*>(p.z) + b * p.z_sb + d * p.z_sd, tb, L, dy);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float s = sigmoid_f(dy[k]);
      dt[k] = dt[k] * y[k] * s * fmaf(dy[k], 1.f - s, 1.f);  // dz
      y[k] = y[k] * dy[k] * s;                                // out_z
    }
    if (p.dz != nullptr) store_row<T, K>(static_cast<T*>(p.dz) + b * p.dz_sb + d * p.dz_sd, tb, L, dt);
  }
  if (p.out_z != nullptr) store_row<T, K>(static_cast<T*>(p.out_z) + b * p.out_z_sb + d * p.out_z_sd, tb, L, y);
}

template <typename T, bool kHasZ, bool kReverse>
__global__ void __launch_bounds__(kBwdMaxWarps * 32, 1) scan_bwd_kernel(const ScanParams p) {
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int N = static_cast<int>(p.dstate);
  const int64_t blocks_per_batch = p.dim / warps;
  const int64_t b = p.batch_begin + blockIdx.x / blocks_per_batch;
  const int64_t d0 = (blockIdx.x % blocks_per_batch) * warps;
  const int64_t d = d0 + warp;
  const int64_t g = d0 / p.dim_per_group;
  const int64_t blk_in_group = (d0 % p.dim_per_group) / warps;

  float* smem = dynamic_smem<float>();
  BwdShared sh;
  sh.tile_b = smem;
  sh.tile_c = sh.tile_b + p.dstate * kTileStride;
  sh.red = sh.tile_c + p.dstate * kTileStride;
  float* y_all = sh.red + 4 * warps * kTileStride;
  sh.y_acc = y_all + warp * kTileStride;
  sh.aw_acc = y_all + (warps + warp) * kTileStride;
  float* dA_all = y_all + 2 * warps * kTileStride;
  sh.dA_lanes = dA_all + warp * (p.dstate + 2) * 32;
  sh.rcarry = dA_all + warps * (p.dstate + 2) * 32 + warp * p.dstate;
  for (int n = 0; n < N + 2; ++n) sh.dA_lanes[n * 32 + lane] = 0.f;
  for (int n = lane; n < N; n += 32) sh.rcarry[n] = 0.f;

  const ChunkLayout cl = chunk_layout(p.seqlen);
  const int64_t nc = cl.total();
  for (int64_t j = nc - 1; j >= 0; --j) {  // against the processing order
    const int64_t c = kReverse ? nc - 1 - j : j;
    const int64_t t0 = cl.start(c);
    const bool tail = cl.is_tail(c);
    __syncthreads();
    if (tail)
      stage_bc_tile<T, kChunkTail>(p, b, g, t0, sh.tile_b, sh.tile_c);
    else
      stage_bc_tile<T, kChunkFull>(p, b, g, t0, sh.tile_b, sh.tile_c);
    __syncthreads();
    if (tail)
      bwd_chunk<T, kItemsTail, kHasZ, kReverse>(p, b, d, g, blk_in_group, j, t0, sh, warp, lane, sh.dA_lanes + N * 32 + lane);
    else
      bwd_chunk<T, kItemsFull, kHasZ, kReverse>(p, b, d, g, blk_in_group, j, t0, sh, warp, lane, sh.dA_lanes + N * 32 + lane);
  }

  // Per-row partials of dA, dD, ddelta_bias (summed over the batch by scan_reduce_small).
  float* ws = p.ws_small + (b * p.dim + d) * (p.dstate + 2);
  for (int n = 0; n < N + 2; ++n) {
    const float v = warp_sum(sh.dA_lanes[n * 32 + lane]);
    if (lane == 0) ws[n] = v;
  }
}

template <typename T, bool kHasZ, bool kReverse>
cudaError_t launch_bwd(const ScanParams& params, cudaStream_t stream) {
  const auto kernel = scan_bwd_kernel<T, kHasZ, kReverse>;
  const size_t smem = bwd_smem_bytes(params.warps, params.dstate);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int64_t blocks_per_batch = params.dim / params.warps;
  for (int64_t b0 = 0; b0 < params.batch; b0 += params.batch_slice) {
    ScanParams p = params;
    p.batch_begin = b0;
    const int64_t count = b0 + p.batch_slice <= p.batch ? p.batch_slice : p.batch - b0;
    KERNEL_LAUNCH(kernel, dim3(static_cast<unsigned>(count * blocks_per_batch)), dim3(p.warps * 32), smem, stream)(p);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    if (p.bc_mode == kBCWorkspace) {
      err = scan_reduce_bc(p, b0, count, stream);
      if (err != cudaSuccess) return err;
    }
  }
  return scan_reduce_small(params, stream);
}

template <typename T>
cudaError_t scan_bwd(const ScanParams& p, cudaStream_t stream) {
  if (p.batch == 0 || p.dim == 0) return cudaSuccess;
  if (p.bc_mode == kBCAtomic) {
    const size_t bytes = sizeof(float) * static_cast<size_t>(p.batch * p.n_groups * p.dstate * p.seqlen);
    cudaError_t err = cudaMemsetAsync(p.dB, 0, bytes, stream);
    if (err == cudaSuccess) err = cudaMemsetAsync(p.dC, 0, bytes, stream);
    if (err != cudaSuccess) return err;
  }
  if (p.z != nullptr)
    return p.reverse ? launch_bwd<T, true, true>(p, stream) : launch_bwd<T, true, false>(p, stream);
  return p.reverse ? launch_bwd<T, false, true>(p, stream) : launch_bwd<T, false, false>(p, stream);
}

}  // namespace mamba_cuda
