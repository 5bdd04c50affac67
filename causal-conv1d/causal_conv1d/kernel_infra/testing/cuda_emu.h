// A small CPU emulator of the CUDA execution model, for testing our CUDA kernels on machines
// without a GPU (the kernel sources compile unchanged as C++ with -DKERNEL_EMULATE).
//
// Every CUDA thread of a block is a fiber (ucontext for the first entry, _setjmp/_longjmp for the
// switches); blocks run one after another. A fiber runs until it must wait: at __syncthreads()
// (until every live thread of the block arrives), at __syncwarp() (every live thread of the warp),
// or at a shuffle whose source lane has not yet produced that shuffle's value. Shuffles are not
// barriers: a lane waits only for the lane it reads from, and the others run on, so a shuffle
// orders nothing else (a kernel that relies on a shuffle to order shared-memory accesses between
// lanes fails here). The scheduler then picks the next ready fiber (CUDA_EMU_SCHEDULE):
// - `drift` (default): the warps get random priorities, re-drawn at every block barrier, and the
//   highest-priority ready fiber runs (now and then a random one jumps the queue), so one warp
//   typically runs through several barrier-free regions, shuffles included, before another warp
//   moves at all: a missing barrier or a buffer reused too early shows up as a wrong result;
// - `random`: a uniformly random ready fiber, switching only where a fiber waits.
// CUDA_EMU_SEED seeds the choices (default 12345, once per process).
// A barrier that not every thread reaches (divergence) is reported as a deadlock.
//
// Memory checks: dynamic shared memory is filled with NaNs before each block, between guard zones
// (also NaN) that must be unchanged after it: reads of unwritten or out-of-bounds shared memory
// poison the results, out-of-bounds writes raise an error. Launch limits as on a GPU: dynamic
// shared memory above 48 KB needs cudaFuncSetAttribute, and never more than the device limit,
// CUDA_EMU_SMEM_LIMIT bytes (default 232448, an H100's; 166912 is an A100's), which
// cudaDeviceGetAttribute(cudaDevAttrMaxSharedMemoryPerBlockOptin) also reports. Global memory is
// plain host memory: tests check its bounds by surrounding the tensors with poisoned guards
// (kernel_backends.guarded).
//
// What it does not model: memory ordering beyond the waits above (memory is sequentially
// consistent), atomics' reordering (they are sequential here), warp-level lock-step execution,
// concurrent blocks, registers and timing. The test-suite's mutation tests
// (test_emulator_mutations.py) check that it catches a reused buffer, a missing barrier and an
// off-by-one tail.
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
#include <map>
#include <memory>
#include <random>
#include <set>
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
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };

namespace emu {

constexpr size_t kDefaultDynamicSmem = 48 * 1024;  // what a kernel may use without cudaFuncSetAttribute
constexpr size_t kSmemGuard = 1024;                 // poisoned bytes on either side of dynamic shared memory

// Why a fiber cannot run.
enum class Wait : unsigned char { kNone, kBlockBarrier, kWarpBarrier, kShuffle };

struct Fiber {
  ucontext_t uc;
  jmp_buf jb;
  std::unique_ptr<char[]> stack;
  bool started = false, done = false;
  unsigned tid = 0;
  Wait wait = Wait::kNone;
  uint64_t wait_for = 0;  // barrier generation, or the shuffle sequence number awaited
  unsigned wait_src = 0;  // lane (block-linear) whose shuffle value is awaited
  uint64_t shuffles = 0;  // shuffles this thread has executed
  uint64_t key = 0;       // position in the ready queue
};

enum class Schedule { kDrift, kRandom };

struct State {
  std::vector<Fiber> fibers;
  jmp_buf sched;
  size_t cur = 0;
  std::function<void()> body;
  Schedule schedule = Schedule::kDrift;
  std::set<std::pair<uint64_t, unsigned>> ready;  // (key, fiber): the largest key runs next
  std::vector<std::vector<unsigned>> waiters;     // per fiber: fibers waiting for its next shuffle value
  std::vector<unsigned> block_waiters;
  std::vector<std::vector<unsigned>> warp_waiters;
  size_t alive = 0, block_arrived = 0;
  uint64_t block_gen = 0;
  std::vector<size_t> warp_alive, warp_arrived;
  std::vector<uint64_t> warp_gen, warp_priority;
  std::vector<std::vector<uint64_t>> shuffle_values;  // per thread, in shuffle order
  std::unique_ptr<unsigned char[], void (*)(void*)> smem{nullptr, std::free};
  size_t smem_bytes = 0, smem_capacity = 0;
  std::mt19937_64 rng{12345};
  bool seeded = false;
  int mutation = 0;  // CUDA_EMU_MUTATION, read by the mutation tests' rewritten sources
  std::map<const void*, size_t> max_dynamic_smem;  // per kernel, set by cudaFuncSetAttribute
  cudaError_t last_error = cudaSuccess;
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

inline size_t smem_limit() {
  const char* env = std::getenv("CUDA_EMU_SMEM_LIMIT");
  return env != nullptr && *env != '\0' ? static_cast<size_t>(std::strtoull(env, nullptr, 10)) : 232448;
}

// Which deliberate bug a mutated copy of the kernel sources enables (test_emulator_mutations.py).
inline int mutation() { return state().mutation; }

inline void* dynamic_smem() { return state().smem.get() + kSmemGuard; }

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "CUDA emulator: %s\n", what);
  std::abort();
}

