import pytest
import torch
from torch import nn

from ivfusion.classical import fuse_average
from ivfusion.tiling import auto_tile_size, blend_window, pad_to_multiple, tile_starts, tiled_apply


@pytest.mark.parametrize("length, tile, overlap", [(100, 32, 8), (64, 32, 16), (33, 32, 4), (10, 32, 4), (500, 96, 32)])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] + min(tile, length) == length
    for a, b in zip(starts, starts[1:]):
        assert tile - (b - a) >= overlap  # neighbours share at least `overlap` pixels


def test_blend_window_partition_of_unity():
    # Two tiles overlapping by 12 px: their ramps sum to one across the overlap.
    left = blend_window((1, 40), (0, 0, 0, 12))[0]
    right = blend_window((1, 40), (0, 0, 12, 0))[0]
    torch.testing.assert_close(left[-12:] + right[:12], torch.ones(12))
    assert left.min() > 0 and right.min() > 0
    assert torch.all(left[:-12] == 1)


def test_pixelwise_method_tiled_equals_untiled():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 101, 130, generator=g), torch.rand(2, 1, 101, 130, generator=g)
    tiled = tiled_apply(fuse_average, a, b, tile_size=32, overlap=8)
    assert (tiled - fuse_average(a, b)).abs().max() <= 1e-6


class _LocalCNN(nn.Module):
    """Four 3x3 convolutions: a 9x9 receptive field."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, a, b):
        return self.body(torch.cat([a, b], 1))


def test_small_cnn_tiled_close_to_untiled():
    net = _LocalCNN().eval()
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 1, 150, 170, generator=g), torch.rand(1, 1, 150, 170, generator=g)
    with torch.no_grad():
        full = net(a, b)
        tiled = tiled_apply(net, a, b, tile_size=64, overlap=16)
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max() < 1e-3


def test_tiles_are_padded_to_the_size_multiple():
    seen = []

    def fn(a, b):
        seen.append(tuple(a.shape[-2:]))
        assert a.shape[-2] % 8 == 0 and a.shape[-1] % 8 == 0
        return a + b

    a = torch.rand(1, 1, 45, 77)
    out = tiled_apply(fn, a, a, tile_size=36, overlap=8, size_multiple=8)  # tile rounds down to 32
    assert out.shape == a.shape
    assert all(s == (32, 32) for s in seen)
    torch.testing.assert_close(out, 2 * a)


def test_pad_to_multiple_reflect_and_replicate():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    y, size = pad_to_multiple(x, 8)
    assert size == (3, 4) and y.shape[-2:] == (8, 8)  # pad >= size: replicate
    torch.testing.assert_close(y[..., :3, :4], x)
    z, _ = pad_to_multiple(torch.arange(30.0).reshape(1, 1, 5, 6), 4)  # pad 3 rows, 2 cols: reflect
    assert z.shape[-2:] == (8, 8)
    torch.testing.assert_close(z[0, 0, 5, :6], z[0, 0, 3, :6])  # reflection about the last row


def test_tiled_apply_errors():
    a = torch.rand(1, 1, 20, 20)
    with pytest.raises(ValueError, match="must exceed tile_overlap"):
        tiled_apply(fuse_average, a, a, tile_size=16, overlap=16)
    with pytest.raises(ValueError, match="share batch size and spatial size"):
        tiled_apply(fuse_average, a, torch.rand(1, 1, 20, 21), tile_size=16, overlap=4)


def test_auto_tile_size():
    # 1 GiB free, 1 KiB per pixel, 60 % usable -> sqrt(0.6 * 2**20) = 793.6 -> multiple of 8: 792
    assert auto_tile_size(1024, free_bytes=2**30, size_multiple=8) == 792
    assert auto_tile_size(1e9, free_bytes=2**20, size_multiple=8) == 256  # floor at the minimum
