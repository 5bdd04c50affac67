// Selective scan on the CPU: forward and backward (the `mamba_ssm._C_cpu` scan kernels).
//
// Contract: see mamba_ssm/ops/selective_scan_interface.py. Per (batch b, channel d, state n):
//   delta <- softplus(delta + delta_bias);  h_s = exp(delta_s A[d,n]) h_{s-1} + delta_s B_s[n] u_s;
//   y_s = sum_n C_s[n] h_s[n] + D[d] u_s;    out_s = y_s * silu(z_s),
// with s the processing step (time t = s, or L-1-s when `reverse`). States and math are float32.
//
// This file does the argument checks, the (cheap) layout preparation, the thread split and the
// deterministic reductions; the loops themselves are in selective_scan_cpu_kernel.h, compiled
// three times (AVX-512, AVX2+FMA, and the baseline instruction set) and picked at run time from
// the CPU (or from MAMBA_CPU_ISA=auto|avx512|avx2|default, for tests and benchmarks). The vector
// math (exp2, sigmoid, softplus, converting loads/stores) and the instruction-set choice come from
// causal_conv1d's headers cpu_simd.h and cpu_isa.h, shared with its conv kernel.
//
// Work split: 16 channels of one (batch, group) form a block (the 16 SIMD lanes). The forward runs
// one task per block. The backward runs one task per run of up to 4 blocks of a (batch, group);
// the run length depends only on the shapes, and every cross-task sum (dB, dC over the channels of
// a group; dA, dD, ddelta_bias over the batch) goes through per-task partial buffers reduced in a
// fixed order, so the results are bitwise independent of the number of threads. No atomics.
// All offsets are 64-bit.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "cpu_isa.h"  // causal_conv1d/include (build.py adds it to the include path)
#include "selective_scan_cpu_common.h"

// ---- the kernel, once per instruction set ------------------------------------------------------

// Vectors wider than the baseline ABI only appear in always-inline helpers: no ABI is crossed.
#pragma GCC diagnostic ignored "-Wpsabi"
namespace {

#ifdef CPU_SIMD_HAVE_X86_VARIANTS
CPU_SIMD_TARGET_AVX512_BEGIN
#define SS_ISA_NAMESPACE isa_avx512
#define SS_WIDTH 16
#include "selective_scan_cpu_kernel.h"
#undef SS_ISA_NAMESPACE
#undef SS_WIDTH
CPU_SIMD_TARGET_END

CPU_SIMD_TARGET_AVX2_BEGIN
#define SS_ISA_NAMESPACE isa_avx2
#define SS_WIDTH 8
#include "selective_scan_cpu_kernel.h"
#undef SS_ISA_NAMESPACE
#undef SS_WIDTH
CPU_SIMD_TARGET_END
#endif

#define SS_ISA_NAMESPACE isa_default
#define SS_WIDTH 4
#include "selective_scan_cpu_kernel.h"
#undef SS_ISA_NAMESPACE
#undef SS_WIDTH

}  // namespace

