"""BERT text encoder with cross-attention to vision tokens from ``fusion_layer`` on, built from `transformers`' modules.

The layers are transformers' ``BertAttention`` / ``BertIntermediate`` / ``BertOutput`` (and
``BertEmbeddings``, ``BertOnlyMLMHead``), so parameter names are BERT's:
``embeddings.*``, ``encoder.layer.{i}.attention.self.query.weight``, ...; layers ``i >= fusion_layer``
add ``encoder.layer.{i}.crossattention.*`` whose key/value projections read ``encoder_width``-wide
vision tokens (576 for VideoMamba-M). `BertWithLMHead` wraps the encoder as ``bert.*`` with the
MLM head ``cls.predictions.*`` (the layout of ``BertForMaskedLM``); its decoder weight is tied to the
word embeddings.

Modes (the same BERT serves as text encoder and fusion encoder):
- ``text``: embeddings and layers ``[0, fusion_layer)``, self-attention only;
- ``fusion``: layers ``[fusion_layer, L)`` on given hidden states, with cross-attention to the vision tokens;
- ``multimodal``: both in a row.
A ``causal`` encoder (the QA answer decoder) masks attention to later positions.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers import BertConfig
from transformers.models.bert.modeling_bert import (
    BertAttention,
    BertEmbeddings,
    BertIntermediate,
    BertOnlyMLMHead,
    BertOutput,
)

from videomamba.core.cli import MissingFileError
from videomamba.core.pretrained import CheckpointError, load_checkpoint_file

__all__ = ["BertTextEncoder", "BertWithLMHead", "build_bert_config", "load_bert_weights"]

MODES = ("text", "fusion", "multimodal")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def build_bert_config(source: str | Path, **updates: object) -> BertConfig:
    """A BertConfig from a json file (or a folder with config.json), with `updates` applied.

    Attention runs through PyTorch's scaled_dot_product_attention with boolean masks.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise MissingFileError(f"{path}: BERT config not found")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg})") from error
    values.update({k: v for k, v in updates.items() if v is not None})
    config = BertConfig(**values)
    config._attn_implementation = "sdpa"
    return config


def _init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: normal(0, std) weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class FusionBertLayer(nn.Module):
    """Self-attention, optional cross-attention to another sequence, feed-forward (BERT's names)."""

    def __init__(self, config: BertConfig, cross_attention: bool, encoder_width: int) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        if cross_attention:
            self.crossattention = BertAttention(config, is_cross_attention=True)
            # Keys and values are read from the vision tokens, whose width differs from BERT's.
            heads = self.crossattention.self
            heads.key = nn.Linear(encoder_width, heads.all_head_size)
            heads.value = nn.Linear(encoder_width, heads.all_head_size)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    @property
    def has_cross_attention(self) -> bool:
        return hasattr(self, "crossattention")

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor,
        encoder_hidden: Tensor | None = None,
        encoder_mask: Tensor | None = None,
    ) -> Tensor:
        hidden = self.attention(hidden, attention_mask)[0]
        if encoder_hidden is not None:
            hidden = self.crossattention(
                hidden, encoder_hidden_states=encoder_hidden, encoder_attention_mask=encoder_mask
            )[0]
        return self.output(self.intermediate(hidden), hidden)


