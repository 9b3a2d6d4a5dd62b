"""Fusion-quality metrics as batched torch functions.

Conventions shared by every function here:

* images are ``(B, 1, H, W)`` floating-point tensors on the **0..255 scale** (grey levels, as the
  reference evaluators read 8-bit files); ``A`` is the infrared image (``ir``), ``B`` the visible
  one (``vis``), ``F`` the fused result;
* each function returns a ``(B,)`` tensor, one value per image, in the input's dtype and device;
* nothing is rounded except where a metric needs grey-level *bins* (``EN`` and ``MI`` round to the
  nearest integer and clip to 0..255);
* pass ``float64`` for agreement with the reference numpy code to ~1e-9 relative or better;
  ``float32`` is faster but the local variances of ``VIF`` and ``SSIM`` (``E[x^2] - E[x]^2`` on
  values up to 255^2) then carry absolute errors around 1e-2, which shows up around the 4th-5th
  digit. ``Qabf`` and ``Nabf`` are written to stay within ~1e-7 in float32 (exact Sobel responses
  for 8-bit data, sums accumulated in float64, no ``1 - Q`` cancellation), so
  :func:`ivfusion.metrics.evaluate_batch` runs those two in float32 by default; ``EN`` and ``MI``
  count histograms and compute entropies in float64 whatever the input dtype;
* the functions are for scoring, not training: rounding and histograms have no useful gradient,
  and intermediate results are updated in place.

Definitions follow the ``Evaluator`` of the CDDFuse/EMMA code (Zhao et al.) unless stated; the
per-function docstrings give the formulas. The options that differ between the ``"reference"`` and
``"standard"`` profiles of :mod:`ivfusion.metrics` are keyword arguments here.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch

from ..filters import fft_filter2d, gaussian_kernel1d, sobel, ssim_from_moments
from ._vif import vif_sums, vif_window

__all__ = [
    "entropy",
    "standard_deviation",
    "spatial_frequency",
    "average_gradient",
    "mutual_information",
    "scd",
    "vif",
    "qabf",
    "ssim",
    "nabf",
    "psnr",
    "correlation_coefficient",
    "mse",
    "vif_window",
]

Tensor = torch.Tensor

# ----------------------------------------------------------------------------------------------
# helpers


def _check(x: Tensor, name: str, min_size: int = 1) -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name}: expected a (B, 1, H, W) tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor on the 0..255 scale, got {x.dtype}")
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(f"{name}: needs images of at least {min_size}x{min_size} pixels, got {h}x{w}")
    return x


def _check_triplet(fused: Tensor, ir: Tensor, vis: Tensor, min_size: int = 1) -> None:
    _check(fused, "fused", min_size)
    _check(ir, "ir", min_size)
    _check(vis, "vis", min_size)
    if not (fused.shape == ir.shape == vis.shape):
        raise ValueError(
            f"fused, ir and vis must have the same shape, got {tuple(fused.shape)}, "
            f"{tuple(ir.shape)} and {tuple(vis.shape)}"
        )


def _grey_levels(x: Tensor) -> Tensor:
    """Integer grey levels 0..255 as int32 (round half to even, like ``numpy.round``)."""
    return torch.round(x).clamp_(0, 255).to(torch.int32)


def _entropy_from_counts(counts: Tensor, n: int) -> Tensor:
    """Shannon entropy in nats (float64) of each row of a ``(B, K)`` count table summing to ``n``."""
    c = counts.to(torch.float64)
    # H = log n - (1/n) sum c log c, with 0 log 0 = 0
    clogc = torch.where(c > 0, c * torch.log(c.clamp_min(1)), torch.zeros_like(c))
    return math.log(n) - clogc.sum(dim=1) / n


def _histograms(levels: Tensor, bins: int) -> Tensor:
    """Per-image histograms: ``levels`` is ``(B, N)`` integers in ``[0, bins)`` -> ``(B, bins)`` counts."""
    b = levels.shape[0]
    flat = levels.reshape(-1)
    if b > 1:  # image k counts into bins k * bins ... (k + 1) * bins - 1; int64: B * bins may pass 2^31
        flat = (levels + torch.arange(b, device=levels.device, dtype=torch.int64).unsqueeze(1) * bins).reshape(-1)
    return torch.bincount(flat, minlength=b * bins).reshape(b, bins)


def _box_sum_valid(x: Tensor, size: int) -> Tensor:
    """Sums over every ``size x size`` window that fits inside the image ('valid'), by shifted adds.

    Exact for integer-valued float64 data (each sum stays far below 2^53)."""
    w = x.shape[-1] - size + 1
    rows = x[..., :, 0:w].clone()
    for t in range(1, size):
        rows += x[..., :, t : t + w]
    h = x.shape[-2] - size + 1
    out = rows[..., 0:h, :].clone()
    for t in range(1, size):
        out += rows[..., t : t + h, :]
    return out


def _np_gradient(x: Tensor, dim: int) -> Tensor:
    """``numpy.gradient`` along ``dim`` (unit spacing): central differences inside, one-sided at the ends."""
    n = x.shape[dim]
    g = torch.empty_like(x)
    g.narrow(dim, 1, n - 2).copy_(x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)).div_(2.0)
    g.narrow(dim, 0, 1).copy_(x.narrow(dim, 1, 1) - x.narrow(dim, 0, 1))
    g.narrow(dim, n - 1, 1).copy_(x.narrow(dim, n - 1, 1) - x.narrow(dim, n - 2, 1))
    return g


def _sum(x: Tensor) -> Tensor:
    """Per-image sum of a ``(B, ...)`` map, accumulated in float64 (float32 maps keep ~1e-8), in ``x``'s dtype."""
    return x.flatten(1).sum(1, dtype=torch.float64).to(x.dtype)


