"""Multiple-choice video-text evaluation (MSRVTT-MC): ``python -m videomamba.video_mm.tasks.retrieval_mc CONFIG ...``.

Each question has a video and N candidate captions; the score of a caption is
0.7 · softmax(ITM logits)[match] + 0.3 · softmax over the N candidates of (frame-mean similarity / temp),
the answer is the best-scoring caption, and the metric is accuracy in percent. Per-question
predictions go to ``<split>_predictions.json`` and the accuracies to ``eval_res_latest.json``.
"""

import json
from typing import Any

from torch import nn

from videomamba.core.distributed import is_main_process
from videomamba.video_mm.data.datasets import MultipleChoiceDataset, multiple_choice_collate
from videomamba.video_mm.data.loader import build_loader
from videomamba.video_mm.evaluation import evaluate_multiple_choice
from videomamba.video_mm.tasks.engine import evaluate_only, media_reader, prepare_model, single_source, task_run

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate every split of ``test_types``; returns ``{"<split>/": {"acc": ...}}``."""
    with task_run(argv, "retrieval_mc.py", always_evaluate=True) as run:
        config = run.config
        reader = media_reader(config, train=False)
        splits = []
        for name in config.test_types:
            source = single_source(config, "test_file", name)
            dataset = MultipleChoiceDataset(source, reader, max_words=config.get("max_words"))
            batch_size = int(config.inputs.batch_size_test[source.media_type])
            loader = build_loader(
                dataset, batch_size, int(config.num_workers), False, collate_fn=multiple_choice_collate
            )
            splits.append((name, loader, int(config.inputs.max_txt_l[source.media_type])))

        def evaluate(model: nn.Module) -> dict[str, Any]:
            results = {}
            for name, loader, max_length in splits:
                accuracy, predictions = evaluate_multiple_choice(
                    model, loader, run.tokenizer, max_length, run.eval_settings()
                )
                results[f"{name}/"] = {"acc": accuracy}
                if run.output_dir is not None and is_main_process():
                    (run.output_dir / f"{name}_predictions.json").write_text(json.dumps(predictions), encoding="utf-8")
            return results

        return evaluate_only(run, prepare_model(run, is_pretrain=False), evaluate)


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