// A vector access at a misaligned address faults on a GPU ("misaligned address").
inline void check_aligned(const void* p, size_t bytes) {
  if (reinterpret_cast<uintptr_t>(p) % bytes != 0) fail("misaligned vector access to memory");
}

inline void make_ready(unsigned i) {
  State& s = state();
  Fiber& f = s.fibers[i];
  f.wait = Wait::kNone;
  const unsigned warp = i / 32;
  uint64_t key = s.rng() >> 24;  // 40 random bits
  // drift: the warp's priority first, except that one in 16 wakes jumps (or drops) anywhere.
  if (s.schedule == Schedule::kDrift && (key & 15) != 0) key |= s.warp_priority[warp] << 40;
  else if (s.schedule == Schedule::kDrift) key |= (s.rng() % s.warp_priority.size()) << 40;
  f.key = key;
  s.ready.emplace(key, i);
}

// Parks the current fiber until something makes it ready again.
inline void wait(Wait why) {
  State& s = state();
  s.fibers[s.cur].wait = why;
  if (!_setjmp(s.fibers[s.cur].jb)) _longjmp(s.sched, 1);
}

inline unsigned linear_tid() {
  const dim3& t = thread_idx();
  const dim3& b = block_dim();
  return t.x + b.x * (t.y + b.y * t.z);
}

inline void redraw_warp_priorities() {
  State& s = state();
  for (size_t w = 0; w < s.warp_priority.size(); ++w) s.warp_priority[w] = w;
  std::shuffle(s.warp_priority.begin(), s.warp_priority.end(), s.rng);
}

// Open the block barrier: a new generation, fresh warp priorities, every waiter runnable.
inline void release_block_barrier() {
  State& s = state();
  s.block_arrived = 0;
  ++s.block_gen;
  redraw_warp_priorities();
  std::vector<unsigned> released;
  released.swap(s.block_waiters);
  for (unsigned i : released) make_ready(i);
}

// Open warp `warp`'s barrier: a new generation, every waiter of that warp runnable.
inline void release_warp_barrier(unsigned warp) {
  State& s = state();
  s.warp_arrived[warp] = 0;
  ++s.warp_gen[warp];
  std::vector<unsigned> released;
  released.swap(s.warp_waiters[warp]);
  for (unsigned i : released) make_ready(i);
}

inline void block_barrier() {
  State& s = state();
  if (++s.block_arrived < s.alive) {
    s.block_waiters.push_back(static_cast<unsigned>(s.cur));
    s.fibers[s.cur].wait_for = s.block_gen;
    wait(Wait::kBlockBarrier);
    return;
  }
  // The last to arrive releases the others and queues up behind them like everyone else.
  release_block_barrier();
  make_ready(static_cast<unsigned>(s.cur));
  wait(Wait::kNone);
}

inline void warp_barrier(unsigned warp) {
  State& s = state();
  if (++s.warp_arrived[warp] < s.warp_alive[warp]) {
    s.warp_waiters[warp].push_back(static_cast<unsigned>(s.cur));
    wait(Wait::kWarpBarrier);
    return;
  }
  release_warp_barrier(warp);
}

// A shuffle: publish this lane's value as its next one, then read the source lane's value of the
// same shuffle (waiting only for that lane).
template <typename T>
T shuffle(unsigned mask, T v, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
  if (mask != 0xffffffffu) fail("only full-mask shuffles are supported");
  State& s = state();
  const unsigned tid = linear_tid(), warp = tid / 32;
  Fiber& self = s.fibers[tid];
  const uint64_t seq = self.shuffles++;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  s.shuffle_values[tid].push_back(bits);
  std::vector<unsigned> woken;
  woken.swap(s.waiters[tid]);
  for (unsigned i : woken) {
    if (s.shuffle_values[tid].size() > s.fibers[i].wait_for) make_ready(i);
    else s.waiters[tid].push_back(i);
  }
  const unsigned src = warp * 32 + (static_cast<unsigned>(src_lane) & 31u);
  const dim3& bd = block_dim();
  if (src >= bd.x * bd.y * bd.z) fail("shuffle from a lane outside the block");
  while (s.shuffle_values[src].size() <= seq) {
    self.wait_for = seq;
    self.wait_src = src;
    s.waiters[src].push_back(tid);
    wait(Wait::kShuffle);
  }
  bits = s.shuffle_values[src][seq];
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
  const unsigned warp = f.tid / 32;
  --s.warp_alive[warp];
  // A thread that exits counts as arrived at the barriers the others wait at.
  if (s.alive > 0 && s.block_arrived == s.alive && !s.block_waiters.empty()) release_block_barrier();
  if (s.warp_alive[warp] > 0 && s.warp_arrived[warp] == s.warp_alive[warp] && !s.warp_waiters[warp].empty()) {
    release_warp_barrier(warp);
  }
  _longjmp(s.sched, 1);
}

