"""Loading video-text checkpoints (released ``videomamba_m16_*`` files and our own) into a model.

What is adapted, and reported:
- containers (``model`` / ``module`` / bare) and ``module.`` prefixes, through the shared loader;
- ``clip_teacher.*``: ignored (the teacher loads its own CLIP weights; ours are never saved);
- the text encoder layout: pretraining checkpoints hold ``text_encoder.bert.*`` plus the MLM head
  ``text_encoder.cls.*`` (BertForMaskedLM); retrieval models are BertModel-like, without ``bert.``
  and without the head. Either layout loads into either model (the head is dropped, or kept at its
  initialisation); the old ``embeddings.position_ids`` buffer and a pooler are ignored;
- the QA decoder, when the checkpoint has none, starts from the embeddings, the top layers and the
  MLM head of the text encoder (cross-attention tensors whose width differs stay at initialisation);
- ``vision_encoder.*`` through the shared adapter (``norm`` -> ``norm_f``, position embeddings
  resized to the model's grid, the temporal embedding interpolated to its number of frames).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from videomamba.core.pretrained import (
    CheckpointError,
    LoadReport,
    adapt_state_dict,
    extract_state_dict,
    load_checkpoint_file,
)

__all__ = ["check_fits_for_evaluation", "load_video_mm_checkpoint"]

VISION = "vision_encoder."
TEXT = "text_encoder."
DECODER = "text_decoder."
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.*)$")


def _bert_relative(key: str) -> str:
    """A text-encoder key without ``text_encoder.`` and ``bert.``: ``encoder.layer.3...``, ``cls.predictions...``."""
    return key[len(TEXT) :].removeprefix("bert.")


def _decoder_from_text_encoder(
    state: dict[str, Tensor], model: nn.Module, target: Mapping[str, Tensor], report: LoadReport
) -> dict[str, Tensor]:
    num_text_layers = model.text_bert.config.num_hidden_layers
    offset = num_text_layers - len(model.text_decoder.bert.encoder.layer)
    decoder: dict[str, Tensor] = {}
    for key, value in state.items():
        if not key.startswith(TEXT):
            continue
        relative = _bert_relative(key)
        layer = _LAYER.match(relative)
        if relative.startswith("embeddings."):
            new_key = f"{DECODER}bert.{relative}"
        elif relative.startswith("cls."):
            new_key = f"{DECODER}{relative}"
        elif layer and int(layer.group(1)) >= offset:
            new_key = f"{DECODER}bert.encoder.layer.{int(layer.group(1)) - offset}.{layer.group(2)}"
        else:
            continue
        if new_key in target and target[new_key].shape == value.shape:
            decoder[new_key] = value
    report.adapted.append(
        f"{DECODER}* ({len(decoder)} tensors) from the text encoder's embeddings, MLM head and top "
        f"{num_text_layers - offset} layers"
    )
    return decoder


def _adapt_text_layout(state: dict[str, Tensor], target: Mapping[str, Tensor], report: LoadReport) -> dict[str, Tensor]:
    model_has_head = any(k.startswith(f"{TEXT}bert.") for k in target)
    adapted: dict[str, Tensor] = {}
    renamed = 0
    for key, value in state.items():
        if not key.startswith(TEXT):
            adapted[key] = value
            continue
        relative = _bert_relative(key)
        if relative.endswith("embeddings.position_ids") or relative.startswith("pooler."):
            report.ignored.append(f"{key} (not used by this BERT)")
            continue
        if relative.startswith("cls."):
            if model_has_head:
                adapted[key] = value
            else:
                report.ignored.append(f"{key} (MLM head; the retrieval text encoder has none)")
            continue
        new_key = f"{TEXT}bert.{relative}" if model_has_head else f"{TEXT}{relative}"
        renamed += new_key != key
        adapted[new_key] = value
    if renamed:
        layout = "pretraining (bert.*)" if model_has_head else "retrieval (no bert.)"
        report.adapted.append(f"{renamed} text_encoder keys renamed to the {layout} layout")
    return adapted


def load_video_mm_checkpoint(
    model: nn.Module, checkpoint: str | os.PathLike | Mapping[str, Any], strict: bool = False, verbose: bool = True
) -> LoadReport:
    """Load a video_mm checkpoint into `model` (see the module notes); returns the report.

    strict: raise `CheckpointError` when anything is missing, unexpected or of the wrong shape after
    the adaptations above (with the report).
    """
    if isinstance(checkpoint, Mapping):
        source, raw = "state dict", checkpoint
    else:
        source, raw = str(checkpoint), load_checkpoint_file(checkpoint)
    state = extract_state_dict(raw, source=source)
    report = LoadReport(source=source)
    target = model.state_dict()

    teacher_keys = [k for k in state if k.startswith("clip_teacher.")]
    if teacher_keys:
        report.ignored.append(f"clip_teacher.* ({len(teacher_keys)} tensors; the teacher loads its own weights)")
        state = {k: v for k, v in state.items() if not k.startswith("clip_teacher.")}
    if hasattr(model, "text_decoder") and not any(k.startswith(DECODER) for k in state):
        state.update(_decoder_from_text_encoder(state, model, target, report))
    state = _adapt_text_layout(state, target, report)

    vision_state = {k[len(VISION) :]: v for k, v in state.items() if k.startswith(VISION)}
    final: dict[str, Tensor] = {}
    if vision_state:
        vision_adapted, vision_report = adapt_state_dict(vision_state, model.vision_encoder, source=source)
        final.update({VISION + k: v for k, v in vision_adapted.items()})
        report.adapted += [f"{VISION}{item}" for item in vision_report.adapted]
        report.ignored += [f"{VISION}{item}" for item in vision_report.ignored]
        report.unexpected += [VISION + k for k in vision_report.unexpected]
        report.mismatched += [VISION + k for k in vision_report.mismatched]
    for key, value in state.items():
        if key.startswith(VISION):
            continue
        if key not in target:
            report.unexpected.append(key)
        elif target[key].shape != value.shape:
            report.mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}")
        else:
            final[key] = value
    report.loaded = sorted(final)
    report.missing = [k for k in target if k not in final]
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__} (strict):\n{report.summary(20)}")
    model.load_state_dict(final, strict=False)
    if verbose:
        print(report.summary())
    return report


def check_fits_for_evaluation(report: LoadReport) -> None:
    """Refuse to evaluate a model the checkpoint does not fit.

    Training may start from a partial fit (new heads, another text config); an evaluation of one
    would print a full R@k table for mostly random weights. Only the masked stage's clip_decoder
    (unused at evaluation) may differ.
    """
    wrong = [k for k in report.mismatched if "clip_decoder" not in k]
    if wrong:
        raise CheckpointError(
            f"{report.source}: {len(wrong)} tensors do not fit the model (e.g. {'; '.join(wrong[:3])}), so an "
            "evaluation would run on untrained weights: make the config match the checkpoint "
            "(model.text_encoder.config, model.vision_encoder.*)"
        )
