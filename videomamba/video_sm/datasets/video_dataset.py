"""List-file video datasets for classification, regression and masked pretraining.

One class, `VideoClsDataset`, serves every fine-tuning data set of the original (which had four
near-copies): the sampling (`sparse`, `tsn`, `dense`), the list format (`video`, `frames`, `long`)
and long-video windows are options. Items are enumerated explicitly:

- train / val: one item per video, or per (video, window) for long videos;
- test: one item per (video, window, temporal view, spatial crop), for any number of views.

Every item is ``(clip, label, video_index, view)`` where `view` is a LongTensor
``[window, segment, crop]`` (window is 0 for short videos); `dataset.video_ids[video_index]` names
the video as written in the list file. A multi-view merge groups by `video_index` and keeps one
prediction per distinct `view`, so every window of a long video counts (the original merge kept only
one window per view).

With ``num_sample = S > 1`` (repeated augmentation, train only) a decoded video yields S augmented
clips: the item's clip is (S, C, T, H, W) and its other fields have a leading S; collate such
batches with `repeated_sample_collate`, which flattens them into B·S samples.

A video that cannot be decoded is logged with its path, counted, and replaced by a random other
item (`UnreadableVideoPolicy`, at most ``max_read_attempts`` in a row), so a long run survives
corrupt files. At test time the replacement returns its own video_index and view, so the corrupt
video is simply absent from the merged results (and the log says which one it was).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from videomamba.core.cli import UserError
from videomamba.core.frame_sampling import dense_clip_indices, sparse_segment_indices, tsn_segment_indices
from videomamba.core.masking import MASK_TYPES, build_mask
from videomamba.core.text_lists import looks_like_an_extra_column, read_list_lines
from videomamba.core.video_decode import UnreadableVideoPolicy, open_video

from .transforms import VideoEvalTransform, VideoPretrainTransform, VideoTrainTransform

logger = logging.getLogger(__name__)

MODES = ("train", "val", "test")
SAMPLINGS = ("sparse", "tsn", "dense")
LIST_FORMATS = ("video", "frames", "long", "pretrain")


@dataclass(frozen=True)
class VideoRecord:
    """One line of a list file.

    `path` is the resolved location (``--prefix`` joined), `video_id` the path as written.
    `num_frames` is set for frame folders, `duration` (seconds) for long videos.
    """

    path: str
    video_id: str
    label: int | float | None
    line_number: int
    num_frames: int | None = None
    duration: float | None = None


def _split_line(line: str, delimiter: str, max_columns: int) -> list[str]:
    # Split from the right: labels and counts never contain the delimiter, paths might.
    if delimiter.strip() == "":
        return line.rsplit(None, max_columns - 1)
    return [part.strip() for part in line.rsplit(delimiter, max_columns - 1)]


def _parse_label(text: str, regression: bool, where: str) -> int | float:
    try:
        return float(text) if regression else int(text)
    except ValueError:
        kind = "a number" if regression else "an integer class index"
        raise UserError(f"{where}: label {text!r} is not {kind}") from None


def read_video_list(
    list_file: str | os.PathLike,
    *,
    list_format: str = "video",
    delimiter: str = " ",
    prefix: str = "",
    regression: bool = False,
    require_labels: bool = True,
) -> list[VideoRecord]:
    """Parse a header-less list file into records.

    Formats (columns separated by `delimiter`; blank lines and lines starting with ``#`` skipped):
        video:    ``path label``
        frames:   ``folder num_frames label`` (SSv2 raw frames)
        long:     ``path label duration_seconds`` (LVU, COIN, Breakfast windows)
        pretrain: ``path [label]`` or ``folder num_frames label`` (the pretraining lists)
    Labels are integer class indices, or floats with `regression`. Without `require_labels` a line
    may hold only a path (label None), for prediction lists. Malformed lines (a stray column, non-UTF-8
    bytes included) raise UserError naming the file and line.
    """
    if list_format not in LIST_FORMATS:
        raise UserError(f"list_format must be one of {LIST_FORMATS}, got {list_format!r}")
    list_file = str(list_file)
    max_columns = 2 if list_format == "video" else 3
    records = []
    # A byte-order mark is dropped; a non-UTF-8 line is an error naming the file and line.
    for line_number, line in read_list_lines(list_file):
        where = f"{list_file}:{line_number}"
        fields = _split_line(line, delimiter, max_columns)
        if list_format == "pretrain" and len(fields) == 3 and not fields[1].isdigit():
            fields = _split_line(line, delimiter, 2)  # a path holding the delimiter, then the label
        count = len(fields)
        full_path = os.path.join(prefix, fields[0]) if prefix else fields[0]
        if count == max_columns and looks_like_an_extra_column(fields[0], delimiter, full_path):
            columns = len(_split_line(line, delimiter, 100))
            raise UserError(
                f"{where}: {columns} columns with delimiter {delimiter!r}, expected at most {max_columns} "
                f"in a {list_format} list (a stray column?); got {line!r}"
            )
        num_frames = duration = None
        if list_format in ("video", "pretrain") and count == 1 and not require_labels:
            label = None
        elif list_format in ("video", "pretrain") and count == 2:
            label = _parse_label(fields[1], regression, where)
        elif list_format in ("frames", "pretrain") and count == 3:
            if not fields[1].isdigit() or int(fields[1]) <= 0:
                raise UserError(f"{where}: frame count {fields[1]!r} is not a positive integer")
            num_frames, label = int(fields[1]), _parse_label(fields[2], regression, where)
        elif list_format == "long" and count == 3:
            label = _parse_label(fields[1], regression, where)
            try:
                duration = float(fields[2])
            except ValueError:
                raise UserError(f"{where}: duration {fields[2]!r} is not a number of seconds") from None
            if not duration > 0:
                raise UserError(f"{where}: duration must be positive, got {duration}")
        else:
            expected = {
                "video": "path<d>label",
                "frames": "folder<d>num_frames<d>label",
                "long": "path<d>label<d>duration",
                "pretrain": "path<d>label or folder<d>num_frames<d>label",
            }[list_format]
            raise UserError(f"{where}: expected {expected} with delimiter {delimiter!r}, got {line!r}")
        if isinstance(label, int) and label < 0:
            raise UserError(f"{where}: negative class index {label}")
        path = os.path.join(prefix, fields[0]) if prefix else fields[0]
        records.append(VideoRecord(path, fields[0], label, line_number, num_frames, duration))
    if not records:
        raise UserError(f"list file {list_file} holds no samples")
    return records


def long_video_windows(duration: float, window_seconds: float, stride_seconds: float) -> list[tuple[float, float]]:
    """Sliding windows (start, end) in seconds over a long video (``--trimmed``, ``--time_stride``).

    A video shorter than one window is a single window. Otherwise windows of `window_seconds` start
    every `stride_seconds`; the first window that reaches past the end is cut at the end and kept
    only if it is at least half a window long; no window starts after it.
    """
    if window_seconds <= 0 or stride_seconds <= 0:
        raise UserError(f"window and stride must be positive, got {window_seconds}, {stride_seconds}")
    if duration <= window_seconds:
        return [(0.0, duration)]
    windows = []
    start = 0.0
    while True:
        end = start + window_seconds
        if end >= duration:
            if duration - start >= window_seconds / 2 or not windows:
                windows.append((start, duration))
            return windows
        windows.append((start, end))
        start += stride_seconds


def window_frame_range(num_frames: int, fps: float, window: tuple[float, float] | None) -> tuple[int, int]:
    """(first frame, frame count) of a (start, end) window in seconds; the whole video when window is None."""
    if window is None:
        return 0, num_frames
    first = min(int(window[0] * fps), num_frames - 1)
    return first, max(1, min(num_frames, int(round(window[1] * fps))) - first)


def _sample_frames(
    sampling: str,
    num_frames: int,
    clip_len: int,
    frame_interval: int,
    mode: str,
    view_index: int,
    num_views: int,
) -> list[int]:
    if sampling == "sparse":
        return sparse_segment_indices(num_frames, clip_len, mode=mode, view_index=view_index, num_views=num_views)
    if sampling == "tsn":
        return tsn_segment_indices(num_frames, clip_len, mode=mode, view_index=view_index, num_views=num_views)
    return dense_clip_indices(
        num_frames, clip_len, frame_interval, mode=mode, view_index=view_index, num_views=num_views
    )


class _ListVideoReading:
    """Decoding shared by the datasets: open a record's video and read sampled frames from a window."""

    records: list[VideoRecord]
    video_backend: str
    filename_tmpl: str | None
    # The original's pretraining lists may omit ".mp4"; only the pretraining dataset turns this on.
    append_mp4_when_missing = False

    def _read_frames(
        self,
        record: VideoRecord,
        choose: Callable[[int], list[int]],
        window: tuple[float, float] | None = None,
    ) -> np.ndarray:
        path = record.path
        if self.append_mp4_when_missing and record.num_frames is None and not os.path.splitext(path)[1]:
            path = path if os.path.exists(path) else path + ".mp4"
        if record.num_frames is not None:
            video = open_video(path, "frames", filename_tmpl=self.filename_tmpl, num_frames=record.num_frames)
        else:
            video = open_video(path, self.video_backend)
        with video:
            first, count = window_frame_range(video.info.num_frames, video.info.fps, window)
            indices = [first + i for i in choose(count)]
            return video.read(indices)


class VideoClsDataset(_ListVideoReading, Dataset):
    """Video classification / regression dataset over a list file (see the module notes).

    Args:
        list_file: the annotation list.
        mode: ``train``, ``val`` or ``test``.
        sampling: ``sparse`` (Kinetics_sparse, long videos), ``tsn`` (SSv2) or ``dense`` (Kinetics).
        num_frames: frames per clip.
        frame_interval: ``dense`` only: the gap between sampled frames (``--sampling_rate``).
        list_format: ``video``, ``frames`` (SSv2 raw frames) or ``long`` (with durations; windows).
        delimiter, prefix: list-file column delimiter (``--split``) and root joined to paths (``--prefix``).
        regression: float labels instead of class indices.
        num_classes: when given, class labels must be below it.
        window_seconds, stride_seconds: ``long`` only: window length and stride (``--trimmed``,
            ``--time_stride``); None keeps each video whole.
        test_num_segment, test_num_crop: test views (temporal x spatial).
        transform: train: called as transform(frames); val/test: transform(frames, crop_index).
            Defaults: `VideoTrainTransform` / `VideoEvalTransform`.
        num_sample: augmented clips per decoded video in train mode.
        video_backend: `open_video` backend for files.
        filename_tmpl: frame file names in frame folders.
        max_read_attempts: consecutive unreadable videos tolerated before an error.
    """

    def __init__(
        self,
        list_file: str | os.PathLike,
        mode: str,
        *,
        sampling: str = "sparse",
        num_frames: int = 16,
        frame_interval: int = 4,
        list_format: str = "video",
        delimiter: str = " ",
        prefix: str = "",
        regression: bool = False,
        num_classes: int | None = None,
        window_seconds: float | None = None,
        stride_seconds: float | None = None,
        test_num_segment: int = 1,
        test_num_crop: int = 1,
        input_size: int = 224,
        short_side_size: int = 224,
        transform: Callable[..., torch.Tensor] | None = None,
        num_sample: int = 1,
        video_backend: str = "auto",
        filename_tmpl: str | None = "img_{:05}.jpg",
        max_read_attempts: int = 10,
    ) -> None:
        if mode not in MODES:
            raise UserError(f"mode must be one of {MODES}, got {mode!r}")
        if sampling not in SAMPLINGS:
            raise UserError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if list_format not in ("video", "frames", "long"):
            raise UserError(f"list_format must be 'video', 'frames' or 'long', got {list_format!r}")
        if test_num_segment < 1 or test_num_crop < 1 or num_sample < 1:
            raise UserError("test_num_segment, test_num_crop and num_sample must be at least 1")
        self.list_file = str(list_file)
        self.mode = mode
        self.sampling = sampling
        self.num_frames = num_frames
        self.frame_interval = frame_interval
        self.regression = regression
        self.video_backend = video_backend
        self.filename_tmpl = filename_tmpl
        self.num_sample = num_sample if mode == "train" else 1
        self.records = read_video_list(
            list_file, list_format=list_format, delimiter=delimiter, prefix=prefix, regression=regression
        )
        if num_classes is not None and not regression:
            for record in self.records:
                if not record.label < num_classes:
                    raise UserError(
                        f"{self.list_file}:{record.line_number}: class {record.label} out of range for "
                        f"{num_classes} classes (--nb_classes)"
                    )
        if list_format == "long" and window_seconds is not None:
            self.windows = [
                long_video_windows(r.duration, window_seconds, stride_seconds or window_seconds) for r in self.records
            ]
        else:
            self.windows = [[None] for _ in self.records]
        self.num_segment_views = test_num_segment if mode == "test" else 1
        self.num_crop_views = test_num_crop if mode == "test" else 1
        # Explicit item table: (record, window, segment, crop) per row, video-major.
        rows = [
            (r, w, s, c)
            for r, windows in enumerate(self.windows)
            for w in range(len(windows))
            for s in range(self.num_segment_views)
            for c in range(self.num_crop_views)
        ]
        self.items = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        if transform is None:
            transform = (
                VideoTrainTransform(input_size)
                if mode == "train"
                else VideoEvalTransform(input_size, short_side_size, self.num_crop_views)
            )
        self.transform = transform
        self.read_policy = UnreadableVideoPolicy(max_read_attempts)
        if not os.path.exists(self.records[0].path) and "://" not in self.records[0].path:
            logger.warning(
                "first video of %s not found at %s; check --prefix if every video is missing",
                self.list_file,
                self.records[0].path,
            )

    @property
    def video_ids(self) -> list[str]:
        """Video names as written in the list file, indexed by the items' `video_index`."""
        return [r.video_id for r in self.records]

    @property
    def labels(self) -> list[int | float]:
        """Label of every video, indexed by `video_index`."""
        return [r.label for r in self.records]

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, item_index: int) -> tuple:
        record_index, window_index, segment, crop = (int(v) for v in self.items[item_index])
        record = self.records[record_index]
        window = self.windows[record_index][window_index]

        def choose(count: int) -> list[int]:
            return _sample_frames(
                self.sampling, count, self.num_frames, self.frame_interval, self.mode, segment, self.num_segment_views
            )

        frames = self._read_frames(record, choose, window)
        label = torch.tensor(record.label, dtype=torch.float32) if self.regression else record.label
        view = torch.tensor([window_index, segment, crop], dtype=torch.long)
        if self.mode != "train":
            return self.transform(frames, crop), label, record_index, view
        if self.num_sample == 1:
            return self.transform(frames), label, record_index, view
        clips = torch.stack([self.transform(frames) for _ in range(self.num_sample)])
        labels = torch.as_tensor([record.label] * self.num_sample)
        indices = torch.full((self.num_sample,), record_index, dtype=torch.long)
        return clips, labels, indices, view.expand(self.num_sample, 3).clone()

    def __getitem__(self, index: int) -> tuple:
        sample, _ = self.read_policy.load(self._load, index, len(self))
        return sample


