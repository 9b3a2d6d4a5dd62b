"""ivfusion.metrics against independent routes: closed forms, explicit loops, a numpy/scipy
transcription of the reference definitions (tests/metrics_reference.py), real validation images,
invariances, and the input handling of evaluate / evaluate_batch / evaluate_dirs / `ivfusion eval`."""
from __future__ import annotations

import csv
import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from ivfusion.cli import main as cli_main
from ivfusion.io import write_image
from ivfusion.metrics import (
    METRICS,
    evaluate,
    evaluate_batch,
    evaluate_dirs,
    _vif,
    functional as MF,
    get_metric,
    list_metrics,
    prepare_image,
)

from . import metrics_reference as R
from .conftest import VAL_DIR, require, smooth_image

ALL = ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "Nabf", "PSNR", "CC", "MSE"]


def _default_rel(name: str) -> float:
    """Agreement expected from evaluate_batch's default dtypes (float32 for Qabf and Nabf)."""
    return 1e-9 if METRICS[name].dtype == torch.float64 else 1e-6


def t4(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x, dtype=np.float64))[None, None]


@pytest.fixture
def triplet(rng):
    """Small smooth 8-bit IR, visible and a plausible fused image (48x56)."""
    a = smooth_image(rng, 48, 56).astype(np.float64)
    b = smooth_image(rng, 48, 56).astype(np.float64)
    f = np.clip(np.round(0.55 * a + 0.45 * b + rng.normal(0, 4, a.shape)), 0, 255)
    return f, a, b


def test_registry():
    assert list_metrics() == ALL
    assert [m for m in ALL if not METRICS[m].higher_is_better] == ["Nabf", "MSE"]
    assert get_metric("qabf").name == "Qabf"
    assert all(METRICS[m].description and METRICS[m].value_range for m in ALL)


# ------------------------------------------------------------------------- closed forms


def test_entropy_closed_forms():
    uniform = np.arange(256, dtype=np.float64).reshape(16, 16)
    assert MF.entropy(t4(uniform)).item() == pytest.approx(8.0, abs=1e-12)
    assert MF.entropy(t4(np.full((5, 7), 42.0))).item() == pytest.approx(0.0, abs=1e-12)
    two = np.zeros((4, 4))
    two[:, :2] = 200
    assert MF.entropy(t4(two)).item() == pytest.approx(1.0, abs=1e-12)
    # rounding to grey levels: 10.4 -> 10 and 10.6 -> 11 are two bins
    assert MF.entropy(t4(np.array([[10.4, 10.6]]))).item() == pytest.approx(1.0, abs=1e-12)


def test_sd_sf_ag_closed_forms():
    half = np.zeros((6, 6))
    half[:3] = 255
    assert MF.standard_deviation(t4(half)).item() == pytest.approx(127.5)
    ramp = np.tile(np.arange(9, dtype=np.float64) * 3, (7, 1))  # x[i, j] = 3 j
    assert MF.spatial_frequency(t4(ramp)).item() == pytest.approx(3.0)  # only row differences
    # numpy.gradient of a linear ramp is exact everywhere, borders included
    assert MF.average_gradient(t4(ramp)).item() == pytest.approx(3.0 / math.sqrt(2.0))
    checker = (np.indices((5, 5)).sum(0) % 2) * 10.0
    assert MF.spatial_frequency(t4(checker)).item() == pytest.approx(math.sqrt(200.0))


def test_identity_closed_forms(rng):
    a = smooth_image(rng, 48, 48).astype(np.float64)
    x = t4(a)
    # MI(A, A) = H(A): in nats for the reference, in bits (= EN) with base 2
    h_bits = R.en(a)
    assert MF.mutual_information(x, x, x).item() == pytest.approx(2 * h_bits * math.log(2), rel=1e-12)
    assert MF.mutual_information(x, x, x, base=2).item() == pytest.approx(2 * h_bits, rel=1e-12)
    # every SSIM term is 1, VIF is 1 per source, no artefacts, perfect correlation
    assert MF.ssim(x, x, x).item() == pytest.approx(2.0, abs=1e-12)
    assert MF.ssim(x, x, x, window="gaussian", size=11, data_range=255.0, sample_covariance=False,
                   reduction="mean").item() == pytest.approx(1.0, abs=1e-12)
    assert MF.vif(x, x, x).item() == pytest.approx(2.0, abs=1e-9)
    assert MF.nabf(x, x, x).item() == 0.0
    assert MF.correlation_coefficient(x, x, x).item() == pytest.approx(1.0)
    assert MF.mse(x, x, x).item() == 0.0
    assert math.isinf(MF.psnr(x, x, x).item())
    # Qabf with G = 1 on equal strengths: Q is one constant, so Qabf equals it
    q = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert MF.qabf(x, x, x, equal_strength="one").item() == pytest.approx(q, rel=1e-12)


def test_vif_constant_source_counts_as_one(rng):
    a = smooth_image(rng, 48, 48).astype(np.float64)
    flat = np.full_like(a, 77.0)
    # the constant source gives 0/0 -> 1, the other source its own VIF against F
    assert MF.vif(t4(a), t4(flat), t4(a)).item() == pytest.approx(2.0, abs=1e-9)


def test_psnr_peaks(triplet):
    f, a, b = (t4(x) for x in triplet)
    m = MF.mse(f, a, b).item()
    assert MF.psnr(f, a, b).item() == pytest.approx(10 * math.log10(255.0 ** 2 / m))
    assert MF.psnr(f, a, b, peak="max").item() == pytest.approx(10 * math.log10(triplet[0].max() ** 2 / m))


def test_vif_window_is_separable():
    # the reference builds a 2-D window; it equals the outer product of the 1-D Gaussian
    for n in (17, 9, 5, 3):
        w = MF.vif_window(n)
        t = np.arange(n) - (n - 1) / 2
        g = np.exp(-t ** 2 / (2 * (n / 5) ** 2))
        g /= g.sum()
        np.testing.assert_allclose(w.numpy(), np.outer(g, g), rtol=1e-14, atol=0)
        assert w.sum().item() == pytest.approx(1.0, abs=1e-15)


def test_vif_window_spectrum_matches_2d_fft():
    # VIF builds the window's spectrum from 1-D transforms of its profile
    for n, grid in ((17, (480, 640)), (9, (240, 320)), (5, (18, 25)), (3, (7, 9))):
        direct = torch.fft.rfft2(MF.vif_window(n), s=grid).conj()
        torch.testing.assert_close(_vif._vif_window_spectrum(n, grid, torch.float64, None), direct, rtol=0, atol=1e-15)


def test_ssim_from_moments_consume_is_bit_identical():
    from ivfusion.filters import ssim_from_moments

    g = torch.Generator().manual_seed(2)
    for dtype in (torch.float64, torch.float32):
        s_x, s_y, s_xx, s_yy, s_xy = (torch.rand(2, 1, 9, 11, generator=g, dtype=dtype) * 500 for _ in range(5))
        opts = dict(n=49.0, cov_scale=49 / 48, c1=4e-4, c2=3.6e-3)
        want = ssim_from_moments(s_x, s_y, s_xx, s_yy, s_xy, **opts)
        kept = [t.clone() for t in (s_x, s_xx)]
        got = ssim_from_moments(s_x, s_y.clone(), s_xx, s_yy.clone(), s_xy.clone(), consume=True, **opts)
        assert torch.equal(got, want)
        assert torch.equal(kept[0], s_x) and torch.equal(kept[1], s_xx)  # only s_y, s_yy, s_xy are consumed


