"""Model cards: a Hugging Face README for each pretrained weight, written from its manifest entry.

:func:`model_card` returns the Markdown (YAML front matter with licence, tags, datasets, metrics
and a ``model-index`` of the per-domain scores, then: the network and its paper, intended use and
limits, how to load it, training data and budget, the per-domain table next to the classical
baselines, the command that reproduces the file, and the history of the versions it replaced).
:func:`write_model_card` writes it with its comparison picture (``ivfusion weights card NAME -o
README.md``); the documentation site renders one page per weight from the same text.

The card reads, besides the manifest: ``pretrained/baselines.json`` (the classical methods' per-domain
means, written by ``python benchmarks/domains.py --baselines``) and ``pretrained/weights_history.json``
(every version of each weight, newest first).
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from .data import sample_pair
from .fusion import method_info
from .pretrained import get_weight_info
from .pretrained.manifest import PACKAGE_MANIFEST

__all__ = ["model_card", "write_model_card", "comparison_picture", "DOMAINS", "BASELINES", "CARD_SAMPLES"]

_DATA_DIR = PACKAGE_MANIFEST.parent
#: Manifest metric keys of the evaluation domains, and how the card names them.
DOMAINS = {
    "ivif/train/tno (mixed split)": "TNO",
    "ivif/train/msrs (mixed split)": "MSRS",
    "ivif/train/llvip (mixed split)": "LLVIP",
    "ivif/train/roadscene (mixed split)": "RoadScene",
    "ivif/val/roadscene": "val/RoadScene",
    "medical/MRI_CT": "MRI–CT",
    "medical/MRI_PET": "MRI–PET",
}
#: The classical methods every card compares with.
BASELINES = ("guided", "laplacian", "average")
#: The bundled sample pairs of the comparison picture (rows).
CARD_SAMPLES = ("day", "night", "mri_pet")
_DATASETS = {"tno": "TNO", "msrs": "MSRS", "llvip": "LLVIP", "roadscene": "RoadScene"}
_TAGS = ["image-fusion", "infrared", "thermal", "visible", "multi-modal", "medical-imaging", "pytorch",
         "safetensors", "ivfusion"]


@functools.lru_cache(maxsize=None)
def _json(name: str) -> Dict[str, Any]:
    return json.loads((_DATA_DIR / name).read_text(encoding="utf-8"))


def _q(text: str) -> str:
    """A YAML scalar: JSON's double-quoted strings are valid YAML."""
    return json.dumps(text, ensure_ascii=False)


def _front_matter(name: str, info: Any) -> List[str]:
    datasets = [_DATASETS.get(Path(d.folder).name, d.folder) for d in info.training_data]
    lines = ["---", "license: other", f"license_name: {_q('non-commercial (inherits the terms of its training data)')}",
             "library_name: ivfusion", "pipeline_tag: image-to-image", "tags:"]
    lines += [f"- {t}" for t in _TAGS + [info.method]]
    lines += ["datasets:"] + [f"- {d}" for d in datasets]
    lines += ["metrics:", "- VIF", "- Qabf", "model-index:", f"- name: {_q(name)}", "  results:"]
    for key, label in DOMAINS.items():
        scores = info.metrics.get(key)
        if not scores:
            continue
        task = "Medical image fusion" if key.startswith("medical/") else "Infrared-visible image fusion"
        lines += ["  - task:", "      type: image-to-image", f"      name: {_q(task)}",
                  "    dataset:", f"      name: {_q(label)}", f"      type: {_q(key)}", "    metrics:"]
        for metric in ("VIF", "Qabf"):
            lines += [f"    - type: {metric.lower()}", f"      name: {metric}", f"      value: {scores[metric]:.4f}"]
    lines.append("---")
    return lines


def _cell(scores: Optional[Dict[str, float]], best: Sequence[float] = (), sep: str = " / ") -> str:
    """``VIF / Qabf`` of one domain, each in bold where it is at least the ``best`` (VIF, Qabf)."""
    if not scores:
        return "–"
    parts = [f"**{v:.3f}**" if best and v >= b - 5e-4 else f"{v:.3f}"
             for v, b in zip((scores["VIF"], scores["Qabf"]), best or (0, 0))]
    return sep.join(parts)


