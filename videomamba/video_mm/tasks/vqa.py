"""Generative video question answering: ``python -m videomamba.video_mm.tasks.vqa CONFIG [key value ...]``.

The VideoMamba encoder and the BERT text encoder fuse the question with the video; a causal BERT
decoder (initialised from the top layers of the text encoder) is trained with teacher forcing to
write the answer (each annotated answer weighted by its share). At evaluation the answer is either
ranked from the answer list (``answer_mode rank``: the first token short-lists ``evaluation.k_test``
candidates, the full likelihood decides) or decoded greedily (``answer_mode generate``); the metric
is VQA-style accuracy. Predictions go to ``<split>_predictions.json``.
"""

import json
from typing import Any

import torch
from torch import nn

from videomamba.core.distributed import is_main_process
from videomamba.video_mm.data.datasets import QADataset, load_answer_list, qa_train_collate
from videomamba.video_mm.data.loader import build_loader
from videomamba.video_mm.data.text import tokenize
from videomamba.video_mm.evaluation import evaluate_qa
from videomamba.video_mm.tasks.engine import (
    Run,
    evaluate_only,
    fit,
    media_reader,
    prepare_model,
    single_source,
    task_run,
    train_loader,
)

__all__ = ["main"]


def qa_step(run: Run):
    """Training step: tokenize questions and answers, return the answer loss."""
    max_question = int(run.config.max_q_len)
    max_answer = int(run.config.max_a_len)

    def step(model: nn.Module, media_type: str, batch: Any) -> dict[str, torch.Tensor]:
        media, questions, answers, weights, counts = batch
        question = tokenize(run.tokenizer, questions, max_question, run.device, padding="longest")
        # max_a_len counts the answer's own tokens; [CLS] and [SEP] come on top.
        answer = tokenize(run.tokenizer, answers, max_answer + 2, run.device, padding="longest")
        return model(
            media.to(run.device, non_blocking=True),
            question.input_ids,
            question.attention_mask,
            answer.input_ids,
            answer.attention_mask,
            weights.to(run.device),
            torch.tensor(counts, device=run.device),
        )

    return step


def qa_evaluator(run: Run):
    config = run.config
    answer_list = load_answer_list(config.answer_list)
    reader = media_reader(config, train=False)
    splits = []
    for name in config.test_types:
        source = single_source(config, "test_file", name)
        dataset = QADataset([source], reader, train=False, max_words=config.get("max_words"))
        loader = build_loader(
            dataset, int(config.inputs.batch_size_test[source.media_type]), int(config.num_workers), False
        )
        splits.append((name, loader))

    def evaluate(model: nn.Module) -> dict[str, Any]:
        results = {}
        for name, loader in splits:
            accuracy, predictions = evaluate_qa(
                model,
                loader,
                run.tokenizer,
                answer_list,
                run.eval_settings(),
                mode=str(config.answer_mode),
                max_question_length=int(config.max_q_len),
                max_answer_length=int(config.max_a_len),
            )
            results[f"{name}/"] = {"acc": accuracy}
            if run.output_dir is not None and is_main_process():
                (run.output_dir / f"{name}_predictions.json").write_text(json.dumps(predictions), encoding="utf-8")
        return results

    return evaluate


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train and/or evaluate; returns the last evaluation results."""
    with task_run(argv, "vqa.py") as run:
        evaluator = qa_evaluator(run)
        model = prepare_model(run, is_pretrain=False)
        if run.evaluate:
            return evaluate_only(run, model, evaluator)
        loader = train_loader(
            run.config,
            lambda sources, reader: QADataset(sources, reader, train=True, max_words=run.config.get("max_words")),
            collate_fn=qa_train_collate,
        )
        return fit(run, model, loader, qa_step(run), evaluator)


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
