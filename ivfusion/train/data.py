"""Training data: aligned IR/visible pairs decoded once into memory, cropped and augmented as a pure
function of ``(seed, epoch, index)``.

* :func:`find_pairs` lists the pairs of one or more folders, each with ``ir/`` and ``vi/``
  sub-folders holding images with the same file stem.
* :func:`load_luma` turns an image file into the 8-bit luminance the networks see (an infrared
  stored as 3-channel grey becomes 1 channel; a colour visible image becomes its BT.601 Y).
* :func:`vsm_saliency` is the visual saliency map FISCNet's loss uses (MODELS.md 3.8).
* :class:`PairedFusionDataset` caches the uint8 luma arrays (and the 8-bit saliency maps when asked)
  and serves ``dataset[(epoch, index)]`` crops; every random choice comes from a generator seeded by
  ``(seed, epoch, index)``, so a sample never depends on the worker that makes it or on what was
  drawn before.
* :class:`StepBatchSampler` yields the batches of optimiser step ``s`` as lists of
  ``(epoch, index)``; it can start at any step, which is what makes a resumed run see exactly the
  data of the uninterrupted one.

RefineFuse's contrast masks are not made here: the loss computes them batched on the training
device (:func:`ivfusion.train.losses.contrast_mask`); its infrared saliency (``"ir_bright"``) needs
the full image and is cached here like FISCNet's maps.
"""
from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .._workers import die_with_parent
from ..color import rgb_to_luma
from ..io import ImageLike, is_grey, pair_files, to_chw_tensor, to_unit_range

__all__ = [
    "PairFiles",
    "data_folder_name",
    "find_pairs",
    "load_luma",
    "vsm_saliency",
    "ir_bright_mask",
    "sample_rng",
    "epoch_permutation",
    "PairedFusionDataset",
    "StepBatchSampler",
    "make_loader",
    "batch_to_device",
    "DevicePairs",
    "CROP_MODES",
    "AUGMENTATIONS",
    "SALIENCY_MODES",
]

CROP_MODES = ("random", "center")
#: ``"none"``; ``"hflip"`` (horizontal flip, p = 0.5); ``"dihedral"`` (horizontal flip, vertical
#: flip and transpose, each p = 0.5: the 8 rotations/reflections by multiples of 90 degrees, uniformly).
AUGMENTATIONS = ("none", "hflip", "dihedral")
#: ``"vsm"``: the visible image's VSM map (FISCNet's default); ``"vsm_binary"``: ``1[VSM(V) > VSM(I)]``;
#: ``"ir_bright"``: RefineFuse's stand-in for its salient-object mask, ``1[I > mean(I) + 2 std(I)]`` over
#: the full infrared image (:func:`ir_bright_mask`).
SALIENCY_MODES = ("vsm", "vsm_binary", "ir_bright")

# SeedSequence spawn-key tags separating the random streams.
_TAG_PERMUTATION = 0
_TAG_SAMPLE = 1


@dataclass(frozen=True)
class PairFiles:
    """One aligned pair on disk."""

    stem: str
    ir: Path
    vis: Path
    #: The folder given to :func:`find_pairs` (the one holding ``ir/`` and ``vi/``).
    folder: Path


def data_folder_name(folder: str) -> str:
    """Short name of a data folder for the manifest: the path from ``ivif``/``medical`` on
    (``.../data/ivif/train/tno`` -> ``ivif/train/tno``), else the folder's own name."""
    parts = Path(folder).expanduser().resolve().parts
    for anchor in ("ivif", "medical"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor):])
    return parts[-1] if parts else str(folder)


