"""Masked video pretraining of VideoMamba aligned to a frozen CLIP teacher (UMT-style).

Usage (see README.md): ``python -m videomamba.video_sm.run_videomamba_pretraining --model
videomamba_middle_pretrain --data_path train.csv --clip_teacher clip_b16 --clip_teacher_path
vit_b16.pth --mask_type attention --mask_ratio 0.8 ...``; the same under torchrun or srun.
Re-running a command resumes from ``<output_dir>/checkpoint-latest.pth``.

The student sees the visible tokens of each masked clip; its last ``--clip_return_layer`` layers
(every ``--clip_student_return_interval`` blocks) are decoded to the teacher's width and compared
with the teacher's matching layers (``--clip_return_interval``) at the visible positions. The
checkpoints hold the student only (``model``), loadable by ``run_class_finetuning.py --finetune``.
"""

import argparse
import copy
import json
import os
from typing import Any

import timm
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

import videomamba.core.pretrain  # noqa: F401  (registers the *_pretrain students in timm)
from videomamba.core.checkpoint import plain_config
from videomamba.core.cli import (
    MissingFileError,
    UserError,
    accept_both_spellings,
    registered_model,
    resolve_precision,
    scale_lr,
)
from videomamba.core.clip_teacher import CLIP_CONFIGS, build_clip_teacher, return_layers_from_interval
from videomamba.core.distributed import distributed_session, seed_worker, wrap_ddp
from videomamba.core.lifecycle import Lifecycle, TrainingState, model_description
from videomamba.core.masking import MASK_TYPES
from videomamba.core.optim import GradientStep, build_optimizer, param_groups
from videomamba.core.pretrained import load_pretrained
from videomamba.core.schedules import cosine_schedule
from videomamba.video_sm.datasets import build_pretraining_dataset, repeated_sample_collate
from videomamba.video_sm.engines import pretrain
from videomamba.video_sm.engines.pretrain import CLIP_LOSS_TYPES

__all__ = ["build_student", "build_teacher", "cli", "get_args_parser", "main", "str_to_bool"]

TEACHER_PATH_ENV = "VIDEOMAMBA_CHECKPOINTS"
TEACHER_FILES = {"clip_b16": "vit_b16.pth", "clip_l14": "vit_l14.pth", "clip_l14_336": "vit_l14_336.pth"}


