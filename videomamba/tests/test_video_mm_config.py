"""video_mm config system: Python files with _base_ inheritance, typed dotted overrides, interpolation."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from videomamba.video_mm.config import ConfigError, load_config, save_config

VIDEO_MM = Path(__file__).resolve().parents[1] / "video_mm"
# The release's experiments; exp_pt/custom is the small-data recipe (checked by its own test).
EXPERIMENTS = sorted(p for p in VIDEO_MM.glob("exp_*/*/config.py") if p.parent.name != "custom")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def configs(tmp_path):
    write(
        tmp_path / "base.py",
        "import os\n"
        "data_dir = 'data'\n"
        "corpora = dict(a=dict(anno='${data_dir}/a.json'), b=dict(anno='${data_dir}/b.json'))\n"
        "corpus = 'a'\n"
        "train_file = '${corpora.${corpus}}'\n"
        "model = dict(depth=32, lr=1e-4, name='m', flags=dict(keep=True, extra=None), sizes=[1, 2])\n"
        "_helper = 3\n"
        "def helper():\n    return 1\n",
    )
    return write(tmp_path / "exp" / "child.py", "_base_ = '../base.py'\nmodel = dict(depth=2)\ncorpus = 'b'\n")


def test_inheritance_merges_dicts_and_resolves_interpolations(configs):
    config = load_config(configs)
    assert config.model.depth == 2 and config.model.lr == 1e-4 and config.model.name == "m"  # merged, not replaced
    assert config.train_file.anno == "data/b.json"
    assert "os" not in config and "helper" not in config and "_helper" not in config


def test_overrides_are_typed_and_move_interpolated_paths(configs):
    config = load_config(
        configs,
        [
            "data_dir",
            "/x",
            "model.lr",
            "3",
            "model.flags.keep",
            "False",
            "model.flags.extra",
            "[1, 2]",
            "model.name",
            "7",
        ],
    )
    assert config.train_file.anno == "/x/b.json"
    assert config.model.lr == 3.0 and isinstance(config.model.lr, float)
    assert config.model.flags.keep is False and list(config.model.flags.extra) == [1, 2]
    assert config.model.name == "7"  # a string key keeps the text


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.dept", "3"], "unknown config key 'model.dept'.*model.depth"),
        (["nothing", "1"], "unknown config key 'nothing'"),
        (["model.depth", "2.5"], "model.depth.*expected int"),
        (["model.flags.keep", "1"], "expected bool"),
        (["model.sizes", "3"], "expected list"),
        (["model.depth"], "pairs"),
    ],
)
def test_bad_overrides_name_the_key(configs, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(configs, overrides)


def test_missing_base_and_cycles_name_the_file(tmp_path):
    child = write(tmp_path / "c.py", "_base_ = 'missing.py'\n")
    with pytest.raises(ConfigError, match="missing.py: config file not found"):
        load_config(child)
    write(tmp_path / "x.py", "_base_ = 'y.py'\n")
    write(tmp_path / "y.py", "_base_ = 'x.py'\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "x.py")


def test_struct_mode_and_saved_config_loads_back(configs, tmp_path):
    config = load_config(configs, ["model.depth", "5"])
    with pytest.raises(Exception, match="not in struct"):
        _ = config.model.width
    saved = save_config(config, tmp_path / "out")
    assert OmegaConf.to_container(load_config(saved)) == OmegaConf.to_container(config)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_experiment_configs_load_with_the_released_settings(path):
    config = load_config(path, ["data_dir", "/data", "model_dir", "/ckpt"])
    vision = config.model.vision_encoder
    # depth and width come from the size in the name (VIDEOMAMBA_SIZES: middle is 32 blocks of 576)
    assert (vision.name, vision.depth, vision.embed_dim) == ("videomamba_middle", None, None)
    assert (vision.num_frames, config.model.embed_dim) == (8, 512)
    assert config.model.text_encoder.pretrained == "/ckpt/bert-base-uncased"
    if path.parent.parent.name == "exp_pt":
        corpus_size = path.parent.name.split("_")[2]
        masked = not path.parent.name.endswith("unmasked")
        assert config.train_corpus == f"data_{corpus_size}"
        paths = [source.anno_path for source in config.train_file]
        assert all(p.startswith("/data/anno_pretrain/") and "{" not in p for p in paths)
        # The original's 25M WebVid-10M path lacked its f-string prefix.
        assert paths[0].endswith("webvid10m_train.json" if corpus_size == "25m" else "webvid_train.json")
        assert vision.clip_teacher == ("clip_b16" if masked else "none")
        assert config.criterion.loss_weight.uta == (1.0 if masked else 0.0)
        assert (config.optimizer.lr, config.scheduler.epochs) == ((4e-4, 10) if masked else (8e-5, 1))
        assert config.batch_size == (128 if masked else 64)
    elif path.parent.parent.name == "exp_zs":
        assert config.evaluate and vision.clip_teacher == "none"
        assert config.pretrained_path == "/ckpt/videomamba_m16_25M_f8_res224.pth"
        assert config.trimmed30 == (path.parent.name == "didemo")
        assert config.is_paragraph_retrieval == (path.parent.name in ("didemo", "anet"))
        assert config.max_txt_l == {"msrvtt": 32, "didemo": 64, "anet": 150, "lsmdc": 96, "msvd": 64}[path.parent.name]


def test_the_small_data_recipe_config_loads():
    config = load_config(VIDEO_MM / "exp_pt/custom/config.py", ["data_dir", "/data", "model_dir", "/ckpt"])
    vision = config.model.vision_encoder
    assert (vision.depth, vision.embed_dim, vision.tubelet_size, vision.pool_type) == (2, 64, 2, "avg")
    assert config.model.text_encoder.pretrained == "/ckpt/bert-base-uncased"


def test_the_original_vision_encoder_names_are_read_as_ours(tmp_path):
    # An original-style config over our base (which uses tubelet_size / grad_checkpointing*): the old
    # names win, in files and in overrides, and no old name is left for the model to reject.
    child = write(
        tmp_path / "config.py",
        f"_base_ = {str(VIDEO_MM / 'configs/base.py')!r}\n"
        "model = dict(vision_encoder=dict(kernel_size=2, use_checkpoint=True))\n",
    )
    config = load_config(child, ["data_dir", "/data", "model_dir", "/ckpt", "model.vision_encoder.checkpoint_num", "3"])
    vision = config.model.vision_encoder
    assert (vision.tubelet_size, vision.grad_checkpointing, vision.grad_checkpointing_blocks) == (2, True, 3)
    assert not {"kernel_size", "use_checkpoint", "checkpoint_num"} & set(vision)


def test_a_stored_config_with_the_original_names_rebuilds_its_model(tmp_path):
    import torch

    from videomamba.video_mm.tasks.engine import adopt_stored_model_config

    torch.save({"config": {"model": {"vision_encoder": {"kernel_size": 2, "depth": 4}}}}, tmp_path / "old.pth")
    config = OmegaConf.create({"model": {"vision_encoder": {"tubelet_size": 1, "depth": 2}}})
    changed = adopt_stored_model_config(config, str(tmp_path / "old.pth"), evaluate=False)
    assert len(changed) == 2 and (config.model.vision_encoder.tubelet_size, config.model.vision_encoder.depth) == (2, 4)
