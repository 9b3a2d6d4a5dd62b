"""The user-facing estimator: :func:`register`, and :func:`register_pairs` for a fixed rig."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..color import rgb_to_luma
from ..io import ImageLike, is_grey, to_chw_tensor, to_unit_range
from ._bounds import flow_problem, transform_problem
from ._classical import (
    ClassicalSettings,
    Frame,
    build_levels,
    centred_to_pixels,
    estimate,
    peak_sharpness,
)
from ._network import INPUT_SIZE, load_regnet
from ._result import MODELS, Registration
from ._similarity import resize_to

__all__ = ["register", "register_pairs", "ESTIMATORS", "DEFAULT_ESTIMATOR", "DEFAULT_MODEL", "LOW_CONFIDENCE",
           "RegistrationWarning", "RegistrationError"]

#: ``"classical"`` (NGF, coarse to fine), ``"learned"`` (the network alone; affine/homography only)
#: and ``"learned+classical"`` (the network's estimate as an extra start of the classical one).
ESTIMATORS = ("classical", "learned", "learned+classical")
DEFAULT_ESTIMATOR = "classical"
DEFAULT_MODEL = "homography"
#: Below this confidence the pair probably has too little in common: a warning, or an error with
#: ``strict=True``.
LOW_CONFIDENCE = 0.3
#: Peak sharpness and distinctness (:func:`~ivfusion.registration._classical.peak_sharpness`) that
#: map to confidence 1 (the confidence is the smaller of the two ratios; calibrated on the validation
#: benchmark's pairs against the same pairs with another pair's visible image).
_SHARP = 0.12
_DISTINCT = 0.3
#: Normalised correlation below which nothing corresponds (0) and above which it may (1): the real
#: validation pairs register at 0.34-0.62, unrelated natural images still share 0.30-0.42 of generic
#: structure (horizon, verticals), and unrelated synthetic scenes about 0.2.
_RHO = (0.2, 0.35)
#: Smallest image side :func:`register` accepts.
_MIN_SIDE = 32


class RegistrationWarning(UserWarning):
    """A registration that is probably wrong (low confidence, or rejected as implausible)."""


class RegistrationError(ValueError):
    """``strict=True`` and the registration is probably wrong."""


def _luma(image: ImageLike, name: str, value_range: Any) -> torch.Tensor:
    t, kind = to_chw_tensor(image, name=name)
    if value_range is None and kind == "uint16":
        value_range = "auto"
    x = to_unit_range(t.cpu(), kind, name=name, value_range=value_range)
    y = x[:1] if is_grey(x) else rgb_to_luma(x).reshape(1, *x.shape[-2:])
    if min(y.shape[-2:]) < _MIN_SIDE:
        raise ValueError(f"{name}: registration needs images of at least {_MIN_SIDE}x{_MIN_SIDE} pixels, got "
                         f"{y.shape[-2]}x{y.shape[-1]}")
    return y.contiguous()


def _check_args(model: str, estimator: str, scale: float) -> None:
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}, got {model!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(map(repr, ESTIMATORS))}, got {estimator!r}")
    if estimator == "learned" and model == "deformable":
        raise ValueError("estimator 'learned' estimates a homography only; use model='affine' or 'homography', "
                         "or estimator='learned+classical' for 'deformable'")
    if not (isinstance(scale, (int, float)) and 0.1 <= float(scale) <= 10.0):
        raise ValueError(f"scale must be a number in [0.1, 10] (the infrared's expected size in the visible frame "
                         f"relative to the same field of view), got {scale!r}")


@contextlib.contextmanager
def _torch_threads(n: Optional[int]) -> Iterator[None]:
    if n is None or (torch.get_num_threads() == n):
        yield
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be an int >= 1 or None, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _learned_transform(ir: torch.Tensor, vis: torch.Tensor, frame: Frame, weights: Any) -> torch.Tensor:
    """The network's homography in centred units (:mod:`._classical`)."""
    net = load_regnet(weights)
    with torch.no_grad():
        h = net(resize_to(ir[None], INPUT_SIZE), resize_to(vis[None], INPUT_SIZE))["h2"][0].double()
    d = torch.diag(torch.cat([frame.to_normalised().double(), torch.ones(1, dtype=torch.float64)]))
    t = torch.linalg.inv(d) @ h @ d
    return (t / t[2, 2]).float()


def _scaled(settings: ClassicalSettings, scale: float) -> ClassicalSettings:
    if scale == 1.0:
        return settings
    return dataclasses.replace(settings, scales=tuple(s * scale for s in settings.scales))