def _pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson correlation over all pixels of each image; NaN when either image is constant."""
    x = x.flatten(1)
    y = y.flatten(1)
    xc = x - x.mean(dim=1, keepdim=True)
    yc = y - y.mean(dim=1, keepdim=True)
    return (xc * yc).sum(dim=1) / torch.sqrt((xc * xc).sum(dim=1) * (yc * yc).sum(dim=1))


# ----------------------------------------------------------------------------------------------
# no-reference metrics (fused image only)


def entropy(fused: Tensor) -> Tensor:
    """EN: Shannon entropy, in bits, of the 256-bin grey-level histogram of ``round(F)``.

    ``EN = -sum_k p_k log2 p_k`` with ``p_k`` the fraction of pixels at level ``k``. Range
    ``[0, 8]`` (8 for a uniform histogram); higher is better.
    """
    _check(fused, "fused")
    b = fused.shape[0]
    levels = _grey_levels(fused).reshape(b, -1)
    counts = _histograms(levels, 256)
    return (_entropy_from_counts(counts, levels.shape[1]) / math.log(2.0)).to(fused.dtype)


def standard_deviation(fused: Tensor) -> Tensor:
    """SD: population standard deviation of the grey levels, ``sqrt(mean((F - mean F)^2))``.

    Range ``[0, 127.5]``; higher is better (more contrast).
    """
    _check(fused, "fused")
    return fused.flatten(1).std(dim=1, correction=0)


def spatial_frequency(fused: Tensor) -> Tensor:
    """SF: ``sqrt(mean((F[:, 1:] - F[:, :-1])^2) + mean((F[1:, :] - F[:-1, :])^2))``.

    Each mean runs over its own difference image (``H x (W-1)`` resp. ``(H-1) x W`` values).
    Range ``[0, 255 sqrt 2]``; higher is better.
    """
    _check(fused, "fused", 2)
    dx = fused[..., :, 1:] - fused[..., :, :-1]
    dy = fused[..., 1:, :] - fused[..., :-1, :]
    return torch.sqrt(dx.square().flatten(1).mean(1) + dy.square().flatten(1).mean(1))


def average_gradient(fused: Tensor) -> Tensor:
    """AG: ``mean(sqrt((Gx^2 + Gy^2) / 2))`` over all ``H x W`` pixels.

    ``Gx``/``Gy`` are derivatives along the width/height with ``numpy.gradient`` semantics:
    central differences ``(x[i+1] - x[i-1]) / 2`` inside, one-sided differences on the first and
    last column/row. Range ``[0, 255]``; higher is better.
    """
    _check(fused, "fused", 2)
    return torch.sqrt((_np_gradient(fused, -1).square_() + _np_gradient(fused, -2).square_()).div_(2.0)).flatten(1).mean(1)


# ----------------------------------------------------------------------------------------------
# metrics against the two sources


def _mutual_information_pair(x_levels: Tensor, h_x: Tensor, y_levels: Tensor) -> Tensor:
    n = x_levels.shape[1]
    h_y = _entropy_from_counts(_histograms(y_levels, 256), n)
    h_xy = _entropy_from_counts(_histograms(x_levels * 256 + y_levels, 256 * 256), n)
    # MI >= 0; clamp the round-off of H(X) + H(Y) - H(X, Y) as scikit-learn's mutual_info_score does
    return (h_x + h_y - h_xy).clamp_min(0.0)


def mutual_information(fused: Tensor, ir: Tensor, vis: Tensor, *, base: float = math.e) -> Tensor:
    """MI: ``MI(F, A) + MI(F, B)`` from 256 x 256 joint grey-level histograms of each image.

    ``MI(X, Y) = sum_ij p_ij log(p_ij / (p_i p_j)) = H(X) + H(Y) - H(X, Y)``, levels
    ``round(x)`` clipped to 0..255. ``base=e`` (nats) is what the reference evaluator reports
    (scikit-learn's ``mutual_info_score``); ``base=2`` gives bits, the unit of most papers. Range
    ``[0, 2 log 256]``; higher is better.
    """
    _check_triplet(fused, ir, vis)
    if not base > 0 or base == 1:
        raise ValueError(f"base: expected a logarithm base > 0 and != 1, got {base}")
    b = fused.shape[0]
    lf = _grey_levels(fused).reshape(b, -1)
    la = _grey_levels(ir).reshape(b, -1)
    lb = _grey_levels(vis).reshape(b, -1)
    h_f = _entropy_from_counts(_histograms(lf, 256), lf.shape[1])
    mi = _mutual_information_pair(lf, h_f, la) + _mutual_information_pair(lf, h_f, lb)
    return (mi / math.log(base)).to(fused.dtype)


def scd(fused: Tensor, ir: Tensor, vis: Tensor) -> Tensor:
    """SCD (sum of the correlations of differences): ``corr(F - B, A) + corr(F - A, B)``.

    ``corr`` is the Pearson correlation over all pixels. Range ``[-2, 2]``; higher is better.
    NaN when a source or a difference image is constant.
    """
    _check_triplet(fused, ir, vis)
    return _pearson(fused - vis, ir) + _pearson(fused - ir, vis)


def correlation_coefficient(fused: Tensor, ir: Tensor, vis: Tensor) -> Tensor:
    """CC: ``(corr(A, F) + corr(B, F)) / 2`` (Pearson over all pixels).

    Range ``[-1, 1]``; higher is better. NaN when an image is constant.
    """
    _check_triplet(fused, ir, vis)
    return (_pearson(ir, fused) + _pearson(vis, fused)) / 2.0


def mse(fused: Tensor, ir: Tensor, vis: Tensor) -> Tensor:
    """MSE: ``(mean((A - F)^2) + mean((B - F)^2)) / 2`` in squared grey levels.

    Range ``[0, 255^2]``; lower is better.
    """
    _check_triplet(fused, ir, vis)
    return ((ir - fused).square().flatten(1).mean(1) + (vis - fused).square().flatten(1).mean(1)) / 2.0


def psnr(fused: Tensor, ir: Tensor, vis: Tensor, *, peak: Union[str, float] = 255.0) -> Tensor:
    """PSNR in dB: ``10 log10(peak^2 / MSE)`` with ``MSE`` from :func:`mse`.

    ``peak=255`` is the textbook definition; ``peak="max"`` uses the fused image's own maximum,
    ``max(F)``, as the reference evaluator's code does (the two agree for a fused image stretched
    to 0..255). ``inf`` when ``MSE = 0``. Higher is better.
    """
    err = mse(fused, ir, vis)
    if isinstance(peak, str):
        if peak != "max":
            raise ValueError(f"peak: expected a number or 'max', got {peak!r}")
        top = fused.flatten(1).amax(1)
    else:
        top = torch.full_like(err, float(peak))
    return 10.0 * torch.log10(top * top / err)


# ----------------------------------------------------------------------------------------------
# VIF


def vif(fused: Tensor, ir: Tensor, vis: Tensor) -> Tensor:
    """VIF: multi-scale pixel-domain visual information fidelity (Sheikh & Bovik 2006),
    ``VIF(A, F) + VIF(B, F)``, each source the reference and ``F`` the distorted image.

    Four scales with windows :func:`vif_window` of size 17, 9, 5, 3 ('valid' filtering); from
    scale 2 on the images are first filtered with that scale's window ('valid') and every second
    row and column is kept. Local statistics ``s1 = var(ref)``, ``s2 = var(dist)``,
    ``s12 = cov`` give ``g = s12 / s1`` and ``sv = s2 - g s12`` (clipping rules as in the reference
    code, ``eps = 1e-10``) and

        VIF = sum_scales sum_px log10(1 + g^2 s1 / (sv + 2)) / sum_scales sum_px log10(1 + s1 / 2)

    (noise variance 2). A 0/0 ratio (a constant source) counts as 1, like the reference. Scales
    whose image is smaller than the window are skipped; images under 17x17 raise. Range
    ``[0, ~2]`` (1 per source for ``F`` equal to it); higher is better.
    """
    _check_triplet(fused, ir, vis, 17)
    num, den = vif_sums([ir, vis], fused)
    ratio = num / den
    ratio = torch.where(torch.isnan(ratio), torch.ones_like(ratio), ratio)
    return ratio.sum(dim=1)


# ----------------------------------------------------------------------------------------------
# Qabf and Nabf (edge-preservation metrics)

_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8


def _atan_of_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``atan(num / den)`` for ``den != 0`` and ``+-pi/2`` for ``den = +-0 != num`` (the limits of the
    division), ``+-0`` for ``0 / 0``; as ``atan2(num * sign(den), |den|)``, an exact rewrite that
    runs about twice as fast as ``atan`` on CPU (whose ``atan`` is not vectorised)."""
    return torch.atan2(torch.copysign(num.new_ones(()), den).mul_(num), den.abs())


