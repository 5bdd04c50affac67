"""The shared checkpoint loader against synthetic checkpoints in the original release's formats.

The synthetic state dicts are built from the original release's key list and shapes, written out
here rather than taken from our model's state_dict, so a renamed or reshaped parameter in the
backbone makes these tests fail.
"""

from __future__ import annotations

import argparse
import math

import pytest
import timm
import torch
import torch.nn.functional as F

import videomamba.image_sm.models  # noqa: F401  (registers the distillation variants)
from videomamba.core.backbone import VisionMamba
from videomamba.core.pretrained import (
    CheckpointError,
    extract_state_dict,
    inflate_patch_weight,
    load_checkpoint_file,
    load_pretrained,
)


def original_state_dict(dim, depth, classes=1000, img=224, frames=None, tubelet=1, seed=0):
    """Random tensors under the original's keys, in its order."""
    gen = torch.Generator().manual_seed(seed)
    inner, rank, patches = 2 * dim, math.ceil(dim / 16), (img // 16) ** 2
    shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, patches + 1, dim)}
    if frames is not None:
        shapes["temporal_pos_embedding"] = (1, frames // tubelet, dim)
    shapes["patch_embed.proj.weight"] = (dim, 3, 16, 16) if frames is None else (dim, 3, tubelet, 16, 16)
    shapes["patch_embed.proj.bias"] = (dim,)
    if classes:
        shapes.update({"head.weight": (classes, dim), "head.bias": (classes,)})
    for i in range(depth):
        p = f"layers.{i}."
        shapes.update({
            p + "mixer.A_log": (inner, 16), p + "mixer.D": (inner,), p + "mixer.A_b_log": (inner, 16),
            p + "mixer.D_b": (inner,), p + "mixer.in_proj.weight": (4 * dim, dim),
            p + "mixer.conv1d.weight": (inner, 1, 4), p + "mixer.conv1d.bias": (inner,),
            p + "mixer.x_proj.weight": (rank + 32, inner), p + "mixer.dt_proj.weight": (inner, rank),
            p + "mixer.dt_proj.bias": (inner,), p + "mixer.conv1d_b.weight": (inner, 1, 4),
            p + "mixer.conv1d_b.bias": (inner,), p + "mixer.x_proj_b.weight": (rank + 32, inner),
            p + "mixer.dt_proj_b.weight": (inner, rank), p + "mixer.dt_proj_b.bias": (inner,),
            p + "mixer.out_proj.weight": (dim, inner), p + "norm.weight": (dim,),
        })  # fmt: skip
    shapes["norm_f.weight"] = (dim,)
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


@pytest.fixture(scope="module")
def tiny_release():
    """The released VideoMamba-Ti layout (D=192, 24 blocks, 1000 classes) and a model for it."""
    return original_state_dict(192, 24), timm.create_model("videomamba_tiny")


def _small(**kwargs) -> VisionMamba:
    return VisionMamba(**{**dict(depth=2, embed_dim=64, img_size=224, num_classes=1000), **kwargs})


@pytest.mark.parametrize("container", ["model", "bare", "module_prefix", "state_dict"])
def test_release_layout_loads_strictly(tmp_path, tiny_release, container):
    state, model = tiny_release
    payload = {
        "model": {"model": state},
        "bare": state,
        "module_prefix": {"module": {f"module.{k}": v for k, v in state.items()}},
        "state_dict": {"state_dict": {f"_orig_mod.{k}": v for k, v in state.items()}, "epoch": 3},
    }[container]
    path = tmp_path / "videomamba_t16_in1k_res224.pth"
    torch.save(payload, path)
    report = load_pretrained(model, path, verbose=False)
    assert report.loaded == list(state) and report.ok
    assert not (report.adapted or report.ignored or report.missing or report.unexpected or report.mismatched)
    assert torch.equal(model.layers[23].mixer.dt_proj_b.bias, state["layers.23.mixer.dt_proj_b.bias"])
    assert list(model.state_dict()) == list(state)  # same keys in the same order


def test_pos_embed_is_resized_224_to_448(tiny_release):
    state = original_state_dict(64, 2)
    model = _small(img_size=448)
    report = load_pretrained(model, {"model": state}, verbose=False)
    assert report.ok and any(a.startswith("pos_embed (1, 197, 64) -> (1, 785, 64)") for a in report.adapted)
    pos = model.pos_embed.detach()
    assert torch.equal(pos[:, :1], state["pos_embed"][:, :1])  # the cls slot is kept as is
    grid = state["pos_embed"][:, 1:].reshape(1, 14, 14, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(28, 28), mode="bicubic", align_corners=False)
    assert torch.allclose(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 784, 64), atol=1e-6)


