"""Scoring fused images: :func:`evaluate` (one triplet, any image kind), :func:`evaluate_batch`
(``(B, 1, H, W)`` tensors, CPU or GPU) and :func:`evaluate_dirs` (three folders matched by stem).

Input conversion (what :func:`prepare_image` does), chosen to reproduce what the reference
evaluator sees when it reads 8-bit files:

* ``uint8`` values are used as they are (0..255);
* ``uint16`` values are mapped by the full-range rule ``x * 255 / 65535``;
* float values must lie in [0, 1] and are multiplied by 255;
* a colour image is reduced to its BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (computed from the
  0..255 values above in float64, exactly ``(299 R + 587 G + 114 B) / 1000`` for 8-bit data);
* the grey result is rounded to the nearest integer, ties to even (``numpy.round``), and kept as a
  float. So a float image scores like the 8-bit PNG that :func:`ivfusion.io.write_image` would
  write, and a colour image like the reference's ``np.round(cv2.cvtColor(..., BGR2GRAY))``.
  (OpenCV evaluates that luma in float32 with its own operation order, so on exact .5 ties it
  can land on the other integer: ties are ~0.1 % of the pixels of random RGB data, none of a grey
  image, and opencv-python 5.0 disagreed with round-half-even on ~5 % of them.)
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..color import LUMA_WEIGHTS
from .._progress import progress_bar
from ..io import ImageLike, check_unit_float, images_by_stem, to_chw_tensor  # the stem rules of `ivfusion fuse`
from .registry import METRICS, PROFILES, profile_options, resolve_metrics

__all__ = ["prepare_image", "evaluate", "evaluate_batch", "evaluate_dirs", "DirectoryEvaluation"]

MetricSelection = Optional[Union[str, Sequence[str]]]

# Integer per-mille luma weights: (299 R + 587 G + 114 B) / 1000 is exact in float64 for 8-bit data.
_LUMA_PER_MILLE = tuple(round(w * 1000) for w in LUMA_WEIGHTS)


def prepare_image(image: ImageLike, *, name: str = "image", device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
    """Convert any :data:`ivfusion.io.ImageLike` to the grey levels the metrics score.

    Returns a ``(1, 1, H, W)`` float64 tensor of integers in 0..255 (see the module docstring for
    the rules), on ``device`` (default: the input tensor's device, else CPU).

    Raises:
        TypeError, ValueError: unsupported input; float data outside [0, 1] or not finite.
    """
    chw, kind = to_chw_tensor(image, name=name)
    x = chw.to(device=device if device is not None else chw.device, dtype=torch.float64)
    if kind == "uint16":
        x = x / 257.0  # = x * 255 / 65535, one correctly rounded division
    elif kind == "float":
        x = check_unit_float(x, name=name) * 255.0
    if x.shape[0] == 3:
        wr, wg, wb = _LUMA_PER_MILLE
        x = (wr * x[0] + wg * x[1] + wb * x[2]) / 1000.0
        x = x[None]
    return torch.round(x)[None]


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, 1, H, W), got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name}: expected a tensor of shape (B, 1, H, W) or (B, H, W), got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        raise TypeError(f"{name}: expected a float tensor on the 0..255 scale or uint8, got {x.dtype}")
    return x


@torch.inference_mode()
def evaluate_batch(
    fused: torch.Tensor,
    ir: torch.Tensor,
    vis: torch.Tensor,
    metrics: MetricSelection = None,
    *,
    profile: str = "reference",
    mi_base: Optional[float] = None,
    dtype: Optional[torch.dtype] = None,
) -> Dict[str, torch.Tensor]:
    """Score a batch of triplets in one call per metric, on the tensors' device.

    Args:
        fused: ``(B, 1, H, W)`` (or ``(B, H, W)``) grey images on the **0..255 scale**, float or
            ``uint8``. Use :func:`prepare_image` to get there from files or colour images.
        ir: the infrared images, same shape and device.
        vis: the visible images, same shape and device.
        metrics: names (case-insensitive, a list or a comma-separated string); ``None`` = all of
            :func:`ivfusion.metrics.list_metrics`.
        profile: ``"reference"`` or ``"standard"`` (see :mod:`ivfusion.metrics.registry`).
        mi_base: logarithm base for MI, overriding the profile's (e nats / 2 bits).
        dtype: compute dtype for every metric. ``None`` (default): each metric's
            :attr:`MetricInfo.dtype` (float64, float32 for Qabf and Nabf), which agrees with the
            reference to ~1e-7 relative or better, results returned as float64. ``torch.float64``:
            everything in float64 (~1e-9 or better). ``torch.float32``: fastest, but VIF and SSIM
            then keep only 4-5 significant digits (local variances ``E[x^2] - E[x]^2`` of values
            up to 255^2 cancel badly).

    Returns:
        ``{name: (B,) tensor}`` in the order of ``metrics``.
    """
    names = resolve_metrics(metrics)
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    f = _as_batch(fused, "fused")
    a = _as_batch(ir, "ir")
    b = _as_batch(vis, "vis")
    if not (f.shape == a.shape == b.shape):
        raise ValueError(
            f"shape mismatch: fused {tuple(f.shape)}, ir {tuple(a.shape)}, vis {tuple(b.shape)}; "
            "all three must be equal"
        )
    if not (f.device == a.device == b.device):
        raise ValueError(f"device mismatch: fused on {f.device}, ir on {a.device}, vis on {b.device}")
    cast: Dict[torch.dtype, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    out: Dict[str, torch.Tensor] = {}
    for name in names:
        info = METRICS[name]
        want = dtype if dtype is not None else info.dtype
        if want not in cast:
            cast[want] = (f.to(want), a.to(want), b.to(want))
        value = info(*cast[want], **profile_options(name, profile, mi_base))
        out[name] = value if dtype is not None else value.to(torch.float64)
    return out


def evaluate(
    fused: ImageLike,
    ir: ImageLike,
    vis: ImageLike,
    metrics: MetricSelection = None,
    *,
    profile: str = "reference",
    mi_base: Optional[float] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Dict[str, float]:
    """Score one fused image against its infrared and visible sources.

    Args:
        fused, ir, vis: paths, PIL images, numpy arrays or tensors, as :func:`ivfusion.fuse`
            accepts; converted by :func:`prepare_image` (colour -> luma, 0..255 integers).
        metrics: names (case-insensitive) or ``None`` for all: ``EN SD SF AG MI SCD VIF Qabf SSIM
            Nabf PSNR CC MSE``.
        profile: ``"reference"`` (the CDDFuse/EMMA ``Evaluator``) or ``"standard"`` (textbook).
        mi_base: override the MI logarithm base (``2`` for bits).
        device: where to compute (default: CPU, or the device of tensor inputs).

    Returns:
        ``{name: value}`` as Python floats.

    Raises:
        ValueError: unknown metric or profile; images of different sizes (the message gives
            both shapes); images too small for a metric.
    """
    names = resolve_metrics(metrics)
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    f = prepare_image(fused, name="fused", device=device)
    a = prepare_image(ir, name="ir", device=device)
    b = prepare_image(vis, name="vis", device=device)
    for other, t in (("ir", a), ("vis", b)):
        if t.shape[-2:] != f.shape[-2:]:
            raise ValueError(
                f"fused is {f.shape[-2]}x{f.shape[-1]} (HxW) but {other} is {t.shape[-2]}x{t.shape[-1]}; "
                "the images must be the same size"
            )
    a, b = a.to(f.device), b.to(f.device)
    out = evaluate_batch(f, a, b, names, profile=profile, mi_base=mi_base)
    return {k: float(v[0]) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# folders


@dataclass
class DirectoryEvaluation:
    """Per-image scores of :func:`evaluate_dirs` and their summary."""

    metrics: List[str]
    profile: str
    stems: List[str] = field(default_factory=list)
    values: Dict[str, List[float]] = field(default_factory=dict)  # metric -> one value per stem

    def __len__(self) -> int:
        return len(self.stems)

    def mean(self) -> Dict[str, float]:
        """Mean over the images of each metric (NaN if any image's value is NaN)."""
        return {m: math.fsum(v) / len(v) if v else math.nan for m, v in self.values.items()}

    def std(self) -> Dict[str, float]:
        """Population standard deviation over the images (``ddof = 0``, like ``numpy.std``)."""
        means = self.mean()
        return {
            m: math.sqrt(math.fsum((x - means[m]) ** 2 for x in v) / len(v)) if v else math.nan
            for m, v in self.values.items()
        }

    def rows(self) -> List[Dict[str, object]]:
        """One dict per image: ``{"stem": ..., metric: value, ...}``."""
        return [{"stem": s, **{m: self.values[m][i] for m in self.metrics}} for i, s in enumerate(self.stems)]

    def write_csv(self, path: Union[str, os.PathLike]) -> Path:
        """Write the per-image table (``stem`` then one column per metric, full precision)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["stem", *self.metrics])
            for i, stem in enumerate(self.stems):
                writer.writerow([stem, *(repr(self.values[m][i]) for m in self.metrics)])
        return path

    def format_table(self, digits: int = 4) -> str:
        """The summary as aligned text: metric, mean, std, direction; then the image count."""
        means, stds = self.mean(), self.std()
        header = ["metric", "mean", "std", "better"]
        body = [
            [m, f"{means[m]:.{digits}f}", f"{stds[m]:.{digits}f}", "higher" if METRICS[m].higher_is_better else "lower"]
            for m in self.metrics
        ]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines = ["  ".join(c.rjust(w) if i in (1, 2) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                 for r in [header, ["-" * w for w in widths], *body]]
        lines.append(f"{len(self)} images, profile {self.profile}")
        return "\n".join(lines)


def match_triplets(
    ir_dir: Union[str, os.PathLike], vis_dir: Union[str, os.PathLike], fused_dir: Union[str, os.PathLike]
) -> List[Tuple[str, Path, Path, Path]]:
    """``(stem, ir, vis, fused)`` for every stem, sorted; the three folders must hold the same stems.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a stem is missing from some folder (the message says which, where), two files in
            one folder share a stem, or the folders hold no image.
    """
    folders = {
        "ir_dir": images_by_stem(Path(ir_dir), "ir_dir"),
        "vis_dir": images_by_stem(Path(vis_dir), "vis_dir"),
        "fused_dir": images_by_stem(Path(fused_dir), "fused_dir"),
    }
    every = set().union(*(f.keys() for f in folders.values()))
    if not every:
        raise ValueError(f"no images found in {ir_dir}, {vis_dir} or {fused_dir}")
    problems = []
    for label, found in folders.items():
        missing = sorted(every - found.keys())
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            problems.append(f"{len(missing)} missing in {label} ({shown})")
    if problems:
        raise ValueError("unmatched file stems: " + "; ".join(problems))
    return [(s, folders["ir_dir"][s], folders["vis_dir"][s], folders["fused_dir"][s]) for s in sorted(every)]


def evaluate_dirs(
    ir_dir: Union[str, os.PathLike],
    vis_dir: Union[str, os.PathLike],
    fused_dir: Union[str, os.PathLike],
    metrics: MetricSelection = None,
    *,
    profile: str = "reference",
    mi_base: Optional[float] = None,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
) -> DirectoryEvaluation:
    """Score every triplet of three folders matched by file stem (``a.jpg``, ``a.png`` ...).

    Every stem must be present in all three folders; see :func:`match_triplets`. Images are
    converted like :func:`evaluate` does. ``progress`` shows a bar on stderr.

    Raises:
        FileNotFoundError, ValueError: missing folders or stems; a triplet of unequal sizes
            (the message names the stem).
    """
    names = resolve_metrics(metrics)
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    triplets = match_triplets(ir_dir, vis_dir, fused_dir)
    result = DirectoryEvaluation(metrics=names, profile=profile, values={m: [] for m in names})
    with progress_bar(len(triplets), "evaluating", unit="image", enabled=progress) as bar:
        for stem, ir_path, vis_path, fused_path in triplets:
            try:
                scores = evaluate(fused_path, ir_path, vis_path, names, profile=profile, mi_base=mi_base, device=device)
            except ValueError as exc:
                raise ValueError(f"{stem}: {exc}") from exc
            result.stems.append(stem)
            for m in names:
                result.values[m].append(scores[m])
            bar.update(1)
    return result
