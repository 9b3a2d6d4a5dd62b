"""RefineFuse: multi-scale interaction network (MODELS.md section 5).

Two unshared 4-level encoders (scales 1, 1/2, 1/4, 1/8) feed a fusion module per scale: SFIM (spatial
attention + per-channel grouped fusion) on the two shallow levels, PSIM (spatial cross-attention on an
adaptively pooled grid) on the two deep levels. Decoders merge the scales coarse-to-fine, with a FIM
(deep-guided channel/spatial attention) at level 2; the head is ``(tanh + 1) / 2``.

No official code exists; every open point follows the ``CHOICE`` items C-RF-1 ... C-RF-8 of MODELS.md.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import FusionNet, register_model
from .blocks import (
    ConvAct,
    float32_head,
    SpatialAttention,
    adaptive_avg_pool2d,
    conv1x1,
    conv3x3,
    grid_cross_attention,
    interleave_channels,
)

__all__ = ["RefineFuse", "RefineFuseEncoder", "SFIM", "PSIM", "FIM", "DecoderBlock", "psim_grid"]


class RefineFuseEncoder(nn.Module):
    """Four ``Conv 3x3 -> ReLU`` layers, strides 1, 2, 2, 2 -> features at scales 1, 1/2, 1/4, 1/8."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        c1, c2, c3, c4 = widths
        self.e1 = ConvAct(1, c1)
        self.e2 = ConvAct(c1, c2, stride=2)
        self.e3 = ConvAct(c2, c3, stride=2)
        self.e4 = ConvAct(c3, c4, stride=2)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.e1(x)
        f2 = self.e2(f1)
        f3 = self.e3(f2)
        return f1, f2, f3, self.e4(f3)


