"""VideoMamba: state-space models for image and video understanding.

Importing the package registers the VideoMamba backbones (``videomamba_tiny/small/middle/base``)
in timm's model registry, so ``timm.create_model("videomamba_tiny", num_classes=0)`` works.
Tasks: ``videomamba.image_sm`` (image classification, self-distillation), ``video_sm`` and
``video_mm``; what they share lives in ``videomamba.core``.
"""

__version__ = "0.1.0"

from videomamba.core.backbone import VisionMamba
from videomamba.core.pretrained import load_pretrained
