"""Still strip of a fused video for the README: infrared, visible and fused frames of a short sequence.

    python examples/gallery/make_video_strip.py                # writes examples/gallery/video_strip.jpg
    python examples/gallery/make_video_strip.py --video /tmp/tree_fused.mp4 --out /tmp/strip.jpg

The 14 consecutive frames ``Tree_sequence__thermal__49NN`` of TNO (``<data-root>/train/tno/ir`` and
``.../vi``, 360x270, 8-bit grey) are copied into two temporary folders and fused as two image
sequences by :func:`ivfusion.fuse_video` (``--method``, default ``guided``; 30 fps, the default for
folders; H.264, crf 18, yuv420p) into an ``.mp4``. ``--columns`` frames spread evenly over that video
are decoded again (PyAV) and laid out as a strip: rows infrared, visible, fused; one column per frame,
each shrunk to ``--cell-width`` pixels wide. Saved as JPEG (``--quality``, default 85). Needs PyAV
(``pip install 'ivfusion[video]'``).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import List

import av
import numpy as np
from PIL import Image, ImageDraw

import ivfusion
from ivfusion.io import read_image

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_ROOT = HERE.parents[1].parent / "shared" / "data" / "ivif"
LABEL_WIDTH, HEADER, GAP = 64, 18, 4


def copy_sequence(src: Path, prefix: str, dst: Path) -> List[Path]:
    """Copy the frames of ``src`` whose names start with ``prefix`` into ``dst`` (a folder of only them)."""
    files = sorted(p for p in src.iterdir() if p.name.startswith(prefix))
    if not files:
        raise SystemExit(f"no frames {prefix}* in {src}")
    dst.mkdir(parents=True)
    return [Path(shutil.copy2(p, dst / p.name)) for p in files]


def decode_grey(video: Path) -> List[np.ndarray]:
    with av.open(str(video)) as container:
        return [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]


def strip(rows: List[List[np.ndarray]], labels: List[str], titles: List[str], cell_width: int) -> Image.Image:
    """Rows of equally sized grey frames, each shrunk to ``cell_width``, with row labels and column titles."""
    h, w = rows[0][0].shape
    cw, ch = cell_width, round(h * cell_width / w)
    canvas = Image.new("L", (LABEL_WIDTH + len(titles) * (cw + GAP), HEADER + len(rows) * (ch + GAP)), 255)
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((LABEL_WIDTH + c * (cw + GAP) + 4, 3), title, fill=0)
    for r, (label, frames) in enumerate(zip(labels, rows)):
        y = HEADER + r * (ch + GAP)
        draw.text((4, y + ch // 2 - 6), label, fill=0)
        for c, frame in enumerate(frames):
            cell = Image.fromarray(frame).resize((cw, ch), Image.LANCZOS)
            canvas.paste(cell, (LABEL_WIDTH + c * (cw + GAP), y))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--prefix", default="Tree_sequence__thermal__49", help="frame name prefix (TNO tree)")
    parser.add_argument("--method", default="guided")
    parser.add_argument("--columns", type=int, default=4, help="frames shown (default 4)")
    parser.add_argument("--cell-width", type=int, default=240, help="width of one frame in the strip")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality (default 85)")
    parser.add_argument("--out", type=Path, default=HERE / "video_strip.jpg")
    parser.add_argument("--video", type=Path, default=None, help="also keep the fused video here")
    args = parser.parse_args()

    tno = args.data_root / "train" / "tno"
    with tempfile.TemporaryDirectory() as tmp:
        ir = copy_sequence(tno / "ir", args.prefix, Path(tmp) / "ir")
        vis = copy_sequence(tno / "vi", args.prefix, Path(tmp) / "vi")
        video = Path(tmp) / "fused.mp4"
        report = ivfusion.fuse_video(video.parent / "ir", video.parent / "vi", video, method=args.method,
                                     progress=False)
        fused = decode_grey(video)
        if args.video:
            args.video.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(video, args.video)
        assert len(fused) == len(ir) == len(vis) == report.frames, (len(fused), len(ir), len(vis))
        picks = np.linspace(0, len(fused) - 1, args.columns).round().astype(int).tolist()
        rows = [[read_image(ir[i]) for i in picks], [read_image(vis[i]) for i in picks], [fused[i] for i in picks]]
        titles = [f"frame {i} ({i / report.fps:.2f} s)" for i in picks]
        image = strip(rows, ["infrared", "visible", f"fused\n{args.method}"], titles, args.cell_width)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, format="JPEG", quality=args.quality, optimize=True)
    print(f"fused {report.frames} frames ({report.size[1]}x{report.size[0]}, {report.codec}, {report.fps:g} fps) "
          f"in {report.seconds:.1f} s; wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB), frames {picks}")


if __name__ == "__main__":
    main()
