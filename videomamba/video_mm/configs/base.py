"""Settings shared by the VideoMamba-M video-text experiments: input pipeline, model, losses,
optimizer, evaluation and run options. Experiment configs (exp_*/*/config.py) inherit this file and
set their data, the teacher and masks, the loss weights and the schedule.

As written here the model has no teacher and no masks (the unmasked stage, retrieval and QA).
"""

_base_ = ["data.py", "model.py"]

# data: set by each experiment
train_file = []
test_file = {}
test_types = []
num_workers = 6
stop_key = None  # "<split>/": the split whose r_mean (or acc) picks the best epoch; None: the last epoch
is_paragraph_retrieval = False  # True: a video's captions are joined into one paragraph
trimmed30 = False  # sample frames only from the first 30 seconds of each video

# input
num_frames = 8
num_frames_test = 8
batch_size = 64  # per process, for image and for video batches
batch_size_test = 64
max_txt_l = 32
max_words = None  # caption words kept before tokenization (None: all)
video_reader = "auto"  # decord with PyAV fallback; or "decord", "pyav", "frames", "gif"
inputs = dict(
    image_res=224,
    video_input=dict(
        num_frames="${num_frames}",
        sample_type="rand",
        num_frames_test="${num_frames_test}",
        sample_type_test="middle",
        random_aug=False,
    ),
    max_txt_l=dict(image="${max_txt_l}", video="${max_txt_l}"),
    batch_size=dict(image="${batch_size}", video="${batch_size}"),
    batch_size_test=dict(image="${batch_size_test}", video="${batch_size_test}"),
)

# model
text_enc = "bert"
model = dict(
    model_cls="UMT_VIDEOMAMBA",
    vision_encoder=dict(
        name="videomamba_middle",
        img_size=224,
        patch_size=16,
        depth=None,  # None: the depth and width of the size in `name` (VIDEOMAMBA_SIZES)
        embed_dim=None,
        drop_path_rate=0.25,
        ssm_cfg=None,
        norm_epsilon=1e-5,
        fused_add_norm=True,
        rms_norm=True,
        residual_in_fp32=True,
        bimamba=True,
        pool_type="cls+avg",
        add_pool_norm=True,
        tubelet_size=1,  # the original's name kernel_size is accepted too
        num_frames="${num_frames}",
        grad_checkpointing=False,  # (use_checkpoint in the original's configs)
        grad_checkpointing_blocks=0,  # (checkpoint_num)
        clip_output_dim=512,
        clip_return_layer=1,
        clip_student_return_interval=1,
        # True: the last aligned feature is the original's (un-normed, before the last mixer), as released
        clip_student_features_as_released=False,
        pretrained="",  # masked video pretraining weights for the vision encoder (without pretrained_path)
        # CLIP teacher and token masks (masked stage only)
        clip_teacher="none",
        clip_teacher_checkpoint="",
        clip_img_size=224,
        clip_return_interval=1,
        clip_teacher_ln_post=False,  # False: the teacher's tokens skip ln_post, as the released models were trained
        video_mask_type="none",
        video_mask_ratio=0.0,
        image_mask_type="none",
        image_mask_ratio=0.0,
        keep_temporal=True,  # one pooled vector per frame, in training (masked or not) and evaluation
    ),
    text_encoder="${TextEncoders.${text_enc}}",
    embed_dim=512,
    temp=0.07,
)

criterion = dict(
    loss_weight=dict(vtc=1.0, mlm=0.0, vtm=1.0, uta=0.0),
    vtm_hard_neg=True,
    mlm_masking_prob=0.5,
    uta_norm_type="l2",
    uta_loss_type="l2",
    uta_image_only=False,
)

optimizer = dict(
    opt="adamW",
    lr=1e-4,
    opt_betas=[0.9, 0.999],
    weight_decay=0.02,
    max_grad_norm=-1,  # -1: no clipping
    different_lr=dict(enable=False, module_names=[], lr=1e-3),
)
scheduler = dict(sched="cosine", epochs=1, min_lr_multi=0.01, warmup_epochs=0.0)

evaluate = False  # True: only evaluate the model loaded from pretrained_path
evaluation = dict(
    eval_frame_ensemble="concat",  # "concat", "mean" or "max" when num_frames_test is a multiple of num_frames
    eval_x_only=False,  # True: dual-encoder ranking only, no ITM re-ranking
    k_test=128,  # candidates re-ranked by ITM per query (answers short-listed in QA)
    eval_offload=False,  # keep the test videos' tokens on the CPU
)

# run
fp16 = True
bf16 = True  # autocast dtype: bf16 when set, else fp16 with loss scaling; weights stay float32
gradient_checkpointing = True  # BERT layers
device = "cuda"
dist_url = "env://"
output_dir = None  # None: nothing saved (evaluation only: <folder of pretrained_path>/eval)
resume = ""  # a checkpoint to resume from; by default checkpoint-latest.pth in output_dir (auto_resume)
auto_resume = True
save_latest = True  # False: also keep checkpoint-{epoch}.pth of every epoch
unscale_lr = True  # optimizer.lr is used as written: video_mm never scales it by the batch (False is refused)
pretrained_path = ""  # a video-text checkpoint to start from (replaces vision_encoder.pretrained)
log_freq = 100
seed = 42
