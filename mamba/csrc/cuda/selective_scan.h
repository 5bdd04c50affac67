// Selective scan on CUDA: parameters, chunk geometry and launch planning shared by the binding
// (selective_scan_cuda.cpp, compiled by the host compiler) and the kernels (*.cu).
//
// Work decomposition (see selective_scan_fwd.cuh / selective_scan_bwd.cuh for the kernels):
// - one warp per (batch, channel) row; the 32 lanes split a chunk of the sequence, K consecutive
//   steps each (K = 8 for the 256-step full chunks, K = 2 for the 64-step tail chunks), scanned
//   with warp shuffles; the state is carried from chunk to chunk in shared memory;
// - a block holds W warps = W consecutive channels of one batch element and one B/C group, which
//   share the chunk's B and C tile (staged once in shared memory as float32);
// - blocks are numbered batch-major on grid.x (no 65,535 limit on channels).
// Chunks: the sequence splits into 256-step chunks, except that a tail of at most 192 steps is cut
// into 64-step chunks, so at most 63 lanes' worth of steps are padding (VideoMamba lengths are
// 1 + 196 T: a 2048-step chunk would leave up to ~25% of the lanes idle). `states` holds the state
// after every chunk in processing order; the backward recomputes each chunk from the saved state
// before it.
#pragma once

#ifdef KERNEL_EMULATE
#include "cuda_emu.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__) || defined(KERNEL_EMULATE)
#define MAMBA_HD __host__ __device__
#else
#define MAMBA_HD
#endif

namespace mamba_cuda {

constexpr int kItemsFull = 8;                  // steps per lane in a full chunk
constexpr int kItemsTail = 2;                  // steps per lane in a tail chunk
constexpr int kChunkFull = 32 * kItemsFull;    // 256
constexpr int kChunkTail = 32 * kItemsTail;    // 64
constexpr int kTileStride = kChunkFull + kChunkFull / 32 * 4;  // padded row of a B/C tile: 288 floats
constexpr int kFwdMaxWarps = 8;                // warps (channels) per block, forward
constexpr int kBwdMaxWarps = 16;               // ... backward (default 8, see plan_warps)
constexpr int kBwdDefaultWarps = 8;
constexpr int64_t kMaxDstate = 256;

// Shared-memory column of step `tl` of a chunk: 4 floats of padding every 32 keep the per-lane
// 16-byte reads (lane l reads steps l*K .. l*K+K-1) free of bank conflicts.
MAMBA_HD inline int tile_col(int tl) { return tl + ((tl >> 5) << 2); }

struct ChunkLayout {
  int64_t n_full;  // 256-step chunks (the last one may be padded)
  int64_t n_tail;  // 64-step chunks after them
  MAMBA_HD int64_t total() const { return n_full + n_tail; }
  // First step of time chunk c (chunks in time order) and whether it is a tail chunk.
  MAMBA_HD int64_t start(int64_t c) const {
    return c < n_full ? c * kChunkFull : n_full * kChunkFull + (c - n_full) * kChunkTail;
  }
  MAMBA_HD bool is_tail(int64_t c) const { return c >= n_full; }
};

MAMBA_HD inline ChunkLayout chunk_layout(int64_t seqlen) {
  const int64_t full = seqlen / kChunkFull, rest = seqlen % kChunkFull;
  ChunkLayout cl;
  if (rest > kChunkFull - kChunkTail) {
    cl.n_full = full + 1;
    cl.n_tail = 0;
  } else {
    cl.n_full = full;
    cl.n_tail = (rest + kChunkTail - 1) / kChunkTail;
  }
  return cl;
}

inline int64_t num_chunks(int64_t seqlen) { return chunk_layout(seqlen).total(); }

// How dB/dC (sums over the channels of a group) leave the blocks.
enum BCMode : int {
  kBCDirect = 0,     // one block per (batch, group): it writes the sums
  kBCAtomic = 1,     // atomicAdd into zeroed dB/dC (default when several blocks share a group)
  kBCWorkspace = 2,  // per-block partials in a workspace, summed in a fixed order (deterministic)
};

struct ScanParams {
  int64_t batch, dim, seqlen, dstate, n_groups, dim_per_group, n_chunks;
  bool delta_softplus;
  bool reverse;
  bool B_f32, C_f32;  // B/C stored as float32 (otherwise in the input dtype)

