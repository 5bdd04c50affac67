"""Selective scan and the fused Mamba mixer functions, each beside its PyTorch reference.

Selective scan, per (batch b, channel d, state n), with h = 0 before the first step:
    delta <- softplus(delta + delta_bias)            (bias and softplus optional)
    h_t    = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B_t[n] * u_t
    y_t    = sum_n C_t[n] * h_t[n] + D[d] * u_t
    out_t  = y_t * silu(z_t)                          (if z is given)
State and arithmetic are float32 whatever the input dtype. ``reverse=True`` runs the recurrence
from the last step to the first: the backward direction of a bidirectional Mamba, with no flips.

Kernel contract (every scan backend module: ``ref_kernels``, ``_C_cpu``, ``_C_cuda``, Triton):
    num_chunks(seqlen) -> int
    fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, out, states) -> None
    bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, dout, states,
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, out_z) -> None
u, delta, z, dout, out, du, ddelta, dz, out_z: (batch, dim, L) with unit stride along L, one input
dtype (float32/float16/bfloat16; other dtypes always run on the reference); A: (dim, N) float32;
B, C: (batch, G, N, L), unit stride along L, any float dtype (G may differ between B and C
except on ``_C_cuda``, which refuses that with a clear error); D,
delta_bias: (dim,) float32 or None. `out` is the (gated) output. `states` (batch, dim,
num_chunks(L), N) float32 holds the state after each chunk in processing order, so
states[:, :, -1] is the last state. The backward recomputes the states from `states` chunk by
chunk; it writes (never accumulates) du, ddelta (input dtype), dA, dB, dC, dD, ddelta_bias
(float32), dz (input dtype) when z is given, and the recomputed gated output into out_z if given.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from causal_conv1d.causal_conv1d_interface import causal_conv1d_ref, conv_bwd, conv_fwd
from causal_conv1d.causal_conv1d_interface import dispatcher as conv_dispatcher
from causal_conv1d.kernel_infra import Dispatcher


def _probe_cuda(module, device: torch.device) -> None:
    """The smallest launch of the CUDA scan on `device` (does this GPU have code in the build?)."""
    f32 = dict(device=device, dtype=torch.float32)
    u, A, BC = torch.zeros(1, 1, 1, **f32), torch.zeros(1, 1, **f32), torch.zeros(1, 1, 1, 1, **f32)
    states = torch.empty(1, 1, module.num_chunks(1), 1, **f32)
    module.fwd(u, u, A, BC, BC, None, None, None, False, False, torch.empty_like(u), states)
    torch.cuda.synchronize(device)


dispatcher = Dispatcher(
    "mamba_ssm",
    "MAMBA_BACKEND",
    {
        "ref": "mamba_ssm.ops.ref_kernels",
        "cpu": "mamba_ssm._C_cpu",
        "cuda": "mamba_ssm._C_cuda",
        "triton": "mamba_ssm.ops.triton.selective_scan",
    },
    cuda_probe=_probe_cuda,
)


# --------------------------------------------------------------------------------------------
# Reference
# --------------------------------------------------------------------------------------------


def _per_channel(BC: Tensor, dim: int) -> Tensor:
    """(batch, N, L) or (batch, G, N, L) -> (batch, dim, N, L); group g serves dim/G channels."""
    if BC.dim() == 3:
        BC = BC.unsqueeze(1)
    groups = BC.shape[1]
    if dim % groups:
        raise ValueError(f"dim {dim} is not a multiple of the number of B/C groups {groups}")
    return BC.repeat_interleave(dim // groups, dim=1)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The ground truth: a plain loop over time in float32 (float64 stays float64). Slow,
    differentiable, any device."""
    dtype_in = u.dtype
    ct = torch.promote_types(u.dtype, torch.float32)
    u, delta = u.to(ct), delta.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    dim = u.shape[1]
    B, C = _per_channel(B, dim).to(ct), _per_channel(C, dim).to(ct)
    decay = torch.exp(delta.unsqueeze(2) * A.to(ct)[None, :, :, None])  # (batch, dim, N, L)
    drive = (delta * u).unsqueeze(2) * B
    h = u.new_zeros(decay.shape[:3])
    ys = [u.new_zeros(*u.shape[:2], 0)]  # keeps torch.cat valid for L = 0
    # unbind, not indexing: autograd then adds one gradient per step instead of a full-size zero tensor.
    for decay_t, drive_t, C_t in zip(decay.unbind(-1), drive.unbind(-1), C.unbind(-1), strict=True):
        h = decay_t * h + drive_t
        ys.append((h * C_t).sum(-1, keepdim=True))
    y = torch.cat(ys, dim=-1)
    if D is not None:
        y = y + D.to(ct)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y


