"""``make demo``: train a small VideoMamba on CPU on synthetic videos whose class only the frame order reveals.

Each video shows two shapes over fresh background noise: a square that slides horizontally and a
disc that slides vertically, each at a constant speed, wrapping around the frame edges (the frame
is a torus) from a random start. The class is the pair of directions: ``left_up``, ``left_down``,
``right_up``, ``right_down`` (the square's direction, then the disc's).

Why frame order is the only cue: a shape's positions over a video moving one way are those of a
video moving the other way played backwards, and with a uniformly random start on the torus both
are equally likely (`mover_positions`). Colours, sizes and noise are drawn independently of the
class, so the multiset of frames is independent of the class, and a model shown shuffled frames is
at chance (25 %). Moving along an edge without wrapping would not do: where a shape starts and ends
would give the direction away in the unordered frames.

The model reads real spatial patches: 8 px patches of the 32 px frames (16 per frame) over
tubelets of 2 frames, with mean pooling of the patch tokens (``global_pool="avg"``). A tubelet
token sees a patch in two consecutive frames, so the motion is in the token from the first step;
mean pooling gives every token a path to the classifier (a randomly initialised VideoMamba's cls
token reads little more than the first patches, see ``videomamba/core/backbone.py``).

The demo writes the videos as real files (PyAV, mpeg4) with Kinetics-style lists, trains with
``run_class_finetuning.py`` (no augmentation that would change the meaning of a direction: no
flips, crops or RandAugment), runs the multi-view test, tests the same model on the same views with
their frames shuffled, writes TensorBoard logs and a training-curve PNG, and prints as its last
line the path of a JSON summary with ``top1``, ``shuffled_top1``, ``chance`` (percent) and ``seconds``.
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "CLASS_MOVES",
    "ShuffledFrames",
    "main",
    "mover_positions",
    "render_video",
    "write_dataset",
]

# Class -> (the square's horizontal direction, the disc's vertical direction): +1 right / down.
CLASS_MOVES: dict[str, tuple[int, int]] = {
    "left_up": (-1, -1),
    "left_down": (-1, 1),
    "right_up": (1, -1),
    "right_down": (1, 1),
}
CLASS_NAMES = tuple(CLASS_MOVES)


def mover_positions(start: float, direction: int, speed: float, num_frames: int, size: int) -> np.ndarray:
    """Positions along one axis of a shape sliding at `speed` pixels per frame, wrapping at `size`."""
    return (start + direction * speed * np.arange(num_frames)) % size


def render_video(
    rng: np.random.Generator, class_name: str, size: int = 32, num_frames: int = 24, speed: float = 1.0
) -> np.ndarray:
    """One synthetic video (num_frames, size, size, 3) uint8 of `class_name`."""
    horizontal, vertical = CLASS_MOVES[class_name]
    side = size * rng.uniform(0.2, 0.28)
    square_row, square_start, disc_col, disc_start = rng.uniform(0, size, size=4)
    square_colour, disc_colour = rng.integers(96, 256, size=(2, 3))
    frames = rng.integers(0, 48, size=(num_frames, size, size, 3)).astype(np.uint8)
    square_cols = mover_positions(square_start, horizontal, speed, num_frames, size)
    disc_rows = mover_positions(disc_start, vertical, speed, num_frames, size)
    rows, cols = np.mgrid[0:size, 0:size] + 0.5

    def offset(coords: np.ndarray, centre: float) -> np.ndarray:  # signed distance on the torus
        return (coords - centre + size / 2) % size - size / 2

    for frame, square_col, disc_row in zip(frames, square_cols, disc_rows, strict=True):
        in_square = (np.abs(offset(cols, square_col)) <= side / 2) & (np.abs(offset(rows, square_row)) <= side / 2)
        frame[in_square] = square_colour
        in_disc = offset(cols, disc_col) ** 2 + offset(rows, disc_row) ** 2 <= (side / 2) ** 2
        frame[in_disc] = disc_colour
    return frames


def write_dataset(
    root: str | os.PathLike,
    videos_per_class: dict[str, int],
    size: int = 32,
    num_frames: int = 24,
    seed: int = 0,
) -> Path:
    """Write ``videos/<split>_<i>.mp4`` and Kinetics-style ``<split>.csv`` lists (``path,label``) plus labels.txt.

    `videos_per_class` maps split names (train, val, test) to videos per class. Returns the list folder.
    """
    from videomamba.core.video_decode import write_video

    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    for split_index, (split, per_class) in enumerate(videos_per_class.items()):
        rng = np.random.default_rng([seed, split_index])
        lines = []
        for i in range(per_class * len(CLASS_NAMES)):
            label = i % len(CLASS_NAMES)
            name = f"videos/{split}_{i:04d}.mp4"
            write_video(root / name, render_video(rng, CLASS_NAMES[label], size, num_frames), fps=8, qscale="3")
            lines.append(f"{name},{label}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


class ShuffledFrames(Dataset):
    """A test dataset whose clips have their frames in a random (per item, seeded) order."""

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        clip, label, video_index, view = self.dataset[index]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return clip[:, torch.randperm(clip.shape[1], generator=generator)], label, video_index, view


def plot_curves(log_path: Path, png_path: Path) -> Path:
    """Training loss and validation top-1 per epoch, from log.txt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from videomamba.core.logs import read_log

    records = [r for r in read_log(log_path) if "train_loss" in r]
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [r["train_loss"] for r in records], marker="o", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in records], marker="o", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["val_acc1"] for r in records], marker="o", color="tab:green")
    ax_acc.axhline(100 / len(CLASS_NAMES), color="gray", linestyle="--", label="chance")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="validation top-1", ylim=(0, 102))
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def training_flags(data_path: Path, output_dir: Path, epochs: int, num_workers: int) -> list[str]:
    """The run_class_finetuning.py command line of the demo."""
    model_kwargs = json.dumps({"depth": 2, "embed_dim": 64, "patch_size": 8, "global_pool": "avg"})
    return [
        "--model", "videomamba_tiny", "--model_kwargs", model_kwargs, "--tubelet_size", "2",
        "--data_path", str(data_path), "--prefix", str(data_path), "--data_set", "Kinetics_sparse",
        "--split", ",", "--nb_classes", str(len(CLASS_NAMES)), "--video_reader", "pyav",
        "--num_frames", "8", "--input_size", "32", "--short_side_size", "32",
        "--test_num_segment", "3", "--test_num_crop", "1",
        "--batch_size", "16", "--num_sample", "1", "--epochs", str(epochs), "--warmup_epochs", "1",
        "--lr", "1.5e-3", "--min_lr", "1e-5", "--warmup_lr", "1e-5", "--unscale_lr",
        "--weight_decay", "0.05", "--layer_decay", "1.0",
        "--drop_path", "0.0", "--opt_betas", "0.9", "0.999", "--clip_grad", "1.0",
        "--aa", "", "--reprob", "0", "--mixup", "0", "--cutmix", "0", "--smoothing", "0.1",
        "--hflip", "0", "--train_crop_scale", "1.0", "1.0",
        "--device", "cpu", "--no_amp", "--num_workers", str(num_workers), "--print_freq", "20",
        "--save_ckpt_freq", "0", "--test_best", "--output_dir", str(output_dir),
    ]  # fmt: skip


