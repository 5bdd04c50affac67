"""The frozen CLIP teacher: loading original-style weights, returned layers, attention, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videomamba.core.clip_teacher import (
    CLIP_CONFIGS,
    CLIPTeacher,
    build_clip_teacher,
    keep_out_of_state_dict,
    load_clip_weights,
    return_layers_from_interval,
)

CONFIG = CLIP_CONFIGS["clip_test_tiny"]  # width 32, 3 layers, patch 8, output 16, 32 px -> 16 patches


def original_style_state_dict(seed: int = 0, conv_3d: bool = False, prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """A random tiny CLIP visual state dict under the original's key names (as the extract notebook saves)."""
    generator = torch.Generator().manual_seed(seed)
    width, grid = CONFIG.width, CONFIG.image_resolution // CONFIG.patch_size

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.1

    conv = rand(width, 3, CONFIG.patch_size, CONFIG.patch_size)
    state = {
        "conv1.weight": conv.unsqueeze(2) if conv_3d else conv,
        "class_embedding": rand(width),
        "positional_embedding": rand(grid * grid + 1, width),
        "ln_pre.weight": 1 + rand(width),
        "ln_pre.bias": rand(width),
        "ln_post.weight": 1 + rand(width),
        "ln_post.bias": rand(width),
        "proj": rand(width, CONFIG.output_dim),
    }
    for j in range(CONFIG.layers):
        block = f"transformer.resblocks.{j}."
        state.update(
            {
                block + "attn.in_proj_weight": rand(3 * width, width),
                block + "attn.in_proj_bias": rand(3 * width),
                block + "attn.out_proj.weight": rand(width, width),
                block + "attn.out_proj.bias": rand(width),
                block + "ln_1.weight": 1 + rand(width),
                block + "ln_1.bias": rand(width),
                block + "mlp.c_fc.weight": rand(4 * width, width),
                block + "mlp.c_fc.bias": rand(4 * width),
                block + "mlp.c_proj.weight": rand(width, 4 * width),
                block + "mlp.c_proj.bias": rand(width),
                block + "ln_2.weight": 1 + rand(width),
                block + "ln_2.bias": rand(width),
            }
        )
    return {prefix + k: v for k, v in state.items()}


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    return torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("conv_3d", [False, True])
def test_loads_original_weights_from_disk_with_2d_or_3d_conv(tmp_path, conv_3d, video):
    path = tmp_path / "vit_tiny.pth"
    state = original_style_state_dict(conv_3d=conv_3d)
    state["transformer.resblocks.0.attn.in_proj_weight"] = torch.zeros(1)  # a text-tower key, ignored
    torch.save(state, path)
    teacher = build_clip_teacher("clip_test_tiny", path)
    torch.testing.assert_close(teacher.conv1.weight, original_style_state_dict()["visual.conv1.weight"])
    bare = build_clip_teacher("clip_test_tiny", original_style_state_dict(prefix=""))
    torch.testing.assert_close(teacher(video).features, bare(video).features)


def test_loading_errors_name_the_file(tmp_path):
    state = original_style_state_dict()
    del state["visual.ln_post.bias"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"broken.pth does not fit .*missing \['ln_post.bias'\]"):
        build_clip_teacher("clip_test_tiny", path)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_clip_teacher("clip_test_tiny", tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="temporal kernel 2"):
        thick = original_style_state_dict()
        thick["visual.conv1.weight"] = thick["visual.conv1.weight"].unsqueeze(2).repeat(1, 1, 2, 1, 1)
        build_clip_teacher("clip_test_tiny", thick)
    with pytest.raises(ValueError, match="unknown CLIP teacher"):
        build_clip_teacher("clip_h14")


def test_returned_layers_shapes_order_and_normalisation(video):
    state = original_style_state_dict()
    last_two = build_clip_teacher("clip_test_tiny", state, return_layers=return_layers_from_interval(2, 1))
    last_only = build_clip_teacher("clip_test_tiny", state, return_layers=(0,))
    features, attention = last_two(video)
    assert features.shape == (2, 2, 1 + 3 * 16, 16) and attention is None
    torch.testing.assert_close(features[1], last_only(video).features[0])  # shallowest first, deepest last
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2, 2, 49))
    patches = build_clip_teacher("clip_test_tiny", state, return_cls=False, norm_type="none")(video).features
    assert patches.shape == (1, 2, 3 * 16, 16)
    assert not torch.allclose(patches.norm(dim=-1), torch.ones(1, 2, 48))
    assert return_layers_from_interval(3, 2) == (0, 2, 4)
    with pytest.raises(ValueError, match="return_layers"):
        CLIPTeacher(CONFIG, return_layers=(3,))


