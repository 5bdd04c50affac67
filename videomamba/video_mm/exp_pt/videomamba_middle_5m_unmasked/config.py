"""VideoMamba-M video-text pretraining on 5M pairs, unmasked stage: one epoch without teacher or
masks (VTC + VTM + MLM), starting from the masked stage's checkpoint."""

_base_ = "../videomamba_middle_5m/config.py"

batch_size = 64
model = dict(
    vision_encoder=dict(
        clip_teacher="none",
        video_mask_type="none",
        video_mask_ratio=0.0,
        image_mask_type="none",
        image_mask_ratio=0.0,
    ),
)
criterion = dict(loss_weight=dict(uta=0.0))
optimizer = dict(lr=8e-5)
scheduler = dict(epochs=1, warmup_epochs=0.2)
# The masked stage's result (run exp_pt/videomamba_middle_5m first; not released).
pretrained_path = "${model_dir}/videomamba_m16_5M_masked_pt_f8_res224.pth"
