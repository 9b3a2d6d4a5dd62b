"""Output of :func:`~ivfusion.video.fuse_video`: encoder settings and :class:`_AtomicEncoder`,
which encodes into a hidden temporary file next to the output and renames it only when the
video is complete.
"""
from __future__ import annotations

import errno
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ..io import _write_error, check_output_file, is_same_file, remove_stale_temporaries, temporary_path

#: Encoder used when ``codec=None``: H.264 through x264, or :data:`FALLBACK_CODEC` without it.
DEFAULT_CODEC = "libx264"
FALLBACK_CODEC = "mpeg4"
DEFAULT_CRF = 18
DEFAULT_PIX_FMT = "yuv420p"
#: Encoders that take a constant-rate-factor option ``crf``.
_CRF_CODECS = ("libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1")
#: mpeg4-style encoders get a fixed quantiser instead (as ``ffmpeg -q:v 3``: good quality). PyAV
#: does not pass ``global_quality`` on to the frames as the ffmpeg tool does, so the quantiser is
#: pinned through ``qmin = qmax``.
_QSCALE = 3


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


def _check_frame_size(av: Any, pix_fmt: str, size: Tuple[int, int]) -> None:
    sub_w, sub_h = _subsampling(av, pix_fmt)
    if size[1] % sub_w or size[0] % sub_h:
        raise ValueError(f"pix_fmt {pix_fmt!r} needs a frame width divisible by {sub_w} and height by {sub_h}; "
                         f"the output is {size[1]}x{size[0]} (WxH): pass pix_fmt='yuv444p' or crop the inputs")


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


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return np.round(arr / 257.0).astype(np.uint8)
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# The output file


def _check_output(out: Union[str, os.PathLike], ir: Union[str, os.PathLike], vis: Union[str, os.PathLike],
                  overwrite: bool) -> Path:
    """``out`` as a Path, checked before anything is decoded or written."""
    out = Path(out).expanduser()
    for name, src in (("ir", ir), ("vis", vis)):
        if is_same_file(out, src):
            raise ValueError(f"out: {str(out)!r} is the {name} input; choose another output path")
    if out.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"out: {str(out)!r} is a directory; give a video file path")
    if out.exists() and not overwrite:
        raise FileExistsError(f"out: {str(out)!r} exists; pass overwrite=True to replace it")
    if not out.suffix:
        raise ValueError(f"out: {str(out)!r} has no extension to choose the container (.mp4, .mkv ...)")
    return out


class _AtomicEncoder:
    """``with _AtomicEncoder(...) as enc: enc.write(frame, t) ...; enc.flush()``.

    Entering opens the encoder on a hidden temporary file next to ``out``. Leaving the block
    normally closes the container, syncs the file to disk and renames it to ``out``; leaving it by
    any exception (``KeyboardInterrupt`` included) removes the temporary file, so nothing is left
    under ``out`` and a file that was to be replaced stays as it was.
    """

    def __init__(self, av: Any, out: Path, *, codec: str, rate: Fraction, size: Tuple[int, int], pix_fmt: str,
                 options: Dict[str, str]) -> None:
        self.av, self.out, self.codec, self.rate = av, out, codec, rate
        self.size, self.pix_fmt, self.options = size, pix_fmt, options
        self.container: Any = None
        self.stream: Any = None
        self.tmp: Optional[Path] = None
        #: Frames written so far.
        self.frames = 0
        self._first_time: Optional[float] = None
        self._last_pts = -1

    def __enter__(self) -> "_AtomicEncoder":
        try:
            check_output_file(self.out).parent.mkdir(parents=True, exist_ok=True)
            # what a run killed by SIGKILL left behind (a caught signal removes its own temporary)
            remove_stale_temporaries([self.out])
            self.tmp = temporary_path(self.out, f".part{self.out.suffix}")
        except OSError as exc:
            raise _write_error(self.out, exc) from exc
        try:
            self._open()
        except BaseException:
            self._discard()
            raise
        return self

    def _open(self) -> None:
        av, (height, width) = self.av, self.size
        try:
            self.container = av.open(str(self.tmp), "w")
        except ValueError as exc:
            raise ValueError(f"out: no container format for the extension {self.out.suffix!r} ({exc})") from None
        self.stream = self.container.add_stream(self.codec, rate=self.rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, self.pix_fmt
        self.stream.codec_context.options = self.options
        _tag_bt601(self.stream, self.pix_fmt)
        try:
            self.container.start_encoding()
        except av.error.FFmpegError as exc:
            raise ValueError(f"cannot open the {self.codec} encoder ({self.pix_fmt}, {width}x{height}, options "
                             f"{self.options}): {exc}") from exc

    def write(self, image: np.ndarray, t: float) -> None:
        """Encode a fused frame (any dtype :func:`ivfusion.fuse` returns) shown at ``t`` seconds;
        times count from the first frame written, at the output rate (at least one tick apart)."""
        arr = _to_uint8(image)
        frame = self.av.VideoFrame.from_ndarray(arr, format="rgb24" if arr.ndim == 3 else "gray")
        if self._first_time is None:
            self._first_time = t
        pts = max(int(round((t - self._first_time) / float(1 / self.rate))), self._last_pts + 1)
        frame.pts, self._last_pts = pts, pts
        self._encode(frame)
        self.frames += 1

    def flush(self) -> None:
        """Drain the encoder (the frames it still holds); call once after the last frame."""
        self._encode(None)

    def _encode(self, frame: Any) -> None:
        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except OSError as exc:  # a full disk, a lost mount ...: name the output, not the temporary
            raise _write_error(self.out, exc) from exc

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self.container.close()
            self.container = None
            with open(self.tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp, self.out)
        except BaseException as exc:
            self._discard()
            if isinstance(exc, OSError):
                raise _write_error(self.out, exc) from exc
            raise

    def _discard(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:
                pass
            self.container = None
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass
