"""GPU check for a lent CUDA machine: one short script, each part under a time cap, one table per part.

    python benchmarks/gpu_check.py                 # on the GPU machine, all parts
    python benchmarks/gpu_check.py --parts speed --cap 30          # one part, at most ~30 s
    python benchmarks/gpu_check.py --device cpu --parts precision speed --pairs 1 --size 64 --sizes 64x48

Parts (``--parts``, default all; ``benchmarks/gpu_session.py`` runs each in its own process with a
hard timeout):

* ``tests``: the CUDA tests (``pytest -q -k cuda``: ``tests/test_cuda.py`` and the CUDA metrics).
* ``precision``: each network's fp16 and bf16 error against its own fp32 output on validation pairs
  (max and mean absolute difference in grey levels of the 8-bit results, and the share of pixels
  that move), through :func:`ivfusion.fuse` with ``precision=...``.
* ``speed``: ms per forward pass at 640x480 and 1280x1024: eager, channels-last (fp32) and
  ``torch.compile`` (channels-last, compile time reported separately), plus the network in the
  precision ``fuse`` picks on CUDA (fp16 autocast); median of ``--repeats`` after a warm-up,
  CUDA-synchronised. The compiled column comes last, as the cap allows.
* ``tiling``: ``fuse`` of an 8192x8192 pair with auto-tiling (``tile_size=None``) while PyTorch may
  use at most ``--tiling-limit-gib`` GiB of the GPU (``torch.cuda.set_per_process_memory_fraction``,
  which :func:`ivfusion._memory.available_cuda_bytes` reads): the peak (``max_memory_allocated``)
  must stay under it.

``--cap SECONDS`` bounds each part: measurements not started before the cap are reported as "cap"
(a measurement already running finishes). Tables are printed as they fill (Markdown).

It has never run on a GPU: no device was lent to the sessions that wrote it (2026-11-29, 2026-12-05).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import ivfusion
from ivfusion.models import create_model

NETWORKS = ("refinefuse", "f3net", "didfuse", "fiscnet")
PARTS = ("tests", "precision", "speed", "tiling")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IVFUSION_SHARED") or REPO.parent / "shared")
VAL = SHARED / "data" / "ivif" / "val" / "roadscene"


class Deadline:
    """``time.perf_counter()`` seconds left of a cap (``None``: unlimited)."""

    def __init__(self, seconds: Optional[float]) -> None:
        self.end = None if seconds is None else time.perf_counter() + seconds

    def passed(self) -> bool:
        return self.end is not None and time.perf_counter() >= self.end


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


#: Timing modes: (channels-last, torch.compile, autocast dtype).
MODES = {
    "eager": (False, False, None),
    "channels_last": (True, False, None),
    "fp16": (True, False, torch.float16),
    "compile": (True, True, None),
}


def forward_ms(method: str, h: int, w: int, device: str, repeats: int, mode: str) -> Dict[str, float]:
    """Median ms of one forward pass in ``mode`` (:data:`MODES`), and compile seconds for compiled modes."""
    channels_last, compiled, amp = MODES[mode]
    if amp is torch.float16 and not device.startswith("cuda"):
        amp = torch.bfloat16
    net = create_model(method).to(device).eval()
    ir = torch.rand(1, 1, h, w, device=device)
    vis = torch.rand(1, 1, h, w, device=device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        ir, vis = (x.contiguous(memory_format=torch.channels_last) for x in (ir, vis))
    fn = torch.compile(net) if compiled else net
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=amp, enabled=amp is not None)
    with torch.inference_mode(), autocast:
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
    return {"ms": med, "compile_s": first - med / 1000 if compiled else 0.0}


def tiling_peak(method: str, side: int, device: str, limit_gib: float) -> Tuple[float, float]:
    """``(peak GiB, seconds)`` of ``fuse`` on a random ``side`` x ``side`` pair with auto-tiling while
    PyTorch may use at most ``limit_gib`` of the GPU."""
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (side, side), dtype=np.uint8)
    vis = rng.integers(0, 256, (side, side), dtype=np.uint8)
    total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gib * 2**30 / total), torch.device(device))
    try:
        torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        out = ivfusion.fuse(ir, vis, method=method, device=device)
        seconds = time.perf_counter() - t0
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, torch.device(device))
    assert out.shape == (side, side)
    return torch.cuda.max_memory_allocated(device) / 2**30, seconds


def load_pairs(n: int, size: int) -> List[tuple]:
    from ivfusion.train import find_pairs, load_luma

    if VAL.is_dir():
        pairs = [(load_luma(p.ir), load_luma(p.vis)) for p in find_pairs(VAL)[:n]]
    else:  # synthetic stand-in, so the script still runs without the data
        rng = np.random.default_rng(0)
        pairs = [(rng.integers(0, 256, (max(size, 64),) * 2, dtype=np.uint8),) * 2 for _ in range(n)]
    return [(ir[:size, :size], vis[:size, :size]) for ir, vis in pairs] if size else pairs


def _size(text: str) -> Tuple[int, int]:
    w, h = text.lower().split("x")
    return int(h), int(w)


def run_tests(cap: Optional[float]) -> bool:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", str(REPO / "tests")]
    try:
        rc = subprocess.call(cmd, cwd=REPO, timeout=cap)
    except subprocess.TimeoutExpired:
        print(f"\nCUDA tests: stopped at the cap of {cap:.0f} s")
        return False
    print(f"\nCUDA tests: exit code {rc}" + (" (none collected)" if rc == 5 else ""))
    return rc in (0, 5)


def run_precision(methods: Sequence[str], device: str, pairs: List[tuple], deadline: Deadline) -> None:
    print("\n| network | precision | max grey levels | mean | pixels moved |\n|---|---|---:|---:|---:|", flush=True)
    for m in methods:
        if deadline.passed():
            print(f"| {m} | — | cap | | |", flush=True)
            continue
        for prec, e in precision_errors(m, pairs, device).items():
            print(f"| {m} | {prec} | {e['max']} | {e['mean']:.3f} | {e['moved']:.2%} |", flush=True)


def run_speed(methods: Sequence[str], sizes: Sequence[Tuple[int, int]], device: str, repeats: int,
              deadline: Deadline, modes: Sequence[str] = tuple(MODES)) -> None:
    results: Dict[Tuple[str, Tuple[int, int], str], Dict[str, float]] = {}
    # Eager modes for everything first, then compilation (slow to start) while the cap allows.
    for mode in [m for m in MODES if m in modes]:
        for m in methods:
            for hw in sizes:
                if not deadline.passed():
                    results[(m, hw, mode)] = forward_ms(m, *hw, device, repeats, mode)
    amp = "fp16" if device.startswith("cuda") else "bf16"
    print(f"\n| network | size | eager ms | channels-last ms | channels-last {amp} ms | compiled ms (compile s) |"
          "\n|---|---|---:|---:|---:|---:|")
    for m in methods:
        for hw in sizes:
            cell = {mode: results.get((m, hw, mode)) for mode in MODES}
            txt = {k: ("cap" if k in modes else "—") if v is None else f"{v['ms']:.1f}" for k, v in cell.items()}
            if cell["compile"] is not None:
                txt["compile"] += f" ({cell['compile']['compile_s']:.0f})"
            print(f"| {m} | {hw[1]}x{hw[0]} | {txt['eager']} | {txt['channels_last']} | {txt['fp16']} | "
                  f"{txt['compile']} |", flush=True)


def run_tiling(methods: Sequence[str], side: int, device: str, limit_gib: float, deadline: Deadline) -> bool:
    ok = True
    print(f"\n| network | {side}x{side} peak GiB | limit {limit_gib:g} GiB kept | seconds |\n|---|---:|---|---:|",
          flush=True)
    for m in methods:
        if deadline.passed():
            print(f"| {m} | cap | | |", flush=True)
            continue
        peak, seconds = tiling_peak(m, side, device, limit_gib)
        ok &= peak <= limit_gib
        print(f"| {m} | {peak:.2f} | {'yes' if peak <= limit_gib else 'NO'} | {seconds:.1f} |", flush=True)
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--methods", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    p.add_argument("--cap", type=float, default=None, help="seconds per part (default: no cap)")
    p.add_argument("--pairs", type=int, default=3, help="validation pairs for the precision part")
    p.add_argument("--size", type=int, default=0, help="crop the pairs to this side (0 = full size)")
    p.add_argument("--sizes", nargs="+", type=_size, default=[(480, 640), (1024, 1280)], metavar="WxH",
                   help="sizes of the speed part (default 640x480 1280x1024)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="modes of the speed part")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--tiling-side", type=int, default=8192)
    p.add_argument("--tiling-limit-gib", type=float, default=4.0)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for the CPU-side parts", file=sys.stderr)
        return 2
    if cuda:
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}", flush=True)
    failed = False
    if "tests" in args.parts:
        failed |= not run_tests(args.cap)
    if "precision" in args.parts:
        deadline = Deadline(args.cap)
        run_precision(args.methods, args.device, load_pairs(args.pairs, args.size), deadline)
    if "speed" in args.parts:
        run_speed(args.methods, args.sizes, args.device, args.repeats, Deadline(args.cap), args.modes)
    if "tiling" in args.parts and cuda:
        failed |= not run_tiling(args.methods, args.tiling_side, args.device, args.tiling_limit_gib,
                                 Deadline(args.cap))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
