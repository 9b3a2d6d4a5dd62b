"""``ivfusion eval`` and ``train``."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict

from ._common import CLIError, parse_option


# ------------------------------------------------------------------------------------ eval


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score fused images with EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, ...",
        description="Score every fused image of --fused-dir against its --ir-dir and --vis-dir sources "
                    "(matched by file stem) and print mean and std per metric.",
    )
    p.add_argument("--ir-dir", required=True, help="folder of infrared images")
    p.add_argument("--vis-dir", required=True, help="folder of visible images")
    p.add_argument("--fused-dir", required=True, help="folder of fused images")
    p.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                   help="metrics to compute, space- or comma-separated (default: all)")
    p.add_argument("--profile", choices=["reference", "standard"], default="reference",
                   help="reference: the CDDFuse/EMMA Evaluator definitions (default); standard: textbook ones")
    p.add_argument("--mi-base", type=float, default=None, help="logarithm base of MI (default: e for reference, 2 for standard)")
    p.add_argument("--csv", default=None, metavar="PATH", help="also write the per-image scores to this CSV file")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..metrics import evaluate_dirs

    metrics = ",".join(args.metrics) if args.metrics else None
    result = evaluate_dirs(args.ir_dir, args.vis_dir, args.fused_dir, metrics, profile=args.profile,
                           mi_base=args.mi_base, device=args.device, progress=not args.no_progress)
    print(result.format_table())
    if args.csv:
        print(f"wrote {result.write_csv(args.csv)}")
    return 0


# ------------------------------------------------------------------------------------ train


def _val_every(text: str) -> Any:
    if text in ("auto", "epoch"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, 'auto' or 'epoch', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, 'auto' or 'epoch', got {text!r}")
    return value


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ..train.config import METHODS, PRECISIONS

    p = sub.add_parser(
        "train",
        help="train a fusion network with its paper's recipe",
        description="Train METHOD on aligned pairs (folders with ir/ and vi/) with the paper's recipe "
                    "(MODELS.md), validate on --val, keep the best checkpoint, optionally export it. "
                    "Precedence: recipe < --config FILE < --set KEY=VALUE < the flags below. With --resume "
                    "the run's saved config.json is the starting point.",
    )
    p.add_argument("method", choices=METHODS, help="network to train")
    p.add_argument("--data", nargs="+", default=None, metavar="DIR", help="training folder(s), each with ir/ and vi/")
    p.add_argument("--val", default=None, metavar="DIR", help="validation folder with ir/ and vi/ (default: none)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (config, checkpoints, logs)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: the paper's)")
    steps.add_argument("--epochs", type=int, default=None, help="passes over the training pairs instead of --steps")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the paper's)")
    p.add_argument("--crop", type=int, default=None, help="crop side in pixels (default: the paper's)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: the paper's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="auto (default): bf16 autocast on CUDA (fp16 + GradScaler without bf16), fp32 on CPU")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default 4)")
    p.add_argument("--val-every", type=_val_every, default=None, metavar="N",
                   help="validate every N steps, 'epoch', or 'auto' (default: 20 times per run); 0 = at the end only")
    p.add_argument("--val-limit", type=int, default=None, metavar="K", help="validate on the first K pairs only")
    p.add_argument("--val-split", default=None, metavar="SPLIT",
                   help="hold back a validation split of the --data folders ('mixed', the bundled 30-pair split "
                        "over tno/msrs/llvip/roadscene, or a JSON file) and select the best checkpoint on it, "
                        "per domain relative to guided")
    p.add_argument("--val-max-side", type=int, default=None, metavar="PX",
                   help="validate on images shrunk to this longer side (default: full size)")
    p.add_argument("--init-weights", default=None, metavar="WEIGHT",
                   help="warm start from a weight name or .safetensors file instead of a random initialisation")
    p.add_argument("--ckpt-every", type=int, default=None, metavar="N",
                   help="save last.pt every N steps (default: at every validation)")
    p.add_argument("--log-every", type=int, default=None, metavar="N", help="log mean loss terms every N steps (default 10)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the recipe's)")
    p.add_argument("--export", default=None, metavar="NAME",
                   help="export the best checkpoint as weight NAME (METHOD.TAG) into RUN_DIR with its manifest entry")
    p.add_argument("--config", default=None, metavar="FILE", help="JSON (or YAML, with PyYAML) file of config fields")
    p.add_argument("--set", dest="overrides", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="any config field, VALUE as JSON, e.g. --set grad_clip=1.0 --set 'loss={\"lam\": 5}'")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--extend", action="store_true",
                   help="with --resume: train the run on to a new, larger --steps/--epochs (the learning-rate "
                        "schedule is evaluated for the new length from the next step on)")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="stop after this step, saving last.pt there (validated only if it is a validation "
                        "step); the run goes on with --resume")
    p.add_argument("--time-limit", type=_seconds, default=None, metavar="SECONDS",
                   help="wall-clock budget of this command: stop when one more step and the final validation "
                        "would pass it, then validate, save last.pt and export the best checkpoint as a finished "
                        "run does; the run goes on with --resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from ..train import TrainConfig, Trainer

    values: Dict[str, Any] = {}
    if args.resume:
        saved = Path(args.out) / "config.json"
        if not saved.is_file():
            raise CLIError(f"--resume: no run to resume in {args.out!r} (config.json missing)")
        values.update(TrainConfig.read_file(saved))
    if args.config:
        values.update(TrainConfig.read_file(args.config))
    if values.get("method", args.method) != args.method:
        raise CLIError(f"the config is for {values['method']!r}, not {args.method!r}")
    values.update(dict(args.overrides))
    flags = {"data": args.data, "val": args.val, "out": args.out, "steps": args.steps, "epochs": args.epochs,
             "batch_size": args.batch_size, "crop": args.crop, "lr": args.lr, "device": args.device,
             "precision": args.precision, "workers": args.workers, "val_every": args.val_every,
             "val_limit": args.val_limit, "ckpt_every": args.ckpt_every, "log_every": args.log_every,
             "seed": args.seed, "export": args.export, "val_split": args.val_split,
             "val_max_side": args.val_max_side, "init_weights": args.init_weights}
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.steps is not None:
        values["epochs"] = None
    if args.epochs is not None:
        values["steps"] = None
    if args.compile:
        values["compile"] = True
    if args.no_progress:
        values["progress"] = False
    values["method"] = args.method
    config = TrainConfig.from_dict(values)
    if not config.data:
        raise CLIError("--data: give at least one training folder")
    if args.stop_after is not None and args.stop_after < 1:
        raise CLIError(f"--stop-after: expected a step >= 1, got {args.stop_after}")
    trainer = Trainer(config, resume=args.resume, extend=args.extend)
    if trainer.dist.is_main:
        ranks = f" x {trainer.dist.world_size} ranks" if trainer.dist.distributed else ""
        print(f"training {config.method}: {len(trainer.dataset)} pairs, {trainer.total_steps} steps, "
              f"batch {config.batch_size}, crop {config.crop}, device {trainer.device}{ranks} -> {trainer.out}")
    time_limit = None if args.time_limit is None else max(0.0, args.time_limit - (time.perf_counter() - started))
    result = trainer.run(args.stop_after, time_limit=time_limit)
    if not trainer.dist.is_main:
        return 0
    if result.timed_out:
        print(f"time limit: stopped after step {result.step} of {trainer.total_steps} (validated, checkpointed, best "
              f"exported); go on with: ivfusion train {config.method} --out {config.out} --resume")
    elif not result.finished:
        print(f"stopped after step {result.step} of {trainer.total_steps}; go on with: ivfusion train "
              f"{config.method} --out {config.out} --resume")
    else:
        print(f"done: {result.step} steps in {result.wall_time_s / 60:.1f} min")
    if result.best_metrics:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.best_metrics.items())
        print(f"best {config.select} {result.best_score:.4f} at step {result.best_step}: {metrics}")
    if result.rule_metrics:
        for rule, m in result.rule_metrics.items():
            print(f"  rule {rule}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
        print(f"best fusion rule on val: {result.best_rule}")
    if result.export is not None:
        print(f"exported {result.export.path} (sha256 {result.export.sha256}); "
              f"manifest entry in {trainer.out / (config.export + '.entry.json')}")
    return 0




# ------------------------------------------------------------------------------------ train-registration


def _add_train_registration(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-registration",
        help="train the learned infrared-to-visible registration network (RegNet) on synthetic warps",
        description="Train RegNet on synthetic rig-like warps of aligned pairs (--data folders with ir/ and vi/, "
                    "minus --val-split), keep the checkpoint with the lowest corner error on one fixed warp of "
                    "each validation pair (--val folders and the split), optionally export it.",
    )
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="training folder(s), each with ir/ and vi/")
    p.add_argument("--val", nargs="*", default=[], metavar="DIR", help="validation folder(s) with ir/ and vi/")
    p.add_argument("--val-split", default="mixed", metavar="SPLIT",
                   help="held-back split of the --data folders ('mixed' or a JSON file; 'none' for none)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (config, checkpoints, log)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=None, help="batch size")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--seed", type=int, default=None, help="random seed")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default 1)")
    p.add_argument("--export", default=None, metavar="NAME",
                   help="export the best checkpoint as weight NAME (regnet.TAG) with its manifest entry")
    p.add_argument("--no-progress", action="store_true", help="do not print the log lines")


def _cmd_train_registration(args: argparse.Namespace) -> int:
    import json

    from ..train.registration import RegTrainConfig, export_regnet, train_registration

    values: Dict[str, Any] = {"data": args.data, "val": args.val, "out": args.out,
                              "val_split": None if args.val_split == "none" else args.val_split}
    for key in ("steps", "batch_size", "lr", "seed", "threads"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    for key, low in (("steps", 1), ("batch_size", 1), ("threads", 1)):
        if key in values and values[key] < low:
            raise CLIError(f"--{key.replace('_', '-')} must be >= {low}, got {values[key]}")
    result = train_registration(RegTrainConfig(**values), progress=not args.no_progress)
    print(f"best step {result.best_step}: validation corner error {result.best_corner_px:.3f} px "
          f"(at {160} px width) -> {result.checkpoint}")
    if args.export:
        path, entry = export_regnet(args.out, args.export)
        (Path(args.out) / "manifest_entry.json").write_text(json.dumps({args.export: entry}, indent=2) + "\n")
        print(f"wrote {path} and {Path(args.out) / 'manifest_entry.json'}")
    return 0
