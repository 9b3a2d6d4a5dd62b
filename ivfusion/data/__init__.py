"""Small sample pairs bundled with the package, like ``skimage.data``: every example, notebook and
docs page fuses these, so nothing a user runs needs a dataset or a download.

>>> import ivfusion
>>> ir, vis = ivfusion.data.sample_pair("night")       # (480, 640) uint8, (480, 640, 3) uint8
>>> fused = ivfusion.fuse(ir, vis)                      # doctest: +SKIP

* ``day``: MSRS ``00002D``, a campus road at dusk, 640x480; infrared grey PNG, visible RGB (JPEG,
  quality 95). MSRS (Tang et al., PIAFusion, 2022), MIT licence.
* ``night``: MSRS ``00038N``, people and a car behind headlight glare at night, 640x480; same formats
  and terms.
* ``mri_pet``: an axial brain slice of the Harvard Whole Brain Atlas (Johnson and Becker), 256x256;
  PET pseudo-colour RGB in the ``ir`` slot, MRI grey in the ``vis`` slot. Research and education
  use; cite the atlas.

Both MSRS pairs belong to the validation split the bundled weights were held back from
(``ivfusion/train/mixed_val.json``): the networks never trained on them. ``ATTRIBUTION.md`` next
to the files gives the full citations.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from .._names import unknown_name
from ..io import read_image

__all__ = ["SAMPLES_DIR", "SampleInfo", "list_samples", "sample_info", "sample_pair"]

#: Folder holding the sample files.
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


@dataclass(frozen=True)
class SampleInfo:
    """One bundled pair: its files, a short description and its source's terms."""

    name: str
    #: The image for the ``ir`` argument of :func:`ivfusion.fuse` (infrared, or PET/CT/SPECT).
    ir: Path
    #: The image for the ``vis`` argument (visible, or MRI).
    vis: Path
    description: str
    source: str
    license: str


_SAMPLES: Dict[str, SampleInfo] = {
    info.name: info
    for info in (
        SampleInfo("day", SAMPLES_DIR / "day_ir.png", SAMPLES_DIR / "day_vis.jpg",
                   "campus road at dusk (MSRS 00002D), 640x480, infrared grey + visible RGB",
                   "MSRS, Tang et al., PIAFusion, Information Fusion 83-84 (2022)", "MIT"),
        SampleInfo("night", SAMPLES_DIR / "night_ir.png", SAMPLES_DIR / "night_vis.jpg",
                   "people and a car behind headlight glare at night (MSRS 00038N), 640x480, infrared grey + "
                   "visible RGB", "MSRS, Tang et al., PIAFusion, Information Fusion 83-84 (2022)", "MIT"),
        SampleInfo("mri_pet", SAMPLES_DIR / "mri_pet_pet.png", SAMPLES_DIR / "mri_pet_mri.png",
                   "axial brain slice, 256x256: PET pseudo-colour RGB (ir slot) + MRI grey (vis slot)",
                   "The Whole Brain Atlas, K. A. Johnson and J. A. Becker, Harvard Medical School",
                   "research and education use; cite the atlas"),
    )
}


def list_samples() -> List[str]:
    """Names of the bundled sample pairs, e.g. ``["day", "night", "mri_pet"]``."""
    return list(_SAMPLES)


def sample_info(name: str) -> SampleInfo:
    """The :class:`SampleInfo` of one sample; ``ValueError`` naming the samples for an unknown name."""
    try:
        return _SAMPLES[name]
    except (KeyError, TypeError):
        raise ValueError(f"name: {unknown_name('sample', name, _SAMPLES)}") from None


def sample_pair(name: str = "night", *, as_path: bool = False
                ) -> Union[Tuple[np.ndarray, np.ndarray], Tuple[Path, Path]]:
    """One bundled pair in ``(ir, vis)`` order, ready for :func:`ivfusion.fuse`.

    Args:
        name: one of :func:`list_samples`.
        as_path: return the two file paths instead of decoded arrays (for the CLI, or code that
            wants to read the files itself).

    Returns:
        ``(ir, vis)``: ``uint8`` arrays, ``(H, W)`` for a grey image and ``(H, W, 3)`` RGB for a
        colour one (``day``/``night``: ``(480, 640)`` and ``(480, 640, 3)``; ``mri_pet``: PET
        ``(256, 256, 3)`` and MRI ``(256, 256)``), or the two ``Path`` objects.
    """
    info = sample_info(name)
    if as_path:
        return info.ir, info.vis
    return read_image(info.ir, name="ir"), read_image(info.vis, name="vis")
