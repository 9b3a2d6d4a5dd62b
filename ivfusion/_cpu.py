"""What the CPU can do natively: bfloat16 arithmetic.

bf16 autocast pays off on the CPU only where the instruction set has bf16 dot products (x86:
AVX512-BF16 or AMX-BF16; Arm: the BF16 extension). Elsewhere oneDNN emulates them and bf16 is no
faster than float32, so :func:`native_bf16` decides whether ``fuse`` may default to bf16 on the CPU.
``IVFUSION_CPU_BF16=0`` / ``=1`` overrides the detection.
"""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import FrozenSet

__all__ = ["native_bf16", "cpu_flags"]

_X86_BF16 = frozenset({"avx512_bf16", "amx_bf16"})
_ARM_BF16 = frozenset({"bf16"})


@functools.lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``);
    empty when unknown (not Linux)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 dot products natively (see module doc)."""
    override = os.environ.get("IVFUSION_CPU_BF16")
    if override in ("0", "1"):
        return override == "1"
    flags = cpu_flags()
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686"):
        return bool(flags & _X86_BF16)
    if machine in ("aarch64", "arm64"):
        return bool(flags & _ARM_BF16)
    return False
