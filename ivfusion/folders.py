"""Fusing whole folders: :func:`fuse_dir`, a bounded pipeline on one machine, shardable over
``torchrun`` ranks and machines.

One machine: DataLoader worker processes decode and prepare pairs (``workers``), same-size pairs go
through the method in batches (``batch_size``), a background thread encodes and writes, and every
queue between them is bounded, so memory stays flat however many files there are.
``torchrun --nproc-per-node N -m ivfusion fuse --ir-dir ...`` runs one such pipeline per rank on
every ``N``-th pair (:mod:`ivfusion.distributed`); rank 0 merges the reports.
"""
from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Generator, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from ._progress import progress_bar
from .distributed import barrier, dist_info, gather_objects, init_distributed, rank_device, shard
from .fusion import (
    DEFAULT_METHOD,
    DEFAULT_TILE_OVERLAP,
    _build_method,
    _check_layout_args,
    _check_same_size,
    _PreparedPair,
    _prepare_pair,
    _reattach_colour,
    _run,
    _check_align_resize,
    fuse,
    resolve_alignment,
)
from ._workers import die_with_parent
from .io import (
    check_writable_folder,
    is_same_file,
    is_write_fatal,
    pair_files,
    remove_stale_temporaries,
    to_chw_tensor,
    write_atomic,
    write_image,
)
from .registration import MODELS as REGISTRATION_MODELS
from .registration import Registration, register_pairs

__all__ = ["fuse_dir", "FuseDirReport"]

#: Keyword arguments of :func:`ivfusion.fuse` that are not method options.
_FUSE_KWARGS = {"device", "tile_size", "tile_overlap", "resize", "ir_range", "weights", "precision", "backend", "align"}


@dataclass
class FuseDirReport:
    """Outcome of :func:`fuse_dir` (merged over ranks under ``torchrun``)."""

    written: List[Path] = field(default_factory=list)
    skipped: List[Path] = field(default_factory=list)
    unmatched_ir: List[Path] = field(default_factory=list)
    unmatched_vis: List[Path] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (stem, message)
    #: Pairs fused (written) by each rank; ``{0: n}`` in a single process.
    per_rank: Dict[int, int] = field(default_factory=dict)
    #: The fixed registration every pair was warped with (``align``), or None.
    registration: Optional[Registration] = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> Dict[str, Any]:
        """The report as JSON-ready data: counts, failures, unmatched files and ``per_rank``."""
        return {
            "written": len(self.written),
            "skipped": len(self.skipped),
            "failed": [{"stem": stem, "error": message} for stem, message in self.failed],
            "unmatched": {"ir": [str(p) for p in self.unmatched_ir], "vis": [str(p) for p in self.unmatched_vis]},
            "per_rank": {str(rank): n for rank, n in sorted(self.per_rank.items())},
            "registration": None if self.registration is None else {
                "model": self.registration.model, "confidence": self.registration.confidence,
                "matrix": self.registration.to_dict()["matrix"]},
        }


# ------------------------------------------------------------------------------ decoding


def _load_pair(ir: Path, vis: Path, resize: Optional[str], ir_range: Any,
               registration: Optional[Registration] = None) -> _PreparedPair:
    """Decode a pair and prepare it exactly as :func:`ivfusion.fuse` does on the CPU."""
    ir_t, ir_kind = to_chw_tensor(ir, name="ir")
    vis_t, vis_kind = to_chw_tensor(vis, name="vis")
    if registration is None:
        _check_same_size(ir_t.shape[-2:], vis_t.shape[-2:], resize)
    return _prepare_pair(ir_t, ir_kind, vis_t, vis_kind, resize, ir_range, registration)


