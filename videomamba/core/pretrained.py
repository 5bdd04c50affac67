"""The one checkpoint loader of the code base: read, unwrap, adapt, load strictly, report.

Every task loads weights through :func:`load_pretrained`, which accepts the original release's
containers and variants:

- containers: ``{'model': sd}`` (image releases, training checkpoints), ``{'module': sd}``,
  ``{'state_dict': sd}`` or a bare state dict (video releases); ``module.`` (DDP) and
  ``_orig_mod.`` (torch.compile) prefixes are stripped;
- the final norm is ``norm_f`` in classifiers but ``norm`` in masked-pretraining checkpoints;
- auxiliary heads (``distill_head.*``, ``clip_decoder.*``) are ignored when the model lacks them;
- a classifier with another number of classes is dropped (the model keeps its new head);
- ``pos_embed`` is resized bicubically to the model's patch grid, ``temporal_pos_embedding``
  linearly to the model's number of tubelets;
- a 2D patch-embedding kernel is inflated to 3D: by default ("center", as the original video
  fine-tuning did) the 2D kernel sits at the centre time index k//2 with zeros elsewhere, so a
  static clip gives the image features; "average" spreads it as w/k over the k frames. A 3D
  kernel loaded into an image model is summed over time (the same static-clip response).

After adaptation the state dict is loaded and checked: in strict mode (default) anything
missing beyond the classifier, the distillation head or a new temporal embedding, anything
unexpected, and any shape that could not be adapted raise an error listing the keys.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videomamba.core.cli import MissingFileError, UserError

__all__ = [
    "CheckpointError",
    "LoadReport",
    "adapt_state_dict",
    "extract_state_dict",
    "inflate_patch_weight",
    "load_checkpoint_file",
    "load_pretrained",
    "resolve_checkpoint_path",
    "resize_pos_embed",
    "resize_temporal_pos_embed",
]

CONTAINER_KEYS = ("model", "module", "state_dict")
EMA_CONTAINER_KEYS = ("model_ema", "state_dict_ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Keys of other heads the original saved beside the backbone: ignored when the model lacks them.
AUXILIARY_PREFIXES = {
    "distill_head.": "self-distillation head",
    "clip_decoder.": "masked-pretraining CLIP decoder",
    "clip_pos_embed": "masked-pretraining CLIP position embedding",
}
# Folder where released checkpoints are found by their original file names (never downloaded).
CHECKPOINT_DIR_ENV = "VIDEOMAMBA_CHECKPOINTS"
# Missing keys that strict mode accepts: they are new by design and keep their initialisation.
NEW_BY_DESIGN_PREFIXES = ("head.", "distill_head.", "temporal_pos_embedding")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did with each checkpoint key."""

    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No unexpected or mismatched keys and nothing missing beyond what is new by design."""
        missing_bad = [k for k in self.missing if not k.startswith(NEW_BY_DESIGN_PREFIXES)]
        return not (missing_bad or self.unexpected or self.mismatched)

    def summary(self, max_items: int = 6) -> str:
        lines = [
            f"loaded {self.source}: {len(self.loaded)} tensors as is, {len(self.adapted)} adapted, "
            f"{len(self.ignored)} ignored, {len(self.missing)} kept at init, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} mismatched"
        ]
        for title, items in (
            ("adapted", self.adapted),
            ("ignored", self.ignored),
            ("kept at init (missing from checkpoint)", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.mismatched),
        ):
            if items:
                shown = items[:max_items] + (
                    [f"... and {len(items) - max_items} more"] if len(items) > max_items else []
                )
                lines.append(f"  {title}: " + "; ".join(shown))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# --------------------------------------------------------------------------------- reading


def resolve_checkpoint_path(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """``path`` if it is a file, else the same relative path or name under ``$VIDEOMAMBA_CHECKPOINTS``.

    A missing file raises :class:`MissingFileError` naming every place that was looked at.
    """
    given = Path(path)
    if given.is_file():
        return given
    looked = [f"{given.resolve()}" if not given.is_absolute() else str(given)]
    folder = os.environ.get(CHECKPOINT_DIR_ENV)
    if not given.is_absolute():
        if folder:
            candidate = Path(folder) / given
            if candidate.is_file():
                return candidate
            looked.append(f"{candidate} (${CHECKPOINT_DIR_ENV})")
        else:
            looked.append(f"${CHECKPOINT_DIR_ENV} (not set)")
    raise MissingFileError(f"{path}: {what} file not found; looked for {', '.join(looked)}")


def _not_a_checkpoint_reason(path: Path) -> str | None:
    """Why ``path`` cannot be a torch checkpoint at all (empty, text, video), from its first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        return "the file is empty (0 bytes)"
    # torch.save writes a zip archive; the legacy format starts with a pickle protocol byte.
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if head[4:8] == b"ftyp" or head.startswith((b"\x1a\x45\xdf\xa3", b"RIFF", b"GIF8", b"\x89PNG", b"\xff\xd8")):
        kind = "a video or image file"
    else:
        try:
            head.decode("utf-8")
            kind = "a text file"
        except UnicodeDecodeError:
            kind = "an unknown binary format"
    return f"not a torch checkpoint (starts with {head[:12]!r}: {kind}, not a torch.save zip or pickle)"


