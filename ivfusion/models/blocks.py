"""Reusable network blocks shared by the fusion networks (MODELS.md sections 4 and 5).

Everything works on ``(B, C, H, W)`` feature maps and keeps their memory format where it can
(NCHW or channels-last). Attention gates are returned as separate ``gate(x)`` methods so that their
value ranges and shapes can be inspected; ``forward`` applies them.

Contents:

* convolution helpers: :func:`conv1x1`, :func:`conv3x3`, :class:`ConvAct`;
* :class:`ResBlock` (two 3x3 convs with an identity skip);
* channel attention: :class:`SqueezeExcitation` (SE), :class:`CBAMChannelGate` (CBAM),
  :class:`MultiSpectralChannelAttention` (FcaNet, 2-D DCT pooling) with :func:`dct_basis_1d`,
  :func:`dct_filters_2d` and :data:`FCANET_TOP16`;
* spatial attention: :func:`channel_pool`, :class:`SpatialAttention`, and :class:`CBAM` (channel then
  spatial gate);
* :func:`interleave_channels` (``[a1, b1, a2, b2, ...]``) for per-channel grouped fusion;
* :func:`grid_cross_attention`: single-head softmax attention of one query map against the keys and
  values of several modalities, over spatial positions (``scaled_dot_product_attention``);
* :func:`adaptive_avg_pool2d`: adaptive average pooling that also exports to ONNX with a symbolic
  output size (:func:`adaptive_pool_matrix`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "float32_head",
    "conv1x1",
    "conv3x3",
    "ConvAct",
    "ResBlock",
    "SqueezeExcitation",
    "CBAMChannelGate",
    "FCANET_TOP16",
    "dct_basis_1d",
    "dct_filters_2d",
    "MultiSpectralChannelAttention",
    "channel_pool",
    "SpatialAttention",
    "CBAM",
    "interleave_channels",
    "grid_cross_attention",
    "adaptive_pool_matrix",
    "adaptive_avg_pool2d",
]


# ---------------------------------------------------------------------------------------------
# Convolution helpers
# ---------------------------------------------------------------------------------------------


def float32_head(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``head(x)`` in float32 with autocast off: for the last (1-channel) layer of a network, so that under
    bf16/fp16 autocast the output keeps float32 resolution (bf16 spaces values in [0.5, 1) by 2^-9, half
    an 8-bit grey level). The head is a small part of the work; its input is cast up once."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))  # float64 stays float64
    if not torch.amp.is_autocast_available(x.device.type):  # e.g. "meta" (FLOP counting)
        return head(x)
    with torch.autocast(x.device.type, enabled=False):
        return head(x)


def conv1x1(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    """Point-wise convolution (stride 1, no padding)."""
    return nn.Conv2d(in_channels, out_channels, 1, bias=bias)


def conv3x3(
    in_channels: int, out_channels: int, stride: int = 1, groups: int = 1, bias: bool = True
) -> nn.Conv2d:
    """3x3 convolution with zero padding 1 (output ``ceil(H / stride) x ceil(W / stride)``)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=bias)


class ConvAct(nn.Sequential):
    """``Conv kxk (zero padding k//2, bias) -> ReLU``; parameters named ``conv.weight``/``conv.bias``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.act = nn.ReLU(inplace=True)


class ResBlock(nn.Module):
    """Residual block ``x + conv_b(ReLU(conv_a(x)))``, 3x3 convs, no activation after the sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_a = conv3x3(channels, channels)
        self.conv_b = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_b(F.relu(self.conv_a(x)))


def _reduced(channels: int, reduction: int, name: str) -> int:
    if channels < 1 or reduction < 1 or channels % reduction:
        raise ValueError(f"{name}: channels ({channels}) must be a positive multiple of reduction ({reduction})")
    return channels // reduction


# ---------------------------------------------------------------------------------------------
# Channel attention
# ---------------------------------------------------------------------------------------------


