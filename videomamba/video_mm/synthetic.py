"""A tiny synthetic video-text data set, laid out like the real corpora, for tests and smoke runs on CPU.

Each video shows a coloured square moving up or down over a noisy background; its captions name the
colour and the direction ("a red square moving up"). Eight classes (four colours, two directions),
so a small model learns them in seconds, and vertical motion survives horizontal flips. Images are
still squares ("a photo of a blue square").

`make_synthetic_data(root)` writes, under `root`:
- ``media/videos/*.mp4`` (PyAV, lossless H.264 when available) and ``media/images/*.png``; every
  media folder the corpus registry names (``media/webvid``, ``media/msrvtt``, ``media/cc3m``, ...)
  is a symbolic link to one of them;
- ``anno_pretrain/{webvid_train,webvid10m_train,cc3m_train,...}.json`` and
  ``anno_downstream/{msrvtt_ret_test1k,didemo_ret_val,...,msrvtt_mc_test,msrvtt_qa_*}.json`` in
  the formats of `videomamba.video_mm.data.datasets`;
- ``checkpoints/bert-base-uncased/{vocab.txt,config.json}``: a tiny BERT (no weights);
so that ``data_dir <root> model_dir <root>/checkpoints`` plus `tiny_overrides` run any of the
experiment configs. Command line: ``python -m videomamba.video_mm.synthetic OUT_DIR`` prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

import numpy as np

__all__ = ["CAPTION_TEMPLATES", "COLOURS", "DIRECTIONS", "make_synthetic_data", "tiny_overrides", "write_tiny_bert"]

COLOURS = {"red": (230, 40, 40), "green": (40, 210, 60), "blue": (40, 80, 240), "yellow": (235, 215, 30)}
DIRECTIONS = ("up", "down")
CAPTION_TEMPLATES = ("a {colour} square moving {direction}", "the {colour} block goes {direction}")
IMAGE_TEMPLATE = "a photo of a {colour} square"
QUESTIONS = {"colour": "what colour is the square", "direction": "where does the square go"}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
WORDS = (
    "a", "the", "square", "block", "moving", "goes", "photo", "of", "what", "colour", "is", "where", "does", "go",
    *COLOURS, *DIRECTIONS,
)  # fmt: skip
PRETRAIN_VIDEO_ANNOTATIONS = ("webvid_train", "webvid10m_train")
PRETRAIN_IMAGE_ANNOTATIONS = ("cc3m_train", "cc12m_train", "sbu", "vg", "coco")
IMAGE_FOLDERS = ("cc3m", "cc12m", "sbu", "vg", "coco")
VIDEO_FOLDERS = ("webvid", "webvid_10m", "msrvtt", "didemo", "activitynet", "lsmdc", "msvd")
RETRIEVAL_TRAIN = ("msrvtt_ret_train9k", "didemo_ret_train", "anet_ret_train", "lsmdc_ret_train", "msvd_ret_train")
RETRIEVAL_TEST = (
    "msrvtt_test1k", "msrvtt_ret_test1k", "didemo_ret_val", "didemo_ret_test", "anet_ret_val",
    "lsmdc_ret_test_1000", "msvd_ret_test",
)  # fmt: skip


def _classes() -> list[tuple[str, str]]:
    return [(colour, direction) for colour in COLOURS for direction in DIRECTIONS]


def square_frames(
    colour: str, direction: str, rng: np.random.Generator, size: int = 32, num_frames: int = 8
) -> np.ndarray:
    """uint8 (T, size, size, 3): a square of `colour` crossing the frame vertically in `direction`."""
    side = size // 2
    left = int(rng.integers(0, size - side + 1))
    travel = size - side
    frames = []
    for t in range(num_frames):
        progress = t / max(num_frames - 1, 1)
        top = round(travel * (1 - progress if direction == "up" else progress))
        frame = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        frame[top : top + side, left : left + side] = COLOURS[colour]
        frames.append(frame)
    return np.stack(frames)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8) -> None:
    import av

    with av.open(str(path), "w") as container:
        try:
            stream = container.add_stream("libx264rgb", rate=fps)
            stream.pix_fmt, stream.options = "rgb24", {"qp": "0"}
        except (av.error.FFmpegError, ValueError):  # an ffmpeg without x264
            stream = container.add_stream("mpeg4", rate=fps)
            stream.pix_fmt, stream.options = "yuv420p", {"qscale": "1"}
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_tiny_bert(folder: str | Path, hidden: int = 32, layers: int = 3, fusion_layer: int = 2) -> Path:
    """A tokenizer vocabulary for the synthetic captions and a tiny BERT config.json (no weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join((*SPECIAL_TOKENS, *WORDS)) + "\n", encoding="utf-8")
    config = dict(
        model_type="bert",
        vocab_size=len(SPECIAL_TOKENS) + len(WORDS),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12,
        # A tiny random BERT needs larger weights than 0.02 for its [CLS] output to depend on the words.
        initializer_range=0.2,
        pad_token_id=0,
        fusion_layer=fusion_layer,
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def _dump(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")


def _link(link: Path, target: str) -> None:
    if not link.exists():
        os.symlink(target, link, target_is_directory=True)


def make_synthetic_data(
    root: str | Path,
    train_per_class: int = 4,
    test_per_class: int = 1,
    size: int = 32,
    num_frames: int = 8,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the data set (see the module notes); returns the main paths."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    videos, images = root / "media" / "videos", root / "media" / "images"
    videos.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    train, test = [], []
    for split, per_class, entries in (("train", train_per_class, train), ("test", test_per_class, test)):
        for colour, direction in _classes():
            for copy in range(per_class):
                name = f"{split}_{colour}_{direction}_{copy}.mp4"
                write_video(videos / name, square_frames(colour, direction, rng, size, num_frames))
                entries.append((name, colour, direction))
    image_entries = []
    for colour in COLOURS:
        for copy in range(train_per_class):
            name = f"{colour}_{copy}.png"
            Image.fromarray(square_frames(colour, "up", rng, size, 1)[0]).save(images / name)
            image_entries.append({"image": name, "caption": IMAGE_TEMPLATE.format(colour=colour)})

    def captions(colour: str, direction: str) -> list[str]:
        return [template.format(colour=colour, direction=direction) for template in CAPTION_TEMPLATES]

    pretrain_videos = [
        {"video": name, "caption": captions(c, d)[i % len(CAPTION_TEMPLATES)]} for i, (name, c, d) in enumerate(train)
    ]
    retrieval_train = [{"video": name, "caption": captions(c, d)} for name, c, d in train]
    retrieval_test = [{"video": name, "caption": captions(c, d)[0]} for name, c, d in test]
    classes = _classes()
    multiple_choice = []
    for index, (name, colour, direction) in enumerate(test):
        wrong = [cls for cls in classes if cls != (colour, direction)]
        options = [captions(*cls)[0] for cls in (wrong[index % len(wrong) :] + wrong)[:4]]
        answer = index % 5
        options.insert(answer, captions(colour, direction)[0])
        multiple_choice.append({"video": name, "caption": options, "answer": answer})

    def qa(entries: list[tuple[str, str, str]], offset: int) -> list[dict]:
        questions = []
        for name, colour, direction in entries:
            for kind, answer in (("colour", colour), ("direction", direction)):
                questions.append(
                    {
                        "video": name,
                        "question": QUESTIONS[kind],
                        "answer": answer,
                        "question_id": offset + len(questions),
                    }
                )
        return questions

    anno_pt, anno_ds = root / "anno_pretrain", root / "anno_downstream"
    for name in PRETRAIN_VIDEO_ANNOTATIONS:
        _dump(anno_pt / f"{name}.json", pretrain_videos)
    for name in PRETRAIN_IMAGE_ANNOTATIONS:
        _dump(anno_pt / f"{name}.json", image_entries)
    for name in RETRIEVAL_TRAIN:
        _dump(anno_ds / f"{name}.json", retrieval_train)
    for name in RETRIEVAL_TEST:
        _dump(anno_ds / f"{name}.json", retrieval_test)
    _dump(anno_ds / "msrvtt_mc_test.json", multiple_choice)
    _dump(anno_ds / "msrvtt_qa_train.json", qa(train, 0))
    for name in ("msrvtt_qa_val", "msrvtt_qa_test"):
        _dump(anno_ds / f"{name}.json", qa(test, 100000))
    _dump(anno_ds / "msrvtt_qa_answer_list.json", [*COLOURS, *DIRECTIONS])
    for folder in VIDEO_FOLDERS:
        _link(root / "media" / folder, "videos")
    for folder in IMAGE_FOLDERS:
        _link(root / "media" / folder, "images")
    bert = write_tiny_bert(root / "checkpoints" / "bert-base-uncased")
    return dict(root=root, videos=videos, images=images, bert=bert, checkpoints=root / "checkpoints")


def tiny_overrides(root: str | Path) -> list[str]:
    """Command-line overrides that shrink any experiment config to a CPU-sized model on this data."""
    root = Path(root)
    bert = root / "checkpoints" / "bert-base-uncased"
    values = {
        "data_dir": str(root),
        "model_dir": str(root / "checkpoints"),
        "device": "cpu",
        "fp16": "False",
        "bf16": "False",
        "gradient_checkpointing": "False",
        "num_workers": "0",
        "num_frames": "4",
        "num_frames_test": "4",
        "batch_size": "8",
        "batch_size_test": "8",
        "inputs.image_res": "32",
        "model.vision_encoder.img_size": "32",
        "model.vision_encoder.patch_size": "8",
        "model.vision_encoder.depth": "2",
        "model.vision_encoder.embed_dim": "32",
        "model.vision_encoder.drop_path_rate": "0.0",
        "model.vision_encoder.pretrained": "",
        "model.vision_encoder.clip_teacher": "clip_test_tiny",
        "model.vision_encoder.clip_teacher_checkpoint": "",
        "model.vision_encoder.clip_img_size": "32",
        "model.vision_encoder.clip_output_dim": "16",
        "model.text_encoder.config": str(bert / "config.json"),
        "model.text_encoder.fusion_layer": "2",
        "model.embed_dim": "16",
        "evaluation.k_test": "4",
    }
    return [item for pair in values.items() for item in pair]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="folder to write the data set into")
    parser.add_argument("--train_per_class", type=int, default=4)
    parser.add_argument("--test_per_class", type=int, default=1)
    args = parser.parse_args()
    paths = make_synthetic_data(args.output_dir, args.train_per_class, args.test_per_class)
    print(f"wrote the synthetic video-text data set to {paths['root']}; run an experiment on it with:")
    overrides = shlex.join(tiny_overrides(paths["root"]))
    print(f"  GPUS=1 bash videomamba/video_mm/exp_pt/videomamba_middle_5m/run.sh {overrides}")


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