def test_frames_are_encoded_independently_and_cls_is_averaged(video):
    teacher = build_clip_teacher("clip_test_tiny", original_style_state_dict(), norm_type="none")
    together = teacher(video).features[0]
    per_frame = [teacher(video[:, :, t]).features[0] for t in range(3)]
    for t in range(3):
        torch.testing.assert_close(together[:, 1 + 16 * t : 1 + 16 * (t + 1)], per_frame[t][:, 1:])
    torch.testing.assert_close(together[:, 0], torch.stack([f[:, 0] for f in per_frame]).mean(0))


def test_ln_post_flag_changes_the_targets(video):
    state = original_style_state_dict()
    with_ln = build_clip_teacher("clip_test_tiny", state)(video).features
    legacy = build_clip_teacher("clip_test_tiny", state, ln_post=False)(video).features
    assert with_ln.shape == legacy.shape and not torch.allclose(with_ln, legacy)


def test_last_layer_attention(video):
    teacher = build_clip_teacher("clip_test_tiny", original_style_state_dict(), return_attention=True)
    _, attention = teacher(video)
    assert attention.shape == (2, 3, 16) and (attention >= 0).all()
    assert (attention.sum(-1) <= 1 + 1e-5).all()  # the cls row minus its weight on itself


def test_positional_embedding_is_resampled_for_another_resolution():
    teacher = build_clip_teacher("clip_test_tiny", original_style_state_dict(), input_resolution=48)
    assert teacher.positional_embedding.shape == (36 + 1, 32)
    torch.testing.assert_close(
        teacher.positional_embedding[0], original_style_state_dict()["visual.positional_embedding"][0]
    )
    assert teacher(torch.randn(1, 3, 2, 48, 48)).features.shape == (1, 1, 1 + 2 * 36, 16)
    with pytest.raises(ValueError, match="teacher expects 48x48 input, got 32x32"):
        teacher(torch.randn(1, 3, 2, 32, 32))


def test_teacher_is_frozen_and_stays_out_of_parent_checkpoints(video):
    class Student(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 4)
            self.clip_teacher = build_clip_teacher("clip_test_tiny", original_style_state_dict())
            keep_out_of_state_dict(self, "clip_teacher")

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Student()

    wrapper = Wrapper()
    teacher = wrapper.model.clip_teacher
    assert not any(p.requires_grad for p in teacher.parameters())
    assert [n for n, p in wrapper.named_parameters() if p.requires_grad] == ["model.head.weight", "model.head.bias"]
    wrapper.train()
    assert wrapper.model.head.training and not teacher.training
    assert not teacher(video).features.requires_grad
    state = wrapper.state_dict()
    assert sorted(state) == ["model.head.bias", "model.head.weight"]
    before = teacher.conv1.weight.clone()
    wrapper.load_state_dict(state, strict=True)  # no teacher keys: nothing reported missing
    stale = {**state, **{f"model.clip_teacher.{k}": v * 0 for k, v in teacher.state_dict().items()}}
    wrapper.load_state_dict(stale, strict=True)  # original video_mm checkpoints carry the teacher: ignored
    torch.testing.assert_close(teacher.conv1.weight, before)
    assert len(teacher.state_dict()) == len(original_style_state_dict())


def test_load_clip_weights_accepts_video_mm_checkpoints(video):
    source = original_style_state_dict(seed=3, conv_3d=True, prefix="clip_teacher.")
    checkpoint = {"model": {**source, "vision_encoder.norm.weight": torch.ones(4)}, "epoch": 3}
    teacher = load_clip_weights(CLIPTeacher(CONFIG), checkpoint)
    reference = build_clip_teacher("clip_test_tiny", original_style_state_dict(seed=3))
    torch.testing.assert_close(teacher(video).features, reference(video).features)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_teacher_under_bf16_autocast_on_gpu(video):
    teacher = build_clip_teacher("clip_test_tiny", original_style_state_dict(), return_attention=True)
    reference = teacher(video).features
    teacher.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        features, attention = teacher(video.cuda())
    assert attention.shape == (2, 3, 16)
    torch.testing.assert_close(features.float().cpu(), reference, atol=0.05, rtol=0)
