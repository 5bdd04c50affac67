"""UMT_VIDEOMAMBA: VideoMamba + BERT video-text model (UMT-style), and its question-answering variant.

Members and state-dict keys (those of the released ``videomamba_m16_{5M,17M,25M}_f8_res224.pth``):
``vision_encoder.*`` (`VideoTextVisionEncoder`), ``text_encoder.*`` (with ``bert.`` and the MLM
head ``cls.*`` when pretraining, as BertForMaskedLM; without both for retrieval, as BertModel),
``vision_proj`` (D -> embed_dim), ``text_proj`` (hidden -> embed_dim), ``temp`` (learnable
temperature, clamped to [0.001, 0.5]) and ``itm_head`` (hidden -> 2). The frozen CLIP teacher
(``clip_teacher``, only when UTA is on) is a submodule that never enters checkpoints or the optimizer.

One training step (`UMTVideoMamba.forward`) on a batch of one media type:
1. UTA: the teacher encodes the clip; a mask (attention-guided, tube or random) hides most tokens
   from the student; the student's aligned features at the visible positions regress the teacher's.
2. VTC over the batch of all ranks; 3. VTM with hard negatives; 4. MLM conditioned on the video.
VTC compares the pooled features; VTM, MLM and QA cross-attend to the vision encoder's patch tokens
(without cls, as the released models).
Each loss is multiplied by its ``criterion.loss_weight`` and skipped when that weight is 0.
No device is hard-coded: everything follows the input tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from videomamba.core.backbone import VIDEOMAMBA_SIZES, create_videomamba, model_size
from videomamba.core.clip_teacher import build_clip_teacher, keep_out_of_state_dict, return_layers_from_interval
from videomamba.core.masking import build_mask, gather_visible, prepend_cls_column

from ..config import ConfigError, resolve_package_path
from .bert import BertTextEncoder, BertWithLMHead, build_bert_config, copy_config, load_bert_weights
from .losses import mask_tokens_for_mlm, sample_hard_negatives, similarity, uta_loss, vtc_loss
from .vision import VideoTextVisionEncoder, VisionOutput

__all__ = ["MODELS", "UMTQAVideoMamba", "UMTVideoMamba", "build_model"]

TEMP_RANGE = (0.001, 0.5)
NO_TEACHER = (None, "", "none")
# Backbone / student arguments read from config.model.vision_encoder.
VISION_ARGS = (
    "img_size",
    "patch_size",
    "depth",
    "embed_dim",
    "drop_path_rate",
    "ssm_cfg",
    "norm_epsilon",
    "fused_add_norm",
    "rms_norm",
    "residual_in_fp32",
    "bimamba",
    "num_frames",
    "tubelet_size",
    "grad_checkpointing",
    "grad_checkpointing_blocks",
    "clip_output_dim",
    "clip_return_layer",
    "clip_student_return_interval",
    "clip_student_features_as_released",
    "pool_type",
    "add_pool_norm",
)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig | ListConfig) else node


def build_vision_encoder(vision_config: DictConfig) -> VideoTextVisionEncoder:
    """The size named by ``name`` (``videomamba_middle``: a row of VIDEOMAMBA_SIZES); ``depth`` and
    ``embed_dim``, when set (not None), override the size's."""
    encoder_name = str(vision_config.get("name", ""))
    size = model_size(encoder_name)
    if size is None:
        sizes = ", ".join(f"videomamba_{s}" for s in VIDEOMAMBA_SIZES)
        raise ConfigError(f"model.vision_encoder.name {encoder_name!r} names no model size; use one of {sizes}")
    kwargs = {name: _plain(vision_config[name]) for name in VISION_ARGS if name in vision_config}
    kwargs = {k: v for k, v in kwargs.items() if not (k in ("depth", "embed_dim") and v is None)}
    return create_videomamba(size, model_cls=VideoTextVisionEncoder, **kwargs)


