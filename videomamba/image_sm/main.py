"""Train or evaluate an image classifier (VideoMamba or DeiT), optionally with self-distillation.

Usage (see README.md): ``python -m videomamba.image_sm.main --model videomamba_tiny ...``, the same
under ``torchrun --nproc_per_node=N -m`` or ``srun python -m``. Giving ``--teacher_pretrained_path`` turns on
self-distillation from a frozen teacher (``main_distill.py`` is this script with that required).
Re-running a command resumes from ``<output_dir>/checkpoint-latest.pth`` (see ``videomamba/core/lifecycle.py``).
"""

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import Mixup
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

import videomamba.image_sm.models  # noqa: F401  (registers the image models in timm)
from videomamba.core.checkpoint import LATEST, plain_config, restore_training_state
from videomamba.core.cli import (
    UserError,
    accept_both_spellings,
    adopt_stored_model_args,
    registered_model,
    resolve_precision,
    scale_lr,
)
from videomamba.core.distributed import distributed_session, seed_worker, wrap_ddp
from videomamba.core.lifecycle import Best, Lifecycle, TrainingState, model_description
from videomamba.core.losses import classification_loss
from videomamba.core.optim import GradientStep, build_optimizer, param_groups
from videomamba.core.pretrained import extract_state_dict, load_checkpoint_file, load_pretrained
from videomamba.image_sm import engine
from videomamba.image_sm.datasets import ImageFolderDataset, build_dataset
from videomamba.image_sm.samplers import RASampler

__all__ = ["get_args_parser", "main"]


