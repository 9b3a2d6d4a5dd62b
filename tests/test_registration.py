"""ivfusion.registration: geometry, the Registration file, recovery of known warps, bad input,
fuse/fuse_dir/fuse_video with align=, the CLI, the learned network's plumbing."""
from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ivfusion
from ivfusion.cli import main
from ivfusion.io import read_image, write_image
from ivfusion.registration import (
    Registration,
    RegistrationError,
    RegistrationWarning,
    register,
    register_pairs,
)
from ivfusion.registration._bounds import flow_problem, transform_problem
from ivfusion.registration._geometry import homography_from_points, scale_matrix
from ivfusion.registration.synthetic import (
    WarpRanges,
    end_point_error,
    invert_flow,
    random_registration,
    render_infrared,
)

from .conftest import smooth_image

H, W = 192, 256


def scene(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A float32 'visible' scene in [0, 1]: rectangles and discs of random grey levels on a smooth
    background (structure everywhere, like a street)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.3 + 0.2 * np.sin(xx / 23.0 + seed) * np.cos(yy / 31.0)
    for _ in range(40):
        v = rng.uniform(0, 1)
        if rng.random() < 0.5:
            y0, x0 = rng.integers(0, h - 10), rng.integers(0, w - 10)
            img[y0:y0 + rng.integers(8, 50), x0:x0 + rng.integers(8, 50)] = v
        else:
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 25)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = v
    return np.clip(img, 0, 1).astype(np.float32)


def thermal(vis: np.ndarray) -> np.ndarray:
    """A pseudo-infrared of the same scene: inverted, non-linear grey levels, blurred (another
    modality with the same edges)."""
    t = torch.from_numpy(1.0 - vis ** 0.6)[None, None]
    t = F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return t[0, 0].clamp(0, 1).numpy()


def misaligned(seed: int, ranges: WarpRanges, elastic: bool = True):
    vis = scene(seed)
    truth = random_registration((H, W), np.random.default_rng(seed), ranges, elastic=elastic)
    ir = render_infrared(torch.from_numpy(thermal(vis))[None], truth)[0].numpy()
    return ir, vis, truth


def mean_epe(est, truth) -> float:
    e, m = end_point_error(est, truth)
    return float(e[m].mean())


# ------------------------------------------------------------------------------------ geometry


def test_identity_is_the_resize_of_fuse():
    ir = torch.rand(1, 40, 50)
    reg = Registration.identity((40, 50), (80, 100))
    warped, mask = reg.warp_tensor(ir)
    expected = F.interpolate(ir[None], size=(80, 100), mode="bilinear", align_corners=False)[0]
    assert mask.all()
    torch.testing.assert_close(warped, expected, atol=1e-5, rtol=0)


def test_integer_translation_warps_like_slicing():
    ir = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)
    m = np.array([[1.0, 0, 3], [0, 1, -2], [0, 0, 1]])  # infrared pixel (x, y) lands on (x + 3, y - 2)
    out, mask = Registration(m, (30, 40), (30, 40), "affine").warp(ir)
    assert out.dtype == np.uint8 and out.shape == (30, 40)
    np.testing.assert_array_equal(out[:28, 3:], ir[2:, :37])
    assert mask[:28, 3:].all() and not mask[:, :3].any() and not mask[28:].any()
    assert (out[~mask] == 0).all()


def test_warp_keeps_kind_and_channels():
    rgb = np.random.default_rng(1).integers(0, 65535, (20, 24), dtype=np.uint16)
    out, _ = Registration.identity((20, 24), (20, 24)).warp(rgb)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, rgb)
    col = np.random.default_rng(2).random((20, 24, 3)).astype(np.float32)
    out, _ = Registration.identity((20, 24), (20, 24)).warp(col)
    assert out.shape == (20, 24, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, col, atol=1e-5)
    with pytest.raises(ValueError, match="for 20x24 \\(HxW\\) infrared images, got 21x24"):
        Registration.identity((20, 24), (20, 24)).warp(np.zeros((21, 24), np.uint8))


