"""Helpers shared by the subcommands: the one-line error, ``KEY=VALUE`` options, tables and the
fusion arguments of ``fuse`` and ``fuse-video``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

class CLIError(Exception):
    """An expected failure reported as one line on stderr."""


def error_line(exc: BaseException) -> str:
    """The one line ``ivfusion: error: ...`` reports for an expected failure: the first line of the
    message; for an ``OSError`` its reason and file name without the ``[Errno N]`` prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename!r}" if exc.filename is not None else exc.strerror
    else:
        text = str(exc)
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__


def refuse_directory(out: Path, example: str) -> None:
    """``CLIError`` when the output path ``-o`` is a directory (``--overwrite`` never replaces one)."""
    if out.is_dir():
        raise CLIError(f"-o {str(out)!r} is a directory; give a file path, e.g. {str(out / example)!r} "
                       "(--overwrite never replaces a directory)")


def parse_option(text: str) -> Tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def add_fusion_arguments(p: argparse.ArgumentParser) -> None:
    from ..fusion import DEFAULT_METHOD, DEFAULT_TILE_OVERLAP

    p.add_argument("-m", "--method", default=DEFAULT_METHOD, help="fusion method (see `ivfusion list`)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--weights", default=None,
                   help="weight name from the manifest, path to a .safetensors file, or (--backend onnxruntime) a .onnx file")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="run networks in PyTorch (default) or as exported ONNX graphs in onnxruntime (extra ivfusion[onnx])")
    p.add_argument("--tile-size", type=int, default=None, help="tile side in pixels (default: auto on CUDA, none on CPU)")
    p.add_argument("--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP, help="tile overlap in pixels")
    p.add_argument("--resize", choices=["ir_to_vis", "vis_to_ir"], default=None, help="resample one input to the other's size")
    p.add_argument("--ir-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="map infrared values LO..HI to 0..1 (default: /255 for 8-bit, own min..max for 16-bit)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None, help="compute precision")
    p.add_argument("-O", "--option", dest="options", action="append", type=parse_option, default=[],
                   metavar="KEY=VALUE", help="method option, e.g. -O rule=average (DIDFuse), -O levels=5 (laplacian)")


def fusion_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = dict(
        device=args.device,
        tile_size=args.tile_size,
        tile_overlap=args.tile_overlap,
        resize=args.resize,
        ir_range=tuple(args.ir_range) if args.ir_range else None,
        weights=args.weights,
        precision=args.precision,
        backend=args.backend,
    )
    kwargs.update(dict(args.options))
    return kwargs


