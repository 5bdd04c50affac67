// Instruction-set choice for the CPU kernels of causal_conv1d and mamba_ssm, which compile their
// loops once per instruction set (see cpu_simd.h) and pick one at run time.
//
// Include once, outside any namespace and any `#pragma GCC target` region: everything here is
// baseline code. The levels, and the features each one requires (the same lists the target
// pragmas below enable, so a kernel never runs on a CPU without what it was compiled for):
//   0 "default": the baseline of the build (SSE2 on x86-64), CPU_SIMD_WIDTH 4;
//   1 "avx2":    AVX2, FMA, F16C, CPU_SIMD_WIDTH 8;
//   2 "avx512":  AVX-512 F/VL/BW/DQ plus the above, CPU_SIMD_WIDTH 16.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <string>

// Target regions for the per-instruction-set copies of a kernel. Only on x86 with GCC; elsewhere
// (CPU_SIMD_HAVE_X86_VARIANTS undefined) only the baseline copy is built.
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__)
#define CPU_SIMD_HAVE_X86_VARIANTS 1
#define CPU_SIMD_TARGET_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#ifdef CPU_SIMD_EMULATE_AVX512
// Test builds (-DCPU_SIMD_EMULATE_AVX512): the 16-wide copy is compiled for AVX2 with cpu_simd.h's
// generic vector code, and "avx512" is offered wherever AVX2 runs, so that its loops (transposes,
// lane sums, 16-lane blocks in one vector) can be checked on a CPU without AVX-512. The AVX-512
// intrinsics in cpu_simd.h are not exercised by such a build.
#define CPU_SIMD_TARGET_AVX512_BEGIN CPU_SIMD_TARGET_AVX2_BEGIN
#else
#define CPU_SIMD_TARGET_AVX512_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c\")")
#endif
#define CPU_SIMD_TARGET_END _Pragma("GCC pop_options")
#endif

namespace {

constexpr int kCpuIsaDefault = 0, kCpuIsaAvx2 = 1, kCpuIsaAvx512 = 2;

inline const char* cpu_isa_name(int level) {
  return level == kCpuIsaAvx512 ? "avx512" : (level == kCpuIsaAvx2 ? "avx2" : "default");
}

// The best level this CPU (and OS) supports and this build has kernels for.
inline int cpu_isa_best_level() {
#ifdef CPU_SIMD_HAVE_X86_VARIANTS
  static const int level = [] {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#ifdef CPU_SIMD_EMULATE_AVX512
    const bool avx512 = avx2;
#else
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    return avx512 ? kCpuIsaAvx512 : (avx2 ? kCpuIsaAvx2 : kCpuIsaDefault);
  }();
  return level;
#else
  return kCpuIsaDefault;
#endif
}

// The level to run: the best one, unless the environment variable `env_var` names another
// (auto|avx512|avx2|default; empty = auto). Read at every call, so tests can switch it; a name
// this CPU cannot run, or an unknown one, is an error.
inline int cpu_isa_level(const char* env_var) {
  int level = cpu_isa_best_level();
  const char* env = std::getenv(env_var);
  if (env != nullptr && *env != '\0' && std::strcmp(env, "auto") != 0) {
    const std::string want(env);
    int wanted = -1;
    if (want == "default") wanted = kCpuIsaDefault;
    if (want == "avx2") wanted = kCpuIsaAvx2;
    if (want == "avx512") wanted = kCpuIsaAvx512;
    TORCH_CHECK(wanted >= 0, env_var, "=", want, ": expected auto, avx512, avx2 or default");
    TORCH_CHECK(wanted <= level, env_var, "=", want, " but this CPU does not support it");
    level = wanted;
  }
  return level;
}

}  // namespace