namespace {

// ---- instruction-set choice (cpu_isa.h: the best level this CPU supports, or MAMBA_CPU_ISA) -----

struct Kernels {
  const char* name;
  void (*fwd_task)(const ScanParams&, int64_t, float*);
  void (*bwd_task)(const ScanParams&, int64_t, float*);
  float (*exp2_floor_task)(int64_t, float);
};

const Kernels kDefaultKernels{"default", isa_default::fwd_task, isa_default::bwd_task, isa_default::exp2_floor_task};
#ifdef CPU_SIMD_HAVE_X86_VARIANTS
const Kernels kAvx2Kernels{"avx2", isa_avx2::fwd_task, isa_avx2::bwd_task, isa_avx2::exp2_floor_task};
const Kernels kAvx512Kernels{"avx512", isa_avx512::fwd_task, isa_avx512::bwd_task, isa_avx512::exp2_floor_task};
#endif

const Kernels& kernels() {
  const int level = cpu_isa_level("MAMBA_CPU_ISA");
#ifdef CPU_SIMD_HAVE_X86_VARIANTS
  if (level == kCpuIsaAvx512) return kAvx512Kernels;
  if (level == kCpuIsaAvx2) return kAvx2Kernels;
#endif
  return kDefaultKernels;
}

// ---- helpers -----------------------------------------------------------------------------------

int64_t num_chunks(int64_t seqlen) {
  TORCH_CHECK(seqlen >= 0, "selective_scan: seqlen must be >= 0");
  return std::max<int64_t>(1, (seqlen + kChunk - 1) / kChunk);
}

// 64-byte aligned float scratch (the kernel uses aligned 64-byte vector loads).
class Scratch {
 public:
  explicit Scratch(int64_t floats) {
    const size_t bytes = ((static_cast<size_t>(std::max<int64_t>(floats, 16)) * sizeof(float) + 63) / 64) * 64;
    ptr_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    TORCH_CHECK(ptr_ != nullptr, "selective_scan CPU: out of memory for a ", bytes, "-byte scratch buffer");
  }
  ~Scratch() { std::free(ptr_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* get() const { return ptr_; }

 private:
  float* ptr_;
};

// Runs task(i, scratch) for i in [0, n_tasks) on the intra-op threads. Tasks are handed out one at
// a time from a shared counter, so a thread that gets less CPU (shared cores) simply takes fewer
// tasks; every task writes only its own outputs, so the results do not depend on who ran what.
template <typename F>
void run_tasks(int64_t n_tasks, int64_t scratch_floats, const F& task) {
  if (n_tasks <= 0) return;
  std::atomic<int64_t> next{0};
  const int64_t n_workers = std::min<int64_t>(n_tasks, at::get_num_threads());
  at::parallel_for(0, n_workers, 1, [&](int64_t, int64_t) {
    Scratch work(scratch_floats);
    for (int64_t i = next.fetch_add(1); i < n_tasks; i = next.fetch_add(1)) task(i, work.get());
  });
}

DType dtype_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat;
    case at::kHalf: return DType::kHalf;
    case at::kBFloat16: return DType::kBFloat16;
    default: break;
  }
  TORCH_CHECK(false, "selective_scan CPU: ", name, " must be float32, float16 or bfloat16, got ", t.scalar_type());
}

bool unit_time_stride(const at::Tensor& t) { return t.size(-1) <= 1 || t.stride(-1) == 1; }

// A (batch, dim, L) tensor of the input dtype with unit stride along L.
void check_row_tensor(const at::Tensor& t, const at::Tensor& u, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "selective_scan CPU: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.sizes() == u.sizes(), "selective_scan CPU: ", name, " must have the shape of u ", u.sizes(), ", got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == u.scalar_type(), "selective_scan CPU: ", name, " must have u's dtype ", u.scalar_type(),
              ", got ", t.scalar_type());
  TORCH_CHECK(unit_time_stride(t), "selective_scan CPU: ", name, " must have unit stride along L");
}

at::Tensor as_grouped(const at::Tensor& t, const at::Tensor& u, int64_t dstate, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "selective_scan CPU: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.is_floating_point(), "selective_scan CPU: ", name, " must be a real floating tensor");
  const at::Tensor g = t.dim() == 3 ? t.unsqueeze(1) : t;
  TORCH_CHECK(g.dim() == 4 && g.size(0) == u.size(0) && g.size(2) == dstate && g.size(3) == u.size(2),
              "selective_scan CPU: ", name, " must be (batch, G, N, L) = (", u.size(0), ", G, ", dstate, ", ", u.size(2),
              "), got ", t.sizes());
  TORCH_CHECK(g.size(1) >= 1 && u.size(1) % g.size(1) == 0, "selective_scan CPU: dim ", u.size(1),
              " is not a multiple of the number of ", name, " groups ", g.size(1));
  return g;
}

