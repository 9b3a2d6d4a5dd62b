"""Per-domain validation table: every method on every domain we have, next to the baselines.

    python benchmarks/domains.py --methods refinefuse f3net didfuse fiscnet guided laplacian average \\
        --out runs/domains --json runs/domains/table.json

Domains: the four of the mixed split held back from ``shared/data/ivif/train`` (tno, msrs, llvip,
roadscene; see ``ivfusion/train/mixed_val.json``), ``ivif/val/roadscene`` (38 pairs), and the
medical pairs (MRI in the visible slot, CT/PET in the infrared slot). Every pair is fused at full
size with ``ivfusion.fuse`` in fp32 (the tables' precision; on CPUs with native bf16 the CPU default of
DIDFuse and F3Net is bf16, within one grey level: ``precision.py``), written as an 8-bit PNG under
``--out/<method>/<domain>/`` (reused by later runs unless ``--overwrite``), and scored with
``ivfusion.metrics.evaluate`` (reference profile). Prints one markdown table per domain with each
metric's mean and ``rel``, the mean of VIF and Qabf each divided by ``guided``'s on that domain
(the training selection score; 1.0 = as good as guided), then a compact methods x domains table of
VIF / Qabf. ``--from-json FILE ...`` merges earlier runs' tables instead of fusing.

``--baselines FILE`` writes the classical methods' rows (``guided``, ``laplacian``, ``average``, those
run) as the JSON table the model cards compare each weight with (``ivfusion/pretrained/baselines.json``,
read by :func:`ivfusion.cards.model_card`), with its provenance: date, machine, command.

``--weights METHOD=FILE`` scores a candidate weight instead of the bundled default, under the
label ``METHOD@FILE-stem``. ``--update-manifest`` writes each network's per-domain means into its
default weight's ``metrics`` in both manifests (``weights_manifest.json`` and the packaged copy).
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

import ivfusion
from ivfusion.io import write_image
from ivfusion.classical import CLASSICAL_METHODS
from ivfusion.metrics import evaluate
from ivfusion.train import find_pairs, hardware_description
from ivfusion.train.splits import split_pairs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TABLE_METRICS = ["VIF", "Qabf", "MI", "SSIM", "SD", "EN", "SF", "AG", "SCD", "Nabf"]


def domains(data: Path, medical: bool) -> Dict[str, List[Tuple[str, Path, Path]]]:
    """``{domain: [(stem, ir, vis)]}`` over the mixed split, val/roadscene and the medical sets."""
    train = data / "ivif" / "train"
    out: Dict[str, List[Tuple[str, Path, Path]]] = {}
    for name, pairs in split_pairs("mixed", [train / d for d in ("tno", "msrs", "llvip", "roadscene")]).items():
        out[f"mixed/{name}"] = [(p.stem, p.ir, p.vis) for p in pairs]
    out["val/roadscene"] = [(p.stem, p.ir, p.vis) for p in find_pairs(data / "ivif" / "val" / "roadscene")]
    if medical:
        for name, other in (("MRI_CT", "CT"), ("MRI_PET", "PET")):
            root = data / "medical" / name
            out[f"medical/{name}"] = [(f.stem, f, root / "MRI" / f.name) for f in sorted((root / other).iterdir())]
    return out


def manifest_key(domain: str) -> str:
    """The manifest's name for a domain of this table (a data folder, plus the split if any)."""
    if domain.startswith("mixed/"):
        return f"ivif/train/{domain.split('/', 1)[1]} (mixed split)"
    return domain if domain.startswith("medical/") else f"ivif/{domain}"