def str_to_bool(text: str) -> bool:
    """A real boolean for flags the original typed as bool, where any string (even 'False') was true."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "y", "on"):
        return True
    if value in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _bool_flag(group: argparse._ArgumentGroup, name: str, default: bool, help_text: str) -> None:
    # `--flag`, `--flag True` and `--flag False` all mean what they say.
    group.add_argument(name, nargs="?", const=True, default=default, type=str_to_bool, help=help_text)


def get_args_parser(add_help: bool = False) -> argparse.ArgumentParser:
    """All flags, with the original release's names (defaults as there unless marked)."""
    parser = argparse.ArgumentParser("VideoMamba masked pretraining", add_help=add_help)
    run = parser.add_argument_group("run")
    run.add_argument("--batch_size", default=64, type=int, help="per-process batch size")
    run.add_argument("--epochs", default=800, type=int)
    run.add_argument("--save_ckpt_freq", default=50, type=int, help="also keep checkpoint-{epoch}.pth every N epochs")
    run.add_argument("--output_dir", default="", help="checkpoints, log.txt, config.json")
    run.add_argument("--log_dir", default=None, help="TensorBoard folder (default: output_dir)")
    run.add_argument("--device", default="cuda")
    run.add_argument("--seed", default=0, type=int)
    run.add_argument("--resume", default="", help="training checkpoint to resume from")
    run.add_argument("--auto_resume", action="store_true", default=True)
    run.add_argument("--no_auto_resume", "--no_resume", action="store_false", dest="auto_resume", help="start over")
    run.add_argument("--start_epoch", default=0, type=int)
    run.add_argument("--num_workers", default=10, type=int)
    run.add_argument("--pin_mem", action="store_true", default=True)
    run.add_argument("--no_pin_mem", action="store_false", dest="pin_mem")
    run.add_argument("--print_freq", default=10, type=int, help="(new) progress line every N steps")

    model = parser.add_argument_group("student")
    model.add_argument(
        "--model", default="videomamba_middle_pretrain", type=registered_model, help="registered *_pretrain student"
    )
    model.add_argument("--tubelet_size", default=1, type=int, help="must be 1 to align with the per-frame teacher")
    model.add_argument("--input_size", default=224, type=int)
    model.add_argument("--drop_path", default=0.0, type=float)
    model.add_argument(
        "--grad_checkpointing", "--use_checkpoint", action="store_true", help="(old name: --use_checkpoint)"
    )
    model.add_argument(
        "--grad_checkpointing_blocks", "--checkpoint_num", default=0, type=int, help="(old name: --checkpoint_num)"
    )
    model.add_argument("--model_kwargs", default="{}", type=json.loads, help="(new) extra student arguments as JSON")
    model.add_argument("--finetune", default="", help="(new) initialise the student from this checkpoint")

    mask = parser.add_argument_group("masking")
    mask.add_argument("--mask_type", default="tube", choices=MASK_TYPES)
    mask.add_argument("--mask_ratio", default=0.75, type=float)

    clip = parser.add_argument_group("CLIP teacher")
    clip.add_argument("--clip_teacher", default="clip_b16", choices=sorted(CLIP_CONFIGS))
    clip.add_argument(
        "--clip_teacher_path",
        default=None,
        help=f"(new) teacher visual weights (default: ${TEACHER_PATH_ENV}/clip_visual_encoder/vit_b16.pth etc.)",
    )
    clip.add_argument("--clip_input_resolution", default=224, type=int, help="teacher input side (clips are resized)")
    clip.add_argument("--clip_teacher_embed_dim", default=768, type=int, help="teacher width (checked)")
    clip.add_argument("--clip_loss_ratio", default=1.0, type=float)
    clip.add_argument("--clip_loss_type", default="l2", choices=CLIP_LOSS_TYPES)
    clip.add_argument("--clip_decoder_embed_dim", default=None, type=int, help="student width (checked)")
    clip.add_argument("--clip_output_dim", default=512, type=int, help="teacher output width")
    clip.add_argument("--clip_norm_type", default="l2", choices=("l2", "none"))
    clip.add_argument("--clip_return_layer", default=1, type=int, help="aligned layers")
    clip.add_argument("--clip_return_interval", default=1, type=int, help="teacher layer spacing")
    clip.add_argument("--clip_student_return_interval", default=1, type=int, help="student layer spacing")
    _bool_flag(clip, "--clip_return_attn", False, "teacher returns attention (needed by --mask_type attention)")
    _bool_flag(clip, "--clip_return_cls", False, "align the time-averaged cls token too")
    clip.add_argument(
        "--clip_targets_as_released",
        action="store_true",
        help="(new) with --clip_return_cls, skip the teacher's ln_post as the original did",
    )
    clip.add_argument(
        "--clip_student_features_as_released",
        action="store_true",
        help="(new) align the original's last-layer student feature: the un-normed stream before the last mixer",
    )

    opt = parser.add_argument_group("optimizer and schedule (per step)")
    opt.add_argument("--opt", default="adamw")
    opt.add_argument("--opt_eps", default=1e-8, type=float)
    opt.add_argument("--opt_betas", default=None, type=float, nargs="+")
    opt.add_argument("--clip_grad", default=None, type=float)
    opt.add_argument("--momentum", default=0.9, type=float)
    opt.add_argument("--weight_decay", default=0.05, type=float)
    opt.add_argument("--weight_decay_end", default=None, type=float)
    opt.add_argument("--lr", default=1.5e-4, type=float, help="base lr for a total batch of 256 clips")
    opt.add_argument("--unscale_lr", action="store_true", help="(new) --lr, --min_lr, --warmup_lr as given")
    opt.add_argument("--warmup_lr", default=1e-6, type=float)
    opt.add_argument("--min_lr", default=1e-5, type=float)
    opt.add_argument("--warmup_epochs", default=40, type=int)
    opt.add_argument("--warmup_steps", default=-1, type=int)

    data = parser.add_argument_group("data")
    data.add_argument("--data_path", default="", help="the list file")
    data.add_argument("--prefix", default="")
    data.add_argument("--split", default=" ")
    data.add_argument("--filename_tmpl", default="img_{:05}.jpg")
    _bool_flag(data, "--use_decord", True, "read videos with decord (PyAV fallback) rather than PyAV only")
    data.add_argument("--video_reader", default=None, choices=("auto", "decord", "pyav"), help="(new)")
    data.add_argument("--max_read_attempts", default=10, type=int, help="(new)")
    data.add_argument("--num_segments", default=1, type=int, help="!= 1: sparse sampling (one frame per segment)")
    data.add_argument("--num_frames", default=16, type=int)
    data.add_argument("--sampling_rate", default=4, type=int)
    data.add_argument("--num_sample", default=1, type=int, help="augmented clips per decoded video")
    _bool_flag(data, "--flip", False, "random horizontal flip")

    dist = parser.add_argument_group("distributed and precision")
    dist.add_argument("--dist_url", default="env://")
    dist.add_argument("--world_size", default=1, type=int, help="set by the launcher (accepted, not needed)")
    dist.add_argument("--local_rank", "--local-rank", default=0, type=int)
    dist.add_argument("--bf16", action="store_true")
    dist.add_argument("--no_amp", action="store_true")
    return accept_both_spellings(parser)


