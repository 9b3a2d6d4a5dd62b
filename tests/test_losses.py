"""The four training losses against values computed here by explicit loops (float64, numpy),
independently of ivfusion.filters, plus closed-form cases, gradients and input checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ivfusion.train.losses import (
    LOSS_TERMS,
    contrast_mask,
    didfuse_loss,
    f3net_loss,
    fiscnet_loss,
    refinefuse_loss,
)

SX = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
SY = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)


# ------------------------------------------------------------------------------ loop references


def _index(i: int, n: int, mode: str):
    if 0 <= i < n:
        return i
    if mode == "zero":
        return None
    if mode == "replicate":
        return min(max(i, 0), n - 1)
    if mode == "reflect":  # mirror without repeating the edge pixel
        return -i if i < 0 else 2 * (n - 1) - i
    raise AssertionError(mode)


def correlate(img: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Same-size cross-correlation of a 2-D image, one pixel and one tap at a time."""
    h, w = img.shape
    kh, kw = kernel.shape
    rh, rw = kh // 2, kw // 2
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            acc = 0.0
            for u in range(kh):
                for v in range(kw):
                    yy, xx = _index(y + u - rh, h, mode), _index(x + v - rw, w, mode)
                    if yy is not None and xx is not None:
                        acc += kernel[u, v] * img[yy, xx]
            out[y, x] = acc
    return out


def gauss2d(size: int, sigma: float) -> np.ndarray:
    g = [math.exp(-((t - (size - 1) / 2) ** 2) / (2 * sigma**2)) for t in range(size)]
    g = np.array(g) / sum(g)
    return np.outer(g, g)


def ssim_map_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    win = gauss2d(11, 1.5)
    mu_a, mu_b = correlate(a, win, "zero"), correlate(b, win, "zero")
    saa = correlate(a * a, win, "zero") - mu_a**2
    sbb = correlate(b * b, win, "zero") - mu_b**2
    sab = correlate(a * b, win, "zero") - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))


def grad_l1(img: np.ndarray, mode: str) -> np.ndarray:
    return np.abs(correlate(img, SX, mode)) + np.abs(correlate(img, SY, mode))


def t(arrays) -> torch.Tensor:
    """List of (H, W) arrays -> (B, 1, H, W) float64 tensor."""
    return torch.tensor(np.stack(arrays)[:, None], dtype=torch.float64)


@pytest.fixture
def images(rng):
    """Two 5x5 triplets (fused, ir, vis) in [0, 1]."""
    f = [rng.random((5, 5)) for _ in range(2)]
    i = [rng.random((5, 5)) for _ in range(2)]
    v = [rng.random((5, 5)) for _ in range(2)]
    return f, i, v


# ------------------------------------------------------------------------------ F3Net


def test_f3net_matches_loops(images):
    f, i, v = images
    pixel = np.mean([((a - b) ** 2).mean() for a, b in zip(f, i)]) + np.mean([((a - b) ** 2).mean() for a, b in zip(f, v)])
    gradient = np.mean([((grad_l1(a, "reflect") - np.maximum(grad_l1(b, "reflect"), grad_l1(c, "reflect"))) ** 2).mean()
                        for a, b, c in zip(f, i, v)])
    ssim = 1 - np.mean([ssim_map_ref(a, np.maximum(b, c)).mean() for a, b, c in zip(f, i, v)])
    total, terms = f3net_loss(t(f), t(i), t(v))
    assert terms["pixel"].item() == pytest.approx(pixel, abs=1e-12)
    assert terms["gradient"].item() == pytest.approx(gradient, abs=1e-12)
    assert terms["ssim"].item() == pytest.approx(ssim, abs=1e-12)
    assert total.item() == pytest.approx(pixel + 100 * gradient + 10 * ssim, abs=1e-10)
    assert set(terms) == set(LOSS_TERMS["f3net"])


def test_f3net_closed_form_constants():
    # F = 0.5, I = 0.2, V = 0.6 constants. Pixel term 0.3^2 + 0.1^2; no gradients. With zero padding,
    # a pixel whose window keeps weight s inside the image has means 0.5 s, 0.6 s, variances
    # 0.25 s(1-s), 0.36 s(1-s) and covariance 0.3 s(1-s), which gives SSIM in closed form.
    f, i, v = (torch.full((1, 1, 5, 5), c, dtype=torch.float64) for c in (0.5, 0.2, 0.6))
    _, terms = f3net_loss(f, i, v)
    assert terms["pixel"].item() == pytest.approx(0.10, abs=1e-15)
    assert terms["gradient"].item() == pytest.approx(0.0, abs=1e-25)
    g = [math.exp(-((k - 5) ** 2) / (2 * 1.5**2)) for k in range(11)]
    g = [x / sum(g) for x in g]
    inside = [sum(g[k] for k in range(11) if 0 <= p + k - 5 < 5) for p in range(5)]
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for sy in inside:
        for sx in inside:
            s = sy * sx
            vals.append((2 * 0.3 * s * s + c1) * (2 * 0.3 * s * (1 - s) + c2)
                        / ((0.61 * s * s + c1) * (0.61 * s * (1 - s) + c2)))
    assert terms["ssim"].item() == pytest.approx(1 - sum(vals) / 25, abs=1e-12)
    # identical images: SSIM is exactly 1 everywhere, so every term vanishes
    assert f3net_loss(v, v, v)[0].item() == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------ DIDFuse


