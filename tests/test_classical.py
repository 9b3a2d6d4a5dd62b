import pytest
import torch

from ivfusion.classical import (
    CLASSICAL_METHODS,
    fuse_guided,
    fuse_laplacian,
    guided_filter,
    laplacian_pyramid,
    reconstruct_laplacian_pyramid,
)
from ivfusion.filters import box_mean2d


def _pair(h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, h, w, generator=g), torch.rand(1, 1, h, w, generator=g)


@pytest.mark.parametrize("name", list(CLASSICAL_METHODS))
def test_fusing_an_image_with_itself_returns_it(name):
    x, _ = _pair(37, 53)
    out = CLASSICAL_METHODS[name].fn(x, x)
    assert out.shape == x.shape
    assert (out - x).abs().max() < 1e-5


def test_average_and_max_closed_forms():
    a, b = _pair()
    torch.testing.assert_close(CLASSICAL_METHODS["average"].fn(a, b), (a + b) / 2)
    torch.testing.assert_close(CLASSICAL_METHODS["max"].fn(a, b), torch.maximum(a, b))


@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (5, 9)])
def test_laplacian_pyramid_reconstructs_exactly(shape):
    x, _ = _pair(*shape)
    pyr = laplacian_pyramid(x, 5)
    assert pyr[0].shape == x.shape
    assert min(pyr[-1].shape[-2:]) >= 4 or len(pyr) == 1
    assert (reconstruct_laplacian_pyramid(pyr) - x).abs().max() < 1e-5


def test_laplacian_takes_detail_from_the_textured_source():
    # IR constant, visible textured: every detail coefficient comes from the visible image, the
    # base is the mean of the two bases, so fused - vis = (c - base(vis)) expanded back up.
    _, vis = _pair(64, 64)
    ir = torch.full_like(vis, 0.5)
    fused = fuse_laplacian(ir, vis, levels=4)
    pv = laplacian_pyramid(vis, 4)
    expected = reconstruct_laplacian_pyramid(pv[:-1] + [0.5 * (pv[-1] + 0.5)]).clamp(0, 1)
    torch.testing.assert_close(fused, expected)
    assert fuse_laplacian(ir, vis).std() > 0.8 * vis.std()  # texture survives


def test_box_mean_matches_direct_loops():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 9, 11, generator=g, dtype=torch.float64)
    r = 2
    out = box_mean2d(x, r)
    a = x[0, 0].numpy()
    for i in range(9):
        for j in range(11):
            win = a[max(i - r, 0): i + r + 1, max(j - r, 0): j + r + 1]
            assert abs(out[0, 0, i, j].item() - win.mean()) < 1e-12


def test_guided_filter_properties():
    g = torch.Generator().manual_seed(4)
    guide = torch.rand(1, 1, 40, 40, generator=g, dtype=torch.float64)
    # Filtering the guide by itself with a tiny eps keeps it (a -> 1, b -> 0).
    assert (guided_filter(guide, guide, 3, 1e-8) - guide).abs().max() < 1e-4
    # A huge eps turns it into a plain box mean of the input.
    p = torch.rand(1, 1, 40, 40, generator=g, dtype=torch.float64)
    ref = box_mean2d(box_mean2d(p, 3), 3)
    assert (guided_filter(p, guide, 3, 1e6) - ref).abs().max() < 1e-5


def test_guided_fusion_keeps_the_salient_source():
    # Visible: a sharp checkerboard in the left half; IR: a sharp one in the right half.
    h, w = 64, 64
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    board = (((yy // 2) + (xx // 2)) % 2).float()[None, None]
    vis = torch.where(xx[None, None] < 32, board, torch.full_like(board, 0.5))
    ir = torch.where(xx[None, None] >= 32, board, torch.full_like(board, 0.5))
    fused = fuse_guided(ir, vis, r1=8, r2=3)
    left_std = fused[..., 8:56, 4:24].std()
    right_std = fused[..., 8:56, 40:60].std()
    assert left_std > 0.35 and right_std > 0.35  # detail from the right source on each side
    assert fused.min() >= 0 and fused.max() <= 1


def test_methods_run_batched():
    a, b = _pair()
    a2, b2 = torch.cat([a, b]), torch.cat([b, a])
    for m in CLASSICAL_METHODS.values():
        both = m.fn(a2, b2)
        torch.testing.assert_close(both[:1], m.fn(a, b), atol=1e-6, rtol=0)
