"""Dataset factory keyed by the original ``--data_set`` names, plus the pretraining dataset and mixup.

- ``Kinetics_sparse`` (the default for everything), ``mitv1_sparse``: sparse segment sampling;
  lists ``path label``; ``--nb_classes`` classes.
- ``Kinetics``, ``UCF101``: dense clips every ``--sampling_rate`` frames; ``path label``;
  ``--nb_classes`` / 101 classes.
- ``SSV2``: TSN segments, no horizontal flip; ``path label``, or with ``--no_use_decord`` raw frame
  folders ``folder num_frames label``; 174 classes.
- ``LVU``, ``COIN``, ``Breakfast``: sparse sampling inside windows of ``--trimmed`` seconds every
  ``--time_stride`` seconds; ``path label duration``; LVU classes from the task in the data path,
  COIN 180, Breakfast 10.
Regression (``args.regression``, or an LVU task without classes such as like/view) reads float
labels and needs ``--nb_classes 1``. The original's class-count assertion is kept as a clear error.
"""

from __future__ import annotations

import os
from argparse import Namespace

from torch.utils.data import Dataset

from videomamba.core.cli import UserError

from .mixup import VideoMixup
from .random_erasing import RandomErasing
from .transforms import VideoEvalTransform, VideoPretrainTransform, VideoTrainTransform
from .video_dataset import VideoClsDataset, VideoPretrainDataset, lvu_num_classes

SPARSE_SETS = ("Kinetics_sparse", "mitv1_sparse")
DENSE_SETS = ("Kinetics", "UCF101")
LONG_SETS = ("LVU", "COIN", "Breakfast")
DATA_SETS = SPARSE_SETS + DENSE_SETS + ("SSV2",) + LONG_SETS
_FIXED_CLASSES = {"UCF101": 101, "SSV2": 174, "COIN": 180, "Breakfast": 10}


def _arg(args: Namespace, name: str, default: object) -> object:
    return getattr(args, name, default)


def expected_num_classes(args: Namespace, regression: bool) -> int:
    """Classes the data set implies (the original's table); --nb_classes for the open-ended sets."""
    if regression:
        return 1
    if args.data_set == "LVU":
        count = lvu_num_classes(args.data_path)
        if count is None:
            raise UserError(
                f"LVU data path {args.data_path!r} names no classification task "
                f"(relation, speak, scene, director, genre, writer, year); pass --regression for like/view"
            )
        return count
    return _FIXED_CLASSES.get(args.data_set, args.nb_classes)


def _is_regression(args: Namespace) -> bool:
    if _arg(args, "regression", False):
        return True
    return args.data_set == "LVU" and lvu_num_classes(args.data_path) is None


def build_dataset(is_train: bool, test_mode: bool, args: Namespace) -> tuple[Dataset, int]:
    """Build the fine-tuning dataset for one split; returns (dataset, nb_classes).

    Reads ``<data_path>/train.csv`` (is_train), ``test.csv`` (test_mode) or ``val.csv``. Uses the
    original's flags: data_set, data_path, prefix, split, num_frames, sampling_rate, input_size,
    short_side_size, test_num_segment, test_num_crop, aa, reprob, remode, recount, num_sample,
    filename_tmpl, use_decord, trimmed, time_stride, nb_classes; and ours, when present:
    regression, video_reader (auto|decord|pyav), max_read_attempts, hflip (train flip probability,
    None: the data set's default) and train_crop_scale (random resized crop area range).
    """
    data_set = args.data_set
    if data_set not in DATA_SETS:
        raise UserError(f"--data_set {data_set!r} is not supported; choose one of {DATA_SETS}")
    mode = "train" if is_train else ("test" if test_mode else "val")
    list_file = os.path.join(args.data_path, {"train": "train.csv", "val": "val.csv", "test": "test.csv"}[mode])
    regression = _is_regression(args)
    nb_classes = expected_num_classes(args, regression)
    if nb_classes != args.nb_classes:
        raise UserError(
            f"--data_set {data_set} at {args.data_path} has {nb_classes} classes but --nb_classes is {args.nb_classes}"
        )

    input_size = _arg(args, "input_size", 224)
    short_side_size = _arg(args, "short_side_size", input_size)
    hflip = _arg(args, "hflip", None)
    if hflip is None:
        hflip = 0.0 if data_set == "SSV2" else 0.5  # left/right is part of many SSv2 labels
    if mode == "train":
        transform = VideoTrainTransform(
            input_size,
            scale=tuple(_arg(args, "train_crop_scale", None) or (0.08, 1.0)),
            hflip=hflip,
            auto_augment=_arg(args, "aa", "rand-m7-n4-mstd0.5-inc1") or None,
            random_erasing=build_random_erasing(args),
        )
    else:
        num_crops = _arg(args, "test_num_crop", 3) if mode == "test" else 1
        transform = VideoEvalTransform(input_size, short_side_size, num_crops)

    list_format, sampling = "video", "sparse"
    if data_set in DENSE_SETS:
        sampling = "dense"
    elif data_set == "SSV2":
        sampling = "tsn"
        list_format = "video" if _arg(args, "use_decord", True) else "frames"
    elif data_set in LONG_SETS:
        list_format = "long"
    dataset = VideoClsDataset(
        list_file,
        mode,
        sampling=sampling,
        num_frames=args.num_frames,
        frame_interval=_arg(args, "sampling_rate", 4),
        list_format=list_format,
        delimiter=_arg(args, "split", " "),
        prefix=_arg(args, "prefix", ""),
        regression=regression,
        num_classes=None if regression else nb_classes,
        window_seconds=_arg(args, "trimmed", 60) if list_format == "long" else None,
        stride_seconds=_arg(args, "time_stride", 16) if list_format == "long" else None,
        test_num_segment=_arg(args, "test_num_segment", 5),
        test_num_crop=_arg(args, "test_num_crop", 3),
        input_size=input_size,
        short_side_size=short_side_size,
        transform=transform,
        num_sample=_arg(args, "num_sample", 1),
        video_backend=_arg(args, "video_reader", "auto"),
        filename_tmpl=_arg(args, "filename_tmpl", "img_{:05}.jpg"),
        max_read_attempts=_arg(args, "max_read_attempts", 10),
    )
    return dataset, nb_classes


