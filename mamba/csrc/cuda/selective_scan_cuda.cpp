// Selective scan on CUDA: the `mamba_ssm._C_cuda` module (argument checks, workspaces, launch).
//
// Contract: see mamba_ssm/ops/selective_scan_interface.py. The kernels are in selective_scan_*.cu;
// this file is compiled by the host compiler and only includes c10/ATen headers that do not pull
// in cuSPARSE/cuBLAS.
//
// Determinism: dA, dD and ddelta_bias are always reduced in a fixed order. dB and dC (sums over
// the channels of a B/C group) are too when one block serves the whole group; otherwise they are
// accumulated with atomics, unless MAMBA_DETERMINISTIC=1 or
// torch.use_deterministic_algorithms(True), which switches to per-block partials in a workspace
// (at most ~256 MB, processed in batch slices) summed in a fixed order.

#include <torch/extension.h>

#ifndef KERNEL_EMULATE
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "selective_scan.h"

namespace {

using mamba_cuda::ScanParams;

constexpr int64_t kWorkspaceBudget = int64_t{256} << 20;  // bytes of dB/dC partials per launch

bool deterministic_mode() {
  if (at::globalContext().deterministicAlgorithms()) return true;
  const char* env = std::getenv("MAMBA_DETERMINISTIC");
  if (env == nullptr) return false;
  std::string v(env);
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return v == "1" || v == "true" || v == "yes" || v == "on";
}

int64_t num_chunks(int64_t seqlen) {
  TORCH_CHECK(seqlen >= 0, "selective_scan: seqlen must be >= 0");
  return std::max<int64_t>(1, mamba_cuda::num_chunks(seqlen));
}

void check_device(const at::Tensor& t, const at::Tensor& ref, const char* name) {
#ifndef KERNEL_EMULATE
  TORCH_CHECK(t.is_cuda(), "selective_scan CUDA: ", name, " must be a CUDA tensor");
#endif
  TORCH_CHECK(t.device() == ref.device(), "selective_scan CUDA: ", name, " is on ", t.device(), " but u is on ",
              ref.device());
}

// (batch, dim, L) with unit stride along L, same dtype as u.
void check_row_tensor(const at::Tensor& t, const at::Tensor& u, const char* name) {
  check_device(t, u, name);
  TORCH_CHECK(t.sizes() == u.sizes(), "selective_scan CUDA: ", name, " must have u's shape ", u.sizes(), ", got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == u.scalar_type(), "selective_scan CUDA: ", name, " must have u's dtype ",
              u.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.size(2) <= 1 || t.stride(2) == 1, "selective_scan CUDA: ", name, " needs unit stride along L");
}

void check_f32(const at::Tensor& t, const at::Tensor& u, c10::IntArrayRef shape, const char* name) {
  check_device(t, u, name);
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.sizes() == shape, "selective_scan CUDA: ", name,
              " must be a contiguous float32 tensor of shape ", shape, ", got ", t.scalar_type(), " ", t.sizes());
}

struct Prepared {
  ScanParams p{};
  // Converted copies that must outlive the launch.
  at::Tensor B, C, D, delta_bias;
};

