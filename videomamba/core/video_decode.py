"""Video decoding behind one small interface, and what a dataset does when a video cannot be read.

Readers (`open_video`):
- ``decord`` (default, as the original release) with a PyAV fallback: a file decord cannot open or
  decode is retried with PyAV before it is declared unreadable;
- ``pyav`` alone;
- ``frames``: a folder of images, either named by a template (``img_{:05}.jpg``, 1-indexed, as SSv2
  raw frames) or any image files sorted naturally (``img_2.jpg`` before ``img_10.jpg``);
- ``gif`` through Pillow.
Every reader reports `VideoInfo` (frame count, fps, duration) and returns frames for a list of
indices as a uint8 array (T, H, W, 3). decord and av are imported lazily, so this module imports on
machines that have neither. Which frames to read is chosen by :mod:`videomamba.core.frame_sampling`.

A video that cannot be opened or decoded raises `VideoDecodeError` (naming the path);
`UnreadableVideoPolicy` replaces such a sample by another one, a bounded number of times.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav", "frames", "gif")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Used when a container reports no frame rate; frame-folder videos have none at all.
DEFAULT_FPS = 30.0


class VideoDecodeError(RuntimeError):
    """A video (file, frame folder or gif) could not be opened or decoded."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"cannot read video {path}: {reason}")
        self.path = str(path)
        self.reason = reason


