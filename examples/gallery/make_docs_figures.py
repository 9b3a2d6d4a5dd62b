"""The pictures of the README and the documentation site, made from the bundled sample pairs.

    python examples/gallery/make_docs_figures.py            # everything (about a minute on a 2-core CPU)
    python examples/gallery/make_docs_figures.py --only readme methods

Writes, under ``docs/assets/``:

* ``result.jpg``: the README's first picture: infrared | visible | fused (the default method) for
  the ``day`` and ``night`` samples;
* ``methods/<method>.jpg``: each method's fusion of the ``day`` and ``night`` samples side by side
  (the methods page);
* ``cards/<weight>-<sha256[:8]>.jpg``: each weight's model-card picture
  (:func:`ivfusion.cards.comparison_picture`); the file name carries the weight's checksum, so the
  docs build notices a picture made for another file (``docs/hooks.py``).

Every picture is a JPEG (quality 85) written atomically; existing files are replaced.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import ivfusion
from ivfusion import cards, pretrained
from ivfusion.io import write_atomic

ASSETS = Path(__file__).resolve().parents[2] / "docs" / "assets"
CELL_WIDTH = 320  # pixels per image in the README picture and the method strips
LABEL_HEIGHT = 22
QUALITY = 85
PARTS = ("readme", "methods", "cards")


def card_picture_path(name: str) -> Path:
    """Where the docs expect the card picture of the weight ``name`` (checksum in the name)."""
    return ASSETS / "cards" / f"{name}-{pretrained.get_weight_info(name).sha256[:8]}.jpg"


def _rgb(image: np.ndarray, width: int) -> Image.Image:
    pil = Image.fromarray(image).convert("RGB")
    return pil.resize((width, round(pil.height * width / pil.width)), Image.LANCZOS)


def _mosaic(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], width: int) -> Image.Image:
    """Rows of images (each resized to ``width``), a strip of column titles on top, 4-pixel gaps."""
    tiles = [[_rgb(im, width) for im in row] for row in rows]
    height = max(t.height for row in tiles for t in row)
    gap = 4
    canvas = Image.new("RGB", (len(titles) * (width + gap) - gap, LABEL_HEIGHT + len(rows) * (height + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for c, title in enumerate(titles):
        x = c * (width + gap) + (width - draw.textlength(title, font=font)) / 2
        draw.text((x, 3), title, fill="black", font=font)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            canvas.paste(tile, (c * (width + gap), LABEL_HEIGHT + r * (height + gap)))
    return canvas


def _save(image: Image.Image, path: Path) -> Path:
    write_atomic(path, lambda tmp: image.save(tmp, format="JPEG", quality=QUALITY, optimize=True))
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, {image.width}x{image.height})")
    return path


def readme_picture() -> Path:
    rows = []
    for name in ("day", "night"):
        ir, vis = ivfusion.data.sample_pair(name)
        rows.append([ir, vis, ivfusion.fuse(ir, vis)])
    method = ivfusion.fusion.DEFAULT_METHOD
    return _save(_mosaic(rows, ["infrared", "visible", f"fused ({method}, the default)"], CELL_WIDTH),
                 ASSETS / "result.jpg")


def method_pictures(methods: Sequence[str]) -> List[Path]:
    pairs = [ivfusion.data.sample_pair(name) for name in ("day", "night")]
    written = []
    for method in methods:
        fused = [ivfusion.fuse(ir, vis, method=method, device="cpu") for ir, vis in pairs]
        written.append(_save(_mosaic([fused], [f"{method}: day", f"{method}: night"], CELL_WIDTH),
                             ASSETS / "methods" / f"{method}.jpg"))
    return written


def card_pictures(names: Sequence[str]) -> List[Path]:
    written = []
    for name in names:
        path = card_picture_path(name)
        for stale in path.parent.glob(f"{name}-*.jpg"):
            if stale != path:
                stale.unlink()
        written.append(cards.comparison_picture(name, path))
        print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="which pictures to make")
    args = parser.parse_args()
    if "readme" in args.only:
        readme_picture()
    if "methods" in args.only:
        method_pictures(ivfusion.list_methods(available_only=True))
    if "cards" in args.only:
        card_pictures(pretrained.list_weights())


if __name__ == "__main__":
    main()
