"""Synthetic misalignment: random rig-like warps of aligned pairs with the true registration as the
label, and the end-point error of an estimate against it.

An aligned pair ``(ir, vis)`` becomes a misaligned one by drawing a true :class:`Registration` (a
similarity transform with mild perspective, an optional smooth elastic field and an optional lower
infrared resolution) and rendering the infrared *camera* image it implies: the infrared pixel
``y`` shows the aligned infrared at ``psi^-1(y)``. Registering the rendered infrared to the visible
image should recover the true registration. Content the visible frame does not have (beyond its
borders) is filled by reflection, so the rendered image has no artificial black border.

Used by ``benchmarks/registration.py`` (validation pairs), the learned estimator's training
(training pairs only) and the tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ._geometry import (
    apply_homography,
    corners,
    dense_flow,
    homography_from_points,
    pixel_grid,
    scale_matrix,
    to_grid_sample,
)
from ._result import Registration

__all__ = ["WarpRanges", "random_registration", "render_infrared", "invert_flow", "end_point_error"]


@dataclass(frozen=True)
class WarpRanges:
    """Ranges of the random warps (each drawn uniformly in ``[-max, max]`` unless said otherwise)."""

    #: Translation of each axis, in visible pixels.
    shift: float = 30.0
    #: Rotation in degrees.
    rotation: float = 5.0
    #: Relative scale change (0.08: x0.92 .. x1.08).
    scale: float = 0.08
    #: Perspective: each corner moves by up to this fraction of the shorter side (then re-centred).
    perspective: float = 0.015
    #: Largest displacement of the elastic field, in visible pixels; the field's maximum is drawn in
    #: ``[0, elastic]``.
    elastic: float = 8.0
    #: Nodes per side of the elastic field's grid, drawn in this range (more: less smooth).
    elastic_nodes: Tuple[int, int] = (4, 7)
    #: Probability that the infrared camera has a lower resolution than the visible one ...
    low_res: float = 0.5
    #: ... by a factor drawn in this range.
    low_res_factor: Tuple[float, float] = (0.4, 0.8)


def _uniform(rng: np.random.Generator, bound: float) -> float:
    return float(rng.uniform(-bound, bound))


def random_registration(vis_size: Tuple[int, int], rng: np.random.Generator,
                        ranges: WarpRanges = WarpRanges(), *, elastic: bool = True) -> Registration:
    """A random true registration for a visible frame of ``vis_size`` ``(H, W)``.

    The infrared camera sees the scene shifted, rotated and scaled about the image centre, with a
    mild perspective, possibly at a lower resolution (``ir_size``), and with a smooth elastic field
    (``model="deformable"``; ``elastic=False`` or a zero draw gives a ``"homography"``).
    """
    h, w = vis_size
    if rng.random() < ranges.low_res:
        f = float(rng.uniform(*ranges.low_res_factor))
        ir_size = (max(8, round(h * f)), max(8, round(w * f)))
    else:
        ir_size = (h, w)
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    angle = math.radians(_uniform(rng, ranges.rotation))
    s = 1.0 + _uniform(rng, ranges.scale)
    t = np.array([_uniform(rng, ranges.shift), _uniform(rng, ranges.shift)])
    jitter = rng.uniform(-1.0, 1.0, size=(4, 2)) * ranges.perspective * min(h, w)
    jitter -= jitter.mean(axis=0)
    base = corners((h, w)).numpy()
    persp = homography_from_points(base, base + jitter).numpy()
    cs, sn = math.cos(angle) * s, math.sin(angle) * s
    similarity = np.array([[cs, -sn, 0.0], [sn, cs, 0.0], [0.0, 0.0, 1.0]])
    to_c = np.array([[1.0, 0.0, -c[0]], [0.0, 1.0, -c[1]], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, c[0] + t[0]], [0.0, 1.0, c[1] + t[1]], [0.0, 0.0, 1.0]])
    # infrared camera frame at the visible size -> visible frame
    camera = back @ similarity @ to_c @ persp
    matrix = camera @ scale_matrix(ir_size, vis_size).numpy()
    flow = None
    if elastic and ranges.elastic > 0:
        amplitude = float(rng.uniform(0.0, ranges.elastic))
        gh, gw = (int(rng.integers(ranges.elastic_nodes[0], ranges.elastic_nodes[1] + 1)) for _ in range(2))
        grid = torch.from_numpy(rng.normal(size=(2, gh, gw)).astype(np.float32))
        peak = float(dense_flow(grid, vis_size).norm(dim=-1).max())
        if amplitude > 0 and peak > 0:
            flow = (grid * (amplitude / peak)).numpy()
    model = "deformable" if flow is not None else "homography"
    return Registration(matrix, ir_size, vis_size, model, flow=flow, estimator="synthetic",
                        info={"rotation_deg": math.degrees(angle), "scale": s, "shift_x": t[0], "shift_y": t[1]})


def invert_flow(flow: torch.Tensor, size: Tuple[int, int], iterations: int = 12) -> torch.Tensor:
    """Dense inverse displacement ``v`` ``(H, W, 2)`` of ``x -> x + u(x)`` (``u`` the upsampled
    ``(2, gh, gw)`` grid): ``x + v(x)`` is the point that ``u`` moves to ``x``. Fixed-point
    iteration ``v(x) = -u(x + v(x))``: a contraction for these smooth fields (their gradient stays
    well below 1), converged to far below a thousandth of a pixel in 12 steps."""
    u = dense_flow(flow.double(), size)  # (H, W, 2)
    u_img = u.permute(2, 0, 1)[None]
    x = pixel_grid(*size, dtype=torch.float64)
    v = -u
    for _ in range(iterations):
        g = to_grid_sample(x + v, size)[None]
        v = -F.grid_sample(u_img, g, mode="bilinear", padding_mode="border", align_corners=False)[0].permute(1, 2, 0)
    return v


def _inverse_mapping(truth: Registration, points: torch.Tensor, inverse_flow: Optional[torch.Tensor]) -> torch.Tensor:
    """Visible-frame positions ``psi^-1(y)`` of infrared pixel coordinates ``y`` ``(..., 2)``."""
    z = apply_homography(torch.from_numpy(truth.matrix), points.double())
    if inverse_flow is None:
        return z
    v_img = inverse_flow.permute(2, 0, 1)[None]
    g = to_grid_sample(z, truth.vis_size).reshape(1, -1, 1, 2)
    v = F.grid_sample(v_img, g, mode="bilinear", padding_mode="border", align_corners=False)
    return z + v[0, :, :, 0].T.reshape(z.shape)


def render_infrared(ir: torch.Tensor, truth: Registration) -> torch.Tensor:
    """The infrared camera image implied by ``truth``: ``ir`` ``(C, H, W)`` float, aligned with the
    visible frame (``H, W == truth.vis_size``), seen through ``truth`` at ``truth.ir_size``.

    Rendered at an integer multiple of the infrared size and shrunk with antialiasing, so a lower
    infrared resolution is a blur, not aliasing."""
    if tuple(ir.shape[-2:]) != truth.vis_size:
        raise ValueError(f"ir: expected the aligned infrared at the visible size {truth.vis_size}, got "
                         f"{tuple(ir.shape[-2:])}")
    hi, wi = truth.ir_size
    k = max(1, math.ceil(max(truth.vis_size[0] / hi, truth.vis_size[1] / wi)))
    fine = (hi * k, wi * k)
    y = apply_homography(scale_matrix(fine, truth.ir_size), pixel_grid(*fine, dtype=torch.float64))
    inv = None if truth.flow is None else invert_flow(torch.from_numpy(truth.flow), truth.vis_size)
    src = _inverse_mapping(truth, y, inv)
    grid = to_grid_sample(src, truth.vis_size).float()[None]
    out = F.grid_sample(ir[None].float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if k > 1:
        out = F.interpolate(out, size=truth.ir_size, mode="area")
    return out[0].clamp_(0, 1)


def _dense(mapping: Union[Registration, torch.Tensor], vis_size: Tuple[int, int]) -> torch.Tensor:
    m = mapping.mapping() if isinstance(mapping, Registration) else torch.as_tensor(mapping)
    if tuple(m.shape) != (*vis_size, 2):
        raise ValueError(f"mapping: expected shape {(*vis_size, 2)}, got {tuple(m.shape)}")
    return m.double()


def end_point_error(estimate: Union[Registration, torch.Tensor], truth: Registration,
                    reference: Optional[Union[Registration, torch.Tensor]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel end-point error in visible pixels, and the mask it is defined on.

    At each visible pixel ``x`` the estimate picks the infrared pixel ``psi_est(x)``; the error is
    how far from ``x`` the truth puts that infrared pixel in the visible frame,
    ``|psi_true^-1(psi_est(x)) - x|``. Defined where the true infrared footprint covers ``x``.

    ``estimate`` (and ``reference``) may also be a dense ``(H, W, 2)`` mapping: the infrared pixel
    coordinates seen at each visible pixel (what other registration tools produce).

    With ``reference`` (the same estimator's registration of the unwarped pair, infrared and visible
    both of ``truth.vis_size``), the error is measured against where that registration puts ``x``,
    ``|psi_true^-1(psi_est(x)) - psi_ref(x)|``: the *consistency* of the estimator with itself under
    the known warp, which does not depend on how well the source pair was aligned.

    Returns:
        ``(error (H, W) float64, mask (H, W) bool)``.
    """
    if isinstance(estimate, Registration) and (estimate.vis_size != truth.vis_size or estimate.ir_size != truth.ir_size):
        raise ValueError(f"estimate is for ir {estimate.ir_size} -> vis {estimate.vis_size}, truth for ir "
                         f"{truth.ir_size} -> vis {truth.vis_size}")
    inv = None if truth.flow is None else invert_flow(torch.from_numpy(truth.flow), truth.vis_size)
    est = _dense(estimate, truth.vis_size)
    back = _inverse_mapping(truth, est, inv)
    x = pixel_grid(*truth.vis_size, dtype=torch.float64) if reference is None else _dense(reference, truth.vis_size)
    true_coords = truth.mapping().double()
    h, w = truth.ir_size
    mask = (true_coords[..., 0] >= -0.5) & (true_coords[..., 0] <= w - 0.5) & \
           (true_coords[..., 1] >= -0.5) & (true_coords[..., 1] <= h - 0.5)
    return (back - x).norm(dim=-1), mask
