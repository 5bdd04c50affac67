"""Video datasets, samplers and augmentations for video_sm (readers, masks, clip ops and RandAugment live in
videomamba.core, shared with video_mm)."""

from videomamba.core.video_rand_augment import VideoRandAugment, parse_rand_augment

from .build import DATA_SETS, build_dataset, build_mixup, build_pretraining_dataset, build_random_erasing
from .mixup import VideoMixup, smoothed_one_hot
from .random_erasing import RandomErasing
from .transforms import VideoEvalTransform, VideoPretrainTransform, VideoTrainTransform
from .video_dataset import (
    VideoClsDataset,
    VideoPretrainDataset,
    VideoRecord,
    load_test_views,
    long_video_windows,
    read_video_list,
    repeated_sample_collate,
)