def test_homography_from_points_and_flow_inverse():
    src = [[0, 0], [10, 0], [10, 10], [0, 10]]
    dst = [[1, 2], [12, 1], [11, 13], [0, 11]]
    h = homography_from_points(src, dst)
    p = torch.cat([torch.tensor(src, dtype=torch.float64), torch.ones(4, 1, dtype=torch.float64)], 1) @ h.T
    torch.testing.assert_close(p[:, :2] / p[:, 2:], torch.tensor(dst, dtype=torch.float64))
    flow = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(0)) * 1.5
    v = invert_flow(flow, (40, 50))
    from ivfusion.registration._geometry import dense_flow, pixel_grid
    x = pixel_grid(40, 50, dtype=torch.float64)
    u = dense_flow(flow.double(), (40, 50))
    # x + v(x) is moved back onto x by u (checked away from the border, where u is extrapolated)
    y = x + v
    from ivfusion.registration._geometry import to_grid_sample
    u_at = F.grid_sample(u.permute(2, 0, 1)[None], to_grid_sample(y, (40, 50))[None], align_corners=False)[0]
    back = y + u_at.permute(1, 2, 0)
    assert float((back - x)[10:-10, 10:-10].norm(dim=-1).max()) < 1e-3


def test_scale_matrix_maps_pixel_centres():
    m = scale_matrix((10, 20), (20, 40))
    # the centre of the first pixel of a 20-wide row is at 0; of the resized 40-wide row, at 0.5
    assert m[0, 0] == 2 and m[0, 2] == 0.5


# ------------------------------------------------------------------------------------ the file


def test_json_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    reg = Registration(np.array([[1.01, 0.02, 3.5], [-0.01, 0.99, -2.25], [1e-5, 2e-5, 1.0]]), (100, 120), (200, 240),
                       "deformable", flow=rng.normal(size=(2, 5, 7)).astype(np.float32), confidence=0.73,
                       estimator="classical", info={"similarity": 0.5})
    path = reg.save(tmp_path / "rig.json")
    back = Registration.load(path)
    np.testing.assert_array_equal(back.matrix, reg.matrix)
    np.testing.assert_allclose(back.flow, reg.flow, atol=1e-4)
    assert (back.ir_size, back.vis_size, back.model, back.estimator) == ((100, 120), (200, 240), "deformable", "classical")
    assert back.confidence == pytest.approx(0.73) and back.info == {"similarity": 0.5}
    torch.testing.assert_close(back.mapping(), reg.mapping(), atol=1e-3, rtol=0)
    assert not list(tmp_path.glob(".*"))  # written atomically, no temporary left


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.update(format="other"), "not an ivfusion registration"),
    (lambda d: d.update(version=99), "version 99 is not supported"),
    (lambda d: d.pop("matrix"), "missing field(s) matrix"),
    (lambda d: d.update(matrix=[[1, 0], [0, 1]]), "matrix: expected a finite 3x3"),
    (lambda d: d.update(model="rigid"), "model must be one of"),
    (lambda d: d.update(ir_size=[0, 5]), "ir_size: expected (height, width)"),
    (lambda d: d.update(flow=[[[0.0, 0.0]]] * 2), "flow: only a 'deformable' registration"),
    (lambda d: d.update(confidence=2), "confidence must be a number in [0, 1]"),
])
def test_bad_registration_files(tmp_path, change, needle):
    data = Registration.identity((10, 10), (10, 10)).to_dict()
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        Registration.load(path)
    assert needle in str(info.value) and "bad.json" in str(info.value)


