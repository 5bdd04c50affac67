"""video_mm models: released key layout, checkpoint loading, pooling, BERT modes, teacher handling."""

from pathlib import Path

import pytest
import torch

from videomamba.core.pretrained import CheckpointError, load_pretrained
from videomamba.video_mm.config import load_config
from videomamba.video_mm.data.text import load_tokenizer
from videomamba.video_mm.evaluation import encode_clip
from videomamba.video_mm.models.loading import check_fits_for_evaluation, load_video_mm_checkpoint
from videomamba.video_mm.models.umt import UMTQAVideoMamba, build_model, text_encoder_origin
from videomamba.video_mm.models.vision import VideoTextVisionEncoder
from videomamba.video_mm.synthetic import tiny_overrides, write_tiny_bert
from videomamba.video_mm.tasks.engine import build_optimizer

VIDEO_MM = Path(__file__).resolve().parents[1] / "video_mm"
EXP = VIDEO_MM / "exp_pt/videomamba_middle_5m/config.py"
DEPTH, BERT_LAYERS, FUSION = 2, 3, 2
MIXER = (
    "A_log", "D", "A_b_log", "D_b", "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
    "dt_proj.weight", "dt_proj.bias", "conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight",
    "dt_proj_b.bias", "out_proj.weight",
)  # fmt: skip


def _weights_and_biases(*names: str) -> list[str]:
    return [f"{name}.{part}" for name in names for part in ("weight", "bias")]


