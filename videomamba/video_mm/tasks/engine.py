"""Run machinery shared by the video_mm tasks: command line, setup, data, the epoch loop and checkpoints.

A run writes into ``output_dir``: ``config.yaml`` (the merged config), ``log.txt`` (one JSON line per
epoch), TensorBoard events (per step and per epoch), ``checkpoint-latest.pth`` every epoch (atomically
replaced), ``checkpoint-best.pth`` when the ``stop_key`` metric improves (the last epoch when stop_key is
None), ``checkpoint-{epoch}.pth`` per epoch when ``save_latest`` is False, and ``eval_res_latest.json`` /
``eval_res_best.json``. Re-running the same command resumes from ``checkpoint-latest.pth`` (``auto_resume``).
The epoch loop, resume and checkpoints are the shared lifecycle (videomamba/core/lifecycle.py); checkpoints
also hold {config, task_state: {global_step}}; the model entry
never includes the CLIP teacher.

Mixed precision is ``torch.autocast`` (bf16 when ``bf16``, else fp16 with a GradScaler when ``fp16``, on
CUDA only: fp16 on the CPU runs in fp32, with a note; the run prints its precision);
parameters and optimizer state stay float32 (the original cast the whole model to bf16).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from videomamba.core.cli import UserError, resolve_precision
from videomamba.core.distributed import (
    any_across_ranks,
    barrier,
    cleanup_distributed,
    get_rank,
    init_distributed,
    is_main_process,
    seed_everything,
    setup_print,
)
from videomamba.core.lifecycle import Best, Lifecycle, TrainingState
from videomamba.core.logs import RunLog
from videomamba.core.metrics import MetricLogger
from videomamba.core.optim import GradientStep, autocast, param_groups
from videomamba.core.pretrained import load_checkpoint_file, load_pretrained
from videomamba.core.schedules import apply_schedules, cosine_schedule

from ..config import ConfigError, load_config, save_config, with_current_names
from ..data.datasets import CaptionDataset, MediaSource, RetrievalEvalDataset, media_sources
from ..data.loader import MediaInterleavedLoader, build_loader
from ..data.media import ClipTransform, MediaReader
from ..data.text import load_tokenizer, tokenize
from ..evaluation import EvalSettings, evaluate_retrieval
from ..models.loading import check_fits_for_evaluation, load_video_mm_checkpoint
from ..models.umt import UMTVideoMamba, build_model, text_encoder_origin

__all__ = [
    "Run",
    "build_optimizer",
    "caption_step",
    "caption_task",
    "caption_train_loader",
    "config_from_command_line",
    "evaluate_only",
    "fit",
    "media_reader",
    "prepare_model",
    "retrieval_evaluator",
    "single_source",
    "start_run",
    "task_run",
    "train_loader",
]

# The record field holding the stop_key metric (r_mean or accuracy) that picks checkpoint-best.pth.
STOP_METRIC = "stop_metric"
StepFn = Callable[[nn.Module, str, Any], dict[str, torch.Tensor]]
EvaluateFn = Callable[[nn.Module], dict[str, Any]]


def config_from_command_line(argv: list[str] | None, script: str) -> DictConfig:
    """``CONFIG [key value ...]`` -> the merged config (exits with usage on -h or no arguments)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"usage: python -m videomamba.video_mm.tasks.{script.removesuffix('.py')} CONFIG [key value ...]\n"
            "  CONFIG: a Python/YAML/JSON config file (see videomamba/video_mm/README.md)\n"
            "  key value: dotted overrides of existing keys, e.g. output_dir runs/x optimizer.lr 1e-4"
        )
        raise SystemExit(0 if argv else 2)
    return load_config(argv[0], argv[1:])


@dataclass
class Run:
    """What every task needs once the process is set up."""

    config: DictConfig
    device: torch.device
    distributed: bool
    output_dir: Path | None
    log: RunLog
    amp: bool
    amp_dtype: torch.dtype
    tokenizer: Any
    evaluate: bool

    def autocast(self):
        return autocast(self.device, self.amp, self.amp_dtype)

    def eval_settings(self) -> EvalSettings:
        evaluation = self.config.get("evaluation", {})
        return EvalSettings(
            self.device,
            self.amp,
            self.amp_dtype,
            k_test=int(evaluation.get("k_test", 128)),
            offload=bool(evaluation.get("eval_offload", False)),
            frame_ensemble=str(evaluation.get("eval_frame_ensemble", "concat")),
            dual_encoder_only=bool(evaluation.get("eval_x_only", False)),
            log_freq=int(self.config.get("log_freq", 50)),
        )


