"""The masked-pretraining student shared by video_sm and video_mm."""

import argparse
import json
from pathlib import Path

import pytest
import torch

from videomamba.core.pretrain import PretrainVideoMamba, sinusoid_table
from videomamba.core.pretrained import load_pretrained
from videomamba.video_mm.config import load_config
from videomamba.video_mm.models.umt import build_vision_encoder
from videomamba.video_mm.synthetic import tiny_overrides
from videomamba.video_sm import run_videomamba_pretraining

TINY = dict(img_size=32, patch_size=16, depth=3, embed_dim=32, num_frames=4, tubelet_size=1, clip_output_dim=24)


def _student(**kwargs):
    torch.manual_seed(0)
    return PretrainVideoMamba(**{**TINY, **kwargs}).eval()


def test_state_dict_layout_matches_the_release():
    model = _student(clip_return_layer=2)
    keys = list(model.state_dict())
    assert not any(k.startswith(("head.", "clip_pos_embed")) for k in keys)
    decoder = [k for k in keys if k.startswith("clip_decoder.")]
    assert decoder == [
        f"clip_decoder.{i}.{m}.{p}" for i in range(2) for m in ("head", "norm") for p in ("weight", "bias")
    ]
    assert model.state_dict()["clip_decoder.0.head.weight"].shape == (24, 32)
    # A released mask-pretraining state dict calls the final norm `norm`: it loads strictly.
    released = {
        ("norm.weight" if k == "norm_f.weight" else k): torch.randn_like(v) for k, v in model.state_dict().items()
    }
    fresh = _student(clip_return_layer=2)
    report = load_pretrained(fresh, {"model": released}, strict=True, verbose=False)
    assert not report.missing and not report.unexpected
    torch.testing.assert_close(fresh.norm_f.weight, released["norm.weight"])


def test_returned_layers_are_normed_streams_and_include_the_last_mixer():
    model = _student(clip_return_layer=2, clip_norm_type="none")
    assert model.return_index == [1, 2]
    video = torch.randn(2, 3, 4, 32, 32)
    out = model(video)
    # By hand: the stream after block r's mixer, final-normed.
    hidden, residual = model.embed_tokens(video), None
    streams = []
    for layer in model.layers:
        hidden, residual = layer(hidden, residual)
        streams.append(residual + hidden)
    position = sinusoid_table(out.tokens.shape[1], 32)
    for k, r in enumerate(model.return_index):
        expected = model.clip_decoder[k](model.norm_f(streams[r]) + position)
        torch.testing.assert_close(out.clip_features[k], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.tokens, model.norm_f(streams[-1]), rtol=1e-4, atol=1e-5)
    # The alignment loss reaches the last block's mixer (the original's last feature skipped it).
    out.clip_features[-1].sum().backward()
    assert model.layers[-1].mixer.out_proj.weight.grad.abs().sum() > 0


def test_masked_forward_keeps_visible_tokens_only():
    model = _student()
    video = torch.randn(2, 3, 4, 32, 32)
    num_tokens = 1 + 4 * 4
    mask = torch.zeros(2, num_tokens, dtype=torch.bool)
    mask[0, 1:10] = True
    mask[1, 5:14] = True
    out = model(video, mask)
    assert out.tokens.shape == (2, num_tokens - 9, 32)
    assert out.clip_features.shape == (1, 2, num_tokens - 9, 24)
    torch.testing.assert_close(out.clip_features.norm(dim=-1), torch.ones(1, 2, num_tokens - 9))  # l2
    bad = mask.clone()
    bad[:, 0] = True
    with pytest.raises(ValueError, match="cls"):
        model(video, bad)


def test_images_run_through_a_video_student():
    model = _student()
    image = torch.randn(2, 3, 32, 32)
    a, b = model(image), model(image.unsqueeze(2))
    torch.testing.assert_close(a.tokens, b.tokens)
    assert a.tokens.shape == (2, 1 + 4, 32)


def test_registered_sizes_build():
    import timm

    model = timm.create_model("videomamba_middle_pretrain", num_frames=8, img_size=32, depth=2)
    assert model.embed_dim == 576 and len(model.clip_decoder) == 1


def test_released_last_feature_is_the_unnormed_stream_before_the_last_mixer():
    model = _student(clip_return_layer=1, clip_norm_type="none", clip_student_features_as_released=True)
    video = torch.randn(2, 3, 4, 32, 32)
    hidden, residual = model.embed_tokens(video), None
    for layer in model.layers:
        hidden, residual = layer(hidden, residual)  # residual: the stream before this layer's mixer output
    out = model(video)
    position = sinusoid_table(out.tokens.shape[1], 32)
    torch.testing.assert_close(out.clip_features[0], model.clip_decoder[0](residual + position))
    # The last mixer gets no gradient from this feature (so DDP needs find_unused_parameters).
    out.clip_features[0].sum().backward()
    assert model.layers[-1].mixer.out_proj.weight.grad is None
    assert model.layers[-2].mixer.out_proj.weight.grad.abs().sum() > 0


def test_one_switch_name_in_video_sm_and_video_mm(tmp_path):
    parser = argparse.ArgumentParser(parents=[run_videomamba_pretraining.get_args_parser()])
    flags = ["--model", "videomamba_tiny_pretrain", "--model_kwargs", json.dumps({"depth": 2, "embed_dim": 32})]
    flags += ["--num_frames", "4", "--input_size", "32", "--clip_output_dim", "16"]
    for extra, expected in (([], False), (["--clip_student_features_as_released"], True)):
        student, _ = run_videomamba_pretraining.build_student(parser.parse_args(flags + extra))
        assert student.clip_student_features_as_released is expected
    config = Path(__file__).resolve().parents[1] / "video_mm/exp_pt/videomamba_middle_5m/config.py"
    for value in (False, True):
        overrides = tiny_overrides(tmp_path) + ["model.vision_encoder.clip_student_features_as_released", str(value)]
        encoder = build_vision_encoder(load_config(config, overrides).model.vision_encoder)
        assert encoder.clip_student_features_as_released is value