class SqueezeExcitation(nn.Module):
    """SE channel attention: ``x * sigmoid(W2 ReLU(W1 GAP(x)))``, ``W1: C -> C/r``, ``W2: C/r -> C``."""

    def __init__(self, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        hidden = _reduced(channels, reduction, "SqueezeExcitation")
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, channels, bias=bias)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights ``(B, C, 1, 1)`` in [0, 1]."""
        z = x.mean(dim=(2, 3))
        return torch.sigmoid(self.fc2(F.relu(self.fc1(z))))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAMChannelGate(nn.Module):
    """CBAM channel gate ``sigmoid(MLP(GAP(x)) + MLP(GMP(x)))`` with a shared MLP ``C -> C/r -> C``
    (biases, ReLU)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _reduced(channels, reduction, "CBAMChannelGate")
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights ``(B, C, 1, 1)`` in [0, 1]."""
        pooled = torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))])  # (2, B, C): one MLP pass
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))).sum(0))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


#: FcaNet's "top16" DCT frequency pairs ``(u, v)`` on a 7x7 grid (``u`` along H, ``v`` along W),
#: in channel-group order (MODELS.md 4.3).
FCANET_TOP16: Tuple[Tuple[int, int], ...] = (
    (0, 0), (0, 1), (6, 0), (0, 5), (0, 2), (1, 0), (1, 2), (4, 0),
    (5, 0), (1, 6), (3, 0), (0, 4), (0, 6), (0, 3), (3, 5), (2, 2),
)  # fmt: skip


def dct_basis_1d(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II basis ``(n, n)``: row ``u`` is ``b_u(t) = c_u cos(pi u (t + 1/2) / n)``
    with ``c_0 = 1/sqrt(n)`` and ``c_u = sqrt(2/n)`` otherwise."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    t = torch.arange(n, dtype=torch.float64)
    u = torch.arange(n, dtype=torch.float64)[:, None]
    basis = torch.cos(math.pi * u * (t + 0.5) / n) / math.sqrt(n)
    basis[1:] *= math.sqrt(2.0)
    return basis.to(dtype)


def dct_filters_2d(
    frequencies: Sequence[Tuple[int, int]], n: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """2-D DCT-II filters ``(G, n, n)``: ``D_g(h, w) = b_{u_g}(h) * b_{v_g}(w)`` for ``(u_g, v_g)``
    in ``frequencies``. Distinct frequency pairs give orthonormal filters."""
    for u, v in frequencies:
        if not (0 <= u < n and 0 <= v < n):
            raise ValueError(f"frequencies must lie in [0, {n}), got ({u}, {v})")
    basis = dct_basis_1d(n, torch.float64)
    uu = torch.tensor([f[0] for f in frequencies], dtype=torch.long)
    vv = torch.tensor([f[1] for f in frequencies], dtype=torch.long)
    return (basis[uu][:, :, None] * basis[vv][:, None, :]).to(dtype)


class MultiSpectralChannelAttention(nn.Module):
    """FcaNet multi-spectral channel attention (MODELS.md 4.3).

    The input is average-pooled to a fixed ``grid x grid`` map (adaptive, so any size works; maps
    smaller than the grid are upsampled). The channels are split into ``len(frequencies)`` equal
    consecutive groups; every channel of group ``g`` is reduced to a scalar by the 2-D DCT filter of
    frequency pair ``g``. Gate ``sigmoid(W2 ReLU(W1 z))`` with bias-free ``W1: C -> C/r``,
    ``W2: C/r -> C``. The DCT filters are a fixed, non-persistent buffer.
    """

    def __init__(
        self,
        channels: int,
        grid: int = 7,
        reduction: int = 16,
        frequencies: Sequence[Tuple[int, int]] = FCANET_TOP16,
    ) -> None:
        super().__init__()
        groups = len(frequencies)
        if groups < 1 or channels % groups:
            raise ValueError(
                f"MultiSpectralChannelAttention: channels ({channels}) must be a multiple of the number of "
                f"frequencies ({groups})"
            )
        hidden = _reduced(channels, reduction, "MultiSpectralChannelAttention")
        self.grid = grid
        filters = dct_filters_2d(frequencies, grid)  # (G, n, n)
        self.register_buffer("dct_weight", filters.repeat_interleave(channels // groups, dim=0), persistent=False)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def spectral_pool(self, x: torch.Tensor) -> torch.Tensor:
        """DCT coefficients ``z (B, C)`` of the pooled ``grid x grid`` map."""
        p = adaptive_avg_pool2d(x, (self.grid, self.grid))
        return (p * self.dct_weight).sum(dim=(2, 3))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights ``(B, C, 1, 1)`` in [0, 1]."""
        z = self.spectral_pool(x)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(z))))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


