"""How often ``fuse`` warns that the inputs may be swapped (a colour image in the infrared slot).

    python benchmarks/swap_warning.py [--data ../shared/data]

``ivfusion.color.looks_like_photograph`` decides: a colour image whose chroma is weak and mostly not
explained by its brightness looks like a photograph (visible image in the ``ir`` slot: warn); one whose
chroma follows its brightness or is strong looks like pseudo-colour (a PET/SPECT scan, a thermal
camera's palette: a legitimate ``ir`` input, no warning). Prints, per set of images, how many would
warn and the range of the two statistics. Sets: every visible image of ``ivif/train`` and
``ivif/val/roadscene`` (should warn), every PET image of ``medical/MRI_PET`` and the bundled sample
(should not), and infrared images of MSRS, LLVIP and TNO rendered with four thermal palettes (should
not).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from PIL import Image

import ivfusion
from ivfusion.color import PHOTO_MAX_CHROMA_RMS, PHOTO_MAX_EXPLAINED, chroma_statistics, looks_like_photograph

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Thermal palettes as colour stops from cold to hot (RGB, 0..255), interpolated linearly to 256 entries.
PALETTES = {
    "ironbow": [(0, 0, 0), (32, 0, 140), (204, 0, 119), (255, 165, 0), (255, 255, 200)],
    "jet": [(0, 0, 128), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 0), (128, 0, 0)],
    "rainbow": [(255, 0, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)],
    "hot": [(0, 0, 0), (255, 0, 0), (255, 255, 0), (255, 255, 255)],
}


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255


def _lut(stops: List[tuple]) -> np.ndarray:
    x = np.linspace(0, 1, len(stops))
    s = np.asarray(stops, float)
    return np.stack([np.interp(np.linspace(0, 1, 256), x, s[:, c]) for c in range(3)], -1).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args()
    train = args.data / "ivif" / "train"
    sets: Dict[str, List[np.ndarray]] = {}
    for domain in ("msrs", "llvip", "roadscene", "tno"):
        sets[f"visible {domain}"] = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((train / domain / "vi").iterdir())]
    sets["visible val/roadscene"] = [np.asarray(Image.open(p).convert("RGB"))
                                     for p in sorted((args.data / "ivif" / "val" / "roadscene" / "vi").iterdir())]
    sets["PET (MRI_PET)"] = [np.asarray(Image.open(p).convert("RGB"))
                            for p in sorted((args.data / "medical" / "MRI_PET" / "PET").iterdir())]
    sets["PET (bundled sample)"] = [ivfusion.data.sample_pair("mri_pet")[0]]
    infrared = [np.asarray(Image.open(p).convert("L")) for d in ("msrs", "llvip", "tno")
                for p in sorted((train / d / "ir").iterdir())[:30]]
    for name, stops in PALETTES.items():
        sets[f"infrared, {name} palette"] = [_lut(stops)[ir] for ir in infrared]
    print(f"thresholds: explained < {PHOTO_MAX_EXPLAINED}, chroma RMS < {PHOTO_MAX_CHROMA_RMS}\n")
    print("| images | n | warned | explained (min / median / max) | chroma RMS (min / median / max) |")
    print("|---|---:|---:|---|---|")
    for name, images in sets.items():
        colour = [im for im in images if np.ptp(im.astype(np.int16), axis=-1).max() > 0]  # grey ones never warn
        stats = np.array([chroma_statistics(_tensor(im)) for im in colour]) if colour else np.zeros((0, 2))
        warned = sum(looks_like_photograph(_tensor(im)) for im in colour)
        cells = [" / ".join(f"{v:.3f}" for v in (c.min(), np.median(c), c.max())) if len(c) else "–"
                 for c in stats.T] if len(stats) else ["– (all grey)", "–"]
        print(f"| {name} | {len(images)} | {warned} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
