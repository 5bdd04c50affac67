"""Image classification on ImageNet (and CIFAR-100, iNaturalist), with optional self-distillation.

Entry points: ``main.py`` (training/evaluation; distillation when given a teacher),
``main_distill.py`` (the same with the teacher flags required) and ``run_with_submitit.py``, run as
``python -m videomamba.image_sm.main`` etc. See README.md in this folder.
"""
