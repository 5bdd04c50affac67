// Causal (and anti-causal) depthwise conv1d on the CPU: forward and backward.
//
// out[b, c, t] = bias[c] + sum_k w[c, k] x[b, c, t - (W-1) + k] (zeros before t = 0), optionally
// followed by SiLU; `reverse` gives the anti-causal conv flip(conv(flip(x))), computed as the same
// formula with the taps reversed and the window starting at t. Widths 2-4; x, out, dout, dx are
// contiguous (batch, dim, L) float32/float16/bfloat16 tensors; weight and bias may have any float
// dtype; all arithmetic is float32 and dweight/dbias come back in float32.
//
// This file does the argument checks, the float32 copies of the taps and bias, and the thread
// split; the loops are in causal_conv1d_cpu_kernel.h, vectorised over time on the shared SIMD math
// of causal_conv1d/include/cpu_simd.h (vectorised exp for SiLU and its derivative). They are
// compiled three times (AVX-512, AVX2+FMA, and the baseline instruction set) and picked at run
// time from the CPU, or from CAUSAL_CONV1D_CPU_ISA=auto|avx512|avx2|default (tests, benchmarks),
// exactly as the selective-scan kernel does (cpu_isa.h).
//
// Work split: both passes split the batch * dim rows into contiguous ranges (streaming through
// memory). The backward writes each row's dweight/dbias sums to its own slot and adds the slots up
// over the batch afterwards, in batch order: no atomics, and the results are bitwise independent
// of the number of threads.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu_isa.h"

namespace {

enum class ConvDType { kFloat, kHalf, kBFloat16 };

// Everything the loops need; raw pointers to contiguous tensors.
struct ConvParams {
  ConvDType dtype;
  int width;
  bool silu, reverse;
  int64_t batch, dim, len;
  const void* x;     // (batch, dim, len)
  const void* dout;  // backward
  void* out;         // forward
  void* dx;          // backward
  const float* w;     // (dim, width): taps in the order the kernel uses them (reversed for `reverse`)
  const float* bias;  // (dim,), zeros without a bias
  float* part;        // backward: (batch * dim, width + 1) per-row sums (taps in kernel order, then bias)
};

constexpr int64_t kMaxWidth = 4;
constexpr int64_t kMaxVectorFloats = 16;

}  // namespace

// ---- the loops, once per instruction set -------------------------------------------------------

// Vectors wider than the baseline ABI only appear in always-inline helpers: no ABI is crossed.
#pragma GCC diagnostic ignored "-Wpsabi"

#ifdef CPU_SIMD_HAVE_X86_VARIANTS
CPU_SIMD_TARGET_AVX512_BEGIN
#define CPU_SIMD_WIDTH 16
namespace {
namespace isa_avx512 {
#include "cpu_simd.h"
#include "causal_conv1d_cpu_kernel.h"
}  // namespace isa_avx512
}  // namespace
#undef CPU_SIMD_WIDTH
CPU_SIMD_TARGET_END

CPU_SIMD_TARGET_AVX2_BEGIN
#define CPU_SIMD_WIDTH 8
namespace {
namespace isa_avx2 {
#include "cpu_simd.h"
#include "causal_conv1d_cpu_kernel.h"
}  // namespace isa_avx2
}  // namespace
#undef CPU_SIMD_WIDTH
CPU_SIMD_TARGET_END
#endif

#define CPU_SIMD_WIDTH 4
namespace {
namespace isa_default {
#include "cpu_simd.h"
#include "causal_conv1d_cpu_kernel.h"
}  // namespace isa_default
}  // namespace
#undef CPU_SIMD_WIDTH

namespace {

// ---- instruction-set choice ----------------------------------------------------------------------

struct Kernels {
  const char* name;
  void (*fwd_rows)(const ConvParams&, int64_t, int64_t);
  void (*bwd_rows)(const ConvParams&, int64_t, int64_t, float*);
};

const Kernels kDefaultKernels{"default", isa_default::fwd_rows, isa_default::bwd_rows};
#ifdef CPU_SIMD_HAVE_X86_VARIANTS
const Kernels kAvx2Kernels{"avx2", isa_avx2::fwd_rows, isa_avx2::bwd_rows};
const Kernels kAvx512Kernels{"avx512", isa_avx512::fwd_rows, isa_avx512::bwd_rows};
#endif

const Kernels& kernels() {
  const int level = cpu_isa_level("CAUSAL_CONV1D_CPU_ISA");
#ifdef CPU_SIMD_HAVE_X86_VARIANTS
  if (level == kCpuIsaAvx512) return kAvx512Kernels;
  if (level == kCpuIsaAvx2) return kAvx2Kernels;
#endif
  return kDefaultKernels;
}

// ---- helpers -----------------------------------------------------------------------------------

// Grain for at::parallel_for over items of `work` elements each: at least ~16K elements per task.
int64_t grain(int64_t work) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(work, 1)); }

ConvDType dtype_of(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return ConvDType::kFloat;
    case at::kHalf: return ConvDType::kHalf;
    case at::kBFloat16: return ConvDType::kBFloat16;
    default: break;
  }
  TORCH_CHECK(false, "causal_conv1d CPU kernel: x must be float32, float16 or bfloat16, got ", x.scalar_type());
}

void check_inputs(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu(), "causal_conv1d CPU kernel: x must be a CPU tensor");
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "causal_conv1d: x must be a contiguous (batch, dim, seqlen) tensor");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == x.size(1), "causal_conv1d: weight must be (dim, width)");
  TORCH_CHECK(weight.is_floating_point(), "causal_conv1d: weight must be a real floating tensor");
  TORCH_CHECK(weight.size(1) >= 2 && weight.size(1) <= kMaxWidth, "causal_conv1d: width must be 2, 3 or 4");
  if (bias.has_value())
    TORCH_CHECK(bias->numel() == x.size(1) && bias->is_floating_point(), "causal_conv1d: bias must be (dim,), float");
}

