"""The CUDA path end to end: fusion in fp32/fp16/bf16 against the CPU, auto-tiling under a memory
limit, folders, the training step (bf16, channels-last, data on the device). Every test name holds
``cuda`` (``benchmarks/gpu_check.py --parts tests`` selects them with ``-k cuda``); they skip without
a GPU, and ``IVFUSION_CUDA_TESTS_ON_CPU=1`` dry-runs their logic on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ivfusion
from ivfusion.train import DevicePairs, PairedFusionDataset, StepBatchSampler, TrainConfig, Trainer

from .conftest import cuda_only, smooth_image
from .test_trainer import _pairs

NETWORKS = ["didfuse", "f3net", "fiscnet", "refinefuse"]


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(7)
    ir = smooth_image(rng, 120, 160)
    vis = smooth_image(rng, 120, 160, channels=3)
    return ir, vis


def _grey_levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.mark.parametrize("method", NETWORKS)
def test_cuda_fuse_matches_the_cpu_in_every_precision(method, pair, cuda_device):
    ir, vis = pair
    ref = ivfusion.fuse(ir, vis, method=method, device="cpu", precision="fp32")
    # fp32 on CUDA (cuDNN may use TF32 for convolutions, as PyTorch allows by default).
    d = _grey_levels(ivfusion.fuse(ir, vis, method=method, device=cuda_device, precision="fp32"), ref)
    assert d.mean() < 0.3 and d.max() <= 4, (method, d.mean(), d.max())
    default = ivfusion.fuse(ir, vis, method=method, device=cuda_device)  # fp16 on CUDA where the network allows it
    assert default.shape == ref.shape and default.dtype == np.uint8
    cuda_only(cuda_device)
    for precision, mean_bound, p99_bound in (("fp16", 0.5, 2), ("bf16", 1.0, 4)):
        d = _grey_levels(ivfusion.fuse(ir, vis, method=method, device=cuda_device, precision=precision), ref)
        assert d.mean() < mean_bound and np.percentile(d, 99) <= p99_bound, (method, precision, d.mean())


def test_cuda_auto_tiling_stays_under_a_memory_limit(cuda_device):
    cuda_only(cuda_device)
    rng = np.random.default_rng(0)
    side = 4096
    ir = rng.integers(0, 256, (side, side), dtype=np.uint8)
    vis = rng.integers(0, 256, (side, side), dtype=np.uint8)
    total = torch.cuda.get_device_properties(0).total_memory
    limit = 2 * 2**30
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(limit / total)
    try:
        torch.cuda.reset_peak_memory_stats()
        out = ivfusion.fuse(ir, vis, method="refinefuse", device="cuda")
        peak = torch.cuda.max_memory_allocated()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert out.shape == (side, side) and out.dtype == np.uint8
    assert peak <= limit, f"peak {peak / 2**30:.2f} GiB above the {limit / 2**30:.0f} GiB limit"
    # Tiled on CUDA = tiled with the same tiles on the CPU up to precision (fp16 on CUDA).
    crop = (slice(0, 512), slice(0, 768))
    small_cuda = ivfusion.fuse(ir[crop], vis[crop], method="refinefuse", device="cuda", tile_size=256)
    small_cpu = ivfusion.fuse(ir[crop], vis[crop], method="refinefuse", device="cpu", tile_size=256,
                              precision="fp32")
    assert _grey_levels(small_cuda, small_cpu).mean() < 0.5


def test_cuda_fuse_dir_matches_fuse(tmp_path, pair, cuda_device):
    from PIL import Image

    ir, vis = pair
    for d in ("ir", "vi"):
        (tmp_path / d).mkdir()
    for k in range(3):
        Image.fromarray(np.roll(ir, 7 * k, axis=1)).save(tmp_path / "ir" / f"p{k}.png")
        Image.fromarray(np.roll(vis, 7 * k, axis=1)).save(tmp_path / "vi" / f"p{k}.png")
    report = ivfusion.fuse_dir(tmp_path / "ir", tmp_path / "vi", tmp_path / "out", "f3net", device=cuda_device,
                               batch_size=2, precision="fp32")
    assert len(report.written) == 3 and not report.failed
    for k in range(3):
        want = ivfusion.fuse(tmp_path / "ir" / f"p{k}.png", tmp_path / "vi" / f"p{k}.png", "f3net",
                             device=cuda_device, precision="fp32")
        got = np.asarray(Image.open(tmp_path / "out" / f"p{k}.png"))
        assert _grey_levels(got, want).max() <= 1  # batch of 2 vs 1: float rounding only


def test_cuda_device_pairs_equal_the_cpu_path(tmp_path, cuda_device):
    root = _pairs(tmp_path / "d", 3, 40, 52, 3)
    ds = PairedFusionDataset(root, crop=32, augment="dihedral", saliency="vsm", seed=4, workers=1)
    cpu, dev = DevicePairs(ds, "cpu"), DevicePairs(ds, cuda_device, channels_last=True)
    for keys in StepBatchSampler(len(ds), 2, 6, seed=4):
        a, b = cpu.batch(keys), dev.batch(keys)
        assert all(torch.equal(a[k], b[k].cpu()) for k in a)


@pytest.mark.parametrize("method", NETWORKS)
def test_cuda_training_steps_bf16_channels_last_data_on_device(method, tmp_path, cuda_device):
    root = _pairs(tmp_path / "d", 4, 72, 80, 5)
    cfg = TrainConfig.for_method(method, data=[str(root)], val=str(root), out=str(tmp_path / "run"), steps=4,
                                 batch_size=2, crop=64, workers=0, progress=False, device=cuda_device,
                                 val_every=2, val_metrics=["VIF", "Qabf"], log_every=1,
                                 precision="bf16" if cuda_device == "cuda" else "fp32")
    trainer = Trainer(cfg)
    if cuda_device == "cuda":  # the defaults on CUDA
        assert trainer.data_on_device and trainer.channels_last and trainer.amp_dtype == torch.bfloat16
    result = trainer.run()
    losses = [r["loss"] for r in result.history if r["kind"] == "train"]
    assert result.finished and len(losses) == 4 and all(np.isfinite(losses))
    assert result.best_score is not None and np.isfinite(result.best_score)
