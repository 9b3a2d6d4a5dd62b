"""Figure for docs/registration.md: one pair fused without and with registration.

    python examples/gallery/make_registration_figure.py      # writes examples/gallery/registration.jpg

A validation pair (``--pair``, default ``val/roadscene/FLIR_04484``) is misaligned as a camera rig
would be (the infrared camera shifted, rotated 3 degrees, scaled by 1.05, at 0.6 times the visible
resolution, with a 5-pixel elastic field; fixed seed). The figure has two columns, without and with
registration (``ivfusion.register(..., model="deformable")``): a checkerboard of the infrared and the
visible image (edges that run straight across the squares are aligned) and the RefineFuse fusion
(``ivfusion.fuse(..., resize="ir_to_vis")`` against ``ivfusion.fuse(..., align=registration)``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import ivfusion
from ivfusion.registration import Registration, register
from ivfusion.registration.synthetic import end_point_error, render_infrared
from ivfusion.registration._geometry import dense_flow, scale_matrix
from ivfusion.train.data import load_luma

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "ivif"


def rig_truth(vis_size, ir_factor=0.6, seed=7) -> Registration:
    h, w = vis_size
    ir_size = (round(h * ir_factor), round(w * ir_factor))
    a, s = np.radians(3.0), 1.05
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    rot = np.array([[s * np.cos(a), -s * np.sin(a), 0], [s * np.sin(a), s * np.cos(a), 0], [0, 0, 1]])
    to_c = np.array([[1, 0, -c[0]], [0, 1, -c[1]], [0, 0, 1.0]])
    back = np.array([[1, 0, c[0] + 24], [0, 1, c[1] - 15], [0, 0, 1.0]])
    matrix = back @ rot @ to_c @ scale_matrix(ir_size, vis_size).numpy()
    grid = torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 5, 6)).astype(np.float32))
    flow = grid * (5.0 / float(dense_flow(grid, vis_size).norm(dim=-1).max()))
    return Registration(matrix, ir_size, vis_size, "deformable", flow=flow.numpy())


def checkerboard(a: np.ndarray, b: np.ndarray, squares: int = 8) -> np.ndarray:
    h, w = a.shape
    side = max(h, w) // squares
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // side) + (xx // side)) % 2 == 0, a, b)


def to_uint8(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype == np.uint8 else (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="val/roadscene/FLIR_04484")
    parser.add_argument("--out", default=str(HERE / "registration.jpg"))
    parser.add_argument("--cell-width", type=int, default=360)
    parser.add_argument("--quality", type=int, default=85)
    args = parser.parse_args()
    folder, stem = args.pair.rsplit("/", 1)
    ir_path = next((DATA / folder / "ir").glob(stem + ".*"))
    vis_path = next((DATA / folder / "vi").glob(stem + ".*"))
    ir = torch.from_numpy(load_luma(ir_path)).float()[None] / 255
    vis = load_luma(vis_path)
    truth = rig_truth(vis.shape)
    moving = to_uint8(render_infrared(ir, truth)[0].numpy())
    reg = register(moving, vis, "deformable")
    e, m = end_point_error(reg, truth)
    print(f"{args.pair}: {reg}, end-point error {float(e[m].mean()):.2f} px (median {float(e[m].median()):.2f})")
    unreg_ir = to_uint8(Registration.identity(truth.ir_size, truth.vis_size).warp(moving)[0])
    reg_ir, mask = reg.warp(moving)
    reg_ir = np.where(mask, reg_ir, vis)
    fused_unreg = ivfusion.fuse(moving, vis, resize="ir_to_vis")
    fused_reg = ivfusion.fuse(moving, vis, align=reg)
    cells = [[checkerboard(unreg_ir, vis), checkerboard(reg_ir, vis)], [fused_unreg, fused_reg]]
    titles = [["checkerboard, not registered", "checkerboard, registered (deformable)"],
              ["fused (refinefuse), resize only", "fused (refinefuse), align=registration"]]
    cw = args.cell_width
    ch = round(vis.shape[0] * cw / vis.shape[1])
    pad = 22
    canvas = Image.new("RGB", (2 * cw, 2 * (ch + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(cells):
        for c, img in enumerate(row):
            tile = Image.fromarray(to_uint8(img)).convert("RGB").resize((cw, ch), Image.BILINEAR)
            canvas.paste(tile, (c * cw, r * (ch + pad) + pad))
            draw.text((c * cw + 6, r * (ch + pad) + 5), titles[r][c], fill="black")
    canvas.save(args.out, quality=args.quality)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