// The float32 taps and bias the loops read.
struct Taps {
  std::vector<float> w, bias;
};

Taps taps(const at::Tensor& weight, const c10::optional<at::Tensor>& bias, bool reverse) {
  const at::Tensor wf = weight.to(at::kFloat).contiguous();
  const int64_t dim = wf.size(0), width = wf.size(1);
  Taps t;
  t.w.resize(dim * width);
  const float* wp = wf.data_ptr<float>();
  for (int64_t c = 0; c < dim; ++c)
    for (int64_t j = 0; j < width; ++j) t.w[c * width + j] = wp[c * width + (reverse ? width - 1 - j : j)];
  t.bias.assign(dim, 0.f);
  if (bias.has_value()) {
    const at::Tensor bf = bias->to(at::kFloat).contiguous();
    std::copy(bf.data_ptr<float>(), bf.data_ptr<float>() + dim, t.bias.begin());
  }
  return t;
}

ConvParams params(const at::Tensor& x, const at::Tensor& weight, const Taps& t, bool silu, bool reverse) {
  ConvParams p{};
  p.dtype = dtype_of(x);
  p.width = static_cast<int>(weight.size(1));
  p.silu = silu;
  p.reverse = reverse;
  p.batch = x.size(0);
  p.dim = x.size(1);
  p.len = x.size(2);
  p.x = x.data_ptr();
  p.w = t.w.data();
  p.bias = t.bias.data();
  return p;
}

void check_like_x(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.sizes() == x.sizes() && t.is_contiguous() && t.scalar_type() == x.scalar_type(),
              "causal_conv1d: ", name, " must be a contiguous CPU tensor with the shape and dtype of x");
}

}  // namespace

void fwd(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias, at::Tensor& out, bool silu_act,
         bool reverse) {
  check_inputs(x, weight, bias);
  check_like_x(out, x, "out");
  // (The loops read x[t - W + 1 ..] after writing out[.. t - 1]: they cannot run in place.)
  TORCH_CHECK(x.numel() == 0 || out.data_ptr() != x.data_ptr(), "causal_conv1d: out must not be x (no in-place conv)");
  const Taps t = taps(weight, bias, reverse);
  ConvParams p = params(x, weight, t, silu_act, reverse);
  p.out = out.data_ptr();
  const Kernels& kern = kernels();
  const int64_t rows = p.batch * p.dim;
  if (rows == 0 || p.len == 0) return;
  at::parallel_for(0, rows, grain(p.len), [&](int64_t begin, int64_t end) { kern.fwd_rows(p, begin, end); });
}

void bwd(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias, const at::Tensor& dout,
         at::Tensor& dx, at::Tensor& dweight, c10::optional<at::Tensor> dbias, bool silu_act, bool reverse) {
  check_inputs(x, weight, bias);
  check_like_x(dout, x, "dout");
  check_like_x(dx, x, "dx");
  TORCH_CHECK(dweight.scalar_type() == at::kFloat && dweight.is_contiguous() && dweight.numel() == weight.numel(),
              "causal_conv1d: dweight must be a contiguous float32 (dim, width) tensor");
  float* dbias_ptr = nullptr;
  if (dbias.has_value()) {
    TORCH_CHECK(dbias->scalar_type() == at::kFloat && dbias->is_contiguous() && dbias->numel() == x.size(1),
                "causal_conv1d: dbias must be a contiguous float32 (dim,) tensor");
    dbias_ptr = dbias->data_ptr<float>();
  }
  const Taps t = taps(weight, bias, reverse);
  ConvParams p = params(x, weight, t, silu_act, reverse);
  p.dout = dout.data_ptr();
  p.dx = dx.data_ptr();
  const int64_t W = p.width, rows = p.batch * p.dim;
  std::vector<float> part(rows * (W + 1), 0.f);
  p.part = part.data();
  const Kernels& kern = kernels();
  if (rows > 0 && p.len > 0) {
    const int64_t pad_floats = p.len + 2 * (kMaxWidth - 1) + kMaxVectorFloats;
    at::parallel_for(0, rows, grain(p.len), [&](int64_t begin, int64_t end) {
      std::vector<float> dpad(pad_floats, 0.f);
      kern.bwd_rows(p, begin, end, dpad.data());
    });
  }
  // dweight, dbias: the per-row sums added up over the batch, in batch order.
  float* dwp = dweight.data_ptr<float>();
  for (int64_t c = 0; c < p.dim; ++c) {
    for (int64_t j = 0; j <= W; ++j) {
      float acc = 0.f;
      for (int64_t b = 0; b < p.batch; ++b) acc += part[(b * p.dim + c) * (W + 1) + j];
      if (j < W)
        dwp[c * W + (reverse ? W - 1 - j : j)] = acc;
      else if (dbias_ptr != nullptr)
        dbias_ptr[c] = acc;
    }
  }
}

std::string isa_name() { return kernels().name; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "causal_conv1d CPU kernels (float32 math; fp32/fp16/bf16 inputs; AVX-512/AVX2/baseline)";
  m.def("fwd", &fwd, "causal conv1d forward", py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::arg("silu"), py::arg("reverse"));
  m.def("bwd", &bwd, "causal conv1d backward", py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("dout"),
        py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("silu"), py::arg("reverse"));
  m.def("isa", &isa_name, "instruction set the kernels run with (auto-detected, or CAUSAL_CONV1D_CPU_ISA)");
}
