"""Evaluation of video-text models: retrieval (dual encoder + ITM re-ranking), multiple choice, QA accuracy.

Retrieval, as in the original:
1. every text is encoded by the text layers, every video by the vision encoder (its patch tokens,
   without cls, kept for re-ranking, in half precision and optionally on the CPU: ``eval_offload``);
2. the dual-encoder similarity (mean over frames of per-frame cosine similarities) ranks all pairs;
3. for every query the top ``k_test`` candidates are re-scored by the fusion layers and the ITM head
   (the "match" logit); the others get -100. Queries are sharded across ranks, then summed.
Metrics (`retrieval_metrics`): R@1/5/10 in percent for video-to-text (``txt_r*``: a video's rank is
that of its best-ranked caption) and text-to-video (``img_r*``), their means and ``r_mean``; a tie
with the ground truth counts against it. Results are reported under ``"<split>/"`` (re-ranked) and
``"<split>_emb/"`` (dual encoder only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from videomamba.core.distributed import all_reduce_sum, get_rank, get_world_size
from videomamba.core.metrics import MetricLogger
from videomamba.core.optim import autocast

from .data.datasets import RetrievalEvalDataset
from .data.text import tokenize
from .models.losses import similarity
from .models.umt import UMTVideoMamba

__all__ = [
    "EvalSettings",
    "evaluate_multiple_choice",
    "evaluate_qa",
    "evaluate_retrieval",
    "normalize_answer",
    "retrieval_metrics",
    "vqa_accuracy",
]

ENSEMBLES = ("concat", "mean", "max")


class EvalSettings:
    """Device and precision of an evaluation run, and the re-ranking settings."""

    def __init__(
        self,
        device: torch.device,
        amp: bool = False,
        amp_dtype: torch.dtype = torch.bfloat16,
        k_test: int = 128,
        itm_batch_size: int = 32,
        offload: bool = False,
        frame_ensemble: str = "concat",
        dual_encoder_only: bool = False,
        log_freq: int = 50,
    ) -> None:
        if frame_ensemble not in ENSEMBLES:
            raise ValueError(f"eval_frame_ensemble must be one of {ENSEMBLES}, got {frame_ensemble!r}")
        self.device, self.amp, self.amp_dtype = device, amp, amp_dtype
        self.k_test, self.itm_batch_size = k_test, itm_batch_size
        self.offload, self.frame_ensemble = offload, frame_ensemble
        self.dual_encoder_only = dual_encoder_only
        self.log_freq = log_freq

    def autocast(self):
        return autocast(self.device, self.amp, self.amp_dtype)

    @property
    def storage(self) -> tuple[torch.device, torch.dtype]:
        """Where and how the tokens of all test videos are kept until re-ranking."""
        dtype = self.amp_dtype if self.amp else torch.float32
        return (torch.device("cpu") if self.offload else self.device), dtype


def encode_clip(model: UMTVideoMamba, media: Tensor, ensemble: str = "concat") -> tuple[Tensor, Tensor]:
    """(patch tokens, pooled) of clips; a clip longer than the model's frames is cut into views whose patch
    tokens are concatenated and whose pooled features are concatenated over time, averaged or max-pooled."""
    frames, model_frames = media.shape[2], model.vision_encoder.num_frames
    if frames == 1 or model_frames is None or frames == model_frames:
        out = model.encode_vision(media)
        return out.patch_tokens, out.pooled
    if frames % model_frames:
        raise ValueError(f"num_frames_test {frames} must equal num_frames {model_frames} or be a multiple of it")
    views = [model.encode_vision(view) for view in media.split(model_frames, dim=2)]
    tokens = torch.cat([view.patch_tokens for view in views], dim=1)
    pooled = torch.stack([view.pooled for view in views])
    if ensemble == "concat":
        return tokens, torch.cat(list(pooled), dim=1)
    return tokens, pooled.mean(dim=0) if ensemble == "mean" else pooled.amax(dim=0)


@torch.no_grad()
def encode_texts(
    model: UMTVideoMamba,
    tokenizer,
    texts: Sequence[str],
    max_length: int,
    settings: EvalSettings,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor, Tensor]:
    """(joint-space embeddings (N, C) float32, text hidden states (N, L, H), attention masks (N, L))."""
    embeds, hiddens, masks = [], [], []
    storage_device, storage_dtype = settings.storage
    for start in range(0, len(texts), batch_size):
        tokens = tokenize(tokenizer, texts[start : start + batch_size], max_length, settings.device)
        with settings.autocast():
            hidden = model.encode_text(tokens.input_ids, tokens.attention_mask)
            embeds.append(model.text_embedding(hidden).float())
        hiddens.append(hidden.to(storage_device, storage_dtype))
        masks.append(tokens.attention_mask.to(storage_device))
    return torch.cat(embeds), torch.cat(hiddens), torch.cat(masks)


@torch.no_grad()
def encode_media(model: UMTVideoMamba, loader: DataLoader, settings: EvalSettings) -> tuple[Tensor, Tensor]:
    """(joint-space embeddings (M, T', C) float32, patch tokens (M, L, D)) in dataset order."""
    embeds, tokens_all = [], []
    storage_device, storage_dtype = settings.storage
    logger = MetricLogger()
    for media, _ in logger.log_every(loader, settings.log_freq, header="encoding videos"):
        with settings.autocast():
            tokens, pooled = encode_clip(model, media.to(settings.device, non_blocking=True), settings.frame_ensemble)
            embeds.append(model.vision_embedding(pooled).float())
        tokens_all.append(tokens.to(storage_device, storage_dtype))
    return torch.cat(embeds), torch.cat(tokens_all)


@torch.no_grad()
def itm_rerank(
    model: UMTVideoMamba,
    sim_v2t: Tensor,
    media_tokens: Tensor,
    text_hidden: Tensor,
    text_masks: Tensor,
    settings: EvalSettings,
) -> tuple[Tensor, Tensor]:
    """ITM scores of each query's top-k candidates (others -100): (video-to-text (M, N), text-to-video (N, M))."""
    num_media, num_texts = sim_v2t.shape
    rank, world = get_rank(), get_world_size()
    # Every rank fills its share of the query rows; the sum across ranks assembles the matrices.
    score_v2t = torch.zeros(num_media, num_texts)
    score_t2v = torch.zeros(num_texts, num_media)
    device = settings.device

    def match_logits(vision: Tensor, hidden: Tensor, mask: Tensor) -> Tensor:
        with settings.autocast():
            logits = model.itm_logits(vision.to(device), hidden.to(device), mask.to(device))
        return logits[:, 1].float().cpu()

    for query in range(rank, num_media, world):
        score_v2t[query] = -100.0
        candidates = sim_v2t[query].topk(min(settings.k_test, num_texts)).indices.cpu()
        for chunk in candidates.split(settings.itm_batch_size):
            vision = media_tokens[query : query + 1].expand(len(chunk), -1, -1)
            score_v2t[query, chunk] = match_logits(vision, text_hidden[chunk], text_masks[chunk])
    for query in range(rank, num_texts, world):
        score_t2v[query] = -100.0
        candidates = sim_v2t[:, query].topk(min(settings.k_test, num_media)).indices.cpu()
        for chunk in candidates.split(settings.itm_batch_size):
            hidden = text_hidden[query : query + 1].expand(len(chunk), -1, -1)
            mask = text_masks[query : query + 1].expand(len(chunk), -1)
            score_t2v[query, chunk] = match_logits(media_tokens[chunk], hidden, mask)
    return all_reduce_sum(score_v2t), all_reduce_sum(score_t2v)


def _pessimistic_rank(scores: np.ndarray, target: int) -> int:
    """0-based rank of `target` among `scores` (descending); ties with it count as ranked above it."""
    value = scores[target]
    return int((scores > value).sum() + (scores == value).sum() - 1)


def retrieval_metrics(
    score_v2t: np.ndarray, score_t2v: np.ndarray, media_to_texts: Sequence[Sequence[int]], text_to_media: Sequence[int]
) -> dict[str, float]:
    """R@1/5/10 (percent) of both directions, their means and r_mean (see the module notes)."""
    v2t_ranks = np.array(
        [min(_pessimistic_rank(score_v2t[i], t) for t in texts) for i, texts in enumerate(media_to_texts)]
    )
    t2v_ranks = np.array([_pessimistic_rank(score_t2v[j], media) for j, media in enumerate(text_to_media)])
    results = {}
    for prefix, ranks in (("txt", v2t_ranks), ("img", t2v_ranks)):
        for k in (1, 5, 10):
            results[f"{prefix}_r{k}"] = float(100.0 * (ranks < k).mean())
        results[f"{prefix}_r_mean"] = (results[f"{prefix}_r1"] + results[f"{prefix}_r5"] + results[f"{prefix}_r10"]) / 3
    results["r_mean"] = (results["txt_r_mean"] + results["img_r_mean"]) / 2
    return results


@torch.no_grad()
def evaluate_retrieval(
    model: UMTVideoMamba,
    dataset: RetrievalEvalDataset,
    loader: DataLoader,
    tokenizer,
    max_length: int,
    split: str,
    settings: EvalSettings,
) -> dict[str, dict[str, float]]:
    """``{"<split>/": ITM re-ranked metrics, "<split>_emb/": dual-encoder metrics}``."""
    model.eval()
    model.clamp_temp()
    text_embeds, text_hidden, text_masks = encode_texts(model, tokenizer, dataset.texts, max_length, settings)
    media_embeds, media_tokens = encode_media(model, loader, settings)
    sim_v2t, _ = similarity(media_embeds, text_embeds, model.temp.detach().float())
    sim_v2t = sim_v2t.cpu()
    results = {
        f"{split}_emb/": retrieval_metrics(
            sim_v2t.numpy(), sim_v2t.t().numpy(), dataset.media_to_texts, dataset.text_to_media
        )
    }
    if not settings.dual_encoder_only:
        score_v2t, score_t2v = itm_rerank(model, sim_v2t, media_tokens, text_hidden, text_masks, settings)
        results[f"{split}/"] = retrieval_metrics(
            score_v2t.numpy(), score_t2v.numpy(), dataset.media_to_texts, dataset.text_to_media
        )
    return results


@torch.no_grad()
def score_options(
    model: UMTVideoMamba, media: Tensor, options: list[list[str]], tokenizer, max_length: int, settings: EvalSettings
) -> Tensor:
    """Multiple-choice scores (B, num_options): 0.7 · P(match) from ITM + 0.3 · softmax over the options of sim/temp."""
    batch, num_options = len(options), len(options[0])
    tokens = tokenize(tokenizer, [option for item in options for option in item], max_length, settings.device)
    with settings.autocast():
        tokens_v, pooled = encode_clip(model, media.to(settings.device), settings.frame_ensemble)
        vision_embed = model.vision_embedding(pooled).float()
        hidden = model.encode_text(tokens.input_ids, tokens.attention_mask)
        text_embed = model.text_embedding(hidden).float().view(batch, num_options, -1)
        match = (
            model.itm_logits(tokens_v.repeat_interleave(num_options, dim=0), hidden, tokens.attention_mask)
            .float()
            .softmax(dim=1)[:, 1]
        )
    vision_embed = torch.nn.functional.normalize(vision_embed, dim=-1)
    text_embed = torch.nn.functional.normalize(text_embed, dim=-1)
    sim = torch.einsum("btc,boc->bo", vision_embed, text_embed) / vision_embed.shape[1] / model.temp.float()
    return 0.7 * match.view(batch, num_options) + 0.3 * sim.softmax(dim=1)


@torch.no_grad()
def evaluate_multiple_choice(
    model: UMTVideoMamba, loader: DataLoader, tokenizer, max_length: int, settings: EvalSettings
) -> tuple[float, list[dict]]:
    """(accuracy in percent, per-question predictions) over a `MultipleChoiceDataset` loader."""
    model.eval()
    model.clamp_temp()
    predictions = []
    logger = MetricLogger()
    for media, options, answers in logger.log_every(loader, settings.log_freq, header="multiple choice"):
        scores = score_options(model, media, options, tokenizer, max_length, settings).cpu()
        for item_scores, answer in zip(scores, answers.tolist(), strict=True):
            predictions.append(dict(prediction=int(item_scores.argmax()), answer=answer, scores=item_scores.tolist()))
    correct = sum(p["prediction"] == p["answer"] for p in predictions)
    return 100.0 * correct / max(len(predictions), 1), predictions


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBERS = {"none": "0", **{word: str(value) for value, word in enumerate(_NUMBER_WORDS)}}


def normalize_answer(text: str) -> str:
    """VQA-style normalisation: lower case, no punctuation or articles, number words as digits."""
    text = _ARTICLES.sub(" ", _PUNCTUATION.sub(" ", text.lower()))
    return " ".join(_NUMBERS.get(word, word) for word in text.split())


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """min(1, matching annotations / 3): full credit when three annotators (or all, if fewer) agree."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    predicted = normalize_answer(prediction)
    matches = sum(normalize_answer(answer) == predicted for answer in answers)
    return min(1.0, matches / min(3, len(answers)))


def _as_list(values: Tensor | Sequence) -> list:
    return values.tolist() if isinstance(values, Tensor) else list(values)


@torch.no_grad()
def evaluate_qa(
    model,
    loader: DataLoader,
    tokenizer,
    answer_list: Sequence[str],
    settings: EvalSettings,
    mode: str = "rank",
    max_question_length: int = 25,
    max_answer_length: int = 10,
) -> tuple[float | None, list[dict]]:
    """(VQA accuracy in percent, or None without ground truth; predictions) over a `QADataset` loader.

    ``rank``: the best answer of `answer_list` (`UMTQAVideoMamba.rank_answers`, short list of
    ``k_test``); ``generate``: greedy decoding, free text.
    """
    if mode not in ("rank", "generate"):
        raise ValueError(f"answer mode must be 'rank' or 'generate', got {mode!r}")
    model.eval()
    dataset = loader.dataset
    answers = tokenize(tokenizer, answer_list, max_answer_length + 2, settings.device, padding="longest")
    predictions = []
    logger = MetricLogger()
    for media, questions, question_ids in logger.log_every(loader, settings.log_freq, header="question answering"):
        tokens = tokenize(tokenizer, questions, max_question_length, settings.device, padding="longest")
        with settings.autocast():
            states = model.question_states(media.to(settings.device), tokens.input_ids, tokens.attention_mask)
            if mode == "rank":
                best = model.rank_answers(
                    states, tokens.attention_mask, answers.input_ids, answers.attention_mask, settings.k_test
                )
                texts = [answer_list[i] for i in best.tolist()]
            else:
                generated = model.generate(states, tokens.attention_mask, max_answer_length)
                texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
        predictions += [
            dict(question_id=qid, answer=text.strip()) for qid, text in zip(_as_list(question_ids), texts, strict=True)
        ]
    truths = {entry["question_id"]: entry["answers"] for entry in dataset.entries}
    scored = [vqa_accuracy(p["answer"], truths[p["question_id"]]) for p in predictions if truths[p["question_id"]]]
    accuracy = 100.0 * sum(scored) / len(scored) if scored else None
    return accuracy, predictions