def teacher_weights_path(args: argparse.Namespace) -> str:
    """--clip_teacher_path, else the original's file under $VIDEOMAMBA_CHECKPOINTS/clip_visual_encoder/."""
    if args.clip_teacher_path:
        return args.clip_teacher_path
    folder = os.environ.get(TEACHER_PATH_ENV)
    file_name = TEACHER_FILES.get(args.clip_teacher)
    if not folder or not file_name:
        raise MissingFileError(
            f"the {args.clip_teacher} teacher needs weights: pass --clip_teacher_path FILE (CLIP visual.* keys) "
            f"or set ${TEACHER_PATH_ENV} to a folder holding clip_visual_encoder/{file_name or '<file>'}"
        )
    return os.path.join(folder, "clip_visual_encoder", file_name)


def build_teacher(args: argparse.Namespace) -> torch.nn.Module:
    """The frozen CLIP teacher, weights loaded strictly."""
    config = CLIP_CONFIGS[args.clip_teacher]
    if config.width != args.clip_teacher_embed_dim or config.output_dim != args.clip_output_dim:
        raise UserError(
            f"{args.clip_teacher} has width {config.width} and output {config.output_dim}; got "
            f"--clip_teacher_embed_dim {args.clip_teacher_embed_dim} --clip_output_dim {args.clip_output_dim}"
        )
    need_attention = args.clip_return_attn or args.mask_type == "attention"
    return build_clip_teacher(
        args.clip_teacher,
        checkpoint=teacher_weights_path(args),
        input_resolution=args.clip_input_resolution,
        return_layers=return_layers_from_interval(args.clip_return_layer, args.clip_return_interval),
        return_cls=args.clip_return_cls,
        return_attention=need_attention,
        ln_post=not (args.clip_targets_as_released and args.clip_return_cls),
        norm_type=args.clip_norm_type,
    )


