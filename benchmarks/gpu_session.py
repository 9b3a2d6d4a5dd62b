"""The one prepared command of a lent GPU session: a capped GPU check, then training of the
networks toward their papers' recipes, everything written to ``$OUT`` under a hard total budget.

On this machine, once (copies the training data into a git-ignored folder that travels with the
command, within the device tool's 64 MiB)::

    python benchmarks/gpu_session.py --prepare-carry .gpu_shared

On the GPU machine (the exact ``device`` call is in ``benchmarks/README.md``)::

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/gpu_session.py --out "$OUT" --budget 540

CPU dry run (the test suite runs one, so the script cannot rot before a GPU comes)::

    python benchmarks/gpu_session.py --dry-run --device cpu --data DATA_ROOT --val-split SPLIT.json --out /tmp/s

What it does, in order, each step bounded by the time left:

1. **GPU check** (about ``--check-s`` seconds): ``benchmarks/gpu_check.py``'s parts, each in its own
   process with a hard timeout (tests, precision, speed, tiling); tables to ``gpu_check.md``.
2. **Training**, in priority order: RefineFuse (most of the budget), FISCNet, F3Net, then DIDFuse's
   full paper recipe if it fits. For each network: decode the pairs once (the ``mixed`` split held
   back), measure the warm-start weights on the split, time a few steps (calibration), then train
   as many steps as the network's share of the time allows with :class:`~ivfusion.train.Trainer`
   (``time_limit`` as the safety net), the data on the device, bf16 and channels-last, validating
   about five times and keeping the best checkpoint, which is exported with its manifest entry.
3. **Archives**, rebuilt after every network so that a cut-off run still returns what it finished:
   ``weights.tar`` (exported ``.safetensors`` + ``.entry.json``) and ``logs.tar.gz`` (configs, logs,
   summaries), beside ``session.log``, ``session.json`` and ``gpu_check.md``: five files, within the
   tool's 8 files of 16 MiB.

A watchdog thread ends the process 20 s after the budget, once it has written the archives.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CARRY = REPO / ".gpu_shared"
SHARED = REPO.parent / "shared"
#: Check parts and their caps in seconds (about 90 s together).
CHECK_PARTS = (("tests", 35.0), ("precision", 15.0), ("speed", 25.0), ("tiling", 15.0))
#: Seconds kept back at the end for the archives.
ARCHIVE_RESERVE_S = 10.0


@dataclass
class NetworkPlan:
    """How one network trains on the GPU: its recipe overrides and its share of the training time."""

    method: str
    share: float
    overrides: Dict[str, Any]
    #: The run must reach this many steps to be worth starting (DIDFuse: its whole paper recipe).
    min_steps: int = 50
    #: Train exactly this many steps when the time allows (DIDFuse's 960), else as many as fit.
    fixed_steps: Optional[int] = None


def network_plans() -> List[NetworkPlan]:
    """The recipes (MODELS.md and the manifests' recipe notes), where they differ from the CPU runs:
    the papers' crops, batch sizes, optimisers and learning rates; the losses as the ablations on the
    CPU chose them (recorded in each weight's manifest notes); warm starts from the shipped weights."""
    rf_loss = {"mask": "margin_max", "lam": 0.5, "ssim_weight": 3.0, "texture_weight": 3.0}
    return [
        # Paper: SGD 1e-3 cosine to 1e-5, batch 8, 256x256 crops (MODELS.md 5.7).
        NetworkPlan("refinefuse", 0.55, dict(crop=256, batch_size=8, lr=1e-3, min_lr=1e-5, saliency="ir_bright",
                                             loss=rf_loss, init_weights="refinefuse.ivif", seed=20)),
        # Paper: Adam 1e-4, x0.75 at 15 % and 25 %, batch 4, 128x128 crops (MODELS.md 3.8).
        NetworkPlan("fiscnet", 0.30, dict(loss={"weights": [0.0, 10.0, 20.0], "ssim_weight": 10.0},
                                          init_weights="fiscnet.ivif", seed=20)),
        # Paper: Adam 1e-3 cosine to 1e-5, batch 4, 256x256 crops (MODELS.md 4.7); CPU runs used 128.
        NetworkPlan("f3net", 0.15, dict(init_weights="f3net.ivif", seed=20)),
        # The whole paper recipe (960 Adam steps, batch 24, 128 centre crops), from scratch.
        NetworkPlan("didfuse", 0.0, dict(), min_steps=960, fixed_steps=960),
    ]


@dataclass
class Session:
    out: Path
    work: Path
    budget: float
    start: float = field(default_factory=time.perf_counter)
    record: Dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def log(self, text: str) -> None:
        line = f"[{time.perf_counter() - self.start:7.1f} s] {text}"
        print(line, flush=True)
        with open(self.out / "session.log", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def save(self) -> None:
        """Write ``session.json`` and both archives (thread-safe: the watchdog may call it too)."""
        with self.lock:
            (self.out / "session.json").write_text(json.dumps(self.record, indent=2, default=str) + "\n")
            with tarfile.open(self.out / "weights.tar.part", "w") as tar:
                for path in sorted(self.work.rglob("*")):
                    if path.suffix == ".safetensors" or path.name.endswith(".entry.json"):
                        tar.add(path, arcname=str(path.relative_to(self.work)))
            os.replace(self.out / "weights.tar.part", self.out / "weights.tar")
            with tarfile.open(self.out / "logs.tar.gz.part", "w:gz") as tar:
                for path in sorted(self.work.rglob("*")):
                    if path.suffix in (".csv", ".jsonl", ".json", ".yaml") and not path.name.endswith(".entry.json"):
                        tar.add(path, arcname=str(path.relative_to(self.work)))
            os.replace(self.out / "logs.tar.gz.part", self.out / "logs.tar.gz")


def prepare_carry(target: Path, source: Path) -> int:
    """Copy ``source``'s ``ivif/`` pairs (training and validation) into ``target/data``, a folder of
    the checkout that ``.gitignore`` names (so it travels only through ``carry``); returns the bytes
    copied."""
    src = source / "data" / "ivif"
    if not src.is_dir():
        raise SystemExit(f"--prepare-carry: no training data at {src}")
    try:
        entry = f"/{target.resolve().relative_to(REPO)}/"
    except ValueError:
        raise SystemExit(f"--prepare-carry: {target} must be a folder inside the checkout {REPO}") from None
    if entry not in (REPO / ".gitignore").read_text().split():
        raise SystemExit(f"--prepare-carry: add {entry} to .gitignore first (the copy must not be committed)")
    dst = target / "data" / "ivif"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())


def run_check(session: Session, args: argparse.Namespace) -> None:
    """The GPU check's parts, each in its own process under a hard timeout; tables to gpu_check.md."""
    report = session.out / "gpu_check.md"
    scale = args.check_s / sum(cap for _, cap in CHECK_PARTS)
    env = dict(os.environ, IVFUSION_SHARED=str(args.data_root), PYTHONPATH=str(REPO))
    results = {}
    for part, cap in CHECK_PARTS:
        cap *= scale
        if args.dry_run and part in ("tests", "tiling"):
            continue  # the CUDA tests skip and tiling is CUDA-only on the CPU; the suite runs both dry
        if session.left() < cap + 30:
            session.log(f"check {part}: skipped (budget)")
            continue
        cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", args.device, "--parts", part,
               "--cap", f"{cap:.0f}"]
        if args.dry_run:
            # torch.compile on the CPU takes minutes of C++ compilation: the dry run times eager modes only.
            cmd += ["--pairs", "1", "--size", "48", "--sizes", "48x32", "--repeats", "1", "--methods", "f3net",
                    "--modes", "eager", "channels_last", "fp16"]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=cap + 20)
            text, status = proc.stdout + proc.stderr[-3000:], f"exit {proc.returncode}"
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            text, status = out, "killed at the hard timeout"
        results[part] = {"status": status, "seconds": round(time.perf_counter() - t0, 1)}
        with open(report, "a", encoding="utf-8") as fh:
            fh.write(f"\n## {part} ({status}, {results[part]['seconds']} s)\n\n{text}\n")
        session.log(f"check {part}: {status} in {results[part]['seconds']} s")
    session.record["check"] = results


