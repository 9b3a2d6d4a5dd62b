"""Folder fusion throughput: today's sequential ``fuse_dir`` against the pipeline, side by side.

    python benchmarks/fuse_dir.py --pairs 200 --method guided --network f3net --network-pairs 12 \\
        --memory 100 1000

Generates ``--pairs`` 640x480 pairs (grey infrared, colour visible, PNG) in a temporary folder, then
runs ``ivfusion.fuse_dir`` in a fresh subprocess per configuration: sequential (``workers=0,
batch_size=1``, what ``fuse_dir`` did before the pipeline) and the pipeline with ``workers`` 0/2 and
``batch_size`` 1/8. Each subprocess reports its wall time and peak RSS (its own and its worker
processes'). Prints pairs per second and the ratio to sequential, for ``--method`` on all pairs and
for ``--network`` on the first ``--network-pairs``. ``--memory N M`` also runs the widest pipeline
on N and on M pairs and prints both peaks (the pipeline's memory must not grow with the folder).
``--breakdown`` times the three stages of one pair (decoding both PNGs, fusing, encoding the output) with 1
and with 2 torch threads, and prints the bound they put on any pipeline's speed-up on this machine:
sequential time per pair / (CPU time per pair with one thread per stage / number of cores).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivfusion.io import write_image  # noqa: E402
from ivfusion.train import hardware_description  # noqa: E402

CONFIGS: List[Tuple[str, int, int]] = [("sequential", 0, 1), ("workers 0, batch 8", 0, 8),
                                       ("workers 2, batch 1", 2, 1), ("workers 2, batch 8", 2, 8)]

_CHILD = """
import json, resource, sys, time
import torch
import ivfusion
ir, vis, out, method, workers, batch, threads = sys.argv[1:8]
torch.set_num_threads(int(threads))
t = time.perf_counter()
report = ivfusion.fuse_dir(ir, vis, out, method, device="cpu", workers=int(workers), batch_size=int(batch))
seconds = time.perf_counter() - t
assert report.ok, report.failed
print(json.dumps({"seconds": seconds, "written": len(report.written),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "workers_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


_BREAKDOWN_CHILD = """
import json, os, sys, tempfile, time
import torch
import ivfusion
from ivfusion.io import read_image, write_image
ir_dir, vis_dir, method, threads, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
names = sorted(os.listdir(ir_dir))[:n]
out = tempfile.mkdtemp()
t = {"decode": 0.0, "fuse": 0.0, "encode": 0.0}
ivfusion.fuse(read_image(os.path.join(ir_dir, names[0])), read_image(os.path.join(vis_dir, names[0])), method=method)
for name in names:
    t0 = time.perf_counter()
    ir, vis = read_image(os.path.join(ir_dir, name)), read_image(os.path.join(vis_dir, name))
    t1 = time.perf_counter()
    fused = ivfusion.fuse(ir, vis, method=method, device="cpu")
    t2 = time.perf_counter()
    write_image(os.path.join(out, name), fused)
    t3 = time.perf_counter()
    t["decode"] += t1 - t0; t["fuse"] += t2 - t1; t["encode"] += t3 - t2
print(json.dumps({k: v / len(names) for k, v in t.items()}))
"""


def breakdown(pair: Tuple[Path, Path], method: str, n: int) -> None:
    """Per-pair stage times with 1 and 2 torch threads, and the speed-up bound they imply."""
    res = {}
    for threads in (1, 2):
        proc = subprocess.run([sys.executable, "-c", _BREAKDOWN_CHILD, str(pair[0]), str(pair[1]), method,
                               str(threads), str(n)], capture_output=True, text=True, check=True)
        res[threads] = json.loads(proc.stdout.strip().splitlines()[-1])
    cores = os.cpu_count() or 1
    seq = sum(res[2].values())
    cpu = sum(res[1].values())
    print(f"\n| {method}, {n} pairs, ms per pair | decode 2 PNGs | fuse | encode PNG | total |")
    print("|---|---:|---:|---:|---:|")
    for threads in (1, 2):
        r = res[threads]
        print(f"| {threads} torch thread(s) | {r['decode'] * 1e3:.1f} | {r['fuse'] * 1e3:.1f} | "
              f"{r['encode'] * 1e3:.1f} | {sum(r.values()) * 1e3:.1f} |")
    print(f"\nbound on a pipeline's speed-up with {cores} cores: {seq * 1e3:.0f} ms sequential / "
          f"({cpu * 1e3:.0f} ms of one-thread work / {cores}) = {seq / (cpu / cores):.2f}x")


def make_pairs(root: Path, n: int, seed: int = 0) -> Tuple[Path, Path]:
    """``n`` smooth random 640x480 pairs (grey infrared, RGB visible) as PNGs."""
    gen = torch.Generator().manual_seed(seed)
    ir_dir, vis_dir = root / "ir", root / "vi"
    for i in range(n):
        coarse = torch.rand(1, 4, 60, 80, generator=gen)
        img = F.interpolate(coarse, size=(480, 640), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        img = (img + 0.03 * torch.randn(img.shape, generator=gen)).clamp(0, 1)
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        write_image(ir_dir / f"{i:05d}.png", arr[..., 0])
        write_image(vis_dir / f"{i:05d}.png", arr[..., 1:])
    return ir_dir, vis_dir


def subset(root: Path, src: Tuple[Path, Path], n: int) -> Tuple[Path, Path]:
    """The first ``n`` pairs of ``src`` as symbolic links in ``root``."""
    out = []
    for folder in src:
        dst = root / folder.name
        dst.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir())[:n]:
            (dst / path.name).symlink_to(path)
        out.append(dst)
    return out[0], out[1]


def run(pair: Tuple[Path, Path], out: Path, method: str, workers: int, batch: int, threads: int) -> Dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(pair[0]), str(pair[1]), str(out), method, str(workers),
                           str(batch), str(threads)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--method", default="guided")
    p.add_argument("--network", default="f3net")
    p.add_argument("--network-pairs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the fusing process")
    p.add_argument("--memory", type=int, nargs=2, default=None, metavar=("N", "M"))
    p.add_argument("--breakdown", action="store_true", help="also time decode / fuse / encode per pair")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_all = max([args.pairs] + list(args.memory or []))
        full = make_pairs(root / "all", n_all)
        rows = []
        for method, n in ((args.method, args.pairs), (args.network, args.network_pairs)):
            pair = subset(root / f"in_{method}", full, n)
            results = {}
            for name, workers, batch in CONFIGS:
                r = run(pair, root / f"out_{method}_{workers}_{batch}", method, workers, batch, args.threads)
                results[name] = r
                print(f"  {method} {name}: {r['written'] / r['seconds']:.2f} pairs/s", file=sys.stderr)
            base = results["sequential"]["written"] / results["sequential"]["seconds"]
            for name, r in results.items():
                rate = r["written"] / r["seconds"]
                rows.append((method, n, name, rate, rate / base, r["rss_mb"], r["workers_rss_mb"]))
        print(f"\n{hardware_description(torch.device('cpu'))} for the fusing process; torch {torch.__version__}; "
              "640x480 PNG pairs (grey IR, RGB visible)\n")
        print("| method | pairs | configuration | pairs/s | vs sequential | peak RSS main (MB) | peak RSS worker (MB) |")
        print("|---|---:|---|---:|---:|---:|---:|")
        for method, n, name, rate, ratio, rss, wrss in rows:
            print(f"| {method} | {n} | {name} | {rate:.2f} | {ratio:.2f}x | {rss:.0f} | {wrss:.0f} |")
        if args.breakdown:
            breakdown(subset(root / "breakdown", full, min(args.pairs, 40)), args.method, min(args.pairs, 40))
        if args.memory:
            print("\n| pipeline (workers 2, batch 8), method | pairs | peak RSS main (MB) | peak RSS worker (MB) |")
            print("|---|---:|---:|---:|")
            for n in args.memory:
                pair = subset(root / f"mem_{n}", full, n)
                r = run(pair, root / f"out_mem_{n}", args.method, 2, 8, args.threads)
                print(f"| {args.method} | {n} | {r['rss_mb']:.0f} | {r['workers_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
