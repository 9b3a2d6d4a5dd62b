"""A plain numpy/scipy transcription of the reference metric definitions, written independently of
``ivfusion.metrics`` (no shared code or constants) to check it. Used by the metric tests and by
``benchmarks/metrics.py``. Inputs are 2-D float64 arrays on the 0..255 scale: ``f`` fused,
``a`` infrared, ``b`` visible.

This is a test oracle, deliberately direct: scipy.signal.convolve2d for every filter (with the
kernel flips the reference code has), numpy histograms, no FFT and no batching.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import convolve2d


def en(f):
    counts = np.bincount(np.round(f).astype(np.int64).ravel(), minlength=256)
    p = counts[counts > 0] / f.size
    return float(-(p * np.log2(p)).sum())


def sd(f):
    return float(np.std(f))


def sf(f):
    return float(np.sqrt(np.mean(np.diff(f, axis=1) ** 2) + np.mean(np.diff(f, axis=0) ** 2)))


def ag(f):
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx ** 2 + gy ** 2) / 2)))


def _mi_pair(x, y):
    joint, _, _ = np.histogram2d(x.ravel(), y.ravel(), bins=256, range=[[-0.5, 255.5], [-0.5, 255.5]])
    pxy = joint / joint.sum()
    px = pxy.sum(axis=1, keepdims=True)
    py = pxy.sum(axis=0, keepdims=True)
    nz = pxy > 0
    return float(max((pxy[nz] * np.log(pxy[nz] / (px @ py)[nz])).sum(), 0.0))


def mi(f, a, b, base=math.e):
    return (_mi_pair(f, a) + _mi_pair(f, b)) / math.log(base)


def _corr(x, y):
    return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])


def scd(f, a, b):
    return _corr(f - b, a) + _corr(f - a, b)


def cc(f, a, b):
    return (_corr(a, f) + _corr(b, f)) / 2


def mse(f, a, b):
    return float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2)


def psnr(f, a, b, peak="max"):
    top = f.max() if peak == "max" else peak
    return float(10 * np.log10(top ** 2 / mse(f, a, b)))


def _vif_window(n):
    sd_ = n / 5.0
    m = (n - 1) / 2.0
    y, x = np.ogrid[-m : m + 1, -m : m + 1]
    h = np.exp(-(x * x + y * y) / (2 * sd_ * sd_))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def _vif_single(ref, dist):
    num = den = 0.0
    eps = 1e-10
    for scale in range(1, 5):
        win = np.rot90(_vif_window(2 ** (5 - scale) + 1), 2)
        if scale > 1:
            ref = convolve2d(ref, win, mode="valid")[::2, ::2]
            dist = convolve2d(dist, win, mode="valid")[::2, ::2]
        mu1 = convolve2d(ref, win, mode="valid")
        mu2 = convolve2d(dist, win, mode="valid")
        s1 = convolve2d(ref * ref, win, mode="valid") - mu1 * mu1
        s2 = convolve2d(dist * dist, win, mode="valid") - mu2 * mu2
        s12 = convolve2d(ref * dist, win, mode="valid") - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        m = s1 < eps
        g[m] = 0
        sv[m] = s2[m]
        s1[m] = 0
        m = s2 < eps
        g[m] = 0
        sv[m] = 0
        m = g < 0
        sv[m] = s2[m]
        g[m] = 0
        sv[sv <= eps] = eps
        num += np.sum(np.log10(1 + g * g * s1 / (sv + 2)))
        den += np.sum(np.log10(1 + s1 / 2))
    v = num / den
    return 1.0 if np.isnan(v) else float(v)


def vif(f, a, b):
    return _vif_single(a, f) + _vif_single(b, f)


def _qabf_edges(x):
    sx = convolve2d(x, np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float), mode="same")
    sy = convolve2d(x, np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float), mode="same")
    g = np.sqrt(sx ** 2 + sy ** 2)
    ang = np.full_like(x, math.pi / 2)
    nz = sx != 0
    ang[nz] = np.arctan(sy[nz] / sx[nz])
    return g, ang


def _qabf_q(ga, aa, gf, af, equal="reference"):
    G = np.zeros_like(ga)
    m = ga > gf
    G[m] = gf[m] / ga[m]
    m = ga == gf
    G[m] = gf[m] if equal == "reference" else 1.0
    m = ga < gf
    G[m] = ga[m] / gf[m]
    A = 1 - np.abs(aa - af) / (math.pi / 2)
    return 0.9994 / (1 + np.exp(-15 * (G - 0.5))) * 0.9879 / (1 + np.exp(-22 * (A - 0.8)))


def qabf(f, a, b, equal="reference"):
    ga, aa = _qabf_edges(a)
    gb, ab = _qabf_edges(b)
    gf, af = _qabf_edges(f)
    qa = _qabf_q(ga, aa, gf, af, equal)
    qb = _qabf_q(gb, ab, gf, af, equal)
    return float(np.sum(qa * ga + qb * gb) / np.sum(ga + gb))


def _nabf_edges(x):
    ext = np.pad(x, 1, mode="reflect")  # mirror without repeating the edge
    # correlation = convolution with the kernel rotated by 180 degrees
    gv = convolve2d(ext, np.rot90(np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float) / 8, 2), mode="valid")
    gh = convolve2d(ext, np.rot90(np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float) / 8, 2), mode="valid")
    g = np.sqrt(gv ** 2 + gh ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ang = np.where((gv == 0) & (gh == 0), 0.0, np.arctan(gv / gh))
    return g, ang


def _nabf_q(gx, ax, gf, af):
    with np.errstate(divide="ignore", invalid="ignore"):
        G = np.where((gx == 0) | (gf == 0), 0.0, np.where(gx > gf, gf / gx, gx / gf))
    A = np.abs(np.abs(ax - af) - math.pi / 2) * 2 / math.pi
    qg = 0.9999 / (1 + np.exp(-19 * (G - 0.5)))
    qa = 0.9995 / (1 + np.exp(-22 * (A - 0.5)))
    return np.sqrt(qg * qa)


def nabf(f, a, b):
    ga, aa = _nabf_edges(a)
    gb, ab = _nabf_edges(b)
    gf, af = _nabf_edges(f)
    qa = _nabf_q(ga, aa, gf, af)
    qb = _nabf_q(gb, ab, gf, af)
    wa = np.where(ga >= 2, ga ** 1.5, 0.0)
    wb = np.where(gb >= 2, gb ** 1.5, 0.0)
    na = (gf > ga) & (gf > gb)
    return float(np.sum(na * ((1 - qa) * wa + (1 - qb) * wb)) / np.sum(wa + wb))


def _ssim_ref_pair(x, y):
    # scikit-image 0.19 structural_similarity on float images: 7x7 uniform_filter (reflect), sample
    # covariance, data_range 2 (dtype range of floats), mean of the map with a 3-pixel border cropped
    n = 49
    ux, uy = uniform_filter(x, 7), uniform_filter(y, 7)
    vx = n / (n - 1) * (uniform_filter(x * x, 7) - ux * ux)
    vy = n / (n - 1) * (uniform_filter(y * y, 7) - uy * uy)
    vxy = n / (n - 1) * (uniform_filter(x * y, 7) - ux * uy)
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return float(s[3:-3, 3:-3].mean())


def ssim_reference(f, a, b):
    return _ssim_ref_pair(f, a) + _ssim_ref_pair(f, b)


def _ssim_std_pair(x, y):
    # Wang et al.'s ssim_index: 11x11 Gaussian (sigma 1.5) window, 'valid' filtering, L = 255
    t = np.arange(11) - 5.0
    g = np.exp(-t ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g)
    w /= w.sum()

    def filt(z):
        return convolve2d(z, np.rot90(w, 2), mode="valid")

    ux, uy = filt(x), filt(y)
    vx = filt(x * x) - ux * ux
    vy = filt(y * y) - uy * uy
    vxy = filt(x * y) - ux * uy
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


def ssim_standard(f, a, b):
    return (_ssim_std_pair(f, a) + _ssim_std_pair(f, b)) / 2


def all_reference(f, a, b):
    """Every metric under the ``reference`` profile."""
    return {
        "EN": en(f), "SD": sd(f), "SF": sf(f), "AG": ag(f), "MI": mi(f, a, b), "SCD": scd(f, a, b),
        "VIF": vif(f, a, b), "Qabf": qabf(f, a, b), "SSIM": ssim_reference(f, a, b), "Nabf": nabf(f, a, b),
        "PSNR": psnr(f, a, b, 255.0), "CC": cc(f, a, b), "MSE": mse(f, a, b),
    }


def all_standard(f, a, b):
    """Every metric under the ``standard`` profile."""
    out = all_reference(f, a, b)
    out.update(MI=mi(f, a, b, 2.0), Qabf=qabf(f, a, b, "one"), SSIM=ssim_standard(f, a, b), PSNR=psnr(f, a, b, 255.0))
    return out
