"""FISCNet: frequency integration and spatial compensation (MODELS.md section 3).

Zheng, Zhou, Huang, Zhao, "Frequency Integration and Spatial Compensation Network for Infrared and
Visible Image Fusion", Information Fusion 2024, art. 102359.

The visible image's Fourier amplitude is combined with the phases of both inputs (:func:`phase_mix`);
three calibration stages then correct the fused feature stream with the visible and infrared streams
(EdgeBlock -> [phase mixing] -> Interaction), and a small head (:class:`Refine`) maps it back to one channel.
Module paths equal the official checkpoint's key names, so its ``params`` dict loads with ``strict=True``.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import FusionNet, register_model
from .blocks import conv1x1, conv3x3, float32_head

__all__ = [
    "FISCNet",
    "phase_mix",
    "TapConv3x3",
    "CDC",
    "EdgeBlock",
    "HINBlock",
    "DenseBlock",
    "DenseBlockMscale",
    "InvConv2dLU",
    "InvBlock",
    "Interaction",
    "CalibrationStage",
    "CALayer",
    "Refine",
    "PLUS_TAPS",
    "CROSS_TAPS",
]

#: Row-major positions in a 3x3 kernel of the five taps of the "plus" (N, W, C, E, S) and
#: "cross" (NW, NE, C, SW, SE) kernels of the CDC.
PLUS_TAPS: Tuple[int, ...] = (1, 3, 4, 5, 7)
CROSS_TAPS: Tuple[int, ...] = (0, 2, 4, 6, 8)


def _fp32_region(x: torch.Tensor) -> ContextManager:
    # FFT blocks run in float32 even under autocast (C-FIS-4): cuFFT half only supports powers of
    # two and the phase arithmetic is precision-sensitive.
    if x.device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def phase_mix(a: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Fourier phase mixing ``|IFFT2(|FFT2(a)| * (exp(i angle FFT2(p1)) + exp(i angle FFT2(p2))))|``.

    Per channel, 2-D DFT over the last two axes (unnormalised forward, ``1/(HW)`` inverse). Inputs of
    equal shape ``(..., H, W)``; output the same shape, real, ``>= 0``, float32 (float64 for float64
    input; computed in float32 even under autocast or for half inputs).
    ``phase_mix(v, v, v) == 2 * v`` for ``v >= 0``.
    """
    if a.shape != p1.shape or a.shape != p2.shape:
        raise ValueError(
            f"phase_mix: a, p1, p2 must have the same shape, got {tuple(a.shape)}, {tuple(p1.shape)}, "
            f"{tuple(p2.shape)}"
        )
    dtype = torch.promote_types(a.dtype, torch.float32)  # float32, or float64 for float64 input
    with _fp32_region(a):
        amp = torch.fft.fft2(a.to(dtype)).abs()
        ph1 = torch.fft.fft2(p1.to(dtype)).angle()
        ph2 = torch.fft.fft2(p2.to(dtype)).angle()
        spectrum = torch.complex(amp * (torch.cos(ph1) + torch.cos(ph2)), amp * (torch.sin(ph1) + torch.sin(ph2)))
        return torch.fft.ifft2(spectrum).abs()


# --------------------------------------------------------------------------------------------------
# EdgeBlock with the cross central-difference convolution (MODELS.md 3.2)


class TapConv3x3(nn.Module):
    """3x3 convolution (zero padding 1, no bias) with five learnable taps at ``taps``, others fixed at 0,
    and central difference: ``conv3x3(x, K) - theta * conv1x1(x, sum(K))``.

    The taps are stored as the ``(cout, cin, 1, 5)`` weight of ``self.conv``, a ``Conv2d`` that is never
    called itself: it only holds the tensor, so its default init and the checkpoint layout apply.
    """

    def __init__(self, cin: int, cout: int, taps: Sequence[int], theta: float = 0.8) -> None:
        super().__init__()
        if len(taps) != 5:
            raise ValueError(f"taps must list 5 positions in 0..8, got {taps!r}")
        self.taps = tuple(int(t) for t in taps)
        self.theta = float(theta)
        self.conv = nn.Conv2d(cin, cout, (1, 5), bias=False)

    def kernel(self) -> torch.Tensor:
        """The dense ``(cout, cin, 3, 3)`` kernel (without the central-difference term)."""
        w = self.conv.weight
        cout, cin = w.shape[:2]
        idx = torch.tensor(self.taps, device=w.device)
        return w.new_zeros(cout, cin, 9).index_copy(2, idx, w.reshape(cout, cin, 5)).view(cout, cin, 3, 3)

    def difference_kernel(self) -> torch.Tensor:
        """The ``(cout, cin, 3, 3)`` kernel of the whole operation: :meth:`kernel` with
        ``theta * sum(K)`` taken off its centre tap (a 1x1 convolution is a 3x3 one with only a centre)."""
        k = self.kernel()
        if self.theta == 0.0:
            return k
        centre = torch.zeros_like(k)
        centre[:, :, 1, 1] = self.conv.weight.sum(dim=(2, 3))
        return k - self.theta * centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x, self.kernel(), padding=1)
        if self.theta != 0.0:
            out = out - self.theta * F.conv2d(x, self.conv.weight.sum(dim=(2, 3), keepdim=True))
        return out