# --------------------------------------------------------------------------------------------
# Kernel calls. Compiled backends run as torch.library custom ops, so torch.compile sees one opaque
# op (no graph break): the forward allocates its outputs in Python and has a fake (shape-only)
# implementation; the backward writes into buffers allocated by the caller. The reference backend
# is plain PyTorch and is called directly (it uses autograd, which custom ops switch off).
# --------------------------------------------------------------------------------------------


def _scan_outputs(u: Tensor, A: Tensor, backend: str, all_states: bool = True) -> tuple[Tensor, Tensor]:
    """Empty (out, states) of the shapes `backend` writes; also the op's fake (shape-only) result.

    Without `all_states` (no backward will run) a backend that can keeps the last state only
    (`last_state_only` attribute of its module: the CPU kernel); the others write every chunk's.
    """
    batch, dim, seqlen = u.shape
    out = torch.empty_like(u, memory_format=torch.contiguous_format)
    kernels = dispatcher.kernels(backend)
    n_chunks = 1 if not all_states and getattr(kernels, "last_state_only", False) else kernels.num_chunks(seqlen)
    return out, u.new_empty(batch, dim, n_chunks, A.shape[1], dtype=torch.float32)


@torch.library.custom_op("mamba_ssm::selective_scan_fwd", mutates_args=())
def _scan_fwd_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
    backend: str,
    all_states: bool,
) -> tuple[Tensor, Tensor]:
    out, states = _scan_outputs(u, A, backend, all_states)
    dispatcher.kernels(backend).fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, out, states)
    return out, states


@_scan_fwd_op.register_fake
def _scan_fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, all_states):
    # The number of chunks is the backend's choice: ask it here, outside the traced graph.
    return _scan_outputs(u, A, backend, all_states)


@torch.library.custom_op(
    "mamba_ssm::selective_scan_bwd", mutates_args=("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "out_z")
)
def _scan_bwd_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
    dout: Tensor,
    states: Tensor,
    du: Tensor,
    ddelta: Tensor,
    dA: Tensor,
    dB: Tensor,
    dC: Tensor,
    dD: Tensor | None,
    dz: Tensor | None,
    ddelta_bias: Tensor | None,
    out_z: Tensor | None,
    backend: str,
) -> None:
    dispatcher.kernels(backend).bwd(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus,
        reverse,
        dout,
        states,
        du,
        ddelta,
        dA,
        dB,
        dC,
        dD,
        dz,
        ddelta_bias,
        out_z,
    )


def _unit_last_stride(t: Tensor | None) -> Tensor | None:
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def scan_fwd(
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, all_states: bool = True
) -> tuple[Tensor, Tensor]:
    """(gated output, chunk states) through a kernel backend; no autograd. all_states=False: no
    backward will read the states, only the last one is needed (see _scan_outputs)."""
    if backend != "ref":
        return _scan_fwd_op(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, all_states)
    out, states = _scan_outputs(u, A, backend, all_states)
    dispatcher.kernels(backend).fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, out, states)
    return out, states


