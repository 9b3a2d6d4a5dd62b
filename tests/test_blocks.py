"""Defining properties of the shared network blocks (ivfusion.models.blocks)."""
import math

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from ivfusion.models.blocks import (
    CBAM,
    FCANET_TOP16,
    CBAMChannelGate,
    MultiSpectralChannelAttention,
    ResBlock,
    SpatialAttention,
    SqueezeExcitation,
    channel_pool,
    dct_basis_1d,
    dct_filters_2d,
    grid_cross_attention,
    interleave_channels,
)


pytestmark = pytest.mark.usefixtures("seeded")


# --- DCT / FcaNet -----------------------------------------------------------------------------


def test_top16_table_matches_spec():
    # MODELS.md 4.3, rows u and v of the table, groups 0..15.
    u = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2]
    v = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2]
    assert list(FCANET_TOP16) == list(zip(u, v))
    assert len(set(FCANET_TOP16)) == 16


def test_dct_basis_matches_scipy_orthonormal_dct2():
    n = 7
    # Column t of the DCT-II (norm="ortho") of the identity is the transform of e_t, i.e. M[u, t] = b_u(t).
    expected = scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0)
    got = dct_basis_1d(n, torch.float64).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_dct_filters_are_orthonormal_and_separable():
    d = dct_filters_2d(FCANET_TOP16, 7, torch.float64)
    assert d.shape == (16, 7, 7)
    gram = torch.einsum("ghw,khw->gk", d, d)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=1e-12, rtol=0)
    # Each filter is the outer product of two cosines (independent formula, plain loops).
    for g, (u, v) in enumerate(FCANET_TOP16):
        for h in range(7):
            for w in range(7):
                cu = math.sqrt((1 if u == 0 else 2) / 7) * math.cos(math.pi * u * (h + 0.5) / 7)
                cv = math.sqrt((1 if v == 0 else 2) / 7) * math.cos(math.pi * v * (w + 0.5) / 7)
                assert abs(d[g, h, w].item() - cu * cv) < 1e-12


def test_dct_filters_reject_out_of_range_frequency():
    with pytest.raises(ValueError, match="frequencies"):
        dct_filters_2d([(7, 0)], 7)


