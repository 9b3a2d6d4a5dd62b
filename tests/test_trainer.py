"""Trainer: paper recipes and schedules, config round trips, smoke training of every method (the
loss goes down), bit-exact resume, checkpoint format, validation, export and the CLI."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ivfusion.cli import main
from ivfusion.models import create_model
from ivfusion.train import (
    LOSS_TERMS,
    RECIPES,
    PairedFusionDataset,
    Trainer,
    TrainConfig,
    data_folder_name,
    lr_factor,
)
from ivfusion.train import DATA_TERMS

from .conftest import VAL_DIR, require, smooth_image

METHODS = ["didfuse", "f3net", "fiscnet", "refinefuse"]


def _pairs(root, n, h, w, seed):
    rng = np.random.default_rng(seed)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    for k in range(n):
        ir = smooth_image(rng, h, w)
        vis = np.clip(255 - ir.astype(int) * 3 // 4 + rng.integers(0, 40, (h, w)), 0, 255).astype(np.uint8)
        Image.fromarray(ir).save(root / "ir" / f"p{k}.png")
        Image.fromarray(np.stack([vis, vis // 2, vis], -1)).save(root / "vi" / f"p{k}.png")  # colour visible
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("train_data")
    return {
        "one": _pairs(base / "one", 1, 64, 64, 0),
        "three": _pairs(base / "three", 3, 48, 56, 1),
        "val": _pairs(base / "val", 2, 40, 40, 2),
    }


def _train_rows(history):
    return [r for r in history if r["kind"] == "train"]


# ------------------------------------------------------------------------------ recipes and config


def test_paper_recipes_and_schedules():
    steps = {m: TrainConfig.for_method(m).steps for m in METHODS}
    assert steps == {"didfuse": 960, "fiscnet": 100_000, "f3net": 27_000, "refinefuse": 40_800}
    did = TrainConfig.for_method("didfuse")
    assert (did.batch_size, did.crop, did.crop_mode, did.augment, did.optimizer) == (24, 128, "center", "none", "adam")
    # milestones at 1/3 and 2/3 = epochs 40 and 80 of 120 at 8 iterations per epoch
    assert did.lr_at(319, 960) == pytest.approx(1e-3) and did.lr_at(320, 960) == pytest.approx(1e-4)
    assert did.lr_at(639, 960) == pytest.approx(1e-4) and did.lr_at(640, 960) == pytest.approx(1e-5)
    fis = TrainConfig.for_method("fiscnet")
    assert (fis.batch_size, fis.crop, fis.augment, fis.saliency, fis.seed) == (4, 128, "dihedral", "vsm", 10)
    assert fis.lr_at(14_999, 100_000) == pytest.approx(1e-4)
    assert fis.lr_at(15_000, 100_000) == pytest.approx(7.5e-5)
    assert fis.lr_at(25_000, 100_000) == pytest.approx(5.625e-5)
    assert fis.lr_at(150, 1000) == pytest.approx(7.5e-5) and fis.lr_at(149, 1000) == pytest.approx(1e-4)  # scaled
    for m in ("f3net", "refinefuse"):
        c = TrainConfig.for_method(m)
        assert c.lr_at(0, c.steps) == pytest.approx(1e-3)
        assert c.lr_at(c.steps // 2, c.steps) == pytest.approx((1e-3 + 1e-5) / 2)
        assert c.lr_at(c.steps, c.steps) == pytest.approx(1e-5)
    rf = TrainConfig.for_method("refinefuse")
    assert (rf.optimizer, rf.momentum, rf.nesterov, rf.batch_size, rf.crop) == ("sgd", 0.9, False, 8, 256)
    assert lr_factor(3, 10, "constant") == 1.0
    # epochs replace the recipe's step count: 3 epochs of 10 pairs at batch 4 = 9 steps
    c = TrainConfig.for_method("f3net", epochs=3)
    assert c.steps is None and c.total_steps(10) == 9


def test_config_round_trip_and_errors(tmp_path):
    cfg = TrainConfig.for_method("refinefuse", data=[str(tmp_path)], out=str(tmp_path / "run"), steps=5,
                                 loss={"lam": 4.0}, grad_clip=1.0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    written = cfg.save(tmp_path / "run")
    assert TrainConfig.load(tmp_path / "run" / "config.json") == cfg
    try:
        import yaml  # noqa: F401
    except ImportError:
        assert [p.name for p in written] == ["config.json"]
    else:
        assert TrainConfig.load(tmp_path / "run" / "config.yaml") == cfg
    assert TrainConfig.load(tmp_path / "run" / "config.json", lr=0.5).lr == 0.5
    bad = [({"lr": -1.0}, "lr"), ({"crop_mode": "middle"}, "crop_mode"), ({"steps": 0}, "steps"),
           ({"optimizer": "lamb"}, "optimizer"), ({"select": "VIF+Foo"}, "metrics"), ({"val_every": "often"}, "val_every"),
           ({"export": "f3net.x"}, "export"), ({"milestones": [1.5]}, "milestones")]
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            TrainConfig.for_method("refinefuse", **kwargs)
    with pytest.raises(ValueError, match="unknown field"):
        TrainConfig.from_dict({"method": "f3net", "learning_rate": 1})
    with pytest.raises(ValueError, match="method"):
        TrainConfig.for_method("unet")
    with pytest.raises(ValueError, match="not both"):
        TrainConfig.for_method("f3net", steps=3, epochs=2)
    with pytest.raises(ValueError, match="saliency"):
        TrainConfig.for_method("fiscnet", saliency=None)


def test_optimisers_follow_the_recipes(folders, tmp_path):
    for m in METHODS:
        tr = Trainer(TrainConfig.for_method(m, data=[str(folders["one"])], out=str(tmp_path / m), steps=4, crop=32,
                                            workers=0))
        opt = tr.optimizer
        rec = RECIPES[m]
        if m == "refinefuse":
            assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.9 and not opt.defaults["nesterov"]
        else:
            assert type(opt) is torch.optim.Adam and opt.defaults["betas"] == (0.9, 0.999)
        assert opt.param_groups[0]["lr"] == pytest.approx(rec["lr"]) and opt.defaults["weight_decay"] == 0.0
        if m == "fiscnet":  # parameters kept only for strict loading of official weights are not trained
            n_opt = sum(p.numel() for p in tr.params)
            assert n_opt == 309_568
    ds = PairedFusionDataset(folders["one"], crop=32, workers=1)
    with pytest.raises(ValueError, match="loss"):
        Trainer(TrainConfig.for_method("f3net", out=str(tmp_path / "x"), steps=2, crop=32, augment="none",
                                       loss={"alpha": 1}), dataset=ds)
    with pytest.raises(ValueError, match="augment"):  # a dataset built with other settings than the config's
        Trainer(TrainConfig.for_method("f3net", out=str(tmp_path / "x"), steps=2, crop=32), dataset=ds)


# ------------------------------------------------------------------------------ smoke training


LRS = {"didfuse": 1e-3, "f3net": 1e-3, "fiscnet": 1e-3, "refinefuse": 0.05}


@pytest.mark.parametrize("method", METHODS)
def test_smoke_training_loss_goes_down(method, folders, tmp_path):
    # a fixed batch (one pair, centre crop, no augmentation): the loss must fall within a few steps
    cfg = TrainConfig.for_method(method, data=[str(folders["one"])], out=str(tmp_path / "run"), steps=5,
                                 batch_size=2, crop=64, crop_mode="center", augment="none", lr=LRS[method],
                                 schedule="constant", workers=0, log_every=1, progress=False)
    result = Trainer(cfg).fit()
    losses = [r["loss"] for r in _train_rows(result.history)]
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses
    assert result.finished and result.step == 5
    assert (tmp_path / "run" / "last.pt").is_file() and not (tmp_path / "run" / "best.pt").exists()
    row = _train_rows(result.history)[0]
    assert set(row) >= {"loss", "lr", "epoch", *LOSS_TERMS[method]} and row["lr"] == pytest.approx(LRS[method])


# ------------------------------------------------------------------------------ resume


@pytest.mark.parametrize("method", ["didfuse", "refinefuse"])
def test_resume_reproduces_the_uninterrupted_run_exactly(method, folders, tmp_path):
    def config(out):
        return TrainConfig.for_method(method, data=[str(folders["three"])], val=str(folders["val"]), out=str(out),
                                      steps=6, batch_size=2, crop=32, crop_mode="random", augment="dihedral",
                                      schedule="cosine", min_lr=1e-4, lr=LRS[method], workers=0, log_every=1,
                                      val_every=2, ckpt_every=2, val_metrics=["VIF", "Qabf"], progress=False)

    full = Trainer(config(tmp_path / "a")).fit()
    first = Trainer(config(tmp_path / "b")).fit(until_step=3)  # interrupted after step 3, last.pt is step 2
    assert not first.finished and first.step == 3
    resumed_trainer = Trainer(config(tmp_path / "b"), resume=True)
    assert resumed_trainer.step == 2
    resumed = resumed_trainer.fit()
    assert resumed.finished

    def rows(history, kinds=("train", "val")):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in history if r["kind"] in kinds and r["step"] > 2]

    assert rows(resumed.history) == rows(full.history)  # bit-identical floats
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["best"] == b["best"] and a["step"] == b["step"] == 6
    # the resumed run's log files hold each step once, like the uninterrupted run's
    with open(tmp_path / "a" / "train_log.csv") as fa, open(tmp_path / "b" / "train_log.csv") as fb:
        strip = lambda f: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(f)]  # noqa: E731
        assert strip(fa) == strip(fb)


def test_extend_trains_a_finished_run_on_to_a_new_length(folders, tmp_path):
    def config(steps):
        return TrainConfig.for_method("f3net", data=[str(folders["three"])], out=str(tmp_path / "run"), steps=steps,
                                      batch_size=2, crop=32, schedule="cosine", min_lr=1e-5, workers=0, log_every=1,
                                      progress=False)

    first = Trainer(config(3)).fit()
    assert first.finished and first.step == 3
    with pytest.raises(ValueError, match="--extend"):
        Trainer(config(5), resume=True)
    with pytest.raises(ValueError, match="shorter"):
        Trainer(config(2), resume=True, extend=True)
    with pytest.raises(ValueError, match="resume=True"):
        Trainer(config(5), extend=True)
    trainer = Trainer(config(5), resume=True, extend=True)
    assert trainer.step == 3 and trainer.segments == [3, 5]
    result = trainer.fit()
    assert result.finished and result.step == 5
    assert [r["step"] for r in result.history if r["kind"] == "train"] == [4, 5]
    logged = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["kind"] == "train"] == [1, 2, 3, 4, 5]
    # from step 4 on the learning rate follows the 5-step cosine schedule
    lrs = {r["step"]: r["lr"] for r in logged if r["kind"] == "train"}
    assert lrs[5] == pytest.approx(lr_factor(4, 5, "cosine", min_ratio=1e-2) * 1e-3)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 5
    command = trainer.reproduce_command()
    assert "--steps 3 " in command
    assert command.endswith(f"&& ivfusion train f3net --out {tmp_path / 'run'} --resume --extend --steps 5")
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["segments"] == [3, 5] and saved["total_steps"] == 5


# ------------------------------------------------------------------------------ checkpoints, validation, export


def test_checkpoint_validation_rules_and_export(folders, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig.for_method("didfuse", data=[str(folders["three"])], val=str(folders["val"]), out=str(out),
                                 steps=3, batch_size=2, crop=32, workers=0, val_every=1, progress=False,
                                 export="didfuse.test")
    result = Trainer(cfg).fit()
    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    for key in ("model", "method", "config", "step", "optimizer", "scheduler", "scaler", "rng", "manifest"):
        assert key in ckpt
    assert ckpt["method"] == "didfuse" and ckpt["step"] == result.best_step
    assert ckpt["config"] == cfg.to_dict()
    vals = [r for r in result.history if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [1, 2, 3]
    best = max(vals, key=lambda r: r["VIF"] + r["Qabf"])
    assert result.best_step == best["step"] and result.best_score == pytest.approx(best["VIF"] + best["Qabf"])
    assert set(result.best_metrics) == {"VIF", "Qabf", "MI", "SSIM", "EN", "SF"}
    # DIDFuse: every fusion rule scored on the best checkpoint; the sum rule repeats the best validation
    assert set(result.rule_metrics) == {"sum", "average", "l1_norm"} and result.best_rule in result.rule_metrics
    assert result.rule_metrics["sum"] == pytest.approx(result.best_metrics)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_step"] == result.best_step and summary["best_rule"] == result.best_rule
    # export: the safetensors file loads into a fresh network and equals the best checkpoint
    exported = result.export
    assert exported.path == out / "didfuse_test.safetensors"
    net = create_model("didfuse", weights=str(exported.path))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in ckpt["model"].items())
    entry = json.loads((out / "didfuse.test.entry.json").read_text())["didfuse.test"]
    assert entry["sha256"] == exported.sha256 and entry["recipe"]["iterations"] == 3
    assert entry["recipe"]["batch"] == 2 and entry["recipe"]["crop"] == 32 and entry["recipe"]["hardware"].startswith("CPU")
    assert entry["training_data"] == [{"folder": "three", "terms": "unknown: check the dataset's terms", "pairs": 3}]
    assert entry["metrics"]["val"] == pytest.approx(result.best_metrics)
    assert entry["reproduce"].startswith("ivfusion train didfuse --data ")


def test_data_folder_names_and_terms():
    assert data_folder_name("/x/shared/data/ivif/train/llvip") == "ivif/train/llvip"
    assert data_folder_name("../shared/data/ivif/val/roadscene/") == "ivif/val/roadscene"
    assert data_folder_name("/somewhere/mine") == "mine"
    assert DATA_TERMS["llvip"] == "non-commercial research only" and DATA_TERMS["tno"] == "CC BY 4.0"
    assert DATA_TERMS["msrs"] == "MIT" and DATA_TERMS["roadscene"].startswith("academic use")


def test_validation_matches_an_independent_evaluation(folders, tmp_path):
    val = require(VAL_DIR)
    from ivfusion.metrics import evaluate
    from ivfusion.train import find_pairs, load_luma

    cfg = TrainConfig.for_method("f3net", data=[str(folders["one"])], val=str(val), val_limit=1, out=str(tmp_path),
                                 steps=1, workers=0, val_metrics=["VIF", "Qabf", "EN"], progress=False)
    trainer = Trainer(cfg)
    got = trainer.validate()
    assert trainer.model.training  # validate() restores the training mode
    pair = find_pairs(val)[0]
    ir = torch.from_numpy(load_luma(pair.ir)).float()[None, None] / 255
    vis = torch.from_numpy(load_luma(pair.vis)).float()[None, None] / 255
    with torch.no_grad():
        fused = trainer.model.eval()(ir, vis)[0, 0].numpy()
    fused8 = np.round(fused.astype(np.float64) * 255).astype(np.uint8)
    expected = evaluate(fused8, pair.ir, pair.vis, ["VIF", "Qabf", "EN"])
    assert got == pytest.approx(expected, rel=1e-9)
    assert trainer.score(got) == pytest.approx(got["VIF"] + got["Qabf"])


def test_fiscnet_dead_initialisation_is_redrawn(folders, tmp_path):
    def live_fraction(trainer):
        ds = trainer.dataset
        batch = {k: torch.stack([ds[key][k] for key in [(0, i) for i in range(3)]]).float() / 255 for k in ("ir", "vis")}
        with torch.no_grad():
            raw = trainer.model.forward_raw(batch["ir"], batch["vis"])
        return float(((raw > 0) & (raw < 1)).float().mean())

    for seed in range(16):
        plain = Trainer(TrainConfig.for_method("fiscnet", data=[str(folders["three"])], out=str(tmp_path), steps=2,
                                               batch_size=3, crop=32, seed=seed, shuffle=False, workers=0,
                                               redraw_dead_init=False))
        if live_fraction(plain) < 0.01:
            break
    else:
        pytest.skip("no dead initialisation among 16 seeds with this torch version")
    fixed = Trainer(TrainConfig.for_method("fiscnet", data=[str(folders["three"])], out=str(tmp_path), steps=2,
                                           batch_size=3, crop=32, seed=seed, shuffle=False, workers=0))
    assert fixed.init_draws > 1 and live_fraction(fixed) >= 0.01
    assert plain.init_draws == 1


# ------------------------------------------------------------------------------ CLI


def test_cli_train_resume_and_errors(folders, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "f3net", "--data", str(folders["three"]), "--val", str(folders["val"]), "--out", str(out),
            "--steps", "2", "--batch-size", "2", "--crop", "32", "--workers", "0", "--val-every", "1",
            "--no-progress", "--set", "val_metrics=[\"VIF\", \"Qabf\"]", "--export", "f3net.cli"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "best VIF+Qabf" in text and "exported" in text
    for name in ("config.json", "last.pt", "best.pt", "train_log.csv", "train_log.jsonl", "summary.json",
                 "f3net_cli.safetensors", "f3net.cli.entry.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "config.json").read_text())
    assert saved["steps"] == 2 and saved["crop"] == 32 and saved["lr"] == 1e-3 and saved["val_metrics"] == ["VIF", "Qabf"]
    lines = (out / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["val", "train", "val"]  # log_every 10: the last step only
    # resuming a finished run changes nothing and succeeds
    assert main(["train", "f3net", "--out", str(out), "--resume", "--no-progress"]) == 0
    # a resumed run must keep the training fields
    assert main(["train", "f3net", "--out", str(out), "--resume", "--lr", "0.5", "--no-progress"]) == 1
    assert "differs" in capsys.readouterr().err
    (tmp_path / "c.json").write_text(json.dumps({"method": "didfuse"}))
    assert main(["train", "f3net", "--data", str(folders["one"]), "--out", str(tmp_path / "x"),
                 "--config", str(tmp_path / "c.json")]) == 1
    assert "didfuse" in capsys.readouterr().err


def test_cli_train_stop_after_then_resume(folders, tmp_path, capsys):
    out = tmp_path / "stop"
    args = ["train", "f3net", "--data", str(folders["three"]), "--out", str(out), "--steps", "3", "--batch-size", "2",
            "--crop", "32", "--workers", "0", "--no-progress"]
    assert main([*args, "--stop-after", "0"]) == 1
    assert "--stop-after: expected a step >= 1, got 0" in capsys.readouterr().err
    assert main([*args, "--stop-after", "1"]) == 0
    assert "stopped after step 1 of 3" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1
    assert not (out / "summary.json").exists()
    assert main(["train", "f3net", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "done: 3 steps" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3 and (out / "summary.json").is_file()


# ------------------------------------------------------------------------------ device data path, time limit


def test_data_on_device_trains_exactly_as_the_loader_path(folders, tmp_path):
    results = []
    for on_device in (False, True):
        cfg = TrainConfig.for_method("fiscnet", data=[str(folders["three"])], out=str(tmp_path / str(on_device)),
                                     steps=3, batch_size=2, crop=32, workers=0, progress=False, log_every=1,
                                     data_on_device=on_device)
        trainer = Trainer(cfg)
        assert trainer.data_on_device is on_device
        result = trainer.fit()
        results.append((_train_rows(result.history), trainer.model.state_dict()))
    (rows_a, state_a), (rows_b, state_b) = results
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert TrainConfig.for_method("f3net").data_on_device is None  # auto: on for CUDA only
    with pytest.raises(ValueError, match="data_on_device"):
        TrainConfig.for_method("f3net", data_on_device="yes")


def _ticking_budget(seconds):
    """A TimeBudget whose clock advances one second per reading, with steps of 0.1 s and validations of
    0.2 s whatever they really take (the test must not depend on the machine's speed)."""
    from ivfusion.train._runtime import TimeBudget

    class Ticking(TimeBudget):
        def record_step(self, seconds):
            super().record_step(0.1)

        def record_closing(self, seconds):
            super().record_closing(0.2)

    ticks = iter(range(10**6))
    return Ticking(seconds, clock=lambda: float(next(ticks)))


def test_time_limit_stops_validates_checkpoints_and_exports(folders, tmp_path, monkeypatch):
    import ivfusion.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "TimeBudget", _ticking_budget)
    out = tmp_path / "timed"
    cfg = TrainConfig.for_method("f3net", data=[str(folders["three"])], val=str(folders["val"]), out=str(out),
                                 steps=8, batch_size=2, crop=32, workers=0, progress=False, val_every=2,
                                 val_metrics=["VIF", "Qabf"], export="f3net.timed")
    # Clock readings 1, 2, 3, 4 before steps 1, 2, 3, 4: 4 + 0.1 + 0.2 > 3.5, so step 4 is not taken.
    result = Trainer(cfg).run(time_limit=3.5)
    assert (result.step, result.finished, result.timed_out) == (3, False, True)
    vals = [r["step"] for r in result.history if r["kind"] == "val"]
    assert vals == [2, 3]  # the regular validation at step 2, and the stop step
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["steps"], summary["total_steps"], summary["stopped"]) == (3, 8, "time limit")
    assert summary["best_step"] in (2, 3) and (out / "f3net_timed.safetensors").is_file()
    # The run resumes from the stop and finishes.
    monkeypatch.undo()
    done = Trainer(cfg, resume=True).run()
    assert (done.step, done.finished, done.timed_out) == (8, True, False)
    assert json.loads((out / "summary.json").read_text())["stopped"] is None