def test_atan_of_ratio_matches_atan_of_division():
    # Qabf/Nabf orientations use atan2(num * sign(den), |den|); it must equal atan(num / den),
    # including the +-pi/2 limits of a division by a signed zero
    g = torch.Generator().manual_seed(1)
    num = torch.randint(-20, 21, (4000,), generator=g).double()
    den = torch.randint(-20, 21, (4000,), generator=g).double()
    den[:6] = torch.tensor([0.0, -0.0, 0.0, -0.0, 0.0, 3.0])
    num[:6] = torch.tensor([5.0, 5.0, -2.0, -2.0, 0.0, 0.0])
    want = torch.atan(num / den)
    got = MF._atan_of_ratio(num, den)
    defined = ~torch.isnan(want)
    assert int((~defined).sum()) == int(((num == 0) & (den == 0)).sum()) > 0
    torch.testing.assert_close(got[defined], want[defined], rtol=0, atol=1e-15)
    assert torch.equal(got[~defined], torch.zeros_like(got[~defined]))
    assert got[:4].tolist() == pytest.approx([math.pi / 2, -math.pi / 2, -math.pi / 2, math.pi / 2])
    for dtype in (torch.float32, torch.float64):  # and in both dtypes the metrics use
        assert MF._atan_of_ratio(num.to(dtype), den.to(dtype)).dtype == dtype


def test_fft_filter2d_and_next_fast_len():
    from ivfusion.filters import fft_filter2d, filter2d, next_fast_len

    assert [next_fast_len(n) for n in (1, 7, 17, 97, 107, 479, 481, 1000)] == [1, 8, 18, 100, 108, 480, 486, 1000]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 29, 37, generator=g, dtype=torch.float64) * 255
    k = torch.rand(5, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fft_filter2d(x, k), filter2d(x, k, "valid"), rtol=0, atol=1e-10)
    torch.testing.assert_close(fft_filter2d(x, k, "reflect"), filter2d(x, k, "reflect"), rtol=0, atol=1e-10)
    with pytest.raises(ValueError):
        fft_filter2d(x[..., :4, :], k)


# ------------------------------------------------------------------------- explicit loops


def _loop_en(img):
    counts = Counter(int(round(v)) for v in img.ravel())
    n = img.size
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _loop_mi_pair(x, y):
    n = x.size
    pairs = Counter(zip(x.ravel().astype(int), y.ravel().astype(int)))
    px = Counter(x.ravel().astype(int))
    py = Counter(y.ravel().astype(int))
    return sum(c / n * math.log((c / n) / (px[i] / n * py[j] / n)) for (i, j), c in pairs.items())


def _loop_ag(img):
    h, w = img.shape
    total = 0.0
    for i in range(h):
        for j in range(w):
            gx = (img[i, j + 1] - img[i, j - 1]) / 2 if 0 < j < w - 1 else (
                img[i, 1] - img[i, 0] if j == 0 else img[i, w - 1] - img[i, w - 2])
            gy = (img[i + 1, j] - img[i - 1, j]) / 2 if 0 < i < h - 1 else (
                img[1, j] - img[0, j] if i == 0 else img[h - 1, j] - img[h - 2, j])
            total += math.sqrt((gx * gx + gy * gy) / 2)
    return total / (h * w)


def _loop_sobel(img, pad):
    """Cross-correlation with SOBEL_X / SOBEL_Y; pad 'zero' or 'reflect' (mirror, edge not repeated)."""
    h, w = img.shape

    def px(i, j):
        if pad == "reflect":
            i = -i if i < 0 else (2 * (h - 1) - i if i >= h else i)
            j = -j if j < 0 else (2 * (w - 1) - j if j >= w else j)
            return img[i, j]
        return img[i, j] if 0 <= i < h and 0 <= j < w else 0.0

    kx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    ky = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
    sx = np.zeros((h, w))
    sy = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for u in range(3):
                for v in range(3):
                    sx[i, j] += kx[u][v] * px(i + u - 1, j + v - 1)
                    sy[i, j] += ky[u][v] * px(i + u - 1, j + v - 1)
    return sx, sy


