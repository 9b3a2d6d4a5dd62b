"""RefineFuse specifics (MODELS.md section 5): parameter/MAC budget, SFIM, PSIM, FIM, shape flow."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import ivfusion
from ivfusion.models import count_parameters
from ivfusion.models.blocks import interleave_channels
from ivfusion.models.refinefuse import FIM, PSIM, SFIM, RefineFuse, psim_grid


pytestmark = pytest.mark.usefixtures("seeded")


def test_registered_metadata():
    info = ivfusion.get_model_info("refinefuse")
    assert info.cls is RefineFuse
    assert info.size_multiple == 8
    assert info.tiling_halo is None


def test_parameter_counts_match_spec():
    net = ivfusion.create_model("refinefuse")
    assert count_parameters(net) == 2_031_856
    assert abs(count_parameters(net) - 2.21e6) / 2.21e6 < 0.10  # paper: 2.21 M
    assert count_parameters(net.enc_ir) == count_parameters(net.enc_vi) == 148_352
    assert count_parameters(net.sfim1) == count_parameters(net.sfim2) == 1_254
    assert count_parameters(net.psim3) == 72 * 64**2 + 6 * 64 == 295_296
    assert count_parameters(net.psim4) == 72 * 128**2 + 6 * 128 == 1_180_416
    assert count_parameters(net.dec4) == 45_184
    assert count_parameters(net.dec3) == count_parameters(net.dec2) == 41_088
    assert count_parameters(net.fim) == 99
    assert count_parameters(net.dec1) == 129_473


def closed_form_macs(h: int, w: int) -> float:
    """MACs from the layer tables of MODELS.md 5.2-5.5 for an input already a multiple of 8."""
    px = [h * w, (h // 2) * (w // 2), (h // 4) * (w // 4), (h // 8) * (w // 8)]  # levels 1..4
    macs = 2 * (1 * 64 * 9 * px[0] + 64 * 64 * 9 * (px[1] + px[2]) + 64 * 128 * 9 * px[3])  # encoders
    macs += (2 * 2 * 9 + 128 * 2 * 9 // 2) * (px[0] + px[1])  # SFIMs: spatial conv + grouped conv
    for c, level, pool in ((64, 2, 4), (128, 3, 8)):  # PSIM3, PSIM4
        hl, wl = h >> level, w >> level
        n = math.ceil(hl / pool) * math.ceil(wl / pool)
        macs += (2 * c * c * 9 + 4 * c * c * 9) * n  # query + 2 x (key, value) convs on the pooled grid
        macs += 2 * 2 * c * n * n  # QK^T and AV for both modalities
        macs += 2 * c * c * 9 * hl * wl  # fusion conv
    macs += (128 * 64 + 64 * 64 * 9) * px[3]  # Dec4
    macs += (64 * 64 + 64 * 64 * 9) * px[2]  # Dec3
    macs += 2 * 49 * px[1]  # FIM spatial conv
    macs += (64 * 64 + 64 * 64 * 9) * px[1]  # Dec2
    macs += (128 * 64 + 64 * 64 + 64 * 32 + 32) * 9 * px[0]  # Dec1
    return macs


def counted_flops(net, h, w):
    x = torch.rand(1, 1, h, w)
    # The math SDPA backend runs the attention as two bmm's, which the flop counter sees.
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        net(x, x)
    return counter.get_total_flops()


def test_macs_match_closed_form():
    net = ivfusion.create_model("refinefuse")
    h = w = 128  # grids divide evenly: 8x8 and 2x2 tokens
    attention = 2 * 2 * 64 * 64**2 + 2 * 2 * 128 * 4**2
    assert closed_form_macs(h, w) == 181_117.5 * h * w + attention
    assert counted_flops(net, h, w) == 2 * (181_117.5 * h * w + attention)
    # 90x70 is padded to 96x72; level-3 grid ceil(24/4) x ceil(18/4) = 6x5, level 4 ceil(12/8) x ceil(9/8) = 2x2.
    assert counted_flops(net, 90, 70) == 2 * closed_form_macs(96, 72)


def test_spec_cost_table():
    # MODELS.md 5.6: 11.89 G at 256^2, 47.75 G at 512^2, 56.02 G at 640x480 (closed form only: too slow to count).
    assert closed_form_macs(256, 256) / 1e9 == pytest.approx(11.89, abs=0.005)
    assert closed_form_macs(512, 512) / 1e9 == pytest.approx(47.75, abs=0.005)
    assert closed_form_macs(480, 640) / 1e9 == pytest.approx(56.02, abs=0.005)


def test_attention_token_counts():
    net = ivfusion.create_model("refinefuse")
    grids = {}

    def hook(name):
        def fn(module, inputs, output):
            grids[name] = tuple(output.shape[-2:])
        return fn

    net.psim3.query.register_forward_hook(hook("psim3"))
    net.psim4.query.register_forward_hook(hook("psim4"))
    for h, w in [(72, 104), (61, 99)]:
        hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
        with torch.no_grad():
            net(torch.rand(1, 1, h, w), torch.rand(1, 1, h, w))
        assert grids["psim3"] == (math.ceil(hp / 4 / 4), math.ceil(wp / 4 / 4))
        assert grids["psim4"] == (math.ceil(hp / 8 / 8), math.ceil(wp / 8 / 8))
        assert grids["psim3"] == psim_grid(hp // 4, wp // 4, 4)
    # MODELS.md 5.4 (grids as width x height): 640x480 -> 40x30 and 10x8; 1024x768 -> 64x48 and 16x12.
    assert psim_grid(480 // 4, 640 // 4, 4) == (30, 40) and psim_grid(480 // 8, 640 // 8, 8) == (8, 10)
    assert psim_grid(768 // 4, 1024 // 4, 4) == (48, 64) and psim_grid(768 // 8, 1024 // 8, 8) == (12, 16)


def test_shape_flow():
    net = ivfusion.create_model("refinefuse")
    shapes = {}
    for name in ["sfim1", "sfim2", "psim3", "psim4", "dec4", "dec3", "fim", "dec2", "dec1"]:
        module = net.dec1[-1] if name == "dec1" else getattr(net, name)  # the head runs on its own (float32)
        module.register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:]))
        )
    h, w = 48, 64
    with torch.no_grad():
        out = net(torch.rand(2, 1, h, w), torch.rand(2, 1, h, w))
    assert out.shape == (2, 1, h, w)
    assert shapes == {
        "sfim1": (64, h, w), "sfim2": (64, h // 2, w // 2), "psim3": (64, h // 4, w // 4),
        "psim4": (128, h // 8, w // 8), "dec4": (64, h // 4, w // 4), "dec3": (64, h // 2, w // 2),
        "fim": (64, h // 2, w // 2), "dec2": (64, h, w), "dec1": (1, h, w),
    }  # fmt: skip


def test_reflect_pad_and_crop():
    net = ivfusion.create_model("refinefuse")
    ir, vi = torch.rand(1, 1, 37, 53), torch.rand(1, 1, 37, 53)
    with torch.no_grad():
        out = net(ir, vi)
        ref = net.fuse_aligned(F.pad(ir, (0, 3, 0, 3), mode="reflect"), F.pad(vi, (0, 3, 0, 3), mode="reflect"))
    assert out.shape == (1, 1, 37, 53)
    torch.testing.assert_close(out, ref[..., :37, :53])
    assert out.min() > 0 and out.max() < 1


# --- modules against explicit formulas -------------------------------------------------------


def test_sfim_grouped_conv_is_per_channel():
    sfim = SFIM(8).double()
    a = torch.randn(1, 8, 6, 5, dtype=torch.float64)
    b = torch.randn(1, 8, 6, 5, dtype=torch.float64)
    base = sfim.fuse(interleave_channels(a, b))
    for ch in (0, 3, 7):
        a2, b2 = a.clone(), b.clone()
        a2[:, ch] += torch.randn(6, 5, dtype=torch.float64)
        b2[:, ch] -= 1.0
        out = sfim.fuse(interleave_channels(a2, b2))
        others = [k for k in range(8) if k != ch]
        assert torch.equal(out[:, others], base[:, others])
        assert not torch.allclose(out[:, ch], base[:, ch])


def test_sfim_matches_formula():
    c = 6
    sfim = SFIM(c).double()
    a = torch.randn(2, c, 7, 9, dtype=torch.float64)
    b = torch.randn(2, c, 7, 9, dtype=torch.float64)
    x = torch.cat([a, b], 1)
    stats = torch.cat([x.max(1, keepdim=True).values, x.mean(1, keepdim=True)], 1)
    alpha = torch.sigmoid(F.conv2d(stats, sfim.spatial.conv.weight, sfim.spatial.conv.bias, padding=1))
    assert alpha.min() >= 0 and alpha.max() <= 1
    a_hat = a * (1 + alpha[:, :1])
    b_hat = b * (1 + alpha[:, 1:])
    wgt, bias = sfim.fuse.weight, sfim.fuse.bias  # (C, 2, 3, 3): one (A_a, B_a) pair per output channel
    expected = torch.cat(
        [
            F.conv2d(torch.stack([a_hat[:, k], b_hat[:, k]], 1), wgt[k : k + 1], bias[k : k + 1], padding=1)
            for k in range(c)
        ],
        1,
    )
    torch.testing.assert_close(sfim(a, b), F.relu(expected))


def adaptive_pool_loops(x, out_h, out_w):
    """Adaptive average pooling by its definition (bins [floor(i h / n), ceil((i + 1) h / n)))."""
    h, w = x.shape[-2:]
    out = torch.empty(*x.shape[:-2], out_h, out_w, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            r0, r1 = (i * h) // out_h, -(-((i + 1) * h) // out_h)
            c0, c1 = (j * w) // out_w, -(-((j + 1) * w) // out_w)
            out[..., i, j] = x[..., r0:r1, c0:c1].mean(dim=(-2, -1))
    return out


def psim_reference(psim: PSIM, a, b):
    c, s = psim.channels, psim.pool
    h, w = a.shape[-2:]
    gh, gw = math.ceil(h / s), math.ceil(w / s)
    a_s, b_s = adaptive_pool_loops(a, gh, gw), adaptive_pool_loops(b, gh, gw)
    q = F.conv2d(torch.cat([a_s, b_s], 1), psim.query.weight, psim.query.bias, padding=1)
    kw, kb = psim.key_value.weight, psim.key_value.bias  # groups=2: [K_A, V_A] from A, [K_B, V_B] from B
    conv = lambda x, i: F.conv2d(x, kw[i * c : (i + 1) * c], kb[i * c : (i + 1) * c], padding=1)  # noqa: E731
    kv = {"A": (conv(a_s, 0), conv(a_s, 1)), "B": (conv(b_s, 2), conv(b_s, 3))}
    g = {}
    for m, (k, v) in kv.items():
        qt = q.flatten(2).transpose(1, 2)  # (B, n, C)
        att = torch.softmax(qt @ k.flatten(2) / math.sqrt(c), dim=-1)  # (B, n, n)
        g[m] = (att @ v.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(-1, c, gh, gw)
        g[m] = F.interpolate(g[m], size=(h, w), mode="bilinear", align_corners=False)
    if psim.residual == "cross":
        g = {"A": g["B"], "B": g["A"]}
    x = torch.cat([a + g["A"], b + g["B"]], 1)
    return F.relu(F.conv2d(x, psim.fuse.weight, psim.fuse.bias, padding=1))


@pytest.mark.parametrize("residual", ["own", "cross"])
@pytest.mark.parametrize("size", [(12, 16), (10, 7)])
def test_psim_matches_reference(residual, size):
    psim = PSIM(8, pool=4, residual=residual).double()
    a = torch.randn(2, 8, *size, dtype=torch.float64)
    b = torch.randn(2, 8, *size, dtype=torch.float64)
    torch.testing.assert_close(psim(a, b), psim_reference(psim, a, b))


def test_psim_grid_equal_to_input_skips_resampling():
    psim = PSIM(4, pool=1).double()
    a = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    b = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(psim(a, b), psim_reference(psim, a, b))


def test_fim_matches_formula():
    fim = FIM().double()
    d = torch.randn(2, 16, 8, 10, dtype=torch.float64)
    s = torch.randn(2, 16, 8, 10, dtype=torch.float64)
    gap = lambda t: t.sum(dim=(2, 3), keepdim=True) / (t.shape[2] * t.shape[3])  # noqa: E731
    s_c = s * torch.sigmoid(gap(d)) + s * torch.sigmoid(gap(s))
    stats = torch.cat([d.max(1, keepdim=True).values, d.mean(1, keepdim=True)], 1)
    a = torch.sigmoid(F.conv2d(stats, fim.spatial.conv.weight, fim.spatial.conv.bias, padding=3))
    torch.testing.assert_close(fim(d, s), d + s_c * a)
    # A deep map on a coarser grid is upsampled bilinearly to the shallow one first.
    d_small = torch.randn(2, 16, 4, 5, dtype=torch.float64)
    d_up = F.interpolate(d_small, size=(8, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(fim(d_small, s), fim(d_up, s))


def test_config_validation():
    with pytest.raises(ValueError, match="widths"):
        RefineFuse(widths=(64, 64, 128))
    with pytest.raises(ValueError, match="widths"):
        RefineFuse(widths=(64, 32, 64, 128))
    with pytest.raises(ValueError, match="pools"):
        RefineFuse(pools=(4,))
    with pytest.raises(ValueError, match="residual"):
        RefineFuse(psim_residual="sideways")
    with pytest.raises(ValueError, match="pool"):
        PSIM(8, pool=0)


def test_channels_last_matches_nchw():
    net = ivfusion.create_model("refinefuse")
    ir, vi = torch.rand(2, 1, 40, 56), torch.rand(2, 1, 40, 56)
    with torch.no_grad():
        ref = net(ir, vi)
        net = net.to(memory_format=torch.channels_last)
        out = net(ir.to(memory_format=torch.channels_last), vi.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
