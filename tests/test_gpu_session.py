"""benchmarks/gpu_session.py, the one command of a lent GPU session, dry-run on the CPU at tiny sizes
(so that the script cannot rot before a GPU comes), and the CUDA memory reading it relies on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import types

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ivfusion import _memory
from ivfusion.models import create_model

from .conftest import REPO_ROOT


def _domain(root, name, n, rng):
    (root / name / "ir").mkdir(parents=True)
    (root / name / "vi").mkdir()
    for k in range(n):
        ir = rng.integers(0, 256, (40, 52), dtype=np.uint8)
        Image.fromarray(ir).save(root / name / "ir" / f"{name}{k}.png")
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(root / name / "vi" / f"{name}{k}.png")


@pytest.mark.slow
def test_gpu_session_dry_run_on_the_cpu(tmp_path, rng):
    train = tmp_path / "data" / "data" / "ivif" / "train"
    for name in ("alpha", "beta"):
        _domain(train, name, 3, rng)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"name": "tiny", "domains": {"alpha": ["alpha0"], "beta": ["beta0"]}}))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_session.py"), "--dry-run", "--device", "cpu",
           "--data", str(tmp_path / "data"), "--val-split", str(split), "--out", str(out), "--budget", "1500",
           "--check-s", "200", "--max-steps", "2", "--calibration-steps", "1", "--min-network-s", "1"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.md", "logs.tar.gz", "session.json", "session.log",
                                                     "weights.tar"]
    record = json.loads((out / "session.json").read_text())
    assert record["folders"] == ["alpha", "beta"] and record["dry_run"]
    assert {part: r["status"] for part, r in record["check"].items()} == {"precision": "exit 0", "speed": "exit 0"}
    check = (out / "gpu_check.md").read_text()
    assert "| f3net | bf16 |" in check and "| f3net | 48x32 |" in check
    training = record["training"]
    assert list(training) == ["refinefuse", "fiscnet", "f3net", "didfuse"]
    for method, rec in training.items():
        assert "error" not in rec and "skipped" not in rec, (method, rec)
        assert rec["pairs"] == 4 and rec["steps"] == rec["planned_steps"] == 2 and rec["step_s"] > 0
        assert np.isfinite(rec["start_score"]) and np.isfinite(rec["best_score"])
        assert "ivfusion train " + method in rec["reproduce"]
    # The archives: each exported weight loads into its network, with its manifest entry.
    with tarfile.open(out / "weights.tar") as tar:
        names = sorted(tar.getnames())
        assert names == sorted(f"{m}/{m}{suffix}" for m in training for suffix in (".ivif.entry.json", "_ivif.safetensors"))
        for method in training:
            data = tar.extractfile(f"{method}/{method}_ivif.safetensors").read()
            path = tmp_path / f"{method}.safetensors"
            path.write_bytes(data)
            create_model(method).load_state_dict(load_file(path), strict=False)
            entry = json.loads(tar.extractfile(f"{method}/{method}.ivif.entry.json").read())
            assert entry[f"{method}.ivif"]["method"] == method
    with tarfile.open(out / "logs.tar.gz") as tar:
        logs = set(tar.getnames())
    assert {f"{m}/{f}" for m in training for f in ("summary.json", "train_log.csv", "config.json")} <= logs
    # The GPU recipes: the papers' crops and batch sizes (scaled down only by --dry-run), warm starts.
    config = json.loads(tarfile.open(out / "logs.tar.gz").extractfile("refinefuse/config.json").read())
    assert config["init_weights"] == "refinefuse.ivif" and config["data_on_device"] and config["precision"] == "bf16"


def test_gpu_session_recipes_follow_the_papers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_session", REPO_ROOT / "benchmarks" / "gpu_session.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    plans = {p.method: p for p in module.network_plans()}
    assert list(plans) == ["refinefuse", "fiscnet", "f3net", "didfuse"]  # the priorities
    from ivfusion.train import TrainConfig

    cfg = {m: TrainConfig.for_method(m, **p.overrides) for m, p in plans.items()}
    assert (cfg["refinefuse"].crop, cfg["refinefuse"].batch_size, cfg["refinefuse"].optimizer) == (256, 8, "sgd")
    assert (cfg["refinefuse"].lr, cfg["refinefuse"].min_lr) == (1e-3, 1e-5)
    assert (cfg["fiscnet"].crop, cfg["fiscnet"].batch_size, cfg["fiscnet"].lr) == (128, 4, 1e-4)
    assert (cfg["f3net"].crop, cfg["f3net"].batch_size) == (256, 4)
    assert plans["didfuse"].fixed_steps == cfg["didfuse"].steps == 960 and plans["didfuse"].overrides == {}
    assert sum(p.share for p in plans.values()) == pytest.approx(1.0)
    assert max(plans.values(), key=lambda p: p.share).method == "refinefuse"


def test_prepare_carry_refuses_an_unignored_folder(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_session.py"), "--prepare-carry",
                           str(REPO_ROOT / "not_ignored_carry")], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=120)
    shared = REPO_ROOT.parent / "shared" / "data" / "ivif"
    if not shared.is_dir():
        assert "no training data" in proc.stderr
    else:
        assert proc.returncode != 0 and "add /not_ignored_carry/ to .gitignore" in proc.stderr
    assert not (REPO_ROOT / "not_ignored_carry").exists()  # nothing copied


def test_available_cuda_bytes_counts_the_cache_and_the_memory_fraction(monkeypatch):
    fake = types.SimpleNamespace(mem_get_info=lambda d: (10_000, 100_000), memory_allocated=lambda d: 3_000,
                                 memory_reserved=lambda d: 5_000, get_per_process_memory_fraction=lambda d: 1.0)
    monkeypatch.setattr(torch, "cuda", fake)
    assert _memory.available_cuda_bytes(0) == 10_000 + 2_000  # driver's free + the allocator's unused blocks
    fake.get_per_process_memory_fraction = lambda d: 0.1
    assert _memory.available_cuda_bytes(0) == 10_000 - 3_000  # 10 % of 100,000, less what is in use
    fake.get_per_process_memory_fraction = lambda d: 0.01
    assert _memory.available_cuda_bytes(0) == 0