  // Inputs. (batch, dim, L) tensors have unit stride along L; strides are in elements.
  const void* u;
  int64_t u_sb, u_sd;
  const void* delta;
  int64_t delta_sb, delta_sd;
  const float* A;  // (dim, N) contiguous
  const void* B;   // (batch, G, N, L)
  int64_t B_sb, B_sg, B_sn;
  const void* C;
  int64_t C_sb, C_sg, C_sn;
  const float* D;           // (dim,) or null
  const float* delta_bias;  // (dim,) or null
  const void* z;            // or null
  int64_t z_sb, z_sd;

  // Forward outputs.
  void* out;
  int64_t out_sb, out_sd;
  float* states;  // (batch, dim, n_chunks, N) contiguous; read by the backward

  // Backward.
  const void* dout;
  int64_t dout_sb, dout_sd;
  void* du;
  int64_t du_sb, du_sd;
  void* ddelta;
  int64_t ddelta_sb, ddelta_sd;
  void* dz;  // or null
  int64_t dz_sb, dz_sd;
  void* out_z;  // or null
  int64_t out_z_sb, out_z_sd;
  float* dA;           // (dim, N)
  float* dB;           // (batch, G, N, L) contiguous
  float* dC;
  float* dD;           // or null
  float* ddelta_bias;  // or null

  // Launch plan and workspaces (backward).
  int warps;                  // warps (= channels) per block; divides dim_per_group
  int fwd_tiles;              // forward: 2 = the next chunk's B/C tile is staged while this one computes
  int bc_mode;                // BCMode
  int64_t batch_slice;        // batch elements per kernel launch (workspace mode), else batch
  float* ws_small;            // (batch, dim, N + 2): per-row dA, dD, ddelta_bias partials
  float* ws_bc;               // (batch_slice, G, dim_per_group / warps, 2, N, L) in workspace mode
  int64_t batch_begin;        // set by the launcher per slice
};

// Warps per block: the largest power of two <= max_warps dividing the channels of a group
// (a block must not straddle groups) whose shared memory fits `smem_limit`; 0 if none fits.
// More warps per backward block means fewer dB/dC partials (atomics or workspace) per group but
// block-wide barriers over more warps; MAMBA_CUDA_BWD_WARPS (1..16) overrides the default 8.
// The forward holds `tiles` B/C tiles: two (one computed on, the next one being staged) wherever
// they fit, else one (staged between two barriers, as the backward does); see plan_fwd_tiles.
inline size_t fwd_smem_bytes(int warps, int64_t dstate, int tiles = 2) {
  return sizeof(float) * static_cast<size_t>(tiles * 2 * dstate * kTileStride + warps * dstate);
}
inline size_t bwd_smem_bytes(int warps, int64_t dstate) {
  // B/C tile, double-buffered dB/dC reduction rows, per-lane output and sum(g A w) accumulators,
  // per-lane dA partials, adjoint carries (see BwdShared).
  return sizeof(float) * static_cast<size_t>(2 * dstate * kTileStride + 4 * warps * kTileStride +
                                             2 * warps * kTileStride + warps * (dstate + 2) * 32 + warps * dstate);
}
inline int plan_warps(int64_t dim_per_group, int64_t dstate, size_t smem_limit, bool backward, int max_warps,
                      int fwd_tiles = 2) {
  for (int w = max_warps; w >= 1; w /= 2) {
    if (dim_per_group % w) continue;
    const size_t bytes = backward ? bwd_smem_bytes(w, dstate) : fwd_smem_bytes(w, dstate, fwd_tiles);
    if (bytes <= smem_limit) return w;
  }
  return 0;
}
// Two forward tiles when they fit with as many warps as one tile gets, else one (large d_state):
// fewer warps would also mean fewer threads than a chunk has steps, which stage after the loop.
inline int plan_fwd_tiles(int64_t dim_per_group, int64_t dstate, size_t smem_limit, int max_warps) {
  const int one = plan_warps(dim_per_group, dstate, smem_limit, false, max_warps, 1);
  return one > 0 && plan_warps(dim_per_group, dstate, smem_limit, false, max_warps, 2) == one ? 2 : 1;
}

// Launchers, one per input dtype (each in its own .cu file so that they compile in parallel).
// They check the launch and return the CUDA error, if any.
cudaError_t scan_fwd_fp32(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_fwd_fp16(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_fwd_bf16(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_bwd_fp32(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_bwd_fp16(const ScanParams& p, cudaStream_t stream);
cudaError_t scan_bwd_bf16(const ScanParams& p, cudaStream_t stream);
// The dtype-independent reductions (selective_scan_reduce.cu).
cudaError_t scan_reduce_bc(const ScanParams& p, int64_t batch_begin, int64_t batch_count, cudaStream_t stream);
cudaError_t scan_reduce_small(const ScanParams& p, cudaStream_t stream);

}  // namespace mamba_cuda