def test_unreadable_registration_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        Registration.load(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        Registration.load(tmp_path / "x.json")


# ------------------------------------------------------------------------------------ bounds


def test_bounds_reject_reflection_degenerate_scale_and_folding():
    ok = scale_matrix((50, 60), (100, 120)).numpy()
    assert transform_problem(ok, (50, 60), (100, 120)) is None
    mirror = ok @ np.diag([-1.0, 1.0, 1.0])
    assert "reflection" in transform_problem(mirror, (50, 60), (100, 120))
    assert "degenerate scale" in transform_problem(ok @ np.diag([0.2, 0.2, 1.0]), (50, 60), (100, 120))
    horizon = ok.copy()
    horizon[2] = [-0.05, 0.0, 1.0]
    assert "horizon" in transform_problem(horizon, (50, 60), (100, 120))
    assert transform_problem(ok @ np.diag([0.6, 0.6, 1.0]), (50, 60), (100, 120), scale=0.6) is None
    fold = np.zeros((2, 3, 3), np.float32)
    fold[0, :, 1] = 60.0  # the middle column of nodes jumps past its neighbours
    assert "folds" in flow_problem(fold, (100, 120)) or "more than" in flow_problem(fold, (100, 120))
    assert flow_problem(np.full((2, 3, 3), 1.0, np.float32), (100, 120)) is None


# ------------------------------------------------------------------------------------ recovery


SMALL = WarpRanges(shift=12.0, rotation=5.0, scale=0.08, perspective=0.015, elastic=4.0, low_res=0.0)


@pytest.mark.parametrize("model, seed", [("affine", 1), ("homography", 2), ("deformable", 3)])
def test_recovers_known_warps(model, seed):
    ranges = SMALL if model == "deformable" else WarpRanges(**{**SMALL.__dict__, "perspective": 0.0 if model == "affine"
                                                              else 0.015, "elastic": 0.0})
    ir, vis, truth = misaligned(seed, ranges, elastic=model == "deformable")
    before = mean_epe(Registration.identity(truth.ir_size, truth.vis_size), truth)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegistrationWarning)
        reg = register(ir, vis, model)
    assert before > 5
    assert mean_epe(reg, truth) < 0.75, (model, mean_epe(reg, truth))
    assert reg.model == model and reg.confidence > 0.5
    assert (reg.flow is not None) == (model == "deformable")
    if model == "affine":
        np.testing.assert_allclose(reg.matrix[2], [0, 0, 1], atol=1e-9)


def test_recovers_a_lower_resolution_infrared():
    ranges = WarpRanges(**{**SMALL.__dict__, "elastic": 0.0, "low_res": 1.0, "low_res_factor": (0.55, 0.55)})
    ir, vis, truth = misaligned(4, ranges, elastic=False)
    assert ir.shape == (106, 141)
    reg = register(ir, vis, "homography")
    assert reg.ir_size == (106, 141) and reg.vis_size == (H, W)
    assert mean_epe(reg, truth) < 0.75
    warped, mask = reg.warp(ir)
    assert warped.shape == (H, W) and mask.mean() > 0.8


def test_accepts_fuse_inputs(tmp_path):
    ir, vis, truth = misaligned(5, WarpRanges(**{**SMALL.__dict__, "elastic": 0.0}), elastic=False)
    ir16 = (ir * 40000 + 1000).astype(np.uint16)  # raw thermal counts
    vis_rgb = (np.repeat(vis[..., None], 3, axis=2) * 255).round().astype(np.uint8)
    write_image(tmp_path / "ir.png", ir16)
    write_image(tmp_path / "vis.jpg", vis_rgb)
    reg = register(tmp_path / "ir.png", tmp_path / "vis.jpg", "homography")
    assert mean_epe(reg, truth) < 1.0


