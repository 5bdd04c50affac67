"""VideoMamba-M video-text pretraining on 25M pairs, masked stage: the 5M config with
WebVid-10M + CC3M + COCO + VG + SBU + CC12M."""

_base_ = "../videomamba_middle_5m/config.py"

train_corpus = "data_25m"
