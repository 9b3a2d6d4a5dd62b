"""VIF internals: the reference's Gaussian windows, the local (co)variances of each scale (FFT
'valid' filtering, then decimation by 2) and the per-scale information sums. :func:`vif` in
:mod:`.functional` is the public metric; conventions (0..255 scale, ``(B, 1, H, W)``) are its.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

from ..filters import next_fast_len

Tensor = torch.Tensor

__all__ = ["vif_window", "vif_sums"]


def _filter_valid_decimate(x: Tensor, k: Tensor) -> Tensor:
    """'valid' cross-correlation with the separable kernel ``outer(k, k)``, keeping every second
    row and column of the result (rows/columns 0, 2, 4, ...), computed only there."""
    n = k.numel()
    w = x.shape[-1] - n + 1
    rows = k[0] * x[..., :, 0:w:2]
    for t in range(1, n):
        rows += k[t] * x[..., :, t : t + w : 2]
    h = x.shape[-2] - n + 1
    out = k[0] * rows[..., 0:h:2, :]
    for t in range(1, n):
        out += k[t] * rows[..., t : t + h : 2, :]
    return out


def vif_window(size: int, *, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """The 2-D VIF window: ``exp(-(x^2 + y^2) / (2 s^2))`` on a ``size x size`` grid centred on 0,
    ``s = size / 5``, values below ``eps * max`` set to 0, normalised to sum 1 (MATLAB's
    ``fspecial('gaussian')``, as the reference builds it)."""
    sd = size / 5.0
    half = (size - 1) / 2.0
    t = torch.arange(size, dtype=torch.float64) - half
    h = torch.exp(-(t[None, :] ** 2 + t[:, None] ** 2) / (2.0 * sd * sd))
    h = torch.where(h < torch.finfo(torch.float64).eps * h.max(), torch.zeros_like(h), h)
    return (h / h.sum()).to(dtype=dtype, device=device)


def _vif_profile(size: int, dtype: torch.dtype, device) -> Tensor:
    """1-D factor of :func:`vif_window`: ``outer(p, p)`` equals the window to ~1e-16."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    p = torch.exp(-(t * t) / (2.0 * (size / 5.0) ** 2))
    return (p / p.sum()).to(dtype=dtype, device=device)


_VIF_NOISE_VAR = 2.0
_VIF_EPS = 1e-10


def _vif_terms(s1: Tensor, s2: Tensor, s12: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-image, per-channel sums ``(B, C)`` of the VIF numerator and denominator terms at one scale.

    ``s1``/``s2`` are the local variances of reference and distorted image (``s2`` already clipped
    at 0), ``s12`` their covariance; ``s1`` and ``s12`` are overwritten. The reference applies, in
    order: negative variances -> 0; ``g = s12 / (s1 + eps)``, ``sv = s2 - g s12``; where
    ``s1 < eps``: ``g = 0, sv = s2, s1 = 0``; where ``s2 < eps``: ``g = 0, sv = 0``; where
    ``g < 0``: ``sv = s2, g = 0``; then ``sv = max(sv, eps)``. Wherever one of those rules zeroes
    ``g`` the numerator term is ``log(1) = 0`` whatever ``sv`` is, so the sequence reduces to the
    masks below.
    """
    eps = _VIF_EPS
    s1 = s1.clamp_min_(0.0)
    flat1 = s1 < eps
    g = s12 / (s1 + eps)
    g.masked_fill_(flat1 | (s2 < eps) | (g < 0), 0.0)
    sv = torch.addcmul(s2, g, s12, value=-1.0).clamp_min_(eps)
    s1.masked_fill_(flat1, 0.0)
    # the reference sums log10(1 + x); the base cancels in num / den, so natural log1p serves
    num = g.mul_(g).mul_(s1).div_(sv.add_(_VIF_NOISE_VAR)).log1p_().flatten(2).sum(2)
    den = torch.log1p(s1.mul_(1.0 / _VIF_NOISE_VAR)).flatten(2).sum(2)
    return num, den


def _vif_window_spectrum(size: int, grid: Tuple[int, int], dtype: torch.dtype, device) -> Tensor:
    """Conjugate ``rfft2`` of :func:`vif_window` on the ``grid``, from 1-D transforms of its
    separable profile (the window is ``outer(p, p)`` to ~1e-16): two short FFTs instead of an
    image-sized 2-D one."""
    p = _vif_profile(size, dtype, device)
    spec = torch.fft.fft(p, n=grid[0])[:, None] * torch.fft.rfft(p, n=grid[1])[None, :]
    return spec.conj_physical_()


def _fft_valid(x: Tensor, kspec: Tensor, shape: Tuple[int, int], ksize: int) -> Tensor:
    """'valid' cross-correlation of ``x`` with a ``ksize x ksize`` kernel given as the conjugate of
    its spectrum on the ``shape`` FFT grid (circular correlation never wraps into valid outputs)."""
    h, w = x.shape[-2:]
    spec = torch.fft.rfft2(x, s=shape)
    spec *= kspec
    return torch.fft.irfft2(spec, s=shape)[..., : h - ksize + 1, : w - ksize + 1]


def vif_sums(sources: Sequence[Tensor], dist: Tensor) -> Tuple[Tensor, Tensor]:
    """Numerator and denominator of the multi-scale pixel VIF of each ``(B, 1, H, W)`` source
    (the reference image) against ``dist``, summed over the four scales -> ``(B, len(sources))`` each.

    Filtering is 'valid' cross-correlation by FFT (float64 direct convolution on CPU is several
    times slower), one image-sized map at a time: stacking all eight statistics maps makes
    buffers large enough that fresh allocations and page faults dominate on CPU.
    """
    srcs = list(sources)
    num = dist.new_zeros(dist.shape[0], len(srcs))
    den = torch.zeros_like(num)
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1  # 17, 9, 5, 3
        h, w = dist.shape[-2:]
        if min(h, w) < size:
            break  # too small for this scale: it (and every coarser one) contributes nothing
        grid = (next_fast_len(h), next_fast_len(w))
        kspec = _vif_window_spectrum(size, grid, dist.dtype, dist.device)
        mu2 = _fft_valid(dist, kspec, grid, size)
        s2 = _fft_valid(dist * dist, kspec, grid, size).addcmul_(mu2, mu2, value=-1.0).clamp_min_(0.0)
        for i, ref in enumerate(srcs):
            mu1 = _fft_valid(ref, kspec, grid, size)
            s1 = _fft_valid(ref * ref, kspec, grid, size).addcmul_(mu1, mu1, value=-1.0)
            s12 = _fft_valid(ref * dist, kspec, grid, size).addcmul_(mu1, mu2, value=-1.0)
            n, d = _vif_terms(s1, s2, s12)
            num[:, i] += n[:, 0]
            den[:, i] += d[:, 0]
        if scale < 4:
            # next scale: filter with its own window ('valid'), keep every second row and column;
            # the window is separable (outer product of its normalised 1-D profile)
            nsize = 2 ** (4 - scale) + 1
            if min(h, w) < nsize:
                break
            profile = _vif_profile(nsize, dist.dtype, dist.device)
            dist = _filter_valid_decimate(dist, profile)
            srcs = [_filter_valid_decimate(ref, profile) for ref in srcs]
    return num, den