def scan_bwd(
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, dout, states, backend, dz=None, recompute_out_z=False
):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, out_z); dB/dC/dA/dD/ddelta_bias float32.

    `dz` may be a preallocated view to write into (e.g. the z half of dxz).
    """
    f32 = dict(dtype=torch.float32, device=u.device)
    du = torch.empty_like(u, memory_format=torch.contiguous_format)
    ddelta = torch.empty_like(delta, memory_format=torch.contiguous_format)
    dA = torch.empty(A.shape, **f32)
    dB, dC = torch.empty(B.shape, **f32), torch.empty(C.shape, **f32)
    dD = None if D is None else torch.empty(D.shape, **f32)
    ddelta_bias = None if delta_bias is None else torch.empty(delta_bias.shape, **f32)
    if z is not None and dz is None:
        dz = torch.empty_like(z, memory_format=torch.contiguous_format)
    out_z = torch.empty_like(u, memory_format=torch.contiguous_format) if recompute_out_z else None
    run = dispatcher.kernels(backend).bwd if backend == "ref" else partial(_scan_bwd_op, backend=backend)
    run(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus,
        reverse,
        _unit_last_stride(dout),
        states,
        du,
        ddelta,
        dA,
        dB,
        dC,
        dD,
        dz,
        ddelta_bias,
        out_z,
    )
    return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, out_z


# --------------------------------------------------------------------------------------------
# selective_scan_fn
# --------------------------------------------------------------------------------------------


def _check_scan_args(u, delta, A, B, C, D, z, delta_bias):
    batch, dim, seqlen = u.shape
    if delta.shape != u.shape or (z is not None and z.shape != u.shape):
        raise ValueError(f"u, delta and z must share the shape (batch, dim, L) = {tuple(u.shape)}")
    if A.dim() != 2 or A.shape[0] != dim or A.is_complex():
        raise ValueError(f"A must be a real (dim, N) = ({dim}, N) tensor, got {tuple(A.shape)} {A.dtype}")
    for name, t in (("B", B), ("C", C)):
        if t.dim() not in (3, 4) or t.shape[0] != batch or t.shape[-2] != A.shape[1] or t.shape[-1] != seqlen:
            raise ValueError(
                f"{name} must be (batch, N, L) or (batch, G, N, L), got {tuple(t.shape)}; constant B/C is not supported"
            )
        if t.dim() == 4 and dim % t.shape[1]:
            raise ValueError(f"{name}: dim {dim} is not a multiple of its {t.shape[1]} groups")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (dim,):
            raise ValueError(f"{name} must be ({dim},), got {tuple(t.shape)}")


def _scan_fwd_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, all_states):
    """The kernel forward on normalised inputs: (out, last state, states, the normalised inputs)."""
    u, delta, z = (_unit_last_stride(t) for t in (u, delta, z))
    B = _unit_last_stride(B.unsqueeze(1) if B.dim() == 3 else B)
    C = _unit_last_stride(C.unsqueeze(1) if C.dim() == 3 else C)
    A = A.float().contiguous()
    D = None if D is None else D.float().contiguous()
    delta_bias = None if delta_bias is None else delta_bias.float().contiguous()
    out, states = scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, all_states)
    return out, states[:, :, -1], states, (u, delta, A, B, C, D, z, delta_bias)


class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse, backend):
        squeeze_groups = B.dim() == 3
        out, last, states, inputs = _scan_fwd_inputs(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, all_states=True
        )
        ctx.save_for_backward(*inputs, states)
        ctx.flags = (delta_softplus, reverse, backend, squeeze_groups)
        ctx.mark_non_differentiable(last)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast_state):
        # The gradient of the returned last state is not propagated (as upstream).
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        delta_softplus, reverse, backend, squeeze_groups = ctx.flags
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, _ = scan_bwd(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, dout, states, backend
        )
        dB, dC = dB.to(B.dtype), dC.to(C.dtype)
        if squeeze_groups:
            dB, dC = dB.squeeze(1), dC.squeeze(1)
        return du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, None, None, None, None


def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    reverse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan (see the module docstring), differentiable; dispatched to the best backend.

    Args:
        u, delta: (batch, dim, L); z: (batch, dim, L) or None.
        A: (dim, N) real. B, C: (batch, N, L) or grouped (batch, G, N, L).
        D, delta_bias: (dim,) or None.
        return_last_state: also return the final state (batch, dim, N) in float32 (no gradient).
        reverse: scan from the last step to the first (same as flipping inputs and output).
    """
    _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    backend = dispatcher.pick("selective_scan", u.device, u.dtype)
    if backend == "ref":
        if not reverse:
            return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
        flip = lambda t: None if t is None else t.flip(-1)
        res = selective_scan_ref(
            flip(u), flip(delta), A, flip(B), flip(C), D, flip(z), delta_bias, delta_softplus, True
        )
        return (res[0].flip(-1), res[1]) if return_last_state else res[0].flip(-1)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse, backend)
    if _wants_grad(args):
        out, last_state = SelectiveScanFn.apply(*args)
    else:  # inference: the kernel keeps the last state only, nothing is saved
        out, last_state = _scan_fwd_inputs(*args[:8], delta_softplus, reverse, backend, all_states=False)[:2]
    return (out, last_state) if return_last_state else out