class BackendUnavailableError(ImportError):
    """The decoding library a backend needs is not installed."""


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows about a video before decoding any frame."""

    num_frames: int
    fps: float

    @property
    def duration(self) -> float:
        """Length in seconds, as frame count over average frame rate (how the original converts seconds)."""
        return self.num_frames / self.fps


class Video:
    """An opened video. Subclasses fill `info` and implement `_read_sorted` for unique sorted indices."""

    path: str
    info: VideoInfo

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed) as a uint8 array (len(indices), H, W, 3)."""
        wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
        if wanted.size == 0:
            raise ValueError(f"no frame indices requested from {self.path}")
        if wanted.min() < 0 or wanted.max() >= self.info.num_frames:
            raise ValueError(
                f"frame indices out of range for {self.path}: [{wanted.min()}, {wanted.max()}] "
                f"but the video has {self.info.num_frames} frames"
            )
        # Decode each distinct frame once, in file order; samplers repeat frames of short videos.
        unique, positions = np.unique(wanted, return_inverse=True)
        frames = self._read_sorted([int(i) for i in unique])
        if frames.ndim != 4 or frames.shape[0] != len(unique) or frames.shape[-1] != 3:
            raise VideoDecodeError(self.path, f"decoder returned frames of shape {tuple(frames.shape)}")
        return np.ascontiguousarray(frames[positions])

    def _read_sorted(self, indices: list[int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release decoder resources (a no-op for readers that hold none)."""

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _positive_fps(fps: float | None, path: str) -> float:
    if fps is None or not math.isfinite(fps) or fps <= 0:
        logger.debug("%s reports no frame rate; assuming %.1f fps", path, DEFAULT_FPS)
        return DEFAULT_FPS
    return float(fps)


class DecordVideo(Video):
    """decord reader (the original's); frame indices follow decord's presentation order."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 1) -> None:
        try:
            import decord
        except ImportError as error:
            raise BackendUnavailableError("decord is not installed (pip install decord, or use PyAV)") from error
        self.path = str(path)
        try:
            self._reader = decord.VideoReader(self.path, num_threads=num_threads, ctx=decord.cpu(0))
            num_frames = len(self._reader)
            fps = self._reader.get_avg_fps()
        except Exception as error:  # decord raises bare RuntimeError/DECORDError for every failure
            raise VideoDecodeError(self.path, f"decord: {error}") from error
        if num_frames <= 0:
            raise VideoDecodeError(self.path, "decord found no frames")
        self.info = VideoInfo(num_frames, _positive_fps(fps, self.path))

    def _read_sorted(self, indices: list[int]) -> np.ndarray:
        try:
            batch = self._reader.get_batch(indices)
        except Exception as error:
            raise VideoDecodeError(self.path, f"decord failed to decode frames: {error}") from error
        # Someone may have switched decord's global bridge to torch (video_mm's original did).
        return batch.numpy() if isinstance(batch, torch.Tensor) else batch.asnumpy()

    def close(self) -> None:
        self._reader = None


class PyAVVideo(Video):
    """PyAV reader: decodes sequentially from the start, which is exact but slower than decord's seeking."""

    def __init__(self, path: str | os.PathLike) -> None:
        av = _import_av()
        self.path = str(path)
        try:
            with av.open(self.path) as container:
                if not container.streams.video:
                    raise VideoDecodeError(self.path, "no video stream")
                stream = container.streams.video[0]
                fps = float(stream.average_rate or stream.guessed_rate or 0)
                num_frames = stream.frames
                if num_frames <= 0:
                    # Some containers (webm, mkv) store no frame count: count packets, no decoding needed.
                    num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        except (av.error.FFmpegError, OSError) as error:
            raise VideoDecodeError(self.path, f"PyAV: {error}") from error
        if num_frames <= 0:
            raise VideoDecodeError(self.path, "PyAV found no frames")
        self.info = VideoInfo(num_frames, _positive_fps(fps, self.path))

    def _read_sorted(self, indices: list[int]) -> np.ndarray:
        av = _import_av()
        wanted = set(indices)
        frames: dict[int, np.ndarray] = {}
        try:
            with av.open(self.path) as container:
                for position, frame in enumerate(container.decode(video=0)):
                    if position in wanted:
                        frames[position] = frame.to_ndarray(format="rgb24")
                    if position >= indices[-1]:
                        break
        except (av.error.FFmpegError, OSError) as error:
            raise VideoDecodeError(self.path, f"PyAV failed to decode: {error}") from error
        if not frames:
            raise VideoDecodeError(self.path, "PyAV decoded no frames")
        # The container's frame count can exceed what decodes (truncated files): repeat the last frame.
        last_frame = frames[max(frames)]
        if len(frames) < len(indices):
            logger.debug(
                "%s: %d frames past the decodable end; using the last one", self.path, len(indices) - len(frames)
            )
        return np.stack([frames.get(i, last_frame) for i in indices])


def _import_av() -> ModuleType:
    try:
        import av
    except ImportError as error:
        raise BackendUnavailableError("PyAV is not installed (pip install av)") from error
    return av


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    fps: int = 10,
    codec: str = "mpeg4",
    pix_fmt: str = "yuv420p",
    **options: str,
) -> str:
    """Encode uint8 (T, H, W, 3) RGB frames into a video file with PyAV; returns the path.

    `options` go to the encoder (e.g. ``qscale="2"`` for mpeg4, ``qp="0"`` for lossless libx264rgb).
    Used by the demo's synthetic data and by the tests, which decode what they wrote.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    av = _import_av()
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = dict(options)
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


# Files decord failed on in this process: read with PyAV from then on, with one warning, instead of
# a retry and a warning at every read (every epoch, every test view).
_DECORD_FAILED: set[str] = set()


class FallbackVideo(Video):
    """decord first; PyAV when decord is missing, cannot open the file, or fails while decoding it."""

    def __init__(self, path: str | os.PathLike, num_threads: int = 1) -> None:
        self.path = str(path)
        self._active: Video
        try:
            if self.path in _DECORD_FAILED:
                self._active = PyAVVideo(self.path)
            else:
                self._active = DecordVideo(self.path, num_threads=num_threads)
        except (BackendUnavailableError, VideoDecodeError) as error:
            self._active = self._switch_to_pyav(error)
        self.info = self._active.info

    def _switch_to_pyav(self, decord_error: Exception) -> Video:
        try:
            video = PyAVVideo(self.path)
        except (BackendUnavailableError, VideoDecodeError) as error:
            raise VideoDecodeError(self.path, f"{_reason(decord_error)}; fallback {_reason(error)}") from error
        if isinstance(decord_error, VideoDecodeError) and self.path not in _DECORD_FAILED:
            _DECORD_FAILED.add(self.path)
            logger.warning("decord failed on %s (%s); PyAV reads it from now on", self.path, decord_error.reason)
        return video

    def read(self, indices: Sequence[int]) -> np.ndarray:
        try:
            return self._active.read(indices)
        except VideoDecodeError as error:
            if isinstance(self._active, PyAVVideo):
                raise
            self._active.close()
            self._active = self._switch_to_pyav(error)
        # The two libraries may count frames differently; indices past PyAV's count take its last frame.
        clipped = np.clip(np.asarray(indices, dtype=np.int64), 0, self._active.info.num_frames - 1)
        return self._active.read(clipped)

    def close(self) -> None:
        self._active.close()


def _reason(error: Exception) -> str:
    return error.reason if isinstance(error, VideoDecodeError) else str(error)


def natural_sort_key(name: str) -> list[int | str]:
    """Sort key that orders embedded numbers by value: img_2.jpg < img_10.jpg."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class FrameFolderVideo(Video):
    """A folder of image files, one per frame.

    With `filename_tmpl` (e.g. ``img_{:05}.jpg``) frame i is ``filename_tmpl.format(start_index + i)``
    and `num_frames` (when not given) is the number of image files in the folder. Without a template
    the image files are taken in natural order.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        filename_tmpl: str | None = None,
        num_frames: int | None = None,
        start_index: int = 1,
        fps: float = DEFAULT_FPS,
    ) -> None:
        self.path = str(folder)
        if not os.path.isdir(self.path):
            raise VideoDecodeError(self.path, "frame folder does not exist")
        if filename_tmpl is None:
            names = sorted(
                (n for n in os.listdir(self.path) if n.lower().endswith(IMAGE_EXTENSIONS)), key=natural_sort_key
            )
            if num_frames is not None:
                names = names[:num_frames]
        else:
            if num_frames is None:
                num_frames = sum(1 for n in os.listdir(self.path) if n.lower().endswith(IMAGE_EXTENSIONS))
            names = [filename_tmpl.format(start_index + i) for i in range(num_frames)]
        if not names:
            raise VideoDecodeError(self.path, "frame folder holds no image files")
        self._files = [os.path.join(self.path, n) for n in names]
        self.info = VideoInfo(len(self._files), _positive_fps(fps, self.path))

    def _read_sorted(self, indices: list[int]) -> np.ndarray:
        from PIL import Image

        frames = []
        for i in indices:
            try:
                with Image.open(self._files[i]) as image:
                    frames.append(np.asarray(image.convert("RGB")))
            except OSError as error:
                raise VideoDecodeError(self.path, f"frame {self._files[i]}: {error}") from error
        if len({f.shape for f in frames}) > 1:
            raise VideoDecodeError(self.path, f"frames differ in size: {sorted({f.shape for f in frames})}")
        return np.stack(frames)


class GifVideo(Video):
    """Animated GIF through Pillow; the frame rate comes from the first frame's display time."""

    def __init__(self, path: str | os.PathLike) -> None:
        from PIL import Image

        self.path = str(path)
        try:
            with Image.open(self.path) as image:
                num_frames = getattr(image, "n_frames", 1)
                frame_ms = image.info.get("duration") or 0
        except OSError as error:
            raise VideoDecodeError(self.path, f"Pillow: {error}") from error
        self.info = VideoInfo(num_frames, _positive_fps(1000.0 / frame_ms if frame_ms else None, self.path))

    def _read_sorted(self, indices: list[int]) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(self.path) as image:
                frames = []
                for i in indices:
                    image.seek(i)
                    frames.append(np.asarray(image.convert("RGB")))
        except (OSError, EOFError) as error:
            raise VideoDecodeError(self.path, f"Pillow: {error}") from error
        return np.stack(frames)


def open_video(
    path: str | os.PathLike,
    backend: str = "auto",
    *,
    filename_tmpl: str | None = None,
    num_frames: int | None = None,
    start_index: int = 1,
    frame_folder_fps: float = DEFAULT_FPS,
    num_threads: int = 1,
) -> Video:
    """Open a video with the named backend.

    ``auto`` picks ``frames`` for a directory, ``gif`` for a .gif file and decord-with-PyAV-fallback
    otherwise. `filename_tmpl`, `num_frames`, `start_index` and `frame_folder_fps` only concern
    frame folders. Raises `VideoDecodeError` (naming the path) when the video cannot be opened.
    """
    path = str(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        if os.path.isdir(path):
            backend = "frames"
        elif path.lower().endswith(".gif"):
            backend = "gif"
        else:
            return FallbackVideo(path, num_threads=num_threads)
    if backend == "frames":
        return FrameFolderVideo(path, filename_tmpl, num_frames, start_index, frame_folder_fps)
    if backend == "gif":
        return GifVideo(path)
    if backend == "decord":
        return DecordVideo(path, num_threads=num_threads)
    return PyAVVideo(path)


def read_video_frames(
    path: str | os.PathLike,
    choose_indices: Callable[[VideoInfo], Sequence[int]],
    backend: str = "auto",
    **open_kwargs: object,
) -> tuple[np.ndarray, list[int], VideoInfo]:
    """Open `path`, let `choose_indices` pick frames from its info, and decode them.

    Returns (frames uint8 (T, H, W, 3), the indices read, the video's info).
    """
    with open_video(path, backend, **open_kwargs) as video:
        indices = [int(i) for i in choose_indices(video.info)]
        return video.read(indices), indices, video.info


# --------------------------------------------------------------------------------------------------
# Replacing unreadable samples.

Sample = TypeVar("Sample")


class UnreadableVideoPolicy:
    """Replace a sample whose video cannot be read by a random other one, a bounded number of times.

    Each failure is logged with the path and counted (`num_failures`, per process: every DataLoader
    worker keeps its own count and reports it in its log lines). After `max_attempts` consecutive
    failures the load raises, so a wrong ``--prefix`` fails fast instead of retrying forever.
    """

    def __init__(self, max_attempts: int = 10) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.max_attempts = max_attempts
        self.num_failures = 0

    @staticmethod
    def _untried_index(num_items: int, tried: set[int], generator: torch.Generator | None) -> int:
        """A random index, avoiding the ones that already failed in this chain while any are left."""
        candidate = int(torch.randint(num_items, (1,), generator=generator))
        for _ in range(32):
            if candidate not in tried or len(tried) >= num_items:
                break
            candidate = int(torch.randint(num_items, (1,), generator=generator))
        return candidate

    def load(
        self,
        load_fn: Callable[[int], Sample],
        index: int,
        num_items: int,
        generator: torch.Generator | None = None,
    ) -> tuple[Sample, int]:
        """Call `load_fn(index)`; on `VideoDecodeError` try random other indices. Returns (sample, index used)."""
        errors: list[str] = []
        tried = {index}
        for _ in range(self.max_attempts):
            try:
                return load_fn(index), index
            except VideoDecodeError as error:
                self.num_failures += 1
                errors.append(str(error))
                replacement = self._untried_index(num_items, tried, generator)
                tried.add(replacement)
                logger.warning(
                    "unreadable video %s (%s): sample %d replaced by sample %d (%d unreadable so far in this process)",
                    error.path,
                    error.reason,
                    index,
                    replacement,
                    self.num_failures,
                )
                index = replacement
        raise RuntimeError(
            f"{self.max_attempts} consecutive samples could not be read; check the list file paths and --prefix. "
            "Errors: " + " | ".join(errors)
        )
