"""Classify one video file, or extract its features, with a trained VideoMamba.

Usage::

    python -m videomamba.video_sm.predict VIDEO --checkpoint CKPT [--model videomamba_tiny]
        [--labels labels.txt] [--topk 5] [--num_frames 8] [--num_segments 4] [--num_crops 1]
        [--features out.npy [--window_seconds 60 --window_stride 16]]

- VIDEO: any length, any container/codec decord or PyAV reads (a frame folder or gif works too).
- CKPT: a training checkpoint of run_class_finetuning.py (the model name and its arguments are read
  from it, so --model and the sizes can be left out) or a released state dict (then give --model,
  --num_frames and --input_size; the class count comes from the head).
- --labels: one class name per line, line i naming class i (otherwise classes are printed as numbers).

Prediction averages the softmax over ``num_segments x num_crops`` views and prints the top-k
classes with their probabilities. A model with one output (``--regression`` runs, e.g. LVU like/view)
is a regressor: its output is averaged over the views and printed as the predicted value.
``--features`` writes the pooled (cls) feature averaged over the views to a .npy file; with
``--window_seconds`` it also writes one feature per window of a long video to
``<name>.windows.npy`` (windows as in the LVU data sets).
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videomamba.core.backbone import rename_legacy_model_kwargs  # also registers the models in timm
from videomamba.core.cli import UserError, create_model, registered_model
from videomamba.core.pretrained import extract_state_dict, load_checkpoint_file, load_pretrained
from videomamba.core.text_lists import read_list_lines
from videomamba.core.video_decode import VideoDecodeError, open_video
from videomamba.video_sm.datasets import load_test_views, long_video_windows

__all__ = ["build_predictor", "extract_features", "main", "predict", "read_labels"]


def read_labels(path: str | os.PathLike, num_classes: int) -> list[str]:
    """Class names, one per line (blank lines skipped); errors name the file."""
    names = [line for _, line in read_list_lines(path, "labels file", skip_comments=False)]
    if len(names) < num_classes:
        raise UserError(f"{path}: {len(names)} class names for a model with {num_classes} classes")
    return names


def build_predictor(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model with the checkpoint's weights, in eval mode, and the kwargs it was built with."""
    checkpoint = load_checkpoint_file(args.checkpoint)
    if not isinstance(checkpoint, dict):
        raise UserError(f"{args.checkpoint}: not a checkpoint dictionary")
    saved_kwargs = checkpoint.get("model_kwargs") if isinstance(checkpoint.get("model_kwargs"), dict) else {}
    name = args.model or checkpoint.get("model_name")
    if not name:
        raise UserError(f"{args.checkpoint} does not record its model: pass --model (e.g. videomamba_tiny)")
    kwargs = rename_legacy_model_kwargs(saved_kwargs)  # older checkpoints store the original's names
    kwargs.pop("grad_checkpointing", None)  # nothing to checkpoint without gradients
    # The size flags override what the checkpoint records (--input_size is the model's img_size).
    sizes = {"num_frames": args.num_frames, "tubelet_size": args.tubelet_size, "img_size": args.input_size}
    for key, value in sizes.items():
        if value is not None:
            kwargs[key] = value
        kwargs.setdefault(key, {"num_frames": 8, "tubelet_size": 1, "img_size": 224}[key])
    if "num_classes" not in kwargs:
        head = extract_state_dict(checkpoint, source=args.checkpoint).get("head.weight")
        if head is None:
            raise UserError(f"{args.checkpoint} has no classifier (head.weight); it cannot predict classes")
        kwargs["num_classes"] = head.shape[0]
    kwargs.update(args.model_kwargs)
    model = create_model(name, pretrained=False, **kwargs)
    load_pretrained(model, checkpoint, key="model" if "model" in checkpoint else None, verbose=False)
    return model.to(args.device).eval(), kwargs


@torch.no_grad()
def _forward_views(model: torch.nn.Module, views: torch.Tensor, device: str, batch_size: int) -> tuple:
    """(logits, pooled features) of every view, computed in batches."""
    logits, features = [], []
    for chunk in views.split(batch_size):
        pooled = model.forward_head(model.forward_features(chunk.to(device)), pre_logits=True)
        features.append(pooled.float().cpu())
        logits.append(model.get_classifier()(pooled).float().cpu())
    return torch.cat(logits), torch.cat(features)