def test_real_msrs_pair_aligns_its_lamp_not_the_datasets_offset():
    """The bundled ``day`` pair (MSRS 00002D, dark infrared with a black fill border) is itself
    misaligned by about 40 px: a street lamp, bright in both images, lies at (231.8, 107.9) in the
    infrared and at (233.9, 149.1) in the visible image (centroids of the brightest 3 % of a 31 px
    window, picked by eye on overlays). A registration must bring the two lamps together rather
    than keep the dataset's alignment."""
    ir, vis = ivfusion.data.sample_pair("day")
    lamp_ir, lamp_vis = np.array([231.8, 107.9, 1.0]), np.array([233.9, 149.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegistrationWarning)
        reg = register(ir, vis)
    moved = reg.matrix @ lamp_ir
    assert np.linalg.norm(lamp_ir[:2] - lamp_vis) > 30  # the dataset's own alignment
    assert np.linalg.norm(moved[:2] / moved[2] - lamp_vis) < 8, moved[:2] / moved[2]
    assert reg.confidence >= 0.3


# ------------------------------------------------------------------------------------ bad input


def test_flat_infrared_gets_low_confidence_or_strict_error():
    vis = scene(6)
    with pytest.warns(RegistrationWarning):
        reg = register(np.full((H, W), 0.5, np.float32), vis)
    assert reg.confidence < 0.3
    # never a wild warp: what comes back stays within the bounds
    assert transform_problem(reg.matrix, reg.ir_size, reg.vis_size) is None
    with pytest.raises(RegistrationError):
        register(np.full((H, W), 0.5, np.float32), vis, strict=True)


def test_unrelated_scenes_get_low_confidence():
    with pytest.warns(RegistrationWarning, match="confidence|rejected"):
        reg = register(thermal(scene(7)), scene(8), "homography")
    assert reg.confidence < 0.3


def test_deformable_confidence_is_no_higher_than_its_transform_alone(monkeypatch):
    """A deformation can make a wrong transform's peak look sharp: a deformable estimate is scored as the
    lower of the confidences with and without its deformation, so it warns when its transform is weak."""
    import ivfusion.registration._api as api

    real = api.peak_sharpness

    def weak_without_flow(level, frame, t, flow=None, **kw):
        rho, sharp, far = real(level, frame, t, flow, **kw)
        return (rho, sharp, far) if flow is not None else (rho, 0.2 * api._SHARP, far)

    monkeypatch.setattr(api, "peak_sharpness", weak_without_flow)
    ir, vis, _ = misaligned(3, SMALL)
    with pytest.warns(RegistrationWarning, match="confidence"):
        reg = register(ir, vis, "deformable")
    assert reg.confidence == pytest.approx(0.2, abs=1e-6)  # 0.2 * _SHARP / _SHARP: the transform's score
    assert reg.info["sharpness"] > 0.5 * api._SHARP  # the score with the deformation, as reported, was high


@pytest.mark.parametrize("kwargs, err, needle", [
    (dict(model="rigid"), ValueError, "model must be one of"),
    (dict(estimator="sift"), ValueError, "estimator must be one of"),
    (dict(model="deformable", estimator="learned"), ValueError, "homography only"),
    (dict(scale=0.0), ValueError, "scale must be a number"),
])
def test_register_argument_errors(kwargs, err, needle):
    with pytest.raises(err, match=needle):
        register(scene(1), scene(1), **kwargs)


def test_register_input_errors():
    with pytest.raises(ValueError, match="at least 32x32"):
        register(np.zeros((10, 10), np.uint8), scene(1))
    with pytest.raises(ValueError, match="vis: float images must lie in"):
        register(scene(1), scene(1) * 2)
    with pytest.raises(TypeError, match="ir: expected a path"):
        register(42, scene(1))
    with pytest.raises(FileNotFoundError, match="ir: no such file"):
        register("missing.png", scene(1))


def test_register_pairs_outvotes_an_odd_pair():
    ranges = WarpRanges(**{**SMALL.__dict__, "elastic": 0.0, "low_res": 0.0})
    truth = random_registration((H, W), np.random.default_rng(11), ranges, elastic=False)
    pairs = []
    for seed in (21, 22, 23):
        vis = scene(seed)
        pairs.append((render_infrared(torch.from_numpy(thermal(vis))[None], truth)[0].numpy(), vis))
    pairs.append((thermal(scene(30)), scene(31)))  # an unrelated pair in the calibration set
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegistrationWarning)
        reg = register_pairs(pairs, "homography")
    assert reg.info["agreeing"] == 3 and mean_epe(reg, truth) < 0.75
    with pytest.raises(ValueError, match="same sizes"):
        register_pairs([pairs[0], (pairs[0][0][:100], pairs[0][1])])
    with pytest.raises(ValueError, match="at least one"):
        register_pairs([])


# ------------------------------------------------------------------------------------ fuse