def load_checkpoint_file(path: str | os.PathLike, weights_only: bool = True, what: str = "checkpoint") -> Any:
    """torch.load on CPU, weights_only by default (argparse.Namespace allowed, as in old checkpoints).

    ``path`` may be a released file name found in ``$VIDEOMAMBA_CHECKPOINTS``. ``.safetensors`` files
    are read with safetensors. Every error names the file; no loading path executes code from the
    file unless ``weights_only=False`` is asked for.
    """
    text = str(path)
    if text.startswith(("http://", "https://", "s3://")):
        raise CheckpointError(f"{text}: remote checkpoints are never downloaded here; fetch the file and pass its path")
    path = resolve_checkpoint_path(path, what)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable .safetensors file: {err}") from err
    reason = _not_a_checkpoint_reason(path)
    if reason:
        raise CheckpointError(f"{path}: {reason}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if weights_only:
            raise CheckpointError(
                f"{path}: refused by torch.load(weights_only=True): {reason}. "
                "Load it with weights_only=False only if you trust the file."
            ) from err
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {reason}") from err
    except (EOFError, zipfile.BadZipFile, RuntimeError, KeyError, ValueError) as err:
        detail = str(err).strip() or type(err).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {detail}") from err


def extract_state_dict(
    checkpoint: Mapping[str, Any],
    key: str | None = None,
    use_ema: bool = False,
    prefix: str | None = None,
    source: str = "checkpoint",
) -> dict[str, Tensor]:
    """The state dict inside a checkpoint container, with DDP/compile prefixes stripped.

    Args:
        key: take this entry of the container (default: the EMA entry if use_ema, else the first
            of 'model', 'module', 'state_dict' present, else the checkpoint itself).
        use_ema: prefer the EMA weights ('model_ema' / 'state_dict_ema').
        prefix: keep only keys under this prefix and strip it (e.g. 'vision_encoder.').
        source: name used in error messages.
    """
    obj: Any = checkpoint
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise CheckpointError(f"{source}: no '{key}' entry (top-level keys: {_head_keys(obj)})")
        obj = obj[key]
    else:
        candidates = (EMA_CONTAINER_KEYS if use_ema else ()) + CONTAINER_KEYS
        if use_ema and not any(isinstance(obj, Mapping) and obj.get(k) for k in EMA_CONTAINER_KEYS):
            raise CheckpointError(f"{source}: use_ema=True but it holds no EMA weights (keys: {_head_keys(obj)})")
        while isinstance(obj, Mapping):
            inner = next((k for k in candidates if isinstance(obj.get(k), Mapping) and obj[k]), None)
            if inner is None:
                break
            obj = obj[inner]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source}: no state dict found (top-level keys: {_head_keys(checkpoint)})")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: not a state dict, entries {bad[:5]} are not tensors")
    state_dict = {}
    for name, value in obj.items():
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        state_dict[name] = value
    if prefix:
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not state_dict:
            raise CheckpointError(f"{source}: no keys start with prefix '{prefix}'")
    return state_dict


def _head_keys(obj: Any) -> list[str]:
    return list(obj.keys())[:10] if isinstance(obj, Mapping) else [type(obj).__name__]


# ----------------------------------------------------------------------------- adaptation


def resize_pos_embed(
    pos_embed: Tensor,
    new_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
    old_grid: tuple[int, int] | None = None,
    mode: str = "bicubic",
) -> Tensor:
    """Resample a (1, prefix + H*W, D) position embedding to another patch grid; prefix tokens kept."""
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if old_grid is None:
        side = math.isqrt(grid.shape[1])
        if side * side != grid.shape[1]:
            raise CheckpointError(f"pos_embed has {grid.shape[1]} patch positions, not a square grid; pass old_grid")
        old_grid = (side, side)
    dim = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def resize_temporal_pos_embed(temporal: Tensor, new_length: int) -> Tensor:
    """Linearly resample a (1, T, D) temporal embedding to (1, new_length, D)."""
    resized = F.interpolate(temporal.permute(0, 2, 1).float(), size=new_length, mode="linear", align_corners=False)
    return resized.permute(0, 2, 1).to(temporal.dtype)


