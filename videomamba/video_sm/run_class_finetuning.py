"""Fine-tune, validate and multi-view test a VideoMamba video classifier (or regressor, ``--regression``).

Usage (see README.md): ``python -m videomamba.video_sm.run_class_finetuning --model videomamba_tiny
--data_path DIR --data_set Kinetics_sparse --nb_classes 400 --num_frames 8 ...``, the same under
``torchrun --nproc_per_node=N`` or ``srun``. Re-running a command resumes from
``<output_dir>/checkpoint-latest.pth``; a finished run re-run goes straight to the final test.

Each epoch: train -> checkpoint-latest.pth -> validate -> checkpoint-best.pth when the validation
metric improves (top-1, or the lowest loss for regression) -> one log.txt line. After the last
epoch (``--test_best`` first loads checkpoint-best.pth) every test view of every video is run,
the views are merged per video and ``predictions.jsonl`` is written.
"""

import argparse
import copy
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

import videomamba.core.backbone  # noqa: F401  (registers the VideoMamba models in timm)
from videomamba.core.checkpoint import BEST, LATEST, plain_config, restore_training_state
from videomamba.core.cli import (
    MissingFileError,
    UserError,
    accept_both_spellings,
    adopt_stored_model_args,
    registered_model,
    resolve_precision,
    scale_lr,
)
from videomamba.core.distributed import barrier, distributed_session, is_main_process, seed_worker, wrap_ddp
from videomamba.core.lifecycle import Best, Lifecycle, TrainingState, model_description
from videomamba.core.losses import classification_loss
from videomamba.core.optim import GradientStep, build_optimizer, param_groups
from videomamba.core.pretrained import extract_state_dict, load_checkpoint_file, load_pretrained
from videomamba.core.schedules import cosine_schedule
from videomamba.video_sm.datasets import DATA_SETS, build_dataset, build_mixup, repeated_sample_collate
from videomamba.video_sm.engines import finetune
from videomamba.video_sm.engines.multiview import gather_view_outputs, merge_views, write_predictions

__all__ = ["build_model", "cli", "get_args_parser", "load_finetune_checkpoint", "main"]


