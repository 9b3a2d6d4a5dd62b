"""Does ``torch.compile`` pay off for CPU inference? Compile time against time saved per call.

    python benchmarks/cpu_compile.py                    # every network, 640x480
    python benchmarks/cpu_compile.py --models f3net --size 1280x1024

Per network, as ``fuse()`` runs it on the CPU (channels-last, heap reuse, its CPU default precision):
the median of ``--repeats`` eager calls; then ``torch.compile(model, dynamic=False)`` (inductor), the
wall time of its first call (compilation included), and the median of ``--repeats`` compiled calls.
"break-even" is how many calls of one image size it takes before the compilation has paid for itself
(a new size recompiles).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext

import torch

import ivfusion
from ivfusion._cpu import native_bf16
from ivfusion._heap import heap_reuse
from ivfusion.models import get_model_info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(ivfusion.list_models()))
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    print(f"torch {torch.__version__}; {torch.get_num_threads()} threads; {w}x{h}; median of {args.repeats}\n")
    print("| network | precision | eager ms | first compiled call s | compiled ms | speed-up | break-even calls |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        bf16 = get_model_info(name).cpu_bf16 and native_bf16()
        model = ivfusion.create_model(name).eval().to(memory_format=torch.channels_last)
        ir, vi = torch.rand(1, 1, h, w), torch.rand(1, 1, h, w)

        def timed(net: torch.nn.Module) -> float:
            t0 = time.perf_counter()
            with torch.inference_mode(), heap_reuse(), (
                torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
            ):
                net(ir, vi)
            return time.perf_counter() - t0

        timed(model)
        eager = statistics.median(timed(model) for _ in range(args.repeats))
        torch._dynamo.reset()
        compiled = torch.compile(model, dynamic=False)
        first = timed(compiled)
        fast = statistics.median(timed(compiled) for _ in range(args.repeats))
        saved = eager - fast
        even = f"{(first - fast) / saved:.0f}" if saved > 0 else "never"
        print(f"| {name} | {'bf16' if bf16 else 'fp32'} | {eager * 1e3:.0f} | {first:.1f} | {fast * 1e3:.0f} | "
              f"{eager / fast:.2f} | {even} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