def released_keys(pretraining: bool) -> list[str]:
    """The key list of a released video_mm checkpoint, in its order, scaled down to the tiny architecture."""
    vision = ["cls_token", "pos_embed", "temporal_pos_embedding", *_weights_and_biases("patch_embed.proj")]
    for i in range(DEPTH):
        vision += [f"layers.{i}.mixer.{name}" for name in MIXER] + [f"layers.{i}.norm.weight"]
    vision += ["norm.weight", *_weights_and_biases("clip_decoder.0.head", "clip_decoder.0.norm", "pool_norm")]
    bert = [f"embeddings.{name}.weight" for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    bert += _weights_and_biases("embeddings.LayerNorm")
    for i in range(BERT_LAYERS):
        blocks = ["attention"] + (["crossattention"] if i >= FUSION else [])
        for block in blocks:
            bert += _weights_and_biases(
                *(f"encoder.layer.{i}.{block}.self.{p}" for p in ("query", "key", "value")),
                f"encoder.layer.{i}.{block}.output.dense",
                f"encoder.layer.{i}.{block}.output.LayerNorm",
            )
        bert += _weights_and_biases(
            f"encoder.layer.{i}.intermediate.dense",
            f"encoder.layer.{i}.output.dense",
            f"encoder.layer.{i}.output.LayerNorm",
        )
    text = [f"text_encoder.{'bert.' if pretraining else ''}{key}" for key in bert]
    if pretraining:
        text += ["text_encoder.cls.predictions.bias", "text_encoder.cls.predictions.decoder.weight"]
        text += _weights_and_biases("text_encoder.cls.predictions.transform.dense")
        text += _weights_and_biases(
            "text_encoder.cls.predictions.transform.LayerNorm", "text_encoder.cls.predictions.decoder"
        )
    heads = [*_weights_and_biases("vision_proj", "text_proj"), "temp", *_weights_and_biases("itm_head")]
    return [f"vision_encoder.{k}" for k in vision] + text + heads


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_bert(root / "checkpoints" / "bert-base-uncased", layers=BERT_LAYERS, fusion_layer=FUSION)
    overrides = tiny_overrides(root) + ["model.vision_encoder.depth", str(DEPTH)]
    config = load_config(EXP, overrides)
    return config, load_tokenizer(config.model.text_encoder.pretrained), overrides


def _model(tiny, is_pretrain=True, overrides=()):
    config, tokenizer, base = tiny
    if not is_pretrain:  # a retrieval model has no MLM head
        overrides = [*overrides, "criterion.loss_weight.mlm", "0.0"]
    if overrides:
        config = load_config(EXP, [*base, *overrides])
    torch.manual_seed(0)
    return build_model(config, tokenizer, is_pretrain=is_pretrain)


def _released_state(model, keys):
    own = model.state_dict()
    state = {}
    for key in keys:
        ours = key.replace("vision_encoder.norm.weight", "vision_encoder.norm_f.weight")
        state[key] = torch.randn_like(own[ours]) if key != "temp" else torch.tensor(0.05)
    return state


@pytest.mark.parametrize("pretraining", [True, False], ids=["pretraining_layout", "retrieval_layout"])
def test_state_dict_has_the_released_layout(tiny, pretraining):
    model = _model(tiny, is_pretrain=pretraining)
    ours = {k.replace("norm_f.", "norm.") for k in model.state_dict()}
    assert ours == set(released_keys(pretraining))  # the teacher is present but never saved
    assert model.clip_teacher is not None
    layer = f"text_encoder.{'bert.' if pretraining else ''}encoder.layer.{FUSION}.crossattention.self.key.weight"
    assert model.state_dict()[layer].shape == (32, 32)  # (BERT hidden, vision width)
    assert model.state_dict()["vision_proj.weight"].shape == (16, 32)


@pytest.mark.parametrize("source_pretraining", [True, False])
@pytest.mark.parametrize("target_pretraining", [True, False])
def test_released_checkpoints_load_into_both_layouts(tiny, source_pretraining, target_pretraining):
    source = _model(tiny, is_pretrain=True)
    keys = released_keys(source_pretraining)
    state = _released_state(source, keys) if source_pretraining else None
    if not source_pretraining:
        retrieval = _model(tiny, is_pretrain=False)
        state = _released_state(retrieval, keys)
    # Extra entries real files carry: the teacher's weights and an old BERT buffer.
    state["clip_teacher.conv1.weight"] = torch.randn(32, 3, 1, 8, 8)
    prefix = "text_encoder.bert." if source_pretraining else "text_encoder."
    state[f"{prefix}embeddings.position_ids"] = torch.arange(64)[None]
    target = _model(tiny, is_pretrain=target_pretraining)
    teacher_before = target.clip_teacher.conv1.weight.clone()
    report = load_video_mm_checkpoint(
        target, {"model": state}, strict=not (target_pretraining and not source_pretraining)
    )
    missing = set(report.missing)
    if target_pretraining and not source_pretraining:
        assert missing and all(k.startswith("text_encoder.cls.") for k in missing)  # the head is not in the file
    else:
        assert not missing
    assert not report.unexpected and not report.mismatched
    loaded = target.state_dict()
    text_key = "encoder.layer.2.crossattention.self.key.weight"
    torch.testing.assert_close(
        loaded[("text_encoder.bert." if target_pretraining else "text_encoder.") + text_key], state[prefix + text_key]
    )
    torch.testing.assert_close(loaded["vision_encoder.norm_f.weight"], state["vision_encoder.norm.weight"])
    torch.testing.assert_close(loaded["temp"], torch.tensor(0.05))
    assert torch.equal(target.clip_teacher.conv1.weight, teacher_before)  # never loaded from here


def test_masked_video_pretraining_checkpoint_initialises_the_vision_encoder(tiny):
    model = _model(tiny)
    vision_keys = [k[len("vision_encoder.") :] for k in released_keys(True) if k.startswith("vision_encoder.")]
    own = {k.replace("norm_f.", "norm."): v for k, v in model.vision_encoder.state_dict().items()}
    # The K400 mask-pretraining release: a bare state dict, 8 frames, no pool_norm.
    state = {k: torch.randn_like(own[k]) for k in vision_keys if not k.startswith("pool_norm")}
    state["temporal_pos_embedding"] = torch.randn(1, 8, 32)
    report = load_pretrained(model.vision_encoder, state, strict=False, verbose=False)
    assert sorted(report.missing) == ["pool_norm.bias", "pool_norm.weight"]
    assert model.vision_encoder.temporal_pos_embedding.shape == (1, 4, 32)  # interpolated from 8 frames
    torch.testing.assert_close(model.vision_encoder.norm_f.weight, state["norm.weight"])


def test_strict_loading_reports_missing_keys(tiny):
    model = _model(tiny, is_pretrain=False)
    state = _released_state(model, released_keys(False))
    del state["itm_head.weight"]
    with pytest.raises(CheckpointError, match="itm_head.weight"):
        load_video_mm_checkpoint(model, state, strict=True)


def test_evaluation_refuses_a_checkpoint_that_does_not_fit(tiny):
    model = _model(tiny, is_pretrain=False)
    state = _released_state(model, released_keys(False))
    fits = load_video_mm_checkpoint(model, dict(state), verbose=False)
    check_fits_for_evaluation(fits)  # a checkpoint of this very model
    state["text_proj.weight"] = torch.randn(3, 3)
    state["vision_encoder.clip_decoder.0.head.weight"] = torch.randn(3, 3)  # unused at evaluation
    report = load_video_mm_checkpoint(model, state, verbose=False)
    with pytest.raises(CheckpointError, match=r"1 tensors do not fit .*text_proj.weight"):
        check_fits_for_evaluation(report)


def test_teacher_is_not_optimized_or_saved(tiny):
    model = _model(tiny)
    optimizer = build_optimizer(model, tiny[0])
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimized for p in model.clip_teacher.parameters())
    assert not any(k.startswith("clip_teacher") for k in model.state_dict())
    names = {n for group in optimizer.param_groups for n in group["param_names"] if group["weight_decay"] == 0}
    assert {"temp", "vision_encoder.pos_embed", "vision_encoder.cls_token", "itm_head.bias"} <= names