@pytest.fixture(scope="module")
def rig():
    """A misaligned pair with its true registration (homography, lower-resolution infrared)."""
    ranges = WarpRanges(**{**SMALL.__dict__, "elastic": 0.0, "low_res": 1.0, "low_res_factor": (0.75, 0.75)})
    ir, vis, truth = misaligned(12, ranges, elastic=False)
    return (ir * 255).round().astype(np.uint8), (vis * 255).round().astype(np.uint8), truth


def test_fuse_with_a_registration_keeps_the_visible_outside(rig):
    ir, vis, truth = rig
    fused = ivfusion.fuse(ir, vis, "average", align=truth)
    assert fused.shape == vis.shape and fused.dtype == np.uint8
    warped, mask = truth.warp(ir)
    # independent route: average of the warped infrared and the visible image, the visible outside
    expected = np.where(mask, (warped.astype(np.float32) + vis) / 2, vis)
    assert mask.mean() < 0.99 and (~mask).any()
    np.testing.assert_array_equal(fused[~mask], vis[~mask])
    assert np.abs(fused.astype(np.float32) - expected)[mask].max() <= 1.0


def test_fuse_align_forms_agree(rig, tmp_path):
    ir, vis, truth = rig
    path = truth.save(tmp_path / "rig.json")
    a = ivfusion.fuse(ir, vis, "average", align=truth)
    b = ivfusion.fuse(ir, vis, "average", align=str(path))
    np.testing.assert_array_equal(a, b)
    est = ivfusion.fuse(ir, vis, "average", align="homography")  # estimated on the pair
    assert np.abs(est.astype(np.int16) - a).mean() < 2.0
    assert np.abs(ivfusion.fuse(ir, vis, "average", resize="ir_to_vis").astype(np.int16) - a).mean() > 5


def test_fuse_align_errors(rig, tmp_path):
    ir, vis, truth = rig
    with pytest.raises(ValueError, match="align: the registration is for infrared"):
        ivfusion.fuse(ir[:, :-1], vis, "average", align=truth)
    with pytest.raises(ValueError, match="cannot be combined with align"):
        ivfusion.fuse(ir, vis, "average", align=truth, resize="vis_to_ir")
    with pytest.raises(FileNotFoundError, match="neither a model"):
        ivfusion.fuse(ir, vis, "average", align=str(tmp_path / "nope.json"))
    with pytest.raises(TypeError, match="align: expected None"):
        ivfusion.fuse(ir, vis, "average", align=3)


def test_fuse_dir_with_a_fixed_registration(rig, tmp_path):
    ir, vis, truth = rig
    for sub in ("ir", "vi"):
        (tmp_path / sub).mkdir()
    for k in range(3):
        write_image(tmp_path / "ir" / f"p{k}.png", np.roll(ir, k, axis=0))
        write_image(tmp_path / "vi" / f"p{k}.png", vis)
    rep = ivfusion.fuse_dir(tmp_path / "ir", tmp_path / "vi", tmp_path / "out", "average", align=truth)
    assert rep.ok and len(rep.written) == 3 and rep.registration is truth
    rep2 = ivfusion.fuse_dir(tmp_path / "ir", tmp_path / "vi", tmp_path / "out2", "average", align=truth, batch_size=2)
    for k in range(3):
        expected = ivfusion.fuse(np.roll(ir, k, axis=0), vis, "average", align=truth)
        np.testing.assert_array_equal(read_image(tmp_path / "out" / f"p{k}.png"), expected)
        np.testing.assert_array_equal(read_image(tmp_path / "out2" / f"p{k}.png"), expected)
    assert rep2.to_json()["registration"]["model"] == "homography"
    # estimated once from the first pairs (the rig did not move)
    rep3 = ivfusion.fuse_dir(tmp_path / "ir", tmp_path / "vi", tmp_path / "out3", "average", align="homography",
                             align_pairs=1)
    assert mean_epe(rep3.registration, truth) < 1.0
    with pytest.raises(ValueError, match="align_pairs must be"):
        ivfusion.fuse_dir(tmp_path / "ir", tmp_path / "vi", tmp_path / "out4", "average", align="affine", align_pairs=0)


