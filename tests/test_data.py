"""ivfusion.data: the bundled sample pairs, and ivfusion.save_image."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import ivfusion
from ivfusion import data

from .conftest import SHARED, require


def test_samples_are_listed_with_their_terms():
    assert data.list_samples() == ["day", "night", "mri_pet"]
    for name in data.list_samples():
        info = data.sample_info(name)
        assert info.ir.is_file() and info.vis.is_file()
        assert info.ir.stat().st_size + info.vis.stat().st_size < 300_000  # small enough to bundle
        assert info.license and info.source
    attribution = (data.SAMPLES_DIR / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for needle in ("PIAFusion", "MIT", "Whole Brain Atlas", "00002D", "00038N"):
        assert needle in attribution


@pytest.mark.parametrize("name, ir_shape, vis_shape", [
    ("day", (480, 640), (480, 640, 3)),
    ("night", (480, 640), (480, 640, 3)),
    ("mri_pet", (256, 256, 3), (256, 256)),
])
def test_sample_pair_shapes_and_paths(name, ir_shape, vis_shape):
    ir, vis = data.sample_pair(name)
    assert ir.shape == ir_shape and vis.shape == vis_shape
    assert ir.dtype == vis.dtype == np.uint8
    ir_path, vis_path = data.sample_pair(name, as_path=True)
    assert np.array_equal(np.asarray(Image.open(ir_path)), ir)
    fused = ivfusion.fuse(ir_path, vis_path, method="average")
    assert fused.shape[:2] == vis_shape[:2]


@pytest.mark.parametrize("name, stem", [("day", "00002D"), ("night", "00038N")])
def test_msrs_samples_match_the_dataset(name, stem):
    folder = require(SHARED / "data" / "ivif" / "train" / "msrs")
    ir, vis = data.sample_pair(name)
    assert np.array_equal(ir, np.asarray(Image.open(folder / "ir" / f"{stem}.png")))  # lossless
    original = np.asarray(Image.open(folder / "vi" / f"{stem}.png").convert("RGB")).astype(float)
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((vis.astype(float) - original) ** 2))
    assert psnr > 38.0  # JPEG quality 95


def test_unknown_sample_names_the_choices():
    with pytest.raises(ValueError, match=r"name: unknown sample 'dusk'; available: day, night, mri_pet"):
        data.sample_pair("dusk")


# ------------------------------------------------------------------------------ save_image


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_save_image_round_trips_each_depth(tmp_path, rng, dtype):
    if dtype == np.float32:
        img = rng.random((12, 17)).astype(np.float32)
        expected = np.round(img.astype(np.float64) * 255).astype(np.uint8)
    else:
        img = rng.integers(0, np.iinfo(dtype).max + 1, (12, 17), dtype=dtype)
        expected = img
    path = ivfusion.save_image(tmp_path / "sub" / "out.png", img)
    back = np.asarray(Image.open(path))
    assert back.dtype == expected.dtype and np.array_equal(back, expected)
    assert not [p for p in path.parent.iterdir() if p.name != "out.png"]  # no temporary left


def test_save_image_converts_bits(tmp_path, rng):
    img = rng.random((9, 11))
    back = np.asarray(Image.open(ivfusion.save_image(tmp_path / "a.tif", img, bits=16)))
    assert back.dtype == np.uint16 and np.array_equal(back, np.round(img * 65535).astype(np.uint16))
    u16 = np.array([[0, 257, 65535]], np.uint16)
    assert np.array_equal(np.asarray(Image.open(ivfusion.save_image(tmp_path / "b.png", u16, bits=8))), [[0, 1, 255]])
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(ivfusion.save_image(tmp_path / "c.png", rgb))), rgb)


def test_save_image_errors(tmp_path):
    good = np.zeros((4, 4), np.uint8)
    cases = [
        (lambda: ivfusion.save_image(tmp_path / "x.png", [[0]]), TypeError, "image: expected a numpy array"),
        (lambda: ivfusion.save_image(tmp_path / "x.png", np.zeros((4, 4, 2), np.uint8)), ValueError, "HxWx3"),
        (lambda: ivfusion.save_image(tmp_path / "x.png", np.zeros((0, 4), np.uint8)), ValueError, "non-empty"),
        (lambda: ivfusion.save_image(tmp_path / "x.png", np.full((2, 2), 1.5)), ValueError, r"\[0, 1\]"),
        (lambda: ivfusion.save_image(tmp_path / "x.png", np.full((2, 2), np.nan)), ValueError, "finite"),
        (lambda: ivfusion.save_image(tmp_path / "x.png", np.zeros((2, 2), np.int32)), TypeError, "int32"),
        (lambda: ivfusion.save_image(tmp_path / "x.png", good, bits=12), ValueError, "bits: expected None, 8 or 16"),
        (lambda: ivfusion.save_image(tmp_path / "x.jpg", good, bits=16), ValueError, "png or .tif"),
        (lambda: ivfusion.save_image(tmp_path / "x.png", np.zeros((2, 2, 3), np.uint16)), ValueError, "grey"),
        (lambda: ivfusion.save_image(tmp_path / "x.xyz", good), ValueError, "unknown image extension"),
    ]
    for call, exc, message in cases:
        with pytest.raises(exc, match=message):
            call()
    assert not list(tmp_path.iterdir())
