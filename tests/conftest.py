"""Shared fixtures. ``../shared`` (data and reference fixtures) sits next to the repository root;
tests that need it skip when it is absent."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The shared fixtures: ``../shared`` next to the checkout, or ``IVFUSION_SHARED`` (the GPU session
#: points it at the copy of the data it carries to the device machine).
SHARED = Path(os.environ.get("IVFUSION_SHARED") or REPO_ROOT.parent / "shared")
VAL_DIR = SHARED / "data" / "ivif" / "val" / "roadscene"
REFERENCE_DIR = SHARED / "reference"

torch.set_num_threads(min(2, torch.get_num_threads()))


def signal_at_marker(code: str, args: Sequence[str], marker: str, sig: int, timeout: float = 60
                     ) -> subprocess.Popen:
    """Run ``python -c code *args``, wait until it prints the line ``marker``, send it ``sig`` and
    wait for it to end; the finished process (killed for good if it lingers)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        line = proc.stdout.readline().strip()
        assert line == marker, (line, proc.stderr.read()[-2000:] if proc.poll() is not None else "")
        os.kill(proc.pid, sig)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    return path


def reference_file(*parts: str) -> Path:
    """A file of ``../shared/reference`` (official weights, golden outputs); skips the test if absent."""
    return require(REFERENCE_DIR.joinpath(*parts))


@pytest.fixture
def cuda_device() -> str:
    """The device of the CUDA tests (their names contain ``cuda``; ``benchmarks/gpu_check.py --parts
    tests`` runs them): ``"cuda"`` where available, else skipped. ``IVFUSION_CUDA_TESTS_ON_CPU=1``
    runs them on the CPU instead, a dry run of their logic before a GPU is lent (the CUDA-only parts
    of a test then skip)."""
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("IVFUSION_CUDA_TESTS_ON_CPU") == "1":
        return "cpu"
    pytest.skip("needs CUDA (IVFUSION_CUDA_TESTS_ON_CPU=1 dry-runs it on the CPU)")


def cuda_only(device: str) -> None:
    """Skip the rest of a CUDA test on its CPU dry run."""
    if device != "cuda":
        pytest.skip("CUDA-only check (CPU dry run)")


@pytest.fixture
def seeded() -> None:
    """Seed torch's global generator (for tests that build randomly initialised modules)."""
    torch.manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def val_pair() -> tuple:
    """(ir_path, vis_path) of the first validation pair (8-bit grey IR, RGB visible JPEGs)."""
    d = require(VAL_DIR)
    ir = sorted((d / "ir").iterdir())[0]
    return ir, d / "vi" / ir.name


def smooth_image(rng: np.random.Generator, h: int, w: int, channels: int = 0) -> np.ndarray:
    """A random but spatially smooth uint8 image (more realistic than white noise)."""
    shape = (h, w, channels) if channels else (h, w)
    coarse = rng.random((max(h // 8, 2), max(w // 8, 2)) + shape[2:])
    t = torch.from_numpy(coarse).float()
    t = t.permute(2, 0, 1)[None] if channels else t[None, None]
    up = torch.nn.functional.interpolate(t, size=(h, w), mode="bicubic", align_corners=False)[0]
    arr = up.permute(1, 2, 0).numpy() if channels else up[0].numpy()
    noise = rng.normal(0, 0.03, arr.shape)
    return np.clip((arr + noise) * 255, 0, 255).round().astype(np.uint8)


@pytest.fixture
def pair_files(tmp_path, rng) -> tuple:
    """(ir_path, vis_path): a small grey PNG and a colour JPEG of the same size (30x44) in ``tmp_path``."""
    from ivfusion.io import write_image

    ir, vis = tmp_path / "ir.png", tmp_path / "vis.jpg"
    write_image(ir, smooth_image(rng, 30, 44))
    write_image(vis, smooth_image(rng, 30, 44, channels=3))
    return ir, vis
