"""Do the small-data recipes learn a new user's own data? One run per task, on the CPU.

For each task this makes a small dataset of its own (not the demo's), runs the task's documented
recipe exactly as the README's "Train on your own data" section says (the exp script with
environment variables, plus `--device cpu`-style flags), and reports the held-out score against
chance, with the wall time:

- video_sm: a square moving left / right / up / down over noise, written as real video files in
  mixed containers and codecs (mp4/mpeg4, avi/mjpeg, mkv/h264, webm/vp8) and odd frame sizes; the
  classes depend on the direction of motion, so the recipe runs with flipping off (HFLIP=0);
- image_sm: an ImageFolder of four shapes (disc, square, triangle, cross) saved as PNG, JPEG,
  grayscale and RGBA images of odd sizes;
- video_mm: a video-text JSON whose captions say the colour and direction of a moving square.

    python benchmarks/own_data.py                      # all three, into /tmp/own_data
    python benchmarks/own_data.py --tasks video_sm --epochs 20 --out /tmp/own_data

Prints one markdown row per task (score, chance, seconds) and writes `results.json` in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
# (suffix, codec, encoder options): every file decodes through the same readers.
CONTAINERS = [
    (".mp4", "mpeg4", {"qscale": "3"}),
    (".avi", "mjpeg", {"pix_fmt": "yuvj420p"}),
    (".mkv", "libx264", {}),
    (".webm", "libvpx", {}),
]
FRAME_SIZES = [(48, 64), (64, 48), (56, 72), (60, 60)]  # (height, width); the recipes resize


def moving_square(
    rng: np.random.Generator, direction: str, height: int, width: int, frames: int, colour: tuple | None = None
) -> np.ndarray:
    """uint8 (frames, height, width, 3): a square of random colour and size crossing the frame over noise."""
    dy, dx = DIRECTIONS[direction]
    side = int(min(height, width) * rng.uniform(0.25, 0.35))
    travel = 0.5 * min(height, width)
    start_y = rng.uniform(0, height - side - (travel if dy > 0 else 0)) + (travel if dy < 0 else 0)
    start_x = rng.uniform(0, width - side - (travel if dx > 0 else 0)) + (travel if dx < 0 else 0)
    colour = rng.integers(120, 256, size=3) if colour is None else colour
    video = rng.integers(0, 60, size=(frames, height, width, 3)).astype(np.uint8)
    for t in range(frames):
        y = int(start_y + dy * travel * t / (frames - 1))
        x = int(start_x + dx * travel * t / (frames - 1))
        video[t, y : y + side, x : x + side] = colour
    return video


def make_videos(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """root/videos/* in mixed containers and root/{train,val,test}.csv (`path,label`)."""
    from videomamba.core.video_decode import write_video

    (root / "videos").mkdir(parents=True, exist_ok=True)
    names = list(DIRECTIONS)
    for split_index, (split, count) in enumerate(per_class.items()):
        rng = np.random.default_rng([seed, split_index])
        lines = []
        for i in range(count * len(names)):
            label = i % len(names)
            suffix, codec, options = CONTAINERS[i // len(names) % len(CONTAINERS)]
            height, width = FRAME_SIZES[i % len(FRAME_SIZES)]
            frames = moving_square(rng, names[label], height, width, int(rng.integers(16, 25)))
            name = f"videos/{split}_{i:04d}{suffix}"
            write_video(root / name, frames, fps=8, codec=codec, **options)
            lines.append(f"{name},{label}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "labels.txt").write_text("\n".join(names) + "\n")
    return root


def draw_shape(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """uint8 (size, size, 3): one shape of random colour, size and position on a noisy background."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    radius = size * rng.uniform(0.18, 0.3)
    cy, cx = rng.uniform(radius + 1, size - radius - 1, size=2)
    y, x = (rows - cy) / radius, (cols - cx) / radius
    inside = {
        "disc": y**2 + x**2 <= 1,
        "square": (np.abs(y) <= 0.85) & (np.abs(x) <= 0.85),
        "triangle": (y <= 0.8) & (y >= -1 + 2 * np.abs(x)),
        "cross": ((np.abs(y) <= 0.3) | (np.abs(x) <= 0.3)) & (np.abs(y) <= 1) & (np.abs(x) <= 1),
    }[shape]
    image = rng.integers(0, 80, size=(size, size, 3)).astype(np.uint8)
    image[inside] = rng.integers(140, 256, size=3)
    return image


def make_images(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """root/{train,val}/<shape>/* as PNG, JPEG, grayscale PNG and RGBA PNG images of odd sizes."""
    from PIL import Image

    shapes = ["cross", "disc", "square", "triangle"]
    for split_index, (split, count) in enumerate(per_class.items()):
        rng = np.random.default_rng([seed, 10 + split_index])
        for shape in shapes:
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = Image.fromarray(draw_shape(rng, shape, int(rng.integers(40, 90))))
                kind = i % 4
                if kind == 0:
                    image.save(folder / f"{i:04d}.png")
                elif kind == 1:
                    image.save(folder / f"{i:04d}.jpg", quality=90)
                elif kind == 2:
                    image.convert("L").save(folder / f"{i:04d}.png")
                else:
                    image.convert("RGBA").save(folder / f"{i:04d}.png")
    return root


def make_video_text(root: Path, train_per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """root/videos/*.mp4, root/train.json (video, caption) and root/test.json (retrieval), a tiny BERT."""
    from videomamba.core.video_decode import write_video

    colours = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 240), "yellow": (230, 220, 40)}
    classes = [(c, d) for c in colours for d in ("left", "right")]
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {"train": [], "test": []}
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for i in range(count * len(classes)):
            colour, direction = classes[i % len(classes)]
            frames = moving_square(rng, direction, 48, 48, 16, colour=colours[colour])
            name = f"{split}_{i:04d}.mp4"
            write_video(root / "videos" / name, frames, fps=8, qscale="3")
            caption = f"a {colour} square moves to the {direction}"
            splits[split].append({"video": name, "caption": caption if split == "train" else [caption]})
    for split, entries in splits.items():
        (root / f"{split}.json").write_text(json.dumps(entries, indent=1))
    # A tokenizer of its own: the special tokens, then the caption words (the recipe's small BERT
    # config has room for any vocabulary up to BERT's 30522 entries).
    words = sorted({w for e in splits["train"] for w in e["caption"].split()})
    (root / "bert").mkdir(exist_ok=True)
    (root / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return root


def run(command: list[str], env: dict[str, str], log: Path) -> float:
    started = time.time()
    with log.open("w") as out:
        code = subprocess.call(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    if code:
        raise SystemExit(f"{' '.join(command)} failed ({code}); see {log}")
    return time.time() - started


def last_record(log_txt: Path, key: str) -> float:
    from videomamba.core.logs import read_log

    return [r[key] for r in read_log(log_txt) if key in r][-1]


def bench_video_sm(out: Path, epochs: int) -> dict:
    data = make_videos(out / "video_sm_data", {"train": 40, "val": 10, "test": 20})
    env = dict(DATA_PATH=str(data), NB_CLASSES="4", HFLIP="0", EPOCHS=str(epochs), OUTPUT_DIR=str(out / "video_sm_run"))
    script = "videomamba/video_sm/exp/custom/run_small.sh"
    seconds = run(["bash", script, "--device", "cpu", "--no_amp", "--num_workers", "1"], env, out / "video_sm.log")
    top1 = last_record(out / "video_sm_run" / "log.txt", "final_top1")
    return dict(task="video_sm", score=top1, metric="test top-1 (%)", chance=25.0, seconds=round(seconds))


def bench_image_sm(out: Path, epochs: int) -> dict:
    data = make_images(out / "image_sm_data", {"train": 60, "val": 25})
    env = dict(DATA_PATH=str(data), NB_CLASSES="4", EPOCHS=str(epochs), OUTPUT_DIR=str(out / "image_sm_run"))
    script = "videomamba/image_sm/exp/custom/run_small.sh"
    seconds = run(["bash", script, "--device", "cpu", "--no_amp", "--num_workers", "1"], env, out / "image_sm.log")
    acc = max(last_record(out / "image_sm_run" / "log.txt", "test_acc1"), 0)
    return dict(task="image_sm", score=acc, metric="val top-1 (%)", chance=25.0, seconds=round(seconds))


def bench_video_mm(out: Path, epochs: int) -> dict:
    data = make_video_text(out / "video_mm_data", train_per_class=8, test_per_class=1)
    env = dict(
        TRAIN_JSON=str(data / "train.json"),
        TEST_JSON=str(data / "test.json"),
        MEDIA_ROOT=str(data / "videos"),
        TOKENIZER=str(data / "bert"),
        OUTPUT_DIR=str(out / "video_mm_run"),
    )
    script = "videomamba/video_mm/exp_pt/custom/run.sh"
    overrides = ["device", "cpu", "scheduler.epochs", str(epochs)]
    seconds = run(["bash", script, *overrides], env, out / "video_mm.log")
    result = json.loads((out / "video_mm_run" / "eval_res_latest.json").read_text())
    # Text-to-video R@1 (img_r1) of the dual encoder (test_emb/) and after ITM re-ranking (test/).
    dual, reranked = result["test_emb/"]["img_r1"], result["test/"]["img_r1"]
    metric = f"text-to-video R@1 (%), dual encoder (re-ranked: {reranked:.1f})"
    return dict(task="video_mm", score=dual, metric=metric, chance=100 / 8, seconds=round(seconds))


BENCHES = {"video_sm": bench_video_sm, "image_sm": bench_image_sm, "video_mm": bench_video_mm}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--epochs", type=int, default=None, help="default: each recipe's own")
    parser.add_argument("--out", default="/tmp/own_data")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = []
    for task in args.tasks:
        for folder in out.glob(f"{task}_*"):
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
        out.mkdir(parents=True, exist_ok=True)
        epochs = args.epochs or {"video_sm": 30, "image_sm": 30, "video_mm": 10}[task]
        results.append({**BENCHES[task](out, epochs), "epochs": epochs})
        print(json.dumps(results[-1]), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch threads {os.environ.get('OMP_NUM_THREADS', '1')}"
    (out / "results.json").write_text(json.dumps(dict(machine=machine, results=results), indent=2) + "\n")
    print(f"\n| task | score | chance | epochs | seconds |\n|---|---|---|---|---|  ({machine})")
    for r in results:
        print(f"| {r['task']} | {r['metric']} {r['score']:.1f} | {r['chance']:.1f} | {r['epochs']} | {r['seconds']} |")
    return results


if __name__ == "__main__":
    main()
