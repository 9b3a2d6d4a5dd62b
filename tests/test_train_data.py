"""Training data: pairing, luma extraction, VSM saliency, crops/augmentation applied identically to
every map of a pair, reflect padding, determinism of (seed, epoch, index), the step sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ivfusion.train.data import (
    AUGMENTATIONS,
    DevicePairs,
    PairedFusionDataset,
    StepBatchSampler,
    batch_to_device,
    find_pairs,
    load_luma,
    make_loader,
    vsm_saliency,
)

from .conftest import SHARED, require, smooth_image


def _write_pairs(root, arrays, ext=".png"):
    (root / "ir").mkdir(parents=True, exist_ok=True)
    (root / "vi").mkdir(parents=True, exist_ok=True)
    for stem, (ir, vis) in arrays.items():
        Image.fromarray(ir).save(root / "ir" / f"{stem}{ext}")
        Image.fromarray(vis).save(root / "vi" / f"{stem}{ext}")
    return root


def _dihedral(a: np.ndarray):
    """The 8 transforms (hflip, vflip, transpose in that order), keyed by the three flags."""
    out = {}
    for h in (0, 1):
        for v in (0, 1):
            for t in (0, 1):
                b = a[:, ::-1] if h else a
                b = b[::-1, :] if v else b
                out[(h, v, t)] = b.T if t else b
    return out


def _locate(sample: np.ndarray, full: np.ndarray, crop: int):
    """Every (top, left, transform) under which ``sample`` is a crop of ``full``."""
    hits = []
    h, w = full.shape
    for top in range(h - crop + 1):
        for left in range(w - crop + 1):
            window = full[top : top + crop, left : left + crop]
            for key, cand in _dihedral(window).items():
                if np.array_equal(cand, sample):
                    hits.append((top, left, key))
    return hits


# ------------------------------------------------------------------------------ files and luma


def test_load_luma_grey_rgb_grey_and_colour(tmp_path, rng):
    grey = smooth_image(rng, 20, 30)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "g3.png")  # IR saved as 3-channel grey
    rgb = smooth_image(rng, 20, 30, 3)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(load_luma(tmp_path / "g.png"), grey)
    g3 = load_luma(tmp_path / "g3.png")
    assert g3.shape == (20, 30) and g3.dtype == np.uint8
    np.testing.assert_array_equal(g3, grey)
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    expected = np.round(0.299 * r + 0.587 * g + 0.114 * b)
    got = load_luma(tmp_path / "c.png").astype(np.float64)
    assert np.abs(got - expected).max() <= 1  # float32 rounding at .5 ties only
    assert (got == expected).mean() > 0.99
    # 16-bit input is scaled by 1/65535 and quantised to 8 bits
    np.testing.assert_array_equal(load_luma(np.array([[0, 65535]], dtype=np.uint16)), [[0, 255]])


def test_find_pairs_matches_stems_and_checks_folders(tmp_path, rng):
    a = _write_pairs(tmp_path / "a", {s: (smooth_image(rng, 8, 8), smooth_image(rng, 8, 8)) for s in ("x", "y")})
    Image.fromarray(smooth_image(rng, 8, 8)).save(a / "ir" / "lonely.png")
    b = _write_pairs(tmp_path / "b", {"z": (smooth_image(rng, 8, 8), smooth_image(rng, 8, 8))})
    with pytest.warns(UserWarning, match="without a partner"):
        pairs = find_pairs([a, b])
    assert [(p.stem, p.folder.name) for p in pairs] == [("x", "a"), ("y", "a"), ("z", "b")]
    with pytest.raises(FileNotFoundError, match="ir/"):
        find_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        find_pairs(tmp_path / "missing")
    (tmp_path / "empty" / "ir").mkdir(parents=True)
    (tmp_path / "empty" / "vi").mkdir()
    with pytest.raises(ValueError, match="no image pairs"):
        find_pairs(tmp_path / "empty")
    with pytest.raises(ValueError, match="at least one"):
        find_pairs([])


def test_misaligned_pair_is_rejected(tmp_path, rng):
    root = _write_pairs(tmp_path, {"p": (smooth_image(rng, 10, 12), smooth_image(rng, 10, 13))})
    with pytest.raises(ValueError, match="aligned"):
        PairedFusionDataset(root, crop=8)


# ------------------------------------------------------------------------------ VSM


def test_vsm_saliency_matches_pixel_loops(rng):
    y = rng.integers(0, 256, size=(6, 7)).astype(np.uint8)
    flat = y.ravel().astype(np.int64)
    s = np.array([sum(abs(int(p) - int(q)) for q in flat) for p in flat], dtype=np.float64)
    expected = ((s - s.min()) / (s.max() - s.min())).reshape(y.shape)
    np.testing.assert_allclose(vsm_saliency(y), expected, rtol=0, atol=1e-12)
    assert not vsm_saliency(np.full((4, 4), 9, np.uint8)).any()
    with pytest.raises(TypeError, match="uint8"):
        vsm_saliency(y.astype(np.float32))


# ------------------------------------------------------------------------------ crops and augmentation


@pytest.mark.parametrize("augment", ["none", "hflip", "dihedral"])
def test_crops_and_augmentation_are_identical_for_all_maps(tmp_path, rng, augment):
    # random noise: every crop position and transform gives a different patch, so the transform of
    # each sample can be recovered from the infrared map alone and checked on the other maps
    ir = rng.integers(0, 256, (14, 17)).astype(np.uint8)
    vis = rng.integers(0, 256, (14, 17)).astype(np.uint8)
    root = _write_pairs(tmp_path, {"p": (ir, vis)})
    ds = PairedFusionDataset(root, crop=6, augment=augment, saliency="vsm", seed=3, workers=1)
    mask_full = np.round(vsm_saliency(vis) * 255).astype(np.uint8)  # of the full image, before cropping
    seen = set()
    for epoch in range(64):
        s = ds[(epoch, 0)]
        assert set(s) == {"ir", "vis", "mask"} and all(v.shape == (1, 6, 6) and v.dtype == torch.uint8 for v in s.values())
        hits = _locate(s["ir"][0].numpy(), ir, 6)
        assert len(hits) == 1
        top, left, key = hits[0]
        for name, full in (("vis", vis), ("mask", mask_full)):
            expected = _dihedral(full[top : top + 6, left : left + 6])[key]
            np.testing.assert_array_equal(s[name][0].numpy(), expected)
        seen.add(key)
    allowed = {"none": 1, "hflip": 2, "dihedral": 8}[augment]
    assert len(seen) == allowed  # 64 draws hit every allowed transform and no other
    if augment == "hflip":
        assert seen == {(0, 0, 0), (1, 0, 0)}


def test_center_crop_and_reflect_padding(tmp_path, rng):
    ir = rng.integers(0, 256, (20, 30)).astype(np.uint8)
    root = _write_pairs(tmp_path, {"p": (ir, 255 - ir)})
    ds = PairedFusionDataset(root, crop=12, crop_mode="center", seed=0, workers=1)
    for epoch in range(3):  # no randomness at all
        np.testing.assert_array_equal(ds[(epoch, 0)]["ir"][0].numpy(), ir[4:16, 9:21])
    # smaller than the crop: reflect-padded at the bottom/right (edge pixel not repeated)
    small = PairedFusionDataset(root, crop=32, crop_mode="center", workers=1)
    got = small[0]["ir"][0].numpy().astype(int)
    assert got.shape == (32, 32)
    np.testing.assert_array_equal(got[:20, :30], ir)
    np.testing.assert_array_equal(got[20:32, :30], ir[18:6:-1])  # row 20 + k mirrors row 18 - k
    np.testing.assert_array_equal(got[:20, 30:32], ir[:, 28:26:-1])
    np.testing.assert_array_equal(small[0]["vis"][0].numpy().astype(int), 255 - got)
    assert small.sizes == [(20, 30)]


def test_samples_are_a_pure_function_of_seed_epoch_index(tmp_path, rng):
    root = _write_pairs(tmp_path, {s: (smooth_image(rng, 40, 50), smooth_image(rng, 40, 50)) for s in "abc"})
    ds = PairedFusionDataset(root, crop=16, augment="dihedral", seed=5, workers=1)
    again = PairedFusionDataset(root, crop=16, augment="dihedral", seed=5, workers=1)
    other = PairedFusionDataset(root, crop=16, augment="dihedral", seed=6, workers=1)
    for key in [(0, 1), (7, 2), (3, 0)]:
        for name in ("ir", "vis"):
            assert torch.equal(ds[key][name], again[key][name])
            assert torch.equal(ds[key][name], ds[key][name])
    differ = sum(not torch.equal(ds[(e, 1)]["ir"], other[(e, 1)]["ir"]) for e in range(8))
    assert differ >= 6
    assert sum(not torch.equal(ds[(e, 1)]["ir"], ds[(e + 1, 1)]["ir"]) for e in range(8)) >= 6


def test_dataset_argument_checks(tmp_path, rng):
    root = _write_pairs(tmp_path, {"p": (smooth_image(rng, 10, 10), smooth_image(rng, 10, 10))})
    for kwargs, match in [({"crop": 0}, "crop"), ({"crop_mode": "middle"}, "crop_mode"),
                          ({"augment": "rotate"}, "augment"), ({"saliency": "itti"}, "saliency")]:
        with pytest.raises(ValueError, match=match):
            PairedFusionDataset(root, **kwargs)


# ------------------------------------------------------------------------------ sampler and loader


def test_step_sampler_epochs_and_resume():
    s = StepBatchSampler(10, 4, 9, seed=1)
    assert s.batches_per_epoch == 3 and len(s) == 9
    batches = list(s)
    assert [len(b) for b in batches] == [4, 4, 2] * 3
    for e in range(3):
        keys = [k for b in batches[3 * e : 3 * e + 3] for k in b]
        assert {ep for ep, _ in keys} == {e}
        assert sorted(i for _, i in keys) == list(range(10))  # each pair once per epoch
    assert [i for _, i in batches[0] + batches[1] + batches[2]] != [i for _, i in batches[3] + batches[4] + batches[5]]
    for start in range(9):
        assert list(StepBatchSampler(10, 4, 9, seed=1, start_step=start)) == batches[start:]
        assert s.batch_at(start) == batches[start]
    ordered = list(StepBatchSampler(10, 4, 3, shuffle=False))
    assert [i for b in ordered for _, i in b] == list(range(10))
    dropped = StepBatchSampler(10, 4, 4, drop_last=True, seed=1)
    assert dropped.batches_per_epoch == 2 and all(len(b) == 4 for b in dropped)
    with pytest.raises(ValueError, match="batch_size"):
        StepBatchSampler(3, 4, 1, drop_last=True)
    with pytest.raises(ValueError, match="num_items"):
        StepBatchSampler(0, 1, 1)


def test_loader_batches_do_not_depend_on_workers(tmp_path, rng):
    root = _write_pairs(tmp_path, {s: (smooth_image(rng, 30, 30), smooth_image(rng, 30, 30)) for s in "abcde"})
    ds = PairedFusionDataset(root, crop=16, augment="dihedral", saliency="vsm_binary", seed=2, workers=1)
    runs = []
    for workers in (0, 2):
        sampler = StepBatchSampler(len(ds), 2, 5, seed=2, start_step=1)
        runs.append([{k: v.clone() for k, v in b.items()} for b in make_loader(ds, sampler, workers=workers)])
    assert len(runs[0]) == 4
    for a, b in zip(*runs):
        assert a.keys() == b.keys() == {"ir", "vis", "mask"}
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert a["ir"].shape[0] in (1, 2) and set(a["mask"].unique().tolist()) <= {0, 255}


def test_real_training_folders_load(tmp_path):
    folder = require(SHARED / "data" / "ivif" / "train" / "llvip")
    pairs = find_pairs(folder)[:1]
    ds = PairedFusionDataset(pairs, crop=64, workers=1)
    ir = ds.maps[0][0]
    assert ir.ndim == 2 and ir.dtype == np.uint8 and ds.sizes[0] == ir.shape  # 3-channel grey IR -> 1 channel


def test_device_pairs_give_exactly_the_loader_batches(tmp_path, rng):
    # A pair smaller than the crop (reflect-padded) and larger ones; every augmentation draw.
    sizes = {"a": (20, 26), "b": (40, 33), "c": (31, 45), "d": (36, 36)}
    root = _write_pairs(tmp_path, {s: (smooth_image(rng, h, w), smooth_image(rng, h, w)) for s, (h, w) in sizes.items()})
    for augment, crop_mode, saliency in (("dihedral", "random", "vsm"), ("hflip", "random", None),
                                         ("none", "center", "ir_bright")):
        ds = PairedFusionDataset(root, crop=24, crop_mode=crop_mode, augment=augment, saliency=saliency, seed=5,
                                 workers=1)
        sampler = StepBatchSampler(len(ds), 3, 7, seed=5)
        on_device = DevicePairs(ds, "cpu", channels_last=True)
        loader_batches = list(make_loader(ds, sampler, workers=0))
        assert len(loader_batches) == 7
        for keys, batch in zip(sampler, loader_batches):
            got = on_device.batch(keys)
            want = batch_to_device(batch, torch.device("cpu"), channels_last=True)
            assert got.keys() == want.keys() == set(ds.keys)
            for k in want:
                assert got[k].dtype == torch.float32 and got[k].shape == want[k].shape
                assert got[k].is_contiguous(memory_format=torch.channels_last)
                assert torch.equal(got[k], want[k]), (augment, k)
    with pytest.raises(TypeError, match="dataset: expected a PairedFusionDataset"):
        DevicePairs([1, 2], "cpu")


def test_crop_params_follow_the_augmentation(tmp_path, rng):
    root = _write_pairs(tmp_path, {"a": (smooth_image(rng, 30, 40), smooth_image(rng, 30, 40))})
    for augment in AUGMENTATIONS:
        ds = PairedFusionDataset(root, crop=16, augment=augment, seed=0, workers=1)
        params = [ds.crop_params(e, 0) for e in range(64)]
        assert all(0 <= t <= 14 and 0 <= left <= 24 for t, left, *_ in params)
        flags = {tuple(p[2:]) for p in params}
        if augment == "none":
            assert flags == {(False, False, False)}
        elif augment == "hflip":
            assert flags == {(False, False, False), (True, False, False)}
        else:
            assert len(flags) == 8  # all dihedral transforms occur in 64 draws
    ds = PairedFusionDataset(root, crop=16, crop_mode="center", workers=1)
    assert ds.crop_params(3, 0)[:2] == (7, 12)
    with pytest.raises(IndexError, match="index 1 out of range for 1 pairs"):
        ds.crop_params(0, 1)
