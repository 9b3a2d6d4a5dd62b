"""The classical cross-modal estimator: structure features, coarse to fine, Gauss-Newton.

Both images are turned into modality-independent feature maps (NGF orientation tensors or MIND-SSC
descriptors, :mod:`._similarity`) on an image pyramid. Then:

1. **Global search** on a coarse level: the infrared features are resampled for a small grid of
   rotations and scales, and for each the match of every translation is read off FFT
   cross-correlations; the best few ``(rotation, scale, shift)`` candidates go on.
2. **Parametric refinement**: Levenberg-Marquardt on the sum of squared feature differences over
   the 6 (affine) or 8 (homography) parameters, with the analytic Jacobian (the infrared features'
   spatial gradients, resampled with them, times the transform's derivative: Lucas-Kanade), level by
   level up the pyramid; each candidate on the search level, the best one above it.
3. **Deformation** (``model="deformable"``): a coarse grid of displacement nodes, upsampled
   bicubically, solved the same way (per-pixel 2x2 normal equations projected onto the nodes
   through the separable interpolation weights) with a diffusion penalty that keeps it smooth.

The parameters live in *centred visible units*: ``p = (x - c) / s`` for a visible pixel ``x``, with
``c`` the image centre and ``s`` half its longer side, so the frame spans about [-1, 1]. The
transform ``T`` maps ``p`` to the infrared's position in the same units under the nominal
assumption that both cameras see the same field of view; ``T = I`` means "only rescale".
:func:`centred_to_pixels` turns ``(T, flow)`` into full-size pixel quantities.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ._geometry import scale_matrix
from ._levels import (
    ClassicalSettings,
    Frame,
    Level,
    apply_transform,
    build_levels,
    correlation_residual,
    displaced_grid,
    param_jacobian,
    point_jacobian,
    sample_features,
    similarity,
)

__all__ = ["ClassicalSettings", "Frame", "Level", "build_levels", "global_search", "refine_transform",
           "refine_flow", "similarity", "centred_to_pixels", "pixels_to_centred", "flow_grid_shape",
           "estimate", "peak_sharpness"]

Size = Tuple[int, int]


# ------------------------------------------------------------------------------------------ search


def _rotation_scale(angle_deg: float, scale: float) -> torch.Tensor:
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _translation(t: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3)
    m[:2, 2] = t
    return m


def global_search(level: Level, frame: Frame, settings: ClassicalSettings,
                  init: Optional[torch.Tensor] = None) -> List[Tuple[float, torch.Tensor]]:
    """Best ``settings.candidates`` transforms ``[(score, (3, 3))]`` over the rotation x scale grid
    (composed after ``init``) and every translation within ``settings.max_shift``, by FFT."""
    h, w = level.size
    c = level.channels
    base = torch.eye(3) if init is None else init.float()
    r = max(1, int(round(settings.max_shift * max(h, w))))
    fh, fw = h + r + 1, w + r + 1  # zero padding: no wrap-around within +-r
    fv = torch.fft.rfft2(level.vis_feat, s=(fh, fw))
    found = []
    for angle in settings.angles:
        for scale in settings.scales:
            t = base @ _rotation_scale(angle, scale)
            _, _, _, stack, mask = sample_features(level, frame, t)
            moving = (stack[..., :c] * mask[..., None]).permute(2, 0, 1)[None]
            fm = torch.fft.rfft2(moving, s=(fh, fw))
            corr = torch.fft.irfft2((fv * fm.conj()).sum(dim=1), s=(fh, fw))[0] / level.vis_energy
            # corr[dy, dx] = sum_x vis(x + d) ir(x): the infrared must move by +d; keep |d| <= r
            window = torch.cat([corr[-r:], corr[:r + 1]], dim=0)
            found.append((torch.cat([window[:, -r:], window[:, :r + 1]], dim=1), t))
    scores = torch.stack([wnd for wnd, _ in found])
    side = 2 * r + 1
    flat = scores.flatten()
    out: List[Tuple[float, torch.Tensor]] = []
    taken: List[Tuple[int, int, int]] = []
    for idx in torch.argsort(flat, descending=True).tolist():
        k, rem = divmod(idx, side * side)
        dy, dx = divmod(rem, side)
        if any(abs(dy - y2) <= 2 and abs(dx - x2) <= 2 for k2, y2, x2 in taken):
            continue  # a neighbour of a peak already taken (at any rotation/scale)
        taken.append((k, dy, dx))
        shift = torch.tensor([dx - r, dy - r], dtype=torch.float32) * level.pixel
        # the infrared seen at x must come from x - d: T' = T o translate(-d)
        out.append((float(flat[idx]), found[k][1] @ _translation(-shift)))
        if len(out) == settings.candidates:
            break
    return out


def _tile_starts(n: int, size: int, tile: int) -> List[int]:
    if n <= 1 or size <= tile:
        return [max(0, (size - tile) // 2)]
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def tile_matches(level: Level, frame: Frame, base: torch.Tensor, settings: ClassicalSettings
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block matching: where each tile of the visible features lies in the infrared's (seen through
    ``base``), by normalised cross-correlation of the features over every shift within
    ``settings.max_shift`` (batched FFTs).

    Returns ``(p, q, quality)``: tile centres ``(N, 2)`` and their matches ``(N, 2)``, both in centred
    units (``q`` in the infrared's), and each match's normalised correlation in [0, 1] (0 for a
    featureless tile)."""
    h, w = level.size
    c = level.channels
    side = max(8, int(round(settings.tile * max(h, w))))
    side = min(side, h, w)
    r = max(1, int(round(settings.max_shift * max(h, w))))
    _, _, _, stack, mask = sample_features(level, frame, base)
    ir = (stack[..., :c] * mask[..., None]).permute(2, 0, 1)  # (C, h, w) infrared in the visible frame
    ir = F.pad(ir, (r, r, r, r))
    vis = level.vis_feat[0]
    ys = _tile_starts(settings.tiles[0], h, side)
    xs = _tile_starts(settings.tiles[1], w, side)
    tiles, windows, centres = [], [], []
    for y in ys:
        for x in xs:
            tiles.append(vis[:, y:y + side, x:x + side])
            windows.append(ir[:, y:y + side + 2 * r, x:x + side + 2 * r])
            centres.append(level.grid[y + side // 2, x + side // 2] if side % 2 else
                           0.5 * (level.grid[y + side // 2 - 1, x + side // 2 - 1] + level.grid[y + side // 2, x + side // 2]))
    t = torch.stack(tiles)  # (N, C, s, s)
    wnd = torch.stack(windows)  # (N, C, s + 2r, s + 2r)
    big = side + 2 * r
    ft = torch.fft.rfft2(t, s=(big, big))
    corr = torch.fft.irfft2((torch.fft.rfft2(wnd) * ft.conj()).sum(dim=1), s=(big, big))[:, :2 * r + 1, :2 * r + 1]
    ones = torch.fft.rfft2(torch.ones(1, side, side), s=(big, big))
    energy = torch.fft.irfft2(torch.fft.rfft2((wnd * wnd).sum(dim=1)) * ones.conj(), s=(big, big))[:, :2 * r + 1, :2 * r + 1]
    et = (t * t).sum(dim=(1, 2, 3))
    ncc = corr / torch.sqrt(et[:, None, None] * energy.clamp_min(0) + 1e-12)
    n = ncc.shape[0]
    best = ncc.reshape(n, -1).argmax(dim=1)
    dy, dx = best // (2 * r + 1), best % (2 * r + 1)
    quality = ncc.reshape(n, -1).max(dim=1).values.clamp(0, 1)
    # featureless tiles (sky, a flat wall) match anything: no vote
    quality = torch.where(et > 0.05 * et.max().clamp_min(1e-12), quality, torch.zeros_like(quality))
    shift = torch.stack([dx - r, dy - r], dim=1).float() * level.pixel
    p = torch.stack(centres)
    q = apply_transform(base, p + shift)[0]
    return p, q, quality


def _fit(p: torch.Tensor, q: torch.Tensor, wts: torch.Tensor, model: str) -> Optional[torch.Tensor]:
    """Weighted least-squares ``(3, 3)`` similarity or affine transform taking ``p`` to ``q``."""
    n = p.shape[0]
    one, zero = torch.ones(n), torch.zeros(n)
    if model == "similarity":  # [a -b tx; b a ty]
        ax = torch.stack([p[:, 0], -p[:, 1], one, zero], dim=1)
        ay = torch.stack([p[:, 1], p[:, 0], zero, one], dim=1)
    else:
        ax = torch.stack([p[:, 0], p[:, 1], one, zero, zero, zero], dim=1)
        ay = torch.stack([zero, zero, zero, p[:, 0], p[:, 1], one], dim=1)
    a = torch.cat([ax, ay]) * torch.cat([wts, wts])[:, None]
    b = torch.cat([q[:, 0], q[:, 1]]) * torch.cat([wts, wts])
    sol = torch.linalg.lstsq(a.double(), b.double()[:, None]).solution[:, 0].float()
    if not torch.isfinite(sol).all():
        return None
    if model == "similarity":
        a_, b_, tx, ty = sol.tolist()
        return torch.tensor([[a_, -b_, tx], [b_, a_, ty], [0.0, 0.0, 1.0]])
    return torch.cat([sol.reshape(2, 3), torch.tensor([[0.0, 0.0, 1.0]])])


def robust_fit(p: torch.Tensor, q: torch.Tensor, quality: torch.Tensor, tol: float, min_quality: float = 0.2
               ) -> List[Tuple[float, torch.Tensor]]:
    """RANSAC over every pair of usable tiles: similarity hypotheses scored by the summed quality of
    the tiles they explain within ``tol`` (centred units), refitted as affine transforms on their
    inliers. Returns the distinct hypotheses ``[(support, (3, 3))]``, best first."""
    use = torch.nonzero(quality >= min_quality).flatten()
    if len(use) < 2:
        return []
    # every pair's similarity transform at once, in complex form: q = a p + b
    zp = torch.complex(p[:, 0].double(), p[:, 1].double())
    zq = torch.complex(q[:, 0].double(), q[:, 1].double())
    i, j = torch.triu_indices(len(use), len(use), offset=1)
    i, j = use[i], use[j]
    dz = zp[i] - zp[j]
    keep = dz.abs() > 1e-9
    a = (zq[i] - zq[j])[keep] / dz[keep]
    b = zq[i][keep] - a * zp[i][keep]
    err = (a[:, None] * zp[None] + b[:, None] - zq[None]).abs()  # (pairs, tiles)
    inl_all = (err < tol) & (quality >= min_quality)[None]
    support = (inl_all.float() * quality[None]).sum(dim=1)
    hyps = [(float(sup), inl) for sup, inl in zip(support, inl_all)]
    hyps.sort(key=lambda h: -h[0])
    out: List[Tuple[float, torch.Tensor]] = []
    seen: List[torch.Tensor] = []
    for support, inl in hyps:
        if any(bool((inl == s).all()) for s in seen):
            continue
        seen.append(inl)
        model = "affine" if int(inl.sum()) >= 4 else "similarity"
        t = _fit(p[inl], q[inl], quality[inl], model)
        if t is not None:
            out.append((support, t))
        if len(out) == 3:
            break
    return out


# ------------------------------------------------------------------------------------------ refinement


#: How the free parameters of each model enter the 3x3 transform: ``(9, k)`` basis (rows: entries).
def _basis(model: str) -> torch.Tensor:
    if model == "similarity":  # scale-rotation (a, b) and translation: [[a, -b, tx], [b, a, ty]]
        g = torch.zeros(9, 4)
        g[0, 0] = g[4, 0] = 1.0
        g[1, 1], g[3, 1] = -1.0, 1.0
        g[2, 2] = g[5, 3] = 1.0
        return g
    n = 6 if model == "affine" else 8
    return torch.eye(9)[:, :n]


def refine_transform(levels: Sequence[Level], frame: Frame, transform: torch.Tensor, model: str,
                     iterations: Sequence[int]) -> torch.Tensor:
    """Maximise the normalised correlation of the features (:func:`correlation_residual`) over ``levels``
    (coarsest first), ``iterations`` per level, by Levenberg-Marquardt. ``model``: ``"similarity"``
    (rotation, uniform scale and translation only), ``"affine"`` (keeps the last row ``0, 0, 1``)
    or ``"homography"``.

    Each step solves ``(J^T J + lam diag) step = J^T r`` (``J`` the infrared features' derivative:
    their resampled gradients times the transform's) and is kept only if the correlation grows."""
    basis = _basis(model)
    t = (transform / transform[2, 2]).float().clone()
    if model != "homography":
        t[2] = torch.tensor([0.0, 0.0, 1.0])
    for level, its in zip(levels, iterations):
        lam = 1e-3
        p, h, w, stack, mask = sample_features(level, frame, t)
        r, grad, e = correlation_residual(level, stack, mask)
        norm = frame.to_normalised()
        for _ in range(its):
            jx, jy = param_jacobian(p, h, w)  # (N, 8) each, centred units
            jx, jy = jx * norm[0], jy * norm[1]  # grid units
            if basis.shape[1] != 8:
                jx, jy = jx @ basis[:8], jy @ basis[:8]
            # J^T J and J^T r through the per-pixel 2x2 structure of the feature gradients
            gx, gy = grad[..., 0].reshape(-1, grad.shape[-2]), grad[..., 1].reshape(-1, grad.shape[-2])
            rr = r.reshape(-1, r.shape[-1])
            gxx, gxy, gyy = (gx * gx).sum(1, keepdim=True), (gx * gy).sum(1, keepdim=True), (gy * gy).sum(1, keepdim=True)
            hess = jx.T @ (gxx * jx + gxy * jy) + jy.T @ (gxy * jx + gyy * jy)
            b = jx.T @ (gx * rr).sum(1) + jy.T @ (gy * rr).sum(1)
            accepted = False
            for _ in range(6):
                step = torch.linalg.solve(hess + lam * torch.diag(hess.diagonal().clamp_min(1e-9)), b)
                cand = t + (basis @ step).reshape(3, 3)
                p2, h2, w2, stack2, mask2 = sample_features(level, frame, cand)
                r2, grad2, e2 = correlation_residual(level, stack2, mask2)
                if e2 > e:
                    t, p, h, w, r, grad, e = cand, p2, h2, w2, r2, grad2, e2
                    lam = max(lam / 10, 1e-7)
                    accepted = True
                    break
                lam *= 10
            if not accepted or float(step.abs().max()) < 0.02 * level.pixel:
                break
    return t


def flow_grid_shape(size: Size, nodes: int) -> Size:
    """``(gh, gw)`` nodes of the deformation grid: ``nodes`` along the longer side, about the same
    spacing along the other."""
    h, w = size
    if w >= h:
        return max(2, round((nodes - 1) * (h - 1) / max(w - 1, 1)) + 1), nodes
    return nodes, max(2, round((nodes - 1) * (w - 1) / max(h - 1, 1)) + 1)


def _interp_weights(nodes: int, size: int) -> torch.Tensor:
    """``(size, nodes)``: the bicubic ``align_corners=True`` weights that :func:`dense_flow` uses."""
    eye = torch.eye(nodes)[None, :, None, :]  # (1, nodes, 1, nodes): one-hot per channel
    return F.interpolate(eye, size=(1, size), mode="bicubic", align_corners=True)[0, :, 0, :].T


def _laplacian(gh: int, gw: int) -> torch.Tensor:
    """``(gh gw, gh gw)`` graph Laplacian of the 4-neighbour node grid (the diffusion penalty)."""
    n = gh * gw
    lap = torch.zeros(n, n)
    idx = torch.arange(n).reshape(gh, gw)
    for a, b in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):
        a, b = a.flatten(), b.flatten()
        lap[a, a] += 1
        lap[b, b] += 1
        lap[a, b] -= 1
        lap[b, a] -= 1
    return lap


def refine_flow(levels: Sequence[Level], frame: Frame, transform: torch.Tensor, iterations: Sequence[int],
                settings: ClassicalSettings, flow: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gauss-Newton on the deformation nodes ``(1, 2, gh, gw)`` (centred units, applied before
    ``transform``) with a diffusion penalty, on the finest ``len(iterations)`` levels."""
    gh, gw = flow_grid_shape(frame.size, settings.flow_nodes)
    u = torch.zeros(1, 2, gh, gw) if flow is None else flow.detach().clone().float()
    lap = _laplacian(gh, gw)
    norm = frame.to_normalised()
    for level, its in zip(levels[len(levels) - len(iterations):], iterations):
        by = _interp_weights(gh, level.size[0])  # (h, gh)
        bx = _interp_weights(gw, level.size[1])  # (w, gw)
        hh, ww = level.size
        bxx = (bx[:, :, None] * bx[:, None, :]).reshape(ww, gw * gw)
        byy = (by[:, :, None] * by[:, None, :]).reshape(hh, gh * gh)
        lam = None
        for _ in range(its):
            p, h, w, stack, mask = sample_features(level, frame, transform, u)
            r, grad, _ = correlation_residual(level, stack, mask)
            jac = point_jacobian(transform, h, w) * norm[:, None]  # (h, w, 2, 2): d grid / d p
            sd = grad[..., :, 0, None] * jac[..., None, 0, :] + grad[..., :, 1, None] * jac[..., None, 1, :]
            h_px = (sd[..., :, :, None] * sd[..., :, None, :]).sum(dim=2).reshape(hh, ww, 4)  # (h, w, 2x2)
            g_px = (sd * r[..., None]).sum(dim=2)  # (h, w, 2)
            # project onto the nodes through the separable weights: sum_yx By By Bx Bx H
            tmp = h_px.permute(0, 2, 1) @ bxx  # (h, 4, gw gw)
            h_nodes = (byy.T @ tmp.reshape(hh, -1)).reshape(gh, gh, 2, 2, gw, gw)
            h_nodes = h_nodes.permute(2, 0, 4, 3, 1, 5).reshape(2 * gh * gw, 2 * gh * gw)
            g_nodes = torch.einsum("yi,yxa,xj->aij", by, g_px, bx).reshape(-1)
            if lam is None:  # the penalty's weight follows the data term's scale on this level
                lam = settings.smoothness * float(h_nodes.diagonal().mean()) * (settings.flow_nodes - 1) ** 2
            reg = torch.block_diag(lap, lap) * lam
            cur = u[0].reshape(-1)
            rhs = g_nodes - reg @ cur
            damp = 1e-3 * float(h_nodes.diagonal().mean()) + 1e-9
            step = torch.linalg.solve(h_nodes + reg + damp * torch.eye(2 * gh * gw), rhs)
            u = (cur + step).reshape(1, 2, gh, gw)
            if float(step.abs().max()) < 0.02 * level.pixel:
                break
    return u


# ------------------------------------------------------------------------------------------ output


def _to_centred(frame: Frame) -> torch.Tensor:
    h, w = frame.size
    s = frame.scale
    return torch.tensor([[1 / s, 0, -(w - 1) / 2 / s], [0, 1 / s, -(h - 1) / 2 / s], [0, 0, 1]], dtype=torch.float64)


def centred_to_pixels(transform: torch.Tensor, frame: Frame, ir_size: Size,
                      flow: Optional[torch.Tensor] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(matrix, flow)`` of a :class:`~ivfusion.registration.Registration` from the centred-unit
    transform and deformation nodes: the 3x3 infrared-to-visible pixel homography and the
    ``(2, gh, gw)`` displacement in visible pixels."""
    c = _to_centred(frame)
    # centred units of the infrared (nominal same-field view) = those of the visible frame; the
    # infrared's pixels then follow from the nominal rescaling.
    vis_to_ir = scale_matrix(frame.size, ir_size) @ torch.linalg.inv(c) @ transform.double() @ c
    matrix = torch.linalg.inv(vis_to_ir)
    matrix = matrix / matrix[2, 2]
    out_flow = None if flow is None else (flow[0].double() * frame.scale).float().numpy()
    return matrix.numpy(), out_flow


def pixels_to_centred(matrix: np.ndarray, frame: Frame, ir_size: Size) -> torch.Tensor:
    """Inverse of :func:`centred_to_pixels` for the transform: the centred-unit ``(3, 3)``."""
    c = _to_centred(frame)
    vis_to_ir = torch.linalg.inv(torch.as_tensor(matrix, dtype=torch.float64))
    t = c @ torch.linalg.inv(scale_matrix(frame.size, ir_size)) @ vis_to_ir @ torch.linalg.inv(c)
    return (t / t[2, 2]).float()


# ------------------------------------------------------------------------------------------ pipeline


@dataclass
class ClassicalResult:
    """What :func:`estimate` found: the centred transform, the deformation nodes (or None), the NGF
    similarity on the finest level, and the frame."""

    transform: torch.Tensor
    flow: Optional[torch.Tensor]
    similarity: float
    frame: Frame
    levels: List[Level]


def estimate(ir: torch.Tensor, vis: torch.Tensor, model: str, settings: ClassicalSettings = ClassicalSettings(),
             init: Optional[Sequence[torch.Tensor]] = None) -> ClassicalResult:
    """Register the infrared luma ``(1, h, w)`` to the visible luma ``(1, H, W)`` (both in [0, 1]).

    ``init``: extra starting transforms (centred units, e.g. a learned estimate) refined next to the
    global search's candidates."""
    frame, levels = build_levels(ir, vis, settings)
    sl = min(settings.search_level, len(levels) - 1)
    s0 = float(np.sqrt(min(settings.scales) * max(settings.scales)))  # the expected scale (``scale`` of register)
    if settings.init == "tiles":
        p, q, quality = tile_matches(levels[sl], frame, torch.diag(torch.tensor([s0, s0, 1.0])), settings)
        starts = [t for _, t in robust_fit(p, q, quality, 2.5 * levels[sl].pixel)][:settings.candidates]
    else:
        starts = [t for _, t in global_search(levels[sl], frame, settings)][:settings.candidates]
    starts += list(init or [])
    if not starts:
        starts = [torch.diag(torch.tensor([s0, s0, 1.0]))]
    linear = "affine" if model == "affine" else "homography"
    first = max(0, len(levels) - len(settings.iterations))
    its = settings.iterations[-(len(levels) - first):]
    scored = []
    for t in starts:  # every start on the coarser refinement levels, the best few on the finest
        t = refine_transform(levels[first:-1], frame, t, linear, its[:-1])
        scored.append((similarity(levels[-2], frame, t) if len(levels) - first > 1 else 0.0, t))
    scored.sort(key=lambda st: -st[0])
    best = None
    for _, t in scored[:max(1, settings.finalists)]:
        t = refine_transform(levels[-1:], frame, t, linear, its[-1:])
        s = similarity(levels[-1], frame, t)
        if best is None or s > best[0]:
            best = (s, t)
    t = best[1]
    flow = None
    if model == "deformable":
        flow = refine_flow(levels, frame, t, settings.flow_iterations, settings)
    return ClassicalResult(t, flow, similarity(levels[-1], frame, t, flow), frame, levels)


def strided(level: Level, stride: int) -> Level:
    """Every ``stride``-th pixel of ``level``'s visible side (its infrared stack, which is only
    sampled, stays whole): the same features and resolution, ``stride^2`` times fewer samples."""
    if stride == 1:
        return level
    fv = level.vis_feat[..., ::stride, ::stride]
    return Level(fv, (fv * fv).sum().clamp_min(1e-6), level.ir_stack, level.vis_valid[::stride, ::stride],
                 level.grid[::stride, ::stride], level.pixel)


def peak_sharpness(level: Level, frame: Frame, t: torch.Tensor, flow: Optional[torch.Tensor] = None,
                   near: float = 4.0, far: float = 0.1, stride: int = 2) -> Tuple[float, float, float]:
    """``(rho, near, far)`` on ``level``: the normalised feature correlation of the estimate, and how
    much of it is lost when the estimate is shifted in 8 directions by ``near`` level pixels and by
    ``far`` of the frame (``1 - mean(rho_shifted) / rho`` each). A real match is a sharp peak well
    above every other alignment; two unrelated or flat images score about the same everywhere.
    Evaluated on every ``stride``-th pixel (17 correlations; the statistics barely change)."""
    points = displaced_grid(level, flow)[::stride, ::stride]
    level = strided(level, stride)

    def rho(tr: torch.Tensor) -> float:
        _, _, _, stack, mask = sample_features(level, frame, tr, points=points)
        return correlation_residual(level, stack, mask)[2]

    r0 = rho(t)
    if not (r0 > 1e-6):
        return 0.0, 0.0, 0.0
    out = [r0]
    for d in (near * level.pixel, far * 2.0):
        others = [rho(t @ _translation(torch.tensor([dx * d, dy * d])))
                  for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))]
        out.append(max(0.0, 1.0 - float(np.mean(others)) / r0))
    return tuple(out)  # type: ignore[return-value]
