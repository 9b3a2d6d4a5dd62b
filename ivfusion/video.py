"""Fusing infrared and visible video streams: :func:`fuse_video`.

A video pair is fused frame by frame with the same arithmetic as :func:`ivfusion.fuse` (colour
from the visible stream through YCbCr, ``resize`` for different frame sizes), with three
differences that matter for video:

* **Constant infrared mapping.** A 16-bit (``gray16``) thermal stream is mapped to [0, 1] with
  one window for the whole video: ``ir_range`` if given, else percentiles of the first
  ``ir_window_frames`` frames. Per-frame normalisation (what :func:`~ivfusion.fuse` does for a
  single 16-bit image) would make the brightness pump whenever a hot object enters the view.
* **Batches and a pipeline.** A decoder thread reads and pairs the frames, the calling thread
  fuses ``batch_size`` consecutive frames per call, an encoder thread writes them; the queues
  between them are bounded, so memory does not grow with the length of the video.
* **Atomic output.** The video is encoded into a temporary file next to the output and renamed
  at the end; an interrupted or failing run leaves no file under the output name.

Inputs may be video files (anything FFmpeg reads) or folders of frames (image sequences, in
natural name order). PyAV (``pip install 'ivfusion[video]'``) is imported only when a video is
fused.
"""
from __future__ import annotations

import functools
import math
import os
import queue
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from .color import ycbcr_to_rgb
from .fusion import (
    DEFAULT_METHOD,
    DEFAULT_TILE_OVERLAP,
    _RESIZE_MODES,
    _luma_and_chroma,
    _method_fn,
    _resample,
    _resolve_device,
    _run,
)
from .io import IMAGE_EXTENSIONS, _current_umask, from_unit_range, read_image, to_chw_tensor, to_unit_range

__all__ = ["fuse_video", "VideoReport", "SYNC_MODES", "DEFAULT_CODEC", "FALLBACK_CODEC"]

#: How frames of the two inputs are paired (see :func:`fuse_video`).
SYNC_MODES = ("strict", "nearest", "index")
#: Encoder used when ``codec=None``: H.264 through x264, or :data:`FALLBACK_CODEC` without it.
DEFAULT_CODEC = "libx264"
FALLBACK_CODEC = "mpeg4"
DEFAULT_CRF = 18
DEFAULT_PIX_FMT = "yuv420p"
#: Frame rate given to two image sequences when ``fps`` is not passed.
DEFAULT_SEQUENCE_FPS = 30
#: Encoders that take a constant-rate-factor option ``crf``.
_CRF_CODECS = ("libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1")
#: mpeg4-style encoders get a fixed quantiser instead (as ``ffmpeg -q:v 3``: good quality). PyAV
#: does not pass ``global_quality`` on to the frames as the ffmpeg tool does, so the quantiser is
#: pinned through ``qmin = qmax``.
_QSCALE = 3
_POLL_S = 0.1
_END = object()

PathLike = Union[str, os.PathLike]


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise ImportError(
            "video fusion needs PyAV, which is not installed: pip install 'ivfusion[video]' (or pip install av)"
        ) from exc
    return av