# ---------------------------------------------------------------------------------------------
# Spatial attention
# ---------------------------------------------------------------------------------------------

_POOLS = ("max", "mean")


def channel_pool(*features: torch.Tensor, order: Sequence[str] = ("max", "mean")) -> torch.Tensor:
    """Channel-wise max / mean stacked in ``order`` -> ``(B, len(order), H, W)``.

    Several ``(B, C_i, H, W)`` tensors are pooled as their channel concatenation, without
    materialising it (max of the maxima, channel-count-weighted mean of the means).
    """
    if not features:
        raise ValueError("channel_pool needs at least one feature map")
    maps = []
    for name in order:
        if name == "max":
            m = features[0].amax(dim=1, keepdim=True)
            for f in features[1:]:
                m = torch.maximum(m, f.amax(dim=1, keepdim=True))
        elif name == "mean":
            m = features[0].sum(dim=1, keepdim=True)
            for f in features[1:]:
                m = m + f.sum(dim=1, keepdim=True)
            m = m / sum(f.shape[1] for f in features)
        else:
            raise ValueError(f"order entries must be 'max' or 'mean', got {name!r}")
        maps.append(m)
    return torch.cat(maps, dim=1)


class SpatialAttention(nn.Module):
    """Spatial attention map ``sigmoid(Conv kxk(channel_pool(x)))`` -> ``(B, out_maps, H, W)`` in [0, 1].

    Args:
        kernel_size: odd kernel side, zero padding ``k // 2``.
        order: which channel statistics feed the conv and in which order (CBAM: mean, max).
        out_maps: number of maps produced (SFIM produces one per modality).
        bias: whether the conv has a bias.

    ``forward(*features)`` returns the map of the channel concatenation of ``features`` (not
    materialised); multiply it onto the features as the caller needs.
    """

    def __init__(
        self,
        kernel_size: int = 7,
        order: Sequence[str] = ("mean", "max"),
        out_maps: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if not order or any(o not in _POOLS for o in order):
            raise ValueError(f"order must be a non-empty sequence of 'max'/'mean', got {order!r}")
        self.order = tuple(order)
        self.conv = nn.Conv2d(len(self.order), out_maps, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(channel_pool(*features, order=self.order)))


class CBAM(nn.Module):
    """CBAM: channel gate then spatial gate (mean/max pooled, ``kernel_size`` conv without bias or BN)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = CBAMChannelGate(channels, reduction)
        self.spatial = SpatialAttention(kernel_size, order=("mean", "max"), out_maps=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel(x)
        return x * self.spatial(x)


# ---------------------------------------------------------------------------------------------
# Fusion helpers
# ---------------------------------------------------------------------------------------------


def interleave_channels(
    a: torch.Tensor, b: torch.Tensor, scale: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``(B, C, H, W) x 2 -> (B, 2C, H, W)`` ordered ``[a_1, b_1, a_2, b_2, ..., a_C, b_C]``.

    ``scale`` ``(B, 2, H, W)`` optionally multiplies ``a`` by ``scale[:, 0]`` and ``b`` by
    ``scale[:, 1]`` on the way (in place on the interleaved copy: no extra full-size buffer).
    The channels are interleaved by ``stack`` + ``reshape`` (no index gather); channels-last inputs
    give a channels-last output.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"a and b must be (B, C, H, W) of the same shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    n, c, h, w = a.shape
    if scale is not None and scale.shape != (n, 2, h, w):
        raise ValueError(f"scale must be {(n, 2, h, w)}, got {tuple(scale.shape)}")
    if a.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous():
        # Stack in NHWC order so the result is channels-last without a further copy.
        z = torch.stack([a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)], dim=-1)  # (B, H, W, C, 2)
        if scale is not None:
            z.mul_(scale.permute(0, 2, 3, 1).unsqueeze(3))
        return z.reshape(n, h, w, 2 * c).permute(0, 3, 1, 2)
    z = torch.stack([a, b], dim=2)  # (B, C, 2, H, W)
    if scale is not None:
        z.mul_(scale.unsqueeze(1))  # in place on the fresh stack: no second 2C-channel buffer
    return z.reshape(n, 2 * c, h, w)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """``(..., C, h, w) -> (..., h*w, C)`` with a unit stride along ``C``.

    The fused CPU/GPU attention kernels need a contiguous last dimension; without it
    ``scaled_dot_product_attention`` falls back to the math path, which materialises the
    ``n x n`` attention map. A copy is made only when the layout requires it (NCHW input);
    channels-last input is already token-major.
    """
    t = x.flatten(-2).transpose(-1, -2)
    return t if t.stride(-1) == 1 else t.contiguous()


def grid_cross_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Single-head spatial cross-attention of one query map against ``M`` key/value maps.

    Every spatial position is a token of dimension ``C``. For each ``m``:
    ``out_m = softmax(Q K_m^T / sqrt(C)) V_m`` (softmax over the ``n = h*w`` key positions).

    Args:
        query: ``(B, C, h, w)``.
        keys, values: ``(B, M, C, h, w)``.

    Returns:
        ``(B, M, C, h, w)``. Uses :func:`torch.nn.functional.scaled_dot_product_attention` (one call
        for all ``M``, treated as heads) on token-major inputs, so the fused kernels run and the
        ``n x n`` attention map is never materialised (memory linear in ``n``).
    """
    if query.ndim != 4 or keys.ndim != 5 or keys.shape != values.shape:
        raise ValueError(
            "query must be (B, C, h, w) and keys/values (B, M, C, h, w) of the same shape; got "
            f"{tuple(query.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}"
        )
    b, m, c, h, w = keys.shape
    if query.shape != (b, c, h, w):
        raise ValueError(f"query shape {tuple(query.shape)} does not match keys {tuple(keys.shape)}")
    q = _tokens(query).unsqueeze(1).expand(b, m, h * w, c)
    out = F.scaled_dot_product_attention(q, _tokens(keys), _tokens(values))  # (B, M, n, C); scale 1/sqrt(C)
    return out.transpose(2, 3).reshape(b, m, c, h, w)


# ---------------------------------------------------------------------------------------------
# Adaptive pooling that exports
# ---------------------------------------------------------------------------------------------


def adaptive_pool_matrix(n_in: int, n_out: int, *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n_out, n_in)`` matrix ``P`` with ``P @ x`` the 1-D adaptive average pooling of ``x``.

    Bin ``i`` averages ``x[floor(i n_in / n_out) : ceil((i + 1) n_in / n_out)]``, PyTorch's definition
    of adaptive pooling (bins may overlap when ``n_in`` is not a multiple of ``n_out``). Built from
    ``arange`` and integer arithmetic only, so ``n_in`` and ``n_out`` may be symbolic while exporting.
    """
    i = torch.arange(n_out, device=device)
    start = torch.div(i * n_in, n_out, rounding_mode="floor")
    end = torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    j = torch.arange(n_in, device=device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


def adaptive_avg_pool2d(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling of ``x (B, C, H, W)`` to ``size = (h, w)``: ``(B, C, h, w)``.

    Eager: :func:`torch.nn.functional.adaptive_avg_pool2d` (a no-op when the size already matches).
    While exporting (:func:`torch.compiler.is_exporting`): ``P_h @ x @ P_w^T`` with
    :func:`adaptive_pool_matrix`, the same average as matrix products, because ONNX has no adaptive
    pooling and the exporter's lowering freezes the kernel size at the example input's size (a
    graph exported at one size then fails at another). Equal to the eager result within float
    rounding (tested).
    """
    if torch.compiler.is_exporting():
        ph = adaptive_pool_matrix(x.shape[-2], size[0], device=x.device, dtype=x.dtype)
        pw = adaptive_pool_matrix(x.shape[-1], size[1], device=x.device, dtype=x.dtype)
        return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.adaptive_avg_pool2d(x, size)
