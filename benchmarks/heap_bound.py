"""Resident memory of a long loop of CPU fusions: image sizes that vary from call to call against one
fixed size, with heap reuse on (the default) and off (``IVFUSION_HEAP_REUSE=0``).

    python benchmarks/heap_bound.py                       # F3Net, 400 varying + 100 fixed calls per setting
    python benchmarks/heap_bound.py --before ../main      # also the code of another checkout, side by side

Each loop runs in a fresh process: ``fuse(ir, vis, "f3net", device="cpu")`` on ``--calls`` pairs that
are crops of random height and width in ``[--min, --max]`` pixels (seeded, the same sequence for every
loop), or on ``--fixed-calls`` pairs of ``--max x --max`` pixels. After every call the process's ``VmRSS`` is read from
``/proc/self/status``. The table gives RSS at a few points of the loop, the largest RSS seen after a
call, the peak (``VmHWM``, which also counts memory freed within a call), and the median seconds per
call; the fixed-size loop's median is its speed; and how often the heap was trimmed
(``ivfusion._heap``'s bound; "-" for code without it). ``--before PATH`` runs the same loops with
``PATH`` first on ``PYTHONPATH`` (another checkout, e.g. the code before a change), side by side.
``--csv FILE`` writes every call's RSS (one row per call, one column per loop) to plot RSS over time.

Times on a shared machine drift with its load, so ``--speed-rounds N`` also measures speed in
``N`` interleaved rounds: each round runs, for every code and heap-reuse setting in turn, a fresh
process with ``--speed-calls`` varying-size calls (their total seconds) and one with 2 + 8 fixed-size
calls (the median of the last 8). The medians over rounds are printed with their ratios.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
import numpy as np, torch
import ivfusion
from ivfusion import _heap
method, calls, lo, hi, varying, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
    sys.argv[5] == "1", int(sys.argv[6])
torch.set_num_threads(threads)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")

g = np.random.default_rng(0)
base = g.random((hi + 8, hi + 8))
ir_full = (base * 255).astype(np.uint8)
vis_full = (np.clip(0.7 * base + 0.3 * g.random(base.shape), 0, 1) * 255).astype(np.uint8)
sizes = np.random.default_rng(1).integers(lo, hi + 1, size=(calls, 2))
rss, secs = [], []
for i in range(calls):
    h, w = (int(sizes[i, 0]), int(sizes[i, 1])) if varying else (hi, hi)
    y, x = i % 8, (3 * i) % 8
    ir, vis = ir_full[y:y + h, x:x + w], vis_full[y:y + h, x:x + w]
    t = time.perf_counter()
    out = ivfusion.fuse(ir, vis, method, device="cpu")
    secs.append(time.perf_counter() - t)
    assert out.shape == (h, w)
    del out
    rss.append(status("VmRSS"))
print(json.dumps({"rss": rss, "secs": secs, "hwm": status("VmHWM"), "trims": getattr(_heap, "_trims", None)}))
"""


def run_loop(method: str, calls: int, lo: int, hi: int, varying: bool, reuse: bool, threads: int,
             pythonpath: Path) -> Dict[str, object]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")])),
               IVFUSION_HEAP_REUSE="1" if reuse else "0")
    proc = subprocess.run([sys.executable, "-c", _CHILD, method, str(calls), str(lo), str(hi), "1" if varying else "0",
                           str(threads)], capture_output=True, text=True, env=env, cwd=str(pythonpath))
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="f3net")
    ap.add_argument("--calls", type=int, default=400, help="calls of the varying-size loop")
    ap.add_argument("--fixed-calls", type=int, default=100, help="calls of the fixed-size loop")
    ap.add_argument("--min", type=int, default=200, dest="lo")
    ap.add_argument("--max", type=int, default=640, dest="hi")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before", type=Path, default=None, help="another checkout to run side by side")
    ap.add_argument("--csv", type=Path, default=None, help="write every call's RSS (MB) here")
    ap.add_argument("--speed-rounds", type=int, default=0, help="interleaved speed rounds (0: none)")
    ap.add_argument("--speed-calls", type=int, default=40, help="varying-size calls per speed measurement")
    ap.add_argument("--skip-rss", action="store_true", help="only the speed rounds")
    args = ap.parse_args(argv)

    trees = [("now", REPO)] + ([("before", args.before.resolve())] if args.before else [])
    if not args.skip_rss:
        rss_table(args, trees)
    if args.speed_rounds > 0:
        speed_table(args, trees)
    return 0


