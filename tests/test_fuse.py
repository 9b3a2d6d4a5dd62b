"""End-to-end tests of ivfusion.fuse and fuse_dir with the classical methods."""
import numpy as np
import pytest
import torch
from PIL import Image

import ivfusion
from ivfusion.color import rgb_to_ycbcr, ycbcr_to_rgb
from ivfusion.io import read_image, write_image

from .conftest import smooth_image


@pytest.fixture
def grey_pair(rng):
    return smooth_image(rng, 40, 56), smooth_image(rng, 40, 56)


@pytest.fixture
def colour_vis(rng):
    return smooth_image(rng, 40, 56, channels=3)


def _expected_average_grey(ir, vis):
    return np.round((ir.astype(np.float64) + vis.astype(np.float64)) / 2).astype(np.uint8)


def test_grey_pair_uint8(grey_pair):
    ir, vis = grey_pair
    out = ivfusion.fuse(ir, vis, method="average")
    assert out.dtype == np.uint8 and out.shape == ir.shape
    assert np.abs(out.astype(int) - _expected_average_grey(ir, vis)).max() <= 1


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a,
        lambda a: a[..., None],
        lambda a: Image.fromarray(a),
        lambda a: torch.from_numpy(a),
        lambda a: torch.from_numpy(a)[None],
        lambda a: torch.from_numpy(a)[None, None],
        lambda a: a.astype(np.float32) / 255,
        lambda a: torch.from_numpy(a).double() / 255,
        lambda a: np.repeat(a[..., None], 3, axis=2),  # infrared saved as 3-channel grey
    ],
    ids=["hw", "hw1", "pil", "tensor_hw", "tensor_chw", "tensor_1chw", "float32", "tensor_float64", "ir_rgb_grey"],
)
def test_every_infrared_input_kind_gives_the_same_result(grey_pair, convert):
    ir, vis = grey_pair
    ref = ivfusion.fuse(ir, vis, method="max")
    out = ivfusion.fuse(convert(ir), vis, method="max")
    np.testing.assert_array_equal(out, ref)


def test_paths_png_and_jpeg(tmp_path, grey_pair, colour_vis):
    ir, _ = grey_pair
    write_image(tmp_path / "ir.png", ir)
    write_image(tmp_path / "vis.jpg", colour_vis)
    out = ivfusion.fuse(str(tmp_path / "ir.png"), tmp_path / "vis.jpg", method="average")
    expected = ivfusion.fuse(ir, read_image(tmp_path / "vis.jpg"), method="average")
    assert out.shape == colour_vis.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_colour_visible_keeps_its_chroma(grey_pair, colour_vis):
    ir, _ = grey_pair
    out = ivfusion.fuse(ir, colour_vis, method="average")
    assert out.shape == colour_vis.shape and out.dtype == np.uint8
    # Independent route: the fused luma with the visible chroma, back to RGB, clipped to the gamut.
    vis_ycc = rgb_to_ycbcr(colour_vis / 255.0)
    fused_y = (ir / 255.0 + vis_ycc[..., 0]) / 2
    expected = ycbcr_to_rgb(np.dstack([fused_y, vis_ycc[..., 1], vis_ycc[..., 2]]))
    assert np.abs(out - expected * 255).max() <= 1.0
    # Where nothing clipped, the output's chroma is the visible image's.
    inside = np.all((expected > 0.01) & (expected < 0.99), axis=-1)
    assert inside.mean() > 0.3
    out_ycc = rgb_to_ycbcr(out / 255.0)
    assert np.abs(out_ycc[..., 1:] - vis_ycc[..., 1:])[inside].max() < 2 / 255


def test_colour_float_visible_gives_float_rgb(grey_pair, colour_vis):
    ir, _ = grey_pair
    vis = colour_vis.astype(np.float32) / 255
    out = ivfusion.fuse(ir, vis, method="average")
    assert out.dtype == np.float32 and out.shape == vis.shape
    assert out.min() >= 0 and out.max() <= 1
    via_tensor = ivfusion.fuse(ir, torch.from_numpy(vis).permute(2, 0, 1), method="average")
    np.testing.assert_allclose(via_tensor, out, atol=1e-6)


def test_grey_visible_gives_grey_output(grey_pair):
    ir, vis = grey_pair
    assert ivfusion.fuse(ir, vis, method="max").ndim == 2
    out3 = ivfusion.fuse(ir, np.repeat(vis[..., None], 3, 2), method="max")
    assert out3.shape == vis.shape + (3,)
    np.testing.assert_array_equal(out3[..., 0], out3[..., 2])
    np.testing.assert_array_equal(out3[..., 1], ivfusion.fuse(ir, vis, method="max"))


