"""What every VideoMamba task shares: the backbone, the checkpoint loader and the training utilities.

- ``backbone``: ``VisionMamba`` (image and video layouts) and its timm registry entries;
- ``pretrained``: reading, unwrapping and adapting released or foreign checkpoints (``load_pretrained``);
- ``checkpoint``: training saves (atomic writes, the run-folder layout, resume discovery, RNG state);
- ``lifecycle``: the training lifecycle of every runner (resume, epoch loop, best metric, saves,
  non-finite stops);
- ``cli``: ``run_cli``, the one entry wrapper (a ``UserError`` becomes one ``error:`` line and exit 2,
  a ``NonFiniteLossError`` ``Stopping:`` and exit 1), the runners' shared argument handling (both
  flag spellings, lr scaling, precision, model arguments stored in checkpoints), model-name checks
  with suggestions, progress lines with rate and ETA;
- ``text_lists``: reading UTF-8 list files (byte-order mark dropped, bad bytes named by file and line);
- ``distributed``: process-group setup (torchrun / Slurm / single) and collectives;
- ``metrics``: ``MetricLogger``, ``SmoothedValue``, ``accuracy``;
- ``logs``: ``log.txt`` JSON lines and TensorBoard;
- ``optim``: parameter groups (weight decay, layer decay), the optimizer, autocast and the gradient step;
- ``losses``: the classification loss (mixup soft targets, label smoothing);
- ``schedules``: per-step cosine lr / weight-decay schedules;
- ``submission``: submitting a runner to Slurm (or locally) with submitit, requeue and resume;
- video data shared by video_sm and video_mm: ``video_decode`` (decord / PyAV / frame-folder / gif
  readers, ``VideoDecodeError`` and the policy that replaces unreadable videos), ``frame_sampling``
  (which frame indices a clip takes: segment, dense, interval and fps samplers), ``video_transforms``
  (clip crops, resizing, normalisation), ``video_rand_augment`` (RandAugment identical on every
  frame), ``masking`` (tube / random / attention masks), ``clip_teacher`` (the frozen CLIP ViT
  teacher) and ``pretrain`` (the masked-pretraining student).
"""
