"""DIDFuse: deep image decomposition auto-encoder (MODELS.md section 2).

Zhao, Xu, Zhang, Liu, Li, Zhang, "DIDFuse: Deep Image Decomposition for Infrared and Visible Image
Fusion", IJCAI 2020.

An encoder splits one grey image into two shallow skip features ``F1``, ``F2`` and a background / detail
pair ``B``, ``D`` (each ``(N, 64, H, W)``); a decoder rebuilds the image from them. At test time the four
feature pairs of the infrared and the visible image are merged with a fixed rule (:func:`fuse_features`)
and decoded once.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import FusionNet, register_model
from .blocks import float32_head

__all__ = [
    "DIDFuse",
    "DIDFuseEncoder",
    "DIDFuseDecoder",
    "ConvBNAct",
    "FUSION_RULES",
    "fuse_sum",
    "fuse_average",
    "fuse_l1_norm",
    "fuse_features",
    "convert_official_state_dict",
]

Features = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class ConvBNAct(nn.Module):
    """[reflect pad 1] -> Conv 3x3 (stride 1, bias) -> BatchNorm2d -> activation.

    ``reflect=True`` pads by reflection and convolves without padding (conv1, conv7); otherwise the
    convolution zero-pads by 1. ``act`` is one of ``"prelu"`` (one slope, init 0.25), ``"tanh"``,
    ``"sigmoid"``.
    """

    def __init__(self, in_channels: int, out_channels: int, act: str, reflect: bool = False) -> None:
        super().__init__()
        self.reflect = reflect
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=0 if reflect else 1)
        self.bn = nn.BatchNorm2d(out_channels)
        if act == "prelu":
            self.act: nn.Module = nn.PReLU(num_parameters=1, init=0.25)
        elif act == "tanh":
            self.act = nn.Tanh()
        elif act == "sigmoid":
            self.act = nn.Sigmoid()
        else:
            raise ValueError(f"act must be 'prelu', 'tanh' or 'sigmoid', got {act!r}")

    def folded(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Convolution ``(weight, bias)`` with the inference-mode BatchNorm folded in:
        ``bn(conv(x)) == conv2d(x, weight, bias)`` while the BN uses its running statistics."""
        bn, conv = self.bn, self.conv
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        return conv.weight * scale[:, None, None, None], (bias - bn.running_mean) * scale + bn.bias

    def uses_running_stats(self) -> bool:
        """Whether the BatchNorm normalises with its running statistics (eval mode), so it can be folded."""
        return not self.bn.training and self.bn.track_running_stats and self.bn.running_var is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reflect:
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        if self.uses_running_stats():
            # Inference: one convolution with the BN folded in (a pass over the activations saved).
            return self.act(F.conv2d(x, *self.folded(), padding=self.conv.padding))
        return self.act(self.bn(self.conv(x)))


class DIDFuseEncoder(nn.Module):
    """``x (N,1,H,W) -> (F1, F2, B, D)``, each ``(N, 64, H, W)``; ``B``, ``D`` in (-1, 1) (tanh)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(1, width, "prelu", reflect=True)
        self.conv2 = ConvBNAct(width, width, "prelu")
        self.conv3 = ConvBNAct(width, width, "tanh")  # background head
        self.conv4 = ConvBNAct(width, width, "tanh")  # detail head

    def _heads_fold(self) -> bool:
        return self.conv3.uses_running_stats() and self.conv4.uses_running_stats()

    def forward(self, x: torch.Tensor) -> Features:
        if self._heads_fold():
            f1, f2, bd = self.forward_joint(x)
            b, d = bd.chunk(2, dim=1)
            return f1, f2, b, d
        f1 = self.conv1(x)
        f2 = self.conv2(f1)
        return f1, f2, self.conv3(f2), self.conv4(f2)  # training: no concatenation to undo

    def forward_joint(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x -> (F1, F2, [B, D])`` with ``B`` and ``D`` concatenated on channels ``(N, 128, H, W)``,
        the layout the decoder's first layer reads. With folded BatchNorms (eval mode) the two tanh
        heads run as one 128-channel convolution."""
        f1 = self.conv1(x)
        f2 = self.conv2(f1)
        if self._heads_fold():
            (w3, b3), (w4, b4) = self.conv3.folded(), self.conv4.folded()
            bd = torch.tanh(F.conv2d(f2, torch.cat([w3, w4]), torch.cat([b3, b4]), padding=1))
        else:
            bd = torch.cat([self.conv3(f2), self.conv4(f2)], dim=1)
        return f1, f2, bd


