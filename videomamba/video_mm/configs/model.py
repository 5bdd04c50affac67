"""Model-side defaults: where checkpoints live and the text encoders.

``model_dir`` holds the released checkpoints, the CLIP teacher weights (``vit_b16.pth``) and the
``bert-base-uncased`` folder (``config.json``, ``vocab.txt``, ``model.safetensors`` or
``pytorch_model.bin``). Nothing is ever downloaded: the tokenizer and BERT come from that folder.
The architecture comes from ``config`` (BERT's own json plus ``fusion_layer``); the weights from
``pretrained``.
"""

model_dir = "checkpoints"

TextEncoders = dict(
    bert=dict(
        name="bert_base",
        pretrained="${model_dir}/bert-base-uncased",
        config="configs/config_bert.json",
        d_model=768,
        fusion_layer=9,
    ),
    bert_large=dict(
        name="bert_large",
        pretrained="${model_dir}/bert-large-uncased",
        config="configs/config_bert_large.json",
        d_model=1024,
        fusion_layer=19,
    ),
)
