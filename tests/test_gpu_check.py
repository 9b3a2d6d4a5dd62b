"""The CPU-side parts of benchmarks/gpu_check.py (the script has never run on a GPU)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from .conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def test_precision_errors_against_fp32_on_cpu(rng):
    import ivfusion

    pairs = [(rng.integers(0, 256, (24, 32), dtype=np.uint8), rng.integers(0, 256, (24, 32), dtype=np.uint8))]
    errors = gpu_check.precision_errors("f3net", pairs, "cpu")
    assert set(errors) == {"bf16"}  # fp16 is a CUDA-only precision
    e = errors["bf16"]
    ir, vis = pairs[0]
    ref = ivfusion.fuse(ir, vis, method="f3net", device="cpu", precision="fp32").astype(int)
    got = ivfusion.fuse(ir, vis, method="f3net", device="cpu", precision="bf16").astype(int)
    d = np.abs(got - ref)
    assert e == {"max": int(d.max()), "mean": pytest.approx(float(d.mean())), "moved": pytest.approx(float((d > 0).mean()))}


def test_forward_timing_modes_on_cpu():
    for mode in ("eager", "channels_last"):
        r = gpu_check.forward_ms("f3net", 16, 24, "cpu", repeats=2, mode=mode)
        assert r["ms"] > 0 and r["compile_s"] == 0.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_refuses_cuda_without_a_device(capsys):
    assert gpu_check.main(["--parts", "speed"]) == 2
    assert "--device cpu" in capsys.readouterr().err
