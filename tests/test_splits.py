"""Validation splits: the bundled mixed split, exclusion from training, per-domain validation
relative to guided, warm starts, and RefineFuse's infrared-mask rules."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ivfusion.classical import fuse_guided
from ivfusion.models import create_model
from ivfusion.train import TrainConfig, Trainer, find_pairs
from ivfusion.train.data import PairedFusionDataset, ir_bright_mask
from ivfusion.train.losses import contrast_mask, refinefuse_loss
from ivfusion.train.splits import SPLITS, exclude_split, load_split, split_pairs

from .conftest import SHARED, smooth_image


def _folder(root, stems, h, w, seed):
    rng = np.random.default_rng(seed)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    for s in stems:
        ir = smooth_image(rng, h, w)
        vis = np.clip(255 - ir.astype(int) + rng.integers(0, 30, (h, w)), 0, 255).astype(np.uint8)
        Image.fromarray(ir).save(root / "ir" / f"{s}.png")
        Image.fromarray(vis).save(root / "vi" / f"{s}.png")
    return root


@pytest.fixture()
def split_data(tmp_path):
    a = _folder(tmp_path / "alpha", ["a0", "a1", "a2"], 40, 44, 0)
    b = _folder(tmp_path / "beta", ["b0", "b1"], 36, 60, 1)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"name": "tiny", "domains": {"alpha": ["a2"], "beta": ["b0"]}}))
    return a, b, split


def test_bundled_mixed_split_is_in_the_data_and_disjoint_from_val():
    split = load_split("mixed")
    assert SPLITS["mixed"].is_file() and split.name == "mixed"
    assert {k: len(v) for k, v in split.domains.items()} == {"tno": 8, "msrs": 8, "llvip": 6, "roadscene": 8}
    assert any(s.endswith("D") for s in split.domains["msrs"]) and any(s.endswith("N") for s in split.domains["msrs"])
    train = SHARED / "data" / "ivif" / "train"
    if not train.is_dir():
        pytest.skip("shared data not available")
    folders = [train / d for d in ("llvip", "msrs", "roadscene", "tno")]
    found = split_pairs(split, folders)
    assert {d: len(p) for d, p in found.items()} == {"llvip": 6, "msrs": 8, "roadscene": 8, "tno": 8}
    kept = exclude_split(find_pairs(folders), split)
    assert len(kept) == len(find_pairs(folders)) - 30
    assert not {(p.folder.name, p.stem) for p in kept} & {(d, s) for d, ss in split.domains.items() for s in ss}


def test_split_errors(tmp_path, split_data):
    a, b, _ = split_data
    with pytest.raises(FileNotFoundError, match="val_split"):
        load_split(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"domains": {"alpha": []}}))
    with pytest.raises(ValueError, match="domains"):
        load_split(bad)
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"domains": {"alpha": ["zz"]}}))
    with pytest.raises(ValueError, match="not in"):
        split_pairs(missing, [a, b])


def test_trainer_holds_the_split_back_and_scores_relative_to_guided(tmp_path, split_data):
    a, b, split = split_data
    cfg = TrainConfig.for_method("f3net", data=[str(a), str(b)], val_split=str(split), out=str(tmp_path / "run"),
                                 steps=2, batch_size=1, crop=32, workers=0, val_every=2, progress=False,
                                 val_metrics=["VIF", "Qabf", "EN"])
    trainer = Trainer(cfg)
    assert sorted(p.stem for p in trainer.dataset.pairs) == ["a0", "a1", "b1"]
    domains = trainer.validate_domains()
    assert list(domains) == ["alpha", "beta"]
    guided = trainer.guided_metrics()
    # independent route for guided on domain beta: fuse the one held-back pair and score it
    from ivfusion.metrics import evaluate

    ir = np.asarray(Image.open(b / "ir" / "b0.png"), dtype=np.float32)[None, None] / 255
    vis = np.asarray(Image.open(b / "vi" / "b0.png"), dtype=np.float32)[None, None] / 255
    fused = fuse_guided(torch.from_numpy(ir), torch.from_numpy(vis))[0, 0].double().numpy()
    expected = evaluate(np.round(fused * 255).astype(np.uint8), b / "ir" / "b0.png", b / "vi" / "b0.png",
                        ["VIF", "Qabf", "EN"])
    assert guided["beta"] == pytest.approx(expected, rel=1e-9)
    ratios = [domains[d][m] / guided[d][m] for d in domains for m in ("VIF", "Qabf")]
    assert trainer.score_domains(domains) == pytest.approx(sum(ratios) / 4)
    result = trainer.fit()
    assert set(trainer.best["domains"]) == {"alpha", "beta"}
    kinds = {r["kind"] for r in result.history}
    assert {"val", "val:alpha", "val:beta"} <= kinds
    assert "--val-split" in trainer.reproduce_command()
    entry = trainer.manifest_fields()
    assert set(entry["metrics"]) == {"alpha (" + str(split) + " split)", "beta (" + str(split) + " split)"}
    # a dataset that contains held-back pairs is refused
    with pytest.raises(ValueError, match="validation split"):
        Trainer(cfg, dataset=PairedFusionDataset([str(a), str(b)], crop=32, augment=cfg.augment, seed=cfg.seed))


def test_val_max_side_shrinks_validation_images(tmp_path, split_data):
    a, b, split = split_data
    cfg = TrainConfig.for_method("f3net", data=[str(a), str(b)], val_split=str(split), val_max_side=20,
                                 out=str(tmp_path / "run"), steps=1, batch_size=1, crop=32, workers=0, progress=False)
    trainer = Trainer(cfg)
    sets = trainer.validation.pairs()
    assert tuple(sets["beta"][0][1].shape[-2:]) == (12, 20)  # 36x60 -> longer side 20
    assert torch.equal(sets["beta"][0][3], sets["beta"][0][3].round())  # 8-bit levels for the metrics


def test_warm_start_loads_the_given_weights(tmp_path, split_data):
    from safetensors.torch import save_file

    a, b, _ = split_data
    torch.manual_seed(123)
    source = create_model("f3net")
    path = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    cfg = TrainConfig.for_method("f3net", data=[str(a)], out=str(tmp_path / "run"), steps=1, crop=32, workers=0,
                                 init_weights=str(path), progress=False)
    trainer = Trainer(cfg)
    for k, v in source.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[k], v), k


def test_ir_bright_mask_and_refinefuse_mask_rules():
    ir = np.full((20, 20), 60, np.uint8)
    ir[5:8, 5:8] = 250  # a hot target
    mask = ir_bright_mask(ir)
    assert mask.sum() == 9 and mask[5:8, 5:8].all()

    rng = np.random.default_rng(0)
    # flat scene: visible perfectly flat, infrared with 1-grey-level noise, one hot target
    vis = torch.full((1, 1, 32, 32), 0.7, dtype=torch.float64)
    ir_t = torch.from_numpy(0.3 + rng.integers(-1, 2, (1, 1, 32, 32)) / 255.0)
    ir_t[..., 10:14, 10:14] = 0.95
    sal = torch.zeros_like(ir_t)
    sal[..., 10:14, 10:14] = 1.0
    noise_wins = contrast_mask(ir_t, vis)
    margin = contrast_mask(ir_t, vis, ratio=4.0, floor=(4 / 255) ** 2)
    far = (slice(None), slice(None), slice(24, 32), slice(24, 32))  # away from the target
    assert noise_wins[far].mean() > 0.9  # the design's fallback hands the flat sky to the infrared
    assert margin[far].sum() == 0  # the margin gives it to the visible image
    f = torch.full_like(vis, 0.5)
    _, t_margin = refinefuse_loss(f, ir_t, vis, mask="margin")
    _, t_explicit = refinefuse_loss(f, ir_t, vis, mask_ir=margin)
    assert t_margin["intensity"] == t_explicit["intensity"]
    _, t_ms = refinefuse_loss(f, ir_t, vis, mask="margin_saliency", saliency_ir=sal)
    _, t_ms_explicit = refinefuse_loss(f, ir_t, vis, mask_ir=torch.maximum(margin, sal))
    assert t_ms["intensity"] == t_ms_explicit["intensity"]
    _, t_sal = refinefuse_loss(f, ir_t, vis, mask="saliency", saliency_ir=sal)
    _, t_sal_explicit = refinefuse_loss(f, ir_t, vis, mask_ir=sal)
    assert t_sal["intensity"] == t_sal_explicit["intensity"]
    with pytest.raises(ValueError, match="saliency_ir"):
        refinefuse_loss(f, ir_t, vis, mask="saliency")
    with pytest.raises(ValueError, match="mask"):
        refinefuse_loss(f, ir_t, vis, mask="nope")
    with pytest.raises(ValueError, match="saliency"):
        TrainConfig.for_method("refinefuse", data=["x"], loss={"mask": "margin_saliency"})


def test_refinefuse_margin_max_targets_the_brighter_source_where_neither_wins():
    # left half: both flat (sky: bright visible, dark noiseless infrared) -> target max = visible;
    # right half: a hot infrared target on a flat visible background -> infrared (salient).
    ir = torch.full((1, 1, 16, 32), 0.2, dtype=torch.float64)
    vis = torch.full_like(ir, 0.8)
    ir[..., 4:12, 20:28] = 0.95
    sal = (ir > 0.9).to(ir.dtype)
    fused = torch.full_like(ir, 0.5)
    _, terms = refinefuse_loss(fused, ir, vis, mask="margin_max", saliency_ir=sal)
    target = torch.maximum(ir, vis)  # no pixel has a clear contrast winner except via saliency
    ir_win = contrast_mask(ir, vis, ratio=4.0, floor=(4 / 255) ** 2).bool() | sal.bool()
    vis_win = contrast_mask(vis, ir, ratio=4.0, floor=(4 / 255) ** 2).bool() & ~ir_win
    rest = ~(ir_win | vis_win)
    expected = ((fused - ir).abs() * ir_win).mean() + ((fused - vis).abs() * vis_win).mean() + (
        (fused - target).abs() * rest).mean()
    assert terms["intensity"].item() == pytest.approx(expected.item(), abs=1e-12)
    assert rest[..., :, :8].all()  # the flat left part falls to max(I, V)
    # a fused image equal to max(I, V) pays no intensity cost on the flat region
    _, t2 = refinefuse_loss(target.clone(), ir, vis, mask="margin_max", saliency_ir=sal)
    assert t2["intensity"].item() < terms["intensity"].item()