def _train_config(plan: NetworkPlan, args: argparse.Namespace, run_dir: Path, steps: int, val_every: int):
    from ivfusion.train import TrainConfig

    values = dict(data=[str(f) for f in args.train_folders], val_split=args.val_split, out=str(run_dir),
                  steps=steps, device=args.device, precision="bf16", channels_last=True, data_on_device=True,
                  workers=0, val_every=val_every, val_max_side=480, progress=False, log_every=max(1, val_every // 5),
                  export=f"{plan.method}.ivif")
    values.update(plan.overrides)
    if args.dry_run:
        values.update(crop=32, batch_size=2, val_max_side=48, val_metrics=["VIF", "Qabf"])
    return TrainConfig.for_method(plan.method, **values)


def calibrate(trainer, dataset, steps: int) -> float:
    """Seconds per optimiser step, timed after two warm-up steps (cuDNN autotuning, allocator)."""
    import torch

    from ivfusion.train import DevicePairs, StepBatchSampler

    pairs = DevicePairs(dataset, trainer.device, channels_last=trainer.channels_last)
    sampler = StepBatchSampler(len(dataset), trainer.config.batch_size, steps + 2, seed=trainer.config.seed)
    t0 = 0.0
    for i, keys in enumerate(sampler):
        if i == 2:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        trainer.optimizer_step(pairs.batch(keys))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def train_network(session: Session, plan: NetworkPlan, args: argparse.Namespace, seconds: float) -> Dict[str, Any]:
    """Calibrate, then train ``plan.method`` within ``seconds``; returns its record."""
    from ivfusion.train import PairedFusionDataset, Trainer, find_pairs
    from ivfusion.train.splits import exclude_split

    t_start = time.perf_counter()
    rec: Dict[str, Any] = {"seconds_given": round(seconds, 1)}
    run_dir = session.work / plan.method
    probe_cfg = _train_config(plan, args, session.work / f"{plan.method}_calibration", steps=1, val_every=0)
    pairs = exclude_split(find_pairs(probe_cfg.data), probe_cfg.val_split)
    dataset = PairedFusionDataset(pairs, crop=probe_cfg.crop, crop_mode=probe_cfg.crop_mode,
                                  augment=probe_cfg.augment, saliency=probe_cfg.saliency, seed=probe_cfg.seed,
                                  workers=args.decode_threads)
    rec["pairs"] = len(dataset)
    rec["decode_s"] = round(time.perf_counter() - t_start, 1)
    probe = Trainer(probe_cfg, dataset=dataset)
    t_val = time.perf_counter()
    start_domains = probe.validate_domains()
    rec["start_score"] = probe.score_domains(start_domains)  # the warm start (shipped weights), or the init
    rec["start_domains"] = start_domains
    rec["val_s"] = round(time.perf_counter() - t_val, 1)
    rec["step_s"] = calibrate(probe, dataset, args.calibration_steps)
    del probe
    spent = time.perf_counter() - t_start
    # Validations: about five, each costing what the one above cost (guided's metrics included,
    # which the trainer computes once: an overestimate), plus the export.
    n_val = 5
    usable = seconds - spent - (n_val + 1) * rec["val_s"] - 5.0
    steps = int(usable / rec["step_s"]) if usable > 0 else 0
    min_steps = plan.min_steps
    if plan.fixed_steps is not None:
        steps = min(steps, plan.fixed_steps)
    if args.max_steps is not None:
        steps, min_steps = min(steps, args.max_steps), min(min_steps, args.max_steps)
    rec["planned_steps"] = steps
    session.log(f"{plan.method}: {len(dataset)} pairs, warm start score {rec['start_score']:.4f}, "
                f"{rec['step_s'] * 1000:.1f} ms/step, validation {rec['val_s']} s -> {steps} steps")
    if steps < min_steps:
        rec["skipped"] = f"only {steps} steps fit (needs {min_steps})"
        session.log(f"{plan.method}: skipped, {rec['skipped']}")
        return rec
    cfg = _train_config(plan, args, run_dir, steps=steps, val_every=max(1, steps // n_val))
    trainer = Trainer(cfg, dataset=dataset)
    result = trainer.run(time_limit=max(1.0, seconds - (time.perf_counter() - t_start)))
    rec.update(steps=result.step, finished=result.finished, timed_out=result.timed_out,
               best_step=result.best_step, best_score=result.best_score, best_metrics=result.best_metrics,
               best_domains=trainer.best.get("domains"), wall_s=round(result.wall_time_s, 1),
               improved=result.best_score is not None and result.best_score > rec["start_score"],
               reproduce=trainer.reproduce_command())
    session.log(f"{plan.method}: {result.step} steps in {result.wall_time_s:.0f} s, best score "
                f"{result.best_score:.4f} at step {result.best_step} (warm start {rec['start_score']:.4f})")
    return rec


def run_training(session: Session, args: argparse.Namespace) -> None:
    plans = [p for p in network_plans() if p.method in args.networks]
    session.record["training"] = {}
    weights = {p.method: p.share for p in plans}
    for i, plan in enumerate(plans):
        left = session.left() - ARCHIVE_RESERVE_S
        rest = sum(weights[p.method] for p in plans[i:]) or 1.0
        seconds = left if plan.share == 0 or i == len(plans) - 1 else left * plan.share / rest
        if seconds < args.min_network_s:
            session.log(f"{plan.method}: not started ({seconds:.0f} s left)")
            session.record["training"][plan.method] = {"skipped": f"{seconds:.0f} s left"}
            continue
        try:
            session.record["training"][plan.method] = train_network(session, plan, args, seconds)
        except Exception as exc:  # one network's failure must not cost the others their time
            session.log(f"{plan.method}: FAILED: {exc!r}")
            session.record["training"][plan.method] = {"error": repr(exc), "traceback": traceback.format_exc()}
        session.save()


def _watchdog(session: Session, grace: float) -> None:
    time.sleep(max(0.0, session.left() + grace))
    session.log("watchdog: budget spent, writing the archives and ending the process")
    try:
        session.save()
    finally:
        os._exit(3)


def environment() -> Dict[str, Any]:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                        timeout=5).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = None
    return info


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default $OUT)")
    p.add_argument("--budget", type=float, default=540.0, help="seconds for everything (default 540)")
    p.add_argument("--check-s", type=float, default=90.0, help="seconds for the GPU check (default 90)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", default=None, metavar="ROOT",
                   help="folder holding data/ivif/train/* (default: .gpu_shared, else ../shared)")
    p.add_argument("--val-split", default="mixed", help="held-back split (default the bundled 'mixed')")
    p.add_argument("--networks", nargs="+", default=[p.method for p in network_plans()])
    p.add_argument("--calibration-steps", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None, help="cap every network's steps (dry runs)")
    p.add_argument("--min-network-s", type=float, default=30.0, help="do not start a network with less time")
    p.add_argument("--decode-threads", type=int, default=8)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes (CPU check of the script)")
    p.add_argument("--prepare-carry", metavar="DIR", default=None,
                   help="copy ../shared/data/ivif into DIR/data (git-ignored) and exit")
    args = p.parse_args(argv)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare_carry:
        size = prepare_carry(Path(args.prepare_carry).resolve(), SHARED)
        print(f"copied {size / 2**20:.1f} MiB into {args.prepare_carry}/data")
        return 0
    if not args.out:
        print("--out: give an output folder (or set OUT)", file=sys.stderr)
        return 2
    root = Path(args.data) if args.data else (DEFAULT_CARRY if (DEFAULT_CARRY / "data").is_dir() else SHARED)
    args.data_root = root.resolve()
    train_root = args.data_root / "data" / "ivif" / "train"
    if not train_root.is_dir():
        print(f"--data: no training folders at {train_root}", file=sys.stderr)
        return 2
    args.train_folders = sorted(p for p in train_root.iterdir() if p.is_dir())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu_session_{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    session = Session(out=out, work=work, budget=args.budget)
    session.record.update(environment=environment(), budget_s=args.budget, dry_run=args.dry_run,
                          data=str(args.data_root), folders=[p.name for p in args.train_folders])
    session.log(f"gpu session: {session.record['environment']}, budget {args.budget:.0f} s")
    threading.Thread(target=_watchdog, args=(session, 20.0), daemon=True).start()
    os.environ.setdefault("IVFUSION_SHARED", str(args.data_root))
    run_check(session, args)
    session.save()
    run_training(session, args)
    session.record["total_s"] = round(time.perf_counter() - session.start, 1)
    session.save()
    session.log(f"done in {session.record['total_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
