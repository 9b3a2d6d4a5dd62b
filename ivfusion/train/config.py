"""Training configuration: one dataclass, with each paper's recipe as the per-method default.

Schedules are written relative to the total number of optimiser steps (milestones as fractions of
the run, cosine over the whole run), so a shorter ``steps`` budget scales them proportionally.

============  =========  ======  ======  =====  ===========  ===========================================
method        optimiser  lr      batch   crop   steps        schedule / data
============  =========  ======  ======  =====  ===========  ===========================================
didfuse       Adam       1e-3    24      128    960          x0.1 at 1/3 and 2/3 (epochs 40, 80 of 120);
                                                             centre crop, no augmentation (MODELS.md 2.5)
fiscnet       Adam       1e-4    4       128    100,000      x0.75 at 15 % and 25 % (15k, 25k); random
                                                             crop, flips + transpose (MODELS.md 3.8)
f3net         Adam       1e-3    4       256    27,000       cosine to 1e-5; random crop, h-flip (4.7)
refinefuse    SGD m 0.9  1e-3    8       256    40,800       cosine to 1e-5; random crop, rotations by
                                                             90 degrees + flips (5.7)
============  =========  ======  ======  =====  ===========  ===========================================

A config is saved as JSON (always) and YAML (when PyYAML is installed) next to the checkpoints and
loads from either (:meth:`TrainConfig.load`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from ..io import write_atomic
from ..metrics.registry import resolve_metrics
from .data import AUGMENTATIONS, CROP_MODES, SALIENCY_MODES
from .losses import LOSS_TERMS, REFINEFUSE_SALIENCY_MASKS

__all__ = ["TrainConfig", "RECIPES", "METHODS", "OPTIMIZERS", "SCHEDULES", "PRECISIONS", "lr_factor"]

METHODS = tuple(sorted(LOSS_TERMS))
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "multistep", "cosine")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Fields a resumed run may change (every other field must match the checkpoint's).
RUNTIME_FIELDS = frozenset({
    "data", "val", "out", "device", "workers", "val_every", "val_limit", "val_metrics", "val_profile", "select",
    "ckpt_every", "log_every", "export", "license", "progress", "compile", "val_max_side", "channels_last",
    "deterministic", "data_on_device"})
#: Fields that set the run's length: they may grow when a run is extended.
LENGTH_FIELDS = frozenset({"steps", "epochs"})

#: The papers' recipes (MODELS.md 2.5, 3.8, 4.7, 5.7); every other field keeps its dataclass default.
RECIPES: Dict[str, Dict[str, Any]] = {
    "didfuse": dict(
        optimizer="adam", lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0,
        schedule="multistep", milestones=[1 / 3, 2 / 3], gamma=0.1,
        batch_size=24, crop=128, crop_mode="center", augment="none", steps=960, seed=0,
    ),
    "fiscnet": dict(
        optimizer="adam", lr=1e-4, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0,
        schedule="multistep", milestones=[0.15, 0.25], gamma=0.75,
        batch_size=4, crop=128, crop_mode="random", augment="dihedral", steps=100_000, seed=10,
        saliency="vsm",
    ),
    "f3net": dict(
        optimizer="adam", lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0,
        schedule="cosine", min_lr=1e-5,
        batch_size=4, crop=256, crop_mode="random", augment="hflip", steps=27_000, seed=0,
    ),
    "refinefuse": dict(
        optimizer="sgd", lr=1e-3, momentum=0.9, nesterov=False, weight_decay=0.0,
        schedule="cosine", min_lr=1e-5,
        batch_size=8, crop=256, crop_mode="random", augment="dihedral", steps=40_800, seed=0,
    ),
}

_DEFAULT_VAL_METRICS = ["VIF", "Qabf", "MI", "SSIM", "EN", "SF"]


def lr_factor(step: int, total: int, schedule: str, *, milestones: List[float] = (), gamma: float = 0.1,
              min_ratio: float = 0.0) -> float:
    """Multiplier of the initial learning rate for optimiser step ``step`` of ``total`` (0-based).

    ``multistep``: ``gamma ** (number of milestones m with step >= round(m * total))``;
    ``cosine``: ``min_ratio + (1 - min_ratio) (1 + cos(pi step / total)) / 2`` (reaches
    ``min_ratio`` at ``step = total``); ``constant``: 1.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "multistep":
        passed = sum(1 for m in milestones if step >= round(m * total))
        return float(gamma) ** passed
    if schedule == "cosine":
        t = min(max(step, 0), total) / max(total, 1)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Build with :meth:`for_method` to start from the paper's
    recipe; unspecified fields keep these defaults."""

    method: str
    #: Training folders, each with ``ir/`` and ``vi/`` sub-folders.
    data: List[str] = field(default_factory=list)
    #: Validation folder (``ir/`` + ``vi/``); ``None`` = no validation (the last step is "best").
    val: Optional[str] = None
    #: A validation split held back from ``data`` (``"mixed"`` or a JSON file, see
    #: :mod:`ivfusion.train.splits`): its pairs are removed from training and validated per domain
    #: (with ``val``, if given, as one more domain). With a split, the best checkpoint is chosen on
    #: the mean over domains of each :attr:`select` metric relative to ``guided`` on that domain.
    val_split: Optional[str] = None
    #: Validate on images shrunk (area average) so that their longer side is at most this many
    #: pixels (``None``: full size). Makes in-training validation affordable on the CPU.
    val_max_side: Optional[int] = None
    #: Warm start: initial network weights (a manifest weight name or a ``.safetensors`` path)
    #: instead of the seeded random initialisation.
    init_weights: Optional[str] = None
    #: Run directory: config, checkpoints, logs, exports.
    out: str = "runs/train"

    # ---- recipe
    #: Total optimiser steps (``None``: derived from ``epochs``).
    steps: Optional[int] = None
    #: Alternative to ``steps``: passes over the training pairs.
    epochs: Optional[int] = None
    batch_size: int = 8
    crop: int = 128
    crop_mode: str = "random"
    augment: str = "none"
    #: Shuffle pairs jointly each epoch (``False``: sorted order, e.g. DIDFuse's official loader).
    shuffle: bool = True
    drop_last: bool = False
    optimizer: str = "adam"
    lr: float = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"
    #: ``multistep`` milestones as fractions of ``steps``.
    milestones: List[float] = field(default_factory=list)
    gamma: float = 0.1
    #: Final learning rate of the cosine schedule.
    min_lr: float = 0.0
    #: Clip the global gradient norm to this value (``None``: off, as in all four papers).
    grad_clip: Optional[float] = None
    #: Saliency maps served with each crop: FISCNet's (``"vsm"``/``"vsm_binary"``), RefineFuse's
    #: infrared targets (``"ir_bright"``, for its ``margin_saliency``/``saliency`` masks); ``None``
    #: otherwise.
    saliency: Optional[str] = None
    #: Network constructor options (passed to ``create_model``; the exporter reads them too).
    model: Dict[str, Any] = field(default_factory=dict)
    #: Loss options (keyword arguments of the method's loss in :mod:`ivfusion.train.losses`).
    loss: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    #: FISCNet clamps its output before the loss, so an initialisation whose output lies outside
    #: [0, 1] everywhere gets no gradient at all (about 4 draws in 10 of the default init). With this
    #: set, such a draw is replaced by the next one of a seeded sequence (at most 10 draws); the
    #: number of draws is logged. No effect on the other networks.
    redraw_dead_init: bool = True

    # ---- runtime
    #: ``None``: CUDA when available, else CPU.
    device: Optional[str] = None
    #: ``auto``: bf16 autocast on CUDA when supported (else fp16 with a GradScaler), fp32 on CPU.
    precision: str = "auto"
    #: ``None``: channels-last on CUDA only.
    channels_last: Optional[bool] = None
    compile: bool = False
    #: Deterministic cuDNN kernels (slower; CPU runs are deterministic anyway).
    deterministic: bool = False
    #: DataLoader worker processes (0 = load in the main process).
    workers: int = 4
    #: Keep the decoded training pairs on the training device and cut, flip and batch the crops
    #: there (:class:`~ivfusion.train.data.DevicePairs`: the same samples as the DataLoader path, no
    #: per-step host work). ``None``: on for CUDA, off for the CPU (where the workers overlap the
    #: crops with the step).
    data_on_device: Optional[bool] = None
    #: Validate every N steps; ``"epoch"`` = once per epoch; ``"auto"`` = 20 times per run; 0 =
    #: only after the last step.
    val_every: Union[int, str] = "auto"
    #: Use only the first K validation pairs.
    val_limit: Optional[int] = None
    val_metrics: List[str] = field(default_factory=lambda: list(_DEFAULT_VAL_METRICS))
    #: ``ivfusion.metrics`` profile of the validation metrics.
    val_profile: str = "reference"
    #: Best-checkpoint criterion: a sum of validation metrics (all higher-is-better), e.g. ``"VIF+Qabf"``.
    select: str = "VIF+Qabf"
    #: Save ``last.pt`` every N steps (``None``: at every validation, or every 1000 steps without one).
    ckpt_every: Optional[int] = None
    #: Log the mean loss terms of every N steps.
    log_every: int = 10
    #: Export the best checkpoint as ``<out>/<name with . -> _>.safetensors`` (``"<method>.<tag>"``).
    export: Optional[str] = None
    #: Licence string of the exported weights (``None``: derived from the training data's terms).
    license: Optional[str] = None
    progress: bool = True

    # ------------------------------------------------------------------ construction and checks

    @classmethod
    def for_method(cls, method: str, **overrides: Any) -> "TrainConfig":
        """The paper's recipe for ``method`` with ``overrides`` on top. Giving ``epochs`` without
        ``steps`` replaces the recipe's step count."""
        if method not in RECIPES:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
        values = dict(RECIPES[method])
        if overrides.get("epochs") is not None and overrides.get("steps") is None:
            values.pop("steps", None)
        values.update(overrides)
        return cls(method=method, **values)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first bad field."""

        def need(cond: bool, name: str, expected: str) -> None:
            if not cond:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need(self.method in METHODS, "method", f"one of {', '.join(METHODS)}")
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        self.data = [str(d) for d in self.data]
        if self.val is not None:
            self.val = str(self.val)
        self.out = str(self.out)
        need(self.steps is None or (is_int(self.steps) and self.steps >= 1), "steps", "a positive int or None")
        need(self.epochs is None or (is_int(self.epochs) and self.epochs >= 1), "epochs", "a positive int or None")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("steps, epochs: give one of them, not both")
        if self.steps is None and self.epochs is None:
            raise ValueError("steps, epochs: give one of them")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "a positive int")
        need(is_int(self.crop) and self.crop >= 8, "crop", "an int >= 8")
        need(self.crop_mode in CROP_MODES, "crop_mode", f"one of {CROP_MODES}")
        need(self.augment in AUGMENTATIONS, "augment", f"one of {AUGMENTATIONS}")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}")
        need(is_num(self.lr) and self.lr > 0, "lr", "a positive number")
        self.betas = list(self.betas)
        need(len(self.betas) == 2 and all(is_num(b) and 0 <= b < 1 for b in self.betas), "betas", "two numbers in [0, 1)")
        need(is_num(self.eps) and self.eps > 0, "eps", "a positive number")
        need(is_num(self.momentum) and 0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}")
        self.milestones = list(self.milestones)
        need(all(is_num(m) and 0 < m < 1 for m in self.milestones), "milestones", "fractions of the run in (0, 1)")
        need(is_num(self.gamma) and self.gamma > 0, "gamma", "a positive number")
        need(is_num(self.min_lr) and 0 <= self.min_lr <= self.lr, "min_lr", f"a number in [0, lr={self.lr}]")
        need(self.grad_clip is None or (is_num(self.grad_clip) and self.grad_clip > 0), "grad_clip", "None or > 0")
        need(self.saliency is None or self.saliency in SALIENCY_MODES, "saliency", f"None or one of {SALIENCY_MODES}")
        if self.method == "fiscnet":
            need(self.saliency in ("vsm", "vsm_binary"), "saliency", "'vsm' or 'vsm_binary' (FISCNet's loss needs the maps)")
        need(isinstance(self.model, dict), "model", "a dict of constructor options")
        need(isinstance(self.loss, dict), "loss", "a dict of loss options")
        need(is_int(self.seed) and self.seed >= 0, "seed", "an int >= 0")
        need(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}")
        need(is_int(self.workers) and self.workers >= 0, "workers", "an int >= 0")
        need(self.data_on_device in (None, True, False), "data_on_device", "None, True or False")
        need((is_int(self.val_every) and self.val_every >= 0) or self.val_every in ("auto", "epoch"),
             "val_every", "an int >= 0, 'auto' or 'epoch'")
        need(self.val_limit is None or (is_int(self.val_limit) and self.val_limit >= 1), "val_limit", "None or >= 1")
        need(self.val_split is None or isinstance(self.val_split, str), "val_split", "None, 'mixed' or a JSON path")
        need(self.val_max_side is None or (is_int(self.val_max_side) and self.val_max_side >= 16), "val_max_side",
             "None or an int >= 16")
        need(self.init_weights is None or isinstance(self.init_weights, str), "init_weights",
             "None, a weight name or a .safetensors path")
        if self.method == "refinefuse" and self.loss.get("mask") in REFINEFUSE_SALIENCY_MASKS:
            need(self.saliency == "ir_bright", "saliency", f"'ir_bright' for loss mask {self.loss['mask']!r}")
        need(self.ckpt_every is None or (is_int(self.ckpt_every) and self.ckpt_every >= 1), "ckpt_every", "None or >= 1")
        need(is_int(self.log_every) and self.log_every >= 1, "log_every", "an int >= 1")
        need(self.val_profile in ("reference", "standard"), "val_profile", "'reference' or 'standard'")
        self.val_metrics = resolve_metrics(self.val_metrics)
        chosen = resolve_metrics(self.select_metrics)
        for name in chosen:  # the criterion's metrics are always computed
            if name not in self.val_metrics:
                self.val_metrics.append(name)
        if self.export is not None:
            need(isinstance(self.export, str) and self.export.split(".", 1)[0] == self.method and "." in self.export,
                 "export", f"a weight name '{self.method}.<tag>'")

    @property
    def select_metrics(self) -> List[str]:
        """The metric names summed by :attr:`select`."""
        parts = [p.strip() for p in str(self.select).split("+")]
        if not all(parts):
            raise ValueError(f"select: expected metric names joined by '+', got {self.select!r}")
        return parts

    # ------------------------------------------------------------------ derived values

    def batches_per_epoch(self, num_pairs: int) -> int:
        return num_pairs // self.batch_size if self.drop_last else math.ceil(num_pairs / self.batch_size)

    def total_steps(self, num_pairs: int) -> int:
        """``steps``, or ``epochs x batches per epoch`` for ``num_pairs`` training pairs."""
        if self.steps is not None:
            return self.steps
        return int(self.epochs) * max(1, self.batches_per_epoch(num_pairs))

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based) in a run of ``total`` steps."""
        return self.lr * lr_factor(step, total, self.schedule, milestones=self.milestones, gamma=self.gamma,
                                   min_ratio=self.min_lr / self.lr)

    def optimizer_description(self) -> str:
        """One line for the manifest, e.g. ``"SGD momentum 0.9, cosine 1e-3 -> 1e-5"``."""
        if self.optimizer == "sgd":
            opt = f"SGD momentum {self.momentum:g}" + (" nesterov" if self.nesterov else "")
        else:
            opt = f"{'AdamW' if self.optimizer == 'adamw' else 'Adam'} betas ({self.betas[0]:g}, {self.betas[1]:g})"
        if self.weight_decay:
            opt += f", weight decay {self.weight_decay:g}"
        if self.schedule == "cosine":
            sched = f"cosine {self.lr:g} -> {self.min_lr:g}"
        elif self.schedule == "multistep":
            sched = f"x{self.gamma:g} at {', '.join(f'{m:.3g}' for m in self.milestones)} of the run"
        else:
            sched = f"constant {self.lr:g}"
        return f"{opt}, {sched}"

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error. Missing fields take the method's
        recipe defaults."""
        if not isinstance(data, Mapping):
            raise TypeError(f"config: expected a mapping, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"config: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        if "method" not in data:
            raise ValueError("config: missing field 'method'")
        values = dict(data)
        return cls.for_method(values.pop("method"), **values)

    def save(self, directory: Union[str, os.PathLike]) -> List[Path]:
        """Write ``config.json`` (and ``config.yaml`` when PyYAML is installed) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        written = [directory / "config.json"]
        _write_text(written[0], json.dumps(data, indent=2) + "\n")
        try:
            import yaml  # optional ([train] extra)
        except ImportError:
            return written
        written.append(directory / "config.yaml")
        _write_text(written[1], yaml.safe_dump(data, sort_keys=False))
        return written

    @staticmethod
    def read_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
        """The raw dict of a ``.json`` or ``.yaml``/``.yml`` config file (YAML needs PyYAML)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config: no such file: {str(path)!r}")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ValueError(f"config: reading {path.name} needs PyYAML (pip install 'ivfusion[train]'); "
                                 "or use a JSON config") from None
            data = yaml.safe_load(text)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"config: {str(path)!r} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"config: {str(path)!r} must hold a mapping of fields")
        return data

    @classmethod
    def load(cls, path: Union[str, os.PathLike], **overrides: Any) -> "TrainConfig":
        """Load a config file (JSON or YAML) with ``overrides`` on top."""
        return cls.from_dict({**cls.read_file(path), **overrides})


def resumed_segments(ckpt: Mapping[str, Any], config: TrainConfig, total_steps: int, *, extend: bool = False) -> List[int]:
    """The run lengths a resumed run has been trained to, after checking it may resume ``ckpt``.

    ``ckpt`` is a trainer checkpoint (its ``config``, ``step``, ``total_steps`` and ``segments``);
    ``config`` and ``total_steps`` describe the run resuming it. Every field outside
    :data:`RUNTIME_FIELDS` must match (and :data:`LENGTH_FIELDS` too, unless ``extend``); with
    ``extend`` the new length, if longer, is appended. Raises ``ValueError`` naming each difference.
    """
    saved = ckpt.get("config", {})
    mine = config.to_dict()
    ignored = RUNTIME_FIELDS | LENGTH_FIELDS if extend else RUNTIME_FIELDS
    differ = sorted(k for k in mine if k not in ignored and saved.get(k) != mine[k])
    if differ:
        hint = " (to train longer, extend the run: extend=True / --extend)" if set(differ) <= LENGTH_FIELDS else ""
        raise ValueError(
            "resume: the configuration differs from the checkpoint's in " + ", ".join(
                f"{k} ({saved.get(k)!r} there, {mine[k]!r} here)" for k in differ) + hint
        )
    segments = [int(n) for n in ckpt.get("segments") or [ckpt.get("total_steps")]]
    if extend:
        if total_steps < int(ckpt["step"]):
            raise ValueError(f"extend: the run is already at step {ckpt['step']}; the new length "
                             f"({total_steps} steps) must not be shorter")
        if total_steps != segments[-1]:
            segments.append(total_steps)
    elif ckpt.get("total_steps") != total_steps:
        raise ValueError(f"resume: the checkpoint was made for {ckpt.get('total_steps')} steps, this run has "
                         f"{total_steps} (different data size? use extend / --extend to train longer)")
    return segments


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
