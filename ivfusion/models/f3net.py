"""F3Net: frequency-spatial feature fusion network (MODELS.md section 4).

Each modality goes through its own FSFEM (stem conv, residual block, then a frequency unit with FcaNet
multi-spectral channel attention and a spatial unit with CBAM, in parallel). The frequency and spatial
features of both modalities are concatenated and merged by the FFM; the IRM decodes the fused
luminance with a ``(tanh + 1) / 2`` head. Stride 1 everywhere: any input size, no padding.

No official code exists; every open point follows the ``CHOICE`` items C-F3-1 ... C-F3-10 of MODELS.md.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ._registry import FusionNet, register_model
from .blocks import (
    CBAM,
    ConvAct,
    MultiSpectralChannelAttention,
    ResBlock,
    SqueezeExcitation,
    conv1x1,
    conv3x3,
    float32_head,
)

__all__ = ["F3Net", "FSFEM", "FFM"]


class FSFEM(nn.Module):
    """Frequency-spatial feature extraction for one modality: ``(B, 1, H, W) -> (Fq, Sp)``, each
    ``(B, C, H, W)``.

    ``stem = ReLU(Conv3x3(1->C))``, ``r = ResBlock(stem)``; ``Fq = MSCA(ReLU(Conv3x3(r)))`` (FFEU),
    ``Sp = CBAM(ReLU(Conv3x3(r)))`` (SFEU).
    """

    def __init__(self, channels: int = 32, grid: int = 7, reduction: int = 16) -> None:
        super().__init__()
        self.stem = ConvAct(1, channels)
        self.res = ResBlock(channels)
        self.ffeu = nn.Sequential(ConvAct(channels, channels), MultiSpectralChannelAttention(channels, grid, reduction))
        self.sfeu = nn.Sequential(ConvAct(channels, channels), CBAM(channels, reduction))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        r = self.res(self.stem(x))
        return self.ffeu(r), self.sfeu(r)


class FFM(nn.Module):
    """Feature fusion module (MODELS.md 4.5) on ``Fq``, ``Sp`` ``(B, C, H, W)`` -> ``(B, C, H, W)``.

    ``a = Conv7x7(1->1)(max_c Sp)``; ``w = sigmoid(Conv1x1(C->C)(Fq) + a)``; ``y = Fq * w + Sp``;
    ``out = SE(y)`` (reduction 16, bias-free).
    """

    def __init__(self, channels: int = 64, reduction: int = 16) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(1, 1, 7, padding=3)
        self.freq_proj = conv1x1(channels, channels)
        self.se = SqueezeExcitation(channels, reduction, bias=False)

    def forward(self, fq: torch.Tensor, sp: torch.Tensor) -> torch.Tensor:
        a = self.spatial(sp.amax(dim=1, keepdim=True))
        w = torch.sigmoid(self.freq_proj(fq) + a)
        return self.se(torch.addcmul(sp, fq, w))


@register_model(
    "f3net",
    paper=(
        "W. Song, M. Gao, Q. Li, G. Jeon, D. Camacho, 'Frequency-Spatial Feature Fusion Network for "
        "Infrared and Visible Image Fusion' (F3Net), Springer conference proceedings (LNCS format), "
        "2023 or later (the copy this implementation follows names no volume or DOI)"
    ),
    paper_url="https://scholar.google.com/scholar?q=Frequency-Spatial+Feature+Fusion+Network+F3Net",
    cpu_bytes_per_pixel=3250,  # measured 2.94 KB/px as fuse() runs it (benchmarks/README.md, CPU memory)
    size_multiple=1,
    description="reads each image's texture both as frequencies and as pixels, then blends them with attention; FcaNet (DCT) and CBAM streams, attention fusion module",
    tiling_halo=None,  # global pooling in FcaNet, CBAM and SE
    half_precision=True,
    cpu_bf16=True,  # bf16 vs fp32, validation pairs: p99 0.38-0.88, max 2.7 grey levels (benchmarks/precision.py)
    default_config={"channels": 32, "grid": 7, "reduction": 16},
)
class F3Net(FusionNet):
    """F3Net (MODELS.md section 4), 140,283 parameters with ``channels=32``.

    ``forward(ir, vis_y)``: ``(B, 1, H, W)`` in [0, 1] each -> fused ``(B, 1, H, W)`` in (0, 1).

    Args:
        channels: width ``C`` per stream (a multiple of 16: FcaNet's 16 frequency groups and the
            reduction); the FFM works on ``2C`` and the IRM is ``2C -> 2C -> C -> C/2 -> 1``.
        grid: side of the pooled map of the DCT channel attention.
        reduction: channel reduction of the MSCA, CBAM and SE gates.
    """

    def __init__(self, channels: int = 32, grid: int = 7, reduction: int = 16) -> None:
        super().__init__()
        if channels < 16 or channels % 16:
            raise ValueError(f"channels must be a positive multiple of 16, got {channels}")
        c = channels
        self.fsfem_ir = FSFEM(c, grid, reduction)
        self.fsfem_vi = FSFEM(c, grid, reduction)
        self.ffm = FFM(2 * c, reduction)
        self.irm = nn.Sequential(
            ConvAct(2 * c, 2 * c),
            ConvAct(2 * c, c),
            ConvAct(c, c // 2),
            conv3x3(c // 2, 1),
        )

    def fuse_aligned(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        fq_ir, sp_ir = self.fsfem_ir(ir)
        fq_vi, sp_vi = self.fsfem_vi(vis_y)
        z = self.ffm(torch.cat([fq_ir, fq_vi], dim=1), torch.cat([sp_ir, sp_vi], dim=1))
        t = torch.tanh(float32_head(self.irm[-1], self.irm[:-1](z)))
        return (t + 1.0) * 0.5
