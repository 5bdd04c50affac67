"""Random SIGKILL campaign against a real runner: kill, restart with the same command, repeat, then
check every invariant of the training lifecycle against an uninterrupted run.

Each trial trains a tiny image_sm model (synthetic images, CPU) for a few epochs in a fresh folder.
Every attempt is killed either at a random moment (imports, a step, evaluation, a write: anything)
or, to hit the dangerous instants on purpose, right before a random file operation of a save
(``VIDEOMAMBA_KILL_AT_FILE_OP``); the last attempt runs to the end. Checked afterwards: log.txt
holds every epoch once and in order, every checkpoint loads with weights_only=True, no temp file is
left, checkpoint-best.pth holds the best epoch of log.txt, the periodic files exist, and the final
weights are bitwise those of the uninterrupted run.

    python tools/kill_campaign.py --trials 10 --work /tmp/kill_campaign
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
FLAGS = ["--model", "videomamba_tiny", "--model-kwargs", '{"depth": 2, "embed_dim": 32}', "--input-size", "32",
         "--batch-size", "4", "--device", "cpu", "--no_amp", "--num_workers", "0", "--warmup-epochs", "0",
         "--print_freq", "100", "--epochs", str(EPOCHS), "--save_freq", "2"]  # fmt: skip


def make_images(root: Path) -> None:
    for split, count in (("train", 8), ("val", 2)):
        for label in range(3):
            for i in range(count):
                path = root / split / f"class{label}" / f"img{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                rng = np.random.default_rng(40 + 80 * label + i)
                Image.fromarray(np.clip(rng.normal(40 + 80 * label, 20, (40, 40, 3)), 0, 255).astype(np.uint8)).save(
                    path
                )


def command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "videomamba.image_sm.main", *FLAGS, "--data-path", str(data),
            "--output_dir", str(out)]  # fmt: skip


def run(cmd: list[str], kill_after: float | None = None, kill_at_op: int | None = None) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if kill_at_op is not None:
        env["VIDEOMAMBA_KILL_AT_FILE_OP"] = str(kill_at_op)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return -9
    if proc.returncode not in (0, -9):
        print(err[-2000:])
    return proc.returncode


def check(out: Path, reference: Path) -> list[str]:
    """The invariants that fail, as sentences (empty: all hold)."""
    from videomamba.core.logs import read_log

    problems = []
    records = read_log(out / "log.txt")
    if [r.get("epoch") for r in records] != list(range(EPOCHS)):
        problems.append(f"log epochs {[r.get('epoch') for r in records]}")
    if records != read_log(reference / "log.txt"):
        problems.append("log records differ from the uninterrupted run")
    if list(out.glob(".*tmp*")):
        problems.append(f"temp files {[p.name for p in out.glob('.*tmp*')]}")
    loaded = {}
    for path in sorted(out.glob("checkpoint*.pth")):
        try:
            loaded[path.name] = torch.load(path, weights_only=True)
        except Exception as err:
            problems.append(f"{path.name} unloadable: {err}")
    accuracies = [r["test_acc1"] for r in records]
    best_epoch = accuracies.index(max(accuracies)) if accuracies else None
    if loaded.get("checkpoint-best.pth", {}).get("epoch") != best_epoch:
        problems.append(f"best holds epoch {loaded.get('checkpoint-best.pth', {}).get('epoch')}, log says {best_epoch}")
    for epoch in (1, EPOCHS - 1):
        if f"checkpoint-{epoch}.pth" not in loaded:
            problems.append(f"checkpoint-{epoch}.pth missing")
    whole = torch.load(reference / "checkpoint-latest.pth", weights_only=True)
    latest = loaded.get("checkpoint-latest.pth", {})
    for part in ("model", "model_ema"):
        if not all(torch.equal(latest.get(part, {}).get(k, torch.empty(0)), v) for k, v in whole[part].items()):
            problems.append(f"{part} differs from the uninterrupted run")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--kills_per_trial", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kill_campaign"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    data = args.work / "images"
    make_images(data)
    reference = args.work / "reference"
    started = time.time()
    assert run(command(data, reference)) == 0
    duration = time.time() - started
    operations = 4 + 5 * EPOCHS  # an upper bound on a run's file operations (config, latest, copies, log)
    print(f"uninterrupted run: {duration:.1f} s")
    kills = restarts = failed_trials = 0
    for trial in range(args.trials):
        out = args.work / f"trial{trial}"
        attempts = []
        for _ in range(args.kills_per_trial):
            if rng.random() < 0.5:
                code = run(command(data, out), kill_after=rng.uniform(0.0, duration))
                attempts.append(f"time:{code}")
            else:
                code = run(command(data, out), kill_at_op=rng.randint(1, operations))
                attempts.append(f"op:{code}")
            kills += code == -9
            restarts += 1
        code = run(command(data, out))
        restarts += 1
        problems = check(out, reference) if code == 0 else [f"final attempt exited {code}"]
        failed_trials += bool(problems)
        print(f"trial {trial}: attempts {attempts} -> {'OK' if not problems else problems}", flush=True)
    print(f"{args.trials} trials, {kills} kills, {restarts} restarts, {failed_trials} trials with a broken invariant")
    return 1 if failed_trials else 0


if __name__ == "__main__":
    sys.exit(main())
