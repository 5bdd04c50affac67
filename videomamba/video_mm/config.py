"""Experiment configs: Python files with ``_base_`` inheritance and dotted command-line overrides.

A config file is a Python module whose top-level names are the config (``lr = 1e-4``,
``model = dict(...)``); imports, functions, classes and names starting with ``_`` are left out.
``_base_`` (a path or a list of paths, relative to the file) names the files it inherits from:
they are merged in order, then the file itself on top (dicts merge key by key, everything else is
replaced). YAML and JSON files work the same way, so a run's saved ``config.yaml`` loads back.

String values may refer to other keys with OmegaConf interpolation (``"${data_dir}/anno"``,
``"${available_corpus.${train_corpus}}"``); they are resolved after the command-line overrides, so
overriding ``data_dir`` moves every path built from it. Unlike the original's config system, nothing
is ``eval``-ed: overrides are read with `ast.literal_eval` (a value that is not a Python literal
stays a string), every overridden key must already exist, and its value must fit the type the key
has (ints for ints, bools for bools, ...). The result is an OmegaConf ``DictConfig`` in struct
mode, so reading a misspelt key is an error too.
"""

from __future__ import annotations

import ast
import difflib
import runpy
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from videomamba.core.backbone import LEGACY_MODEL_KWARGS, rename_legacy_model_kwargs
from videomamba.core.cli import UserError

__all__ = [
    "ConfigError",
    "apply_overrides",
    "load_config",
    "load_config_file",
    "parse_overrides",
    "resolve_package_path",
    "save_config",
]

PACKAGE_DIR = Path(__file__).resolve().parent
BASE_KEY = "_base_"
CONFIG_SUFFIXES = (".py", ".yaml", ".yml", ".json")
_ABSENT = object()


class ConfigError(UserError):
    """A config file or override that cannot be used; the message names the file or key."""


def _read_python(path: Path) -> dict[str, Any]:
    try:
        namespace = runpy.run_path(str(path))
    except Exception as error:
        raise ConfigError(f"{path}: cannot execute config file: {type(error).__name__}: {error}") from error
    values = {}
    for name, value in namespace.items():
        if name.startswith("_") and name != BASE_KEY:
            continue
        if isinstance(value, ModuleType | type) or callable(value):
            continue
        values[name] = value
    return values


def _read_file(path: Path) -> dict[str, Any]:
    if path.suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"{path}: config files must end in one of {CONFIG_SUFFIXES}")
    if path.suffix == ".py":
        return _read_python(path)
    try:
        loaded = OmegaConf.load(path)
    except Exception as error:
        raise ConfigError(f"{path}: cannot parse config file: {error}") from error
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: a config file must hold a mapping, not a list")
    return OmegaConf.to_container(loaded, resolve=False)


VISION_SECTION = "model.vision_encoder"


def with_current_names(values: dict[str, Any]) -> dict[str, Any]:
    """Config values (plain containers) with the original's vision-encoder argument names
    (``kernel_size``, ``use_checkpoint``, ``checkpoint_num``, ...) replaced by ours."""
    model = values.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("vision_encoder"), Mapping):
        values = {**values, "model": {**model, "vision_encoder": rename_legacy_model_kwargs(model["vision_encoder"])}}
    return values


def load_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> DictConfig:
    """One config file merged over its ``_base_`` files (recursively); interpolations left unresolved."""
    path = Path(path).resolve()
    if not path.is_file():
        where = f" (a _base_ of {_chain[-1]})" if _chain else ""
        raise ConfigError(f"{path}: config file not found{where}")
    if path in _chain:
        raise ConfigError(f"{path}: circular _base_ chain: {' -> '.join(str(p) for p in (*_chain, path))}")
    values = with_current_names(_read_file(path))
    bases = values.pop(BASE_KEY, [])
    if isinstance(bases, str | Path):
        bases = [bases]
    merged = OmegaConf.create()
    for base in bases:
        merged = OmegaConf.merge(merged, load_config_file(path.parent / base, (*_chain, path)))
    try:
        own = OmegaConf.create(values)
    except Exception as error:
        raise ConfigError(f"{path}: values must be plain Python data (dict, list, str, numbers): {error}") from error
    return OmegaConf.merge(merged, own)


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def parse_overrides(arguments: Sequence[str]) -> list[tuple[str, Any, str]]:
    """``key value key value ...`` -> [(key, parsed value, original text)]."""
    if len(arguments) % 2:
        raise ConfigError(
            f"overrides come in `key value` pairs; '{arguments[-1]}' has no value "
            f"(got {len(arguments)} arguments: {' '.join(arguments)})"
        )
    pairs = []
    for key, text in zip(arguments[::2], arguments[1::2], strict=True):
        key = key.lstrip("-")
        if not key:
            raise ConfigError(f"empty override key before value {text!r}")
        pairs.append((key, _parse_value(text), text))
    return pairs


def _all_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, DictConfig):
        return []
    keys = []
    for name in node.keys():
        full = f"{prefix}{name}"
        keys.append(full)
        keys += _all_keys(node._get_node(name), f"{full}.")
    return keys


def _fit_type(key: str, current: Any, value: Any, text: str) -> Any:
    """The override value converted to the existing key's type, or a ConfigError naming the key."""
    if current is None or value is None:
        return value
    if isinstance(current, DictConfig | Mapping):
        if isinstance(value, Mapping):
            return value
    elif isinstance(current, ListConfig | list | tuple):
        if isinstance(value, list | tuple):
            return list(value)
    elif isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(current, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(current, str):
        # A path like `123` or `None_dir` is still meant as text.
        return value if isinstance(value, str) else text
    else:
        return value
    raise ConfigError(f"override {key}={text!r}: expected {type(current).__name__} like the config's {current!r}")


def apply_overrides(config: DictConfig, overrides: Sequence[tuple[str, Any, str]]) -> DictConfig:
    """Set existing dotted keys; an unknown key is an error that names it (and close matches)."""
    for key, value, text in overrides:
        section, _, name = key.rpartition(".")
        if section == VISION_SECTION and name in LEGACY_MODEL_KWARGS:
            key = f"{section}.{LEGACY_MODEL_KWARGS[name]}"
        current = OmegaConf.select(config, key, default=_ABSENT, throw_on_resolution_failure=False)
        if current is _ABSENT:
            close = difflib.get_close_matches(key, _all_keys(config), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key '{key}' in the overrides{hint}")
        if isinstance(current, DictConfig | ListConfig):
            current = OmegaConf.to_container(current, resolve=False)
        OmegaConf.update(config, key, _fit_type(key, current, value, text), merge=False, force_add=False)
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a config file, apply ``key value`` overrides, resolve interpolations; struct mode on."""
    config = load_config_file(path)
    apply_overrides(config, parse_overrides(list(overrides)))
    try:
        OmegaConf.resolve(config)
    except Exception as error:
        raise ConfigError(f"{path}: cannot resolve an interpolation: {error}") from error
    OmegaConf.set_struct(config, True)
    return config


def save_config(config: DictConfig, output_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the merged, resolved config (loadable again with `load_config`)."""
    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, path, resolve=True)
    return path


def resolve_package_path(path: str | Path) -> Path:
    """A file path as given if it exists, else relative to the video_mm package (``configs/config_bert.json``)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    return PACKAGE_DIR / path
