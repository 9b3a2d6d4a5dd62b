"""GPU check for a lent CUDA machine: one short script, a few minutes, one table per part.

    python benchmarks/gpu_check.py                 # on the GPU machine (needs ../shared for the pairs)
    python benchmarks/gpu_check.py --device cpu --parts precision --pairs 1 --size 64   # CPU-side dry run

Parts (``--parts``, default all):

* ``tests``: the CUDA-only tests (``pytest -q -k cuda`` over the suite; they skip on a CPU).
* ``precision``: each network's fp16 and bf16 error against its own fp32 output on validation pairs
  (max and mean absolute difference in grey levels of the 8-bit results, and the share of pixels
  that move), through :func:`ivfusion.fuse` with ``precision=...``.
* ``speed``: ms per forward pass at 640x480 and 1280x1024: eager, channels-last, ``torch.compile``
  (compile time reported separately), median of ``--repeats`` after warm-up, CUDA-synchronised.
* ``tiling``: ``fuse`` of an 8192x8192 pair with auto-tiling (``tile_size=None``) under a peak of
  ``--tiling-limit-gib`` GiB of GPU memory (``torch.cuda.max_memory_allocated``).

It has never run on a GPU: no device was lent to the sessions that wrote it (2026-11-29).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

import ivfusion
from ivfusion.models import create_model

NETWORKS = ("refinefuse", "f3net", "didfuse", "fiscnet")
REPO = Path(__file__).resolve().parents[1]
VAL = REPO.parent / "shared" / "data" / "ivif" / "val" / "roadscene"


def precision_errors(method: str, pairs: List[tuple], device: str, precisions=("fp16", "bf16")) -> Dict[str, Dict]:
    """``{precision: {max, mean, moved}}``: 8-bit output differences to fp32 over ``pairs`` of
    ``(ir, vis)`` arrays (``max``/``mean`` in grey levels, ``moved`` = share of pixels that differ)."""
    out = {}
    refs = [ivfusion.fuse(ir, vis, method=method, device=device, precision="fp32").astype(np.int16)
            for ir, vis in pairs]
    for prec in precisions:
        if prec == "fp16" and device == "cpu":
            continue
        diffs = [np.abs(ivfusion.fuse(ir, vis, method=method, device=device, precision=prec).astype(np.int16) - ref)
                 for (ir, vis), ref in zip(pairs, refs)]
        d = np.concatenate([x.ravel() for x in diffs])
        out[prec] = {"max": int(d.max()), "mean": float(d.mean()), "moved": float((d > 0).mean())}
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forward_ms(method: str, h: int, w: int, device: str, repeats: int, mode: str) -> Dict[str, float]:
    """Median ms of one forward pass (and compile seconds for ``mode="compile"``)."""
    net = create_model(method).to(device).eval()
    ir = torch.rand(1, 1, h, w, device=device)
    vis = torch.rand(1, 1, h, w, device=device)
    if mode == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        ir, vis = (x.contiguous(memory_format=torch.channels_last) for x in (ir, vis))
    fn = torch.compile(net) if mode == "compile" else net
    with torch.inference_mode():
        t0 = time.perf_counter()
        fn(ir, vis)
        _sync(device)
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(ir, vis)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1000)
    med = statistics.median(times)
    return {"ms": med, "compile_s": first - med / 1000 if mode == "compile" else 0.0}


def tiling_peak_gib(method: str, side: int, device: str) -> float:
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (side, side), dtype=np.uint8)
    vis = rng.integers(0, 256, (side, side), dtype=np.uint8)
    torch.cuda.reset_peak_memory_stats()
    out = ivfusion.fuse(ir, vis, method=method, device=device)
    assert out.shape == (side, side)
    return torch.cuda.max_memory_allocated() / 2**30


def load_pairs(n: int, size: int) -> List[tuple]:
    from ivfusion.train import find_pairs, load_luma

    if VAL.is_dir():
        pairs = [(load_luma(p.ir), load_luma(p.vis)) for p in find_pairs(VAL)[:n]]
    else:  # synthetic stand-in, so the script still runs without ../shared
        rng = np.random.default_rng(0)
        pairs = [(rng.integers(0, 256, (size, size), dtype=np.uint8),) * 2 for _ in range(n)]
    return [(ir[:size, :size], vis[:size, :size]) for ir, vis in pairs] if size else pairs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--parts", nargs="+", default=["tests", "precision", "speed", "tiling"],
                   choices=["tests", "precision", "speed", "tiling"])
    p.add_argument("--methods", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    p.add_argument("--pairs", type=int, default=3, help="validation pairs for the precision part")
    p.add_argument("--size", type=int, default=0, help="crop the pairs to this side (0 = full size)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--tiling-side", type=int, default=8192)
    p.add_argument("--tiling-limit-gib", type=float, default=4.0)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for the CPU-side parts", file=sys.stderr)
        return 2
    failed = False
    if "tests" in args.parts:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-k", "cuda", str(REPO / "tests")])
        print(f"\nCUDA tests: exit code {rc}")
        failed |= rc not in (0, 5)
    if "precision" in args.parts:
        pairs = load_pairs(args.pairs, args.size)
        print("\n| network | precision | max grey levels | mean | pixels moved |\n|---|---|---:|---:|---:|")
        for m in args.methods:
            for prec, e in precision_errors(m, pairs, args.device).items():
                print(f"| {m} | {prec} | {e['max']} | {e['mean']:.3f} | {e['moved']:.2%} |")
    if "speed" in args.parts:
        print("\n| network | size | eager ms | channels-last ms | compiled ms (compile s) |\n|---|---|---:|---:|---:|")
        for m in args.methods:
            for h, w in ((480, 640), (1024, 1280)):
                r = {mode: forward_ms(m, h, w, args.device, args.repeats, mode)
                     for mode in ("eager", "channels_last", "compile")}
                print(f"| {m} | {w}x{h} | {r['eager']['ms']:.1f} | {r['channels_last']['ms']:.1f} | "
                      f"{r['compile']['ms']:.1f} ({r['compile']['compile_s']:.0f}) |")
    if "tiling" in args.parts and cuda:
        print(f"\n| network | {args.tiling_side}² peak GiB | under {args.tiling_limit_gib} GiB |\n|---|---:|---|")
        for m in args.methods:
            peak = tiling_peak_gib(m, args.tiling_side, args.device)
            ok = peak <= args.tiling_limit_gib
            failed |= not ok
            print(f"| {m} | {peak:.2f} | {'yes' if ok else 'NO'} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
