"""The ``ivfusion`` command line (also ``python -m ivfusion``).

Each subcommand is a pair of functions in a small module of this package: ``_add_<name>(subparsers)``
declares its arguments and ``_cmd_<name>(args) -> int`` runs it (``_fusion``: fuse, fuse-video,
compare; ``_register``: register; ``_weights``: list, samples, weights (and model cards), export;
``_train``: eval, train, train-registration; ``_demo``: demo; ``_common``: shared helpers). The work itself
lives in the library; this package only parses, calls and prints. Expected failures (bad input, missing
files, unavailable weights) print one line ``ivfusion: error: ...`` and exit with status 1 (so do ``OSError`` of
input and output files: no permission, a directory, a full or read-only disk); usage errors exit with 2.
"""
from __future__ import annotations

import argparse
import signal
import sys
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .._version import __version__
from ._common import CLIError, cli_message, error_line
from ._demo import _add_demo, _cmd_demo
from ._fusion import _add_compare, _add_fuse, _add_fuse_video, _cmd_compare, _cmd_fuse, _cmd_fuse_video
from ._register import _add_register, _cmd_register
from ._train import _add_eval, _add_train, _add_train_registration, _cmd_eval, _cmd_train, _cmd_train_registration
from ._weights import (
    _add_export,
    _add_list,
    _add_samples,
    _add_weights,
    _cmd_export,
    _cmd_list,
    _cmd_samples,
    _cmd_weights,
)

__all__ = ["main", "build_parser", "CLIError"]


# ------------------------------------------------------------------------------------ main

_COMMANDS: Dict[str, Tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = {
    "fuse": (_add_fuse, _cmd_fuse),
    "fuse-video": (_add_fuse_video, _cmd_fuse_video),
    "compare": (_add_compare, _cmd_compare),
    "register": (_add_register, _cmd_register),
    "list": (_add_list, _cmd_list),
    "samples": (_add_samples, _cmd_samples),
    "weights": (_add_weights, _cmd_weights),
    "eval": (_add_eval, _cmd_eval),
    "train": (_add_train, _cmd_train),
    "train-registration": (_add_train_registration, _cmd_train_registration),
    "export": (_add_export, _cmd_export),
    "demo": (_add_demo, _cmd_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ivfusion", description="Infrared-visible and medical image fusion.")
    parser.add_argument("--version", action="version", version=f"ivfusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add, _ in _COMMANDS.values():
        add(sub)
    return parser


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Any = None) -> None:
    # A library warning (e.g. inputs that may be swapped) as one line, like the errors.
    print(f"ivfusion: warning: {message}", file=sys.stderr)


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
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return run(args)
    except (CLIError, ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        # OSError: input and output files (no permission, a directory, a full or read-only disk ...)
        print(f"ivfusion: error: {cli_message(error_line(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ivfusion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