@pytest.mark.parametrize("mode", ["center", "average"])
def test_image_weights_inflate_into_a_video_model(mode):
    state = original_state_dict(64, 2)
    model = _small(num_frames=8, tubelet_size=2)
    report = load_pretrained(model, state, inflation=mode, verbose=False)
    weight, source = model.patch_embed.proj.weight.detach(), state["patch_embed.proj.weight"]
    assert weight.shape == (64, 3, 2, 16, 16)
    if mode == "center":
        assert torch.equal(weight[:, :, 1], source) and torch.count_nonzero(weight[:, :, 0]) == 0
    else:
        assert torch.allclose(weight[:, :, 0], source / 2) and torch.allclose(weight[:, :, 1], source / 2)
    assert report.missing == ["temporal_pos_embedding"] and report.ok  # new by design: stays at zero
    assert torch.count_nonzero(model.temporal_pos_embedding) == 0


def test_temporal_pos_embedding_is_interpolated_to_the_frame_count():
    state = original_state_dict(64, 2, frames=8, tubelet=2)  # 4 tubelets
    model = _small(num_frames=16, tubelet_size=2)  # 8 tubelets
    report = load_pretrained(model, state, verbose=False)
    assert report.ok and any("temporal_pos_embedding (1, 4, 64) -> (1, 8, 64) (linear)" in a for a in report.adapted)
    expected = F.interpolate(state["temporal_pos_embedding"].permute(0, 2, 1), size=8, mode="linear")
    assert torch.allclose(model.temporal_pos_embedding.detach(), expected.permute(0, 2, 1), atol=1e-6)


def test_video_weights_load_into_an_image_model_by_summing_time():
    state = original_state_dict(64, 2, frames=8, tubelet=2)
    model = _small()
    report = load_pretrained(model, state, verbose=False)
    assert report.ok and any("temporal_pos_embedding" in i for i in report.ignored)
    assert torch.allclose(model.patch_embed.proj.weight.detach(), state["patch_embed.proj.weight"].sum(2))


def test_masked_pretraining_checkpoint_maps_norm_and_ignores_the_clip_decoder():
    state = original_state_dict(64, 2, classes=0)
    state["norm.weight"] = state.pop("norm_f.weight")
    state.update({
        "clip_decoder.0.head.weight": torch.randn(512, 64), "clip_decoder.0.head.bias": torch.randn(512),
        "clip_decoder.0.norm.weight": torch.randn(512), "clip_decoder.0.norm.bias": torch.randn(512),
    })  # fmt: skip
    model = _small(num_classes=10)
    report = load_pretrained(model, state, verbose=False)
    assert report.ok
    assert torch.equal(model.norm_f.weight.detach(), state["norm.weight"])
    assert sorted(report.missing) == ["head.bias", "head.weight"]
    assert sum("clip_decoder" in i for i in report.ignored) == 4
    assert "final norm renamed" in report.summary()


def test_distill_head_is_ignored_by_plain_models_and_loaded_by_students():
    state = original_state_dict(64, 2)
    state.update({
        "distill_head.0.weight": torch.randn(64), "distill_head.1.weight": torch.randn(384, 64),
        "distill_head.1.bias": torch.randn(384),
    })  # fmt: skip
    plain = _small()
    report = load_pretrained(plain, state, verbose=False)
    assert report.ok and sum("self-distillation head" in i for i in report.ignored) == 3
    student = timm.create_model("videomamba_tiny_distill", depth=2, embed_dim=64, teacher_embed_dim=384)
    report = load_pretrained(student, state, verbose=False)
    assert report.ok and not report.ignored
    assert torch.equal(student.distill_head[1].weight.detach(), state["distill_head.1.weight"])


def test_heads_of_other_sizes_are_dropped():
    state = original_state_dict(64, 2)
    model = _small(num_classes=10)
    init_head = model.head.weight.detach().clone()
    report = load_pretrained(model, state, verbose=False)
    assert report.ok and sorted(report.missing) == ["head.bias", "head.weight"]
    assert torch.equal(model.head.weight.detach(), init_head)
    headless = _small(num_classes=0)
    report = load_pretrained(headless, state, verbose=False)
    assert report.ok and not report.missing and sum("no classifier" in i for i in report.ignored) == 2


