"""Image datasets and transforms: ImageNet (meta list or class folders), CIFAR-100, iNaturalist.

- ImageNet meta list (``--meta_file_*`` under ``--root_dir_*``): one ``<relative path> <label>``
  per line, e.g. ``n01440764/n01440764_10026.JPEG 0``; blank lines and ``#`` comments are
  skipped; a malformed line raises an error naming the file and line number.
- ImageNet class folders (no meta file): ``<root>/<class name>/<image>``, classes sorted by name,
  with ``--root_dir_*`` or ``<--data-path>/train`` and ``<--data-path>/val``.
- CIFAR-100: the python-pickle release under ``<--data-path>/cifar-100-python/{train,test}``
  (the layout torchvision downloads). The pickles are read by an unpickler that builds only
  builtin containers and numpy arrays, so a crafted data file cannot run code.
- iNaturalist 2018/2019: ``train{year}.json`` / ``val{year}.json`` (COCO-style images and
  annotations) and ``categories.json`` under ``--data-path``; labels are the ``--inat-category``
  level, numbered in order of first appearance in the train annotations.

An unreadable image is logged with its path, counted, and replaced by another sample; after
``max_retries`` failures in a row the loader raises instead of looping forever.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import random
from pathlib import Path
from typing import Any

from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from videomamba.core.cli import MissingFileError, UserError, progress
from videomamba.core.text_lists import looks_like_an_extra_column, read_list_lines
from videomamba.image_sm.augment import keep_posterize_bits, three_augment

__all__ = [
    "Cifar100",
    "ImageFolderDataset",
    "ImageListDataset",
    "INatDataset",
    "build_dataset",
    "build_transform",
    "read_meta_file",
]

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
INAT_CATEGORIES = ("kingdom", "phylum", "class", "order", "supercategory", "family", "genus", "name")


def read_meta_file(
    meta_file: str | os.PathLike, num_classes: int | None = None, root: str | os.PathLike = ""
) -> list[tuple[str, int]]:
    """Parse ``<relative path> <integer label>`` lines (paths may contain spaces; UTF-8, BOM allowed)."""
    samples = []
    for lineno, line in read_list_lines(meta_file, "meta file"):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{meta_file}:{lineno}: expected '<relative path> <integer label>', got {line!r}")
        if looks_like_an_extra_column(parts[0], None, os.path.join(root, parts[0])):
            raise UserError(
                f"{meta_file}:{lineno}: {len(line.split())} columns, expected 2 ('<relative path> <integer label>'), "
                f"got {line!r}"
            )
        label = int(parts[1])
        if label < 0 or (num_classes is not None and label >= num_classes):
            limit = f" (the model has {num_classes} classes)" if num_classes is not None else ""
            raise UserError(f"{meta_file}:{lineno}: label {label} out of range{limit}")
        samples.append((parts[0], label))
    if not samples:
        raise UserError(f"{meta_file}: no samples")
    return samples


class RobustImageDataset(Dataset):
    """Base class: ``samples`` of (path, label); unreadable images are replaced, within bounds."""

    max_retries = 10

    def __init__(self, samples: list[tuple[str, int]], transform: Any = None):
        self.samples = samples
        self.transform = transform
        self.num_failed = 0

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, path: str) -> Image.Image:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            return image.convert("RGB")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        failures = []
        for attempt in range(self.max_retries + 1):
            path, label = self.samples[index]
            try:
                image = self.load_image(path)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                self.num_failed += 1
                failures.append(f"{path} ({err})")
                logger.warning(
                    "unreadable image %s (%s); replaced by another sample (%d unreadable so far in this worker)",
                    path,
                    err,
                    self.num_failed,
                )
                # A deterministic replacement keeps epochs reproducible.
                index = random.Random(index * 1000003 + attempt).randrange(len(self.samples))
                continue
            return (self.transform(image) if self.transform is not None else image), label
        raise RuntimeError(f"{self.max_retries + 1} unreadable images in a row, giving up: " + "; ".join(failures))


class ImageListDataset(RobustImageDataset):
    """ImageNet-style meta list: paths relative to ``root`` with integer labels."""

    def __init__(
        self,
        root: str | os.PathLike,
        meta_file: str | os.PathLike,
        transform: Any = None,
        num_classes: int | None = None,
    ):
        entries = read_meta_file(meta_file, num_classes, root)
        super().__init__([(os.path.join(root, rel), label) for rel, label in entries], transform)
        self.root, self.meta_file = str(root), str(meta_file)


class ImageFolderDataset(RobustImageDataset):
    """``root/<class>/<image>`` trees; class indices follow sorted class names."""

    def __init__(self, root: str | os.PathLike, transform: Any = None):
        root = Path(root)
        if not root.is_dir():
            raise MissingFileError(f"{root}: image folder not found")
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not self.classes:
            raise UserError(f"{root}: no class sub-folders")
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        samples = [
            (str(path), self.class_to_idx[name])
            for name in progress(self.classes, f"scanning {root}", unit="class folders")
            for path in sorted((root / name).rglob("*"))
            if path.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not samples:
            raise UserError(f"{root}: no images with extensions {IMAGE_EXTENSIONS}")
        super().__init__(samples, transform)


class DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles builtin containers, numbers, strings and numpy arrays; any other global is refused.

    A pickle can call any importable function while it loads; the data files of a dataset only
    need numpy's array reconstruction, so nothing else is allowed to run.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays in pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes in protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only builtin data and numpy arrays are allowed")


def load_data_pickle(path: str | os.PathLike) -> Any:
    """A dataset pickle (e.g. CIFAR's) read without executing code; errors name the file."""
    try:
        with open(path, "rb") as handle:
            return DataOnlyUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise UserError(f"{path}: not a plain-data pickle ({err})") from err


class Cifar100(Dataset):
    """CIFAR-100 from its python-pickle files (no download, no checksum: clear errors instead)."""

    def __init__(self, root: str | os.PathLike, train: bool, transform: Any = None):
        path = Path(root) / "cifar-100-python" / ("train" if train else "test")
        if not path.is_file():
            raise MissingFileError(
                f"{path}: CIFAR-100 not found (expected the python version, as torchvision's CIFAR100 downloads it)"
            )
        batch = load_data_pickle(path)
        try:
            self.data = batch["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            self.targets = [int(t) for t in batch["fine_labels"]]
        except (KeyError, ValueError, AttributeError, TypeError) as err:
            raise UserError(f"{path}: not a CIFAR-100 batch ({err})") from err
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.data[index])
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


class INatDataset(RobustImageDataset):
    """iNaturalist 2018/2019 with labels at a chosen taxonomy level."""

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        year: int = 2018,
        category: str = "name",
        transform: Any = None,
    ):
        if category not in INAT_CATEGORIES:
            raise UserError(f"inat category must be one of {INAT_CATEGORIES}, got {category!r}")
        root = Path(root)
        categories = _read_json(root / "categories.json")
        by_id = {int(c["id"]): c for c in categories} if isinstance(categories, list) else {}

        def level_of(category_id: int, source: Path) -> str:
            if category_id not in by_id or category not in by_id[category_id]:
                raise UserError(f"{source}: category id {category_id} has no '{category}' in categories.json")
            return str(by_id[category_id][category])

        # Class ids follow first appearance in the train annotations, for both splits.
        train_file = root / f"train{year}.json"
        class_ids: dict[str, int] = {}
        for ann in _read_json(train_file).get("annotations", []):
            class_ids.setdefault(level_of(int(ann["category_id"]), train_file), len(class_ids))
        self.nb_classes = len(class_ids)

        split_file = root / f"{'train' if train else 'val'}{year}.json"
        split = _read_json(split_file)
        label_of_image = {int(a["image_id"]): int(a["category_id"]) for a in split.get("annotations", [])}
        samples = []
        for image in split.get("images", []):
            if int(image["id"]) not in label_of_image:
                raise UserError(f"{split_file}: image {image['id']} has no annotation")
            name = level_of(label_of_image[int(image["id"])], split_file)
            if name not in class_ids:
                raise UserError(f"{split_file}: class {name!r} does not occur in {train_file}")
            samples.append((str(root / image["file_name"]), class_ids[name]))
        if not samples:
            raise UserError(f"{split_file}: no images")
        super().__init__(samples, transform)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise MissingFileError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})") from None


