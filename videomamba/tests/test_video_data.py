"""Video readers, frame samplers, list files, datasets and clip augmentations, on videos encoded here.

Every video is written by the tests with PyAV into a temporary folder. Frame i of the "gray" videos
is a uniform gray level 10 + 6·i, so the index of any decoded frame can be read back from its mean;
the "texture" video has structure for comparing decoders and crops.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from videomamba.core import video_decode
from videomamba.core.frame_sampling import (
    dense_clip_indices,
    fps_indices,
    interval_indices,
    pad_indices,
    sample_indices,
    sparse_segment_indices,
    tsn_segment_indices,
)
from videomamba.core.video_decode import (
    FallbackVideo,
    PyAVVideo,
    UnreadableVideoPolicy,
    VideoDecodeError,
    VideoInfo,
    open_video,
    read_video_frames,
)
from videomamba.core.video_rand_augment import INCREASING_OPS, ORIGINAL_OPS, apply_op, op_argument
from videomamba.core.video_transforms import crop_offsets, random_resized_crop_box
from videomamba.video_sm.datasets import (
    RandomErasing,
    VideoEvalTransform,
    VideoMixup,
    VideoPretrainTransform,
    VideoRandAugment,
    VideoTrainTransform,
    build_dataset,
    build_mixup,
    build_pretraining_dataset,
    load_test_views,
    long_video_windows,
    parse_rand_augment,
    read_video_list,
    repeated_sample_collate,
)
from videomamba.video_sm.datasets.transforms import multi_scale_crop_box

# The synthetic videos are encoded with PyAV; decord-specific checks skip where decord is missing.
av = pytest.importorskip("av")
requires_decord = pytest.mark.skipif(importlib.util.find_spec("decord") is None, reason="decord not installed")

HEIGHT, WIDTH = 32, 40


def gray_frames(count: int) -> np.ndarray:
    levels = 10 + 6 * np.arange(count)
    return np.broadcast_to(levels[:, None, None, None], (count, HEIGHT, WIDTH, 3)).astype(np.uint8).copy()


def frame_index(frame: np.ndarray) -> int:
    return int(round((float(frame.mean()) - 10) / 6))


def texture_frames(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (HEIGHT // 4, WIDTH // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    return np.stack([np.roll(base, shift=i, axis=1) for i in range(count)])


def encode(path: str, frames: np.ndarray, codec: str, fps: int = 10, pix_fmt: str = "yuv420p", **options: str) -> str:
    return video_decode.write_video(path, frames, fps=fps, codec=codec, pix_fmt=pix_fmt, **options)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("media")
    paths = {
        # Lossless RGB H.264: decoded frames equal the source exactly.
        "lossless": encode(str(root / "lossless.mp4"), gray_frames(24), "libx264rgb", pix_fmt="rgb24", qp="0"),
        "texture": encode(str(root / "texture.mp4"), texture_frames(20), "mpeg4", qscale="2"),
        "avi": encode(str(root / "gray.avi"), gray_frames(16), "mpeg4", qscale="1"),
        # webm stores no frame count, which exercises PyAV's packet counting.
        "webm": encode(str(root / "gray.webm"), gray_frames(20), "libvpx", **{"crf": "4", "b": "1M"}),
        "long": encode(str(root / "long.mp4"), gray_frames(40), "libx264rgb", fps=2, pix_fmt="rgb24", qp="0"),
        "short": encode(str(root / "short.mp4"), gray_frames(3), "libx264rgb", pix_fmt="rgb24", qp="0"),
    }
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    paths["corrupt"] = str(corrupt)
    folder = root / "frames" / "video_a"
    folder.mkdir(parents=True)
    for i, frame in enumerate(gray_frames(12)):
        Image.fromarray(frame).save(folder / f"img_{i + 1:05}.png")
    paths["frames"] = str(folder)
    unpadded = root / "unpadded"
    unpadded.mkdir()
    for i, frame in enumerate(gray_frames(12)):
        Image.fromarray(frame).save(unpadded / f"frame_{i + 1}.png")  # frame_10 sorts before frame_2 as text
    paths["unpadded"] = str(unpadded)
    gif_frames = [Image.fromarray(f) for f in gray_frames(8)]
    gif_frames[0].save(root / "anim.gif", save_all=True, append_images=gif_frames[1:], duration=100, loop=0)
    paths["gif"] = str(root / "anim.gif")
    paths["root"] = str(root)
    return paths


# ------------------------------------------------------------------------------------------- readers


@pytest.mark.parametrize("name, frames", [("lossless", 24), ("texture", 20), ("avi", 16), ("webm", 20)])
@pytest.mark.parametrize("backend", [pytest.param("decord", marks=requires_decord), "pyav", "auto"])
def test_readers_report_frame_count_fps_and_duration(media, name, frames, backend):
    with open_video(media[name], backend) as video:
        assert video.info.num_frames == frames
        assert video.info.fps == pytest.approx(10.0)
        assert video.info.duration == pytest.approx(frames / 10.0)


@requires_decord
@pytest.mark.parametrize("name", ["lossless", "texture", "avi", "webm"])
def test_decord_and_pyav_decode_identical_frames(media, name):
    with open_video(media[name], "decord") as first, open_video(media[name], "pyav") as second:
        indices = [7, 0, 3, 3, first.info.num_frames - 1, 12]
        decoded = first.read(indices)
        assert decoded.shape == (6, HEIGHT, WIDTH, 3) and decoded.dtype == np.uint8
        np.testing.assert_array_equal(decoded, second.read(indices))


def test_lossless_video_decodes_to_the_source_frames(media):
    source = gray_frames(24)
    with open_video(media["lossless"]) as video:
        np.testing.assert_array_equal(video.read(range(24)), source)
        assert [frame_index(f) for f in video.read([5, 1, 5])] == [5, 1, 5]


def test_lossy_codecs_stay_close_to_the_source(media):
    for name in ("avi", "webm"):
        with open_video(media[name]) as video:
            assert [frame_index(f) for f in video.read([0, 9, 15])] == [0, 9, 15]


@pytest.fixture(autouse=True)
def _fresh_decord_failures(monkeypatch):
    # FallbackVideo remembers, per process, the files decord failed on.
    monkeypatch.setattr(video_decode, "_DECORD_FAILED", set())


def test_fallback_uses_pyav_when_decord_cannot_open(media, monkeypatch, caplog):
    attempts = []

    def refuse(self, path, num_threads=1):
        attempts.append(path)
        raise VideoDecodeError(path, "simulated decord failure")

    monkeypatch.setattr(video_decode.DecordVideo, "__init__", refuse)
    with caplog.at_level(logging.WARNING), open_video(media["lossless"]) as video:
        assert isinstance(video, FallbackVideo) and isinstance(video._active, PyAVVideo)
        np.testing.assert_array_equal(video.read([2, 4]), gray_frames(24)[[2, 4]])
    assert "simulated decord failure" in caplog.text and media["lossless"] in caplog.text
    with caplog.at_level(logging.WARNING), open_video(media["lossless"]) as video:  # the next epoch
        np.testing.assert_array_equal(video.read([3]), gray_frames(24)[[3]])
    assert len(attempts) == 1 and caplog.text.count("simulated decord failure") == 1  # no retry, one warning


@requires_decord
def test_fallback_uses_pyav_when_decord_fails_mid_read(media, monkeypatch):
    def broken(self, indices):
        raise VideoDecodeError(self.path, "simulated decode error")

    monkeypatch.setattr(video_decode.DecordVideo, "_read_sorted", broken)
    with open_video(media["lossless"]) as video:
        np.testing.assert_array_equal(video.read([1, 23]), gray_frames(24)[[1, 23]])
        assert isinstance(video._active, PyAVVideo)


def test_fallback_when_decord_is_not_installed(media, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` raise ImportError
    with open_video(media["avi"]) as video:
        assert isinstance(video._active, PyAVVideo)
        assert video.read([3]).shape == (1, HEIGHT, WIDTH, 3)
    with pytest.raises(video_decode.BackendUnavailableError, match="decord is not installed"):
        open_video(media["avi"], "decord")


@pytest.mark.parametrize("backend", ["auto", pytest.param("decord", marks=requires_decord), "pyav"])
def test_corrupt_file_raises_an_error_naming_it(media, backend):
    with pytest.raises(VideoDecodeError, match="corrupt.mp4"):
        open_video(media["corrupt"], backend)


def test_missing_file_raises_decode_error(media):
    with pytest.raises(VideoDecodeError, match="nowhere.mp4"):
        open_video(os.path.join(media["root"], "nowhere.mp4"))


def test_frame_folder_with_template(media):
    with open_video(media["frames"], filename_tmpl="img_{:05}.png") as video:
        assert video.info.num_frames == 12 and video.info.fps == video_decode.DEFAULT_FPS
        assert [frame_index(f) for f in video.read([11, 0, 4])] == [11, 0, 4]
    with open_video(media["frames"], "frames", filename_tmpl="img_{:05}.png", num_frames=5) as video:
        assert video.info.num_frames == 5
    with open_video(media["frames"], "frames", filename_tmpl="img_{:05}.png", num_frames=14) as video:
        with pytest.raises(VideoDecodeError, match="img_00014.png"):
            video.read([13])


def test_frame_folder_sorts_names_naturally(media):
    with open_video(media["unpadded"]) as video:
        assert [frame_index(f) for f in video.read(range(12))] == list(range(12))
    assert sorted(["f10", "f2", "F1"], key=video_decode.natural_sort_key) == ["F1", "f2", "f10"]


def test_gif_reader(media):
    with open_video(media["gif"]) as video:
        assert video.info.num_frames == 8 and video.info.fps == pytest.approx(10.0)
        assert [frame_index(f) for f in video.read([7, 2, 2])] == [7, 2, 2]


def test_read_checks_index_range_and_helper_returns_indices(media):
    with open_video(media["avi"]) as video:
        with pytest.raises(ValueError, match="out of range"):
            video.read([16])
    frames, indices, info = read_video_frames(media["avi"], lambda i: [0, i.num_frames - 1])
    assert indices == [0, 15] and frames.shape[0] == 2 and info.num_frames == 16


def test_modules_import_without_decord_and_av():
    code = (
        "import sys; sys.modules['decord'] = None; sys.modules['av'] = None\n"
        "import videomamba.core.video_decode, videomamba.core.frame_sampling\n"
        "import videomamba.core.masking, videomamba.core.clip_teacher\n"
        "import videomamba.video_sm.datasets\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------------------------------ samplers


@pytest.mark.parametrize("num_frames", [1, 3, 8, 17, 100, 301])
@pytest.mark.parametrize("segments", [4, 8])
def test_sparse_segment_indices_in_range_sorted_and_within_segments(num_frames, segments):
    generator = torch.Generator().manual_seed(0)
    width = (num_frames - 1) / segments
    for _ in range(20):
        indices = sparse_segment_indices(num_frames, segments, mode="train", generator=generator)
        assert len(indices) == segments and indices == sorted(indices)
        for i, index in enumerate(indices):
            assert round(width * i) <= index <= round(width * (i + 1)) <= num_frames - 1
    for views in (1, 3, 4):
        for view in range(views):
            indices = sparse_segment_indices(num_frames, segments, mode="test", view_index=view, num_views=views)
            assert indices == sorted(indices) and 0 <= indices[0] and indices[-1] < num_frames


def test_sparse_sampling_covers_every_frame_and_test_views_are_shifted():
    generator = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(400):
        seen.update(sparse_segment_indices(50, 8, generator=generator))
    assert seen == set(range(50))
    views = [sparse_segment_indices(301, 8, mode="test", view_index=v, num_views=4) for v in range(4)]
    assert len({tuple(v) for v in views}) == 4
    assert all(
        a < b for earlier, later in zip(views, views[1:], strict=False) for a, b in zip(earlier, later, strict=True)
    )
    assert views == [sparse_segment_indices(301, 8, mode="test", view_index=v, num_views=4) for v in range(4)]
    assert sparse_segment_indices(301, 8, mode="val") == sparse_segment_indices(301, 8, mode="test")


def test_short_videos_repeat_frames_evenly():
    assert sparse_segment_indices(3, 8, mode="val") == [0, 0, 0, 0, 1, 1, 1, 1]
    assert tsn_segment_indices(3, 6, mode="val") == [0, 0, 1, 1, 2, 2]
    assert sparse_segment_indices(1, 4, mode="train") == [0, 0, 0, 0]


def test_tsn_indices_match_the_original_two_view_ssv2_test_and_accept_any_view_count():
    tick = 100 / 8
    assert tsn_segment_indices(100, 8, mode="test", view_index=0, num_views=2) == [int(tick * i) for i in range(8)]
    assert tsn_segment_indices(100, 8, mode="test", view_index=1, num_views=2) == [
        int(tick / 2 + tick * i) for i in range(8)
    ]
    views = [tsn_segment_indices(100, 8, mode="test", view_index=v, num_views=5) for v in range(5)]
    assert len({tuple(v) for v in views}) == 5
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        indices = tsn_segment_indices(100, 8, generator=generator)
        assert all(int(tick * i) <= index < int(tick * (i + 1)) + 1 for i, index in enumerate(indices))


def test_dense_clip_indices_never_start_negative_and_pad_short_videos():
    assert dense_clip_indices(100, 8, 4, mode="val") == [35 + 4 * k for k in range(8)]
    assert dense_clip_indices(20, 8, 4, mode="val") == [0, 4, 8, 12, 16, 19, 19, 19]
    assert dense_clip_indices(20, 8, 4, mode="test", view_index=2, num_views=3) == [0, 4, 8, 12, 16, 19, 19, 19]
    starts = [dense_clip_indices(100, 8, 4, mode="test", view_index=v, num_views=3)[0] for v in range(3)]
    assert starts == [0, 35, 71]  # the middle test view is the validation window
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        indices = dense_clip_indices(60, 8, 4, generator=generator)
        assert 0 <= indices[0] and indices[-1] < 60 and np.all(np.diff(indices) == 4)


def test_interval_fps_and_named_sampling():
    generator = torch.Generator().manual_seed(0)
    assert interval_indices(40, 4, mode="middle") == [5, 15, 25, 35]
    draws = {index for _ in range(300) for index in interval_indices(40, 4, mode="rand", generator=generator)}
    assert {9, 19, 29, 39} <= draws and draws <= set(range(40))  # each interval's last frame can be drawn
    assert interval_indices(2, 4, mode="middle") == [0, 0, 1, 1]
    assert fps_indices(100, 25.0, 5.0) == [2 + 5 * k for k in range(20)]
    assert fps_indices(100, 25.0, 5.0, max_samples=3) == [2, 7, 12]
    info = VideoInfo(num_frames=3000, fps=30.0)
    assert max(sample_indices("middle", info, 8, max_seconds=30)) < 900
    assert sample_indices("fps1", info, 4) == [15, 45, 75, 105]
    assert sample_indices("fps0.5", VideoInfo(90, 30.0), 4) == [30, 30, 30, 30]
    assert pad_indices([1, 2], 4) == [1, 2, 2, 2]
    with pytest.raises(ValueError, match="unknown sample_type"):
        sample_indices("fastest", info, 4)


def test_samplers_reject_bad_arguments():
    with pytest.raises(ValueError, match="0 frames"):
        sparse_segment_indices(0, 8)
    with pytest.raises(ValueError, match="view_index"):
        sparse_segment_indices(10, 8, mode="test", view_index=2, num_views=2)
    with pytest.raises(ValueError, match="mode"):
        tsn_segment_indices(10, 8, mode="eval")


def test_unreadable_policy_replaces_counts_and_gives_up(caplog):
    def load(index: int) -> int:
        if index % 2:
            raise VideoDecodeError(f"video{index}.mp4", "broken")
        return index

    policy = UnreadableVideoPolicy(max_attempts=50)
    generator = torch.Generator().manual_seed(0)
    with caplog.at_level(logging.WARNING):
        value, used = policy.load(load, 3, 10, generator)
    assert value == used and used % 2 == 0 and policy.num_failures >= 1 and "video3.mp4" in caplog.text
    hopeless = UnreadableVideoPolicy(max_attempts=3)
    with pytest.raises(RuntimeError, match="3 consecutive samples could not be read"):
        hopeless.load(lambda i: load(1), 1, 10)
    assert hopeless.num_failures == 3


# ---------------------------------------------------------------------------------------- list files


def write(path: str, text: str) -> str:
    with open(path, "w") as handle:
        handle.write(text)
    return path


def test_read_video_list_formats(tmp_path):
    comma = write(tmp_path / "a.csv", "k400/a b.mp4,3\n\n# comment\nk400/c.mp4, 7\n")
    records = read_video_list(comma, delimiter=",", prefix="/data")
    assert [(r.path, r.video_id, r.label, r.line_number) for r in records] == [
        ("/data/k400/a b.mp4", "k400/a b.mp4", 3, 1),
        ("/data/k400/c.mp4", "k400/c.mp4", 7, 4),
    ]
    spaced = read_video_list(write(tmp_path / "b.csv", "my video.webm 12\n"), delimiter=" ")
    assert spaced[0].path == "my video.webm" and spaced[0].label == 12
    frames = read_video_list(write(tmp_path / "c.csv", "f/1 45 2\n"), list_format="frames")
    assert frames[0].num_frames == 45 and frames[0].label == 2
    long = read_video_list(
        write(tmp_path / "d.csv", "v.mp4,0.37,183.5\n"), list_format="long", delimiter=",", regression=True
    )
    assert long[0].label == pytest.approx(0.37) and long[0].duration == 183.5
    unlabeled = read_video_list(write(tmp_path / "e.csv", "x.mp4\n"), list_format="pretrain", require_labels=False)
    assert unlabeled[0].label is None


@pytest.mark.parametrize(
    "text, list_format, message",
    [
        ("a.mp4 1\nb.mp4\n", "video", r"bad.csv:2: expected path<d>label"),
        ("a.mp4 one\n", "video", r"bad.csv:1: label 'one' is not an integer"),
        ("a.mp4 -1\n", "video", r"bad.csv:1: negative class index"),
        ("f 0 1\n", "frames", r"bad.csv:1: frame count '0'"),
        ("v.mp4 1 long\n", "long", r"bad.csv:1: duration 'long'"),
        ("\n# nothing\n", "video", r"holds no samples"),
    ],
)
def test_read_video_list_errors_name_file_and_line(tmp_path, text, list_format, message):
    with pytest.raises(ValueError, match=message):
        read_video_list(write(tmp_path / "bad.csv", text), list_format=list_format)


def test_missing_list_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        read_video_list(tmp_path / "absent.csv")


def test_read_video_list_ignores_a_byte_order_mark(tmp_path):
    # Spreadsheet and Windows editors save UTF-8 with a BOM; it used to become part of the first path.
    listed = tmp_path / "bom.csv"
    listed.write_text("clip one.avi 0\r\nclip_2.webm\t1\r\n", encoding="utf-8-sig")
    records = read_video_list(listed, prefix="/data")
    assert [(r.path, r.label) for r in records] == [("/data/clip one.avi", 0), ("/data/clip_2.webm", 1)]


def test_long_video_windows():
    assert long_video_windows(20, 60, 16) == [(0.0, 20)]
    assert long_video_windows(100, 60, 16) == [(0, 60), (16, 76), (32, 92), (48, 100)]
    assert long_video_windows(80, 60, 16) == [(0, 60), (16, 76), (32, 80)]
    assert long_video_windows(61, 60, 40) == [(0, 60)]  # a 21 s remainder is under half a window


# ------------------------------------------------------------------------------------------ datasets


def passthrough(frames: np.ndarray, crop_index: int = 0) -> torch.Tensor:
    """Test transform that returns the decoded frames themselves (to check which frames were read)."""
    return torch.from_numpy(frames)


def make_args(data_path: str, **overrides: object) -> Namespace:
    values = dict(
        data_set="Kinetics_sparse", data_path=data_path, prefix="", split=",", num_frames=4, sampling_rate=2,
        input_size=32, short_side_size=32, test_num_segment=4, test_num_crop=3, aa="rand-m7-n4-mstd0.5-inc1",
        reprob=0.25, remode="pixel", recount=1, num_sample=2, filename_tmpl="img_{:05}.png", use_decord=True,
        trimmed=8, time_stride=4, nb_classes=5, mixup=0.8, cutmix=1.0, cutmix_minmax=None, mixup_prob=1.0,
        mixup_switch_prob=0.5, mixup_mode="batch", smoothing=0.1,
    )  # fmt: skip
    values.update(overrides)
    return Namespace(**values)


@pytest.fixture(scope="module")
def kinetics_dir(media, tmp_path_factory):
    root = tmp_path_factory.mktemp("k400")
    lines = "lossless.mp4,0\ntexture.mp4,1\ngray.avi,2\ngray.webm,4\n"
    for split in ("train", "val", "test"):
        write(root / f"{split}.csv", lines)
    return str(root)


def test_kinetics_sparse_train_with_repeated_augmentation(media, kinetics_dir):
    args = make_args(kinetics_dir, prefix=media["root"])
    dataset, nb_classes = build_dataset(True, False, args)
    assert nb_classes == 5 and len(dataset) == 4
    clips, labels, indices, views = dataset[2]
    assert clips.shape == (2, 3, 4, 32, 32) and clips.dtype == torch.float32
    assert labels.tolist() == [2, 2] and indices.tolist() == [2, 2] and views.shape == (2, 3)
    # Two workers: the dataset (transforms, read policy) must pickle and sample independently per worker.
    loader = DataLoader(dataset, batch_size=2, collate_fn=repeated_sample_collate, num_workers=2)
    clips, labels, indices, views = next(iter(loader))
    assert clips.shape == (4, 3, 4, 32, 32) and labels.tolist() == [0, 0, 1, 1] and indices.tolist() == [0, 0, 1, 1]


def test_test_mode_returns_every_segment_and_crop_view(media, kinetics_dir):
    dataset, _ = build_dataset(False, True, make_args(kinetics_dir, prefix=media["root"]))
    assert len(dataset) == 4 * 4 * 3
    seen: dict[int, set] = {}
    for i in range(len(dataset)):
        clip, label, video_index, view = dataset[i]
        assert clip.shape == (3, 4, 32, 32) and label == dataset.labels[video_index]
        seen.setdefault(video_index, set()).add(tuple(view.tolist()))
    assert seen == {v: {(0, s, c) for s in range(4) for c in range(3)} for v in range(4)}
    assert dataset.video_ids == ["lossless.mp4", "texture.mp4", "gray.avi", "gray.webm"]
    torch.testing.assert_close(dataset[5][0], dataset[5][0])  # test views are deterministic
    assert not torch.equal(dataset[12][0], dataset[13][0])  # crops 0 and 1 of the textured video differ


def test_test_views_read_the_sampler_frames(media, kinetics_dir):
    dataset, _ = build_dataset(False, True, make_args(kinetics_dir, prefix=media["root"]))
    dataset.transform = passthrough
    for segment in range(4):
        frames = dataset[segment * 3][0].numpy()  # video 0 (lossless, 24 frames), crop 0
        expected = sparse_segment_indices(24, 4, mode="test", view_index=segment, num_views=4)
        assert [frame_index(f) for f in frames] == expected


def test_validation_mode_is_one_centre_view(media, kinetics_dir):
    dataset, _ = build_dataset(False, False, make_args(kinetics_dir, prefix=media["root"]))
    assert len(dataset) == 4
    clip, label, index, view = dataset[1]
    assert clip.shape == (3, 4, 32, 32) and label == 1 and view.tolist() == [0, 0, 0]


def test_dense_kinetics_sampling(media, kinetics_dir):
    args = make_args(kinetics_dir, prefix=media["root"], data_set="Kinetics", test_num_segment=2, test_num_crop=1)
    dataset, _ = build_dataset(False, True, args)
    dataset.transform = passthrough
    first = [frame_index(f) for f in dataset[0][0].numpy()]
    last = [frame_index(f) for f in dataset[1][0].numpy()]
    assert first == [0, 2, 4, 6] and last == [17, 19, 21, 23]


def test_ssv2_decord_and_raw_frames(media, tmp_path):
    write(tmp_path / "train.csv", "lossless.mp4 3\ngray.avi 173\n")
    write(tmp_path / "test.csv", "lossless.mp4 3\n")
    args = make_args(
        str(tmp_path), data_set="SSV2", prefix=media["root"], split=" ", nb_classes=174, test_num_segment=3
    )
    train, _ = build_dataset(True, False, args)
    assert train.transform.hflip == 0.0 and train.sampling == "tsn"
    assert train[1][0].shape == (2, 3, 4, 32, 32)
    test, _ = build_dataset(False, True, args)
    test.transform = passthrough
    assert len(test) == 3 * 3
    views = [[frame_index(f) for f in test[s * 3][0].numpy()] for s in range(3)]
    assert views == [tsn_segment_indices(24, 4, mode="test", view_index=s, num_views=3) for s in range(3)]
    frames_dir = tmp_path / "raw"
    frames_dir.mkdir()
    write(frames_dir / "train.csv", "video_a 12 5\n")
    raw_args = make_args(str(frames_dir), data_set="SSV2", prefix=os.path.dirname(media["frames"]), split=" ",
                         nb_classes=174, use_decord=False)  # fmt: skip
    raw, _ = build_dataset(True, False, raw_args)
    raw.transform = passthrough
    raw.num_sample = 1
    clip, label, _, _ = raw[0]
    assert label == 5 and sorted(frame_index(f) for f in clip.numpy()) == [frame_index(f) for f in clip.numpy()]


def test_long_video_windows_all_present_and_frames_inside_them(media, tmp_path):
    task = tmp_path / "lvu_director"  # the LVU task (and its class count) comes from the path
    task.mkdir()
    write(task / "test.csv", "long.mp4,2,20\nshort.mp4,1,1.5\n")
    args = make_args(
        str(task), data_set="LVU", prefix=media["root"], nb_classes=10, test_num_segment=2, test_num_crop=1
    )
    dataset, nb_classes = build_dataset(False, True, args)
    assert nb_classes == 10
    # long.mp4: 40 frames at 2 fps = 20 s -> windows [0,8] [4,12] [8,16] [12,20]; short.mp4: one window.
    assert dataset.windows[0] == [(0.0, 8.0), (4.0, 12.0), (8.0, 16.0), (12.0, 20)]
    assert len(dataset) == (4 + 1) * 2
    dataset.transform = passthrough
    views_of_long = set()
    for i in range(len(dataset)):
        frames, label, video_index, view = dataset[i]
        window, segment, crop = view.tolist()
        if video_index == 0:
            views_of_long.add((window, segment, crop))
            start = int(dataset.windows[0][window][0] * 2)
            indices = [frame_index(f) for f in frames.numpy()]
            assert all(start <= k < start + 16 for k in indices)
            assert indices == [
                start + k for k in sparse_segment_indices(16, 4, mode="test", view_index=segment, num_views=2)
            ]
    assert views_of_long == {(w, s, 0) for w in range(4) for s in range(2)}


def test_regression_labels_are_floats(media, tmp_path):
    task = tmp_path / "lvu_like"
    task.mkdir()
    write(task / "train.csv", "long.mp4,0.25,20\n")
    args = make_args(str(task), data_set="LVU", prefix=media["root"], nb_classes=1, num_sample=1)
    dataset, nb_classes = build_dataset(True, False, args)
    clip, label, _, _ = dataset[0]
    assert nb_classes == 1 and label.dtype == torch.float32 and label.item() == pytest.approx(0.25)
    write(tmp_path / "train.csv", "long.mp4,0.5\n")
    kinetics_regression = make_args(str(tmp_path), prefix=media["root"], nb_classes=1, regression=True, num_sample=1)
    assert build_dataset(True, False, kinetics_regression)[0][0][1].item() == pytest.approx(0.5)


def test_corrupt_videos_are_logged_counted_and_replaced(media, tmp_path, caplog):
    write(tmp_path / "train.csv", "corrupt.mp4,1\nlossless.mp4,0\nmissing.mp4,2\n")
    dataset, _ = build_dataset(True, False, make_args(str(tmp_path), prefix=media["root"], num_sample=1))
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            # Replacements avoid samples that already failed, so the one readable video is found in <= 3 tries.
            clip, label, index, _ = dataset[0]
            assert index == 1 and label == 0 and clip.shape == (3, 4, 32, 32)
    assert 5 <= dataset.read_policy.num_failures <= 10 and "corrupt.mp4" in caplog.text
    write(tmp_path / "train.csv", "corrupt.mp4,1\n")
    hopeless, _ = build_dataset(True, False, make_args(str(tmp_path), prefix=media["root"], max_read_attempts=4))
    with pytest.raises(RuntimeError, match="4 consecutive samples could not be read"):
        hopeless[0]


def test_build_dataset_checks_classes_and_names(media, kinetics_dir, tmp_path):
    with pytest.raises(ValueError, match="174 classes but --nb_classes is 5"):
        build_dataset(True, False, make_args(kinetics_dir, data_set="SSV2"))
    with pytest.raises(ValueError, match="not supported"):
        build_dataset(True, False, make_args(kinetics_dir, data_set="HMDB51"))
    with pytest.raises(ValueError, match=r"train.csv:4: class 4 out of range for 3 classes"):
        build_dataset(True, False, make_args(kinetics_dir, nb_classes=3))
    with pytest.raises(FileNotFoundError, match="train.csv"):
        build_dataset(True, False, make_args(str(tmp_path)))


def test_pretraining_dataset_masks_and_repeated_samples(media, tmp_path):
    # "lossless" has no extension: the original's pretraining lists omit ".mp4".
    list_file = write(tmp_path / "pretrain.csv", "lossless 0\ntexture.mp4 1\nframes/video_a 12 0\n")
    args = make_args(list_file, prefix=media["root"], split=" ", num_frames=4, num_segments=4, mask_type="tube",
                     mask_ratio=0.75, tubelet_size=1, patch_size=8, flip=True, num_sample=2)  # fmt: skip
    dataset = build_pretraining_dataset(args)
    loader = DataLoader(dataset, batch_size=3, collate_fn=repeated_sample_collate)
    clips, masks = next(iter(loader))
    assert clips.shape == (6, 3, 4, 32, 32) and masks.shape == (6, 4 * 16) and masks.dtype == torch.bool
    assert (masks.sum(1) == 4 * 12).all()
    assert torch.equal(masks.view(6, 4, 16)[:, 0], masks.view(6, 4, 16)[:, 3])  # tube: same in every frame
    args.mask_type, args.num_sample = "attention", 1
    clip, mask = build_pretraining_dataset(args)[1]
    assert clip.shape == (3, 4, 32, 32) and mask.shape == (0,)
    args.num_segments, args.mask_type = 1, "random"  # --num_segments 1 selects dense clips
    dense = build_pretraining_dataset(args)
    clip, mask = dense[0]
    assert dense.sampling == "dense" and clip.shape == (3, 4, 32, 32) and mask.sum() == 48


def test_load_test_views_for_prediction(media):
    views = load_test_views(
        media["texture"], num_frames=4, num_segments=2, num_crops=3, input_size=32, short_side_size=32
    )
    assert views.shape == (6, 3, 4, 32, 32)


# ---------------------------------------------------------------------------------------- transforms


def test_rand_augment_uses_identical_parameters_for_every_frame():
    generator = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (1, 3, 24, 28), dtype=torch.uint8, generator=generator)
    repeated = frame.expand(6, -1, -1, -1).contiguous()
    different = torch.randint(0, 256, (6, 3, 24, 28), dtype=torch.uint8, generator=generator)
    for ops in (INCREASING_OPS, ORIGINAL_OPS):
        for name in ops:
            argument = op_argument(name, 0.7, negate=True)
            out = apply_op(repeated, name, argument)
            assert out.dtype == torch.uint8 and (out == out[:1]).all(), name
            per_frame = torch.cat([apply_op(f[None], name, argument) for f in different])
            torch.testing.assert_close(apply_op(different, name, argument), per_frame, atol=1, rtol=0)
    augment = VideoRandAugment("rand-m9-n4-mstd0.5-inc1")
    for seed in range(10):
        out = augment(repeated, torch.Generator().manual_seed(seed))
        assert (out == out[:1]).all()
    ops = augment.sample_ops(torch.Generator().manual_seed(3))
    assert ops == augment.sample_ops(torch.Generator().manual_seed(3))


def test_parse_rand_augment_policy():
    config = parse_rand_augment("rand-m7-n4-mstd0.5-inc1")
    assert (config.magnitude, config.num_ops, config.magnitude_std, config.increasing) == (7, 4, 0.5, True)
    with pytest.raises(ValueError, match="cannot parse 'x3'"):
        parse_rand_augment("rand-m7-x3")


def test_cube_random_erasing_uses_one_box_for_all_frames():
    clip = torch.zeros(3, 5, 32, 32)
    eraser = RandomErasing(1.0, "pixel", cube=True)
    for seed in range(5):
        erased = eraser(clip, torch.Generator().manual_seed(seed))
        changed = erased.ne(0).any(dim=0)  # (T, H, W)
        assert changed.any() and (changed == changed[:1]).all()
        assert not torch.equal(erased[:, 0], erased[:, 1])  # fresh noise per frame
    per_frame = RandomErasing(1.0, "const", cube=False)(torch.ones(3, 5, 32, 32), torch.Generator().manual_seed(0))
    boxes = per_frame.eq(0).all(dim=0)
    assert not (boxes == boxes[:1]).all()
    assert RandomErasing(0.0)(clip) is clip


def test_mixup_and_cutmix_targets():
    target = torch.tensor([0, 1, 2, 3])
    clips = torch.stack([torch.full((3, 2, 8, 8), float(i)) for i in range(4)])
    mixup = VideoMixup(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=4)
    mixed, soft = mixup(clips.clone(), target, generator=torch.Generator().manual_seed(0))
    lam = soft[0, 0].item()
    torch.testing.assert_close(mixed[0], torch.full((3, 2, 8, 8), 3 * (1 - lam)))
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    assert soft[0, 3].item() == pytest.approx(1 - lam)
    cutmix = VideoMixup(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=4)
    mixed, soft = cutmix(clips.clone(), target, generator=torch.Generator().manual_seed(1))
    from_partner = mixed[0].eq(3).all(dim=0)  # (T, H, W)
    assert (from_partner == from_partner[:1]).all()  # the box spans every frame
    lam = 1 - from_partner[0].float().mean().item()
    off = 0.1 / 4
    assert soft[0, 0].item() == pytest.approx(lam * (1 - 0.1 + off) + (1 - lam) * off)
    for mode in ("pair", "elem"):
        _, soft = VideoMixup(0.8, 1.0, mode=mode, num_classes=4)(
            clips.clone(), target, torch.Generator().manual_seed(2)
        )
        torch.testing.assert_close(soft.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="even batch"):
        mixup(clips[:3].clone(), target[:3])
    assert build_mixup(make_args("."), 5).num_classes == 5
    assert build_mixup(make_args(".", mixup=0.0, cutmix=0.0), 5) is None


def test_eval_crops_cover_the_long_side():
    frames = np.zeros((2, 32, 48, 3), dtype=np.uint8)
    frames[..., :8, :] = 255  # a bright band on the left
    transform = VideoEvalTransform(32, 32, num_crops=3)
    assert crop_offsets(48, 32, 3) == [0, 8, 16] and crop_offsets(48, 32, 1) == [8]
    left, centre, right = (transform(frames, c) for c in range(3))
    assert left.shape == (3, 2, 32, 32) and left[:, :, :, :8].mean() > right[:, :, :, :8].mean()
    portrait = VideoEvalTransform(16, 16, num_crops=2)(np.zeros((1, 48, 32, 3), dtype=np.uint8), 1)
    assert portrait.shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="short_side_size 16 must be at least input_size 32"):
        VideoEvalTransform(32, 16)


def test_train_and_pretrain_transforms():
    frames = texture_frames(4)
    train = VideoTrainTransform(
        24, hflip=0.0, auto_augment="rand-m7-n4-mstd0.5-inc1", random_erasing=RandomErasing(0.5)
    )
    clip = train(frames, torch.Generator().manual_seed(0))
    assert clip.shape == (3, 4, 24, 24) and clip.dtype == torch.float32 and torch.isfinite(clip).all()
    # A crop of the whole frame, so the only random step left is the flip.
    whole = dict(scale=(1.0, 1.0), ratio=(WIDTH / HEIGHT, WIDTH / HEIGHT), auto_augment=None)
    flipped = VideoTrainTransform(HEIGHT, hflip=1.0, **whole)(frames)
    unflipped = VideoTrainTransform(HEIGHT, hflip=0.0, **whole)(frames)
    assert flipped.shape == (3, 4, HEIGHT, HEIGHT)
    torch.testing.assert_close(flipped, unflipped.flip(-1))
    for _ in range(20):
        top, left, h, w = random_resized_crop_box(32, 40, (0.08, 1.0), (3 / 4, 4 / 3))
        assert 0 <= top <= 32 - h and 0 <= left <= 40 - w
        top, left, h, w = multi_scale_crop_box(32, 40, 24)
        assert 0 <= top <= 32 - h and 0 <= left <= 40 - w
    assert VideoPretrainTransform(24)(frames).shape == (3, 4, 24, 24)
