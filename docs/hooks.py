"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks: [docs/hooks.py]``).

* The notebooks of ``examples/`` become pages at ``examples/<name>/`` (rendered by mkdocs-jupyter,
  which executes them at build time) and the pictures of ``examples/gallery/`` ``gallery/<name>``:
  both stay where a GitHub reader finds them, and the site is built from them as they are.
* ``models/<weight>.md``: one page per weight of the manifest, the model card that
  ``ivfusion weights card NAME`` writes (:func:`ivfusion.cards.model_card`), with its picture from
  ``docs/assets/cards/<weight>-<sha256[:8]>.jpg``; ``models/index.md`` lists them. The "Model cards"
  section of the navigation gets one entry per weight. A picture made for another file than the
  manifest's (or none) is a warning, so ``mkdocs build --strict`` fails until
  ``python examples/gallery/make_docs_figures.py --only cards`` has been run.
* The docstrings' Sphinx roles (``:func:`~ivfusion.io.read_image```) render as plain code
  (``read_image``): mkdocstrings' Google-style parser leaves them as text.
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any, List

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, not another installed copy

from ivfusion import cards, pretrained  # noqa: E402

log = logging.getLogger("mkdocs.hooks.ivfusion")
MODELS_SECTION = "Model cards"


def _card_picture(name: str) -> str:
    return f"assets/cards/{name}-{pretrained.get_weight_info(name).sha256[:8]}.jpg"


def on_config(config: Any, **kwargs: Any) -> Any:
    """Fill the "Model cards" section of the navigation: the index, then one page per weight."""
    pages = ["models/index.md"] + [{name: f"models/{name}.md"} for name in pretrained.list_weights()]
    for i, entry in enumerate(config.nav or []):
        if isinstance(entry, dict) and MODELS_SECTION in entry:
            config.nav[i] = {MODELS_SECTION: pages}
    return config


def _index() -> str:
    rows: List[str] = []
    for name in pretrained.list_weights():
        info = pretrained.get_weight_info(name)
        tno = info.metrics.get("ivif/train/tno (mixed split)", {})
        val = info.metrics.get("ivif/val/roadscene", {})
        rows.append(f"| [`{name}`]({name}.md) | `{info.method}` | {info.revision} | {info.size / 1e6:.2f} MB | "
                    f"{'yes' if info.default else ''} | {val.get('VIF', 0):.3f} / {val.get('Qabf', 0):.3f} | "
                    f"{tno.get('VIF', 0):.3f} / {tno.get('Qabf', 0):.3f} |")
    guided = cards._json("baselines.json")["methods"]["guided"]
    g_val, g_tno = guided["ivif/val/roadscene"], guided["ivif/train/tno (mixed split)"]
    return "\n".join([
        "# Model cards",
        "",
        "One card per pretrained weight, as its Hugging Face repository's README would show it: licence, intended "
        "use and limits, training data and budget, the per-domain scores next to the classical baselines, the "
        "command that reproduces the file and the versions it replaced. `ivfusion weights card NAME -o README.md` "
        "writes the same card and its picture.",
        "",
        "!!! warning \"Non-commercial weights\"",
        "    Every bundled weight was trained on data that include LLVIP (non-commercial research only), and inherits "
        "that restriction. The code is Apache-2.0; the classical methods need no weights.",
        "",
        "| weight | network | version | size | default | val/RoadScene VIF / Qabf | TNO VIF / Qabf |",
        "|---|---|---|---:|---|---:|---:|",
        *rows,
        f"| `guided` (classical, for reference) | – | – | – | – | {g_val['VIF']:.3f} / {g_val['Qabf']:.3f} | "
        f"{g_tno['VIF']:.3f} / {g_tno['Qabf']:.3f} |",
        "",
        "How weights are found, checked and loaded: [Pretrained weights](../weights.md).",
        "",
    ])


@event_priority(100)  # before mkdocs-jupyter picks the notebooks out of the files
def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for path in sorted((ROOT / "examples").glob("*.ipynb")):
        # A plain File rooted at the repository (mkdocs-jupyter's wrapper cannot wrap a generated one).
        files.append(File(f"examples/{path.name}", str(ROOT), config["site_dir"], config["use_directory_urls"]))
    for path in sorted((ROOT / "examples" / "gallery").glob("*.jpg")):
        files.append(File.generated(config, f"gallery/{path.name}", abs_src_path=str(path)))
    files.append(File.generated(config, "models/index.md", content=_index()))
    for name in pretrained.list_weights():
        picture = _card_picture(name)
        if not (ROOT / "docs" / picture).is_file():
            log.warning(f"no model-card picture {picture} for {name} (its weight file changed?); "
                        "run: python examples/gallery/make_docs_figures.py --only cards")
        files.append(File.generated(config, f"models/{name}.md", content=cards.model_card(name, image=f"../{picture}")))
    return files



# ":func:<code>~ivfusion.io.read_image</code>" as the docstrings' Sphinx roles come out of mkdocstrings.
_ROLE = re.compile(r":(?:func|class|meth|data|attr|mod|exc|obj):<code>(~?)([^<]*)</code>")


def _strip_role(match: "re.Match[str]") -> str:
    name = match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)
    return f"<code>{name}</code>"


def on_page_context(context: Any, page: Any, **kwargs: Any) -> Any:
    # The tutorials' pictures (comparison grids of six columns) need the width of the table of
    # contents: without it their labels are readable at a 1280-pixel window. The left navigation
    # still lists the pages, and a notebook's few headings are visible while scrolling.
    if page.file.src_uri.startswith("examples/"):
        page.meta["hide"] = [*page.meta.get("hide", []), "toc"]
    return context


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    html = _ROLE.sub(_strip_role, html)
    left = re.findall(r":(?:func|class|meth|data|attr|mod|exc|obj):`?[^\s<]{0,40}", html)
    if left:
        log.warning(f"{page.file.src_uri}: Sphinx roles left in the page: {sorted(set(left))[:5]}")
    return html
