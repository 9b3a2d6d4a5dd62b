"""Classical fusion methods that need no weights.

Each method maps ``ir``, ``vis_y`` ``(B, 1, H, W)`` float tensors in [0, 1] to the fused
luminance ``(B, 1, H, W)`` in [0, 1]. They are pure torch (CPU and CUDA) and serve both as
user-facing methods and as baselines in every evaluation table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

import torch

from .filters import box_mean2d, filter2d, gaussian_blur2d

__all__ = [
    "fuse_average",
    "fuse_max",
    "fuse_laplacian",
    "fuse_guided",
    "laplacian_pyramid",
    "reconstruct_laplacian_pyramid",
    "guided_filter",
    "ClassicalMethod",
    "CLASSICAL_METHODS",
]


def fuse_average(ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
    """Pixel-wise mean ``(ir + vis_y) / 2``."""
    return 0.5 * (ir + vis_y)


def fuse_max(ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
    """Pixel-wise maximum (keeps the brighter source: hot targets from IR, lit areas from VIS)."""
    return torch.maximum(ir, vis_y)


# Burt & Adelson's 5-tap binomial generating kernel.
_BINOMIAL5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)


def _binomial_blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    k = torch.tensor(_BINOMIAL5, dtype=x.dtype, device=x.device) * gain
    kernel = k[:, None] * k[None, :]
    padding = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    return filter2d(x, kernel, padding)


def _reduce(x: torch.Tensor) -> torch.Tensor:
    return _binomial_blur(x)[..., ::2, ::2]


def _expand(x: torch.Tensor, size) -> torch.Tensor:
    # Zero-insertion upsampling to `size` (rows/cols 0, 2, 4, ... carry the samples), then the
    # binomial blur with gain 2 per axis to restore the mean level.
    up = x.new_zeros(x.shape[:-2] + tuple(size))
    up[..., ::2, ::2] = x
    return _binomial_blur(up, gain=2.0)


def _max_levels(h: int, w: int) -> int:
    # Keep the coarsest level at least 4 px on its short side.
    levels, side = 1, min(h, w)
    while side >= 8:
        side = (side + 1) // 2
        levels += 1
    return levels


def laplacian_pyramid(x: torch.Tensor, levels: int) -> List[torch.Tensor]:
    """Laplacian pyramid of ``x`` ``(B, C, H, W)``: ``levels - 1`` band-pass images, then the base.

    Uses the binomial 5x5 kernel with reflect padding; level ``k`` has size
    ``ceil(H / 2^k) x ceil(W / 2^k)``. ``levels`` is capped so the base keeps >= 4 px.
    """
    levels = max(1, min(int(levels), _max_levels(*x.shape[-2:])))
    pyramid = []
    current = x
    for _ in range(levels - 1):
        coarse = _reduce(current)
        pyramid.append(current - _expand(coarse, current.shape[-2:]))
        current = coarse
    pyramid.append(current)
    return pyramid


def reconstruct_laplacian_pyramid(pyramid: List[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`laplacian_pyramid` (exact up to float rounding)."""
    current = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        current = band + _expand(current, band.shape[-2:])
    return current