def test_time_budget_accounts_for_the_closing_validation():
    from ivfusion.train._runtime import TimeBudget

    now = [0.0]
    budget = TimeBudget(10.0, clock=lambda: now[0])
    assert budget.limited and not budget.exhausted()
    budget.record_step(2.0)
    budget.record_closing(3.0)
    now[0] = 5.0
    assert not budget.exhausted()  # 5 + 2 + 3 = 10: still fits
    now[0] = 5.5
    assert budget.exhausted() and not budget.exhausted(closing=False)
    assert not TimeBudget(None).exhausted() and not TimeBudget(None).limited
    for bad in (-1, float("nan"), float("inf"), "10", True):
        with pytest.raises(ValueError, match="time_limit: expected a number of seconds >= 0"):
            TimeBudget(bad)


def test_cli_train_time_limit(folders, tmp_path, capsys):
    out = tmp_path / "budget"
    args = ["train", "f3net", "--data", str(folders["three"]), "--out", str(out), "--steps", "3", "--batch-size", "2",
            "--crop", "32", "--workers", "0", "--no-progress", "--export", "f3net.budget"]
    with pytest.raises(SystemExit):
        main([*args, "--time-limit", "-5"])
    assert "--time-limit: expected a number of seconds >= 0, got '-5'" in capsys.readouterr().err
    assert main([*args, "--time-limit", "0"]) == 0  # the budget is spent before the first step
    text = capsys.readouterr().out
    assert "time limit: stopped after step 0 of 3" in text and "--resume" in text
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 0 and (out / "f3net_budget.safetensors").is_file()
    assert main(["train", "f3net", "--out", str(out), "--resume", "--no-progress", "--time-limit", "600"]) == 0
    assert "done: 3 steps" in capsys.readouterr().out