class SFIM(nn.Module):
    """Superficial feature interaction module (MODELS.md 5.3), width ``C``.

    ``[alpha_A, alpha_B] = sigmoid(Conv3x3(2->2)([max_c, mean_c]([A, B])))``;
    ``A^ = A + alpha_A * A``, ``B^ = B + alpha_B * B``;
    ``out = ReLU(GroupConv3x3(2C -> C, groups=C)([A^_1, B^_1, ..., A^_C, B^_C]))``, so output channel
    ``a`` only sees channel ``a`` of both modalities.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.spatial = SpatialAttention(3, order=("max", "mean"), out_maps=2, bias=True)
        self.fuse = conv3x3(2 * channels, channels, groups=channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        alpha = self.spatial(a, b)  # (B, 2, H, W) maps of [A, B]
        # A + alpha_A * A == A * (1 + alpha_A): applied while interleaving, one pass over the features.
        return F.relu(self.fuse(interleave_channels(a, b, scale=1.0 + alpha)), inplace=True)


def psim_grid(h: int, w: int, pool: int) -> Tuple[int, int]:
    """Attention grid ``(ceil(h / pool), ceil(w / pool))`` of a PSIM whose input is ``h x w``."""
    return (h + pool - 1) // pool, (w + pool - 1) // pool  # integer ceil: stays exact for symbolic sizes


class PSIM(nn.Module):
    """Profound semantic interaction module (MODELS.md 5.4), width ``C``, pooling factor ``pool``.

    On ``A`` (IR) and ``B`` (VIS) of size ``h x w``, adaptively average-pooled to
    :func:`psim_grid` ``(h', w')`` (``n = h' w'`` tokens):
    ``Q = Conv3x3(2C->C)([A_, B_])``, ``K_m, V_m = Conv3x3(C->C)(m_)`` per modality,
    ``G_m = softmax(Q K_m^T / sqrt(C)) V_m``; ``A~ = A + up(G_A)``, ``B~ = B + up(G_B)`` (bilinear);
    ``out = ReLU(Conv3x3(2C->C)([A~, B~]))``.

    The four key/value convolutions are held as one grouped conv ``2C -> 4C`` (groups 2; output
    ``[K_A, V_A, K_B, V_B]``), which is exactly four separate ``C -> C`` convs in one call.

    Args:
        residual: ``"own"`` (default, ``A + G_A``) or ``"cross"`` (``A + G_B``, ``B + G_A``, PSFusion's
            wiring) for ablations.
    """

    def __init__(self, channels: int, pool: int, residual: str = "own") -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        if residual not in ("own", "cross"):
            raise ValueError(f"residual must be 'own' or 'cross', got {residual!r}")
        self.channels = channels
        self.pool = pool
        self.residual = residual
        self.query = conv3x3(2 * channels, channels)
        self.key_value = conv3x3(2 * channels, 4 * channels, groups=2)
        self.fuse = conv3x3(2 * channels, channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h, w = a.shape[-2:]
        x = torch.cat([a, b], dim=1)  # (B, 2C, h, w)
        grid = psim_grid(h, w, self.pool)
        x_small = adaptive_avg_pool2d(x, grid)
        n, c = x.shape[0], self.channels
        q = self.query(x_small)
        kv = self.key_value(x_small).unflatten(1, (2, 2, c))  # (B, modality, key/value, C, h', w')
        g = grid_cross_attention(q, kv[:, :, 0], kv[:, :, 1])  # (B, 2, C, h', w')
        if self.residual == "cross":
            g = g.flip(1)
        g = g.reshape(n, 2 * c, *grid)
        # Always resampled while exporting: a size test would freeze into the graph.
        if torch.compiler.is_exporting() or grid != (h, w):
            g = F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False)
        return F.relu(self.fuse(x + g), inplace=True)


class FIM(nn.Module):
    """Feature interaction module (MODELS.md 5.5): ``D`` deep (decoder output), ``S`` shallow (SFIM2).

    ``S_c = S * sigmoid(GAP(D)) + S * sigmoid(GAP(S))``;
    ``a = sigmoid(Conv7x7(2->1, bias)([max_c D, mean_c D]))``; ``out = D + S_c * a``.
    ``D`` is resized bilinearly to ``S``'s size when they differ.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spatial = SpatialAttention(7, order=("max", "mean"), out_maps=1, bias=True)

    def forward(self, d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if d.shape[-2:] != s.shape[-2:]:
            d = F.interpolate(d, size=s.shape[-2:], mode="bilinear", align_corners=False)
        channel = torch.sigmoid(d.mean(dim=(2, 3), keepdim=True)) + torch.sigmoid(s.mean(dim=(2, 3), keepdim=True))
        return torch.addcmul(d, s * channel, self.spatial(d))


class DecoderBlock(nn.Module):
    """``Conv1x1 -> ReLU -> Conv3x3 -> ReLU -> bilinear upsample`` to a given size (MODELS.md 5.5)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_a = conv1x1(in_channels, out_channels)
        self.conv_b = conv3x3(out_channels, out_channels)

    def forward(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.conv_b(F.relu(self.conv_a(x), inplace=True)), inplace=True)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@register_model(
    "refinefuse",
    paper=(
        "C. Song, H. Li, T. Xu, X.-J. Wu, J. Kittler, 'RefineFuse: an end-to-end network for multi-scale "
        "refinement fusion of multi-modality images', Visual Intelligence (Springer Nature), 2025"
    ),
    paper_url="https://doi.org/10.1007/s44267-025-00087-w",
    cpu_bytes_per_pixel=2200,  # measured 1.99 KB/px as fuse() runs it (benchmarks/README.md, CPU memory)
    size_multiple=8,
    description="mixes the two images at four scales, attention choosing what each scale keeps; encoder-decoder with SFIM (spatial attention), PSIM (cross-attention) and FIM modules",
    tiling_halo=None,  # global pooling in FIM and attention over the whole deep grid
    half_precision=True,
    cpu_bf16=False,  # bf16 vs fp32: p99 0.51-1.03 grey levels, > 1 on RoadScene (benchmarks/precision.py)
    default_config={"widths": (64, 64, 64, 128), "pools": (4, 8), "psim_residual": "own"},
)
class RefineFuse(FusionNet):
    """RefineFuse (MODELS.md section 5), 2,031,856 parameters with the default widths.

    ``forward(ir, vis_y)``: ``(B, 1, H, W)`` in [0, 1] each -> fused ``(B, 1, H, W)`` in (0, 1). Inputs
    are reflect-padded at the bottom/right to a multiple of 8 and the output is cropped back.

    Args:
        widths: encoder widths ``(c1, c2, c3, c4)``; the decoders use ``c3`` channels and Dec1 is
            ``(c1 + c3) -> 64 -> 64 -> 32 -> 1``. ``c2 == c3`` is required (FIM adds Dec3's output
            to SFIM2's).
        pools: PSIM pooling factors at levels 3 and 4 (attention grids ``ceil(h / pool)``).
        psim_residual: ``"own"`` (default) or ``"cross"``, see :class:`PSIM`.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 64, 64, 128),
        pools: Sequence[int] = (4, 8),
        psim_residual: str = "own",
    ) -> None:
        super().__init__()
        widths = tuple(int(c) for c in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be four positive channel counts, got {widths!r}")
        if widths[1] != widths[2]:
            raise ValueError(f"widths[1] must equal widths[2] (FIM adds the level-2 features), got {widths!r}")
        if len(tuple(pools)) != 2:
            raise ValueError(f"pools must be two pooling factors (levels 3 and 4), got {pools!r}")
        c1, c2, c3, c4 = widths
        self.enc_ir = RefineFuseEncoder(widths)
        self.enc_vi = RefineFuseEncoder(widths)
        self.sfim1 = SFIM(c1)
        self.sfim2 = SFIM(c2)
        self.psim3 = PSIM(c3, pools[0], psim_residual)
        self.psim4 = PSIM(c4, pools[1], psim_residual)
        self.dec4 = DecoderBlock(c4, c3)
        self.dec3 = DecoderBlock(c3, c3)
        self.fim = FIM()
        self.dec2 = DecoderBlock(c3, c3)
        self.dec1 = nn.Sequential(
            ConvAct(c3 + c1, 64),
            ConvAct(64, 64),
            ConvAct(64, 32),
            conv3x3(32, 1),
        )

    def fuse_aligned(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        i1, i2, i3, i4 = self.enc_ir(ir)
        v1, v2, v3, v4 = self.enc_vi(vis_y)
        # The ``del``s drop full-resolution maps as soon as they are consumed, which lowers the peak
        # memory of large inputs (autograd still keeps what backward needs).
        f1 = self.sfim1(i1, v1)
        del i1, v1
        f2 = self.sfim2(i2, v2)
        f3 = self.psim3(i3, v3)
        f4 = self.psim4(i4, v4)
        del i2, v2, i3, v3, i4, v4
        u4 = self.dec4(f4, f3.shape[-2:])
        u3 = self.dec3(u4 + f3, f2.shape[-2:])
        u2 = self.dec2(self.fim(u3, f2), f1.shape[-2:])
        x = torch.cat([u2, f1], dim=1)
        del u2, f1
        t = torch.tanh(float32_head(self.dec1[-1], self.dec1[:-1](x)))
        return (t + 1.0) * 0.5
