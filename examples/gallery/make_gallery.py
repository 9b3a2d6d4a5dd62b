"""Gallery images: infrared | visible | fused, for three validation pairs, one PNG per method.

    python examples/gallery/make_gallery.py --val ../shared/data/ivif/val/roadscene --methods refinefuse f3net

Writes ``examples/gallery/<method>.png`` (rows = pairs; columns = infrared, visible, fused), each
image scaled to a common height. The pairs are fixed (``--stems``) so galleries are comparable.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import ivfusion
from ivfusion.io import read_image, write_image

DEFAULT_STEMS = ("FLIR_04688", "FLIR_06993", "FLIR_08721")


def _tile(img: np.ndarray, height: int) -> Image.Image:
    pil = Image.fromarray(img).convert("RGB")
    return pil.resize((round(pil.width * height / pil.height), height), Image.LANCZOS)


def gallery(val: Path, stems, method: str, height: int = 200, device=None) -> np.ndarray:
    rows = []
    for stem in stems:
        ir_path = next((val / "ir").glob(f"{stem}.*"))
        vis_path = next((val / "vi").glob(f"{stem}.*"))
        ir, vis = read_image(ir_path), read_image(vis_path)
        fused = ivfusion.fuse(ir, vis, method=method, device=device)
        tiles = [_tile(a, height) for a in (ir, vis, fused)]
        row = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), height), "white")
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width + 8
        rows.append(row)
    width = max(r.width for r in rows)
    header = 24
    canvas = Image.new("RGB", (width, header + sum(r.height + 8 for r in rows)), "white")
    draw = ImageDraw.Draw(canvas)
    third = rows[0].width // 3
    for i, label in enumerate(("infrared", "visible", f"fused: {method}")):
        draw.text((i * third + 6, 6), label, fill="black")
    y = header
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + 8
    return np.asarray(canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", default="../shared/data/ivif/val/roadscene")
    parser.add_argument("--methods", nargs="+", required=True)
    parser.add_argument("--stems", nargs=3, default=DEFAULT_STEMS)
    parser.add_argument("--out-dir", default=str(Path(__file__).parent))
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    for method in args.methods:
        path = write_image(Path(args.out_dir) / f"{method}.png", gallery(Path(args.val), args.stems, method, device=args.device))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