def fuse_laplacian(ir: torch.Tensor, vis_y: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Laplacian-pyramid fusion: average the base level, keep the larger-magnitude detail coefficient.

    Args:
        levels: pyramid levels including the base (capped for small images).
    """
    if int(levels) < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    pa = laplacian_pyramid(ir, levels)
    pb = laplacian_pyramid(vis_y, levels)
    fused = [torch.where(a.abs() >= b.abs(), a, b) for a, b in zip(pa[:-1], pb[:-1])]
    fused.append(0.5 * (pa[-1] + pb[-1]))
    return reconstruct_laplacian_pyramid(fused).clamp(0.0, 1.0)


def guided_filter(p: torch.Tensor, guide: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Grey-guide guided filter (He, Sun, Tang, TPAMI 2013) of ``p`` by ``guide``.

    Both ``(B, C, H, W)`` (guide broadcastable). Box windows ``(2r+1)^2`` clipped at the border;
    ``eps`` regularises the local linear model (on the scale of the guide's values).
    """
    guide = guide.expand_as(p)
    c = p.shape[1]
    # One box pass over the four statistics stacked along channels, one over (a, b).
    stats = box_mean2d(torch.cat([guide, p, guide * p, guide * guide], dim=1), radius)
    mean_i, mean_p, corr_ip, corr_ii = stats.split(c, dim=1)
    a = (corr_ip - mean_i * mean_p) / (corr_ii - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    mean_a, mean_b = box_mean2d(torch.cat([a, b], dim=1), radius).split(c, dim=1)
    return mean_a * guide + mean_b


def fuse_guided(
    ir: torch.Tensor,
    vis_y: torch.Tensor,
    base_radius: int = 15,
    r1: int = 45,
    eps1: float = 0.3,
    r2: int = 7,
    eps2: float = 1e-6,
) -> torch.Tensor:
    """Guided-filtering fusion (GFF; Li, Kang, Hu, IEEE TIP 22(7), 2013).

    Two-scale decomposition (base = ``(2*base_radius+1)^2`` mean filter, detail = rest);
    saliency = Gaussian-smoothed (11x11, sigma 5) absolute 3x3 Laplacian; binary weight maps
    pick the most salient source; each map is refined by a guided filter with its source image
    as guide (``r1, eps1`` for the base layer, ``r2, eps2`` for the detail layer); the refined
    weights are normalised to sum 1. Defaults are the paper's (``r1=45, eps1=0.3, r2=7,
    eps2=1e-6``, 31x31 averaging) on the [0, 1] intensity scale.
    """
    sources = torch.stack([ir, vis_y])  # (2, B, 1, H, W)
    n, b, c, h, w = sources.shape
    flat = sources.reshape(n * b, c, h, w)
    base = box_mean2d(flat, base_radius)
    detail = flat - base
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=flat.dtype, device=flat.device)
    saliency = gaussian_blur2d(filter2d(flat, lap, "replicate").abs(), 11, 5.0, "replicate")
    saliency = saliency.reshape(n, b, c, h, w)
    winner = _first_argmax(saliency)
    masks = (torch.arange(n, device=flat.device).view(n, 1, 1, 1, 1) == winner).to(flat.dtype)
    masks = masks.reshape(n * b, c, h, w)
    w_base = guided_filter(masks, flat, r1, eps1).reshape(n, b, c, h, w)
    w_detail = guided_filter(masks, flat, r2, eps2).reshape(n, b, c, h, w)
    w_base = _normalise_weights(w_base)
    w_detail = _normalise_weights(w_detail)
    fused = (w_base * base.reshape(n, b, c, h, w)).sum(0) + (w_detail * detail.reshape(n, b, c, h, w)).sum(0)
    return fused.clamp(0.0, 1.0)


def _first_argmax(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(dim=0, keepdim=True)`` (ties to the lowest index) for a short leading dimension.

    Element-wise comparisons over the ``n`` slices: the same result as ``argmax``, which on the CPU
    reduces over a leading dimension of 2 at a fraction of the speed (43 of GFF's 180 ms at 640x480).
    """
    best, index = x[0], torch.zeros_like(x[0], dtype=torch.long)
    for k in range(1, x.shape[0]):
        better = x[k] > best
        index = torch.where(better, k, index)
        best = torch.maximum(best, x[k])
    return index.unsqueeze(0)


def _normalise_weights(weights: torch.Tensor) -> torch.Tensor:
    # Guided filtering can push weights slightly below 0; clip, then normalise over the sources.
    # Where every weight vanishes, fall back to equal weights.
    weights = weights.clamp_min(0.0)
    total = weights.sum(0, keepdim=True)
    equal = torch.full_like(weights, 1.0 / weights.shape[0])
    return torch.where(total > 1e-12, weights / total.clamp_min(1e-12), equal)


@dataclass(frozen=True)
class ClassicalMethod:
    """A weight-free fusion method: ``fn(ir, vis_y, **options) -> fused``."""

    name: str
    fn: Callable[..., torch.Tensor]
    description: str
    #: True when each output pixel depends only on the same input pixel (tiling is exact).
    pixelwise: bool = False
    #: Full citation of the method's paper ("" for the trivial ones).
    paper: str = ""
    #: DOI link of that paper.
    paper_url: str = ""


CLASSICAL_METHODS: Dict[str, ClassicalMethod] = {
    m.name: m
    for m in (
        ClassicalMethod("average", fuse_average, "pixel-wise mean of IR and visible luminance", True),
        ClassicalMethod("max", fuse_max, "pixel-wise maximum of IR and visible luminance", True),
        ClassicalMethod(
            "laplacian", fuse_laplacian,
            "Laplacian pyramid: averaged coarse level, strongest detail kept at each finer level (-O levels=4)",
            paper="P. J. Burt, E. H. Adelson, 'The Laplacian Pyramid as a Compact Image Code', IEEE Transactions "
                  "on Communications 31(4), pp. 532-540, 1983",
            paper_url="https://doi.org/10.1109/TCOM.1983.1095851",
        ),
        ClassicalMethod(
            "guided", fuse_guided,
            "guided filter, two scales: base and detail layers weighted by saliency (Li, Kang, Hu 2013)",
            paper="S. Li, X. Kang, J. Hu, 'Image Fusion With Guided Filtering', IEEE Transactions on Image "
                  "Processing 22(7), pp. 2864-2875, 2013",
            paper_url="https://doi.org/10.1109/TIP.2013.2244222",
        ),
    )
}