def test_didfuse_matches_loops(rng, images):
    _, i, v = images
    i_hat = [np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1) for a in i]
    v_hat = [np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1) for a in v]
    feats = {m: [rng.normal(size=(2, 3, 5, 5)) for _ in range(4)] for m in ("ir", "vis")}

    def rec(x, xh):
        vals = []
        for a, b in zip(x, xh):
            vals.append(((a - b) ** 2).mean() + 5 * np.clip((1 - ssim_map_ref(a, b)) / 2, 0, 1).mean())
        return np.mean(vals)

    grad = []
    for a, b in zip(v, v_hat):
        for k in (SX / 8, SY / 8):
            grad.append(np.abs(correlate(a, k, "replicate") - correlate(b, k, "replicate")).mean())
    background = math.tanh(np.abs(feats["ir"][2] - feats["vis"][2]).mean())
    detail = math.tanh(np.abs(feats["ir"][3] - feats["vis"][3]).mean())
    expected = 2 * rec(i, i_hat) + 2 * rec(v, v_hat) + background - 0.5 * detail + 10 * np.mean(grad)

    ft = {m: [torch.tensor(x) for x in feats[m]] for m in feats}
    total, terms = didfuse_loss(t(i), t(v), t(i_hat), t(v_hat), ft["ir"], ft["vis"])
    assert terms["rec_ir"].item() == pytest.approx(rec(i, i_hat), abs=1e-12)
    assert terms["rec_vis"].item() == pytest.approx(rec(v, v_hat), abs=1e-12)
    assert terms["background"].item() == pytest.approx(background, abs=1e-12)
    assert terms["detail"].item() == pytest.approx(detail, abs=1e-12)
    assert terms["gradient"].item() == pytest.approx(np.mean(grad), abs=1e-12)
    assert total.item() == pytest.approx(expected, abs=1e-10)

    # paper form of the feature gap: mean squared difference; alpha1 configurable
    total2, terms2 = didfuse_loss(t(i), t(v), t(i_hat), t(v_hat), ft["ir"], ft["vis"], feature_norm="l2", alpha1=0.05)
    bg2 = math.tanh(((feats["ir"][2] - feats["vis"][2]) ** 2).mean())
    dt2 = math.tanh(((feats["ir"][3] - feats["vis"][3]) ** 2).mean())
    assert terms2["background"].item() == pytest.approx(bg2, abs=1e-12)
    assert total2.item() == pytest.approx(expected - background + 0.5 * detail + bg2 - 0.05 * dt2, abs=1e-10)


def test_didfuse_perfect_reconstruction_closed_form():
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    feats = [torch.zeros(2, 4, 16, 16, dtype=torch.float64)] * 4
    total, terms = didfuse_loss(x, x.flip(-1), x, x.flip(-1), feats, feats)
    # exact reconstructions, identical features: every term is 0
    assert total.item() == pytest.approx(0.0, abs=1e-12)
    assert all(abs(v.item()) < 1e-12 for v in terms.values())


# ------------------------------------------------------------------------------ RefineFuse


def variance_ref(img: np.ndarray) -> np.ndarray:
    win = gauss2d(9, 1.5)
    mu = correlate(img, win, "reflect")
    return np.maximum(correlate(img * img, win, "reflect") - mu**2, 0)


def test_contrast_mask_matches_loops(images):
    _, i, v = images
    expected = np.stack([(variance_ref(a) > variance_ref(b)).astype(float) for a, b in zip(i, v)])[:, None]
    got = contrast_mask(t(i), t(v))
    assert got.shape == (2, 1, 5, 5) and not got.requires_grad
    np.testing.assert_array_equal(got.numpy(), expected)
    assert 0 < expected.sum() < expected.size  # the test exercises both outcomes
    # ties (identical sources) go to the visible image
    assert contrast_mask(t(i), t(i)).sum().item() == 0.0


