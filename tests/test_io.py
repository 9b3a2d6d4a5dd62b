import os

import numpy as np
import pytest
import torch
from PIL import Image

from ivfusion import io as ivio


def test_read_grey_rgb_rgba_palette(tmp_path, rng):
    grey = rng.integers(0, 256, (12, 9), dtype=np.uint8)
    rgb = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.dstack([rgb, np.full((12, 9), 7, np.uint8)])).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(ivio.read_image(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(ivio.read_image(tmp_path / "c.png"), rgb)
    np.testing.assert_array_equal(ivio.read_image(tmp_path / "a.png"), rgb)  # alpha dropped
    assert ivio.read_image(tmp_path / "p.png").shape == (12, 9, 3)


def test_read_16bit_png_and_float_tiff(tmp_path, rng):
    thermal = rng.integers(7000, 9000, (10, 14), dtype=np.uint16)
    ivio.write_image(tmp_path / "t.png", thermal)
    back = ivio.read_image(tmp_path / "t.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, thermal)
    f = rng.random((5, 6)).astype(np.float32)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(ivio.read_image(tmp_path / "f.tif"), f)


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ir: no such file"):
        ivio.read_image(tmp_path / "missing.png", name="ir")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="vis: cannot read .*bad.png.* as an image"):
        ivio.read_image(bad, name="vis")


@pytest.mark.parametrize(
    "make, shape, kind",
    [
        (lambda: np.zeros((5, 7), np.uint8), (1, 5, 7), "uint8"),
        (lambda: np.zeros((5, 7, 1), np.uint8), (1, 5, 7), "uint8"),
        (lambda: np.zeros((5, 7, 3), np.uint8), (3, 5, 7), "uint8"),
        (lambda: np.zeros((5, 7), np.uint16), (1, 5, 7), "uint16"),
        (lambda: np.zeros((5, 7, 3), np.float64), (3, 5, 7), "float"),
        (lambda: torch.zeros(5, 7), (1, 5, 7), "float"),
        (lambda: torch.zeros(3, 5, 7, dtype=torch.uint8), (3, 5, 7), "uint8"),
        (lambda: torch.zeros(1, 1, 5, 7), (1, 5, 7), "float"),
        (lambda: Image.new("L", (7, 5)), (1, 5, 7), "uint8"),
        (lambda: Image.new("RGB", (7, 5)), (3, 5, 7), "uint8"),
    ],
)
def test_to_chw_tensor_kinds(make, shape, kind):
    t, k = ivio.to_chw_tensor(make())
    assert tuple(t.shape) == shape and k == kind


def test_to_chw_tensor_keeps_values_and_layout(rng):
    arr = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    t, _ = ivio.to_chw_tensor(arr)
    np.testing.assert_array_equal(t.permute(1, 2, 0).numpy(), arr)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.zeros((5, 7, 4), np.uint8), ValueError, r"ir: expected an array of shape HxW, HxWx1 or HxWx3, got \(5, 7, 4\)"),
        (np.zeros((5,), np.uint8), ValueError, "HxW"),
        (np.zeros((5, 7), np.int64), TypeError, "ir: unsupported array dtype int64"),
        (np.zeros((5, 7), bool), TypeError, "unsupported array dtype bool"),
        (torch.zeros(2, 1, 5, 7), ValueError, r"ir: expected a tensor of shape .*got \(2, 1, 5, 7\)"),
        (torch.zeros(5, 7, dtype=torch.int64), TypeError, "unsupported tensor dtype"),
        ([[0, 1], [2, 3]], TypeError, "ir: expected a path, PIL image, numpy array or torch tensor, got list"),
    ],
)
def test_to_chw_tensor_errors(bad, exc, match):
    with pytest.raises(exc, match=match):
        ivio.to_chw_tensor(bad, name="ir")


def test_to_unit_range_rules():
    u8 = torch.tensor([[[0, 51, 255]]], dtype=torch.uint8)
    assert torch.allclose(ivio.to_unit_range(u8, "uint8"), torch.tensor([[[0.0, 0.2, 1.0]]]))
    u16 = torch.tensor([[[1000, 2000, 3000]]], dtype=torch.int32)
    assert torch.allclose(ivio.to_unit_range(u16, "uint16"), u16.float() / 65535)
    assert torch.allclose(ivio.to_unit_range(u16, "uint16", value_range="auto"), torch.tensor([[[0.0, 0.5, 1.0]]]))
    assert torch.allclose(
        ivio.to_unit_range(u16, "uint16", value_range=(1500, 2500)), torch.tensor([[[0.0, 0.5, 1.0]]])
    )
    const = torch.full((1, 2, 2), 7, dtype=torch.int32)
    assert ivio.to_unit_range(const, "uint16", value_range="auto").eq(0).all()


@pytest.mark.parametrize(
    "value, vrange, match",
    [
        (torch.tensor([[[1.5]]]), None, r"vis: float images must lie in \[0, 1\], got values in \[1.5, 1.5\]"),
        (torch.tensor([[[-0.1]]]), None, r"must lie in \[0, 1\]"),
        (torch.tensor([[[float("nan")]]]), None, "NaN or infinite"),
        (torch.tensor([[[0.5]]]), (1.0, 1.0), "lo < hi"),
        (torch.tensor([[[0.5]]]), "minmax", "'auto'"),
        (torch.tensor([[[0.5]]]), (1.0,), r"\(lo, hi\)"),
    ],
)
def test_to_unit_range_errors(value, vrange, match):
    with pytest.raises(ValueError, match=match):
        ivio.to_unit_range(value, "float", name="vis", value_range=vrange)


def test_is_grey():
    g = torch.rand(1, 4, 4)
    assert ivio.is_grey(g)
    assert ivio.is_grey(g.expand(3, -1, -1))
    c = g.repeat(3, 1, 1)
    c[2, 0, 0] += 0.01
    assert not ivio.is_grey(c)


def test_from_unit_range_dtypes():
    x = torch.tensor([[[0.0, 0.5, 1.0]]])
    np.testing.assert_array_equal(ivio.from_unit_range(x, "uint8"), np.array([[0, 128, 255]], np.uint8))
    np.testing.assert_array_equal(ivio.from_unit_range(x, "uint16"), np.array([[0, 32768, 65535]], np.uint16))
    assert ivio.from_unit_range(x.expand(3, -1, -1), "float").shape == (1, 3, 3)


def test_write_image_is_atomic_on_failure(tmp_path, monkeypatch, rng):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous content")

    def failing_save(self, fp, format=None, **kw):
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        ivio.write_image(target, rng.integers(0, 256, (4, 4), dtype=np.uint8))
    assert target.read_bytes() == b"previous content"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary left


def test_write_image_modes_and_permissions(tmp_path, rng):
    img = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    path = ivio.write_image(tmp_path / "sub" / "c.png", img)
    np.testing.assert_array_equal(ivio.read_image(path), img)
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
    f = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(ivio.read_image(ivio.write_image(tmp_path / "f.png", f)), [[0, 128, 255]])
    with pytest.raises(ValueError, match="unknown image extension"):
        ivio.write_image(tmp_path / "x.nope", img)
