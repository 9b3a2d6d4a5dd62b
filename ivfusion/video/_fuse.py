"""The public entry point :func:`fuse_video` and its :class:`VideoReport`: the arguments are
checked, the encoder and the method built and the first frames decoded (so that errors come
before any output), then the pipeline runs into an atomic encoder.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from ..fusion import (
    DEFAULT_METHOD,
    DEFAULT_TILE_OVERLAP,
    _build_method,
    _check_align_resize,
    _check_distinct_inputs,
    _check_layout_args,
    resolve_alignment,
    _probe_cuda_bytes_per_pixel,
    _run,
    _weights_key,
)
from .._memory import available_cuda_bytes
from ..models import list_models
from ..pretrained import default_weight
from ..registration import MODELS as REGISTRATION_MODELS
from ..registration import Registration, register_pairs
from ..tiling import auto_tile_size
from ._encode import (
    DEFAULT_PIX_FMT,
    _AtomicEncoder,
    _check_frame_size,
    _check_output,
    _check_pix_fmt,
    _encoder_options,
    _resolve_codec,
)
from ._mapping import _first_frames, _output_size, _prepare
from ._pipeline import _run_pipeline
from ._sources import SYNC_MODES, PathLike, _check_metadata, _decoded_pairs, _expected_frames, _input_rates, _opened


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
    #: The fixed registration of every frame (``align``), or None.
    registration: Optional[Registration] = None

    @property
    def throughput(self) -> float:
        """Frames written per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# fuse_video


