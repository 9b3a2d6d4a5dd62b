"""How frames are mapped to the method's input and back: the constant 16-bit infrared window
(estimated once per video) and the per-frame arithmetic of :func:`ivfusion.fuse`, split around
the batched call of the method (:func:`_prepare` before it, :func:`_finish` after it).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch

from ..fusion import _check_same_size, _prepare_pair, _PreparedPair, _reattach_colour
from ..io import to_chw_tensor
from ..registration import Registration
from ._sources import _decoded_pairs, _Decoded, _Source


# --------------------------------------------------------------------------------------------
# The fixed infrared window


def _window_from_histogram(hist: np.ndarray, percentiles: Tuple[float, float]) -> Tuple[float, float]:
    cdf = np.cumsum(hist)
    total = cdf[-1]
    lo = int(np.searchsorted(cdf, total * percentiles[0] / 100.0, side="right"))
    hi = int(np.searchsorted(cdf, total * percentiles[1] / 100.0, side="left"))
    lo, hi = min(lo, len(hist) - 1), min(hi, len(hist) - 1)
    if hi <= lo:
        hi = lo + 1
    return float(lo), float(hi)


def _first_frames(ir: _Source, vis: _Source, sync: str, start: int, stop: Optional[int], ir_range: Any,
                  window_frames: int, percentiles: Tuple[float, float]):
    """Decode the first pair (sizes) and, for a 16-bit infrared without ``ir_range``, the first
    ``window_frames`` infrared frames' histogram (the window). Nothing but a histogram is kept."""
    first: Optional[_Decoded] = None
    hist = None
    for n, d in enumerate(_decoded_pairs(ir, vis, sync, start, stop)):
        if first is None:
            first = d
            if d.ir.dtype != np.uint16 or ir_range is not None or window_frames == 0:
                break
            hist = np.zeros(65536, dtype=np.int64)
        if n >= window_frames:
            break
        hist += np.bincount(d.ir.ravel(), minlength=65536)
    if first is None:
        where = "" if start == 0 and stop is None else f" in frames {start}..{'end' if stop is None else stop}"
        raise ValueError(f"no frames to fuse{where}: the inputs have no frames that pair")
    window = _window_from_histogram(hist, percentiles) if hist is not None else None
    return first, window


# --------------------------------------------------------------------------------------------
# Per-frame preparation and finishing (the arithmetic of ivfusion.fuse, split around the batch)


def _output_size(first: _Decoded, resize: Optional[str], registration: Optional[Registration] = None
                 ) -> Tuple[int, int]:
    ir_hw, vis_hw = first.ir.shape[:2], first.vis.shape[:2]
    if registration is not None:
        return tuple(vis_hw)  # type: ignore[return-value]
    _check_same_size(ir_hw, vis_hw, resize)
    return tuple(ir_hw if resize == "vis_to_ir" else vis_hw)  # type: ignore[return-value]


class _Prepared:
    """A decoded pair ready for the method: output index, time (s) and the :class:`_PreparedPair`."""

    __slots__ = ("index", "time", "pair")

    def __init__(self, index: int, t: float, pair: _PreparedPair) -> None:
        self.index, self.time, self.pair = index, t, pair


def _prepare(d: _Decoded, ir_range: Any, resize: Optional[str], size: Tuple[int, int],
             registration: Optional[Registration] = None) -> _Prepared:
    ir_t, ir_kind = to_chw_tensor(d.ir, name="ir")
    vis_t, vis_kind = to_chw_tensor(d.vis, name="vis")
    if registration is None:
        _check_same_size(ir_t.shape[-2:], vis_t.shape[-2:], resize)
    pair = _prepare_pair(ir_t, ir_kind, vis_t, vis_kind, resize, ir_range, registration)
    if tuple(pair.vis_y.shape[-2:]) != tuple(size):
        raise ValueError(f"frame {d.index}: the frame size changed to {pair.vis_y.shape[-2]}x{pair.vis_y.shape[-1]} "
                         f"(HxW) from {size[0]}x{size[1]}; a video keeps one size")
    return _Prepared(d.index, d.time, pair)


def _finish(p: _Prepared, fused_y: torch.Tensor) -> np.ndarray:
    return _reattach_colour(fused_y, p.pair)