def test_strict_mode_rejects_unexpected_mismatched_and_missing_keys():
    state = original_state_dict(64, 2)
    bad = dict(state, extra_weight=torch.zeros(3))
    with pytest.raises(CheckpointError, match="extra_weight"):
        load_pretrained(_small(), bad, verbose=False)
    bad = dict(state)
    bad["layers.0.mixer.in_proj.weight"] = torch.zeros(10, 64)
    with pytest.raises(CheckpointError, match=r"layers.0.mixer.in_proj.weight: checkpoint \(10, 64\)"):
        load_pretrained(_small(), bad, verbose=False)
    bad = {k: v for k, v in state.items() if k != "layers.1.mixer.out_proj.weight"}
    with pytest.raises(CheckpointError, match="layers.1.mixer.out_proj.weight"):
        load_pretrained(_small(), bad, verbose=False)
    model = _small()
    report = load_pretrained(model, dict(bad, extra_weight=torch.zeros(3)), strict=False, verbose=False)
    assert report.unexpected == ["extra_weight"] and report.missing == ["layers.1.mixer.out_proj.weight"]
    assert torch.equal(model.norm_f.weight.detach(), state["norm_f.weight"])


def test_ema_weights_and_prefixes_can_be_selected():
    state = original_state_dict(64, 2)
    ema = {k: v + 1 for k, v in state.items()}
    checkpoint = {"model": state, "model_ema": ema, "epoch": 1}
    assert torch.equal(extract_state_dict(checkpoint, use_ema=True)["norm_f.weight"], ema["norm_f.weight"])
    assert torch.equal(extract_state_dict(checkpoint)["norm_f.weight"], state["norm_f.weight"])
    nested = {"model": {f"vision_encoder.{k}": v for k, v in state.items()} | {"text_proj.weight": torch.zeros(1)}}
    assert set(extract_state_dict(nested, prefix="vision_encoder.")) == set(state)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        extract_state_dict({"model": state, "model_ema": None}, use_ema=True)


class _NotAllowed:
    pass


def test_file_errors_are_clear(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint_file(missing)
    truncated = tmp_path / "truncated.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        load_checkpoint_file(truncated)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {}, "thing": _NotAllowed()}, unsafe)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint_file(unsafe)
    assert "thing" in load_checkpoint_file(unsafe, weights_only=False)
    old_style = tmp_path / "old_style.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, old_style)
    assert load_checkpoint_file(old_style)["args"].lr == 0.1  # the original's Namespace args are allowed
    with pytest.raises(CheckpointError, match="never downloaded"):
        load_checkpoint_file("https://example.com/videomamba_t16_in1k_res224.pth")


def test_pretrained_reads_the_released_file_from_the_checkpoint_folder(tmp_path, monkeypatch):
    state = original_state_dict(192, 2)
    torch.save({"model": state}, tmp_path / "videomamba_t16_in1k_res224.pth")
    monkeypatch.setenv("VIDEOMAMBA_CHECKPOINTS", str(tmp_path))
    model = timm.create_model("videomamba_tiny", pretrained=True, depth=2)
    assert torch.equal(model.pos_embed.detach(), state["pos_embed"])
    # 448 has its own release; the 448 file is preferred when present.
    state_448 = original_state_dict(192, 2, img=448, seed=1)
    torch.save({"model": state_448}, tmp_path / "videomamba_t16_in1k_res224to448.pth")
    model = timm.create_model("videomamba_tiny", pretrained=True, depth=2, img_size=448)
    assert torch.equal(model.pos_embed.detach(), state_448["pos_embed"])
    # A video model starts from the 224 image release, inflated.
    video = timm.create_model("videomamba_tiny", pretrained=True, depth=2, num_frames=4, tubelet_size=1)
    assert torch.equal(video.patch_embed.proj.weight[:, :, 0].detach(), state["patch_embed.proj.weight"])
    # An explicit path wins over the folder.
    other = tmp_path / "other.pth"
    torch.save(original_state_dict(192, 2, seed=5), other)
    model = timm.create_model("videomamba_tiny", pretrained=True, pretrained_path=str(other), depth=2)
    assert not torch.equal(model.pos_embed.detach(), state["pos_embed"])
    monkeypatch.delenv("VIDEOMAMBA_CHECKPOINTS")
    with pytest.raises(FileNotFoundError, match="VIDEOMAMBA_CHECKPOINTS"):
        timm.create_model("videomamba_small", pretrained=True, depth=1)


def test_inflate_rejects_unknown_modes():
    with pytest.raises(ValueError, match="center"):
        inflate_patch_weight(torch.zeros(2, 3, 16, 16), 2, mode="edge")