def test_colour_in_the_infrared_slot_gives_its_chroma(rng):
    # Medical convention: MRI (grey) in the visible slot, PET pseudo-colour in the infrared slot.
    pet = smooth_image(rng, 32, 32, channels=3)
    mri = smooth_image(rng, 32, 32)
    out = ivfusion.fuse(pet, mri, method="max")
    assert out.shape == (32, 32, 3)
    pet_ycc = rgb_to_ycbcr(pet / 255.0)
    fused_y = np.maximum(pet_ycc[..., 0], mri / 255.0)
    expected = ycbcr_to_rgb(np.dstack([fused_y, pet_ycc[..., 1], pet_ycc[..., 2]]))
    assert np.abs(out - expected * 255).max() <= 1.0


def test_uint16_infrared_uses_its_own_range(rng, grey_pair):
    _, vis = grey_pair
    raw = rng.integers(7200, 7900, vis.shape).astype(np.uint16)  # a raw thermal frame
    out = ivfusion.fuse(raw, vis, method="average")
    stretched = (raw - raw.min()) / (raw.max() - raw.min())
    expected = np.round(255 * (stretched + vis / 255.0) / 2)
    assert np.abs(out.astype(float) - expected).max() <= 1
    fixed = ivfusion.fuse(raw, vis, method="average", ir_range=(7000, 8000))
    expected_fixed = np.round(255 * ((raw - 7000.0) / 1000.0 + vis / 255.0) / 2)
    assert np.abs(fixed.astype(float) - expected_fixed).max() <= 1


def test_uint16_visible_gives_uint16(grey_pair):
    ir, vis = grey_pair
    vis16 = vis.astype(np.uint16) * 257
    out = ivfusion.fuse(ir, vis16, method="max")
    assert out.dtype == np.uint16
    np.testing.assert_allclose(out / 65535.0, ivfusion.fuse(ir, vis, method="max") / 255.0, atol=1 / 255)


def test_size_mismatch_and_resize(grey_pair, colour_vis):
    ir, _ = grey_pair
    small_ir = ir[::2, ::2]
    with pytest.raises(ValueError, match=r"ir is 20x28 \(HxW\), vis is 40x56.*resize='ir_to_vis'"):
        ivfusion.fuse(small_ir, colour_vis, method="average")
    up = ivfusion.fuse(small_ir, colour_vis, method="average", resize="ir_to_vis")
    assert up.shape == colour_vis.shape
    down = ivfusion.fuse(small_ir, colour_vis, method="average", resize="vis_to_ir")
    assert down.shape == (20, 28, 3)
    # Antialiased downsampling of a 2x2-periodic checkerboard gives its mean, not aliasing.
    board = (np.indices((40, 56)).sum(0) % 2 * 255).astype(np.uint8)
    flat = ivfusion.fuse(small_ir, board, method="max", resize="vis_to_ir")
    assert np.abs(flat.astype(int) - np.maximum(small_ir, 128))[1:-1, 1:-1].max() <= 2
    with pytest.raises(ValueError, match="resize must be None, 'ir_to_vis' or 'vis_to_ir'"):
        ivfusion.fuse(ir, ir, method="average", resize="both")


def test_argument_errors(grey_pair, tmp_path):
    ir, vis = grey_pair
    with pytest.raises(ValueError, match="unknown method 'nope'; available: .*average"):
        ivfusion.fuse(ir, vis, method="nope")
    with pytest.raises(ValueError, match="'laplacian' does not accept option.*rule.*accepted: levels"):
        ivfusion.fuse(ir, vis, method="laplacian", rule="sum")
    with pytest.raises(ValueError, match="classical and takes no weights"):
        ivfusion.fuse(ir, vis, method="average", weights="x.safetensors")
    with pytest.raises(ValueError, match="vis: float images must lie in"):
        ivfusion.fuse(ir, vis.astype(np.float32), method="average")
    with pytest.raises(FileNotFoundError, match="ir: no such file"):
        ivfusion.fuse(tmp_path / "missing.png", vis, method="average")
    with pytest.raises(ValueError, match="tile_size must be a positive int"):
        ivfusion.fuse(ir, vis, method="average", tile_size=0)
    with pytest.raises(ValueError, match="precision: fp16 is only supported on CUDA"):
        ivfusion.fuse(ir, vis, method="average", precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="device: not a valid torch device"):
        ivfusion.fuse(ir, vis, method="average", device="gpu0")


def test_tiled_fuse_equals_untiled_for_pixelwise(grey_pair):
    ir, vis = (a.astype(np.float32) / 255 for a in grey_pair)
    tiled = ivfusion.fuse(ir, vis, method="average", tile_size=16, tile_overlap=4)
    np.testing.assert_allclose(tiled, ivfusion.fuse(ir, vis, method="average"), atol=1e-6, rtol=0)


