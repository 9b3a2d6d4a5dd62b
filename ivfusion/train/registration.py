"""Training recipe of the learned registration network (:class:`~ivfusion.registration.RegNet`).

Samples are synthetic warps of *aligned* training pairs: a random crop of a pair, resized to the
network's input, whose infrared is re-rendered through a random rig-like registration
(:func:`ivfusion.registration.synthetic.random_registration`: shift, rotation, scale, perspective,
elastic field, lower infrared resolution), with the infrared polarity flipped at random (white-hot
and black-hot cameras). The labels are the true registration's homography part and its full
mapping; the loss is the corner error of both stages' homographies plus the error of their dense
matches (input pixels).

Every sample is a pure function of ``(seed, step, index)``. The checkpoint with the lowest corner
error on a fixed synthetic set from the *validation* pairs is kept and exported with its manifest
entry (:func:`export_regnet`). Command line: ``ivfusion train-registration``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..io import write_atomic
from ..pretrained import DEFAULT_REPO_ID, WeightInfo, sha256_file
from ..registration._network import (
    CORNERS,
    INPUT_SIZE,
    NETWORK,
    RegNet,
    _cell_centres,
    apply_h,
    state_dict_for_export,
)
from ..registration.synthetic import WarpRanges, random_registration, render_infrared
from ._manifest import DATA_TERMS
from ._runtime import hardware_description
from .data import PairFiles, data_folder_name, find_pairs, load_luma
from .splits import exclude_split, split_pairs

__all__ = ["RegTrainConfig", "RegTrainResult", "train_registration", "synthetic_sample", "normalised_truth", "loss_terms",
           "total_loss", "export_regnet", "TRAIN_RANGES"]

#: Warp ranges of the training samples, in pixels of the network's 160-pixel-wide input: wider than
#: the benchmark's (+-30 px on ~500 px images is +-10 px here) so that the network has margin.
TRAIN_RANGES = WarpRanges(shift=14.0, rotation=7.0, scale=0.10, perspective=0.02, elastic=3.0,
                          elastic_nodes=(4, 7), low_res=0.5, low_res_factor=(0.35, 0.9))
#: Pairs are held in memory at this longer side (crops are then resized to the input).
_CACHE_SIDE = 320


@dataclass
class RegTrainConfig:
    """Everything a registration training run depends on."""

    data: List[str]
    out: str
    #: Validation folders (``ivif/val/...``) whose pairs make the fixed selection set.
    val: List[str] = field(default_factory=list)
    #: Held-back split of the training folders: excluded from training, added to the selection set.
    val_split: Optional[str] = "mixed"
    steps: int = 6000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    val_every: int = 250
    log_every: int = 50
    #: Shortest crop side, as a fraction of the image side.
    min_crop: float = 0.6
    #: Probability of inverting the infrared (black-hot cameras).
    invert_ir: float = 0.25
    threads: int = 1

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RegTrainResult:
    best_step: int
    best_corner_px: float
    checkpoint: Path
    log: Path


# ------------------------------------------------------------------------------------------ samples


def normalised_truth(truth) -> Tuple[torch.Tensor, torch.Tensor]:
    """Labels of a true registration at :data:`INPUT_SIZE`: its homography part in normalised
    coordinates ``(3, 3)`` (visible -> infrared) and the full mapping (elastic field included) as
    normalised infrared positions ``(H, W, 2)``."""
    h, w = truth.vis_size
    hi, wi = truth.ir_size
    nv = torch.tensor([[w / 2, 0, w / 2 - 0.5], [0, h / 2, h / 2 - 0.5], [0, 0, 1]], dtype=torch.float64)
    ni = torch.tensor([[2 / wi, 0, 1 / wi - 1], [0, 2 / hi, 1 / hi - 1], [0, 0, 1]], dtype=torch.float64)
    hom = ni @ torch.linalg.inv(torch.from_numpy(truth.matrix)) @ nv
    dense = (truth.mapping().double() + 0.5) * torch.tensor([2 / wi, 2 / hi], dtype=torch.float64) - 1
    return (hom / hom[2, 2]).float(), dense.float()


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def synthetic_sample(ir: np.ndarray, vis: np.ndarray, rng: np.random.Generator, *, ranges: WarpRanges = TRAIN_RANGES,
                     min_crop: float = 0.6, invert_ir: float = 0.25, crop: bool = True
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training sample from an aligned uint8 luma pair: ``(ir (1, h, w), vis (1, h, w), homography
    (3, 3), mapping (2, h, w))`` at :data:`INPUT_SIZE` (see :func:`normalised_truth`)."""
    h, w = vis.shape
    if crop:
        ch, cw = (int(round(s * rng.uniform(min_crop, 1.0))) for s in (h, w))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    else:
        ch, cw, y0, x0 = h, w, 0, 0
    v = torch.from_numpy(vis[y0:y0 + ch, x0:x0 + cw]).float()[None] / 255.0
    i = torch.from_numpy(ir[y0:y0 + ch, x0:x0 + cw]).float()[None] / 255.0
    if crop and rng.random() < 0.5:
        v, i = v.flip(-1), i.flip(-1)
    if rng.random() < invert_ir:
        i = 1.0 - i
    v, i = _resize(v, INPUT_SIZE), _resize(i, INPUT_SIZE)
    truth = random_registration(INPUT_SIZE, rng, ranges)
    moving = _resize(render_infrared(i, truth), INPUT_SIZE)
    hom, dense = normalised_truth(truth)
    return moving.clamp(0, 1), v.clamp(0, 1), hom, dense.permute(2, 0, 1)