def find_pairs(folders: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> List[PairFiles]:
    """The pairs of every folder (each with ``ir/`` and ``vi/`` sub-folders), matched by file stem.

    Folders are taken in the given order, pairs sorted by stem within a folder. Images without a
    partner are skipped with a warning.

    Raises:
        FileNotFoundError: a folder or its ``ir/``/``vi/`` sub-folder does not exist.
        ValueError: no folder given, or a folder without any pair.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    folders = [Path(f).expanduser() for f in folders]
    if not folders:
        raise ValueError("folders: expected at least one data folder")
    out: List[PairFiles] = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder: no such directory: {str(folder)!r}")
        for sub in ("ir", "vi"):
            if not (folder / sub).is_dir():
                raise FileNotFoundError(
                    f"data folder {str(folder)!r}: expected sub-folders 'ir/' and 'vi/' with matching file stems"
                )
        pairs, lone_ir, lone_vis = pair_files(folder / "ir", folder / "vi")
        if lone_ir or lone_vis:
            warnings.warn(
                f"{folder}: skipping {len(lone_ir)} infrared and {len(lone_vis)} visible image(s) without a partner",
                stacklevel=2,
            )
        if not pairs:
            raise ValueError(f"data folder {str(folder)!r}: no image pairs found in ir/ and vi/")
        out.extend(PairFiles(stem, ir, vis, folder) for stem, ir, vis in pairs)
    return out


def load_luma(image: ImageLike, *, name: str = "image") -> np.ndarray:
    """The 8-bit luminance a network sees, ``(H, W)`` ``uint8``.

    A grey image (1 channel, or 3 equal channels such as an infrared saved as RGB) gives its only
    channel; a colour image its BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, rounded. 16-bit and
    float images are scaled to [0, 1] as :func:`ivfusion.fuse` does and quantised to 8 bits.
    """
    chw, kind = to_chw_tensor(image, name=name)
    if kind == "uint8" and is_grey(chw):
        return np.ascontiguousarray(chw[0].cpu().numpy())
    x = to_unit_range(chw.cpu(), kind, name=name)
    y = x[0] if is_grey(x) else rgb_to_luma(x)
    return (y * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def vsm_saliency(y: np.ndarray) -> np.ndarray:
    """Visual saliency map (Ma et al. 2017; MODELS.md 3.8) of an 8-bit grey image.

    ``S(j) = sum_k h_k |j - k|`` over the 256-bin histogram ``h``; each pixel gets ``S`` of its grey
    level, min-max normalised over the image to [0, 1] (all zero for a constant image). Returns
    ``float64`` ``(H, W)``; quantise with ``round(255 m)`` for the 8-bit map the loss uses.
    """
    if not isinstance(y, np.ndarray) or y.dtype != np.uint8 or y.ndim != 2:
        raise TypeError(f"y: expected a 2-D uint8 array, got {getattr(y, 'dtype', type(y).__name__)} "
                        f"{getattr(y, 'shape', '')}")
    hist = np.bincount(y.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    lut = np.abs(levels[:, None] - levels[None, :]) @ hist  # S(j) for every level j
    present = hist > 0
    lo, hi = lut[present].min(), lut[present].max()
    if hi <= lo:
        return np.zeros(y.shape, dtype=np.float64)
    return ((lut - lo) / (hi - lo))[y]


def ir_bright_mask(ir: np.ndarray, k: float = 2.0) -> np.ndarray:
    """Bright thermal targets of an 8-bit infrared image: ``1[I > mean(I) + k std(I)]``, ``bool (H, W)``.

    RefineFuse's loss wants a salient-object mask ``M_sal`` (people, vehicles) that our data has no
    labels for (MODELS.md 5.7). Warm bodies and engines are the brightest few per cent of a thermal
    image; a threshold relative to the image's own statistics finds them at day and night without
    a tuned absolute level (on the training folders it marks 1.3 % (RoadScene) to 4.6 % (LLVIP) of
    the pixels). Computed on the full image, so a crop sees the same targets as the whole scene.
    """
    x = ir.astype(np.float64)
    return x > x.mean() + k * x.std()


def _saliency_u8(ir: np.ndarray, vis: np.ndarray, mode: str) -> np.ndarray:
    if mode == "ir_bright":
        return np.where(ir_bright_mask(ir), 255, 0).astype(np.uint8)
    if mode == "vsm":
        return np.round(vsm_saliency(vis) * 255.0).astype(np.uint8)
    s_vis = np.round(vsm_saliency(vis) * 255.0)
    s_ir = np.round(vsm_saliency(ir) * 255.0)
    return np.where(s_vis > s_ir, 255, 0).astype(np.uint8)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` in ``epoch``: a pure function of the three numbers."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_SAMPLE, epoch, index)))


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The visiting order of ``n`` items in ``epoch`` (a pure function of ``seed`` and ``epoch``)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TAG_PERMUTATION, epoch)))
    return rng.permutation(n)


def _pad_to(a: np.ndarray, crop: int) -> np.ndarray:
    # Reflect-pad bottom/right up to the crop size (numpy reflects repeatedly when the pad exceeds
    # the side, so any size works).
    ph, pw = max(crop - a.shape[0], 0), max(crop - a.shape[1], 0)
    if ph == 0 and pw == 0:
        return a
    return np.pad(a, ((0, ph), (0, pw)), mode="reflect" if min(a.shape) > 1 else "edge")


class PairedFusionDataset(Dataset):
    """In-memory aligned pairs serving square crops.

    ``dataset[(epoch, index)]`` (or ``dataset[index]`` = epoch 0) returns a dict of ``uint8`` tensors
    ``(1, crop, crop)``: ``"ir"``, ``"vis"`` and, with ``saliency``, ``"mask"`` (the visible saliency
    map ``M_v`` on 0..255). Divide by 255 for the [0, 1] network inputs (:func:`batch_to_device`).

    Args:
        folders: data folders (see :func:`find_pairs`), or a list of :class:`PairFiles`.
        crop: side of the square crop in pixels; images with a smaller side are reflect-padded
            (bottom/right) to it once, when cached.
        crop_mode: ``"random"`` (uniform position) or ``"center"`` (``(H - crop) // 2`` ...).
        augment: one of :data:`AUGMENTATIONS`, applied identically to every map of the pair.
        saliency: ``None`` or one of :data:`SALIENCY_MODES`; computed once per pair on the **full**
            images at cache time, 8-bit quantised, then cropped/augmented with the pair.
        seed: base seed of the per-sample generators (:func:`sample_rng`).
        workers: threads used to decode the images once.
    """

    def __init__(
        self,
        folders: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], Sequence[PairFiles]],
        *,
        crop: int = 128,
        crop_mode: str = "random",
        augment: str = "none",
        saliency: Optional[str] = None,
        seed: int = 0,
        workers: int = 4,
    ) -> None:
        if not isinstance(crop, int) or isinstance(crop, bool) or crop < 1:
            raise ValueError(f"crop: expected a positive int, got {crop!r}")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode: expected one of {CROP_MODES}, got {crop_mode!r}")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment: expected one of {AUGMENTATIONS}, got {augment!r}")
        if saliency is not None and saliency not in SALIENCY_MODES:
            raise ValueError(f"saliency: expected None or one of {SALIENCY_MODES}, got {saliency!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        if isinstance(folders, (list, tuple)) and folders and all(isinstance(p, PairFiles) for p in folders):
            self.pairs: List[PairFiles] = list(folders)
        else:
            self.pairs = find_pairs(folders)  # type: ignore[arg-type]
        self.crop = crop
        self.crop_mode = crop_mode
        self.augment = augment
        self.saliency = saliency
        self.seed = seed
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            cached = list(pool.map(self._decode, self.pairs))
        #: Original (unpadded) ``(H, W)`` of every pair.
        self.sizes: List[Tuple[int, int]] = [c[0] for c in cached]
        #: Cached maps per pair: ``[ir, vis]`` or ``[ir, vis, mask]``, ``uint8``, padded to the crop.
        self.maps: List[List[np.ndarray]] = [c[1] for c in cached]

    def _decode(self, pair: PairFiles) -> Tuple[Tuple[int, int], List[np.ndarray]]:
        ir = load_luma(pair.ir, name=f"ir image {pair.ir}")
        vis = load_luma(pair.vis, name=f"visible image {pair.vis}")
        if ir.shape != vis.shape:
            raise ValueError(
                f"pair {pair.stem!r} in {str(pair.folder)!r}: infrared is {ir.shape[0]}x{ir.shape[1]} but visible is "
                f"{vis.shape[0]}x{vis.shape[1]} (HxW); training pairs must be aligned"
            )
        maps = [ir, vis]
        if self.saliency is not None:
            maps.append(_saliency_u8(ir, vis, self.saliency))
        return ir.shape, [np.ascontiguousarray(_pad_to(m, self.crop)) for m in maps]

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def keys(self) -> Tuple[str, ...]:
        return ("ir", "vis", "mask") if self.saliency is not None else ("ir", "vis")

    def crop_params(self, epoch: int, index: int) -> Tuple[int, int, bool, bool, bool]:
        """``(top, left, hflip, vflip, transpose)`` of pair ``index``'s crop in ``epoch``: every random
        choice of a sample, drawn from :func:`sample_rng` (so the CPU and the device paths agree)."""
        if not 0 <= index < len(self.pairs):
            raise IndexError(f"index {index} out of range for {len(self.pairs)} pairs")
        h, w = self.maps[index][0].shape
        c = self.crop
        rng = sample_rng(self.seed, epoch, index)
        if self.crop_mode == "random":
            top = int(rng.integers(0, h - c + 1))
            left = int(rng.integers(0, w - c + 1))
        else:
            top, left = (h - c) // 2, (w - c) // 2
        hflip = vflip = transpose = False
        if self.augment == "hflip":
            hflip = bool(rng.random() < 0.5)
        elif self.augment == "dihedral":
            hflip, vflip, transpose = (bool(b) for b in rng.random(3) < 0.5)
        return top, left, hflip, vflip, transpose

    def sample(self, epoch: int, index: int) -> Dict[str, torch.Tensor]:
        """Crop + augmentation of pair ``index`` for ``epoch`` (deterministic)."""
        top, left, hflip, vflip, transpose = self.crop_params(epoch, index)
        c = self.crop
        views = [m[top : top + c, left : left + c] for m in self.maps[index]]
        if hflip:
            views = [v[:, ::-1] for v in views]
        if vflip:
            views = [v[::-1, :] for v in views]
        if transpose:
            views = [v.T for v in views]
        return {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in zip(self.keys, views)}

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        if isinstance(key, tuple):
            epoch, index = key
        else:
            epoch, index = 0, key
        return self.sample(int(epoch), int(index))


class StepBatchSampler(Sampler):
    """Batches of ``(epoch, index)`` keys for optimiser steps ``start_step .. total_steps - 1``.

    Each epoch visits every pair once in the order :func:`epoch_permutation` gives (sorted order
    with ``shuffle=False``), cut into ``batches_per_epoch`` batches (the last one smaller unless
    ``drop_last``). Step ``s`` belongs to epoch ``s // batches_per_epoch``. Starting at a later
    step yields exactly the tail of the full sequence.

    Under ``torchrun`` (``world_size > 1``) rank ``r`` gets items ``r, r + world_size, ...`` of
    every global batch, so the ranks together see exactly the single-process batches.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        total_steps: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        for arg, value, low in (("num_items", num_items, 1), ("batch_size", batch_size, 1),
                                ("total_steps", total_steps, 0), ("start_step", start_step, 0),
                                ("world_size", world_size, 1), ("rank", rank, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{arg}: expected an int >= {low}, got {value!r}")
        if drop_last and batch_size > num_items:
            raise ValueError(f"batch_size: {batch_size} exceeds the {num_items} pairs and drop_last is set")
        self.num_items = num_items
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.start_step = min(start_step, total_steps)
        if rank >= world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size ({world_size}), got {rank}")
        self.rank = rank
        self.world_size = world_size

    @property
    def batches_per_epoch(self) -> int:
        n, b = self.num_items, self.batch_size
        return n // b if self.drop_last else math.ceil(n / b)

    def _order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            return epoch_permutation(self.seed, epoch, self.num_items)
        return np.arange(self.num_items)

    def batch_at(self, step: int) -> List[Tuple[int, int]]:
        """The keys of the batch of optimiser step ``step`` (0-based)."""
        epoch, b = divmod(step, self.batches_per_epoch)
        order = self._order(epoch)[b * self.batch_size : (b + 1) * self.batch_size]
        return [(epoch, int(i)) for i in order]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        bpe = self.batches_per_epoch
        epoch, order = -1, None
        for step in range(self.start_step, self.total_steps):
            e, b = divmod(step, bpe)
            if e != epoch:
                epoch, order = e, self._order(e)
            keys = [(e, int(i)) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]
            yield keys[self.rank :: self.world_size]  # this rank's share of the global batch

    def __len__(self) -> int:
        return self.total_steps - self.start_step


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the workers only slice uint8 arrays


def make_loader(
    dataset: PairedFusionDataset, sampler: StepBatchSampler, *, workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` over ``sampler``'s batches (uint8 tensors, collated)."""
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected an int >= 0, got {workers!r}")
    kwargs = {}
    if workers > 0:
        kwargs = dict(persistent_workers=False, prefetch_factor=4, worker_init_fn=die_with_parent(_worker_init))
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory, **kwargs)


def batch_to_device(
    batch: Dict[str, torch.Tensor], device: torch.device, *, channels_last: bool = False
) -> Dict[str, torch.Tensor]:
    """uint8 batch -> float32 ``[0, 1]`` tensors on ``device`` (the division happens on the device)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = {}
    for k, v in batch.items():
        x = v.to(device, non_blocking=True).float().div_(255.0)
        out[k] = x.contiguous(memory_format=fmt)
    return out


class DevicePairs:
    """The training data on the training device: :class:`PairedFusionDataset`'s decoded ``uint8``
    maps copied there once, crops cut, flipped and batched there.

    ``pairs.batch(keys)`` equals ``batch_to_device(collate(dataset[k] for k in keys), device)``
    exactly (same crops and flips, from :meth:`PairedFusionDataset.crop_params`), without decoding,
    collating or copying anything on the host per step, so a GPU step is not bound by the CPU.
    Memory: the dataset's decoded maps once (``uint8``; about 170 MB for ``ivif/train``, 260 MB
    with saliency maps).
    """

    def __init__(self, dataset: PairedFusionDataset, device: Union[str, torch.device], *,
                 channels_last: bool = False) -> None:
        if not isinstance(dataset, PairedFusionDataset):
            raise TypeError(f"dataset: expected a PairedFusionDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        #: Per pair, its maps stacked as one ``(K, H, W)`` uint8 tensor on the device.
        self.maps = [torch.from_numpy(np.stack(m)).to(self.device) for m in dataset.maps]

    def sample(self, epoch: int, index: int) -> torch.Tensor:
        """Pair ``index``'s crop for ``epoch``: ``(K, crop, crop)`` ``uint8`` on the device."""
        top, left, hflip, vflip, transpose = self.dataset.crop_params(epoch, index)
        c = self.dataset.crop
        x = self.maps[index][:, top : top + c, left : left + c]
        dims = [d for d, on in ((-1, hflip), (-2, vflip)) if on]
        if dims:
            x = x.flip(dims)
        return x.transpose(-1, -2) if transpose else x

    def batch(self, keys: Sequence[Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        """``{"ir", "vis"[, "mask"]}``: float32 ``(B, 1, crop, crop)`` in ``[0, 1]`` on the device."""
        stacked = torch.stack([self.sample(int(e), int(i)) for e, i in keys]).float().div_(255.0)
        return {k: stacked[:, j : j + 1].contiguous(memory_format=self.memory_format)
                for j, k in enumerate(self.dataset.keys)}