def _domain_table(name: str, info: Any) -> List[str]:
    """A row per domain, a column per method (this weight, then the baselines): five columns fit a
    page where a column per domain did not."""
    base = _json("baselines.json")
    columns = {f"`{name}`": dict(info.metrics)}
    columns.update({f"`{m}`": base["methods"][m] for m in BASELINES})
    pairs = base.get("pairs", {})
    lines = ["| domain (pairs) | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for key, label in DOMAINS.items():
        if key not in info.metrics:
            continue
        best = [max(c[key][m] for c in columns.values() if key in c) for m in ("VIF", "Qabf")]
        domain = f"{label} ({pairs[key]})" if key in pairs else label
        lines.append(f"| {domain} | " + " | ".join(_cell(c.get(key), best) for c in columns.values()) + " |")
    return lines


def _history(name: str) -> List[str]:
    """A row per version (and its date), a column per domain; a cell holds VIF over Qabf (two short
    lines keep the eight columns within a page)."""
    entries = _json("weights_history.json")["weights"].get(name, {}).get("versions", [])
    if not entries:
        return ["No earlier versions."]
    keys = list(DOMAINS)
    lines = ["VIF over Qabf, per domain, of every version:", "",
             "| version | " + " | ".join(DOMAINS[k] for k in keys) + " |", "|---|" + "---:|" * len(keys)]
    for e in entries:
        label = f"**{e['version']}** (this file)" if e["current"] else e["version"]
        lines.append(f"| {label}<br>{e['date']} | "
                     + " | ".join(_cell(e["metrics"].get(k), sep="<br>") for k in keys) + " |")
    lines.append("")
    lines += [f"- **{e['version']}** ({e['date']}): {e['changes']}" for e in entries]
    return lines


def model_card(name: str, image: Optional[str] = None) -> str:
    """The Hugging Face model card (Markdown with YAML front matter) of the weight ``name``.

    Args:
        name: a weight of the manifest, e.g. ``"refinefuse.ivif"``.
        image: path or URL of the comparison picture to show (:func:`comparison_picture`);
            ``None``: ``"<name>.jpg"`` next to the card, as :func:`write_model_card` writes it.

    Raises:
        ValueError: an unknown weight name (as :func:`ivfusion.pretrained.get_weight_info`).
    """
    info = get_weight_info(name)
    method = method_info(info.method)
    image = image if image is not None else f"{name}.jpg"
    steps = info.recipe.iterations
    pairs = sum(d.pairs or 0 for d in info.training_data)
    mixed = _json("weights_history.json")["weights"].get(name, {}).get("mixed_split", "see the manifest's notes")
    noncommercial = any("non-commercial" in d.terms.lower() for d in info.training_data)
    out = _front_matter(name, info)
    out += [
        "",
        f"# `{name}` {info.revision}: {info.method} weights for infrared–visible and medical image fusion",
        "",
        f"Pretrained weights of **{info.method}** ({method.description}) for "
        "the ivfusion library. They fuse an infrared (or CT/PET/SPECT) image with "
        f"a visible (or MRI) image into one image that keeps the thermal targets and the visible detail.",
        "",
    ]
    if noncommercial:
        out += ["> **Non-commercial use only.** The training data include LLVIP, whose terms allow non-commercial "
                "research only; the weights inherit that restriction. The ivfusion code is Apache-2.0.", ""]
    out += [
        f"![Infrared, visible, {info.method} ({name}) and the classical guided, laplacian and average fusions of the "
        f"day, night and MRI–PET sample pairs]({image})",
        "",
        f"*Rows: the bundled sample pairs {', '.join(CARD_SAMPLES)} (`ivfusion.data`). Columns: infrared (PET for the "
        f"medical pair), visible (MRI), this weight, then the classical baselines.*",
        "",
        "## Model",
        "",
        f"- **Network:** `{info.method}`: {method.description}.",
        f"- **Paper:** {method.paper}. <{method.paper_url}>" if method.paper_url else f"- **Paper:** {method.paper}.",
        f"- **File:** `{info.filename}`, {info.size / 1e6:.2f} MB, {info.dtype}, SHA-256 `{info.sha256}`; "
        f"Hub `{info.repo_id}` at revision `{info.revision}`.",
        f"- **Default:** {'yes, ' + repr(info.method) + ' uses it when no weight is given' if info.default else 'no'}.",
        "",
        "## Intended use and limits",
        "",
        "- **For:** research on infrared–visible fusion (surveillance, driving, night scenes) and on MRI–CT/PET/SPECT "
        "fusion, on registered (pixel-aligned) pairs. Inputs: a grey infrared image (8/16-bit or float) and a grey or "
        "colour visible image; a colour visible image is fused on its luma and keeps its colours.",
        f"- **Small training budget.** These weights were trained on the CPU on about {pairs} pairs "
        f"({steps:,} optimiser steps; see *Training*), a fraction of the paper's schedule: they are "
        "not the paper's results, and the classical `guided` filter scores higher on VIF and Qabf in most domains "
        "below. Look at the images for your own data before choosing.",
        "- **Not for** diagnosis or any safety-critical decision: the metrics measure how much of each source "
        "survives, not whether a finding is visible. The inputs must be aligned; nothing here registers them.",
        "",
        "## How to use",
        "",
        "```bash",
        "pip install .   # in a checkout of ivfusion; the package bundles this file",
        "```",
        "",
        "```python",
        "import ivfusion",
        "",
        "# a bundled sample pair; or file paths, PIL images, numpy arrays, tensors",
        'ir, vis = ivfusion.data.sample_pair("night")',
        f'fused = ivfusion.fuse(ir, vis, method="{info.method}", weights="{name}")',
        'ivfusion.save_image("fused.png", fused)',
        "",
        "# the torch module with these weights, in eval mode",
        f'net = ivfusion.load_model("{info.method}", weights="{name}")',
        "```",
        "",
        "```bash",
        "ivfusion fuse ir.png vis.jpg -o fused.png \\",
        f"    -m {info.method} --weights {name}",
        "```",
        "",
        "## Training",
        "",
        "| data folder | pairs | terms |",
        "|---|---:|---|",
    ]
    out += [f"| `{d.folder}` | {d.pairs if d.pairs is not None else '–'} | {d.terms} |" for d in info.training_data]
    r = info.recipe
    budget = [("steps", f"{r.iterations:,}" if r.iterations else None), ("epochs", r.epochs), ("batch", r.batch),
              ("crop", f"{r.crop}x{r.crop}" if r.crop else None), ("learning rate", r.lr),
              ("optimiser", r.optimizer), ("precision", r.precision), ("hardware", r.hardware), ("seed", r.seed)]
    out += ["", "Budget, as the manifest records it: " +
            "; ".join(f"{k} {v}" for k, v in budget if v not in (None, "")) + "."]
    if r.notes:
        out += ["", "<details><summary>Recipe notes, as recorded in the manifest</summary>", "", r.notes, "",
                "</details>"]
    out += [
        "",
        "## Evaluation",
        "",
        "VIF / Qabf (both higher is better; the best of each row in bold) on full-size pairs, metrics profile "
        "`reference` (the CDDFuse/EMMA `Evaluator` most papers use), `python benchmarks/domains.py`; pairs per "
        "domain in brackets. TNO, MSRS, LLVIP and RoadScene are the *mixed* validation split "
        f"(`ivfusion/train/mixed_val.json`), {mixed}. val/RoadScene and the medical pairs (MRI in the visible "
        "slot) were never trained on.",
        "",
    ]
    out += _domain_table(name, info)
    out += [
        "",
        f"The baselines' rows: `{_json('baselines.json')['generated_by']}` ({_json('baselines.json')['date']}). "
        "Every metric of this weight, per domain, is in its manifest entry (`ivfusion.pretrained.get_weight_info"
        f"(\"{name}\").metrics`).",
        "",
        "## Reproduce",
        "",
        "The training pairs (TNO, MSRS, LLVIP and RoadScene, as `ivif/train/<domain>/{ir,vi}` folders) are not "
        "redistributed with ivfusion; the command expects them under `../shared/data/`. Each stage warm-starts "
        "from the previous one's file.",
        "",
        "```bash",
        info.reproduce.replace(" && ", " \\\n  && "),
        "```",
        "",
        "## History",
        "",
    ]
    out += _history(name)
    out += [
        "",
        "## Licence and citation",
        "",
        f"- Weights: {info.license}.",
        "- Code: Apache-2.0 (ivfusion).",
        f"- Cite the paper of the network ({method.paper}) and ivfusion (its `CITATION.cff`).",
        "",
    ]
    return "\n".join(out)


def comparison_picture(name: str, out: Union[str, os.PathLike], *, cell: int = 128, overwrite: bool = True,
                       progress: bool = False) -> Path:
    """The card's picture: the :data:`CARD_SAMPLES` pairs fused with the weight ``name`` and the
    :data:`BASELINES`, as a labelled grid (:func:`ivfusion.compare_grid`), written atomically to ``out``.

    The default ``cell`` makes a grid about 960 pixels wide, whose 14-pixel labels stay readable where
    a page shows it 600 to 700 pixels wide (the docs site, a Hub model card)."""
    from .compare import compare_grid

    info = get_weight_info(name)
    pairs = [(sample, *sample_pair(sample)) for sample in CARD_SAMPLES]
    return compare_grid(pairs, [info.method, *BASELINES], out, cell=cell, weights={info.method: name},
                        device="cpu", overwrite=overwrite, progress=progress)


def write_model_card(name: str, out: Union[str, os.PathLike], *, image: bool = True,
                     overwrite: bool = False) -> List[Path]:
    """Write the card of ``name`` to ``out`` (e.g. ``README.md``) and, with ``image``, its comparison
    picture ``<name>.jpg`` next to it. Returns the paths written (card first).

    Raises:
        FileExistsError: ``out`` or the picture exists and ``overwrite`` is false.
        ValueError: an unknown weight name.
    """
    from .io import write_atomic

    out = Path(out).expanduser()
    picture = out.with_name(f"{name}.jpg")
    for path in (out, picture) if image else (out,):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True (--overwrite) to replace it")
    text = model_card(name, image=picture.name)
    written = []
    if image:
        written.append(comparison_picture(name, picture))
    write_atomic(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return [out, *written]
