// SIMD math shared by the CPU kernels of causal_conv1d and mamba_ssm: native-width float vectors
// (GCC vector extensions), exp2 / sigmoid / SiLU / softplus, and loads and stores that convert
// float32, float16 and bfloat16 rows to and from float32 vectors.
//
// Inclusion contract (this file is meant to be included several times in one translation unit,
// once per instruction set, so that one binary carries AVX-512, AVX2 and baseline kernels):
//   - Define CPU_SIMD_WIDTH to the native vector width in floats: 16 (AVX-512), 8 (AVX2 + FMA) or
//     4 (the baseline, SSE2 on x86-64), and put the matching `#pragma GCC target` in force (see
//     CPU_SIMD_TARGET_* in cpu_isa.h; the features must include those the width needs).
//   - Include it inside a namespace of its own for each instruction set, itself inside an anonymous
//     namespace, e.g.
//         CPU_SIMD_TARGET_AVX512_BEGIN
//         #define CPU_SIMD_WIDTH 16
//         namespace { namespace isa_avx512 {
//         #include "cpu_simd.h"
//         ... kernels using it ...
//         } }
//         #undef CPU_SIMD_WIDTH
//         CPU_SIMD_TARGET_END
//     so every name it defines has internal linkage and exists once per instruction set.
//   - Include <cstdint>, <immintrin.h> (on x86) and the c10 headers that define c10::Half and
//     c10::BFloat16 (<torch/extension.h> does) first, outside any namespace and any target pragma:
//     this file includes nothing (an #include here would land inside the namespace).
// What it defines: typedefs, constexpr constants and always-inline functions only. It has no
// include guard and defines no object or function with external linkage, and it instantiates no
// standard-library template: an out-of-line instantiation compiled for AVX-512 could otherwise be
// the copy the linker keeps for code that runs on a CPU without AVX-512 (an ODR violation that
// crashes). Kernels built on it should follow the same rules, and keep anything with external
// linkage (threads, allocation, std containers) in baseline code outside the target region.
//
// Numerics: exp2 is accurate to about 1 ulp over the whole float range (0 and denormals on
// underflow, inf on overflow, NaN stays NaN); everything else is plain float32 arithmetic on top
// of it. The results are the same for every thread count; they may differ in the last bits
// between instruction sets (FMA contraction, lane counts of reductions).

#ifndef CPU_SIMD_WIDTH
#error "cpu_simd.h: define CPU_SIMD_WIDTH (16, 8 or 4) before including it"
#endif
#if CPU_SIMD_WIDTH != 16 && CPU_SIMD_WIDTH != 8 && CPU_SIMD_WIDTH != 4
#error "cpu_simd.h: CPU_SIMD_WIDTH must be 16, 8 or 4"
#endif
#if (defined(__x86_64__) || defined(__i386__)) && !defined(_IMMINTRIN_H_INCLUDED)
#error "cpu_simd.h: include <immintrin.h> first, outside any namespace"
#endif

#ifndef CPU_SIMD_INLINE
#define CPU_SIMD_INLINE inline __attribute__((always_inline))
#endif
// CPU_SIMD_EMULATE_AVX512 (test builds only, see cpu_isa.h): the 16-wide copy uses the generic
// vector code below instead of AVX-512 intrinsics, so it runs on an AVX2 CPU.
#undef CPU_SIMD_X86
#if (defined(__x86_64__) || defined(__i386__)) && !(CPU_SIMD_WIDTH == 16 && defined(CPU_SIMD_EMULATE_AVX512))
#define CPU_SIMD_X86 1
#else
#define CPU_SIMD_X86 0
#endif

// ---- types ---------------------------------------------------------------------------------------

constexpr int kW = CPU_SIMD_WIDTH;  // floats per native vector
typedef float vn __attribute__((vector_size(4 * CPU_SIMD_WIDTH)));
typedef int32_t vni __attribute__((vector_size(4 * CPU_SIMD_WIDTH)));
typedef uint32_t vnu __attribute__((vector_size(4 * CPU_SIMD_WIDTH)));
typedef uint16_t vnh __attribute__((vector_size(2 * CPU_SIMD_WIDTH)));

constexpr float kLog2e = 1.4426950408889634f;

CPU_SIMD_INLINE vn splat_n(float x) { return vn{} + x; }

// {0, 1, ..., kW - 1}.
CPU_SIMD_INLINE vni iota_n() {
  vni v;
  for (int i = 0; i < kW; ++i) v[i] = i;
  return v;
}

// ---- elementwise ---------------------------------------------------------------------------------

// x > t ? a : b, lane by lane (NaN x picks b).
CPU_SIMD_INLINE vn select_gt_n(vn x, float t, vn a, vn b) { return x > t ? a : b; }

// The lanes i < n of v, zeros above.
CPU_SIMD_INLINE vn keep_first_n(vn v, int n) { return iota_n() < n ? v : vn{}; }

