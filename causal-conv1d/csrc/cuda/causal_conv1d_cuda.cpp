// Causal (and anti-causal) depthwise conv1d on CUDA: the `causal_conv1d._C_cuda` module.
//
// Contract: see causal_conv1d/causal_conv1d_interface.py. Kernels in causal_conv1d_*.cu. The
// weight and bias are converted to float32 once here; all arithmetic is float32. The backward is
// deterministic (per-block dweight/dbias partials reduced in a fixed order, no atomics). Only
// c10/ATen headers that do not pull in cuSPARSE/cuBLAS are included.

#include <torch/extension.h>

#ifndef KERNEL_EMULATE
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <optional>

#include "causal_conv1d.h"

namespace {

using conv_cuda::ConvParams;

void check_inputs(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
#ifndef KERNEL_EMULATE
  TORCH_CHECK(x.is_cuda(), "causal_conv1d CUDA kernel: x must be a CUDA tensor");
#endif
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous(), "causal_conv1d: x must be a contiguous (batch, dim, seqlen) tensor");
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "causal_conv1d CUDA: x must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == x.size(1), "causal_conv1d: weight must be (dim, width)");
  TORCH_CHECK(weight.size(1) >= 2 && weight.size(1) <= 4, "causal_conv1d: width must be 2, 3 or 4");
  TORCH_CHECK(weight.device() == x.device(), "causal_conv1d: weight must be on x's device");
  if (bias.has_value()) {
    TORCH_CHECK(bias->numel() == x.size(1), "causal_conv1d: bias must be (dim,)");
    TORCH_CHECK(bias->device() == x.device(), "causal_conv1d: bias must be on x's device");
  }
  TORCH_CHECK(x.size(0) * x.size(1) * ((x.size(2) + 1023) / 1024 + 1) <= int64_t{0x7fffffff},
              "causal_conv1d CUDA: tensor too large for one launch");
}

void check_like(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.sizes() == x.sizes() && t.is_contiguous() && t.scalar_type() == x.scalar_type() &&
                  t.device() == x.device(),
              "causal_conv1d: ", name, " must be contiguous and match x");
}

struct Prepared {
  ConvParams p{};
  at::Tensor weight, bias;  // float32 copies that outlive the launch
};

Prepared prepare(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias, bool silu,
                 bool reverse) {
  Prepared r;
  r.weight = weight.to(at::kFloat).contiguous();
  if (bias.has_value()) r.bias = bias->to(at::kFloat).contiguous();
  ConvParams& p = r.p;
  p.batch = x.size(0);
  p.dim = x.size(1);
  p.seqlen = x.size(2);
  p.width = static_cast<int>(weight.size(1));
  p.silu = silu;
  p.reverse = reverse;
  p.x = x.data_ptr();
  p.weight = r.weight.data_ptr<float>();
  p.bias = r.bias.defined() ? r.bias.data_ptr<float>() : nullptr;
  conv_cuda::plan(p);
  return r;
}

cudaStream_t current_stream(const at::Tensor& x) {
#ifdef KERNEL_EMULATE
  (void)x;
  return nullptr;
#else
  return c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
#endif
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "causal_conv1d CUDA ", what, " failed: ", cudaGetErrorString(err));
}

}  // namespace

void fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias, at::Tensor& out,
         bool silu, bool reverse) {
  check_inputs(x, weight, bias);
  check_like(out, x, "out");
#ifndef KERNEL_EMULATE
  const c10::cuda::CUDAGuard guard(x.device());
#endif
  Prepared r = prepare(x, weight, bias, silu, reverse);
  r.p.out = out.data_ptr();
  const cudaStream_t stream = current_stream(x);
  cudaError_t err;
  switch (x.scalar_type()) {
    case at::kFloat: err = conv_cuda::conv_fwd_fp32(r.p, stream); break;
    case at::kHalf: err = conv_cuda::conv_fwd_fp16(r.p, stream); break;
    default: err = conv_cuda::conv_fwd_bf16(r.p, stream); break;
  }
  check_launch(err, "forward");
}

void bwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& dout,
         at::Tensor& dx, at::Tensor& dweight, std::optional<at::Tensor> dbias, bool silu, bool reverse) {
  check_inputs(x, weight, bias);
  check_like(dout, x, "dout");
  check_like(dx, x, "dx");
  TORCH_CHECK(dweight.scalar_type() == at::kFloat && dweight.is_contiguous() && dweight.numel() == weight.numel() &&
                  dweight.device() == x.device(),
              "causal_conv1d: dweight must be a contiguous float32 (dim, width) tensor");
  if (dbias.has_value()) {
    TORCH_CHECK(dbias->scalar_type() == at::kFloat && dbias->is_contiguous() && dbias->numel() == x.size(1) &&
                    dbias->device() == x.device(),
                "causal_conv1d: dbias must be a contiguous float32 (dim,) tensor");
  }
#ifndef KERNEL_EMULATE
  const c10::cuda::CUDAGuard guard(x.device());
#endif
  if (x.size(1) == 0) return;
  Prepared r = prepare(x, weight, bias, silu, reverse);
  ConvParams& p = r.p;
  p.dout = dout.data_ptr();
  p.dx = dx.data_ptr();
  p.dweight = dweight.data_ptr<float>();
  p.dbias = dbias.has_value() ? dbias->data_ptr<float>() : nullptr;
  at::Tensor ws = at::empty({std::max<int64_t>(1, p.batch * p.dim * p.tiles * (p.width + 1))},
                            x.options().dtype(at::kFloat));
  p.ws = ws.data_ptr<float>();
  const cudaStream_t stream = current_stream(x);
  cudaError_t err;
  switch (x.scalar_type()) {
    case at::kFloat: err = conv_cuda::conv_bwd_fp32(p, stream); break;
    case at::kHalf: err = conv_cuda::conv_bwd_fp16(p, stream); break;
    default: err = conv_cuda::conv_bwd_bf16(p, stream); break;
  }
  check_launch(err, "backward");
}

// The TORCH_CUDA_ARCH_LIST of the build, as one token (causal_conv1d.kernel_infra.build.arch_define), for the
// dispatcher's message when the GPU is not among them.
#define KERNEL_STRINGIFY2(x) #x
#define KERNEL_STRINGIFY(x) KERNEL_STRINGIFY2(x)

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
#ifdef KERNEL_BUILT_ARCHS
  m.attr("built_archs_code") = KERNEL_STRINGIFY(KERNEL_BUILT_ARCHS);
#endif
  m.doc() = "causal_conv1d CUDA kernels (float32 accumulation; fp32/fp16/bf16 inputs; deterministic backward)";
  m.def("fwd", &fwd, "causal conv1d forward", py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        py::arg("silu"), py::arg("reverse"));
  m.def("bwd", &bwd, "causal conv1d backward", py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("dout"),
        py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("silu"), py::arg("reverse"));
}
