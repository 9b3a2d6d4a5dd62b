"""One 3x3 convolution on the CPU: memory layout (NCHW / channels-last) x allocator (glibc's defaults /
heap reuse), the two effects behind the CPU speed-ups of the networks.

    python benchmarks/cpu_allocator.py

Each cell is the median of 5 calls after one warm-up, in ms and in ms per megapixel. "glibc" runs after
:func:`ivfusion._heap.release_heap` (the allocator as a plain process has it: blocks above 32 MiB are
``mmap``-ed and unmapped on ``free``); "heap reuse" inside :func:`ivfusion._heap.heap_reuse`.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from ivfusion._heap import heap_reuse, release_heap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import time_calls  # noqa: E402

CASES = [(16, 16), (64, 64), (128, 64)]
SIZES = [(128, 128), (640, 480), (1280, 1024)]


def main() -> int:
    print(f"torch {torch.__version__}; {torch.get_num_threads()} threads; float32, bias, zero padding 1\n")
    print("| channels | size (WxH) | NCHW glibc ms | NCHW heap reuse ms | NHWC glibc ms | NHWC heap reuse ms |"
          " ms/MP: NCHW glibc / NHWC heap reuse |")
    print("|---|---|---:|---:|---:|---:|---|")
    gen = torch.Generator().manual_seed(0)
    for cin, cout in CASES:
        for w, h in SIZES:
            x = torch.rand(1, cin, h, w, generator=gen)
            weight, bias = torch.rand(cout, cin, 3, 3, generator=gen), torch.rand(cout, generator=gen)
            cells = []
            for layout in (torch.contiguous_format, torch.channels_last):
                xs, ws = x.contiguous(memory_format=layout), weight.contiguous(memory_format=layout)
                for reuse in (False, True):
                    release_heap()

                    def call() -> torch.Tensor:
                        with torch.inference_mode(), (heap_reuse() if reuse else nullcontext()):
                            return F.conv2d(xs, ws, bias, padding=1)

                    cells.append(time_calls(call, torch.device("cpu"), warmup=1, repeats=5))
            release_heap()
            mp = w * h / 1e6
            print(f"| {cin}->{cout} | {w}x{h} | " + " | ".join(f"{c:.1f}" for c in cells)
                  + f" | {cells[0] / mp:.0f} / {cells[3] / mp:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