# --------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class VideoReport:
    """Outcome of :func:`fuse_video`."""

    #: The video written.
    output: Path
    #: Number of frames written.
    frames: int
    #: Frame rate of the input (of the visible input with ``sync="nearest"``) and of the output.
    fps: float
    #: Wall time of the whole call in seconds (opening, decoding, fusing, encoding).
    seconds: float
    #: Output frame size ``(height, width)``.
    size: Tuple[int, int]
    #: Encoder used.
    codec: str
    #: The fixed infrared window ``(lo, hi)`` mapped to 0..1, or None when the infrared was mapped
    #: as :func:`ivfusion.fuse` maps it (8-bit by /255; 16-bit per frame with ``ir_window_frames=0``).
    ir_range: Optional[Tuple[float, float]] = None

    @property
    def throughput(self) -> float:
        """Frames written per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


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
# The fixed infrared window


def _window_from_histogram(hist: np.ndarray, percentiles: Tuple[float, float]) -> Tuple[float, float]:
    cdf = np.cumsum(hist)
    total = cdf[-1]
    lo = int(np.searchsorted(cdf, total * percentiles[0] / 100.0, side="right"))
    hi = int(np.searchsorted(cdf, total * percentiles[1] / 100.0, side="left"))
    lo, hi = min(lo, len(hist) - 1), min(hi, len(hist) - 1)
    if hi <= lo:
        hi = lo + 1
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# Per-frame preparation and finishing (the arithmetic of ivfusion.fuse, split around the batch)


class _Prepared:
    __slots__ = ("index", "time", "ir_y", "vis_y", "chroma", "vis_three", "vis_kind")

    def __init__(self, index, t, ir_y, vis_y, chroma, vis_three, vis_kind) -> None:
        self.index, self.time, self.ir_y, self.vis_y = index, t, ir_y, vis_y
        self.chroma, self.vis_three, self.vis_kind = chroma, vis_three, vis_kind


def _prepare(d: _Decoded, ir_range: Any, resize: Optional[str], size: Tuple[int, int]) -> _Prepared:
    ir_t, ir_kind = to_chw_tensor(d.ir, name="ir")
    vis_t, vis_kind = to_chw_tensor(d.vis, name="vis")
    if ir_t.shape[-2:] != vis_t.shape[-2:] and resize is None:
        raise ValueError(
            f"ir and vis differ in size: ir is {ir_t.shape[-2]}x{ir_t.shape[-1]} (HxW), vis is "
            f"{vis_t.shape[-2]}x{vis_t.shape[-1]}; align them or pass resize='ir_to_vis' or 'vis_to_ir'"
        )
    if ir_range is None and ir_kind == "uint16":
        ir_range = "auto"
    ir01 = to_unit_range(ir_t, ir_kind, name="ir", value_range=ir_range)
    vis01 = to_unit_range(vis_t, vis_kind, name="vis")
    if resize == "ir_to_vis":
        ir01 = _resample(ir01, vis01.shape[-2:])
    elif resize == "vis_to_ir":
        vis01 = _resample(vis01, ir01.shape[-2:])
    if tuple(vis01.shape[-2:]) != tuple(size):
        raise ValueError(f"frame {d.index}: the frame size changed to {vis01.shape[-2]}x{vis01.shape[-1]} "
                         f"(HxW) from {size[0]}x{size[1]}; a video keeps one size")
    ir_y, ir_chroma = _luma_and_chroma(ir01)
    vis_y, vis_chroma = _luma_and_chroma(vis01)
    chroma = vis_chroma if vis_chroma is not None else ir_chroma
    return _Prepared(d.index, d.time, ir_y, vis_y, chroma, vis01.shape[0] == 3, vis_kind)


def _finish(p: _Prepared, fused_y: torch.Tensor) -> np.ndarray:
    if p.chroma is not None:
        out = ycbcr_to_rgb(torch.cat([fused_y, p.chroma.to(fused_y.dtype)], dim=0))
    elif p.vis_three:
        out = fused_y.expand(3, -1, -1)
    else:
        out = fused_y
    return from_unit_range(out, p.vis_kind)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return np.round(arr / 257.0).astype(np.uint8)
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# The pipeline: decoder thread -> fusion (calling thread) -> encoder thread


class _Pipeline:
    """Shared stop flag and first error of the worker threads."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, q: "queue.Queue[Any]", item: Any) -> bool:
        """Put ``item`` unless the pipeline stops first; False if it stopped."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: "queue.Queue[Any]") -> Any:
        """Next item, or ``_END`` when the pipeline stops."""
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _END


def _thread(target: Callable[[], None], pipe: _Pipeline, name: str) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported to the calling thread, which re-raises it
            pipe.fail(exc)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


def _progress_bar(enabled: bool, total: Optional[int]):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with the [video] extra; fall back to the built-in bar
        from ._progress import ProgressBar

        return ProgressBar(total, "fusing")
    return tqdm(total=total, unit="frame", desc="fusing", file=sys.stderr, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# Encoder settings


def _resolve_codec(av: Any, codec: Optional[str]) -> str:
    if codec is None:
        for name in (DEFAULT_CODEC, FALLBACK_CODEC):
            try:
                av.codec.Codec(name, "w")
                return name
            except Exception:  # not in this FFmpeg build
                continue
        raise ValueError(f"codec: neither {DEFAULT_CODEC} nor {FALLBACK_CODEC} is available in this PyAV build")
    try:
        av.codec.Codec(codec, "w")
    except Exception:
        raise ValueError(f"codec: no encoder named {codec!r} in this PyAV build "
                         f"(e.g. {DEFAULT_CODEC}, {FALLBACK_CODEC}, libx265, ffv1)") from None
    return codec


def _check_pix_fmt(av: Any, codec: str, pix_fmt: str) -> None:
    try:
        av.VideoFormat(pix_fmt)
    except Exception:
        raise ValueError(f"pix_fmt: unknown pixel format {pix_fmt!r}") from None
    formats = av.codec.Codec(codec, "w").video_formats
    if formats:
        names = [f.name for f in formats]
        if pix_fmt not in names:
            raise ValueError(f"pix_fmt: {codec} does not encode {pix_fmt!r}; it takes {', '.join(names)}")


def _encoder_options(codec: str, crf: Optional[int], options: Optional[Dict[str, Any]]) -> Dict[str, str]:
    opts: Dict[str, str] = {}
    if codec in _CRF_CODECS:
        opts["crf"] = str(DEFAULT_CRF if crf is None else crf)
        if codec.startswith("libvpx"):
            opts.setdefault("b", "0")  # constant quality mode of libvpx
    elif crf is not None:
        raise ValueError(f"crf: codec {codec!r} has no constant rate factor (crf works with "
                         f"{', '.join(_CRF_CODECS)}); give its quality through codec_options")
    elif codec in ("mpeg4", "mpeg2video", "mpeg1video", "msmpeg4v2", "msmpeg4", "h263p", "mjpeg"):
        opts.update({"flags": "+qscale", "qmin": str(_QSCALE), "qmax": str(_QSCALE)})
    opts.update({str(k): str(v) for k, v in (options or {}).items()})
    return opts


def _subsampling(av: Any, pix_fmt: str) -> Tuple[int, int]:
    """``(horizontal, vertical)`` chroma subsampling factor of a pixel format (1 = none)."""
    fmt = av.VideoFormat(pix_fmt, 2, 2)
    if len(fmt.components) < 3:
        return 1, 1
    c = fmt.components[1]
    return max(1, 2 // max(c.width, 1)), max(1, 2 // max(c.height, 1))


# --------------------------------------------------------------------------------------------
# fuse_video


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_frames(frames: Any) -> Tuple[int, Optional[int]]:
    if frames is None:
        return 0, None
    if isinstance(frames, range):
        if frames.step != 1:
            raise ValueError("frames: a range with step 1 is expected")
        frames = (frames.start, frames.stop)
    try:
        start, stop = frames
    except (TypeError, ValueError):
        raise ValueError(f"frames: expected (start, stop) with stop None for the end, got {frames!r}") from None
    start = 0 if start is None else start
    for name, v in (("start", start), ("stop", stop)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"frames: {name} must be an int >= 0 (or None), got {v!r}")
    if stop is not None and stop <= start:
        raise ValueError(f"frames: stop must be greater than start, got ({start}, {stop})")
    return start, stop


def fuse_video(
    ir: PathLike,
    vis: PathLike,
    out: PathLike,
    method: str = DEFAULT_METHOD,
    *,
    sync: str = "strict",
    frames: Optional[Tuple[Optional[int], Optional[int]]] = None,
    fps: Optional[float] = None,
    batch_size: Optional[int] = None,
    ir_range: Optional[Tuple[float, float]] = None,
    ir_window_frames: int = 30,
    ir_percentiles: Tuple[float, float] = (0.5, 99.5),
    codec: Optional[str] = None,
    crf: Optional[int] = None,
    pix_fmt: str = DEFAULT_PIX_FMT,
    codec_options: Optional[Dict[str, Any]] = None,
    overwrite: bool = False,
    progress: Optional[bool] = None,
    queue_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    tile_size: Optional[int] = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    resize: Optional[str] = None,
    weights: Optional[PathLike] = None,
    precision: Optional[str] = None,
    **options: Any,
) -> VideoReport:
    """Fuse an infrared video with a visible video, frame by frame, into a new video.

    Args:
        ir: infrared input: a video file (any format FFmpeg reads; 16-bit ``gray16`` thermal
            streams, e.g. FFV1 in Matroska, are read at full depth) or a folder of frames.
        vis: visible input, the same kinds. Colour is kept as in :func:`ivfusion.fuse` (the
            luma is fused, Cb/Cr come from the visible frame).
        out: the video to write (``.mp4``, ``.mkv``, ``.mov``, ``.avi`` ...; the container follows
            the extension). It may not be one of the inputs.
        method: a name from :func:`ivfusion.list_methods`; default ``"refinefuse"``. On a CPU,
            ``"guided"`` is the practical choice (see the README's throughput table).
        sync: how frames are paired. ``"strict"`` (default): both inputs must have the same frame
            rate and frame count, and the i-th frames are paired, each pair checked to lie at the
            same presentation time (within half a frame, times counted from each stream's first
            frame); any mismatch is a ``ValueError``. ``"nearest"``: the visible stream sets the
            timeline and rate; each of its frames is paired with the infrared frame nearest in
            presentation time (a slower infrared camera's frames repeat); output ends with the
            shorter stream. ``"index"``: the i-th frames are paired whatever their times, up to
            the shorter stream; the visible stream's times and rate are kept.
        frames: ``(start, stop)``: fuse only output frames ``start <= i < stop`` (``stop=None``: to
            the end). Earlier frames are decoded and dropped (no seeking), so timing stays exact.
        fps: frame rate of image-sequence inputs (default: the other input's rate when it is a
            video, else 30). Videos always keep their own rate.
        batch_size: consecutive frames fused in one call of the method. Default: 8 on CUDA, 1 on
            the CPU (where batches bring no speed-up and their larger buffers cost page faults).
        ir_range: ``(lo, hi)`` infrared values mapped to 0 and 1 (clipped) in every frame, for any
            bit depth, as in :func:`ivfusion.fuse`.
        ir_window_frames: without ``ir_range``, a 16-bit infrared is mapped with one window for the
            whole video, estimated once from the ``ir_percentiles`` of the first
            ``ir_window_frames`` fused frames (default 30). ``0``: map each 16-bit frame by its own
            min..max as :func:`ivfusion.fuse` does (brightness then pumps with the scene). 8-bit
            infrared is divided by 255 as in :func:`ivfusion.fuse`.
        ir_percentiles: ``(low, high)`` percentiles of the window (default ``(0.5, 99.5)``;
            ``(0, 100)`` = min..max of those frames).
        codec: encoder name; default ``"libx264"`` (H.264) when PyAV has it, else ``"mpeg4"``.
        crf: constant rate factor for x264/x265/VPx/AV1 encoders (default 18, visually near
            lossless; 0 = lossless for x264 with ``pix_fmt="yuv444p"``). mpeg4-style encoders get a
            fixed quantiser 3 instead (``codec_options={"qmin": Q, "qmax": Q}`` sets another).
        pix_fmt: encoded pixel format (default ``"yuv420p"``, which every player decodes; it needs
            an even width and height). RGB is converted with the BT.601 matrix (tagged in the
            stream).
        codec_options: further encoder options, e.g. ``{"preset": "veryfast"}`` for x264.
        overwrite: replace ``out`` if it exists (atomically; the old file stays if the run fails).
        progress: ``tqdm`` progress bar on stderr; default: when stderr is a terminal.
        queue_size: frames held in each queue between the decoder, the fusion and the encoder
            (default ``max(2 * batch_size, 4)``); memory stays bounded by it whatever the length of
            the video.
        device, tile_size, tile_overlap, resize, weights, precision, options: as in
            :func:`ivfusion.fuse`. Frames of different sizes need ``resize``.

    Returns:
        A :class:`VideoReport`: frames written, input frame rate, output path, seconds, ...

    Raises:
        ImportError: PyAV is not installed (extra ``ivfusion[video]``).
        ValueError: frame-rate or frame-count mismatch under ``sync="strict"``, size mismatch
            without ``resize``, ``out`` being an input, unreadable input, bad option, no frames.
        FileNotFoundError: an input that does not exist.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
        RuntimeError: a network whose pretrained weights are not available.

    Whatever goes wrong (including ``KeyboardInterrupt``), no file is left under ``out`` and no
    temporary file next to it.
    """
    t_start = time.perf_counter()
    av = _import_av()

    # ---- arguments
    if sync not in SYNC_MODES:
        raise ValueError(f"sync must be one of {', '.join(map(repr, SYNC_MODES))}, got {sync!r}")
    start, stop = _check_frames(frames)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    if isinstance(ir_window_frames, bool) or not isinstance(ir_window_frames, int) or ir_window_frames < 0:
        raise ValueError(f"ir_window_frames must be an int >= 0, got {ir_window_frames!r}")
    try:
        p_lo, p_hi = (float(v) for v in ir_percentiles)
    except (TypeError, ValueError):
        raise ValueError(f"ir_percentiles: expected (low, high), got {ir_percentiles!r}") from None
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ValueError(f"ir_percentiles: need 0 <= low < high <= 100, got ({p_lo}, {p_hi})")
    if resize is not None and resize not in _RESIZE_MODES:
        raise ValueError(f"resize must be None, 'ir_to_vis' or 'vis_to_ir', got {resize!r}")
    if tile_size is not None and (not isinstance(tile_size, int) or tile_size <= 0):
        raise ValueError(f"tile_size must be a positive int or None, got {tile_size!r}")
    if not isinstance(tile_overlap, int) or tile_overlap < 0:
        raise ValueError(f"tile_overlap must be a non-negative int, got {tile_overlap!r}")
    if crf is not None and (isinstance(crf, bool) or not isinstance(crf, int) or crf < 0):
        raise ValueError(f"crf must be an int >= 0, got {crf!r}")
    if fps is not None and not (isinstance(fps, (int, float, Fraction)) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if queue_size is not None and (isinstance(queue_size, bool) or not isinstance(queue_size, int)
                                   or queue_size < 1):
        raise ValueError(f"queue_size must be an int >= 1, got {queue_size!r}")

    # ---- output path
    out = Path(out).expanduser()
    for name, src in (("ir", ir), ("vis", vis)):
        if _same_path(out, Path(src).expanduser()):
            raise ValueError(f"out: {str(out)!r} is the {name} input; choose another output path")
    if out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a directory")
    if out.exists() and not overwrite:
        raise FileExistsError(f"out: {str(out)!r} exists; pass overwrite=True to replace it")
    if not out.suffix:
        raise ValueError(f"out: {str(out)!r} has no extension to choose the container (.mp4, .mkv ...)")

    # ---- encoder and method (errors before any decoding)
    codec = _resolve_codec(av, codec)
    _check_pix_fmt(av, codec, pix_fmt)
    enc_options = _encoder_options(codec, crf, codec_options)
    dev = _resolve_device(device)
    fn, multiple, dtype, pixelwise = _method_fn(method, weights, dev, precision, options)
    if batch_size is None:
        batch_size = 8 if dev.type == "cuda" else 1
    if queue_size is None:
        queue_size = max(2 * batch_size, 4)
    if tile_size is None and dev.type == "cuda" and not pixelwise and batch_size > 1:
        tile_size = _cuda_batch_tile_size(method, weights, dev, dtype, multiple, batch_size)

    # ---- inputs: metadata, first frames (sizes), the infrared window
    rates = _input_rates(av, ir, vis, fps)
    with _opened(av, ir, vis, rates) as (ir_src, vis_src):
        _check_metadata(ir_src, vis_src, sync)
        out_rate = vis_src.rate
        total = _expected_frames(ir_src, vis_src, sync, start, stop)
        first, window = _first_frames(ir_src, vis_src, sync, start, stop, ir_range, ir_window_frames, (p_lo, p_hi))
    ir_fixed = ir_range if ir_range is not None else window
    size = _output_size(first, resize)
    _prepare(first, ir_fixed, resize, size)  # per-frame errors (bad ir_range, float range) before any output
    sub_w, sub_h = _subsampling(av, pix_fmt)
    if size[1] % sub_w or size[0] % sub_h:
        raise ValueError(f"pix_fmt {pix_fmt!r} needs a frame width divisible by {sub_w} and height by {sub_h}; "
                         f"the output is {size[1]}x{size[0]} (WxH): pass pix_fmt='yuv444p' or crop the inputs")

    # ---- encode into a temporary file next to out, rename at the end
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=f".part{out.suffix}", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    container = None
    written = 0
    try:
        try:
            container = av.open(str(tmp), "w")
        except ValueError as exc:
            raise ValueError(f"out: no container format for the extension {out.suffix!r} ({exc})") from None
        stream = container.add_stream(codec, rate=out_rate)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], pix_fmt
        stream.codec_context.options = enc_options
        _tag_bt601(stream, pix_fmt)
        try:
            container.start_encoding()
        except av.error.FFmpegError as exc:
            raise ValueError(f"cannot open the {codec} encoder ({pix_fmt}, {size[1]}x{size[0]}, options "
                             f"{enc_options}): {exc}") from exc

        written = _pipeline(
            av=av, ir=ir, vis=vis, rates=rates, sync=sync, start=start, stop=stop, ir_fixed=ir_fixed,
            resize=resize, size=size, container=container, stream=stream, out_rate=out_rate,
            run=functools.partial(_run, fn, device=dev, dtype=dtype, multiple=multiple, tile_size=tile_size,
                                  tile_overlap=tile_overlap, method=method, weights=weights, pixelwise=pixelwise),
            device=dev, batch_size=batch_size, queue_size=queue_size, progress=progress, total=total,
        )
        container.close()
        container = None
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, out)
    except BaseException:
        if container is not None:
            try:
                container.close()
            except Exception:
                pass
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    return VideoReport(output=out, frames=written, fps=float(out_rate), seconds=time.perf_counter() - t_start,
                       size=size, codec=codec,
                       ir_range=None if ir_fixed is None else (float(ir_fixed[0]), float(ir_fixed[1])))


def _tag_bt601(stream: Any, pix_fmt: str) -> None:
    """Tag a YUV stream as BT.601 limited range: the matrix and range swscale converts RGB with by
    default (untagged, players guess BT.709 for HD sizes and shift the colours)."""
    if not pix_fmt.startswith(("yuv", "nv")) or pix_fmt.startswith("yuvj"):
        return
    cc = stream.codec_context
    for attr, value in (("colorspace", 6), ("color_range", 1), ("color_primaries", 6), ("color_trc", 6)):
        try:
            setattr(cc, attr, value)  # 6 = SMPTE 170M (BT.601 525), 1 = MPEG (limited) range
        except Exception:  # older PyAV: leave the stream untagged
            pass


def _cuda_batch_tile_size(method, weights, dev, dtype, multiple, batch_size) -> Optional[int]:
    """Auto tile size on CUDA for a batch (``fuse`` probes one image; a batch needs B times the memory)."""
    from .fusion import _default_weight, _probe_cuda_bytes_per_pixel, _weights_key
    from .models import list_models
    from .tiling import auto_tile_size

    if method not in list_models():
        return None
    wkey = _weights_key(weights) or _default_weight(method)
    bpp = _probe_cuda_bytes_per_pixel(method, wkey, str(dev), dtype)
    free, _ = torch.cuda.mem_get_info(dev)
    return auto_tile_size(bpp * batch_size, free_bytes=free, size_multiple=multiple)


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


def _first_frames(ir: _Source, vis: _Source, sync: str, start: int, stop: Optional[int], ir_range: Any,
                  window_frames: int, percentiles: Tuple[float, float]):
    """Decode the first pair (sizes) and, for a 16-bit infrared without ``ir_range``, the first
    ``window_frames`` infrared frames' histogram (the window). Nothing but a histogram is kept."""
    first: Optional[_Decoded] = None
    hist = None
    for n, d in enumerate(_decoded_pairs(ir, vis, sync, start, stop)):
        if first is None:
            first = d
            if d.ir.dtype != np.uint16 or ir_range is not None or window_frames == 0:
                break
            hist = np.zeros(65536, dtype=np.int64)
        if n >= window_frames:
            break
        hist += np.bincount(d.ir.ravel(), minlength=65536)
    if first is None:
        where = "" if start == 0 and stop is None else f" in frames {start}..{'end' if stop is None else stop}"
        raise ValueError(f"no frames to fuse{where}: the inputs have no frames that pair")
    window = _window_from_histogram(hist, percentiles) if hist is not None else None
    return first, window


def _output_size(first: _Decoded, resize: Optional[str]) -> Tuple[int, int]:
    ir_hw, vis_hw = first.ir.shape[:2], first.vis.shape[:2]
    if ir_hw != vis_hw and resize is None:
        raise ValueError(
            f"ir and vis differ in size: ir is {ir_hw[0]}x{ir_hw[1]} (HxW), vis is {vis_hw[0]}x{vis_hw[1]}; "
            "align them or pass resize='ir_to_vis' or 'vis_to_ir'"
        )
    return tuple(ir_hw if resize == "vis_to_ir" else vis_hw)  # type: ignore[return-value]


def _pipeline(*, av, ir, vis, rates, sync, start, stop, ir_fixed, resize, size, container, stream, out_rate,
              run, device, batch_size, queue_size, progress, total) -> int:
    """Decode (thread) -> fuse ``batch_size`` frames per ``run(ir, vis)`` call (this thread) ->
    encode (thread); returns the number of frames written. Errors of either thread are re-raised here."""
    pipe = _Pipeline()
    decoded: "queue.Queue[Any]" = queue.Queue(maxsize=queue_size)
    fused: "queue.Queue[Any]" = queue.Queue(maxsize=queue_size)
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    bar = _progress_bar(bool(progress), total)
    state = {"written": 0}
    ir_range = tuple(ir_fixed) if ir_fixed is not None else None

    def decode() -> None:
        with _opened(av, ir, vis, rates) as (ir_src, vis_src):
            for d in _decoded_pairs(ir_src, vis_src, sync, start, stop):
                if not pipe.put(decoded, _prepare(d, ir_range, resize, size)):
                    return
        pipe.put(decoded, _END)

    def encode() -> None:
        first_time, last_pts = None, -1
        time_base = 1 / out_rate
        while True:
            item = pipe.get(fused)
            if item is _END:
                break
            p, fused_y = item
            arr = _to_uint8(_finish(p, fused_y))
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24" if arr.ndim == 3 else "gray")
            if first_time is None:
                first_time = p.time
            pts = max(int(round((p.time - first_time) / float(time_base))), last_pts + 1)
            frame.pts, last_pts = pts, pts
            for packet in stream.encode(frame):
                container.mux(packet)
            state["written"] += 1
            if bar is not None:
                bar.update(1)
        if pipe.stop.is_set():
            return
        for packet in stream.encode(None):
            container.mux(packet)

    threads = [_thread(decode, pipe, "ivfusion-decode"), _thread(encode, pipe, "ivfusion-encode")]
    try:
        with torch.inference_mode():
            batch: List[_Prepared] = []
            while True:
                item = pipe.get(decoded)
                pipe.check()
                if item is not _END:
                    batch.append(item)
                if batch and (len(batch) == batch_size or item is _END):
                    ir_b = torch.stack([p.ir_y for p in batch]).to(device)
                    vis_b = torch.stack([p.vis_y for p in batch]).to(device)
                    out_b = run(ir_b, vis_b).cpu()
                    for p, y in zip(batch, out_b):
                        if not pipe.put(fused, (p, y)):
                            pipe.check()
                    batch = []
                if item is _END:
                    break
        if not pipe.put(fused, _END):
            pipe.check()
        threads[1].join()
        pipe.check()
    except BaseException as exc:
        pipe.fail(exc)
        raise
    finally:
        pipe.stop.set()
        for t in threads:
            t.join()
        if bar is not None:
            bar.close()
    return state["written"]