# ------------------------------------------------------------------------------ transforms


def _native_tiny_images(args: argparse.Namespace) -> bool:
    """CIFAR at an input size of 32 or less: its images are used as they are (no resizing), as in DeiT.
    Other data sets are resized at every input size, so folders of images of any size work at 32."""
    return args.input_size <= 32 and getattr(args, "data_set", "IMNET") == "CIFAR"


def build_transform(is_train: bool, args: argparse.Namespace) -> Any:
    """timm training transform (or 3-Augment) / resize + centre-crop evaluation transform."""
    size = args.input_size
    if is_train:
        if args.ThreeAugment:
            return three_augment(size, args.color_jitter, simple_random_crop=args.src)
        keep_posterize_bits()
        transform = create_transform(
            input_size=size,
            is_training=True,
            color_jitter=args.color_jitter,
            auto_augment=None if args.aa in (None, "", "none") else args.aa,
            interpolation=args.train_interpolation,
            re_prob=args.reprob,
            re_mode=args.remode,
            re_count=args.recount,
        )
        if _native_tiny_images(args):
            # CIFAR's 32x32 images: a padded random crop instead of RandomResizedCrop.
            transform.transforms[0] = transforms.RandomCrop(size, padding=4)
        return transform
    steps = []
    if not _native_tiny_images(args):
        steps.append(transforms.Resize(int(size / args.eval_crop_ratio), interpolation=InterpolationMode.BICUBIC))
    steps += [
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    ]
    return transforms.Compose(steps)