def _loop_qabf(f, a, b):
    def edges(x):
        sx, sy = _loop_sobel(x, "zero")
        g = np.hypot(sx, sy)
        ang = np.array([[math.atan(y / x_) if x_ != 0 else math.pi / 2 for x_, y in zip(rx, ry)]
                        for rx, ry in zip(sx, sy)])
        return g, ang

    (ga, aa), (gb, ab), (gf, af) = edges(a), edges(b), edges(f)
    num = den = 0.0
    for i in range(f.shape[0]):
        for j in range(f.shape[1]):
            for g, an in ((ga, aa), (gb, ab)):
                s, t = g[i, j], gf[i, j]
                ratio = t / s if s > t else (s / t if s < t else t)
                orient = 1 - abs(an[i, j] - af[i, j]) / (math.pi / 2)
                q = 0.9994 / (1 + math.exp(-15 * (ratio - 0.5))) * 0.9879 / (1 + math.exp(-22 * (orient - 0.8)))
                num += q * s
                den += s
    return num / den


def _loop_nabf(f, a, b):
    def edges(x):
        sx, sy = _loop_sobel(x, "reflect")
        gv, gh = sx / 8, -sy / 8
        g = np.hypot(gv, gh)
        ang = np.zeros_like(g)
        for idx in np.ndindex(g.shape):
            if gv[idx] != 0 or gh[idx] != 0:
                ang[idx] = math.atan(gv[idx] / gh[idx]) if gh[idx] != 0 else math.copysign(math.pi / 2, gv[idx])
        return g, ang

    (ga, aa), (gb, ab), (gf, af) = edges(a), edges(b), edges(f)
    num = den = 0.0
    for idx in np.ndindex(f.shape):
        artefact = gf[idx] > ga[idx] and gf[idx] > gb[idx]
        for g, an in ((ga, aa), (gb, ab)):
            s, t = g[idx], gf[idx]
            ratio = 0.0 if s == 0 or t == 0 else min(s, t) / max(s, t)
            orient = abs(abs(an[idx] - af[idx]) - math.pi / 2) * 2 / math.pi
            q = math.sqrt(0.9999 / (1 + math.exp(-19 * (ratio - 0.5))) * 0.9995 / (1 + math.exp(-22 * (orient - 0.5))))
            w = s ** 1.5 if s >= 2 else 0.0
            den += w
            if artefact:
                num += (1 - q) * w
    return num / den


def _loop_ssim_pair(x, y, size=7, data_range=2.0):
    n = size * size
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            p, q = x[i:i + size, j:j + size].ravel(), y[i:i + size, j:j + size].ravel()
            mp, mq = p.mean(), q.mean()
            vp = ((p - mp) ** 2).sum() / (n - 1)
            vq = ((q - mq) ** 2).sum() / (n - 1)
            cpq = ((p - mp) * (q - mq)).sum() / (n - 1)
            vals.append((2 * mp * mq + c1) * (2 * cpq + c2) / ((mp ** 2 + mq ** 2 + c1) * (vp + vq + c2)))
    return float(np.mean(vals))


def test_against_explicit_loops(rng):
    a = smooth_image(rng, 11, 13).astype(np.float64)
    b = smooth_image(rng, 11, 13).astype(np.float64)
    b[:, :4] = b[0, 0]  # flat patches exercise the zero-gradient branches
    f = np.clip(np.round(0.5 * a + 0.5 * b + rng.normal(0, 6, a.shape)), 0, 255)
    F, A, B = t4(f), t4(a), t4(b)
    assert MF.entropy(F).item() == pytest.approx(_loop_en(f), rel=1e-12)
    assert MF.average_gradient(F).item() == pytest.approx(_loop_ag(f), rel=1e-12)
    assert MF.mutual_information(F, A, B).item() == pytest.approx(_loop_mi_pair(f, a) + _loop_mi_pair(f, b), rel=1e-12)
    assert MF.qabf(F, A, B).item() == pytest.approx(_loop_qabf(f, a, b), rel=1e-12)
    assert MF.nabf(F, A, B).item() == pytest.approx(_loop_nabf(f, a, b), rel=1e-12)
    assert MF.ssim(F, A, B).item() == pytest.approx(_loop_ssim_pair(f, a) + _loop_ssim_pair(f, b), rel=1e-10)