class _PairSource(Dataset):
    """``(stem, target, prepared pair or None, error message or None)`` per pair; decoding errors
    are returned, not raised, so that one bad file fails its pair only."""

    def __init__(self, items: Sequence[Tuple[str, Path, Path, Path]], resize: Optional[str], ir_range: Any,
                 registration: Optional[Registration] = None) -> None:
        self.items = list(items)
        self.resize = resize
        self.ir_range = ir_range
        self.registration = registration

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Tuple[str, Path, Optional[_PreparedPair], Optional[str]]:
        stem, ir, vis, target = self.items[i]
        try:
            return stem, target, _load_pair(ir, vis, self.resize, self.ir_range, self.registration), None
        except (ValueError, TypeError, OSError) as exc:
            return stem, target, None, str(exc)


def _identity(item: Any) -> Any:
    return item


def _decoded(source: _PairSource, workers: int) -> Iterator[Tuple[str, Path, Optional[_PreparedPair], Optional[str]]]:
    if workers == 0:
        return (source[i] for i in range(len(source)))
    loader = DataLoader(source, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,
                        prefetch_factor=2, worker_init_fn=die_with_parent())
    return iter(loader)


def _same_size_batches(items: Iterator[Tuple[str, Path, Optional[_PreparedPair], Optional[str]]], batch_size: int
                       ) -> Iterator[List[Tuple[str, Path, Optional[_PreparedPair], Optional[str]]]]:
    """Consecutive pairs of one size, up to ``batch_size``; a failed decode travels alone."""
    batch: List[Tuple[str, Path, Optional[_PreparedPair], Optional[str]]] = []
    for item in items:
        pair = item[2]
        if batch and (pair is None or len(batch) == batch_size
                      or batch[0][2].ir_y.shape != pair.ir_y.shape):
            yield batch
            batch = []
        if pair is None:
            yield [item]
        else:
            batch.append(item)
    if batch:
        yield batch


# ------------------------------------------------------------------------------ writing


