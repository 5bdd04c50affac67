"""Bad input from users: every loading path refuses to run code, and every bad file gets one clear
line naming the file (and line), through the shared ``UserError`` and ``run_cli``.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from videomamba.core.checkpoint import restore_training_state
from videomamba.core.cli import MissingFileError, NonFiniteLossError, UserError, create_model, run_cli
from videomamba.core.clip_teacher import build_clip_teacher, load_clip_weights
from videomamba.core.pretrained import CheckpointError, load_checkpoint_file, load_pretrained
from videomamba.image_sm.datasets import Cifar100, ImageListDataset, build_dataset, read_meta_file
from videomamba.video_mm.config import ConfigError, load_config_file
from videomamba.video_mm.models.bert import load_bert_weights
from videomamba.video_sm.datasets import read_video_list

REPO = Path(__file__).resolve().parents[2]


class RunsCode:
    """Unpickling this calls exec, which writes the marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


# ------------------------------------------------------------------------ code is never run


def test_cifar_loader_does_not_run_code_from_a_crafted_pickle(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    marker = tmp_path / "marker"
    with open(folder / "train", "wb") as handle:
        pickle.dump({"data": RunsCode(marker), "fine_labels": [0]}, handle)
    with pytest.raises(UserError, match=r"cifar-100-python/train: not a plain-data pickle .*builtins\.exec"):
        Cifar100(tmp_path, train=True)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_loader_reads_numpy_arrays_of_any_pickle_protocol(tmp_path, protocol):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with open(folder / "test", "wb") as handle:
        pickle.dump(
            {b"data": data, "data": data, "fine_labels": [3, 4], "filenames": [b"a.png", b"b.png"]}, handle, protocol
        )
    dataset = Cifar100(tmp_path, train=False)
    assert dataset.targets == [3, 4] and np.array_equal(dataset.data[1], data[1].reshape(3, 32, 32).transpose(1, 2, 0))


def _crafted_torch_file(path: Path, marker: Path) -> Path:
    torch.save({"model": {"w": torch.zeros(1)}, "payload": RunsCode(marker)}, path)
    return path


def test_checkpoint_reader_refuses_code(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint_file(_crafted_torch_file(tmp_path / "evil.pth", marker))
    assert not marker.exists()


def test_resume_refuses_code(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(CheckpointError, match="evil.pth: refused"):
        restore_training_state(_crafted_torch_file(tmp_path / "evil.pth", marker), torch.nn.Linear(1, 1))
    assert not marker.exists()


def test_clip_teacher_loader_refuses_code(tmp_path):
    marker = tmp_path / "marker"
    teacher = build_clip_teacher("clip_b16", input_resolution=32, return_layers=[0])
    with pytest.raises(CheckpointError, match="evil.pth: refused"):
        load_clip_weights(teacher, _crafted_torch_file(tmp_path / "evil.pth", marker))
    assert not marker.exists()


def test_bert_loader_refuses_code(tmp_path):
    marker = tmp_path / "marker"
    _crafted_torch_file(tmp_path / "pytorch_model.bin", marker)
    with pytest.raises(CheckpointError, match="pytorch_model.bin: refused"):
        load_bert_weights(torch.nn.Linear(1, 1), tmp_path)
    assert not marker.exists()


def test_yaml_config_refuses_python_objects(tmp_path):
    marker = tmp_path / "marker"
    config = tmp_path / "evil.yaml"
    config.write_text(f"x: !!python/object/apply:builtins.exec [\"open({str(marker)!r}, 'w').write('ran')\"]\n")
    with pytest.raises(ConfigError, match="evil.yaml: cannot parse"):
        load_config_file(config)
    assert not marker.exists()


# ------------------------------------------------------------------------------ checkpoints


def test_files_that_are_not_checkpoints_are_named_as_such(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are my notes\n")
    video = tmp_path / "clip.pth"
    video.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(100))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    garbage = tmp_path / "weights.safetensors"
    garbage.write_text("garbage")
    for path, reason in ((text, "a text file"), (video, "a video or image file"), (empty, r"empty \(0 bytes\)")):
        with pytest.raises(CheckpointError, match=f"{path.name}: .*{reason}") as caught:
            load_checkpoint_file(path)
        assert "weights_only" not in str(caught.value)
    with pytest.raises(CheckpointError, match="weights.safetensors: not a readable .safetensors file: .+"):
        load_checkpoint_file(garbage)


def test_released_names_are_found_in_the_checkpoint_folder_and_misses_name_every_place(tmp_path, monkeypatch):
    folder = tmp_path / "released"
    folder.mkdir()
    model = torch.nn.Linear(2, 2)
    torch.save({"model": model.state_dict()}, folder / "released.pth")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDEOMAMBA_CHECKPOINTS", str(folder))
    assert load_pretrained(torch.nn.Linear(2, 2), "released.pth", verbose=False).ok
    with pytest.raises(MissingFileError) as caught:
        load_checkpoint_file("absent.pth")
    message = str(caught.value)
    assert str(tmp_path / "absent.pth") in message and str(folder / "absent.pth") in message
    monkeypatch.delenv("VIDEOMAMBA_CHECKPOINTS")
    with pytest.raises(MissingFileError, match=r"absent.pth, \$VIDEOMAMBA_CHECKPOINTS \(not set\)"):
        load_checkpoint_file("absent.pth")


def test_clip_teacher_path_errors_name_the_path(tmp_path):
    teacher = build_clip_teacher("clip_b16", input_resolution=32, return_layers=[0])
    with pytest.raises(MissingFileError, match="nowhere/vit_b16.pth"):
        load_clip_weights(teacher, tmp_path / "nowhere" / "vit_b16.pth")
    other = tmp_path / "other.pth"
    torch.save({"something": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="other.pth"):
        load_clip_weights(teacher, other)


# ------------------------------------------------------------------------------- list files


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path, format="PNG")


def test_image_meta_list_errors_name_file_and_line(tmp_path):
    meta = tmp_path / "train.txt"
    meta.write_bytes(b"a/one.png 0\na/caf\xe9.png 1\n")
    with pytest.raises(UserError, match=r"train.txt:2: not UTF-8 text \(byte 0xe9 at column 6\)"):
        read_meta_file(meta)
    meta.write_text("a/one.png 0\na/two.png 1 3\n")
    with pytest.raises(UserError, match=r"train.txt:2: 3 columns, expected 2"):
        read_meta_file(meta, num_classes=4, root=tmp_path)
    # A path that really holds a space and ends in a number is kept when the file exists.
    _image(tmp_path / "a" / "two.png 1")
    assert read_meta_file(meta, num_classes=4, root=tmp_path)[1] == ("a/two.png 1", 3)


def test_a_byte_order_mark_does_not_cost_the_first_image(tmp_path):
    _image(tmp_path / "a" / "one.png")
    _image(tmp_path / "b" / "two.png")
    meta = tmp_path / "train.txt"
    meta.write_bytes(b"\xef\xbb\xbfa/one.png 0\nb/two.png 1\n")
    dataset = ImageListDataset(tmp_path, meta, num_classes=2)
    assert dataset.samples[0] == (str(tmp_path / "a" / "one.png"), 0)
    dataset[0]
    assert dataset.num_failed == 0


def test_more_class_folders_than_nb_classes_is_refused_when_the_dataset_is_built(tmp_path):
    for name in ("circle", "square", "star"):
        _image(tmp_path / "train" / name / "x.png")
    args = argparse.Namespace(
        data_set="IMNET", data_path=str(tmp_path), root_dir_train=None, meta_file_train=None, nb_classes=2,
        input_size=32, ThreeAugment=False, color_jitter=0.0, aa=None, train_interpolation="bicubic",
        reprob=0.0, remode="pixel", recount=1, src=False, eval_crop_ratio=0.875,
    )  # fmt: skip
    with pytest.raises(UserError, match=r"train: 3 class folders \(circle, square, star\) but --nb_classes 2"):
        build_dataset(True, args)


def test_video_list_errors_name_file_and_line(tmp_path):
    listing = tmp_path / "train.csv"
    listing.write_bytes(b"a.mp4 0\n\xff\xfeb.mp4 1\n")
    with pytest.raises(UserError, match=r"train.csv:2: not UTF-8 text \(byte 0xff at column 1\)"):
        read_video_list(listing)
    listing.write_text("a.mp4,0\nb.mp4,3,7\n")
    with pytest.raises(UserError, match=r"train.csv:2: 3 columns with delimiter ',', expected at most 2"):
        read_video_list(listing, delimiter=",", prefix=str(tmp_path))
    listing.write_text("a.mp4 0\nb.mp4 3 7\n")
    with pytest.raises(UserError, match=r"train.csv:2: 3 columns"):
        read_video_list(listing, prefix=str(tmp_path))


# ----------------------------------------------------------------------------- command line


def test_run_cli_prints_user_errors_and_non_finite_stops_as_one_line_and_keeps_tracebacks_for_bugs(capsys, monkeypatch):
    def bad_input():
        raise MissingFileError("/data/list.csv: list file not found")

    assert run_cli(bad_input, ["prog"]) == 2
    assert capsys.readouterr().err == "error: /data/list.csv: list file not found\n"
    monkeypatch.setenv("VIDEOMAMBA_DEBUG", "1")
    assert run_cli(bad_input, ["prog"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.delenv("VIDEOMAMBA_DEBUG")
    argv = ["prog", "--debug", "--epochs", "1"]
    assert run_cli(bad_input, argv) == 2 and argv == ["prog", "--epochs", "1"]
    assert "Traceback" in capsys.readouterr().err

    def diverged():
        raise NonFiniteLossError("non-finite loss at epoch 0, step 3")

    assert run_cli(diverged, ["prog"]) == 1
    assert capsys.readouterr().err == "Stopping: non-finite loss at epoch 0, step 3\n"

    def bug():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_cli(bug, ["prog"])


def test_unknown_model_names_get_the_closest_registered_names():
    with pytest.raises(UserError, match="--model videomamba_tinny: unknown model; did you mean videomamba_tiny"):
        create_model("videomamba_tinny")


@pytest.mark.parametrize(
    "module,args,message",
    [
        (
            "videomamba.video_sm.run_class_finetuning",
            ["--model", "videomamba_tinny", "--data_path", "/nowhere", "--device", "cpu"],
            "videomamba_tinny: unknown model; did you mean videomamba_tiny",
        ),
        (
            "videomamba.image_sm.main",
            ["--data-set", "IMNET", "--meta_file_val", "/nowhere/val.txt", "--device", "cpu", "--eval"],
            "error: /nowhere/val.txt: meta file not found",
        ),
    ],
)
def test_entry_scripts_print_user_errors_without_a_traceback(module, args, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", module, *args, "--output_dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_progress_lines_give_rate_and_eta():
    import io

    from videomamba.core.cli import Progress

    stream = io.StringIO()
    meter = Progress(4, "scanning videos", unit="videos", every=0.0, stream=stream)
    for _ in range(2):
        meter.update()
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("scanning videos: 2/4 videos (50 %), ") and "videos/s, ETA " in last


def test_video_mm_annotations_and_predict_labels_name_non_utf8_lines(tmp_path):
    from videomamba.video_mm.data.datasets import MediaSource, load_annotations
    from videomamba.video_sm.predict import read_labels

    annotations = tmp_path / "train.json"
    annotations.write_bytes(b'[\n {"video": "a.mp4", "caption": "caf\xe9"}\n]\n')
    with pytest.raises(UserError, match=r"train.json:2: not UTF-8 text \(byte 0xe9\)"):
        load_annotations(MediaSource(str(annotations), str(tmp_path), "video"))
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"\xef\xbb\xbfleft\nright\n")
    assert read_labels(labels, 2) == ["left", "right"]  # the byte-order mark is not part of the first name
    labels.write_bytes(b"left\nr\xffght\n")
    with pytest.raises(UserError, match=r"labels.txt:2: not UTF-8"):
        read_labels(labels, 2)