class DIDFuseDecoder(nn.Module):
    """``(F1, F2, B, D) -> x_hat (N,1,H,W)`` in (0, 1) (sigmoid).

    Concatenation order (fixed by the official weights): ``[B, D]``, ``[conv5, F2]``, ``[conv6, F1]``.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.conv5 = ConvBNAct(2 * width, width, "prelu")
        self.conv6 = ConvBNAct(2 * width, width, "prelu")
        self.conv7 = ConvBNAct(2 * width, 1, "sigmoid", reflect=True)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.forward_joint(f1, f2, torch.cat([b, d], dim=1))

    def forward_joint(self, f1: torch.Tensor, f2: torch.Tensor, bd: torch.Tensor) -> torch.Tensor:
        """Decode from ``[B, D]`` concatenated on channels (:meth:`DIDFuseEncoder.forward_joint`)."""
        x = self.conv5(bd)
        x = self.conv6(torch.cat([x, f2], dim=1))
        return float32_head(self.conv7, torch.cat([x, f1], dim=1))


# --------------------------------------------------------------------------------------------------
# Fusion rules (MODELS.md 2.4): pure functions over same-shaped feature maps (N, C, H, W).


def fuse_sum(x_ir: torch.Tensor, x_vis: torch.Tensor) -> torch.Tensor:
    """Summation rule: ``x_ir + x_vis``."""
    return x_ir + x_vis


def fuse_average(x_ir: torch.Tensor, x_vis: torch.Tensor, gamma: float = 0.5) -> torch.Tensor:
    """Weighted average: ``gamma * x_ir + (1 - gamma) * x_vis``."""
    return gamma * x_ir + (1.0 - gamma) * x_vis


def l1_norm_weights(
    x_ir: torch.Tensor, x_vis: torch.Tensor, eps: float = 1e-8
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel weights ``(w_ir, w_vis)``, each ``(N, 1, H, W)``, of the L1-norm rule.

    Activity ``a = box3x3(sum_c |x^c|)`` (mean over the 3x3 window, zero padding, divisor 9);
    ``w_m = a_m / (a_ir + a_vis + eps)``.
    """
    a_ir = F.avg_pool2d(x_ir.abs().sum(dim=1, keepdim=True), 3, stride=1, padding=1, count_include_pad=True)
    a_vis = F.avg_pool2d(x_vis.abs().sum(dim=1, keepdim=True), 3, stride=1, padding=1, count_include_pad=True)
    total = a_ir + a_vis + eps
    return a_ir / total, a_vis / total


