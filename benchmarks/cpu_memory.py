"""Peak CPU working memory of one fp32 forward pass per input pixel, per network, run as ``fuse()``
runs it (channels-last, heap reuse).

    python benchmarks/cpu_memory.py            # 512^2 and 1024^2, each in a fresh process

Each measurement runs in its own process: load the network with its weights, run a 64x64 warm-up,
read the peak RSS, run one ``side x side`` pair, read the peak RSS again; the difference divided by
the pixel count is the working memory per input pixel (the model and the runtime are in the
baseline). ``fuse()`` tiles on the CPU by these numbers (``cpu_bytes_per_pixel`` in each network's
registration, rounded up about 10 %).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_CHILD = """
import resource, sys, torch
import ivfusion
name, side = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(2)
from ivfusion._heap import heap_reuse
# as fuse() runs it: channels-last, fp32, freed memory kept in the heap during the call
m = ivfusion.create_model(name, pretrained=True).to(memory_format=torch.channels_last)
with torch.inference_mode(), heap_reuse():
    m(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
x, y = torch.rand(1, 1, side, side), torch.rand(1, 1, side, side)
with torch.inference_mode(), heap_reuse():
    m(x, y)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((peak - base) * 1024 / (side * side))
"""


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    import ivfusion

    print("| network | bytes/px at 512x512 | bytes/px at 1024x1024 | registered |")
    print("|---|---:|---:|---:|")
    for name in ivfusion.list_models():
        values = [float(subprocess.run([sys.executable, "-c", _CHILD, name, str(side)], capture_output=True,
                                       text=True, check=True, cwd=repo).stdout.strip().splitlines()[-1])
                  for side in (512, 1024)]
        registered = ivfusion.get_model_info(name).cpu_bytes_per_pixel
        print(f"| {name} | {values[0]:.0f} | {values[1]:.0f} | {registered:.0f} |")


if __name__ == "__main__":
    main()
