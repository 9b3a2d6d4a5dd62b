"""Colour conversion between RGB and full-range BT.601 YCbCr.

All four fusion networks work on a single luminance channel. A colour visible image is
converted to YCbCr (ITU-R BT.601, full range: the variant JPEG, Pillow and OpenCV use),
its Y channel is fused with the infrared, and the original Cb/Cr are reattached.

Values are on the ``[0, 1]`` scale; chroma is centred on ``0.5``::

    Y  = 0.299 R + 0.587 G + 0.114 B
    Cb = 0.5 + (B - Y) / 1.772
    Cr = 0.5 + (R - Y) / 1.402

The functions accept numpy arrays with channels **last** (``(..., 3)``, e.g. ``H x W x 3``)
and torch tensors with channels at dimension ``-3`` (``(..., 3, H, W)``, e.g. ``B x 3 x H x W``),
the usual layout of each library. The same arithmetic serves both.
"""
from __future__ import annotations

from typing import Tuple, TypeVar, Union

import numpy as np
import torch

__all__ = ["LUMA_WEIGHTS", "rgb_to_ycbcr", "ycbcr_to_rgb", "rgb_to_luma", "chroma_statistics", "looks_like_photograph"]

#: BT.601 luma weights for R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
_KB = 2.0 * (1.0 - LUMA_WEIGHTS[2])  # 1.772
_KR = 2.0 * (1.0 - LUMA_WEIGHTS[0])  # 1.402

Image = TypeVar("Image", np.ndarray, torch.Tensor)
ArrayOrTensor = Union[np.ndarray, torch.Tensor]


def _channel_axis(image: ArrayOrTensor) -> int:
    if isinstance(image, torch.Tensor):
        axis = image.ndim - 3
        if image.ndim < 3 or image.shape[axis] != 3:
            raise ValueError(
                f"expected a tensor of shape (..., 3, H, W), got {tuple(image.shape)}"
            )
        return axis
    if isinstance(image, np.ndarray):
        if image.ndim < 1 or image.shape[-1] != 3:
            raise ValueError(f"expected an array of shape (..., 3), got {image.shape}")
        return image.ndim - 1
    raise TypeError(f"expected a numpy array or a torch tensor, got {type(image).__name__}")


def _split(image: ArrayOrTensor):
    axis = _channel_axis(image)
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise TypeError(f"expected a floating-point tensor on the [0, 1] scale, got {image.dtype}")
        return image.unbind(axis), axis
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"expected a floating-point array on the [0, 1] scale, got {image.dtype}")
    return tuple(np.moveaxis(image, axis, 0)), axis


def _stack(channels, axis: int, like: ArrayOrTensor):
    if isinstance(like, torch.Tensor):
        return torch.stack(channels, dim=axis)
    return np.stack(channels, axis=axis)


def rgb_to_luma(rgb: Image) -> Image:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of a float RGB image.

    ``(..., 3)`` numpy or ``(..., 3, H, W)`` torch in, one channel fewer out
    (``(...)`` resp. ``(..., H, W)``), same scale as the input.
    """
    (r, g, b), _ = _split(rgb)
    return LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b


def rgb_to_ycbcr(rgb: Image) -> Image:
    """Full-range BT.601 RGB -> YCbCr on the ``[0, 1]`` scale (chroma centred on 0.5).

    Args:
        rgb: float numpy array ``(..., 3)`` or float tensor ``(..., 3, H, W)``, values in [0, 1].

    Returns:
        Same type and layout, channels ``(Y, Cb, Cr)``; Y in [0, 1], Cb and Cr in [0, 1].
    """
    (r, g, b), axis = _split(rgb)
    y = LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b
    cb = 0.5 + (b - y) / _KB
    cr = 0.5 + (r - y) / _KR
    return _stack((y, cb, cr), axis, rgb)


def ycbcr_to_rgb(ycbcr: Image, *, clip: bool = True) -> Image:
    """Inverse of :func:`rgb_to_ycbcr`.

    Args:
        ycbcr: float numpy array ``(..., 3)`` or tensor ``(..., 3, H, W)``, channels ``(Y, Cb, Cr)``.
        clip: clip the result to [0, 1]. A fused Y with the original chroma can leave the RGB
            gamut, so clipping is on by default; turn it off to test the exact round trip.
    """
    (y, cb, cr), axis = _split(ycbcr)
    cb = cb - 0.5
    cr = cr - 0.5
    r = y + _KR * cr
    b = y + _KB * cb
    # G from the luma equation: Y = wr R + wg G + wb B.
    g = (y - LUMA_WEIGHTS[0] * r - LUMA_WEIGHTS[2] * b) / LUMA_WEIGHTS[1]
    rgb = _stack((r, g, b), axis, ycbcr)
    if clip:
        rgb = rgb.clamp(0.0, 1.0) if isinstance(rgb, torch.Tensor) else np.clip(rgb, 0.0, 1.0)
    return rgb


#: :func:`looks_like_photograph` thresholds, chosen on the project's data (``benchmarks/swap_warning.py``):
#: a colour photograph's chroma is weak and varies at a given brightness; a pseudo-colour image's (PET,
#: SPECT, a thermal camera's palette) is a function of its brightness, or strong.
PHOTO_MAX_EXPLAINED = 0.6
PHOTO_MAX_CHROMA_RMS = 0.06


def chroma_statistics(rgb: torch.Tensor, bins: int = 64) -> Tuple[float, float]:
    """How much a colour image's chroma follows its brightness, and how strong it is.

    Args:
        rgb: float tensor ``(3, H, W)`` in [0, 1].
        bins: luma bins over [0, 1].

    Returns:
        ``(explained, rms)``: the share of the variance of Cb and Cr (together) that the luma explains
        (1 - within-bin variance / total variance, luma in ``bins`` equal bins; 1.0 for an image whose
        chroma is constant), and the RMS of Cb and Cr around their means (0 to 0.5).
    """
    ycc = rgb_to_ycbcr(rgb.float()).flatten(1)
    idx = (ycc[0] * bins).long().clamp_(0, bins - 1)
    chroma = ycc[1:].double()
    chroma = chroma - chroma.mean(dim=1, keepdim=True)
    total = float((chroma * chroma).sum())
    if total <= 1e-12 * chroma.shape[1]:
        return 1.0, 0.0
    count = torch.bincount(idx, minlength=bins).double()
    within = 0.0
    for c in chroma:
        s = torch.bincount(idx, weights=c, minlength=bins)
        s2 = torch.bincount(idx, weights=c * c, minlength=bins)
        within += float((s2 - s * s / count.clamp_min(1)).sum())
    return 1.0 - within / total, (total / chroma.numel()) ** 0.5


def looks_like_photograph(rgb: torch.Tensor) -> bool:
    """True when a colour image ``(3, H, W)`` in [0, 1] looks like a colour photograph rather than
    pseudo-colour: its chroma is weak (RMS below :data:`PHOTO_MAX_CHROMA_RMS`) and mostly not explained
    by its brightness (below :data:`PHOTO_MAX_EXPLAINED`). :func:`ivfusion.fuse` warns when the
    infrared input looks like one (the inputs may be swapped)."""
    explained, rms = chroma_statistics(rgb)
    return explained < PHOTO_MAX_EXPLAINED and rms < PHOTO_MAX_CHROMA_RMS
