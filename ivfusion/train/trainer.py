"""The training loop: one :class:`Trainer` for the four networks.

A run lives in one directory (``config.out``)::

    config.json / config.yaml   the full configuration (YAML only with PyYAML)
    last.pt                     latest checkpoint (every ``ckpt_every`` steps, at the end, on Ctrl-C)
    best.pt                     checkpoint with the best validation score so far
    train_log.csv / .jsonl      mean loss terms and lr every ``log_every`` steps; validation metrics
    summary.json                best step, metrics, wall time, hardware (written at the end)
    <name>.safetensors          exported weights (``export``) + <name>.entry.json, its manifest entry

Reproducibility: the data a step sees is a pure function of ``(seed, epoch, index)``
(:mod:`ivfusion.train.data`), the model is initialised from ``seed``, and a checkpoint stores the
model, optimiser, scheduler, GradScaler, step, RNG states and the log accumulators. Resuming from
any checkpoint therefore continues exactly as the uninterrupted run would (bit-identical on CPU;
on CUDA up to the nondeterminism of cuDNN kernels unless ``deterministic=True``).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO, Tuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .._progress import progress_bar
from .._version import __version__
from ..distributed import dist_info, init_distributed, rank0_decides, rank_device
from ..models import create_model, get_model_info, load_weights
from ..models.didfuse import FUSION_RULES
from .export import export_checkpoint
from . import losses as L
from ._forward import DIDFuseStep, ForwardPass, check_loss_options
from .config import TrainConfig, lr_factor, resumed_segments
from .data import DevicePairs, PairedFusionDataset, StepBatchSampler, batch_to_device, find_pairs, make_loader
from .splits import exclude_split
from ._manifest import manifest_fields, reproduce_command
from ._runlog import RunLog
from ._runtime import (TimeBudget, atomic_save, hardware_description, resolve_device, resolve_precision, rng_state,
                       set_rng_state)
from .validation import Validation, mean_over_domains

__all__ = ["Trainer", "TrainResult", "train"]

_MAX_INIT_DRAWS = 10


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    out: Path
    #: Optimiser steps done (equals ``total_steps`` when the run finished).
    step: int
    total_steps: int
    finished: bool
    #: The run stopped short of ``total_steps`` because ``time_limit`` was spent (it was validated,
    #: checkpointed and exported as a finished run is, and resumes from ``last.pt``).
    timed_out: bool = False
    best_step: Optional[int] = None
    best_score: Optional[float] = None
    best_metrics: Dict[str, float] = field(default_factory=dict)
    #: DIDFuse: validation metrics of the best checkpoint under every fusion rule.
    rule_metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    best_rule: Optional[str] = None
    #: Rows of the log (train and val), as written to the CSV/JSONL files in this process.
    history: List[Dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0
    export: Optional[Any] = None


class Trainer:
    """Trains one network on paired data according to a :class:`TrainConfig`.

    Args:
        config: the run's configuration (see :meth:`TrainConfig.for_method`).
        resume: continue from ``<out>/last.pt`` (model, optimiser, scheduler, scaler, step, RNG
            states, best score); the training fields of ``config`` must match the checkpoint's.
        extend: with ``resume``, continue the run to ``config``'s new (larger) length: ``steps`` /
            ``epochs`` may differ from the checkpoint's, and the learning-rate schedule is evaluated
            for the new length from the next step on. The run records each length it was trained
            to, and its reproduce command replays them in order.
        dataset: an already built :class:`PairedFusionDataset` (default: built from ``config.data``).
        stream: where the progress bar writes (default stderr).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool = False,
        extend: bool = False,
        dataset: Optional[PairedFusionDataset] = None,
        stream: Optional[TextIO] = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        if extend and not resume:
            raise ValueError("extend: only applies to a resumed run (resume=True / --resume)")
        config.validate()
        self.config = cfg = config
        self.method = cfg.method
        self.out = Path(cfg.out).expanduser()
        self.stream = stream
        #: This process's rank under ``torchrun`` (0 of 1 otherwise): DistributedDataParallel over
        #: the ranks, each on its share of every global batch; only rank 0 validates, logs and saves.
        self.dist = dist_info()
        if self.dist.distributed and cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size: {cfg.batch_size} is not divisible by the {self.dist.world_size} ranks "
                             "of this torchrun launch (each rank takes an equal share of every batch)")
        self.device = resolve_device(rank_device(cfg.device))
        self.owns_process_group = init_distributed(self.device) if self.dist.distributed else False
        info = get_model_info(cfg.method)
        self.amp_dtype = resolve_precision(cfg.precision, self.device, info.half_precision)
        self.channels_last = self.device.type == "cuda" if cfg.channels_last is None else bool(cfg.channels_last)
        #: Crops cut on the training device (:class:`DevicePairs`) instead of by DataLoader workers.
        self.data_on_device = self.device.type == "cuda" if cfg.data_on_device is None else bool(cfg.data_on_device)
        self._device_pairs: Optional[DevicePairs] = None

        check_loss_options(cfg.method, cfg.loss)
        self.term_names = ("loss",) + L.LOSS_TERMS[cfg.method]

        if dataset is None:
            if not cfg.data:
                raise ValueError("data: expected at least one training folder")
            pairs = find_pairs(cfg.data)
            if cfg.val_split is not None:
                pairs = exclude_split(pairs, cfg.val_split)
                if not pairs:
                    raise ValueError(f"val_split: {cfg.val_split!r} holds back every training pair")
            dataset = PairedFusionDataset(pairs, crop=cfg.crop, crop_mode=cfg.crop_mode, augment=cfg.augment,
                                          saliency=cfg.saliency, seed=cfg.seed)
        elif not isinstance(dataset, PairedFusionDataset):
            raise TypeError(f"dataset: expected a PairedFusionDataset, got {type(dataset).__name__}")
        else:
            for name in ("crop", "crop_mode", "augment", "saliency", "seed"):
                if getattr(dataset, name) != getattr(cfg, name):
                    raise ValueError(f"dataset: its {name} {getattr(dataset, name)!r} differs from the config's "
                                     f"{getattr(cfg, name)!r}")
        if cfg.val_split is not None and len(exclude_split(dataset.pairs, cfg.val_split)) != len(dataset):
            raise ValueError(f"dataset: it holds pairs of the validation split {cfg.val_split!r}")
        self.dataset = dataset
        self.batches_per_epoch = cfg.batches_per_epoch(len(dataset))
        if self.batches_per_epoch == 0:
            raise ValueError(f"batch_size: {cfg.batch_size} exceeds the {len(dataset)} training pairs with drop_last")
        self.total_steps = cfg.total_steps(len(dataset))

        self.model, self.init_draws = self._init_model()
        if cfg.init_weights is not None and not resume:
            load_weights(self.model, cfg.method, cfg.init_weights)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        unused = tuple(getattr(self.model, "unused_parameter_prefixes", ()))
        self.params = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith(unused)]
        self.optimizer = self._build_optimizer()
        total = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, total, cfg.schedule, milestones=cfg.milestones, gamma=cfg.gamma,
                                min_ratio=cfg.min_lr / cfg.lr),
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        #: The callables of the forward pass (compiled or DDP-wrapped when asked).
        self.forward_pass = ForwardPass(cfg.method, self.model, compile=cfg.compile)
        if self.dist.distributed:
            self._wrap_ddp(unused)

        self.step = 0
        self.elapsed = 0.0
        self.best: Dict[str, Any] = {"score": None, "step": None, "metrics": {}}
        self._acc: Dict[str, torch.Tensor] = {}
        self._acc_count = 0
        #: The held-back pairs and the checkpoint-selection score.
        self.validation = Validation(cfg, self.device)
        self._log = RunLog(self.out, ["kind", "step", "epoch", "lr", *self.term_names, *self.val_metrics_names,
                                    "score", "elapsed_s"], enabled=self.dist.is_main)
        #: Every length (in steps) the run was trained to, the current one last.
        self.segments: List[int] = [self.total_steps]
        self._resumed = False
        if resume:
            self.load_checkpoint(self.out / "last.pt", extend=extend)
            self._resumed = True

    # ------------------------------------------------------------------ building blocks

    def _wrap_ddp(self, unused: Tuple[str, ...]) -> None:
        """Forward passes through :class:`~torch.nn.parallel.DistributedDataParallel`: gradients are
        averaged over the ranks during backward (equal shares, so the mean over the global batch)."""
        if self.device.type == "cuda":
            # BatchNorm statistics over the global batch, as in one process (same Parameter objects,
            # so the optimiser is unaffected). SyncBatchNorm is CUDA-only: on CPUs (gloo) each rank
            # normalises its own share, so DIDFuse's steps only approximate the single-process ones.
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        module: torch.nn.Module = DIDFuseStep(self.model) if self.method == "didfuse" else self.model
        ddp = DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                  find_unused_parameters=bool(unused))
        self.forward_pass = ForwardPass(self.method, self.model,
                                        wrapped=torch.compile(ddp) if self.config.compile else ddp)

    def shutdown(self, wait: bool = True) -> None:
        """Leave the process group this trainer created under ``torchrun`` (no-op otherwise).

        ``wait``: first wait for every rank to finish (after a successful run); ``False`` after an
        error, when the other ranks may never arrive."""
        if self.owns_process_group:
            # Drop the DDP wrappers (their reducer holds the group) and wait until every rank is done
            # (rank 0 still writes the summary and the export) before tearing the group down: a rank
            # that destroyed it early could abort in a gloo thread at exit.
            self.forward_pass = ForwardPass(self.method, self.model)
            if wait:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()
            self.owns_process_group = False

    def run(self, until_step: Optional[int] = None, *, time_limit: Optional[float] = None) -> TrainResult:
        """:meth:`fit`, then :meth:`shutdown` (waiting for the other ranks only if the run succeeded).
        A planned stop at ``until_step`` saves ``last.pt`` there, so the run resumes from that step;
        ``time_limit`` (seconds) stops it when the wall-clock budget is spent (see :meth:`fit`)."""
        try:
            result = self.fit(until_step, checkpoint_at_stop=True, time_limit=time_limit)
        except BaseException:
            self.shutdown(wait=False)
            raise
        self.shutdown()
        return result

    def _init_model(self) -> Tuple[torch.nn.Module, int]:
        """Create the network from the run's seed (part of the reproducible state). For FISCNet with
        ``redraw_dead_init``, redraw while the clamped output of the first training batch receives
        no gradient (< 1 % of its raw values inside (0, 1))."""
        cfg = self.config
        probe = None
        for draw in range(_MAX_INIT_DRAWS):
            seed = cfg.seed if draw == 0 else int(np.random.SeedSequence(cfg.seed, spawn_key=(2, draw)).generate_state(1)[0])
            torch.manual_seed(seed)
            model = create_model(cfg.method, **cfg.model).to(self.device).train()
            if cfg.method != "fiscnet" or not cfg.redraw_dead_init:
                return model, 1
            if probe is None:
                sampler = StepBatchSampler(len(self.dataset), cfg.batch_size, 1, seed=cfg.seed, shuffle=cfg.shuffle,
                                           drop_last=cfg.drop_last)
                keys = sampler.batch_at(0)
                samples = [self.dataset[k] for k in keys]
                probe = batch_to_device({k: torch.stack([s[k] for s in samples]) for k in samples[0]}, self.device)
            with torch.no_grad():
                raw = model.forward_raw(probe["ir"], probe["vis"])
            if float(((raw > 0) & (raw < 1)).float().mean()) >= 0.01:
                return model, draw + 1
        raise RuntimeError(f"fiscnet: {_MAX_INIT_DRAWS} initialisations in a row give an output outside [0, 1] "
                           "on the first batch; try another seed")

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                   weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        return cls(self.params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)

    @property
    def validates(self) -> bool:
        """Whether the run has validation data (``val`` or ``val_split``)."""
        return self.config.val is not None or self.config.val_split is not None

    @property
    def val_interval(self) -> int:
        """Steps between validations (0 = only after the last step)."""
        v = self.config.val_every
        if v == "auto":
            return max(1, self.total_steps // 20)
        if v == "epoch":
            return self.batches_per_epoch
        return int(v)

    @property
    def ckpt_interval(self) -> int:
        if self.config.ckpt_every is not None:
            return self.config.ckpt_every
        if self.validates and self.val_interval > 0:
            return self.val_interval
        return 1000

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def compute_loss(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Forward pass (under autocast) and loss (float32) of one batch already on the device
        (float ``[0, 1]`` tensors ``"ir"``, ``"vis"`` and, for FISCNet, ``"mask"``)."""
        return self.forward_pass.loss(batch, self.config.loss, self._autocast)

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One optimiser step on a collated uint8 batch; returns the detached loss terms
        (``"loss"`` = the total) on the device."""
        return self.optimizer_step(batch_to_device(batch, self.device, channels_last=self.channels_last))

    def optimizer_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """:meth:`train_step` on a batch already on the device (float ``[0, 1]``, as
        :func:`batch_to_device` and :meth:`DevicePairs.batch` make it)."""
        total, terms = self.compute_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": total.detach(), **terms}

    # ------------------------------------------------------------------ validation

    @property
    def val_metrics_names(self) -> List[str]:
        """The metrics computed at each validation (``config.val_metrics``)."""
        return self.validation.metric_names

    def validate_domains(self, **forward_options: Any) -> Dict[str, Dict[str, float]]:
        """Mean validation metrics per domain (:meth:`Validation.pairs`): luma through the network in
        eval mode (float32, ``torch.inference_mode``), the output rounded to 8 bits, scored with
        :func:`ivfusion.metrics.evaluate_batch`. ``forward_options`` go to the network (e.g.
        DIDFuse's ``rule``)."""
        if not self.validates:
            raise ValueError("val: no validation folder configured")
        was_training = self.model.training
        self.model.eval()
        try:
            return self.validation.domains(lambda i, v: self.model(i, v, **forward_options))
        finally:
            self.model.train(was_training)

    def validate(self, **forward_options: Any) -> Dict[str, float]:
        """Validation metrics averaged over the domains of :meth:`validate_domains` (with one
        validation folder and no split: that folder's mean metrics)."""
        return mean_over_domains(self.validate_domains(**forward_options))

    def guided_metrics(self) -> Dict[str, Dict[str, float]]:
        """The ``guided`` baseline's validation metrics per domain (computed once)."""
        return self.validation.guided()

    def score(self, metrics: Dict[str, float]) -> float:
        """The sum of the :attr:`TrainConfig.select` metrics of one metrics dict."""
        return self.validation.score(metrics)

    def score_domains(self, domains: Dict[str, Dict[str, float]]) -> float:
        """The best-checkpoint criterion (:meth:`Validation.score_domains`)."""
        return self.validation.score_domains(domains)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> Dict[str, Any]:
        """The checkpoint dict (everything ``torch.load(..., weights_only=True)`` can read)."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "method": self.method,
            "config": self.config.to_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "segments": list(self.segments),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": rng_state(self.device),
            "best": dict(self.best),
            "elapsed_s": float(self.elapsed),
            "init_draws": self.init_draws,
            "log_acc": {"count": self._acc_count, "sums": {k: float(v) for k, v in self._acc.items()}},
            "manifest": self.manifest_fields(),
            "version": __version__,
        }

    def save_checkpoint(self, path: Path) -> None:
        atomic_save(self.state_dict(), Path(path))

    def load_checkpoint(self, path: Path, *, extend: bool = False) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (``weights_only`` load); with
        ``extend`` the run's length may grow (see :class:`Trainer`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"resume: no checkpoint at {str(path)!r}")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("method") != self.method:
            raise ValueError(f"resume: the checkpoint is for {ckpt.get('method')!r}, not {self.method!r}")
        self.segments = resumed_segments(ckpt, self.config, self.total_steps, extend=extend)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.best = dict(ckpt.get("best") or self.best)
        self.elapsed = float(ckpt.get("elapsed_s", 0.0))
        acc = ckpt.get("log_acc") or {}
        self._acc_count = int(acc.get("count", 0))
        self._acc = {k: torch.tensor(v, dtype=torch.float64, device=self.device)
                     for k, v in (acc.get("sums") or {}).items()}
        set_rng_state(ckpt["rng"], self.device)

    # ------------------------------------------------------------------ manifest / export

    def manifest_fields(self) -> Dict[str, Any]:
        """Manifest fields known from the run (:func:`ivfusion.train._manifest.manifest_fields`);
        :func:`ivfusion.train.export.export_checkpoint` completes them."""
        return manifest_fields(self.config, (p.folder for p in self.dataset.pairs), total_steps=self.total_steps,
                               batches_per_epoch=self.batches_per_epoch, segments=self.segments, best=self.best,
                               device=self.device, amp_dtype=self.amp_dtype, elapsed_s=self.elapsed)

    def reproduce_command(self) -> str:
        """``ivfusion train ...`` with every training field that differs from the method's recipe."""
        return reproduce_command(self.config, self.segments)

    def export(self, name: str, checkpoint: Optional[Path] = None):
        """Export ``checkpoint`` (default: ``best.pt``, else ``last.pt``) through
        :func:`ivfusion.train.export.export_checkpoint` to ``<out>/<name with . -> _>.safetensors`` and
        write its manifest entry to ``<out>/<name>.entry.json``."""
        if checkpoint is None:
            checkpoint = self.out / "best.pt"
            if not checkpoint.is_file():
                checkpoint = self.out / "last.pt"
        target = self.out / f"{name.replace('.', '_')}.safetensors"
        result = export_checkpoint(checkpoint, target, method=self.method, name=name, entry=self.manifest_fields())
        (self.out / f"{name}.entry.json").write_text(json.dumps({name: result.entry}, indent=2) + "\n",
                                                     encoding="utf-8")
        return result

    # ------------------------------------------------------------------ the loop

    def _log_train(self, lr: float) -> Dict[str, Any]:
        n = self._acc_count
        if self.dist.distributed:  # log the mean over the ranks (every rank logs at the same steps)
            stacked = torch.stack([self._acc[name] for name in self.term_names]).to(torch.float64)
            torch.distributed.all_reduce(stacked)
            self._acc = {name: stacked[i] / self.dist.world_size for i, name in enumerate(self.term_names)}
        row: Dict[str, Any] = {"kind": "train", "step": self.step, "epoch": self.step / self.batches_per_epoch,
                               "lr": lr}
        for name in self.term_names:
            row[name] = float(self._acc[name]) / n
        row["elapsed_s"] = round(self.elapsed + (time.perf_counter() - self._t0), 3)
        if not math.isfinite(row["loss"]):
            raise RuntimeError(f"{self.method}: the loss became {row['loss']} before step {self.step}; "
                                     "lower lr, set grad_clip, or use precision='fp32'")
        self._acc, self._acc_count = {}, 0
        self._log.write(row)
        return row

    def _run_validation(self) -> Dict[str, Any]:
        domains = self.validate_domains()
        metrics = mean_over_domains(domains)
        score = self.score_domains(domains)
        improved = self.best["score"] is None or score > self.best["score"]
        if improved:
            self.best = {"score": score, "step": self.step, "metrics": metrics}
            if len(domains) > 1:
                self.best["domains"] = domains
        elapsed = round(self.elapsed + (time.perf_counter() - self._t0), 3)
        if len(domains) > 1:
            for d, m in domains.items():
                self._log.write({"kind": f"val:{d}", "step": self.step, "epoch": self.step / self.batches_per_epoch,
                                 **m, "elapsed_s": elapsed})
        row = {"kind": "val", "step": self.step, "epoch": self.step / self.batches_per_epoch, **metrics,
               "score": score, "elapsed_s": elapsed}
        self._log.write(row)
        if improved:
            self._save_with_elapsed(self.out / "best.pt")
        return row

    def _save_with_elapsed(self, path: Path) -> None:
        now = time.perf_counter()
        self.elapsed += now - self._t0
        self._t0 = now
        if self.dist.is_main:
            self.save_checkpoint(path)

    def fit(self, until_step: Optional[int] = None, *, checkpoint_at_stop: bool = False,
            time_limit: Optional[float] = None) -> TrainResult:
        """Train to ``total_steps`` (or stop after ``until_step`` steps, as an interruption would; with
        ``checkpoint_at_stop`` also saving ``last.pt`` at that step, as a planned stop).

        The last step is always validated (with ``config.val``) and checkpointed. When the run is
        complete: the best checkpoint's weights are loaded into :attr:`model`, DIDFuse's fusion rules
        are compared on them, ``summary.json`` is written and ``config.export`` is exported.

        ``time_limit``: seconds of wall-clock time for this call. Before each step the loop checks
        that the step and the closing work still fit (:class:`~ivfusion.train._runtime.TimeBudget`:
        the mean step time so far plus the last validation's duration); when they do not, it stops
        as a completed run does, short of its length: it validates that step, saves ``last.pt``
        (``resume`` goes on from there), writes ``summary.json`` and exports the best checkpoint.
        """
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        if not self._resumed and self.dist.is_main:
            cfg.save(self.out)
            self._log.start(fresh=True)
        else:
            if len(self.segments) > 1 and self.dist.is_main:
                cfg.save(self.out)  # the extended length
            self._log.truncate_after(self.step)
        torch.backends.cudnn.benchmark = not cfg.deterministic
        torch.backends.cudnn.deterministic = cfg.deterministic
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        stop = self.total_steps if until_step is None else min(int(until_step), self.total_steps)
        sampler = StepBatchSampler(len(self.dataset), cfg.batch_size, self.total_steps, seed=cfg.seed,
                                   shuffle=cfg.shuffle, drop_last=cfg.drop_last, start_step=self.step,
                                   rank=self.dist.rank, world_size=self.dist.world_size)
        budget = TimeBudget(time_limit)
        if self.data_on_device:
            if self._device_pairs is None:
                self._device_pairs = DevicePairs(self.dataset, self.device, channels_last=self.channels_last)
            loader: Any = None
            batches: Any = map(self._device_pairs.batch, sampler)
            step_fn = self.optimizer_step
        else:
            loader = batches = make_loader(self.dataset, sampler, workers=cfg.workers,
                                           pin_memory=self.device.type == "cuda")
            step_fn = self.train_step
        self._t0 = time.perf_counter()
        val_every, ckpt_every = self.val_interval, self.ckpt_interval
        postfix: Dict[str, float] = {}
        desc = f"train {self.method}" + (f" (resumed at step {self.step})" if self.step else "")
        bar = progress_bar(stop - self.step, desc, unit="step", enabled=cfg.progress and self.dist.is_main,
                           file=self.stream)
        in_step = timed_out = False
        validated_at = -1
        try:
            for batch in batches:
                if self.step >= stop:
                    break
                if budget.limited and rank0_decides(budget.exhausted(closing=self.validates), self.device):
                    timed_out = True
                    break
                lr = float(self.optimizer.param_groups[0]["lr"])
                in_step = True
                t_step = time.perf_counter()
                terms = step_fn(batch)
                budget.record_step(time.perf_counter() - t_step)
                self.step += 1
                for name in self.term_names:
                    value = terms[name].to(torch.float64)
                    self._acc[name] = self._acc[name] + value if name in self._acc else value
                self._acc_count += 1
                in_step = False
                last = self.step == self.total_steps
                if self.step % cfg.log_every == 0 or last:
                    row = self._log_train(lr)
                    postfix = {k: row[k] for k in self.term_names}
                    postfix["lr"] = lr
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if self.validates and self.dist.is_main and ((val_every and self.step % val_every == 0) or last):
                    t_val = time.perf_counter()
                    row = self._run_validation()
                    budget.record_closing(time.perf_counter() - t_val)
                    validated_at = self.step
                    postfix[cfg.select] = row["score"]
                if self.step % ckpt_every == 0 or last or (checkpoint_at_stop and self.step == stop):
                    self._save_with_elapsed(self.out / "last.pt")
            if timed_out:
                if self.validates and self.dist.is_main and validated_at != self.step:
                    self._run_validation()
                self._save_with_elapsed(self.out / "last.pt")
        except KeyboardInterrupt:
            # Between steps every state is consistent, so the run can resume exactly from here;
            # inside a step it is not, and the last regular checkpoint stays.
            if not in_step:
                self._save_with_elapsed(self.out / "last.pt")
            raise
        finally:
            bar.close()
            del loader, batches
        self.elapsed += time.perf_counter() - self._t0
        self._t0 = time.perf_counter()
        result = TrainResult(out=self.out, step=self.step, total_steps=self.total_steps,
                             finished=self.step >= self.total_steps, history=list(self._log.rows),
                             timed_out=timed_out and self.step < self.total_steps)
        if (result.finished or result.timed_out) and self.dist.is_main:
            self._finish(result)
        result.best_step, result.best_score = self.best.get("step"), self.best.get("score")
        result.best_metrics = dict(self.best.get("metrics") or {})
        result.wall_time_s = self.elapsed
        return result

    def _finish(self, result: TrainResult) -> None:
        cfg = self.config
        best_path = self.out / "best.pt"
        if self.validates and best_path.is_file():
            best = torch.load(best_path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(best["model"])
            if self.method == "didfuse":
                rule_scores = {}
                for rule in FUSION_RULES:
                    domains = self.validate_domains(rule=rule)
                    result.rule_metrics[rule] = mean_over_domains(domains)
                    rule_scores[rule] = self.score_domains(domains)
                result.best_rule = max(rule_scores, key=rule_scores.get)
                for rule, metrics in result.rule_metrics.items():
                    self._log.write({"kind": f"val_rule_{rule}", "step": best["step"], **metrics,
                                     "score": rule_scores[rule]})
        elif not self.validates:
            self.best = {"score": None, "step": self.step, "metrics": {}}
        summary = {
            "method": self.method, "steps": self.step, "total_steps": self.total_steps,
            "stopped": "time limit" if result.timed_out else None, "pairs": len(self.dataset),
            "best_step": self.best.get("step"), "best_score": self.best.get("score"), "select": cfg.select,
            "best_metrics": self.best.get("metrics"), "rule_metrics": result.rule_metrics or None,
            "best_rule": result.best_rule, "wall_time_s": round(self.elapsed, 2), "init_draws": self.init_draws,
            "hardware": hardware_description(self.device),
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32",
            "reproduce": self.reproduce_command(),
        }
        if cfg.export:
            result.export = self.export(cfg.export)
            summary["export"] = str(result.export.path)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        result.history = list(self._log.rows)


def train(config: TrainConfig, *, resume: bool = False, stream: Optional[TextIO] = None) -> TrainResult:
    """Build a :class:`Trainer` for ``config`` and run it to the end (under ``torchrun``: on every rank)."""
    return Trainer(config, resume=resume, stream=stream).run()