def get_args_parser(add_help: bool = False) -> argparse.ArgumentParser:
    """All flags, with the original release's names and defaults (plus a few marked 'new')."""
    parser = argparse.ArgumentParser("VideoMamba image classification", add_help=add_help)
    run = parser.add_argument_group("run")
    run.add_argument("--batch-size", default=64, type=int, help="per-process batch size")
    run.add_argument("--epochs", default=300, type=int)
    run.add_argument("--save_freq", default=50, type=int, help="also keep checkpoint-{epoch}.pth every N epochs")
    run.add_argument("--output_dir", default="", help="where logs and checkpoints go (empty: nothing is saved)")
    run.add_argument("--device", default="cuda", help="cuda or cpu")
    run.add_argument("--seed", default=0, type=int, help="seed (+ rank)")
    run.add_argument(
        "--resume", default="", help="checkpoint to resume from (default: <output_dir>/checkpoint-latest.pth)"
    )
    run.add_argument("--auto_resume", action="store_true", default=True, help="resume from the output folder")
    run.add_argument(
        "--no_auto_resume", "--no_resume", action="store_false", dest="auto_resume", help="(new) start over"
    )
    run.add_argument("--start_epoch", default=0, type=int, help="first epoch when not resuming")
    run.add_argument("--eval", action="store_true", help="evaluate only")
    run.add_argument("--eval-crop-ratio", default=0.875, type=float, help="centre-crop ratio of the eval resize")
    run.add_argument("--dist-eval", action="store_true", help="shard the validation set across processes")
    run.add_argument("--num_workers", default=10, type=int)
    run.add_argument("--pin-mem", action="store_true", default=True, help="pin CPU memory in data loaders")
    run.add_argument("--no-pin-mem", action="store_false", dest="pin_mem")
    run.add_argument("--print_freq", default=10, type=int, help="(new) progress line every N steps")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="deit_base_patch16_224", type=registered_model, help="timm model name")
    model.add_argument("--input-size", default=224, type=int, help="image size")
    model.add_argument("--drop", default=0.0, type=float, help="dropout after the position embedding")
    model.add_argument("--drop-path", default=0.1, type=float, help="stochastic depth rate")
    model.add_argument(
        "--model-kwargs",
        default="{}",
        type=json.loads,
        help='(new) extra model arguments as JSON, e.g. \'{"depth": 2, "embed_dim": 64}\'',
    )
    model.add_argument(
        "--overwrite-dt-init",
        action="store_true",
        help="(new) reproduce the original init, which overwrote Mamba's dt_proj init",
    )
    model.add_argument("--finetune", default="", help="initialise from this checkpoint (head and resolution adapted)")
    model.add_argument(
        "--load_from_distill",
        default="",
        help="continue from a distillation checkpoint without its distill head (weights, EMA, "
        "scheduler and epoch; not the optimizer)",
    )

    ema = parser.add_argument_group("EMA")
    ema.add_argument("--model-ema", action="store_true", default=True)
    ema.add_argument("--no-model-ema", action="store_false", dest="model_ema")
    ema.add_argument("--model-ema-decay", default=0.9999, type=float)
    ema.add_argument("--model-ema-force-cpu", action="store_true", default=False)

    opt = parser.add_argument_group("optimizer")
    opt.add_argument("--opt", default="adamw", help="timm optimizer name")
    opt.add_argument("--opt-eps", default=1e-8, type=float)
    opt.add_argument("--opt-betas", default=None, type=float, nargs="+")
    opt.add_argument("--clip-grad", default=None, type=float, help="clip the gradient norm to this value")
    opt.add_argument("--momentum", default=0.9, type=float)
    opt.add_argument("--weight-decay", default=0.05, type=float)
    opt.add_argument("--layer-decay", default=1.0, type=float, help="(new) layer-wise lr decay (1.0 = off)")
    opt.add_argument(
        "--decay-a-log",
        action="store_true",
        help="(new) weight-decay Mamba's A_log/A_b_log, as the original release did",
    )
    opt.add_argument("--unscale-lr", action="store_true", help="do not scale lr by total batch / 512")

    sched = parser.add_argument_group("schedule (per epoch)")
    sched.add_argument("--sched", default="cosine", help="timm scheduler name")
    sched.add_argument("--lr", default=5e-4, type=float)
    sched.add_argument("--lr-noise", default=None, type=float, nargs="+")
    sched.add_argument("--lr-noise-pct", default=0.67, type=float)
    sched.add_argument("--lr-noise-std", default=1.0, type=float)
    sched.add_argument("--warmup-lr", default=1e-6, type=float)
    sched.add_argument("--min-lr", default=1e-5, type=float)
    sched.add_argument("--decay-epochs", default=30, type=float)
    sched.add_argument("--warmup-epochs", default=5, type=int)
    sched.add_argument("--cooldown-epochs", default=0, type=int)
    sched.add_argument("--patience-epochs", default=10, type=int)
    sched.add_argument("--decay-rate", "--dr", default=0.1, type=float)

    aug = parser.add_argument_group("augmentation")
    aug.add_argument("--color-jitter", default=0.3, type=float)
    aug.add_argument("--aa", default="rand-m9-mstd0.5-inc1", help="timm auto-augment policy ('none' to disable)")
    aug.add_argument("--smoothing", default=0.1, type=float, help="label smoothing")
    aug.add_argument("--train-interpolation", default="bicubic")
    aug.add_argument("--repeated-aug", action="store_true", default=True)
    aug.add_argument("--no-repeated-aug", action="store_false", dest="repeated_aug")
    aug.add_argument("--train-mode", action="store_true", default=True)
    aug.add_argument("--no-train-mode", action="store_false", dest="train_mode")
    aug.add_argument("--ThreeAugment", action="store_true", help="3-Augment training transform")
    aug.add_argument("--src", action="store_true", help="3-Augment with simple random crop")
    aug.add_argument("--reprob", default=0.25, type=float, help="random erase probability")
    aug.add_argument("--remode", default="pixel", help="random erase mode")
    aug.add_argument("--recount", default=1, type=int, help="random erase count")
    aug.add_argument("--mixup", default=0.8, type=float)
    aug.add_argument("--cutmix", default=1.0, type=float)
    aug.add_argument("--cutmix-minmax", default=None, type=float, nargs="+")
    aug.add_argument("--mixup-prob", default=1.0, type=float)
    aug.add_argument("--mixup-switch-prob", default=0.5, type=float)
    aug.add_argument("--mixup-mode", default="batch", choices=("batch", "pair", "elem"))
    aug.add_argument("--bce-loss", action="store_true", help="binary cross-entropy on binarised targets")

    distill = parser.add_argument_group("self-distillation (on when --teacher_pretrained_path is given)")
    distill.add_argument(
        "--teacher_model", default="videomamba_small", type=registered_model, help="frozen teacher (timm name)"
    )
    distill.add_argument("--teacher_embed_dim", default=384, type=int, help="teacher width (student head output)")
    distill.add_argument("--teacher_pretrained_path", default=None, help="teacher weights")
    distill.add_argument(
        "--teacher-model-kwargs", default="{}", type=json.loads, help="(new) extra teacher model arguments as JSON"
    )
    distill.add_argument("--distill_weight", default=1.0, type=float, help="(new) weight of the feature loss")

    data = parser.add_argument_group("data")
    data.add_argument("--data-set", default="IMNET", choices=("CIFAR", "IMNET", "INAT", "INAT19"))
    data.add_argument("--data-path", default="", help="CIFAR/INAT root, or an ImageNet folder with train/ and val/")
    data.add_argument("--root_dir_train", default="", help="ImageNet train images root")
    data.add_argument("--meta_file_train", default="", help="ImageNet train meta list ('<path> <label>' lines)")
    data.add_argument("--root_dir_val", default="")
    data.add_argument("--meta_file_val", default="")
    data.add_argument(
        "--inat-category",
        default="name",
        choices=("kingdom", "phylum", "class", "order", "supercategory", "family", "genus", "name"),
    )
    data.add_argument("--nb_classes", default=None, type=int, help="(new) override the dataset's class count")

    dist = parser.add_argument_group("distributed and precision")
    dist.add_argument("--dist_url", default="env://", help="process-group init method")
    dist.add_argument("--local-rank", "--local_rank", default=0, type=int, help="set by legacy launchers")
    dist.add_argument("--bf16", action="store_true", help="autocast to bfloat16 instead of float16")
    dist.add_argument("--if_amp", action="store_true", default=True, help="mixed precision (default on)")
    dist.add_argument("--no_amp", action="store_false", dest="if_amp")
    return accept_both_spellings(parser)