def get_args_parser(add_help: bool = False) -> argparse.ArgumentParser:
    """All flags, with the original release's names (defaults as there unless marked)."""
    parser = argparse.ArgumentParser("VideoMamba video fine-tuning", add_help=add_help)
    run = parser.add_argument_group("run")
    run.add_argument("--batch_size", default=64, type=int, help="per-process batch size (videos)")
    run.add_argument("--epochs", default=30, type=int)
    run.add_argument("--update_freq", default=1, type=int, help="gradient accumulation steps per update")
    run.add_argument("--save_ckpt_freq", default=100, type=int, help="also keep checkpoint-{epoch}.pth every N epochs")
    run.add_argument("--output_dir", default="", help="checkpoints, log.txt, config.json, predictions.jsonl")
    run.add_argument("--log_dir", default=None, help="TensorBoard folder (default: output_dir)")
    run.add_argument("--device", default="cuda", help="cuda or cpu")
    run.add_argument("--seed", default=0, type=int, help="seed (+ rank)")
    run.add_argument("--resume", default="", help="training checkpoint to resume from (or to test with --eval)")
    run.add_argument("--auto_resume", action="store_true", default=True, help="resume from checkpoint-latest.pth")
    run.add_argument("--no_auto_resume", "--no_resume", action="store_false", dest="auto_resume", help="start over")
    run.add_argument("--save_ckpt", action="store_true", default=True)
    run.add_argument("--no_save_ckpt", action="store_false", dest="save_ckpt")
    run.add_argument("--start_epoch", default=0, type=int, help="first epoch when not resuming")
    run.add_argument("--eval", action="store_true", help="only run the multi-view test")
    run.add_argument("--test_best", action="store_true", help="final test with checkpoint-best.pth")
    run.add_argument("--dist_eval", action="store_true", help="shard validation and test across processes")
    run.add_argument("--disable_eval_during_finetuning", action="store_true", help="no validation each epoch")
    run.add_argument("--num_workers", default=10, type=int)
    run.add_argument("--pin_mem", action="store_true", default=True)
    run.add_argument("--no_pin_mem", action="store_false", dest="pin_mem")
    run.add_argument("--print_freq", default=10, type=int, help="(new) progress line every N steps")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="videomamba_tiny", type=registered_model, help="registered model name")
    model.add_argument("--tubelet_size", default=1, type=int, help="frames per video patch; 1 in every released model")
    model.add_argument("--input_size", default=224, type=int, help="clip side in pixels")
    model.add_argument("--fc_drop_rate", default=0.0, type=float, help="dropout before the head")
    model.add_argument("--drop", default=0.0, type=float, help="dropout after the position embeddings")
    model.add_argument("--drop_path", default=0.1, type=float, help="stochastic depth rate")
    model.add_argument(
        "--grad_checkpointing",
        "--use_checkpoint",
        action="store_true",
        help="gradient checkpointing of the first --grad_checkpointing_blocks blocks (old name: --use_checkpoint)",
    )
    model.add_argument(
        "--grad_checkpointing_blocks",
        "--checkpoint_num",
        default=0,
        type=int,
        help="number of checkpointed blocks (old name: --checkpoint_num)",
    )
    model.add_argument(
        "--model_kwargs", default="{}", type=json.loads, help='(new) extra model arguments as JSON, e.g. {"depth": 2}'
    )
    model.add_argument(
        "--overwrite_dt_init", action="store_true", help="(new) the original init that overwrote Mamba's dt_proj init"
    )
    model.add_argument("--model_ema", action="store_true", default=False)
    model.add_argument("--model_ema_decay", default=0.9999, type=float)
    model.add_argument("--model_ema_force_cpu", action="store_true", default=False)

    init = parser.add_argument_group("initialisation")
    init.add_argument("--finetune", default="", help="initialise from this checkpoint (image or video, adapted)")
    init.add_argument("--model_key", default="model|module", help="'|'-separated keys tried in the checkpoint")
    init.add_argument("--model_prefix", default="", help="keep only keys under this prefix (stripped)")
    init.add_argument(
        "--orig_t_size", default=8, type=int, help="frames of the --finetune checkpoint (checked against its file)"
    )
    init.add_argument("--delete_head", action="store_true", help="drop the checkpoint's classifier")

    opt = parser.add_argument_group("optimizer and schedule (per update)")
    opt.add_argument("--opt", default="adamw", help="timm optimizer name")
    opt.add_argument("--opt_eps", default=1e-8, type=float)
    opt.add_argument("--opt_betas", default=None, type=float, nargs="+")
    opt.add_argument("--clip_grad", default=None, type=float, help="clip the gradient norm to this value")
    opt.add_argument("--momentum", default=0.9, type=float)
    opt.add_argument("--weight_decay", default=0.05, type=float)
    opt.add_argument("--weight_decay_end", default=None, type=float, help="cosine wd target (default: constant)")
    opt.add_argument("--lr", default=1e-3, type=float, help="base lr for a total batch of 256 clips")
    opt.add_argument(
        "--unscale_lr", action="store_true", help="(new) --lr, --min_lr, --warmup_lr as given (not x batch/256)"
    )
    opt.add_argument("--layer_decay", default=0.75, type=float, help="layer-wise lr decay (1.0 = off)")
    opt.add_argument(
        "--layer_decay_as_released",
        action="store_true",
        help="(new) reproduce the original's layer decay: blocks, head and temporal embedding at 1.0, "
        "patch_embed/cls_token/pos_embed at layer_decay^(depth+1)",
    )
    opt.add_argument(
        "--decay_a_log", action="store_true", help="(new) weight-decay Mamba's A_log/A_b_log, as the original did"
    )
    opt.add_argument("--warmup_lr", default=1e-6, type=float)
    opt.add_argument("--min_lr", default=1e-6, type=float)
    opt.add_argument("--warmup_epochs", default=5, type=int)
    opt.add_argument("--warmup_steps", default=-1, type=int, help="warmup updates (overrides --warmup_epochs)")

    aug = parser.add_argument_group("augmentation")
    aug.add_argument("--num_sample", default=2, type=int, help="augmented clips per decoded video (train)")
    aug.add_argument("--aa", default="rand-m7-n4-mstd0.5-inc1", help="RandAugment policy ('' to disable)")
    aug.add_argument("--smoothing", default=0.1, type=float, help="label smoothing")
    aug.add_argument("--reprob", default=0.25, type=float, help="random erase probability")
    aug.add_argument("--remode", default="pixel")
    aug.add_argument("--recount", default=1, type=int)
    aug.add_argument("--mixup", default=0.8, type=float)
    aug.add_argument("--cutmix", default=1.0, type=float)
    aug.add_argument("--cutmix_minmax", default=None, type=float, nargs="+")
    aug.add_argument("--mixup_prob", default=1.0, type=float)
    aug.add_argument("--mixup_switch_prob", default=0.5, type=float)
    aug.add_argument("--mixup_mode", default="batch", choices=("batch", "pair", "elem"))
    aug.add_argument("--hflip", default=None, type=float, help="(new) train flip probability (default: 0.5, SSV2 0)")
    aug.add_argument(
        "--train_crop_scale", default=None, type=float, nargs=2, help="(new) random resized crop area (0.08 1.0)"
    )

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--short_side_size", default=224, type=int)
    evaluation.add_argument("--test_num_segment", default=5, type=int, help="temporal test views")
    evaluation.add_argument("--test_num_crop", default=3, type=int, help="spatial test views")

    data = parser.add_argument_group("data")
    data.add_argument("--data_path", default="", help="folder with train.csv, val.csv, test.csv")
    data.add_argument("--data_set", default="Kinetics_sparse", choices=DATA_SETS)
    data.add_argument("--nb_classes", default=400, type=int, help="classes (1 with --regression)")
    data.add_argument("--regression", action="store_true", help="(new) scalar regression: MSE, best by val loss")
    data.add_argument("--prefix", default="", help="root joined to the list paths")
    data.add_argument("--split", default=" ", help="list-file delimiter")
    data.add_argument("--filename_tmpl", default="img_{:05}.jpg", help="frame file names (SSv2 raw frames)")
    data.add_argument("--use_decord", action="store_true", default=True, help="SSV2: read videos (not frames)")
    data.add_argument("--no_use_decord", action="store_false", dest="use_decord")
    data.add_argument("--video_reader", default="auto", choices=("auto", "decord", "pyav"), help="(new)")
    data.add_argument("--max_read_attempts", default=10, type=int, help="(new) unreadable videos in a row")
    data.add_argument("--num_frames", default=16, type=int)
    data.add_argument("--sampling_rate", default=4, type=int, help="frame interval of the dense data sets")
    data.add_argument("--trimmed", default=60, type=float, help="long videos: window length in seconds")
    data.add_argument("--time_stride", default=16, type=float, help="long videos: window stride in seconds")

    dist = parser.add_argument_group("distributed and precision")
    dist.add_argument("--dist_url", default="env://")
    dist.add_argument("--world_size", default=1, type=int, help="set by the launcher (accepted, not needed)")
    dist.add_argument("--local_rank", "--local-rank", default=0, type=int, help="set by legacy launchers")
    dist.add_argument("--bf16", action="store_true", help="autocast to bfloat16 instead of float16")
    dist.add_argument("--no_amp", action="store_true", help="full precision")
    dist.add_argument(
        "--enable_deepspeed", action="store_true", help="accepted for old scripts and ignored: torch AMP is used"
    )
    return accept_both_spellings(parser)


