"""``ivfusion demo``: the web demo (extra ``[demo]``)."""
from __future__ import annotations

import argparse


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="serve a web page to try every method on your own pairs (extra [demo])",
        description="Serve the web demo (Gradio) until Ctrl+C: upload a pair or pick an example, choose methods, "
                    "compare, score and download the results. Prints the URL.",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    p.add_argument("--share", action="store_true",
                   help="also open a temporary public link through Gradio's share servers (off by default)")


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import serve  # raises ImportError naming the extra [demo] when Gradio is missing

    if args.port is not None and not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    serve(host=args.host, port=args.port, share=args.share, announce=lambda line: print(line, flush=True))
    return 0
