"""Training throughput of the four networks at each paper's crop size and batch.

Runs the real training step of :class:`ivfusion.train.Trainer` (forward, loss, backward, optimiser,
scheduler; autocast/channels-last on CUDA as the trainer sets them up) on batches already in memory,
and separately the data pipeline (crops and augmentation through the DataLoader), then prints
pairs/s and the wall time the paper's full recipe would take at that rate.

    python benchmarks/train_throughput.py                      # CPU, and CUDA too when available
    python benchmarks/train_throughput.py --device cuda --steps 50 --data ../shared/data/ivif/train/*

Without ``--data`` the pairs are synthetic (smooth random 480x640 images written to a temporary
folder), which costs the same as real ones.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivfusion.train import StepBatchSampler, Trainer, TrainConfig, make_loader  # noqa: E402
from ivfusion.train.data import batch_to_device  # noqa: E402

METHODS = ("didfuse", "fiscnet", "f3net", "refinefuse")


def synthetic_folder(root: Path, pairs: int, h: int, w: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "ir").mkdir(parents=True, exist_ok=True)
    (root / "vi").mkdir(parents=True, exist_ok=True)
    for k in range(pairs):
        coarse = torch.from_numpy(rng.random((2, h // 16, w // 16))).float()[None]
        up = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0].numpy()
        ir, vis = (np.clip(up[i] * 255 + rng.normal(0, 6, (h, w)), 0, 255).astype(np.uint8) for i in range(2))
        Image.fromarray(ir).save(root / "ir" / f"{k:03d}.png")
        Image.fromarray(np.stack([vis, vis, np.flipud(vis)], -1)).save(root / "vi" / f"{k:03d}.png")
    return root


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method: str, device: str, folders: List[str], *, steps: int, warmup: int, workers: int,
            precision: str, batch: Optional[int], crop: Optional[int], out: Path) -> Dict[str, object]:
    overrides = {k: v for k, v in (("batch_size", batch), ("crop", crop)) if v is not None}
    cfg = TrainConfig.for_method(method, data=folders, out=str(out / method), device=device, precision=precision,
                                 workers=workers, progress=False, **overrides)
    paper_steps = cfg.steps
    trainer = Trainer(cfg)
    dev = trainer.device
    # batches prepared beforehand (full ones only, so every measured step does the same work)
    ds = trainer.dataset
    keys = [list(range(i, i + cfg.batch_size)) for i in range(0, len(ds) - cfg.batch_size + 1, cfg.batch_size)]
    if not keys:
        raise ValueError(f"{method}: batch {cfg.batch_size} needs at least that many training pairs, got {len(ds)}")
    batches = [{k: torch.stack([ds[(s, i)][k] for i in keys[s % len(keys)]]) for k in ds.keys}
               for s in range(warmup + steps)]
    for b in batches[:warmup]:
        trainer.train_step(b)
    _sync(dev)
    t0 = time.perf_counter()
    for b in batches[warmup : warmup + steps]:
        trainer.train_step(b)
    _sync(dev)
    step_s = (time.perf_counter() - t0) / steps

    # data pipeline alone: DataLoader batches per second moved to the device, timed after the first
    # batch (worker start-up excluded)
    n_data = 40
    sampler = StepBatchSampler(len(ds), cfg.batch_size, n_data, seed=cfg.seed)
    loader = make_loader(ds, sampler, workers=workers, pin_memory=dev.type == "cuda")
    seen, t0 = 0, None
    for b in loader:
        batch_to_device(b, dev)
        if t0 is None:
            _sync(dev)
            t0 = time.perf_counter()
        else:
            seen += b["ir"].shape[0]
    _sync(dev)
    data_rate = seen / (time.perf_counter() - t0)

    pairs_s = cfg.batch_size / step_s
    return {
        "method": method, "device": str(dev), "precision": str(trainer.amp_dtype or torch.float32).replace("torch.", ""),
        "batch": cfg.batch_size, "crop": cfg.crop, "s/step": step_s, "pairs/s": pairs_s, "data pairs/s": data_rate,
        "paper steps": paper_steps, "full recipe": paper_steps * step_s,
    }


def _fmt_time(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--device", action="append", default=None, help="cpu / cuda (repeatable; default: cpu and cuda if available)")
    p.add_argument("--steps", type=int, default=None, help="measured steps (default 2 on CPU, 30 on CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 1 on CPU, 5 on CUDA)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers for the data-rate measurement")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--batch", type=int, default=None, help="override the paper's batch size")
    p.add_argument("--crop", type=int, default=None, help="override the paper's crop size")
    p.add_argument("--data", nargs="+", default=None, help="training folders (default: synthetic 480x640 pairs)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = args.data or [str(synthetic_folder(tmp / "data", 32, 480, 640))]
        for device in devices:
            cuda = device.startswith("cuda")
            steps = args.steps or (30 if cuda else 2)
            warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
            for method in args.methods:
                row = measure(method, device, folders, steps=steps, warmup=warmup, workers=args.workers,
                              precision=args.precision, batch=args.batch, crop=args.crop, out=tmp / "runs")
                rows.append(row)
                print(f"{method:<10} {device:<5} {row['pairs/s']:.2f} pairs/s", file=sys.stderr, flush=True)
    cpu_name = __import__("ivfusion.train.trainer", fromlist=["hardware_description"]).hardware_description(
        torch.device("cpu"))
    print(f"\nhardware: {cpu_name}" + (f"; {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
          + f"; torch {torch.__version__}")
    header = ["method", "device", "precision", "batch", "crop", "s/step", "pairs/s", "data pairs/s", "paper steps",
              "full recipe"]
    table = [header] + [[
        r["method"], r["device"], r["precision"], str(r["batch"]), str(r["crop"]), f"{r['s/step']:.3f}",
        f"{r['pairs/s']:.2f}", f"{r['data pairs/s']:.0f}", f"{r['paper steps']:,}", _fmt_time(r["full recipe"]),
    ] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nfull recipe = paper steps x s/step (training steps only; validation and checkpoints excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
