"""Inputs of :func:`~ivfusion.video.fuse_video`: video files and folders of frames, and how the
frames of the two inputs are paired (``sync``).

A source yields ``(seconds since its first frame, item)``; items are decoded to numpy arrays only
for the frames that are fused. :func:`_decoded_pairs` is what the rest of the package consumes.
"""
from __future__ import annotations

import math
import os
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..io import IMAGE_EXTENSIONS, read_image

#: How frames of the two inputs are paired (see :func:`~ivfusion.video.fuse_video`).
SYNC_MODES = ("strict", "nearest", "index")
#: Frame rate given to two image sequences when ``fps`` is not passed.
DEFAULT_SEQUENCE_FPS = 30

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------
# Sources: a video file or a folder of frames


def _natural_key(name: str) -> List[Any]:
    # re.split with a capturing group puts text at even and digit runs at odd positions, so the
    # lists of two names always compare str with str and int with int.
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(re.split(r"(\d+)", name))]


class _Source:
    """One input stream: ``frames()`` yields ``(seconds since its first frame, item)``;
    ``to_array(item)`` decodes an item to a numpy image."""

    name: str
    path: Path
    rate: Optional[Fraction]
    count: Optional[int]  # None when unknown before decoding

    def frames(self) -> Iterator[Tuple[float, Any]]:  # pragma: no cover - interface
        raise NotImplementedError

    def to_array(self, item: Any) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _FolderSource(_Source):
    kind = "frames"

    def __init__(self, name: str, path: Path, files: List[Path]) -> None:
        self.name, self.path, self.files = name, path, files
        self.count = len(files)
        self.rate = None  # set by fuse_video (fps, or the other input's rate)

    @classmethod
    def scan(cls, name: str, path: Path) -> "_FolderSource":
        files = [p for p in path.iterdir()
                 if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
        if not files:
            raise ValueError(f"{name}: no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {str(path)!r}")
        return cls(name, path, sorted(files, key=lambda p: _natural_key(p.name)))

    def frames(self) -> Iterator[Tuple[float, Any]]:
        assert self.rate is not None
        for i, path in enumerate(self.files):
            yield float(i / self.rate), path

    def to_array(self, item: Path) -> np.ndarray:
        return read_image(item, name=f"{self.name} frame {item.name}")


class _VideoSource(_Source):
    kind = "video"

    def __init__(self, av: Any, name: str, path: Path) -> None:
        self.av, self.name, self.path = av, name, path
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise ValueError(f"{name}: cannot read {str(path)!r} as a video ({exc})") from exc
        if not self.container.streams.video:
            self.container.close()
            raise ValueError(f"{name}: {str(path)!r} has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        if not rate:
            self.container.close()
            raise ValueError(f"{name}: cannot determine the frame rate of {str(path)!r}")
        self.rate = Fraction(rate.numerator, rate.denominator)
        self.count = int(self.stream.frames) or None
        pix_fmt = self.stream.codec_context.pix_fmt or ""
        # Grey streams decode to grey arrays: 8-bit as uint8, deeper (thermal gray16) as uint16.
        if pix_fmt == "gray" or pix_fmt == "gray8":
            self.format = "gray"
        elif pix_fmt.startswith("gray"):
            self.format = "gray16le"
        else:
            self.format = "rgb24"

    def frames(self) -> Iterator[Tuple[float, Any]]:
        av, first = self.av, None
        tb = self.stream.time_base
        try:
            for i, frame in enumerate(self.container.decode(self.stream)):
                t = float(frame.pts * tb) if frame.pts is not None and tb is not None else float(i / self.rate)
                if first is None:
                    first = t
                yield t - first, frame
        except av.error.FFmpegError as exc:
            raise ValueError(f"{self.name}: cannot decode {str(self.path)!r} ({exc})") from exc

    def to_array(self, item: Any) -> np.ndarray:
        return item.to_ndarray(format=self.format)

    def close(self) -> None:
        self.container.close()


def _open_source(av: Any, name: str, path: PathLike) -> _Source:
    p = Path(path).expanduser()
    if p.is_dir():
        return _FolderSource.scan(name, p)
    if p.is_file():
        return _VideoSource(av, name, p)
    raise FileNotFoundError(f"{name}: no such video file or folder of frames: {str(p)!r}")


# --------------------------------------------------------------------------------------------
# Pairing


def _sync_hint() -> str:
    return ("pass sync='nearest' (each visible frame with the infrared frame nearest in time) or "
            "sync='index' (frames paired by position)")


def _check_metadata(ir: _Source, vis: _Source, sync: str) -> None:
    if sync != "strict":
        return
    if ir.rate != vis.rate:
        raise ValueError(f"ir and vis differ in frame rate: ir {_fmt_rate(ir.rate)} fps, vis "
                         f"{_fmt_rate(vis.rate)} fps; {_sync_hint()}")
    if ir.count is not None and vis.count is not None and ir.count != vis.count:
        raise ValueError(f"ir and vis differ in frame count: ir has {ir.count} frames, vis has {vis.count}; "
                         f"{_sync_hint()}")


def _fmt_rate(rate: Optional[Fraction]) -> str:
    if rate is None:
        return "?"
    return str(rate.numerator) if rate.denominator == 1 else f"{float(rate):.4g}"


def _pairs(ir: _Source, vis: _Source, sync: str) -> Iterator[Tuple[float, Any, Any]]:
    """Yield ``(time of the output frame in seconds, ir item, vis item)`` in output order."""
    ir_it, vis_it = ir.frames(), vis.frames()
    if sync in ("strict", "index"):
        tolerance = 0.5 / float(vis.rate)
        for i in range(sys.maxsize):
            a, b = next(ir_it, None), next(vis_it, None)
            if a is None or b is None:
                if sync == "strict" and (a is not None or b is not None):
                    short, long_ = ("ir", "vis") if a is None else ("vis", "ir")
                    raise ValueError(f"ir and vis differ in frame count: {short} ended after {i} frames, "
                                     f"{long_} has more; {_sync_hint()}")
                return
            if sync == "strict" and abs(a[0] - b[0]) > tolerance:
                raise ValueError(
                    f"frame {i}: the infrared frame is at {a[0]:.3f} s, the visible one at {b[0]:.3f} s (the "
                    f"streams drift apart: variable frame rate or dropped frames); {_sync_hint()}"
                )
            yield b[0], a[1], b[1]
        return
    # nearest: the visible stream sets the timeline; each of its frames takes the infrared frame
    # nearest in time (ties: the earlier one). It ends where the last infrared frame's display
    # time (one infrared frame period) ends.
    cur = next(ir_it, None)
    if cur is None:
        return
    nxt = next(ir_it, None)
    ir_period = 1.0 / float(ir.rate)
    for t, item in vis_it:
        while nxt is not None and abs(nxt[0] - t) < abs(cur[0] - t):
            cur, nxt = nxt, next(ir_it, None)
        if nxt is None and t >= cur[0] + ir_period - 1e-9:
            return
        yield t, cur[1], item


class _Decoded:
    """A paired frame decoded to arrays; ``ir_array`` may be shared by consecutive frames."""

    __slots__ = ("index", "time", "ir", "vis")

    def __init__(self, index: int, t: float, ir: np.ndarray, vis: np.ndarray) -> None:
        self.index, self.time, self.ir, self.vis = index, t, ir, vis


def _decoded_pairs(ir: _Source, vis: _Source, sync: str, start: int, stop: Optional[int]) -> Iterator[_Decoded]:
    """The pairs of the output range ``[start, stop)`` decoded to numpy arrays."""
    last_item, last_array = None, None
    for i, (t, a, b) in enumerate(_pairs(ir, vis, sync)):
        if stop is not None and i >= stop:
            return
        if i < start:
            continue
        if a is not last_item:  # with sync='nearest' an infrared frame may serve several visible ones
            last_item, last_array = a, ir.to_array(a)
        yield _Decoded(i, t, last_array, vis.to_array(b))


# --------------------------------------------------------------------------------------------
# Opening both inputs


def _input_rates(av: Any, ir: PathLike, vis: PathLike, fps: Optional[float]) -> Dict[str, Fraction]:
    """The frame rate of each input (videos: their own; folders: ``fps`` or the other's rate)."""
    is_dir = {"ir": Path(ir).expanduser().is_dir(), "vis": Path(vis).expanduser().is_dir()}
    if fps is not None and not any(is_dir.values()):
        raise ValueError("fps: applies to image-sequence inputs (folders of frames); videos keep their own rate")
    seq_rate = Fraction(fps).limit_denominator(100000) if fps is not None else None
    rates: Dict[str, Fraction] = {}
    if seq_rate is None and all(is_dir.values()):
        seq_rate = Fraction(DEFAULT_SEQUENCE_FPS)
    if seq_rate is None:  # one folder, one video: the folder takes the video's rate
        video = vis if is_dir["ir"] else ir
        src = _open_source(av, "vis" if is_dir["ir"] else "ir", video)
        try:
            seq_rate = src.rate
        finally:
            src.close()
    for name in ("ir", "vis"):
        if is_dir[name]:
            rates[name] = seq_rate
    return rates


class _opened:
    """Context manager opening both inputs (closing them on exit)."""

    def __init__(self, av: Any, ir: PathLike, vis: PathLike, rates: Dict[str, Fraction]) -> None:
        self.av, self.paths, self.rates = av, (ir, vis), rates
        self.sources: List[_Source] = []

    def __enter__(self) -> Tuple[_Source, _Source]:
        try:
            for name, path in zip(("ir", "vis"), self.paths):
                src = _open_source(self.av, name, path)
                if name in self.rates:
                    src.rate = self.rates[name]
                self.sources.append(src)
        except BaseException:
            self.__exit__()
            raise
        return self.sources[0], self.sources[1]

    def __exit__(self, *exc: Any) -> None:
        for src in self.sources:
            try:
                src.close()
            except Exception:
                pass
        self.sources = []


def _expected_frames(ir: _Source, vis: _Source, sync: str, start: int, stop: Optional[int]) -> Optional[int]:
    """Frames the run will write, when the containers say (for the progress bar only)."""
    if sync == "nearest":
        n = vis.count
        if n is not None and ir.count is not None:
            n = min(n, int(math.ceil(ir.count * float(vis.rate) / float(ir.rate))))
    elif ir.count is None or vis.count is None:
        n = None
    else:
        n = min(ir.count, vis.count)
    if n is None:
        return None if stop is None else stop - start
    if stop is not None:
        n = min(n, stop)
    return max(n - start, 0)
