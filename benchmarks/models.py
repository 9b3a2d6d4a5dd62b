"""Latency benchmark of the registered fusion networks.

Runs every model (random initialisation: speed does not depend on the weights) on random
``(1, 1, H, W)`` infrared / visible pairs and prints markdown tables: parameters and GFLOPs at
640x480, then the median latency per model, size and variant.

* CPU: the variants ``fuse`` runs: float32 and bfloat16 autocast, channels-last, with freed memory
  kept in the heap (:mod:`ivfusion._heap`), plus the peak RSS of each measurement (``VmHWM`` reset
  before it). ``--before REV`` also times the package as it was at git revision ``REV`` (NCHW float32,
  what ``fuse`` ran before) in alternating subprocesses of the same run, and prints the speed-ups.
  ``--official-didfuse`` adds DIDFuse side by side with the official repository's model code
  (``benchmarks/_official_didfuse.py``) on the official weights, in one process, with the max abs
  difference of the outputs.
* CUDA: float32, float16 and bfloat16 (``torch.autocast``), each eager and with ``torch.compile``,
  channels-last memory format; timed with CUDA events. float16 is skipped for models registered with
  ``half_precision=False``.

Each measurement does ``--warmup`` untimed calls and reports the median of ``--repeats`` timed calls
under ``torch.inference_mode``. Example::

    python benchmarks/models.py --sizes 256x256,640x480,1280x1024 --before 5a474ec --official-didfuse
    python benchmarks/models.py --device cuda --models refinefuse --repeats 50
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
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


# --------------------------------------------------------------------------------------------------
# CPU: before/after in subprocesses, official DIDFuse side by side

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _rss_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _release_heap() -> None:
    try:
        from ivfusion._heap import release_heap
    except ImportError:  # a revision without it
        return
    release_heap()


def _heap_context():
    from ivfusion._heap import heap_reuse

    return heap_reuse()


def cpu_worker(names: Sequence[str], sizes: Sequence[Tuple[int, int]], variants_: Sequence[str],
               warmup: int, repeats: int) -> None:
    """Print one JSON line per (network, size, variant): median ms and peak working RSS (MB).

    Variants: ``nchw-fp32`` (contiguous float32, plain call: what ``fuse`` ran before),
    ``fp32`` / ``bf16`` (channels-last, heap reuse, autocast for bf16: what ``fuse`` runs now),
    ``fuse`` (``ivfusion.fuse`` on a uint8 pair at the package's CPU defaults)."""
    warnings.simplefilter("ignore")
    gen = torch.Generator().manual_seed(0)
    for name in names:
        model = ivfusion.create_model(name).eval()
        for w, h in sizes:
            ir, vi = torch.rand(1, 1, h, w, generator=gen), torch.rand(1, 1, h, w, generator=gen)
            ir8 = (ir[0, 0] * 255).to(torch.uint8).numpy()
            vi8 = (vi[0, 0] * 255).to(torch.uint8).numpy()
            for variant in variants_:
                if variant == "fuse":
                    def call() -> object:
                        return ivfusion.fuse(ir8, vi8, method=name, weights="random", device="cpu")
                else:
                    cl = variant != "nchw-fp32"
                    net = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
                    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if variant == "bf16" else nullcontext()

                    def call() -> object:
                        with torch.inference_mode(), (_heap_context() if cl else nullcontext()), autocast:
                            return net(ir, vi)
                _release_heap()
                gc.collect()
                base = _rss_mb("VmRSS")
                _reset_peak_rss()
                ms = time_calls(call, torch.device("cpu"), warmup, repeats)
                peak = _rss_mb("VmHWM") - base
                print(json.dumps({"model": name, "size": [w, h], "variant": variant, "ms": ms, "rss_mb": peak}),
                      flush=True)


def official_didfuse_worker(sizes: Sequence[Tuple[int, int]], warmup: int, repeats: int) -> None:
    """DIDFuse with the official weights in both the official model code and ours, alternating calls
    in this one process; one JSON line per size."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _official_didfuse import load_official
    from ivfusion._heap import heap_reuse, release_heap
    from ivfusion.models.didfuse import convert_official_state_dict

    state = load_file(str(SHARED / "reference" / "didfuse_official.safetensors"))
    official = load_official(state)
    ours = ivfusion.models.create_random_model("didfuse")
    ours.load_state_dict(convert_official_state_dict(state), strict=True)
    ours = ours.eval().to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    for w, h in sizes:
        ir, vi = torch.rand(1, 1, h, w, generator=gen), torch.rand(1, 1, h, w, generator=gen)

        def run_official() -> torch.Tensor:
            release_heap()  # the allocator as a plain process has it
            with torch.inference_mode():
                return official(ir, vi)

        def run_official_heap() -> torch.Tensor:
            with torch.inference_mode(), heap_reuse():
                return official(ir, vi)

        def run_ours() -> torch.Tensor:
            with torch.inference_mode(), heap_reuse():
                return ours(ir, vi)

        def run_ours_bf16() -> torch.Tensor:
            with torch.inference_mode(), heap_reuse(), torch.autocast("cpu", dtype=torch.bfloat16):
                return ours(ir, vi)

        fns = {"official": run_official, "official+heap": run_official_heap, "ours-fp32": run_ours,
               "ours-bf16": run_ours_bf16}
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        times: Dict[str, List[float]] = {k: [] for k in fns}
        for _ in range(repeats):  # alternate, so drifts of the machine hit all alike
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) * 1e3)
        diff = (run_ours() - run_official()).abs().max().item()
        diff_bf16 = (run_ours_bf16().float() - run_official()).abs().max().item()
        print(json.dumps({"size": [w, h], **{k: statistics.median(v) for k, v in times.items()},
                          "max_abs_diff_fp32": diff, "max_abs_diff_bf16": diff_bf16}), flush=True)


def _run_worker(args: List[str], tree: Optional[Path] = None) -> List[dict]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tree or REPO))
    if out.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _checkout(rev: str, dest: Path) -> Path:
    """The package at git revision ``rev``, extracted under ``dest``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "ivfusion"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def cpu_main(args: argparse.Namespace, names: Sequence[str]) -> None:
    sizes = ",".join(f"{w}x{h}" for w, h in args.sizes)
    common = ["--sizes", sizes, "--warmup", str(args.warmup_), "--repeats", str(args.repeats_)]
    with tempfile.TemporaryDirectory() as tmp:
        before_tree = _checkout(args.before, Path(tmp)) if args.before else None
        rows = []
        for name in names:
            after = _run_worker(["--worker", "--models", name, "--variants", "fp32,bf16,fuse", *common])
            res = {(tuple(r["size"]), r["variant"]): r for r in after}
            if before_tree is not None:
                before = _run_worker(["--worker", "--models", name, "--variants", "nchw-fp32,fuse", *common],
                                     tree=before_tree)
                res.update({(tuple(r["size"]), "before-" + r["variant"]): r for r in before})
            for w, h in args.sizes:
                def ms(v: str) -> float:
                    return res[((w, h), v)]["ms"] if ((w, h), v) in res else float("nan")

                def mb(v: str) -> str:
                    return f"{res[((w, h), v)]['rss_mb']:.0f}" if ((w, h), v) in res else "-"

                rows.append([name, f"{w}x{h}", f"{ms('before-nchw-fp32'):.0f}", f"{ms('fp32'):.0f}",
                             f"{ms('bf16'):.0f}", f"{ms('before-nchw-fp32') / ms('fp32'):.2f}",
                             f"{ms('before-nchw-fp32') / ms('bf16'):.2f}", f"{ms('before-fuse'):.0f}",
                             f"{ms('fuse'):.0f}", f"{ms('before-fuse') / ms('fuse'):.2f}",
                             f"{mb('before-nchw-fp32')} / {mb('fp32')} / {mb('bf16')}"])
        print(markdown_table(
            ["model", "size (WxH)", f"before fp32 ({args.before}) ms", "fp32 ms", "bf16 ms", "fp32 speed-up",
             "bf16 speed-up", "fuse() before ms", "fuse() now ms", "fuse() speed-up",
             "peak RSS MB (before / fp32 / bf16)"], rows))
    if args.official_didfuse:
        print()
        rows = []
        for r in _run_worker(["--worker-official", *common]):
            w, h = r["size"]
            rows.append([f"{w}x{h}", f"{r['official']:.0f}", f"{r['official+heap']:.0f}", f"{r['ours-fp32']:.0f}",
                         f"{r['ours-bf16']:.0f}", f"{r['official'] / r['ours-fp32']:.2f}",
                         f"{r['official+heap'] / r['ours-fp32']:.2f}", f"{r['official'] / r['ours-bf16']:.2f}",
                         f"{r['max_abs_diff_fp32']:.1e}", f"{r['max_abs_diff_bf16']:.1e}"])
        print(markdown_table(
            ["DIDFuse, official weights, size", "official ms", "official + heap reuse ms", "ivfusion fp32 ms",
             "ivfusion bf16 ms", "fp32 speed-up", "fp32 speed-up vs official + heap", "bf16 speed-up",
             "max |diff| fp32", "max |diff| bf16"], rows))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("256x256,640x480,1280x1024"),
                        help="comma-separated WIDTHxHEIGHT list (default 256x256,640x480,1280x1024)")
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
    parser.add_argument("--before", default=None, metavar="REV",
                        help="CPU: also time the package at this git revision (subprocesses, same run)")
    parser.add_argument("--official-didfuse", action="store_true",
                        help="CPU: DIDFuse side by side with the official model code (needs ../shared/reference)")
    parser.add_argument("--variants", default="fp32,bf16,fuse", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-official", action="store_true", help=argparse.SUPPRESS)
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

    args.repeats_, args.warmup_ = repeats, warmup
    if args.worker:
        cpu_worker(names, args.sizes, args.variants.split(","), warmup, repeats)
        return 0
    if args.worker_official:
        official_didfuse_worker(args.sizes, warmup, repeats)
        return 0
    cpu_table = not cuda and not compile_
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
    if cpu_table:
        from ivfusion._cpu import native_bf16

        print(f"native bf16: {native_bf16()}; fuse() CPU default precision per network: "
              + ", ".join(f"{n} {'bf16' if get_model_info(n).cpu_bf16 and native_bf16() else 'fp32'}"
                          for n in names) + "\n")
        cpu_main(args, names)
        return 0

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