# ------------------------------------------------------------------------- numpy/scipy transcription


@pytest.mark.parametrize("case", ["blend", "inverted", "flat"])
@pytest.mark.parametrize("profile", ["reference", "standard"])
def test_against_numpy_transcription(triplet, profile, case):
    f, a, b = (x.copy() for x in triplet)
    if case == "inverted":  # F anti-correlated with A: negative g in VIF, opposite orientations in Qabf
        f = 255.0 - a
        f[:, :20] = b[:, :20]
    elif case == "flat":  # constant patches: zero variances and zero gradients in every branch
        a[:24] = 90.0
        f[10:30, 5:40] = 130.0
        b[:, 30:] = 0.0
    want = (R.all_reference if profile == "reference" else R.all_standard)(f, a, b)
    got = evaluate_batch(t4(f), t4(a), t4(b), profile=profile, dtype=torch.float64)
    default = evaluate_batch(t4(f), t4(a), t4(b), profile=profile)  # float32 for Qabf and Nabf
    assert list(got) == ALL
    for name in ALL:
        assert got[name].item() == pytest.approx(want[name], rel=1e-9, abs=1e-12), name
        assert default[name].dtype == torch.float64
        assert default[name].item() == pytest.approx(want[name], rel=_default_rel(name), abs=1e-12), name


def test_real_images_match_transcription():
    d = require(VAL_DIR)
    ir_path = sorted((d / "ir").iterdir())[1]
    a = prepare_image(ir_path)[0, 0].numpy()
    b = prepare_image(d / "vi" / ir_path.name)[0, 0].numpy()
    # a crop keeps the direct scipy convolutions of the oracle quick
    a, b = a[:160, :200], b[:160, :200]
    f = np.clip(np.round(0.6 * a + 0.4 * b + 8 * np.sin(np.arange(a.shape[1]) / 9.0)), 0, 255)
    want = R.all_reference(f, a, b)
    got = evaluate(f.astype(np.uint8), a.astype(np.uint8), b.astype(np.uint8))
    for name in ALL:
        assert got[name] == pytest.approx(want[name], rel=1e-6), name


def test_batch_and_shape_generic(rng):
    imgs = [[smooth_image(rng, 44, 50).astype(np.float64) for _ in range(3)] for _ in range(3)]
    fused = torch.stack([t4(i[0])[0] for i in imgs])
    ir = torch.stack([t4(i[1])[0] for i in imgs])
    vis = torch.stack([t4(i[2])[0] for i in imgs])
    batch = evaluate_batch(fused, ir, vis)
    for k, (f, a, b) in enumerate(imgs):
        want = R.all_reference(f, a, b)
        for name in ALL:
            assert batch[name][k].item() == pytest.approx(want[name], rel=_default_rel(name)), name
    # (B, H, W) and uint8 inputs are accepted; float32 stays close
    same = evaluate_batch(fused[:, 0].to(torch.uint8), ir[:, 0].to(torch.uint8), vis[:, 0].to(torch.uint8), ["EN", "MI"])
    torch.testing.assert_close(same["MI"], batch["MI"])
    f32 = evaluate_batch(fused.float(), ir.float(), vis.float(), dtype=torch.float32)
    for name in ALL:
        torch.testing.assert_close(f32[name].double(), batch[name], rtol=2e-3, atol=1e-4)


# ------------------------------------------------------------------------- invariances


def test_source_swap_symmetry(triplet):
    f, a, b = (t4(x) for x in triplet)
    for profile in ("reference", "standard"):
        one = evaluate_batch(f, a, b, profile=profile)
        two = evaluate_batch(f, b, a, profile=profile)
        for name in ALL:
            assert one[name].item() == pytest.approx(two[name].item(), rel=1e-12, abs=1e-15), name