def start_run(config: DictConfig, evaluate_only: bool = False) -> Run:
    """Distributed init (torchrun, srun or single process), seeding, output folder, config dump, logs, tokenizer."""
    device_name = str(config.device)
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("config device is 'cuda' but CUDA is not available; add the override `device cpu`")
    info = init_distributed(device_name, str(config.get("dist_url", "env://")))
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if device_name.startswith("cuda")
        else torch.device(device_name)
    )
    setup_print(info.rank == 0)
    seed_everything(int(config.seed), info.rank)
    if not config.output_dir and evaluate_only and config.get("pretrained_path"):
        config.output_dir = str(Path(config.pretrained_path).parent / "eval")
    output_dir = Path(config.output_dir) if config.output_dir else None
    if output_dir is not None and is_main_process():
        save_config(config, output_dir)
    amp, amp_dtype, _ = resolve_precision(
        device, bool(config.get("fp16", False) or config.get("bf16", False)), bool(config.get("bf16", False))
    )
    return Run(
        config=config,
        device=device,
        distributed=info.distributed,
        output_dir=output_dir,
        log=RunLog(output_dir, enabled=is_main_process()),
        amp=amp,
        amp_dtype=amp_dtype,
        tokenizer=load_tokenizer(config.model.text_encoder.pretrained),
        evaluate=evaluate_only,
    )


@contextlib.contextmanager
def task_run(argv: list[str] | None, script: str, always_evaluate: bool = False) -> Iterator[Run]:
    """Config from the command line and a started run; the process group is torn down on the way out.

    The run only evaluates when `always_evaluate` or the config says ``evaluate True``.
    """
    config = config_from_command_line(argv, script)
    evaluate = always_evaluate or bool(config.get("evaluate", False))
    try:
        yield start_run(config, evaluate_only=evaluate)
    finally:
        cleanup_distributed()


# ------------------------------------------------------------------------------------------- data


def media_reader(config: DictConfig, train: bool) -> MediaReader:
    """Frame sampling and augmentation of the training or the evaluation pipeline, from ``inputs``."""
    video = config.inputs.video_input
    transform = ClipTransform(int(config.inputs.image_res), train, random_aug=bool(video.get("random_aug", False)))
    return MediaReader(
        transform,
        int(video.num_frames if train else video.num_frames_test),
        str(video.sample_type if train else video.sample_type_test),
        max_seconds=30.0 if config.get("trimmed30", False) else None,
        video_reader=str(config.get("video_reader", "auto")),
    )


def train_loader(
    config: DictConfig, make_dataset: Callable[[list, MediaReader], Any], collate_fn: Callable | None = None
) -> MediaInterleavedLoader:
    """One loader per media type of ``train_file`` (``make_dataset(sources, reader)``), interleaved."""
    by_type: dict[str, list] = {}
    for source in media_sources(config.train_file):
        by_type.setdefault(source.media_type, []).append(source)
    reader = media_reader(config, train=True)
    loaders = {}
    for media_type, sources in by_type.items():
        dataset = make_dataset(sources, reader)
        print(f"train {media_type}: {len(dataset)} samples from {[s.anno_path for s in sources]}")
        loaders[media_type] = build_loader(
            dataset,
            int(config.inputs.batch_size[media_type]),
            int(config.num_workers),
            train=True,
            seed=int(config.seed),
            collate_fn=collate_fn,
        )
    return MediaInterleavedLoader(loaders, seed=int(config.seed))


def caption_train_loader(config: DictConfig, positives: str) -> MediaInterleavedLoader:
    """Caption pairs of ``train_file``; ``positives`` as in `CaptionDataset` ("sample" or "media")."""
    return train_loader(
        config,
        lambda sources, reader: CaptionDataset(sources, reader, positives=positives, max_words=config.get("max_words")),
    )


def single_source(config: DictConfig, key: str, name: str) -> MediaSource:
    """The corpus ``config[key][name]`` (e.g. test_file.test), which must be exactly one."""
    sources = media_sources(config[key][name])
    if len(sources) != 1:
        raise ConfigError(f"{key}.{name} must name one corpus, got {len(sources)}")
    return sources[0]