// x clamped to [lo, hi]; NaN stays NaN. (x86 max/min return their second operand when either is
// NaN, hence the operand order.)
CPU_SIMD_INLINE vn clamp_n(vn x, float lo, float hi) {
#if CPU_SIMD_X86
#if CPU_SIMD_WIDTH == 16
  // (The maskz forms with a full mask compile to the plain instructions; the unmasked intrinsics
  // trip GCC 12's -Wmaybe-uninitialized on their undefined pass-through operand.)
  const __mmask16 all = 0xffff;
  return (vn)_mm512_maskz_min_ps(all, _mm512_set1_ps(hi), _mm512_maskz_max_ps(all, _mm512_set1_ps(lo), (__m512)x));
#elif CPU_SIMD_WIDTH == 8
  return (vn)_mm256_min_ps(_mm256_set1_ps(hi), _mm256_max_ps(_mm256_set1_ps(lo), (__m256)x));
#else
  return (vn)_mm_min_ps(_mm_set1_ps(hi), _mm_max_ps(_mm_set1_ps(lo), (__m128)x));
#endif
#else
  return x > hi ? vn{} + hi : (x < lo ? vn{} + lo : x);
#endif
}

// max(x, lo), lane by lane; NaN stays NaN (see clamp_n for the operand order).
CPU_SIMD_INLINE vn max_n(vn x, float lo) {
#if CPU_SIMD_X86
#if CPU_SIMD_WIDTH == 16
  return (vn)_mm512_maskz_max_ps(0xffff, _mm512_set1_ps(lo), (__m512)x);
#elif CPU_SIMD_WIDTH == 8
  return (vn)_mm256_max_ps(_mm256_set1_ps(lo), (__m256)x);
#else
  return (vn)_mm_max_ps(_mm_set1_ps(lo), (__m128)x);
#endif
#else
  return x < lo ? vn{} + lo : x;
#endif
}

CPU_SIMD_INLINE vn abs_n(vn x) { return (vn)((vni)x & 0x7fffffff); }

// 2^x to about 1 ulp, NaN stays NaN. x = k + r with k = round(x) and |r| <= 1/2; 2^r is a degree-6
// minimax polynomial (relative error 1.9e-9, fitted by iterated weighted least squares); the
// result is 2^r scaled by 2^k.
CPU_SIMD_INLINE vn exp2_poly(vn r) {
  vn q = vn{} + 1.534579205326736e-4f;
  q = q * r + 1.3399929739534855e-3f;
  q = q * r + 9.618489071726799e-3f;
  q = q * r + 5.550328642129898e-2f;
  q = q * r + 2.4022646248340607e-1f;
  q = q * r + 6.931471824645996e-1f;
  return q * r + 1.f;
}