def test_shift_and_scale_invariances(triplet):
    f, a, b = triplet
    F, A, B = t4(f), t4(a), t4(b)
    shift = {"F": t4(f - 10), "A": t4(a + 20), "B": t4(b - 5)}  # leaves 0..255: fine for these metrics
    # local statistics only: invariant to adding a constant to any image
    assert MF.vif(shift["F"], shift["A"], shift["B"]).item() == pytest.approx(MF.vif(F, A, B).item(), rel=1e-8)
    assert MF.nabf(shift["F"], shift["A"], shift["B"]).item() == pytest.approx(MF.nabf(F, A, B).item(), rel=1e-12)
    assert MF.scd(shift["F"], shift["A"], shift["B"]).item() == pytest.approx(MF.scd(F, A, B).item(), rel=1e-12)
    for fn in (MF.standard_deviation, MF.spatial_frequency, MF.average_gradient):
        assert fn(shift["F"]).item() == pytest.approx(fn(F).item(), rel=1e-12)
    # Pearson correlations: invariant to positive affine maps of each image
    assert MF.correlation_coefficient(t4(2 * f + 3), t4(0.5 * a), B).item() == pytest.approx(
        MF.correlation_coefficient(F, A, B).item(), rel=1e-12)
    assert MF.scd(t4(3 * f), t4(3 * a), t4(3 * b)).item() == pytest.approx(MF.scd(F, A, B).item(), rel=1e-12)
    # histogram metrics: invariant to relabelling grey levels (255 - x is a bijection)
    assert MF.entropy(t4(255 - f)).item() == pytest.approx(MF.entropy(F).item(), rel=1e-12)
    assert MF.mutual_information(t4(255 - f), A, t4(255 - b)).item() == pytest.approx(
        MF.mutual_information(F, A, B).item(), rel=1e-12)
    # Qabf: strength ratios and orientations are invariant to scaling all three images alike
    assert MF.qabf(t4(2 * f), t4(2 * a), t4(2 * b), equal_strength="one").item() == pytest.approx(
        MF.qabf(F, A, B, equal_strength="one").item(), rel=1e-12)
    # SD, SF, AG scale linearly
    for fn in (MF.standard_deviation, MF.spatial_frequency, MF.average_gradient):
        assert fn(t4(2 * f)).item() == pytest.approx(2 * fn(F).item(), rel=1e-12)


def test_profiles_differ_only_where_documented(triplet):
    f, a, b = (t4(x) for x in triplet)
    ref = evaluate_batch(f, a, b, profile="reference")
    std = evaluate_batch(f, a, b, profile="standard")
    assert std["MI"].item() == pytest.approx(ref["MI"].item() / math.log(2))
    for name in ("EN", "SD", "SF", "AG", "SCD", "VIF", "Nabf", "CC", "MSE"):
        assert std[name].item() == ref[name].item(), name
    bits = evaluate_batch(f, a, b, ["MI"], mi_base=2)["MI"]
    assert bits.item() == pytest.approx(std["MI"].item())


# ------------------------------------------------------------------------- input handling


def test_input_kinds_agree(rng, tmp_path):
    a8 = smooth_image(rng, 40, 44)
    b_rgb = smooth_image(rng, 40, 44, channels=3)
    f8 = smooth_image(rng, 40, 44)
    want = evaluate(f8, a8, b_rgb)
    # colour -> BT.601 luma rounded half to even, computed exactly from integers
    r, g, b = (b_rgb[..., i].astype(np.int64) for i in range(3))
    num = 299 * r + 587 * g + 114 * b
    q, rem = np.divmod(num, 1000)
    luma = (q + (rem > 500) + ((rem == 500) & (q % 2 == 1))).astype(np.uint8)
    assert evaluate(f8, a8, luma) == want
    # 16-bit full range: x * 257 maps back to x exactly
    assert evaluate(f8.astype(np.uint16) * 257, a8, b_rgb) == want
    # float in [0, 1] (numpy, float32 tensor), PIL, file paths, CHW uint8 tensors
    assert evaluate(f8 / 255.0, a8, b_rgb) == want
    assert evaluate(torch.from_numpy(f8).float() / 255, a8, b_rgb) == want
    assert evaluate(Image.fromarray(f8), Image.fromarray(a8), Image.fromarray(b_rgb)) == want
    paths = [write_image(tmp_path / n, x) for n, x in (("f.png", f8), ("a.png", a8), ("b.png", b_rgb))]
    assert evaluate(*paths) == want
    assert evaluate(f8, torch.from_numpy(a8)[None], torch.from_numpy(b_rgb).permute(2, 0, 1)) == want


