// Device helpers shared by the selective-scan CUDA kernels: dtype conversion, row loads/stores,
// warp scans of (decay, value) pairs, softplus/sigmoid, and the launch macro.
//
// The same sources also compile as plain C++ against a CPU emulator of the CUDA execution model
// (causal_conv1d/kernel_infra/testing/cuda_emu.h, selected with -DKERNEL_EMULATE), which the test-suite
// uses to check the kernels' indexing and algebra on machines without a GPU. Only standard CUDA
// constructs appear in the kernels; the few things the emulator must provide differently (dynamic
// shared memory, the launch syntax) go through `dynamic_smem<T>()` and `KERNEL_LAUNCH`.
#pragma once

#ifdef KERNEL_EMULATE
#include "cuda_emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cstdint>
#include <cstring>

#include "selective_scan.h"

namespace mamba_cuda {

#ifndef KERNEL_EMULATE
// kern<<<grid, block, smem, stream>>>(args...) written as KERNEL_LAUNCH(kern, grid, block, smem, stream)(args...).
#define KERNEL_LAUNCH(kern, grid, block, smem, stream) kern<<<(grid), (block), (smem), (stream)>>>

template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char mamba_dynamic_smem_[];
  return reinterpret_cast<T*>(mamba_dynamic_smem_);
}
#else
template <typename T>
inline T* dynamic_smem() {
  return reinterpret_cast<T*>(emu::dynamic_smem());
}
#endif

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

// ---- dtype conversion ---------------------------------------------------------------------------

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// ---- math ----------------------------------------------------------------------------------------

// F.softplus with its default threshold: identity above 20, else log(1 + e^x) (log1pf: accurate
// also where e^x is tiny, where log(1 + e^x) would round to 0).
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(__expf(x)); }

__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + __expf(-x)); }

// ---- rows of K consecutive elements per lane -----------------------------------------------------

// True when row[t0 .. t0+K) lies before `len` and can move as 16-byte vectors.
template <typename T, int K>
__device__ __forceinline__ bool vec_ok(const T* row, int64_t t0, int64_t len) {
  return (K * sizeof(T)) % 16 == 0 && t0 + K <= len && (reinterpret_cast<uintptr_t>(row + t0) & 15) == 0;
}

