"""The table of metrics: name, function, direction and the options each profile passes.

Two profiles exist:

``"reference"``
    reproduces the ``Evaluator`` of the CDDFuse/EMMA code (Zhao et al., CVPR 2023 / 2024) that
    most recent infrared-visible fusion papers report: MI in nats, SSIM as the *sum* over both
    sources with scikit-image 0.19's float defaults (7x7 uniform window, sample covariance,
    ``data_range = 2``), Qabf with the reference's ``G = gF`` quirk. One knowing difference: PSNR
    uses the peak 255 (``10 log10(255^2 / MSE)``, the definition ivfusion's specification fixes),
    whereas the Evaluator's code divides ``max(F)^2``; the two agree whenever the fused image
    reaches 255, and ``functional.psnr(..., peak="max")`` reproduces the code's variant.
``"standard"``
    textbook choices: MI in bits, SSIM as the *mean* over both sources with an 11x11 Gaussian
    window (sigma 1.5), population covariance and ``data_range = 255`` (Wang et al. 2004), Qabf
    with ``G = 1`` where the strengths are equal.

Every other metric is identical in both profiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch

from . import functional as M

__all__ = ["MetricInfo", "METRICS", "PROFILES", "list_metrics", "get_metric", "resolve_metrics", "profile_options"]


@dataclass(frozen=True)
class MetricInfo:
    """One metric: ``fn(fused, ir, vis, **options) -> (B,)`` on ``(B, 1, H, W)`` 0..255 tensors."""

    name: str
    fn: Callable
    higher_is_better: bool
    needs_sources: bool
    value_range: str
    description: str
    options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # per profile
    #: dtype :func:`ivfusion.metrics.evaluate_batch` computes this metric in unless told otherwise
    dtype: torch.dtype = torch.float64

    def __call__(self, fused, ir=None, vis=None, **options):
        if self.needs_sources:
            return self.fn(fused, ir, vis, **options)
        return self.fn(fused, **options)


_REFERENCE_SSIM = dict(window="uniform", size=7, data_range=2.0, sample_covariance=True, reduction="sum")
_STANDARD_SSIM = dict(window="gaussian", size=11, sigma=1.5, data_range=255.0, sample_covariance=False, reduction="mean")

_ALL = [
    MetricInfo("EN", M.entropy, True, False, "[0, 8] bits", "Shannon entropy of the fused grey-level histogram"),
    MetricInfo("SD", M.standard_deviation, True, False, "[0, 127.5]", "population standard deviation of F"),
    MetricInfo("SF", M.spatial_frequency, True, False, "[0, 360.6]", "spatial frequency (RMS of row and column differences)"),
    MetricInfo("AG", M.average_gradient, True, False, "[0, 255]", "average gradient, numpy.gradient derivatives"),
    MetricInfo(
        "MI", M.mutual_information, True, True, "[0, 2 log 256]", "MI(F, A) + MI(F, B), 256-bin joint histograms",
        {"reference": {"base": math.e}, "standard": {"base": 2.0}},
    ),
    MetricInfo("SCD", M.scd, True, True, "[-2, 2]", "corr(F - B, A) + corr(F - A, B)"),
    MetricInfo("VIF", M.vif, True, True, "[0, ~2]", "VIF(A, F) + VIF(B, F), 4-scale pixel-domain VIF"),
    # Qabf and Nabf run in float32 by default: Sobel responses of 8-bit images are exact there, the
    # rest agrees with float64 to ~1e-7 relative (the reference itself computes Qabf in float32),
    # at half the cost of float64
    MetricInfo(
        "Qabf", M.qabf, True, True, "[0, 1]", "Xydeas-Petrovic gradient preservation",
        {"reference": {"equal_strength": "reference"}, "standard": {"equal_strength": "one"}},
        dtype=torch.float32,
    ),
    MetricInfo(
        "SSIM", M.ssim, True, True, "[-2, 2] (reference), [-1, 1] (standard)",
        "SSIM(F, A) and SSIM(F, B): summed (reference) or averaged (standard)",
        {"reference": _REFERENCE_SSIM, "standard": _STANDARD_SSIM},
    ),
    MetricInfo("Nabf", M.nabf, False, True, "[0, 1]", "Kumar's modified fusion-artefact measure", dtype=torch.float32),
    MetricInfo(
        "PSNR", M.psnr, True, True, "dB", "10 log10(255^2 / MSE)",
        {"reference": {"peak": 255.0}, "standard": {"peak": 255.0}},
    ),
    MetricInfo("CC", M.correlation_coefficient, True, True, "[-1, 1]", "(corr(A, F) + corr(B, F)) / 2"),
    MetricInfo("MSE", M.mse, False, True, "[0, 65025]", "(MSE(F, A) + MSE(F, B)) / 2"),
]

#: All metrics by standard name, in the order they are reported.
METRICS: Dict[str, MetricInfo] = {m.name: m for m in _ALL}
#: Profile names.
PROFILES = ("reference", "standard")
_BY_LOWER = {name.lower(): name for name in METRICS}


def list_metrics() -> List[str]:
    """The standard metric names, in report order."""
    return list(METRICS)


def get_metric(name: str) -> MetricInfo:
    """Look a metric up by name (case-insensitive)."""
    return METRICS[resolve_metrics([name])[0]]


def resolve_metrics(metrics: Optional[Union[str, Sequence[str]]]) -> List[str]:
    """Canonical names for ``metrics`` (``None`` = all; a string may hold comma-separated names).

    Raises:
        ValueError: an unknown name (the message lists the known ones) or an empty selection.
        TypeError: ``metrics`` is neither ``None``, a string nor a sequence of strings.
    """
    if metrics is None:
        return list(METRICS)
    if isinstance(metrics, str):
        metrics = [part for part in metrics.replace(",", " ").split()]
    try:
        requested = list(metrics)
    except TypeError:
        raise TypeError(f"metrics: expected None, a name or a list of names, got {type(metrics).__name__}") from None
    out: List[str] = []
    for name in requested:
        if not isinstance(name, str):
            raise TypeError(f"metrics: expected metric names as strings, got {type(name).__name__}")
        canonical = _BY_LOWER.get(name.strip().lower())
        if canonical is None:
            raise ValueError(f"metrics: unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
        if canonical not in out:
            out.append(canonical)
    if not out:
        raise ValueError(f"metrics: no metric selected; known metrics: {', '.join(METRICS)}")
    return out


def profile_options(name: str, profile: str, mi_base: Optional[float] = None) -> Dict[str, object]:
    """Keyword options :data:`METRICS` ``[name].fn`` gets under ``profile`` (``mi_base`` overrides MI's)."""
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    opts = dict(METRICS[name].options.get(profile, {}))
    if name == "MI" and mi_base is not None:
        opts["base"] = float(mi_base)
    return opts