def _wants_grad(args: tuple) -> bool:
    """Whether autograd will need a backward for a call with these arguments."""
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in args)


# --------------------------------------------------------------------------------------------
# Fused Mamba mixer: conv -> x_proj -> dt_proj -> scan -> gate [-> sum of directions] -> out_proj
# --------------------------------------------------------------------------------------------

# Per direction: conv1d_weight (d, W), conv1d_bias, x_proj_weight (R+2N, d), delta_proj_weight
# (d, R), A (d, N), D, delta_bias, B_proj_bias, C_proj_bias. Direction 0 is causal; direction 1
# (bidirectional only) is anti-causal: reverse conv and reverse scan on the unflipped sequence.
_PARAMS_PER_DIRECTION = 9


def _delta_B_C(x_dbl, dt_proj_w, d_state, B_bias, C_bias, seqlen):
    """Split x_proj's output into delta (batch, d, L) and B, C (batch, 1, N, L)."""
    rank = dt_proj_w.shape[1]
    delta = rearrange(dt_proj_w.to(x_dbl.dtype) @ x_dbl[:, :rank].t(), "d (b l) -> b d l", l=seqlen)
    B = x_dbl[:, rank : rank + d_state]
    C = x_dbl[:, rank + d_state :]
    if B_bias is not None:
        B = B + B_bias.to(B.dtype)
    if C_bias is not None:
        C = C + C_bias.to(C.dtype)
    B = rearrange(B, "(b l) n -> b 1 n l", l=seqlen).contiguous()
    C = rearrange(C, "(b l) n -> b 1 n l", l=seqlen).contiguous()
    return delta, B, C


def _f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.float()


def _mixer_forward(
    xz, out_proj_weight, out_proj_bias, softplus, divide_out, conv_backend, scan_backend, *params, for_backward=True
):
    """MambaInnerFn's forward: (result, xz in the compute dtype, what the backward reads per direction
    (x_dbl and the chunk states), compute dtype). Without `for_backward` (inference) the scans keep
    their last state only and nothing is collected for a backward."""
    device_type = xz.device.type
    compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else xz.dtype
    n_dirs = len(params) // _PARAMS_PER_DIRECTION
    xz = xz.to(compute_dtype) if xz.stride(-1) == 1 else xz.to(compute_dtype).contiguous()
    x, z = xz.chunk(2, dim=1)
    x = x.contiguous()
    with torch.autocast(device_type, enabled=False):
        y, saved = None, []
        for i in range(n_dirs):
            conv_w, conv_b, x_proj_w, dt_proj_w, A, D, delta_bias, B_bias, C_bias = params[
                i * _PARAMS_PER_DIRECTION : (i + 1) * _PARAMS_PER_DIRECTION
            ]
            reverse = i == 1
            conv_out = conv_fwd(x, conv_w, conv_b, True, reverse, conv_backend)
            x_dbl = F.linear(rearrange(conv_out, "b d l -> (b l) d"), x_proj_w.to(compute_dtype))
            delta, B, C = _delta_B_C(x_dbl, dt_proj_w, A.shape[1], B_bias, C_bias, x.shape[-1])
            out, states = scan_fwd(
                conv_out, delta, A.float(), B, C, _f32(D), z, _f32(delta_bias), softplus, reverse, scan_backend,
                all_states=for_backward,
            )  # fmt: skip
            y = out if y is None else y + out
            if for_backward:
                saved += [x_dbl, states]
        if divide_out:
            y = y / n_dirs
        if out_proj_weight is not None:
            w = out_proj_weight.to(compute_dtype)
            b = None if out_proj_bias is None else out_proj_bias.to(compute_dtype)
            result = F.linear(rearrange(y, "b d l -> b l d"), w, b)
        else:
            result = y
    return result, xz, saved, compute_dtype


