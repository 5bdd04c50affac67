// Definitions shared by selective_scan_cpu.cpp and the per-instruction-set kernel it includes
// (selective_scan_cpu_kernel.h): the task parameters and a few constants.
#pragma once

#include <cstdint>

namespace {

#define SS_INLINE inline __attribute__((always_inline))

// Steps per chunk: the granularity of the saved states, and of the backward's recomputation
// (whose per-thread buffers are about 2 * kChunk * N * 64 bytes, e.g. 128 KiB for N = 16).
constexpr int64_t kChunk = 64;
constexpr int64_t kBlock = 16;  // channels per block = SIMD lanes of the kernel
constexpr int64_t kMaxBlocksPerBwdTask = 4;

enum class DType { kFloat, kHalf, kBFloat16 };

// Everything a task needs; raw pointers and element strides (batch stride *_sb, channel stride
// *_sd; the time stride is 1).
struct ScanParams {
  DType dtype;
  int64_t batch, dim, seqlen, dstate;
  int64_t groups, dim_per_group, blocks_per_group;  // internal groups (see prepare())
  int64_t chunk, blocks_per_task, tasks_per_group;
  bool softplus, reverse;
  const void* u;
  int64_t u_sb, u_sd;
  const void* delta;
  int64_t delta_sb, delta_sd;
  const void* z;  // nullable
  int64_t z_sb, z_sd;
  const float* A;           // (dim, N) contiguous
  const float* D;           // (dim,) or null
  const float* delta_bias;  // (dim,) or null
  const float* Bt;          // (batch, groups, L, N) contiguous, processing order
  const float* Ct;
  float* states;  // (batch, dim, chunks, N): every chunk's final state, or only the last one
  int64_t st_sb, st_sd, st_sc, st_sn;
  bool all_states;  // false: states has one chunk slot, the sequence's last state (inference)
  // forward
  void* out;
  int64_t out_sb, out_sd;
  // backward
  const void* dout;
  int64_t dout_sb, dout_sd;
  void* du;
  int64_t du_sb, du_sd;
  void* ddelta;
  int64_t ddelta_sb, ddelta_sd;
  void* dz;  // nullable
  int64_t dz_sb, dz_sd;
  void* out_z;  // nullable
  int64_t out_z_sb, out_z_sd;
  float* dBC_part;    // (batch * groups * tasks_per_group, 2, L, N)
  float* dA_part;     // (batch, dim, N)
  float* dD_part;     // (batch, dim)
  float* dbias_part;  // (batch, dim)
};

}  // namespace
