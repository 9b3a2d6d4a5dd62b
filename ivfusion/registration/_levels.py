"""The classical estimator's building blocks: its settings, the visible frame's centred units
(:class:`Frame`), the feature pyramid (:class:`Level`, :func:`build_levels`) and resampling the
infrared features through a transform (:func:`similarity`). The pipeline is in :mod:`._classical`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ._geometry import dense_flow
from ._similarity import mind_ssc, ngf_eps, no_data, orientation_tensor, pyramid_sizes, resize_to

__all__ = ["ClassicalSettings", "Frame", "Level", "FEATURES", "build_levels", "apply_transform", "param_jacobian",
           "point_jacobian", "displaced_grid", "sample_features", "correlation_residual", "similarity"]

Size = Tuple[int, int]
FEATURES = ("ngf", "mind")


@dataclass(frozen=True)
class ClassicalSettings:
    """Knobs of the classical estimator (defaults chosen on the validation benchmark)."""

    #: ``"ngf"`` (normalised gradient fields) or ``"mind"`` (MIND-SSC descriptors).
    features: str = "ngf"
    #: Longer side of the finest pyramid level, pixels.
    finest: int = 480
    #: Pyramid levels (each half the previous).
    levels: int = 4
    #: Level (0 = coarsest) of the global search.
    search_level: int = 2
    #: Rotations (degrees) and scales tried by the global search.
    angles: Tuple[float, ...] = (-6.0, -3.0, 0.0, 3.0, 6.0)
    scales: Tuple[float, ...] = (0.92, 1.0, 1.08)
    #: Largest translation searched, as a fraction of the visible image's longer side.
    max_shift: float = 0.15
    #: Candidates of the global search refined before choosing one.
    candidates: int = 3
    #: How the candidates are found: ``"tiles"`` (block matching of a grid of tiles, then a robust
    #: fit: tolerant of rotation, scale and perspective) or ``"grid"`` (rotation x scale grid, FFT
    #: over translations).
    init: str = "tiles"
    #: Tile grid (rows, columns) and tile side (fraction of the longer side) of ``init="tiles"``.
    tiles: Tuple[int, int] = (5, 6)
    tile: float = 0.2
    #: Levenberg-Marquardt iterations of the parametric refinement per level, for the finest
    #: ``len(iterations)`` levels, coarsest first.
    iterations: Tuple[int, ...] = (10, 4)
    #: NGF edge threshold, relative to the image's mean gradient magnitude.
    eps_factor: float = 1.0
    #: Gaussian blur of the feature maps, in pixels of each level, coarsest first: widens the capture
    #: range on the coarse levels; the finest level stays sharp (it decides between candidates).
    blur: Tuple[float, ...] = (1.0, 1.0, 1.0, 0.0)
    #: Candidates carried from the search level to the finest level (the best by similarity there).
    finalists: int = 2
    #: Nodes of the deformation grid along the longer side.
    flow_nodes: int = 9
    #: Gauss-Newton iterations of the deformation, for the finest ``len(flow_iterations)`` levels.
    flow_iterations: Tuple[int, ...] = (5, 2)
    #: Weight of the diffusion penalty on the deformation nodes (relative to the data term).
    smoothness: float = 0.002


@dataclass(frozen=True)
class Frame:
    """Geometry of the visible frame: full size, centre and scale of the centred units."""

    size: Size  # (H, W) full size

    @property
    def scale(self) -> float:
        return max(self.size) / 2.0

    def centred(self, level_size: Size) -> torch.Tensor:
        """``(h, w, 2)`` centred units of the pixel centres of a level of size ``level_size``."""
        h, w = self.size
        lh, lw = level_size
        xs = (torch.arange(lw, dtype=torch.float32) + 0.5) * (w / lw) - 0.5
        ys = (torch.arange(lh, dtype=torch.float32) + 0.5) * (h / lh) - 0.5
        gy, gx = torch.meshgrid((ys - (h - 1) / 2) / self.scale, (xs - (w - 1) / 2) / self.scale, indexing="ij")
        return torch.stack([gx, gy], dim=-1)

    def to_normalised(self) -> torch.Tensor:
        """``(2,)`` factors taking centred units to ``grid_sample`` coordinates of a same-field image."""
        h, w = self.size
        return torch.tensor([2 * self.scale / w, 2 * self.scale / h])


@dataclass
class Level:
    """One pyramid level: visible features, infrared features with their spatial gradients (per
    unit of ``grid_sample`` coordinates), the level's centred grid and pixel size."""

    vis_feat: torch.Tensor  # (1, C, h, w)
    vis_energy: torch.Tensor  # scalar: sum of |vis_feat|^2
    ir_stack: torch.Tensor  # (1, 3C + 1, h, w): features, d/dx, d/dy, validity (1 on the scene)
    vis_valid: torch.Tensor  # (h, w) bool: the visible image shows scene there
    grid: torch.Tensor  # (h, w, 2) centred units
    pixel: float  # one level pixel in centred units

    @property
    def size(self) -> Size:
        return tuple(self.vis_feat.shape[-2:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return self.vis_feat.shape[1]


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` (replicate borders); identity for ``sigma <= 0``."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _features(x: torch.Tensor, settings: ClassicalSettings, blur: float) -> torch.Tensor:
    if settings.features == "mind":
        f = mind_ssc(x)
    else:
        f = orientation_tensor(x, ngf_eps(x, settings.eps_factor))
    return _gaussian(f, blur)


def _with_gradients(feat: torch.Tensor) -> torch.Tensor:
    """``(1, C, h, w)`` -> ``(1, 3C, h, w)``: the maps and their central differences per unit of
    ``grid_sample`` coordinates (one pixel is ``2 / w`` of them)."""
    h, w = feat.shape[-2:]
    p = F.pad(feat, (1, 1, 1, 1), mode="replicate")
    gx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) * (w / 4.0)
    gy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) * (h / 4.0)
    return torch.cat([feat, gx, gy], dim=1)


def build_levels(ir: torch.Tensor, vis: torch.Tensor, settings: ClassicalSettings) -> Tuple[Frame, List[Level]]:
    """Feature pyramid of ``ir`` ``(1, h, w)`` and ``vis`` ``(1, H, W)`` lumas in [0, 1], coarsest first.
    The infrared is resized to each level's size (its field of view nominally the visible one's)."""
    if settings.features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {settings.features!r}")
    frame = Frame(tuple(vis.shape[-2:]))
    levels = []
    sizes = pyramid_sizes(frame.size, settings.finest, settings.levels)
    blurs = list(settings.blur[:len(sizes)]) + [0.0] * (len(sizes) - len(settings.blur))
    ir_ok, vis_ok = ((~no_data(x[None].float())).float() for x in (ir, vis))
    for size, blur in zip(sizes, blurs):
        # the scene's part of each image, less 2 pixels along a fill border (its edge is no scene either)
        vi_ok = -F.max_pool2d(-F.interpolate(vis_ok, size=size, mode="area"), 5, stride=1, padding=2)
        ir_ok_l = -F.max_pool2d(-F.interpolate(ir_ok, size=size, mode="area"), 5, stride=1, padding=2)
        fv = _features(resize_to(vis[None].float(), size), settings, blur) * (vi_ok > 0.999)
        fi = _features(resize_to(ir[None].float(), size), settings, blur) * (ir_ok_l > 0.999)
        levels.append(Level(fv, (fv * fv).sum().clamp_min(1e-6), torch.cat([_with_gradients(fi), ir_ok_l], dim=1),
                            (vi_ok[0, 0] > 0.999), frame.centred(size), frame.size[1] / size[1] / frame.scale))
    return frame, levels


# ------------------------------------------------------------------------------------------ transforms


def apply_transform(t: torch.Tensor, p: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Homography ``t`` (``t[2, 2] == 1``) on points ``(..., 2)``: ``(h(p), w(p))``."""
    x, y = p[..., 0], p[..., 1]
    w = t[2, 0] * x + t[2, 1] * y + t[2, 2]
    w = torch.where(w.abs() < 1e-6, torch.full_like(w, 1e-6), w)
    hx = (t[0, 0] * x + t[0, 1] * y + t[0, 2]) / w
    hy = (t[1, 0] * x + t[1, 1] * y + t[1, 2]) / w
    return torch.stack([hx, hy], dim=-1), w


def param_jacobian(p: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Derivatives of ``h(p)``'s x and y (each ``(N, 8)``, pixels flattened) with respect to the 8
    free entries of the homography, row by row."""
    x, y = (p[..., 0] / w).reshape(-1), (p[..., 1] / w).reshape(-1)
    one = (1.0 / w).reshape(-1)
    zero = torch.zeros_like(one)
    hx, hy = h[..., 0].reshape(-1), h[..., 1].reshape(-1)
    jx = torch.stack([x, y, one, zero, zero, zero, -hx * x, -hx * y], dim=1)
    jy = torch.stack([zero, zero, zero, x, y, one, -hy * x, -hy * y], dim=1)
    return jx, jy


def point_jacobian(t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(..., 2, 2)`` derivative of ``h(p)`` with respect to ``p``."""
    a = t[:2, :2]
    return (a - h[..., :, None] * t[2, :2]) / w[..., None, None]


def displaced_grid(level: Level, flow: Optional[torch.Tensor]) -> torch.Tensor:
    """``(h, w, 2)`` the level's centred grid moved by the deformation nodes ``flow`` ``(1, 2, gh, gw)``."""
    return level.grid if flow is None else level.grid + dense_flow(flow, level.size)[0]


def sample_features(level: Level, frame: Frame, t: torch.Tensor, flow: Optional[torch.Tensor] = None,
            points: Optional[torch.Tensor] = None):
    """Resample the infrared stack through ``t`` (after ``flow`` nodes ``(1, 2, gh, gw)``, or at
    precomputed ``points`` ``(h, w, 2)``, :func:`displaced_grid`).

    Returns ``(p, h, w, stack (h, w, 3C), mask (h, w))``: the (displaced) centred points, their
    image under ``t`` with its divisor, the features and gradients there, and the footprint."""
    p = points if points is not None else displaced_grid(level, flow)
    h, w = apply_transform(t, p)
    norm = frame.to_normalised()
    g = h * norm
    stack = F.grid_sample(level.ir_stack, g[None], mode="bilinear", padding_mode="border", align_corners=False)
    lim = 1.0 - 2.0 * level.pixel * norm  # two pixels inside the edge
    stack = stack[0].permute(1, 2, 0)
    mask = (g.abs() <= lim).all(dim=-1) & (stack[..., -1] > 0.999) & level.vis_valid
    return p, h, w, stack[..., :-1], mask


def correlation_residual(level: Level, stack: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """The Gauss-Newton residual of the normalised correlation, the sampled infrared feature
    gradients ``(h, w, C, 2)`` (per unit of ``grid_sample`` coordinates) and the normalised
    correlation ``rho = <f_v, f_ir> / (|f_v| |f_ir|)`` over the footprint.

    Maximising ``rho`` is minimising ``|f_v / |f_v| - f_ir / |f_ir||^2``; with the norms held for a
    step, its residual scaled by ``|f_ir|`` is ``f_v |f_ir| / |f_v| - f_ir`` (``(h, w, C)``). Plain
    correlation would reward squeezing the infrared (more edges per pixel), plain squared
    differences pushing its structure out of the footprint; the normalisation rewards neither."""
    c = level.channels
    m = mask[..., None].to(stack.dtype)
    vis = level.vis_feat[0].permute(1, 2, 0) * m
    ir = stack[..., :c] * m
    vv = (vis * vis).sum().clamp_min(1e-9)
    ii = (ir * ir).sum().clamp_min(1e-9)
    rho = float((vis * ir).sum() / torch.sqrt(vv * ii))
    grad = torch.stack([stack[..., c:2 * c], stack[..., 2 * c:]], dim=-1) * m[..., None]
    return vis * torch.sqrt(ii / vv) - ir, grad, rho


def similarity(level: Level, frame: Frame, t: torch.Tensor, flow: Optional[torch.Tensor] = None) -> float:
    """Share in [0, 1] of the visible features' energy that the warped infrared matches:
    ``sum mask <f_vis, f_ir> / sum |f_vis|^2`` (for NGF: ``(n_v . n_ir)^2`` weighted by edge strength)."""
    _, _, _, stack, mask = sample_features(level, frame, t, flow)
    c = level.channels
    inner = (level.vis_feat[0].permute(1, 2, 0) * stack[..., :c]).sum(dim=-1) * mask
    return float(inner.sum() / level.vis_energy)
