"""The user-facing fusion API: :func:`fuse`, :func:`list_methods` (folders: :mod:`ivfusion.folders`)."""
from __future__ import annotations

import contextlib
import functools
import inspect
import numbers
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ._names import unknown_name
from .classical import CLASSICAL_METHODS
from ._cpu import native_bf16
from ._heap import heap_reuse
from ._memory import available_cpu_bytes, available_cuda_bytes
from .color import looks_like_photograph, rgb_to_ycbcr, ycbcr_to_rgb
from .deploy import load_onnx
from .io import (
    ImageLike,
    from_unit_range,
    is_grey,
    is_same_file,
    to_chw_tensor,
    to_unit_range,
)
from .pretrained import default_weight, file_identity
from .registration import MODELS as REGISTRATION_MODELS
from .registration import Registration, register
from .models import create_model, create_random_model, get_model_info, list_models
from .tiling import auto_tile_size, tiled_apply

__all__ = ["fuse", "list_methods", "method_info", "MethodInfo", "BACKENDS", "InputOrderWarning", "resolve_alignment"]

DEFAULT_METHOD = "refinefuse"
DEFAULT_TILE_OVERLAP = 32
_RESIZE_MODES = ("ir_to_vis", "vis_to_ir")
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Where networks run: PyTorch, or their exported ONNX graph in ONNX Runtime (extra ``ivfusion[onnx]``).
BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class MethodInfo:
    """What ``ivfusion list`` shows for one method."""

    name: str
    kind: str  # "network" or "classical"
    description: str
    #: Manifest name of the weight ``fuse`` uses by default (networks only; None if none ships yet).
    default_weights: Optional[str] = None
    #: Full citation of the paper the method implements ("" for the trivial baselines).
    paper: str = ""
    #: DOI or arXiv link of that paper.
    paper_url: str = ""

    @property
    def is_default(self) -> bool:
        """True for the method :func:`fuse` uses when none is given."""
        return self.name == DEFAULT_METHOD

    @property
    def available(self) -> bool:
        """True when ``fuse(method=name)`` works without extra arguments."""
        return self.kind == "classical" or self.default_weights is not None


def method_info(name: str) -> MethodInfo:
    """Metadata of one fusion method; ``ValueError`` for unknown names."""
    if name in CLASSICAL_METHODS:
        m = CLASSICAL_METHODS[name]
        return MethodInfo(name, "classical", m.description, paper=m.paper, paper_url=m.paper_url)
    if name in list_models():
        info = get_model_info(name)
        return MethodInfo(name, "network", info.description, default_weight(name), info.paper, info.paper_url)
    raise ValueError(unknown_name("method", name, list_methods()))


def list_methods(available_only: bool = False) -> List[str]:
    """Names of the fusion methods: the networks (sorted) then the classical baselines.

    ``available_only=True`` drops networks that have no pretrained weights yet.
    """
    names = list_models() + list(CLASSICAL_METHODS)
    if available_only:
        names = [n for n in names if method_info(n).available]
    return names


# --------------------------------------------------------------------------------------------
# Preparing inputs


class InputOrderWarning(UserWarning):
    """The infrared input looks like a colour photograph: ``ir`` and ``vis`` may be swapped."""


def _warn_if_swapped(ir01: torch.Tensor) -> None:
    """Warn when the infrared ``(3, H, W)`` in [0, 1] looks like a colour photograph. Pseudo-colour (a
    PET/SPECT scan, a thermal palette: chroma that follows brightness, or strong) is a legitimate
    infrared input and passes silently (:func:`~ivfusion.color.looks_like_photograph`)."""
    if looks_like_photograph(ir01):
        warnings.warn(
            "ir: the infrared input is a colour image that looks like a photograph (its colours do not follow "
            "its brightness, as a PET/SPECT scan's or a thermal palette's do); ir and vis may be swapped: "
            "the infrared (or CT/PET/SPECT) image comes first, the visible (or MRI) image second",
            InputOrderWarning, stacklevel=5,  # the caller of fuse() (under its inference_mode wrapper)
        )


