// A small CPU emulator of the CUDA execution model, for testing our CUDA kernels on machines
// without a GPU (the kernel sources compile unchanged as C++ with -DKERNEL_EMULATE).
//
// Every CUDA thread of a block is a fiber (ucontext for the first entry, _setjmp/_longjmp for the
// switches); blocks run one after another. __syncthreads() and the warp shuffles are real
// rendezvous points: a fiber blocks there until every live thread of the block (or warp) has
// arrived, and the scheduler resumes the fibers in a seeded random order, so a missing barrier
// shows up as a wrong result rather than being hidden by lock-step execution. A barrier that not
// every thread reaches (divergence) is reported as a deadlock. Dynamic shared memory is filled
// with NaNs before each block, so reads of unwritten shared memory poison the results.
//
// What it does not model: memory-ordering subtleties beyond barriers, atomics' reordering (they
// are sequential here), warp-level lock-step execution, resource limits and timing.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};

using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;
inline float __half2float(__half v) { return static_cast<float>(v); }
inline float __bfloat162float(__nv_bfloat16 v) { return static_cast<float>(v); }
inline __half __float2half_rn(float v) { return __half(v); }
inline __nv_bfloat16 __float2bfloat16_rn(float v) { return __nv_bfloat16(v); }

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 719 };
using cudaStream_t = void*;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace emu {

struct Fiber {
  ucontext_t uc;
  jmp_buf jb;
  std::unique_ptr<char[]> stack;
  bool started = false, done = false;
  unsigned tid = 0;
};

struct State {
  std::vector<Fiber> fibers;
  jmp_buf sched;
  size_t cur = 0;
  std::function<void()> body;
  // Barriers: arrivals and generation of the block barrier and of each warp's barrier.
  size_t alive = 0, block_arrived = 0;
  uint64_t block_gen = 0;
  std::vector<size_t> warp_alive, warp_arrived;
  std::vector<uint64_t> warp_gen;
  std::vector<uint64_t> slots;  // shuffle exchange, 32 per warp
  uint64_t progress = 0;
  std::vector<unsigned char> smem;
  std::mt19937 rng{12345};
  cudaError_t last_error = cudaSuccess;
  std::string error;
};

inline State& state() {
  static State s;
  return s;
}

inline dim3& thread_idx() {
  static dim3 v;
  return v;
}
inline dim3& block_idx() {
  static dim3 v;
  return v;
}
inline dim3& block_dim() {
  static dim3 v;
  return v;
}
inline dim3& grid_dim() {
  static dim3 v;
  return v;
}

inline void* dynamic_smem() { return state().smem.data(); }

inline void yield() {
  State& s = state();
  if (!_setjmp(s.fibers[s.cur].jb)) _longjmp(s.sched, 1);
}

inline unsigned linear_tid() {
  const dim3& t = thread_idx();
  const dim3& b = block_dim();
  return t.x + b.x * (t.y + b.y * t.z);
}

inline void block_barrier() {
  State& s = state();
  const uint64_t gen = s.block_gen;
  ++s.block_arrived;
  ++s.progress;
  while (s.block_gen == gen) {
    if (s.block_arrived == s.alive) {
      s.block_arrived = 0;
      ++s.block_gen;
      break;
    }
    yield();
  }
}

inline void warp_barrier(unsigned warp) {
  State& s = state();
  const uint64_t gen = s.warp_gen[warp];
  ++s.warp_arrived[warp];
  ++s.progress;
  while (s.warp_gen[warp] == gen) {
    if (s.warp_arrived[warp] == s.warp_alive[warp]) {
      s.warp_arrived[warp] = 0;
      ++s.warp_gen[warp];
      break;
    }
    yield();
  }
}

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "CUDA emulator: %s\n", what);
  std::abort();
}

