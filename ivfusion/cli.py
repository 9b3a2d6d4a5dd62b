"""The ``ivfusion`` command line (also ``python -m ivfusion``).

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and
``_cmd_<name>(args) -> int`` runs it. The work itself lives in the library; this module only
parses, calls and prints. Expected failures (bad input, missing files, unavailable weights)
print one line ``ivfusion: error: ...`` and exit with status 1; usage errors exit with 2.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """An expected failure reported as one line on stderr."""


def _parse_option(text: str) -> Tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# ------------------------------------------------------------------------------------ fuse


def _add_fusion_arguments(p: argparse.ArgumentParser) -> None:
    from .fusion import DEFAULT_METHOD, DEFAULT_TILE_OVERLAP

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
    p.add_argument("-O", "--option", dest="options", action="append", type=_parse_option, default=[],
                   metavar="KEY=VALUE", help="method option, e.g. -O rule=average (DIDFuse), -O levels=5 (laplacian)")


def _fusion_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
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


def _add_fuse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuse",
        help="fuse one pair or two folders of pairs",
        description="Fuse IR VIS -o OUT, or every pair of --ir-dir/--vis-dir (matched by file stem) into --out-dir.",
    )
    p.add_argument("ir", nargs="?", help="infrared (or CT/PET/SPECT) image")
    p.add_argument("vis", nargs="?", help="visible (or MRI) image")
    p.add_argument("-o", "--output", help="output image path (single pair)")
    p.add_argument("--ir-dir", help="folder of infrared images")
    p.add_argument("--vis-dir", help="folder of visible images")
    p.add_argument("--out-dir", help="output folder (batch)")
    p.add_argument("--ext", default=".png", help="output extension in batch mode (default .png)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    group.add_argument("--skip-existing", action="store_true", help="leave existing outputs and skip their pairs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar in batch mode")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="batch mode: decoding worker processes (default 0: in the main process)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="batch mode: same-size pairs fused per call (default 1)")
    p.add_argument("--report", default=None, metavar="FILE",
                   help="batch mode: write the report (merged over torchrun ranks) as JSON")
    _add_fusion_arguments(p)


def _cmd_fuse(args: argparse.Namespace) -> int:
    from .distributed import dist_info
    from .folders import fuse_dir
    from .fusion import fuse
    from .io import is_same_file, write_image

    batch = any([args.ir_dir, args.vis_dir, args.out_dir])
    single = any([args.ir, args.vis, args.output])
    if batch == single:
        raise CLIError("give either IR VIS -o OUT, or --ir-dir, --vis-dir and --out-dir")
    kwargs = _fusion_kwargs(args)
    if single:
        if not (args.ir and args.vis and args.output):
            raise CLIError("single-pair mode needs IR, VIS and -o OUT")
        out = Path(args.output)
        for name, src in (("IR", args.ir), ("VIS", args.vis)):
            if is_same_file(out, src):
                raise CLIError(f"-o {str(out)!r} is the {name} input; fusing would destroy it (--overwrite "
                               "never replaces an input); choose another output path")
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
                          batch_size=args.batch_size, report=args.report, **kwargs)
    except FileExistsError as exc:
        raise CLIError(str(exc).replace("choose existing='skip' or 'overwrite'",
                                        "pass --skip-existing or --overwrite")) from exc
    except ValueError as exc:
        if "out_dir" not in str(exc):
            raise
        raise CLIError(str(exc).replace("out_dir", "--out-dir").replace("or ext", "or --ext")) from exc
    if not dist_info().is_main:  # under torchrun, rank 0 prints the merged report
        return 1 if report.failed else 0
    for path in report.unmatched_ir:
        print(f"warning: no visible image for {path.name}", file=sys.stderr)
    for path in report.unmatched_vis:
        print(f"warning: no infrared image for {path.name}", file=sys.stderr)
    for stem, message in report.failed:
        print(f"error: {stem}: {message}", file=sys.stderr)
    ranks = "" if len(report.per_rank) < 2 else " (per rank: " + ", ".join(
        f"{r}: {n}" for r, n in sorted(report.per_rank.items())) + ")"
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
    from .video import DEFAULT_CRF, DEFAULT_PIX_FMT, SYNC_MODES

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
    p.add_argument("--codec-option", dest="codec_options", action="append", type=_parse_option, default=[],
                   metavar="KEY=VALUE", help="encoder option, e.g. --codec-option preset=veryfast")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_fusion_arguments(p)


def _cmd_fuse_video(args: argparse.Namespace) -> int:
    from .video import fuse_video

    out = Path(args.output)
    if out.exists() and not out.is_dir() and not args.overwrite:
        raise CLIError(f"output {str(out)!r} exists; pass --overwrite")
    try:
        report = fuse_video(
            args.ir, args.vis, out, args.method, sync=args.sync, frames=args.frames, fps=args.fps,
            batch_size=args.batch_size, ir_window_frames=args.ir_window_frames,
            ir_percentiles=tuple(args.ir_percentiles), codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt,
            codec_options=dict(args.codec_options) or None, overwrite=args.overwrite,
            progress=False if args.no_progress else None, **_fusion_kwargs(args),
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
    from .compare import MIN_CELL

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


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_grid, pairs_from_folder, pairs_from_split

    if args.vis_dir and not args.ir_dir:
        raise CLIError("--vis-dir needs --ir-dir")
    if (args.data or args.domain) and not args.split:
        raise CLIError("--data and --domain go with --split")
    if args.folder:
        pairs = pairs_from_folder(args.folder, limit=args.limit)
    elif args.ir_dir:
        if not args.vis_dir:
            raise CLIError("--ir-dir needs --vis-dir")
        pairs = pairs_from_folder(args.ir_dir, args.vis_dir, limit=args.limit)
    elif args.split:
        if not args.data:
            raise CLIError("--split needs --data DIR [DIR ...] (the folders the split was drawn from)")
        pairs = pairs_from_split(args.split, args.data, domain=args.domain, limit=args.limit)
    else:
        raise CLIError("give the pairs: --folder DIR, --ir-dir DIR --vis-dir DIR, or --split SPLIT --data DIR ...")
    weights: Dict[str, str] = {}
    for method, value in (w for group in args.weights for w in group):
        if method in weights:
            raise CLIError(f"--weights: {method!r} given more than once")
        weights[method] = value
    out = Path(args.output)
    if out.exists() and not out.is_dir() and not args.overwrite:
        raise CLIError(f"output {str(out)!r} exists; pass --overwrite")
    path = compare_grid(pairs, args.methods, out, cell=args.cell, max_side=args.max_side or None,
                        weights=weights or None, device=args.device, precision=args.precision,
                        overwrite=args.overwrite)
    print(f"wrote {path} ({len(pairs)} pair(s) x {len(args.methods)} method(s))")
    return 0


# ------------------------------------------------------------------------------------ list


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list fusion methods")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show parameter counts and GFLOPs at 640x480 (measured with torch.utils.flop_counter)")


def _cmd_list(args: argparse.Namespace) -> int:
    from .fusion import list_methods, method_info
    from .models import get_model_info, list_models

    rows: List[List[str]] = []
    header = ["method", "kind", "weights", "description"]
    if args.verbose:
        from .models import create_model
        from .models._registry import count_parameters, measure_flops

        header = ["method", "kind", "weights", "params", "GFLOPs@640x480", "description"]
    for name in list_methods():
        info = method_info(name)
        weights = "-" if info.kind == "classical" else (info.default_weights or "none yet")
        if not args.verbose:
            rows.append([name, info.kind, weights, info.description])
        elif info.kind == "network":
            model = create_model(name)
            rows.append([name, info.kind, weights, f"{count_parameters(model):,}",
                         f"{measure_flops(model, 480, 640):.1f}", info.description])
        else:
            rows.append([name, info.kind, weights, "0", "-", info.description])
    _print_table(header, rows)
    if args.verbose:
        print("\npapers:")
        for name in list_models():
            print(f"  {name}: {get_model_info(name).paper}")
    return 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


# ------------------------------------------------------------------------------------ weights


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="list, verify or export pretrained weights",
        description="Manage pretrained weights: list the manifest, verify local copies, export a "
                    "training checkpoint to a release .safetensors file.",
    )
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    wsub.required = True
    pl = wsub.add_parser("list", help="weights in the manifest and where local copies are")
    pl.add_argument("-m", "--method", default=None, help="only this method's weights")
    wsub.add_parser("verify", help="re-hash every bundled, $IVFUSION_WEIGHTS_DIR and cached weight file")
    pe = wsub.add_parser(
        "export",
        help="turn a training checkpoint into a .safetensors file and print its manifest entry",
        description="Read CHECKPOINT (torch.save dict {'model', 'method', 'config', ...}, loaded with "
                    "weights_only=True, or a .safetensors state dict), check it loads strictly into the "
                    "network, write OUTPUT atomically and print the manifest entry with its sha256.",
    )
    pe.add_argument("checkpoint", help="training checkpoint (.pt/.pth) or .safetensors state dict")
    pe.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    pe.add_argument("--method", default=None, help="network (default: the checkpoint's 'method')")
    pe.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                    help="storage dtype of floating-point tensors (default float32)")
    pe.add_argument("--name", default=None, help="manifest name, e.g. refinefuse.ivif")
    pe.add_argument("--entry", default=None, metavar="JSON",
                    help="manifest fields (license, training_data, recipe, metrics, reproduce, ...) as a "
                         "JSON object or a path to a JSON file")
    pe.add_argument("--repo-id", default=None, help="Hub repository of the file")
    pe.add_argument("--revision", default=None, help="pinned Hub revision (tag like v0.1.0 or a commit)")
    pe.add_argument("--license", default=None, help="licence of the weight file")
    pe.add_argument("--default", action="store_true", help="make it the method's default weight")
    pe.add_argument("--update-manifest", action="store_true",
                    help="write the entry into the manifest copies (needs --name and a complete entry)")
    pe.add_argument("--manifest", action="append", default=None, metavar="PATH",
                    help="manifest file(s) to update (default: the shipped copy and the repository-root copy)")


def _cmd_weights(args: argparse.Namespace) -> int:
    from . import pretrained as W
    from .train.export import export_checkpoint

    if args.weights_command == "list":
        rows = []
        for name in W.list_weights(args.method):
            info = W.get_weight_info(name)
            where = ",".join(loc for loc, _ in W.local_copies(name)) or "hub"
            rows.append([name, "yes" if info.default else "", info.dtype, f"{info.size / 1e6:.2f} MB",
                         info.license, where, f"{info.repo_id}@{info.revision}"])
        if not rows:
            print(f"no weights in the manifest {W.get_manifest().source}"
                  + (f" for method {args.method!r}" if args.method else ""))
            return 0
        _print_table(["weight", "default", "dtype", "size", "license", "local", "hub"], rows)
        return 0

    if args.weights_command == "verify":
        results = W.verify_all()
        if not results:
            print("no local weight files to verify")
            return 0
        for r in results:
            print(f"{r.status:<8}  {r.name or '-':<24}  {r.location:<7}  {r.path}")
            if not r.ok:
                print(f"          {r.detail}", file=sys.stderr)
        bad = [r for r in results if not r.ok]
        print(f"{len(results) - len(bad)} ok, {len(bad)} bad")
        if bad:
            raise CLIError(f"{len(bad)} weight file(s) failed verification (see above)")
        return 0

    # export
    fields: Dict[str, Any] = {}
    if args.entry:
        text = args.entry if args.entry.lstrip().startswith("{") else Path(args.entry).read_text(encoding="utf-8")
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CLIError(f"--entry: not valid JSON ({exc})") from None
        if not isinstance(fields, dict):
            raise CLIError("--entry: expected a JSON object of manifest fields")
    for key, value in (("repo_id", args.repo_id), ("revision", args.revision), ("license", args.license)):
        if value is not None:
            fields[key] = value
    if args.default:
        fields["default"] = True
    if args.update_manifest and not args.name:
        raise CLIError("--update-manifest needs --name METHOD.TAG")
    result = export_checkpoint(args.checkpoint, args.output, method=args.method, dtype=args.dtype,
                               name=args.name, entry=fields)
    print(f"wrote {result.path} ({result.size} bytes)")
    print(f"sha256 {result.sha256}")
    print(json.dumps({args.name or result.path.stem: result.entry}, indent=2))
    if result.missing:
        print(f"note: the entry still needs {', '.join(result.missing)} before it can go into the manifest "
              f"(pass them with --entry)", file=sys.stderr)
    if args.update_manifest:
        if result.missing:
            raise CLIError(f"cannot update the manifest: missing field(s) {', '.join(result.missing)}")
        written = W.update_manifest(args.name, result.entry, paths=args.manifest)
        print("updated " + ", ".join(str(p) for p in written))
    return 0


# ------------------------------------------------------------------------------------ eval


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score fused images with EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, ...",
        description="Score every fused image of --fused-dir against its --ir-dir and --vis-dir sources "
                    "(matched by file stem) and print mean and std per metric.",
    )
    p.add_argument("--ir-dir", required=True, help="folder of infrared images")
    p.add_argument("--vis-dir", required=True, help="folder of visible images")
    p.add_argument("--fused-dir", required=True, help="folder of fused images")
    p.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                   help="metrics to compute, space- or comma-separated (default: all)")
    p.add_argument("--profile", choices=["reference", "standard"], default="reference",
                   help="reference: the CDDFuse/EMMA Evaluator definitions (default); standard: textbook ones")
    p.add_argument("--mi-base", type=float, default=None, help="logarithm base of MI (default: e for reference, 2 for standard)")
    p.add_argument("--csv", default=None, metavar="PATH", help="also write the per-image scores to this CSV file")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_eval(args: argparse.Namespace) -> int:
    from .metrics import evaluate_dirs

    metrics = ",".join(args.metrics) if args.metrics else None
    result = evaluate_dirs(args.ir_dir, args.vis_dir, args.fused_dir, metrics, profile=args.profile,
                           mi_base=args.mi_base, device=args.device, progress=not args.no_progress)
    print(result.format_table())
    if args.csv:
        print(f"wrote {result.write_csv(args.csv)}")
    return 0


# ------------------------------------------------------------------------------------ train


def _val_every(text: str) -> Any:
    if text in ("auto", "epoch"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, 'auto' or 'epoch', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, 'auto' or 'epoch', got {text!r}")
    return value


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .train.config import METHODS, PRECISIONS

    p = sub.add_parser(
        "train",
        help="train a fusion network with its paper's recipe",
        description="Train METHOD on aligned pairs (folders with ir/ and vi/) with the paper's recipe "
                    "(MODELS.md), validate on --val, keep the best checkpoint, optionally export it. "
                    "Precedence: recipe < --config FILE < --set KEY=VALUE < the flags below. With --resume "
                    "the run's saved config.json is the starting point.",
    )
    p.add_argument("method", choices=METHODS, help="network to train")
    p.add_argument("--data", nargs="+", default=None, metavar="DIR", help="training folder(s), each with ir/ and vi/")
    p.add_argument("--val", default=None, metavar="DIR", help="validation folder with ir/ and vi/ (default: none)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (config, checkpoints, logs)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None, help="total optimiser steps (default: the paper's)")
    steps.add_argument("--epochs", type=int, default=None, help="passes over the training pairs instead of --steps")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the paper's)")
    p.add_argument("--crop", type=int, default=None, help="crop side in pixels (default: the paper's)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: the paper's)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="auto (default): bf16 autocast on CUDA (fp16 + GradScaler without bf16), fp32 on CPU")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default 4)")
    p.add_argument("--val-every", type=_val_every, default=None, metavar="N",
                   help="validate every N steps, 'epoch', or 'auto' (default: 20 times per run); 0 = at the end only")
    p.add_argument("--val-limit", type=int, default=None, metavar="K", help="validate on the first K pairs only")
    p.add_argument("--val-split", default=None, metavar="SPLIT",
                   help="hold back a validation split of the --data folders ('mixed', the bundled 30-pair split "
                        "over tno/msrs/llvip/roadscene, or a JSON file) and select the best checkpoint on it, "
                        "per domain relative to guided")
    p.add_argument("--val-max-side", type=int, default=None, metavar="PX",
                   help="validate on images shrunk to this longer side (default: full size)")
    p.add_argument("--init-weights", default=None, metavar="WEIGHT",
                   help="warm start from a weight name or .safetensors file instead of a random initialisation")
    p.add_argument("--ckpt-every", type=int, default=None, metavar="N",
                   help="save last.pt every N steps (default: at every validation)")
    p.add_argument("--log-every", type=int, default=None, metavar="N", help="log mean loss terms every N steps (default 10)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the recipe's)")
    p.add_argument("--export", default=None, metavar="NAME",
                   help="export the best checkpoint as weight NAME (METHOD.TAG) into RUN_DIR with its manifest entry")
    p.add_argument("--config", default=None, metavar="FILE", help="JSON (or YAML, with PyYAML) file of config fields")
    p.add_argument("--set", dest="overrides", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                   help="any config field, VALUE as JSON, e.g. --set grad_clip=1.0 --set 'loss={\"lam\": 5}'")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last.pt")
    p.add_argument("--extend", action="store_true",
                   help="with --resume: train the run on to a new, larger --steps/--epochs (the learning-rate "
                        "schedule is evaluated for the new length from the next step on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, Trainer

    values: Dict[str, Any] = {}
    if args.resume:
        saved = Path(args.out) / "config.json"
        if not saved.is_file():
            raise CLIError(f"--resume: no run to resume in {args.out!r} (config.json missing)")
        values.update(TrainConfig.read_file(saved))
    if args.config:
        values.update(TrainConfig.read_file(args.config))
    if values.get("method", args.method) != args.method:
        raise CLIError(f"the config is for {values['method']!r}, not {args.method!r}")
    values.update(dict(args.overrides))
    flags = {"data": args.data, "val": args.val, "out": args.out, "steps": args.steps, "epochs": args.epochs,
             "batch_size": args.batch_size, "crop": args.crop, "lr": args.lr, "device": args.device,
             "precision": args.precision, "workers": args.workers, "val_every": args.val_every,
             "val_limit": args.val_limit, "ckpt_every": args.ckpt_every, "log_every": args.log_every,
             "seed": args.seed, "export": args.export, "val_split": args.val_split,
             "val_max_side": args.val_max_side, "init_weights": args.init_weights}
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.steps is not None:
        values["epochs"] = None
    if args.epochs is not None:
        values["steps"] = None
    if args.compile:
        values["compile"] = True
    if args.no_progress:
        values["progress"] = False
    values["method"] = args.method
    config = TrainConfig.from_dict(values)
    if not config.data:
        raise CLIError("--data: give at least one training folder")
    trainer = Trainer(config, resume=args.resume, extend=args.extend)
    try:
        if trainer.dist.is_main:
            ranks = f" x {trainer.dist.world_size} ranks" if trainer.dist.distributed else ""
            print(f"training {config.method}: {len(trainer.dataset)} pairs, {trainer.total_steps} steps, "
                  f"batch {config.batch_size}, crop {config.crop}, device {trainer.device}{ranks} -> {trainer.out}")
        result = trainer.fit()
    finally:
        trainer.shutdown()
    if not trainer.dist.is_main:
        return 0
    print(f"done: {result.step} steps in {result.wall_time_s / 60:.1f} min")
    if result.best_metrics:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.best_metrics.items())
        print(f"best {config.select} {result.best_score:.4f} at step {result.best_step}: {metrics}")
    if result.rule_metrics:
        for rule, m in result.rule_metrics.items():
            print(f"  rule {rule}: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
        print(f"best fusion rule on val: {result.best_rule}")
    if result.export is not None:
        print(f"exported {result.export.path} (sha256 {result.export.sha256}); "
              f"manifest entry in {trainer.out / (config.export + '.entry.json')}")
    return 0


# ------------------------------------------------------------------------------------ export


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a network for deployment (ONNX)",
        description="Export a network with its weights for another runtime.",
    )
    fsub = p.add_subparsers(dest="format", metavar="FORMAT")
    fsub.required = True
    po = fsub.add_parser(
        "onnx",
        help="self-contained .onnx graph: inputs ir, vis_y (N, 1, H, W) float32 in [0, 1] -> fused",
        description="Export METHOD with its weights to one .onnx file (torch.onnx dynamo exporter); "
                    "batch, height and width are dynamic unless --static is given.",
    )
    po.add_argument("method", metavar="METHOD", help="a network (see `ivfusion list`)")
    po.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    po.add_argument("--weights", default=None, help="weight name or .safetensors path (default: the method's)")
    po.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    po.add_argument("--static", type=int, nargs=2, metavar=("H", "W"), default=None,
                    help="fix the input to 1 x 1 x H x W instead of dynamic sizes")
    po.add_argument("-O", "--option", dest="options", action="append", type=_parse_option, default=[],
                    metavar="KEY=VALUE", help="forward option baked into the graph, e.g. -O rule=average (DIDFuse)")
    po.add_argument("--overwrite", action="store_true", help="replace the output if it exists")


def _cmd_export(args: argparse.Namespace) -> int:
    from .deploy import DEFAULT_OPSET, export_onnx, read_onnx_info

    kwargs: Dict[str, Any] = dict(args.options)
    if args.static is not None:
        kwargs.update(dynamic=False, static_size=tuple(args.static))
    path = export_onnx(args.method, args.output, weights=args.weights, overwrite=args.overwrite,
                       opset=args.opset if args.opset is not None else DEFAULT_OPSET, **kwargs)
    info = read_onnx_info(path)
    shape = "N x 1 x H x W (dynamic)" if info.dynamic else "1 x 1 x {} x {}".format(*args.static)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {info.method} with {info.weights} "
          f"(sha256 {info.weights_sha256[:12] or '-'}), options {info.options}, opset {info.opset}, input {shape}")
    return 0


# ------------------------------------------------------------------------------------ main

_COMMANDS: Dict[str, Tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {
    "fuse": (_add_fuse, _cmd_fuse),
    "fuse-video": (_add_fuse_video, _cmd_fuse_video),
    "compare": (_add_compare, _cmd_compare),
    "list": (_add_list, _cmd_list),
    "weights": (_add_weights, _cmd_weights),
    "eval": (_add_eval, _cmd_eval),
    "train": (_add_train, _cmd_train),
    "export": (_add_export, _cmd_export),
}


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="ivfusion", description="Infrared-visible and medical image fusion.")
    parser.add_argument("--version", action="version", version=f"ivfusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add, _ in _COMMANDS.values():
        add(sub)
    return parser


def _terminate(signum: int, frame: Any) -> None:
    # Turn SIGTERM into SystemExit so `finally`/cleanup code (temporary output files) runs.
    raise SystemExit(128 + signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _terminate)
    _, run = _COMMANDS[args.command]
    try:
        return run(args)
    except (CLIError, ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError, ImportError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"ivfusion: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ivfusion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
