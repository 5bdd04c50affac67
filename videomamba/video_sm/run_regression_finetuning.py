"""Scalar regression fine-tuning (LVU like/view): ``run_class_finetuning.py --regression``.

Kept as its own entry point because the original's scripts call it. It is the same runner with
``--regression`` on and mixup, cutmix and label smoothing off by default: the model's single output
is trained with MSE against float labels, the best checkpoint is the lowest validation loss
(``checkpoint-best.pth``, which ``--test_best`` then loads), and the multi-view test averages the
predictions of every view and window per video and reports the mean squared error.
"""

from videomamba.video_sm.run_class_finetuning import cli

if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(lambda: cli(regression=True)))