template <typename T>
T shuffle(unsigned mask, T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  if (mask != 0xffffffffu) fail("only full-mask shuffles are supported");
  State& s = state();
  const unsigned tid = linear_tid(), warp = tid / 32, lane = tid % 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  s.slots[warp * 32 + lane] = bits;
  warp_barrier(warp);
  const unsigned src = warp * 32 + (static_cast<unsigned>(src_lane) & 31u);
  bits = s.slots[src];
  warp_barrier(warp);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

inline void fiber_entry() {
  State& s = state();
  s.body();
  Fiber& f = s.fibers[s.cur];
  f.done = true;
  --s.alive;
  --s.warp_alive[f.tid / 32];
  ++s.progress;
  _longjmp(s.sched, 1);
}

// Runs `body` for every thread of one block.
inline void run_block(unsigned nthreads, size_t smem_bytes, std::function<void()> body) {
  State& s = state();
  constexpr size_t kStack = 256 * 1024;
  if (s.fibers.size() < nthreads) s.fibers.resize(nthreads);
  const unsigned nwarps = (nthreads + 31) / 32;
  s.warp_alive.assign(nwarps, 0);
  s.warp_arrived.assign(nwarps, 0);
  s.warp_gen.assign(nwarps, 0);
  s.slots.assign(nwarps * 32, 0);
  s.alive = nthreads;
  s.block_arrived = 0;
  s.body = std::move(body);
  s.smem.assign(std::max<size_t>(smem_bytes, 16), 0xff);  // NaN-filled
  for (unsigned i = 0; i < nthreads; ++i) {
    Fiber& f = s.fibers[i];
    if (!f.stack) f.stack.reset(new char[kStack]);
    f.started = f.done = false;
    f.tid = i;
    ++s.warp_alive[i / 32];
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack.get();
    f.uc.uc_stack.ss_size = kStack;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_entry, 0);
  }
  std::vector<unsigned> order(nthreads);
  for (unsigned i = 0; i < nthreads; ++i) order[i] = i;
  size_t remaining = nthreads;
  while (remaining > 0) {
    const uint64_t before = s.progress;
    std::shuffle(order.begin(), order.end(), s.rng);
    for (unsigned i : order) {
      Fiber& f = s.fibers[i];
      if (f.done) continue;
      s.cur = i;
      const dim3& bd = block_dim();
      thread_idx() = dim3(i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y));
      if (!_setjmp(s.sched)) {
        if (!f.started) {
          f.started = true;
          setcontext(&f.uc);
        } else {
          _longjmp(f.jb, 1);
        }
      }
      if (f.done) --remaining;
    }
    if (remaining > 0 && s.progress == before) {
      // Nobody moved in a whole round: some thread waits at a barrier others never reach.
      // Abandon the block (its fibers are simply re-created for the next launch).
      throw std::runtime_error("emulator: deadlock at a barrier (divergent __syncthreads or shuffle?)");
    }
  }
}

template <typename Kernel>
struct Launch {
  Kernel kernel;
  dim3 grid, block;
  size_t smem;
  template <typename... Args>
  void operator()(Args&&... args) const {
    auto saved = std::make_tuple(std::forward<Args>(args)...);
    grid_dim() = grid;
    block_dim() = block;
    const unsigned nthreads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          block_idx() = dim3(bx, by, bz);
          run_block(nthreads, smem, [&]() { std::apply(kernel, saved); });
        }
  }
};

template <typename Kernel>
Launch<Kernel> make_launch(Kernel kernel, dim3 grid, dim3 block, size_t smem) {
  return Launch<Kernel>{kernel, grid, block, smem};
}

}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx())
#define blockDim (emu::block_dim())
#define gridDim (emu::grid_dim())
#define KERNEL_LAUNCH(kern, grid, block, smem, stream) emu::make_launch(kern, grid, block, smem)

inline void __syncthreads() { emu::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(emu::linear_tid() / 32); }
template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int = 32) {
  return emu::shuffle(mask, v, src);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int x, int = 32) {
  return emu::shuffle(mask, v, static_cast<int>(emu::linear_tid() % 32) ^ x);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned d, int = 32) {
  const int lane = static_cast<int>(emu::linear_tid() % 32);
  return emu::shuffle(mask, v, lane >= static_cast<int>(d) ? lane - static_cast<int>(d) : lane);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned d, int = 32) {
  const int lane = static_cast<int>(emu::linear_tid() % 32);
  return emu::shuffle(mask, v, lane + static_cast<int>(d) < 32 ? lane + static_cast<int>(d) : lane);
}
inline float atomicAdd(float* p, float v) {
  const float old = *p;
  *p = old + v;
  return old;
}

template <typename F>
cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::state().last_error;
  emu::state().last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) {
  std::memset(p, v, bytes);
  return cudaSuccess;
}