def build_random_erasing(args: Namespace) -> RandomErasing | None:
    """Cube random erasing from --reprob/--remode/--recount (None when --reprob is 0)."""
    probability = _arg(args, "reprob", 0.25)
    if not probability:
        return None
    return RandomErasing(probability, _arg(args, "remode", "pixel"), max_count=_arg(args, "recount", 1), cube=True)


def build_pretraining_dataset(args: Namespace) -> VideoPretrainDataset:
    """Masked-pretraining dataset; ``--data_path`` is the list file itself (as in the original).

    Sparse sampling (one frame per segment) when ``--num_segments`` is not 1, dense windows of
    ``--sampling_rate`` otherwise; masks of ``--mask_type``/``--mask_ratio`` on the token grid
    (num_frames / tubelet_size, input_size / 16, input_size / 16).
    """
    input_size = _arg(args, "input_size", 224)
    return VideoPretrainDataset(
        args.data_path,
        sampling="dense" if _arg(args, "num_segments", 1) == 1 else "sparse",
        num_frames=args.num_frames,
        frame_interval=_arg(args, "sampling_rate", 4),
        delimiter=_arg(args, "split", " "),
        prefix=_arg(args, "prefix", ""),
        mask_type=_arg(args, "mask_type", "tube"),
        mask_ratio=_arg(args, "mask_ratio", 0.75),
        tubelet_size=_arg(args, "tubelet_size", 1),
        patch_size=_arg(args, "patch_size", 16),
        input_size=input_size,
        transform=VideoPretrainTransform(input_size, hflip=bool(_arg(args, "flip", False))),
        num_sample=_arg(args, "num_sample", 1),
        video_backend=_arg(args, "video_reader", "auto"),
        filename_tmpl=_arg(args, "filename_tmpl", "img_{:05}.jpg"),
        max_read_attempts=_arg(args, "max_read_attempts", 10),
    )


def build_mixup(args: Namespace, num_classes: int) -> VideoMixup | None:
    """Mixup/CutMix from --mixup/--cutmix/--cutmix_minmax/--mixup_prob/--mixup_switch_prob/--mixup_mode/--smoothing.

    None when both mixup and cutmix are off (then the loss uses hard labels with label smoothing).
    """
    mixup_alpha, cutmix_alpha = _arg(args, "mixup", 0.8), _arg(args, "cutmix", 1.0)
    cutmix_minmax = _arg(args, "cutmix_minmax", None)
    if mixup_alpha <= 0 and cutmix_alpha <= 0 and cutmix_minmax is None:
        return None
    return VideoMixup(
        mixup_alpha=mixup_alpha,
        cutmix_alpha=cutmix_alpha,
        cutmix_minmax=cutmix_minmax,
        prob=_arg(args, "mixup_prob", 1.0),
        switch_prob=_arg(args, "mixup_switch_prob", 0.5),
        mode=_arg(args, "mixup_mode", "batch"),
        label_smoothing=_arg(args, "smoothing", 0.1),
        num_classes=num_classes,
    )
