"""Plausibility of an estimated registration: no reflection, no degenerate scale or perspective,
no folding deformation. A rig's cameras look at the same scene from nearly the same place, so
anything outside these bounds is a failed estimate, not a geometry to warp with."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from ._geometry import apply_homography, dense_flow, pixel_grid, scale_matrix

__all__ = ["SCALE_RANGE", "MAX_OFFSET", "MAX_FLOW", "transform_problem", "flow_problem"]

#: Allowed local scale of the infrared in the visible frame, relative to the expected one
#: (same field of view times ``scale``); also bounds the anisotropy and the perspective.
SCALE_RANGE = (0.5, 2.0)
#: Largest displacement of a deformation, as a fraction of the visible image's longer side.
MAX_FLOW = 0.05
#: Largest offset of the infrared's centre from where the expected scaling puts it, as a fraction
#: of the visible image's longer side (the cameras of a rig see mostly the same scene).
MAX_OFFSET = 0.3
#: Smallest allowed area ratio (Jacobian determinant) of ``x -> x + u(x)``: no folding.
MIN_JACOBIAN = 0.25


def _local_linear(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``(N, 2, 2)`` Jacobians of the homography at ``(N, 2)`` points (finite differences)."""
    m = torch.from_numpy(matrix)
    p = torch.from_numpy(points)
    d = 0.5
    jx = (apply_homography(m, p + torch.tensor([d, 0.0], dtype=p.dtype))
          - apply_homography(m, p - torch.tensor([d, 0.0], dtype=p.dtype))) / (2 * d)
    jy = (apply_homography(m, p + torch.tensor([0.0, d], dtype=p.dtype))
          - apply_homography(m, p - torch.tensor([0.0, d], dtype=p.dtype))) / (2 * d)
    return torch.stack([jx, jy], dim=-1).numpy()


def transform_problem(matrix: np.ndarray, ir_size: Tuple[int, int], vis_size: Tuple[int, int],
                      scale: float = 1.0) -> Optional[str]:
    """Why the infrared-to-visible ``matrix`` is implausible, or None.

    Checked over a 3x3 grid of points covering the infrared image: the projective divisor stays
    positive (the horizon does not cross the image), the local Jacobian keeps its orientation (no
    reflection) and its singular values, relative to the expected scale (the nominal same-field
    rescaling times ``scale``), stay within :data:`SCALE_RANGE`."""
    h, w = ir_size
    ys, xs = np.meshgrid(np.linspace(0, h - 1, 3), np.linspace(0, w - 1, 3), indexing="ij")
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    div = matrix[2, 0] * pts[:, 0] + matrix[2, 1] * pts[:, 1] + matrix[2, 2]
    if not (div > 1e-6).all():
        return "the perspective folds the image (its horizon crosses the infrared frame)"
    nominal = scale_matrix(ir_size, vis_size).numpy()[:2, :2] * scale
    jac = np.linalg.inv(nominal) @ _local_linear(matrix, pts)
    if (np.linalg.det(jac) <= 0).any():
        return "the transform mirrors the image (reflection)"
    sv = np.linalg.svd(jac, compute_uv=False)
    lo, hi = SCALE_RANGE
    if sv.min() < lo or sv.max() > hi:
        return (f"degenerate scale: local scale {sv.min():.2f}..{sv.max():.2f} of the expected, outside "
                f"{lo:g}..{hi:g}")
    centre = pts[4:5]  # the infrared's centre pixel
    mapped = apply_homography(torch.from_numpy(matrix), torch.from_numpy(centre)).numpy()[0]
    expected = np.array([(vis_size[1] - 1) / 2, (vis_size[0] - 1) / 2])
    limit = MAX_OFFSET * max(vis_size)
    if np.abs(mapped - expected).max() > limit:
        return (f"the infrared's centre lands {np.abs(mapped - expected).max():.0f} px from the visible one's, more than "
                f"{MAX_OFFSET:.0%} of the image")
    return None


def flow_problem(flow: np.ndarray, vis_size: Tuple[int, int]) -> Optional[str]:
    """Why the ``(2, gh, gw)`` deformation (visible pixels) is implausible, or None: larger than
    :data:`MAX_FLOW` of the longer side, or folding (area ratio below :data:`MIN_JACOBIAN`)."""
    f = torch.from_numpy(np.asarray(flow, dtype=np.float64))
    h, w = vis_size
    limit = MAX_FLOW * max(h, w)
    size = (min(h, 256), min(w, 256))  # the field is smooth: check it on a modest grid
    u = dense_flow(f, size)
    if float(u.norm(dim=-1).max()) > limit:
        return f"the deformation moves pixels by more than {limit:.0f} px ({MAX_FLOW:.0%} of the image)"
    x = pixel_grid(*size, dtype=torch.float64) * torch.tensor([(w - 1) / max(size[1] - 1, 1),
                                                               (h - 1) / max(size[0] - 1, 1)], dtype=torch.float64)
    y = x + u
    dxx = (y[:, 1:, 0] - y[:, :-1, 0]) / (x[:, 1:, 0] - x[:, :-1, 0])
    dyx = (y[:, 1:, 1] - y[:, :-1, 1]) / (x[:, 1:, 0] - x[:, :-1, 0])
    dxy = (y[1:, :, 0] - y[:-1, :, 0]) / (x[1:, :, 1] - x[:-1, :, 1])
    dyy = (y[1:, :, 1] - y[:-1, :, 1]) / (x[1:, :, 1] - x[:-1, :, 1])
    det = dxx[:-1, :] * dyy[:, :-1] - dyx[:-1, :] * dxy[:, :-1]
    if float(det.min()) < MIN_JACOBIAN:
        return f"the deformation folds the image (area ratio {float(det.min()):.2f} < {MIN_JACOBIAN})"
    return None