def test_fuse_video_with_a_fixed_registration(rig, tmp_path):
    pytest.importorskip("av")
    ir, vis, truth = rig
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    for k in range(3):
        write_image(tmp_path / "ir" / f"f{k:03d}.png", ir)
        write_image(tmp_path / "vi" / f"f{k:03d}.png", vis)
    frames_out = tmp_path / "frames"
    rep = ivfusion.fuse_video(tmp_path / "ir", tmp_path / "vi", tmp_path / "out.mkv", "average", align=truth,
                              codec="ffv1", pix_fmt="bgr0")
    assert rep.frames == 3 and rep.size == vis.shape and rep.registration is truth
    rep2 = ivfusion.fuse_video(tmp_path / "ir", tmp_path / "vi", tmp_path / "out2.mkv", "average", align="homography",
                               align_frames=2, codec="ffv1", pix_fmt="bgr0")
    assert mean_epe(rep2.registration, truth) < 1.0
    import av
    with av.open(str(tmp_path / "out.mkv")) as c:
        got = next(c.decode(video=0)).to_ndarray(format="gray")
    expected = ivfusion.fuse(ir, vis, "average", align=truth)
    assert np.abs(got.astype(np.int16) - expected).max() <= 1
    del frames_out


# ------------------------------------------------------------------------------------ CLI


def test_cli_register_and_fuse(rig, tmp_path, capsys):
    ir, vis, truth = rig
    write_image(tmp_path / "ir.png", ir)
    write_image(tmp_path / "vis.png", vis)
    assert main(["register", str(tmp_path / "ir.png"), str(tmp_path / "vis.png"), "-o", str(tmp_path / "rig.json"),
                 "--model", "homography"]) == 0
    assert "confidence" in capsys.readouterr().out
    reg = Registration.load(tmp_path / "rig.json")
    assert mean_epe(reg, truth) < 1.0
    assert main(["fuse", str(tmp_path / "ir.png"), str(tmp_path / "vis.png"), "-o", str(tmp_path / "f.png"),
                 "-m", "average", "--align", str(tmp_path / "rig.json")]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "f.png"), ivfusion.fuse(ir, vis, "average", align=reg))
    # errors: one line, status 1
    assert main(["register", str(tmp_path / "ir.png"), str(tmp_path / "vis.png"), "-o", str(tmp_path / "rig.json")]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["fuse", str(tmp_path / "ir.png"), str(tmp_path / "vis.png"), "-o", str(tmp_path / "g.png"),
                 "-m", "average", "--align", "nope.json"]) == 1
    assert "neither a model" in capsys.readouterr().err