def _check_nb_classes(forced: int | None, found: int, what: str) -> None:
    """Refuse at build time a --nb_classes smaller than the data's classes (the loss would fail mid-step)."""
    if forced and forced < found:
        raise UserError(f"{what} but --nb_classes {forced}; raise --nb_classes to at least {found}")


def build_dataset(is_train: bool, args: argparse.Namespace) -> tuple[Dataset, int]:
    """The dataset of one split and its number of classes (``--nb_classes`` overrides it)."""
    transform = build_transform(is_train, args)
    split = "train" if is_train else "val"
    forced = getattr(args, "nb_classes", None)
    if args.data_set == "IMNET":
        root = args.root_dir_train if is_train else args.root_dir_val
        meta = args.meta_file_train if is_train else args.meta_file_val
        if meta:
            nb_classes = forced or 1000
            return ImageListDataset(root or "", meta, transform, num_classes=nb_classes), nb_classes
        folder = root or (os.path.join(args.data_path, split) if args.data_path else None)
        if not folder:
            raise UserError(
                f"IMNET {split} data: give --meta_file_{split} (+ --root_dir_{split}), "
                f"--root_dir_{split} (class folders) or --data-path with {split}/ inside"
            )
        dataset = ImageFolderDataset(folder, transform)
        shown = ", ".join(dataset.classes[:8]) + (", ..." if len(dataset.classes) > 8 else "")
        _check_nb_classes(forced, len(dataset.classes), f"{folder}: {len(dataset.classes)} class folders ({shown})")
        return dataset, forced or len(dataset.classes)
    if args.data_set == "CIFAR":
        dataset = Cifar100(args.data_path, train=is_train, transform=transform)
        _check_nb_classes(forced, 100, f"{args.data_path}: CIFAR-100 has 100 classes")
        return dataset, forced or 100
    if args.data_set in ("INAT", "INAT19"):
        year = 2018 if args.data_set == "INAT" else 2019
        dataset = INatDataset(
            args.data_path, train=is_train, year=year, category=args.inat_category, transform=transform
        )
        _check_nb_classes(forced, dataset.nb_classes, f"{args.data_path}: {dataset.nb_classes} iNaturalist classes")
        return dataset, forced or dataset.nb_classes
    raise UserError(f"unknown --data-set {args.data_set!r} (choose CIFAR, IMNET, INAT, INAT19)")