// (batch, G', N, L) -> float32 (batch, G, L, N) contiguous in processing order, each of the G'
// groups repeated G / G' times.
at::Tensor steps_major(const at::Tensor& t, int64_t groups, bool reverse) {
  at::Tensor f = t.to(at::kFloat);
  if (reverse) f = f.flip(-1);
  if (f.size(1) != groups) f = f.repeat_interleave(groups / f.size(1), 1);
  return f.transpose(2, 3).contiguous();
}

c10::optional<at::Tensor> per_channel(const c10::optional<at::Tensor>& t, int64_t dim, const char* name) {
  if (!t.has_value()) return c10::nullopt;
  TORCH_CHECK(t->device().is_cpu() && t->numel() == dim, "selective_scan CPU: ", name, " must be a (", dim,
              ",) CPU tensor, got ", t->sizes());
  return t->reshape({dim}).to(at::kFloat).contiguous();
}

// Checked inputs, the float32 copies the kernel reads, and the shared part of the parameters.
struct Prepared {
  ScanParams p;
  at::Tensor A, Bt, Ct;
  c10::optional<at::Tensor> D, delta_bias;
  int64_t groups_B, groups_C;
};

Prepared prepare(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                 const at::Tensor& C, const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                 const c10::optional<at::Tensor>& delta_bias, bool delta_softplus, bool reverse,
                 const at::Tensor& states, bool last_state_ok) {
  TORCH_CHECK(u.device().is_cpu(), "selective_scan CPU: u must be a CPU tensor");
  TORCH_CHECK(u.dim() == 3, "selective_scan CPU: u must be (batch, dim, L), got ", u.sizes());
  TORCH_CHECK(unit_time_stride(u), "selective_scan CPU: u must have unit stride along L");
  Prepared r;
  ScanParams& p = r.p;
  std::memset(&p, 0, sizeof(p));
  p.dtype = dtype_of(u, "u");
  check_row_tensor(delta, u, "delta");
  if (z.has_value()) check_row_tensor(*z, u, "z");
  p.batch = u.size(0);
  p.dim = u.size(1);
  p.seqlen = u.size(2);
  TORCH_CHECK(A.device().is_cpu() && A.dim() == 2 && A.size(0) == p.dim && A.is_floating_point(),
              "selective_scan CPU: A must be a real (dim, N) = (", p.dim, ", N) CPU tensor, got ", A.sizes(), " ",
              A.scalar_type());
  p.dstate = A.size(1);
  r.A = A.to(at::kFloat).contiguous();
  const at::Tensor Bg = as_grouped(B, u, p.dstate, "B");
  const at::Tensor Cg = as_grouped(C, u, p.dstate, "C");
  r.groups_B = Bg.size(1);
  r.groups_C = Cg.size(1);
  p.groups = std::lcm(r.groups_B, r.groups_C);  // divides dim, as both do
  p.dim_per_group = p.dim / p.groups;
  p.blocks_per_group = (p.dim_per_group + kBlock - 1) / kBlock;
  p.chunk = kChunk;
  p.softplus = delta_softplus;
  p.reverse = reverse;
  r.Bt = steps_major(Bg, p.groups, reverse);
  r.Ct = steps_major(Cg, p.groups, reverse);
  r.D = per_channel(D, p.dim, "D");
  r.delta_bias = per_channel(delta_bias, p.dim, "delta_bias");

  const int64_t n_chunks = num_chunks(p.seqlen);
  const bool chunks_ok = states.dim() == 4 && (states.size(2) == n_chunks || (last_state_ok && states.size(2) == 1));
  TORCH_CHECK(states.device().is_cpu() && states.scalar_type() == at::kFloat && chunks_ok && states.size(0) == p.batch &&
                  states.size(1) == p.dim && states.size(3) == p.dstate,
              "selective_scan CPU: states must be float32 (batch, dim, num_chunks(L), N) = (", p.batch, ", ", p.dim, ", ",
              n_chunks, ", ", p.dstate, ")", last_state_ok ? " or (batch, dim, 1, N) for the last state only" : "",
              ", got ", states.sizes(), " ", states.scalar_type());
  p.all_states = states.size(2) == n_chunks;

  p.u = u.data_ptr();
  p.u_sb = u.stride(0);
  p.u_sd = u.stride(1);
  p.delta = delta.data_ptr();
  p.delta_sb = delta.stride(0);
  p.delta_sd = delta.stride(1);
  if (z.has_value()) {
    p.z = z->data_ptr();
    p.z_sb = z->stride(0);
    p.z_sd = z->stride(1);
  }
  p.A = r.A.data_ptr<float>();
  p.D = r.D.has_value() ? r.D->data_ptr<float>() : nullptr;
  p.delta_bias = r.delta_bias.has_value() ? r.delta_bias->data_ptr<float>() : nullptr;
  p.Bt = r.Bt.data_ptr<float>();
  p.Ct = r.Ct.data_ptr<float>();
  p.states = states.data_ptr<float>();
  p.st_sb = states.stride(0);
  p.st_sd = states.stride(1);
  p.st_sc = states.stride(2);
  p.st_sn = states.stride(3);
  return r;
}