def test_cli_register_warns_in_one_line_on_a_pair_with_nothing_in_common(tmp_path, rng, capsys):
    write_image(tmp_path / "ir.png", np.full((120, 160), 90, np.uint8))
    write_image(tmp_path / "vis.png", smooth_image(rng, 120, 160))
    assert main(["register", str(tmp_path / "ir.png"), str(tmp_path / "vis.png"), "-o", str(tmp_path / "rig.json")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ivfusion: warning: ")
    assert main(["register", str(tmp_path / "ir.png"), str(tmp_path / "vis.png"), "-o", str(tmp_path / "r2.json"),
                 "--strict"]) == 1
    assert capsys.readouterr().err.startswith("ivfusion: error: ")


def test_cli_register_folder(rig, tmp_path, capsys):
    ir, vis, truth = rig
    for sub in ("ir", "vi"):
        (tmp_path / sub).mkdir()
    for k in range(2):
        write_image(tmp_path / "ir" / f"p{k}.png", ir)
        write_image(tmp_path / "vi" / f"p{k}.png", vis)
    assert main(["register", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"), "--pairs", "2",
                 "-o", str(tmp_path / "rig.json")]) == 0
    assert "from 2 pairs" in capsys.readouterr().out
    assert mean_epe(Registration.load(tmp_path / "rig.json"), truth) < 1.0
    assert main(["register", "-o", str(tmp_path / "x.json")]) == 1


# ------------------------------------------------------------------------------------ learned network


def test_training_labels_agree_with_the_registration():
    from ivfusion.registration._network import apply_h
    from ivfusion.train.registration import normalised_truth

    truth = random_registration((128, 160), np.random.default_rng(0), WarpRanges(low_res=1.0))
    hom, dense = normalised_truth(truth)
    # the homography part maps a pixel centre where the registration's matrix does
    x = torch.tensor([[37.0, 91.0]])
    n = (x + 0.5) / torch.tensor([80.0, 64.0]) - 1
    q = apply_h(hom[None], n)[0]
    m = torch.linalg.inv(torch.from_numpy(truth.matrix))
    y = m @ torch.tensor([37.0, 91.0, 1.0], dtype=torch.float64)
    hi, wi = truth.ir_size
    expected = (y[:2] / y[2] + 0.5) / torch.tensor([wi / 2, hi / 2], dtype=torch.float64) - 1
    torch.testing.assert_close(q[0].double(), expected, atol=1e-5, rtol=0)
    assert dense.shape == (128, 160, 2)


def test_regnet_shapes_and_weight_file(tmp_path):
    from safetensors.torch import save_file

    from ivfusion.registration import RegNet, load_regnet
    from ivfusion.registration._network import fit_homography

    torch.manual_seed(0)
    net = RegNet().eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 128, 160), torch.rand(2, 1, 128, 160))
    assert out["h1"].shape == out["h2"].shape == (2, 3, 3)
    assert out["q1"].shape == (2, 16 * 20, 2) and out["q2"].shape == (2, 32 * 40, 2)
    # the least-squares fit recovers an exact homography from its point matches
    h = torch.tensor([[1.02, 0.01, 0.05], [-0.02, 0.98, -0.03], [0.01, 0.02, 1.0]])
    p = torch.rand(50, 2) * 2 - 1
    from ivfusion.registration._network import apply_h
    fitted = fit_homography(p, apply_h(h[None], p), torch.ones(1, 50), reg=1e-9)[0]
    torch.testing.assert_close(fitted, h, atol=1e-4, rtol=0)
    path = tmp_path / "regnet_test.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    assert isinstance(load_regnet(str(path)), RegNet)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(Exception, match="does not fit RegNet"):
        load_regnet(str(tmp_path / "bad.safetensors"))


@pytest.fixture
def bench(monkeypatch):
    """``benchmarks/registration.py`` as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "registration.py"
    spec = importlib.util.spec_from_file_location("registration_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_benchmark_structure_mask_keeps_edges_and_drops_flat_regions(bench):
    vis = torch.zeros(1, 64, 96)
    vis[:, :, 48:] = 1.0  # one vertical edge between columns 47 and 48
    mask = bench.structure_mask(vis)
    assert mask.shape == (64, 96)
    assert bool(mask[:, 46:50].all())  # at the edge
    assert not bool(mask[:, :40].any()) and not bool(mask[:, 56:].any())  # flat on both sides
    assert not bool(bench.structure_mask(torch.full((1, 32, 32), 0.5)).any())  # a flat image has none


def test_benchmark_label_check_measures_a_known_misalignment(bench):
    """A pair whose infrared is the visible image's structure shifted by 3 px (inverted contrast):
    both features see the 3 px and agree with each other far more closely than that."""
    torch.manual_seed(0)
    blobs = F.interpolate(torch.rand(1, 1, 12, 16), size=(192, 256), mode="bicubic", align_corners=False)
    vis = blobs[0].clamp(0, 1)
    ir = 1.0 - torch.roll(vis, shifts=3, dims=-1)  # the infrared pixel x shows the scene at x - 3
    vis, ir = vis[:, 8:-8, 8:-8], ir[:, 8:-8, 8:-8]  # no wrapped-around column
    (row,) = bench.label_check({"synthetic/pair": (ir, vis)})
    assert row["pair"] == "synthetic/pair"
    assert row["move_ngf"] == pytest.approx(3.0, abs=0.5) and row["move_mind"] == pytest.approx(3.0, abs=0.5)
    assert row["ngf_vs_mind"] < 0.5
    assert 0.0 <= row["confidence_ngf"] <= 1.0