def test_luma_ties_round_to_even():
    # exact .5 lumas (299 R + 587 G + 114 B = 1000 k + 500) go to the even neighbour, like numpy.round
    r, g, b = np.meshgrid(np.arange(40), np.arange(40), np.arange(40), indexing="ij")
    num = 299 * r + 587 * g + 114 * b
    tie = num % 1000 == 500
    assert tie.sum() > 10
    rgb = np.stack([r[tie], g[tie], b[tie]], -1).astype(np.uint8)[None]  # (1, N, 3)
    q = num[tie] // 1000
    np.testing.assert_array_equal(prepare_image(rgb)[0, 0, 0].numpy(), q + q % 2)


def test_errors(triplet):
    f, a, b = (x.astype(np.uint8) for x in triplet)
    with pytest.raises(ValueError, match=r"48x56.*40x56|40x56.*48x56"):
        evaluate(f, a[:40], b)
    with pytest.raises(ValueError, match="known metrics: EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, Nabf, PSNR, CC, MSE"):
        evaluate(f, a, b, ["EN", "sharpness"])
    with pytest.raises(ValueError, match="profile"):
        evaluate(f, a, b, profile="matlab")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(f.astype(np.float32), a, b)
    with pytest.raises(TypeError):
        evaluate(f, a, [1, 2, 3])
    with pytest.raises(ValueError, match="17x17"):
        evaluate(f[:16], a[:16], b[:16], ["VIF"])
    with pytest.raises(ValueError, match="shape mismatch"):
        evaluate_batch(torch.zeros(2, 1, 20, 20), torch.zeros(1, 1, 20, 20), torch.zeros(2, 1, 20, 20))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        evaluate_batch(torch.zeros(2, 3, 20, 20), torch.zeros(2, 3, 20, 20), torch.zeros(2, 3, 20, 20))
    with pytest.raises(TypeError):
        evaluate_batch(torch.zeros(2, 1, 20, 20, dtype=torch.int32), torch.zeros(2, 1, 20, 20), torch.zeros(2, 1, 20, 20))


def test_metric_selection(triplet):
    f, a, b = (x.astype(np.uint8) for x in triplet)
    got = evaluate(f, a, b, "qabf, en")
    assert list(got) == ["Qabf", "EN"]
    assert evaluate(f, a, b, ["SSIM", "ssim"]).keys() == {"SSIM"}
    full = evaluate(f, a, b)
    assert list(full) == ALL and got["Qabf"] == full["Qabf"]


