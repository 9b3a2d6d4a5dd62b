"""CPU (or CUDA) training-step speed of one network under each speed option, side by side.

    python benchmarks/train_variants.py --method refinefuse --batch 8 --crop 128 --rounds 5 --threads 2

Builds one :class:`ivfusion.train.Trainer` per variant (fp32; bf16 autocast; channels-last, each
precision; ``torch.compile``, each precision), all on the same pre-cropped batches, then times the
variants' real training steps (forward, loss, backward, optimiser) in interleaved rounds, so that
load from other processes falls on every variant alike. Prints the median seconds per step, its
ratio to fp32 and, for compiled variants, the compile time (the first step's time minus the median).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivfusion.train import Trainer, TrainConfig  # noqa: E402
from ivfusion.train import hardware_description  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import synthetic_folder  # noqa: E402

VARIANTS = {
    "fp32": dict(precision="fp32", channels_last=False),
    "bf16": dict(precision="bf16", channels_last=False),
    "fp32 channels-last": dict(precision="fp32", channels_last=True),
    "bf16 channels-last": dict(precision="bf16", channels_last=True),
    "fp32 compile": dict(precision="fp32", channels_last=False, compile=True),
    "bf16 compile": dict(precision="bf16", channels_last=False, compile=True),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", required=True)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--crop", type=int, default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = synthetic_folder(Path(tmp) / "data", 16, 256, 320)
        extra = {k: v for k, v in (("batch_size", args.batch), ("crop", args.crop)) if v is not None}
        trainers = {}
        for name in args.variants:
            cfg = TrainConfig.for_method(args.method, data=[str(folder)], out=str(Path(tmp) / name.replace(" ", "_")),
                                         device=args.device, workers=0, progress=False, **extra, **VARIANTS[name])
            trainers[name] = Trainer(cfg)
        ds = next(iter(trainers.values())).dataset
        bs = next(iter(trainers.values())).config.batch_size
        batches = [{k: torch.stack([ds[(r, (r * bs + i) % len(ds))][k] for i in range(bs)]) for k in ds.keys}
                   for r in range(args.rounds + 1)]
        first, times = {}, {n: [] for n in trainers}
        for name, t in trainers.items():  # warm-up (and compilation) step
            t0 = time.perf_counter()
            t.train_step(batches[0])
            first[name] = time.perf_counter() - t0
        for b in batches[1:]:
            for name, t in trainers.items():
                t0 = time.perf_counter()
                t.train_step(b)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times.get("fp32") or next(iter(times.values())))
    cfg = next(iter(trainers.values())).config
    print(f"{args.method}, batch {cfg.batch_size}, crop {cfg.crop}, {torch.get_num_threads()} threads, "
          f"{hardware_description(torch.device(args.device))}, torch {torch.__version__}, "
          f"median of {args.rounds} interleaved steps\n")
    print("| variant | s / step | vs fp32 | compile s |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        comp = f"{first[name] - med:.0f}" if "compile" in name else "–"
        print(f"| {name} | {med:.3f} | {med / base:.2f}x | {comp} |")


if __name__ == "__main__":
    main()