int64_t fwd_workspace_floats(const ScanParams& p) { return kBlock * (2 * p.dstate + 4 * p.chunk); }

int64_t bwd_workspace_floats(const ScanParams& p) {
  return kBlock * ((2 * p.chunk + 1) * p.dstate + 6 * p.dstate + 10 * p.chunk);
}

// ---- module functions --------------------------------------------------------------------------

void fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
         const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
         const c10::optional<at::Tensor>& delta_bias, bool delta_softplus, bool reverse, at::Tensor& out,
         at::Tensor& states) {
  Prepared r = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, states, true);
  ScanParams& p = r.p;
  check_row_tensor(out, u, "out");
  if (p.batch == 0 || p.dim == 0) return;
  if (p.seqlen == 0) {
    states.zero_();  // the state after the (empty) only chunk is the initial zero state
    return;
  }
  p.out = out.data_ptr();
  p.out_sb = out.stride(0);
  p.out_sd = out.stride(1);

  const Kernels& kern = kernels();
  const int64_t n_tasks = p.batch * p.groups * p.blocks_per_group;
  const int64_t ws = fwd_workspace_floats(p);
  run_tasks(n_tasks, ws, [&](int64_t task, float* work) { kern.fwd_task(p, task, work); });
}

void bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
         const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
         const c10::optional<at::Tensor>& delta_bias, bool delta_softplus, bool reverse, const at::Tensor& dout,
         const at::Tensor& states, at::Tensor& du, at::Tensor& ddelta, at::Tensor& dA, at::Tensor& dB, at::Tensor& dC,
         c10::optional<at::Tensor> dD, c10::optional<at::Tensor> dz, c10::optional<at::Tensor> ddelta_bias,
         c10::optional<at::Tensor> out_z) {
  Prepared r = prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, states, false);
  ScanParams& p = r.p;
  check_row_tensor(dout, u, "dout");
  check_row_tensor(du, u, "du");
  check_row_tensor(ddelta, u, "ddelta");
  if (dz.has_value()) {
    TORCH_CHECK(z.has_value(), "selective_scan CPU: dz given without z");
    check_row_tensor(*dz, u, "dz");
  }
  if (out_z.has_value()) check_row_tensor(*out_z, u, "out_z");
  auto check_f32 = [](const at::Tensor& t, at::IntArrayRef sizes, const char* name) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.sizes() == sizes, "selective_scan CPU: ", name,
                " must be a float32 CPU tensor of shape ", sizes, ", got ", t.sizes(), " ", t.scalar_type());
  };
  const int64_t batch = p.batch, dim = p.dim, L = p.seqlen, N = p.dstate;
  check_f32(dA, {dim, N}, "dA");
  check_f32(dB, {batch, r.groups_B, N, L}, "dB");
  check_f32(dC, {batch, r.groups_C, N, L}, "dC");
  TORCH_CHECK(!dD.has_value() || D.has_value(), "selective_scan CPU: dD given without D");
  TORCH_CHECK(!ddelta_bias.has_value() || delta_bias.has_value(),
              "selective_scan CPU: ddelta_bias given without delta_bias");
  if (dD.has_value()) TORCH_CHECK(dD->scalar_type() == at::kFloat && dD->numel() == dim, "selective_scan CPU: dD must be float32 (dim,)");
  if (ddelta_bias.has_value())
    TORCH_CHECK(ddelta_bias->scalar_type() == at::kFloat && ddelta_bias->numel() == dim,
                "selective_scan CPU: ddelta_bias must be float32 (dim,)");

  if (batch == 0 || dim == 0 || L == 0) {
    dA.zero_();
    dB.zero_();
    dC.zero_();
    if (dD.has_value()) dD->zero_();
    if (ddelta_bias.has_value()) ddelta_bias->zero_();
    return;
  }

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

  // Task split (shapes only, never the thread count): up to 4 blocks per task, fewer when that
  // would leave fewer than ~12 tasks in all.
  const int64_t total_blocks = batch * p.groups * p.blocks_per_group;
  p.blocks_per_task = std::max<int64_t>(1, std::min<int64_t>(kMaxBlocksPerBwdTask, total_blocks / 12));
  p.tasks_per_group = (p.blocks_per_group + p.blocks_per_task - 1) / p.blocks_per_task;
  const int64_t n_tasks = batch * p.groups * p.tasks_per_group;

  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor dBC_part = at::empty({n_tasks, 2, L, N}, f32);
  at::Tensor dA_part = at::empty({batch, dim, N}, f32);
  at::Tensor dD_part = at::empty({batch, dim}, f32);
  at::Tensor dbias_part = at::empty({batch, dim}, f32);
  p.dBC_part = dBC_part.data_ptr<float>();
  p.dA_part = dA_part.data_ptr<float>();
  p.dD_part = dD_part.data_ptr<float>();
  p.dbias_part = dbias_part.data_ptr<float>();

  const Kernels& kern = kernels();
  const int64_t ws = bwd_workspace_floats(p);
  run_tasks(n_tasks, ws, [&](int64_t task, float* work) { kern.bwd_task(p, task, work); });

  // dB, dC: sum the partials of every task of the (internal) groups that make up an output group,
  // in task order; transpose back to (N, L) in time order.
  constexpr int64_t kSteps = 256;
  const int64_t s_blocks = (L + kSteps - 1) / kSteps;
  for (int which = 0; which < 2; ++which) {
    at::Tensor& dX = which == 0 ? dB : dC;
    const int64_t out_groups = which == 0 ? r.groups_B : r.groups_C;
    const int64_t sub = p.groups / out_groups;
    float* dXp = dX.data_ptr<float>();
    const int64_t sb = dX.stride(0), sg = dX.stride(1), sn = dX.stride(2), sl = dX.stride(3);
    const float* part = p.dBC_part;
    const int64_t tpg = p.tasks_per_group;
    at::parallel_for(0, batch * out_groups * s_blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> acc(kSteps * N);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t sblk = item % s_blocks, bgo = item / s_blocks;
        const int64_t b = bgo / out_groups, go = bgo % out_groups;
        const int64_t s_begin = sblk * kSteps, s_end = std::min(L, s_begin + kSteps);
        const int64_t count = (s_end - s_begin) * N;
        std::fill(acc.begin(), acc.begin() + count, 0.f);
        for (int64_t gi = go * sub; gi < (go + 1) * sub; ++gi) {
          for (int64_t tk = 0; tk < tpg; ++tk) {
            const float* src = part + (((b * p.groups + gi) * tpg + tk) * 2 + which) * L * N + s_begin * N;
            for (int64_t i = 0; i < count; ++i) acc[i] += src[i];
          }
        }
        float* dst = dXp + b * sb + go * sg;
        for (int64_t n = 0; n < N; ++n) {
          float* row = dst + n * sn;
          for (int64_t s = s_begin; s < s_end; ++s) {
            const int64_t t = reverse ? L - 1 - s : s;
            row[t * sl] = acc[(s - s_begin) * N + n];
          }
        }
      }
    });
  }

  // dA, dD, ddelta_bias: sums over the batch, in batch order.
  {
    float* dAp = dA.data_ptr<float>();
    const int64_t s0 = dA.stride(0), s1 = dA.stride(1);
    const float* ap = p.dA_part;
    at::parallel_for(0, dim, 64, [&](int64_t begin, int64_t end) {
      for (int64_t d = begin; d < end; ++d)
        for (int64_t n = 0; n < N; ++n) {
          float acc = 0.f;
          for (int64_t b = 0; b < batch; ++b) acc += ap[(b * dim + d) * N + n];
          dAp[d * s0 + n * s1] = acc;
        }
    });
  }
  auto reduce_channels = [&](c10::optional<at::Tensor>& target, const float* part) {
    if (!target.has_value()) return;
    at::Tensor flat = target->view({dim});
    float* tp = flat.data_ptr<float>();
    const int64_t st = flat.stride(0);
    for (int64_t d = 0; d < dim; ++d) {
      float acc = 0.f;
      for (int64_t b = 0; b < batch; ++b) acc += part[b * dim + d];
      tp[d * st] = acc;
    }
  };
  reduce_channels(dD, p.dD_part);
  reduce_channels(ddelta_bias, p.dbias_part);
}