def test_batch_of_64_in_one_call_matches_single_calls(rng):
    # the batched path the GPU uses (one call per metric for the whole batch), exercised on CPU;
    # each image's scores equal a call on that image alone, so images do not leak into each other
    imgs = [torch.from_numpy(smooth_image(rng, 24, 28)).double()[None, None] for _ in range(3 * 8)]
    f, a, b = (torch.cat(imgs[k::3]).repeat(8, 1, 1, 1) for k in range(3))
    assert f.shape == (64, 1, 24, 28)
    batch = evaluate_batch(f, a, b)
    for k in (0, 5, 63):
        one = evaluate_batch(f[k : k + 1], a[k : k + 1], b[k : k + 1])
        for name in ALL:
            assert batch[name].shape == (64,)
            assert batch[name][k].item() == pytest.approx(one[name].item(), rel=1e-12, abs=1e-15), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(rng):
    x = [torch.from_numpy(smooth_image(rng, 64, 72)).double()[None, None].repeat(64, 1, 1, 1) for _ in range(3)]
    cpu = evaluate_batch(*x, dtype=torch.float64)
    gpu = evaluate_batch(*(t.cuda() for t in x), dtype=torch.float64)
    gpu_default = evaluate_batch(*(t.cuda() for t in x))
    for name in ALL:
        assert gpu[name].device.type == "cuda" and gpu[name].shape == (64,)
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(gpu_default[name].cpu(), cpu[name], rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------- folders and CLI


@pytest.fixture
def folders(tmp_path, rng):
    dirs = {k: tmp_path / k for k in ("ir", "vi", "fused")}
    for d in dirs.values():
        d.mkdir()
    for stem in ("b", "a", "c"):
        ir = smooth_image(rng, 40, 48)
        vi = smooth_image(rng, 40, 48, channels=3)
        write_image(dirs["ir"] / f"{stem}.png", ir)
        Image.fromarray(vi).save(dirs["vi"] / f"{stem}.bmp")
        write_image(dirs["fused"] / f"{stem}.png", smooth_image(rng, 40, 48))
    return dirs


def test_evaluate_dirs(folders, tmp_path):
    res = evaluate_dirs(folders["ir"], folders["vi"], folders["fused"], ["EN", "SSIM", "MI"], profile="standard")
    assert res.stems == ["a", "b", "c"] and len(res) == 3
    for i, stem in enumerate(res.stems):
        one = evaluate(folders["fused"] / f"{stem}.png", folders["ir"] / f"{stem}.png", folders["vi"] / f"{stem}.bmp",
                       ["EN", "SSIM", "MI"], profile="standard")
        assert {m: res.values[m][i] for m in one} == one
    mean, std = res.mean(), res.std()
    assert mean["EN"] == pytest.approx(np.mean(res.values["EN"]))
    assert std["MI"] == pytest.approx(np.std(res.values["MI"]))
    path = res.write_csv(tmp_path / "out" / "scores.csv")
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["stem", "EN", "SSIM", "MI"] and [r[0] for r in rows[1:]] == ["a", "b", "c"]
    assert float(rows[2][3]) == res.values["MI"][1]
    assert "3 images, profile standard" in res.format_table()


def test_evaluate_dirs_mismatch(folders):
    (folders["fused"] / "b.png").unlink()
    (folders["ir"] / "c.png").unlink()
    with pytest.raises(ValueError, match=r"1 missing in ir_dir \(c\); .*missing in fused_dir \(b\)"):
        evaluate_dirs(folders["ir"], folders["vi"], folders["fused"])
    with pytest.raises(FileNotFoundError):
        evaluate_dirs(folders["ir"], folders["vi"], folders["ir"].parent / "nope")


def test_evaluate_dirs_size_mismatch_names_stem(folders):
    write_image(folders["fused"] / "b.png", np.zeros((30, 48), np.uint8))
    with pytest.raises(ValueError, match=r"^b: fused is 30x48"):
        evaluate_dirs(folders["ir"], folders["vi"], folders["fused"], ["EN"])


def test_cli_eval(folders, tmp_path, capsys):
    out = tmp_path / "per_image.csv"
    rc = cli_main(["eval", "--ir-dir", str(folders["ir"]), "--vis-dir", str(folders["vi"]), "--fused-dir",
                   str(folders["fused"]), "--metrics", "EN,Qabf", "VIF", "--csv", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0
    res = evaluate_dirs(folders["ir"], folders["vi"], folders["fused"], ["EN", "Qabf", "VIF"])
    assert f"{res.mean()['Qabf']:.4f}" in text and f"{res.std()['EN']:.4f}" in text
    assert "3 images, profile reference" in text and out.exists()
    (folders["vi"] / "a.bmp").unlink()
    rc = cli_main(["eval", "--ir-dir", str(folders["ir"]), "--vis-dir", str(folders["vi"]), "--fused-dir",
                   str(folders["fused"]), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "missing in vis_dir (a)" in err and len(err.strip().splitlines()) == 1
