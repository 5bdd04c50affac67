"""Selective scan in Triton: the ``triton`` scan backend of `selective_scan_interface`.

Contract (see the interface module): ``num_chunks(seqlen)``, ``fwd(u, delta, A, B, C, D, z,
delta_bias, delta_softplus, reverse, out, states)`` and ``bwd(..., dout, states, du, ddelta, dA, dB,
dC, dD, dz, ddelta_bias, out_z)``. float32 state and arithmetic whatever the input dtype.

Tiling. A program owns one batch element and a block of ``BLOCK_D`` channels and walks the
sequence in chunks of ``CHUNK`` = 64 time steps, in *processing order* (position p is time p, or
time L-1-p with ``reverse``: the reverse scan indexes time backwards, with no flipped copies).
Per chunk it loads [BLOCK_D, CHUNK] tiles of u/delta/z (time is the contiguous axis) and
[N, CHUNK] tiles of B/C (shared by the channels of a group), forms the [BLOCK_D, N, CHUNK] pairs
(decay exp(delta*A), input delta*B*u) and runs ``tl.associative_scan`` over time on them, then
folds in the state carried from the previous chunk (h = local + cumulative_decay * h_prev) and
reduces over N with C. The state after every chunk is saved (``states[:, :, c]``), so
``num_chunks(L) = ceil(L / 64)`` and ``states[:, :, -1]`` is the last state. BLOCK_D is chosen so
that BLOCK_D * N * CHUNK is about 4096 float32 per tile (4 channels at N = 16).

Backward. Chunks are walked from last to first. Each chunk recomputes h from the saved state of
the chunk before it (the recomputed gated output goes to ``out_z`` if given), and the state
gradient g_p = C_p dy_p + a_{p+1} g_{p+1} (a = decay) is computed as a *forward*
``associative_scan`` on tiles loaded in reversed position order (with the decay of the next
position, read from a shifted load), then put back in position order with ``tl.flip``. We do not
use ``associative_scan(reverse=True)``: its compiled form has been reported wrong for
non-commutative combine functions (triton-lang/triton#4362), and ours is non-commutative. The
gradient g of the first position of a chunk is carried to the chunk before it.

Determinism (no atomics). dB/dC are sums over the channels of a group: a backward program covers
``sub_blocks`` consecutive channel blocks (looping over them inside each chunk, which also reuses
the B/C tiles), sums their contributions in registers, and writes one partial per
(batch, channel super-block, n, t); a fixed-order ``sum`` over super-blocks finishes the job (no
workspace when a super-block is a whole group). dA, dD and ddelta_bias are accumulated per
(batch, channel) across chunks by the program that owns them and summed over batch afterwards.
Because a program loops over its channel blocks inside each chunk, the gradient carried between
chunks and those running sums live in small float32 (batch, dim, N) buffers, re-read after a
``tl.debug_barrier``. Padding past the end of the sequence is masked in both passes (decay 1, input 0, gradient 0),
including after delta_bias + softplus. All offsets are 64-bit; grids are one-dimensional.

Memory. ``states`` holds N float32 per channel every 64 steps (78 MB at batch 32, dim 768,
L 3137, N 16, per direction; the CUDA kernel saves one per 256-step chunk, or per 64-step tail
chunk). The backward's dB/dC
partials take batch * ceil(dim / (BLOCK_D * sub_blocks)) * N * L float32 each (150 MB at that
size with 32-channel super-blocks), freed after the call.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # the dispatcher reports the backend as unavailable
    triton = None

CHUNK = 64  # time steps per tile and per saved state
TILE_ELEMENTS = 4096  # target BLOCK_D * BLOCK_N * CHUNK
MAX_BLOCK_D = 16
SUPER_BLOCK_CHANNELS = 32  # channels per backward program (fewer when that leaves too few programs)
MAX_DSTATE = 256
# Launch settings, to be tuned on the GPU. Compiled for sm_90 at d_state 16 (tile [4, 16, 64]), the
# forward takes 128 registers per thread with 8 warps and the backward ~250 (no spills; capping it
# with BWD_MAXNREG = 168 or 128 spills 280 or 456 bytes per thread).
FWD_NUM_WARPS = 8
BWD_NUM_WARPS = 8
FWD_MAXNREG = None
BWD_MAXNREG = None


def num_chunks(seqlen: int) -> int:
    """Number of saved states: one per CHUNK time steps (at least one)."""
    return max(1, -(-seqlen // CHUNK))


if triton is not None:

    @triton.jit
    def _affine_combine(a_left, b_left, a_right, b_right):
        # Composition of h -> a_left h + b_left followed by h -> a_right h + b_right.
        return a_left * a_right, a_right * b_left + b_right

    @triton.jit
    def _softplus(x):
        # PyTorch's softplus (threshold 20) with an accurate log1p(exp(x)).
        e = tl.exp(tl.minimum(x, 20.0))
        up = 1.0 + e
        log1p = tl.where(up == 1.0, e, tl.log(up) * (e / (up - 1.0)))
        return tl.where(x > 20.0, x, log1p)

    @triton.jit
    def _time(p, seqlen, REVERSE: tl.constexpr):
        # Time index of processing position p.
        if REVERSE:
            return seqlen - 1 - p
        else:
            return p

    @triton.jit
    def _delta(DELTA_row, bias, t, mask, SOFTPLUS: tl.constexpr):
        # delta (+ bias) (then softplus) at times t: returns (pre-activation, delta); delta = 0 where masked.
        pre = tl.load(DELTA_row[:, None] + t[None, :], mask=mask, other=0.0).to(tl.float32) + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(pre)
        else:
            dt = pre
        return pre, tl.where(mask, dt, 0.0)

    @triton.jit
    def _scan_fwd_kernel(
        U, DELTA, A, B, C, D, Z, DELTA_BIAS, OUT, STATES,
        s_u_b, s_u_d, s_dt_b, s_dt_d, s_a_d, s_a_n,
        s_B_b, s_B_g, s_B_n, s_C_b, s_C_g, s_C_n,
        s_z_b, s_z_d, s_o_b, s_o_d, s_st_b, s_st_d, s_st_c,
        dim, dstate, seqlen, n_chunks, n_dblocks, dblocks_per_group_B, dblocks_per_group_C,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        b = (pid // n_dblocks).to(tl.int64)
        dblock = pid % n_dblocks
        d = (dblock * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
        dmask = d < dim
        n = tl.arange(0, BLOCK_N).to(tl.int64)
        nmask = n < dstate
        j = tl.arange(0, BLOCK_L)
        last = (j == BLOCK_L - 1)[None, None, :]

        a = tl.load(A + d[:, None] * s_a_d + n[None, :] * s_a_n, mask=dmask[:, None] & nmask[None, :], other=0.0)
        if HAS_DELTA_BIAS:
            bias = tl.load(DELTA_BIAS + d, mask=dmask, other=0.0).to(tl.float32)
        else:
            bias = tl.zeros([BLOCK_D], dtype=tl.float32)
        if HAS_D:
            skip = tl.load(D + d, mask=dmask, other=0.0).to(tl.float32)
        u_row = U + b * s_u_b + d * s_u_d
        dt_row = DELTA + b * s_dt_b + d * s_dt_d
        z_row = Z + b * s_z_b + d * s_z_d
        o_row = OUT + b * s_o_b + d * s_o_d
        B_rows = B + b * s_B_b + (dblock // dblocks_per_group_B).to(tl.int64) * s_B_g + n * s_B_n
        C_rows = C + b * s_C_b + (dblock // dblocks_per_group_C).to(tl.int64) * s_C_g + n * s_C_n
        st_ptr = STATES + b * s_st_b + d[:, None] * s_st_d + n[None, :]
        st_mask = dmask[:, None] & nmask[None, :]

        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        for c in range(0, n_chunks):
            p = c * BLOCK_L + j
            pmask = p < seqlen
            t = _time(p, seqlen, REVERSE)
            mask = dmask[:, None] & pmask[None, :]
            nt_mask = nmask[:, None] & pmask[None, :]
            u = tl.load(u_row[:, None] + t[None, :], mask=mask, other=0.0).to(tl.float32)
            _, dt = _delta(dt_row, bias, t, mask, SOFTPLUS)
            Bt = tl.load(B_rows[:, None] + t[None, :], mask=nt_mask, other=0.0).to(tl.float32)
            Ct = tl.load(C_rows[:, None] + t[None, :], mask=nt_mask, other=0.0).to(tl.float32)
            decay = tl.exp(dt[:, None, :] * a[:, :, None])  # 1 on padding (dt = 0 there)
            drive = (dt * u)[:, None, :] * Bt[None, :, :]  # 0 on padding
            cum_decay, local = tl.associative_scan((decay, drive), 2, _affine_combine)
            hs = local + cum_decay * h[:, :, None]
            h = tl.sum(tl.where(last, hs, 0.0), axis=2)
            tl.store(st_ptr + c * s_st_c, h, mask=st_mask)
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                y += skip[:, None] * u
            if HAS_Z:
                zt = tl.load(z_row[:, None] + t[None, :], mask=mask, other=0.0).to(tl.float32)
                y = y * zt * tl.sigmoid(zt)
            tl.store(o_row[:, None] + t[None, :], y, mask=mask)

    @triton.jit
    def _scan_bwd_kernel(
        U, DELTA, A, B, C, D, Z, DELTA_BIAS, DOUT, STATES,
        DU, DDELTA, DZ, OUT_Z, DB_PART, DC_PART, DA_PART, DD_PART, DDB_PART, G_CARRY,
        s_u_b, s_u_d, s_dt_b, s_dt_d, s_a_d, s_a_n,
        s_B_b, s_B_g, s_B_n, s_C_b, s_C_g, s_C_n,
        s_z_b, s_z_d, s_g_b, s_g_d, s_st_b, s_st_d, s_st_c,
        s_du_b, s_du_d, s_ddt_b, s_ddt_d, s_dz_b, s_dz_d, s_oz_b, s_oz_d,
        s_dBp_b, s_dBp_o, s_dBp_n, s_dCp_b, s_dCp_o, s_dCp_n, s_w_b, s_w_d,
        dim, dstate, seqlen, n_chunks, n_outer, sub_blocks, outer_per_group_B, outer_per_group_C,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        REVERSE: tl.constexpr, STORE_OUT_Z: tl.constexpr,
        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        b = (pid // n_outer).to(tl.int64)
        outer = pid % n_outer
        n = tl.arange(0, BLOCK_N).to(tl.int64)
        nmask = n < dstate
        j = tl.arange(0, BLOCK_L)
        last = (j == BLOCK_L - 1)[None, None, :]
        B_rows = B + b * s_B_b + (outer // outer_per_group_B).to(tl.int64) * s_B_g + n * s_B_n
        C_rows = C + b * s_C_b + (outer // outer_per_group_C).to(tl.int64) * s_C_g + n * s_C_n
        dB_rows = DB_PART + b * s_dBp_b + outer.to(tl.int64) * s_dBp_o + n * s_dBp_n
        dC_rows = DC_PART + b * s_dCp_b + outer.to(tl.int64) * s_dCp_o + n * s_dCp_n

        for ci in range(0, n_chunks):
            c = n_chunks - 1 - ci
            # Position order: p = c*BLOCK_L + j. Reversed order for the state gradient: q = c*BLOCK_L + BLOCK_L-1-j,
            # whose decay term is that of position q + 1 (the first position of the next chunk for j = 0).
            p = c * BLOCK_L + j
            pmask = p < seqlen
            t = _time(p, seqlen, REVERSE)
            q = c * BLOCK_L + (BLOCK_L - 1) - j
            qmask = q < seqlen
            tq = _time(q, seqlen, REVERSE)
            q1mask = (q + 1) < seqlen
            tq1 = _time(q + 1, seqlen, REVERSE)
            Bt = tl.load(B_rows[:, None] + t[None, :], mask=nmask[:, None] & pmask[None, :], other=0.0).to(tl.float32)
            Ct = tl.load(C_rows[:, None] + t[None, :], mask=nmask[:, None] & pmask[None, :], other=0.0).to(tl.float32)
            Cq = tl.load(C_rows[:, None] + tq[None, :], mask=nmask[:, None] & qmask[None, :], other=0.0).to(tl.float32)
            dB_acc = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)
            dC_acc = tl.zeros([BLOCK_N, BLOCK_L], dtype=tl.float32)
            for s in range(0, sub_blocks):
                d = ((outer * sub_blocks + s) * BLOCK_D + tl.arange(0, BLOCK_D)).to(tl.int64)
                dmask = d < dim
                dn_mask = dmask[:, None] & nmask[None, :]
                mask = dmask[:, None] & pmask[None, :]
                a = tl.load(A + d[:, None] * s_a_d + n[None, :] * s_a_n, mask=dn_mask, other=0.0)
                if HAS_DELTA_BIAS:
                    bias = tl.load(DELTA_BIAS + d, mask=dmask, other=0.0).to(tl.float32)
                else:
                    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
                dt_row = DELTA + b * s_dt_b + d * s_dt_d
                g_row = DOUT + b * s_g_b + d * s_g_d
                z_row = Z + b * s_z_b + d * s_z_d

                # ---- recompute the states of this chunk from the saved state before it
                u = tl.load(U + b * s_u_b + d[:, None] * s_u_d + t[None, :], mask=mask, other=0.0).to(tl.float32)
                pre, dt = _delta(dt_row, bias, t, mask, SOFTPLUS)
                st_ptr = STATES + b * s_st_b + d[:, None] * s_st_d + n[None, :]
                h0 = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
                if c > 0:
                    h0 = tl.load(st_ptr + (c - 1) * s_st_c, mask=dn_mask, other=0.0)
                decay = tl.exp(dt[:, None, :] * a[:, :, None])
                dtu = dt * u
                drive = dtu[:, None, :] * Bt[None, :, :]
                cum_decay, local = tl.associative_scan((decay, drive), 2, _affine_combine)
                hs = local + cum_decay * h0[:, :, None]

                # ---- output, gate and skip gradients
                dout = tl.load(g_row[:, None] + t[None, :], mask=mask, other=0.0).to(tl.float32)
                y = tl.sum(hs * Ct[None, :, :], axis=1)
                if HAS_D:
                    skip = tl.load(D + d, mask=dmask, other=0.0).to(tl.float32)
                    y += skip[:, None] * u
                if HAS_Z:
                    zt = tl.load(z_row[:, None] + t[None, :], mask=mask, other=0.0).to(tl.float32)
                    sig = tl.sigmoid(zt)
                    dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
                    tl.store(DZ + b * s_dz_b + d[:, None] * s_dz_d + t[None, :], dz, mask=mask)
                    if STORE_OUT_Z:
                        tl.store(OUT_Z + b * s_oz_b + d[:, None] * s_oz_d + t[None, :], y * zt * sig, mask=mask)
                    dy = dout * zt * sig
                else:
                    if STORE_OUT_Z:
                        tl.store(OUT_Z + b * s_oz_b + d[:, None] * s_oz_d + t[None, :], y, mask=mask)
                    dy = dout
                # Done with h itself: keep only w = a_p h_{p-1} (fewer live [BLOCK_D, N, CHUNK] tiles).
                dC_acc += tl.sum(hs * dy[:, None, :], axis=0)
                w = hs - drive

                # ---- state gradient, in reversed position order: g_q = C_q dy_q + a_{q+1} g_{q+1}
                qm = dmask[:, None] & qmask[None, :]
                dout_q = tl.load(g_row[:, None] + tq[None, :], mask=qm, other=0.0).to(tl.float32)
                if HAS_Z:
                    zq = tl.load(z_row[:, None] + tq[None, :], mask=qm, other=0.0).to(tl.float32)
                    dout_q = dout_q * zq * tl.sigmoid(zq)
                _, dt_q1 = _delta(dt_row, bias, tq1, dmask[:, None] & q1mask[None, :], SOFTPLUS)
                decay_q1 = tl.exp(dt_q1[:, None, :] * a[:, :, None])  # 1 past the end
                g_in = dout_q[:, None, :] * Cq[None, :, :]  # 0 past the end
                cum_g, local_g = tl.associative_scan((decay_q1, g_in), 2, _affine_combine)
                carry_ptr = G_CARRY + b * s_w_b + d[:, None] * s_w_d + n[None, :]
                g_next = tl.load(carry_ptr, mask=dn_mask, other=0.0)  # g at the first position of chunk c + 1
                g_rev = local_g + cum_g * g_next[:, :, None]
                g_first = tl.sum(tl.where(last, g_rev, 0.0), axis=2)  # carried to chunk c - 1
                g = tl.flip(g_rev, 2)  # back to position order

                # ---- input gradients
                gB = tl.sum(g * Bt[None, :, :], axis=1)
                gw = g * w  # g_p * a_p * h_{p-1}
                du = dt * gB
                if HAS_D:
                    du += skip[:, None] * dy
                ddt = u * gB + tl.sum(gw * a[:, :, None], axis=1)
                if SOFTPLUS:
                    ddt = tl.where(pre > 20.0, ddt, ddt * tl.sigmoid(pre))
                ddt = tl.where(mask, ddt, 0.0)
                tl.store(DU + b * s_du_b + d[:, None] * s_du_d + t[None, :], du, mask=mask)
                tl.store(DDELTA + b * s_ddt_b + d[:, None] * s_ddt_d + t[None, :], ddt, mask=mask)

                # ---- parameter gradients: per (batch, channel) running sums owned by this program
                dB_acc += tl.sum(g * dtu[:, None, :], axis=0)
                acc_ptr = DA_PART + b * s_w_b + d[:, None] * s_w_d + n[None, :]
                dA_sum = tl.load(acc_ptr, mask=dn_mask, other=0.0) + tl.sum(gw * dt[:, None, :], axis=2)
                dD_ptr = DD_PART + b * dim + d
                ddb_ptr = DDB_PART + b * dim + d
                if HAS_D:
                    dD_sum = tl.load(dD_ptr, mask=dmask, other=0.0) + tl.sum(dy * u, axis=1)
                if HAS_DELTA_BIAS:
                    ddb_sum = tl.load(ddb_ptr, mask=dmask, other=0.0) + tl.sum(ddt, axis=1)
                # The carry and the running sums are read and written by different threads: every read of
                # this iteration completes before the writes, which complete before the next reads.
                tl.debug_barrier()
                tl.store(carry_ptr, g_first, mask=dn_mask)
                tl.store(acc_ptr, dA_sum, mask=dn_mask)
                if HAS_D:
                    tl.store(dD_ptr, dD_sum, mask=dmask)
                if HAS_DELTA_BIAS:
                    tl.store(ddb_ptr, ddb_sum, mask=dmask)
                tl.debug_barrier()
            nt_mask = nmask[:, None] & pmask[None, :]
            tl.store(dB_rows[:, None] + t[None, :], dB_acc, mask=nt_mask)
            tl.store(dC_rows[:, None] + t[None, :], dC_acc, mask=nt_mask)


def _pow2_divisor(x: int) -> int:
    return x & -x if x > 0 else 1


def _blocks(dim: int, dstate: int, groups: tuple[int, ...]) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_N): BLOCK_D * BLOCK_N * CHUNK ~ TILE_ELEMENTS, each block inside one B/C group."""
    block_n = max(2, triton.next_power_of_2(dstate))
    block_d = max(1, min(MAX_BLOCK_D, TILE_ELEMENTS // (block_n * CHUNK), triton.next_power_of_2(dim)))
    for g in groups:
        if g > 1:
            block_d = min(block_d, _pow2_divisor(dim // g))
    return block_d, block_n


def _sub_blocks(batch: int, dim: int, block_d: int, groups: tuple[int, ...], device: torch.device) -> int:
    """Channel blocks per backward program: up to SUPER_BLOCK_CHANNELS channels, while enough programs remain."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    sub = 1
    while True:
        nxt = 2 * sub * block_d
        if nxt > SUPER_BLOCK_CHANNELS or nxt > triton.next_power_of_2(dim):
            break
        if any(g > 1 and (dim // g) % nxt for g in groups):
            break
        if batch * triton.cdiv(dim, nxt) < 4 * sms:
            break
        sub *= 2
    return sub


def _num_warps(block_d: int, block_n: int, base: int) -> int:
    """`base` warps for the default ~4096-element tiles; more for the larger tiles of d_state > 64."""
    return min(16, base * max(1, block_d * block_n * CHUNK // TILE_ELEMENTS))


def _launch(block_d: int, block_n: int, base_warps: int, maxnreg: int | None) -> dict:
    options = {"num_warps": _num_warps(block_d, block_n, base_warps)}
    if maxnreg is not None:
        options["maxnreg"] = maxnreg
    return options


def _check(u, delta, A, B, C, D, z, delta_bias, states) -> tuple[int, int, int, int]:
    if triton is None:
        raise RuntimeError("the mamba_ssm triton backend needs the triton package")
    batch, dim, seqlen = u.shape
    dstate = A.shape[1]
    if dstate > MAX_DSTATE:
        raise ValueError(f"d_state must be at most {MAX_DSTATE}, got {dstate}")
    for name, t in (("u", u), ("delta", delta), ("z", z), ("B", B), ("C", C)):
        if t is not None and t.stride(-1) != 1 and t.shape[-1] > 1:
            raise ValueError(f"{name} must have unit stride along L")
    for name, t in (("B", B), ("C", C)):
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2] != dstate or t.shape[3] != seqlen or dim % t.shape[1]:
            raise ValueError(f"{name} must be (batch, G, N, L) with G dividing dim, got {tuple(t.shape)}")
    if A.dtype != torch.float32 or A.shape[0] != dim:
        raise ValueError(f"A must be float32 ({dim}, N), got {A.dtype} {tuple(A.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and (t.shape != (dim,) or t.dtype != torch.float32):
            raise ValueError(f"{name} must be float32 ({dim},)")
    if states.shape != (batch, dim, num_chunks(seqlen), dstate) or states.dtype != torch.float32:
        want = (batch, dim, num_chunks(seqlen), dstate)
        raise ValueError(f"states must be float32 {want}, got {states.dtype} {tuple(states.shape)}")
    return batch, dim, seqlen, dstate


def _strides2(t: Tensor | None) -> tuple[int, int]:
    return (0, 0) if t is None else (t.stride(0), t.stride(1))


def _unit_last(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, out, states) -> None:
    """Writes the (gated) output `out` and the state after every chunk `states` (float32)."""
    batch, dim, seqlen, dstate = _check(u, delta, A, B, C, D, z, delta_bias, states)
    if batch * dim == 0:
        return
    if seqlen == 0:
        states.zero_()
        return
    groups = (B.shape[1], C.shape[1])
    block_d, block_n = _blocks(dim, dstate, groups)
    n_dblocks = triton.cdiv(dim, block_d)
    target = out if out.stride(-1) == 1 or seqlen <= 1 else torch.empty_like(out, memory_format=torch.contiguous_format)
    st = states if states.stride(-1) == 1 else torch.empty_like(states, memory_format=torch.contiguous_format)
    per_group = [n_dblocks if g == 1 else (dim // g) // block_d for g in groups]
    _scan_fwd_kernel[(batch * n_dblocks,)](
        u, delta, A, B, C, u if D is None else D, u if z is None else z, u if delta_bias is None else delta_bias,
        target, st,
        *_strides2(u), *_strides2(delta), A.stride(0), A.stride(1),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        *_strides2(z), *_strides2(target), st.stride(0), st.stride(1), st.stride(2),
        dim, dstate, seqlen, num_chunks(seqlen), n_dblocks, per_group[0], per_group[1],
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), REVERSE=bool(reverse),
        BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=CHUNK, **_launch(block_d, block_n, FWD_NUM_WARPS, FWD_MAXNREG),
    )  # fmt: skip
    if target is not out:
        out.copy_(target)
    if st is not states:
        states.copy_(st)


def bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, dout, states,
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, out_z) -> None:  # fmt: skip
    """Writes every gradient (see the interface's contract) and, if `out_z` is given, the recomputed output."""
    batch, dim, seqlen, dstate = _check(u, delta, A, B, C, D, z, delta_bias, states)
    if (z is None) != (dz is None) or (D is None) != (dD is None) or (delta_bias is None) != (ddelta_bias is None):
        raise ValueError("dz, dD and ddelta_bias must be given exactly when z, D and delta_bias are")
    dout = _unit_last(dout)
    device = u.device
    f32 = dict(dtype=torch.float32, device=device)
    if batch * dim * seqlen == 0:
        for t in (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, out_z):
            if t is not None:
                t.zero_()
        return
    groups = (B.shape[1], C.shape[1])
    block_d, block_n = _blocks(dim, dstate, groups)
    sub = _sub_blocks(batch, dim, block_d, groups, device)
    n_outer = triton.cdiv(dim, block_d * sub)
    per_group = [n_outer // g for g in groups]  # exact: G > 1 implies (dim / G) % (block_d * sub) == 0

    def contiguous_target(t):
        if t is None or t.stride(-1) == 1 or seqlen <= 1:
            return t
        return torch.empty_like(t, memory_format=torch.contiguous_format)

    du_t, ddelta_t, dz_t, out_z_t = (contiguous_target(t) for t in (du, ddelta, dz, out_z))
    # dB/dC: written directly when one program covers a whole group, else per super-block partials.
    dB_part = dB if n_outer == groups[0] and dB.stride(-1) == 1 else torch.empty(batch, n_outer, dstate, seqlen, **f32)
    dC_part = dC if n_outer == groups[1] and dC.stride(-1) == 1 else torch.empty(batch, n_outer, dstate, seqlen, **f32)
    dA_part = torch.zeros(batch, dim, dstate, **f32)
    g_carry = torch.zeros(batch, dim, dstate, **f32)
    dD_part = torch.zeros(batch, dim, **f32) if D is not None else dA_part
    ddb_part = torch.zeros(batch, dim, **f32) if delta_bias is not None else dA_part
    st = states if states.stride(-1) == 1 else states.contiguous()
    placeholder = u
    _scan_bwd_kernel[(batch * n_outer,)](
        u, delta, A, B, C, placeholder if D is None else D, placeholder if z is None else z,
        placeholder if delta_bias is None else delta_bias, dout, st,
        du_t, ddelta_t, placeholder if dz_t is None else dz_t, placeholder if out_z_t is None else out_z_t,
        dB_part, dC_part, dA_part, dD_part, ddb_part, g_carry,
        *_strides2(u), *_strides2(delta), A.stride(0), A.stride(1),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        *_strides2(z), *_strides2(dout), st.stride(0), st.stride(1), st.stride(2),
        *_strides2(du_t), *_strides2(ddelta_t), *_strides2(dz_t), *_strides2(out_z_t),
        dB_part.stride(0), dB_part.stride(1), dB_part.stride(2),
        dC_part.stride(0), dC_part.stride(1), dC_part.stride(2),
        g_carry.stride(0), g_carry.stride(1),
        dim, dstate, seqlen, num_chunks(seqlen), n_outer, sub, per_group[0], per_group[1],
        HAS_D=D is not None, HAS_Z=z is not None, HAS_DELTA_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), REVERSE=bool(reverse), STORE_OUT_Z=out_z is not None,
        BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=CHUNK, **_launch(block_d, block_n, BWD_NUM_WARPS, BWD_MAXNREG),
    )  # fmt: skip
    for target, tmp in ((du, du_t), (ddelta, ddelta_t), (dz, dz_t), (out_z, out_z_t)):
        if target is not None and tmp is not target:
            target.copy_(tmp)
    # Fixed-order reductions: over channel super-blocks of a group (dB, dC) and over batch (dA, dD, ddelta_bias).
    for grad, part, g in ((dB, dB_part, groups[0]), (dC, dC_part, groups[1])):
        if part is not grad:
            grad.copy_(part.view(batch, g, n_outer // g, dstate, seqlen).sum(2))
    dA.copy_(dA_part.sum(0))
    if dD is not None:
        dD.copy_(dD_part.sum(0))
    if ddelta_bias is not None:
        ddelta_bias.copy_(ddb_part.sum(0))


__all__ = ["CHUNK", "bwd", "fwd", "num_chunks"]
