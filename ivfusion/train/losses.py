"""Training losses of the four networks, exactly as ``MODELS.md`` specifies them.

Every loss takes ``(B, 1, H, W)`` luminance tensors in ``[0, 1]`` (``F`` fused, ``I`` infrared,
``V`` visible Y) and returns ``(total, terms)``: the scalar to minimise and a dict of its named,
**unweighted** terms (detached scalars, for logging). "mean" is over batch and pixels. Half-precision
inputs are promoted to float32 (losses are always evaluated in at least float32); float64 stays
float64. All pieces are differentiable torch code built on :mod:`ivfusion.filters`.

=============  =====================================================================  ==========
network        loss                                                                   MODELS.md
=============  =====================================================================  ==========
F3Net          ``1 L_pixel + 100 L_gradient + 10 L_ssim``                              4.7
DIDFuse        reconstruction (MSE + 5 SSIM) x 2, feature decomposition, VIS gradient  2.5
RefineFuse     ``5 L_int + L_text``, infrared masks, optional edge / SSIM terms        5.7
FISCNet        ``3 L_mask + 10 L_max + 10 L_grad`` with VSM saliency maps              3.8
=============  =====================================================================  ==========
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from ..filters import local_variance2d, sobel, ssim_map

__all__ = [
    "LossOutput",
    "LOSS_TERMS",
    "sobel_l1_magnitude",
    "ssim_loss_map",
    "contrast_mask",
    "REFINEFUSE_MASKS",
    "REFINEFUSE_SALIENCY_MASKS",
    "f3net_loss",
    "didfuse_loss",
    "refinefuse_loss",
    "fiscnet_loss",
]

LossOutput = Tuple[torch.Tensor, Dict[str, torch.Tensor]]

#: Names of the logged terms of each method's loss, in a fixed order (``"loss"`` is the total).
LOSS_TERMS: Dict[str, Tuple[str, ...]] = {
    "f3net": ("pixel", "gradient", "ssim"),
    "didfuse": ("rec_ir", "rec_vis", "background", "detail", "gradient"),
    "refinefuse": ("intensity", "texture", "edge", "ssim"),
    "fiscnet": ("mask", "max", "gradient", "ssim"),
}


# ------------------------------------------------------------------------------------ helpers


def _promote(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check(names: Sequence[str], *tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    ref = tensors[0]
    for name, t in zip(names, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor in [0, 1], got {t.dtype}")
        if t.ndim != 4 or t.shape[1] != 1:
            raise ValueError(f"{name}: expected shape (B, 1, H, W), got {tuple(t.shape)}")
        if t.shape != ref.shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)} differs from {names[0]}'s {tuple(ref.shape)}")
    return tuple(_promote(t) for t in tensors)


def _terms(**values: torch.Tensor) -> Dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in values.items()}


def sobel_l1_magnitude(x: torch.Tensor, padding: str = "reflect") -> torch.Tensor:
    """``G(X) = |S_x * X| + |S_y * X|`` (unnormalised Sobel, MODELS.md 1.5), same shape as ``x``."""
    gx, gy = sobel(x, padding=padding)
    return gx.abs() + gy.abs()


def ssim_loss_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM map of MODELS.md 1.5: Gaussian window 11 (sigma 1.5), ``L = 1``, zero "same" padding."""
    return ssim_map(x, y, window="gaussian", size=11, sigma=1.5, data_range=1.0, padding="zero")