def _edge_strength(sx: Tensor, sy: Tensor) -> Tensor:
    return torch.square(sx).addcmul_(sy, sy).sqrt_()


def _qabf_edges(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Sobel strength ``g`` and orientation ``atan(Sy / Sx)`` (``pi/2`` where ``Sx = 0``).

    The reference convolves (kernel flipped) with ``[[-1,0,1],[-2,0,2],[-1,0,1]]`` and
    ``[[1,2,1],[0,0,0],[-1,-2,-1]]``; that negates both responses of the cross-correlation
    :func:`ivfusion.filters.sobel` computes, which leaves ``g`` and ``Sy / Sx`` unchanged.
    """
    sx, sy = sobel(x, "zero")
    angle = _atan_of_ratio(sy, sx)  # Sx = 0 (+-pi/2 or 0) is replaced next
    return _edge_strength(sx, sy), angle.masked_fill_(sx == 0, math.pi / 2)


def _qabf_preservation(g_src: Tensor, a_src: Tensor, g_f: Tensor, a_f: Tensor, equal_strength: str) -> Tensor:
    # G = min/max of the strengths; where they are equal the reference stores gF itself, not 1
    ratio = torch.minimum(g_src, g_f).div_(torch.maximum(g_src, g_f))
    equal = g_src == g_f
    if equal_strength == "reference":
        ratio = torch.where(equal, g_f, ratio)
    else:
        ratio.masked_fill_(equal, 1.0)
    # Tg / (1 + exp(kg (G - Dg))) = Tg * sigmoid(-kg (G - Dg)); likewise for the orientation term
    # with A = 1 - |aX - aF| / (pi/2): -ka (A - Da) = -ka (1 - Da) + ka |aX - aF| / (pi/2)
    q_g = ratio.sub_(_QABF_DG).mul_(-_QABF_KG).sigmoid_()
    orient = torch.sub(a_src, a_f).abs_().mul_(_QABF_KA / (math.pi / 2)).add_(-_QABF_KA * (1.0 - _QABF_DA))
    return q_g.mul_(orient.sigmoid_()).mul_(_QABF_TG * _QABF_TA)


def qabf(fused: Tensor, ir: Tensor, vis: Tensor, *, equal_strength: str = "reference") -> Tensor:
    """Qabf: Xydeas & Petrovic's gradient-based edge-preservation measure.

    Sobel responses by zero-padded 'same' filtering give strength ``g = sqrt(Sx^2 + Sy^2)`` and
    orientation ``a = atan(Sy / Sx)`` (``pi/2`` where ``Sx = 0``). For a source ``X`` in {A, B}:
    strength ratio ``G = min(gX, gF) / max(gX, gF)``, orientation agreement
    ``Al = 1 - |aX - aF| / (pi/2)``, preservation
    ``Q_XF = Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (Al - Da)))`` with
    ``Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8``, and

        Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB).

    ``equal_strength="reference"`` keeps a quirk of the reference code: where ``gX == gF`` it uses
    ``G = gF`` instead of 1; ``"one"`` uses the textbook 1. Range ``[0, 1]``; higher is better.
    NaN when both sources are constant.
    """
    _check_triplet(fused, ir, vis)
    if equal_strength not in ("reference", "one"):
        raise ValueError(f"equal_strength: expected 'reference' or 'one', got {equal_strength!r}")
    g_a, a_a = _qabf_edges(ir)
    g_b, a_b = _qabf_edges(vis)
    g_f, a_f = _qabf_edges(fused)
    q_af = _qabf_preservation(g_a, a_a, g_f, a_f, equal_strength)
    q_bf = _qabf_preservation(g_b, a_b, g_f, a_f, equal_strength)
    return _sum(q_af.mul_(g_a).add_(q_bf.mul_(g_b))) / _sum(g_a.add_(g_b))


_NABF_TD = 2.0  # weights gX^1.5 (written g * sqrt(g)) where gX >= Td
_NABF_NRG, _NABF_KG, _NABF_SG = 0.9999, 19.0, 0.5
_NABF_NRA, _NABF_KA, _NABF_SA = 0.9995, 22.0, 0.5


def _nabf_edges(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Strength and orientation from Sobel kernels divided by 8 on the mirror-extended image
    (reflect, edge not repeated): ``gv`` answers ``[[-1,0,1],[-2,0,2],[-1,0,1]]/8`` (= Sx/8),
    ``gh`` answers ``[[-1,-2,-1],[0,0,0],[1,2,1]]/8`` (= -Sy/8); ``a = atan(gv / gh)``, 0 where
    both are 0 (``gh = 0 < |gv|`` gives +-pi/2, as numpy's division by zero does)."""
    sx, sy = sobel(x, "reflect")
    # sqrt((Sx/8)^2 + (Sy/8)^2) == sqrt(Sx^2 + Sy^2) / 8 and (Sx/8) / (-Sy/8) == -Sx/Sy exactly
    g = _edge_strength(sx, sy).mul_(0.125)
    angle = _atan_of_ratio(sx, sy.neg())  # 0 where both are 0
    return g, angle