class _Writer:
    """A thread that writes ``(stem, target, image)`` items from a bounded queue, atomically."""

    _END = object()

    def __init__(self, maxsize: int) -> None:
        self.queue: "queue.Queue[Any]" = queue.Queue(maxsize=maxsize)
        self.written: List[Path] = []
        self.failed: List[Tuple[str, str]] = []
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="ivfusion-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if self.error is not None:
                continue  # drain after a fatal error so that put() never blocks
            stem, target, image = item
            try:
                self.written.append(write_image(target, image))
            except OSError as exc:
                if is_write_fatal(exc):
                    self.error = exc  # no output can be written: stop the run
                else:
                    self.failed.append((stem, str(exc)))
            except (ValueError, TypeError) as exc:
                self.failed.append((stem, str(exc)))
            except BaseException as exc:  # re-raised in the calling thread
                self.error = exc

    def put(self, stem: str, target: Path, image: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((stem, target, image))

    def close(self) -> None:
        self.queue.put(self._END)
        self.thread.join()
        if self.error is not None:
            raise self.error


# ------------------------------------------------------------------------------ fuse_dir


class _Fuser:
    """Fuses groups of prepared same-size pairs with one method; picklable, so that DataLoader
    workers can run it (the method is built once per process, on first use)."""

    def __init__(self, method: str, fuse_kwargs: Dict[str, Any]) -> None:
        self.method = method
        self.kwargs = dict(fuse_kwargs)
        self._built: Optional[Tuple[Any, ...]] = None

    def __getstate__(self) -> Dict[str, Any]:
        return {"method": self.method, "kwargs": self.kwargs, "_built": None}

    def build(self) -> Tuple[Any, ...]:
        if self._built is None:
            kw = self.kwargs
            options = {k: v for k, v in kw.items() if k not in _FUSE_KWARGS}
            self._built = _build_method(self.method, kw.get("weights"), kw.get("device"), kw.get("precision"),
                                        options, kw.get("backend", "torch"))
        return self._built

    @torch.inference_mode()
    def __call__(self, group: List[Any]) -> List[np.ndarray]:
        fn, multiple, dtype, pixelwise, dev = self.build()
        kw = self.kwargs
        ir = torch.cat([item[2].ir_y[None] for item in group]).to(dev)
        vis = torch.cat([item[2].vis_y[None] for item in group]).to(dev)
        fused = _run(fn, ir, vis, dev, dtype, multiple, kw.get("tile_size"),
                     kw.get("tile_overlap", DEFAULT_TILE_OVERLAP), self.method, kw.get("weights"), pixelwise).cpu()
        return [_reattach_colour(fused[i], item[2]) for i, item in enumerate(group)]

    def fuse_stream(self, items: Iterator[Any], batch_size: int
                    ) -> Generator[Tuple[str, Path, Optional[np.ndarray], Optional[str]], None, None]:
        """``(stem, target, image or None, error or None)`` for decoded items, fused in same-size batches."""
        for batch in _same_size_batches(items, batch_size):
            if batch[0][2] is None:
                yield batch[0][0], batch[0][1], None, batch[0][3]
                continue
            for group, images, error in _fused_groups(batch, self):
                if error is not None:
                    yield group[0][0], group[0][1], None, error
                else:
                    for (stem, target, _, _), image in zip(group, images):
                        yield stem, target, image, None


class _FuseInWorker:
    """DataLoader ``collate_fn`` that fuses the worker's batch of decoded pairs in the worker."""

    def __init__(self, fuser: _Fuser, batch_size: int) -> None:
        self.fuser = fuser
        self.batch_size = batch_size

    def __call__(self, items: List[Any]) -> List[Tuple[str, Path, Optional[np.ndarray], Optional[str]]]:
        return list(self.fuser.fuse_stream(iter(items), self.batch_size))


def _fused_groups(batch: List[Any], fuse_one: Any) -> Iterator[Tuple[List[Any], List[np.ndarray], Optional[str]]]:
    """``(pairs, fused images, None)`` for the batch in one call; if that fails, pair by pair, with
    ``([pair], [], error message)`` for those that fail alone."""
    try:
        yield batch, fuse_one(batch), None
        return
    except (ValueError, TypeError, RuntimeError) as exc:
        if len(batch) == 1:
            yield batch, [], str(exc)
            return
    for item in batch:
        try:
            images = fuse_one([item])
        except (ValueError, TypeError, RuntimeError) as exc:
            yield [item], [], str(exc)
        else:
            yield [item], images, None


def _pipeline(items: Sequence[Tuple[str, Path, Path, Path]], fuser: _Fuser, workers: int, batch_size: int,
              queue_size: int, bar: Any, report: FuseDirReport) -> None:
    """Decode -> fuse -> write with bounded queues. On the CPU with ``workers > 0`` each worker process
    decodes *and* fuses its batches (one thread each: separate pairs in parallel use the cores better
    than one pair on several threads); otherwise the workers decode and this process fuses (a GPU)."""
    dev = fuser.build()[4]
    source = _PairSource(items, fuser.kwargs.get("resize"), fuser.kwargs.get("ir_range"), fuser.kwargs.get("align"))
    if workers > 0 and dev.type == "cpu":
        loader = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=workers,
                            collate_fn=_FuseInWorker(fuser, batch_size), prefetch_factor=2,
                            worker_init_fn=die_with_parent())
        results: Generator[Any, None, None] = (r for batch in loader for r in batch)
    else:
        results = fuser.fuse_stream(_decoded(source, workers), batch_size)
    writer = _Writer(queue_size)
    try:
        for stem, target, image, error in results:
            if error is not None:
                report.failed.append((stem, error))
            else:
                writer.put(stem, target, image)
            bar.update(1)
    finally:
        # Stopped early (a fatal write error, an interrupt): close the stream now, which drops the
        # loader's iterator and so shuts its workers down. Left to the garbage collector, the
        # iterator's queues can be finalised before it, and each worker then waits out a 5 s timeout.
        try:
            results.close()
        finally:
            writer.close()
            report.written.extend(writer.written)
            report.failed.extend(writer.failed)


def _rig_registration(align: Any, pairs: Sequence[Tuple[str, Path, Path]], n: int, ir_range: Any
                      ) -> Optional[Registration]:
    """``align`` of :func:`fuse_dir` as one registration (a model name: estimated from the first ``n`` pairs)."""
    if isinstance(align, str) and align in REGISTRATION_MODELS:
        if not pairs:
            raise ValueError(f"align={align!r}: no pairs to estimate the registration from")
        return register_pairs([(ir, vis) for _, ir, vis in pairs[:n]], align, ir_range=ir_range)
    return resolve_alignment(align)


