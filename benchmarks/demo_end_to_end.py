"""Time the web demo end to end in a real browser: from pressing Fuse to the result shown.

    python benchmarks/demo_end_to_end.py [--pair night] [--methods refinefuse] [--repeats 3]
                                         [--screenshot docs/images/demo.png]

Serves the page (``ivfusion.demo.build_app``) from this process on a free port of 127.0.0.1, drives
headless Chromium through Selenium (Debian's ``chromium`` and ``chromium-driver``), uploads the
bundled pair, presses Fuse and waits until every chosen method's result image has loaded. Request 1
includes loading the networks' weights (once per server); the others do not. For the breakdown, the
same process then times ``ivfusion.fuse`` and the page's metrics (``evaluate`` on DEMO_METRICS) alone.
Prints a markdown table (with the handler's own time, from the page's status line). ``--screenshot``
saves the page after the last request (1400 px wide, whole page, quantised to 256 colours).
"""
from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ivfusion  # noqa: E402
from ivfusion.demo._work import DEMO_METRICS  # noqa: E402
from ivfusion.metrics import evaluate  # noqa: E402
from tests.demo_support import demo_server, start_chromium  # noqa: E402
from tests.test_demo_browser import by_css, choose_methods, open_page, shown_results, upload, wait_for  # noqa: E402


def sources(chrome, methods) -> set:
    return {i.get_attribute("src") for m in methods for i in by_css(chrome, f"#slider-{m} img")}


def save_screenshot(chrome, path: Path) -> None:
    """The whole page at the window's width (1400 px), as a 256-colour PNG."""
    import base64
    import io

    from PIL import Image

    chrome.execute_script("window.scrollTo(0, 0)")
    size = chrome.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = chrome.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    with Image.open(io.BytesIO(base64.b64decode(shot["data"]))) as img:
        img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="night", help="bundled pair to upload (ivfusion.data.list_samples())")
    parser.add_argument("--methods", nargs="+", default=["refinefuse"])
    parser.add_argument("--repeats", type=int, default=3, help="requests; the first one loads the weights")
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()

    ir, vis = ivfusion.data.sample_pair(args.pair, as_path=True)
    times = []
    with demo_server() as server, tempfile.TemporaryDirectory() as tmp:
        chrome = start_chromium(Path(tmp) / "profile", Path(tmp) / "downloads")
        try:
            open_page(chrome, server.url)
            choose_methods(chrome, args.methods)
            for _ in range(args.repeats):
                upload(chrome, "ir", ir)
                upload(chrome, "vis", vis)
                old = sources(chrome, args.methods)
                button = by_css(chrome, "#fuse")[0]
                start = time.perf_counter()
                button.click()
                # new results: each request writes to a folder of its own, so the images' URLs change
                wait_for("the results", lambda: sources(chrome, args.methods).isdisjoint(old)
                         and shown_results(chrome, args.methods), poll=0.05)
                seconds = time.perf_counter() - start
                status = by_css(chrome, "#status")[0].text  # "Fused a WxH pair with N method(s) in S s." (server side)
                times.append((seconds, float(re.search(r" in ([0-9.]+) s\.", status).group(1))))
            if args.screenshot:
                save_screenshot(chrome, args.screenshot)
        finally:
            chrome.quit()

    alone = {}
    for m in args.methods:
        t0 = time.perf_counter()
        fused = ivfusion.fuse(ir, vis, m)
        t1 = time.perf_counter()
        evaluate(fused, ir, vis, list(DEMO_METRICS))
        alone[m] = (t1 - t0, time.perf_counter() - t1)

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; pair {args.pair!r}, methods {', '.join(args.methods)}\n")
    print("| request | button press to result shown (s) | of which in the server's handler (s) |")
    print("|---|---|---|")
    for i, (t, server_s) in enumerate(times, 1):
        print(f"| {i}{' (loads the weights)' if i == 1 else ''} | {t:.2f} | {server_s:.1f} |")
    if len(times) > 1:
        print(f"| median of 2..{len(times)} | {statistics.median(t for t, _ in times[1:]):.2f} | "
              f"{statistics.median(s for _, s in times[1:]):.1f} |")
    print("\n| method | ivfusion.fuse alone (s) | metrics alone (s) |")
    print("|---|---|---|")
    for m, (f, e) in alone.items():
        print(f"| {m} | {f:.2f} | {e:.2f} |")


if __name__ == "__main__":
    main()
