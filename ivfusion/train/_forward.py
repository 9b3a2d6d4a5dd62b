"""The training forward pass of each network and its paper's loss (:mod:`ivfusion.train.losses`).

:class:`ForwardPass` holds the callables a step runs: the network itself, its ``torch.compile``
version or its :class:`~torch.nn.parallel.DistributedDataParallel` wrapper (the state dict stays the
network's), and computes ``(total, terms)`` for a batch on the device.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, ContextManager, Dict, Optional, Tuple

import torch

from . import losses as L

__all__ = ["LOSS_FUNCTIONS", "check_loss_options", "didfuse_forward", "DIDFuseStep", "ForwardPass"]

LOSS_FUNCTIONS: Dict[str, Callable[..., Tuple[torch.Tensor, Dict[str, torch.Tensor]]]] = {
    "f3net": L.f3net_loss,
    "didfuse": L.didfuse_loss,
    "refinefuse": L.refinefuse_loss,
    "fiscnet": L.fiscnet_loss,
}


def check_loss_options(method: str, options: Dict[str, Any]) -> None:
    """``ValueError`` naming the options ``method``'s loss does not take (its keyword-only arguments)."""
    fn = LOSS_FUNCTIONS[method]
    accepted = [p.name for p in inspect.signature(fn).parameters.values() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"loss: unknown option(s) {', '.join(unknown)} for {method}; accepted: {', '.join(accepted)}")


def didfuse_forward(encode: Any, decode: Any, ir: torch.Tensor, vis: torch.Tensor) -> Tuple[Any, Any, Any, Any]:
    """DIDFuse's training pass: separate calls in the official order enc(V), enc(I), dec(V), dec(I),
    so that BatchNorm sees per-modality batches (MODELS.md 2.5). ``(feats_ir, feats_vis, ir^, vis^)``."""
    feats_vis = encode(vis)
    feats_ir = encode(ir)
    vis_hat = decode(*feats_vis)
    ir_hat = decode(*feats_ir)
    return feats_ir, feats_vis, ir_hat, vis_hat


class DIDFuseStep(torch.nn.Module):
    """:func:`didfuse_forward` as a module, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> Tuple[Any, Any, Any, Any]:
        return didfuse_forward(self.model.encode, self.model.decode, ir, vis)


class ForwardPass:
    """The forward pass and loss of one network's training step.

    Args:
        method: the network's name (a key of :data:`LOSS_FUNCTIONS`).
        model: the network.
        compile: run ``torch.compile`` versions (DIDFuse: its encoder and decoder).
        wrapped: instead, a DistributedDataParallel wrapper of ``model`` (DIDFuse: of a
            :class:`DIDFuseStep`).
    """

    def __init__(self, method: str, model: torch.nn.Module, *, compile: bool = False,
                 wrapped: Optional[torch.nn.Module] = None) -> None:
        self.method = method
        self.loss_fn = LOSS_FUNCTIONS[method]
        self.fuse: Any = model
        self.encode = getattr(model, "encode", None)
        self.decode = getattr(model, "decode", None)
        #: DIDFuse's four calls as one module (what DistributedDataParallel wraps under torchrun).
        self.didfuse_step: Optional[torch.nn.Module] = None
        if wrapped is not None:
            if method == "didfuse":
                self.didfuse_step = wrapped
            else:
                self.fuse = wrapped
        elif compile:
            if method == "didfuse":
                self.encode = torch.compile(model.encoder)
                self.decode = torch.compile(model.decoder)
            else:
                self.fuse = torch.compile(model)

    def loss(self, batch: Dict[str, torch.Tensor], options: Dict[str, Any],
             autocast: Callable[[], ContextManager] = contextlib.nullcontext
             ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Forward pass (under ``autocast()``) and loss (float32) of one batch on the device (float
        ``[0, 1]`` tensors ``"ir"``, ``"vis"`` and, for FISCNet and RefineFuse's saliency masks,
        ``"mask"``); ``options`` are the loss's keyword arguments."""
        ir, vis = batch["ir"], batch["vis"]
        if self.method == "didfuse":
            with autocast():
                if self.didfuse_step is not None:
                    feats_ir, feats_vis, ir_hat, vis_hat = self.didfuse_step(ir, vis)
                else:
                    feats_ir, feats_vis, ir_hat, vis_hat = didfuse_forward(self.encode, self.decode, ir, vis)
            return self.loss_fn(ir, vis, ir_hat, vis_hat, feats_ir, feats_vis, **options)
        with autocast():
            fused = self.fuse(ir, vis)  # FISCNet: the clamped output, as its loss requires
        if self.method == "fiscnet":
            return self.loss_fn(fused, ir, vis, batch["mask"], **options)
        if self.method == "refinefuse" and "mask" in batch:
            return self.loss_fn(fused, ir, vis, saliency_ir=batch["mask"], **options)
        return self.loss_fn(fused, ir, vis, **options)