def _luma_and_chroma(x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(C, H, W)`` in [0, 1] -> Y ``(1, H, W)`` and CbCr ``(2, H, W)`` (None for grey)."""
    if is_grey(x):
        return x[:1], None
    ycc = rgb_to_ycbcr(x)
    return ycc[:1], ycc[1:]


def _resample(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0, 1)


def _check_layout_args(resize: Optional[str], tile_size: Optional[int], tile_overlap: int) -> None:
    """The checks of ``resize``, ``tile_size`` and ``tile_overlap`` (:func:`fuse`, ``fuse_video``)."""
    if resize is not None and resize not in _RESIZE_MODES:
        raise ValueError(f"resize must be None, 'ir_to_vis' or 'vis_to_ir', got {resize!r}")
    if tile_size is not None and (not isinstance(tile_size, int) or tile_size <= 0):
        raise ValueError(f"tile_size must be a positive int or None, got {tile_size!r}")
    if not isinstance(tile_overlap, int) or tile_overlap < 0:
        raise ValueError(f"tile_overlap must be a non-negative int, got {tile_overlap!r}")


def _check_same_size(ir_hw: Sequence[int], vis_hw: Sequence[int], resize: Optional[str]) -> None:
    if tuple(ir_hw) != tuple(vis_hw) and resize is None:
        raise ValueError(
            f"ir and vis differ in size: ir is {ir_hw[0]}x{ir_hw[1]} (HxW), vis is {vis_hw[0]}x{vis_hw[1]}; "
            "align them or pass resize='ir_to_vis' or 'vis_to_ir'"
        )


@dataclass
class _PreparedPair:
    """A pair ready for a method: the lumas ``(1, H, W)`` in [0, 1] and what :func:`_reattach_colour` needs."""

    ir_y: torch.Tensor
    vis_y: torch.Tensor
    chroma: Optional[torch.Tensor]  # CbCr of the visible image, else of the infrared, else None
    vis_three: bool  # the visible image has 3 channels (grey output is then repeated to RGB)
    vis_kind: str  # dtype kind of the visible image: the output's
    #: With a registration: the ``(H, W)`` footprint of the warped infrared (outside it the fused
    #: image is the visible one).
    ir_mask: Optional[torch.Tensor] = None


def _prepare_pair(ir_t: torch.Tensor, ir_kind: str, vis_t: torch.Tensor, vis_kind: str, resize: Optional[str],
                  ir_range: Any, registration: Optional[Registration] = None) -> _PreparedPair:
    """Tensors of :func:`~ivfusion.io.to_chw_tensor` (same size unless ``resize`` or ``registration``)
    -> lumas and chroma. With a registration the infrared is warped into the visible frame and,
    outside its footprint, replaced by the visible luma (so the method sees no false edge there)."""
    if ir_range is None and ir_kind == "uint16":
        ir_range = "auto"
    ir01 = to_unit_range(ir_t, ir_kind, name="ir", value_range=ir_range)
    vis01 = to_unit_range(vis_t, vis_kind, name="vis")
    mask = None
    if registration is not None:
        _check_registration(registration, ir01.shape[-2:], vis01.shape[-2:])
        ir01, mask = registration.warp_tensor(ir01)
    elif resize == "ir_to_vis":
        ir01 = _resample(ir01, vis01.shape[-2:])
    elif resize == "vis_to_ir":
        vis01 = _resample(vis01, ir01.shape[-2:])
    ir_y, ir_chroma = _luma_and_chroma(ir01)
    if ir_chroma is not None:
        _warn_if_swapped(ir01)
    vis_y, vis_chroma = _luma_and_chroma(vis01)
    if mask is not None:
        ir_y = torch.where(mask, ir_y, vis_y)
    chroma = vis_chroma if vis_chroma is not None else ir_chroma
    return _PreparedPair(ir_y, vis_y, chroma, vis01.shape[0] == 3, vis_kind, mask)


def _check_registration(reg: Registration, ir_hw: Sequence[int], vis_hw: Sequence[int]) -> None:
    if tuple(reg.ir_size) != tuple(ir_hw) or tuple(reg.vis_size) != tuple(vis_hw):
        raise ValueError(
            f"align: the registration is for infrared {reg.ir_size[0]}x{reg.ir_size[1]} -> visible "
            f"{reg.vis_size[0]}x{reg.vis_size[1]} (HxW), but the pair is infrared {ir_hw[0]}x{ir_hw[1]} and "
            f"visible {vis_hw[0]}x{vis_hw[1]}")


def resolve_alignment(align: Any, ir: Optional[ImageLike] = None, vis: Optional[ImageLike] = None,
                      ir_range: Any = None) -> Optional[Registration]:
    """``align`` of :func:`fuse` as a :class:`~ivfusion.registration.Registration` (or None):
    a registration as it is, a model name estimated on ``(ir, vis)`` with
    :func:`ivfusion.register`, anything else a path to a saved registration (JSON)."""
    if align is None or isinstance(align, Registration):
        return align
    if isinstance(align, str) and align in REGISTRATION_MODELS:
        if ir is None or vis is None:
            raise ValueError(f"align={align!r} needs the pair to estimate the registration on")
        return register(ir, vis, align, ir_range=ir_range)
    if isinstance(align, (str, os.PathLike)):
        path = Path(align).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"align: {str(align)!r} is neither a model ({', '.join(REGISTRATION_MODELS)}) "
                                    f"nor an existing registration file")
        return Registration.load(path)
    raise TypeError(f"align: expected None, a model name ({', '.join(REGISTRATION_MODELS)}), a Registration or "
                    f"a path to a registration JSON file, got {type(align).__name__}")


def _check_align_resize(align: Any, resize: Optional[str]) -> None:
    if align is not None and resize == "vis_to_ir":
        raise ValueError("resize='vis_to_ir' cannot be combined with align: a registration warps the infrared "
                         "into the visible frame (the output has the visible image's size)")


def _reattach_colour(fused_y: torch.Tensor, pair: _PreparedPair) -> np.ndarray:
    """The fused luma with the pair's chroma (or repeated to RGB for a 3-channel grey visible image);
    outside a registered infrared's footprint the visible luma."""
    if pair.ir_mask is not None:
        fused_y = torch.where(pair.ir_mask.to(fused_y.device), fused_y, pair.vis_y.to(fused_y))
    if pair.chroma is not None:
        out = ycbcr_to_rgb(torch.cat([fused_y, pair.chroma.to(fused_y.dtype)], dim=0))
    elif pair.vis_three:
        out = fused_y.expand(3, -1, -1)
    else:
        out = fused_y
    return from_unit_range(out, pair.vis_kind)


def _resolve_device(device: Optional[Union[str, torch.device]]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: not a valid torch device: {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was requested but torch.cuda.is_available() is False")
    return dev


def _resolve_precision(
    precision: Optional[str], device: torch.device, half_ok: bool, cpu_bf16_ok: bool = False
) -> torch.dtype:
    if precision is None:
        if device.type == "cuda":
            return torch.float16 if half_ok else torch.float32
        return torch.bfloat16 if device.type == "cpu" and cpu_bf16_ok and native_bf16() else torch.float32
    try:
        dtype = _PRECISIONS[precision]
    except KeyError:
        raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}") from None
    if dtype == torch.float16 and device.type != "cuda":
        raise ValueError("precision: fp16 is only supported on CUDA; use fp32 or bf16 on CPU")
    return dtype


# --------------------------------------------------------------------------------------------
# Building the fusion function of a method


def _check_options(name: str, options: Dict[str, Any], accepted: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        acc = ", ".join(accepted) if accepted else "none"
        raise ValueError(f"method {name!r} does not accept option(s) {', '.join(unknown)}; accepted: {acc}")


def _check_option_types(name: str, fn: Callable[..., Any], options: Dict[str, Any]) -> None:
    """Each option of a classical method must be of its default's kind: an integer where the default
    is an ``int``, a finite real number where it is a ``float``; ``ValueError`` naming the option."""
    params = inspect.signature(fn).parameters
    for key, value in options.items():
        default = params[key].default
        is_bool = isinstance(value, bool)
        if isinstance(default, int) and (is_bool or not isinstance(value, numbers.Integral)):
            raise ValueError(f"method {name!r}: option {key} must be an integer, got {value!r}")
        if isinstance(default, float) and (is_bool or not isinstance(value, numbers.Real)
                                           or not np.isfinite(float(value))):
            raise ValueError(f"method {name!r}: option {key} must be a finite number, got {value!r}")


def _check_distinct_inputs(ir: Any, vis: Any) -> None:
    """``ValueError`` when ``ir`` and ``vis`` are paths to the same file (or folder): a slip that would
    otherwise fuse an image with itself and return something that looks plausible. Arrays, images and
    tensors are not compared (pass one array twice to fuse an image with itself on purpose)."""
    if isinstance(ir, (str, os.PathLike)) and isinstance(vis, (str, os.PathLike)) and is_same_file(ir, vis):
        raise ValueError(f"ir and vis are the same file ({str(ir)!r}); give the infrared and the visible "
                         "image (to fuse an image with itself on purpose, pass its array twice)")


_MODEL_LOCK = threading.Lock()


def _cached_model(method: str, weights: Optional[str], device: str, dtype: torch.dtype) -> torch.nn.Module:
    """The network of ``(method, weights)`` on ``device``, built once per process (8 kept).

    A weight file given by path is cached under its identity (inode, size, modification and change
    times), so a file replaced or rewritten in place is loaded (and checked) again. One lock around
    the cache: threads that start together on a cold cache load the network once, not each."""
    identity = file_identity(weights) if weights is not None and os.path.isfile(weights) else None
    with _MODEL_LOCK:
        return _load_model(method, weights, device, dtype, identity)


@functools.lru_cache(maxsize=8)
def _load_model(method: str, weights: Optional[str], device: str, dtype: torch.dtype,
                identity: Optional[Tuple[Any, ...]]) -> torch.nn.Module:
    del identity  # part of the cache key only
    if weights == "random":
        model = create_random_model(method)
    else:
        model = create_model(method, pretrained=True, weights=weights)
    # Channels-last on every device: oneDNN's CPU convolutions run on it without reordering every
    # activation (a 16-channel 3x3 convolution at 640x480: 14.4 -> 8.1 ms, benchmarks/cpu_allocator.py),
    # cuDNN's use tensor cores with it.
    return model.to(device).to(memory_format=torch.channels_last)


def _network_fn(
    method: str, weights: Optional[Union[str, os.PathLike]], device: torch.device, dtype: torch.dtype
) -> Callable[..., torch.Tensor]:
    if weights is None:
        weights = default_weight(method)
        if weights is None:
            working = ", ".join(list_methods(available_only=True))
            raise RuntimeError(
                f"no pretrained weights are available yet for method {method!r}; methods that work "
                f"now: {working}. (For testing only, weights='random' runs the untrained network.)"
            )
    return _cached_model(method, _weights_key(weights), str(device), dtype)


def _weights_key(weights: Optional[Union[str, os.PathLike]]) -> Optional[str]:
    """Hashable cache key: file paths resolved to absolute form, names kept as they are."""
    if weights is None:
        return None
    if isinstance(weights, os.PathLike) or str(weights).endswith(".safetensors"):
        return str(Path(weights).resolve())
    return str(weights)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")


def _onnx_fn(method: str, weights: Optional[Union[str, os.PathLike]], device: Optional[Union[str, torch.device]],
             precision: Optional[str], options: Dict[str, Any]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The exported graph of a network in an ONNX Runtime session (``backend="onnxruntime"``)."""
    if method in CLASSICAL_METHODS:
        raise ValueError(f"backend: 'onnxruntime' runs exported networks; {method!r} is a classical method "
                         "(use backend='torch')")
    if method not in list_models():
        raise ValueError(unknown_name("method", method, list_methods()))
    if precision not in (None, "fp32"):
        raise ValueError(f"precision: the onnxruntime backend runs the exported float32 graph; got {precision!r}")
    return load_onnx(method, weights, device=device, options=options)


def _method_fn(
    method: str,
    weights: Optional[Union[str, os.PathLike]],
    device: torch.device,
    precision: Optional[str],
    options: Dict[str, Any],
) -> Tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int, torch.dtype, bool]:
    """Return ``(fn, size_multiple, compute dtype, pixelwise)`` for a method (PyTorch backend)."""
    if method in CLASSICAL_METHODS:
        m = CLASSICAL_METHODS[method]
        params = list(inspect.signature(m.fn).parameters)[2:]
        _check_options(method, options, params)
        _check_option_types(method, m.fn, options)
        if weights is not None:
            raise ValueError(f"weights: method {method!r} is classical and takes no weights")
        dtype = _resolve_precision(precision, device, half_ok=False)
        return functools.partial(m.fn, **options), 1, dtype, m.pixelwise
    if method in list_models():
        info = get_model_info(method)
        _check_options(method, options, list(info.forward_options))
        dtype = _resolve_precision(precision, device, info.half_precision, info.cpu_bf16)
        model = _network_fn(method, weights, device, dtype)
        return functools.partial(model, **options), info.size_multiple, dtype, False
    raise ValueError(unknown_name("method", method, list_methods()))


def _build_method(
    method: str,
    weights: Optional[Union[str, os.PathLike]],
    device: Optional[Union[str, torch.device]],
    precision: Optional[str],
    options: Dict[str, Any],
    backend: str = "torch",
) -> Tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int, torch.dtype, bool, torch.device]:
    """``(fn, size_multiple, compute dtype, pixelwise, device of the tensors)`` of a method on a backend.

    With ``backend="onnxruntime"`` the graph runs on the execution provider chosen from ``device``;
    the tensors around it (colour, tiling) stay on the CPU.
    """
    _check_backend(backend)
    if weights == "random" and method in list_models():
        warnings.warn(
            f"{method}: running with random (untrained) weights; the output is not a meaningful fusion",
            stacklevel=3,
        )
    if backend == "onnxruntime":
        fn = _onnx_fn(method, weights, device, precision, options)
        return fn, get_model_info(method).size_multiple, torch.float32, False, torch.device("cpu")
    dev = _resolve_device(device)
    return (*_method_fn(method, weights, dev, precision, options), dev)


@functools.lru_cache(maxsize=16)
def _probe_cuda_bytes_per_pixel(method: str, weights: Optional[str], device: str, dtype: torch.dtype) -> float:
    """Peak CUDA memory per input pixel of one forward pass, measured on a 256x256 probe."""
    model = _cached_model(method, weights, device, dtype)
    x = torch.rand(1, 1, 256, 256, device=device)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), _autocast(torch.device(device), dtype):
        model(x, x)
    torch.cuda.synchronize(device)
    return max(torch.cuda.max_memory_allocated(device) - base, 1) / (256 * 256)


def _cpu_tile_size(method: str, shape: Tuple[int, ...], multiple: int) -> Optional[int]:
    """``None`` when one CPU pass over ``shape`` ``(B, 1, H, W)`` fits in 60 % of the memory this
    process may still use (:func:`~ivfusion._memory.available_cpu_bytes`), else the largest square
    tile that does; ``MemoryError`` when not even a 256-pixel tile fits."""
    bpp = get_model_info(method).cpu_bytes_per_pixel
    available = available_cpu_bytes()
    if bpp is None or available is None:
        return None
    per_pixel = bpp * shape[0]
    if per_pixel * shape[-2] * shape[-1] <= 0.6 * available:
        return None
    side = auto_tile_size(per_pixel, free_bytes=available, size_multiple=multiple)
    if per_pixel * side * side > 0.9 * available:
        raise MemoryError(
            f"{method}: not enough memory to fuse a {shape[-2]}x{shape[-1]} image on the CPU, even in "
            f"{side}x{side} tiles (about {per_pixel * side * side / 2**30:.1f} GiB each); "
            f"{available / 2**30:.2f} GiB can still be allocated (free memory, cgroup and ulimit -v limits)"
        )
    return side


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------
# fuse


@torch.inference_mode()
def fuse(
    ir: ImageLike,
    vis: ImageLike,
    method: str = DEFAULT_METHOD,
    *,
    device: Optional[Union[str, torch.device]] = None,
    tile_size: Optional[int] = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    resize: Optional[str] = None,
    ir_range: Optional[Tuple[float, float]] = None,
    weights: Optional[Union[str, os.PathLike]] = None,
    precision: Optional[str] = None,
    backend: str = "torch",
    align: Any = None,
    **options: Any,
) -> np.ndarray:
    """Fuse an infrared (or CT/PET/SPECT) image with a visible (or MRI) image.

    Args:
        ir: infrared image: path, PIL image, numpy array (``HxW``, ``HxWx1``, ``HxWx3``;
            ``uint8``, ``uint16`` or float in [0, 1]) or torch tensor (``HxW``, ``CxHxW``,
            ``1xCxHxW``). A 3-channel image whose channels are equal (grey saved as RGB) is
            used as grey; a genuinely colour one (e.g. PET pseudo-colour) contributes its luma,
            and its chroma when the visible image is grey.
        vis: visible (or MRI) image, same kinds. Colour images are fused on their BT.601 luma
            ``Y``; their Cb/Cr are reattached to the fused ``Y``.
        method: a name from :func:`list_methods`; default ``"refinefuse"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; default CUDA when available.
        tile_size: process in overlapping ``tile_size`` squares to bound memory. ``None``: networks
            pick the largest tile that fits free GPU memory on CUDA; on the CPU they tile only when
            one pass would not fit in 60 % of what the process may still allocate (the smallest of
            ``MemAvailable``, the cgroup limit and ``ulimit -v``), from each network's measured
            bytes per pixel, and raise ``MemoryError`` when not even a 256-pixel tile fits.
        tile_overlap: pixels shared by neighbouring tiles, blended with a raised-cosine ramp.
        resize: inputs of different sizes raise ``ValueError`` unless ``"ir_to_vis"`` (resample
            the infrared to the visible size) or ``"vis_to_ir"``; bilinear with antialiasing.
        ir_range: how the infrared is mapped to [0, 1]. ``None``: ``uint8`` / 255, ``uint16`` by the
            image's own range (its minimum -> 0, maximum -> 1; raw thermal frames use a narrow part
            of the 16-bit scale), float as is. ``(lo, hi)``: ``lo -> 0``, ``hi -> 1``, clipped, for
            any dtype (use ``(0, 65535)`` for the full 16-bit scale, or a fixed radiometric window
            so a video sequence keeps a constant mapping).
        weights: networks only: ``None`` (the method's pretrained default), a weight name from the
            manifest, a path to a ``.safetensors`` file, or ``"random"`` (untrained; tests only).
            A file that is a copy of a manifest weight's release (its metadata names the weight and
            its header is the release's) must match the manifest's SHA-256 (``ChecksumError``);
            a file changed on disk is loaded again on the next call.
        precision: ``"fp32"``, ``"fp16"`` (CUDA) or ``"bf16"``. Default: fp16 autocast on CUDA for
            networks that are safe in half precision; on CPUs with native bf16 (AVX512-BF16, AMX,
            Arm BF16) bf16 autocast for the networks whose bf16 error on the validation pairs stays
            below one grey level (``ivfusion.get_model_info(name).cpu_bf16``); fp32 otherwise.
        backend: ``"torch"`` (default) or ``"onnxruntime"``: networks only, run as their exported
            ONNX graph (extra ``ivfusion[onnx]``). ``weights`` may then also be a ``.onnx`` file from
            :func:`ivfusion.export_onnx`; otherwise the weight is exported once and cached (see
            :func:`ivfusion.deploy.cached_onnx_export`). ``device`` picks the execution provider
            (``"cpu"``, ``"cuda"``; default CUDA when onnxruntime has it); float32 only. Colour,
            tiling and dtypes are handled as with the torch backend.
        align: register the infrared to the visible image first (cameras that are not aligned pixel
            for pixel): ``None`` (default: the pair is aligned), ``"affine"``, ``"homography"`` or
            ``"deformable"`` (estimated on this pair with :func:`ivfusion.register`), a
            :class:`~ivfusion.registration.Registration`, or the path of one saved with
            ``Registration.save`` (a calibrated rig). The infrared is warped into the visible frame
            (any size; ``resize`` may be None or ``"ir_to_vis"``); outside its warped footprint the
            fused image is the visible image.
        options: method options, e.g. ``rule="average"`` for DIDFuse, ``levels=5`` for
            ``laplacian``.

    Returns:
        The fused image as a numpy array of the visible image's size (after ``resize``): ``HxW``
        for grey inputs, ``HxWx3`` RGB when either input is colour or the visible image has 3
        channels. The dtype follows the visible input: ``uint8`` in -> ``uint8`` out, ``uint16``
        -> ``uint16``, float -> ``float32`` in [0, 1].

    Raises:
        ValueError: unknown method or option, an option of the wrong type, size mismatch, bad
            ``resize``/``ir_range``/``device``, float data outside [0, 1], an empty image (0 pixels),
            ``ir`` and ``vis`` paths naming the same file, a registration made for other image sizes.
        TypeError: unsupported input type or dtype.
        FileNotFoundError: a path that does not exist.
        IsADirectoryError: a path that is a directory.
        RuntimeError: a network whose pretrained weights are not available
            (``ivfusion.pretrained.ChecksumError``, a ``RuntimeError``: a damaged weight file).
        MemoryError: a network cannot fit even a 256-pixel tile in the memory left on the CPU.
    """
    _check_layout_args(resize, tile_size, tile_overlap)
    _check_distinct_inputs(ir, vis)
    _check_align_resize(align, resize)
    fn, multiple, dtype, pixelwise, dev = _build_method(method, weights, device, precision, options, backend)

    ir_t, ir_kind = to_chw_tensor(ir, name="ir")
    vis_t, vis_kind = to_chw_tensor(vis, name="vis")
    registration = resolve_alignment(align, ir, vis, ir_range)
    if registration is None:
        _check_same_size(ir_t.shape[-2:], vis_t.shape[-2:], resize)
    pair = _prepare_pair(ir_t.to(dev), ir_kind, vis_t.to(dev), vis_kind, resize, ir_range, registration)
    fused_y = _run(fn, pair.ir_y[None], pair.vis_y[None], dev, dtype, multiple, tile_size, tile_overlap,
                   method, weights, pixelwise)[0]
    return _reattach_colour(fused_y, pair)


def _run(
    fn: Callable[..., torch.Tensor],
    ir: torch.Tensor,
    vis: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    multiple: int,
    tile_size: Optional[int],
    tile_overlap: int,
    method: str,
    weights: Any,
    pixelwise: bool,
) -> torch.Tensor:
    h, w = ir.shape[-2:]
    if tile_size is None and device.type == "cuda" and not pixelwise and method in list_models():
        wkey = _weights_key(weights) or default_weight(method)
        bpp = _probe_cuda_bytes_per_pixel(method, wkey, str(device), dtype)
        tile_size = auto_tile_size(bpp, free_bytes=available_cuda_bytes(device), size_multiple=multiple)
    elif tile_size is None and device.type == "cpu" and not pixelwise and method in list_models():
        tile_size = _cpu_tile_size(method, tuple(ir.shape), multiple)
    if device.type == "cuda":
        ir = ir.contiguous(memory_format=torch.channels_last)
        vis = vis.contiguous(memory_format=torch.channels_last)
    heap = heap_reuse((method, tuple(ir.shape), dtype)) if device.type == "cpu" else contextlib.nullcontext()
    with heap, _autocast(device, dtype):
        if tile_size is not None and (h > tile_size or w > tile_size):
            out = tiled_apply(fn, ir, vis, tile_size=tile_size, overlap=tile_overlap, size_multiple=multiple)
        else:
            out = fn(ir, vis)
    return out.float().clamp_(0.0, 1.0)
