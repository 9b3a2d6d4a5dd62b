"""Gallery: comparison grids of the fusion methods, one per domain of the mixed validation split.

    python examples/gallery/make_gallery.py                      # all methods, as committed (slow on CPU)
    python examples/gallery/make_gallery.py --methods guided laplacian average --out-dir /tmp/g --cell 128

Writes, into ``--out-dir`` (default: this folder), ``compare_<domain>.jpg`` for the domains
``tno``, ``msrs``, ``llvip`` and ``roadscene`` of the bundled ``mixed`` split (its first ``--limit``
pairs each, found in ``<data-root>/train/<domain>``) and ``compare_val_roadscene.jpg`` for the first
pairs of ``<data-root>/val/roadscene``. Each grid is made by :func:`ivfusion.compare_grid`: rows =
pairs, columns = infrared, visible, then one per method; every pair is shrunk to ``--max-side``
pixels before fusing. JPEG quality 85 by default (``--format png`` for lossless files). Existing
files are kept unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from PIL import Image

import ivfusion
from ivfusion.compare import Pair, pairs_from_folder, pairs_from_split
from ivfusion.io import write_atomic

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_ROOT = HERE.parents[1].parent / "shared" / "data" / "ivif"
DEFAULT_METHODS = ("refinefuse", "f3net", "didfuse", "fiscnet", "guided", "laplacian", "average")
DEFAULT_DOMAINS = ("tno", "msrs", "llvip", "roadscene")


def grids(data_root: Path, domains: Sequence[str], limit: int, val: bool) -> List[Tuple[str, List[Pair]]]:
    """``(name, pairs)`` of every grid to make: one per split domain, then the validation folder."""
    train = [data_root / "train" / d for d in domains]
    out = [(d, pairs_from_split("mixed", train, domain=d, limit=limit)) for d in domains]
    if val:
        out.append(("val_roadscene", pairs_from_folder(data_root / "val" / "roadscene", limit=limit)))
    return out


def write_jpeg(png: Path, target: Path, quality: int) -> None:
    """Re-encode ``png`` as a JPEG at ``target``, atomically (temporary file, then rename)."""

    def write(tmp: str) -> None:
        with Image.open(png) as img:
            img.convert("RGB").save(tmp, format="JPEG", quality=quality, optimize=True)

    write_atomic(target, write, suffix=".part.jpg")


def make(name: str, pairs: List[Pair], args: argparse.Namespace) -> Path:
    target = Path(args.out_dir) / f"compare_{name}.{args.format}"
    if target.exists() and not args.overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite")
    kwargs = dict(cell=args.cell, max_side=args.max_side or None, device=args.device, overwrite=args.overwrite)
    if args.format == "png":
        return ivfusion.compare_grid(pairs, args.methods, target, **kwargs)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gallery.") as scratch:
        png = ivfusion.compare_grid(pairs, args.methods, Path(scratch) / "grid.png", **kwargs)
        write_jpeg(png, target, args.quality)
    return target


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD",
                        help=f"columns, in order (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="folder with train/<domain>/ and val/roadscene/ (default: ../shared/data/ivif)")
    parser.add_argument("--domains", nargs="+", default=list(DEFAULT_DOMAINS), metavar="DOMAIN",
                        help="domains of the mixed split, one grid each (default: tno msrs llvip roadscene)")
    parser.add_argument("--no-val", action="store_true", help="skip the grid of val/roadscene")
    parser.add_argument("--limit", type=int, default=4, help="pairs per grid (default 4)")
    parser.add_argument("--out-dir", default=str(HERE), help="where the grids go (default: this folder)")
    parser.add_argument("--cell", type=int, default=256, help="cell side in pixels (default 256)")
    parser.add_argument("--max-side", type=int, default=640,
                        help="shrink pairs to this longer side before fusing (default 640; 0 = full size)")
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg", help="file format (default jpg)")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality (default 85)")
    parser.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing grids")
    args = parser.parse_args(argv)
    try:
        todo = grids(args.data_root, args.domains, args.limit, not args.no_val)
        for name, pairs in todo:
            print(f"wrote {make(name, pairs, args)}", flush=True)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"make_gallery: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
