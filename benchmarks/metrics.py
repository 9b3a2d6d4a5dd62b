"""Time ivfusion.metrics on one 640x480 triplet, per metric and all 13 together, against a plain
numpy/scipy transcription of the reference definitions (tests/metrics_reference.py).

    python benchmarks/metrics.py [--repeats 15] [--threads N] [--profile reference] [--device cpu]
                                 [--batch 64] [--no-numpy]

The triplet is the first MSRS pair of ../shared/data (640x480; the fused image is their rounded
mean) or, without it, synthetic smooth images. Times exclude decoding: the inputs are already
(1, 1, H, W) float64 tensors (numpy arrays for the transcription). Prints a markdown table with
the median (and min) of ``--repeats`` calls after one warm-up, and the numpy/torch ratio. With
``--device cuda`` it also times one evaluate_batch call on ``--batch`` triplets.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivfusion.metrics import evaluate_batch, list_metrics, prepare_image  # noqa: E402

MSRS = ROOT.parent / "shared" / "data" / "ivif" / "train" / "msrs"


def load_triplet(h: int, w: int):
    if (MSRS / "ir").is_dir() and (h, w) == (480, 640):
        ir_path = sorted((MSRS / "ir").iterdir())[0]
        a = prepare_image(ir_path)
        b = prepare_image(MSRS / "vi" / ir_path.name)
        source = f"MSRS {ir_path.name}"
    else:
        g = torch.Generator().manual_seed(0)

        def smooth():
            x = torch.rand(1, 1, h // 8, w // 8, generator=g, dtype=torch.float64) * 255
            x = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
            return (x + 3 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 255).round()

        a, b, source = smooth(), smooth(), "synthetic"
    f = torch.round((a + b) / 2)
    return f, a, b, source


def timed(fn, repeats: int, sync=lambda: None):
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x640", help="HxW (default 480x640)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--profile", default="reference", choices=["reference", "standard"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64, help="batch size for the CUDA batch timing")
    parser.add_argument("--no-numpy", action="store_true", help="skip the numpy/scipy transcription")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    f, a, b, source = load_triplet(h, w)
    dev = torch.device(args.device)
    f, a, b = f.to(dev), a.to(dev), b.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    ref = None
    if not args.no_numpy:
        from tests import metrics_reference as R

        fn_np, an_np, bn_np = (x[0, 0].cpu().numpy() for x in (f, a, b))
        std = args.profile == "standard"
        ref = {
            "EN": lambda: R.en(fn_np), "SD": lambda: R.sd(fn_np), "SF": lambda: R.sf(fn_np),
            "AG": lambda: R.ag(fn_np), "MI": lambda: R.mi(fn_np, an_np, bn_np, 2.0 if std else np.e),
            "SCD": lambda: R.scd(fn_np, an_np, bn_np), "VIF": lambda: R.vif(fn_np, an_np, bn_np),
            "Qabf": lambda: R.qabf(fn_np, an_np, bn_np, "one" if std else "reference"),
            "SSIM": lambda: (R.ssim_standard if std else R.ssim_reference)(fn_np, an_np, bn_np),
            "Nabf": lambda: R.nabf(fn_np, an_np, bn_np),
            "PSNR": lambda: R.psnr(fn_np, an_np, bn_np, 255.0 if std else "max"),
            "CC": lambda: R.cc(fn_np, an_np, bn_np), "MSE": lambda: R.mse(fn_np, an_np, bn_np),
        }

    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: {dev} ({cpu}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores, "
          f"load average {load:.2f}), torch {torch.__version__}")
    print(f"input: {h}x{w} triplet ({source}), float64 tensors, profile {args.profile}, "
          f"median of {args.repeats} after a warm-up\n")
    print("| metric | ivfusion ms (min) | numpy/scipy ms | numpy / ivfusion |")
    print("|---|---:|---:|---:|")
    total_np = 0.0
    for name in list_metrics():
        med, lo = timed(lambda: evaluate_batch(f, a, b, [name], profile=args.profile), args.repeats, sync)
        if ref is not None:
            med_np, _ = timed(ref[name], max(3, args.repeats // 5))
            total_np += med_np
            print(f"| {name} | {med:.2f} ({lo:.2f}) | {med_np:.2f} | {med_np / med:.1f}x |")
        else:
            print(f"| {name} | {med:.2f} ({lo:.2f}) | - | - |")
    med, lo = timed(lambda: evaluate_batch(f, a, b, profile=args.profile), args.repeats, sync)
    if ref is not None:
        print(f"| **all 13 (one call)** | **{med:.1f}** ({lo:.1f}) | {total_np:.1f} | {total_np / med:.1f}x |")
    else:
        print(f"| **all 13 (one call)** | **{med:.1f}** ({lo:.1f}) | - | - |")

    if dev.type == "cuda":
        n = args.batch
        fb, ab, bb = (x.expand(n, -1, -1, -1).contiguous() for x in (f, a, b))
        med, lo = timed(lambda: evaluate_batch(fb, ab, bb, profile=args.profile), max(3, args.repeats // 3), sync)
        print(f"\nbatch of {n} triplets, all 13 metrics, one evaluate_batch call: {med:.1f} ms "
              f"({med / n:.2f} ms per triplet); float32: ", end="")
        med32, _ = timed(lambda: evaluate_batch(fb, ab, bb, profile=args.profile, dtype=torch.float32),
                         max(3, args.repeats // 3), sync)
        print(f"{med32:.1f} ms")


if __name__ == "__main__":
    main()
