"""Error of reduced-precision inference against float32, per network, on the validation pairs.

    python benchmarks/precision.py                      # bf16 on the CPU, 3 pairs per domain
    python benchmarks/precision.py --device cuda --precisions fp16,bf16 --per-domain 8

For each network and domain (the domains of ``benchmarks/domains.py``), the first ``--per-domain``
pairs are fused at full size with ``ivfusion.fuse`` in float32 and in each reduced precision, from
float inputs so the outputs are not quantised, and the differences are reported in 8-bit grey levels
(``|out - out_fp32| * 255``) over all pixels: mean, 99th and 99.9th percentile, maximum. The last
table gives each network's verdict against the rule used for the CPU default (``ivfusion.fusion``):
reduced precision is acceptable when the 99th percentile stays below one grey level in every domain.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

import numpy as np
import torch

import ivfusion
from ivfusion.io import read_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from domains import SHARED, domains  # noqa: E402

THRESHOLD_GREY_LEVELS = 1.0


def _as_float(path: Path) -> np.ndarray:
    arr = read_image(path)
    return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(ivfusion.list_models()))
    parser.add_argument("--precisions", default="bf16", help="comma-separated, among bf16, fp16 (CUDA)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--per-domain", type=int, default=3, help="pairs per domain (default 3)")
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args(argv)

    sets = domains(args.data, medical=True)
    print(f"device {args.device}; torch {torch.__version__}; {args.per_domain} pairs per domain; "
          "errors in 8-bit grey levels against fp32 (mean / p99 / p99.9 / max)\n")
    verdict_rows = []
    for precision in args.precisions.split(","):
        print(f"## {precision}\n")
        header = ["network"] + list(sets)
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for name in args.models.split(","):
            cells: List[str] = []
            p99s: List[float] = []
            total, count = 0.0, 0
            for domain, pairs in sets.items():
                errs = []
                for _, ir_path, vis_path in pairs[: args.per_domain]:
                    ir, vis = _as_float(ir_path), _as_float(vis_path)
                    ref = ivfusion.fuse(ir, vis, method=name, device=args.device, precision="fp32")
                    low = ivfusion.fuse(ir, vis, method=name, device=args.device, precision=precision)
                    errs.append((np.abs(low.astype(np.float64) - ref) * 255.0).ravel())
                e = np.concatenate(errs)
                p99, p999 = np.percentile(e, [99, 99.9])
                p99s.append(float(p99))
                total, count = total + float(e.sum()), count + e.size
                cells.append(f"{e.mean():.2f} / {p99:.2f} / {p999:.2f} / {e.max():.1f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
            worst_p99 = max(p99s)
            verdict_rows.append((name, precision, total / count, worst_p99, worst_p99 < THRESHOLD_GREY_LEVELS))
        print()
    print("| network | precision | mean (all domains) | worst domain's p99 | p99 < 1 grey level everywhere |\n"
          "|---|---|---|---|---|")
    for name, precision, mean, p99, ok in verdict_rows:
        print(f"| {name} | {precision} | {mean:.3f} | {p99:.2f} | {'yes' if ok else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