#if CPU_SIMD_WIDTH == 16 && CPU_SIMD_X86
// AVX-512: vrndscaleps for k and vscalefps for q * 2^k, which also gets underflow (0, denormals)
// and overflow (inf) right; the clamp only keeps +-inf from turning r into NaN.
constexpr float kExp2Lo = -1000.f, kExp2Hi = 1000.f;
CPU_SIMD_INLINE vn exp2_of_clamped_n(vn xc) {
  const __m512 k = _mm512_maskz_roundscale_ps(0xffff, (__m512)xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const vn q = exp2_poly((vn)_mm512_sub_ps((__m512)xc, k));
  return (vn)_mm512_maskz_scalef_ps(0xffff, (__m512)q, k);
}
#else
// k by the magic-number trick: t = x + 1.5 * 2^23 + 127 rounds x, and the low bits of t then hold
// the exponent field of 2^k, i.e. (bits(t) << 23) is 2^k (0 for k = -127, inf for k = 128).
constexpr float kExp2Lo = -127.f, kExp2Hi = 128.f;
CPU_SIMD_INLINE vn exp2_of_clamped_n(vn xc) {
  const float magic = 12583039.f;
  const vn t = xc + magic;
  const vn k = t - magic;
  return exp2_poly(xc - k) * (vn)((vni)t << 23);
}
#endif
CPU_SIMD_INLINE vn exp2_n(vn x) { return exp2_of_clamped_n(clamp_n(x, kExp2Lo, kExp2Hi)); }
// 2^x for x <= 0 (or NaN): the same values as exp2_n, one operation less (no upper clamp). The
// scan's decays exp(delta * A) with delta >= 0 and A <= 0 are its hot loop.
CPU_SIMD_INLINE vn exp2_nonpos_n(vn x) { return exp2_of_clamped_n(max_n(x, kExp2Lo)); }

// e^x.
CPU_SIMD_INLINE vn exp_n(vn x) { return exp2_n(x * kLog2e); }

// 1 / (1 + e^-x): 0 below about -88, 1 above about 17, NaN stays NaN.
CPU_SIMD_INLINE vn sigmoid_n(vn x) { return 1.f / (1.f + exp2_n(x * -kLog2e)); }

// x * sigmoid(x) (PyTorch's F.silu).
CPU_SIMD_INLINE vn silu_n(vn x) { return x * sigmoid_n(x); }

// d silu(x) / dx = s (1 + x (1 - s)) with s = sigmoid(x).
CPU_SIMD_INLINE vn silu_grad_n(vn x) {
  const vn s = sigmoid_n(x);
  return s * (1.f + x * (1.f - s));
}

// PyTorch's softplus (threshold 20): x above 20, else log(1 + e^x) = max(x, 0) + log1p(e^-|x|).
// log1p(e) for e in (0, 1] uses 2*atanh(s) with s = e / (2 + e) <= 1/3: the odd series up to s^15
// (truncation below 2e-9 relative), accurate also for tiny e.
CPU_SIMD_INLINE vn softplus_n(vn x) {
  const vn e = exp2_nonpos_n(abs_n(x) * -kLog2e);
  const vn s = e / (2.f + e);
  const vn s2 = s * s;
  vn q = splat_n(1.f / 15.f);
  q = q * s2 + 1.f / 13.f;
  q = q * s2 + 1.f / 11.f;
  q = q * s2 + 1.f / 9.f;
  q = q * s2 + 1.f / 7.f;
  q = q * s2 + 1.f / 5.f;
  q = q * s2 + 1.f / 3.f;
  q = q * s2 + 1.f;
  const vn r = select_gt_n(x, 0.f, x, splat_n(0.f)) + 2.f * s * q;
  return select_gt_n(x, 20.f, x, r);
}

// Sum of the lanes, in lane order (a fixed order: deterministic, not the fastest).
CPU_SIMD_INLINE float lane_sum_n(vn v) {
  float s = v[0];
  for (int i = 1; i < kW; ++i) s += v[i];
  return s;
}

// ---- kW consecutive elements <-> one float vector (no alignment needed) -------------------------

CPU_SIMD_INLINE vn load_n(const float* src) {
  vn v;
  __builtin_memcpy(&v, src, sizeof(v));
  return v;
}
CPU_SIMD_INLINE void store_n(float* dst, vn v) { __builtin_memcpy(dst, &v, sizeof(v)); }

CPU_SIMD_INLINE vn load_n(const c10::BFloat16* src) {
  vnh h;
  __builtin_memcpy(&h, src, sizeof(h));
  return (vn)(__builtin_convertvector(h, vnu) << 16);
}
// Round to nearest even, NaN -> 0x7fc0 (as c10::BFloat16).
CPU_SIMD_INLINE void store_n(c10::BFloat16* dst, vn v) {
  const vnu u = (vnu)v;
  const vnu rounded = (u + (0x7fffu + ((u >> 16) & 1u))) >> 16;
  const vnu bits = v != v ? (vnu{} + 0x7fc0u) : rounded;
  const vnh h = __builtin_convertvector(bits, vnh);
  __builtin_memcpy(dst, &h, sizeof(h));
}

CPU_SIMD_INLINE vn load_n(const c10::Half* src) {
#if CPU_SIMD_WIDTH == 16 && CPU_SIMD_X86
  return (vn)_mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
#elif CPU_SIMD_WIDTH == 8 && CPU_SIMD_X86
  return (vn)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
#else
  vn v;
  for (int i = 0; i < kW; ++i) v[i] = static_cast<float>(src[i]);
  return v;
#endif
}
// Round to nearest even (as c10::Half).
CPU_SIMD_INLINE void store_n(c10::Half* dst, vn v) {
#if CPU_SIMD_WIDTH == 16 && CPU_SIMD_X86
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst),
                      _mm512_maskz_cvtps_ph(0xffff, (__m512)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif CPU_SIMD_WIDTH == 8 && CPU_SIMD_X86
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));
#else
  for (int i = 0; i < kW; ++i) dst[i] = static_cast<c10::Half>(v[i]);
#endif
}

// The first n (0 <= n <= kW) elements, zeros above; never reads past src + n. The conversion is
// the one load_n does, so a partial load equals the full one on the lanes it keeps.
template <typename T>
CPU_SIMD_INLINE vn load_first_n(const T* src, int n) {
  T tmp[kW];
  __builtin_memset(tmp, 0, sizeof(tmp));  // all-zero bits: +0 in float32, float16 and bfloat16
  for (int i = 0; i < n; ++i) tmp[i] = src[i];
  return load_n(tmp);
}
// Writes the first n (0 <= n <= kW) lanes only, rounded as store_n rounds them.
template <typename T>
CPU_SIMD_INLINE void store_first_n(T* dst, vn v, int n) {
  T tmp[kW];
  store_n(tmp, v);
  for (int i = 0; i < n; ++i) dst[i] = tmp[i];
}