# ------------------------------------------------------------------------------- building


def build_model(args: argparse.Namespace, nb_classes: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The classifier and the kwargs it was built with (stored in checkpoints)."""
    kwargs: dict[str, Any] = dict(
        num_classes=nb_classes,
        num_frames=args.num_frames,
        tubelet_size=args.tubelet_size,
        img_size=args.input_size,
        drop_rate=args.drop,
        drop_path_rate=args.drop_path,
        fc_drop_rate=args.fc_drop_rate,
        grad_checkpointing=args.grad_checkpointing,
        grad_checkpointing_blocks=args.grad_checkpointing_blocks,
    )
    if args.overwrite_dt_init:
        kwargs["overwrite_dt_init"] = True
    kwargs.update(args.model_kwargs)
    print(f"Creating model: {args.model} {kwargs}")
    return timm.create_model(args.model, pretrained=False, **kwargs), kwargs


def load_finetune_checkpoint(model: torch.nn.Module, args: argparse.Namespace) -> None:
    """Initialise from --finetune: pick --model_key, strip prefixes, adapt shapes, load strictly.

    Image checkpoints are inflated to 3D and keep their spatial pos_embed; video checkpoints get
    their temporal embedding resampled to num_frames / tubelet_size. --orig_t_size is checked
    against the checkpoint (the original silently skipped a temporal embedding of another size).
    """
    path = args.finetune
    raw = load_checkpoint_file(path)
    key = next((k for k in args.model_key.split("|") if isinstance(raw, dict) and k in raw), None)
    state_dict = extract_state_dict(raw, key=key, prefix=args.model_prefix or None, source=path)
    for prefix in ("backbone.", "encoder."):
        if all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    if args.delete_head:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    temporal = state_dict.get("temporal_pos_embedding")
    if temporal is not None and temporal.shape[1] != args.orig_t_size // args.tubelet_size:
        warnings.warn(
            f"{path}: temporal_pos_embedding has {temporal.shape[1]} positions but --orig_t_size {args.orig_t_size} / "
            f"--tubelet_size {args.tubelet_size} says {args.orig_t_size // args.tubelet_size}; resampling from the "
            "checkpoint's own length",
            stacklevel=2,
        )
    print(f"Load ckpt from {path}" + (f" (key '{key}')" if key else ""))
    load_pretrained(model, state_dict)


def build_loaders(
    args: argparse.Namespace, dist_info: Any, device: torch.device
) -> tuple[DataLoader | None, DataLoader | None, DataLoader, int]:
    """(train, val, test) loaders and the class count; train/val are None with --eval."""
    world, rank = dist_info.world_size, dist_info.rank
    common = dict(
        num_workers=args.num_workers,
        pin_memory=args.pin_mem and device.type == "cuda",
        worker_init_fn=seed_worker,
        persistent_workers=False,
    )

    def eval_loader(dataset: Any, batch_size: int) -> DataLoader:
        sharded = args.dist_eval and world > 1
        sampler = (
            DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
            if sharded
            else SequentialSampler(dataset)
        )
        return DataLoader(dataset, sampler=sampler, batch_size=batch_size, drop_last=False, **common)

    dataset_test, nb_classes = build_dataset(is_train=False, test_mode=True, args=args)
    loader_test = eval_loader(dataset_test, args.batch_size)
    if args.eval:
        return None, None, loader_test, nb_classes
    dataset_train, _ = build_dataset(is_train=True, test_mode=False, args=args)
    sampler_train = (
        DistributedSampler(dataset_train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        if world > 1
        else RandomSampler(dataset_train)
    )
    loader_train = DataLoader(
        dataset_train,
        sampler=sampler_train,
        batch_size=args.batch_size,
        drop_last=True,
        collate_fn=repeated_sample_collate if args.num_sample > 1 else None,
        **common,
    )
    if len(loader_train) < args.update_freq:
        raise UserError(
            f"{len(dataset_train)} training videos give {len(loader_train)} full batches of {args.batch_size} per "
            f"process ({world} processes), fewer than --update_freq {args.update_freq}: lower --batch_size"
        )
    loader_val = None
    if not args.disable_eval_during_finetuning:
        dataset_val, _ = build_dataset(is_train=False, test_mode=False, args=args)
        loader_val = eval_loader(dataset_val, int(1.5 * args.batch_size))
    return loader_train, loader_val, loader_test, nb_classes


def build_criterion(args: argparse.Namespace, mixup_active: bool) -> torch.nn.Module:
    if args.regression:
        return torch.nn.MSELoss()
    return classification_loss(mixup_active, args.smoothing)


def check_args(args: argparse.Namespace) -> None:
    """Clear errors for flag combinations that cannot work."""
    if args.regression and args.nb_classes != 1:
        raise UserError(f"--regression predicts one value: pass --nb_classes 1 (got {args.nb_classes})")
    if args.regression and (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax):
        raise UserError("--regression cannot mix targets: pass --mixup 0 --cutmix 0")
    mixing = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    if mixing and not args.eval and (args.batch_size * args.num_sample) % 2:
        # Mixup pairs each clip with the batch flipped; caught here instead of at the first training step.
        raise UserError(
            f"mixup/cutmix need an even number of clips per batch, got --batch_size {args.batch_size} x "
            f"--num_sample {args.num_sample}: use an even --batch_size, or --mixup 0 --cutmix 0"
        )
    if args.update_freq < 1:
        raise UserError(f"--update_freq must be at least 1, got {args.update_freq}")
    if args.data_path and not os.path.isdir(args.data_path):
        raise MissingFileError(f"--data_path {args.data_path}: not a folder (it must hold train/val/test.csv)")
    if args.enable_deepspeed:
        warnings.warn("--enable_deepspeed is ignored: this code base trains with torch AMP and DDP", stacklevel=2)


# ----------------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train and test (or only test with --eval); returns the final record (``final_*`` metrics).

    ``args`` is not modified (a requeued submitit job reuses it, so e.g. the lr is scaled once).
    """
    args = copy.deepcopy(args)
    check_args(args)
    with distributed_session(args.device, args.dist_url, seed=args.seed) as (dist_info, device):
        return _run(args, dist_info, device)


MODEL_ARGS = ("model", "model_kwargs", "input_size", "num_frames", "tubelet_size")


def _adopt_checkpoint_model(args: argparse.Namespace, output_dir: Path | None) -> None:
    """--eval/--resume of this code base's checkpoints rebuild their model; --finetune keeps its size flags."""
    own = [output_dir / n for n in (BEST, LATEST) if output_dir is not None and (output_dir / n).is_file()]
    if args.resume or (args.eval and own):
        adopt_stored_model_args(args, args.resume or own[0], MODEL_ARGS)
    elif args.finetune:
        adopt_stored_model_args(args, args.finetune, ("model_kwargs",))


def _run(args: argparse.Namespace, dist_info: Any, device: torch.device) -> dict[str, Any]:
    output_dir = Path(args.output_dir) if args.output_dir else None
    print(json.dumps(plain_config(args), sort_keys=True))
    _adopt_checkpoint_model(args, output_dir)
    use_amp, dtype, precision = resolve_precision(device, not args.no_amp, args.bf16)

    loader_train, loader_val, loader_test, nb_classes = build_loaders(args, dist_info, device)
    mixup_fn = None if args.eval else build_mixup(args, nb_classes)
    model, model_kwargs = build_model(args, nb_classes)
    if args.finetune:
        load_finetune_checkpoint(model, args)
    model.to(device)
    model_without_ddp = model
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"number of params: {n_parameters}")
    model_ema = None
    if args.model_ema:
        # Created after --finetune so the average starts from the fine-tuning weights.
        ema_device = torch.device("cpu") if args.model_ema_force_cpu else None
        model_ema = ModelEmaV3(model, decay=args.model_ema_decay, device=ema_device)
    model = wrap_ddp(model, device)

    gradient_step = GradientStep(device, fp16_scaling=use_amp and dtype == torch.float16)
    eval_kwargs = dict(device=device, amp=use_amp, amp_dtype=dtype, print_freq=args.print_freq)
    if args.eval:
        return _evaluate_only(args, model_without_ddp, loader_test, output_dir, eval_kwargs)

    # The original's scaling: lr values are given for a total batch of 256 clips.
    total_batch = args.batch_size * args.update_freq * dist_info.world_size * args.num_sample
    factor = scale_lr(args.lr, total_batch, 256, args.unscale_lr)
    lr, min_lr, warmup_lr = args.lr * factor, args.min_lr * factor, args.warmup_lr * factor
    groups = param_groups(
        model_without_ddp,
        args.weight_decay,
        layer_decay=args.layer_decay,
        decay_flagged=args.decay_a_log,
        released_layer_decay=args.layer_decay_as_released,
    )
    optimizer = build_optimizer(
        groups, args.opt, lr, args.weight_decay, args.momentum, eps=args.opt_eps, betas=args.opt_betas
    )
    updates_per_epoch = len(loader_train) // args.update_freq
    warmup_steps = args.warmup_steps if args.warmup_steps > 0 else None
    lr_values = cosine_schedule(lr, min_lr, args.epochs, updates_per_epoch, args.warmup_epochs, warmup_lr, warmup_steps)
    wd_end = args.weight_decay if args.weight_decay_end is None else args.weight_decay_end
    wd_values = cosine_schedule(args.weight_decay, wd_end, args.epochs, updates_per_epoch)
    criterion = build_criterion(args, mixup_fn is not None)

    regression = args.regression
    best = Best("val_loss", "min", "best_val_loss") if regression else Best("val_acc1", "max", "max_accuracy")
    state = TrainingState(
        model_without_ddp,
        optimizer,
        grad_step=gradient_step,
        model_ema=model_ema,
        extra=model_description(args.model, model_kwargs, args),
    )
    life = Lifecycle.from_args(
        args,
        state,
        args.save_ckpt_freq,
        save=args.save_ckpt,
        best=best if loader_val is not None else None,
        samplers=(loader_train.sampler,),
        steps_per_epoch=len(loader_train),
        n_parameters=n_parameters,
        tensorboard_dir=args.log_dir,
    )
    life.resume()
    options = finetune.TrainOptions(
        device=device,
        amp=use_amp,
        amp_dtype=dtype,
        clip_grad=args.clip_grad,
        update_freq=args.update_freq,
        regression=regression,
        print_freq=args.print_freq,
        lr_values=lr_values,
        wd_values=wd_values,
    )
    resolved = dict(plain_config(args), world_size=dist_info.world_size, nb_classes=nb_classes, scaled_lr=lr)
    life.log.write_config(dict(resolved, precision=precision))

    def train_epoch(epoch: int) -> dict[str, float]:
        return finetune.train_one_epoch(
            model, criterion, loader_train, optimizer, epoch, gradient_step, options,
            model_ema=model_ema, mixup_fn=mixup_fn, run_log=life.log,
        )  # fmt: skip

    def evaluate(epoch: int) -> dict[str, float]:
        val_stats = finetune.validate(loader_val, model, regression=regression, **eval_kwargs)
        return {f"val_{k}": v for k, v in val_stats.items()}

    record = life.fit(train_epoch, evaluate if loader_val is not None else None)

    def final() -> dict[str, Any]:
        if args.test_best:
            best_path = output_dir / BEST if output_dir else None
            if best_path is not None and best_path.is_file():
                print(f"Final test with the best checkpoint {best_path}")
                restore_training_state(best_path, model_without_ddp)
            else:
                print("--test_best: no checkpoint-best.pth (no validation ran?); testing the last weights")
        metrics = final_test(args, model_without_ddp, loader_test, output_dir, eval_kwargs)
        return {f"final_{k}": v for k, v in metrics.items()}

    return {**record, **life.finish(final)}


