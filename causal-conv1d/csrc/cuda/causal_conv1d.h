// Causal depthwise conv1d on CUDA: parameters and launchers shared by the binding
// (causal_conv1d_cuda.cpp, host compiler) and the kernels (causal_conv1d_{fwd,bwd}.cu).
//
// Layout: x, out, dout, dx are contiguous (batch, dim, L); a "row" is one (batch, channel).
// Work: one block per tile of `tile` consecutive steps of one row (blocks numbered row-major on
// grid.x: no 65,535 limit on channels); the tile plus a halo of 2 (W - 1) steps on each side is
// staged in shared memory as float32 with coalesced loads, then every thread computes `kPerThread`
// outputs. Weights and bias are float32 (converted once on the host).
// Backward: dweight/dbias partial sums per block go to a workspace (rows * tiles, W + 1) that a
// second kernel reduces per channel in a fixed order: deterministic, no atomics.
#pragma once

#ifdef KERNEL_EMULATE
#include "cuda_emu.h"
#else
#include <cuda_runtime_api.h>
#endif

#include <cstdint>

namespace conv_cuda {

constexpr int kPerThread = 8;     // outputs per thread
constexpr int kMaxThreads = 128;  // threads per block

struct ConvParams {
  int64_t batch, dim, seqlen;
  int width;
  bool silu, reverse;
  const void* x;
  const float* weight;  // (dim, width) contiguous float32
  const float* bias;    // (dim,) or null
  void* out;            // forward
  const void* dout;     // backward
  void* dx;
  float* dweight;  // (dim, width)
  float* dbias;    // or null
  float* ws;       // (rows * tiles, width + 1) partials
  int threads;     // per block (multiple of 32)
  int64_t tiles;   // per row
};

// Threads per block and tiles per row for a sequence length.
inline void plan(ConvParams& p) {
  const int64_t needed = (p.seqlen + kPerThread - 1) / kPerThread;  // threads to cover one row
  int64_t threads = needed < kMaxThreads ? ((needed + 31) / 32) * 32 : kMaxThreads;
  if (threads < 32) threads = 32;
  p.threads = static_cast<int>(threads);
  const int64_t tile = threads * kPerThread;
  p.tiles = (p.seqlen + tile - 1) / tile;
}

// Shared memory of a block: x (and, backward, dout') tile with halos.
inline size_t smem_bytes(const ConvParams& p, bool backward) {
  const int64_t span = static_cast<int64_t>(p.threads) * kPerThread + 4 * (p.width - 1);
  return sizeof(float) * static_cast<size_t>(backward ? 2 * span : span) + 16;
}

cudaError_t conv_fwd_fp32(const ConvParams& p, cudaStream_t stream);
cudaError_t conv_fwd_fp16(const ConvParams& p, cudaStream_t stream);
cudaError_t conv_fwd_bf16(const ConvParams& p, cudaStream_t stream);
cudaError_t conv_bwd_fp32(const ConvParams& p, cudaStream_t stream);
cudaError_t conv_bwd_fp16(const ConvParams& p, cudaStream_t stream);
cudaError_t conv_bwd_bf16(const ConvParams& p, cudaStream_t stream);

}  // namespace conv_cuda
