"""PyTorch eager vs ONNX Runtime, per network, on the CPU, side by side in one run.

    python benchmarks/onnx_backend.py --threads 2 --rounds 5 [--size 480 640] [--methods f3net didfuse]

Each network (shipped weights) is exported once with :func:`ivfusion.export_onnx` (dynamic shapes),
then PyTorch (fp32, ``torch.inference_mode``, NCHW: the ``fuse()`` CPU default) and the ONNX Runtime
CPU session (``intra_op_num_threads`` = ``--threads``) run the same random ``1 x 1 x H x W`` pair
in alternating calls after one warm-up each, so that load from other processes falls on both alike.
Prints the median milliseconds, the ratio torch / onnxruntime (> 1: onnxruntime is faster), the max
abs difference of the outputs and the export time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivfusion.deploy import OnnxFusion, export_onnx  # noqa: E402
from ivfusion.models import create_model, list_models  # noqa: E402
from ivfusion.train import hardware_description  # noqa: E402


def _ms(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list_models(), choices=list_models())
    p.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    ir = torch.rand(1, 1, *args.size, generator=gen)
    vis = torch.rand(1, 1, *args.size, generator=gen)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            t = time.perf_counter()
            path = export_onnx(method, Path(tmp) / f"{method}.onnx")
            export_s = time.perf_counter() - t
            session = OnnxFusion(path, ["CPUExecutionProvider"], threads=args.threads)
            model = create_model(method, pretrained=True)

            def run_torch() -> torch.Tensor:
                with torch.inference_mode():
                    return model(ir, vis)

            diff = float((run_torch() - session(ir, vis)).abs().max())  # also the warm-up of both
            times = {"torch": [], "onnxruntime": []}
            for _ in range(args.rounds):
                times["torch"].append(_ms(run_torch))
                times["onnxruntime"].append(_ms(session, ir, vis))
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append((method, med["torch"], med["onnxruntime"], med["torch"] / med["onnxruntime"], diff, export_s))
            print(f"  {method}: torch {med['torch']:.0f} ms, onnxruntime {med['onnxruntime']:.0f} ms", file=sys.stderr)
    h, w = args.size
    print(f"\n{hardware_description(torch.device('cpu'))}, torch {torch.__version__}, onnxruntime "
          f"{__import__('onnxruntime').__version__}; 1x1x{h}x{w}, median of {args.rounds} alternating calls\n")
    print("| network | PyTorch eager fp32 (ms) | ONNX Runtime CPU (ms) | speed-up | max abs diff | export (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, t_ms, o_ms, ratio, diff, export_s in rows:
        print(f"| {method} | {t_ms:.0f} | {o_ms:.0f} | {ratio:.2f}x | {diff:.1e} | {export_s:.0f} |")


if __name__ == "__main__":
    main()
