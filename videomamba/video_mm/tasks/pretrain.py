"""Video-text pretraining: ``python -m videomamba.video_mm.tasks.pretrain CONFIG [key value ...]``.

The masked stage (CLIP teacher, attention-guided masks, UTA + VTC + VTM + MLM) and the unmasked
stage (no teacher, no mask) are this script with different configs (``exp_pt/*``). Image and video
corpora are interleaved; every pair is its own positive. After each epoch the model is evaluated on
``test_types`` (zero-shot retrieval) and checkpointed. Runs the same on one CPU process, under
torchrun and under srun.
"""

from typing import Any

from videomamba.video_mm.tasks.engine import caption_task

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run pretraining (or, with ``evaluate True``, only its evaluation); returns the last results."""
    return caption_task(argv, "pretrain.py", is_pretrain=True)


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
