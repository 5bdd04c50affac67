"""Training and evaluation loops of video_sm: fine-tuning (classification, regression), multi-view test, pretraining."""