inline void configure_schedule() {
  State& s = state();
  const char* mode = std::getenv("CUDA_EMU_SCHEDULE");
  const std::string m = mode != nullptr ? mode : "";
  if (m.empty() || m == "drift") s.schedule = Schedule::kDrift;
  else if (m == "random") s.schedule = Schedule::kRandom;
  else throw std::runtime_error("CUDA_EMU_SCHEDULE must be drift or random, got " + m);
  const char* mutation = std::getenv("CUDA_EMU_MUTATION");
  s.mutation = mutation != nullptr ? std::atoi(mutation) : 0;
  const char* seed = std::getenv("CUDA_EMU_SEED");
  if (seed != nullptr && *seed != '\0' && !s.seeded) {
    s.rng.seed(std::strtoull(seed, nullptr, 10));
    s.seeded = true;
  }
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
  s.warp_priority.assign(nwarps, 0);
  s.warp_waiters.assign(nwarps, {});
  s.waiters.assign(nthreads, {});
  s.block_waiters.clear();
  s.shuffle_values.resize(nthreads);
  for (auto& v : s.shuffle_values) v.clear();
  s.ready.clear();
  s.alive = nthreads;
  s.block_arrived = 0;
  s.body = std::move(body);
  // Dynamic shared memory between two guard zones, all NaN (0xff bytes), 64-byte aligned.
  const size_t total = (smem_bytes + 2 * kSmemGuard + 63) / 64 * 64;
  if (s.smem_capacity < total) {
    s.smem.reset(static_cast<unsigned char*>(std::aligned_alloc(64, total)));
    s.smem_capacity = total;
  }
  s.smem_bytes = smem_bytes;
  std::memset(s.smem.get(), 0xff, smem_bytes + 2 * kSmemGuard);
  redraw_warp_priorities();
  for (unsigned i = 0; i < nthreads; ++i) {
    Fiber& f = s.fibers[i];
    if (!f.stack) f.stack.reset(new char[kStack]);
    f.started = f.done = false;
    f.tid = i;
    f.shuffles = 0;
    ++s.warp_alive[i / 32];
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack.get();
    f.uc.uc_stack.ss_size = kStack;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_entry, 0);
    make_ready(i);
  }
  size_t remaining = nthreads;
  const dim3 bd = block_dim();
  while (remaining > 0) {
    if (s.ready.empty()) {
      // Everyone waits: at a barrier some thread never reaches, or for a lane that exited.
      // Abandon the block (its fibers are simply re-created for the next launch).
      throw std::runtime_error("emulator: deadlock at a barrier (divergent __syncthreads or shuffle?)");
    }
    const auto next = std::prev(s.ready.end());
    const unsigned i = next->second;
    s.ready.erase(next);
    Fiber& f = s.fibers[i];
    s.cur = i;
    thread_idx() = dim3(i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y));
    if (!_setjmp(s.sched)) {
      if (!f.started) {
        f.started = true;
        setcontext(&f.uc);
      } else {
        _longjmp(f.jb, 1);
      }
    }
    if (f.done) --remaining;  // otherwise it waits in a list, or is queued again
  }
  const unsigned char* lo = s.smem.get();
  const unsigned char* hi = s.smem.get() + kSmemGuard + smem_bytes;
  for (size_t k = 0; k < kSmemGuard; ++k) {
    if (lo[k] != 0xff || hi[k] != 0xff) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "emulator: shared memory written out of bounds (%zu bytes %s the %zu-byte block)",
                    lo[k] != 0xff ? kSmemGuard - k : k + 1, lo[k] != 0xff ? "before" : "past", smem_bytes);
      throw std::runtime_error(msg);
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
    State& s = state();
    configure_schedule();
    const auto custom = s.max_dynamic_smem.find(reinterpret_cast<const void*>(kernel));
    const size_t allowed = custom != s.max_dynamic_smem.end() ? custom->second : kDefaultDynamicSmem;
    const unsigned nthreads = block.x * block.y * block.z;
    if (smem > allowed || smem > smem_limit() || nthreads == 0 || nthreads > 1024 || grid.x == 0) {
      s.last_error = cudaErrorInvalidValue;  // a real launch fails the same way, running nothing
      return;
    }
    auto saved = std::make_tuple(std::forward<Args>(args)...);
    grid_dim() = grid;
    block_dim() = block;
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
cudaError_t cudaFuncSetAttribute(F kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > emu::smem_limit())
    return cudaErrorInvalidValue;
  emu::state().max_dynamic_smem[reinterpret_cast<const void*>(kernel)] = static_cast<size_t>(value);
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  if (attr != cudaDevAttrMaxSharedMemoryPerBlockOptin) return cudaErrorInvalidValue;
  *value = static_cast<int>(emu::smem_limit());
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::state().last_error;
  emu::state().last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument (emulated launch: shared memory or block size over the limit)";
    default: return "emulated CUDA error";
  }
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) {
  std::memset(p, v, bytes);
  return cudaSuccess;
}