# ------------------------------------------------------------------------------- building


def _is_videomamba(name: str) -> bool:
    return name.startswith("videomamba_")


def build_models(args: argparse.Namespace, nb_classes: int) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """The (student) model, its registry name and the kwargs it was built with."""
    name = args.model
    kwargs: dict[str, Any] = dict(
        num_classes=nb_classes, drop_rate=args.drop, drop_path_rate=args.drop_path, img_size=args.input_size
    )
    if _is_videomamba(name) and args.overwrite_dt_init:
        kwargs["overwrite_dt_init"] = True
    if args.teacher_pretrained_path:
        if not _is_videomamba(name):
            raise UserError(f"self-distillation needs a VideoMamba student, got --model {name}")
        if not name.endswith("_distill"):
            print(f"Self-distillation: student {name} -> {name}_distill (the same model plus a distill head)")
            name = f"{name}_distill"
        kwargs.update(teacher_embed_dim=args.teacher_embed_dim, model_type="student")
    kwargs.update(args.model_kwargs)
    print(f"Creating model: {name} {kwargs}")
    return timm.create_model(name, pretrained=False, **kwargs), name, kwargs


def build_teacher(
    args: argparse.Namespace, device: torch.device, use_amp: bool = False, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The frozen teacher: no classifier, weights from --teacher_pretrained_path, AMP dtype if AMP."""
    kwargs: dict[str, Any] = dict(num_classes=0, img_size=args.input_size)
    if args.teacher_model.endswith("_distill"):
        kwargs["model_type"] = "teacher"
    kwargs.update(args.teacher_model_kwargs)
    print(f"Creating teacher: {args.teacher_model} {kwargs}")
    teacher = timm.create_model(args.teacher_model, pretrained=False, **kwargs)
    width = getattr(teacher, "num_features", None)
    if width != args.teacher_embed_dim:
        raise UserError(
            f"--teacher_embed_dim {args.teacher_embed_dim} differs from the width of {args.teacher_model} ({width})"
        )
    load_pretrained(teacher, args.teacher_pretrained_path)
    teacher.requires_grad_(False)
    teacher.eval()
    teacher.to(device)
    if use_amp:
        # Half-precision weights save memory; the dtype follows --bf16 (the original had it inverted).
        teacher.to(dtype)
    return teacher


def build_loaders(
    args: argparse.Namespace, dist_info: Any, device: torch.device
) -> tuple[DataLoader | None, DataLoader, int]:
    dataset_val, nb_classes = build_dataset(False, args)
    dataset_train = None
    if not args.eval:
        dataset_train, nb_classes = build_dataset(True, args)
        if isinstance(dataset_train, ImageFolderDataset) and isinstance(dataset_val, ImageFolderDataset):
            if dataset_train.classes != dataset_val.classes:
                raise UserError(
                    f"class folders differ between train ({len(dataset_train.classes)} classes) and "
                    f"val ({len(dataset_val.classes)} classes)"
                )
    world, rank = dist_info.world_size, dist_info.rank
    common = dict(
        num_workers=args.num_workers,
        pin_memory=args.pin_mem and device.type == "cuda",
        worker_init_fn=seed_worker,
        persistent_workers=False,  # fresh workers each epoch, seeded from the (restorable) torch RNG: exact resume
    )
    if args.dist_eval and world > 1:
        if len(dataset_val) % world:
            print(
                f"Warning: {len(dataset_val)} validation images do not split evenly over {world} processes; "
                "the distributed sampler repeats a few, which slightly changes the numbers"
            )
        sampler_val = DistributedSampler(dataset_val, num_replicas=world, rank=rank, shuffle=False)
    else:
        sampler_val = SequentialSampler(dataset_val)
    loader_val = DataLoader(
        dataset_val, sampler=sampler_val, batch_size=int(1.5 * args.batch_size), drop_last=False, **common
    )
    loader_train = None
    if dataset_train is not None:
        if world > 1:
            sampler_train = (
                RASampler(dataset_train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
                if args.repeated_aug
                else DistributedSampler(dataset_train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
            )
        else:
            sampler_train = RandomSampler(dataset_train)
        loader_train = DataLoader(
            dataset_train, sampler=sampler_train, batch_size=args.batch_size, drop_last=True, **common
        )
        if len(loader_train) == 0:
            raise UserError(
                f"{len(dataset_train)} training images give no full batch of {args.batch_size} per "
                f"process ({world} processes): lower --batch-size"
            )
    return loader_train, loader_val, nb_classes


def build_criterion(args: argparse.Namespace, mixup_active: bool) -> torch.nn.Module:
    if args.bce_loss:
        return torch.nn.BCEWithLogitsLoss()
    return classification_loss(mixup_active, args.smoothing)


def _drop_distill_head(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if not k.startswith("distill_head.")}


# ----------------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run training (or evaluation with --eval); returns the last epoch's log record.

    ``args`` is not modified (a requeued submitit job reuses it, so e.g. the lr is scaled once).
    """
    args = copy.deepcopy(args)
    with distributed_session(args.device, args.dist_url, seed=args.seed) as (dist_info, device):
        return _run(args, dist_info, device)


MODEL_ARGS = ("model", "model_kwargs", "input_size")


def _adopt_checkpoint_model(args: argparse.Namespace) -> None:
    """--eval/--resume of this code base's checkpoints rebuild their model; --finetune keeps its size flags."""
    if args.resume or (args.eval and args.output_dir and (Path(args.output_dir) / LATEST).is_file()):
        adopt_stored_model_args(args, args.resume or Path(args.output_dir) / LATEST, MODEL_ARGS)
    elif args.finetune:
        adopt_stored_model_args(args, args.finetune, ("model_kwargs",))


def _run(args: argparse.Namespace, dist_info: Any, device: torch.device) -> dict[str, Any]:
    print(json.dumps(plain_config(args), sort_keys=True))
    _adopt_checkpoint_model(args)
    use_amp, dtype, precision = resolve_precision(device, args.if_amp, args.bf16)

    loader_train, loader_val, nb_classes = build_loaders(args, dist_info, device)
    mixup_active = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    mixup_fn = None
    if mixup_active and not args.eval:
        mixup_fn = Mixup(
            mixup_alpha=args.mixup,
            cutmix_alpha=args.cutmix,
            cutmix_minmax=args.cutmix_minmax,
            prob=args.mixup_prob,
            switch_prob=args.mixup_switch_prob,
            mode=args.mixup_mode,
            label_smoothing=args.smoothing,
            num_classes=nb_classes,
        )

    model, model_name, model_kwargs = build_models(args, nb_classes)
    if args.finetune:
        print(f"Fine-tuning from {args.finetune}")
        load_pretrained(model, args.finetune)
    model.to(device)
    model_without_ddp = model
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"number of params: {n_parameters}")

    model_ema = None
    if args.model_ema:
        # Created after --finetune so the average starts from the fine-tuning weights.
        model_ema = ModelEmaV3(
            model, decay=args.model_ema_decay, device=torch.device("cpu") if args.model_ema_force_cpu else None
        )
    model = wrap_ddp(model, device)
    eval_kwargs = dict(device=device, amp=use_amp, amp_dtype=dtype, print_freq=args.print_freq)
    if args.eval:
        return _evaluate_only(args, model_without_ddp, model_ema, loader_val, eval_kwargs)

    args.lr = args.lr * scale_lr(args.lr, args.batch_size * dist_info.world_size, 512, args.unscale_lr, "--unscale-lr")
    groups = param_groups(
        model_without_ddp, args.weight_decay, layer_decay=args.layer_decay, decay_flagged=args.decay_a_log
    )
    optimizer = build_optimizer(
        groups, args.opt, args.lr, args.weight_decay, args.momentum, eps=args.opt_eps, betas=args.opt_betas
    )
    lr_scheduler = _build_scheduler(args, optimizer)
    gradient_step = GradientStep(device, fp16_scaling=use_amp and dtype == torch.float16)
    criterion = build_criterion(args, mixup_active)
    teacher = build_teacher(args, device, use_amp, dtype) if args.teacher_pretrained_path else None

    state = TrainingState(
        model_without_ddp,
        optimizer,
        lr_scheduler,
        gradient_step,
        model_ema,
        extra=model_description(model_name, model_kwargs, args),
    )
    life = Lifecycle.from_args(
        args,
        state,
        args.save_freq,
        best=Best("test_acc1", "max", record_as="max_accuracy"),
        samplers=(loader_train.sampler,),
        steps_per_epoch=len(loader_train),
        n_parameters=n_parameters,
    )
    life.resume()
    if life.resumed_from is None and args.load_from_distill:
        life.start_epoch = _continue_from_distill(args.load_from_distill, model_without_ddp, model_ema, lr_scheduler)
    resolved = dict(plain_config(args), world_size=dist_info.world_size, nb_classes=nb_classes, model_name=model_name)
    life.log.write_config(dict(resolved, precision=precision))  # the full config of this run, with the scaled lr
    options = engine.TrainOptions(
        device=device,
        amp=use_amp,
        amp_dtype=dtype,
        clip_grad=args.clip_grad,
        set_training_mode=args.train_mode,
        bce_loss=args.bce_loss,
        distill_weight=args.distill_weight,
        print_freq=args.print_freq,
    )

    def train_epoch(epoch: int) -> dict[str, float]:
        lr_scheduler.step(epoch)
        return engine.train_one_epoch(
            model, criterion, loader_train, optimizer, epoch, gradient_step, options,
            model_ema=model_ema, mixup_fn=mixup_fn, teacher=teacher, run_log=life.log,
        )  # fmt: skip

    def evaluate(epoch: int) -> dict[str, float]:
        stats = engine.evaluate(loader_val, model, **eval_kwargs)
        print(f"Accuracy on {len(loader_val.dataset)} test images: {stats['acc1']:.1f}%")
        record = {f"test_{k}": v for k, v in stats.items()}
        if model_ema is not None:
            ema_stats = engine.evaluate(loader_val, model_ema.module, header="Test (EMA):", **eval_kwargs)
            record.update({f"test_ema_{k}": v for k, v in ema_stats.items()})
        return record

    return life.fit(train_epoch, evaluate)


