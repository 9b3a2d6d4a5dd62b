"""Process-level helpers of the training loop: device and precision choice, RNG state capture and
restore (for bit-identical resumes), atomic checkpoint writes, the hardware line of a run's record."""
from __future__ import annotations

import contextlib
import math
import platform
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from ..io import write_atomic

__all__ = ["hardware_description", "atomic_save", "rng_state", "set_rng_state", "resolve_device",
           "resolve_precision", "TimeBudget"]


def hardware_description(device: torch.device) -> str:
    """``"1x NVIDIA H100 80GB HBM3"`` on CUDA, the CPU model and thread count otherwise."""
    if device.type == "cuda":
        return f"1x {torch.cuda.get_device_name(device)}"
    name = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    n = torch.get_num_threads()
    return f"CPU {name or platform.machine()} ({n} thread{'' if n == 1 else 's'})"


def atomic_save(obj: Any, path: Path) -> None:
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def rng_state(device: torch.device) -> Dict[str, Any]:
    # Only tensors, numbers, strings, lists and dicts: torch.load(weights_only=True) must read it.
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, mt, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if device.type == "cuda" else [],
        "numpy": [str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [int(version), [int(v) for v in mt], gauss],
    }


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in mt), gauss))


def resolve_device(name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available")
    return dev


def resolve_precision(precision: str, device: torch.device, half_ok: bool) -> Optional[torch.dtype]:
    """The autocast dtype (``None`` = float32 throughout)."""
    if precision == "auto":
        if device.type != "cuda" or not half_ok:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp32":
        return None
    if not half_ok:
        raise ValueError(f"precision: {precision!r} is not supported by this network (float32 only)")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision: 'fp16' needs a CUDA device (use 'bf16' or 'fp32' on CPU)")
    return torch.bfloat16 if precision == "bf16" else torch.float16



class TimeBudget:
    """A wall-clock budget for a training loop, in seconds from construction (``None``: unlimited).

    Before each step the loop asks :meth:`exhausted`: whether the time spent plus one more step
    (the mean of the steps recorded so far) plus the closing work (the last validation's duration,
    :meth:`record_closing`) would pass the limit. Before any step is recorded a step counts as free,
    so a run always starts unless the limit is already spent.
    """

    def __init__(self, seconds: Optional[float], *, clock: Callable[[], float] = time.perf_counter) -> None:
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not math.isfinite(seconds) or seconds < 0):
            raise ValueError(f"time_limit: expected a number of seconds >= 0 or None, got {seconds!r}")
        self.seconds = seconds
        self.clock = clock
        self.start = clock()
        self._step_total = 0.0
        self._steps = 0
        self.closing_s = 0.0

    @property
    def limited(self) -> bool:
        return self.seconds is not None

    @property
    def step_s(self) -> float:
        """Mean seconds per recorded step (0 before the first)."""
        return self._step_total / self._steps if self._steps else 0.0

    def record_step(self, seconds: float) -> None:
        self._step_total += seconds
        self._steps += 1

    def record_closing(self, seconds: float) -> None:
        """The duration of the work done when the loop stops (a validation)."""
        self.closing_s = seconds

    def exhausted(self, *, closing: bool = True) -> bool:
        """Whether one more step (and, with ``closing``, the closing work) would overrun the limit."""
        if self.seconds is None:
            return False
        spent = self.clock() - self.start
        return spent + self.step_s + (self.closing_s if closing else 0.0) > self.seconds
