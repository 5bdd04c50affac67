"""VideoMamba-M video-text pretraining on 5M pairs (WebVid-2M + CC3M), masked stage.

Starts from the K400 masked-pretraining checkpoint; CLIP ViT-B/16 teacher with attention-guided
masks (80% of video tokens, 50% of image tokens hidden); UTA + VTC + VTM + MLM, 10 epochs.
The 17M/25M configs inherit this one and change the corpus; the *_unmasked configs run the short
unmasked stage that follows.
"""

_base_ = "../../configs/base.py"

train_corpus = "data_5m"
train_file = "${available_corpus.${train_corpus}}"
test_file = dict(msrvtt_1k_test="${available_corpus.msrvtt_1k_test}")
test_types = ["msrvtt_1k_test"]
num_workers = 12
batch_size = 128

model = dict(
    vision_encoder=dict(
        # Masked video pretraining (K400, 8 frames); its temporal embedding is interpolated to num_frames.
        pretrained="${model_dir}/videomamba_m16_k400_mask_pt_f8_res224.pth",
        clip_teacher="clip_b16",
        clip_teacher_checkpoint="${model_dir}/vit_b16.pth",
        video_mask_type="attention",
        video_mask_ratio=0.8,
        image_mask_type="attention",
        image_mask_ratio=0.5,
    ),
)
criterion = dict(loss_weight=dict(vtc=1.0, mlm=1.0, vtm=1.0, uta=1.0))
optimizer = dict(lr=4e-4, weight_decay=0.05)
scheduler = dict(epochs=10, warmup_epochs=1.0)
log_freq = 1
