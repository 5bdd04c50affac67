"""Dry-check experiment scripts without running them.

    python tools/check_exp_scripts.py                  # every videomamba/*/exp*/**/*.sh
    python tools/check_exp_scripts.py SCRIPT_OR_DIR ...

Each script runs with DRY_RUN=1, so the shared launcher prints the exact command it would start
(environment defaults included) instead of starting it. The command is then checked:
- its flags parse with the runner's own argument parser (image_sm, video_sm), or its config loads
  with every override applied and every interpolation resolved (video_mm);
- every model it names is in the timm registry;
- every released checkpoint it loads matches the model size (``videomamba_t16_*`` is for tiny),
  and, when fine-tuning video, ``--orig_t_size`` matches the checkpoint's frame count (``_f32_``).
The original's scripts ran the wrong size, dataset or checkpoint in several places; this catches those.
Exit status 1 if any script has a problem.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from videomamba.core.backbone import VIDEOMAMBA_SIZES, model_size

REPO = Path(__file__).resolve().parent.parent


def find_scripts(paths: list[str | Path] | None = None) -> list[Path]:
    """The .sh files under `paths` (default: every task's exp* folders)."""
    roots = [Path(p) for p in paths] if paths else sorted((REPO / "videomamba").glob("*/exp*"))
    scripts: list[Path] = []
    for root in roots:
        scripts += [root] if root.is_file() else sorted(root.rglob("*.sh"))
    return scripts


def launched_command(script: Path) -> list[str]:
    """The command `script` would launch, as printed by the launcher under DRY_RUN=1."""
    env = {**os.environ, "DRY_RUN": "1", "VIDEOMAMBA_ROOT": str(REPO)}
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS"):  # check the plain-bash form even inside a job
        env.pop(name, None)
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    lines = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{script}: DRY_RUN=1 bash failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return shlex.split(lines[-1])


def _checkpoint_size(path: str) -> str | None:
    """The size a checkpoint file name says: ``videomamba_t16_*`` (the size's file tag) or ``videomamba_tiny_*``."""
    name = Path(path or "").name
    for size, arch in VIDEOMAMBA_SIZES.items():
        if name.startswith(f"videomamba_{arch['file_tag']}_"):
            return size
    return model_size(Path(name).stem)


def _checkpoint_frames(path: str) -> int | None:
    match = re.search(r"_f(\d+)_", Path(path or "").name)
    return int(match.group(1)) if match else None


def _size_problems(model: str, checkpoints: dict[str, str]) -> list[str]:
    problems = []
    size = model_size(model or "")
    for flag, path in checkpoints.items():
        ckpt_size = _checkpoint_size(path)
        if size and ckpt_size and size != ckpt_size:
            problems.append(f"{flag} {Path(path).name} is a {ckpt_size} checkpoint but the model is {model}")
    return problems


def _registered(name: str) -> bool:
    import timm

    # Imported for their model registrations: the backbones, the masked-pretraining students and the
    # distillation variants.
    import videomamba
    import videomamba.core.pretrain
    import videomamba.image_sm.models  # noqa: F401

    return timm.is_model(name)


def _parse(parser, argv: list[str]):
    """parse_args, turning argparse's exit into an error message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv), None
    except SystemExit:
        return None, err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "argparse error"


def _check_image_sm(argv: list[str]) -> list[str]:
    from videomamba.image_sm.main import get_args_parser

    args, error = _parse(get_args_parser(), argv)
    if error:
        return [error]
    problems = [] if _registered(args.model) else [f"--model {args.model} is not a registered model"]
    problems += _size_problems(args.model, {"--finetune": args.finetune, "--resume": args.resume})
    if args.teacher_pretrained_path:
        if not _registered(args.teacher_model):
            problems.append(f"--teacher_model {args.teacher_model} is not a registered model")
        problems += _size_problems(args.teacher_model, {"--teacher_pretrained_path": args.teacher_pretrained_path})
    return problems


def _check_video_sm(entry: str, argv: list[str]) -> list[str]:
    if entry == "videomamba.video_sm.run_videomamba_pretraining":
        from videomamba.video_sm.run_videomamba_pretraining import get_args_parser
    else:
        from videomamba.video_sm.run_class_finetuning import get_args_parser
    args, error = _parse(get_args_parser(), argv)
    if error:
        return [error]
    problems = [] if _registered(args.model) else [f"--model {args.model} is not a registered model"]
    finetune = getattr(args, "finetune", "") or ""
    problems += _size_problems(args.model, {"--finetune": finetune})
    frames, orig = _checkpoint_frames(finetune), getattr(args, "orig_t_size", None)
    if frames and orig and frames != orig:
        problems.append(f"--orig_t_size {orig} but --finetune {Path(finetune).name} was trained on {frames} frames")
    return problems


def _check_video_mm(argv: list[str]) -> list[str]:
    from omegaconf import OmegaConf

    from videomamba.video_mm.config import load_config

    if not argv:
        return ["no config file given"]
    try:
        config = load_config(argv[0], argv[1:])
        resolved = OmegaConf.to_container(config, resolve=True)
    except Exception as err:  # any config error is a problem to report, not a crash of the checker
        return [f"config does not load: {type(err).__name__}: {err}"]
    encoder = resolved.get("model", {}).get("vision_encoder", {})
    name = encoder.get("name", "")
    problems = [] if _registered(name) else [f"model.vision_encoder.name {name} is not a registered model"]
    problems += _size_problems(name, {"vision_encoder.pretrained": str(encoder.get("pretrained") or "")})
    return problems


def check_script(script: Path) -> list[str]:
    """Problems found in one experiment script (empty if it is fine)."""
    try:
        command = launched_command(script)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as err:
        return [str(err)]
    # The launcher starts entry points as modules: `... -m videomamba.<task>.<runner> ARGS`.
    entry_index = next(
        (i + 1 for i, part in enumerate(command[:-1]) if part == "-m" and command[i + 1].startswith("videomamba.")),
        None,
    )
    if entry_index is None:
        return [f"no `-m videomamba.<task>.<runner>` entry point in the launched command: {' '.join(command)}"]
    entry, argv = command[entry_index], command[entry_index + 1 :]
    if importlib.util.find_spec(entry) is None:
        return [f"entry point {entry} does not exist"]
    task = entry.split(".")[1]
    if task == "image_sm":
        return _check_image_sm(argv)
    if task == "video_sm":
        return _check_video_sm(entry, argv)
    if task == "video_mm":
        return _check_video_mm(argv)
    return [f"no checker for the entry script {entry}"]


def main(argv: list[str] | None = None) -> int:
    from videomamba.core.cli import Progress

    scripts = find_scripts((argv if argv is not None else sys.argv[1:]) or None)
    failed = 0
    meter = Progress(len(scripts), "checking experiment scripts", unit="scripts", every=5.0)
    for script in scripts:
        problems = check_script(script)
        meter.update()
        if problems:
            failed += 1
            print(f"FAIL {script.relative_to(REPO) if script.is_relative_to(REPO) else script}")
            for problem in problems:
                print(f"     {problem}")
    print(f"{len(scripts) - failed}/{len(scripts)} experiment scripts OK")
    return 1 if failed else 0


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
