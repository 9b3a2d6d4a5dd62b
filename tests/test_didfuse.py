"""DIDFuse (MODELS.md section 2): official-weight golden outputs, weight conversion, fusion rules, structure."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import ivfusion
from ivfusion.models import count_parameters, get_model_info, measure_flops
from ivfusion.models import didfuse
from ivfusion.models.didfuse import (
    DIDFuse,
    FUSION_RULES,
    convert_official_state_dict,
    fuse_average,
    fuse_features,
    fuse_l1_norm,
    fuse_sum,
    l1_norm_weights,
)
from .conftest import reference_file

STEMS = ["FLIR_04484", "FLIR_04512", "FLIR_04593"]
RULES = ["sum", "average", "l1_norm"]


@pytest.fixture(scope="module")
def official_state() -> dict:
    from safetensors.torch import load_file

    return load_file(reference_file("didfuse_official.safetensors"))


@pytest.fixture(scope="module")
def official_model(official_state) -> DIDFuse:
    model = ivfusion.create_model("didfuse")
    model.load_state_dict(convert_official_state_dict(official_state), strict=True)
    return model


def random_model(seed: int = 0) -> DIDFuse:
    torch.manual_seed(seed)
    return ivfusion.create_model("didfuse")


# ------------------------------------------------------------------------------------------------
# Golden outputs of the official code


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("rule", RULES)
def test_golden_official_outputs(official_model, rule, stem):
    g = np.load(reference_file("golden", f"didfuse_{rule}_{stem}.npz"))
    ir = torch.from_numpy(g["ir"])[None, None]
    vis = torch.from_numpy(g["vis"])[None, None]
    with torch.inference_mode():
        out = official_model(ir, vis, rule=rule)[0, 0].numpy()
    assert out.shape == g["fused"].shape
    diff = np.abs(out.astype(np.float64) - g["fused"])
    assert diff.max() <= 1e-5, diff.max()
    assert diff.mean() <= 1e-6, diff.mean()


def test_official_weights_convert_and_load_strict(official_state, official_model):
    converted = convert_official_state_dict(official_state)
    assert len(converted) == len(official_state) == 53
    assert set(converted) == set(official_model.state_dict())
    assert converted["encoder.conv1.conv.weight"].shape == (64, 1, 3, 3)
    assert converted["decoder.conv7.conv.weight"].shape == (1, 128, 3, 3)
    for name, module in official_model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert int(module.num_batches_tracked) == 1920, name
    assert torch.equal(official_model.encoder.conv2.act.weight, official_state["encoder.cov2.cov2.2.weight"])
    assert torch.equal(official_model.decoder.conv7.bn.running_var, official_state["decoder.cov7.cov7.2.running_var"])


def test_converter_accepts_bare_keys_of_the_two_official_dicts(official_state):
    bare = {k.split(".", 1)[1]: v for k, v in official_state.items()}
    assert convert_official_state_dict(bare).keys() == convert_official_state_dict(official_state).keys()


def test_converter_rejects_foreign_keys():
    w = torch.zeros(1)
    with pytest.raises(ValueError, match="state_dict"):
        convert_official_state_dict({"encoder.conv1.conv.weight": w})
    with pytest.raises(ValueError, match="state_dict"):
        convert_official_state_dict({"decoder.cov1.cov1.1.weight": w})  # cov1 belongs to the encoder
    with pytest.raises(ValueError, match="state_dict"):
        convert_official_state_dict({"encoder.cov1.cov1.0.weight": w})  # index 0 of cov1 is the pad
    with pytest.raises(ValueError, match="state_dict"):
        convert_official_state_dict({"encoder.cov2.cov2.0.weight": w, "cov2.cov2.0.weight": w})


def test_converted_random_state_round_trip():
    # Build an official-layout dict from a random model by the inverse mapping of MODELS.md 2.8.
    src = random_model(1).state_dict()
    official = {}
    for key, value in src.items():
        part, conv, layer, param = key.split(".")
        n = int(conv[4:])
        offset = 1 if n in (1, 7) else 0
        idx = {"conv": 0, "bn": 1, "act": 2}[layer] + offset
        official[f"{part}.cov{n}.cov{n}.{idx}.{param}"] = value
    dst = random_model(2)
    dst.load_state_dict(convert_official_state_dict(official), strict=True)
    for key, value in dst.state_dict().items():
        assert torch.equal(value, src[key]), key


# ------------------------------------------------------------------------------------------------
# Size, structure, cost


def test_parameter_counts():
    model = random_model()
    assert count_parameters(model) == 260_935
    assert count_parameters(model.encoder) == 111_938
    assert count_parameters(model.decoder) == 148_997
    running = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert running == 770
    assert sum(1 for n, _ in model.named_buffers() if n.endswith("num_batches_tracked")) == 7


def test_flops_at_640x480_match_the_layer_table():
    # MODELS.md 2.6: 370,944 MACs per pixel, 2 FLOPs per MAC.
    assert measure_flops("didfuse", 480, 640) == pytest.approx(2 * 370_944 * 480 * 640 / 1e9, rel=1e-12)
    assert measure_flops("didfuse", 100, 30, rule="l1_norm") == pytest.approx(2 * 370_944 * 3000 / 1e9, rel=1e-12)


def test_registry_entry():
    info = get_model_info("didfuse")
    assert info.cls is DIDFuse and info.size_multiple == 1
    assert info.forward_options == {"rule": "sum"}
    assert "IJCAI 2020" in info.paper


def test_encoder_decoder_shapes_and_ranges():
    model = random_model()
    x = torch.rand(2, 1, 19, 23)
    with torch.inference_mode():
        x_hat, (f1, f2, b, d) = model.reconstruct(x)
    for t in (f1, f2, b, d):
        assert t.shape == (2, 64, 19, 23)
    assert b.abs().max() < 1 and d.abs().max() < 1  # tanh heads
    assert x_hat.shape == x.shape and 0 < x_hat.min() and x_hat.max() < 1
    with torch.inference_mode():
        assert torch.equal(model.decode(f1, f2, b, d), x_hat)
        assert all(torch.equal(a, c) for a, c in zip(model.encode(x), (f1, f2, b, d)))


def test_outer_layers_use_reflection_padding():
    # With reflection padding a constant image gives spatially constant conv1 features; zero padding
    # would change the border. conv2 (zero padding) does change it.
    model = random_model()
    x = torch.full((1, 1, 9, 11), 0.7)
    with torch.inference_mode():
        f1 = model.encoder.conv1(x)
        f2 = model.encoder.conv2(f1)
    assert torch.allclose(f1, f1[..., 4:5, 5:6].expand_as(f1), atol=1e-6)
    assert not torch.allclose(f2[..., 0, 0], f2[..., 4, 5], atol=1e-4)


@pytest.mark.parametrize("rule,extent", [("sum", 13), ("average", 13), ("l1_norm", 15)])
def test_receptive_field(rule, extent):
    # Gradient of one output pixel w.r.t. each input is non-zero on exactly an extent x extent window.
    model = random_model().double()
    ir = torch.rand(1, 1, 31, 31, dtype=torch.float64, requires_grad=True)
    vis = torch.rand(1, 1, 31, 31, dtype=torch.float64, requires_grad=True)
    model(ir, vis, rule=rule)[0, 0, 15, 15].backward()
    r = extent // 2
    for grad in (ir.grad[0, 0], vis.grad[0, 0]):
        support = grad != 0
        assert support[15 - r : 16 + r, 15 - r : 16 + r].all()
        assert support.sum() == extent * extent


@pytest.mark.parametrize("rule", RULES)
def test_registered_halo_makes_tiles_exact_for_every_rule(rule):
    model = random_model()
    halo = get_model_info("didfuse").tiling_halo
    ir, vis = torch.rand(1, 1, 36, 40), torch.rand(1, 1, 36, 40)
    y0, y1, x0, x1 = 12, 24, 10, 27
    with torch.inference_mode():
        full = model(ir, vis, rule=rule)
        sl = (..., slice(y0 - halo, y1 + halo), slice(x0 - halo, x1 + halo))
        crop = model(ir[sl], vis[sl], rule=rule)
    torch.testing.assert_close(crop[..., halo:-halo, halo:-halo], full[..., y0:y1, x0:x1], atol=2e-6, rtol=0)


def test_small_inputs():
    model = random_model()
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2)).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="H, W >= 2"):
        model(torch.rand(1, 1, 1, 5), torch.rand(1, 1, 1, 5))


# ------------------------------------------------------------------------------------------------
# Fusion rules


def _features(seed: int, shape=(2, 5, 6, 7)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_sum_and_average_closed_forms():
    a, b = _features(0)
    assert torch.equal(fuse_sum(a, b), a + b)
    assert torch.equal(fuse_features(a, b, "sum"), a + b)
    torch.testing.assert_close(fuse_average(a, b), (a + b) / 2)
    torch.testing.assert_close(fuse_features(a, b, "average", gamma=0.3), 0.3 * a + 0.7 * b)


def _activity_by_loops(x: torch.Tensor) -> torch.Tensor:
    # (1/9) sum over the 3x3 window (outside the image counts as 0) of sum_c |x|.
    n, _, h, w = x.shape
    l1 = x.abs().sum(dim=1)
    out = torch.zeros(n, 1, h, w, dtype=x.dtype)
    for i in range(h):
        for j in range(w):
            total = 0.0
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        total = total + l1[:, i + di, j + dj]
            out[:, 0, i, j] = total / 9
    return out


def test_l1_norm_rule_matches_explicit_loops():
    a, b = _features(1)
    act_a, act_b = _activity_by_loops(a), _activity_by_loops(b)
    w_a_ref = act_a / (act_a + act_b + 1e-8)
    w_b_ref = act_b / (act_a + act_b + 1e-8)
    w_a, w_b = l1_norm_weights(a, b)
    torch.testing.assert_close(w_a, w_a_ref)
    torch.testing.assert_close(w_b, w_b_ref)
    torch.testing.assert_close(w_a + w_b, torch.ones_like(w_a))
    torch.testing.assert_close(fuse_l1_norm(a, b), w_a_ref * a + w_b_ref * b)
    torch.testing.assert_close(fuse_features(a, b, "l1_norm"), w_a_ref * a + w_b_ref * b)


def test_l1_norm_rule_handles_zero_activity():
    z = torch.zeros(1, 4, 5, 5)
    assert torch.equal(fuse_l1_norm(z, z), z)  # eps avoids 0/0
    a, _ = _features(2, (1, 4, 5, 5))
    torch.testing.assert_close(fuse_l1_norm(a.float(), z), a.float(), atol=1e-6, rtol=1e-6)


def test_unknown_rule_lists_the_rules():
    a, b = _features(3)
    with pytest.raises(ValueError, match="average.*l1_norm.*sum"):
        fuse_features(a, b, "max")
    with pytest.raises(ValueError, match="l1_norm"):
        random_model()(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), rule="softmax")
    assert sorted(FUSION_RULES) == ["average", "l1_norm", "sum"]


@pytest.mark.parametrize("rule", RULES)
def test_forward_fuses_all_four_feature_pairs(rule):
    model = random_model()
    ir, vis = torch.rand(1, 1, 12, 14), torch.rand(1, 1, 12, 14)
    with torch.inference_mode():
        feats_ir, feats_vis = model.encode(ir), model.encode(vis)
        expected = model.decode(*[didfuse.fuse_features(a, b, rule) for a, b in zip(feats_ir, feats_vis)])
        torch.testing.assert_close(model(ir, vis, rule=rule), expected, rtol=0, atol=1e-6)
    if rule == "sum":
        with torch.inference_mode():
            torch.testing.assert_close(model(ir, vis), expected, rtol=0, atol=1e-6)  # the default rule


def _bn_with_stats(layer: didfuse.ConvBNAct, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    c = layer.bn.num_features
    layer.bn.running_mean.copy_(torch.randn(c, generator=g, dtype=layer.bn.running_mean.dtype))
    layer.bn.running_var.copy_(torch.rand(c, generator=g, dtype=layer.bn.running_var.dtype) + 0.5)
    with torch.no_grad():
        layer.bn.weight.copy_(torch.randn(c, generator=g))
        layer.bn.bias.copy_(torch.randn(c, generator=g))


@pytest.mark.parametrize("reflect", [False, True])
def test_inference_folds_batchnorm_into_the_convolution(reflect):
    layer = didfuse.ConvBNAct(5, 7, "prelu", reflect=reflect).double().eval()
    _bn_with_stats(layer, 3)
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect") if reflect else x
    expected = layer.act(layer.bn(layer.conv(padded)))  # the unfolded route
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    assert layer.uses_running_stats()
    layer.train()  # training normalises with batch statistics: nothing is folded
    assert not layer.uses_running_stats()
    torch.testing.assert_close(layer(x), layer.act(layer.bn(layer.conv(padded))))


def test_joint_encoder_equals_the_four_separate_heads():
    torch.manual_seed(1)
    enc = didfuse.DIDFuseEncoder(8).double().eval()
    for i, layer in enumerate((enc.conv1, enc.conv2, enc.conv3, enc.conv4)):
        _bn_with_stats(layer, 10 + i)
    x = torch.rand(3, 1, 10, 12, dtype=torch.float64)
    f1 = enc.conv1.act(enc.conv1.bn(enc.conv1.conv(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))))
    f2 = enc.conv2.act(enc.conv2.bn(enc.conv2.conv(f1)))
    b = torch.tanh(enc.conv3.bn(enc.conv3.conv(f2)))
    d = torch.tanh(enc.conv4.bn(enc.conv4.conv(f2)))
    for got, want in zip(enc(x), (f1, f2, b, d)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_inference_path_matches_official_model_within_1e_5(official_model):
    # The folded, batched, channels-last path against the plain per-image route with unfolded BN.
    model = official_model.eval()
    g = torch.Generator().manual_seed(5)
    ir, vis = torch.rand(1, 1, 40, 52, generator=g), torch.rand(1, 1, 40, 52, generator=g)

    def plain(x):
        enc = model.encoder
        pad = torch.nn.functional.pad
        f1 = enc.conv1.act(enc.conv1.bn(enc.conv1.conv(pad(x, (1, 1, 1, 1), mode="reflect"))))
        f2 = enc.conv2.act(enc.conv2.bn(enc.conv2.conv(f1)))
        return f1, f2, torch.tanh(enc.conv3.bn(enc.conv3.conv(f2))), torch.tanh(enc.conv4.bn(enc.conv4.conv(f2)))

    with torch.inference_mode():
        (i1, i2, ib, id_), (v1, v2, vb, vd) = plain(ir), plain(vis)
        dec = model.decoder
        x = dec.conv5.act(dec.conv5.bn(dec.conv5.conv(torch.cat([ib + vb, id_ + vd], 1))))
        x = dec.conv6.act(dec.conv6.bn(dec.conv6.conv(torch.cat([x, i2 + v2], 1))))
        x = torch.nn.functional.pad(torch.cat([x, i1 + v1], 1), (1, 1, 1, 1), mode="reflect")
        expected = torch.sigmoid(dec.conv7.bn(dec.conv7.conv(x)))
        fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
        got = fast(ir, vis)
    assert (got - expected).abs().max().item() <= 1e-5
