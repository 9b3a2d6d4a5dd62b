"""Transforms and warping: pixel grids, homographies, the smooth displacement field, resampling.

Conventions used throughout :mod:`ivfusion.registration`:

* **Pixel coordinates** ``(x, y)``: column then row, pixel centres at integers, ``(0, 0)`` the
  centre of the top-left pixel (OpenCV's convention).
* **The mapping** of a registration takes a visible-frame pixel ``x`` to the infrared pixel seen
  there: ``psi(x) = inv(M) @ (x + u(x))``, with ``M`` the 3x3 infrared-to-visible homography
  (``Registration.matrix``) and ``u`` a smooth displacement in visible pixels (zero for the affine
  and homography models).
* **Flow grid**: ``u`` is stored on a coarse ``(2, gh, gw)`` grid whose nodes span the visible
  frame corner to corner (node ``(i, j)`` at ``x = j (W - 1) / (gw - 1)``, ``y = i (H - 1) / (gh - 1)``)
  and is upsampled bicubically (``align_corners=True``), so one grid serves any output size.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "pixel_grid",
    "apply_homography",
    "scale_matrix",
    "dense_flow",
    "sampling_coords",
    "to_grid_sample",
    "sample",
    "inside_mask",
]

Size = Tuple[int, int]


def pixel_grid(height: int, width: int, *, dtype: torch.dtype = torch.float32,
               device: Optional[torch.device] = None) -> torch.Tensor:
    """``(H, W, 2)`` pixel coordinates ``(x, y)`` of every pixel centre."""
    ys = torch.arange(height, dtype=dtype, device=device)
    xs = torch.arange(width, dtype=dtype, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def apply_homography(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply a ``(3, 3)`` homography to ``(..., 2)`` points; returns ``(..., 2)``.

    The projective divisor is clamped away from zero (a valid transform keeps it positive over
    the images; :func:`ivfusion.registration._bounds.transform_problem` checks that)."""
    m = matrix.to(points.dtype)
    x, y = points[..., 0], points[..., 1]
    w = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    w = torch.where(w.abs() < 1e-8, torch.full_like(w, 1e-8), w)
    return torch.stack([(m[0, 0] * x + m[0, 1] * y + m[0, 2]) / w,
                        (m[1, 0] * x + m[1, 1] * y + m[1, 2]) / w], dim=-1)


def scale_matrix(src: Size, dst: Size, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(3, 3)`` map of pixel coordinates of an ``src`` ``(H, W)`` image to those of the same
    image resized to ``dst`` (pixel-centre convention: ``x' = (x + 0.5) W'/W - 0.5``)."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    return torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=dtype)


def dense_flow(flow: torch.Tensor, size: Size) -> torch.Tensor:
    """Upsample a flow grid ``(2, gh, gw)`` (or ``(B, 2, gh, gw)``) to ``(H, W, 2)`` (``(B, H, W, 2)``),
    bicubic, nodes on the frame's corners (see the module docstring)."""
    batched = flow.dim() == 4
    f = flow if batched else flow[None]
    up = F.interpolate(f, size=tuple(size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    return up if batched else up[0]


def sampling_coords(matrix: torch.Tensor, vis_size: Size, flow: Optional[torch.Tensor] = None,
                    *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Infrared pixel coordinates ``(H, W, 2)`` seen at every visible pixel: ``inv(M) (x + u(x))``.

    Args:
        matrix: ``(3, 3)`` infrared-to-visible homography in full-size pixel coordinates.
        vis_size: ``(H, W)`` of the visible frame (the output grid).
        flow: optional ``(2, gh, gw)`` displacement grid in visible pixels.
    """
    h, w = vis_size
    x = pixel_grid(h, w, dtype=torch.float64, device=matrix.device)
    if flow is not None:
        x = x + dense_flow(flow.to(torch.float64), (h, w))
    return apply_homography(torch.linalg.inv(matrix.to(torch.float64)), x).to(dtype)


def to_grid_sample(coords: torch.Tensor, size: Size) -> torch.Tensor:
    """Pixel coordinates ``(..., 2)`` of an ``(H, W)`` image -> ``grid_sample``'s [-1, 1] coordinates
    (``align_corners=False``)."""
    h, w = size
    scale = coords.new_tensor([2.0 / w, 2.0 / h])
    return (coords + 0.5) * scale - 1.0


def inside_mask(coords: torch.Tensor, size: Size) -> torch.Tensor:
    """``(...)`` bool: the pixel coordinates ``(..., 2)`` fall on the ``(H, W)`` image (within its
    outer pixel edges)."""
    h, w = size
    x, y = coords[..., 0], coords[..., 1]
    return (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)


def sample(image: torch.Tensor, coords: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
    """Bilinear samples of ``image`` ``(B, C, h, w)`` at pixel coordinates ``(B, H, W, 2)`` (or an
    unbatched ``(H, W, 2)`` shared by the batch) -> ``(B, C, H, W)``. Outside the image the border
    pixels are repeated (use :func:`inside_mask` for validity)."""
    grid = to_grid_sample(coords, image.shape[-2:]).to(image.dtype)
    if grid.dim() == 3:
        grid = grid.expand(image.shape[0], *grid.shape)
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=False)


def corners(size: Size, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(4, 2)`` pixel coordinates of the centres of an ``(H, W)`` image's corner pixels."""
    h, w = size
    return torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]], dtype=dtype)


def homography_from_points(src: Sequence[Sequence[float]], dst: Sequence[Sequence[float]]) -> torch.Tensor:
    """The ``(3, 3)`` homography taking 4 (or more, least squares) ``src`` points to ``dst`` (DLT,
    float64, ``H[2, 2] = 1``)."""
    s = torch.as_tensor(src, dtype=torch.float64)
    d = torch.as_tensor(dst, dtype=torch.float64)
    n = s.shape[0]
    a = torch.zeros(2 * n, 8, dtype=torch.float64)
    b = torch.zeros(2 * n, dtype=torch.float64)
    x, y, u, v = s[:, 0], s[:, 1], d[:, 0], d[:, 1]
    a[0::2, 0], a[0::2, 1], a[0::2, 2] = x, y, 1.0
    a[0::2, 6], a[0::2, 7] = -u * x, -u * y
    a[1::2, 3], a[1::2, 4], a[1::2, 5] = x, y, 1.0
    a[1::2, 6], a[1::2, 7] = -v * x, -v * y
    b[0::2], b[1::2] = u, v
    h = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
    return torch.cat([h, h.new_ones(1)]).reshape(3, 3)