def build_student(args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The masked student and the kwargs it was built with."""
    kwargs: dict[str, Any] = dict(
        num_frames=args.num_frames,
        tubelet_size=args.tubelet_size,
        img_size=args.input_size,
        drop_path_rate=args.drop_path,
        grad_checkpointing=args.grad_checkpointing,
        grad_checkpointing_blocks=args.grad_checkpointing_blocks,
        clip_output_dim=args.clip_output_dim,
        clip_norm_type=args.clip_norm_type,
        clip_return_layer=args.clip_return_layer,
        clip_student_return_interval=args.clip_student_return_interval,
        clip_student_features_as_released=args.clip_student_features_as_released,
    )
    kwargs.update(args.model_kwargs)
    print(f"Creating student: {args.model} {kwargs}")
    student = timm.create_model(args.model, pretrained=False, **kwargs)
    if args.clip_decoder_embed_dim is not None and args.clip_decoder_embed_dim != student.embed_dim:
        raise UserError(
            f"--clip_decoder_embed_dim {args.clip_decoder_embed_dim} must equal the width of {args.model} "
            f"({student.embed_dim}): the decoders read the student's tokens"
        )
    return student, kwargs


def check_alignment(args: argparse.Namespace, student: torch.nn.Module, teacher: torch.nn.Module) -> None:
    """Student and teacher must tokenise a clip into the same grid, or the targets cannot be matched."""
    if args.tubelet_size != 1:
        raise UserError(f"--tubelet_size {args.tubelet_size}: the CLIP teacher encodes single frames, use 1")
    student_grid = tuple(student.patch_embed.grid_size)
    if student_grid != (teacher.grid_size, teacher.grid_size):
        raise UserError(
            f"student patch grid {student_grid} (input {args.input_size}) differs from the teacher's "
            f"{teacher.grid_size}x{teacher.grid_size} (--clip_input_resolution {args.clip_input_resolution}, patch "
            f"{teacher.config.patch_size}); choose sizes with the same grid"
        )


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Pretrain; returns the last epoch's record. ``args`` is not modified."""
    args = copy.deepcopy(args)
    if args.video_reader is None:
        args.video_reader = "auto" if args.use_decord else "pyav"
    if args.data_path and not os.path.isfile(args.data_path):
        raise MissingFileError(f"--data_path {args.data_path}: the pretraining list file does not exist")
    with distributed_session(args.device, args.dist_url, seed=args.seed) as (dist_info, device):
        return _run(args, dist_info, device)


def _run(args: argparse.Namespace, dist_info: Any, device: torch.device) -> dict[str, Any]:
    print(json.dumps(plain_config(args), sort_keys=True))

    student, student_kwargs = build_student(args)
    teacher = build_teacher(args)
    check_alignment(args, student, teacher)
    if args.finetune:
        load_pretrained(student, args.finetune, strict=False)
    student.to(device)
    teacher.to(device)
    # The original's last feature skips the last mixer, whose parameters then get no gradient.
    model = wrap_ddp(student, device, find_unused_parameters=student.clip_student_features_as_released)

    dataset = build_pretraining_dataset(args)
    world, rank = dist_info.world_size, dist_info.rank
    sampler = (
        DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        if world > 1
        else RandomSampler(dataset)
    )
    loader = DataLoader(
        dataset,
        sampler=sampler,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=args.pin_mem and device.type == "cuda",
        drop_last=True,
        worker_init_fn=seed_worker,
        collate_fn=repeated_sample_collate if args.num_sample > 1 else None,
    )
    if len(loader) == 0:
        raise UserError(f"{len(dataset)} videos give no full batch of {args.batch_size} per process: lower it")

    total_batch = args.batch_size * world * args.num_sample
    factor = scale_lr(args.lr, total_batch, 256, args.unscale_lr)
    lr, min_lr, warmup_lr = args.lr * factor, args.min_lr * factor, args.warmup_lr * factor
    groups = param_groups(student, args.weight_decay)
    optimizer = build_optimizer(
        groups, args.opt, lr, args.weight_decay, args.momentum, eps=args.opt_eps, betas=args.opt_betas
    )
    # The original warmed up from 0 although it scaled and printed warmup_lr; we start from it.
    warmup_steps = args.warmup_steps if args.warmup_steps > 0 else None
    lr_values = cosine_schedule(lr, min_lr, args.epochs, len(loader), args.warmup_epochs, warmup_lr, warmup_steps)
    wd_end = args.weight_decay if args.weight_decay_end is None else args.weight_decay_end
    wd_values = cosine_schedule(args.weight_decay, wd_end, args.epochs, len(loader))
    use_amp, dtype, precision = resolve_precision(device, not args.no_amp, args.bf16)
    gradient_step = GradientStep(device, fp16_scaling=use_amp and dtype == torch.float16)

    state = TrainingState(
        student,
        optimizer,
        grad_step=gradient_step,
        extra=model_description(args.model, student_kwargs, args),
    )
    life = Lifecycle.from_args(
        args,
        state,
        args.save_ckpt_freq,
        samplers=(loader.sampler,),
        steps_per_epoch=len(loader),
        tensorboard_dir=args.log_dir,
    )
    life.resume()
    options = pretrain.PretrainOptions(
        device=device,
        mask_type=args.mask_type,
        mask_ratio=args.mask_ratio,
        clip_loss_type=args.clip_loss_type,
        clip_loss_ratio=args.clip_loss_ratio,
        clip_input_resolution=args.clip_input_resolution,
        amp=use_amp,
        amp_dtype=dtype,
        clip_grad=args.clip_grad,
        print_freq=args.print_freq,
        lr_values=lr_values,
        wd_values=wd_values,
    )
    life.log.write_config(dict(plain_config(args), world_size=world, scaled_lr=lr, precision=precision))

    def train_epoch(epoch: int) -> dict[str, float]:
        return pretrain.train_one_epoch(model, teacher, loader, optimizer, epoch, gradient_step, options, life.log)

    return life.fit(train_epoch)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("VideoMamba masked pretraining", parents=[get_args_parser()])
    main(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(cli))