// Loads row[t0 .. t0+K) as float; steps at t >= len read as 0. Aligned in-range runs load as
// 16-byte vectors, the rest (odd row strides, the tail) element by element.
template <typename T, int K>
__device__ __forceinline__ void load_row(const T* __restrict__ row, int64_t t0, int64_t len, float (&out)[K]) {
  constexpr int kPerVec = 16 / sizeof(T);
  if constexpr (K % kPerVec == 0) {
    if (vec_ok<T, K>(row, t0, len)) {
#pragma unroll
      for (int v = 0; v < K / kPerVec; ++v) {
        const uint4 raw = reinterpret_cast<const uint4*>(row + t0)[v];
        T e[kPerVec];
        memcpy(e, &raw, 16);
#pragma unroll
        for (int i = 0; i < kPerVec; ++i) out[v * kPerVec + i] = to_f32(e[i]);
      }
      return;
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k) out[k] = t0 + k < len ? to_f32(row[t0 + k]) : 0.f;
}

// Stores vals to row[t0 .. t0+K), skipping t >= len.
template <typename T, int K>
__device__ __forceinline__ void store_row(T* __restrict__ row, int64_t t0, int64_t len, const float (&vals)[K]) {
  constexpr int kPerVec = 16 / sizeof(T);
  if constexpr (K % kPerVec == 0) {
    if (vec_ok<T, K>(row, t0, len)) {
#pragma unroll
      for (int v = 0; v < K / kPerVec; ++v) {
        T e[kPerVec];
#pragma unroll
        for (int i = 0; i < kPerVec; ++i) e[i] = from_f32<T>(vals[v * kPerVec + i]);
        uint4 raw;
        memcpy(&raw, e, 16);
        reinterpret_cast<uint4*>(row + t0)[v] = raw;
      }
      return;
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (t0 + k < len) row[t0 + k] = from_f32<T>(vals[k]);
}

// ---- per-lane runs of shared memory --------------------------------------------------------------

// v = p[0 .. K) / p[0 .. K) = v as 128-bit (K % 4 == 0) or 64-bit (K % 2 == 0) shared-memory
// accesses. The caller guarantees the alignment (16 / 8 bytes); the compiler cannot prove it for
// computed offsets and would otherwise emit K scalar accesses, which conflict on the banks when
// each lane's run starts 8 floats after the previous lane's.
template <int K>
__device__ __forceinline__ void lds_run(const float* p, float (&v)[K]) {
#ifdef KERNEL_EMULATE
  emu::check_aligned(p, K % 4 == 0 ? 16 : K % 2 == 0 ? 8 : 4);
#endif
  if constexpr (K % 4 == 0) {
#pragma unroll
    for (int i = 0; i < K / 4; ++i) {
      const float4 q = reinterpret_cast<const float4*>(p)[i];
      v[4 * i] = q.x, v[4 * i + 1] = q.y, v[4 * i + 2] = q.z, v[4 * i + 3] = q.w;
    }
  } else if constexpr (K % 2 == 0) {
#pragma unroll
    for (int i = 0; i < K / 2; ++i) {
      const float2 q = reinterpret_cast<const float2*>(p)[i];
      v[2 * i] = q.x, v[2 * i + 1] = q.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < K; ++i) v[i] = p[i];
  }
}

template <int K>
__device__ __forceinline__ void sts_run(float* p, const float (&v)[K]) {
#ifdef KERNEL_EMULATE
  emu::check_aligned(p, K % 4 == 0 ? 16 : K % 2 == 0 ? 8 : 4);
#endif
  if constexpr (K % 4 == 0) {
#pragma unroll
    for (int i = 0; i < K / 4; ++i) reinterpret_cast<float4*>(p)[i] = float4{v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]};
  } else if constexpr (K % 2 == 0) {
#pragma unroll
    for (int i = 0; i < K / 2; ++i) reinterpret_cast<float2*>(p)[i] = float2{v[2 * i], v[2 * i + 1]};
  } else {
#pragma unroll
    for (int i = 0; i < K; ++i) p[i] = v[i];
  }
}

// Per-state row values (A, saved states) read once per 32 states: lane l holds row[n0 + l] and
// the state loop takes value n from lane n % 32 with a shuffle, instead of a global load per state.
__device__ __forceinline__ float lane_slice(const float* row, int n0, int N, int lane, float scale = 1.f) {
  return n0 + lane < N ? row[n0 + lane] * scale : 0.f;
}

// ---- warp scans ----------------------------------------------------------------------------------

// Inclusive scan over the 32 lanes of the affine maps s -> a * s + h, composed in lane order
// (kFromLow: lane 0 first; otherwise lane 31 first). Afterwards (a, h) of a lane is the composite
// of itself and every lane before it in that order.
template <bool kFromLow>
__device__ __forceinline__ void warp_scan_affine(float& a, float& h, int lane) {
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int src = (kFromLow ? lane - off : lane + off) & 31;
    const float a_prev = __shfl_sync(kFullMask, a, src);
    const float h_prev = __shfl_sync(kFullMask, h, src);
    if (kFromLow ? lane >= off : lane + off < 32) {
      h = fmaf(a, h_prev, h);
      a *= a_prev;
    }
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

// ---- the B/C tile of a chunk ---------------------------------------------------------------------

// Stages B and C of (batch b, group g) for steps [t0, t0 + kCap) as float32 rows of kTileStride
// (padded with tile_col) — steps past the sequence end as 0. All threads of the block take part;
// consecutive threads read consecutive steps (coalesced).
template <typename T, int kCap>
__device__ __forceinline__ void stage_bc_tile(const ScanParams& p, int64_t b, int64_t g, int64_t t0, float* tile_b,
                                              float* tile_c) {
  const int total = static_cast<int>(p.dstate) * kCap;
  const int64_t base_b = b * p.B_sb + g * p.B_sg, base_c = b * p.C_sb + g * p.C_sg;
  for (int i = threadIdx.x; i < total; i += blockDim.x) {
    const int n = i / kCap, tl = i % kCap;
    const int64_t t = t0 + tl;
    float vb = 0.f, vc = 0.f;
    if (t < p.seqlen) {
      const int64_t ob = base_b + n * p.B_sn + t, oc = base_c + n * p.C_sn + t;
      vb = p.B_f32 ? static_cast<const float*>(p.B)[ob] : to_f32(static_cast<const T*>(p.B)[ob]);
      vc = p.C_f32 ? static_cast<const float*>(p.C)[oc] : to_f32(static_cast<const T*>(p.C)[oc]);
    }
    tile_b[n * kTileStride + tile_col(tl)] = vb;
    tile_c[n * kTileStride + tile_col(tl)] = vc;
  }
}

// A tile element by element (used by the forward): element i is (state i >> shift, step
// i & (2^shift - 1)), and thread t of the block handles the elements t, t + blockDim.x, ...
struct TileSource {
  int64_t off_b, off_c;  // offsets of (batch b, group g, state 0, step t0) in B and C
  int shift;             // log2 of the chunk's steps
  int valid;             // steps of the chunk before the sequence end
  int elems;             // N << shift
};

__device__ __forceinline__ TileSource tile_source(const ScanParams& p, int64_t b, int64_t g, int64_t t0, bool tail) {
  constexpr int kShiftFull = 8, kShiftTail = 6;
  static_assert(kChunkFull == 1 << kShiftFull && kChunkTail == 1 << kShiftTail, "chunk sizes are powers of two");
  TileSource s;
  s.off_b = b * p.B_sb + g * p.B_sg + t0;
  s.off_c = b * p.C_sb + g * p.C_sg + t0;
  s.shift = tail ? kShiftTail : kShiftFull;
  s.valid = static_cast<int>(p.seqlen - t0 < (1 << s.shift) ? p.seqlen - t0 : (1 << s.shift));
  s.elems = static_cast<int>(p.dstate) << s.shift;
  return s;
}

template <typename T>
__device__ __forceinline__ float load_bc(const void* base, bool is_f32, int64_t off) {
  return is_f32 ? static_cast<const float*>(base)[off] : to_f32(static_cast<const T*>(base)[off]);
}

// Stages the whole tile (all threads of the block; the caller synchronises).
template <typename T>
__device__ __forceinline__ void stage_tile(const ScanParams& p, const TileSource& s, float* tile_b, float* tile_c) {
  const int mask = (1 << s.shift) - 1;
  for (int i = threadIdx.x; i < s.elems; i += blockDim.x) {
    const int n = i >> s.shift, tl = i & mask;
    float vb = 0.f, vc = 0.f;
    if (tl < s.valid) {
      vb = load_bc<T>(p.B, p.B_f32, s.off_b + n * p.B_sn + tl);
      vc = load_bc<T>(p.C, p.C_f32, s.off_c + n * p.C_sn + tl);
    }
    const int at = n * kTileStride + tile_col(tl);
    tile_b[at] = vb;
    tile_c[at] = vc;
  }
}

// One thread's share of a tile staged one row group per step of a loop (the forward's state
// loop), for blocks with at least as many threads as the chunk has steps (else it stages
// nothing: count = 0, and the caller stages the tile with stage_tile): the thread keeps one
// step column `col` = t mod steps and stages states row0, row0 + rows_step, ... (row0 = t / steps,
// rows_step = threads / steps), walking pointers instead of recomputing 64-bit offsets.
struct TileRows {
  const char* src_b;  // B and C of this thread's next element
  const char* src_c;
  int64_t step_b, step_c;  // bytes from one of its rows to the next
  float* dst_b;            // where that element goes in the tile (B; the C tile follows at c_off)
  int c_off;               // floats from the B tile to the C tile
  int dst_step;            // floats from one of its rows to the next
  int count;               // rows left to stage
  bool in_range;           // its column lies before the sequence end (else it stages zeros)
};

template <typename T>
__device__ __forceinline__ TileRows tile_rows(const ScanParams& p, const TileSource& s, float* tile_b, float* tile_c) {
  const int t = threadIdx.x, steps = 1 << s.shift;
  const int col = t & (steps - 1), row0 = t >> s.shift, rows_step = blockDim.x >> s.shift;
  const int64_t size_b = p.B_f32 ? 4 : sizeof(T), size_c = p.C_f32 ? 4 : sizeof(T);
  TileRows r;
  r.src_b = static_cast<const char*>(p.B) + (s.off_b + row0 * p.B_sn + col) * size_b;
  r.src_c = static_cast<const char*>(p.C) + (s.off_c + row0 * p.C_sn + col) * size_c;
  r.step_b = rows_step * p.B_sn * size_b;
  r.step_c = rows_step * p.C_sn * size_c;
  r.dst_b = tile_b + row0 * kTileStride + tile_col(col);
  r.c_off = static_cast<int>(tile_c - tile_b);
  r.dst_step = rows_step * kTileStride;
  const int N = static_cast<int>(p.dstate);
  r.count = rows_step > 0 && row0 < N ? (N - row0 + rows_step - 1) / rows_step : 0;
  r.in_range = col < s.valid;
  return r;
}

// Loads this thread's next element (if any rows are left): the values go to store_next later.
template <typename T>
__device__ __forceinline__ void load_next(const ScanParams& p, const TileRows& r, float& vb, float& vc) {
  vb = vc = 0.f;
  if (r.count > 0 && r.in_range) {
    vb = p.B_f32 ? *reinterpret_cast<const float*>(r.src_b) : to_f32(*reinterpret_cast<const T*>(r.src_b));
    vc = p.C_f32 ? *reinterpret_cast<const float*>(r.src_c) : to_f32(*reinterpret_cast<const T*>(r.src_c));
  }
}

__device__ __forceinline__ void store_next(TileRows& r, float vb, float vc) {
  if (r.count > 0) {
    r.dst_b[0] = vb;
    r.dst_b[r.c_off] = vc;
    r.src_b += r.step_b;
    r.src_c += r.step_c;
    r.dst_b += r.dst_step;
    --r.count;
  }
}

}  // namespace mamba_cuda
