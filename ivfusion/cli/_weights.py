"""``ivfusion list``, ``weights`` and ``export``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

from ._common import CLIError, parse_option, print_table, print_wrapped


# ------------------------------------------------------------------------------------ list


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list fusion methods",
                       description="The fusion methods: networks (with their bundled weights) and classical "
                                   "baselines; the default is marked. --verbose adds sizes, costs and the papers.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show parameter counts, GFLOPs at 640x480 (torch.utils.flop_counter) and the "
                        "full citation of each method's paper")


def _cmd_list(args: argparse.Namespace) -> int:
    from ..fusion import list_methods, method_info

    rows: List[List[str]] = []
    header = ["method", "kind", "weights", "description"]
    if args.verbose:
        from ..models import create_model
        from ..models._registry import count_parameters, measure_flops

        header = ["method", "kind", "weights", "params", "GFLOPs@640x480", "description"]
    infos = [method_info(name) for name in list_methods()]
    for info in infos:
        name = f"{info.name} (default)" if info.is_default else info.name
        weights = "-" if info.kind == "classical" else (info.default_weights or "none yet")
        if not args.verbose:
            rows.append([name, info.kind, weights, info.description])
        elif info.kind == "network":
            model = create_model(info.name)
            rows.append([name, info.kind, weights, f"{count_parameters(model):,}",
                         f"{measure_flops(model, 480, 640):.1f}", info.description])
        else:
            rows.append([name, info.kind, weights, "0", "-", info.description])
    print_table(header, rows)
    if args.verbose:
        print("\npapers:")
        for info in infos:
            if info.paper:
                print_wrapped(f"{info.name}: {info.paper}. {info.paper_url}")
    else:
        print("\n`ivfusion list --verbose` adds sizes and the papers; `ivfusion fuse --help` shows how to run one.")
    return 0


# ------------------------------------------------------------------------------------ samples


def _add_samples(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "samples",
        help="the bundled sample pairs, or the two files of one",
        description="Without NAME: list the sample pairs bundled with ivfusion. With NAME: print its infrared "
                    "and visible file paths on one line, for the shell: ivfusion fuse $(ivfusion samples night) "
                    "-o fused.png",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a sample pair: day, night or mri_pet")


def _cmd_samples(args: argparse.Namespace) -> int:
    from .. import data

    if args.name is not None:
        ir, vis = data.sample_pair(args.name, as_path=True)
        print(f"{ir} {vis}")
        return 0
    rows = []
    for name in data.list_samples():
        info = data.sample_info(name)
        rows.append([name, info.license, info.description])
    print_table(["sample", "terms", "description"], rows)
    print("\nfiles of one: ivfusion samples NAME; sources: " + str(data.SAMPLES_DIR / "ATTRIBUTION.md"))
    return 0


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
    pl.add_argument("-m", "--method", default=None, help="only this method's weights (default: all)")
    pl.add_argument("-v", "--verbose", action="store_true",
                    help="also print each weight's licence, training data and description")
    wsub.add_parser("verify", help="re-hash every bundled, $IVFUSION_WEIGHTS_DIR and cached weight file")
    pc = wsub.add_parser(
        "card",
        help="write a weight's Hugging Face model card (README.md) from its manifest entry",
        description="Print the model card of NAME (Markdown with YAML front matter: licence, tags, datasets, "
                    "metrics), or with -o write it and its comparison picture NAME.jpg next to it (the sample "
                    "pairs fused with the weight and the classical baselines; a few seconds on a CPU).",
    )
    pc.add_argument("name", metavar="NAME", help="a weight of the manifest, e.g. refinefuse.ivif")
    pc.add_argument("-o", "--output", default=None, metavar="FILE",
                    help="write the card here, e.g. README.md (default: print it)")
    pc.add_argument("--no-image", action="store_true", help="with -o: do not write the comparison picture")
    pc.add_argument("--overwrite", action="store_true", help="replace the card and picture if they exist")
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
    from .. import pretrained as W
    from ..train.export import export_checkpoint

    if args.weights_command == "list":
        rows = []
        names = W.list_weights(args.method)
        for name in names:
            info = W.get_weight_info(name)
            where = ",".join(loc for loc, _ in W.local_copies(name)) or "hub"
            rows.append([name, "yes" if info.default else "", info.dtype, f"{info.size / 1e6:.2f} MB",
                         where, f"{info.repo_id}@{info.revision}"])
        if not rows:
            print(f"no weights in the manifest {W.get_manifest().source}"
                  + (f" for method {args.method!r}" if args.method else ""))
            return 0
        print_table(["weight", "default", "dtype", "size", "local", "hub"], rows)
        if args.verbose:
            for name in names:
                info = W.get_weight_info(name)
                print(f"\n{name}:")
                for label, text in (("licence", info.license), ("description", info.description)):
                    print_wrapped(f"{label}: {text}")
        else:
            print("\nlicences (the bundled weights are NON-COMMERCIAL): ivfusion weights list --verbose\n"
                  "model card of a weight: ivfusion weights card NAME")
        return 0

    if args.weights_command == "card":
        from ..cards import model_card, write_model_card

        if args.output is None:
            print(model_card(args.name))
            return 0
        for path in write_model_card(args.name, args.output, image=not args.no_image, overwrite=args.overwrite):
            print(f"wrote {path}")
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
    po.add_argument("-O", "--option", dest="options", action="append", type=parse_option, default=[],
                    metavar="KEY=VALUE", help="forward option baked into the graph, e.g. -O rule=average (DIDFuse)")
    po.add_argument("--overwrite", action="store_true", help="replace the output if it exists")


def _cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import DEFAULT_OPSET, export_onnx, read_onnx_info

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


