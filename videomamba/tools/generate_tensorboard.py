"""Rebuild TensorBoard event files from the ``log.txt`` of any run (any task; the lifecycle's log).

Usage:
    python -m videomamba.tools.generate_tensorboard [PATH ...] [--out DIR]

Each PATH is a log.txt or a folder searched recursively for log.txt files; without PATH every
task's experiment folders (``videomamba/*/exp*/``) are searched, as the original did for image_sm's. The
events of ``<run>/log.txt`` go to ``<run>/events/`` (old event files there are replaced), or
under ``--out`` in a sub-folder named after the run. Every numeric field of the JSON lines
becomes a scalar against its epoch, with the tag names the live TensorBoard writer uses
(train_loss, train_lr, test_acc1, ..., train_loss_distill for distillation runs).
"""

import argparse
from pathlib import Path

from videomamba.core.cli import MissingFileError
from videomamba.core.logs import read_log, write_log_to_tensorboard

__all__ = ["find_logs", "rebuild"]


def find_logs(paths: list[Path]) -> list[Path]:
    """log.txt files named directly or found under the given folders, in sorted order."""
    logs: list[Path] = []
    for path in paths:
        if path.is_file():
            logs.append(path)
        elif path.is_dir():
            logs.extend(sorted(p for p in path.rglob("log.txt") if "events" not in p.parts))
        else:
            raise MissingFileError(f"{path}: no such log file or folder")
    return logs


def rebuild(log_path: Path, out_dir: Path) -> int:
    """Replace the event files in out_dir by ones rebuilt from log_path; returns the scalar count."""
    records = read_log(log_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("events.out.tfevents.*"):
        old.unlink()
    return write_log_to_tensorboard(records, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild TensorBoard events from log.txt files")
    parser.add_argument("paths", nargs="*", type=Path, help="log.txt files or folders (default: videomamba/*/exp*/)")
    parser.add_argument("--out", type=Path, default=None, help="write events under this folder instead")
    args = parser.parse_args(argv)
    package = Path(__file__).resolve().parents[1]
    paths = args.paths or sorted(p for p in package.glob("*/exp*") if p.is_dir())
    logs = find_logs(paths)
    if not logs:
        print("no log.txt found in " + ", ".join(str(p) for p in paths))
        return 1
    for log_path in logs:
        run_dir = log_path.parent
        out_dir = args.out / run_dir.name if args.out else run_dir / "events"
        count = rebuild(log_path, out_dir)
        print(f"{log_path}: {count} scalars -> {out_dir}")
    return 0


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