def final_test(
    args: argparse.Namespace,
    model: torch.nn.Module,
    loader_test: DataLoader,
    output_dir: Path | None,
    eval_kwargs: dict[str, Any],
) -> dict[str, float]:
    """Run every test view, merge per video, write predictions.jsonl (rank 0); returns the merged metrics."""
    records = finetune.collect_view_outputs(loader_test, model, **eval_kwargs)
    records = gather_view_outputs(records, distributed_eval=args.dist_eval)
    dataset = loader_test.dataset
    metrics, rows = merge_views(records, regression=args.regression, video_ids=getattr(dataset, "video_ids", None))
    expected = len(getattr(dataset, "records", [])) or metrics["num_videos"]
    if metrics["num_videos"] < expected:
        print(f"Warning: {expected - metrics['num_videos']} test videos have no output (unreadable, see the log)")
    summary = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
    print(f"* Final multi-view test: {summary}")
    if output_dir is not None and is_main_process():
        path = write_predictions(rows, output_dir / "predictions.jsonl")
        print(f"Predictions written to {path}")
    barrier()
    return metrics


def _evaluate_only(
    args: argparse.Namespace,
    model: torch.nn.Module,
    loader_test: DataLoader,
    output_dir: Path | None,
    eval_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """--eval: test --resume (any checkpoint, adapted), else this run's best (--test_best) or latest."""
    path = args.resume
    if not path and output_dir is not None:
        names = (BEST, LATEST) if args.test_best else (LATEST, BEST)
        path = next((str(output_dir / n) for n in names if (output_dir / n).is_file()), "")
    if path:
        print(f"Testing {path}")
        load_pretrained(model, path)  # a training checkpoint's 'model' entry or a released state dict
    elif not args.finetune:
        raise MissingFileError("--eval needs weights: --resume FILE, --finetune FILE, or a checkpoint in --output_dir")
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    metrics = final_test(args, model, loader_test, output_dir, eval_kwargs)
    return {f"final_{k}": v for k, v in metrics.items()}


def cli(argv: list[str] | None = None, regression: bool = False) -> int:
    """Parse and run (``run_cli`` turns a non-finite loss into exit code 1 on every rank).

    With --regression (or ``regression=True``) mixup, cutmix and smoothing default to 0.
    """
    parser = argparse.ArgumentParser("VideoMamba video fine-tuning", parents=[get_args_parser()])
    argv = sys.argv[1:] if argv is None else list(argv)
    if regression or "--regression" in argv:
        parser.set_defaults(regression=True, mixup=0.0, cutmix=0.0, smoothing=0.0, nb_classes=1)
    main(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(cli))
