"""The shared VideoMamba backbone: registry, parameter counts, token layouts, init, timm API, param groups."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import mamba_ssm
import videomamba.image_sm.models  # noqa: F401  (registers the distillation variants)
from videomamba.core.backbone import VisionMamba, create_block
from videomamba.core.optim import param_groups
from videomamba.image_sm.models import DEIT_BASELINES

# Released parameter counts at 1000 classes (image model zoo).
RELEASED_PARAMS = {
    "videomamba_tiny": 7_148_008,
    "videomamba_small": 25_796_584,
    "videomamba_middle": 74_217_448,
    "videomamba_base": 97_598_440,
}
WIDTHS = {"tiny": 192, "small": 384, "middle": 576, "base": 768}
SMALL = dict(depth=2, img_size=32)


def _tiny(**kwargs) -> VisionMamba:
    return VisionMamba(**{**dict(depth=2, embed_dim=32, img_size=32, num_classes=5), **kwargs})


def test_registry_lists_every_size_and_distill_variant():
    names = set(timm.list_models("videomamba*"))
    for size in WIDTHS:
        assert f"videomamba_{size}" in names
        assert f"videomamba_{size}_distill" in names


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMS))
def test_parameter_counts_match_the_release(name):
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == RELEASED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(RELEASED_PARAMS))
def test_plain_models_forward_backward_reach_every_parameter(name):
    model = timm.create_model(name, num_classes=7, **SMALL)
    assert model.embed_dim == WIDTHS[name.split("_")[1]]
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"


@pytest.mark.parametrize("size", sorted(WIDTHS))
@pytest.mark.parametrize("model_type", ["student", "teacher"])
def test_distill_models_return_normalised_token_features(size, model_type):
    model = timm.create_model(
        f"videomamba_{size}_distill", num_classes=4, teacher_embed_dim=24, model_type=model_type, **SMALL
    )
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 4)
    logits, feats = model(torch.randn(2, 3, 32, 32), return_features=True)
    width = 24 if model_type == "student" else WIDTHS[size]
    assert feats.shape == (2, 1 + 4, width)  # cls + 2x2 patches, every token
    assert torch.allclose(feats.norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    (logits.sum() + feats.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert hasattr(model, "distill_head") and (model.distill_head is not None) == (model_type == "student")


@pytest.mark.parametrize("name", DEIT_BASELINES)
def test_deit_baselines_come_from_timm_and_train(name):
    model = timm.create_model(name, num_classes=3, img_size=32, depth=2)
    assert type(model).__module__.startswith("timm.")
    out = model(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 3)


def test_video_layout_parameters_and_token_order():
    model = _tiny(num_frames=4, tubelet_size=2, drop_path_rate=0.0).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["patch_embed.proj.weight"] == (32, 3, 2, 16, 16)
    assert shapes["temporal_pos_embedding"] == (1, 2, 32)
    assert shapes["pos_embed"] == (1, 5, 32)
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        model.pos_embed.copy_(torch.randn_like(model.pos_embed))
        model.temporal_pos_embedding.copy_(torch.randn_like(model.temporal_pos_embedding))
        model.cls_token.copy_(torch.randn_like(model.cls_token))
        tokens = model.embed_tokens(torch.randn(1, 3, 4, 32, 32))[0]
    pos, temporal = model.pos_embed[0], model.temporal_pos_embedding[0]
    assert tokens.shape == (1 + 2 * 4, 32)
    assert torch.allclose(tokens[0], model.cls_token[0, 0] + pos[0])  # cls first, no temporal embedding
    for t in range(2):
        for n in range(4):
            assert torch.allclose(tokens[1 + t * 4 + n], pos[1 + n] + temporal[t])  # frame-major patches


def test_video_tokens_follow_frame_order():
    model = _tiny(num_frames=3, tubelet_size=1).eval()
    with torch.no_grad():
        model.pos_embed.zero_()
        model.patch_embed.proj.weight.fill_(1.0)
        model.patch_embed.proj.bias.zero_()
        video = torch.arange(3, dtype=torch.float32).view(1, 1, 3, 1, 1).expand(1, 3, 3, 32, 32).contiguous()
        tokens = model.embed_tokens(video)[0, 1:, 0]
    per_frame = 3 * 16 * 16  # a constant frame of value t gives t * (channels * patch area)
    assert tokens.tolist() == [t * per_frame for t in range(3) for _ in range(4)]


def test_image_model_equals_one_frame_video_with_inflated_weights():
    from videomamba.core.pretrained import load_pretrained

    image = _tiny(drop_path_rate=0.0).eval()
    video = _tiny(drop_path_rate=0.0, num_frames=1, tubelet_size=1).eval()
    load_pretrained(video, image.state_dict(), verbose=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(image(x), video(x.unsqueeze(2)), atol=1e-5)


def test_input_size_errors_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"expected \(B, C, 32, 32\)"):
        _tiny()(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected \(B, C, 4, 32, 32\)"):
        _tiny(num_frames=4)(torch.randn(1, 3, 2, 32, 32))
    with pytest.raises(ValueError, match="multiple of tubelet_size"):
        _tiny(num_frames=3, tubelet_size=2)


def test_drop_path_schedule_drops_mixer_i_with_rate_i():
    model = _tiny(depth=4, drop_path_rate=0.3)
    rates = torch.linspace(0, 0.3, 4).tolist()

    # Block i applies its drop path to mixer i-1's output; the final DropPath handles the last mixer.
    def rate(module):
        return 0.0 if isinstance(module, torch.nn.Identity) else module.drop_prob

    applied = [rate(model.layers[i].drop_path) for i in range(1, 4)] + [rate(model.drop_path)]
    assert isinstance(model.layers[0].drop_path, torch.nn.Identity)  # block 0 has no incoming mixer output
    assert applied == pytest.approx(rates)


def test_create_block_defaults_are_the_released_block():
    block = create_block(64, layer_idx=3)
    assert [k for k in block.state_dict()][-1] == "norm.weight"  # RMSNorm: no bias key
    assert isinstance(block.norm, mamba_ssm.RMSNorm) and block.norm.eps == 1e-5
    assert block.fused_add_norm and block.residual_in_fp32
    assert block.mixer.bimamba and block.mixer.layer_idx == 3 and block.layer_idx == 3
    assert isinstance(block.drop_path, torch.nn.Identity)


def test_block_drop_path_drops_whole_samples():
    block = create_block(8, drop_path=0.5)
    block.train()
    torch.manual_seed(3)
    hidden = torch.ones(64, 4, 8)
    per_sample = block.drop_path(hidden).flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and rescaled by 1 / (1 - p)
    assert (per_sample == per_sample[:, :1]).all()  # a sample is kept or dropped as a whole
    block.eval()
    assert torch.equal(block.drop_path(hidden), hidden)


def test_mamba_dt_init_is_kept_unless_the_original_init_is_requested():
    model = _tiny(depth=2)
    for layer in model.layers:
        for proj in (layer.mixer.dt_proj, layer.mixer.dt_proj_b):
            dt = F.softplus(proj.bias.detach())
            assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6  # Mamba's log-uniform [dt_min, dt_max]
            bound = proj.weight.shape[1] ** -0.5
            assert proj.weight.abs().max() <= bound + 1e-6
    original = _tiny(depth=2, overwrite_dt_init=True)
    for layer in original.layers:
        for proj in (layer.mixer.dt_proj, layer.mixer.dt_proj_b):
            assert torch.count_nonzero(proj.bias) == 0
            assert proj.weight.std().item() == pytest.approx(0.02, rel=0.5)


def test_out_proj_is_rescaled_by_depth():
    model = _tiny(depth=4, embed_dim=64)
    bound = math.sqrt(6 / ((1 + 5) * 128)) / math.sqrt(4)  # kaiming-uniform(a=sqrt 5) over fan_in 128, / sqrt(depth)
    for layer in model.layers:
        weight = layer.mixer.out_proj.weight
        assert weight.abs().max() <= bound + 1e-6 and weight.abs().max() > bound / 2


def test_the_original_argument_names_build_the_same_model_through_timm():
    # kernel_size, channels, use_checkpoint and checkpoint_num are what the original's configs and
    # older checkpoints store; the class itself takes only tubelet_size, in_chans, grad_checkpointing*.
    legacy = dict(kernel_size=2, channels=3, use_checkpoint=True, checkpoint_num=1)
    model = timm.create_model("videomamba_tiny", num_frames=4, **SMALL, **legacy)
    assert model.patch_embed.tubelet_size == 2 and model.temporal_pos_embedding.shape[1] == 2
    assert model.grad_checkpointing and model.grad_checkpointing_blocks == 1
    with pytest.raises(TypeError, match="kernel_size"):
        VisionMamba(num_frames=4, kernel_size=2)


def test_grad_checkpointing_leaves_outputs_and_gradients_unchanged():
    torch.manual_seed(0)
    model = _tiny(depth=3, drop_path_rate=0.0)
    x = torch.randn(2, 3, 32, 32)

    def run():
        model.zero_grad()
        out = model(x)
        out.sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    out_ref, grads_ref = run()
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing and model.grad_checkpointing_blocks == 3
    out_ckpt, grads_ckpt = run()
    assert torch.allclose(out_ref, out_ckpt, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_ref, grads_ckpt, strict=True))


def test_timm_model_api():
    model = _tiny(num_frames=2).eval()
    video = torch.randn(2, 3, 2, 32, 32)
    tokens = model.forward_features(video)
    assert tokens.shape == (2, 1 + 2 * 4, 32)
    assert model.forward_head(tokens, pre_logits=True).shape == (2, 32)
    assert model.get_classifier().out_features == 5
    assert model.no_weight_decay() == {"pos_embed", "cls_token", "temporal_pos_embedding"}
    model.reset_classifier(0)
    assert isinstance(model.head, torch.nn.Identity) and model(video).shape == (2, 32)
    assert "head.weight" not in model.state_dict()
    model.reset_classifier(11)
    assert model(video).shape == (2, 11)
    headless = timm.create_model("videomamba_tiny", num_classes=0, depth=1, img_size=32)
    assert isinstance(headless.head, torch.nn.Identity)
    assert headless.pretrained_cfg["first_conv"] == "patch_embed.proj"


def test_avg_pooling_reads_the_patch_mean_and_loads_the_same_weights():
    token_model = _tiny(num_frames=2).eval()
    avg_model = _tiny(num_frames=2, global_pool="avg").eval()
    avg_model.load_state_dict(token_model.state_dict())  # no new parameters
    video = torch.randn(2, 3, 2, 32, 32)
    tokens = token_model.forward_features(video)
    assert torch.allclose(avg_model.forward_head(tokens, pre_logits=True), tokens[:, 1:].mean(dim=1))
    assert torch.allclose(token_model.forward_head(tokens, pre_logits=True), tokens[:, 0])
    token_model.reset_classifier(5, global_pool="avg")
    assert token_model.global_pool == "avg"
    with pytest.raises(ValueError, match="global_pool must be one of"):
        _tiny(global_pool="max")


def test_at_init_the_cls_token_reads_the_first_patches_and_avg_pooling_reads_all():
    """Why small from-scratch runs use global_pool="avg": at init the front cls token depends on the
    first few patch tokens only (the SSM path starts weak), the patch mean on every token."""
    torch.manual_seed(0)
    model = VisionMamba(
        depth=4,
        embed_dim=64,
        img_size=32,
        patch_size=8,
        num_frames=4,
        num_classes=0,
        drop_path_rate=0,
        global_pool="avg",
    )
    tokens = model.embed_tokens(torch.randn(2, 3, 4, 32, 32)).detach().requires_grad_(True)
    features = model.forward_blocks(tokens)[0]

    def reach(pooled: torch.Tensor) -> torch.Tensor:  # gradient norm per patch token, (frames, patches)
        (grad,) = torch.autograd.grad(pooled.pow(2).sum(), tokens, retain_graph=True)
        return grad[:, 1:].norm(dim=-1).mean(dim=0).view(4, 16)

    cls_reach, avg_reach = reach(features[:, 0]), reach(model.forward_head(features))
    first_patches = cls_reach[0, :3].min()
    assert cls_reach[1:].max() < first_patches / 50  # later frames are almost invisible to cls
    assert avg_reach[1:].min() > avg_reach.max() / 10  # every token reaches the mean


def test_param_groups_weight_decay_and_layer_decay():
    model = _tiny(depth=3, num_frames=2)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["param_names"]}
    no_decay = {n for n, g in by_name.items() if g["weight_decay"] == 0.0}
    assert {"pos_embed", "cls_token", "temporal_pos_embedding", "layers.0.mixer.A_log", "layers.0.mixer.D"} <= no_decay
    assert by_name["layers.0.mixer.in_proj.weight"]["weight_decay"] == 0.05
    # stem = layer 0, block i = layer i + 1, head and final norm = layer 4 (top).
    assert by_name["patch_embed.proj.weight"]["lr_scale"] == pytest.approx(0.5**4)
    assert by_name["layers.0.mixer.in_proj.weight"]["lr_scale"] == pytest.approx(0.5**3)
    assert by_name["layers.2.mixer.in_proj.weight"]["lr_scale"] == pytest.approx(0.5)
    assert by_name["head.weight"]["lr_scale"] == by_name["norm_f.weight"]["lr_scale"] == 1.0
    original = param_groups(model, weight_decay=0.05, decay_flagged=True)
    decayed = {n for g in original if g["weight_decay"] > 0 for n in g["param_names"]}
    assert "layers.1.mixer.A_b_log" in decayed and "layers.1.mixer.D_b" not in decayed