def _build_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer) -> Any:
    lr_scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=args.sched,
        num_epochs=args.epochs,
        decay_epochs=args.decay_epochs,
        cooldown_epochs=args.cooldown_epochs,
        patience_epochs=args.patience_epochs,
        decay_rate=args.decay_rate,
        min_lr=args.min_lr,
        warmup_lr=args.warmup_lr,
        warmup_epochs=args.warmup_epochs,
        noise=args.lr_noise,
        noise_pct=args.lr_noise_pct,
        noise_std=args.lr_noise_std,
        noise_seed=args.seed,
        step_on_epochs=True,
    )
    return lr_scheduler


def _continue_from_distill(path: str, model: torch.nn.Module, model_ema: Any, lr_scheduler: Any) -> int:
    """--load_from_distill: weights, EMA and scheduler of a distillation run without its distill head."""
    checkpoint = load_checkpoint_file(path)
    model.load_state_dict(_drop_distill_head(extract_state_dict(checkpoint, key="model")))
    if model_ema is not None and checkpoint.get("model_ema"):
        model_ema.module.load_state_dict(_drop_distill_head(extract_state_dict(checkpoint, key="model_ema")))
    if checkpoint.get("lr_scheduler"):
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    start_epoch = int(checkpoint.get("epoch", -1)) + 1
    print(
        f"Continuing from distillation checkpoint {path} at epoch {start_epoch} (distill head dropped, "
        "optimizer restarted)"
    )
    return start_epoch