def _is_int_at_least(value: Any, minimum: int) -> bool:
    """``value`` is an int (not a bool) ``>= minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


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
        if v is not None and not _is_int_at_least(v, 0):
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
    progress: bool = True,
    queue_size: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    tile_size: Optional[int] = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    resize: Optional[str] = None,
    weights: Optional[PathLike] = None,
    precision: Optional[str] = None,
    backend: str = "torch",
    align: Any = None,
    align_frames: int = 5,
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
        progress: a ``tqdm`` progress bar on stderr when stderr is a terminal (default); ``False``:
            none. Same default as :func:`ivfusion.fuse_dir`.
        queue_size: frames held in each queue between the decoder, the fusion and the encoder
            (default ``max(2 * batch_size, 4)``); memory stays bounded by it whatever the length of
            the video.
        device: as in :func:`ivfusion.fuse`.
        tile_size: as in :func:`ivfusion.fuse`.
        tile_overlap: as in :func:`ivfusion.fuse`.
        resize: as in :func:`ivfusion.fuse`; frames of different sizes need it (or ``align``).
        weights: as in :func:`ivfusion.fuse`.
        precision: as in :func:`ivfusion.fuse`.
        backend: as in :func:`ivfusion.fuse`.
        options: method options, as in :func:`ivfusion.fuse`.
        align: one fixed registration for every frame (the rig does not move): a
            :class:`~ivfusion.registration.Registration` or the path of a saved one, or a model name
            (``"affine"``, ``"homography"``, ``"deformable"``) to estimate it once from the first
            ``align_frames`` frame pairs of the range (:func:`ivfusion.registration.register_pairs`).
            The output has the visible frames' size; outside the warped infrared's footprint it is
            the visible video. The registration used is ``VideoReport.registration``.
        align_frames: frame pairs the registration is estimated from (``align`` a model name).

    Returns:
        Frames written, input frame rate, output path, seconds, ... (a :class:`VideoReport`).

    Raises:
        ImportError: PyAV is not installed (extra ``ivfusion[video]``).
        ValueError: frame-rate or frame-count mismatch under ``sync="strict"``, size mismatch
            without ``resize``, ``out`` being an input, ``ir`` and ``vis`` the same file or folder,
            unreadable input, bad option, no frames.
        IsADirectoryError: ``out`` is a directory.
        OSError: the output cannot be written (no permission, a read-only or full disk), with a
            message naming ``out``.
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
    if batch_size is not None and not _is_int_at_least(batch_size, 1):
        raise ValueError(f"batch_size must be an int >= 1 or None, got {batch_size!r}")
    if not _is_int_at_least(ir_window_frames, 0):
        raise ValueError(f"ir_window_frames must be an int >= 0, got {ir_window_frames!r}")
    try:
        p_lo, p_hi = (float(v) for v in ir_percentiles)
    except (TypeError, ValueError):
        raise ValueError(f"ir_percentiles: expected (low, high), got {ir_percentiles!r}") from None
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ValueError(f"ir_percentiles: need 0 <= low < high <= 100, got ({p_lo}, {p_hi})")
    _check_layout_args(resize, tile_size, tile_overlap)
    _check_align_resize(align, resize)
    if not _is_int_at_least(align_frames, 1):
        raise ValueError(f"align_frames must be an int >= 1, got {align_frames!r}")
    if crf is not None and not _is_int_at_least(crf, 0):
        raise ValueError(f"crf must be an int >= 0, got {crf!r}")
    if fps is not None and not (isinstance(fps, (int, float, Fraction)) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if queue_size is not None and not _is_int_at_least(queue_size, 1):
        raise ValueError(f"queue_size must be an int >= 1, got {queue_size!r}")

    # ---- output path
    _check_distinct_inputs(ir, vis)
    out = _check_output(out, ir, vis, overwrite)

    # ---- encoder and method (errors before any decoding)
    codec = _resolve_codec(av, codec)
    _check_pix_fmt(av, codec, pix_fmt)
    enc_options = _encoder_options(codec, crf, codec_options)
    fn, multiple, dtype, pixelwise, dev = _build_method(method, weights, device, precision, options, backend)
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
    registration = _video_registration(av, ir, vis, rates, sync, start, stop, align, align_frames, ir_fixed)
    size = _output_size(first, resize, registration)
    _prepare(first, ir_fixed, resize, size, registration)  # per-frame errors (bad ir_range, sizes) before any output
    _check_frame_size(av, pix_fmt, size)

    # ---- encode into a temporary file next to out, renamed when complete
    with _AtomicEncoder(av, out, codec=codec, rate=out_rate, size=size, pix_fmt=pix_fmt,
                        options=enc_options) as encoder:
        _run_pipeline(
            av=av, ir=ir, vis=vis, rates=rates, sync=sync, start=start, stop=stop, ir_fixed=ir_fixed,
            resize=resize, size=size, encoder=encoder,
            run=functools.partial(_run, fn, device=dev, dtype=dtype, multiple=multiple, tile_size=tile_size,
                                  tile_overlap=tile_overlap, method=method, weights=weights, pixelwise=pixelwise),
            device=dev, batch_size=batch_size, queue_size=queue_size, progress=progress, total=total,
            registration=registration,
        )
    return VideoReport(output=out, frames=encoder.frames, fps=float(out_rate),
                       seconds=time.perf_counter() - t_start, size=size, codec=codec,
                       ir_range=None if ir_fixed is None else (float(ir_fixed[0]), float(ir_fixed[1])),
                       registration=registration)


def _video_registration(av, ir, vis, rates, sync: str, start: int, stop: Optional[int], align: Any, n: int,
                        ir_fixed: Any) -> Optional[Registration]:
    """``align`` of :func:`fuse_video` as one registration; a model name is estimated from the first
    ``n`` frame pairs of the range (decoded once more; only those frames are kept)."""
    if not (isinstance(align, str) and align in REGISTRATION_MODELS):
        return resolve_alignment(align)
    pairs = []
    with _opened(av, ir, vis, rates) as (ir_src, vis_src):
        for d in _decoded_pairs(ir_src, vis_src, sync, start, stop):
            pairs.append((d.ir, d.vis))
            if len(pairs) == n:
                break
    return register_pairs(pairs, align, ir_range=ir_fixed)


def _cuda_batch_tile_size(method, weights, dev, dtype, multiple, batch_size) -> Optional[int]:
    """Auto tile size on CUDA for a batch (``fuse`` probes one image; a batch needs B times the memory)."""
    if method not in list_models():
        return None
    wkey = _weights_key(weights) or default_weight(method)
    bpp = _probe_cuda_bytes_per_pixel(method, wkey, str(dev), dtype)
    return auto_tile_size(bpp * batch_size, free_bytes=available_cuda_bytes(dev), size_multiple=multiple)