def test_unmasked_model_has_no_teacher(tiny):
    model = _model(tiny, overrides=["model.vision_encoder.clip_teacher", "none", "criterion.loss_weight.uta", "0.0"])
    assert model.clip_teacher is None


def test_per_frame_pooling_is_the_same_with_and_without_a_mask():
    torch.manual_seed(0)
    encoder = VideoTextVisionEncoder(
        img_size=32, patch_size=16, depth=1, embed_dim=16, num_frames=4, clip_output_dim=8, pool_type="cls+avg"
    ).eval()
    tokens = torch.randn(2, 1 + 4 * 4, 16)
    cls, patches = tokens[:, :1], tokens[:, 1:].reshape(2, 4, 4, 16)
    expected = encoder.pool_norm(cls + patches.mean(dim=2))
    torch.testing.assert_close(encoder.pool(tokens, None, 4), expected)
    # A tube mask hides the same 2 patches of every frame: each frame averages its 2 visible tokens.
    hidden = torch.zeros(2, 4, 4, dtype=torch.bool)
    hidden[:, :, :2] = True
    mask = torch.cat([torch.zeros(2, 1, dtype=torch.bool), hidden.reshape(2, -1)], dim=1)
    visible = torch.cat([cls, patches[:, :, 2:].reshape(2, -1, 16)], dim=1)
    torch.testing.assert_close(encoder.pool(visible, mask, 4), encoder.pool_norm(cls + patches[:, :, 2:].mean(dim=2)))
    # A random mask keeps different counts per frame; each frame still averages only its own tokens.
    random_hidden = torch.zeros(2, 16, dtype=torch.bool)
    random_hidden[0, [0, 1, 2, 5]] = True  # frame 0 keeps 1 token, frame 1 keeps 3
    random_hidden[1, [4, 5, 6, 7]] = True  # frame 1 keeps none: its average is zero
    mask = torch.cat([torch.zeros(2, 1, dtype=torch.bool), random_hidden], dim=1)
    flat = tokens[:, 1:]
    visible = torch.cat([cls, flat[~random_hidden].reshape(2, 12, 16)], dim=1)
    pooled = encoder.pool(visible, mask, 4)
    torch.testing.assert_close(pooled[0, 0], encoder.pool_norm(cls[0, 0] + flat[0, 3]))
    torch.testing.assert_close(pooled[0, 1], encoder.pool_norm(cls[0, 0] + flat[0, [4, 6, 7]].mean(0)))
    torch.testing.assert_close(pooled[1, 1], encoder.pool_norm(cls[1, 0]))


