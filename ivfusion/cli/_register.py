"""``ivfusion register``: estimate (and save) the registration of an infrared camera to a visible one."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CLIError


def _add_register(sub: argparse._SubParsersAction) -> None:
    from ..registration import DEFAULT_ESTIMATOR, DEFAULT_MODEL, ESTIMATORS, MODELS

    p = sub.add_parser(
        "register",
        help="register an infrared image to a visible one and save the transform as JSON (rig calibration)",
        description="Estimate how IR maps into VIS's frame and write it to -o RIG.json, for "
                    "`ivfusion fuse --align RIG.json`. With --ir-dir/--vis-dir, one registration is "
                    "estimated from the first --pairs pairs (matched by file stem): a rig's calibration.",
    )
    p.add_argument("ir", nargs="?", help="infrared image")
    p.add_argument("vis", nargs="?", help="visible image")
    p.add_argument("--ir-dir", help="folder of infrared images (calibrate from several pairs)")
    p.add_argument("--vis-dir", help="folder of visible images")
    p.add_argument("--pairs", type=int, default=5, metavar="N", help="with --ir-dir: pairs to use (default 5)")
    p.add_argument("-o", "--output", required=True, help="registration JSON to write")
    p.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL, help=f"transform model (default {DEFAULT_MODEL})")
    p.add_argument("--estimator", choices=ESTIMATORS, default=DEFAULT_ESTIMATOR,
                   help=f"estimator (default {DEFAULT_ESTIMATOR})")
    p.add_argument("--scale", type=float, default=1.0,
                   help="expected size of the infrared in the visible frame relative to the same field of view")
    p.add_argument("--ir-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="map infrared values LO..HI to 0..1 (16-bit thermal)")
    p.add_argument("--strict", action="store_true", help="fail instead of warning when the estimate is doubtful")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")


def _cmd_register(args: argparse.Namespace) -> int:
    from ..io import pair_files
    from ..registration import register, register_pairs

    single = bool(args.ir or args.vis)
    batch = bool(args.ir_dir or args.vis_dir)
    if single == batch:
        raise CLIError("give either IR VIS, or --ir-dir and --vis-dir")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"output {str(out)!r} exists; pass --overwrite")
    kwargs = dict(estimator=args.estimator, scale=args.scale, strict=args.strict,
                  ir_range=tuple(args.ir_range) if args.ir_range else None)
    if single:
        if not (args.ir and args.vis):
            raise CLIError("single-pair mode needs IR and VIS")
        reg = register(args.ir, args.vis, args.model, **kwargs)
        source = "1 pair"
    else:
        if not (args.ir_dir and args.vis_dir):
            raise CLIError("batch mode needs --ir-dir and --vis-dir")
        if args.pairs < 1:
            raise CLIError(f"--pairs must be >= 1, got {args.pairs}")
        pairs, _, _ = pair_files(args.ir_dir, args.vis_dir)
        if not pairs:
            raise CLIError("no pairs with matching file stems in --ir-dir and --vis-dir")
        reg = register_pairs([(ir, vis) for _, ir, vis in pairs[:args.pairs]], args.model, **kwargs)
        source = f"{min(args.pairs, len(pairs))} pairs"
    reg.save(out)
    m = reg.matrix
    print(f"wrote {out}: {reg.model} ({reg.estimator}) from {source}, infrared {reg.ir_size[1]}x{reg.ir_size[0]} -> "
          f"visible {reg.vis_size[1]}x{reg.vis_size[0]}, confidence {reg.confidence:.2f}, "
          f"translation ({m[0, 2]:.1f}, {m[1, 2]:.1f}) px")
    return 0
