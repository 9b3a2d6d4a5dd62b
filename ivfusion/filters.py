"""Small differentiable filters over ``(B, C, H, W)`` tensors, shared by the classical
methods, the metrics, the training losses and the networks.

Every function is pure torch (runs on CPU and CUDA, differentiable, batched) and filters
each channel independently (depth-wise). Padding modes: ``"zero"``, ``"reflect"``,
``"replicate"`` (output has the input's size) or ``"valid"`` (no padding, output shrinks).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "SOBEL_X",
    "SOBEL_Y",
    "gaussian_kernel1d",
    "pad2d",
    "filter2d",
    "separable_filter2d",
    "gaussian_blur2d",
    "local_variance2d",
    "box_sum2d",
    "box_mean2d",
    "sobel",
    "ssim_map",
    "ssim_from_moments",
    "fft_filter2d",
    "next_fast_len",
]

#: Sobel kernels as cross-correlation (how ``conv2d`` applies them), MODELS.md section 0.
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))

_PAD_MODES = {"zero": "constant", "reflect": "reflect", "replicate": "replicate"}


def gaussian_kernel1d(
    size: int,
    sigma: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Sampled Gaussian ``exp(-t^2 / (2 sigma^2))`` at integer offsets, normalised to sum 1.

    ``size`` taps centred on 0 (for even sizes the centre falls between two taps).
    """
    if size < 1 or sigma <= 0:
        raise ValueError(f"gaussian kernel needs size >= 1 and sigma > 0, got {size}, {sigma}")
    t = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2.0
    k = torch.exp(-(t * t) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype)


def pad2d(x: torch.Tensor, pad: Tuple[int, int, int, int], mode: str) -> torch.Tensor:
    """Pad ``(left, right, top, bottom)`` with ``mode`` in zero/reflect/replicate/valid."""
    if mode == "valid" or not any(pad):
        return x
    try:
        torch_mode = _PAD_MODES[mode]
    except KeyError:
        raise ValueError(f"padding must be one of zero, reflect, replicate, valid; got {mode!r}") from None
    return F.pad(x, pad, mode=torch_mode)


def filter2d(x: torch.Tensor, kernel: torch.Tensor, padding: str = "zero") -> torch.Tensor:
    """Depth-wise 2-D cross-correlation of every channel of ``x`` with one ``(kh, kw)`` kernel.

    ``x`` is ``(B, C, H, W)``. With a same-size padding mode the output is ``(B, C, H, W)``
    (for even kernel sizes the extra row/column of padding goes bottom/right).
    """
    kh, kw = kernel.shape[-2:]
    c = x.shape[1]
    x = pad2d(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2), padding)
    weight = kernel.to(dtype=x.dtype, device=x.device).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, weight, groups=c)


def separable_filter2d(
    x: torch.Tensor, kernel_y: torch.Tensor, kernel_x: torch.Tensor, padding: str = "zero"
) -> torch.Tensor:
    """Depth-wise separable filter: ``kernel_y`` along H (column), then ``kernel_x`` along W (row)."""
    kh, kw = kernel_y.numel(), kernel_x.numel()
    c = x.shape[1]
    x = pad2d(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2), padding)
    wy = kernel_y.to(dtype=x.dtype, device=x.device).reshape(1, 1, kh, 1).expand(c, 1, kh, 1)
    wx = kernel_x.to(dtype=x.dtype, device=x.device).reshape(1, 1, 1, kw).expand(c, 1, 1, kw)
    return F.conv2d(F.conv2d(x, wy, groups=c), wx, groups=c)


def gaussian_blur2d(x: torch.Tensor, size: int, sigma: float, padding: str = "zero") -> torch.Tensor:
    """Normalised ``size x size`` Gaussian blur (separable)."""
    k = gaussian_kernel1d(size, sigma, dtype=x.dtype, device=x.device)
    return separable_filter2d(x, k, k, padding)


