"""Annotation files and datasets of the video-text tasks.

Annotation files are JSON lists of objects, one per image or video; media paths are relative to the
corpus' ``media_root`` and stored under the corpus' media type (``"image"`` or ``"video"``):

- pretraining: ``{"video": "a.mp4", "caption": "a dog runs"}`` (or ``"image"``);
- retrieval: ``{"video": "a.mp4", "caption": "one caption" | ["several", "captions"]}``;
- multiple choice: ``{"video": "a.mp4", "caption": ["option 0", ..., "option 4"], "answer": 2}``;
- question answering: ``{"video": "a.mp4", "question": "what is it?", "answer": "a dog" | ["dog", ...],
  "question_id": 7}``, plus an answer-list file (a JSON list of strings).

Errors name the file and the entry. A training sample whose media cannot be read is logged and
replaced by another one (`UnreadableVideoPolicy`); at evaluation it becomes a black clip (logged), so
every video keeps its place in the metrics.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from videomamba.core.cli import MissingFileError, UserError
from videomamba.core.video_decode import UnreadableVideoPolicy, VideoDecodeError

from .media import MediaReader
from .text import pre_text

__all__ = [
    "CaptionDataset",
    "MediaSource",
    "MultipleChoiceDataset",
    "QADataset",
    "RetrievalEvalDataset",
    "load_annotations",
    "load_answer_list",
    "media_sources",
    "multiple_choice_collate",
    "qa_train_collate",
]

logger = logging.getLogger(__name__)

MEDIA_TYPES = ("image", "video")


@dataclass(frozen=True)
class MediaSource:
    """One corpus: its annotation file, the folder its media paths are relative to, and the media type."""

    anno_path: str
    media_root: str
    media_type: str

    def __post_init__(self) -> None:
        if self.media_type not in MEDIA_TYPES:
            raise UserError(f"{self.anno_path}: media_type must be one of {MEDIA_TYPES}, got {self.media_type!r}")


def media_sources(node: Mapping | Sequence) -> list[MediaSource]:
    """Corpora from a config node: one ``dict(anno_path, media_root, media_type)`` or a list of them."""
    items = [node] if isinstance(node, Mapping) else list(node)
    sources = []
    for item in items:
        missing = {"anno_path", "media_root", "media_type"} - set(item)
        if missing:
            raise UserError(f"corpus entry {dict(item)} lacks {sorted(missing)}")
        sources.append(MediaSource(str(item["anno_path"]), str(item["media_root"]), str(item["media_type"])))
    return sources


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{error.object[error.start]:02x})") from None


def load_annotations(source: MediaSource, required: Sequence[str] = ("caption",)) -> list[dict[str, Any]]:
    """Entries of an annotation file, each with ``media`` (the joined path) and ``media_type`` added."""
    entries = _read_json(source.anno_path)
    if not isinstance(entries, list):
        raise UserError(f"{source.anno_path}: expected a JSON list of objects, got {type(entries).__name__}")
    loaded = []
    for index, entry in enumerate(entries):
        where = f"{source.anno_path}: entry {index}"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected an object, got {type(entry).__name__}")
        relative = entry.get(source.media_type)
        if not isinstance(relative, str) or not relative:
            raise UserError(f"{where}: no '{source.media_type}' path (keys: {sorted(entry)})")
        missing = [key for key in required if key not in entry]
        if missing:
            raise UserError(f"{where}: missing {missing}")
        loaded.append({**entry, "media": os.path.join(source.media_root, relative), "media_type": source.media_type})
    if not loaded:
        raise UserError(f"{source.anno_path}: no entries")
    return loaded


def _caption_list(entry: dict[str, Any], source: str) -> list[str]:
    captions = entry["caption"]
    if isinstance(captions, str):
        return [captions]
    if isinstance(captions, list) and captions and all(isinstance(c, str) for c in captions):
        return list(captions)
    raise UserError(f"{source}: 'caption' of {entry['media']} must be a string or a non-empty list of strings")


def load_answer_list(path: str | Path) -> list[str]:
    """The candidate answers of a QA data set: a JSON list of strings."""
    answers = _read_json(path)
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise UserError(f"{path}: expected a non-empty JSON list of answer strings")
    return answers


class _MediaDataset(Dataset):
    """Shared reading: training replaces unreadable media, evaluation substitutes a black clip."""

    def __init__(self, reader: MediaReader, train: bool) -> None:
        self.reader = reader
        self.train = train
        self.unreadable = UnreadableVideoPolicy()

    def media_of(self, index: int) -> tuple[str, str]:
        raise NotImplementedError

    def _read(self, index: int) -> torch.Tensor:
        return self.reader(*self.media_of(index))

    def load_media(self, index: int) -> tuple[torch.Tensor, int]:
        """(clip, index actually used)."""
        if self.train:
            return self.unreadable.load(self._read, index, len(self))
        try:
            return self._read(index), index
        except VideoDecodeError as error:
            self.unreadable.num_failures += 1
            logger.warning("unreadable media %s (%s): evaluated as a black clip", error.path, error.reason)
            size = self.reader.transform.image_res
            frames = 1 if self.media_of(index)[1] == "image" else self.reader.num_frames
            return torch.zeros(3, frames, size, size), index


class CaptionDataset(_MediaDataset):
    """(media, caption) pairs for pretraining and retrieval fine-tuning; items ``(clip, caption, positive_id)``.

    ``positives="sample"`` (pretraining) makes every pair its own positive; ``"media"`` (retrieval)
    gives all captions of the same media one id, so VTC treats them as shared positives.
    """

    def __init__(
        self,
        sources: Sequence[MediaSource],
        reader: MediaReader,
        train: bool = True,
        positives: str = "sample",
        max_words: int | None = None,
    ) -> None:
        super().__init__(reader, train)
        if positives not in ("sample", "media"):
            raise UserError(f"positives must be 'sample' or 'media', got {positives!r}")
        media_types = {source.media_type for source in sources}
        if len(media_types) != 1:
            raise UserError(f"a CaptionDataset holds one media type; got {sorted(media_types)} (split by type)")
        self.media_type = media_types.pop()
        self.pairs: list[tuple[str, str, int]] = []
        media_ids: dict[str, int] = {}
        for source in sources:
            for entry in load_annotations(source):
                media_id = media_ids.setdefault(entry["media"], len(media_ids))
                for caption in _caption_list(entry, source.anno_path):
                    positive = len(self.pairs) if positives == "sample" else media_id
                    self.pairs.append((entry["media"], pre_text(caption, max_words), positive))

    def __len__(self) -> int:
        return len(self.pairs)

    def media_of(self, index: int) -> tuple[str, str]:
        return self.pairs[index][0], self.media_type

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, int]:
        clip, index = self.load_media(index)
        _, caption, positive = self.pairs[index]
        return clip, caption, positive


class RetrievalEvalDataset(_MediaDataset):
    """The media of a retrieval test split; items ``(clip, media_index)``.

    Attributes:
        texts: every caption (one per media with ``paragraph``, its captions joined by spaces).
        text_to_media: the media index of each text.
        media_to_texts: the text indices of each media.
    """

    def __init__(
        self, source: MediaSource, reader: MediaReader, paragraph: bool = False, max_words: int | None = None
    ) -> None:
        super().__init__(reader, train=False)
        self.source = source
        self.media: list[str] = []
        self.texts: list[str] = []
        self.text_to_media: list[int] = []
        self.media_to_texts: list[list[int]] = []
        for entry in load_annotations(source):
            captions = _caption_list(entry, source.anno_path)
            if paragraph:
                captions = [" ".join(captions)]
            media_index = len(self.media)
            self.media.append(entry["media"])
            self.media_to_texts.append(list(range(len(self.texts), len(self.texts) + len(captions))))
            for caption in captions:
                self.texts.append(pre_text(caption, max_words))
                self.text_to_media.append(media_index)

    def __len__(self) -> int:
        return len(self.media)

    def media_of(self, index: int) -> tuple[str, str]:
        return self.media[index], self.source.media_type

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.load_media(index)


class MultipleChoiceDataset(_MediaDataset):
    """Multiple-choice questions (MSRVTT-MC): items ``(clip, options, answer)``."""

    def __init__(self, source: MediaSource, reader: MediaReader, max_words: int | None = None) -> None:
        super().__init__(reader, train=False)
        self.source = source
        self.entries = load_annotations(source, required=("caption", "answer"))
        self.options: list[list[str]] = []
        self.answers: list[int] = []
        for index, entry in enumerate(self.entries):
            options = _caption_list(entry, source.anno_path)
            answer = entry["answer"]
            if not isinstance(answer, int) or not 0 <= answer < len(options):
                raise UserError(f"{source.anno_path}: entry {index}: answer {answer!r} is not an option index")
            if len(options) != len(_caption_list(self.entries[0], source.anno_path)):
                raise UserError(f"{source.anno_path}: entry {index}: every question needs the same number of options")
            self.options.append([pre_text(o, max_words) for o in options])
            self.answers.append(answer)

    def __len__(self) -> int:
        return len(self.entries)

    def media_of(self, index: int) -> tuple[str, str]:
        return self.entries[index]["media"], self.source.media_type

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[str], int]:
        clip, _ = self.load_media(index)
        return clip, self.options[index], self.answers[index]


class QADataset(_MediaDataset):
    """Question answering. Training items ``(clip, question, answers, weights)`` with each distinct
    answer weighted by its share of the annotations; evaluation items ``(clip, question, question_id)``."""

    def __init__(
        self, sources: Sequence[MediaSource], reader: MediaReader, train: bool, max_words: int | None = None
    ) -> None:
        super().__init__(reader, train)
        self.entries = []
        for source in sources:
            required = ("question", "answer") if train else ("question",)
            for index, entry in enumerate(load_annotations(source, required=required)):
                answers = entry.get("answer", [])
                answers = [answers] if isinstance(answers, str) else answers
                if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                    raise UserError(f"{source.anno_path}: entry {index}: 'answer' must be a string or strings")
                if train and not answers:
                    raise UserError(f"{source.anno_path}: entry {index}: a training question needs an answer")
                self.entries.append(
                    dict(
                        media=entry["media"],
                        media_type=source.media_type,
                        question=pre_text(entry["question"], max_words),
                        answers=[pre_text(a) for a in answers],
                        question_id=entry.get("question_id", len(self.entries)),
                    )
                )

    def __len__(self) -> int:
        return len(self.entries)

    def media_of(self, index: int) -> tuple[str, str]:
        return self.entries[index]["media"], self.entries[index]["media_type"]

    def __getitem__(self, index: int) -> tuple:
        clip, index = self.load_media(index)
        entry = self.entries[index]
        if not self.train:
            return clip, entry["question"], entry["question_id"]
        counts: dict[str, int] = {}
        for answer in entry["answers"]:
            counts[answer] = counts.get(answer, 0) + 1
        total = sum(counts.values())
        return clip, entry["question"], list(counts), [c / total for c in counts.values()]


def qa_train_collate(batch: list[tuple]) -> tuple[torch.Tensor, list[str], list[str], torch.Tensor, list[int]]:
    """Stack clips; flatten the answers of every question (with weights) and count them per question."""
    clips, questions, answers, weights, counts = [], [], [], [], []
    for clip, question, item_answers, item_weights in batch:
        clips.append(clip)
        questions.append(question)
        answers += item_answers
        weights += item_weights
        counts.append(len(item_answers))
    return torch.stack(clips), questions, answers, torch.tensor(weights), counts


def multiple_choice_collate(batch: list[tuple]) -> tuple[torch.Tensor, list[list[str]], torch.Tensor]:
    """Stack clips, keep each question's options together (the default collate would transpose them)."""
    clips, options, answers = zip(*batch, strict=True)
    return torch.stack(clips), [list(o) for o in options], torch.tensor(answers)
