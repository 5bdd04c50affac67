"""Our models against outputs computed by the original release's own model code (`data/golden`).

Every model is built from the stored constructor arguments, its released-layout state dict goes
through our public loaders (`load_pretrained`, `load_video_mm_checkpoint`: container unwrapping,
`norm` -> `norm_f`, 2D -> 3D inflation) and its outputs are compared with the stored ones on every
kernel backend: the PyTorch reference, the CPU kernels, Triton's interpreter on CPU (the mixer and
one classifier: it is slow), and CUDA and Triton on a GPU (marked `gpu`, skipped without one).
Tolerance, as in the golden README: the normalised max error max|a - b| / max|b| at most 1e-5 for
forward outputs and 1e-4 for gradients. A drifted layer, scan direction, norm, position embedding,
inflation rule or cross-attention token set changes these outputs by orders of magnitude more.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor

import mamba_ssm
from causal_conv1d import dispatcher as conv_dispatcher
from causal_conv1d.kernel_infra import triton_interpreted
from mamba_ssm import Mamba
from mamba_ssm.testing import fast_triton_interpreter
from videomamba.core.backbone import VisionMamba, rename_legacy_model_kwargs
from videomamba.core.pretrain import PretrainVideoMamba
from videomamba.core.pretrained import load_pretrained
from videomamba.video_mm.config import load_config
from videomamba.video_mm.data.text import load_tokenizer
from videomamba.video_mm.evaluation import EvalSettings, encode_clip, itm_rerank
from videomamba.video_mm.models.loading import load_video_mm_checkpoint
from videomamba.video_mm.models.umt import UMTQAVideoMamba, build_model
from videomamba.video_mm.models.vision import VideoTextVisionEncoder
from videomamba.video_mm.synthetic import tiny_overrides, write_tiny_bert

GOLDEN = Path(__file__).parent / "data" / "golden"
VIDEO_MM = Path(__file__).resolve().parents[1] / "video_mm"
FORWARD_TOL, GRADIENT_TOL = 1e-5, 1e-4
# Our default alignment feature differs from the original's last-layer one by 0.48-0.63 here.
CONVENTION_GAP = 0.1
ENCODER = GOLDEN / "video_text_encoder_reduced.pt"

HAS_CUDA = torch.cuda.is_available()
ON_GPU = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")]
BACKENDS = [
    pytest.param(("ref", "cpu"), id="ref"),
    pytest.param(("cpu", "cpu"), id="cpu"),
    pytest.param(("cuda", "cuda"), id="cuda", marks=ON_GPU),
    pytest.param(("triton", "cuda"), id="triton-cuda", marks=ON_GPU),
]
TRITON_INTERPRETER = pytest.param(
    ("triton", "cpu"),
    id="triton-interpreter",
    marks=pytest.mark.skipif(not triton_interpreted(), reason="needs TRITON_INTERPRET=1 (set without a GPU)"),
)


class Backend(NamedTuple):
    name: str  # the forced kernel backend of both packages
    device: torch.device

    def check_used(self) -> None:
        """The kernels that ran are the forced ones (nothing fell back silently)."""
        assert mamba_ssm.dispatcher.last_used["selective_scan"] == self.name
        assert conv_dispatcher.last_used["causal_conv1d"] == self.name


@pytest.fixture
def backend(request, monkeypatch) -> Backend:
    name, device = request.param
    for dispatcher in (mamba_ssm.dispatcher, conv_dispatcher):
        if name != "ref" and dispatcher.kernels(name) is None:
            pytest.skip(f"the {dispatcher.package} {name} backend is not available here")
        monkeypatch.setenv(dispatcher.env_var, name)
        dispatcher.last_used.clear()
    # Exact float32 on a GPU: no TF32 in the convolutions and matrix products.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with fast_triton_interpreter(name == "triton" and device == "cpu"):
            yield Backend(name, torch.device(device))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@functools.cache
def golden(name: str) -> dict[str, Any]:
    return torch.load(GOLDEN / f"{name}.pt", weights_only=True)


def normalised_error(ours: Tensor, expected: Tensor) -> float:
    return ((ours.detach().double().cpu() - expected.double()).abs().max() / expected.abs().max()).item()


def assert_matches(what: str, ours: Tensor, expected: Tensor, tol: float = FORWARD_TOL) -> None:
    assert tuple(ours.shape) == tuple(expected.shape), f"{what}: shape {tuple(ours.shape)} != {tuple(expected.shape)}"
    error = normalised_error(ours, expected)
    assert error <= tol, f"{what}: normalised max error {error:.3g} > {tol:g}"


def constructor_args(config: dict[str, Any]) -> dict[str, Any]:
    """Our constructor arguments from the original's: its names (kernel_size, use_checkpoint, ...) renamed
    as every stored config is, without its init option (the weights are loaded) and its decoder width
    (ours is always the model width). Any other name we do not take fails the build."""
    kwargs = rename_legacy_model_kwargs(config)
    assert kwargs.pop("initializer_cfg") is None
    if "clip_decoder_embed_dim" in kwargs:
        assert kwargs.pop("clip_decoder_embed_dim") == kwargs["embed_dim"]
    return kwargs


# ------------------------------------------------------------------------------------------------
# The bidirectional mixer: output and every gradient
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [*BACKENDS, TRITON_INTERPRETER], indirect=True)
@pytest.mark.parametrize("fast_path", [True, False], ids=["fused", "unfused"])
def test_mixer_output_and_gradients_match_the_original(backend, fast_path):
    if backend.name == "triton" and backend.device.type == "cpu" and not fast_path:
        pytest.skip("the interpreter is slow; the fused path covers the Triton kernels")
    stored = golden("mixer_bimamba")
    mixer = Mamba(**{**stored["config"], "use_fast_path": fast_path})
    mixer.load_state_dict(stored["state_dict"], strict=True)
    mixer.to(backend.device)
    x = stored["input"].to(backend.device, copy=True).requires_grad_()
    out = mixer(x)
    out.backward(stored["grad_output"].to(backend.device))
    backend.check_used()
    assert_matches("output", out, stored["output"])
    assert_matches("grad input", x.grad, stored["grad_input"], GRADIENT_TOL)
    grads = dict(mixer.named_parameters())
    assert grads.keys() == stored["grad_params"].keys()
    for name, expected in stored["grad_params"].items():
        assert_matches(f"grad {name}", grads[name].grad, expected, GRADIENT_TOL)


# ------------------------------------------------------------------------------------------------
# Classifiers: image, video, tubelet 2, and image weights inflated to video
# ------------------------------------------------------------------------------------------------

CLASSIFIERS = ["image_tiny_reduced", "video_tiny_reduced", "video_tubelet2_reduced"]


def _classify(model: VisionMamba, clip: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """(logits, final-normed cls feature)."""
    model.to(device).eval()
    with torch.no_grad():
        tokens = model.forward_features(clip.to(device))
        return model.forward_head(tokens), tokens[:, 0]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_matches_the_original(backend, name):
    stored = golden(name)
    model = VisionMamba(**constructor_args(stored["config"]))
    report = load_pretrained(model, GOLDEN / f"{name}.pt", verbose=False)  # strict; finds the `state_dict` entry
    assert len(report.loaded) == len(stored["state_dict"]) and not report.adapted
    logits, features = _classify(model, stored["input"], backend.device)
    backend.check_used()
    assert_matches("logits", logits, stored["logits"])
    assert_matches("features", features, stored["features"])


@pytest.mark.parametrize("backend", [TRITON_INTERPRETER], indirect=True)
def test_video_classifier_matches_the_original_in_the_triton_interpreter(backend):
    stored = golden("video_tiny_reduced")
    model = VisionMamba(**constructor_args(stored["config"]))
    load_pretrained(model, GOLDEN / "video_tiny_reduced.pt", verbose=False)
    logits, features = _classify(model, stored["input"], backend.device)
    backend.check_used()
    assert mamba_ssm.dispatcher.last_used["layer_norm"] == "triton"
    assert_matches("logits", logits, stored["logits"])
    assert_matches("features", features, stored["features"])


def test_image_weights_inflate_into_the_centre_frame_of_a_tubelet():
    # The original inflates a 2D patch kernel into frame k // 2 of a k-frame tubelet (zeros elsewhere)
    # and starts the temporal embedding at zero: a tubelet whose frame 1 is the image then gives the
    # image model's output, whatever frame 0 holds.
    stored = golden("image_tiny_reduced")
    video = VisionMamba(**{**constructor_args(stored["config"]), "num_frames": 2, "tubelet_size": 2})
    report = load_pretrained(video, GOLDEN / "image_tiny_reduced.pt", verbose=False)
    assert any("2D->3D, center" in line for line in report.adapted)
    image = stored["input"]
    clip = torch.stack([torch.randn(image.shape, generator=torch.Generator().manual_seed(0)), image], dim=2)
    logits, features = _classify(video, clip, torch.device("cpu"))
    assert_matches("logits", logits, stored["logits"])
    assert_matches("features", features, stored["features"])


# ------------------------------------------------------------------------------------------------
# The video-text vision encoder and the masked-pretraining student
# ------------------------------------------------------------------------------------------------


def _encoder(device: torch.device, as_released: bool = False) -> VideoTextVisionEncoder:
    stored = golden("video_text_encoder_reduced")
    encoder = VideoTextVisionEncoder(
        **constructor_args(stored["config"]), clip_student_features_as_released=as_released
    )
    report = load_pretrained(encoder, ENCODER, verbose=False)  # strict
    assert report.adapted == ["norm.weight -> norm_f.weight (final norm renamed)"]
    return encoder.to(device).eval()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_video_text_encoder_matches_the_original(backend):
    stored, device = golden("video_text_encoder_reduced"), backend.device
    encoder = _encoder(device)
    video = stored["input"].to(device)
    with torch.no_grad():
        out = encoder(video)
        per_frame = encoder(video, keep_temporal=True)
        all_tokens = encoder.forward_features(video)
    backend.check_used()
    # The text encoder's cross-attention reads the patch tokens only, as the original: no cls.
    assert_matches("cross-attention tokens", out.patch_tokens, stored["cross_attn_tokens"])
    assert_matches("pooled", out.pooled, stored["pooled"])
    assert_matches("pooled, keep_temporal", per_frame.pooled, stored["pooled_keep_temporal"])
    assert_matches("all tokens", all_tokens, stored["all_tokens_with_cls"])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_video_text_encoder_matches_the_original_under_a_mask_and_on_images(backend):
    stored, device = golden("video_text_encoder_reduced"), backend.device
    video, mask, image = (stored[k].to(device) for k in ("input", "mask", "image_input"))
    released = _encoder(device, as_released=True)
    with torch.no_grad():
        masked = released(video, mask)
        default = _encoder(device)(video, mask)
        still = released(image)
    backend.check_used()
    assert_matches("masked cross-attention tokens", masked.patch_tokens, stored["masked_cross_attn_tokens"])
    assert_matches("masked pooled", masked.pooled, stored["masked_pooled"])
    expected = stored["masked_align_features_original_last_layer"]
    assert_matches("alignment feature, as released", masked.clip_features, expected)
    assert normalised_error(default.clip_features, expected) > CONVENTION_GAP  # ours is the output, normed
    assert_matches("image cross-attention tokens", still.patch_tokens, stored["image_cross_attn_tokens"])
    assert_matches("image pooled", still.pooled, stored["image_pooled"])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_pretraining_student_matches_the_original_alignment(backend):
    stored, device = golden("video_text_encoder_reduced"), backend.device
    video, mask = stored["input"].to(device), stored["mask"].to(device)
    student = PretrainVideoMamba(**constructor_args(stored["student_config"]))
    report = load_pretrained(student, ENCODER, key="student_state_dict", verbose=False)  # strict
    assert report.adapted == ["norm.weight -> norm_f.weight (final norm renamed)"]
    student.to(device).eval()
    assert student.return_index == [0, 1]
    with torch.no_grad():
        default = student(video, mask).clip_features
        student.clip_student_features_as_released = True
        released = student(video, mask).clip_features
        visible = student.embed_tokens(video)[~mask].reshape(len(video), -1, student.embed_dim)
        _, raw = student.forward_blocks(visible, student.return_index, last_feature_as_released=True)
    backend.check_used()
    assert_matches("aligned features, as released", released, stored["student_align_output"])
    assert_matches("features before the decoders", torch.stack(raw), stored["student_align_raw"])
    # By default the layers before the last are the original's; the last is the model's output.
    assert_matches("layer depth-2, default", default[0], stored["align_features_second_to_last_layer"])
    assert normalised_error(default[1], stored["align_features_original_last_layer"]) > CONVENTION_GAP


# ------------------------------------------------------------------------------------------------
# What the video-text model hands to cross-attention
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_text_config(tmp_path_factory):
    """A tiny video-text config whose vision encoder is the golden one (BERT random, no teacher)."""
    root = tmp_path_factory.mktemp("golden_umt")
    write_tiny_bert(root / "checkpoints" / "bert-base-uncased", layers=3, fusion_layer=2)
    vision = golden("video_text_encoder_reduced")["config"]
    overrides = tiny_overrides(root) + ["model.vision_encoder.clip_teacher", "none", "criterion.loss_weight.uta", "0.0"]
    for key in ("img_size", "patch_size", "depth", "embed_dim", "clip_output_dim", "drop_path_rate", "pool_type"):
        overrides += [f"model.vision_encoder.{key}", repr(vision[key])]
    return overrides, load_tokenizer(root / "checkpoints" / "bert-base-uncased")


def _capture_cross_attention_inputs(model) -> list[Tensor]:
    """Every `encoder_hidden_states` the text encoder's fusion layers receive from now on."""
    seen: list[Tensor] = []

    def hook(module, args, kwargs):
        if kwargs.get("mode") == "fusion":
            seen.append(kwargs["encoder_hidden_states"].detach())

    model.text_bert.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def _with_golden_encoder(model):
    state = golden("video_text_encoder_reduced")["state_dict"]
    checkpoint = {"model": {f"vision_encoder.{k}": v for k, v in state.items()}}
    report = load_video_mm_checkpoint(model, checkpoint, verbose=False)
    assert not [k for k in report.missing if k.startswith("vision_encoder.")]
    return model.eval()


