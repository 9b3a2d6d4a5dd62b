"""How much memory this process may still use.

* CPU (:func:`available_cpu_bytes`): the smallest of the machine's available memory, the cgroup
  (container) limit and the address-space limit (``ulimit -v``). Linux only; other systems report
  ``None`` (unknown).
* CUDA (:func:`available_cuda_bytes`): the device's free memory plus what PyTorch's caching
  allocator holds unused, capped by ``torch.cuda.set_per_process_memory_fraction``.
"""
from __future__ import annotations

import resource
from pathlib import Path
from typing import List, Optional

__all__ = ["available_cpu_bytes", "available_cuda_bytes"]


def _read_int(path: str) -> Optional[int]:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_kib(key: str, path: str = "/proc/meminfo") -> Optional[int]:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> Optional[int]:
    """``limit - usage`` of this process's memory cgroup (v2, then v1), ``None`` without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < (1 << 60):  # v1 reports "no limit" as ~2^63
            return max(limit - usage, 0)
    return None


def _address_space_headroom() -> Optional[int]:
    """``RLIMIT_AS - VmSize``: what ``ulimit -v`` still allows this process to map."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    vm_kib = _meminfo_kib("VmSize", "/proc/self/status")
    return None if vm_kib is None else max(soft - vm_kib * 1024, 0)


def available_cpu_bytes() -> Optional[int]:
    """Bytes this process can still allocate: ``min(MemAvailable, cgroup headroom, RLIMIT_AS - VmSize)``,
    read now; ``None`` when none of them is known (not Linux)."""
    found: List[int] = []
    avail = _meminfo_kib("MemAvailable")
    if avail is not None:
        found.append(avail * 1024)
    for value in (_cgroup_headroom(), _address_space_headroom()):
        if value is not None:
            found.append(value)
    return min(found) if found else None


def available_cuda_bytes(device) -> int:
    """Bytes this process can still allocate on CUDA ``device``: the driver's free memory plus the
    blocks PyTorch's caching allocator reserved but does not use, and at most what a per-process
    memory fraction (``torch.cuda.set_per_process_memory_fraction``) leaves above the memory in use."""
    import torch

    free, total = torch.cuda.mem_get_info(device)
    allocated = torch.cuda.memory_allocated(device)
    available = free + max(torch.cuda.memory_reserved(device) - allocated, 0)
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _: 1.0)(device)
    if fraction < 1.0:
        available = min(available, max(int(fraction * total) - allocated, 0))
    return available
