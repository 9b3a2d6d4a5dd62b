"""Modality-independent structure: normalised gradient fields (NGF) as orientation tensors, MIND-SSC
self-similarity descriptors, and the image pyramid they are computed on.

Infrared and visible intensities are unrelated (a warm road is bright in one and dark in the
other), but their edges mostly coincide, possibly with inverted contrast. NGF compares edge
*directions* up to sign: with ``n = grad I / sqrt(|grad I|^2 + eps^2)`` the similarity of two
pixels is ``(n_f . n_m)^2``. Written as the inner product of the orientation tensors
``[nx^2, sqrt(2) nx ny, ny^2]`` it is a sum of three products, so the similarity of *every*
translation is three cross-correlations (one FFT each: the global search) and a pixel-wise inner
product for the gradient-based refinement.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn.functional as F

__all__ = ["resize_to", "pyramid_sizes", "gradients", "orientation_tensor", "ngf_eps", "mind_ssc", "no_data"]

_SQRT2 = math.sqrt(2.0)


def resize_to(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of ``(B, C, H, W)`` to ``size``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def pyramid_sizes(size: Tuple[int, int], finest: int, levels: int) -> List[Tuple[int, int]]:
    """Sizes ``(H, W)`` of a pyramid, coarsest first: the finest has its longer side at most
    ``finest`` pixels (never upsampled), each coarser level half the previous."""
    h, w = size
    f = min(1.0, finest / max(h, w))
    out = []
    for level in range(levels):
        g = f / 2 ** level
        out.append((max(8, round(h * g)), max(8, round(w * g))))
    return out[::-1]


def gradients(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Central differences of ``(B, 1, H, W)`` (one-sided at the borders): ``(gx, gy)``, same shape."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (p[..., 1:-1, 2:] - p[..., 1:-1, :-2])
    gy = 0.5 * (p[..., 2:, 1:-1] - p[..., :-2, 1:-1])
    return gx, gy


def ngf_eps(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The NGF edge threshold of each image of ``(B, 1, H, W)``: ``factor`` times its mean gradient
    magnitude (``(B, 1, 1, 1)``; a floor keeps a flat image at zero structure, not noise)."""
    gx, gy = gradients(x)
    mag = torch.sqrt(gx * gx + gy * gy)
    return (factor * mag.mean(dim=(-2, -1), keepdim=True)).clamp_min(1e-3)


def orientation_tensor(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` -> ``(B, 3, H, W)``: ``[nx^2, sqrt(2) nx ny, ny^2]`` of the normalised gradient
    ``n = grad x / sqrt(|grad x|^2 + eps^2)``; the inner product of two such tensors is ``(n_a . n_b)^2``."""
    gx, gy = gradients(x)
    inv = torch.rsqrt(gx * gx + gy * gy + eps * eps)
    nx, ny = gx * inv, gy * inv
    return torch.cat([nx * nx, _SQRT2 * nx * ny, ny * ny], dim=1)


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    k = 2 * radius + 1
    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), k, stride=1)


def _shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    r = max(abs(dx), abs(dy))
    p = F.pad(x, (r, r, r, r), mode="replicate")
    h, w = x.shape[-2:]
    return p[..., r + dy:r + dy + h, r + dx:r + dx + w]


def mind_ssc(x: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC self-similarity descriptors of ``(B, 1, H, W)`` -> ``(B, 6, H, W)`` in (0, 1].

    For the 4 neighbours at ``dilation`` pixels, the 6 pairs among them: the patch distance
    (``radius`` box) between the two neighbours, normalised by its mean over the pairs and mapped
    by ``exp(-d)``. Two images of the same scene in different modalities get similar descriptors
    where they share structure; compare them with the mean squared difference.
    """
    d = dilation
    nb = [(-d, 0), (d, 0), (0, -d), (0, d)]
    pairs = [(0, 1), (2, 3), (0, 2), (0, 3), (1, 2), (1, 3)]
    shifted = [_shifted(x, dx, dy) for dx, dy in nb]
    dist = torch.cat([_box((shifted[a] - shifted[b]) ** 2, radius) for a, b in pairs], dim=1)
    dist = dist - dist.amin(dim=1, keepdim=True)
    var = dist.mean(dim=1, keepdim=True)
    scale = var.mean(dim=(-2, -1), keepdim=True)
    var = var.clamp(min=0.001 * scale + 1e-8, max=1000 * scale + 1e-8)
    return torch.exp(-dist / var)


def no_data(x: torch.Tensor, level: float = 1.0 / 255, side: int = 160) -> torch.Tensor:
    """``(1, 1, H, W)`` bool: the black fill an earlier warp left around an image (pixels at most
    ``level`` connected to the image border), found by a flood fill at about ``side`` pixels.

    Such borders are edges of no scene: thermal frames already warped by a dataset's own
    registration carry them (MSRS). Dark pixels inside the image are scene and are kept."""
    h, w = x.shape[-2:]
    f = min(1.0, side / max(h, w))
    small = (max(2, round(h * f)), max(2, round(w * f)))
    dark = (F.interpolate(x.float(), size=small, mode="area") <= level).float()
    seed = torch.zeros_like(dark)
    seed[..., 0, :], seed[..., -1, :], seed[..., :, 0], seed[..., :, -1] = 1, 1, 1, 1
    region = seed * dark
    for step in range(4 * max(small)):
        grown = F.max_pool2d(region, 3, stride=1, padding=1) * dark
        if step % 8 == 7 and torch.equal(grown, region):
            break
        region = grown
    return F.interpolate(region, size=(h, w), mode="nearest") > 0.5
