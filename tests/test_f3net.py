"""F3Net specifics (MODELS.md section 4): parameter/MAC budget, FSFEM and FFM formulas."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import ivfusion
from ivfusion.models import count_parameters
from ivfusion.models.f3net import FFM, FSFEM, F3Net


pytestmark = pytest.mark.usefixtures("seeded")


def test_registered_metadata():
    info = ivfusion.get_model_info("f3net")
    assert info.cls is F3Net
    assert info.size_multiple == 1
    assert info.tiling_halo is None


def test_parameter_counts_match_spec():
    net = ivfusion.create_model("f3net")
    assert count_parameters(net) == 140_283
    assert count_parameters(net.fsfem_ir) == count_parameters(net.fsfem_vi) == 37_700
    assert count_parameters(net.ffm) == 4_722
    assert count_parameters(net.irm) == 60_161
    # MODELS.md 4.2: width 64 would give 557,823 parameters.
    assert count_parameters(F3Net(channels=64)) == 557_823


def test_macs_match_closed_form():
    net = ivfusion.create_model("f3net")
    b, h, w = 2, 40, 56
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.rand(b, 1, h, w), torch.rand(b, 1, h, w))
    # Convolutions, MODELS.md 4.8: per FSFEM 288 + 18,432 + 9,216 + 9,216 + 98; FFM 4,096 + 49;
    # IRM 36,864 + 18,432 + 4,608 + 144.
    conv_px = 2 * (288 + 18_432 + 9_216 + 9_216 + 98) + (4_096 + 49) + (36_864 + 18_432 + 4_608 + 144)
    assert conv_px == 138_693
    # Linear layers per image: MSCA 32x2 + 2x32, CBAM MLP on the average and the max vector
    # 2 x (32x2 + 2x32), per stream; SE 64x4 + 4x64.
    linear = 2 * (128 + 2 * 128) + 512
    assert counter.get_total_flops() == 2 * b * (conv_px * h * w + linear)
    assert conv_px * 640 * 480 / 1e9 == pytest.approx(42.61, abs=0.005)  # MODELS.md 4.8


def test_fsfem_matches_formula():
    m = FSFEM(32).double()
    x = torch.rand(2, 1, 9, 11, dtype=torch.float64)
    conv = lambda t, c: F.conv2d(t, c.weight, c.bias, padding=1)  # noqa: E731
    stem = F.relu(conv(x, m.stem.conv))
    r = stem + conv(F.relu(conv(stem, m.res.conv_a)), m.res.conv_b)
    f = F.relu(conv(r, m.ffeu[0].conv))
    s = F.relu(conv(r, m.sfeu[0].conv))
    fq, sp = m(x)
    torch.testing.assert_close(fq, f * m.ffeu[1].gate(f))
    cbam = m.sfeu[1]
    s1 = s * cbam.channel.gate(s)
    torch.testing.assert_close(sp, s1 * cbam.spatial(s1))


def test_ffm_matches_formula():
    ffm = FFM(64).double()
    fq = torch.randn(2, 64, 8, 9, dtype=torch.float64)
    sp = torch.randn(2, 64, 8, 9, dtype=torch.float64)
    m = sp.max(dim=1, keepdim=True).values
    a = F.conv2d(m, ffm.spatial.weight, ffm.spatial.bias, padding=3)
    wgt = torch.sigmoid(F.conv2d(fq, ffm.freq_proj.weight, ffm.freq_proj.bias) + a)
    y = fq * wgt + sp
    gate = torch.sigmoid(F.relu(y.mean(dim=(2, 3)) @ ffm.se.fc1.weight.T) @ ffm.se.fc2.weight.T)
    torch.testing.assert_close(ffm(fq, sp), y * gate[:, :, None, None])
    assert ffm.se.fc1.bias is None and ffm.se.fc2.bias is None


def test_head_is_rescaled_tanh():
    net = ivfusion.create_model("f3net").double()
    ir = torch.rand(1, 1, 12, 10, dtype=torch.float64)
    vi = torch.rand(1, 1, 12, 10, dtype=torch.float64)
    with torch.no_grad():
        fq_i, sp_i = net.fsfem_ir(ir)
        fq_v, sp_v = net.fsfem_vi(vi)
        z = net.ffm(torch.cat([fq_i, fq_v], 1), torch.cat([sp_i, sp_v], 1))
        expected = (torch.tanh(net.irm(z)) + 1) / 2
        torch.testing.assert_close(net(ir, vi), expected)


def test_tiny_inputs_below_dct_grid():
    net = ivfusion.create_model("f3net")
    with torch.no_grad():
        out = net(torch.rand(1, 1, 3, 5), torch.rand(1, 1, 3, 5))
    assert out.shape == (1, 1, 3, 5)
    assert out.min() > 0 and out.max() < 1


def test_config_validation():
    with pytest.raises(ValueError, match="channels"):
        F3Net(channels=24)


def test_channels_last_matches_nchw():
    net = ivfusion.create_model("f3net")
    ir, vi = torch.rand(2, 1, 20, 28), torch.rand(2, 1, 20, 28)
    with torch.no_grad():
        ref = net(ir, vi)
        net = net.to(memory_format=torch.channels_last)
        out = net(ir.to(memory_format=torch.channels_last), vi.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