def _affine_part(t: torch.Tensor) -> torch.Tensor:
    out = t.clone()
    out[2] = torch.tensor([0.0, 0.0, 1.0])
    return out


def _confidence(rho: float, sharp: float, far: float) -> float:
    """Confidence in [0, 1] from :func:`peak_sharpness`'s correlation, sharpness and distinctness."""
    return float(np.clip(min(sharp / _SHARP, far / _DISTINCT, (rho - _RHO[0]) / (_RHO[1] - _RHO[0])), 0.0, 1.0))


def register(
    ir: ImageLike,
    vis: ImageLike,
    model: str = DEFAULT_MODEL,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    scale: float = 1.0,
    ir_range: Optional[Tuple[float, float]] = None,
    strict: bool = False,
    weights: Optional[Union[str, os.PathLike]] = None,
    settings: Optional[ClassicalSettings] = None,
    threads: Optional[int] = 1,
) -> Registration:
    """Estimate how the infrared image maps into the visible image's frame.

    Args:
        ir: infrared image; any input :func:`ivfusion.fuse` takes (path, PIL, array, tensor; 8/16-bit
            or float; grey or colour). It may have another size than ``vis``.
        vis: visible image, the same kinds.
        model: ``"affine"``, ``"homography"`` (default) or ``"deformable"`` (homography plus a smooth
            low-resolution displacement field, for lens distortion and mild parallax).
        estimator: ``"classical"`` (default: structure features, global search, coarse-to-fine
            Gauss-Newton), ``"learned"`` (the RegNet network alone; affine/homography) or
            ``"learned+classical"`` (the network's estimate refined classically). See
            ``docs/registration.md`` for how they compare.
        scale: the infrared's expected size in the visible frame relative to the same field of view
            (1: both cameras see the same scene extent; 0.6: the thermal camera sees 60 % of the
            visible one's width). The search covers +-8 % around it.
        ir_range: how a 16-bit infrared is mapped to [0, 1] (as in :func:`ivfusion.fuse`).
        strict: raise :class:`RegistrationError` instead of warning when the estimate is probably
            wrong.
        weights: the network's weight (manifest name or ``.safetensors``; learned estimators only).
        settings: knobs of the classical estimator (:class:`ClassicalSettings`).
        threads: CPU threads torch uses while estimating (restored afterwards; None: leave torch's
            setting). Default 1: the estimator runs many small tensor operations, which gain little
            from more threads and lose badly on a busy machine (on the 2-core sandbox under load,
            0.85 s with 1 thread against 25 s with 2 for a 640x480 pair, ``docs/registration.md``).

    Returns:
        A :class:`Registration` (``.warp(ir)``, ``.matrix``, ``.flow``, ``.confidence``, ``.save``).
        When the estimate is implausible (reflection, degenerate scale, folding) it is replaced by the
        nominal rescaling (:meth:`Registration.identity`) with confidence 0; either way a
        :class:`RegistrationWarning` is issued when the confidence is below :data:`LOW_CONFIDENCE`.

    Raises:
        ValueError: bad argument or image (too small, float outside [0, 1] ...).
        RegistrationError: ``strict=True`` and the confidence is low or the estimate implausible.
        RuntimeError: a learned estimator without an available weight.
    """
    _check_args(model, estimator, scale)
    settings = _scaled(settings or ClassicalSettings(), float(scale))
    ir_y = _luma(ir, "ir", ir_range)
    vis_y = _luma(vis, "vis", None)
    ir_size, vis_size = tuple(ir_y.shape[-2:]), tuple(vis_y.shape[-2:])
    start = time.perf_counter()
    with _torch_threads(threads), torch.inference_mode(False), torch.no_grad():
        ir_y, vis_y = ir_y.clone(), vis_y.clone()  # normal tensors even under an outer inference_mode
        if estimator == "learned":
            frame, levels = build_levels(ir_y, vis_y, settings)
            t = _learned_transform(ir_y, vis_y, frame, weights)
            t = _affine_part(t) if model == "affine" else t
            flow = None
        else:
            init = None
            if estimator == "learned+classical":
                frame = Frame(vis_size)
                init = [_learned_transform(ir_y, vis_y, frame, weights)]
            result = estimate(ir_y, vis_y, model, settings, init=init)
            frame, levels, t, flow = result.frame, result.levels, result.transform, result.flow
        rho, sharp, far = peak_sharpness(levels[-1], frame, t, flow)
        confidence = _confidence(rho, sharp, far)
        if flow is not None:
            # A deformation can bend a wrong transform's features into a sharper peak: the estimate is
            # only as trustworthy as its transform alone (on the benchmark a 22 px miss scored 0.35
            # with its deformation and 0.25 without).
            confidence = min(confidence, _confidence(*peak_sharpness(levels[-1], frame, t, None)))
    matrix, flow_px = centred_to_pixels(t, frame, ir_size, flow)
    info = {"similarity": round(rho, 4), "sharpness": round(sharp, 4), "distinctness": round(far, 4),
            "seconds": round(time.perf_counter() - start, 3)}
    problem = transform_problem(matrix, ir_size, vis_size, float(scale))
    if problem is None and flow_px is not None:
        problem = flow_problem(flow_px, vis_size)
    if problem is not None:
        return _reject(f"registration rejected: {problem}; returned the nominal rescaling instead", ir_size, vis_size,
                       model, estimator, info, strict)
    reg = Registration(matrix, ir_size, vis_size, model, flow=flow_px, confidence=confidence, estimator=estimator,
                       info=info)
    if confidence < LOW_CONFIDENCE:
        _doubt(f"registration confidence {confidence:.2f} is below {LOW_CONFIDENCE}: the images have little "
               f"structure in common (a flat image, or unrelated scenes?); check the result before using it", strict)
    return reg