def _load_pairs(pairs: Sequence[PairFiles]) -> List[Tuple[np.ndarray, np.ndarray]]:
    out = []
    for p in pairs:
        ir, vis = load_luma(p.ir, name="ir"), load_luma(p.vis, name="vis")
        if ir.shape != vis.shape:
            raise ValueError(f"{p.ir}: the pair is not the same size ({ir.shape} vs {vis.shape})")
        f = min(1.0, _CACHE_SIDE / max(vis.shape))
        size = (max(16, round(vis.shape[0] * f)), max(16, round(vis.shape[1] * f)))
        out.append(tuple((_resize(torch.from_numpy(a).float()[None], size)[0].round().clamp(0, 255)
                          .to(torch.uint8).numpy()) for a in (ir, vis)))
    return out


def _sample_rng(seed: int, step: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, step, index]))


def _batch(pairs, cfg: RegTrainConfig, step: int) -> Tuple[torch.Tensor, ...]:
    items = []
    for k in range(cfg.batch_size):
        rng = _sample_rng(cfg.seed, step, k)
        ir, vis = pairs[int(rng.integers(len(pairs)))]
        items.append(synthetic_sample(ir, vis, rng, min_crop=cfg.min_crop, invert_ir=cfg.invert_ir))
    return tuple(torch.stack([it[i] for it in items]) for i in range(4))


_PX = torch.tensor([INPUT_SIZE[1] / 2, INPUT_SIZE[0] / 2])  # normalised units -> input pixels


def _corner_px(h: torch.Tensor, h_true: torch.Tensor) -> torch.Tensor:
    """Mean corner error per sample in input pixels."""
    return ((apply_h(h, CORNERS) - apply_h(h_true, CORNERS)) * _PX).norm(dim=-1).mean(dim=-1)