def fuse_l1_norm(x_ir: torch.Tensor, x_vis: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """L1-norm rule: ``w_ir * x_ir + w_vis * x_vis`` with the weights of :func:`l1_norm_weights`."""
    w_ir, w_vis = l1_norm_weights(x_ir, x_vis, eps)
    return w_ir * x_ir + w_vis * x_vis


FUSION_RULES: Dict[str, Callable[..., torch.Tensor]] = {
    "sum": fuse_sum,
    "average": fuse_average,
    "l1_norm": fuse_l1_norm,
}


def fuse_features(
    x_ir: torch.Tensor, x_vis: torch.Tensor, rule: str = "sum", *, gamma: float = 0.5, eps: float = 1e-8
) -> torch.Tensor:
    """Merge two same-shaped feature maps with one of :data:`FUSION_RULES` (``gamma`` for ``"average"``,
    ``eps`` for ``"l1_norm"``)."""
    if rule == "sum":
        return fuse_sum(x_ir, x_vis)
    if rule == "average":
        return fuse_average(x_ir, x_vis, gamma)
    if rule == "l1_norm":
        return fuse_l1_norm(x_ir, x_vis, eps)
    raise ValueError(f"rule must be one of {sorted(FUSION_RULES)}, got {rule!r}")


# --------------------------------------------------------------------------------------------------


@register_model(
    "didfuse",
    paper=(
        "Z. Zhao, S. Xu, C. Zhang, J. Liu, J. Zhang, P. Li, 'DIDFuse: Deep Image Decomposition for "
        "Infrared and Visible Image Fusion', Proc. 29th International Joint Conference on Artificial "
        "Intelligence (IJCAI 2020), pp. 970-976, 2020; arXiv:2003.09210"
    ),
    paper_url="https://doi.org/10.24963/ijcai.2020/135",
    cpu_bytes_per_pixel=4000,  # measured 3.60 KB/px as fuse() runs it (benchmarks/README.md, CPU memory)
    size_multiple=1,
    description="splits each image into a smooth background and fine details and merges them by a fixed rule (-O rule=sum|average|l1_norm); auto-encoder with background/detail feature maps",
    # Receptive field 13x13 (six chained 3x3 convs) for "sum"/"average"; the 3x3 activity blur of
    # "l1_norm" widens it to 15x15, so the halo that is exact for every rule is 7.
    tiling_halo=7,
    half_precision=True,
    cpu_bf16=True,  # bf16 vs fp32, validation pairs: p99 0.32-0.77, max 1.3 grey levels (benchmarks/precision.py)
    forward_options={"rule": "sum"},
)
class DIDFuse(FusionNet):
    """DIDFuse auto-encoder (260,935 parameters).

    ``forward(ir, vis_y, rule="sum")``: ``(N,1,H,W)`` inputs in [0, 1] -> fused ``(N,1,H,W)`` in (0, 1).
    Needs ``H, W >= 2`` (reflection padding). ``rule`` in :data:`FUSION_RULES`. Purely local: receptive
    field 13x13 (15x15 with ``"l1_norm"``), so tiles with a 7-pixel halo reproduce the whole-image output.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.encoder = DIDFuseEncoder(width)
        self.decoder = DIDFuseDecoder(width)

    def encode(self, x: torch.Tensor) -> Features:
        """``(N,1,H,W) -> (F1, F2, B, D)``."""
        return self.encoder(x)

    def decode(self, f1: torch.Tensor, f2: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """``(F1, F2, B, D) -> (N,1,H,W)`` in (0, 1)."""
        return self.decoder(f1, f2, b, d)

    def reconstruct(self, x: torch.Tensor) -> Tuple[torch.Tensor, Features]:
        """Training path: auto-encode one image; returns ``(x_hat, (F1, F2, B, D))``."""
        feats = self.encode(x)
        return self.decode(*feats), feats

    def fuse_aligned(self, ir: torch.Tensor, vis_y: torch.Tensor, rule: str = "sum") -> torch.Tensor:
        if rule not in FUSION_RULES:
            raise ValueError(f"rule must be one of {sorted(FUSION_RULES)}, got {rule!r}")
        if min(ir.shape[-2:]) < 2:
            raise ValueError(f"DIDFuse needs H, W >= 2, got {tuple(ir.shape[-2:])}")
        # Both images through the encoder as one batch of 2N (one call per layer).
        n = ir.shape[0]
        f1, f2, bd = self.encoder.forward_joint(torch.cat([ir, vis_y]))
        f1, f2 = fuse_features(f1[:n], f1[n:], rule), fuse_features(f2[:n], f2[n:], rule)
        if rule == "l1_norm":  # activity is measured per feature map: B and D separately
            b, d = bd.chunk(2, dim=1)
            bd = torch.cat([fuse_features(b[:n], b[n:], rule), fuse_features(d[:n], d[n:], rule)], dim=1)
        else:  # element-wise rules act on [B, D] as on B and D
            bd = fuse_features(bd[:n], bd[n:], rule)
        return self.decoder.forward_joint(f1, f2, bd)


# --------------------------------------------------------------------------------------------------
# Official checkpoint layout (MODELS.md 2.8): ``cov{n}.cov{n}.{i}.{param}``; for n in {1, 7} index 0 is the
# reflection pad, so conv/BN/PReLU = 1/2/3; otherwise 0/1/2.

_OFFICIAL_KEY = re.compile(r"^(?:(encoder|decoder)\.)?cov([1-7])\.cov\2\.([0-3])\.(\w+)$")


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map official DIDFuse keys to :class:`DIDFuse` keys.

    Accepts ``encoder.``/``decoder.``-prefixed keys (the combined layout) or the bare keys of the two
    official state dicts (``cov1``..``cov4`` encoder, ``cov5``..``cov7`` decoder), e.g.
    ``encoder.cov1.cov1.1.weight -> encoder.conv1.conv.weight``,
    ``decoder.cov5.cov5.1.running_var -> decoder.conv5.bn.running_var``.
    Raises ``ValueError`` on any key that does not fit the layout.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _OFFICIAL_KEY.match(key)
        if m is None:
            raise ValueError(f"state_dict: unexpected key {key!r} (expected 'cov<n>.cov<n>.<i>.<param>')")
        prefix, n, i, param = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        part = "encoder" if n <= 4 else "decoder"
        if prefix is not None and prefix != part:
            raise ValueError(f"state_dict: key {key!r} puts cov{n} in the {prefix}")
        offset = 1 if n in (1, 7) else 0
        names = {offset: "conv", offset + 1: "bn", offset + 2: "act"}
        if i not in names:
            raise ValueError(f"state_dict: key {key!r} indexes a parameter-free layer")
        new_key = f"{part}.conv{n}.{names[i]}.{param}"
        if new_key in out:
            raise ValueError(f"state_dict: duplicate entry for {new_key!r}")
        out[new_key] = value
    return out
