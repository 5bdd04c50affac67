"""What every command line of the code base shares: user errors as one line, progress lines.

A mistake in what the user gave (a missing file, a malformed list, an unknown model, flags that do
not go together) raises :class:`UserError` (or a subclass); :func:`run_cli` wraps each entry point
and turns it into one line ``error: <message>`` on stderr and exit code 2, as argparse does for bad
flags. Any other exception is a bug and keeps its traceback. ``VIDEOMAMBA_DEBUG=1`` (or ``--debug``
anywhere on the command line) shows the traceback of user errors too.
"""

from __future__ import annotations

import difflib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

__all__ = [
    "DEBUG_ENV",
    "MissingFileError",
    "Progress",
    "UserError",
    "create_model",
    "progress",
    "registered_model",
    "run_cli",
    "unknown_model_error",
]

DEBUG_ENV = "VIDEOMAMBA_DEBUG"
T = TypeVar("T")


class UserError(ValueError):
    """Bad input from the user; the message alone (naming the file or flag) says what to fix."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist; the message says where it was looked for."""


def _debug_requested(argv: list[str]) -> bool:
    return os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no") or "--debug" in argv


def run_cli(entry: Callable[[], Any], argv: list[str] | None = None) -> int:
    """Run ``entry()``; a :class:`UserError` becomes ``error: ...`` on stderr and exit code 2.

    ``--debug`` is taken out of ``sys.argv`` (so the entry point's parser never sees it) and
    shows the traceback of user errors as well.
    """
    argv = sys.argv if argv is None else argv
    debug = _debug_requested(argv)
    while "--debug" in argv:
        argv.remove("--debug")
    try:
        code = entry()
    except UserError as err:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {str(err).strip()}\n")
        sys.stderr.flush()
        return 2
    # Entry points return an exit code, or a result (video_mm's metrics, the demo's folder) meaning success.
    return code if isinstance(code, int) else 0


# ------------------------------------------------------------------------------- models


def unknown_model_error(name: str, flag: str = "--model") -> UserError:
    """A UserError for a model name timm does not know, with the closest registered names."""
    import timm

    registered = timm.list_models()
    close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    videomamba_names = ", ".join(m for m in registered if m.startswith("videomamba_"))
    subject = f"{flag} {name}" if flag else name
    return UserError(
        f"{subject}: unknown model{hint} (VideoMamba models: {videomamba_names}; "
        "any timm model name works where the task allows it)"
    )


def registered_model(name: str) -> str:
    """argparse ``type=`` for model flags: the name if timm knows it, else the closest registered names."""
    import argparse

    import timm

    import videomamba.core.backbone  # noqa: F401  (registers the VideoMamba models)

    if not timm.is_model(name):
        raise argparse.ArgumentTypeError(str(unknown_model_error(name, "")).strip())
    return name


def create_model(name: str, flag: str = "--model", **kwargs: Any) -> Any:
    """``timm.create_model(name, **kwargs)``; an unknown name is a UserError with suggestions."""
    import timm

    import videomamba.core.backbone  # noqa: F401  (registers the VideoMamba models)

    if not timm.is_model(name):
        raise unknown_model_error(name, flag)
    return timm.create_model(name, **kwargs)


# ----------------------------------------------------------------------------- progress


class Progress:
    """Prints ``<what>: done/total (pct) rate/s, ETA m:ss`` at most every ``every`` seconds, and at the end."""

    def __init__(
        self, total: int | None, what: str, unit: str = "items", every: float = 10.0, stream: TextIO | None = None
    ):
        self.total, self.what, self.unit, self.every = total, what, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = self.last = time.monotonic()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta = f"{int(left // 60)}:{int(left % 60):02d}" if left != float("inf") else "?"
            return (
                f"{self.what}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f} %), "
                f"{rate:.1f} {self.unit}/s, ETA {eta}"
            )
        return f"{self.what}: {self.done} {self.unit}, {rate:.1f} {self.unit}/s, {elapsed:.0f} s"

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def finish(self) -> None:
        """The final line, printed only when the work took longer than one reporting interval."""
        if time.monotonic() - self.start >= self.every:
            self.stream.write(self.line().split(", ETA")[0] + ", done\n")
            self.stream.flush()


def progress(
    items: Iterable[T], what: str, total: int | None = None, unit: str = "items", every: float = 10.0
) -> Iterator[T]:
    """Iterate ``items`` printing a progress line (rate and ETA) to stderr every ``every`` seconds."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    meter = Progress(total, what, unit, every)
    for item in items:
        yield item
        meter.update()
    meter.finish()