def _nabf_loss(g_src: Tensor, a_src: Tensor, g_f: Tensor, a_f: Tensor) -> Tensor:
    """``1 - Q_XF``, computed without cancelling ``1 - (something close to 1)``.

    ``Q = sqrt(c s_g s_a)`` with ``c = Nrg Nra`` and sigmoids ``s = 1 - u``, ``u = sigmoid(-x)``;
    ``1 - Q = (1 - Q^2) / (1 + Q)`` and ``1 - Q^2 = (1 - c) + c (u_g + u_a - u_g u_a)``, a sum of
    small positive terms: accurate to a few ulp even in float32 (where ``1 - Q`` directly would
    lose four digits, ``Q`` being within 1e-3 of 1 wherever edges agree)."""
    # G = min/max, 0 where either strength is 0 (min = 0; the clamp keeps 0/0 away)
    ratio = torch.minimum(g_src, g_f).div_(torch.maximum(g_src, g_f).clamp_min_(torch.finfo(g_src.dtype).tiny))
    orient = torch.sub(a_src, a_f).abs_().sub_(math.pi / 2).abs_().mul_(2.0 / math.pi)
    # Nr / (1 + exp(-k (x - s))) = Nr * sigmoid(k (x - s)) = Nr * (1 - sigmoid(-k (x - s)))
    u_g = ratio.sub_(_NABF_SG).mul_(-_NABF_KG).sigmoid_()
    u_a = orient.sub_(_NABF_SA).mul_(-_NABF_KA).sigmoid_()
    c = _NABF_NRG * _NABF_NRA
    both = u_g * u_a
    one_minus_q2 = u_g.add_(u_a).sub_(both).mul_(c).add_(1.0 - c)
    q = torch.neg(one_minus_q2, out=both).add_(1.0).sqrt_()  # 1 - (1 - Q^2), in the spent buffer
    return one_minus_q2.div_(q.add_(1.0))


