"""Caption cleaning and the local-folder BERT tokenizer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import BatchEncoding, BertTokenizer

from videomamba.core.cli import MissingFileError

__all__ = ["load_tokenizer", "pre_text", "tokenize"]

_DROPPED_PUNCTUATION = re.compile(r"[,.'!?\"()*#:;~]")
_WORD_SEPARATORS = re.compile(r"[-/]")
_SPACES = re.compile(r"\s+")


def pre_text(text: str, max_words: int | None = None) -> str:
    """Lower-case, drop ``,.'!?"()*#:;~``, turn ``-`` and ``/`` into spaces, ``<person>`` into
    ``person``, collapse white space, and keep at most `max_words` words."""
    text = _DROPPED_PUNCTUATION.sub("", text.lower())
    text = _WORD_SEPARATORS.sub(" ", text).replace("<person>", "person")
    words = _SPACES.sub(" ", text).strip().split(" ")
    if max_words is not None:
        words = words[:max_words]
    return " ".join(words)


def load_tokenizer(folder: str | Path) -> BertTokenizer:
    """``BertTokenizer`` from a local folder holding ``vocab.txt`` (never downloads)."""
    folder = Path(folder)
    if not (folder / "vocab.txt").is_file():
        raise MissingFileError(
            f"{folder}: no vocab.txt. The tokenizer is read from a local BERT folder (e.g. bert-base-uncased with "
            "vocab.txt and config.json); set model.text_encoder.pretrained or model_dir to it"
        )
    return BertTokenizer.from_pretrained(str(folder), local_files_only=True)


def tokenize(
    tokenizer: BertTokenizer,
    texts: Sequence[str],
    max_length: int,
    device: torch.device | str = "cpu",
    padding: str = "max_length",
) -> BatchEncoding:
    """``input_ids`` and ``attention_mask`` (B, L) on `device`, truncated to `max_length` tokens and padded
    to it (``max_length``, as the original) or to the longest text of the batch (``longest``)."""
    return tokenizer(list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt").to(
        device
    )