def test_refinefuse_matches_loops(images):
    f, i, v = images
    inten, text = [], []
    for a, b, c in zip(f, i, v):
        m = (variance_ref(b) > variance_ref(c)).astype(float)
        inten.append((np.abs(m * (a - b)).mean(), np.abs((1 - m) * (a - c)).mean()))
        for k in (SX, SY):
            fa, fb, fc = (np.abs(correlate(x, k, "reflect")) for x in (a, b, c))
            text.append(np.abs(fa - np.maximum(fb, fc)).mean())
    intensity = np.mean([p for p, _ in inten]) + np.mean([q for _, q in inten])
    texture = 2 * np.mean(text)  # sum over the two directions of the per-direction means
    total, terms = refinefuse_loss(t(f), t(i), t(v))
    assert terms["intensity"].item() == pytest.approx(intensity, abs=1e-12)
    assert terms["texture"].item() == pytest.approx(texture, abs=1e-12)
    assert total.item() == pytest.approx(5 * intensity + texture, abs=1e-11)


def test_refinefuse_edge_and_ssim_terms_match_loops(images):
    f, i, v = images
    edge = np.mean([((grad_l1(a, "reflect") - np.maximum(grad_l1(b, "reflect"), grad_l1(c, "reflect"))) ** 2).mean()
                    for a, b, c in zip(f, i, v)])
    ssim = 1 - np.mean([ssim_map_ref(a, np.maximum(b, c)).mean() for a, b, c in zip(f, i, v)])
    base, terms = refinefuse_loss(t(f), t(i), t(v), lam=0.5)
    assert set(terms) == set(LOSS_TERMS["refinefuse"])
    assert terms["edge"].item() == pytest.approx(edge, abs=1e-12)
    assert terms["ssim"].item() == pytest.approx(ssim, abs=1e-12)
    # logged whatever their weights; they enter the total only through them
    total, _ = refinefuse_loss(t(f), t(i), t(v), lam=0.5, edge_weight=5.0, ssim_weight=2.0)
    assert total.item() == pytest.approx(base.item() + 5 * edge + 2 * ssim, abs=1e-11)
    tripled, _ = refinefuse_loss(t(f), t(i), t(v), lam=0.5, texture_weight=3.0)
    assert tripled.item() == pytest.approx(base.item() + 2 * terms["texture"].item(), abs=1e-11)
    both = 1 - np.mean([(ssim_map_ref(a, b).mean() + ssim_map_ref(a, c).mean()) / 2 for a, b, c in zip(f, i, v)])
    _, terms = refinefuse_loss(t(f), t(i), t(v), ssim_target="both")
    assert terms["ssim"].item() == pytest.approx(both, abs=1e-12)
    # "masked": each pixel's SSIM against the intensity term's target for that pixel
    m = [(np.random.default_rng(3 + k).random(a.shape) > 0.5).astype(np.float64) for k, a in enumerate(f)]
    masked = 1 - np.mean([(k * ssim_map_ref(a, b) + (1 - k) * ssim_map_ref(a, c)).mean()
                          for a, b, c, k in zip(f, i, v, m)])
    _, terms = refinefuse_loss(t(f), t(i), t(v), mask_ir=t(m), ssim_target="masked")
    assert terms["ssim"].item() == pytest.approx(masked, abs=1e-12)
    with pytest.raises(ValueError, match="ssim_target"):
        refinefuse_loss(t(f), t(i), t(v), ssim_target="min")


def test_refinefuse_explicit_mask_closed_form():
    f = torch.full((1, 1, 6, 6), 0.5, dtype=torch.float64)
    i = torch.full_like(f, 0.9)
    v = torch.full_like(f, 0.1)
    ones = torch.ones_like(f)
    _, terms = refinefuse_loss(f, i, v, mask_ir=ones)
    assert terms["intensity"].item() == pytest.approx(0.4, abs=1e-15)  # |0.5 - 0.9|, visible masked out
    _, terms = refinefuse_loss(f, i, v, mask_ir=torch.zeros_like(f, dtype=torch.bool))
    assert terms["intensity"].item() == pytest.approx(0.4, abs=1e-15)  # |0.5 - 0.1|
    assert terms["texture"].item() == pytest.approx(0.0, abs=1e-14)


# ------------------------------------------------------------------------------ FISCNet


