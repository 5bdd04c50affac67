"""Video-text models: vision encoder, BERT text encoder, UMT_VIDEOMAMBA (+ QA), losses, checkpoint loading."""
