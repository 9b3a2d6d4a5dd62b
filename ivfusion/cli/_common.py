"""Helpers shared by the subcommands: the one-line error, ``KEY=VALUE`` options, tables and the
fusion arguments of ``fuse`` and ``fuse-video``."""
from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

#: Width the tables of ``ivfusion list`` and ``ivfusion weights list`` are fitted into.
TABLE_WIDTH = 120

class CLIError(Exception):
    """An expected failure reported as one line on stderr."""


#: The library's Python spellings in error messages, and the options a command-line user types instead.
_PYTHON_TO_CLI = (
    ("resize='ir_to_vis' or 'vis_to_ir'", "--resize ir_to_vis or --resize vis_to_ir"),
)


def cli_message(text: str) -> str:
    """A library error message with its Python argument hints spelled as command-line options."""
    for python, cli in _PYTHON_TO_CLI:
        text = text.replace(python, cli)
    return text


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


def print_wrapped(text: str, width: int = TABLE_WIDTH) -> None:
    """``text`` indented by two spaces, its continuation lines by four, no line longer than ``width``
    (URLs are never broken)."""
    print(textwrap.fill(text, width, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False,
                        break_long_words=False))


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], width: int = TABLE_WIDTH) -> None:
    """Columns separated by two spaces; the last column is wrapped so that no line exceeds ``width``
    (its continuation lines indented under it), unless the other columns leave it under 20 characters."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    indent = sum(widths[:-1]) + 2 * (len(widths) - 1)
    room = max(width - indent, 20)
    widths[-1] = min(widths[-1], room)
    for r in [header, ["-" * w for w in widths], *rows]:
        lines: List[str] = textwrap.wrap(str(r[-1]), room) or [""]
        print(("  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths)) + "  " + lines[0]).rstrip())
        for more in lines[1:]:
            print(" " * indent + more)


#: What ``--tile-size`` does when it is not given (``fuse --help``, ``fuse-video --help``; see
#: :func:`ivfusion.fuse`'s ``tile_size``).
TILE_SIZE_HELP = (
    "side in pixels of the overlapping square tiles a network runs on, to bound memory (default: automatic: "
    "on CUDA the largest tile that fits the free GPU memory; on the CPU one pass over the whole image, in "
    "tiles only when that pass would not fit in the memory the process may still allocate; classical "
    "methods run in one pass unless a size is given)"
)


def add_fusion_arguments(p: argparse.ArgumentParser) -> None:
    from ..fusion import DEFAULT_METHOD, DEFAULT_TILE_OVERLAP

    p.add_argument("-m", "--method", default=DEFAULT_METHOD,
                   help=f"fusion method, see `ivfusion list` (default: {DEFAULT_METHOD})")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    p.add_argument("--weights", default=None,
                   help="weight name from the manifest, path to a .safetensors file, or (--backend onnxruntime) "
                        "a .onnx file (default: the method's bundled weight)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="run networks in PyTorch or as exported ONNX graphs in onnxruntime (extra "
                        "ivfusion[onnx]) (default: torch)")
    p.add_argument("--tile-size", type=int, default=None, metavar="PX", help=TILE_SIZE_HELP)
    p.add_argument("--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP, metavar="PX",
                   help=f"pixels shared by neighbouring tiles, blended (default: {DEFAULT_TILE_OVERLAP})")
    p.add_argument("--resize", choices=["ir_to_vis", "vis_to_ir"], default=None,
                   help="resample one input to the other's size (default: none; inputs of different sizes "
                        "are an error)")
    p.add_argument("--ir-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="map infrared values LO..HI to 0..1 (default: /255 for 8-bit, own min..max for 16-bit)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None,
                   help="compute precision (default: fp16 on CUDA where a network is safe in it; on CPUs with "
                        "native bf16, bf16 for DIDFuse and F3Net; fp32 otherwise)")
    p.add_argument("--align", default=None, metavar="MODEL|RIG.json",
                   help="register the infrared to the visible image first: affine, homography or deformable "
                        "(estimated), or a registration saved by `ivfusion register` (a calibrated rig); outside "
                        "the warped infrared the output is the visible image")
    p.add_argument("-O", "--option", dest="options", action="append", type=parse_option, default=[],
                   metavar="KEY=VALUE",
                   help="method option, repeatable, e.g. -O rule=average (DIDFuse), -O levels=5 (laplacian) "
                        "(default: the method's own; `ivfusion list` names them)")


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
        align=args.align,
    )
    kwargs.update(dict(args.options))
    return kwargs