def inflate_patch_weight(weight: Tensor, time: int, mode: str = "center") -> Tensor:
    """Turn a (D, C, p, p) kernel into (D, C, time, p, p): centre frame only, or averaged over time."""
    if mode == "center":
        inflated = weight.new_zeros(weight.shape[0], weight.shape[1], time, *weight.shape[2:])
        inflated[:, :, time // 2] = weight
        return inflated
    if mode == "average":
        return weight.unsqueeze(2).repeat(1, 1, time, 1, 1) / time
    raise ValueError(f"inflation must be 'center' or 'average', got {mode!r}")


def _adapt_tensor(
    key: str, value: Tensor, target: Tensor, model: nn.Module, inflation: str
) -> tuple[Tensor, str] | None:
    """Reshape one checkpoint tensor to the model's shape, or None when it cannot be adapted."""
    old, new = tuple(value.shape), tuple(target.shape)
    if key == "pos_embed" and value.dim() == 3 and old[-1] == new[-1]:
        prefix = getattr(model, "num_prefix_tokens", 1)
        grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", ()))
        if len(grid) != 2 or grid[0] * grid[1] + prefix != new[1]:
            return None
        resized = resize_pos_embed(value, grid, prefix)
        side = math.isqrt(old[1] - prefix)
        return resized, f"pos_embed {old} -> {new} (bicubic, grid {side}x{side} -> {grid[0]}x{grid[1]})"
    if key == "temporal_pos_embedding" and value.dim() == 3 and old[-1] == new[-1]:
        return resize_temporal_pos_embed(value, new[1]), f"temporal_pos_embedding {old} -> {new} (linear)"
    if key.endswith("patch_embed.proj.weight") and old[:2] == new[:2] and old[-2:] == new[-2:]:
        if value.dim() == 4 and target.dim() == 5:
            return inflate_patch_weight(value, new[2], inflation), f"{key} {old} -> {new} (2D->3D, {inflation})"
        if value.dim() == 5 and target.dim() == 4:
            return value.sum(2), f"{key} {old} -> {new} (3D->2D, summed over time)"
        if value.dim() == 5 and target.dim() == 5:
            inflated = inflate_patch_weight(value.sum(2), new[2], inflation)
            return inflated, f"{key} {old} -> {new} (tubelet {old[2]}->{new[2]}: summed, then {inflation})"
    return None


def adapt_state_dict(
    state_dict: Mapping[str, Tensor],
    model: nn.Module,
    inflation: str = "center",
    source: str = "checkpoint",
) -> tuple[dict[str, Tensor], LoadReport]:
    """Map a checkpoint's state dict onto ``model``'s keys and shapes; see the module docstring."""
    report = LoadReport(source=source)
    target = model.state_dict()
    state_dict = dict(state_dict)

    # The final norm is `norm_f` in classifiers and `norm` in masked-pretraining checkpoints.
    for src, dst in (("norm.", "norm_f."), ("norm_f.", "norm.")):
        src_keys = [k for k in state_dict if k.startswith(src)]
        if src_keys and not any(k.startswith(src) for k in target) and any(k.startswith(dst) for k in target):
            for k in src_keys:
                state_dict[dst + k[len(src) :]] = state_dict.pop(k)
                report.adapted.append(f"{k} -> {dst + k[len(src) :]} (final norm renamed)")

    adapted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key not in target:
            aux = next((why for p, why in AUXILIARY_PREFIXES.items() if key.startswith(p)), None)
            if aux:
                report.ignored.append(f"{key} ({aux}, not in this model)")
            elif key.startswith("head.") and getattr(model, "num_classes", None) == 0:
                report.ignored.append(f"{key} (model has no classifier)")
            elif key == "temporal_pos_embedding":
                report.ignored.append(f"{key} (video checkpoint, image model)")
            else:
                report.unexpected.append(key)
            continue
        want = target[key]
        if value.shape == want.shape:
            adapted[key] = value
            report.loaded.append(key)
            continue
        result = _adapt_tensor(key, value, want, model, inflation)
        if result is not None:
            adapted[key] = result[0]
            report.adapted.append(result[1])
        elif key.startswith(("head.", "distill_head.")):
            report.ignored.append(f"{key} (checkpoint {tuple(value.shape)}, model {tuple(want.shape)}: new head kept)")
        else:
            report.mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(want.shape)}")
    report.missing = [k for k in target if k not in adapted]
    return adapted, report


# -------------------------------------------------------------------------------- loading


def load_pretrained(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, Any],
    strict: bool = True,
    key: str | None = None,
    use_ema: bool = False,
    prefix: str | None = None,
    inflation: str = "center",
    weights_only: bool = True,
    verbose: bool = True,
) -> LoadReport:
    """Load a file or an in-memory checkpoint into ``model`` with adaptation; returns the report.

    strict: raise :class:`CheckpointError` (with the report) if any key is unexpected, any shape
    could not be adapted, or anything other than the classifier, the distillation head or a new
    temporal embedding is missing. With strict=False those keys are reported and skipped.
    """
    if isinstance(checkpoint, Mapping):
        source, raw = "state dict", checkpoint
    else:
        source, raw = str(checkpoint), load_checkpoint_file(checkpoint, weights_only=weights_only)
    state_dict = extract_state_dict(raw, key=key, use_ema=use_ema, prefix=prefix, source=source)
    adapted, report = adapt_state_dict(state_dict, model, inflation=inflation, source=source)
    if strict and not report.ok:
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__} (strict):\n{report.summary(20)}")
    model.load_state_dict(adapted, strict=False)
    if verbose:
        print(report.summary())
    return report