def _views(args: argparse.Namespace, kwargs: dict[str, Any], window: tuple[float, float] | None = None) -> torch.Tensor:
    size = kwargs["img_size"] if isinstance(kwargs["img_size"], int) else kwargs["img_size"][0]
    return load_test_views(
        args.video,
        num_frames=kwargs["num_frames"],
        num_segments=args.num_segments,
        num_crops=args.num_crops,
        input_size=size,
        short_side_size=args.short_side_size or size,
        video_backend=args.video_reader,
        window=window,
    )


def predict(args: argparse.Namespace) -> tuple[list[tuple[int, float]], int]:
    """(top-k (class, probability) averaged over views, number of classes); writes features if asked.

    A one-output model is a regressor (a softmax over one class is always 1): the result is then
    ``[(0, output averaged over views)]`` with 1 class, as the multi-view test of ``--regression`` averages.
    """
    model, kwargs = build_predictor(args)
    logits, features = _forward_views(model, _views(args, kwargs), args.device, args.batch_size)
    if args.features:
        extract_features(args, model, kwargs, features.mean(0))
    if logits.shape[-1] == 1:
        return [(0, float(logits.mean()))], 1
    probs = logits.softmax(dim=-1).mean(0)
    top = probs.topk(min(args.topk, probs.numel()))
    return [(int(c), float(p)) for c, p in zip(top.indices, top.values, strict=True)], probs.numel()


def extract_features(
    args: argparse.Namespace, model: torch.nn.Module, kwargs: dict[str, Any], pooled: torch.Tensor
) -> list[Path]:
    """Write the pooled feature (D,) and, with --window_seconds, per-window features (W, D)."""
    out = Path(args.features)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, pooled.numpy())
    written = [out]
    if args.window_seconds:
        with open_video(args.video, args.video_reader) as video:
            duration = video.info.duration
        windows = long_video_windows(duration, args.window_seconds, args.window_stride or args.window_seconds)
        per_window = [
            _forward_views(model, _views(args, kwargs, window), args.device, args.batch_size)[1].mean(0)
            for window in windows
        ]
        window_path = out.with_name(out.stem + ".windows.npy")
        np.save(window_path, torch.stack(per_window).numpy())
        written.append(window_path)
        print(f"{len(windows)} windows of {args.window_seconds:g} s -> {window_path}", file=sys.stderr)
    print(f"features ({pooled.numel()},) -> {out}", file=sys.stderr)  # stdout stays the result (--json)
    return written


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Predict the class of one video (or extract its features)")
    parser.add_argument("video", help="video file, frame folder or gif")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint or released weights")
    parser.add_argument(
        "--model", default=None, type=registered_model, help="registered model (default: the one in the checkpoint)"
    )
    parser.add_argument("--model_kwargs", default="{}", type=json.loads, help="extra model arguments as JSON")
    parser.add_argument("--labels", default=None, help="class names, one per line")
    parser.add_argument("--topk", default=5, type=int)
    parser.add_argument("--num_frames", default=None, type=int, help="frames per view (default: the checkpoint's)")
    parser.add_argument("--tubelet_size", default=None, type=int)
    parser.add_argument("--input_size", default=None, type=int)
    parser.add_argument("--short_side_size", default=None, type=int, help="default: input_size")
    parser.add_argument("--num_segments", default=4, type=int, help="temporal views")
    parser.add_argument("--num_crops", default=1, type=int, help="spatial views")
    parser.add_argument("--batch_size", default=8, type=int, help="views per forward pass")
    parser.add_argument("--video_reader", default="auto", choices=("auto", "decord", "pyav", "frames", "gif"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--features", default=None, help="write the pooled feature to this .npy file")
    parser.add_argument("--window_seconds", default=None, type=float, help="per-window features (long videos)")
    parser.add_argument("--window_stride", default=None, type=float, help="window stride in seconds")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if not os.path.exists(args.video):
        sys.stderr.write(f"error: {args.video}: no such video file\n")
        return 2
    try:
        top, num_classes = predict(args)
    except VideoDecodeError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    if num_classes == 1:  # a regressor: print its value, not a "class 0 at 100 %"
        value, views = top[0][1], args.num_segments * args.num_crops
        print(json.dumps({"prediction": value}) if args.json else f"{args.video}: {value:.4f} (mean of {views} views)")
        return 0
    names = read_labels(args.labels, num_classes) if args.labels else None
    if args.json:
        print(json.dumps([{"class": c, "name": names[c] if names else None, "probability": p} for c, p in top]))
        return 0
    print(f"{args.video}: top-{len(top)} over {args.num_segments * args.num_crops} views")
    for rank, (cls, prob) in enumerate(top, 1):
        print(f"{rank:>2}. {names[cls] if names else cls:<30} {100 * prob:6.2f}%")
    return 0


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