Prepared prepare(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                 const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                 const std::optional<at::Tensor>& delta_bias, bool delta_softplus, bool reverse,
                 const at::Tensor& states) {
  TORCH_CHECK(u.dim() == 3, "selective_scan CUDA: u must be (batch, dim, L), got ", u.sizes());
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "selective_scan CUDA: u must be float32, float16 or bfloat16, got ", dtype);
  check_row_tensor(u, u, "u");
  check_row_tensor(delta, u, "delta");
  if (z.has_value()) check_row_tensor(*z, u, "z");
  const int64_t batch = u.size(0), dim = u.size(1), seqlen = u.size(2);

  check_device(A, u, "A");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == dim && A.scalar_type() == at::kFloat && A.is_contiguous(),
              "selective_scan CUDA: A must be a contiguous float32 (dim, N) tensor (real A only), got ", A.scalar_type(),
              " ", A.sizes());
  const int64_t dstate = A.size(1);
  TORCH_CHECK(dstate >= 1 && dstate <= mamba_cuda::kMaxDstate, "selective_scan CUDA: N must be in [1, ",
              mamba_cuda::kMaxDstate, "], got ", dstate);

  Prepared r;
  auto bc = [&](const at::Tensor& t, const char* name) {
    check_device(t, u, name);
    TORCH_CHECK(t.dim() == 4 && t.size(0) == batch && t.size(2) == dstate && t.size(3) == seqlen,
                "selective_scan CUDA: ", name, " must be (batch, G, N, L) = (", batch, ", G, ", dstate, ", ", seqlen,
                "), got ", t.sizes(), " (constant B/C is not supported)");
    TORCH_CHECK(t.size(1) >= 1 && dim % t.size(1) == 0, "selective_scan CUDA: dim ", dim,
                " is not a multiple of the number of ", name, " groups ", t.size(1));
    TORCH_CHECK(t.is_floating_point(), "selective_scan CUDA: ", name, " must be a floating tensor");
    at::Tensor out = t;
    if (t.scalar_type() != dtype && t.scalar_type() != at::kFloat) out = out.to(at::kFloat);
    if (out.size(3) > 1 && out.stride(3) != 1) out = out.contiguous();
    return out;
  };
  r.B = bc(B, "B");
  r.C = bc(C, "C");
  TORCH_CHECK(r.B.size(1) == r.C.size(1), "selective_scan CUDA: B and C must have the same number of groups");

  auto vec = [&](const std::optional<at::Tensor>& t, const char* name) {
    if (!t.has_value()) return at::Tensor();
    check_device(*t, u, name);
    TORCH_CHECK(t->numel() == dim, "selective_scan CUDA: ", name, " must be (dim,) = (", dim, ",), got ", t->sizes());
    return t->to(at::kFloat).contiguous().view({dim});
  };
  r.D = vec(D, "D");
  r.delta_bias = vec(delta_bias, "delta_bias");

  const int64_t n_chunks = num_chunks(seqlen);
  check_f32(states, u, {batch, dim, n_chunks, dstate}, "states");

  ScanParams& p = r.p;
  p.batch = batch;
  p.dim = dim;
  p.seqlen = seqlen;
  p.dstate = dstate;
  p.n_groups = r.B.size(1);
  p.dim_per_group = dim / p.n_groups;
  p.n_chunks = n_chunks;
  p.delta_softplus = delta_softplus;
  p.reverse = reverse;
  p.B_f32 = r.B.scalar_type() == at::kFloat;
  p.C_f32 = r.C.scalar_type() == at::kFloat;
  p.u = u.data_ptr();
  p.u_sb = u.stride(0);
  p.u_sd = u.stride(1);
  p.delta = delta.data_ptr();
  p.delta_sb = delta.stride(0);
  p.delta_sd = delta.stride(1);
  p.A = A.data_ptr<float>();
  p.B = r.B.data_ptr();
  p.B_sb = r.B.stride(0);
  p.B_sg = r.B.stride(1);
  p.B_sn = r.B.stride(2);
  p.C = r.C.data_ptr();
  p.C_sb = r.C.stride(0);
  p.C_sg = r.C.stride(1);
  p.C_sn = r.C.stride(2);
  p.D = r.D.defined() ? r.D.data_ptr<float>() : nullptr;
  p.delta_bias = r.delta_bias.defined() ? r.delta_bias.data_ptr<float>() : nullptr;
  if (z.has_value()) {
    p.z = z->data_ptr();
    p.z_sb = z->stride(0);
    p.z_sd = z->stride(1);
  }
  p.states = states.data_ptr<float>();
  return r;
}

// Opt-in shared memory per block of a device (227 KB on an H100, 163 KB on an A100, 99 KB on
// consumer GPUs); the emulator reports CUDA_EMU_SMEM_LIMIT.
size_t smem_limit(int device) {
  int bytes = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  TORCH_CHECK(err == cudaSuccess, "selective_scan CUDA: cannot query the shared memory of device ", device, ": ",
              cudaGetErrorString(err));
  return static_cast<size_t>(bytes);
}

