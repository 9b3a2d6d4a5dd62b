"""Keep freed tensor memory in the process heap while a network runs on the CPU (glibc only).

glibc's ``malloc`` serves each allocation above 32 MiB (a 64-channel 640x480 float32 activation is
79 MB) with a fresh ``mmap`` and returns it to the kernel on ``free``. Every layer of a forward pass
then page-faults its output in again and the kernel zeroes it first: on a 2-core EPYC this made a
64-channel 3x3 convolution at 640x480 take 207 ms instead of 111 ms, and is why time per pixel grew
with the image (``benchmarks/models.py``, ``benchmarks/README.md``). PyTorch's CPU performance guide
recommends preloading jemalloc or tcmalloc for the same reason; :func:`heap_reuse` gets the same
effect from glibc itself, for the duration of a call:

* on entry, ``mallopt(M_MMAP_MAX, 0)`` (no ``mmap`` allocations) and ``M_TRIM_THRESHOLD`` at its
  maximum, so freed blocks stay in the heap and the next layer reuses them;
* the cache outlives the call by :data:`RELEASE_AFTER_S` seconds, so that a loop of calls (a folder,
  a video, a notebook cell) keeps reusing it, the way jemalloc's and tcmalloc's caches decay: once no
  call has run for that long, a watcher thread (one per idle period, not one per call) restores the
  limits to the values glibc's dynamic threshold reaches after it has seen large blocks (``mmap``
  above 32 MiB, trim above 64 MiB) and ``malloc_trim(0)`` hands the cached memory back to the kernel.
  :func:`release_heap` does it now.

What stays cached is at most the peak of one call, which the CPU tiling already bounds
(``fuse(tile_size=None)``). Nested and concurrent uses (threads) share one count. Set
``IVFUSION_HEAP_REUSE=0`` to turn it off. Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import threading
import time
from typing import Iterator, Optional

__all__ = ["heap_reuse", "heap_reuse_supported", "release_heap", "RELEASE_AFTER_S"]

#: Idle seconds after which the cached heap memory is returned to the kernel.
RELEASE_AFTER_S = 10.0

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# What glibc's dynamic thresholds settle at after large blocks have been freed (DEFAULT_MMAP_THRESHOLD_MAX
# on 64-bit and twice that for trimming), and its default maximum number of mmap'd blocks.
_RESTORE_MMAP_THRESHOLD = 32 * 1024 * 1024
_RESTORE_TRIM_THRESHOLD = 64 * 1024 * 1024
_RESTORE_MMAP_MAX = 65536
_INT_MAX = 2**31 - 1

_lock = threading.Lock()
_depth = 0
_libc: Optional[ctypes.CDLL] = None
_probed = False
_active = False  # limits currently lifted
_last_exit = 0.0  # time.monotonic() of the last outermost exit
# One watcher thread per idle period (not one timer per call): it releases the cache once no call has
# run for RELEASE_AFTER_S seconds.
_timer: Optional[threading.Thread] = None


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc, _probed
    if not _probed:
        _probed = True
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                lib.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = lib
            except (OSError, AttributeError):
                _libc = None
    return _libc


def heap_reuse_supported() -> bool:
    """Whether :func:`heap_reuse` acts here (glibc, and not turned off by ``IVFUSION_HEAP_REUSE=0``)."""
    return os.environ.get("IVFUSION_HEAP_REUSE", "1") != "0" and _glibc() is not None


def _restore_locked(lib: ctypes.CDLL) -> None:
    global _active
    if _active and _depth == 0:
        lib.mallopt(_M_MMAP_MAX, _RESTORE_MMAP_MAX)
        lib.mallopt(_M_MMAP_THRESHOLD, _RESTORE_MMAP_THRESHOLD)
        lib.mallopt(_M_TRIM_THRESHOLD, _RESTORE_TRIM_THRESHOLD)
        lib.malloc_trim(0)
        _active = False


def release_heap() -> None:
    """Return the memory cached by :func:`heap_reuse` to the kernel now (when no call is running)."""
    global _timer
    lib = _glibc()
    if lib is None:
        return
    with _lock:
        _timer = None  # a sleeping watcher sees it was superseded and leaves
        _restore_locked(lib)


@contextlib.contextmanager
def heap_reuse() -> Iterator[None]:
    """Context in which glibc keeps freed memory for reuse instead of unmapping it (see module doc)."""
    global _depth, _active, _timer, _last_exit
    lib = _glibc() if heap_reuse_supported() else None
    if lib is None:
        yield
        return
    with _lock:
        _depth += 1
        if not _active:
            lib.mallopt(_M_MMAP_MAX, 0)
            lib.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
            _active = True
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _last_exit = time.monotonic()
                # is_alive(): in a forked child the parent's watcher object exists but does not run.
                if _timer is None or not _timer.is_alive():
                    _timer = threading.Thread(target=_release_when_idle, args=(lib,), daemon=True,
                                              name="ivfusion-heap-release")
                    _timer.start()


def _release_when_idle(lib: ctypes.CDLL) -> None:
    global _timer
    while True:
        with _lock:
            if threading.current_thread() is not _timer:
                return  # released meanwhile by release_heap()
            wait = _last_exit + RELEASE_AFTER_S - time.monotonic() if _depth == 0 else RELEASE_AFTER_S
            if wait <= 0:
                _timer = None
                _restore_locked(lib)
                return
        time.sleep(wait)
