"""Validation during training: the held-back pairs by domain, their metrics, and the score that
picks the best checkpoint.

:class:`Validation` loads the pairs once (the domains of ``config.val_split``, then
``config.val``), scores any fusion function on them with :func:`ivfusion.metrics.evaluate_batch`,
and turns per-domain metrics into the selection score. The :class:`~ivfusion.train.Trainer` owns
one and delegates its ``validate*`` / ``score*`` methods to it.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..classical import fuse_guided
from ..metrics import evaluate_batch, prepare_image
from ..metrics.registry import resolve_metrics
from .config import TrainConfig
from .data import PairFiles, data_folder_name, find_pairs, load_luma
from .splits import split_pairs

__all__ = ["ValPair", "FuseFn", "Validation", "load_val_pair", "mean_over_domains"]

#: One validation pair: ``(stem, ir, vis, ir_ref, vis_ref)``. ``ir``/``vis`` are the network's
#: ``(1, 1, H, W)`` float inputs in ``[0, 1]``; ``ir_ref``/``vis_ref`` the same images on the
#: 0..255 scale the metrics take.
ValPair = Tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

#: A fusion function ``(ir, vis) -> fused``, all ``(1, 1, H, W)`` in ``[0, 1]``.
FuseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_over_domains(domains: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """Each metric's plain mean over the domains (every domain counts once, whatever its size)."""
    names = next(iter(domains.values())).keys()
    return {n: sum(m[n] for m in domains.values()) / len(domains) for n in names}


def load_val_pair(pair: PairFiles, max_side: Optional[int], device: torch.device) -> ValPair:
    """Read one pair's luma; larger than ``max_side`` pixels, shrink both by area averaging and round
    to 8 bits, so that the network and the metrics see one and the same image."""
    ir = torch.from_numpy(load_luma(pair.ir, name=f"ir image {pair.ir}"))
    vis = torch.from_numpy(load_luma(pair.vis, name=f"visible image {pair.vis}"))
    if ir.shape != vis.shape:
        raise ValueError(f"validation pair {pair.stem!r}: infrared and visible differ in size")
    if max_side is not None and max(ir.shape) > max_side:
        scale = max_side / max(ir.shape)
        size = (max(1, round(ir.shape[0] * scale)), max(1, round(ir.shape[1] * scale)))
        ir_ref, vis_ref = (torch.nn.functional.interpolate(x.double()[None, None], size=size, mode="area").round()
                           for x in (ir, vis))
        ir, vis = ir_ref, vis_ref
    else:
        ir, vis = ir[None, None], vis[None, None]
        ir_ref = prepare_image(pair.ir, name="ir", device="cpu")
        vis_ref = prepare_image(pair.vis, name="vis", device="cpu")
    return (pair.stem, (ir.float() / 255.0).to(device), (vis.float() / 255.0).to(device),
            ir_ref.to(device), vis_ref.to(device))


class Validation:
    """The validation pairs of a :class:`TrainConfig` and the scoring of fusion functions on them.

    Args:
        config: ``val_split`` (with ``data``), ``val`` / ``val_limit``, ``val_max_side``,
            ``val_metrics``, ``val_profile`` and ``select`` are read.
        device: where the pairs live and the metrics run.
    """

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.metric_names: List[str] = list(config.val_metrics)
        self._pairs: Optional[Dict[str, List[ValPair]]] = None
        self._guided: Optional[Dict[str, Dict[str, float]]] = None

    def pairs(self) -> Dict[str, List[ValPair]]:
        """Validation pairs by domain: the split's domains, then ``config.val`` (its first
        ``val_limit`` pairs), loaded once."""
        if self._pairs is None:
            cfg = self.config
            sets = dict(split_pairs(cfg.val_split, cfg.data)) if cfg.val_split is not None else {}
            if cfg.val is not None:
                found = find_pairs(cfg.val)
                if cfg.val_limit is not None:
                    found = found[: cfg.val_limit]
                sets[data_folder_name(cfg.val)] = found
            if not sets:
                raise ValueError("val, val_split: no validation pairs (give val, or a val_split matching data)")
            self._pairs = {domain: [load_val_pair(p, cfg.val_max_side, self.device) for p in found]
                           for domain, found in sets.items()}
        return self._pairs

    def score_pairs(self, fn: FuseFn, pairs: List[ValPair]) -> Dict[str, float]:
        """Mean metrics of ``fn``'s outputs over ``pairs`` (outputs clamped and rounded to 8 bits)."""
        sums: Dict[str, float] = {name: 0.0 for name in self.metric_names}
        for _, ir, vis, ir_ref, vis_ref in pairs:
            fused255 = torch.round(fn(ir, vis).float().clamp(0.0, 1.0).double() * 255.0)
            scores = evaluate_batch(fused255, ir_ref, vis_ref, self.metric_names, profile=self.config.val_profile)
            for name, value in scores.items():
                sums[name] += float(value.sum())
        return {name: total / len(pairs) for name, total in sums.items()}

    @torch.inference_mode()
    def domains(self, fn: FuseFn) -> Dict[str, Dict[str, float]]:
        """Mean metrics of ``fn`` per domain (the caller puts its network in eval mode)."""
        return {d: self.score_pairs(fn, pairs) for d, pairs in self.pairs().items()}

    def guided(self) -> Dict[str, Dict[str, float]]:
        """The ``guided`` baseline's metrics per domain (computed once)."""
        if self._guided is None:
            self._guided = self.domains(fuse_guided)
        return self._guided

    def score(self, metrics: Dict[str, float]) -> float:
        """The sum of the :attr:`TrainConfig.select` metrics of one metrics dict."""
        return float(sum(metrics[name] for name in resolve_metrics(self.config.select_metrics)))

    def score_domains(self, domains: Dict[str, Dict[str, float]]) -> float:
        """The best-checkpoint criterion. Without a split: :meth:`score` of the domains' mean.
        With ``val_split``: the mean over domains and :attr:`TrainConfig.select` metrics of each
        metric divided by ``guided``'s on that domain, so that no domain dominates by its scale
        (1.0 = as good as ``guided`` everywhere)."""
        if self.config.val_split is None:
            return self.score(mean_over_domains(domains))
        names = resolve_metrics(self.config.select_metrics)
        guided = self.guided()
        ratios = [domains[d][n] / guided[d][n] if guided[d][n] else 0.0 for d in domains for n in names]
        return float(sum(ratios) / len(ratios))
