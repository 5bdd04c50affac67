"""Reading the plain-text list files the tasks share (image meta lists, video lists, label files).

Lists are UTF-8; a leading byte-order mark (spreadsheets and Windows editors write one) is dropped
instead of becoming part of the first path, and a line that is not UTF-8 is an error naming the
file, the line and the offending byte, instead of a bare ``UnicodeDecodeError``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from videomamba.core.cli import MissingFileError, Progress, UserError

__all__ = ["looks_like_an_extra_column", "read_list_lines"]

BOM = b"\xef\xbb\xbf"
_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?")


def read_list_lines(
    path: str | os.PathLike, what: str = "list file", skip_comments: bool = True
) -> Iterator[tuple[int, str]]:
    """Yield (line number, stripped text) of each non-blank line (and, by default, non-``#`` line)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: {what} not found")
    meter = Progress(None, f"reading {path}", unit="lines")  # prints only when reading is slow
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            meter.update()
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    f"save the {what} as UTF-8"
                ) from None
            line = text.strip()
            if not line or (skip_comments and line.startswith("#")):
                continue
            yield number, line
    meter.finish()


def looks_like_an_extra_column(path_field: str, delimiter: str | None, full_path: str) -> bool:
    """True when a path parsed from a list line ends in ``<delimiter><number>`` and no such file exists.

    Lists are split from the right so that paths may hold the delimiter; a line with one column too
    many then yields a path like ``video.mp4 3``, which is much more likely a stray column.
    """
    parts = path_field.rsplit(delimiter, 1) if delimiter and delimiter.strip() else path_field.rsplit(None, 1)
    if len(parts) != 2 or not _NUMBER.fullmatch(parts[1].strip()):
        return False
    return not os.path.exists(full_path)