def test_msca_spectral_pool_and_gate():
    c = 32
    att = MultiSpectralChannelAttention(c).double()
    assert sum(p.numel() for p in att.parameters()) == 128
    assert "dct_weight" not in att.state_dict()  # fixed buffer, not saved
    x = torch.rand(2, c, 14, 21, dtype=torch.float64)
    # 14x21 -> 7x7 adaptive pooling is a plain 2x3 block mean.
    pooled = x.reshape(2, c, 7, 2, 7, 3).mean(dim=(3, 5))
    filters = dct_filters_2d(FCANET_TOP16, 7, torch.float64)
    z = torch.zeros(2, c, dtype=torch.float64)
    for ch in range(c):
        z[:, ch] = (pooled[:, ch] * filters[ch // 2]).sum(dim=(1, 2))  # 2 channels per group
    torch.testing.assert_close(att.spectral_pool(x), z)
    gate = att.gate(x)
    assert gate.shape == (2, c, 1, 1)
    expected = torch.sigmoid(F.relu(z @ att.fc1.weight.T) @ att.fc2.weight.T)[:, :, None, None]
    torch.testing.assert_close(gate, expected)
    torch.testing.assert_close(att(x), x * expected)
    # The DC group (u = v = 0) is the scaled mean of the pooled map: sum / 7.
    torch.testing.assert_close(z[:, 0], pooled[:, 0].sum(dim=(1, 2)) / 7)


def test_msca_small_maps_and_bad_channels():
    att = MultiSpectralChannelAttention(32)
    assert att(torch.rand(1, 32, 3, 5)).shape == (1, 32, 3, 5)  # adaptive pooling upsamples
    with pytest.raises(ValueError, match="channels"):
        MultiSpectralChannelAttention(24)


# --- SE / CBAM --------------------------------------------------------------------------------


def test_se_gate_range_shape_and_formula():
    se = SqueezeExcitation(64, 16, bias=False).double()
    assert sum(p.numel() for p in se.parameters()) == 512
    x = torch.randn(3, 64, 9, 11, dtype=torch.float64) * 5
    g = se.gate(x)
    assert g.shape == (3, 64, 1, 1)
    assert g.min() >= 0 and g.max() <= 1
    mean = x.sum(dim=(2, 3)) / (9 * 11)
    expected = torch.sigmoid(F.relu(mean @ se.fc1.weight.T) @ se.fc2.weight.T)
    torch.testing.assert_close(g[:, :, 0, 0], expected)
    with pytest.raises(ValueError, match="reduction"):
        SqueezeExcitation(20, 16)


def test_cbam_gates_and_output():
    cbam = CBAM(32).double()
    assert sum(p.numel() for p in cbam.parameters()) == 260  # 162 MLP + 98 spatial conv
    x = torch.randn(2, 32, 10, 12, dtype=torch.float64) * 3
    ch = cbam.channel.gate(x)
    assert ch.shape == (2, 32, 1, 1)
    assert ch.min() >= 0 and ch.max() <= 1

    def mlp(v):
        return F.linear(F.relu(F.linear(v, cbam.channel.fc1.weight, cbam.channel.fc1.bias)),
                        cbam.channel.fc2.weight, cbam.channel.fc2.bias)

    avg = x.mean(dim=(2, 3))
    mx = x.flatten(2).max(dim=2).values
    torch.testing.assert_close(ch[:, :, 0, 0], torch.sigmoid(mlp(avg) + mlp(mx)))
    x1 = x * ch
    sp = cbam.spatial(x1)
    assert sp.shape == (2, 1, 10, 12)
    assert sp.min() >= 0 and sp.max() <= 1
    stats = torch.cat([x1.mean(1, keepdim=True), x1.max(1, keepdim=True).values], 1)  # CBAM order: mean, max
    torch.testing.assert_close(sp, torch.sigmoid(F.conv2d(stats, cbam.spatial.conv.weight, padding=3)))
    torch.testing.assert_close(cbam(x), x1 * sp)


def test_cbam_channel_gate_standalone():
    gate = CBAMChannelGate(16, 4)
    x = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(gate(x), x * gate.gate(x))


def test_spatial_attention_maps_in_unit_range():
    att = SpatialAttention(3, order=("max", "mean"), out_maps=2, bias=True)
    with torch.no_grad():
        att.conv.weight.mul_(50)  # saturate: the sigmoid must still stay in [0, 1]
    m = att(torch.randn(2, 8, 6, 7) * 10)
    assert m.shape == (2, 2, 6, 7)
    assert m.min() >= 0 and m.max() <= 1
    with pytest.raises(ValueError, match="order"):
        SpatialAttention(7, order=("min",))
    with pytest.raises(ValueError, match="kernel_size"):
        SpatialAttention(4)


def test_channel_pool_order_and_implicit_concatenation():
    x = torch.randn(2, 5, 3, 4)
    p = channel_pool(x, order=("max", "mean"))
    torch.testing.assert_close(p[:, 0], x.max(dim=1).values)
    torch.testing.assert_close(p[:, 1], x.mean(dim=1))
    q = channel_pool(x, order=("mean", "max"))
    torch.testing.assert_close(q, p.flip(1))
    # Several maps pool as their channel concatenation (unequal channel counts weight the mean).
    y = torch.randn(2, 3, 3, 4) + 1
    torch.testing.assert_close(channel_pool(x, y), channel_pool(torch.cat([x, y], 1)))
    with pytest.raises(ValueError, match="order"):
        channel_pool(x, order=("median",))


# --- ResBlock ---------------------------------------------------------------------------------


def test_resblock_is_identity_when_last_conv_is_zero():
    block = ResBlock(8)
    with torch.no_grad():
        block.conv_b.weight.zero_()
        block.conv_b.bias.zero_()
    x = torch.randn(2, 8, 9, 7)
    torch.testing.assert_close(block(x), x, atol=0, rtol=0)
    # And with a non-zero last conv the residual is conv_b(relu(conv_a(x))).
    block = ResBlock(8).double()
    x = x.double()
    ref = x + F.conv2d(F.relu(F.conv2d(x, block.conv_a.weight, block.conv_a.bias, padding=1)),
                       block.conv_b.weight, block.conv_b.bias, padding=1)
    torch.testing.assert_close(block(x), ref)


# --- interleave / attention -------------------------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_interleave_channels(channels_last):
    a = torch.randn(2, 5, 4, 3)
    b = torch.randn(2, 5, 4, 3)
    if channels_last:
        a = a.to(memory_format=torch.channels_last)
        b = b.to(memory_format=torch.channels_last)
    z = interleave_channels(a, b)
    assert z.shape == (2, 10, 4, 3)
    for c in range(5):
        assert torch.equal(z[:, 2 * c], a[:, c])
        assert torch.equal(z[:, 2 * c + 1], b[:, c])
    assert z.is_contiguous(memory_format=torch.channels_last) == channels_last
    scale = torch.rand(2, 2, 4, 3) + 0.5
    zs = interleave_channels(a, b, scale=scale)
    for c in range(5):
        torch.testing.assert_close(zs[:, 2 * c], a[:, c] * scale[:, 0])
        torch.testing.assert_close(zs[:, 2 * c + 1], b[:, c] * scale[:, 1])
    assert zs.is_contiguous(memory_format=torch.channels_last) == channels_last
    with pytest.raises(ValueError, match="same shape"):
        interleave_channels(a, b[:, :4])
    with pytest.raises(ValueError, match="scale"):
        interleave_channels(a, b, scale=scale[:, :1])


def test_grid_cross_attention_matches_explicit_softmax():
    b, m, c, h, w = 2, 2, 16, 5, 7
    q = torch.randn(b, c, h, w, dtype=torch.float64)
    k = torch.randn(b, m, c, h, w, dtype=torch.float64)
    v = torch.randn(b, m, c, h, w, dtype=torch.float64)
    out = grid_cross_attention(q, k, v)
    assert out.shape == (b, m, c, h, w)
    n = h * w
    for bi in range(b):
        qt = q[bi].reshape(c, n).T  # (n, C): one token per position
        for mi in range(m):
            kt = k[bi, mi].reshape(c, n).T
            vt = v[bi, mi].reshape(c, n).T
            logits = qt @ kt.T / math.sqrt(c)
            att = torch.exp(logits - logits.max(dim=1, keepdim=True).values)
            att = att / att.sum(dim=1, keepdim=True)
            expected = (att @ vt).T.reshape(c, h, w)
            torch.testing.assert_close(out[bi, mi], expected, atol=1e-10, rtol=1e-10)
    # The float32 path (fused CPU kernel) agrees with the float64 result.
    out32 = grid_cross_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(out32, out.float(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="query"):
        grid_cross_attention(q[:, :8], k, v)


@pytest.mark.parametrize("channels_last", [False, True])
def test_grid_cross_attention_uses_fused_kernel(channels_last):
    # The math fallback (taken e.g. for a non-unit stride along C) would materialise the n x n map.
    fused = "aten::_scaled_dot_product_flash_attention_for_cpu"
    if not hasattr(torch.ops.aten, fused.split("::")[1]):
        pytest.skip("this torch build has no fused CPU attention kernel")
    conv = torch.nn.Conv2d(8, 4 * 8, 3, padding=1)
    x = torch.randn(1, 8, 12, 10)
    if channels_last:
        conv, x = conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        kv = conv(x).unflatten(1, (2, 2, 8))  # the layout PSIM produces
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            grid_cross_attention(kv[:, 0, 0], kv[:, :, 0], kv[:, :, 1])
    names = {e.name for e in prof.events()}
    assert fused in names
    assert "aten::_scaled_dot_product_attention_math" not in names