def test_vtm_mlm_qa_and_reranking_cross_attend_to_the_original_patch_tokens(video_text_config):
    overrides, tokenizer = video_text_config
    stored = golden("video_text_encoder_reduced")
    video, expected = stored["input"], stored["cross_attn_tokens"]
    config = load_config(VIDEO_MM / "exp_pt/videomamba_middle_5m/config.py", overrides)
    model = _with_golden_encoder(build_model(config, tokenizer, is_pretrain=True))
    seen = _capture_cross_attention_inputs(model)
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    with torch.no_grad():
        losses = model(video, ids, (ids != 0).long(), torch.arange(2))
    assert {"loss_vtm", "loss_mlm"} <= set(losses)
    assert len(seen) == 2  # VTM on 3B pairs, then MLM
    vtm, mlm = seen
    assert_matches("VTM positives", vtm[:2], expected)
    for row in vtm[2:]:  # the negatives are the same tokens of another video
        assert min(normalised_error(row, e) for e in expected) <= FORWARD_TOL
    assert_matches("MLM", mlm, expected)

    # Retrieval: the tokens kept for ITM re-ranking, and what re-ranking feeds the fusion layers.
    tokens, _ = encode_clip(model, video)
    assert_matches("tokens kept for re-ranking", tokens, expected)
    text = model.encode_text(ids, (ids != 0).long())
    seen.clear()
    itm_rerank(model, torch.eye(2), tokens, text, (ids != 0).long(), EvalSettings(torch.device("cpu"), k_test=1))
    assert len(seen) == 4  # each video's best text, then each text's best video: videos 0, 1, 0, 1
    for i, tokens_seen in enumerate(seen):
        assert_matches(f"re-ranking call {i}", tokens_seen, expected[i % 2].unsqueeze(0))

    # Question answering fuses the question with the same tokens.
    qa_config = load_config(VIDEO_MM / "exp_qa/msrvtt/config.py", overrides)
    qa = _with_golden_encoder(UMTQAVideoMamba(qa_config, tokenizer))
    seen = _capture_cross_attention_inputs(qa)
    with torch.no_grad():
        qa.question_states(video, ids, (ids != 0).long())
    assert_matches("QA question fusion", seen[0], expected)