def build_text_encoder(
    text_config: DictConfig, encoder_width: int, with_lm_head: bool, gradient_checkpointing: bool
) -> BertTextEncoder | BertWithLMHead:
    """BERT from ``text_config.config`` (architecture json), weights from the ``pretrained`` folder if it has any."""
    bert_config = build_bert_config(
        resolve_package_path(text_config.config),
        fusion_layer=int(text_config.fusion_layer),
        encoder_width=encoder_width,
    )
    cls = BertWithLMHead if with_lm_head else BertTextEncoder
    encoder = cls(bert_config, int(text_config.fusion_layer), encoder_width)
    folder = Path(str(text_config.pretrained))
    # Why the text encoder has no BERT weights, if it has none; a video-text checkpoint loaded later
    # may still fill it, so the verdict is printed after that (text_encoder_origin).
    encoder.missing_bert_weights = None
    try:
        load_bert_weights(encoder, folder)
    except FileNotFoundError as error:
        encoder.missing_bert_weights = str(error)
    (encoder.bert if with_lm_head else encoder).gradient_checkpointing = gradient_checkpointing
    return encoder


def text_encoder_origin(model: nn.Module, checkpoint_report: Any = None) -> str | None:
    """Where the text encoder's weights came from, once every checkpoint is loaded (None: BERT, already said)."""
    loaded = [k for k in getattr(checkpoint_report, "loaded", []) if k.startswith("text_encoder.")]
    if loaded:
        return f"text encoder: {len(loaded)} tensors from {checkpoint_report.source}"
    reason = getattr(model.text_encoder, "missing_bert_weights", None)
    return f"text encoder: {reason}; it starts from random initialisation" if reason else None


