"""The :class:`Registration` result: the transform, warping with it, and its JSON file."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ..io import ImageLike, from_unit_range, to_chw_tensor, to_unit_range, write_atomic
from ._geometry import inside_mask, sample, sampling_coords, scale_matrix

__all__ = ["Registration", "MODELS", "FORMAT", "FORMAT_VERSION"]

#: Transform models, from the most to the least constrained.
MODELS = ("affine", "homography", "deformable")
#: ``"format"`` field of a saved registration, and the layout version this package writes and reads.
FORMAT = "ivfusion.registration"
FORMAT_VERSION = 1


def _size(value: Any, name: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
        ok = all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok or h < 2 or w < 2:
        raise ValueError(f"{name}: expected (height, width) of at least 2x2 pixels, got {value!r}")
    return h, w


@dataclass(frozen=True, eq=False)
class Registration:
    """How the infrared image maps into the visible image's frame.

    The visible pixel ``x`` (pixel coordinates ``(column, row)``, pixel centres at integers) shows
    the infrared pixel ``inv(matrix) @ (x + u(x))``, with ``u`` the upsampled :attr:`flow` (zero
    unless ``model == "deformable"``). So ``cv2.warpPerspective(ir, reg.matrix, (W, H))`` gives
    the warp of an affine or homography registration.
    """

    #: ``(3, 3)`` float64 homography from full-size infrared pixels to full-size visible pixels
    #: (last row ``0, 0, 1`` for ``model="affine"``).
    matrix: np.ndarray
    #: ``(height, width)`` of the infrared images this registration applies to.
    ir_size: Tuple[int, int]
    #: ``(height, width)`` of the visible frame (the size of :meth:`warp`'s output).
    vis_size: Tuple[int, int]
    #: ``"affine"``, ``"homography"`` or ``"deformable"``.
    model: str
    #: Deformable only: ``(2, gh, gw)`` float32 displacement ``(dx, dy)`` in visible pixels on a
    #: coarse grid spanning the visible frame corner to corner (upsampled bicubically).
    flow: Optional[np.ndarray] = None
    #: In [0, 1]: how distinctly the estimate beats nearby transforms (see :func:`ivfusion.register`);
    #: below :data:`~ivfusion.registration.LOW_CONFIDENCE` the pair probably has too little in common.
    confidence: float = 1.0
    #: Which estimator made it (``"classical"``, ``"learned"``, ``"learned+classical"``, ``"given"`` ...).
    estimator: str = "given"
    #: Diagnostics of the estimate (similarities, bounds, timings), JSON numbers and strings.
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (3, 3) or not np.isfinite(m).all():
            raise ValueError(f"matrix: expected a finite 3x3 homography, got shape {m.shape}")
        if abs(m[2, 2]) < 1e-12:
            raise ValueError("matrix: the bottom-right entry is 0 (not a normalisable homography)")
        m = m / m[2, 2]
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "ir_size", _size(self.ir_size, "ir_size"))
        object.__setattr__(self, "vis_size", _size(self.vis_size, "vis_size"))
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}, got {self.model!r}")
        if self.flow is not None:
            if self.model != "deformable":
                raise ValueError(f"flow: only a 'deformable' registration has a flow (model is {self.model!r})")
            f = np.asarray(self.flow, dtype=np.float32)
            if f.ndim != 3 or f.shape[0] != 2 or f.shape[1] < 2 or f.shape[2] < 2 or not np.isfinite(f).all():
                raise ValueError(f"flow: expected a finite (2, gh, gw) grid with gh, gw >= 2, got shape {f.shape}")
            object.__setattr__(self, "flow", f)
        if not (isinstance(self.confidence, (int, float)) and 0.0 <= float(self.confidence) <= 1.0):
            raise ValueError(f"confidence must be a number in [0, 1], got {self.confidence!r}")
        object.__setattr__(self, "confidence", float(self.confidence))
        object.__setattr__(self, "info", dict(self.info))

    # ------------------------------------------------------------------ construction

    @classmethod
    def identity(cls, ir_size: Tuple[int, int], vis_size: Tuple[int, int], model: str = "affine") -> "Registration":
        """The registration of two cameras with the same field of view: the infrared is only rescaled
        to the visible size (what ``fuse(..., resize="ir_to_vis")`` does)."""
        ir_size, vis_size = _size(ir_size, "ir_size"), _size(vis_size, "vis_size")
        return cls(scale_matrix(ir_size, vis_size).numpy(), ir_size, vis_size, model, estimator="identity")

    # ------------------------------------------------------------------ warping

    def mapping(self, device: Optional[Union[str, torch.device]] = None) -> torch.Tensor:
        """``(H, W, 2)`` float32: the infrared pixel coordinates ``(x, y)`` seen at each visible pixel."""
        m = torch.from_numpy(self.matrix).to(device)
        flow = None if self.flow is None else torch.from_numpy(self.flow).to(device)
        return sampling_coords(m, self.vis_size, flow)

    def warp_tensor(self, ir: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Warp a float ``(C, h, w)`` (or ``(B, C, h, w)``) infrared of size :attr:`ir_size` into the
        visible frame: ``(C, H, W)`` (``(B, C, H, W)``) and the ``(H, W)`` bool mask of pixels that
        the infrared covers. Outside the mask the values are 0."""
        batched = ir.dim() == 4
        x = ir if batched else ir[None]
        if tuple(x.shape[-2:]) != self.ir_size:
            raise ValueError(
                f"ir: this registration is for {self.ir_size[0]}x{self.ir_size[1]} (HxW) infrared images, got "
                f"{x.shape[-2]}x{x.shape[-1]}")
        coords = self.mapping(x.device)
        x = _antialias_for(x, coords)
        mask = inside_mask(coords, self.ir_size)
        out = sample(x.float(), coords * _shrink(self.ir_size, x.shape[-2:], x.device)
                     + _shift(self.ir_size, x.shape[-2:], x.device))
        out = out * mask.to(out.dtype)
        return (out if batched else out[0]), mask

    def warp(self, ir: ImageLike) -> Tuple[np.ndarray, np.ndarray]:
        """Warp an infrared image (any input :func:`ivfusion.fuse` takes) into the visible frame.

        Returns:
            ``(warped, mask)``: the image at :attr:`vis_size`, in the input's dtype kind (``uint8``,
            ``uint16``, float ``float32``) and channel count (``HxW`` or ``HxWx3``), 0 outside the
            infrared's footprint; and the ``HxW`` bool mask of the footprint.

        Raises:
            ValueError: the image is not :attr:`ir_size`.
        """
        t, kind = to_chw_tensor(ir, name="ir")
        x = to_unit_range(t, kind, name="ir", value_range=(0, 65535) if kind == "uint16" else None)
        out, mask = self.warp_tensor(x)
        return from_unit_range(out.clamp_(0, 1), kind), mask.cpu().numpy()

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (what :meth:`save` writes)."""
        out: Dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.model,
            "ir_size": list(self.ir_size),
            "vis_size": list(self.vis_size),
            "matrix": [[float(v) for v in row] for row in self.matrix],
            "flow": None if self.flow is None else [[[round(float(v), 4) for v in row] for row in ch]
                                                    for ch in self.flow],
            "confidence": round(self.confidence, 6),
            "estimator": self.estimator,
            "info": dict(self.info),
        }
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "Registration":
        """Inverse of :meth:`to_dict`; ``ValueError`` naming ``source`` and the field otherwise."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ValueError(f"{source}: not an ivfusion registration (field 'format' is {data.get('format')!r}, "
                             f"expected {FORMAT!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{source}: registration version {data.get('version')!r} is not supported "
                             f"(this ivfusion reads version {FORMAT_VERSION})")
        missing = [k for k in ("model", "ir_size", "vis_size", "matrix") if k not in data]
        if missing:
            raise ValueError(f"{source}: missing field(s) {', '.join(missing)}")
        try:
            flow = data.get("flow")
            return cls(
                matrix=np.asarray(data["matrix"], dtype=np.float64),
                ir_size=tuple(data["ir_size"]),
                vis_size=tuple(data["vis_size"]),
                model=data["model"],
                flow=None if flow is None else np.asarray(flow, dtype=np.float32),
                confidence=data.get("confidence", 1.0),
                estimator=str(data.get("estimator", "given")),
                info=data.get("info") or {},
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the registration as JSON, atomically; returns the path."""
        # one field per line, each value compact (a 3x3 matrix on one line, the flow grid on one line)
        text = "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in self.to_dict().items()) + "\n}\n"
        return write_atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Registration":
        """Read a file written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not JSON, or not a valid registration (the message names the field).
        """
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"registration: no such file: {str(p)!r}")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"registration: {str(p)!r} is not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(p))

    def __repr__(self) -> str:
        flow = "" if self.flow is None else f", flow {self.flow.shape[1]}x{self.flow.shape[2]}"
        return (f"Registration(model={self.model!r}, ir {self.ir_size[0]}x{self.ir_size[1]} -> vis "
                f"{self.vis_size[0]}x{self.vis_size[1]}{flow}, confidence={self.confidence:.3f}, "
                f"estimator={self.estimator!r})")


def _antialias_for(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Shrink an infrared much finer than the visible frame before bilinear sampling (no aliasing):
    to about the number of pixels the mapping's footprint has in the visible frame."""
    h, w = x.shape[-2:]
    span = coords[1:, 1:] - coords[:-1, :-1]
    step = float(span.norm(dim=-1).median()) / math.sqrt(2.0)  # infrared pixels per visible pixel
    if not math.isfinite(step) or step < 1.5:
        return x
    size = (max(2, round(h / step)), max(2, round(w / step)))
    return torch.nn.functional.interpolate(x.float(), size=size, mode="bilinear", align_corners=False,
                                           antialias=True)


def _shrink(full: Tuple[int, int], now: Tuple[int, int], device: Any) -> torch.Tensor:
    return torch.tensor([now[1] / full[1], now[0] / full[0]], device=device)


def _shift(full: Tuple[int, int], now: Tuple[int, int], device: Any) -> torch.Tensor:
    s = _shrink(full, now, device)
    return 0.5 * s - 0.5