def caption_step(run: Run) -> StepFn:
    """Training step of pretraining and retrieval fine-tuning: tokenize the captions, return the losses."""
    lengths = run.config.inputs.max_txt_l

    def step(model: nn.Module, media_type: str, batch: Any) -> dict[str, torch.Tensor]:
        media, captions, positive_ids = batch
        tokens = tokenize(run.tokenizer, captions, int(lengths[media_type]), run.device)
        return model(
            media.to(run.device, non_blocking=True),
            tokens.input_ids,
            tokens.attention_mask,
            positive_ids.to(run.device),
            media_type,
        )

    return step


def retrieval_evaluator(run: Run) -> EvaluateFn | None:
    """Evaluation on every split of ``test_types`` (None when there is none)."""
    config = run.config
    names = list(config.get("test_types", []) or [])
    if not names:
        return None
    reader = media_reader(config, train=False)
    splits = []
    for name in names:
        source = single_source(config, "test_file", name)
        dataset = RetrievalEvalDataset(
            source,
            reader,
            paragraph=bool(config.get("is_paragraph_retrieval", False)),
            max_words=config.get("max_words"),
        )
        loader = build_loader(
            dataset, int(config.inputs.batch_size_test[source.media_type]), int(config.num_workers), False
        )
        splits.append((name, dataset, loader, int(config.inputs.max_txt_l[source.media_type])))
        print(f"test {name}: {len(dataset)} {source.media_type}s, {len(dataset.texts)} texts")

    def evaluate(model: nn.Module) -> dict[str, Any]:
        results = {}
        for name, dataset, loader, max_length in splits:
            results.update(
                evaluate_retrieval(model, dataset, loader, run.tokenizer, max_length, name, run.eval_settings())
            )
        return results

    return evaluate


# ------------------------------------------------------------------------------------------ model


def prepare_model(run: Run, is_pretrain: bool) -> UMTVideoMamba:
    """Build the model; load ``pretrained_path`` (a video-text checkpoint) or else the vision encoder's
    ``pretrained`` weights (masked video pretraining); move it to the run's device."""
    config = run.config
    if config.get("pretrained_path") and adopt_stored_model_config(config, config.pretrained_path, run.evaluate):
        if run.output_dir is not None and is_main_process():
            save_config(config, run.output_dir)
    model = build_model(config, run.tokenizer, is_pretrain=is_pretrain)
    report = None
    if config.get("pretrained_path"):
        report = load_video_mm_checkpoint(model, config.pretrained_path)
        if run.evaluate:
            check_fits_for_evaluation(report)
    elif config.model.vision_encoder.get("pretrained"):
        load_pretrained(model.vision_encoder, config.model.vision_encoder.pretrained, strict=False)
    if origin := text_encoder_origin(model, report):
        print(origin)
    print(f"model: {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M trainable parameters")
    return model.to(run.device)


# The model's architecture in the config; evaluation also takes the input size the checkpoint was trained at.
ARCHITECTURE_KEYS = (
    *(
        f"model.vision_encoder.{k}"
        for k in ("name", "patch_size", "depth", "embed_dim", "tubelet_size", "clip_output_dim")
    ),
    "model.text_encoder.config",
    "model.text_encoder.fusion_layer",
    "model.embed_dim",
)
EVALUATION_KEYS = ("model.vision_encoder.img_size", "inputs.image_res")


def adopt_stored_model_config(config: DictConfig, path: str, evaluate: bool) -> list[str]:
    """Take the model configuration stored in a checkpoint this code base wrote (``pretrained_path``):
    it wins over the config file, with one printed line of what changed; released checkpoints
    (no stored config) change nothing. Returns the changed keys."""
    try:
        stored = load_checkpoint_file(path).get("config")
    except Exception:  # the checkpoint loader that follows reports unreadable files properly
        return []
    if not isinstance(stored, Mapping):
        return []
    stored = OmegaConf.create(with_current_names(dict(stored)))  # older checkpoints store the original's names
    changed = []
    for key in ARCHITECTURE_KEYS + (EVALUATION_KEYS if evaluate else ()):
        value, current = OmegaConf.select(stored, key), OmegaConf.select(config, key)
        if value is not None and value != current:
            OmegaConf.update(config, key, value)
            changed.append(f"{key} {value!r} (config: {current!r})")
    if changed:
        print(f"Model configuration from {path} (it wins over the config): {', '.join(changed)}")
    return changed


