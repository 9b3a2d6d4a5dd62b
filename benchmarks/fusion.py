"""Time ivfusion.fuse end to end (decode excluded) for each available method on a colour pair.

    python benchmarks/fusion.py [--size 480x640] [--repeats 10] [--device cpu] [--methods laplacian guided]

Prints a markdown table: median and min wall time per call, over ``--repeats`` calls after one warm-up.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

import ivfusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x640", help="HxW of the synthetic pair")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="*", default=None, help="default: every method with weights")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (h, w), dtype=np.uint8)
    vis = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    methods = args.methods or ivfusion.list_methods(available_only=True)
    print(f"device: {args.device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), torch {torch.__version__}, input {h}x{w} colour pair, uint8\n")
    print("| method | median ms | min ms |")
    print("|---|---:|---:|")
    for m in methods:
        ivfusion.fuse(ir, vis, method=m, device=args.device)  # warm-up (and weight loading)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ivfusion.fuse(ir, vis, method=m, device=args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"| {m} | {statistics.median(times):.1f} | {min(times):.1f} |")


if __name__ == "__main__":
    main()