class VideoPretrainDataset(_ListVideoReading, Dataset):
    """Masked-pretraining clips with their token masks.

    Each item is ``(clip, mask)``: clip (C, T, H, W), mask bool (T'·H'·W',) with True = masked and no
    cls slot (see `videomamba.core.masking`). For ``mask_type='attention'`` the mask depends on the
    teacher, so the item's mask is empty (shape (0,)) and the engine builds it on the device. With
    ``num_sample = S > 1`` clip and mask get a leading S (use `repeated_sample_collate`).

    Args:
        list_file: ``path label`` lines, or ``folder num_frames label`` for frame folders; a path
            without extension gets ``.mp4`` when the file without it does not exist (as the original).
        sampling: ``sparse`` (one frame per segment, the released scripts) or ``dense``.
        num_frames, frame_interval: frames per clip; ``dense`` interval (``--sampling_rate``).
        mask_type, mask_ratio: see `videomamba.core.masking.MASK_TYPES`.
        tubelet_size, patch_size, input_size: define the token grid (T / tubelet, size / patch, size / patch).
        transform: defaults to `VideoPretrainTransform(input_size)`.
    """

    def __init__(
        self,
        list_file: str | os.PathLike,
        *,
        sampling: str = "sparse",
        num_frames: int = 8,
        frame_interval: int = 1,
        delimiter: str = " ",
        prefix: str = "",
        mask_type: str = "tube",
        mask_ratio: float = 0.75,
        tubelet_size: int = 1,
        patch_size: int = 16,
        input_size: int = 224,
        transform: Callable[..., torch.Tensor] | None = None,
        num_sample: int = 1,
        video_backend: str = "auto",
        filename_tmpl: str | None = "img_{:05}.jpg",
        max_read_attempts: int = 10,
    ) -> None:
        if sampling not in ("sparse", "dense"):
            raise UserError(f"pretraining sampling must be 'sparse' or 'dense', got {sampling!r}")
        if mask_type not in MASK_TYPES:
            raise UserError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
        if num_frames % tubelet_size or input_size % patch_size:
            raise UserError(
                f"num_frames {num_frames} must divide by tubelet_size {tubelet_size} and input_size "
                f"{input_size} by patch_size {patch_size}"
            )
        self.list_file = str(list_file)
        self.append_mp4_when_missing = True
        self.records = read_video_list(
            list_file, list_format="pretrain", delimiter=delimiter, prefix=prefix, require_labels=False
        )
        self.sampling, self.num_frames, self.frame_interval = sampling, num_frames, frame_interval
        self.mask_type, self.mask_ratio = mask_type, mask_ratio
        self.mask_grid = (num_frames // tubelet_size, input_size // patch_size, input_size // patch_size)
        self.transform = transform or VideoPretrainTransform(input_size)
        self.num_sample = num_sample
        self.video_backend = video_backend
        self.filename_tmpl = filename_tmpl
        self.read_policy = UnreadableVideoPolicy(max_read_attempts)

    def __len__(self) -> int:
        return len(self.records)

    def _mask(self) -> torch.Tensor:
        if self.mask_type == "attention":
            return torch.zeros(0, dtype=torch.bool)
        return build_mask(self.mask_type, 1, self.mask_grid, self.mask_ratio)[0]

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        def choose(count: int) -> list[int]:
            return _sample_frames(self.sampling, count, self.num_frames, self.frame_interval, "train", 0, 1)

        frames = self._read_frames(self.records[index], choose)
        if self.num_sample == 1:
            return self.transform(frames), self._mask()
        clips = torch.stack([self.transform(frames) for _ in range(self.num_sample)])
        return clips, torch.stack([self._mask() for _ in range(self.num_sample)])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample, _ = self.read_policy.load(self._load, index, len(self))
        return sample


def repeated_sample_collate(batch: Sequence[tuple]) -> list:
    """Collate items whose fields all carry a leading num_sample dimension into B·num_sample samples."""
    collated = default_collate(batch)
    return [field.flatten(0, 1) if isinstance(field, torch.Tensor) else field for field in collated]


def load_test_views(
    path: str | os.PathLike,
    *,
    num_frames: int = 16,
    sampling: str = "sparse",
    frame_interval: int = 4,
    num_segments: int = 1,
    num_crops: int = 1,
    input_size: int = 224,
    short_side_size: int = 224,
    video_backend: str = "auto",
    window: tuple[float, float] | None = None,
) -> torch.Tensor:
    """All test views of one video for prediction: (num_segments · num_crops, C, T, H, W), segment-major.

    `window` (start, end) in seconds restricts sampling to that part of the video (long videos,
    see `long_video_windows`). Raises `VideoDecodeError` when the video cannot be read.
    """
    if sampling not in SAMPLINGS:
        raise UserError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    transform = VideoEvalTransform(input_size, short_side_size, num_crops)
    views = []
    with open_video(path, video_backend) as video:
        first, count = window_frame_range(video.info.num_frames, video.info.fps, window)
        for segment in range(num_segments):
            indices = _sample_frames(sampling, count, num_frames, frame_interval, "test", segment, num_segments)
            frames = video.read([first + i for i in indices])
            views.extend(transform(frames, crop) for crop in range(num_crops))
    return torch.stack(views)


_LVU_CLASS_COUNTS = {
    "relation": 4,
    "speak": 5,
    "scene": 6,
    "director": 10,
    "genre": 4,
    "writer": 10,
    "year": 9,
}


def lvu_num_classes(data_path: str) -> int | None:
    """Classes of an LVU task named in `data_path` (relation, speak, scene, ...); None for regression tasks."""
    # The task folder's own name decides first, so a parent folder named e.g. "scenes" cannot win.
    for text in (os.path.basename(os.path.normpath(data_path)).lower(), data_path.lower()):
        for task, count in _LVU_CLASS_COUNTS.items():
            if task in text:
                return count
    return None