class CDC(nn.Module):
    """Cross central-difference convolution: ``s * Plus(x) + (1 - s) * Cross(x) + x``, ``s = sigmoid(h)``.

    ``h`` (``HP_branch``, shape ``(1,)``) is initialised to 0 (C-FIS-1).
    """

    def __init__(self, channels: int, theta: float = 0.8) -> None:
        super().__init__()
        self.h_conv = TapConv3x3(channels, channels, PLUS_TAPS, theta)
        self.d_conv = TapConv3x3(channels, channels, CROSS_TAPS, theta)
        self.HP_branch = nn.Parameter(torch.zeros(1))

    def kernel(self) -> torch.Tensor:
        """The single ``(C, C, 3, 3)`` kernel equal to the whole block: both branches, their central
        differences, the gate and the identity (``+1`` on each channel's own centre tap) are linear in
        ``x``, so one convolution computes ``s * Plus(x) + (1 - s) * Cross(x) + x`` (one instead of four;
        equal up to float rounding, and differentiable in every parameter)."""
        s = torch.sigmoid(self.HP_branch).to(self.h_conv.conv.weight.dtype)
        k = s * self.h_conv.difference_kernel() + (1 - s) * self.d_conv.difference_kernel()
        eye = torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
        return k + F.pad(eye[:, :, None, None], (1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), padding=1)