def _evaluate_only(
    args: argparse.Namespace, model: torch.nn.Module, model_ema: Any, loader_val: DataLoader, eval_kwargs: dict
) -> dict[str, Any]:
    """--eval: the model of --resume, else of this run's latest checkpoint, else --finetune's (and its EMA)."""
    path = args.resume or (str(Path(args.output_dir) / LATEST) if args.output_dir else "")
    ema_restored = False
    if path and Path(path).is_file():
        print(f"Evaluating {path}")
        restored = restore_training_state(path, model, model_ema=model_ema, exact=False)["restored"]
        ema_restored = "model_ema" in restored
    stats = engine.evaluate(loader_val, model, **eval_kwargs)
    record = {f"test_{k}": v for k, v in stats.items()}
    print(f"Accuracy of the network on {len(loader_val.dataset)} test images: {stats['acc1']:.1f}%")
    if model_ema is not None and ema_restored:
        ema_stats = engine.evaluate(loader_val, model_ema.module, header="Test (EMA):", **eval_kwargs)
        record.update({f"test_ema_{k}": v for k, v in ema_stats.items()})
    elif model_ema is not None:
        print("No EMA weights were loaded, so only the model itself was evaluated")
    return record


def cli(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Parse and run (``run_cli`` turns a non-finite loss into exit code 1 on every rank)."""
    parser = parser or argparse.ArgumentParser("VideoMamba image classification", parents=[get_args_parser()])
    args = parser.parse_args(argv)
    if args.output_dir:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    main(args)
    return 0


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(cli))
