"""Validation table: fuse a validation folder with several methods and score each with ivfusion.metrics.

    python benchmarks/validation.py --val ../shared/data/ivif/val/roadscene \\
        --methods refinefuse f3net didfuse fiscnet average laplacian guided --out runs/val

Does exactly what ``ivfusion fuse --ir-dir/--vis-dir/--out-dir`` followed by ``ivfusion eval`` does
(the same library calls), then prints one markdown table: the mean of every metric per method
(reference profile), plus the image count. Fused images are kept under ``--out/<method>/``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import ivfusion
from ivfusion.metrics import evaluate_dirs, get_metric, list_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", required=True, help="folder with ir/ and vi/")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every method with weights")
    parser.add_argument("--out", default="runs/val", help="where the fused images go")
    parser.add_argument("--device", default=None)
    parser.add_argument("--profile", default="reference")
    parser.add_argument("--overwrite", action="store_true", help="re-fuse even if outputs exist")
    args = parser.parse_args()

    val = Path(args.val)
    methods = args.methods or ivfusion.list_methods(available_only=True)
    names = list_metrics()
    rows = []
    for method in methods:
        out = Path(args.out) / method
        ivfusion.fuse_dir(val / "ir", val / "vi", out, method, device=args.device,
                          existing="overwrite" if args.overwrite else "skip")
        result = evaluate_dirs(val / "ir", val / "vi", out, profile=args.profile)
        rows.append((method, result.mean(), len(result.rows())))
    arrows = ["↑" if get_metric(n).higher_is_better else "↓" for n in names]
    print(f"{val} ({rows[0][2]} pairs), ivfusion {ivfusion.__version__}, metrics profile '{args.profile}'\n")
    print("| method | " + " | ".join(f"{n} {a}" for n, a in zip(names, arrows)) + " |")
    print("|---|" + "---:|" * len(names))
    for method, mean, _ in rows:
        print(f"| {method} | " + " | ".join(f"{mean[n]:.4f}" for n in names) + " |")


if __name__ == "__main__":
    main()
