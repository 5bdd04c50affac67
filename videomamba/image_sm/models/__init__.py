"""Models of the image task; importing this registers them in timm.

- ``videomamba_{size}`` for every size of ``VIDEOMAMBA_SIZES``: the shared backbone as an image classifier;
- ``videomamba_{size}_distill``: self-distillation students/teachers;
- DeiT baselines are timm's own ``deit_tiny/small/base_patch16_224`` (not re-registered here).
"""

import videomamba.core.backbone
from videomamba.image_sm.models.videomamba import VideoMambaDistill, distill_features

DEIT_BASELINES = ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")
