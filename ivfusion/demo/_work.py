"""The work behind the demo page, free of Gradio: reading uploads within the limits, the options a
page offers, fusing a pair with several methods, scoring and timing each result.

Everything here takes and returns plain Python, numpy arrays and paths, so it is tested without a
browser or a server; :mod:`ivfusion.demo` wires it to the page.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from ..fusion import _load_model, _resample, fuse, list_methods, method_info
from ..io import from_unit_range, pil_to_array, save_image, to_chw_tensor, to_unit_range
from ..metrics import evaluate
from ..models import get_model_info
from ..models.didfuse import FUSION_RULES

__all__ = [
    "MAX_PIXELS",
    "MAX_FILE_BYTES",
    "DEMO_METRICS",
    "DemoInputError",
    "DemoOption",
    "demo_options",
    "read_upload",
    "as_seen",
    "fusion_kwargs",
    "MethodResult",
    "PairResult",
    "fuse_methods",
    "describe",
]

#: Largest image the demo accepts, in pixels (width x height) per image.
MAX_PIXELS = 20_000_000
#: Largest file the server accepts per upload (a 20-megapixel RGB TIFF, uncompressed, is 60 MB).
MAX_FILE_BYTES = 64 * 2**20
#: The columns of the metrics table, in order (names of :func:`ivfusion.metrics.list_metrics`).
DEMO_METRICS = ("VIF", "Qabf", "MI", "SSIM", "EN", "SD", "SF")


class DemoInputError(ValueError):
    """A request the page reports as a message: a bad upload or option, a size mismatch."""


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class DemoOption:
    """One control of the page's options: a drop-down whose value becomes a :func:`ivfusion.fuse` argument.

    ``choices`` are ``(label, value)`` pairs; the value ``"auto"`` (or ``"none"`` for ``resize``)
    means "leave the argument out". ``methods`` limits the option to some methods (``None``: all).
    Adding an option to the page (e.g. alignment, once ``fuse`` has it) is one more entry of
    :func:`demo_options`; the page, the handler and the API pick it up in order.
    """

    name: str
    label: str
    choices: Tuple[Tuple[str, str], ...]
    default: str
    info: str = ""
    methods: Optional[Tuple[str, ...]] = None
    visible: bool = True

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def fuse_value(self, value: Any) -> Tuple[bool, Any]:
        """``(given, value)``: whether ``fuse`` gets the argument, and its value. ``DemoInputError``
        for a value that is not one of the choices (a client of the API can send anything)."""
        allowed = [v for _, v in self.choices]
        if value is None:
            value = self.default
        if value not in allowed:
            raise DemoInputError(f"{self.label}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        if value in ("auto", "none"):
            return False, None
        return True, value


def demo_options(cuda: Optional[bool] = None) -> List[DemoOption]:
    """The options the page offers, in page order. ``cuda``: whether to show the device choice
    (default: ``torch.cuda.is_available()``); the control exists either way, hidden without CUDA,
    so the API keeps one signature."""
    if cuda is None:
        cuda = torch.cuda.is_available()
    rule_methods = tuple(m for m in list_methods(available_only=True)
                         if method_info(m).kind == "network" and "rule" in get_model_info(m).forward_options)
    rule_default = get_model_info(rule_methods[0]).forward_options["rule"] if rule_methods else "sum"
    precisions = [("auto", "auto"), ("fp32", "fp32"), ("bf16", "bf16")] + ([("fp16 (CUDA)", "fp16")] if cuda else [])
    return [
        DemoOption("resize", "Different sizes",
                   (("refuse the pair", "none"), ("resample the infrared to the visible size", "ir_to_vis"),
                    ("resample the visible to the infrared size", "vis_to_ir")),
                   "none", "what to do when the two images differ in size (bilinear, antialiased)"),
        DemoOption("precision", "Precision", tuple(precisions), "auto",
                   "networks' compute precision; auto: fp16 on CUDA, bf16 on CPUs with native bf16 where safe, "
                   "else fp32"),
        DemoOption("device", "Device", (("auto (CUDA when available)", "auto"), ("cpu", "cpu"), ("cuda", "cuda")),
                   "auto", "where the methods run", visible=cuda),
        DemoOption("rule", "DIDFuse rule", tuple((r, r) for r in FUSION_RULES), rule_default,
                   "how DIDFuse merges the two images' features", methods=rule_methods),
    ]


def fusion_kwargs(method: str, options: Sequence[DemoOption], values: Sequence[Any]) -> Dict[str, Any]:
    """The keyword arguments of :func:`ivfusion.fuse` for ``method``, from the page's option values
    (one per option, in order). Every value is checked, also those of options the method ignores."""
    if len(values) != len(options):
        raise DemoInputError(f"expected {len(options)} option values ({', '.join(o.name for o in options)}), "
                             f"got {len(values)}")
    kwargs: Dict[str, Any] = {}
    for option, value in zip(options, values):
        given, fuse_value = option.fuse_value(value)
        if given and option.applies_to(method):
            kwargs[option.name] = fuse_value
    return kwargs


# --------------------------------------------------------------------------------------------
# Inputs


def read_upload(path: Union[str, Path], label: str, shown_name: Optional[str] = None,
                max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded image in its native depth (as :func:`ivfusion.io.read_image` does), refusing
    files that are not images and images over ``max_pixels`` before decoding their pixels.

    ``label`` names the slot (``"Infrared image"``) and ``shown_name`` the file (default: the file's
    name) in the messages, which never show the server's paths.

    Raises:
        DemoInputError: not a readable image, damaged, too large, or an unsupported layout.
    """
    path = Path(path)
    name = shown_name or path.name
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise DemoInputError(f"{label} {name!r} is {width}x{height} pixels ({width * height / 1e6:.1f} "
                                     f"megapixels); the demo accepts up to {max_pixels / 1e6:g} megapixels per image")
            img.load()
            return pil_to_array(img, name=f"{label} {name!r}")
    except DemoInputError:
        raise
    except Image.DecompressionBombError:
        raise DemoInputError(f"{label} {name!r} is far larger than the demo's limit of "
                             f"{max_pixels / 1e6:g} megapixels per image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        detail = str(exc).replace(str(path), name)
        raise DemoInputError(f"{label} {name!r} is not an image ivfusion can read: PNG, JPEG, TIFF, BMP or WebP, "
                             f"8- or 16-bit ({detail})") from None


def as_seen(image: np.ndarray, *, stretch: bool, size: Tuple[int, int], name: str = "image") -> np.ndarray:
    """A source image as the methods see it, as 8-bit for showing and scoring.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` array as :func:`read_upload` returns.
        stretch: map the image's own minimum..maximum to 0..1 (what :func:`ivfusion.fuse` does to a
            16-bit infrared image by default) instead of the full scale of its dtype.
        size: ``(H, W)`` of the fused image; the image is resampled to it as ``fuse(resize=...)`` does.

    Returns:
        ``uint8`` ``(H, W)`` or ``(H, W, 3)`` of ``size``.
    """
    chw, kind = to_chw_tensor(image, name=name)
    unit = to_unit_range(chw, kind, name=name, value_range="auto" if stretch else None)
    return from_unit_range(_resample(unit, size), "uint8")


# --------------------------------------------------------------------------------------------
# Fusing


@dataclass
class MethodResult:
    """One method's output for one pair."""

    method: str
    #: The fused image, as :func:`ivfusion.fuse` returned it.
    fused: np.ndarray
    #: The PNG written for download (16-bit for 16-bit grey results, else 8-bit).
    png: Path
    #: Wall-clock seconds of the ``fuse`` call.
    seconds: float
    #: The call loaded the network's weights (its first use in this process, or after eviction).
    loaded_weights: bool
    #: ``{metric: value}`` over :data:`DEMO_METRICS`.
    metrics: Dict[str, float] = field(default_factory=dict)


@dataclass
class PairResult:
    """What a request produced: the sources as the methods saw them and one result per method."""

    ir_seen: np.ndarray
    vis_seen: np.ndarray
    results: List[MethodResult]

    def table(self, digits: int = 4) -> Tuple[List[str], List[List[Any]]]:
        """``(header, rows)`` of the metrics table: method, seconds, then :data:`DEMO_METRICS`."""
        header = ["method", "seconds", *DEMO_METRICS]
        rows = [[r.method, round(r.seconds, 3), *(round(r.metrics[m], digits) for m in DEMO_METRICS)]
                for r in self.results]
        return header, rows


ProgressFn = Callable[[float, str], None]


def _png_bits(fused: np.ndarray) -> Optional[int]:
    # 16-bit files hold grey only: a colour result of a 16-bit pair is written as 8-bit.
    return 8 if fused.dtype == np.uint16 and fused.ndim == 3 else None


def fuse_methods(
    ir: np.ndarray,
    vis: np.ndarray,
    methods: Sequence[str],
    options: Sequence[DemoOption],
    values: Sequence[Any],
    out_dir: Union[str, Path],
    stem: str = "fused",
    progress: Optional[ProgressFn] = None,
) -> PairResult:
    """Fuse one pair with each of ``methods`` (in the order of :func:`ivfusion.list_methods`), write each
    result as ``out_dir/<stem>_<method>.png``, and score it on :data:`DEMO_METRICS` against the sources
    as the methods saw them (:func:`as_seen`: 16-bit infrared stretched, resampled when ``resize`` is on).

    Raises:
        DemoInputError: no method, an unknown or unavailable method, a bad option value, sizes that
            differ without ``resize``.
        ValueError, TypeError, RuntimeError, MemoryError: what :func:`ivfusion.fuse` raises.
    """
    available = list_methods(available_only=True)
    if not methods:
        raise DemoInputError("choose at least one method")
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise DemoInputError(f"unknown or unavailable method(s) {', '.join(map(repr, unknown))}; "
                             f"available: {', '.join(available)}")
    methods = [m for m in available if m in methods]  # once each, in the page's order
    per_method = {m: fusion_kwargs(m, options, values) for m in methods}
    resize = per_method[methods[0]].get("resize")
    if ir.shape[:2] != vis.shape[:2] and resize is None:
        raise DemoInputError(
            f"the infrared image is {ir.shape[1]}x{ir.shape[0]} and the visible one {vis.shape[1]}x{vis.shape[0]} "
            "(width x height); choose how to resample one of them under 'Different sizes'")
    size = tuple(ir.shape[:2]) if resize == "vis_to_ir" else tuple(vis.shape[:2])
    ir_seen = as_seen(ir, stretch=ir.dtype == np.uint16, size=size, name="ir")
    vis_seen = as_seen(vis, stretch=False, size=size, name="vis")

    out_dir = Path(out_dir)
    results = []
    for i, method in enumerate(methods):
        if progress is not None:
            progress(i / len(methods), f"{method} ({i + 1}/{len(methods)}): fusing")
        misses = _load_model.cache_info().misses
        start = time.perf_counter()
        fused = fuse(ir, vis, method, **per_method[method])
        seconds = time.perf_counter() - start
        loaded = _load_model.cache_info().misses > misses
        png = save_image(out_dir / f"{stem}_{method}.png", fused, bits=_png_bits(fused))
        if progress is not None:
            progress((i + 0.7) / len(methods), f"{method} ({i + 1}/{len(methods)}): metrics")
        scores = evaluate(fused, ir_seen, vis_seen, list(DEMO_METRICS))
        results.append(MethodResult(method, fused, png, seconds, loaded,
                                    {m: scores[m] for m in DEMO_METRICS}))
    if progress is not None:
        progress(1.0, "done")
    return PairResult(ir_seen, vis_seen, results)


def describe(result: MethodResult) -> str:
    """One line for the page: method, time, whether it included loading the weights."""
    h, w = result.fused.shape[:2]
    note = ", including loading its weights (once per server)" if result.loaded_weights else ""
    finite = all(math.isfinite(v) for v in result.metrics.values())
    return (f"**{result.method}**: {w}x{h} in {result.seconds:.2f} s{note}"
            + ("" if finite else " (some metrics are undefined for this image)"))