class _LayerStack(nn.Module):
    """Holds the layers under ``layer``, the name BERT checkpoints use (``encoder.layer.{i}``)."""

    def __init__(self, layers: list[FusionBertLayer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


def _attention_mask(padding_mask: Tensor, causal: bool) -> Tensor:
    """Boolean (B, 1, Lq, Lk) mask, True = may attend, from a (B, L) 1/0 padding mask."""
    keep = padding_mask.bool()[:, None, None, :]
    if causal:
        length = padding_mask.shape[1]
        keep = keep & torch.ones(length, length, dtype=torch.bool, device=keep.device).tril()[None, None]
    return keep


class BertTextEncoder(nn.Module):
    """BERT whose layers from `fusion_layer` on cross-attend to `encoder_width`-wide tokens (see the module notes).

    Args:
        config: BERT architecture.
        fusion_layer: first layer with cross-attention (``num_hidden_layers`` for a text-only BERT).
        encoder_width: width of the tokens attended to.
        causal: decoder-style self-attention (each position sees itself and earlier ones).
    """

    def __init__(self, config: BertConfig, fusion_layer: int, encoder_width: int, causal: bool = False) -> None:
        super().__init__()
        if not 0 <= fusion_layer <= config.num_hidden_layers:
            raise ValueError(f"fusion_layer {fusion_layer} must be in [0, {config.num_hidden_layers}]")
        self.config = config
        self.fusion_layer = fusion_layer
        self.encoder_width = encoder_width
        self.causal = causal
        self.gradient_checkpointing = False
        self.embeddings = BertEmbeddings(config)
        self.encoder = _LayerStack(
            [FusionBertLayer(config, i >= fusion_layer, encoder_width) for i in range(config.num_hidden_layers)]
        )
        self.apply(lambda m: _init_bert_weights(m, config.initializer_range))

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        mode: str = "text",
        hidden_states: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Last hidden states (B, L, hidden).

        ``text`` and ``multimodal`` start from `input_ids`; ``fusion`` from `hidden_states` (a ``text``
        output). `attention_mask` is the (B, L) padding mask; `encoder_attention_mask` (B, N) defaults to
        all vision tokens.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "fusion":
            if hidden_states is None:
                raise ValueError("mode 'fusion' needs hidden_states (the output of mode 'text')")
            hidden = hidden_states
        else:
            if input_ids is None:
                raise ValueError(f"mode {mode!r} needs input_ids")
            hidden = self.embeddings(input_ids=input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        self_mask = _attention_mask(attention_mask, self.causal)
        first = self.fusion_layer if mode == "fusion" else 0
        last = self.fusion_layer if mode == "text" else len(self.encoder.layer)
        cross_mask = None
        if last > self.fusion_layer:
            if encoder_hidden_states is None:
                raise ValueError(f"mode {mode!r} runs cross-attention layers and needs encoder_hidden_states")
            if encoder_attention_mask is None:
                encoder_attention_mask = torch.ones(
                    encoder_hidden_states.shape[:2], dtype=torch.long, device=encoder_hidden_states.device
                )
            cross_mask = encoder_attention_mask.bool()[:, None, None, :]
        for index in range(first, last):
            layer = self.encoder.layer[index]
            encoder_hidden = encoder_hidden_states if layer.has_cross_attention else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden = checkpoint(layer, hidden, self_mask, encoder_hidden, cross_mask, use_reentrant=False)
            else:
                hidden = layer(hidden, self_mask, encoder_hidden, cross_mask)
        return hidden


class BertWithLMHead(nn.Module):
    """``bert`` (a `BertTextEncoder`) plus the MLM / LM head ``cls`` (BertForMaskedLM's key layout)."""

    def __init__(self, config: BertConfig, fusion_layer: int, encoder_width: int, causal: bool = False) -> None:
        super().__init__()
        self.bert = BertTextEncoder(config, fusion_layer, encoder_width, causal=causal)
        self.cls = BertOnlyMLMHead(config)
        self.cls.apply(lambda m: _init_bert_weights(m, config.initializer_range))
        nn.init.zeros_(self.cls.predictions.bias)
        # Tied as in BERT: the output projection is the word embedding, the bias is the head's own.
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.cls.predictions.decoder.bias = self.cls.predictions.bias

    def forward(self, *args: object, **kwargs: object) -> Tensor:
        """Vocabulary logits (B, L, V) for the hidden states of ``self.bert(*args, **kwargs)``."""
        return self.cls(self.bert(*args, **kwargs))


def _hf_key(key: str) -> str:
    """A key of a Hugging Face BERT checkpoint in today's names (old TF ports say gamma/beta)."""
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def load_bert_weights(model: BertTextEncoder | BertWithLMHead, folder: str | Path) -> list[str]:
    """Load a local Hugging Face BERT checkpoint (``bert-base-uncased``) into `model`, non-strictly.

    Cross-attention layers are new and keep their initialisation; the pooler and the NSP head are
    not used. Returns the model keys left at their initialisation. A folder without weights raises.
    """
    folder = Path(folder)
    weight_file = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weight_file is None:
        raise MissingFileError(f"{folder}: no BERT weights ({' or '.join(WEIGHT_FILES)})")
    state = load_checkpoint_file(weight_file, what="BERT weights")
    if not isinstance(state, dict):
        raise CheckpointError(f"{weight_file}: holds a {type(state).__name__}, not a BERT state dict")
    state = {_hf_key(k): v for k, v in state.items()}
    if isinstance(model, BertTextEncoder):
        state = {k.removeprefix("bert."): v for k, v in state.items()}
    elif not any(k.startswith("bert.") for k in state):
        state = {f"bert.{k}": v for k, v in state.items()}
    target = model.state_dict()
    usable = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    model.load_state_dict(usable, strict=False)
    kept = sorted(set(target) - set(usable))
    unexpected_cross = [k for k in kept if "crossattention" not in k]
    print(
        f"loaded BERT weights {weight_file}: {len(usable)} tensors; {len(kept)} kept at init "
        f"({len(kept) - len(unexpected_cross)} cross-attention, others: {unexpected_cross[:6]})"
    )
    return kept


def copy_config(config: BertConfig, **updates: object) -> BertConfig:
    """A modified copy of a BertConfig (the QA decoder has fewer layers)."""
    config = copy.deepcopy(config)
    for name, value in updates.items():
        setattr(config, name, value)
    return config
