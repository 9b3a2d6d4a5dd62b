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

The cache is bounded whatever sequence of sizes the calls have. Blocks freed by a call of one size
cannot always serve a call of another, so with varying sizes free pieces pile up (400 F3Net calls on
random 200-640 px crops reached 2.9 GB of RSS, still climbing). At the end of each outermost call the
process's resident memory above its level when the cache started (or was last trimmed) is compared
with :data:`BOUND_FACTOR` times the largest growth of resident memory one call has caused (one call's
peak working set); above it, ``malloc_trim(0)`` returns the free pages to the kernel and the level is
read again. A call that repeats the previous one (same ``key``: method, input shape and dtype in
``fuse``) is never trimmed: a loop at a fixed size keeps the cache it reuses, whose size settles after
a few calls (for F3Net up to 1.6 times the first call's growth), so it keeps the speed of reuse. With
varying sizes the resident memory after each call stays within ``BOUND_FACTOR`` times one call's peak
above the process's own (``benchmarks/heap_bound.py``). The bound applies with
``IVFUSION_HEAP_REUSE=0`` too, where glibc's thresholds leave the blocks below 32 MiB in the heap and
the same pile-up happens.

What stays cached is thus at most about ``BOUND_FACTOR`` times the peak of the largest call (or what
a loop at one size settles at), which the CPU tiling already bounds (``fuse(tile_size=None)``).
Nested and concurrent uses (threads) share one count. Set ``IVFUSION_HEAP_REUSE=0`` to turn reuse
off. Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import threading
import time
from typing import Hashable, Iterator, Optional

__all__ = ["heap_reuse", "heap_reuse_supported", "release_heap", "RELEASE_AFTER_S", "BOUND_FACTOR"]

#: Idle seconds after which the cached heap memory is returned to the kernel.
RELEASE_AFTER_S = 10.0
#: The resident memory a run of calls may add, as a multiple of the largest growth of one call,
#: before the free heap pages are returned to the kernel (see the module doc). The base it is added to
#: is the level right after the last trim, which keeps what a trim cannot return; with 1.5, 400 F3Net
#: calls on 200-640 px crops peaked at 1.50 times the plateau of a 640x640 loop, hence 1.25.
BOUND_FACTOR = 1.25
#: Growth below which nothing is trimmed (small calls: trimming would only cost page faults).
_MIN_TRIM_BYTES = 64 * 1024 * 1024

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
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_lock = threading.Lock()
_depth = 0
_libc: Optional[ctypes.CDLL] = None
_probed = False
_active = False  # limits currently lifted
_last_exit = 0.0  # time.monotonic() of the last outermost exit
# The bound (see the module doc): resident bytes when the cache started or was last trimmed (0: not
# started), at the outermost entry, and the largest growth of one outermost call since the cache started.
_base_rss = 0
_entry_rss = 0
_largest_growth = 0
_trims = 0  # times the bound trimmed the heap (tests and benchmarks read it)
_call_key: Optional[Hashable] = None  # key of the running outermost call (None: unknown or mixed)
_last_key: Optional[Hashable] = None  # key of the previous outermost call
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


def _resident_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``), 0 where unknown."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def _restore_locked(lib: ctypes.CDLL) -> None:
    global _active, _base_rss, _largest_growth
    if _active and _depth == 0:
        lib.mallopt(_M_MMAP_MAX, _RESTORE_MMAP_MAX)
        lib.mallopt(_M_MMAP_THRESHOLD, _RESTORE_MMAP_THRESHOLD)
        lib.mallopt(_M_TRIM_THRESHOLD, _RESTORE_TRIM_THRESHOLD)
        lib.malloc_trim(0)
        _active = False
        _base_rss = _largest_growth = 0  # the next cache starts afresh


def _bound_locked(lib: ctypes.CDLL, repeated: bool) -> None:
    """At an outermost exit: trim the free heap pages if the memory added since the base exceeds the
    bound, unless the call repeated the previous one's work (see the module doc)."""
    global _base_rss, _largest_growth, _trims
    now = _resident_bytes()
    if now == 0:
        return
    _largest_growth = max(_largest_growth, now - _entry_rss)
    added = now - _base_rss
    if not repeated and added > max(BOUND_FACTOR * _largest_growth, _MIN_TRIM_BYTES):
        lib.malloc_trim(0)
        _base_rss = _resident_bytes()
        _trims += 1


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
def heap_reuse(key: Optional[Hashable] = None) -> Iterator[None]:
    """Context in which glibc keeps freed memory for reuse instead of unmapping it, within a bound
    (see module doc).

    Args:
        key: what the call allocates for, e.g. ``(method, input shape)``. A call with the key of the
            previous outermost call is a repetition (a loop at a fixed size): its cache is what the
            next repetition reuses, so the bound leaves it alone. ``None`` (unknown) never repeats.
    """
    global _depth, _active, _timer, _last_exit, _base_rss, _entry_rss, _call_key, _last_key
    lib = _glibc()
    if lib is None:
        yield
        return
    reuse = heap_reuse_supported()
    with _lock:
        _depth += 1
        if _depth == 1:
            _entry_rss = _resident_bytes()
            if _base_rss == 0:
                _base_rss = _entry_rss
            _call_key = key
        elif key != _call_key:
            _call_key = None  # nested or concurrent calls of different kinds: not a repetition
        if reuse and not _active:
            lib.mallopt(_M_MMAP_MAX, 0)
            lib.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
            _active = True
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                repeated = _call_key is not None and _call_key == _last_key
                _last_key = _call_key
                _bound_locked(lib, repeated)
                _last_exit = time.monotonic()
                # is_alive(): in a forked child the parent's watcher object exists but does not run.
                if _active and (_timer is None or not _timer.is_alive()):
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
