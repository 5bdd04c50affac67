"""The Mamba mixer (optionally bidirectional, as in VideoMamba) and the pre-norm residual `Block`.

Model policy (which norm, which rates, the defaults of a VideoMamba block) lives with the models:
`videomamba.core.backbone.create_block` builds the blocks of the backbone from these two classes.

Bidirectional mixer (``bimamba=True``): the backward direction has its own conv1d_b, x_proj_b,
dt_proj_b, A_b_log and D_b, and shares in_proj (hence the gate z) and out_proj with the forward
direction. Because both directions gate with the same z at the same position, the mixer output is
out_proj(silu(z) * (y_fwd + y_bwd)), or the mean of the two with ``divide_out=True``. Every path
(fused or not, on any backend) computes both directions; only step-by-step decoding is
unidirectional-only, since a backward scan needs the whole sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
from mamba_ssm.ops.selective_scan_interface import bimamba_inner_fn, mamba_inner_fn, selective_scan_fn
from mamba_ssm.ops.triton.layernorm import RMSNorm, layer_norm_fn, rms_norm_fn


@dataclass
class InferenceParams:
    """Decoding cache shared by the layers: per layer_idx a (conv_state, ssm_state) pair."""

    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    key_value_memory_dict: dict = field(default_factory=dict)


class Mamba(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
        device=None,
        dtype=None,
        bimamba: bool = True,
        divide_out: bool = False,
    ):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        self.bimamba = bimamba
        self.divide_out = divide_out
        self.activation = "silu"
        dt_kwargs = dict(dt_min=dt_min, dt_max=dt_max, dt_init=dt_init, dt_scale=dt_scale, dt_init_floor=dt_init_floor)

        # Registration order fixes the state-dict order of the released checkpoints.
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory_kwargs)
        self.conv1d = self._conv(conv_bias, factory_kwargs)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory_kwargs)
        self.dt_proj = self._dt_proj(factory_kwargs, **dt_kwargs)
        self.A_log = self._A_log(device)
        self.D = self._ones(device)
        if bimamba:
            self.A_b_log = self._A_log(device)
            self.conv1d_b = self._conv(conv_bias, factory_kwargs)
            self.x_proj_b = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory_kwargs)
            self.dt_proj_b = self._dt_proj(factory_kwargs, **dt_kwargs)
            self.D_b = self._ones(device)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory_kwargs)

    def _conv(self, conv_bias, factory_kwargs) -> nn.Conv1d:
        return nn.Conv1d(
            self.d_inner,
            self.d_inner,
            self.d_conv,
            groups=self.d_inner,
            padding=self.d_conv - 1,
            bias=conv_bias,
            **factory_kwargs,
        )

    def _dt_proj(self, factory_kwargs, dt_min, dt_max, dt_init, dt_scale, dt_init_floor) -> nn.Linear:
        """Mamba's dt projection init: the bias makes softplus(bias) log-uniform in [dt_min, dt_max]."""
        proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory_kwargs)
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                proj.weight.fill_(std)
            elif dt_init == "random":
                proj.weight.uniform_(-std, std)
            else:
                raise ValueError(f"dt_init must be 'constant' or 'random', got {dt_init!r}")
            dt = torch.exp(
                torch.rand(self.d_inner, **factory_kwargs) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            )
            dt = dt.clamp(min=dt_init_floor)
            proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        proj.bias._no_reinit = True  # generic inits must leave it alone
        return proj

    def _A_log(self, device) -> nn.Parameter:
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        param = nn.Parameter(torch.log(A))
        param._no_weight_decay = True
        return param

    def _ones(self, device) -> nn.Parameter:
        param = nn.Parameter(torch.ones(self.d_inner, device=device))
        param._no_weight_decay = True
        return param

    def _directions(self) -> list[tuple[nn.Conv1d, nn.Linear, nn.Linear, Tensor, Tensor, bool]]:
        dirs = [(self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D, False)]
        if self.bimamba:
            dirs.append((self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b, True))
        return dirs

    def forward(self, hidden_states: Tensor, inference_params: InferenceParams | None = None) -> Tensor:
        """hidden_states: (batch, L, d_model) -> (batch, L, d_model)."""
        batch, seqlen, _ = hidden_states.shape
        conv_state = ssm_state = None
        if inference_params is not None:
            if self.bimamba:
                raise RuntimeError(
                    "a bidirectional Mamba has no streaming cache: its backward scan needs the whole "
                    "sequence; call it without inference_params"
                )
            conv_state, ssm_state = self._get_states_from_cache(inference_params, batch)
            if inference_params.seqlen_offset > 0:
                out, _, _ = self.step(hidden_states, conv_state, ssm_state)
                return out

        # (d, b*l) product laid out as (b, d, l), as upstream does, so xz needs no transpose copy.
        xz = rearrange(self.in_proj.weight @ rearrange(hidden_states, "b l d -> d (b l)"), "d (b l) -> b d l", l=seqlen)
        if self.in_proj.bias is not None:
            xz = xz + rearrange(self.in_proj.bias.to(dtype=xz.dtype), "d -> d 1")

        if self.use_fast_path and inference_params is None:
            return self._fused_forward(xz)

        x, z = xz.chunk(2, dim=1)
        if conv_state is not None:
            conv_state.copy_(F.pad(x, (self.d_conv - x.shape[-1], 0)))
        y = None
        for conv, x_proj, dt_proj, A_log, D, reverse in self._directions():
            u = causal_conv1d_fn(x, rearrange(conv.weight, "d 1 w -> d w"), conv.bias, self.activation, reverse=reverse)
            x_dbl = x_proj(rearrange(u, "b d l -> (b l) d"))
            dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
            dt = rearrange(dt_proj.weight @ dt.t(), "d (b l) -> b d l", l=seqlen)
            B = rearrange(B, "(b l) n -> b n l", l=seqlen).contiguous()
            C = rearrange(C, "(b l) n -> b n l", l=seqlen).contiguous()
            out = selective_scan_fn(
                u,
                dt,
                -torch.exp(A_log.float()),
                B,
                C,
                D.float(),
                z=z,
                delta_bias=dt_proj.bias.float(),
                delta_softplus=True,
                return_last_state=ssm_state is not None,
                reverse=reverse,
            )
            if ssm_state is not None:
                out, last_state = out
                ssm_state.copy_(last_state)
            y = out if y is None else y + out
        if self.divide_out and self.bimamba:
            y = y / 2
        return self.out_proj(rearrange(y, "b d l -> b l d"))

    def _fused_forward(self, xz: Tensor) -> Tensor:
        A = -torch.exp(self.A_log.float())
        common = dict(D=self.D.float(), delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        if not self.bimamba:
            return mamba_inner_fn(
                xz,
                self.conv1d.weight,
                self.conv1d.bias,
                self.x_proj.weight,
                self.dt_proj.weight,
                self.out_proj.weight,
                self.out_proj.bias,
                A,
                None,
                None,
                **common,
            )
        return bimamba_inner_fn(
            xz,
            self.conv1d.weight,
            self.conv1d.bias,
            self.x_proj.weight,
            self.dt_proj.weight,
            self.out_proj.weight,
            self.out_proj.bias,
            A,
            -torch.exp(self.A_b_log.float()),
            None,
            None,
            **common,
            conv1d_weight_b=self.conv1d_b.weight,
            conv1d_bias_b=self.conv1d_b.bias,
            x_proj_weight_b=self.x_proj_b.weight,
            delta_proj_weight_b=self.dt_proj_b.weight,
            D_b=self.D_b.float(),
            delta_bias_b=self.dt_proj_b.bias.float(),
            divide_out=self.divide_out,
        )

    def step(self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Decode one token (unidirectional only): hidden_states (batch, 1, d_model)."""
        if self.bimamba:
            raise RuntimeError("step() is unidirectional: a bidirectional Mamba needs the whole sequence")
        if hidden_states.shape[1] != 1:
            raise ValueError("step() decodes one token at a time: hidden_states must be (batch, 1, d_model)")
        dtype = hidden_states.dtype
        x, z = self.in_proj(hidden_states.squeeze(1)).chunk(2, dim=-1)
        x = causal_conv1d_update(
            x, conv_state, rearrange(self.conv1d.weight, "d 1 w -> d w"), self.conv1d.bias, self.activation
        )
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float())
        A = -torch.exp(self.A_log.float())
        decay = torch.exp(dt.unsqueeze(-1) * A)
        ssm_state.copy_(ssm_state * decay + (dt * x.float()).unsqueeze(-1) * B.float().unsqueeze(1))
        y = (ssm_state * C.float().unsqueeze(1)).sum(-1) + self.D.float() * x.float()
        y = (y * F.silu(z.float())).to(dtype)
        return self.out_proj(y).unsqueeze(1), conv_state, ssm_state

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, **kwargs) -> tuple[Tensor, Tensor]:
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=conv_dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32)
        return conv_state, ssm_state

    def _get_states_from_cache(self, inference_params: InferenceParams, batch_size: int) -> tuple[Tensor, Tensor]:
        if self.layer_idx is None:
            raise ValueError("decoding with inference_params needs Mamba(layer_idx=...)")
        cache = inference_params.key_value_memory_dict
        if self.layer_idx not in cache:
            cache[self.layer_idx] = self.allocate_inference_cache(batch_size, inference_params.max_seqlen)
        return cache[self.layer_idx]


class Block(nn.Module):
    """Add -> Norm -> Mixer, returning (hidden_states, residual) for the next block.

    The first block receives residual=None and starts the residual stream from its input; later
    blocks add drop_path(previous mixer output) to it, where `drop_path` is any module the model
    chooses (stochastic depth, e.g. timm's DropPath; identity when None). With fused_add_norm the
    add and the norm run as one op (`rms_norm_fn`/`layer_norm_fn` with prenorm=True).
    """

    def __init__(
        self,
        dim: int,
        mixer_cls,
        norm_cls=nn.LayerNorm,
        fused_add_norm: bool = False,
        residual_in_fp32: bool = False,
        drop_path: nn.Module | None = None,
    ):
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.fused_add_norm = fused_add_norm
        self.mixer = mixer_cls(dim)
        self.norm = norm_cls(dim)
        self.drop_path = drop_path if drop_path is not None else nn.Identity()
        if fused_add_norm and not isinstance(self.norm, (nn.LayerNorm, RMSNorm)):
            raise TypeError("fused_add_norm needs an nn.LayerNorm or RMSNorm norm")

    def forward(
        self,
        hidden_states: Tensor,
        residual: Tensor | None = None,
        inference_params=None,
        grad_checkpointing: bool = False,
    ) -> tuple[Tensor, Tensor]:
        if not self.fused_add_norm:
            residual = hidden_states if residual is None else residual + self.drop_path(hidden_states)
            hidden_states = self.norm(residual.to(dtype=self.norm.weight.dtype))
            if self.residual_in_fp32:
                residual = residual.to(torch.float32)
        else:
            norm_fn = rms_norm_fn if isinstance(self.norm, RMSNorm) else layer_norm_fn
            hidden_states, residual = norm_fn(
                hidden_states if residual is None else self.drop_path(hidden_states),
                self.norm.weight,
                self.norm.bias,
                residual=residual,
                prenorm=True,
                residual_in_fp32=self.residual_in_fp32,
                eps=self.norm.eps,
            )
        if grad_checkpointing:
            hidden_states = checkpoint(self.mixer, hidden_states, inference_params, use_reentrant=False)
        else:
            hidden_states = self.mixer(hidden_states, inference_params=inference_params)
        return hidden_states, residual

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int, dtype=None, **kwargs):
        return self.mixer.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype, **kwargs)
