"""The learned estimator: a small two-stage matching network (:class:`RegNet`) and loading its
weight through the manifest.

Both lumas are resized to ``INPUT_SIZE`` (the infrared nominally over the visible frame's field of
view). Coordinates are ``grid_sample``'s [-1, 1] (``align_corners=False``) of each image; the
output is a ``(B, 3, 3)`` homography from visible to infrared normalised coordinates.
"""
from __future__ import annotations

import functools
import os
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..pretrained import check_state_dict, get_manifest, load_state_dict_file, resolve_weight
from ._similarity import ngf_eps, orientation_tensor

__all__ = ["RegNet", "INPUT_SIZE", "NETWORK", "fit_homography", "robust_homography", "apply_h", "CORNERS",
           "global_correlation", "local_correlation", "load_regnet", "default_regnet_weight"]

#: ``(H, W)`` the network sees.
INPUT_SIZE = (128, 160)
#: Manifest method name of the registration network's weights.
NETWORK = "regnet"
#: The visible frame's corners in normalised coordinates, ``(4, 2)``.
CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def _warp_grid(h: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``(B, h, w, 2)`` normalised positions ``H @ x`` of the pixel centres of a ``size`` grid."""
    hh, ww = size
    ys = (torch.arange(hh, dtype=h.dtype, device=h.device) * 2 + 1) / hh - 1
    xs = (torch.arange(ww, dtype=h.dtype, device=h.device) * 2 + 1) / ww - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(-1, 3)
    out = pts @ h.transpose(1, 2)  # (B, N, 3)
    w = out[..., 2:].clamp_min(1e-6)
    return (out[..., :2] / w).reshape(h.shape[0], hh, ww, 2)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


class _Encoder(nn.Module):
    """Features at 1/4 (48 channels) and 1/8 (64 channels) of the input, each standardised per image
    and channel (instance normalisation: what distinguishes places, not the modality's offset). The
    1/4 features also see the upsampled 1/8 ones (context for the fine matching)."""

    def __init__(self) -> None:
        super().__init__()
        self.s2 = nn.Sequential(_conv(3, 16, 2), _conv(16, 16))
        self.s4 = nn.Sequential(_conv(16, 32, 2), _conv(32, 32))
        self.s8 = nn.Sequential(_conv(32, 64, 2), _conv(64, 64), nn.Conv2d(64, 64, 3, 1, 1))
        self.fine = nn.Sequential(_conv(32 + 64, 48), nn.Conv2d(48, 48, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        f4 = self.s4(self.s2(x))
        f8 = self.s8(f4)
        up = F.interpolate(f8, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        return F.instance_norm(self.fine(torch.cat([f4, up], dim=1))), F.instance_norm(f8)


def _inputs(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` luma -> ``(B, 3, H, W)``: its NGF orientation tensor (modality-independent
    edge directions, :func:`~ivfusion.registration._similarity.orientation_tensor`)."""
    return orientation_tensor(x, ngf_eps(x, 1.0))


def _cell_centres(size: Tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """``(h w, 2)`` normalised coordinates of the cell centres of a ``size`` feature map."""
    hh, ww = size
    ys = (torch.arange(hh, dtype=like.dtype, device=like.device) * 2 + 1) / hh - 1
    xs = (torch.arange(ww, dtype=like.dtype, device=like.device) * 2 + 1) / ww - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


def global_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every cell of ``a`` with every cell of ``b`` (both ``(B, C, h, w)``):
    ``(B, h w, h w)``, rows ``a``'s cells."""
    a = F.normalize(a.flatten(2), dim=1)
    b = F.normalize(b.flatten(2), dim=1)
    return torch.einsum("bcn,bcm->bnm", a, b)


def local_correlation(a: torch.Tensor, b: torch.Tensor, radius: int) -> torch.Tensor:
    """Cosine correlation of ``a`` with ``b`` shifted by every offset within ``radius``:
    ``(B, (2r+1)^2, h, w)``, offsets row-major (``dy`` outer)."""
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    h, w = a.shape[-2:]
    pad = F.pad(b, (radius,) * 4)
    out = [(a * pad[..., dy:dy + h, dx:dx + w]).sum(dim=1) for dy in range(2 * radius + 1) for dx in range(2 * radius + 1)]
    return torch.stack(out, dim=1)


def _global_match(logits: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Matches of global correlation logits ``(B, n, n)`` on a ``size`` grid: each row's best cell,
    refined by the soft-argmax over its 3x3 neighbourhood, as normalised positions ``(B, n, 2)``, and
    a weight ``(B, n)``: the dual-softmax probability of the best cell (high only for a distinct,
    mutual match; flat or repetitive regions get little say)."""
    b, n, _ = logits.shape
    hh, ww = size
    dual = torch.softmax(logits, dim=2) * torch.softmax(logits, dim=1)
    best = logits.argmax(dim=2)  # (B, n)
    by, bx = best // ww, best % ww
    r = torch.arange(-1, 2, device=logits.device)
    ny = (by[..., None, None] + r[:, None]).expand(b, n, 3, 3).reshape(b, n, 9)
    nx = (bx[..., None, None] + r[None, :]).expand(b, n, 3, 3).reshape(b, n, 9)
    inside = (ny >= 0) & (ny < hh) & (nx >= 0) & (nx < ww)
    idx = (ny.clamp(0, hh - 1) * ww + nx.clamp(0, ww - 1))
    local = torch.gather(logits, 2, idx).masked_fill(~inside, float("-inf"))
    prob = torch.softmax(local, dim=2)
    centre_x = (nx.to(logits.dtype) * 2 + 1) / ww - 1
    centre_y = (ny.to(logits.dtype) * 2 + 1) / hh - 1
    pos = torch.stack([(prob * centre_x).sum(2), (prob * centre_y).sum(2)], dim=-1)
    weight = torch.gather(dual, 2, best[..., None])[..., 0]
    return pos, weight


def _soft_argmax(logits: torch.Tensor, radius: int, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Expected displacement ``(B, h w, 2)`` (normalised units) under the softmax of local correlation
    logits ``(B, (2r+1)^2, h, w)``, and each cell's peakedness ``sum p^2`` ``(B, h w)`` as its weight."""
    b = logits.shape[0]
    prob = torch.softmax(logits, dim=1).flatten(2)  # (B, K, hw)
    r = torch.arange(-radius, radius + 1, dtype=logits.dtype, device=logits.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    table = torch.stack([dx.flatten() * 2 / size[1], dy.flatten() * 2 / size[0]], dim=-1)  # (K, 2)
    disp = torch.einsum("bkn,kd->bnd", prob, table)
    return disp, (prob * prob).sum(dim=1).reshape(b, -1)


def fit_homography(p: torch.Tensor, q: torch.Tensor, weight: torch.Tensor, reg: float = 1e-3) -> torch.Tensor:
    """Weighted least-squares homographies ``(B, 3, 3)`` taking points ``p`` ``(N, 2)`` to ``q`` ``(B, N, 2)``
    (linear DLT with ``H[2, 2] = 1``, pulled towards the identity by ``reg`` so that flat or
    featureless inputs stay well posed); differentiable."""
    b, n = q.shape[:2]
    x, y = p[:, 0].expand(b, n), p[:, 1].expand(b, n)
    u, v = q[..., 0], q[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    a = torch.cat([torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1),
                   torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)], dim=1)  # (B, 2N, 8)
    rhs = torch.cat([u, v], dim=1)
    w = torch.cat([weight, weight], dim=1)
    ata = torch.einsum("bni,bn,bnj->bij", a, w, a)
    atb = torch.einsum("bni,bn,bn->bi", a, w, rhs)
    ident = torch.tensor([1.0, 0, 0, 0, 1.0, 0, 0, 0], dtype=q.dtype, device=q.device)
    lam = reg * (ata.diagonal(dim1=1, dim2=2).mean(dim=1, keepdim=True) + 1e-6)
    h = torch.linalg.solve(ata + lam[..., None] * torch.eye(8, dtype=q.dtype, device=q.device),
                           atb + lam * ident)
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).reshape(b, 3, 3)


def robust_homography(p: torch.Tensor, q: torch.Tensor, weight: torch.Tensor, scale: float,
                      iterations: int = 3) -> torch.Tensor:
    """:func:`fit_homography` reweighted ``iterations`` times by the Cauchy weight
    ``1 / (1 + (r / scale)^2)`` of each match's residual ``r`` (normalised units): wrong matches
    lose their say instead of pulling the fit; differentiable."""
    h = fit_homography(p, q, weight)
    for _ in range(iterations):
        r2 = ((apply_h(h, p) - q) ** 2).sum(dim=-1)
        h = fit_homography(p, q, weight / (1.0 + r2 / scale ** 2))
    return h


def apply_h(h: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Homographies ``(B, 3, 3)`` on points ``(N, 2)`` or ``(B, N, 2)`` -> ``(B, N, 2)``."""
    if p.dim() == 2:
        p = p.expand(h.shape[0], *p.shape)
    out = torch.cat([p, torch.ones_like(p[..., :1])], dim=-1) @ h.transpose(1, 2)
    return out[..., :2] / out[..., 2:].clamp_min(1e-6)


class RegNet(nn.Module):
    """Two-stage homography network from an infrared/visible luma pair.

    The NGF orientation tensors of both images go through one shared small CNN. Stage 1 matches
    every 1/8-scale visible cell against *every* infrared cell (global cosine correlation: no
    search-radius limit), takes the best cell refined by a local soft-argmax, weighs it by its
    dual-softmax probability and fits a homography by iteratively reweighted least squares. Stage
    2 warps the 1/4-scale infrared features by it, correlates within 3 cells, and fits the same way.
    The geometry is solved, not regressed: the network only learns features that match across
    modalities (trained by the cross-entropy of both correlations against the true matches).

    ``forward(ir, vis)`` takes ``(B, 1, H, W)`` lumas in [0, 1] resized to :data:`INPUT_SIZE` and
    returns a dict: ``"h1"``, ``"h2"`` ``(B, 3, 3)`` homographies (visible -> infrared normalised
    coordinates), ``"q1"`` ``(B, h8 w8, 2)``, ``"q2"`` ``(B, h4 w4, 2)`` the matched infrared
    positions of the cell centres, ``"w1"``, ``"w2"`` their weights, and ``"logits1"``
    ``(B, h8 w8, h8 w8)``, ``"logits2"`` ``(B, 49, h4, w4)`` the correlations (training losses).
    """

    def __init__(self) -> None:
        super().__init__()
        self.enc = _Encoder()  # shared: its input (NGF) is already modality-independent
        self.radius4 = 3
        self.log_temperature = nn.Parameter(torch.log(torch.tensor([10.0, 10.0])))

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> Dict[str, torch.Tensor]:
        v4, v8 = self.enc(_inputs(vis))
        i4, i8 = self.enc(_inputs(ir))
        s8, s4 = tuple(v8.shape[-2:]), tuple(v4.shape[-2:])
        p8, p4 = _cell_centres(s8, v8), _cell_centres(s4, v4)
        temp = self.log_temperature.exp()
        logits1 = global_correlation(v8, i8) * temp[0]
        q1, w1 = _global_match(logits1, s8)
        h1 = robust_homography(p8, q1, w1, scale=2.0 / s8[1])
        i4w = F.grid_sample(i4, _warp_grid(h1, s4), mode="bilinear", padding_mode="zeros", align_corners=False)
        logits2 = local_correlation(v4, i4w, self.radius4) * temp[1]
        d2, w2 = _soft_argmax(logits2, self.radius4, s4)
        q2 = apply_h(h1, p4 + d2)
        h2 = robust_homography(p4, q2, w2, scale=2.0 / s4[1])
        return {"h1": h1, "h2": h2, "q1": q1, "q2": q2, "w1": w1, "w2": w2, "logits1": logits1, "logits2": logits2}


def default_regnet_weight() -> Optional[str]:
    """Name of the manifest's default registration weight, or None when none ships."""
    for name, info in get_manifest().weights.items():
        if info.method == NETWORK and info.default:
            return name
    return None


@functools.lru_cache(maxsize=4)
def _load_cached(key: str) -> RegNet:
    path = resolve_weight(key)
    state, _ = load_state_dict_file(path, what=f"registration weights {key!r}")
    net = RegNet()
    check_state_dict(net, state, what=f"registration weights {key!r}")
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval()


def load_regnet(weights: Optional[Union[str, os.PathLike]] = None) -> RegNet:
    """The registration network with ``weights`` (manifest name or ``.safetensors`` path; default:
    the manifest's default ``regnet`` weight).

    Raises:
        RuntimeError: no registration weight ships and none was given.
    """
    if weights is None:
        weights = default_regnet_weight()
        if weights is None:
            raise RuntimeError("no pretrained registration network is available; use estimator='classical'")
    return _load_cached(str(weights))


def state_dict_for_export(net: RegNet) -> Dict[str, torch.Tensor]:
    return {k: v.detach().float().contiguous() for k, v in net.state_dict().items()}