def test_masked_training_pools_per_frame_like_evaluation(tiny):
    model = _model(tiny).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    mask, targets = model.encode_teacher(video, "video")
    assert mask.shape == (2, 1 + 4 * 16) and targets.shape[:3] == (1, 2, 1 + 4 * (16 - int(16 * 0.8)))
    masked, full = model.encode_vision(video, mask), model.encode_vision(video)
    assert masked.pooled.shape == full.pooled.shape == (2, 4, 32)  # keep_temporal in both stages
    assert masked.clip_features.shape == targets.shape
    image = torch.randn(2, 3, 1, 32, 32)
    image_mask, _ = model.encode_teacher(image, "image")
    assert model.encode_vision(image, image_mask).pooled.shape == (2, 1, 32)


def test_bert_modes_and_lm_head_tying(tiny):
    model = _model(tiny)
    bert = model.text_bert
    ids = torch.tensor([[2, 5, 19, 3, 0]])
    mask = (ids != 0).long()
    text = bert(ids, mask, mode="text")
    vision = torch.randn(1, 7, 32)
    fused = bert(attention_mask=mask, mode="fusion", hidden_states=text, encoder_hidden_states=vision)
    torch.testing.assert_close(fused, bert(ids, mask, mode="multimodal", encoder_hidden_states=vision))
    assert not torch.allclose(
        fused, bert(attention_mask=mask, mode="fusion", hidden_states=text, encoder_hidden_states=torch.randn(1, 7, 32))
    )
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        bert(ids, mask, mode="multimodal")
    head = model.text_encoder.cls.predictions
    assert head.decoder.weight is bert.embeddings.word_embeddings.weight and head.decoder.bias is head.bias


def test_qa_decoder_is_causal_and_starts_from_the_top_text_layers(tiny):
    config = load_config(VIDEO_MM / "exp_qa/msrvtt/config.py", tiny[2])
    torch.manual_seed(0)
    qa = UMTQAVideoMamba(config, tiny[1])
    source = _model(tiny, is_pretrain=True)
    load_video_mm_checkpoint(qa, {"model": source.state_dict()})
    top = source.text_encoder.bert.encoder.layer[BERT_LAYERS - 1]
    decoder_layer = qa.text_decoder.bert.encoder.layer[0]
    torch.testing.assert_close(decoder_layer.attention.self.query.weight, top.attention.self.query.weight)
    torch.testing.assert_close(qa.text_decoder.cls.predictions.bias, source.text_encoder.cls.predictions.bias)
    states = torch.randn(1, 4, 32)
    ids = torch.tensor([[2, 19, 23, 3]])
    changed = ids.clone()
    changed[0, 3] = 20
    kwargs = dict(mode="multimodal", encoder_hidden_states=states, encoder_attention_mask=torch.ones(1, 4))
    a = qa.text_decoder(ids, torch.ones_like(ids), **kwargs)
    b = qa.text_decoder(changed, torch.ones_like(ids), **kwargs)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # later tokens do not change earlier predictions


def test_longer_test_clips_are_encoded_as_views_and_ensembled(tiny):
    model = _model(tiny, is_pretrain=False).eval()
    clip = torch.randn(2, 3, 8, 32, 32)  # twice the model's 4 frames
    with torch.no_grad():
        tokens, pooled = encode_clip(model, clip, "concat")
        first = model.encode_vision(clip[:, :, :4])
        assert tokens.shape == (2, 2 * 4 * 16, 32) and pooled.shape == (2, 8, 32)  # patch tokens: no cls
        torch.testing.assert_close(pooled[:, :4], first.pooled)
        mean = encode_clip(model, clip, "mean")[1]
        torch.testing.assert_close(mean, (first.pooled + model.encode_vision(clip[:, :, 4:]).pooled) / 2)
    with pytest.raises(ValueError, match="multiple"):
        encode_clip(model, torch.randn(1, 3, 6, 32, 32))


def test_text_encoder_origin_is_told_after_the_checkpoint_that_fills_it(tiny, capsys):
    model = _model(tiny)  # the tiny BERT folder holds a config and no weights
    assert "starts from random initialisation" not in capsys.readouterr().out  # not before loading
    assert "random initialisation" in text_encoder_origin(model, None)
    report = load_video_mm_checkpoint(model, model.state_dict(), verbose=False)
    assert text_encoder_origin(model, report).startswith("text encoder: ") and "state dict" in text_encoder_origin(
        model, report
    )
    assert "random" not in text_encoder_origin(model, report)
