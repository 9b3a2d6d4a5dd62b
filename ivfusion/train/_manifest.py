"""What a run records about itself for its release: the manifest fields of its weights (training data
and terms, licence, recipe, validation metrics, description) and the ``ivfusion train`` command(s)
that reproduce it. Pure functions of the run's state, so that the trainer only gathers it."""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import torch

from ._runtime import hardware_description
from .config import RUNTIME_FIELDS, TrainConfig
from .data import data_folder_name

__all__ = ["DATA_TERMS", "manifest_fields", "reproduce_command"]

#: Terms of use of the known training folders (``shared/data/README.md``), by folder name.
DATA_TERMS: Dict[str, str] = {
    "llvip": "non-commercial research only",
    "roadscene": "academic use, cite the papers",
    "tno": "CC BY 4.0",
    "msrs": "MIT",
}

# Training fields with a command-line flag of their own (the rest go through --set key=json).
_FLAGS = {"steps": "--steps", "epochs": "--epochs", "batch_size": "--batch-size", "crop": "--crop", "lr": "--lr",
          "seed": "--seed", "precision": "--precision", "val_every": "--val-every", "val_limit": "--val-limit",
          "val_split": "--val-split", "val_max_side": "--val-max-side", "init_weights": "--init-weights"}


def _terms_of(folder: str) -> str:
    return DATA_TERMS.get(Path(folder).name.lower(), "unknown: check the dataset's terms")


def _val_description(config: TrainConfig) -> str:
    parts = []
    if config.val_split is not None:
        parts.append(f"the {config.val_split} split's domains relative to guided")
    if config.val is not None:
        parts.append(data_folder_name(config.val))
    return " and ".join(parts)


def reproduce_command(config: TrainConfig, segments: Sequence[int]) -> str:
    """``ivfusion train ...`` with every training field of ``config`` that differs from the method's
    recipe; for a run extended after its first length (``segments``: every length in steps it was
    trained to, in order), one ``--resume --extend`` command per later length, joined by ``&&``."""
    base = TrainConfig.for_method(config.method)
    args = ["ivfusion", "train", config.method, "--data", *config.data]
    if config.val:
        args += ["--val", config.val]
    args += ["--out", config.out]
    mine, ref = config.to_dict(), base.to_dict()
    if len(segments) > 1:  # trained to the first length, then extended
        mine.update(steps=segments[0], epochs=None)
    # Precision changes the trajectory, and the validation points decide which checkpoint is kept.
    for key, flag in _FLAGS.items():
        if mine[key] is not None and mine[key] != ref[key]:
            args += [flag, str(mine[key])]
    skip = set(_FLAGS) | RUNTIME_FIELDS | {"method"}
    for key in mine:
        if key not in skip and mine[key] != ref[key]:
            args += ["--set", f"{key}={json.dumps(mine[key])}"]
    commands = [shlex.join(args)]
    for steps in segments[1:]:
        commands.append(shlex.join(["ivfusion", "train", config.method, "--out", config.out, "--resume", "--extend",
                                    "--steps", str(steps)]))
    return " && ".join(commands)


def manifest_fields(
    config: TrainConfig,
    folders: Iterable[str],
    *,
    total_steps: int,
    batches_per_epoch: int,
    segments: Sequence[int],
    best: Mapping[str, Any],
    device: torch.device,
    amp_dtype: Optional[torch.dtype],
    elapsed_s: float,
) -> Dict[str, Any]:
    """Manifest fields known from a run; :func:`ivfusion.train.export.export_checkpoint` completes them.

    Args:
        config: the run's configuration.
        folders: the training folder of every training pair (one entry per pair).
        total_steps, batches_per_epoch, segments: the run's length (steps), steps per epoch, and
            every length it was trained to.
        best: the best checkpoint's record (``step``, ``metrics``, ``domains``: per-domain metrics).
        device, amp_dtype, elapsed_s: where it trained, its autocast dtype (``None``: float32) and
            its training time in seconds.
    """
    counts: Dict[str, int] = {}
    for folder in folders:
        counts[str(folder)] = counts.get(str(folder), 0) + 1
    training = [{"folder": data_folder_name(f), "terms": _terms_of(f), "pairs": n} for f, n in counts.items()]
    terms = sorted({t["terms"] for t in training})
    license_ = config.license or ("weights inherit the terms of their training data: " + "; ".join(
        f"{t['folder']}: {t['terms']}" for t in training))
    epochs = total_steps / batches_per_epoch
    recipe: Dict[str, Any] = {
        "crop": config.crop, "batch": config.batch_size, "lr": float(config.lr),
        "hardware": f"{hardware_description(device)}, {elapsed_s / 60.0:.1f} min",
        "iterations": total_steps, "optimizer": config.optimizer_description(), "seed": config.seed,
        "precision": f"{str(amp_dtype).replace('torch.', '')} autocast" if amp_dtype else "float32",
    }
    if float(epochs).is_integer():
        recipe["epochs"] = int(epochs)
    validated = (config.val or config.val_split) and best.get("step") is not None
    fields: Dict[str, Any] = {
        "training_data": training,
        "license": license_,
        "recipe": recipe,
        "reproduce": reproduce_command(config, segments),
        "description": (f"{config.method} trained by ivfusion.train on {', '.join(t['folder'] for t in training)}"
                        + (f"; best {config.select} on {_val_description(config)} at step {best['step']}"
                           if validated else "")
                        + ("; NON-COMMERCIAL (training data)" if any("non-commercial" in t for t in terms) else "")),
    }
    if best.get("domains"):
        split = (f" ({config.val_split} split"
                 + (f", longer side <= {config.val_max_side} px)" if config.val_max_side else ")"))
        fields["metrics"] = {(d if config.val and d == data_folder_name(config.val) else d + split):
                             {k: float(v) for k, v in m.items()} for d, m in best["domains"].items()}
    elif config.val and best.get("metrics"):
        fields["metrics"] = {data_folder_name(config.val): {k: float(v) for k, v in best["metrics"].items()}}
    return fields