def _doubt(message: str, strict: bool) -> None:
    """A doubtful estimate: :class:`RegistrationError` with ``strict``, else a warning pointing at the
    caller of the public function."""
    if strict:
        raise RegistrationError(message)
    warnings.warn(message, RegistrationWarning, stacklevel=3)


def _reject(message: str, ir_size, vis_size, model: str, estimator: str, info: dict, strict: bool) -> Registration:
    _doubt(message, strict)
    nominal = Registration.identity(ir_size, vis_size, model="affine" if model == "affine" else "homography")
    return Registration(nominal.matrix, ir_size, vis_size, model, confidence=0.0, estimator=estimator,
                        info={**info, "rejected": message})


def register_pairs(pairs: Sequence[Tuple[ImageLike, ImageLike]], model: str = DEFAULT_MODEL, **kwargs: Any
                   ) -> Registration:
    """One registration for a fixed rig from several of its pairs (calibration).

    Each pair is registered with :func:`register` (``kwargs`` as there); the estimates are compared
    by their mappings, and those that agree with the most consistent one (the medoid, within 2 px
    median distance) are averaged. An odd pair (low texture, a moving object close to the camera)
    is outvoted instead of deciding the rig's geometry.

    Raises:
        ValueError: no pairs, or pairs of different sizes.
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: expected at least one (ir, vis) pair")
    strict = kwargs.pop("strict", False)
    regs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegistrationWarning)
        for ir, vis in pairs:
            reg = register(ir, vis, model, **kwargs)
            if regs and (reg.ir_size, reg.vis_size) != (regs[0].ir_size, regs[0].vis_size):
                raise ValueError(f"pairs: all pairs of a rig must have the same sizes; got ir {regs[0].ir_size} -> vis "
                                 f"{regs[0].vis_size} and ir {reg.ir_size} -> vis {reg.vis_size}")
            regs.append(reg)
    good = [r for r in regs if r.confidence >= LOW_CONFIDENCE] or regs
    step = max(1, max(good[0].vis_size) // 64)
    maps = [r.mapping()[::step, ::step] for r in good]
    dist = np.array([[float((a - b).norm(dim=-1).median()) for b in maps] for a in maps])
    medoid = int(np.argmin(dist.sum(axis=1)))
    agree = [good[i] for i in range(len(good)) if dist[medoid, i] <= 2.0]
    matrix = np.mean([r.matrix / r.matrix[2, 2] for r in agree], axis=0)
    flows = [r.flow for r in agree if r.flow is not None]
    flow = np.mean(flows, axis=0) if flows and len(flows) == len(agree) else None
    confidence = float(np.median([r.confidence for r in agree]))
    base = good[medoid]
    info = {"pairs": len(regs), "agreeing": len(agree), "estimator": base.estimator}
    reg = Registration(matrix, base.ir_size, base.vis_size, model if flow is not None or model != "deformable"
                       else "homography", flow=flow, confidence=confidence, estimator=base.estimator, info=info)
    if confidence < LOW_CONFIDENCE or len(agree) * 2 < len(regs):
        _doubt(f"rig registration from {len(regs)} pair(s): only {len(agree)} agree, confidence "
               f"{confidence:.2f}; check the result before using it", strict)
    return reg