def _nabf_weight(g: Tensor) -> Tensor:
    return torch.sqrt(g).mul_(g).masked_fill_(g < _NABF_TD, 0.0)  # g^1.5 where g >= Td


def nabf(fused: Tensor, ir: Tensor, vis: Tensor) -> Tensor:
    """Nabf: the modified fusion-artefact measure of B. K. Shreyamsha Kumar (SIViP 2013), the
    "N_abf" of the Petrovic objective-fusion-performance toolbox as widely re-implemented.

    Sobel kernels divided by 8 on the mirror-extended image give strength ``g`` and orientation
    ``a = atan(gv / gh)`` (0 where both responses are 0). For a source ``X``:
    ``G = min(gX, gF) / max(gX, gF)`` (0 where either is 0),
    ``Al = | |aX - aF| - pi/2 | * 2/pi``,
    ``Q_XF = sqrt(0.9999 / (1 + exp(-19 (G - 0.5))) * 0.9995 / (1 + exp(-22 (Al - 0.5))))``,
    weights ``wX = gX^1.5`` where ``gX >= 2`` else 0, and with ``na = [gF > gA and gF > gB]``

        Nabf = sum(na ((1 - Q_AF) wA + (1 - Q_BF) wB)) / sum(wA + wB).

    The reference ``Evaluator`` of CDDFuse has no Nabf; this follows Kumar's MATLAB
    ``objective_fusion_perform_fn`` and its Python ports. Range ``[0, 1]``; lower is better.
    """
    _check_triplet(fused, ir, vis, 2)
    g_a, a_a = _nabf_edges(ir)
    g_b, a_b = _nabf_edges(vis)
    g_f, a_f = _nabf_edges(fused)
    w_a, w_b = _nabf_weight(g_a), _nabf_weight(g_b)
    loss = _nabf_loss(g_a, a_a, g_f, a_f).mul_(w_a).add_(_nabf_loss(g_b, a_b, g_f, a_f).mul_(w_b))
    loss = loss.masked_fill_((g_f <= g_a) | (g_f <= g_b), 0.0)  # artefacts: gF above both sources
    return _sum(loss) / _sum(w_a.add_(w_b))