size_t smem_limit(const at::Tensor& u) { return smem_limit(u.device().index() < 0 ? 0 : u.device().index()); }

int max_warps(bool backward) {
  if (!backward) return mamba_cuda::kFwdMaxWarps;
  const char* env = std::getenv("MAMBA_CUDA_BWD_WARPS");
  if (env == nullptr || *env == '\0') return mamba_cuda::kBwdDefaultWarps;
  const int w = std::atoi(env);
  TORCH_CHECK(w >= 1 && w <= mamba_cuda::kBwdMaxWarps && (w & (w - 1)) == 0,
              "MAMBA_CUDA_BWD_WARPS must be a power of two in [1, ", mamba_cuda::kBwdMaxWarps, "], got ", env);
  return w;
}

// Forward B/C tiles: two where they fit (the next chunk's is staged during this one's state loop),
// else one; MAMBA_CUDA_FWD_TILES=1 forces one (to compare the two on a GPU).
int fwd_tiles(int64_t dim_per_group, int64_t dstate, size_t limit) {
  const char* env = std::getenv("MAMBA_CUDA_FWD_TILES");
  const bool one = env != nullptr && *env != '\0' && std::string(env) != "2";
  TORCH_CHECK(!one || std::string(env) == "1", "MAMBA_CUDA_FWD_TILES must be 1 or 2, got ", env);
  return one ? 1 : mamba_cuda::plan_fwd_tiles(dim_per_group, dstate, limit, max_warps(false));
}

void plan(ScanParams& p, const at::Tensor& u, bool backward) {
  const size_t limit = smem_limit(u);
  p.fwd_tiles = fwd_tiles(p.dim_per_group, p.dstate, limit);
  p.warps = mamba_cuda::plan_warps(p.dim_per_group, p.dstate, limit, backward, max_warps(backward), p.fwd_tiles);
  // The B/C tile of a chunk (2 * N * 288 floats) must fit: N <= ~90 on an H100, ~65 on an A100.
  TORCH_CHECK(p.warps > 0, "selective_scan CUDA: N = ", p.dstate, " needs more shared memory per block than this GPU ",
              "has (", limit, " bytes); use a smaller d_state or the Triton/reference backend");
  TORCH_CHECK(p.batch * (p.dim / p.warps) <= int64_t{0x7fffffff}, "selective_scan CUDA: batch * dim too large");
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "selective_scan CUDA ", what, " failed: ", cudaGetErrorString(err));
}

cudaStream_t current_stream(const at::Tensor& u) {
#ifdef KERNEL_EMULATE
  (void)u;
  return nullptr;
#else
  return c10::cuda::getCurrentCUDAStream(u.device().index()).stream();
#endif
}

void fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
         const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
         const std::optional<at::Tensor>& delta_bias, bool delta_softplus, bool reverse, at::Tensor& out,
         at::Tensor& states) {
#ifndef KERNEL_EMULATE
  const c10::cuda::CUDAGuard guard(u.device());
#endif
  Prepared r = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, states);
  ScanParams& p = r.p;
  check_row_tensor(out, u, "out");
  p.out = out.data_ptr();
  p.out_sb = out.stride(0);
  p.out_sd = out.stride(1);
  if (p.seqlen == 0) {
    states.zero_();
    return;
  }
  plan(p, u, false);
  const cudaStream_t stream = current_stream(u);
  cudaError_t err;
  switch (u.scalar_type()) {
    case at::kFloat: err = mamba_cuda::scan_fwd_fp32(p, stream); break;
    case at::kHalf: err = mamba_cuda::scan_fwd_fp16(p, stream); break;
    default: err = mamba_cuda::scan_fwd_bf16(p, stream); break;
  }
  check_launch(err, "forward");
}

void bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
         const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
         const std::optional<at::Tensor>& delta_bias, bool delta_softplus, bool reverse, const at::Tensor& dout,
         const at::Tensor& states, at::Tensor& du, at::Tensor& ddelta, at::Tensor& dA, at::Tensor& dB, at::Tensor& dC,
         std::optional<at::Tensor> dD, std::optional<at::Tensor> dz, std::optional<at::Tensor> ddelta_bias,
         std::optional<at::Tensor> out_z) {
#ifndef KERNEL_EMULATE
  const c10::cuda::CUDAGuard guard(u.device());
#endif
  Prepared r = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, states);
  ScanParams& p = r.p;
  check_row_tensor(dout, u, "dout");
  check_row_tensor(du, u, "du");
  check_row_tensor(ddelta, u, "ddelta");
  check_f32(dA, u, A.sizes(), "dA");
  check_f32(dB, u, B.sizes(), "dB");
  check_f32(dC, u, C.sizes(), "dC");
  TORCH_CHECK(dD.has_value() == D.has_value(), "selective_scan CUDA: dD must be given exactly when D is");
  TORCH_CHECK(ddelta_bias.has_value() == delta_bias.has_value(),
              "selective_scan CUDA: ddelta_bias must be given exactly when delta_bias is");
  if (dD.has_value()) check_f32(*dD, u, {p.dim}, "dD");
  if (ddelta_bias.has_value()) check_f32(*ddelta_bias, u, {p.dim}, "ddelta_bias");
  if (dz.has_value()) {
    TORCH_CHECK(z.has_value(), "selective_scan CUDA: dz given without z");
    check_row_tensor(*dz, u, "dz");
  }
  if (out_z.has_value()) check_row_tensor(*out_z, u, "out_z");

  p.dout = dout.data_ptr();
  p.dout_sb = dout.stride(0);
  p.dout_sd = dout.stride(1);
  p.du = du.data_ptr();
  p.du_sb = du.stride(0);
  p.du_sd = du.stride(1);
  p.ddelta = ddelta.data_ptr();
  p.ddelta_sb = ddelta.stride(0);
  p.ddelta_sd = ddelta.stride(1);
  if (dz.has_value()) {
    p.dz = dz->data_ptr();
    p.dz_sb = dz->stride(0);
    p.dz_sd = dz->stride(1);
  }
  if (out_z.has_value()) {
    p.out_z = out_z->data_ptr();
    p.out_z_sb = out_z->stride(0);
    p.out_z_sd = out_z->stride(1);
  }
  p.dA = dA.data_ptr<float>();
  p.dB = dB.data_ptr<float>();
  p.dC = dC.data_ptr<float>();
  p.dD = dD.has_value() ? dD->data_ptr<float>() : nullptr;
  p.ddelta_bias = ddelta_bias.has_value() ? ddelta_bias->data_ptr<float>() : nullptr;

  if (p.batch == 0 || p.dim == 0 || p.seqlen == 0) {
    for (at::Tensor* t : {&du, &ddelta, &dA, &dB, &dC}) t->zero_();
    for (auto* t : {&dD, &ddelta_bias, &dz}) {
      if (t->has_value()) (*t)->zero_();
    }
    if (out_z.has_value() && p.seqlen == 0) out_z->zero_();
    return;
  }

  plan(p, u, true);
  const int64_t blocks_per_group = p.dim_per_group / p.warps;
  const at::TensorOptions f32 = u.options().dtype(at::kFloat);
  at::Tensor ws_small = at::empty({p.batch, p.dim, p.dstate + 2}, f32);
  at::Tensor ws_bc;
  p.ws_small = ws_small.data_ptr<float>();
  p.batch_slice = p.batch;
  if (blocks_per_group == 1) {
    p.bc_mode = mamba_cuda::kBCDirect;
  } else if (deterministic_mode()) {
    p.bc_mode = mamba_cuda::kBCWorkspace;
    const int64_t per_batch = p.n_groups * blocks_per_group * 2 * p.dstate * p.seqlen;
    p.batch_slice = std::clamp<int64_t>(kWorkspaceBudget / (per_batch * int64_t{sizeof(float)}), 1, p.batch);
    ws_bc = at::empty({p.batch_slice * per_batch}, f32);
    p.ws_bc = ws_bc.data_ptr<float>();
  } else {
    p.bc_mode = mamba_cuda::kBCAtomic;
  }
  // dB/dC are written with B/C's (contiguous) layout.
  TORCH_CHECK(dB.sizes() == r.B.sizes() && dC.sizes() == r.C.sizes(), "selective_scan CUDA: dB/dC shape mismatch");

  const cudaStream_t stream = current_stream(u);
  cudaError_t err;
  switch (u.scalar_type()) {
    case at::kFloat: err = mamba_cuda::scan_bwd_fp32(p, stream); break;
    case at::kHalf: err = mamba_cuda::scan_bwd_fp16(p, stream); break;
    default: err = mamba_cuda::scan_bwd_bf16(p, stream); break;
  }
  check_launch(err, "backward");
}

