// Causal (and anti-causal) depthwise conv1d on the CPU: forward and backward.
//
// Each (batch, channel) row is copied once into a zero-padded float32 buffer, so the inner loop
// has no bounds checks and the compiler can vectorise it. With xpad[p] = x[p - off],
//   out[t] = bias + sum_j w'[j] * xpad[t + j],
// where off = W-1 and w' = w for the causal conv, and off = 0 and w' = reversed w for the
// anti-causal ("reverse") conv, which equals flip(conv(flip(x))).
// All arithmetic is float32; the backward reduces dweight/dbias per channel over the batch in a
// fixed order, so it is deterministic and needs no atomics.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

inline float silu(float v) { return v / (1.f + std::exp(-v)); }

// Grain for at::parallel_for over rows of `len` elements: at least ~16K elements per task.
inline int64_t row_grain(int64_t len) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(len, 1)); }

void check_inputs(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu(), "causal_conv1d CPU kernel: x must be a CPU tensor");
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "causal_conv1d: x must be a contiguous (batch, dim, seqlen) tensor");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == x.size(1), "causal_conv1d: weight must be (dim, width)");
  TORCH_CHECK(weight.size(1) >= 2 && weight.size(1) <= 4, "causal_conv1d: width must be 2, 3 or 4");
  if (bias.has_value()) TORCH_CHECK(bias->numel() == x.size(1), "causal_conv1d: bias must be (dim,)");
}

// Per-channel taps in float32, in the order the padded-buffer formula uses them.
std::vector<float> taps(const at::Tensor& weight, bool reverse) {
  auto w = weight.to(at::kFloat).contiguous();
  const int64_t dim = w.size(0), width = w.size(1);
  std::vector<float> out(dim * width);
  const float* wp = w.data_ptr<float>();
  for (int64_t c = 0; c < dim; ++c)
    for (int64_t j = 0; j < width; ++j) out[c * width + j] = wp[c * width + (reverse ? width - 1 - j : j)];
  return out;
}

std::vector<float> bias_values(const c10::optional<at::Tensor>& bias, int64_t dim) {
  std::vector<float> out(dim, 0.f);
  if (bias.has_value()) {
    auto b = bias->to(at::kFloat).contiguous();
    std::copy(b.data_ptr<float>(), b.data_ptr<float>() + dim, out.begin());
  }
  return out;
}

// pre[t] = bias + sum_j w[j] * xpad[t + j] for t in [0, len).
template <int W>
inline void conv_row(const float* xpad, const float* w, float bias, float* pre, int64_t len) {
  for (int64_t t = 0; t < len; ++t) {
    float acc = bias;
#pragma GCC unroll 4
    for (int j = 0; j < W; ++j) acc += w[j] * xpad[t + j];
    pre[t] = acc;
  }
}

template <typename scalar_t>
inline void load_padded(const scalar_t* x, int64_t len, int64_t width, bool reverse, float* xpad) {
  const int64_t off = reverse ? 0 : width - 1;
  std::fill(xpad, xpad + len + width - 1, 0.f);
  for (int64_t t = 0; t < len; ++t) xpad[off + t] = static_cast<float>(x[t]);
}

template <typename scalar_t, int W>
void fwd_kernel(const at::Tensor& x, const std::vector<float>& w, const std::vector<float>& b, at::Tensor& out, bool act,
                bool reverse) {
  const int64_t dim = x.size(1), len = x.size(2), rows = x.size(0) * dim;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, rows, row_grain(len), [&](int64_t begin, int64_t end) {
    std::vector<float> xpad(len + W - 1), pre(len);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t c = row % dim;
      load_padded(xp + row * len, len, W, reverse, xpad.data());
      conv_row<W>(xpad.data(), &w[c * W], b[c], pre.data(), len);
      scalar_t* orow = op + row * len;
      for (int64_t t = 0; t < len; ++t) orow[t] = static_cast<scalar_t>(act ? silu(pre[t]) : pre[t]);
    }
  });
}

