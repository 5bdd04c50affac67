"""VideoMamba-M video-text pretraining on 17M pairs, masked stage: the 5M config with
WebVid-2M + CC3M + COCO + VG + SBU + CC12M."""

_base_ = "../videomamba_middle_5m/config.py"

train_corpus = "data_17m"
