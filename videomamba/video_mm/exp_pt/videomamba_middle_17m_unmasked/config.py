"""VideoMamba-M video-text pretraining on 17M pairs, unmasked stage (see videomamba_middle_5m_unmasked)."""

_base_ = ["../videomamba_middle_17m/config.py", "../videomamba_middle_5m_unmasked/config.py"]

train_corpus = "data_17m"
pretrained_path = "${model_dir}/videomamba_m16_17M_masked_pt_f8_res224.pth"
