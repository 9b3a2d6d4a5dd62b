"""Contract tests run over every registered network (``ivfusion.list_models()``), random weights."""
from __future__ import annotations

import copy
from typing import Dict, Tuple

import pytest
import torch

import ivfusion
from ivfusion.models import FusionNet, count_parameters, get_model_info, measure_flops

MODELS = ivfusion.list_models()

_CACHE: Dict[str, FusionNet] = {}


def make_model(name: str) -> FusionNet:
    """Seeded random-init model in eval mode (built once per name; tests must not modify it)."""
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = ivfusion.create_model(name)
    return _CACHE[name]


def random_pair(n: int, h: int, w: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, h, w, generator=g), torch.rand(n, 1, h, w, generator=g)


def test_registry_lists_the_papers_networks():
    assert {"didfuse", "fiscnet"} <= set(MODELS)
    assert MODELS == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_metadata(name):
    info = get_model_info(name)
    assert info.name == name
    assert issubclass(info.cls, FusionNet)
    assert info.paper.strip() and info.description.strip()
    assert isinstance(info.size_multiple, int) and info.size_multiple >= 1
    assert info.cls.size_multiple == info.size_multiple
    assert info.tiling_halo is None or (isinstance(info.tiling_halo, int) and info.tiling_halo >= 0)
    assert isinstance(info.forward_options, dict)
    model = make_model(name)
    assert not model.training
    # Every declared unused prefix must name real parameters.
    names = [n for n, _ in model.named_parameters()]
    for prefix in model.unused_parameter_prefixes:
        assert any(n.startswith(prefix) for n in names), prefix


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(37, 53), pytest.param((481, 311), marks=pytest.mark.slow)])
def test_odd_sizes_keep_shape_and_range(name, size):
    model = make_model(name)
    ir, vis = random_pair(1, *size, seed=1)
    with torch.inference_mode():
        out = model(ir, vis)
    assert out.shape == (1, 1, *size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", MODELS)
def test_batch_matches_single_images(name):
    model = make_model(name)
    ir, vis = random_pair(2, 29, 42, seed=2)
    with torch.inference_mode():
        batched = model(ir, vis)
        singles = torch.cat([model(ir[k : k + 1], vis[k : k + 1]) for k in range(2)])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic(name):
    model = make_model(name)
    ir, vis = random_pair(1, 33, 40, seed=3)
    with torch.inference_mode():
        a = model(ir, vis)
        b = model(ir, vis)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", MODELS)
def test_output_depends_on_both_inputs(name):
    model = make_model(name)
    ir, vis = random_pair(1, 32, 32, seed=4)
    with torch.inference_mode():
        ref = model(ir, vis)
        no_vis = model(ir, torch.zeros_like(vis))
        no_ir = model(torch.zeros_like(ir), vis)
    assert (ref - no_vis).abs().max() > 1e-4
    assert (ref - no_ir).abs().max() > 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_train_mode_backward_reaches_every_used_parameter(name):
    torch.manual_seed(0)
    model = get_model_info(name).cls(**get_model_info(name).default_config).train()
    ir, vis = random_pair(2, 24, 27, seed=5)
    out = model(ir, vis)
    target = torch.rand(out.shape, generator=torch.Generator().manual_seed(6))
    ((out - target) ** 2).mean().backward()
    unused = model.unused_parameter_prefixes
    for pname, p in model.named_parameters():
        if pname.startswith(tuple(unused)) and unused:
            assert p.grad is None, f"{pname} is declared unused but received a gradient"
        else:
            assert p.grad is not None, f"{pname} received no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", MODELS)
def test_unaligned_input_is_padded_then_cropped(name, monkeypatch):
    model = make_model(name)
    m = model.size_multiple
    h, w = 2 * m + 3 if m > 1 else 23, 3 * m + 1 if m > 1 else 30
    ir, vis = random_pair(1, h, w, seed=7)
    seen = []
    original = type(model).fuse_aligned

    def spy(self, ir_, vis_, **kw):
        seen.append(tuple(ir_.shape[-2:]))
        out = original(self, ir_, vis_, **kw)
        seen.append(out)
        return out

    monkeypatch.setattr(type(model), "fuse_aligned", spy)
    with torch.inference_mode():
        out = model(ir, vis)
    (ah, aw), aligned_out = seen[0], seen[1]
    assert ah % m == 0 and aw % m == 0 and h <= ah < h + m and w <= aw < w + m
    assert out.shape == (1, 1, h, w)
    assert torch.equal(out, aligned_out[..., :h, :w])


@pytest.mark.parametrize("name", MODELS)
def test_rejects_bad_shapes(name):
    model = make_model(name)
    with pytest.raises(ValueError):
        model(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError):
        model(torch.rand(1, 16, 16), torch.rand(1, 16, 16))


@pytest.mark.parametrize("name", [n for n in MODELS if get_model_info(n).tiling_halo is not None])
def test_tiling_halo_is_exact(name):
    # A crop with `halo` pixels of context on every side reproduces the whole-image output inside it.
    model = make_model(name)
    halo = get_model_info(name).tiling_halo
    ir, vis = random_pair(1, 40, 44, seed=8)
    y0, y1, x0, x1 = 14, 26, 15, 30
    with torch.inference_mode():
        full = model(ir, vis)
        window = (..., slice(y0 - halo, y1 + halo), slice(x0 - halo, x1 + halo))
        crop = model(ir[window], vis[window])
    torch.testing.assert_close(crop[..., halo:-halo, halo:-halo], full[..., y0:y1, x0:x1], atol=2e-6, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_count_parameters_and_flops(name):
    model = make_model(name)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    frozen = copy.deepcopy(model)
    first = next(frozen.parameters())
    first.requires_grad_(False)
    assert count_parameters(frozen) == count_parameters(model) - first.numel()
    assert count_parameters(frozen, trainable_only=False) == count_parameters(model)
    g_name = measure_flops(name, 32, 48)
    assert g_name > 0
    assert measure_flops(model, 32, 48) == pytest.approx(g_name, rel=1e-12)
    # The model passed in is left untouched (still eval mode, parameters on their device).
    assert not model.training and next(model.parameters()).device.type == "cpu"


def test_flops_and_parameters_bad_input():
    with pytest.raises(TypeError):
        count_parameters("didfuse")
    with pytest.raises(TypeError):
        measure_flops(3.0)
    with pytest.raises(ValueError):
        measure_flops("no-such-model")
    with pytest.raises(ValueError):
        measure_flops("didfuse", height=0)


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_gives_the_same_output(name):
    # fuse() runs every network channels-last (oneDNN's fast layout): same numbers within 1e-5.
    model = make_model(name)
    ir, vis = random_pair(2, 40, 56, seed=4)
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = model(ir, vis)
        got = fast(ir.contiguous(memory_format=torch.channels_last), vis.contiguous(memory_format=torch.channels_last))
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5