def local_variance2d(x: torch.Tensor, size: int, sigma: float, padding: str = "reflect") -> torch.Tensor:
    """Window-weighted local variance ``max(g * x^2 - (g * x)^2, 0)`` under a normalised
    ``size x size`` Gaussian ``g`` (std ``sigma``), per channel of a ``(B, C, H, W)`` tensor.

    Same shape as ``x`` for the same-size padding modes. Differentiable (the clamp passes no
    gradient where the variance rounds below zero).
    """
    k = gaussian_kernel1d(size, sigma, dtype=x.dtype, device=x.device)
    c = x.shape[1]
    mu, ex2 = separable_filter2d(torch.cat([x, x * x], dim=1), k, k, padding).split(c, dim=1)
    return (ex2 - mu * mu).clamp_min(0.0)


def _box_sum_1d(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    # Sum over [i - r, i + r] clipped to the image: zero-pad by r, take a cumulative sum with a
    # leading zero, and difference it at distance 2r + 1. O(1) per pixel whatever the radius.
    n = x.shape[dim]
    pad = [0, 0] * (x.ndim - 1 - (dim % x.ndim)) + [radius + 1, radius]
    c = torch.cumsum(F.pad(x, pad), dim=dim)  # c[k] = sum of padded x[:k]
    return c.narrow(dim, 2 * radius + 1, n) - c.narrow(dim, 0, n)


def box_sum2d(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the ``(2r+1) x (2r+1)`` window around each pixel, the window clipped at the border.

    Cost is independent of ``radius`` (cumulative sums); accumulates in float64 for float32 input
    so large windows keep their precision.
    """
    acc = x.double() if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else x
    out = _box_sum_1d(_box_sum_1d(acc, radius, x.ndim - 2), radius, x.ndim - 1)
    return out.to(x.dtype)


def _window_counts(n: int, radius: int, device, dtype) -> torch.Tensor:
    i = torch.arange(n, device=device)
    return ((i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1).to(dtype)


def box_mean2d(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the ``(2r+1)^2`` window, counting only pixels inside the image (He et al.'s box filter)."""
    h, w = x.shape[-2:]
    count = _window_counts(h, radius, x.device, x.dtype)[:, None] * _window_counts(w, radius, x.device, x.dtype)
    return box_sum2d(x, radius) / count


def sobel(x: torch.Tensor, padding: str = "zero", normalized: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sobel responses ``(S_x * x, S_y * x)`` (cross-correlation with :data:`SOBEL_X`, :data:`SOBEL_Y`).

    Computed as separable shifted differences (a ``[1, 2, 1]`` smoothing and a central difference),
    which is exact for integer-valued images and faster than a depth-wise ``conv2d``, notably in
    float64 on CPU. ``normalized`` divides both kernels by 8 (kornia's ``SpatialGradient``).
    """
    p = pad2d(x, (1, 1, 1, 1), padding)
    diff = p[..., :, 2:] - p[..., :, :-2]  # horizontal central difference, (H + 2, W)
    smooth = p[..., :, :-2] + 2.0 * p[..., :, 1:-1] + p[..., :, 2:]  # horizontal [1, 2, 1]
    gx = diff[..., :-2, :] + 2.0 * diff[..., 1:-1, :] + diff[..., 2:, :]
    gy = smooth[..., :-2, :] - smooth[..., 2:, :]
    if normalized:
        gx, gy = gx / 8.0, gy / 8.0
    return gx, gy


def ssim_from_moments(
    s_x: torch.Tensor,
    s_y: torch.Tensor,
    s_xx: torch.Tensor,
    s_yy: torch.Tensor,
    s_xy: torch.Tensor,
    *,
    n: float = 1.0,
    cov_scale: float = 1.0,
    c1: float,
    c2: float,
    consume: bool = False,
) -> torch.Tensor:
    """The SSIM ratio from local window sums (``n`` = samples per window) or local means (``n = 1``).

    With means ``m = s / n`` and variances ``cov_scale (s_xx / n - m^2)``, every factor of
    ``(2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)(sx^2 + sy^2 + C2))`` scales by ``1 / n^2``,
    so the ratio is evaluated on the sums directly: for integer data the differences
    ``n s_xx - s_x^2`` are then exact (no cancellation error). ``cov_scale = N / (N - 1)`` gives
    sample covariances.

    ``consume=True`` (scoring, no autograd) computes in place in ``s_y``, ``s_yy`` and ``s_xy``,
    which are overwritten; the result is bit-identical, with four image-sized temporaries fewer.
    """
    n2 = n * n
    pxy = s_x * s_y
    pxx = s_x * s_x
    if not consume:
        pyy = s_y * s_y
        num = (2.0 * pxy + c1 * n2) * (2.0 * cov_scale * (n * s_xy - pxy) + c2 * n2)
        den = (pxx + pyy + c1 * n2) * (cov_scale * (n * (s_xx + s_yy) - pxx - pyy) + c2 * n2)
        return num / den
    # the same operations in the same order (up to commuting + and *, exact in IEEE arithmetic),
    # in place; the training losses keep the form above, whose intermediates autograd needs
    pyy = s_y.square_()
    num = s_xy.mul_(n).sub_(pxy).mul_(2.0 * cov_scale).add_(c2 * n2).mul_(pxy.mul_(2.0).add_(c1 * n2))
    den2 = s_yy.add_(s_xx).mul_(n).sub_(pxx).sub_(pyy).mul_(cov_scale).add_(c2 * n2)
    return num.div_(pyy.add_(pxx).add_(c1 * n2).mul_(den2))


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    window: str = "gaussian",
    size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: str = "zero",
    sample_covariance: bool = False,
) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004) of ``x`` and ``y``, both ``(B, C, H, W)``.

    Args:
        window: ``"gaussian"`` (``size`` taps, std ``sigma``, normalised) or ``"uniform"``.
        data_range: ``L`` in ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``.
        padding: how local statistics treat the border (``"valid"`` shrinks the map).
        sample_covariance: scale variances and covariance by ``N / (N - 1)`` (scikit-image's
            ``use_sample_covariance``; only meaningful for the uniform window).

    Returns:
        The SSIM map, ``(B, C, H, W)`` (smaller with ``"valid"``), values in [-1, 1].
    """
    if window == "gaussian":
        k = gaussian_kernel1d(size, sigma, dtype=x.dtype, device=x.device)
    elif window == "uniform":
        k = torch.full((size,), 1.0 / size, dtype=x.dtype, device=x.device)
    else:
        raise ValueError(f"window must be 'gaussian' or 'uniform', got {window!r}")

    # One depth-wise pass over the five statistics stacked along channels.
    c = x.shape[1]
    stats = separable_filter2d(torch.cat([x, y, x * x, y * y, x * y], dim=1), k, k, padding)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    n = size * size
    return ssim_from_moments(
        mu_x, mu_y, e_xx, e_yy, e_xy,
        cov_scale=n / (n - 1.0) if sample_covariance else 1.0,
        c1=(k1 * data_range) ** 2,
        c2=(k2 * data_range) ** 2,
    )


def next_fast_len(n: int) -> int:
    """Smallest ``m >= n`` of the form ``2^a 3^b 5^c`` (a size every FFT backend handles quickly)."""
    if n < 1:
        raise ValueError(f"next_fast_len needs n >= 1, got {n}")
    best = 1 << (n - 1).bit_length()  # a power of two is always a candidate
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def fft_filter2d(x: torch.Tensor, kernel: torch.Tensor, padding: str = "valid") -> torch.Tensor:
    """Depth-wise 2-D cross-correlation of every channel of ``x`` with one ``(kh, kw)`` kernel, by FFT.

    Same result as :func:`filter2d` (up to floating-point round-off, relative to the largest input
    value) at a cost independent of the kernel size, which pays off for large kernels and for
    ``float64`` (CPU convolutions in double precision are slow). ``x`` is ``(B, C, H, W)``; with the
    default ``"valid"`` the output is ``(B, C, H - kh + 1, W - kw + 1)``.
    """
    kh, kw = kernel.shape[-2:]
    if padding != "valid":
        x = pad2d(x, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2), padding)
    h, w = x.shape[-2:]
    if h < kh or w < kw:
        raise ValueError(f"fft_filter2d: a {kh}x{kw} kernel does not fit a {h}x{w} image")
    # Circular correlation on a zero-padded grid; the valid outputs never wrap around, so padding
    # to a fast length changes nothing but the speed.
    fh, fw = next_fast_len(h), next_fast_len(w)
    spec = torch.fft.rfft2(x, s=(fh, fw))
    kspec = torch.fft.rfft2(kernel.to(dtype=x.dtype, device=x.device), s=(fh, fw))
    out = torch.fft.irfft2(spec * kspec.conj(), s=(fh, fw))
    return out[..., : h - kh + 1, : w - kw + 1]
