"""core/checkpoint.py on its own: atomic writes, resume-point discovery (ours and the original's
file names), RNG state round trips and the one-line write error."""

from __future__ import annotations

import argparse
import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from videomamba.core import checkpoint as checkpoint_io
from videomamba.core.checkpoint import LATEST, ResumeError, WriteError


def save_training(path: Path, epoch: int) -> Path:
    torch.save({"model": {"w": torch.full((2,), float(epoch))}, "epoch": epoch}, path)
    return path


def test_atomic_save_keeps_the_previous_file_when_a_write_dies(tmp_path, monkeypatch):
    checkpoint_io.atomic_save({"epoch": 1, "w": torch.ones(2)}, tmp_path / LATEST)

    def killed_midway(obj, handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_io.torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_io.atomic_save({"epoch": 2}, tmp_path / LATEST)
    assert torch.load(tmp_path / LATEST, weights_only=True)["epoch"] == 1  # the previous one survives
    (tmp_path / f".{LATEST}.tmp-999").write_bytes(b"left by a kill")
    checkpoint_io.remove_temp_files(tmp_path)
    assert not list(tmp_path.glob(".*tmp*"))


def test_plain_config_keeps_only_weights_only_safe_values():
    assert checkpoint_io.plain_config(argparse.Namespace(path=Path("/x"), betas=(0.9, 0.99))) == {
        "path": "/x",
        "betas": [0.9, 0.99],
    }


def test_atomic_write_text_and_atomic_copy_replace_whole_files(tmp_path):
    log = tmp_path / "sub" / "log.txt"
    checkpoint_io.atomic_write_text(log, "first\n")
    checkpoint_io.atomic_write_text(log, "é second\n")
    assert log.read_text(encoding="utf-8") == "é second\n"

    src, dst = tmp_path / "a.pth", tmp_path / "b.pth"
    src.write_bytes(b"new content")
    dst.write_bytes(b"old content that is longer")
    checkpoint_io.atomic_copy(src, dst)
    assert dst.read_bytes() == b"new content"
    dst.write_bytes(b"damaged")  # a real copy: damage to one file does not reach the other
    assert src.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth", "b.pth", "sub"]  # no temp file left


def test_a_fresh_folder_has_no_resume_point(tmp_path):
    assert checkpoint_io.find_resume_checkpoint(None) is None
    assert checkpoint_io.find_resume_checkpoint(tmp_path / "missing") is None
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert checkpoint_io.find_resume_checkpoint(tmp_path) is None


@pytest.mark.parametrize("latest_name", [LATEST, "checkpoint.pth", "ckpt_latest.pth"])
def test_the_latest_checkpoint_wins_under_every_known_name(tmp_path, latest_name):
    save_training(tmp_path / "checkpoint-7.pth", 7)
    save_training(tmp_path / latest_name, 3)
    path, checkpoint = checkpoint_io.find_resume_checkpoint(tmp_path)
    assert path == tmp_path / latest_name and checkpoint["epoch"] == 3


def test_without_a_latest_the_newest_epoch_of_the_original_names_is_resumed(tmp_path):
    save_training(tmp_path / "checkpoint_e5.pth", 5)
    save_training(tmp_path / "ckpt_6.pth", 6)
    save_training(tmp_path / "ckpt_best.pth", 6)  # the same epoch: the periodic save is preferred
    (tmp_path / "checkpoint-9.pth").write_bytes(b"torn")
    roles = {path.name: role for path, role in checkpoint_io.checkpoint_files(tmp_path)}
    assert roles == {
        "checkpoint_e5.pth": "periodic",
        "ckpt_6.pth": "periodic",
        "ckpt_best.pth": "best",
        "checkpoint-9.pth": "periodic",
    }
    with pytest.warns(UserWarning, match=r"checkpoint-latest.pth \(missing\).*checkpoint-9.pth \(.*\).*ckpt_6"):
        path, checkpoint = checkpoint_io.find_resume_checkpoint(tmp_path)
    assert path.name == "ckpt_6.pth" and checkpoint["epoch"] == 6


def test_history_without_a_loadable_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ResumeError, match="log.txt has records but there is no checkpoint"):
        checkpoint_io.find_resume_checkpoint(tmp_path, has_history=True)
    torch.save({"weights": torch.ones(1)}, tmp_path / "checkpoint-1.pth")
    with pytest.raises(ResumeError, match=r"checkpoint-1.pth \(not a training checkpoint"):
        checkpoint_io.find_resume_checkpoint(tmp_path)


def draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    checkpoint_io.atomic_save({"rng": checkpoint_io.get_rng_state()}, tmp_path / "rng.pth")
    expected = draws()
    draws()  # move every generator on
    checkpoint_io.set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    again = draws()
    assert again[:2] == expected[:2] and torch.equal(again[2], expected[2])


def test_write_error_is_one_line_with_the_os_reason_and_free_space(tmp_path):
    target = tmp_path / LATEST
    try:
        raise OSError(errno.ENOSPC, "disk full")
    except OSError as cause:
        try:
            raise RuntimeError("torch's own wrapper\nwith a second line") from cause
        except RuntimeError as wrapped:
            error = checkpoint_io.write_error(target, wrapped)
    assert isinstance(error, WriteError)
    assert str(error) == f"could not write {target}: No space left on device; {str(error).split('; ')[-1]}"
    assert str(error).endswith("MiB free") and "\n" not in str(error)
    guessed = checkpoint_io.write_error(target, RuntimeError("PytorchStreamWriter failed: unexpected pos 64"))
    assert "No space left on device (probably)" in str(guessed)
    plain = checkpoint_io.write_error(target, RuntimeError("first line\nsecond line"))
    assert f"could not write {target}: first line;" in str(plain)