std::string isa_name() { return kernels().name; }

// The exp floor of the benchmarks: `count` exp2 evaluations in registers, split evenly over the
// intra-op threads (as the forward's work is). Returns the sum of the results (keeps them live).
double exp2_floor(int64_t count) {
  TORCH_CHECK(count >= 0, "exp2_floor: count must be >= 0");
  const Kernels& kern = kernels();
  const int64_t n_threads = std::max<int64_t>(1, at::get_num_threads());
  std::vector<double> sums(n_threads, 0.0);
  at::parallel_for(0, n_threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      sums[t] = kern.exp2_floor_task(count / n_threads + (t < count % n_threads ? 1 : 0), 0.01f * (t + 1));
  });
  return std::accumulate(sums.begin(), sums.end(), 0.0);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "selective scan CPU kernels (float32 state and math; fp32/fp16/bf16 inputs; AVX-512/AVX2/baseline)";
  m.def("num_chunks", &num_chunks, "number of saved states per row for a sequence length", py::arg("seqlen"));
  m.def("fwd", &fwd, "selective scan forward: writes out and the chunk states (the last one only when states has one chunk)", py::arg("u"), py::arg("delta"),
        py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"),
        py::arg("delta_softplus"), py::arg("reverse"), py::arg("out"), py::arg("states"));
  m.def("bwd", &bwd, "selective scan backward: writes every gradient (and out_z if given)", py::arg("u"),
        py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"),
        py::arg("delta_softplus"), py::arg("reverse"), py::arg("dout"), py::arg("states"), py::arg("du"),
        py::arg("ddelta"), py::arg("dA"), py::arg("dB"), py::arg("dC"), py::arg("dD"), py::arg("dz"),
        py::arg("ddelta_bias"), py::arg("out_z"));
  m.def("isa", &isa_name, "instruction set the kernels run with (auto-detected, or MAMBA_CPU_ISA)");
  m.def("exp2_floor", &exp2_floor,
        "benchmark floor: count exp2 evaluations held in registers, on the intra-op threads, with the scan's "
        "instruction set; returns their sum",
        py::arg("count"));
  m.attr("chunk_size") = kChunk;
  // fwd also takes states of shape (batch, dim, 1, N): it then writes the last state only.
  m.attr("last_state_only") = true;
}