// Launch plan for given shapes on the current device, for tests and benchmarks (0 warps: does not fit).
py::dict launch_plan(int64_t dim, int64_t n_groups, int64_t dstate, int64_t seqlen) {
  const int64_t dpg = dim / n_groups;
  int device = 0;
  const cudaError_t err = cudaGetDevice(&device);
  TORCH_CHECK(err == cudaSuccess, "selective_scan CUDA: no current device: ", cudaGetErrorString(err));
  const size_t limit = smem_limit(device);
  py::dict d;
  d["chunk_full"] = mamba_cuda::kChunkFull;
  d["chunk_tail"] = mamba_cuda::kChunkTail;
  d["num_chunks"] = num_chunks(seqlen);
  d["smem_limit"] = limit;
  const int tiles = fwd_tiles(dpg, dstate, limit);
  d["fwd_tiles"] = tiles;
  d["fwd_warps"] = mamba_cuda::plan_warps(dpg, dstate, limit, false, max_warps(false), tiles);
  d["fwd_smem"] = mamba_cuda::fwd_smem_bytes(d["fwd_warps"].cast<int>(), dstate, tiles);
  const int bw = mamba_cuda::plan_warps(dpg, dstate, limit, true, max_warps(true));
  d["bwd_warps"] = bw;
  d["bwd_smem"] = mamba_cuda::bwd_smem_bytes(bw, dstate);
  d["bwd_blocks_per_group"] = bw > 0 ? dpg / bw : 0;
  d["deterministic"] = deterministic_mode();
  return d;
}

}  // namespace

// The TORCH_CUDA_ARCH_LIST of the build, as one token (causal_conv1d.kernel_infra.build.arch_define), for the
// dispatcher's message when the GPU is not among them.
#define KERNEL_STRINGIFY2(x) #x
#define KERNEL_STRINGIFY(x) KERNEL_STRINGIFY2(x)

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
#ifdef KERNEL_BUILT_ARCHS
  m.attr("built_archs_code") = KERNEL_STRINGIFY(KERNEL_BUILT_ARCHS);
#endif
  m.doc() = "selective scan CUDA kernels (float32 state and math; fp32/fp16/bf16 inputs)";
  m.def("num_chunks", &num_chunks, "number of saved states per row for a sequence length", py::arg("seqlen"));
  m.def("fwd", &fwd, "selective scan forward: writes out and the chunk states", py::arg("u"), py::arg("delta"),
        py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"),
        py::arg("delta_softplus"), py::arg("reverse"), py::arg("out"), py::arg("states"));
  m.def("bwd", &bwd, "selective scan backward: writes every gradient (and out_z if given)", py::arg("u"),
        py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"),
        py::arg("delta_softplus"), py::arg("reverse"), py::arg("dout"), py::arg("states"), py::arg("du"),
        py::arg("ddelta"), py::arg("dA"), py::arg("dB"), py::arg("dC"), py::arg("dD"), py::arg("dz"),
        py::arg("ddelta_bias"), py::arg("out_z"));
  m.def("launch_plan", &launch_plan, "launch configuration the kernels would use (for tests/benchmarks)",
        py::arg("dim"), py::arg("n_groups"), py::arg("dstate"), py::arg("seqlen"));
  m.attr("chunk_size") = mamba_cuda::kChunkFull;
}
