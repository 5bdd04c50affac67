"""Multi-view testing: per-view outputs gathered in memory, merged per video.

Each test item is one view of one video: ``view = (window, segment, crop)``. Every rank keeps
``ViewOutput`` records for the items it saw; `gather_view_outputs` collects them from all ranks
(``all_gather_object``, no per-rank text files), and `merge_views` groups them by video:

- a (video, view) pair seen twice (a distributed sampler pads the last batch with repeats) counts once;
- every distinct view counts, including every window of a long (LVU) video;
- classification averages the softmax over views, then scores top-1 and, with at least 5 classes,
  top-5 per video; regression averages the predictions and reports the mean squared error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from videomamba.core.distributed import all_gather_objects

__all__ = ["ViewOutput", "gather_view_outputs", "merge_views", "write_predictions"]


class ViewOutput(NamedTuple):
    """The model's output for one view of one video."""

    video_index: int
    view: tuple[int, ...]  # (window, segment, crop)
    output: np.ndarray  # logits (C,), or the prediction (1,) for regression
    label: float


def gather_view_outputs(records: Sequence[ViewOutput], distributed_eval: bool) -> list[ViewOutput]:
    """All ranks' records when the test set was sharded (--dist_eval), else this rank's own."""
    if not distributed_eval:
        return list(records)
    return [record for shard in all_gather_objects(list(records)) for record in shard]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def merge_views(
    records: Iterable[ViewOutput],
    regression: bool = False,
    video_ids: Sequence[str] | None = None,
    topk: int = 5,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Merge per-view outputs into per-video results.

    Returns (metrics, rows): metrics in percent for classification (``top1``, ``top5`` when there
    are more than 5 classes) or ``mse``/``mae`` for regression, plus ``num_videos`` and
    ``num_views``; one row per video (sorted by video index) for predictions.jsonl.
    """
    views: dict[int, dict[tuple[int, ...], np.ndarray]] = {}
    labels: dict[int, float] = {}
    for record in records:
        per_video = views.setdefault(int(record.video_index), {})
        per_video.setdefault(tuple(int(v) for v in record.view), np.asarray(record.output, dtype=np.float64))
        labels[int(record.video_index)] = record.label
    if not views:
        raise ValueError("no test outputs to merge (empty test set?)")
    rows = []
    for index in sorted(views):
        outputs = list(views[index].values())
        row: dict[str, Any] = {"video_index": index, "num_views": len(outputs), "label": labels[index]}
        if video_ids is not None:
            row["video_id"] = video_ids[index]
        if regression:
            row["prediction"] = float(np.mean([o.reshape(-1)[0] for o in outputs]))
        else:
            probs = np.mean([_softmax(o) for o in outputs], axis=0)
            order = np.argsort(-probs)[: min(topk, probs.shape[0])]
            row["label"] = int(labels[index])
            row["prediction"] = int(order[0])
            row["topk"] = [[int(c), float(probs[c])] for c in order]
            row["num_classes"] = int(probs.shape[0])
        rows.append(row)

    metrics: dict[str, float] = {"num_videos": len(rows), "num_views": sum(r["num_views"] for r in rows)}
    if regression:
        errors = np.array([r["prediction"] - float(r["label"]) for r in rows])
        metrics.update(mse=float(np.mean(errors**2)), mae=float(np.mean(np.abs(errors))))
    else:
        metrics["top1"] = 100.0 * float(np.mean([r["prediction"] == r["label"] for r in rows]))
        if rows[0]["num_classes"] > 5:
            metrics["top5"] = 100.0 * float(np.mean([r["label"] in [c for c, _ in r["topk"][:5]] for r in rows]))
        for row in rows:
            del row["num_classes"]
    return metrics, rows


def write_predictions(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """One JSON object per video; written to a temp file and renamed, so a kill leaves no torn file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return path
