"""video_mm: video-text pretraining and downstream tasks (UMT-style) on the shared VideoMamba backbone.

- ``config``: Python config files with ``_base_`` inheritance and dotted overrides (OmegaConf);
- ``data``: annotation formats, datasets, media reading, text cleaning, image/video interleaving;
- ``models``: the vision encoder, the BERT text encoder, UMT_VIDEOMAMBA, losses, checkpoint loading;
- ``evaluation``: retrieval, multiple-choice and QA metrics;
- ``tasks``: the entry scripts (pretrain, retrieval, retrieval_mc, vqa);
- ``synthetic``: a tiny generated data set for tests and smoke runs.
See README.md.
"""
