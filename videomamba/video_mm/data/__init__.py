"""Video-text data: annotation files and datasets, media reading, captions and the tokenizer, loaders."""
