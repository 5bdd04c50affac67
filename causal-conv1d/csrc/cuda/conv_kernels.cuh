// Causal (and anti-causal) depthwise conv1d kernels, forward and backward. See causal_conv1d.h.
//
// Index conventions, with W the width and t a step of the row:
//   causal:  out[t] = bias + sum_k w[k] * x[t - (W-1) + k]
//   reverse: out[t] = bias + sum_k w[k] * x[t + (W-1) - k]     (= flip(conv(flip(x))))
// x outside [0, L) is 0. Backward, with g = dout * silu'(pre) (or dout):
//   causal:  dx[s] = sum_k w[k] * g[s + (W-1) - k],  dw[k] = sum_t g[t] * x[t - (W-1) + k]
//   reverse: dx[s] = sum_k w[k] * g[s - (W-1) + k],  dw[k] = sum_t g[t] * x[t + (W-1) - k]
// A block stages x[ts - H, ts + tile + H) (H = 2 (W - 1)) in shared memory, so every tap is a
// shared-memory read; reads past either end of the row are zeros.
#pragma once

#ifdef KERNEL_EMULATE
#include "cuda_emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cstdint>

#include "causal_conv1d.h"

namespace conv_cuda {

#ifndef KERNEL_EMULATE
// kern<<<grid, block, smem, stream>>>(args...) written as KERNEL_LAUNCH(kern, grid, block, smem, stream)(args...).
#define KERNEL_LAUNCH(kern, grid, block, smem, stream) kern<<<(grid), (block), (smem), (stream)>>>

template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char conv_dynamic_smem_[];
  return reinterpret_cast<T*>(conv_dynamic_smem_);
}
#else
template <typename T>
inline T* dynamic_smem() {
  return reinterpret_cast<T*>(emu::dynamic_smem());
}
#endif

constexpr unsigned kFullMask = 0xffffffffu;

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

__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + __expf(-x)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
  return v;
}

// Stages row[ts - halo, ts - halo + count) into dst as float (zeros outside [0, L)); coalesced.
template <typename T>
__device__ __forceinline__ void stage_row(const T* __restrict__ row, int64_t L, int64_t first, int count, float* dst) {
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t t = first + i;
    dst[i] = t >= 0 && t < L ? to_f32(row[t]) : 0.f;
  }
}

// Pre-activation at step t, from xs holding x[t0 ...] at xs[t - t0] (t - t0 - (W - 1) >= 0).
template <int W>
__device__ __forceinline__ float conv_at(const float* xs, int i, const float (&w)[W], float bias, bool reverse) {
  float acc = bias;
  if (reverse) {
#pragma unroll
    for (int k = 0; k < W; ++k) acc = fmaf(w[k], xs[i + (W - 1) - k], acc);
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) acc = fmaf(w[k], xs[i - (W - 1) + k], acc);
  }
  return acc;
}

template <typename T, int W>
__global__ void __launch_bounds__(kMaxThreads) conv_fwd_kernel(const ConvParams p) {
  constexpr int H = 2 * (W - 1);
  const int64_t row = blockIdx.x / p.tiles, tile = blockIdx.x % p.tiles;
  const int64_t c = row % p.dim, L = p.seqlen;
  const int tile_len = blockDim.x * kPerThread;
  const int64_t ts = tile * tile_len;
  float* xs = dynamic_smem<float>();
  const T* x_row = static_cast<const T*>(p.x) + row * L;
  stage_row<T>(x_row, L, ts - H, tile_len + 2 * H, xs);

  float w[W];
#pragma unroll
  for (int k = 0; k < W; ++k) w[k] = p.weight[c * W + k];
  const float bias = p.bias != nullptr ? p.bias[c] : 0.f;
  __syncthreads();

  T* out_row = static_cast<T*>(p.out) + row * L;
  for (int e = 0; e < kPerThread; ++e) {
    const int i = threadIdx.x + e * blockDim.x;  // consecutive threads, consecutive steps
    const int64_t t = ts + i;
    if (t >= L) break;
    float v = conv_at<W>(xs, i + H, w, bias, p.reverse);
    if (p.silu) v *= sigmoid_f(v);
    out_row[t] = from_f32<T>(v);
  }
}

