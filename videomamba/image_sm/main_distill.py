"""Self-distillation entry point: ``main.py`` with the teacher required.

Kept under the original name so its experiment scripts read the same. The student
(``--model videomamba_middle``, or its ``_distill`` name) learns from a frozen teacher
(``--teacher_model``, ``--teacher_embed_dim``, ``--teacher_pretrained_path``); everything else is
main.py's code path and flags.
"""

import argparse

from videomamba.image_sm.main import cli, get_args_parser


def get_distill_args_parser(add_help: bool = False) -> argparse.ArgumentParser:
    """main.py's flags; main_distill.py only makes the teacher checkpoint mandatory."""
    return argparse.ArgumentParser("VideoMamba self-distillation", parents=[get_args_parser()], add_help=add_help)


def distill_cli(argv: list[str] | None = None) -> int:
    parser = get_distill_args_parser(add_help=True)
    args = parser.parse_args(argv)
    if not args.teacher_pretrained_path:
        parser.error("self-distillation needs --teacher_pretrained_path (the frozen teacher's checkpoint)")
    return cli(argv, parser=parser)


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(distill_cli))