def build_optimizer(model: nn.Module, config: DictConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (so never the teacher's); no decay for 1-D tensors, biases and
    `no_weight_decay()`; ``different_lr`` gives the named modules their own learning rate."""
    options = config.optimizer
    if str(options.opt).lower() != "adamw":
        raise ConfigError(f"optimizer.opt {options.opt!r} is not supported; use 'adamW'")
    groups = param_groups(model, float(options.weight_decay))
    different = options.get("different_lr", {})
    if different.get("enable", False):
        prefixes = tuple(different.module_names)
        scale = float(different.lr) / float(options.lr)
        split = []
        for group in groups:
            for special in (False, True):
                members = [
                    (n, p)
                    for n, p in zip(group["param_names"], group["params"], strict=True)
                    if n.startswith(prefixes) == special
                ]
                if members:
                    names, params = zip(*members, strict=True)
                    split.append(
                        {
                            **group,
                            "params": list(params),
                            "param_names": list(names),
                            "lr_scale": group["lr_scale"] * (scale if special else 1.0),
                        }
                    )
        groups = split
    return torch.optim.AdamW(groups, lr=float(options.lr), betas=tuple(options.opt_betas))


# ------------------------------------------------------------------------------------------ loops


def train_one_epoch(
    run: Run,
    model: nn.Module,
    temperature: torch.Tensor,
    loader: MediaInterleavedLoader,
    step_fn: StepFn,
    optimizer: torch.optim.Optimizer,
    grad_step: GradientStep,
    lr_schedule: list[float],
    epoch: int,
    global_step: int,
) -> tuple[dict[str, float], int]:
    model.train()
    loader.set_epoch(epoch)
    meters = MetricLogger()
    clip_grad = float(run.config.optimizer.get("max_grad_norm", -1))
    last_finite = math.nan
    for step, (media_type, batch) in enumerate(
        meters.log_every(loader, int(run.config.get("log_freq", 50)), header=f"Train epoch [{epoch}]")
    ):
        lr = apply_schedules(optimizer, global_step, lr_schedule)
        with run.autocast():
            losses = step_fn(model, media_type, batch)
        loss = sum(losses.values())
        loss_value = float(loss.detach())
        # Checked on every rank together, so no rank is left waiting in a collective.
        if any_across_ranks(not math.isfinite(loss_value)):
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch}, step {step} (global step {global_step}) on some rank; "
                f"rank {get_rank()} has {loss_value} ({ {k: float(v) for k, v in losses.items()} }), "
                f"last finite {last_finite}"
            )
        last_finite = loss_value
        optimizer.zero_grad(set_to_none=True)
        grad_step(loss, optimizer, parameters=model.parameters(), clip_grad=clip_grad if clip_grad > 0 else None)
        values = {f"{media_type}-{name}": float(value.detach()) for name, value in losses.items()}
        meters.update(lr=lr, temperature=float(temperature.detach()), loss=loss_value, **values)
        run.log.log_step(global_step, lr=lr, loss=loss_value, **values)
        global_step += 1
    meters.synchronize_between_processes()
    return meters.global_averages(), global_step


def _flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _stop_metric(results: Mapping[str, Any], stop_key: str | None) -> float | None:
    if not stop_key:
        return None
    if stop_key not in results:
        raise ConfigError(f"stop_key {stop_key!r} is not among the evaluation results {sorted(results)}")
    value = results[stop_key]
    if isinstance(value, Mapping):
        # Retrieval splits report r_mean, multiple choice and QA report acc (None without ground truth).
        value = value["r_mean"] if "r_mean" in value else value["acc"]
    return None if value is None else float(value)


def write_results(run: Run, results: Mapping[str, Any], name: str) -> None:
    if run.output_dir is not None and is_main_process():
        path = run.output_dir / name
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


def evaluate_only(run: Run, model: nn.Module, evaluate_fn: EvaluateFn | None) -> dict[str, Any]:
    """One evaluation (``evaluate True``): results printed, logged and written to eval_res_latest.json."""
    if evaluate_fn is None:
        raise ConfigError("evaluation needs test_types and test_file")
    results = evaluate_fn(model)
    print(json.dumps(results, indent=2, sort_keys=True))
    write_results(run, results, "eval_res_latest.json")
    run.log.log_epoch({"epoch": 0, **_flatten(results)})
    run.log.close()
    return results


def fit(
    run: Run,
    model: UMTVideoMamba,
    train_loader: MediaInterleavedLoader,
    step_fn: StepFn,
    evaluate_fn: EvaluateFn | None,
) -> dict[str, Any]:
    """Train for ``scheduler.epochs`` epochs with evaluation, checkpoints and auto-resume; returns the last results."""
    config = run.config
    trained = model
    if run.distributed:
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        # Image batches leave the temporal embedding unused, the unmasked stage the CLIP decoders.
        trained = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)
    optimizer = build_optimizer(model, config)
    schedule = config.scheduler
    if str(schedule.get("sched", "cosine")) != "cosine":
        raise ConfigError(f"scheduler.sched {schedule.sched!r} is not supported; use 'cosine'")
    epochs = int(schedule.epochs)
    if not config.get("unscale_lr", True):
        raise ConfigError("unscale_lr False: video_mm has no batch-size lr scaling; optimizer.lr is used as written")
    lr = float(config.optimizer.lr)
    lr_schedule = cosine_schedule(
        lr,
        lr * float(schedule.get("min_lr_multi", 0.01)),
        epochs,
        len(train_loader),
        float(schedule.get("warmup_epochs", 0)),
    )
    grad_step = GradientStep(run.device, fp16_scaling=run.amp and run.amp_dtype == torch.float16)
    step_counter = StepCounter()
    life = Lifecycle(
        run.output_dir,
        epochs,
        TrainingState(
            model,
            optimizer,
            grad_step=grad_step,
            task_state=step_counter,
            extra=dict(config=OmegaConf.to_container(config, resolve=True)),
        ),
        resume=config.get("resume") or None,
        auto_resume=bool(config.get("auto_resume", True)),
        save_freq=0 if config.get("save_latest", True) else 1,
        best=Best(STOP_METRIC) if config.get("stop_key") else None,
        last_is_best=True,
        steps_per_epoch=len(train_loader),
        log_enabled=run.log.enabled,
    )
    run.log.close()
    run.log = life.log
    life.resume()
    stop_key = config.get("stop_key")

    def train_epoch(epoch: int) -> dict[str, float]:
        stats, step_counter.global_step = train_one_epoch(
            run, trained, model.temp, train_loader, step_fn, optimizer, grad_step, lr_schedule, epoch,
            step_counter.global_step,
        )  # fmt: skip
        return stats

    results: dict[str, Any] = {}

    def evaluate(epoch: int) -> dict[str, Any]:
        results.clear()
        results.update(evaluate_fn(model) if evaluate_fn is not None else {})
        metric = _stop_metric(results, stop_key)
        return {**_flatten(results), **({STOP_METRIC: metric} if metric is not None else {})}

    def after_epoch(epoch: int, record: Mapping[str, Any], is_best: bool) -> None:
        write_results(run, results, "eval_res_latest.json")
        if is_best:
            write_results(run, results, "eval_res_best.json")
        if results:
            print(f"epoch {epoch} evaluation: {json.dumps(results, sort_keys=True)}")

    life.fit(train_epoch, evaluate, after_epoch)
    barrier()
    return dict(results)


class StepCounter:
    """The optimizer step count across epochs (the lr schedule's index), saved in checkpoints."""

    def __init__(self) -> None:
        self.global_step = 0

    def state_dict(self) -> dict[str, int]:
        return {"global_step": self.global_step}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.global_step = int(state["global_step"])


def caption_task(argv: list[str] | None, script: str, is_pretrain: bool) -> dict[str, Any]:
    """The whole of pretrain.py and retrieval.py: train on caption pairs with per-epoch retrieval
    evaluation, or (``evaluate True``) evaluate only. Pretraining uses the model with the MLM head and
    makes every pair its own positive; retrieval uses the BertModel layout and per-video positives."""
    with task_run(argv, script) as run:
        model = prepare_model(run, is_pretrain=is_pretrain)
        if run.evaluate:
            return evaluate_only(run, model, retrieval_evaluator(run))
        loader = caption_train_loader(run.config, positives="sample" if is_pretrain else "media")
        return fit(run, model, loader, caption_step(run), retrieval_evaluator(run))