template <typename T, int W>
__global__ void __launch_bounds__(kMaxThreads) conv_bwd_kernel(const ConvParams p) {
  constexpr int H = 2 * (W - 1);
  const int64_t row = blockIdx.x / p.tiles, tile = blockIdx.x % p.tiles;
  const int64_t c = row % p.dim, L = p.seqlen;
  const int tile_len = blockDim.x * kPerThread;
  const int64_t ts = tile * tile_len;
  // xs: x[ts - H, ts + tile + H); gs: g = dout * silu'(pre) on [ts - (W-1), ts + tile + (W-1)).
  float* xs = dynamic_smem<float>();
  float* gs = xs + tile_len + 2 * H;
  const int g_len = tile_len + 2 * (W - 1);
  stage_row<T>(static_cast<const T*>(p.x) + row * L, L, ts - H, tile_len + 2 * H, xs);
  stage_row<T>(static_cast<const T*>(p.dout) + row * L, L, ts - (W - 1), g_len, gs);

  float w[W];
#pragma unroll
  for (int k = 0; k < W; ++k) w[k] = p.weight[c * W + k];
  const float bias = p.bias != nullptr ? p.bias[c] : 0.f;
  __syncthreads();

  if (p.silu) {  // g in place; gs[j] is step ts - (W-1) + j, which is xs[j + (W-1)]
    for (int j = threadIdx.x; j < g_len; j += blockDim.x) {
      const float pre = conv_at<W>(xs, j + (W - 1), w, bias, p.reverse);
      const float s = sigmoid_f(pre);
      gs[j] *= s * fmaf(pre, 1.f - s, 1.f);
    }
    __syncthreads();
  }

  float dw[W];
#pragma unroll
  for (int k = 0; k < W; ++k) dw[k] = 0.f;
  float db = 0.f;
  T* dx_row = static_cast<T*>(p.dx) + row * L;
  for (int e = 0; e < kPerThread; ++e) {
    const int i = threadIdx.x + e * blockDim.x;
    const int64_t t = ts + i;
    if (t >= L) break;
    const int gi = i + (W - 1);  // gs index of step t
    const int xi = i + H;        // xs index of step t
    float acc = 0.f;
    if (p.reverse) {
#pragma unroll
      for (int k = 0; k < W; ++k) acc = fmaf(w[k], gs[gi - (W - 1) + k], acc);
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k) acc = fmaf(w[k], gs[gi + (W - 1) - k], acc);
    }
    dx_row[t] = from_f32<T>(acc);
    const float g = gs[gi];
    db += g;
    if (p.reverse) {
#pragma unroll
      for (int k = 0; k < W; ++k) dw[k] = fmaf(g, xs[xi + (W - 1) - k], dw[k]);
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k) dw[k] = fmaf(g, xs[xi - (W - 1) + k], dw[k]);
    }
  }

  // Block sums of dw, db: warps first, then warp 0 in a fixed order.
  __shared__ float part[kMaxThreads / 32][W + 1];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int k = 0; k < W; ++k) dw[k] = warp_sum(dw[k]);
  db = warp_sum(db);
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < W; ++k) part[warp][k] = dw[k];
    part[warp][W] = db;
  }
  __syncthreads();
  if (threadIdx.x <= W) {
    float s = 0.f;
    for (int v = 0; v < static_cast<int>(blockDim.x / 32); ++v) s += part[v][threadIdx.x];
    p.ws[blockIdx.x * static_cast<int64_t>(W + 1) + threadIdx.x] = s;
  }
}

// dweight[c, k], dbias[c] = sums of the partials of every (batch, tile) of channel c, in order.
// (Internal linkage: every per-dtype .cu file has its own copy.)
namespace {
__global__ void conv_reduce_kernel(const ConvParams p) {
  const int W1 = p.width + 1;
  const int64_t total = p.dim * W1;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = e / W1, k = e % W1;
    float s = 0.f;
    for (int64_t b = 0; b < p.batch; ++b) {
      const float* src = p.ws + ((b * p.dim + c) * p.tiles) * W1 + k;
      for (int64_t tl = 0; tl < p.tiles; ++tl) s += src[tl * W1];
    }
    if (k < p.width)
      p.dweight[c * p.width + k] = s;
    else if (p.dbias != nullptr)
      p.dbias[c] = s;
  }
}
}  // namespace

template <typename T, int W>
cudaError_t launch_fwd(const ConvParams& p, cudaStream_t stream) {
  const auto kernel = conv_fwd_kernel<T, W>;
  const int64_t blocks = p.batch * p.dim * p.tiles;
  KERNEL_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks)), dim3(p.threads), smem_bytes(p, false), stream)(p);
  return cudaGetLastError();
}

template <typename T, int W>
cudaError_t launch_bwd(const ConvParams& p, cudaStream_t stream) {
  const auto kernel = conv_bwd_kernel<T, W>;
  const int64_t blocks = p.batch * p.dim * p.tiles;
  if (blocks > 0) {
    KERNEL_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks)), dim3(p.threads), smem_bytes(p, true), stream)(p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const int64_t total = p.dim * (p.width + 1);  // > 0: the binding returns early when dim == 0
  const int64_t reduce_blocks = (total + 255) / 256;
  KERNEL_LAUNCH(conv_reduce_kernel, dim3(static_cast<unsigned>(reduce_blocks < 65536 ? reduce_blocks : 65536)),
                dim3(256), 0, stream)(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t conv_fwd(const ConvParams& p, cudaStream_t stream) {
  if (p.batch * p.dim * p.seqlen == 0) return cudaSuccess;
  switch (p.width) {
    case 2: return launch_fwd<T, 2>(p, stream);
    case 3: return launch_fwd<T, 3>(p, stream);
    default: return launch_fwd<T, 4>(p, stream);
  }
}

template <typename T>
cudaError_t conv_bwd(const ConvParams& p, cudaStream_t stream) {
  switch (p.width) {
    case 2: return launch_bwd<T, 2>(p, stream);
    case 3: return launch_bwd<T, 3>(p, stream);
    default: return launch_bwd<T, 4>(p, stream);
  }
}

}  // namespace conv_cuda
