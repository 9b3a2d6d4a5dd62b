"""Latency benchmark of the registered fusion networks.

Runs every model (random initialisation: speed does not depend on the weights) on random
``(1, 1, H, W)`` infrared / visible pairs and prints markdown tables: parameters and GFLOPs at
640x480, then the median latency per model, size and variant.

* CPU: float32 eager.
* CUDA: float32, float16 and bfloat16 (``torch.autocast``), each eager and with ``torch.compile``,
  channels-last memory format; timed with CUDA events. float16 is skipped for models registered with
  ``half_precision=False``.

Each measurement does ``--warmup`` untimed calls and reports the median of ``--repeats`` timed calls
under ``torch.inference_mode``. Example::

    python benchmarks/models.py --sizes 256x256,640x480 --repeats 3
    python benchmarks/models.py --device cuda --models refinefuse --repeats 50
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

import ivfusion
from ivfusion.models import count_parameters, get_model_info, measure_flops

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_sizes(text: str) -> List[Tuple[int, int]]:
    """``"256x256,640x480"`` -> ``[(256, 256), (640, 480)]`` as (width, height)."""
    sizes = []
    for item in text.split(","):
        try:
            w, h = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"sizes must look like 640x480,1024x768 (WIDTHxHEIGHT); got {item!r}")
        if w < 1 or h < 1:
            raise argparse.ArgumentTypeError(f"sizes must be positive, got {item!r}")
        sizes.append((w, h))
    return sizes


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} logical cores)"


def time_calls(fn: Callable[[], torch.Tensor], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def variants(precisions: Sequence[str], compile_: bool) -> List[Tuple[str, str, bool]]:
    """``(label, precision, compiled)`` for the columns of the latency table."""
    out = [(p, p, False) for p in precisions]
    if compile_:
        out += [(f"{p}+compile", p, True) for p in precisions]
    return out


def bench_model(
    name: str,
    sizes: Sequence[Tuple[int, int]],
    device: torch.device,
    cols: Sequence[Tuple[str, str, bool]],
    channels_last: bool,
    warmup: int,
    repeats: int,
) -> Dict[Tuple[int, int], Dict[str, str]]:
    info = get_model_info(name)
    model = ivfusion.create_model(name, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    results: Dict[Tuple[int, int], Dict[str, str]] = {}
    gen = torch.Generator().manual_seed(0)
    for w, h in sizes:
        ir = torch.rand(1, 1, h, w, generator=gen).to(device)
        vi = torch.rand(1, 1, h, w, generator=gen).to(device)
        if channels_last:
            ir, vi = ir.contiguous(memory_format=torch.channels_last), vi.contiguous(memory_format=torch.channels_last)
        row: Dict[str, str] = {}
        for label, precision, use_compile in cols:
            if precision == "fp16" and not info.half_precision:
                row[label] = "n/a"
                continue
            net: torch.nn.Module = model
            if use_compile:
                # A fresh compilation per cell: every (size, precision) pair would otherwise add a
                # recompilation and soon hit dynamo's recompile limit (silent fallback to eager).
                torch._dynamo.reset()
                net = torch.compile(model, dynamic=False)
            autocast = (
                torch.autocast(device.type, dtype=DTYPES[precision]) if precision != "fp32" else nullcontext()
            )

            def call() -> torch.Tensor:
                with torch.inference_mode(), autocast:
                    return net(ir, vi)

            try:
                row[label] = f"{time_calls(call, device, warmup, repeats):.1f}"
            except Exception as exc:  # report and go on with the other variants
                row[label] = f"error: {type(exc).__name__}"
                print(f"[{name} {w}x{h} {label}] {type(exc).__name__}: {exc}", file=sys.stderr)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results[(w, h)] = row
    return results


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("256x256,640x480,1024x768"),
                        help="comma-separated WIDTHxHEIGHT list (default 256x256,640x480,1024x768)")
    parser.add_argument("--models", default=None,
                        help="comma-separated model names (default: all of ivfusion.list_models())")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement "
                        "(default 3 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 1 CPU, 10 CUDA)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    parser.add_argument("--precisions", default=None,
                        help="comma-separated subset of fp32,fp16,bf16 (default: fp32 on CPU, all on CUDA)")
    parser.add_argument("--compile", dest="compile_", action=argparse.BooleanOptionalAction, default=None,
                        help="also time torch.compile'd models (default: on for CUDA, off for CPU)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last memory format (default: on for CUDA, off for CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    cuda = device.type == "cuda"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else ivfusion.list_models()
    unknown = [n for n in names if n not in ivfusion.list_models()]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(ivfusion.list_models())}")
    precisions = args.precisions.split(",") if args.precisions else (list(DTYPES) if cuda else ["fp32"])
    for p in precisions:
        if p not in DTYPES:
            parser.error(f"--precisions entries must be among {', '.join(DTYPES)}, got {p!r}")
    compile_ = cuda if args.compile_ is None else args.compile_
    channels_last = cuda if args.channels_last is None else args.channels_last
    repeats = args.repeats or (30 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)

    print(f"device: {device_name(device)}; torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"channels_last {channels_last}; warm-up {warmup}, median of {repeats}"
          + (f"; cudnn TF32 {torch.backends.cudnn.allow_tf32}" if cuda else ""))
    print()
    rows = []
    for n in names:
        info = get_model_info(n)
        model = ivfusion.create_model(n)
        rows.append([n, f"{count_parameters(model):,}", f"{measure_flops(model, 480, 640):.1f}",
                     info.size_multiple, "yes" if info.half_precision else "no"])
    print(markdown_table(["model", "params", "GFLOPs @640x480", "size multiple", "fp16"], rows))
    print()

    cols = variants(precisions, compile_)
    rows = []
    for n in names:
        res = bench_model(n, args.sizes, device, cols, channels_last, warmup, repeats)
        for (w, h), row in res.items():
            rows.append([n, f"{w}x{h}"] + [row[label] for label, _, _ in cols])
    print(markdown_table(["model", "size (WxH)"] + [f"{label} (ms)" for label, _, _ in cols], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