def update_manifests(table: Dict[str, Dict[str, Dict[str, float]]]) -> None:
    repo = Path(__file__).resolve().parents[1]
    for path in (repo / "weights_manifest.json", repo / "ivfusion" / "pretrained" / "weights_manifest.json"):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for name, entry in manifest["weights"].items():
            method = entry["method"]
            if not entry.get("default") or not all(method in rows for rows in table.values()):
                continue
            entry["metrics"] = {manifest_key(d): {k: round(v, 6) for k, v in rows[method].items() if k != "rel"}
                                for d, rows in table.items()}
        path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_baselines(path: Path, table: Dict[str, Dict[str, Dict[str, float]]], counts: Dict[str, int]) -> None:
    """The classical methods' per-domain means (keys as in the manifests' ``metrics``), with provenance."""
    import torch

    rows = {m: {manifest_key(d): {k: round(v, 6) for k, v in table[d][m].items() if k != "rel"} for d in table}
            for m in CLASSICAL_METHODS if all(m in table[d] for d in table)}
    if not rows:
        raise SystemExit("--baselines: no classical method was run on every domain")
    data = {
        "description": "Per-domain means of the classical baselines, full-size pairs, metrics profile 'reference' "
                       "(ivfusion.metrics.evaluate); the model cards compare each weight with them.",
        "generated_by": "python benchmarks/domains.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{hardware_description(torch.device('cpu'))}, torch {torch.__version__}",
        "ivfusion": ivfusion.__version__,
        "pairs": {manifest_key(d): n for d, n in counts.items()},
        "methods": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


def report(table: Dict[str, Dict[str, Dict[str, float]]], counts: Dict[str, int], seconds: Dict[str, float]) -> None:
    """Print one markdown table per domain, the compact summary and the wall times."""
    for domain, rows in table.items():
        g = rows.get("guided")
        print(f"\n### {domain} ({counts[domain]} pairs)\n")
        print("| method | rel | " + " | ".join(TABLE_METRICS) + " |")
        print("|---|---:|" + "---:|" * len(TABLE_METRICS))
        for label, m in rows.items():
            if g:
                m["rel"] = (m["VIF"] / g["VIF"] + m["Qabf"] / g["Qabf"]) / 2
            rel = f"{m['rel']:.3f}" if "rel" in m else "–"
            print(f"| {label} | {rel} | " + " | ".join(f"{m[n]:.4f}" for n in TABLE_METRICS) + " |")
    print_summary(table)
    if seconds:
        print("\nwall time per method (fuse + score, s): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


def print_summary(table: Dict[str, Dict[str, Dict[str, float]]]) -> None:
    """One compact markdown table: methods x domains, each cell ``VIF / Qabf``."""
    labels = list(next(iter(table.values())))
    print("\n| method | " + " | ".join(table) + " |")
    print("|---|" + "---:|" * len(table))
    for label in labels:
        cells = [f"{rows[label]['VIF']:.3f} / {rows[label]['Qabf']:.3f}" if label in rows else "–"
                 for rows in table.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["refinefuse", "f3net", "didfuse", "fiscnet", "guided",
                                                         "laplacian", "average"])
    parser.add_argument("--weights", action="append", default=[], metavar="METHOD=FILE",
                        help="a candidate weight for METHOD (scored as METHOD@stem)")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--domains", nargs="+", default=None, help="only these domains")
    parser.add_argument("--no-medical", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("runs/domains"))
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    parser.add_argument("--overwrite", action="store_true", help="re-fuse even if outputs exist")
    parser.add_argument("--from-json", nargs="+", type=Path, default=None,
                        help="print (and merge) tables written by earlier runs with --json; fuses nothing")
    parser.add_argument("--baselines", type=Path, default=None, metavar="FILE",
                        help="write the classical methods' rows as the model cards' baseline table (JSON)")
    parser.add_argument("--update-manifest", action="store_true",
                        help="write the networks' per-domain metrics into their default weights' manifest entries")
    args = parser.parse_args()

    if args.from_json:
        table: Dict[str, Dict[str, Dict[str, float]]] = {}
        counts: Dict[str, int] = {}
        for f in args.from_json:
            data = json.loads(f.read_text(encoding="utf-8"))
            counts.update(data["domains"])
            for d, rows in data["table"].items():
                table.setdefault(d, {}).update(rows)
        report(table, counts, {})
        if args.update_manifest:
            update_manifests(table)
        if args.baselines:
            write_baselines(args.baselines, table, counts)
        if args.json:
            args.json.write_text(json.dumps({"domains": counts, "table": table, "ivfusion": ivfusion.__version__},
                                            indent=1) + "\n")
        return
    weights = dict(w.split("=", 1) for w in args.weights)
    runs = [(m, None) for m in args.methods if m not in weights]
    runs += [(f"{m}@{Path(f).stem}", (m, f)) for m, f in weights.items()]
    sets = domains(args.data, not args.no_medical)
    if args.domains:
        sets = {d: v for d, v in sets.items() if d in args.domains}
    table: Dict[str, Dict[str, Dict[str, float]]] = {}
    seconds: Dict[str, float] = {}
    for label, override in runs:
        method, weight = override if override else (label, None)
        t0 = time.perf_counter()
        for domain, pairs in sets.items():
            scores: Dict[str, List[float]] = {n: [] for n in TABLE_METRICS}
            for stem, ir, vis in pairs:
                path = args.out / label.replace("/", "_") / domain.replace("/", "_") / f"{stem}.png"
                if args.overwrite or not path.is_file():
                    write_image(path, ivfusion.fuse(ir, vis, method=method, weights=weight, precision="fp32"))
                for n, v in evaluate(path, ir, vis, TABLE_METRICS).items():
                    scores[n].append(v)
            table.setdefault(domain, {})[label] = {n: float(np.mean(v)) for n, v in scores.items()}
        seconds[label] = time.perf_counter() - t0
    report(table, {d: len(p) for d, p in sets.items()}, seconds)
    if args.update_manifest:
        update_manifests(table)
    if args.baselines:
        write_baselines(args.baselines, table, {d: len(p) for d, p in sets.items()})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"domains": {d: len(p) for d, p in sets.items()}, "table": table,
                                         "ivfusion": ivfusion.__version__}, indent=1) + "\n")


if __name__ == "__main__":
    main()
