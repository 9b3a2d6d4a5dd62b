"""Video fusion throughput: frames per second of ``ivfusion.fuse_video`` end to end.

Writes a synthetic infrared/visible pair of videos (8-bit grey infrared with moving warm targets,
colour visible scene; H.264, yuv420p), then times ``fuse_video`` on it for each method: decoding,
pairing, fusion (in batches), colour reattachment and H.264 encoding (crf 18, x264's default
preset) included, as a user runs it. Prints a markdown table.

    python benchmarks/video.py                          # guided, 60 frames at 640x480, CPU
    python benchmarks/video.py --networks --frames 10   # + every network with weights (slow on a CPU)
    python benchmarks/video.py --methods guided laplacian average --device cuda --batch-size 8
    python benchmarks/video.py --write-pair clips/ --frames 300   # only write ir.mp4 / vis.mp4 and exit

Needs PyAV (``pip install 'ivfusion[video]'``).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np
import torch

import ivfusion


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synthetic_frames(n: int, height: int, width: int, seed: int = 0):
    """Yield ``(ir uint8 HxW, vis uint8 HxWx3)`` frames: a scene panning slowly, warm targets moving."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    targets = rng.uniform(0, 1, (4, 4)).astype(np.float32)  # x0, y0, vx, vy per target
    base_ir = 70 + 25 * np.sin(xx / 53) * np.cos(yy / 41)
    for i in range(n):
        shift = 0.8 * i
        ir = base_ir + 15 * np.sin((xx + shift) / 17)
        for x0, y0, vx, vy in targets:
            cx = (x0 * width + (vx - 0.5) * 6 * i) % width
            cy = (y0 * height + (vy - 0.5) * 4 * i) % height
            ir += 140 * np.exp(-(((xx - cx) / 18) ** 2 + ((yy - cy) / 30) ** 2))
        ir += rng.normal(0, 2.0, ir.shape).astype(np.float32)
        r = 110 + 70 * np.sin((xx + shift) / 37) + 20 * np.sin(yy / 7)
        g = 120 + 60 * np.cos((yy - shift / 2) / 29)
        b = 100 + 50 * np.sin((xx + yy + shift) / 45) + 15 * np.cos(xx / 5)
        vis = np.stack([r, g, b], axis=-1) + rng.normal(0, 3.0, (height, width, 3)).astype(np.float32)
        yield (np.clip(ir, 0, 255).astype(np.uint8), np.clip(vis, 0, 255).astype(np.uint8))


def write_pair(folder: Path, n: int, height: int, width: int, rate: int) -> List[Path]:
    """Write ``folder/ir.mp4`` and ``folder/vis.mp4`` (H.264, yuv420p, crf 18, ``rate`` fps)."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "ir.mp4", folder / "vis.mp4"]
    containers = [av.open(str(p), "w") for p in paths]
    streams = []
    for c in containers:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "18", "preset": "veryfast"}
        streams.append(s)
    for i, (ir, vis) in enumerate(synthetic_frames(n, height, width)):
        for c, s, arr, fmt in zip(containers, streams, (ir, vis), ("gray", "rgb24")):
            frame = av.VideoFrame.from_ndarray(arr, format=fmt)
            frame.pts = i
            for packet in s.encode(frame):
                c.mux(packet)
    for c, s in zip(containers, streams):
        for packet in s.encode():
            c.mux(packet)
        c.close()
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames of the synthetic clip (default 60)")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--rate", type=int, default=30, help="frame rate of the clip (default 30)")
    parser.add_argument("--methods", nargs="+", default=["guided"], help="methods to time (default: guided)")
    parser.add_argument("--networks", action="store_true", help="also time every network that has weights")
    parser.add_argument("--batch-size", type=int, default=None, help="default: fuse_video's (8 on CUDA, 1 on CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--write-pair", metavar="DIR", default=None,
                        help="only write DIR/ir.mp4 and DIR/vis.mp4 (the synthetic pair) and exit")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.write_pair:
        t0 = time.perf_counter()
        paths = write_pair(Path(args.write_pair), args.frames, height, width, args.rate)
        print(f"wrote {', '.join(map(str, paths))}: {args.frames} frames {width}x{height} at {args.rate} fps "
              f"in {time.perf_counter() - t0:.1f} s")
        return

    import av

    methods = list(args.methods)
    if args.networks:
        methods += [m for m in ivfusion.list_methods(available_only=True)
                    if ivfusion.method_info(m).kind == "network" and m not in methods]
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"{_cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    print(f"device: {args.device} [{where}], torch {torch.__version__}, PyAV {av.__version__}, "
          f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        ir, vis = write_pair(folder, args.frames, height, width, args.rate)
        print(f"clip: {args.frames} frames {width}x{height} at {args.rate} fps (written in "
              f"{time.perf_counter() - t0:.1f} s); batch {args.batch_size or 'auto'}; output H.264 yuv420p crf 18\n")
        print("| method | frames | seconds | frames/s | ms/frame |")
        print("|---|---:|---:|---:|---:|")
        for m in methods:
            # Warm-up on 2 frames (weights, allocator), then the timed run.
            ivfusion.fuse_video(ir, vis, folder / "warm.mp4", m, frames=(0, 2), device=args.device,
                                batch_size=args.batch_size, overwrite=True, progress=False)
            r = ivfusion.fuse_video(ir, vis, folder / f"{m}.mp4", m, device=args.device,
                                    batch_size=args.batch_size, progress=False)
            print(f"| {m} | {r.frames} | {r.seconds:.1f} | {r.throughput:.2f} | {1000 / r.throughput:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