def test_fiscnet_matches_loops(rng, images):
    f, i, v = images
    masks = [np.round(rng.random((5, 5)) * 255) / 255 for _ in range(2)]
    masks[0][0, :] = 1.0  # saliency 255 -> M_i = 0 there
    mterm, mx, gr = [], [], []
    for a, b, c, m in zip(f, i, v, masks):
        mi = np.where(m == 1.0, 0.0, 1.0)
        mterm.append((np.abs(m * c - a).mean(), np.abs(a - mi * b).mean()))
        mx.append(np.abs(a - np.maximum(c, b)).mean())
        gr.append(np.abs(grad_l1(a, "zero") - np.maximum(grad_l1(c, "zero"), grad_l1(b, "zero"))).mean())
    mask_term = np.mean([p for p, _ in mterm]) + np.mean([q for _, q in mterm])
    total, terms = fiscnet_loss(t(f), t(i), t(v), t(masks))
    assert terms["mask"].item() == pytest.approx(mask_term, abs=1e-12)
    assert terms["max"].item() == pytest.approx(np.mean(mx), abs=1e-12)
    assert terms["gradient"].item() == pytest.approx(np.mean(gr), abs=1e-12)
    assert total.item() == pytest.approx(3 * mask_term + 10 * np.mean(mx) + 10 * np.mean(gr), abs=1e-10)
    ssim = 1 - np.mean([ssim_map_ref(a, np.maximum(b, c)).mean() for a, b, c in zip(f, i, v)])
    assert terms["ssim"].item() == pytest.approx(ssim, abs=1e-12)
    with_ssim, _ = fiscnet_loss(t(f), t(i), t(v), t(masks), ssim_weight=4.0)
    assert with_ssim.item() == pytest.approx(total.item() + 4 * ssim, abs=1e-10)


def test_fiscnet_mask_term_closed_form():
    # binary mask: inside M_v = 1 the term is |V - F| + |F|, elsewhere |F| + |F - I| (MODELS.md 3.8)
    f = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)
    i = torch.full_like(f, 0.8)
    v = torch.full_like(f, 0.2)
    m = torch.zeros_like(f)
    m[..., :2, :] = 1.0
    _, terms = fiscnet_loss(f, i, v, m)
    expected = 0.5 * (0.3 + 0.5) + 0.5 * (0.5 + 0.3)
    assert terms["mask"].item() == pytest.approx(expected, abs=1e-15)
    assert terms["max"].item() == pytest.approx(0.3, abs=1e-15)


# ------------------------------------------------------------------------------ gradients, checks


def _losses(fused, ir, vis, recon_ir, recon_vis, mask):
    feats_ir = [fused.expand(-1, 2, -1, -1) * k for k in (1.0, 2.0, 3.0, 4.0)]
    feats_vis = [recon_vis.expand(-1, 2, -1, -1) * k for k in (1.0, 2.0, 3.0, 4.0)]
    return {
        "f3net": f3net_loss(fused, ir, vis),
        "didfuse": didfuse_loss(ir, vis, recon_ir, recon_vis, feats_ir, feats_vis),
        "refinefuse": refinefuse_loss(fused, ir, vis),
        "fiscnet": fiscnet_loss(fused, ir, vis, mask),
    }


@pytest.mark.parametrize("kind", ["constant", "random"])
def test_losses_are_differentiable_and_finite(kind):
    g = torch.Generator().manual_seed(0)
    shape = (2, 1, 24, 24)
    if kind == "constant":
        ir, vis = torch.full(shape, 0.7), torch.full(shape, 0.2)
        leaves = [torch.full(shape, 0.4, requires_grad=True) for _ in range(3)]
        mask = torch.full(shape, 0.5)
    else:
        ir, vis = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
        leaves = [torch.rand(shape, generator=g).requires_grad_() for _ in range(3)]
        mask = torch.rand(shape, generator=g)
    fused, recon_ir, recon_vis = leaves
    for name, (total, terms) in _losses(fused, ir, vis, recon_ir, recon_vis, mask).items():
        assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values()), name
        for leaf in leaves:
            leaf.grad = None
        total.backward()
        used = [recon_ir, recon_vis] if name == "didfuse" else [fused]
        for leaf in used:
            assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), name
            assert leaf.grad.abs().sum() > 0, f"{name}: zero gradient on {kind} images"


def test_half_precision_inputs_are_promoted():
    x = torch.rand(1, 1, 8, 8).to(torch.bfloat16)
    total, _ = f3net_loss(x, x, x)
    assert total.dtype == torch.float32


def test_loss_input_checks():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="fused"):
        f3net_loss(torch.rand(1, 2, 8, 8), x, x)
    with pytest.raises(ValueError, match="vis"):
        refinefuse_loss(x, x, torch.rand(1, 1, 8, 9))
    with pytest.raises(TypeError, match="ir"):
        fiscnet_loss(x, (x * 255).to(torch.uint8), x, x)
    with pytest.raises(ValueError, match="feature_norm"):
        didfuse_loss(x, x, x, x, [x] * 4, [x] * 4, feature_norm="l3")
    with pytest.raises(ValueError, match="feats"):
        didfuse_loss(x, x, x, x, [x] * 3, [x] * 4)