def _ssim_to_max(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """``1 - mean(SSIM(F, max(I, V)))``: F3Net's structure term, optional in RefineFuse and FISCNet."""
    return 1.0 - ssim_loss_map(fused, torch.maximum(ir, vis)).mean()


#: RefineFuse's infrared-mask rules (``refinefuse_loss(mask=...)``).
REFINEFUSE_MASKS = ("contrast", "margin", "margin_saliency", "saliency", "margin_max")
#: The rules among them that need the infrared saliency map (``saliency_ir``).
REFINEFUSE_SALIENCY_MASKS = ("margin_saliency", "saliency", "margin_max")
#: Targets of RefineFuse's optional SSIM term (``refinefuse_loss(ssim_target=...)``).
REFINEFUSE_SSIM_TARGETS = ("max", "both", "masked")


@torch.no_grad()
def _local_variances(ir: torch.Tensor, vis: torch.Tensor, size: int, sigma: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(var_I, var_V)``: Gaussian-window local variances of both sources, one filtering pass."""
    var = local_variance2d(torch.cat([ir, vis], dim=1), size, sigma, padding="reflect")
    return var[:, :1], var[:, 1:]


@torch.no_grad()
def contrast_mask(
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    size: int = 9,
    sigma: float = 1.5,
    ratio: float = 1.0,
    floor: float = 0.0,
) -> torch.Tensor:
    """RefineFuse's contrast mask ``M_con = 1[var_I > ratio var_V + floor]`` (MODELS.md 5.7).

    ``var_X = max(g * X^2 - (g * X)^2, 0)`` with ``g`` a normalised ``size x size`` Gaussian
    (std ``sigma``) and reflect padding; ties go to the visible image. ``ratio = 1, floor = 0`` is
    the design's fallback (C-RF-10); ``ratio > 1`` and ``floor > 0`` (a variance on the [0, 1]
    scale) make the infrared win only where its local contrast is clearly higher, relatively and
    absolutely. Returns a float ``{0, 1}`` tensor shaped like ``ir``, without gradient.
    """
    ir, vis = _check(("ir", "vis"), ir, vis)
    var_ir, var_vis = _local_variances(ir, vis, size, sigma)
    return (var_ir > ratio * var_vis + floor).to(ir.dtype)


# ------------------------------------------------------------------------------------ F3Net


def f3net_loss(
    fused: torch.Tensor,
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    weights: Sequence[float] = (1.0, 100.0, 10.0),
) -> LossOutput:
    """F3Net (MODELS.md 4.7): ``w1 L_pixel + w2 L_gradient + w3 L_ssim``, weights ``(1, 100, 10)``.

    * ``L_pixel = mean((F - I)^2) + mean((F - V)^2)``
    * ``L_gradient = mean((G(F) - max(G(I), G(V)))^2)``, ``G`` the L1 Sobel magnitude, reflect pad 1
    * ``L_ssim = 1 - mean(SSIM(F, max(I, V)))`` (SSIM of MODELS.md 1.5)

    Terms: ``pixel``, ``gradient``, ``ssim``.
    """
    fused, ir, vis = _check(("fused", "ir", "vis"), fused, ir, vis)
    w1, w2, w3 = (float(w) for w in weights)
    pixel = (fused - ir).square().mean() + (fused - vis).square().mean()
    g_src = torch.maximum(sobel_l1_magnitude(ir), sobel_l1_magnitude(vis))
    gradient = (sobel_l1_magnitude(fused) - g_src).square().mean()
    ssim = _ssim_to_max(fused, ir, vis)
    total = w1 * pixel + w2 * gradient + w3 * ssim
    return total, _terms(pixel=pixel, gradient=gradient, ssim=ssim)


# ------------------------------------------------------------------------------------ DIDFuse


def _reconstruction(x: torch.Tensor, x_hat: torch.Tensor, lam: float) -> torch.Tensor:
    # f(X, X^) = MSE + lam * mean(clamp((1 - ssim) / 2, 0, 1))   (C-DID-4)
    ssim_term = ((1.0 - ssim_loss_map(x, x_hat)) / 2.0).clamp(0.0, 1.0).mean()
    return (x - x_hat).square().mean() + lam * ssim_term


def _feature_gap(p: torch.Tensor, q: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "l1":
        return (p - q).abs().mean()
    return (p - q).square().mean()


def didfuse_loss(
    ir: torch.Tensor,
    vis: torch.Tensor,
    ir_hat: torch.Tensor,
    vis_hat: torch.Tensor,
    feats_ir: Sequence[torch.Tensor],
    feats_vis: Sequence[torch.Tensor],
    *,
    alpha1: float = 0.5,
    alpha2: float = 2.0,
    alpha3: float = 2.0,
    alpha4: float = 10.0,
    lam: float = 5.0,
    feature_norm: str = "l1",
) -> LossOutput:
    """DIDFuse auto-encoder loss (MODELS.md 2.5, official-code form)::

        L = a2 f(I, I^) + a3 f(V, V^) + tanh(gap(B_I, B_V)) - a1 tanh(gap(D_I, D_V)) + a4 l1(grad V, grad V^)

    ``f(X, X^) = mean((X - X^)^2) + lam * mean(clamp((1 - ssim_map) / 2, 0, 1))``; ``grad`` the
    normalised Sobel pair (kernels / 8, replicate padding, both components, mean over all of them);
    ``gap`` the mean absolute difference (``feature_norm="l1"``, code, default) or the mean squared
    difference (``"l2"``: the paper's squared L2 norm, divided by the element count so ``tanh`` does
    not saturate). ``alpha1 = 0.5`` is the code's value (the paper says 0.05).

    Args:
        ir: the infrared source images ``(B, 1, H, W)``.
        vis: the visible source images ``(B, 1, H, W)``.
        ir_hat: the infrared reconstructions (each decoded from its own features).
        vis_hat: the visible reconstructions.
        feats_ir: the encoder outputs ``(F1, F2, B, D)`` of the infrared images.
        feats_vis: the encoder outputs of the visible images.

    Terms: ``rec_ir``, ``rec_vis`` (``f`` values), ``background``, ``detail`` (the ``tanh`` values),
    ``gradient``.
    """
    ir, vis, ir_hat, vis_hat = _check(("ir", "vis", "ir_hat", "vis_hat"), ir, vis, ir_hat, vis_hat)
    if feature_norm not in ("l1", "l2"):
        raise ValueError(f"feature_norm: expected 'l1' or 'l2', got {feature_norm!r}")
    if len(feats_ir) != 4 or len(feats_vis) != 4:
        raise ValueError(
            f"feats_ir, feats_vis: expected the 4 encoder outputs (F1, F2, B, D), got {len(feats_ir)} and {len(feats_vis)}"
        )
    b_ir, d_ir = (_promote(t) for t in feats_ir[2:])
    b_vis, d_vis = (_promote(t) for t in feats_vis[2:])
    if b_ir.shape != b_vis.shape or d_ir.shape != d_vis.shape:
        raise ValueError("feats_ir, feats_vis: feature maps of the two images differ in shape")

    rec_ir = _reconstruction(ir, ir_hat, lam)
    rec_vis = _reconstruction(vis, vis_hat, lam)
    background = torch.tanh(_feature_gap(b_ir, b_vis, feature_norm))
    detail = torch.tanh(_feature_gap(d_ir, d_vis, feature_norm))
    gx, gy = sobel(vis, padding="replicate", normalized=True)
    hx, hy = sobel(vis_hat, padding="replicate", normalized=True)
    gradient = ((gx - hx).abs().mean() + (gy - hy).abs().mean()) / 2.0  # mean over (B, 1, 2, H, W)
    total = alpha2 * rec_ir + alpha3 * rec_vis + background - alpha1 * detail + alpha4 * gradient
    return total, _terms(rec_ir=rec_ir, rec_vis=rec_vis, background=background, detail=detail, gradient=gradient)


# ------------------------------------------------------------------------------------ RefineFuse


def refinefuse_loss(
    fused: torch.Tensor,
    ir: torch.Tensor,
    vis: torch.Tensor,
    *,
    mask_ir: Optional[torch.Tensor] = None,
    saliency_ir: Optional[torch.Tensor] = None,
    mask: str = "contrast",
    lam: float = 5.0,
    mask_window: int = 9,
    mask_sigma: float = 1.5,
    margin_ratio: float = 4.0,
    margin_floor: float = (4.0 / 255.0) ** 2,
    edge_weight: float = 0.0,
    ssim_weight: float = 0.0,
    ssim_target: str = "max",
    texture_weight: float = 1.0,
) -> LossOutput:
    """RefineFuse (MODELS.md 5.7): ``lam L_int + L_text`` with ``lam = 5``, plus two optional terms.

    * ``L_int = mean|M_I (F - I)| + mean|M_V (F - V)|``, ``M_V = 1 - M_I``
    * ``L_text = sum over d in {x, y} of mean| |S_d * F| - max(|S_d * I|, |S_d * V|) |``
      (unnormalised Sobel per direction, reflect padding 1)

    The infrared mask ``M_I`` (``{0, 1}``, shaped like ``ir``) is ``mask_ir`` when given, else
    built from the sources by the rule ``mask``:

    * ``"contrast"``: ``1[var_I > var_V]``, the design's label-free fallback. **Known defect**
      (MODELS.md 5.7): wherever both sources are flat (sky, walls, road) the infrared's sensor
      noise wins, so the output is pulled to the infrared exactly where the visible image holds the
      scene; weights trained with it return nearly the infrared image outside road scenes.
    * ``"margin"``: ``1[var_I > margin_ratio var_V + margin_floor]``: the infrared must win clearly,
      by a factor (4: twice the local standard deviation) and above a floor (a standard deviation
      of 4 grey levels, above 8-bit sensor noise).
    * ``"margin_saliency"``: ``margin`` OR ``saliency_ir``: the paper's ``M_sal + M_con`` with the
      bright-target map standing in for the labelled objects.
    * ``"saliency"``: ``saliency_ir`` alone.
    * ``"margin_max"``: three regions instead of two. ``M_I`` = ``margin_saliency``'s infrared
      mask; ``M_V = 1[var_V > margin_ratio var_I + margin_floor]`` where the visible image clearly
      wins (and ``M_I`` does not hold); everywhere else neither source clearly carries more
      contrast, and the target is ``max(I, V)`` (the intensity target of FISCNet's ``L_max`` and
      of F3Net's SSIM term): a daytime sky stays as bright as the visible image, a warm body as
      bright as the infrared, instead of either image being copied wholesale.

    Two terms that MODELS.md 5.7 does not have, off by default (weight 0), for the ablation of
    issue 16 (RefineFuse's outputs were smoother than F3Net's and lost edge strength, Qabf):

    * ``edge_weight L_edge``, ``L_edge = mean((G(F) - max(G(I), G(V)))^2)`` with ``G`` the L1 Sobel
      magnitude (F3Net's gradient term, MODELS.md 4.7): squared, so strong source edges, which
      dominate Qabf's weighting, cost more than in the L1 ``L_text``;
    * ``ssim_weight L_ssim``, ``L_ssim = 1 - mean(SSIM(F, max(I, V)))`` (F3Net's structure term,
      ``ssim_target="max"``) or ``1 - (mean(SSIM(F, I)) + mean(SSIM(F, V))) / 2`` (``"both"``: each
      source's structure, also where it is the darker one; SwinFusion's form) or ``1 - mean(M_I
      SSIM(F, I) + M_V SSIM(F, V) + M_max SSIM(F, max(I, V)))`` (``"masked"``: each pixel's SSIM
      against the intensity term's target for that pixel, so an infrared edge where the infrared
      clearly carries the contrast is asked for even where the visible image is the brighter one).

    Both are computed and logged whatever their weights (they cost little next to the network).
    Ablation (250 SGD steps from ``refinefuse.ivif`` v0.4.0, ``margin_max``, same seed and data
    order; selection score of the mixed split, 1.0 = ``guided``): control (``lam`` 0.5) 0.858;
    ``lam`` 0.25: 0.852; ``edge_weight`` 5: 0.831; ``ssim_weight`` 1: 0.882; ``ssim_weight`` 3:
    0.892. The SSIM term raised VIF in every domain and Qabf on TNO and MSRS, and lowered Qabf
    on RoadScene.

    ``texture_weight`` scales ``L_text`` (1 in the paper); 250 SGD steps from ``refinefuse.ivif`` v0.6.0
    (``ssim_weight`` 3, same seed and data order): weight 1 (control) 0.933, 3 0.938, 10 0.925.
    Two changes aimed at Qabf, 250 steps each from v0.7.0 on the same schedule, seed and data
    order as the continued run they are compared with (its score at step 250: 0.935):
    ``ssim_target="masked"`` 0.875 (RoadScene Qabf 0.531 -> 0.558, but VIF down in every domain,
    e.g. MSRS 0.997 -> 0.907, and Qabf down on the other three) and ``edge_weight`` 10 0.898
    (RoadScene VIF 0.776 -> 0.666). Both rejected; the shipped recipe keeps ``"max"`` and no edge term.

    ``saliency_ir`` is the infrared saliency map ``M_sal`` (``{0, 1}``, shaped like ``ir``; the
    trainer feeds the ``"ir_bright"`` maps of :class:`~ivfusion.train.data.PairedFusionDataset`).
    Which rule the shipped weights use, and the ablation that chose it, is in their manifest
    recipe. Terms: ``intensity``, ``texture``, ``edge``, ``ssim`` (unweighted).
    """
    fused, ir, vis = _check(("fused", "ir", "vis"), fused, ir, vis)
    if mask not in REFINEFUSE_MASKS:
        raise ValueError(f"mask: expected one of {REFINEFUSE_MASKS}, got {mask!r}")
    if ssim_target not in REFINEFUSE_SSIM_TARGETS:
        raise ValueError(f"ssim_target: expected one of {REFINEFUSE_SSIM_TARGETS}, got {ssim_target!r}")
    mask_max = None
    if mask_ir is None:
        if mask in REFINEFUSE_SALIENCY_MASKS:
            if saliency_ir is None:
                raise ValueError(f"saliency_ir: mask={mask!r} needs the infrared saliency map (saliency='ir_bright')")
            (saliency_ir,) = _check(("saliency_ir",), saliency_ir)
            if saliency_ir.shape != fused.shape:
                raise ValueError(f"saliency_ir: shape {tuple(saliency_ir.shape)} differs from fused's {tuple(fused.shape)}")
            salient = (saliency_ir > 0.5).to(fused.dtype)
        if mask == "saliency":
            mask_ir = salient
        else:
            ratio, floor = (1.0, 0.0) if mask == "contrast" else (margin_ratio, margin_floor)
            var_ir, var_vis = _local_variances(ir, vis, mask_window, mask_sigma)
            mask_ir = (var_ir > ratio * var_vis + floor).to(ir.dtype)
            if mask in ("margin_saliency", "margin_max"):
                mask_ir = torch.maximum(mask_ir, salient)
            if mask == "margin_max":
                vis_wins = (var_vis > ratio * var_ir + floor).to(ir.dtype)
                mask_vis = vis_wins * (1.0 - mask_ir)
                mask_max = 1.0 - mask_ir - mask_vis
    else:
        (mask_ir,) = _check(("mask_ir",), mask_ir.to(fused.dtype) if mask_ir.dtype == torch.bool else mask_ir)
        if mask_ir.shape != fused.shape:
            raise ValueError(f"mask_ir: shape {tuple(mask_ir.shape)} differs from fused's {tuple(fused.shape)}")
    if mask_max is None:
        mask_vis = 1.0 - mask_ir
    intensity = (mask_ir * (fused - ir)).abs().mean() + (mask_vis * (fused - vis)).abs().mean()
    if mask_max is not None:
        intensity = intensity + (mask_max * (fused - torch.maximum(ir, vis))).abs().mean()
    fx, fy = sobel(fused, padding="reflect")
    ix, iy = sobel(ir, padding="reflect")
    vx, vy = sobel(vis, padding="reflect")
    fx, fy, ix, iy, vx, vy = (t.abs() for t in (fx, fy, ix, iy, vx, vy))
    texture = (fx - torch.maximum(ix, vx)).abs().mean() + (fy - torch.maximum(iy, vy)).abs().mean()
    edge = ((fx + fy) - torch.maximum(ix + iy, vx + vy)).square().mean()
    if ssim_target == "max":
        ssim = _ssim_to_max(fused, ir, vis)
    elif ssim_target == "both":
        ssim = 1.0 - (ssim_loss_map(fused, ir).mean() + ssim_loss_map(fused, vis).mean()) / 2.0
    else:
        # Per-pixel choice of SSIM map, not SSIM to a composite target: a composite of I and V would
        # carry seams along the mask's borders, and the SSIM term would ask F to reproduce them.
        ssim_map = mask_ir * ssim_loss_map(fused, ir) + mask_vis * ssim_loss_map(fused, vis)
        if mask_max is not None:
            ssim_map = ssim_map + mask_max * ssim_loss_map(fused, torch.maximum(ir, vis))
        ssim = 1.0 - ssim_map.mean()
    total = lam * intensity + float(texture_weight) * texture + float(edge_weight) * edge + float(ssim_weight) * ssim
    return total, _terms(intensity=intensity, texture=texture, edge=edge, ssim=ssim)


# ------------------------------------------------------------------------------------ FISCNet


def fiscnet_loss(
    fused: torch.Tensor,
    ir: torch.Tensor,
    vis: torch.Tensor,
    mask_vis: torch.Tensor,
    *,
    weights: Sequence[float] = (3.0, 10.0, 10.0),
    ssim_weight: float = 0.0,
) -> LossOutput:
    """FISCNet (MODELS.md 3.8): ``3 L_mask + 10 L_max + 10 L_grad`` on the **clamped** output ``F``.

    * ``L_mask = mean|M_v V - F| + mean|F - M_i I|`` with ``M_i = 1 - 1[M_v = 1]`` (an exact equality;
      the unmasked ``F`` is compared, literally as in the official code)
    * ``L_max = mean|F - max(V, I)|``
    * ``L_grad = mean|G(F) - max(G(V), G(I))|``, ``G`` the L1 Sobel magnitude with zero padding 1

    ``mask_vis`` is the visible image's saliency map ``M_v`` in ``[0, 1]`` (8-bit quantised VSM,
    see :func:`ivfusion.train.data.vsm_saliency`).

    ``ssim_weight L_ssim`` with ``L_ssim = 1 - mean(SSIM(F, max(I, V)))`` is not in the official loss
    (weight 0 by default; always computed and logged): F3Net's structure term, for issue 16's
    ablation (it raised RefineFuse's VIF on every domain). Ablation (200 Adam steps from
    ``fiscnet.ivif`` v0.1.0, same seed and data order, selection score of the mixed split): the
    literal loss 0.719; ``ssim_weight`` 10: 0.710; ``weights=(0, 10, 10)`` with ``ssim_weight`` 10:
    0.732 (0.770 after 400 steps). With the VSM substitute the mask term pulls ``F`` towards ``M_v V``
    (a darkened visible image) and towards ``I`` almost everywhere; dropping it helps here. From
    ``fiscnet.ivif`` v0.3.0 (250 steps each, same seed and data order): ``weights=(0, 10, 20)`` 0.886
    against ``(0, 10, 10)`` 0.884 (Qabf up on LLVIP, MSRS and RoadScene, down on TNO); v0.4.0 and
    v0.5.0 were trained with it. Terms: ``mask``, ``max``, ``gradient``, ``ssim``.
    """
    fused, ir, vis, mask_vis = _check(("fused", "ir", "vis", "mask_vis"), fused, ir, vis, mask_vis)
    w_mask, w_max, w_grad = (float(w) for w in weights)
    mask_ir = 1.0 - (mask_vis == 1.0).to(fused.dtype)
    mask = (mask_vis * vis - fused).abs().mean() + (fused - mask_ir * ir).abs().mean()
    max_term = (fused - torch.maximum(vis, ir)).abs().mean()
    g_src = torch.maximum(sobel_l1_magnitude(vis, "zero"), sobel_l1_magnitude(ir, "zero"))
    gradient = (sobel_l1_magnitude(fused, "zero") - g_src).abs().mean()
    ssim = _ssim_to_max(fused, ir, vis)
    total = w_mask * mask + w_max * max_term + w_grad * gradient + float(ssim_weight) * ssim
    return total, _terms(mask=mask, max=max_term, gradient=gradient, ssim=ssim)