def _apply_mixer(*args):
    """MambaInnerFn.apply(*args), or under no_grad / inference_mode (or with no input requiring a
    gradient) its forward alone: no autograd node, nothing saved, no chunk states kept."""
    if _wants_grad(args):
        return MambaInnerFn.apply(*args)
    return _mixer_forward(*args, for_backward=False)[0]


class MambaInnerFn(torch.autograd.Function):
    """The whole mixer after in_proj, for one direction or both (bidirectional, summed).

    The backward recomputes conv_out, delta and the gated scan output instead of saving them:
    saved are xz, x_dbl (R + 2N per token) and the chunk states, as in upstream checkpoint_lvl=1.
    """

    @staticmethod
    def forward(ctx, xz, out_proj_weight, out_proj_bias, softplus, divide_out, conv_backend, scan_backend, *params):
        result, xz, saved, compute_dtype = _mixer_forward(
            xz, out_proj_weight, out_proj_bias, softplus, divide_out, conv_backend, scan_backend, *params
        )
        ctx.save_for_backward(xz, out_proj_weight, out_proj_bias, *params, *saved)
        n_dirs = len(params) // _PARAMS_PER_DIRECTION
        ctx.flags = (softplus, divide_out, conv_backend, scan_backend, compute_dtype, n_dirs)
        return result

    @staticmethod
    def backward(ctx, dout):
        softplus, divide_out, conv_backend, scan_backend, compute_dtype, n_dirs = ctx.flags
        xz, out_proj_weight, out_proj_bias, *rest = ctx.saved_tensors
        params, saved = rest[: n_dirs * _PARAMS_PER_DIRECTION], rest[n_dirs * _PARAMS_PER_DIRECTION :]
        x, z = xz.chunk(2, dim=1)
        x = x.contiguous()
        batch, dim, seqlen = x.shape
        dout = dout.to(compute_dtype)
        if out_proj_weight is not None:
            dy = rearrange(dout @ out_proj_weight.to(compute_dtype), "b l d -> b d l")
        else:
            dy = dout
        if divide_out:
            dy = dy / n_dirs
        dxz = torch.empty_like(xz)
        dx, dz_total, y, grads = None, None, None, []
        for i in range(n_dirs):
            conv_w, conv_b, x_proj_w, dt_proj_w, A, D, delta_bias, B_bias, C_bias = params[
                i * _PARAMS_PER_DIRECTION : (i + 1) * _PARAMS_PER_DIRECTION
            ]
            x_dbl, states = saved[2 * i], saved[2 * i + 1]
            reverse = i == 1
            rank, d_state = dt_proj_w.shape[1], A.shape[1]
            x_proj_c, dt_proj_c = x_proj_w.to(compute_dtype), dt_proj_w.to(compute_dtype)
            conv_out = conv_fwd(x, conv_w, conv_b, True, reverse, conv_backend)
            delta, B, C = _delta_B_C(x_dbl, dt_proj_w, d_state, B_bias, C_bias, seqlen)
            dconv_out, ddelta, dA, dB, dC, dD, dz, ddelta_bias, out_z = scan_bwd(
                conv_out,
                delta,
                A.float(),
                B,
                C,
                _f32(D),
                z,
                _f32(delta_bias),
                softplus,
                reverse,
                dy,
                states,
                scan_backend,
                recompute_out_z=out_proj_weight is not None,
            )
            dz_total = dz if dz_total is None else dz_total + dz
            if out_z is not None:
                y = out_z if y is None else y + out_z
            # Back through x_dbl = conv_out @ x_proj^T, delta = dt_proj @ x_dbl[:, :R]^T.
            ddelta_flat = rearrange(ddelta, "b d l -> d (b l)").float()
            d_dt_proj_w = ddelta_flat @ x_dbl[:, :rank].float()
            dx_dbl = torch.empty_like(x_dbl, dtype=torch.float32)
            dx_dbl[:, :rank] = ddelta_flat.t() @ dt_proj_c.float()
            dB_flat = rearrange(dB, "b 1 n l -> (b l) n")
            dC_flat = rearrange(dC, "b 1 n l -> (b l) n")
            dx_dbl[:, rank : rank + d_state] = dB_flat
            dx_dbl[:, rank + d_state :] = dC_flat
            conv_flat = rearrange(conv_out, "b d l -> (b l) d")
            d_x_proj_w = dx_dbl.t() @ conv_flat.float()
            dconv_out = dconv_out.float() + rearrange(dx_dbl @ x_proj_c.float(), "(b l) d -> b d l", l=seqlen)
            dx_dir, dconv_w, dconv_b = conv_bwd(x, conv_w, conv_b, dconv_out.to(x.dtype), True, reverse, conv_backend)
            dx = dx_dir if dx is None else dx + dx_dir
            grads += [
                dconv_w.to(conv_w.dtype),
                None if conv_b is None else dconv_b.to(conv_b.dtype),
                d_x_proj_w.to(x_proj_w.dtype),
                d_dt_proj_w.to(dt_proj_w.dtype),
                dA.to(A.dtype),
                None if D is None else dD.to(D.dtype),
                None if delta_bias is None else ddelta_bias.to(delta_bias.dtype),
                None if B_bias is None else dB_flat.sum(0).to(B_bias.dtype),
                None if C_bias is None else dC_flat.sum(0).to(C_bias.dtype),
            ]
        dxz[:, :dim] = dx
        dxz[:, dim:] = dz_total
        d_out_w = d_out_b = None
        if out_proj_weight is not None:
            if divide_out:
                y = y / n_dirs
            dout_flat = rearrange(dout, "b l e -> (b l) e")
            d_out_w = (dout_flat.t().float() @ rearrange(y, "b d l -> (b l) d").float()).to(out_proj_weight.dtype)
            if out_proj_bias is not None:
                d_out_b = dout_flat.float().sum(0).to(out_proj_bias.dtype)
        return dxz, d_out_w, d_out_b, None, None, None, None, *grads


