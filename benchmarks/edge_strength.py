"""How much of the sources' strongest edges the fused images keep, per method and domain.

    python benchmarks/edge_strength.py --out runs/domains --methods refinefuse f3net laplacian

Reads the fused images ``benchmarks/domains.py`` wrote under ``--out/<method>/<domain>/`` (full
size) and, per pair, takes the pixels where ``max(G(I), G(V))`` is in its top ``--top`` fraction
(``G`` the L1 Sobel magnitude of the luma, 0..255 scale): the image's strongest source edges. At
those pixels it computes ``G(F) / max(G(I), G(V))`` and prints the median over the pixels where the
infrared edge is the stronger one and over those where the visible edge is, each averaged over the
domain's pairs (1.0 = the edge kept at full strength). Qabf rewards exactly this (edge strength
preserved, weighted by the source's edge strength), so a value well below 1 explains a low Qabf.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from ivfusion.metrics import prepare_image
from ivfusion.train import sobel_l1_magnitude

from domains import SHARED, domains


def kept_fraction(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, top: float) -> Dict[str, float]:
    """Median ``G(F) / max(G(I), G(V))`` over the strongest-edge pixels, split by the winning source."""
    g_ir, g_vis, g_f = (sobel_l1_magnitude(x) for x in (ir, vis, fused))
    g_src = torch.maximum(g_ir, g_vis)
    strong = g_src >= torch.quantile(g_src.flatten().float(), 1.0 - top).to(g_src.dtype)
    strong &= g_src > 0
    ratio = g_f / g_src.clamp_min(1e-9)
    out = {}
    for name, where in (("ir", strong & (g_ir > g_vis)), ("vis", strong & (g_ir <= g_vis))):
        out[name] = float(ratio[where].median()) if where.any() else math.nan
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/domains"), help="domains.py's --out folder")
    parser.add_argument("--methods", nargs="+", default=["refinefuse", "f3net", "laplacian", "guided"])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--no-medical", action="store_true")
    parser.add_argument("--top", type=float, default=0.1, help="fraction of strongest source-edge pixels")
    args = parser.parse_args()

    sets = domains(args.data, not args.no_medical)
    rows: Dict[str, Dict[str, str]] = {}
    for method in args.methods:
        for domain, pairs in sets.items():
            folder = args.out / method.replace("/", "_") / domain.replace("/", "_")
            vals: List[Dict[str, float]] = []
            for stem, ir_path, vis_path in pairs:
                path = folder / f"{stem}.png"
                if not path.is_file():
                    raise SystemExit(f"{path}: missing; run benchmarks/domains.py --methods {method} --out {args.out}")
                f, i, v = (prepare_image(p, name=n, device="cpu") for p, n in
                           ((path, "fused"), (ir_path, "ir"), (vis_path, "vis")))
                vals.append(kept_fraction(f, i, v, args.top))
            ir_mean = np.nanmean([x["ir"] for x in vals])
            vis_mean = np.nanmean([x["vis"] for x in vals])
            rows.setdefault(method, {})[domain] = f"{ir_mean:.2f} / {vis_mean:.2f}"
    domains_order = list(sets)
    print(f"Median G(F) / max(G(I), G(V)) at each image's {args.top:.0%} strongest source edges, "
          "where the infrared edge / the visible edge is the stronger (1.0 = kept at full strength)\n")
    print("| method | " + " | ".join(domains_order) + " |")
    print("|---|" + "---:|" * len(domains_order))
    for method, cells in rows.items():
        print(f"| {method} | " + " | ".join(cells[d] for d in domains_order) + " |")


if __name__ == "__main__":
    main()