def fuse_dir(
    ir_dir: Union[str, os.PathLike],
    vis_dir: Union[str, os.PathLike],
    out_dir: Union[str, os.PathLike],
    method: str = DEFAULT_METHOD,
    *,
    ext: str = ".png",
    existing: str = "error",
    progress: bool = True,
    workers: int = 0,
    batch_size: int = 1,
    queue_size: Optional[int] = None,
    report: Optional[Union[str, os.PathLike]] = None,
    align: Any = None,
    align_pairs: int = 5,
    **fuse_kwargs: Any,
) -> FuseDirReport:
    """Fuse every pair of two folders (matched by file stem) into ``out_dir/<stem><ext>``.

    Args:
        existing: what to do when an output exists: ``"error"`` (raise ``FileExistsError`` before
            fusing anything), ``"skip"`` or ``"overwrite"``. An output that would replace one of
            the inputs (same file after resolving links) is a ``ValueError`` whatever this says.
            A run that was killed and is started again with ``"skip"`` redoes only what is missing.
        progress: a ``tqdm`` progress bar on stderr when stderr is a terminal (default; never in logs
            or notebooks' captured output); ``False``: none. Same default as :func:`ivfusion.fuse_video`.
        workers: DataLoader worker processes that decode and prepare pairs and, on the CPU, also fuse
            them (one thread each); 0: everything in this process.
        batch_size: consecutive pairs of the same size fused in one call of the method (pairs of
            other sizes run in their own batches). Networks may differ by float rounding between
            batch sizes; the classical methods do not.
        queue_size: fused images waiting for the writer thread (default ``max(2 * batch_size, 4)``).
            With ``workers=0, batch_size=1`` there is no pipeline: each pair is read, fused and
            written in turn (:func:`ivfusion.fuse`).
        report: write the (merged) report to this JSON file (rank 0 only), see
            :meth:`FuseDirReport.to_json`.
        align: one fixed registration for every pair (a camera rig): a
            :class:`~ivfusion.registration.Registration` or the path of a saved one, or a model
            name (``"affine"``, ``"homography"``, ``"deformable"``) to estimate it once from the
            first ``align_pairs`` pairs (sorted by stem) with
            :func:`ivfusion.registration.register_pairs`. Outside the warped infrared's footprint the
            fused images are the visible ones. The registration used is ``report.registration``.
        align_pairs: pairs the registration is estimated from (``align`` a model name).
        fuse_kwargs: passed to :func:`ivfusion.fuse` (``device``, ``tile_size``, ``weights``,
            ``backend``, options ...).

    Under ``torchrun`` (``WORLD_SIZE > 1``) each rank fuses every ``WORLD_SIZE``-th pair on its own
    device (``cuda:LOCAL_RANK`` when CUDA is available and ``device`` is not given, else the CPU with
    gloo) and writes its own outputs; the returned report is merged over all ranks on every rank.

    Each output is written atomically (temporary name, then rename), so an interrupted run never
    leaves a partial image under an output name; the temporaries a killed run left are deleted by the
    next run. When no output can be written (no permission, a read-only or full disk) the run stops
    with that ``OSError``, naming the file; the outputs written so far stay (``existing="skip"``
    resumes). Worker processes exit when this process dies, even by ``SIGKILL``. A pair that fails
    (unreadable file, size mismatch) is recorded in ``report.failed`` and the others continue;
    unmatched files are listed in ``report.unmatched_ir`` / ``report.unmatched_vis``.
    ``ir_dir`` and ``vis_dir`` being the same folder is a ``ValueError``.
    """
    if existing not in ("error", "skip", "overwrite"):
        raise ValueError(f"existing must be 'error', 'skip' or 'overwrite', got {existing!r}")
    for name, value, low in (("workers", workers, 0), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if queue_size is not None and (not isinstance(queue_size, int) or queue_size < 1):
        raise ValueError(f"queue_size must be an int >= 1 or None, got {queue_size!r}")
    _check_layout_args(fuse_kwargs.get("resize"), fuse_kwargs.get("tile_size"),
                       fuse_kwargs.get("tile_overlap", DEFAULT_TILE_OVERLAP))
    _check_align_resize(align, fuse_kwargs.get("resize"))
    if not isinstance(align_pairs, int) or isinstance(align_pairs, bool) or align_pairs < 1:
        raise ValueError(f"align_pairs must be an int >= 1, got {align_pairs!r}")
    if not ext.startswith("."):
        ext = "." + ext
    if is_same_file(ir_dir, vis_dir):
        raise ValueError(f"ir_dir and vis_dir are the same folder ({str(ir_dir)!r}): every image would be "
                         "fused with itself; give the infrared and the visible folders")
    pairs, unmatched_ir, unmatched_vis = pair_files(ir_dir, vis_dir)
    out = Path(out_dir)
    targets = [(stem, ir, vis, out / f"{stem}{ext}") for stem, ir, vis in pairs]
    for stem, ir, vis, target in targets:
        source = next((src for src in (ir, vis) if is_same_file(target, src)), None)
        if source is not None:
            raise ValueError(f"out_dir: the output for {stem!r} would be written over its input "
                             f"{str(source)!r}; choose another out_dir or ext")
    if existing == "error":
        clash = [t for *_, t in targets if t.exists()]
        if clash:
            more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
            raise FileExistsError(
                f"out_dir: {len(clash)} output(s) exist already ({', '.join(p.name for p in clash[:3])}{more}); "
                "choose existing='skip' or 'overwrite'"
            )
    registration = _rig_registration(align, pairs, align_pairs, fuse_kwargs.get("ir_range"))
    info = dist_info()
    fuse_kwargs = {**fuse_kwargs, "device": rank_device(fuse_kwargs.get("device"))}
    if registration is not None:
        fuse_kwargs["align"] = registration
    created = init_distributed(fuse_kwargs["device"]) if info.distributed else False
    try:
        # Build the method once (weights, device) so errors surface before any file is written.
        fuser = _Fuser(method, fuse_kwargs)
        fuser.build()
        if targets:
            check_writable_folder(out, "out_dir")  # a read-only, full or foreign folder fails here, not per pair
        barrier()  # every rank has checked the outputs before any rank writes one
        local = FuseDirReport()
        todo = []
        mine = shard(targets)
        remove_stale_temporaries([t for *_, t in mine])
        for item in mine:
            if existing == "skip" and item[3].exists():
                local.skipped.append(item[3])
            else:
                todo.append(item)
        with progress_bar(len(todo), "fusing", unit="pair", enabled=progress and info.is_main) as bar:
            if workers == 0 and batch_size == 1:
                for stem, ir, vis, target in todo:
                    try:
                        local.written.append(write_image(target, fuse(ir, vis, method, **fuse_kwargs)))
                    except (ValueError, TypeError, OSError) as exc:
                        if isinstance(exc, OSError) and is_write_fatal(exc):
                            raise
                        local.failed.append((stem, str(exc)))
                    bar.update(1)
            else:
                size = queue_size if queue_size is not None else max(2 * batch_size, 4)
                _pipeline(todo, fuser, workers, batch_size, size, bar, local)
        merged = FuseDirReport(unmatched_ir=unmatched_ir, unmatched_vis=unmatched_vis, registration=registration)
        for rank, part in enumerate(gather_objects(local)):
            merged.written.extend(part.written)
            merged.skipped.extend(part.skipped)
            merged.failed.extend(part.failed)
            merged.per_rank[rank] = len(part.written)
        merged.written.sort()
        merged.skipped.sort()
        merged.failed.sort()
        if report is not None and info.is_main:
            text = json.dumps(merged.to_json(), indent=2) + "\n"
            write_atomic(Path(report), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return merged
    finally:
        if created:
            dist.destroy_process_group()