def _dense_px(q: torch.Tensor, dense: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Mean distance per sample (input pixels) of matched cell positions ``(B, hw, 2)`` from the true
    mapping ``(B, 2, H, W)`` averaged over each cell."""
    target = F.adaptive_avg_pool2d(dense, size).flatten(2).transpose(1, 2)
    return ((q - target) * _PX).norm(dim=-1).mean(dim=-1)


def _bilinear_target(t: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell index coordinates ``t`` ``(B, n, 2)`` (x, y) on a ``size`` grid -> the flat indices
    ``(B, n, 4)`` of the 4 surrounding cells, their bilinear weights ``(B, n, 4)`` and whether all 4
    lie on the grid ``(B, n)``."""
    hh, ww = size
    x0, y0 = t[..., 0].floor(), t[..., 1].floor()
    fx, fy = t[..., 0] - x0, t[..., 1] - y0
    valid = (x0 >= 0) & (y0 >= 0) & (x0 + 1 <= ww - 1) & (y0 + 1 <= hh - 1)
    idx, wgt = [], []
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        idx.append(((y0 + dy).clamp(0, hh - 1) * ww + (x0 + dx).clamp(0, ww - 1)).long())
        wgt.append(w)
    return torch.stack(idx, dim=-1), torch.stack(wgt, dim=-1), valid


def _cross_entropy(logp: torch.Tensor, idx: torch.Tensor, wgt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid rows of ``-sum target log p``: ``logp`` ``(B, n, K)``, the target spread over
    ``idx`` with ``wgt`` (``(B, n, 4)``)."""
    ce = -(torch.gather(logp, 2, idx) * wgt).sum(dim=-1)
    return (ce * valid).sum() / valid.sum().clamp_min(1)


def _global_ce(logits: torch.Tensor, target: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Cross-entropy of global correlation rows ``(B, n, n)`` against the true infrared positions
    ``(B, n, 2)`` (normalised) of each visible cell; cells that leave the infrared do not count."""
    t = (target + 1) / 2 * torch.tensor([size[1], size[0]], dtype=target.dtype) - 0.5
    idx, wgt, valid = _bilinear_target(t, size)
    return _cross_entropy(torch.log_softmax(logits, dim=2), idx, wgt, valid)


def _local_ce(logits: torch.Tensor, target: torch.Tensor, radius: int) -> torch.Tensor:
    """Cross-entropy of local correlation logits ``(B, K, h, w)`` against the true displacement
    ``(B, hw, 2)`` in cells; cells whose true displacement lies outside the window do not count."""
    side = 2 * radius + 1
    idx, wgt, valid = _bilinear_target(target + radius, (side, side))
    return _cross_entropy(torch.log_softmax(logits.flatten(2), dim=1).transpose(1, 2), idx, wgt, valid)


def loss_terms(out: Dict[str, torch.Tensor], h_true: torch.Tensor, dense: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The training loss terms (batch means): corner errors of both stages' homographies and the
    mean errors of their matches (input pixels), the cross-entropy of both correlations against the
    true matches (the signal that makes the features learn), and the share of stage-1 matches within
    one cell of the truth."""
    s8 = (INPUT_SIZE[0] // 8, INPUT_SIZE[1] // 8)
    s4 = (INPUT_SIZE[0] // 4, INPUT_SIZE[1] // 4)
    p4 = _cell_centres(s4, dense)
    q8 = F.adaptive_avg_pool2d(dense, s8).flatten(2).transpose(1, 2)
    q4 = F.adaptive_avg_pool2d(dense, s4).flatten(2).transpose(1, 2)
    cell4 = torch.tensor([2 / s4[1], 2 / s4[0]])
    back = apply_h(torch.linalg.inv(out["h1"].detach()), q4)  # true match in the stage-1-warped frame
    hit = ((out["q1"] - q8).detach() / torch.tensor([2 / s8[1], 2 / s8[0]])).norm(dim=-1) < 1.0
    return {"corner1": _corner_px(out["h1"], h_true).mean(), "corner2": _corner_px(out["h2"], h_true).mean(),
            "dense1": _dense_px(out["q1"], dense, s8).mean(), "dense2": _dense_px(out["q2"], dense, s4).mean(),
            "match1": _global_ce(out["logits1"], q8, s8),
            "match2": _local_ce(out["logits2"], (back - p4) / cell4, 3),
            "hit1": hit.float().mean()}


def total_loss(terms: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The training objective: both matching cross-entropies (the features' signal), plus a small
    weight on the corner and match errors in input pixels (what the fits make of the matches)."""
    return (terms["match1"] + terms["match2"]
            + 0.05 * (0.5 * terms["corner1"] + terms["corner2"] + 0.5 * terms["dense2"]))


@torch.no_grad()
def _validate(net: RegNet, val: Tuple[torch.Tensor, ...]) -> float:
    net.eval()
    out = net(val[0], val[1])
    net.train()
    return float(_corner_px(out["h2"], val[2]).mean())


# ------------------------------------------------------------------------------------------ training


def train_registration(cfg: RegTrainConfig, progress: bool = False) -> RegTrainResult:
    """Train :class:`RegNet` on synthetic warps of ``cfg.data`` (minus ``cfg.val_split``), select on
    the fixed synthetic validation set, write ``best.pt``, ``last.pt``, ``log.jsonl`` and
    ``config.json`` into ``cfg.out``."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train_pairs = find_pairs(cfg.data)
    val_pairs: List[PairFiles] = []
    if cfg.val_split:
        train_pairs = exclude_split(train_pairs, cfg.val_split)
        for found in split_pairs(cfg.val_split, cfg.data).values():
            val_pairs.extend(found)
    for folder in cfg.val:
        val_pairs.extend(find_pairs(folder))
    if not val_pairs:
        raise ValueError("give validation pairs: val folders and/or val_split")
    pairs = _load_pairs(train_pairs)
    vals = [synthetic_sample(ir, vis, _sample_rng(cfg.seed + 1, 0, k), crop=False, invert_ir=0.0)
            for k, (ir, vis) in enumerate(_load_pairs(val_pairs))]
    val = tuple(torch.stack([v[i] for v in vals]) for i in range(4))
    write_atomic(out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(cfg.to_dict(), indent=2)))

    torch.manual_seed(cfg.seed)
    net = RegNet()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    best = (float("inf"), 0)
    log_path = out / "log.jsonl"
    t0 = time.time()
    running: Dict[str, List[float]] = {}
    with open(log_path, "a", encoding="utf-8") as log:
        for step in range(cfg.steps):
            ir, vis, h_true, dense = _batch(pairs, cfg, step)
            pred = net(ir, vis)
            terms = loss_terms(pred, h_true, dense)
            loss = total_loss(terms)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            for k, v in terms.items():
                running.setdefault(k, []).append(float(v.detach()))
            last = step + 1 == cfg.steps
            if (step + 1) % cfg.log_every == 0 or last:
                rec = {"step": step + 1, **{f"train_{k}": round(float(np.mean(v)), 4) for k, v in running.items()},
                       "lr": sched.get_last_lr()[0], "seconds": round(time.time() - t0, 1)}
                running = {}
                if (step + 1) % cfg.val_every == 0 or last:
                    rec["val_corner_px"] = _validate(net, val)
                    if rec["val_corner_px"] < best[0]:
                        best = (rec["val_corner_px"], step + 1)
                        torch.save({"model": net.state_dict(), "step": step + 1, "val_corner_px": best[0]},
                                   out / "best.pt")
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if progress:
                    print(json.dumps(rec), flush=True)
    torch.save({"model": net.state_dict(), "step": cfg.steps}, out / "last.pt")
    return RegTrainResult(best[1], best[0], out / "best.pt", log_path)


# ------------------------------------------------------------------------------------------ export


def reproduce_command(cfg: RegTrainConfig, name: str) -> str:
    args = ["ivfusion", "train-registration", "--data", *cfg.data]
    if cfg.val:
        args += ["--val", *cfg.val]
    if cfg.val_split:
        args += ["--val-split", cfg.val_split]
    args += ["--out", cfg.out, "--steps", str(cfg.steps), "--batch-size", str(cfg.batch_size), "--lr", str(cfg.lr),
             "--seed", str(cfg.seed), "--export", name]
    return " ".join(shlex.quote(a) for a in args)


def export_regnet(run_dir: str, name: str, *, metrics: Optional[Dict[str, Dict[str, float]]] = None,
                  revision: str = "v0.1.0", default: bool = True) -> Tuple[Path, Dict[str, Any]]:
    """Write ``<run_dir>/<method>_<tag>.safetensors`` from the run's ``best.pt`` and return it with its
    manifest entry (validated by :class:`~ivfusion.pretrained.WeightInfo`)."""
    from safetensors.torch import save_file

    run = Path(run_dir)
    cfg = RegTrainConfig(**json.loads((run / "config.json").read_text()))
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    net = RegNet()
    net.load_state_dict(ckpt["model"])
    method, tag = name.split(".", 1)
    if method != NETWORK:
        raise ValueError(f"name: a registration weight is named '{NETWORK}.<tag>', got {name!r}")
    path = run / f"{method}_{tag}.safetensors"
    state = state_dict_for_export(net)
    write_atomic(path, lambda tmp: save_file(state, tmp, metadata={"method": NETWORK, "name": name}),
                 suffix=".part.safetensors")
    train_pairs = exclude_split(find_pairs(cfg.data), cfg.val_split) if cfg.val_split else find_pairs(cfg.data)
    folders: Dict[str, int] = {}
    for p in train_pairs:
        folders[data_folder_name(str(p.folder))] = folders.get(data_folder_name(str(p.folder)), 0) + 1
    training = [{"folder": f, "terms": DATA_TERMS.get(Path(f).name, "unknown"), "pairs": n}
                for f, n in sorted(folders.items())]
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    seconds = max((r["seconds"] for r in log), default=0.0)
    entry = {
        "method": NETWORK,
        "task": "registration",
        "repo_id": DEFAULT_REPO_ID,
        "filename": path.name,
        "revision": revision,
        "sha256": sha256_file(path, memo=False),
        "size": path.stat().st_size,
        "license": "weights inherit the terms of their training data: " + "; ".join(
            f"{d['folder']}: {d['terms']}" for d in training),
        "default": default,
        "training_data": training,
        "recipe": {
            "crop": INPUT_SIZE[1], "batch": cfg.batch_size, "lr": cfg.lr,
            "hardware": f"{hardware_description(torch.device('cpu'))}, {seconds / 60:.0f} min",
            "iterations": cfg.steps, "optimizer": f"AdamW (weight decay {cfg.weight_decay}), 200-step warm-up, cosine",
            "seed": cfg.seed, "precision": "float32",
            "notes": (f"Synthetic warps of the aligned training pairs (random crops >= {cfg.min_crop:.0%} of each side, "
                      f"resized to {INPUT_SIZE[1]}x{INPUT_SIZE[0]}; {TRAIN_RANGES}); infrared inverted with "
                      f"p={cfg.invert_ir}; loss 0.5 corner1 + corner2 + 0.5 (dense1 + dense2) (input pixels) + 5 (cross-entropy "
                      f"of both correlation volumes against the true displacement); checkpoint {ckpt['step']} "
                      f"selected by the corner error on one fixed warp of each validation pair."),
        },
        "metrics": metrics or {"synthetic warps of the validation pairs": {
            "corner_px_at_160": round(float(ckpt.get("val_corner_px", float("nan"))), 4)}},
        "reproduce": reproduce_command(cfg, name),
        "description": "RegNet: two-stage homography regression for infrared-to-visible registration "
                       "(ivfusion.register(..., estimator='learned' or 'learned+classical')).",
    }
    WeightInfo.from_dict(name, entry, "exported entry")
    return path, entry