def speed_table(args: argparse.Namespace, trees) -> None:
    settings = [(code, tree, reuse) for code, tree in trees for reuse in (True, False)]
    varying: Dict[str, List[float]] = {}
    fixed: Dict[str, List[float]] = {}
    for _ in range(args.speed_rounds):
        for code, tree, reuse in settings:
            label = f"{code} {'on' if reuse else 'off'}"
            r = run_loop(args.method, args.speed_calls, args.lo, args.hi, True, reuse, args.threads, tree)
            varying.setdefault(label, []).append(sum(r["secs"]))
            r = run_loop(args.method, 10, args.lo, args.hi, False, reuse, args.threads, tree)
            fixed.setdefault(label, []).append(statistics.median(r["secs"][2:]))
    print(f"\nspeed, {args.speed_rounds} interleaved rounds (median over rounds): {args.speed_calls} varying-size "
          f"calls (s, total) and one {args.hi}x{args.hi} call (s, median of 8 after 2 warm-ups)\n")
    ref = f"{trees[-1][0]} on"
    print(f"| code | heap reuse | varying s | fixed s | varying vs {ref} | fixed vs {ref} |")
    print("|---|---|---:|---:|---:|---:|")
    for label in varying:
        v, f = statistics.median(varying[label]), statistics.median(fixed[label])
        v0, f0 = statistics.median(varying[ref]), statistics.median(fixed[ref])
        code, reuse = label.split()
        print(f"| {code} | {reuse} | {v:.1f} | {f:.3f} | {v / v0:.2f} | {f / f0:.2f} |", flush=True)


def _summary(code: str, results: Dict[str, Dict[str, object]]) -> str:
    """One code's ratios: each varying loop's max RSS to the fixed loop's plateau (heap reuse on: the
    median RSS over its second half), and the fixed-size speed with reuse off against on."""
    fixed = results[f"{code} on fixed"]["rss"]
    plateau = statistics.median(fixed[len(fixed) // 2:])
    lines = []
    for reuse in ("on", "off"):
        var_max = max(results[f"{code} {reuse} varying"]["rss"])
        lines.append(f"{code}, heap reuse {reuse}: varying max RSS / fixed plateau (reuse on) = {var_max:.0f} / "
                     f"{plateau:.0f} = {var_max / plateau:.2f}")
    speed = (statistics.median(results[f"{code} off fixed"]["secs"])
             / statistics.median(results[f"{code} on fixed"]["secs"]))
    lines.append(f"{code}: fixed-size median s/call, reuse off / on = {speed:.2f}")
    return "\n".join(lines)


def rss_table(args: argparse.Namespace, trees) -> None:
    marks = sorted({c for c in (1, 10, 50, 100, 200, 300, 400) if c <= max(args.calls, args.fixed_calls)})
    print(f"{args.method}; varying: {args.calls} calls, random HxW in [{args.lo}, {args.hi}]; fixed: "
          f"{args.fixed_calls} calls at {args.hi}x{args.hi}; {args.threads} threads; RSS in MB after the call\n")
    print("| code | heap reuse | sizes | " + " | ".join(f"RSS @{c}" for c in marks)
          + " | max RSS | peak (VmHWM) | trims | median s/call |")
    print("|---|---|---|" + "---:|" * (len(marks) + 4))
    columns: Dict[str, List[float]] = {}
    results: Dict[str, Dict[str, object]] = {}
    summaries: List[str] = []
    for code, tree in trees:
        for reuse in (True, False):
            for varying in (True, False):
                n = args.calls if varying else args.fixed_calls
                r = run_loop(args.method, n, args.lo, args.hi, varying, reuse, args.threads, tree)
                rss, secs = r["rss"], r["secs"]
                label = f"{code} {'on' if reuse else 'off'} {'varying' if varying else 'fixed'}"
                columns[label] = rss
                results[label] = r
                trims = "-" if r["trims"] is None else str(r["trims"])
                print(f"| {code} | {'on' if reuse else 'off'} | {'varying' if varying else f'{args.hi}x{args.hi}'} | "
                      + " | ".join(f"{rss[c - 1]:.0f}" if c <= n else "" for c in marks)
                      + f" | {max(rss):.0f} | {r['hwm']:.0f} | {trims} | {statistics.median(secs):.3f} |", flush=True)
        summaries.append(_summary(code, results))
        print(summaries[-1], file=sys.stderr, flush=True)  # now, too: a long run may be cut short
    print()
    print("\n".join(summaries))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["call"] + list(columns))
            for i in range(max(args.calls, args.fixed_calls)):
                w.writerow([i + 1] + [f"{columns[k][i]:.1f}" if i < len(columns[k]) else "" for k in columns])


if __name__ == "__main__":
    sys.exit(main())
