"""Video-text retrieval: fine-tuning and (zero-shot) evaluation.

``python -m videomamba.video_mm.tasks.retrieval CONFIG [key value ...]``. With ``evaluate True`` the
model loaded from ``pretrained_path`` is only evaluated (zero-shot with a pretrained checkpoint):
dual-encoder ranking, ITM re-ranking of the top ``evaluation.k_test`` candidates, R@1/5/10 both ways
(T2V = ``img_r*``, V2T = ``txt_r*``), written to ``eval_res_latest.json``. Otherwise the model is
fine-tuned with VTC + VTM on ``train_file`` (captions of one video share positives) and evaluated
after every epoch; ``stop_key`` picks the best epoch.
"""

from typing import Any

from videomamba.video_mm.tasks.engine import caption_task

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Fine-tune and/or evaluate; returns the last evaluation results."""
    return caption_task(argv, "retrieval.py", is_pretrain=False)


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
