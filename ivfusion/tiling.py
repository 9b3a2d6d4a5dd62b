"""Run a fusion function over overlapping tiles so memory stays bounded on large images.

A fusion function maps aligned ``(B, C, H, W)`` tensors to one ``(B, C_out, H, W)`` tensor. :func:`tiled_apply`
cuts the inputs into overlapping tiles, pads each tile to the network's size multiple with
reflection, runs the function and blends the tile outputs with a smooth window (a raised-cosine
ramp across each overlap, flat elsewhere, no ramp at the image border) so there are no seams.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "pad_to_multiple",
    "tile_starts",
    "blend_window",
    "tiled_apply",
    "auto_tile_size",
]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad ``x`` ``(B, C, H, W)`` at the bottom and right so H and W are multiples of ``multiple``.

    Reflect padding (MODELS.md 1.4); replicate where the pad is not smaller than the
    dimension (reflection needs ``pad < size``). Returns the padded tensor and the original
    ``(H, W)`` to crop back to.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    # While exporting (ONNX, torch.export) H and W are symbolic: always pad (a zero pad is a no-op)
    # so that no branch on the input size is frozen into the graph.
    if not torch.compiler.is_exporting() and ph == 0 and pw == 0:
        return x, (h, w)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` overlap.

    The last tile ends exactly at ``length``; a dimension no longer than ``tile`` gets one tile.
    """
    if tile >= length:
        return [0]
    if overlap >= tile:
        raise ValueError(f"tile_overlap ({overlap}) must be smaller than tile_size ({tile})")
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    # Spread the tiles evenly so every overlap is at least `overlap`.
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _ramp(n: int, ramp_lo: int, ramp_hi: int, device, dtype) -> torch.Tensor:
    w = torch.ones(n, device=device, dtype=dtype)
    for length, sl in ((ramp_lo, slice(0, ramp_lo)), (ramp_hi, slice(n - ramp_hi, n))):
        if length > 0:
            t = (torch.arange(length, device=device, dtype=dtype) + 0.5) / length
            r = 0.5 - 0.5 * torch.cos(math.pi * t)  # raised cosine, 0 -> 1, never exactly 0
            w[sl] = torch.minimum(w[sl], r if sl.start == 0 else r.flip(0))
    return w


def blend_window(
    size: Tuple[int, int],
    ramps: Tuple[int, int, int, int],
    *,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Separable blending weights ``(H, W)`` for one tile.

    ``ramps = (top, bottom, left, right)`` are the ramp lengths in pixels (0 on sides that touch
    the image border). Weights are strictly positive, so the normalised blend is well defined.
    """
    h, w = size
    top, bottom, left, right = ramps
    wy = _ramp(h, top, bottom, device, dtype)
    wx = _ramp(w, left, right, device, dtype)
    return wy[:, None] * wx[None, :]


def tiled_apply(
    fn: Callable[..., torch.Tensor],
    *inputs: torch.Tensor,
    tile_size: int,
    overlap: int = 32,
    size_multiple: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of aligned inputs and blend the results.

    Args:
        fn: maps tensors ``(B, C_i, h, w)`` to ``(B, C_out, h, w)``; called on tiles whose
            sides are multiples of ``size_multiple`` (border tiles are reflect-padded, the pad
            cropped from the result).
        inputs: tensors of shape ``(B, C_i, H, W)`` with the same B, H, W.
        tile_size: tile side in pixels (rounded down to a multiple of ``size_multiple``).
        overlap: pixels shared by neighbouring tiles; the blend ramps across them.

    Returns:
        ``(B, C_out, H, W)``. For a pixel-wise ``fn`` the result equals ``fn(*inputs)``; for a
        network with receptive field ``r`` it approaches it once ``overlap`` exceeds ``r``.
    """
    if not inputs:
        raise ValueError("tiled_apply needs at least one input tensor")
    h, w = inputs[0].shape[-2:]
    for t in inputs[1:]:
        if t.shape[-2:] != (h, w) or t.shape[0] != inputs[0].shape[0]:
            raise ValueError("tiled_apply: all inputs must share batch size and spatial size")
    if overlap < 0:
        raise ValueError(f"tile_overlap must be >= 0, got {overlap}")
    tile = (int(tile_size) // size_multiple) * size_multiple
    if tile < max(size_multiple, 1) or tile <= overlap:
        raise ValueError(
            f"tile_size ({tile_size}) must exceed tile_overlap ({overlap}) and be at least the "
            f"size multiple ({size_multiple})"
        )
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)

    def run(*tiles: torch.Tensor) -> torch.Tensor:
        padded = [pad_to_multiple(t, size_multiple)[0] for t in tiles]
        th, tw = tiles[0].shape[-2:]
        return fn(*padded)[..., :th, :tw]

    if len(ys) == 1 and len(xs) == 1:
        return run(*inputs)

    out: Optional[torch.Tensor] = None
    weight_sum = torch.zeros((h, w), device=inputs[0].device, dtype=torch.float32)
    for iy, y0 in enumerate(ys):
        th = min(tile, h - y0)
        for ix, x0 in enumerate(xs):
            tw = min(tile, w - x0)
            tiles = [t[..., y0:y0 + th, x0:x0 + tw] for t in inputs]
            result = run(*tiles).float()
            # Ramp only where a neighbour overlaps this tile.
            ramps = (
                ys[iy - 1] + tile - y0 if iy > 0 else 0,
                y0 + th - ys[iy + 1] if iy + 1 < len(ys) else 0,
                xs[ix - 1] + tile - x0 if ix > 0 else 0,
                x0 + tw - xs[ix + 1] if ix + 1 < len(xs) else 0,
            )
            win = blend_window((th, tw), ramps, device=result.device)
            if out is None:
                out = torch.zeros(result.shape[:2] + (h, w), device=result.device, dtype=torch.float32)
            out[..., y0:y0 + th, x0:x0 + tw] += result * win
            weight_sum[y0:y0 + th, x0:x0 + tw] += win
    assert out is not None
    return out / weight_sum


def auto_tile_size(
    bytes_per_pixel: float,
    *,
    free_bytes: int,
    size_multiple: int = 1,
    safety: float = 0.6,
    minimum: int = 256,
) -> int:
    """Largest square tile whose estimated peak memory fits in ``safety * free_bytes``.

    ``bytes_per_pixel`` is the measured peak working memory of one forward pass per input pixel.
    The result is a multiple of ``size_multiple`` and never below ``minimum``.
    """
    if bytes_per_pixel <= 0:
        raise ValueError("bytes_per_pixel must be positive")
    side = int(math.sqrt(max(safety * free_bytes, 0) / bytes_per_pixel))
    side = (side // size_multiple) * size_multiple
    return max(side, (minimum // size_multiple) * size_multiple or size_multiple)