def test_method_options_pass_through(grey_pair):
    ir, vis = grey_pair
    a = ivfusion.fuse(ir, vis, method="laplacian", levels=2)
    b = ivfusion.fuse(ir, vis, method="laplacian", levels=4)
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_list_methods():
    names = ivfusion.list_methods()
    assert {"average", "max", "laplacian", "guided"} <= set(names)
    assert set(ivfusion.list_models()) <= set(names)
    assert {"average", "max", "laplacian", "guided"} <= set(ivfusion.list_methods(available_only=True))


def test_network_without_weights_is_refused_not_replaced(grey_pair):
    ir, vis = grey_pair
    for name in ivfusion.list_models():
        if ivfusion.method_info(name).available:
            continue
        with pytest.raises(RuntimeError, match=f"no pretrained weights are available yet for method '{name}'.*average"):
            ivfusion.fuse(ir, vis, method=name)


def test_network_with_random_weights_runs_with_a_warning(grey_pair, colour_vis):
    ir, _ = grey_pair
    for name in ivfusion.list_models():
        with pytest.warns(UserWarning, match="random"):
            out = ivfusion.fuse(ir, colour_vis, method=name, weights="random")
        assert out.shape == colour_vis.shape and out.dtype == np.uint8


# ----------------------------------------------------------------------------------- fuse_dir


def _make_dirs(tmp_path, rng, stems_ir, stems_vis):
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    ir_dir.mkdir()
    vis_dir.mkdir()
    for s in stems_ir:
        write_image(ir_dir / f"{s}.png", smooth_image(rng, 24, 32))
    for s in stems_vis:
        write_image(vis_dir / f"{s}.jpg", smooth_image(rng, 24, 32, channels=3))
    return ir_dir, vis_dir


def test_fuse_dir_pairs_by_stem_and_reports_unmatched(tmp_path, rng):
    ir_dir, vis_dir = _make_dirs(tmp_path, rng, ["a", "b", "only_ir"], ["a", "b", "only_vis"])
    (ir_dir / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    report = ivfusion.fuse_dir(ir_dir, vis_dir, out, method="average")
    assert [p.name for p in report.written] == ["a.png", "b.png"]
    assert [p.name for p in report.unmatched_ir] == ["only_ir.png"]
    assert [p.name for p in report.unmatched_vis] == ["only_vis.jpg"]
    assert report.ok
    np.testing.assert_array_equal(
        read_image(out / "a.png"), ivfusion.fuse(ir_dir / "a.png", vis_dir / "a.jpg", method="average")
    )


def test_fuse_dir_existing_outputs(tmp_path, rng):
    ir_dir, vis_dir = _make_dirs(tmp_path, rng, ["a", "b"], ["a", "b"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="1 output.*a.png.*'skip' or 'overwrite'"):
        ivfusion.fuse_dir(ir_dir, vis_dir, out, method="average")
    assert not (out / "b.png").exists()  # refused before writing anything
    report = ivfusion.fuse_dir(ir_dir, vis_dir, out, method="average", existing="skip")
    assert [p.name for p in report.skipped] == ["a.png"] and (out / "a.png").read_bytes() == b"old"
    report = ivfusion.fuse_dir(ir_dir, vis_dir, out, method="average", existing="overwrite")
    assert len(report.written) == 2 and read_image(out / "a.png").shape == (24, 32, 3)


def test_fuse_dir_records_failures_and_continues(tmp_path, rng):
    ir_dir, vis_dir = _make_dirs(tmp_path, rng, ["a", "b"], ["a", "b"])
    (ir_dir / "a.png").write_text("corrupt")
    report = ivfusion.fuse_dir(ir_dir, vis_dir, tmp_path / "out", method="average")
    assert [s for s, _ in report.failed] == ["a"] and "cannot read" in report.failed[0][1]
    assert [p.name for p in report.written] == ["b.png"]
    assert not (tmp_path / "out" / "a.png").exists()


def test_fuse_dir_errors(tmp_path, rng):
    ir_dir, vis_dir = _make_dirs(tmp_path, rng, ["a"], ["a"])
    with pytest.raises(FileNotFoundError, match="vis_dir: no such directory"):
        ivfusion.fuse_dir(ir_dir, tmp_path / "nope", tmp_path / "out", method="average")
    with pytest.raises(ValueError, match="existing must be"):
        ivfusion.fuse_dir(ir_dir, vis_dir, tmp_path / "out", method="average", existing="maybe")
    write_image(ir_dir / "a.jpg", smooth_image(rng, 24, 32))
    with pytest.raises(ValueError, match="ir_dir: two images share the stem 'a'"):
        ivfusion.fuse_dir(ir_dir, vis_dir, tmp_path / "out", method="average")