class UMTVideoMamba(nn.Module):
    """The video-text model; see the module notes. `tokenizer` provides the special token ids for MLM."""

    def __init__(self, config: DictConfig, tokenizer: Any, is_pretrain: bool = True) -> None:
        super().__init__()
        model_config, vision_config = config.model, config.model.vision_encoder
        criterion = config.criterion
        self.loss_weight = {name: float(criterion.loss_weight.get(name, 0.0)) for name in ("vtc", "vtm", "mlm", "uta")}
        self.vtm_hard_negatives = bool(criterion.get("vtm_hard_neg", True))
        self.mlm_probability = float(criterion.get("mlm_masking_prob", 0.5))
        self.uta_norm_type = str(criterion.get("uta_norm_type", "l2"))
        self.uta_loss_type = str(criterion.get("uta_loss_type", "l2"))
        self.uta_image_only = bool(criterion.get("uta_image_only", False))
        if self.loss_weight["mlm"] > 0 and not is_pretrain:
            raise ValueError("criterion.loss_weight.mlm > 0 needs the pretraining model (it has the MLM head)")
        self.keep_temporal = bool(vision_config.get("keep_temporal", False))
        self.mask_settings = {
            "video": (vision_config.get("video_mask_type", "none"), float(vision_config.get("video_mask_ratio", 0.0))),
            "image": (vision_config.get("image_mask_type", "none"), float(vision_config.get("image_mask_ratio", 0.0))),
        }

        self.vision_encoder = build_vision_encoder(vision_config)
        self.clip_teacher = None
        teacher_name = vision_config.get("clip_teacher", "none")
        if teacher_name not in NO_TEACHER and self.loss_weight["uta"] > 0:
            self.clip_teacher = self._build_teacher(vision_config)
            keep_out_of_state_dict(self, "clip_teacher")
        width = self.vision_encoder.embed_dim
        self.text_encoder = build_text_encoder(
            model_config.text_encoder,
            width,
            with_lm_head=is_pretrain,
            gradient_checkpointing=bool(config.get("gradient_checkpointing", False)),
        )
        hidden = self.text_bert.hidden_size
        self.vision_proj = nn.Linear(width, int(model_config.embed_dim))
        self.text_proj = nn.Linear(hidden, int(model_config.embed_dim))
        self.temp = nn.Parameter(torch.tensor(float(model_config.temp)))
        self.itm_head = nn.Linear(hidden, 2)
        self.pad_token_id = tokenizer.pad_token_id
        self.cls_token_id = tokenizer.cls_token_id
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = self.text_bert.config.vocab_size
        if len(tokenizer) > self.vocab_size:
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the BERT config {model_config.text_encoder.config} "
                f"has vocab_size {self.vocab_size}: they must come from the same model"
            )

    def _build_teacher(self, vision_config: DictConfig) -> nn.Module:
        if int(vision_config.get("tubelet_size", 1)) != 1:
            raise ValueError("the CLIP teacher encodes single frames: use tubelet_size 1 with a teacher")
        checkpoint = vision_config.get("clip_teacher_checkpoint")
        if not checkpoint:
            print("clip_teacher_checkpoint is empty: the CLIP teacher keeps random weights (tests only)")
        mask_types = {mask_type for mask_type, _ in self.mask_settings.values()}
        return build_clip_teacher(
            vision_config.clip_teacher,
            checkpoint or None,
            input_resolution=int(vision_config.get("clip_img_size", vision_config.img_size)),
            return_layers=return_layers_from_interval(
                int(vision_config.clip_return_layer), int(vision_config.get("clip_return_interval", 1))
            ),
            return_cls=True,
            return_attention="attention" in mask_types,
            ln_post=bool(vision_config.get("clip_teacher_ln_post", False)),
            norm_type="none",
        )

    # ------------------------------------------------------------------------------ parts

    @property
    def text_bert(self) -> BertTextEncoder:
        """The BERT encoder itself, whether or not it carries the MLM head."""
        return self.text_encoder.bert if isinstance(self.text_encoder, BertWithLMHead) else self.text_encoder

    def no_weight_decay(self) -> set[str]:
        return {f"vision_encoder.{name}" for name in ("pos_embed", "cls_token")}

    def clamp_temp(self) -> None:
        with torch.no_grad():
            self.temp.clamp_(*TEMP_RANGE)

    def encode_vision(self, media: Tensor, mask: Tensor | None = None) -> VisionOutput:
        """media: (B, C, T, H, W) clips (T = 1 for images)."""
        return self.vision_encoder(media, mask, keep_temporal=self.keep_temporal)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Hidden states of the text layers (B, L, hidden); token 0 ([CLS]) is the sentence feature."""
        return self.text_bert(input_ids, attention_mask, mode="text")

    def vision_embedding(self, pooled: Tensor) -> Tensor:
        """Joint-space vision features (B, T', embed_dim), one per frame with keep_temporal."""
        return self.vision_proj(pooled)

    def text_embedding(self, text_hidden: Tensor) -> Tensor:
        return self.text_proj(text_hidden[:, 0])

    def itm_logits(self, vision_tokens: Tensor, text_hidden: Tensor, text_mask: Tensor) -> Tensor:
        """(B, 2) match / no-match logits of aligned (video, text) pairs from the fusion layers."""
        fused = self.text_bert(
            attention_mask=text_mask, mode="fusion", hidden_states=text_hidden, encoder_hidden_states=vision_tokens
        )
        return self.itm_head(fused[:, 0])

    def encode_teacher(self, media: Tensor, media_type: str) -> tuple[Tensor | None, Tensor | None]:
        """(student mask with cls column, teacher features at the visible positions), or Nones without UTA."""
        if self.clip_teacher is None or (self.uta_image_only and media_type != "image"):
            return None, None
        clip = media if media.dim() == 5 else media.unsqueeze(2)
        batch, channels, frames, height, width = clip.shape
        size = self.clip_teacher.input_resolution
        if (height, width) != (size, size):
            flat = clip.transpose(1, 2).reshape(batch * frames, channels, height, width)
            flat = F.interpolate(flat, size=(size, size), mode="bicubic", align_corners=False)
            clip = flat.reshape(batch, frames, channels, size, size).transpose(1, 2)
        teacher = self.clip_teacher(clip)
        mask_type, ratio = self.mask_settings[media_type]
        if mask_type in NO_TEACHER:
            return None, teacher.features
        student_grid = (self.vision_encoder.token_frames(media), *self.vision_encoder.patch_embed.grid_size)
        teacher_grid = (frames, self.clip_teacher.grid_size, self.clip_teacher.grid_size)
        if student_grid != teacher_grid:
            raise ValueError(
                f"student token grid {student_grid} differs from the teacher's {teacher_grid}; "
                "set clip_img_size so that both have the same patch grid"
            )
        mask = build_mask(mask_type, batch, student_grid, ratio, attention=teacher.attention, device=media.device)
        mask = prepend_cls_column(mask)
        return mask, gather_visible(teacher.features, mask)

    # ----------------------------------------------------------------------------- losses

    def forward(
        self, media: Tensor, text_ids: Tensor, text_mask: Tensor, positive_ids: Tensor, media_type: str = "video"
    ) -> dict[str, Tensor]:
        """Weighted losses of one batch: ``loss_uta``, ``loss_vtc``, ``loss_vtm``, ``loss_mlm`` (those enabled)."""
        self.clamp_temp()
        weights = self.loss_weight
        mask, teacher_features = self.encode_teacher(media, media_type)
        vision = self.encode_vision(media, mask)
        losses = {}
        if teacher_features is not None:
            student = vision.clip_features
            losses["loss_uta"] = weights["uta"] * uta_loss(
                student, teacher_features, self.uta_norm_type, self.uta_loss_type
            )
        text_hidden = self.encode_text(text_ids, text_mask)
        vision_embed = self.vision_embedding(vision.pooled)
        text_embed = self.text_embedding(text_hidden)
        if weights["vtc"] > 0:
            losses["loss_vtc"] = weights["vtc"] * vtc_loss(vision_embed, text_embed, positive_ids, self.temp)
        if weights["vtm"] > 0:
            losses["loss_vtm"] = weights["vtm"] * self.vtm_loss(
                vision.patch_tokens, text_hidden, text_mask, vision_embed, text_embed, positive_ids
            )
        if weights["mlm"] > 0:
            losses["loss_mlm"] = weights["mlm"] * self.mlm_loss(text_ids, text_mask, vision.patch_tokens)
        return losses

    def vtm_loss(
        self,
        vision_tokens: Tensor,
        text_hidden: Tensor,
        text_mask: Tensor,
        vision_embed: Tensor,
        text_embed: Tensor,
        positive_ids: Tensor,
    ) -> Tensor:
        """Matching loss on the positive pairs, a hard negative video per text and a hard negative text per video."""
        with torch.no_grad():
            sim_v2t, sim_t2v = similarity(vision_embed, text_embed, self.temp)
            texts_with_negative, negative_video = sample_hard_negatives(sim_t2v, positive_ids, self.vtm_hard_negatives)
            videos_with_negative, negative_text = sample_hard_negatives(sim_v2t, positive_ids, self.vtm_hard_negatives)
        vision_all = torch.cat([vision_tokens, vision_tokens[negative_video], vision_tokens[videos_with_negative]])
        text_all = torch.cat([text_hidden, text_hidden[texts_with_negative], text_hidden[negative_text]])
        mask_all = torch.cat([text_mask, text_mask[texts_with_negative], text_mask[negative_text]])
        logits = self.itm_logits(vision_all, text_all, mask_all)
        labels = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        labels[: len(vision_tokens)] = 1
        return F.cross_entropy(logits.float(), labels)

    def mlm_loss(self, text_ids: Tensor, text_mask: Tensor, vision_tokens: Tensor) -> Tensor:
        """Masked-token prediction from the text and the video."""
        masked_ids, labels = mask_tokens_for_mlm(
            text_ids, self.mlm_probability, self.mask_token_id, self.vocab_size, (self.pad_token_id, self.cls_token_id)
        )
        hidden = self.encode_text(masked_ids, text_mask)
        fused = self.text_bert(
            attention_mask=text_mask, mode="fusion", hidden_states=hidden, encoder_hidden_states=vision_tokens
        )
        logits = self.text_encoder.cls(fused)
        if not (labels != -100).any():  # nothing drawn for masking: a zero that keeps the graph
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)


