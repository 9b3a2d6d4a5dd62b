"""``ivfusion fuse``, ``fuse-video`` and ``compare``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

from ._common import CLIError, add_fusion_arguments, cli_message, error_line, fusion_kwargs, parse_option, refuse_directory


FUSE_EXAMPLES = """\
examples:
  ivfusion fuse ir.png vis.jpg -o fused.png                        # one pair, RefineFuse
  ivfusion fuse --ir-dir data/ir --vis-dir data/vi --out-dir out -m guided --skip-existing
  ivfusion fuse $(ivfusion samples night) -o fused.png             # a bundled sample pair
"""


def _add_fuse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuse",
        help="fuse one pair or two folders of pairs",
        description="Fuse IR VIS -o OUT, or every pair of --ir-dir/--vis-dir (matched by file stem) into\n"
                    "--out-dir. Outputs are written atomically; an existing output is an error unless\n"
                    "--overwrite or --skip-existing.",
        epilog=FUSE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("ir", nargs="?", help="infrared (or CT/PET/SPECT) image")
    p.add_argument("vis", nargs="?", help="visible (or MRI) image")
    p.add_argument("-o", "--output", help="output image path (single pair)")
    p.add_argument("--ir-dir", help="folder of infrared images (batch mode)")
    p.add_argument("--vis-dir", help="folder of visible images (batch mode)")
    p.add_argument("--out-dir", help="output folder (batch mode)")
    p.add_argument("--ext", default=".png", help="output extension in batch mode (default: .png)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    group.add_argument("--skip-existing", action="store_true", help="leave existing outputs and skip their pairs")
    p.add_argument("--no-progress", action="store_true",
                   help="batch mode: no progress bar (default: a bar on stderr when it is a terminal)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="batch mode: worker processes that decode (and, on the CPU, fuse) pairs (default: 0, none)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="batch mode: same-size pairs fused per call (default: 1)")
    p.add_argument("--report", default=None, metavar="FILE",
                   help="batch mode: write the report (merged over torchrun ranks) as JSON")
    p.add_argument("--align-pairs", type=int, default=5, metavar="N",
                   help="batch mode with --align MODEL: estimate the one registration from the first N pairs (default 5)")
    add_fusion_arguments(p)


def _cmd_fuse(args: argparse.Namespace) -> int:
    from ..distributed import dist_info
    from ..folders import fuse_dir
    from ..fusion import fuse
    from ..io import is_same_file, write_image

    batch = any([args.ir_dir, args.vis_dir, args.out_dir])
    single = any([args.ir, args.vis, args.output])
    if batch == single:
        raise CLIError("give either IR VIS -o OUT, or --ir-dir, --vis-dir and --out-dir")
    kwargs = fusion_kwargs(args)
    if single:
        if not (args.ir and args.vis and args.output):
            raise CLIError("single-pair mode needs IR, VIS and -o OUT")
        out = Path(args.output)
        for name, src in (("IR", args.ir), ("VIS", args.vis)):
            if is_same_file(out, src):
                raise CLIError(f"-o {str(out)!r} is the {name} input; fusing would destroy it (--overwrite "
                               "never replaces an input); choose another output path")
        refuse_directory(out, "fused.png")
        if out.exists() and not args.overwrite:
            if args.skip_existing:
                print(f"skipped {out} (exists)")
                return 0
            raise CLIError(f"output {str(out)!r} exists; pass --overwrite or --skip-existing")
        fused = fuse(args.ir, args.vis, args.method, **kwargs)
        write_image(out, fused)
        print(f"wrote {out}")
        return 0
    if not (args.ir_dir and args.vis_dir and args.out_dir):
        raise CLIError("batch mode needs --ir-dir, --vis-dir and --out-dir")
    existing = "overwrite" if args.overwrite else "skip" if args.skip_existing else "error"
    try:
        report = fuse_dir(args.ir_dir, args.vis_dir, args.out_dir, args.method, ext=args.ext,
                          existing=existing, progress=not args.no_progress, workers=args.workers,
                          batch_size=args.batch_size, report=args.report, align_pairs=args.align_pairs, **kwargs)
    except FileExistsError as exc:
        raise CLIError(str(exc).replace("choose existing='skip' or 'overwrite'",
                                        "pass --skip-existing or --overwrite")) from exc
    except (ValueError, OSError) as exc:
        if not error_line(exc).startswith("out_dir"):
            raise
        raise CLIError(error_line(exc).replace("out_dir", "--out-dir").replace("or ext", "or --ext")) from exc
    if not dist_info().is_main:  # under torchrun, rank 0 prints the merged report
        return 1 if report.failed else 0
    for path in report.unmatched_ir:
        print(f"warning: no visible image for {path.name}", file=sys.stderr)
    for path in report.unmatched_vis:
        print(f"warning: no infrared image for {path.name}", file=sys.stderr)
    for stem, message in report.failed:
        print(f"error: {stem}: {cli_message(message)}", file=sys.stderr)
    ranks = "" if len(report.per_rank) < 2 else " (per rank: " + ", ".join(
        f"{r}: {n}" for r, n in sorted(report.per_rank.items())) + ")"
    if report.registration is not None and args.align and not Path(args.align).is_file():
        print(f"registration ({report.registration.model}, from the first {args.align_pairs} pairs): confidence "
              f"{report.registration.confidence:.2f}", file=sys.stderr)
    print(f"wrote {len(report.written)}, skipped {len(report.skipped)}, failed {len(report.failed)}, "
          f"unmatched {len(report.unmatched_ir) + len(report.unmatched_vis)} -> {args.out_dir}{ranks}")
    if report.failed:
        raise CLIError(f"{len(report.failed)} pair(s) failed (see above)")
    return 0


# ------------------------------------------------------------------------------------ fuse-video


def _parse_frames(text: str) -> Tuple[int, Optional[int]]:
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        a = int(start) if start.strip() else 0
        b = int(stop) if stop.strip() else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (either may be empty), got {text!r}") from None
    return a, b


def _add_fuse_video(sub: argparse._SubParsersAction) -> None:
    from ..video import DEFAULT_CRF, DEFAULT_PIX_FMT, SYNC_MODES

    p = sub.add_parser(
        "fuse-video",
        help="fuse an infrared and a visible video (or two folders of frames) into a video",
        description="Fuse IR and VIS frame by frame into OUT (needs PyAV: pip install 'ivfusion[video]'). "
                    "IR and VIS are video files or folders of frames (paired in natural name order). "
                    "Frames are paired by presentation time; a 16-bit thermal stream keeps one intensity "
                    "window for the whole video. OUT is written atomically.",
    )
    p.add_argument("ir", help="infrared video, or folder of infrared frames")
    p.add_argument("vis", help="visible video, or folder of visible frames")
    p.add_argument("-o", "--output", required=True, help="video to write (.mp4, .mkv, .mov, .avi ...)")
    p.add_argument("--sync", choices=SYNC_MODES, default="strict",
                   help="strict (default): equal frame rates and counts required; nearest: each visible frame "
                        "with the infrared frame nearest in time; index: frames paired by position")
    p.add_argument("--frames", type=_parse_frames, default=None, metavar="START:STOP",
                   help="fuse only frames START <= i < STOP (e.g. 100:400, :300, 50:)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of folder inputs (default: the video's, or 30 for two folders)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="frames fused per call (default: 8 on CUDA, 1 on the CPU)")
    p.add_argument("--ir-window-frames", type=int, default=30, metavar="N",
                   help="16-bit infrared: estimate one window from the first N frames (default 30; 0 = each "
                        "frame by its own min..max); --ir-range fixes it instead")
    p.add_argument("--ir-percentiles", type=float, nargs=2, default=(0.5, 99.5), metavar=("LO", "HI"),
                   help="percentiles of the estimated window (default 0.5 99.5)")
    p.add_argument("--codec", default=None, help="encoder (default libx264 if available, else mpeg4)")
    p.add_argument("--crf", type=int, default=None,
                   help=f"constant rate factor of x264/x265/VPx/AV1 (default {DEFAULT_CRF}; 0 = lossless x264)")
    p.add_argument("--pix-fmt", default=DEFAULT_PIX_FMT, help=f"encoded pixel format (default {DEFAULT_PIX_FMT})")
    p.add_argument("--codec-option", dest="codec_options", action="append", type=parse_option, default=[],
                   metavar="KEY=VALUE", help="encoder option, e.g. --codec-option preset=veryfast")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--align-frames", type=int, default=5, metavar="N",
                   help="with --align MODEL: estimate the one registration from the first N frame pairs (default 5)")
    add_fusion_arguments(p)


def _cmd_fuse_video(args: argparse.Namespace) -> int:
    from ..video import fuse_video

    out = Path(args.output)
    refuse_directory(out, "fused.mp4")
    if out.exists() and not args.overwrite:
        raise CLIError(f"output {str(out)!r} exists; pass --overwrite")
    try:
        report = fuse_video(
            args.ir, args.vis, out, args.method, sync=args.sync, frames=args.frames, fps=args.fps,
            batch_size=args.batch_size, ir_window_frames=args.ir_window_frames,
            ir_percentiles=tuple(args.ir_percentiles), codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt,
            codec_options=dict(args.codec_options) or None, overwrite=args.overwrite,
            progress=not args.no_progress, align_frames=args.align_frames, **fusion_kwargs(args),
        )
    except ImportError as exc:
        raise CLIError(str(exc)) from exc
    window = f", infrared window {report.ir_range[0]:g}..{report.ir_range[1]:g}" if report.ir_range else ""
    print(f"wrote {report.output}: {report.frames} frames at {report.fps:g} fps, {report.size[1]}x{report.size[0]}, "
          f"{report.codec}{window}; {report.seconds:.1f} s ({report.throughput:.2f} frames/s)")
    return 0


# ------------------------------------------------------------------------------------ compare


def _parse_weight(text: str) -> Tuple[str, str]:
    method, sep, value = text.partition("=")
    if not sep or not method or not value:
        raise argparse.ArgumentTypeError(f"expected METHOD=PATH_OR_NAME, got {text!r}")
    return method, value


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from ..compare import MIN_CELL

    p = sub.add_parser(
        "compare",
        help="write a labelled grid comparing methods on a few pairs",
        description="Fuse a few pairs with each METHOD and write one image: rows = pairs, columns = "
                    "infrared, visible, then one per method. Pairs come from --folder, --ir-dir/--vis-dir "
                    "(matched by file stem) or a validation split of --data folders. Each pair is shrunk "
                    "to --max-side before fusing, so slow networks stay cheap.",
    )
    p.add_argument("methods", nargs="+", metavar="METHOD", help="fusion methods, one column each (see `ivfusion list`)")
    p.add_argument("-o", "--output", required=True, help="grid image to write (.png, .jpg, ...)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--folder", metavar="DIR", help="folder with ir/ and vi/ sub-folders")
    source.add_argument("--ir-dir", metavar="DIR", help="folder of infrared images (with --vis-dir)")
    source.add_argument("--split", metavar="SPLIT",
                        help="validation split of the --data folders: 'mixed' (bundled) or a JSON file")
    p.add_argument("--vis-dir", metavar="DIR", help="folder of visible images (with --ir-dir)")
    p.add_argument("--data", nargs="+", metavar="DIR", help="training folders named by domain (with --split)")
    p.add_argument("--domain", metavar="NAME", help="only this domain of the split, e.g. tno (with --split)")
    p.add_argument("--pairs", nargs="+", default=None, metavar="STEM",
                   help="only these pairs, by file stem, in this order, e.g. --pairs carLight kettle "
                        "(with --split: DOMAIN/STEM or STEM; default: all)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="at most N pairs (per domain with --split; default: all)")
    p.add_argument("--cell", type=int, default=256, metavar="PX",
                   help=f"side of each image's square cell in pixels (default 256, at least {MIN_CELL})")
    p.add_argument("--max-side", type=int, default=640, metavar="PX",
                   help="shrink each pair to this longer side before fusing (default 640; 0 = full size)")
    p.add_argument("--weights", nargs="+", action="append", type=_parse_weight, default=[],
                   metavar="METHOD=PATH_OR_NAME", help="weights of a network: manifest name or .safetensors path")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None, help="compute precision")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a bar on stderr when it is a terminal)")


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import compare_grid, pairs_from_folder, pairs_from_split

    if args.vis_dir and not args.ir_dir:
        raise CLIError("--vis-dir needs --ir-dir")
    if (args.data or args.domain) and not args.split:
        raise CLIError("--data and --domain go with --split")
    if args.folder:
        pairs = pairs_from_folder(args.folder, limit=args.limit, stems=args.pairs)
    elif args.ir_dir:
        if not args.vis_dir:
            raise CLIError("--ir-dir needs --vis-dir")
        pairs = pairs_from_folder(args.ir_dir, args.vis_dir, limit=args.limit, stems=args.pairs)
    elif args.split:
        if not args.data:
            raise CLIError("--split needs --data DIR [DIR ...] (the folders the split was drawn from)")
        pairs = pairs_from_split(args.split, args.data, domain=args.domain, limit=args.limit, stems=args.pairs)
    else:
        raise CLIError("give the pairs: --folder DIR, --ir-dir DIR --vis-dir DIR, or --split SPLIT --data DIR ...")
    weights: Dict[str, str] = {}
    for method, value in (w for group in args.weights for w in group):
        if method in weights:
            raise CLIError(f"--weights: {method!r} given more than once")
        weights[method] = value
    out = Path(args.output)
    refuse_directory(out, "grid.png")
    if out.exists() and not args.overwrite:
        raise CLIError(f"output {str(out)!r} exists; pass --overwrite")
    path = compare_grid(pairs, args.methods, out, cell=args.cell, max_side=args.max_side or None,
                        weights=weights or None, device=args.device, precision=args.precision,
                        overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote {path} ({len(pairs)} pair(s) x {len(args.methods)} method(s))")
    return 0