template <typename scalar_t, int W>
void bwd_kernel(const at::Tensor& x, const std::vector<float>& w, const std::vector<float>& b, const at::Tensor& dout,
                at::Tensor& dx, at::Tensor& dweight, float* dbias, bool act, bool reverse) {
  const int64_t batch = x.size(0), dim = x.size(1), len = x.size(2);
  const int64_t off = reverse ? 0 : W - 1;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* dop = dout.data_ptr<scalar_t>();
  scalar_t* dxp = dx.data_ptr<scalar_t>();
  float* dwp = dweight.data_ptr<float>();
  // One task per channel, looping over the batch: the dweight/dbias sums need no atomics.
  at::parallel_for(0, dim, row_grain(len * batch), [&](int64_t begin, int64_t end) {
    std::vector<float> xpad(len + W - 1), pre(len), dpad(len + 2 * (W - 1));
    for (int64_t c = begin; c < end; ++c) {
      const float* wc = &w[c * W];
      float dw[W] = {0.f};
      float db = 0.f;
      for (int64_t bi = 0; bi < batch; ++bi) {
        const int64_t row = bi * dim + c;
        load_padded(xp + row * len, len, W, reverse, xpad.data());
        const scalar_t* drow = dop + row * len;
        float* dpre = dpad.data() + (W - 1);  // dpad has W-1 zeros on both sides
        std::fill(dpad.begin(), dpad.end(), 0.f);
        if (act) {
          conv_row<W>(xpad.data(), wc, b[c], pre.data(), len);
          for (int64_t t = 0; t < len; ++t) {
            const float s = 1.f / (1.f + std::exp(-pre[t]));
            dpre[t] = static_cast<float>(drow[t]) * s * (1.f + pre[t] * (1.f - s));
          }
        } else {
          for (int64_t t = 0; t < len; ++t) dpre[t] = static_cast<float>(drow[t]);
        }
        for (int64_t t = 0; t < len; ++t) {
          db += dpre[t];
#pragma GCC unroll 4
          for (int j = 0; j < W; ++j) dw[j] += dpre[t] * xpad[t + j];
        }
        // dx[s] = sum_j w[j] * dpre[s + off - j]
        scalar_t* dxrow = dxp + row * len;
        for (int64_t s = 0; s < len; ++s) {
          float acc = 0.f;
#pragma GCC unroll 4
          for (int j = 0; j < W; ++j) acc += wc[j] * dpre[s + off - j];
          dxrow[s] = static_cast<scalar_t>(acc);
        }
      }
      for (int j = 0; j < W; ++j) dwp[c * W + (reverse ? W - 1 - j : j)] = dw[j];
      if (dbias != nullptr) dbias[c] = db;
    }
  });
}

}  // namespace

void fwd(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias, at::Tensor& out, bool silu_act,
         bool reverse) {
  check_inputs(x, weight, bias);
  TORCH_CHECK(out.sizes() == x.sizes() && out.is_contiguous() && out.scalar_type() == x.scalar_type(),
              "causal_conv1d: out must be contiguous and match x");
  const auto w = taps(weight, reverse);
  const auto b = bias_values(bias, x.size(1));
  const int64_t width = weight.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "causal_conv1d_fwd_cpu", [&] {
    if (width == 2) fwd_kernel<scalar_t, 2>(x, w, b, out, silu_act, reverse);
    else if (width == 3) fwd_kernel<scalar_t, 3>(x, w, b, out, silu_act, reverse);
    else fwd_kernel<scalar_t, 4>(x, w, b, out, silu_act, reverse);
  });
}

void bwd(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias, const at::Tensor& dout,
         at::Tensor& dx, at::Tensor& dweight, c10::optional<at::Tensor> dbias, bool silu_act, bool reverse) {
  check_inputs(x, weight, bias);
  TORCH_CHECK(dout.sizes() == x.sizes() && dout.is_contiguous() && dout.scalar_type() == x.scalar_type(),
              "causal_conv1d: dout must be contiguous and match x");
  TORCH_CHECK(dx.sizes() == x.sizes() && dx.is_contiguous() && dx.scalar_type() == x.scalar_type(),
              "causal_conv1d: dx must be contiguous and match x");
  TORCH_CHECK(dweight.scalar_type() == at::kFloat && dweight.is_contiguous() && dweight.numel() == weight.numel(),
              "causal_conv1d: dweight must be a contiguous float32 (dim, width) tensor");
  float* dbias_ptr = nullptr;
  if (dbias.has_value()) {
    TORCH_CHECK(dbias->scalar_type() == at::kFloat && dbias->is_contiguous() && dbias->numel() == x.size(1),
                "causal_conv1d: dbias must be a contiguous float32 (dim,) tensor");
    dbias_ptr = dbias->data_ptr<float>();
  }
  const auto w = taps(weight, reverse);
  const auto b = bias_values(bias, x.size(1));
  const int64_t width = weight.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "causal_conv1d_bwd_cpu", [&] {
    if (width == 2) bwd_kernel<scalar_t, 2>(x, w, b, dout, dx, dweight, dbias_ptr, silu_act, reverse);
    else if (width == 3) bwd_kernel<scalar_t, 3>(x, w, b, dout, dx, dweight, dbias_ptr, silu_act, reverse);
    else bwd_kernel<scalar_t, 4>(x, w, b, dout, dx, dweight, dbias_ptr, silu_act, reverse);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "causal_conv1d CPU kernels (float32 accumulation; fp32/fp16/bf16 inputs)";
  m.def("fwd", &fwd, "causal conv1d forward", py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::arg("silu"), py::arg("reverse"));
  m.def("bwd", &bwd, "causal conv1d backward", py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("dout"),
        py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("silu"), py::arg("reverse"));
}
