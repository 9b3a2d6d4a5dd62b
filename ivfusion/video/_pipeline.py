"""The pipeline of :func:`~ivfusion.video.fuse_video`: a decoder thread -> the fusion, in batches,
on the calling thread -> an encoder thread, joined by bounded queues (memory does not grow with
the length of the video). The first error of any thread stops all three and is re-raised on the
calling thread.
"""
from __future__ import annotations

import queue
import threading
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .._progress import progress_bar
from ._encode import _AtomicEncoder
from ._mapping import _finish, _prepare, _Prepared
from ._sources import PathLike, _decoded_pairs, _opened

_POLL_S = 0.1
_END = object()


class _Pipeline:
    """Shared stop flag and first error of the worker threads."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self._lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, q: "queue.Queue[Any]", item: Any) -> bool:
        """Put ``item`` unless the pipeline stops first; False if it stopped."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: "queue.Queue[Any]") -> Any:
        """Next item, or ``_END`` when the pipeline stops."""
        while not self.stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _END


def _thread(target: Callable[[], None], pipe: _Pipeline, name: str) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported to the calling thread, which re-raises it
            pipe.fail(exc)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t


def _run_pipeline(*, av: Any, ir: PathLike, vis: PathLike, rates: Dict[str, Fraction], sync: str,
                  start: int, stop: Optional[int], ir_fixed: Optional[Tuple[float, float]],
                  resize: Optional[str], size: Tuple[int, int], encoder: _AtomicEncoder,
                  run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device,
                  batch_size: int, queue_size: int, progress: Optional[bool], total: Optional[int],
                  registration: Any = None) -> None:
    """Decode (thread) -> fuse ``batch_size`` frames per ``run(ir, vis)`` call (this thread) ->
    encode (thread) into ``encoder``, which is flushed at the end. Errors of either thread are
    re-raised here."""
    pipe = _Pipeline()
    decoded: "queue.Queue[Any]" = queue.Queue(maxsize=queue_size)
    fused: "queue.Queue[Any]" = queue.Queue(maxsize=queue_size)
    bar = progress_bar(total, "fusing", unit="frame", enabled=progress is not False)  # shown only on a terminal
    ir_range = tuple(ir_fixed) if ir_fixed is not None else None

    def decode() -> None:
        with _opened(av, ir, vis, rates) as (ir_src, vis_src):
            for d in _decoded_pairs(ir_src, vis_src, sync, start, stop):
                if not pipe.put(decoded, _prepare(d, ir_range, resize, size, registration)):
                    return
        pipe.put(decoded, _END)

    def encode() -> None:
        while True:
            item = pipe.get(fused)
            if item is _END:
                break
            p, fused_y = item
            encoder.write(_finish(p, fused_y), p.time)
            bar.update(1)
        if pipe.stop.is_set():
            return
        encoder.flush()

    threads = [_thread(decode, pipe, "ivfusion-decode"), _thread(encode, pipe, "ivfusion-encode")]
    try:
        with torch.inference_mode():
            batch: List[_Prepared] = []
            while True:
                item = pipe.get(decoded)
                pipe.check()
                if item is not _END:
                    batch.append(item)
                if batch and (len(batch) == batch_size or item is _END):
                    ir_b = torch.stack([p.pair.ir_y for p in batch]).to(device)
                    vis_b = torch.stack([p.pair.vis_y for p in batch]).to(device)
                    out_b = run(ir_b, vis_b).cpu()
                    for p, y in zip(batch, out_b):
                        if not pipe.put(fused, (p, y)):
                            pipe.check()
                    batch = []
                if item is _END:
                    break
        if not pipe.put(fused, _END):
            pipe.check()
        threads[1].join()
        pipe.check()
    except BaseException as exc:
        pipe.fail(exc)
        raise
    finally:
        pipe.stop.set()
        for t in threads:
            t.join()
        bar.close()