def _backends(device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    return conv_dispatcher.pick("causal_conv1d", device, dtype), dispatcher.pick("selective_scan", device, dtype)


def _external_bc_unsupported(B, C):
    if B is not None or C is not None:
        raise NotImplementedError(
            "external B/C are not supported by the fused functions; VideoMamba takes them from x_proj"
        )


def mamba_inner_ref(
    xz,
    conv1d_weight,
    conv1d_bias,
    x_proj_weight,
    delta_proj_weight,
    out_proj_weight,
    out_proj_bias,
    A,
    B=None,
    C=None,
    D=None,
    delta_bias=None,
    B_proj_bias=None,
    C_proj_bias=None,
    delta_softplus=True,
    reverse=False,
):
    """Reference mixer built only from the references (differentiable by autograd)."""
    _external_bc_unsupported(B, C)
    x, z = xz.chunk(2, dim=1)
    x = causal_conv1d_ref(
        x,
        rearrange(conv1d_weight, "d 1 w -> d w") if conv1d_weight.dim() == 3 else conv1d_weight,
        conv1d_bias,
        "silu",
        reverse,
    )
    x_dbl = F.linear(rearrange(x, "b d l -> (b l) d"), x_proj_weight)
    delta, B, C = _delta_B_C(x_dbl, delta_proj_weight, A.shape[1], B_proj_bias, C_proj_bias, xz.shape[-1])
    flip = (lambda t: t.flip(-1)) if reverse else (lambda t: t)
    y = flip(selective_scan_ref(flip(x), flip(delta), A, flip(B), flip(C), D, flip(z), delta_bias, delta_softplus))
    if out_proj_weight is None:
        return y
    return F.linear(rearrange(y, "b d l -> b l d"), out_proj_weight, out_proj_bias)


def mamba_inner_fn_no_out_proj(
    xz,
    conv1d_weight,
    conv1d_bias,
    x_proj_weight,
    delta_proj_weight,
    A,
    B=None,
    C=None,
    D=None,
    delta_bias=None,
    B_proj_bias=None,
    C_proj_bias=None,
    delta_softplus=True,
):
    """One direction of the mixer without out_proj: returns the gated scan output (batch, d, L)."""
    return mamba_inner_fn(
        xz,
        conv1d_weight,
        conv1d_bias,
        x_proj_weight,
        delta_proj_weight,
        None,
        None,
        A,
        B,
        C,
        D,
        delta_bias,
        B_proj_bias,
        C_proj_bias,
        delta_softplus,
    )


def mamba_inner_fn(
    xz,
    conv1d_weight,
    conv1d_bias,
    x_proj_weight,
    delta_proj_weight,
    out_proj_weight,
    out_proj_bias,
    A,
    B=None,
    C=None,
    D=None,
    delta_bias=None,
    B_proj_bias=None,
    C_proj_bias=None,
    delta_softplus=True,
):
    """The unidirectional Mamba mixer after in_proj: xz (batch, 2d, L) -> (batch, L, d_model).

    With out_proj_weight None it returns the gated scan output (batch, d, L) instead.
    """
    _external_bc_unsupported(B, C)
    conv_backend, scan_backend = _backends(xz.device, xz.dtype)
    if scan_backend == "ref":
        return mamba_inner_ref(
            xz,
            conv1d_weight,
            conv1d_bias,
            x_proj_weight,
            delta_proj_weight,
            out_proj_weight,
            out_proj_bias,
            A,
            None,
            None,
            D,
            delta_bias,
            B_proj_bias,
            C_proj_bias,
            delta_softplus,
        )
    conv_w = rearrange(conv1d_weight, "d 1 w -> d w") if conv1d_weight.dim() == 3 else conv1d_weight
    return _apply_mixer(
        xz,
        out_proj_weight,
        out_proj_bias,
        delta_softplus,
        False,
        conv_backend,
        scan_backend,
        conv_w,
        conv1d_bias,
        x_proj_weight,
        delta_proj_weight,
        A,
        D,
        delta_bias,
        B_proj_bias,
        C_proj_bias,
    )


def bimamba_inner_ref(
    xz,
    conv1d_weight,
    conv1d_bias,
    x_proj_weight,
    delta_proj_weight,
    out_proj_weight,
    out_proj_bias,
    A,
    A_b,
    B=None,
    C=None,
    D=None,
    delta_bias=None,
    B_proj_bias=None,
    C_proj_bias=None,
    delta_softplus=True,
    conv1d_weight_b=None,
    conv1d_bias_b=None,
    x_proj_weight_b=None,
    delta_proj_weight_b=None,
    D_b=None,
    delta_bias_b=None,
    divide_out=False,
):
    """Reference bidirectional mixer: forward direction + the same mixer run on the flipped
    sequence and flipped back, summed (or averaged) before out_proj. Missing `_b` parameters are
    shared with the forward direction (Vim "v1"); given, they are VideoMamba's separate ones."""
    _external_bc_unsupported(B, C)
    fwd = mamba_inner_ref(
        xz,
        conv1d_weight,
        conv1d_bias,
        x_proj_weight,
        delta_proj_weight,
        None,
        None,
        A,
        None,
        None,
        D,
        delta_bias,
        B_proj_bias,
        C_proj_bias,
        delta_softplus,
    )
    b = _backward_params(
        conv1d_weight,
        conv1d_bias,
        x_proj_weight,
        delta_proj_weight,
        D,
        delta_bias,
        conv1d_weight_b,
        conv1d_bias_b,
        x_proj_weight_b,
        delta_proj_weight_b,
        D_b,
        delta_bias_b,
    )
    bwd = mamba_inner_ref(
        xz.flip(-1),
        b[0],
        b[1],
        b[2],
        b[3],
        None,
        None,
        A_b,
        None,
        None,
        b[4],
        b[5],
        B_proj_bias,
        C_proj_bias,
        delta_softplus,
    ).flip(-1)
    y = fwd + bwd
    if divide_out:
        y = y / 2
    return F.linear(rearrange(y, "b d l -> b l d"), out_proj_weight, out_proj_bias)


def _backward_params(
    conv_w, conv_b, x_proj_w, dt_proj_w, D, delta_bias, conv_w_b, conv_b_b, x_proj_w_b, dt_proj_w_b, D_b, delta_bias_b
):
    pick = lambda own, shared: shared if own is None else own
    return (
        pick(conv_w_b, conv_w),
        pick(conv_b_b, conv_b),
        pick(x_proj_w_b, x_proj_w),
        pick(dt_proj_w_b, dt_proj_w),
        pick(D_b, D),
        pick(delta_bias_b, delta_bias),
    )


def bimamba_inner_fn(
    xz,
    conv1d_weight,
    conv1d_bias,
    x_proj_weight,
    delta_proj_weight,
    out_proj_weight,
    out_proj_bias,
    A,
    A_b,
    B=None,
    C=None,
    D=None,
    delta_bias=None,
    B_proj_bias=None,
    C_proj_bias=None,
    delta_softplus=True,
    conv1d_weight_b=None,
    conv1d_bias_b=None,
    x_proj_weight_b=None,
    delta_proj_weight_b=None,
    D_b=None,
    delta_bias_b=None,
    divide_out=False,
):
    """Bidirectional Mamba mixer: out_proj(silu(z) * (y_fwd + y_bwd)) [/ 2 with divide_out].

    The backward direction runs as an anti-causal conv and a reverse scan on the unflipped
    sequence (no flipped copies). Without the `_b` weights it shares conv/x_proj/dt_proj/D with
    the forward direction and only A_b differs (Vim "v1", upstream's signature); with them it is
    VideoMamba's mixer (Vim "v2"). Same math as `bimamba_inner_ref`.
    """
    _external_bc_unsupported(B, C)
    conv_backend, scan_backend = _backends(xz.device, xz.dtype)
    b = _backward_params(
        conv1d_weight,
        conv1d_bias,
        x_proj_weight,
        delta_proj_weight,
        D,
        delta_bias,
        conv1d_weight_b,
        conv1d_bias_b,
        x_proj_weight_b,
        delta_proj_weight_b,
        D_b,
        delta_bias_b,
    )
    if scan_backend == "ref":
        return bimamba_inner_ref(
            xz,
            conv1d_weight,
            conv1d_bias,
            x_proj_weight,
            delta_proj_weight,
            out_proj_weight,
            out_proj_bias,
            A,
            A_b,
            None,
            None,
            D,
            delta_bias,
            B_proj_bias,
            C_proj_bias,
            delta_softplus,
            *b,
            divide_out=divide_out,
        )
    as_2d = lambda w: rearrange(w, "d 1 w -> d w") if w.dim() == 3 else w
    return _apply_mixer(
        xz,
        out_proj_weight,
        out_proj_bias,
        delta_softplus,
        divide_out,
        conv_backend,
        scan_backend,
        as_2d(conv1d_weight),
        conv1d_bias,
        x_proj_weight,
        delta_proj_weight,
        A,
        D,
        delta_bias,
        B_proj_bias,
        C_proj_bias,
        as_2d(b[0]),
        b[1],
        b[2],
        b[3],
        A_b,
        b[4],
        b[5],
        B_proj_bias,
        C_proj_bias,
    )
