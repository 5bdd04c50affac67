"""Your own video-text pairs, from scratch: a small VideoMamba (2 blocks, width 64, 32 px, 8 px
patches, tubelets of 2 frames) and a small BERT trained with VTC + VTM on a few hundred captioned
videos, on a CPU in minutes. See "Train on your own data" in the repository README.

run.sh fills the paths from the environment (TRAIN_JSON, TEST_JSON, MEDIA_ROOT, TOKENIZER,
TEXT_CONFIG); `key value` overrides after it win, as for every config.
"""

_base_ = "../../configs/base.py"

train_file = [dict(anno_path="train.json", media_root="videos", media_type="video")]
test_file = dict(test=dict(anno_path="test.json", media_root="videos", media_type="video"))
test_types = ["test"]
stop_key = None  # the last epoch is kept; set "test/" to keep the best test r_mean instead
num_workers = 1

num_frames = 8
num_frames_test = 8
batch_size = 16
batch_size_test = 16
max_txt_l = 24
inputs = dict(image_res=32)

model = dict(
    vision_encoder=dict(
        img_size=32,
        patch_size=8,
        tubelet_size=2,  # each token sees 2 frames: motion is in the token from the first step
        depth=2,
        embed_dim=64,
        drop_path_rate=0.0,
        pool_type="avg",  # a randomly initialised cls token reads little more than the first patches
        pretrained="",
        clip_teacher="none",
        clip_output_dim=64,
        clip_img_size=32,
    ),
    text_encoder=dict(
        pretrained="${model_dir}/bert-base-uncased",  # the tokenizer folder (vocab.txt); weights if it has them
        config="exp_pt/custom/config_bert_small.json",  # 3 layers of width 64, cross-attention in the last
        d_model=64,
        fusion_layer=2,
    ),
    embed_dim=64,
)
criterion = dict(loss_weight=dict(vtc=1.0, mlm=0.0, vtm=1.0, uta=0.0))
optimizer = dict(lr=1e-3, weight_decay=0.02, max_grad_norm=1.0)
scheduler = dict(epochs=20, warmup_epochs=1.0)
evaluation = dict(k_test=16)

fp16 = False
bf16 = False
gradient_checkpointing = False
pretrained_path = ""
log_freq = 10