class EdgeBlock(nn.Module):
    """``x = process(input)`` (3x3, cin -> width); ``out = Res(x) + CDC(x)`` with ``Res`` = conv-ReLU-conv."""

    def __init__(self, cin: int, width: int = 16) -> None:
        super().__init__()
        self.process = conv3x3(cin, width)
        self.Res = nn.Sequential(conv3x3(width, width), nn.ReLU(inplace=True), conv3x3(width, width))
        self.CDC = CDC(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.process(x)
        return self.Res(x) + self.CDC(x)


# --------------------------------------------------------------------------------------------------
# InvBlock and its multi-scale dense blocks (MODELS.md 3.4)


class HINBlock(nn.Module):
    """Half-instance-norm residual block: conv3x3 -> IN on the first half of the channels -> LReLU(0.1)
    -> conv3x3 -> LReLU(0.1), plus a 1x1 identity projection of the input."""

    def __init__(self, cin: int, cout: int, slope: float = 0.1) -> None:
        super().__init__()
        self.identity = conv1x1(cin, cout)
        self.conv_1 = conv3x3(cin, cout)
        self.conv_2 = conv3x3(cout, cout)
        self.norm = nn.InstanceNorm2d(cout // 2, affine=True)
        self.slope = slope

    def _half_norm(self, x: torch.Tensor) -> torch.Tensor:
        """Instance norm (affine) of the first ``norm.num_features`` channels of ``x`` ``(N, C, H, W)``,
        the others unchanged, as one per-channel ``(x - mean) * scale + bias`` over all channels (mean 0,
        scale 1, bias 0 on the others): no channel slices or concatenation, so a channels-last ``x``
        stays channels-last. A single pixel (the x0.25 branch of a < 8x8 input) normalises to 0,
        leaving the affine bias."""
        half, rest = self.norm.num_features, x.shape[1] - self.norm.num_features
        stats_dtype = torch.promote_types(x.dtype, torch.float32)  # statistics never in half precision
        var, mean = torch.var_mean(x[:, :half].to(stats_dtype), dim=(2, 3), keepdim=True, unbiased=False)
        scale = self.norm.weight.to(stats_dtype)[None, :, None, None] * torch.rsqrt(var + self.norm.eps)
        bias = self.norm.bias.to(stats_dtype)[None, :, None, None].expand_as(mean)
        n = x.shape[0]
        mean = torch.cat([mean, mean.new_zeros(n, rest, 1, 1)], dim=1).to(x.dtype)
        scale = torch.cat([scale, scale.new_ones(n, rest, 1, 1)], dim=1).to(x.dtype)
        bias = torch.cat([bias, bias.new_zeros(n, rest, 1, 1)], dim=1).to(x.dtype)
        # Not addcmul(bias, ...): its output takes the layout of the (N, C, 1, 1) bias, not of x.
        return ((x - mean) * scale).add_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self._half_norm(self.conv_1(x)), self.slope)
        out = F.leaky_relu(self.conv_2(out), self.slope)
        return out + self.identity(x)


class DenseBlock(nn.Module):
    """``x1 = LReLU(HIN(x))``, ``x2 = LReLU(HIN(x1))``, ``out = LReLU(conv3x3([x, x1, x2]))`` (slope 0.2).

    Every convolution is Xavier-normal scaled by 0.1 with zero bias.
    """

    def __init__(self, cin: int, cout: int, growth: int = 16, init_scale: float = 0.1) -> None:
        super().__init__()
        self.conv1 = HINBlock(cin, growth)
        self.conv2 = HINBlock(growth, growth)
        self.conv3 = conv3x3(cin + 2 * growth, cout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                m.weight.data.mul_(init_scale)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.leaky_relu(self.conv1(x), 0.2)
        x2 = F.leaky_relu(self.conv2(x1), 0.2)
        return F.leaky_relu(self.conv3(torch.cat([x, x1, x2], dim=1)), 0.2)


class DenseBlockMscale(nn.Module):
    """One :class:`DenseBlock` applied at scales 1, 0.5, 0.25, the three outputs weighted per channel
    (global pooling + 1x1 convs) and merged by a 1x1 conv.

    Downsampling uses ``scale_factor`` (output ``floor(H*s)``, source coordinates mapped with the exact
    factor); upsampling back uses the target size; bilinear, ``align_corners=False``.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.ops = DenseBlock(cin, cout)
        self.fusepool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv1x1(cout, cout), nn.LeakyReLU(0.1))
        self.fc1 = nn.Sequential(conv1x1(cout, cout), nn.LeakyReLU(0.1))
        self.fc2 = nn.Sequential(conv1x1(cout, cout), nn.LeakyReLU(0.1))
        self.fc3 = nn.Sequential(conv1x1(cout, cout), nn.LeakyReLU(0.1))
        self.fuse = conv1x1(3 * cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x2 = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        x4 = F.interpolate(x, scale_factor=0.25, mode="bilinear", align_corners=False)
        y1 = self.ops(x)
        y2 = F.interpolate(self.ops(x2), size=size, mode="bilinear", align_corners=False)
        y4 = F.interpolate(self.ops(x4), size=size, mode="bilinear", align_corners=False)
        g = self.fusepool(y1 + y2 + y4)
        return self.fuse(torch.cat([y1 * self.fc1(g), y2 * self.fc2(g), y4 * self.fc3(g)], dim=1))


class InvConv2dLU(nn.Module):
    """Invertible 1x1 convolution ``W = P L (U + diag(sign * exp(log_s)))`` (Glow's LU form).

    ``L`` = strictly-lower part of ``lower`` + identity, ``U`` = strictly-upper part of ``upper``.
    ``P`` (``p``) and ``sign`` (``sign_s``) are buffers. At init ``W`` equals ``Q`` of the QR
    decomposition of a standard-normal matrix (orthogonal).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(diag))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(diag.abs()))

    def weight(self) -> torch.Tensor:
        """The ``(C, C)`` matrix ``W``."""
        eye = torch.eye(self.p.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight()
        return F.conv2d(x, w.to(x.dtype)[:, :, None, None])


class InvBlock(nn.Module):
    """Affine coupling after an invertible 1x1 conv (forward direction only):

    ``x = W x``; ``y1 = x1 + F(x2)``; ``s = clamp * (2 sigmoid(H(y1)) - 1)``; ``y2 = x2 exp(s) + G(y1)``.
    """

    def __init__(self, channels: int = 32, split: int = 16, clamp: float = 0.8) -> None:
        super().__init__()
        self.split = split
        self.clamp = clamp
        self.invconv = InvConv2dLU(channels)
        self.F = DenseBlockMscale(channels - split, split)
        self.G = DenseBlockMscale(split, channels - split)
        self.H = DenseBlockMscale(split, channels - split)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The two halves of the invertible 1x1 convolution as two convolutions: each output is then a
        # whole tensor (a channel slice of a channels-last tensor is not channels-last, and every
        # convolution would copy it).
        w = self.invconv.weight().to(x.dtype)[:, :, None, None]
        x1, x2 = F.conv2d(x, w[: self.split]), F.conv2d(x, w[self.split :])
        y1 = x1 + self.F(x2)
        s = self.clamp * (torch.sigmoid(self.H(y1)) * 2 - 1)
        y2 = x2 * torch.exp(s) + self.G(y1)
        return torch.cat([y1, y2], dim=1)


# --------------------------------------------------------------------------------------------------
# Interaction (spatial compensation, MODELS.md 3.3)


def _spatial_attention(width: int) -> nn.Sequential:
    return nn.Sequential(
        conv3x3(width, width // 2), nn.LeakyReLU(0.1), conv3x3(width // 2, width), nn.Sigmoid()
    )


def _channel_attention(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        conv1x1(channels, hidden), nn.LeakyReLU(0.1), conv1x1(hidden, channels), nn.Sigmoid()
    )


class Interaction(nn.Module):
    """Correct the fused stream ``f`` with the visible ``v`` and infrared ``i`` streams (each ``(N,C,H,W)``).

    Per modality ``m``: ``a = SA(m - f)``, ``c = [f + a f, f]``, ``w = CA(std_HW(c) + mean_HW(c))``,
    ``o_m = f + post_m(w c)``; then ``out = post(InvBlock([o_v, o_i]))``.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.spa_att_vis = _spatial_attention(width)
        self.spa_att_inf = _spatial_attention(width)
        self.cha_att_vis = _channel_attention(2 * width, width // 2)
        self.cha_att_inf = _channel_attention(2 * width, width // 2)
        self.post_vis = conv3x3(2 * width, width)
        self.post_inf = conv3x3(2 * width, width)
        self.fused = InvBlock(2 * width, width)
        self.post = conv3x3(2 * width, width)

    @staticmethod
    def _compensate(
        f: torch.Tensor, m: torch.Tensor, spa: nn.Module, cha: nn.Module, post: nn.Module
    ) -> torch.Tensor:
        r = f + spa(m - f) * f
        c = torch.cat([r, f], dim=1)
        mean = c.mean(dim=(2, 3), keepdim=True)
        std = (c - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()  # population std
        return f + post(cha(std + mean) * c)

    def forward(self, f: torch.Tensor, v: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        o_v = self._compensate(f, v, self.spa_att_vis, self.cha_att_vis, self.post_vis)
        o_i = self._compensate(f, i, self.spa_att_inf, self.cha_att_inf, self.post_inf)
        return self.post(self.fused(torch.cat([o_v, o_i], dim=1)))


class CalibrationStage(nn.Module):
    """One calibration stage: EdgeBlocks ``vis``, ``inf``, ``fused`` and an :class:`Interaction`.

    Stage 1 (``first=True``) applies ``fused`` to all three inputs and skips the phase mixing
    (``vis``/``inf`` exist only so official weights load, C-FIS-2); later stages run each stream through
    its own EdgeBlock and mix ``f`` with the phases of ``v`` and ``i``.
    Returns ``(f_k, v, i)`` — the modality streams carry the EdgeBlock outputs forward.
    """

    def __init__(self, cin: int, width: int = 16, first: bool = False) -> None:
        super().__init__()
        self.first = first
        self.vis = EdgeBlock(cin, width)
        self.inf = EdgeBlock(cin, width)
        self.fused = EdgeBlock(cin, width)
        self.interaction = Interaction(width)

    def forward(
        self, f: torch.Tensor, v: torch.Tensor, i: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.first:
            f, v, i = self.fused(f), self.fused(v), self.fused(i)
        else:
            f, v, i = self.fused(f), self.vis(v), self.inf(i)
            # FFT output is contiguous; give it the streams' memory format (channels-last on the CPU
            # path) once here rather than at every convolution that follows.
            f = phase_mix(f, v, i).to(v.dtype, memory_format=_memory_format(v))
        return self.interaction(f, v, i), v, i


# --------------------------------------------------------------------------------------------------
# Reconstruction head (MODELS.md 3.5)


class CALayer(nn.Module):
    """``p = GAP(conv(ReLU(conv(x))))``, ``z = sigmoid(MLP(p))``, ``out = x + z * p``.

    The attention scales the pooled vector, so the layer adds a per-channel constant to ``x``
    (reproduced literally, FACT(code)).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.process = nn.Sequential(conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels))
        self.conv_du = nn.Sequential(
            conv1x1(channels, channels // reduction),
            nn.ReLU(inplace=True),
            conv1x1(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.process(x).mean(dim=(2, 3), keepdim=True)
        return x + self.conv_du(p) * p


class Refine(nn.Module):
    """``conv_in`` (3x3) -> two :class:`CALayer` -> ``conv_last`` (3x3, width -> cout), no activation."""

    def __init__(self, width: int = 16, cout: int = 1) -> None:
        super().__init__()
        self.conv_in = conv3x3(width, width)
        self.process = nn.Sequential(CALayer(width), CALayer(width))
        self.conv_last = conv3x3(width, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return float32_head(self.conv_last, self.process(self.conv_in(x)))


# --------------------------------------------------------------------------------------------------


@register_model(
    "fiscnet",
    paper=(
        "N. Zheng, M. Zhou, J. Huang, F. Zhao, 'Frequency Integration and Spatial Compensation Network "
        "for Infrared and Visible Image Fusion', Information Fusion, art. 102359, 2024"
    ),
    paper_url="https://doi.org/10.1016/j.inffus.2024.102359",
    cpu_bytes_per_pixel=2750,  # measured 2.48 KB/px as fuse() runs it (benchmarks/README.md, CPU memory)
    size_multiple=1,
    description="keeps the visible scene's look, takes bright targets from the infrared through the Fourier phase, then restores texture; frequency integration + spatial compensation",
    tiling_halo=None,  # whole-image FFTs and global pooling
    half_precision=True,  # FFT parts are forced to float32 (C-FIS-4)
    cpu_bf16=False,  # bf16 vs fp32, validation pairs: p99 1.1-5.0 grey levels (max 15) (benchmarks/precision.py)
    forward_options={},
)
class FISCNet(FusionNet):
    """FISCNet (324,290 parameters, 309,568 used in forward).

    ``forward(ir, vis_y)``: ``(N,1,H,W)`` in [0, 1], ``H, W >= 4`` -> ``clamp(y, 0, 1)``.
    :meth:`forward_raw` gives the unclamped ``y``, :meth:`phase_mix_input` the input-level mixing ``f0``.
    """

    #: Parameter-name prefixes that exist only for strict loading of the official weights and never
    #: take part in the forward pass (C-FIS-2).
    unused_parameter_prefixes: Tuple[str, ...] = ("correction1.vis.", "correction1.inf.")

    def __init__(self, n_feat: int = 16) -> None:
        super().__init__()
        self.correction1 = CalibrationStage(1, n_feat, first=True)
        self.correction2 = CalibrationStage(n_feat, n_feat)
        self.correction3 = CalibrationStage(n_feat, n_feat)
        self.reconstruction = Refine(n_feat, 1)

    @staticmethod
    def _check(ir: torch.Tensor, vis_y: torch.Tensor) -> None:
        if ir.ndim != 4 or ir.shape[1] != 1 or vis_y.shape != ir.shape:
            raise ValueError(
                f"FISCNet expects ir and vis_y of the same shape (B, 1, H, W), got {tuple(ir.shape)} and "
                f"{tuple(vis_y.shape)}"
            )
        if min(ir.shape[-2:]) < 4:
            raise ValueError(f"FISCNet needs H, W >= 4, got {tuple(ir.shape[-2:])}")

    def phase_mix_input(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        """Input-level frequency integration ``f0 = phase_mix(vis_y; vis_y, ir)``, ``(N,1,H,W)``, float32, >= 0."""
        self._check(ir, vis_y)
        return phase_mix(vis_y, vis_y, ir)

    def forward_raw(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        """The network output ``y`` before the clamp to [0, 1], ``(N,1,H,W)``."""
        f0 = self.phase_mix_input(ir, vis_y).to(vis_y.dtype)
        f, v, i = self.correction1(f0, vis_y, ir)
        f, v, i = self.correction2(f, v, i)
        f, _, _ = self.correction3(f, v, i)
        return self.reconstruction(f)

    def fuse_aligned(self, ir: torch.Tensor, vis_y: torch.Tensor) -> torch.Tensor:
        return self.forward_raw(ir, vis_y).clamp(0.0, 1.0)