def shuffled_test(args: argparse.Namespace, checkpoint: Path, seed: int) -> dict[str, float]:
    """Multi-view top-1 of the checkpoint on the test views with their frames shuffled."""
    from videomamba.core.checkpoint import restore_training_state
    from videomamba.video_sm.datasets import build_dataset
    from videomamba.video_sm.engines.finetune import collect_view_outputs
    from videomamba.video_sm.engines.multiview import merge_views
    from videomamba.video_sm.run_class_finetuning import build_model

    dataset, nb_classes = build_dataset(is_train=False, test_mode=True, args=args)
    model, _ = build_model(args, nb_classes)
    restore_training_state(checkpoint, model)
    loader = DataLoader(ShuffledFrames(dataset, seed), batch_size=args.batch_size, num_workers=args.num_workers)
    records = collect_view_outputs(loader, model, torch.device("cpu"), print_freq=args.print_freq, header="Shuffled:")
    metrics, _ = merge_views(records)
    return metrics


def main(argv: list[str] | None = None) -> Path:
    """Run the demo; returns (and prints last) the path of summary.json."""
    parser = argparse.ArgumentParser(description="VideoMamba video demo: learn directions of motion on synthetic data")
    parser.add_argument("--output_dir", default="demo_output/video_sm", help="everything is written here")
    parser.add_argument("--train_per_class", default=80, type=int)
    parser.add_argument("--val_per_class", default=15, type=int)
    parser.add_argument("--test_per_class", default=25, type=int)
    parser.add_argument("--epochs", default=20, type=int)
    parser.add_argument("--num_workers", default=1, type=int)
    parser.add_argument("--seed", default=0, type=int)
    options = parser.parse_args(argv)

    from videomamba.video_sm import run_class_finetuning

    started = time.time()
    # Two threads at most (the model is tiny); OMP_NUM_THREADS=1 helps on a busy machine.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))
    output_dir = Path(options.output_dir)
    data_path, run_dir = output_dir / "data", output_dir / "run"
    # Every demo starts from scratch, so its time and numbers are those of a full run.
    for folder in (data_path, run_dir):
        if folder.is_dir():
            shutil.rmtree(folder)
    counts = {"train": options.train_per_class, "val": options.val_per_class, "test": options.test_per_class}
    write_dataset(data_path, counts, seed=options.seed)
    print(f"Wrote {sum(counts.values()) * len(CLASS_NAMES)} synthetic videos to {data_path}")
    generated = time.time() - started

    flags = training_flags(data_path, run_dir, options.epochs, options.num_workers) + ["--seed", str(options.seed)]
    parser = argparse.ArgumentParser(parents=[run_class_finetuning.get_args_parser()])
    args = parser.parse_args(flags)
    result = run_class_finetuning.main(args)
    shuffled = shuffled_test(args, run_dir / run_class_finetuning.BEST, options.seed)
    png = plot_curves(run_dir / "log.txt", output_dir / "training_curves.png")

    summary: dict[str, Any] = {
        "top1": result["final_top1"],
        "shuffled_top1": shuffled["top1"],
        "chance": 100.0 / len(CLASS_NAMES),
        "seconds": round(time.time() - started, 1),
        "data_seconds": round(generated, 1),
        "test_videos": result["final_num_videos"],
        "test_views": result["final_num_views"],
        "predictions": str(run_dir / "predictions.jsonl"),
        "tensorboard": str(run_dir),
        "curves": str(png),
    }
    path = output_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"test top-1 {summary['top1']:.1f}% | frames shuffled {summary['shuffled_top1']:.1f}% | "
        f"chance {summary['chance']:.1f}% | {summary['seconds']:.0f} s"
    )
    print(path)
    return path


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