# ----------------------------------------------------------------------------------------------
# SSIM


def _window_sums(x: Tensor, window: str, size: int, sigma: float) -> Tensor:
    """'valid' window sums (``"uniform"``; exact for integer-valued float64 data) or weighted
    means (``"gaussian"``, weights summing to 1) of ``x``."""
    if window == "uniform":
        return _box_sum_valid(x, size)
    k = gaussian_kernel1d(size, sigma, dtype=x.dtype, device=x.device)
    return fft_filter2d(x, torch.outer(k, k))


def ssim(
    fused: Tensor,
    ir: Tensor,
    vis: Tensor,
    *,
    window: str = "uniform",
    size: int = 7,
    sigma: float = 1.5,
    data_range: float = 2.0,
    k1: float = 0.01,
    k2: float = 0.03,
    sample_covariance: bool = True,
    reduction: str = "sum",
) -> Tensor:
    """SSIM (Wang et al. 2004) of ``F`` against each source, summed (``reduction="sum"``, range
    ``[-2, 2]``) or averaged (``"mean"``, range ``[-1, 1]``); higher is better.

    ``SSIM(x, y) = mean over the 'valid' windows of
    (2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)(sx^2 + sy^2 + C2))`` with
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, ``L = data_range``, local statistics under a ``size x size``
    ``"uniform"`` or ``"gaussian"`` (std ``sigma``) window and, with ``sample_covariance``, variances
    scaled by ``N / (N - 1)`` (``N = size^2``).

    The defaults are the reference evaluator's (scikit-image 0.19 ``structural_similarity`` on
    float images: 7x7 uniform window, sample covariance, and ``L = 2`` because it assumed floats
    in -1..1 although the images are 0..255; its mean over the map with a 3-pixel border cropped is
    exactly the mean over the 'valid' windows).
    """
    _check_triplet(fused, ir, vis, size)
    if window not in ("uniform", "gaussian"):
        raise ValueError(f"window: expected 'uniform' or 'gaussian', got {window!r}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    if size < 2 or size % 2 == 0:
        raise ValueError(f"size: expected an odd window size >= 3, got {size}")
    n = float(size * size) if window == "uniform" else 1.0
    cov_scale = size * size / (size * size - 1.0) if sample_covariance else 1.0
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s_f = _window_sums(fused, window, size, sigma)
    s_ff = _window_sums(fused * fused, window, size, sigma)
    total = torch.zeros(fused.shape[0], dtype=fused.dtype, device=fused.device)
    for src in (ir, vis):
        s_s = _window_sums(src, window, size, sigma)
        s_ss = _window_sums(src * src, window, size, sigma)
        s_fs = _window_sums(fused * src, window, size, sigma)
        total += ssim_from_moments(s_f, s_s, s_ff, s_ss, s_fs, n=n, cov_scale=cov_scale, c1=c1, c2=c2,
                                   consume=True).flatten(1).mean(1)
    return total if reduction == "sum" else total / 2.0
