"""Single-modality video tasks: classification (short and long videos), regression and masked pretraining."""