class UMTQAVideoMamba(UMTVideoMamba):
    """Generative question answering: the question is fused with the video by the text encoder, and a
    causal BERT decoder (``text_decoder``, initialised from the top layers of the text encoder when
    loading a video-text checkpoint) writes the answer while cross-attending to the fused question.
    """

    def __init__(self, config: DictConfig, tokenizer: Any) -> None:
        super().__init__(config, tokenizer, is_pretrain=False)
        bert_config = self.text_bert.config
        num_layers = int(config.model.get("text_decoder_layers", 0)) or (
            bert_config.num_hidden_layers - self.text_bert.fusion_layer
        )
        decoder_config = copy_config(bert_config, num_hidden_layers=num_layers)
        self.text_decoder = BertWithLMHead(decoder_config, 0, bert_config.hidden_size, causal=True)
        self.bos_token_id = tokenizer.cls_token_id
        self.eos_token_id = tokenizer.sep_token_id

    def question_states(self, media: Tensor, question_ids: Tensor, question_mask: Tensor) -> Tensor:
        vision = self.encode_vision(media)
        hidden = self.encode_text(question_ids, question_mask)
        return self.text_bert(
            attention_mask=question_mask, mode="fusion", hidden_states=hidden, encoder_hidden_states=vision.patch_tokens
        )

    def decoder_logits(self, states: Tensor, question_mask: Tensor, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Next-token logits (N, L, V) of answer prefixes `ids`, attending to the fused question `states`."""
        mask = torch.ones_like(ids) if mask is None else mask
        return self.text_decoder(
            ids, mask, mode="multimodal", encoder_hidden_states=states, encoder_attention_mask=question_mask
        )

    def answer_log_likelihood(
        self, states: Tensor, question_mask: Tensor, answer_ids: Tensor, answer_mask: Tensor
    ) -> Tensor:
        """Sum of log p(token | earlier tokens, question) over each answer's tokens after [CLS]: (N,)."""
        logits = self.decoder_logits(states, question_mask, answer_ids, answer_mask)
        log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = answer_ids[:, 1:]
        token_log_probs = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (token_log_probs * answer_mask[:, 1:]).sum(dim=1)

    def forward(  # type: ignore[override]
        self,
        media: Tensor,
        question_ids: Tensor,
        question_mask: Tensor,
        answer_ids: Tensor,
        answer_mask: Tensor,
        answer_weights: Tensor,
        answers_per_question: Tensor,
    ) -> dict[str, Tensor]:
        """Teacher-forced answer loss: each question's answers weighted by their annotation share."""
        states = self.question_states(media, question_ids, question_mask)
        states = states.repeat_interleave(answers_per_question, dim=0)
        question_mask = question_mask.repeat_interleave(answers_per_question, dim=0)
        log_likelihood = self.answer_log_likelihood(states, question_mask, answer_ids, answer_mask)
        return {"loss_qa": -(answer_weights * log_likelihood).sum() / len(media)}

    @torch.no_grad()
    def rank_answers(
        self, states: Tensor, question_mask: Tensor, answer_ids: Tensor, answer_mask: Tensor, k: int
    ) -> Tensor:
        """Index of the most likely answer of the candidate list for every question.

        The first answer token's probability short-lists `k` candidates per question, then the whole
        answers' likelihoods decide among them.
        """
        batch = len(states)
        start = torch.full((batch, 1), self.bos_token_id, dtype=torch.long, device=states.device)
        first = self.decoder_logits(states, question_mask, start)
        first_token_probs = first[:, 0].float().softmax(dim=-1)[:, answer_ids[:, 1]]  # (B, num_answers)
        k = min(k, len(answer_ids))
        candidates = first_token_probs.topk(k, dim=1).indices  # (B, k)
        flat = candidates.flatten()
        scores = self.answer_log_likelihood(
            states.repeat_interleave(k, dim=0),
            question_mask.repeat_interleave(k, dim=0),
            answer_ids[flat],
            answer_mask[flat],
        ).view(batch, k)
        return candidates.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)

    @torch.no_grad()
    def generate(self, states: Tensor, question_mask: Tensor, max_length: int) -> Tensor:
        """Greedy decoding: (B, <= max_length + 1) token ids starting with [CLS], padded after [SEP]."""
        ids = torch.full((len(states), 1), self.bos_token_id, dtype=torch.long, device=states.device)
        finished = torch.zeros(len(states), dtype=torch.bool, device=states.device)
        for _ in range(max_length):
            logits = self.decoder_logits(states, question_mask, ids)
            next_token = logits[:, -1].argmax(dim=-1).masked_fill(finished, self.pad_token_id)
            ids = torch.cat([ids, next_token[:, None]], dim=1)
            finished |= next_token == self.eos_token_id
            if finished.all():
                break
        return ids


MODELS = {"UMT_VIDEOMAMBA": UMTVideoMamba, "UMT_QA_VIDEOMAMBA": UMTQAVideoMamba}


def build_model(config: DictConfig, tokenizer: Any, is_pretrain: bool = False) -> UMTVideoMamba:
    """The model named by ``config.model.model_cls``."""
    name = config.model.model_cls
    if name not in MODELS:
        raise ConfigError(f"model.model_cls {name!r} is not one of {sorted(MODELS)}")
    if MODELS[name] is UMTQAVideoMamba:
        return UMTQAVideoMamba(config, tokenizer)
    return MODELS[name](config, tokenizer, is_pretrain=is_pretrain)
