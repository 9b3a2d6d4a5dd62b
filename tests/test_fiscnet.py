"""FISCNet (MODELS.md section 3): official-weight golden outputs and the defining properties of its blocks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ivfusion
from ivfusion.models import count_parameters, get_model_info, measure_flops
from ivfusion.models.fiscnet import (
    CALayer,
    CDC,
    CROSS_TAPS,
    DenseBlock,
    FISCNet,
    HINBlock,
    InvConv2dLU,
    PLUS_TAPS,
    TapConv3x3,
    phase_mix,
)
from .conftest import reference_file

STEMS = ["FLIR_04484", "FLIR_04512", "FLIR_04593"]


@pytest.fixture(scope="module")
def official_state() -> dict:
    from safetensors.torch import load_file

    return load_file(reference_file("fiscnet_official.safetensors"))


@pytest.fixture(scope="module")
def official_model(official_state) -> FISCNet:
    model = ivfusion.create_model("fiscnet")
    model.load_state_dict(official_state, strict=True)
    return model


def random_model(seed: int = 0) -> FISCNet:
    torch.manual_seed(seed)
    return ivfusion.create_model("fiscnet")


# ------------------------------------------------------------------------------------------------
# Golden outputs of the official code


@pytest.mark.parametrize("stem", STEMS)
def test_golden_official_outputs(official_model, stem):
    g = np.load(reference_file("golden", f"fiscnet_{stem}.npz"))
    ir = torch.from_numpy(g["ir"])[None, None]
    vis = torch.from_numpy(g["vis"])[None, None]
    captured = {}
    hook = official_model.reconstruction.register_forward_hook(lambda m, i, o: captured.setdefault("raw", o))
    try:
        with torch.inference_mode():
            fused = official_model(ir, vis)[0, 0].numpy()
            mix = official_model.phase_mix_input(ir, vis)[0, 0].numpy()
    finally:
        hook.remove()
    raw = captured["raw"][0, 0].numpy()
    for key, value in (("fused", fused), ("fused_raw", raw)):
        assert value.shape == g[key].shape
        diff = np.abs(value.astype(np.float64) - g[key])
        assert diff.max() <= 5e-5, (key, diff.max())
        assert diff.mean() <= 2e-6, (key, diff.mean())
    assert np.abs(mix.astype(np.float64) - g["phase_mix"]).max() <= 1e-5
    assert (g["fused_raw"] > 1).any()  # the clamp matters on these crops, so both comparisons count


def test_forward_raw_is_the_unclamped_output():
    model = random_model()
    ir, vis = torch.rand(1, 1, 20, 23), torch.rand(1, 1, 20, 23)
    with torch.inference_mode():
        raw = model.forward_raw(ir, vis)
        assert torch.equal(model(ir, vis), raw.clamp(0, 1))


def test_official_checkpoint_keys_are_the_module_paths(official_state):
    model = random_model()
    assert set(model.state_dict()) == set(official_state)
    assert {n for n, _ in model.named_buffers()} == {k for k in official_state if k.endswith((".p", ".sign_s"))}
    assert sum(v.numel() for v in official_state.values()) == 327_458


# ------------------------------------------------------------------------------------------------
# Size, cost, metadata


def test_parameter_counts_total_and_used():
    model = random_model().train()
    assert count_parameters(model) == 324_290
    model.forward_raw(torch.rand(1, 1, 16, 18), torch.rand(1, 1, 16, 18)).square().mean().backward()
    used = sum(p.numel() for p in model.parameters() if p.grad is not None)
    assert used == 309_568
    declared_unused = sum(
        p.numel() for n, p in model.named_parameters() if n.startswith(model.unused_parameter_prefixes)
    )
    assert declared_unused == 324_290 - 309_568 == 2 * 7_361


def test_flops_match_the_layer_table():
    # MODELS.md 3.6: 375,312 MACs/px of convolutions, less what the folded CDC saves: each of its 9 calls
    # runs one 16->16 3x3 convolution (2,304 MACs/px) instead of two 3x3 and two 1x1 ones (5,120), so
    # 375,312 - 9 x 2,816 = 349,968. Torch also counts the per-image constants: the
    # 1x1 convs on pooled vectors (3 stages x (3 DenseBlockMscale x 4 x 256 + 2 x 512) + 2 CALayers x 128
    # = 12,544 MACs) and the two 32x32x32 matmuls forming each InvBlock's W (3 x 65,536 MACs).
    # Exact for sides divisible by 4 (the x0.5 / x0.25 branches then cover exactly 1/4 and 1/16 of the pixels).
    for h, w in ((480, 640), (36, 52)):
        macs = (375_312 - 9 * 2_816) * h * w + 12_544 + 3 * 65_536
        assert measure_flops("fiscnet", h, w) == pytest.approx(2 * macs / 1e9, rel=1e-12)


def test_registry_entry():
    info = get_model_info("fiscnet")
    assert info.cls is FISCNet and info.size_multiple == 1 and info.tiling_halo is None
    assert "Information Fusion" in info.paper


@pytest.mark.parametrize("size", [(4, 4), (5, 7), (9, 4)])
def test_smallest_sizes(size):
    model = random_model()
    with torch.inference_mode():
        out = model(torch.rand(1, 1, *size), torch.rand(1, 1, *size))
    assert out.shape == (1, 1, *size) and torch.isfinite(out).all()


def test_hin_block_on_a_single_pixel_is_the_limit_of_instance_norm():
    # Below 8x8 the x0.25 branch is 1x1: instance norm of one value is 0, leaving the affine bias.
    torch.manual_seed(3)
    block = HINBlock(4, 8).double()
    with torch.no_grad():
        block.norm.bias.normal_()
    x = torch.randn(2, 4, 1, 1, dtype=torch.float64)
    out = block.conv_1(x)
    mid = torch.cat([block.norm.bias.expand(2, 4)[..., None, None], out[:, 4:]], dim=1)
    expected = F.leaky_relu(block.conv_2(F.leaky_relu(mid, 0.1)), 0.1) + block.identity(x)
    torch.testing.assert_close(block(x), expected)


def test_too_small_input_is_rejected():
    with pytest.raises(ValueError, match="H, W >= 4"):
        random_model()(torch.rand(1, 1, 3, 8), torch.rand(1, 1, 3, 8))


# ------------------------------------------------------------------------------------------------
# Phase mixing


def test_phase_mix_of_an_image_with_itself_doubles_it():
    v = torch.rand(2, 3, 13, 16, dtype=torch.float64)
    torch.testing.assert_close(phase_mix(v, v, v), 2 * v)


def test_phase_mix_matches_numpy_float64():
    rng = np.random.default_rng(0)
    a, p1, p2 = (rng.random((2, 11, 14)) for _ in range(3))
    spec = np.abs(np.fft.fft2(a)) * (np.exp(1j * np.angle(np.fft.fft2(p1))) + np.exp(1j * np.angle(np.fft.fft2(p2))))
    expected = np.abs(np.fft.ifft2(spec))
    got = phase_mix(*(torch.from_numpy(t).float() for t in (a, p1, p2)))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    got64 = phase_mix(*(torch.from_numpy(t) for t in (a, p1, p2)))
    np.testing.assert_allclose(got64.numpy(), expected, atol=1e-12)


def test_phase_mix_runs_in_float32_under_autocast():
    a, p1, p2 = (torch.rand(1, 2, 9, 10) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = phase_mix(a, p1, p2)
    assert got.dtype == torch.float32
    assert torch.equal(got, phase_mix(a, p1, p2))


def test_phase_mix_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        phase_mix(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5))


def test_model_phase_mix_input_uses_visible_amplitude():
    model = random_model()
    ir, vis = torch.rand(1, 1, 10, 12), torch.rand(1, 1, 10, 12)
    torch.testing.assert_close(model.phase_mix_input(ir, vis), phase_mix(vis, vis, ir))
    # The amplitude comes from the visible image: scaling it scales the result, scaling ir does not.
    torch.testing.assert_close(model.phase_mix_input(3 * ir, vis), model.phase_mix_input(ir, vis))
    torch.testing.assert_close(model.phase_mix_input(ir, 2 * vis), 2 * model.phase_mix_input(ir, vis))


# ------------------------------------------------------------------------------------------------
# CDC


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[i, j] = x[i + dy, j + dx]`` with zeros outside."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


@pytest.mark.parametrize("taps", [PLUS_TAPS, CROSS_TAPS])
def test_tap_conv_equals_sum_of_shifted_taps(taps):
    torch.manual_seed(0)
    conv = TapConv3x3(3, 4, taps, theta=0.0).double()
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    w = conv.conv.weight[:, :, 0, :]  # (4, 3, 5)
    expected = torch.zeros(2, 4, 7, 9, dtype=torch.float64)
    for t, pos in enumerate(taps):
        shifted = _shift(x, pos // 3 - 1, pos % 3 - 1)
        expected += torch.einsum("oi,nihw->nohw", w[:, :, t], shifted)
    torch.testing.assert_close(conv(x), expected)
    zero_positions = [p for p in range(9) if p not in taps]
    assert (conv.kernel().flatten(2)[..., zero_positions] == 0).all()


@pytest.mark.parametrize("taps", [PLUS_TAPS, CROSS_TAPS])
def test_central_difference_on_a_constant_image(taps):
    # Away from the border a constant input c gives (1 - theta) * sum(K) * c per (out, in) pair.
    torch.manual_seed(1)
    theta = 0.8
    conv = TapConv3x3(2, 3, taps, theta=theta).double()
    c = torch.tensor([0.6, -1.3], dtype=torch.float64)
    x = c[None, :, None, None].expand(1, 2, 8, 8)
    out = conv(x)[0, :, 1:-1, 1:-1]
    expected = (1 - theta) * (conv.conv.weight.sum(dim=(2, 3)) @ c)
    torch.testing.assert_close(out, expected[:, None, None].expand_as(out))


def test_cdc_mixes_plus_and_cross_and_adds_the_input():
    torch.manual_seed(2)
    cdc = CDC(4).double()
    assert cdc.HP_branch.item() == 0  # C-FIS-1
    x = torch.randn(1, 4, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(cdc(x), 0.5 * cdc.h_conv(x) + 0.5 * cdc.d_conv(x) + x)
    with torch.no_grad():
        cdc.HP_branch.fill_(40.0)  # sigmoid -> 1: plus only
    torch.testing.assert_close(cdc(x), cdc.h_conv(x) + x)
    assert cdc.h_conv.taps == PLUS_TAPS and cdc.d_conv.taps == CROSS_TAPS


# ------------------------------------------------------------------------------------------------
# InvBlock 1x1 convolution


def test_invconv_weight_is_the_orthogonal_qr_factor_at_init():
    torch.manual_seed(5)
    conv = InvConv2dLU(32)
    torch.manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(32, 32))
    w = conv.weight()
    torch.testing.assert_close(w, q, atol=1e-5, rtol=0)
    torch.testing.assert_close(w @ w.T, torch.eye(32), atol=1e-5, rtol=0)
    # Buffers: a permutation matrix and signs.
    p = conv.p
    assert torch.equal(p.sum(0), torch.ones(32)) and torch.equal(p.sum(1), torch.ones(32))
    assert set(conv.sign_s.tolist()) <= {-1.0, 1.0}


def test_invconv_stays_invertible_with_the_lu_determinant():
    torch.manual_seed(6)
    conv = InvConv2dLU(8).double()
    with torch.no_grad():
        for p in (conv.lower, conv.upper, conv.log_s):
            p.add_(0.3 * torch.randn_like(p))
    w = conv.weight()
    # det(P L U') = det(P) * prod(sign * exp(log_s)); only the triangles of lower/upper matter.
    expected = torch.linalg.det(conv.p) * torch.prod(conv.sign_s * torch.exp(conv.log_s))
    torch.testing.assert_close(torch.linalg.det(w), expected)
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    y = conv(x)
    torch.testing.assert_close(torch.einsum("oi,nihw->nohw", torch.linalg.inv(w), y), x)


# ------------------------------------------------------------------------------------------------
# Dense blocks and the head


def test_dense_block_init():
    torch.manual_seed(7)
    block = DenseBlock(16, 16)
    convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 7  # 3 per HIN block + the 48->16 conv
    for conv in convs:
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    w = block.conv3.weight  # xavier-normal std sqrt(2 / (fan_in + fan_out)), times 0.1
    fan_in, fan_out = 48 * 9, 16 * 9
    assert w.std().item() == pytest.approx(0.1 * (2 / (fan_in + fan_out)) ** 0.5, rel=0.1)


def test_hin_block_normalises_only_the_first_half():
    torch.manual_seed(8)
    block = HINBlock(4, 8).double()
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    out = block.conv_1(x)
    normed = F.instance_norm(out[:, :4], weight=block.norm.weight, bias=block.norm.bias, eps=1e-5)
    mid = F.leaky_relu(torch.cat([normed, out[:, 4:]], dim=1), 0.1)
    expected = F.leaky_relu(block.conv_2(mid), 0.1) + block.identity(x)
    torch.testing.assert_close(block(x), expected)


def test_calayer_adds_a_per_channel_constant():
    torch.manual_seed(9)
    layer = CALayer(16).double()
    x = torch.randn(2, 16, 7, 9, dtype=torch.float64)
    delta = layer(x) - x
    torch.testing.assert_close(delta, delta[..., :1, :1].expand_as(delta))


def test_half_instance_norm_equals_instance_norm_on_the_first_half_and_keeps_channels_last():
    torch.manual_seed(2)
    block = HINBlock(3, 6).double()
    with torch.no_grad():
        block.norm.weight.copy_(torch.randn(3))
        block.norm.bias.copy_(torch.randn(3))
    x = (torch.randn(2, 6, 7, 9, dtype=torch.float64) * 3 + 5).contiguous(memory_format=torch.channels_last)
    expected = torch.cat([torch.nn.functional.instance_norm(x[:, :3], weight=block.norm.weight,
                                                             bias=block.norm.bias, eps=block.norm.eps),
                          x[:, 3:]], dim=1)
    got = block._half_norm(x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert got.is_contiguous(memory_format=torch.channels_last)
