"""Worker processes that do not outlive the process that started them.

A DataLoader worker notices a dead parent only between items (when it polls its index queue), and
one with results waiting in a full pipe then blocks at exit on its queue's feeder thread, with
nobody left to read: a ``kill -9`` of ``ivfusion fuse --workers N`` left the workers running, each
holding a network, for good. :func:`die_with_parent` makes each worker exit with its parent: on
Linux the kernel sends it ``SIGKILL`` when the parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere a
daemon thread polls the parent's process id and ends the worker with ``os._exit``.

With the ``fork`` and ``spawn`` start methods the parent is the process that started the workers;
with ``forkserver`` (Python 3.14's default on Linux) it is the fork server, which exits when that
process dies, taking the workers with it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1
_POLL_S = 1.0


def _arm_parent_death_signal() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` for this process; False where unavailable (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                          ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    except (OSError, AttributeError):
        return False


def _parent_of(pid: int) -> Optional[int]:
    """The parent process id of ``pid`` from ``/proc`` (Linux), None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])  # after "pid (comm) state"
    except (OSError, ValueError, IndexError):
        return None


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_POLL_S)
    os._exit(1)  # not sys.exit: the worker's queue threads must not keep it alive


def _init_worker(creator: int, chained: Optional[Callable[[int], None]], worker_id: int) -> None:
    parent = os.getppid()  # the creator, or a fork server that the creator started
    armed = _arm_parent_death_signal()
    # The creator may have died before the signal was armed: the worker was then reparented.
    if parent != creator and _parent_of(parent) not in (creator, None):
        os._exit(1)
    if os.getppid() != parent:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="ivfusion-parent-watch").start()
    if chained is not None:
        chained(worker_id)


def die_with_parent(chained: Optional[Callable[[int], None]] = None) -> Callable[[int], None]:
    """A DataLoader ``worker_init_fn`` (picklable) that makes each worker exit when this process dies
    (see the module doc), then calls ``chained(worker_id)`` if given.

    Call it in the process that iterates the loader."""
    return functools.partial(_init_worker, os.getpid(), chained)
