"""Model cards: every weight's card is complete and agrees with the manifest, the baselines table and
the version history; the CLI prints and writes them; the baselines are what ivfusion measures."""
import json
import re

import numpy as np
import pytest
import yaml

import ivfusion
from ivfusion import cards, pretrained
from ivfusion.cli import main
from ivfusion.compare import grid_size
from ivfusion.io import read_image

from .conftest import SHARED, require

WEIGHTS = pretrained.list_weights()
BASELINES = json.loads((pretrained.PACKAGE_MANIFEST.parent / "baselines.json").read_text(encoding="utf-8"))
HISTORY = json.loads((pretrained.PACKAGE_MANIFEST.parent / "weights_history.json").read_text(encoding="utf-8"))


def _front_matter(text):
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_every_weight_has_a_history_and_the_baselines_cover_every_domain():
    assert set(HISTORY["weights"]) == set(WEIGHTS)
    for name in WEIGHTS:
        versions = HISTORY["weights"][name]["versions"]
        current = [v for v in versions if v["current"]]
        assert [v["version"] for v in current] == [pretrained.get_weight_info(name).revision]
        assert versions[0]["current"]  # newest first
        for v in versions:
            assert set(v["metrics"]) == set(cards.DOMAINS) and v["changes"] and re.match(r"\d{4}-\d\d-\d\d", v["date"])
    for method in cards.BASELINES:
        assert set(BASELINES["methods"][method]) == set(cards.DOMAINS)
    assert {"generated_by", "date", "machine", "pairs"} <= set(BASELINES)
    assert BASELINES["generated_by"].startswith("python benchmarks/domains.py")


@pytest.mark.parametrize("name", WEIGHTS)
def test_card_agrees_with_the_manifest(name):
    info = pretrained.get_weight_info(name)
    meta, body = _front_matter(cards.model_card(name))
    assert meta["license"] == "other" and "non-commercial" in meta["license_name"]
    assert meta["library_name"] == "ivfusion" and info.method in meta["tags"] and "image-fusion" in meta["tags"]
    assert set(meta["datasets"]) == {"TNO", "MSRS", "LLVIP", "RoadScene"}
    assert meta["metrics"] == ["VIF", "Qabf"]
    results = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == name and len(results) == len(cards.DOMAINS)
    for result in results:
        scores = info.metrics[result["dataset"]["type"]]
        got = {m["name"]: m["value"] for m in result["metrics"]}
        assert got == pytest.approx({"VIF": scores["VIF"], "Qabf": scores["Qabf"]}, abs=5e-5)
    for heading in ("## Model", "## Intended use and limits", "## How to use", "## Training", "## Evaluation",
                    "## Reproduce", "## History", "## Licence and citation"):
        assert heading in body, heading
    assert "Non-commercial use only" in body and f"]({name}.jpg)" in body
    assert info.sha256 in body and ivfusion.method_info(info.method).paper_url in body
    # The reproduce command, stage by stage, and the domain table's rows.
    for stage in info.reproduce.split(" && "):
        assert stage in body
    table = _rows(body)
    assert table["domain (pairs)"] == [f"`{name}`"] + [f"`{m}`" for m in cards.BASELINES]
    tno = info.metrics["ivif/train/tno (mixed split)"]
    assert table["TNO (8)"][0].replace("**", "") == f"{tno['VIF']:.3f} / {tno['Qabf']:.3f}"
    g = BASELINES["methods"]["guided"]["medical/MRI_PET"]
    assert table["MRI–PET (42)"][1].replace("**", "") == f"{g['VIF']:.3f} / {g['Qabf']:.3f}"
    assert len(table) == 1 + len(cards.DOMAINS)
    history = body.split("## History", 1)[1]
    for v in HISTORY["weights"][name]["versions"]:
        assert f"**{v['version']}**" in history
    assert "issue 16" not in body and "](../" not in body


def _rows(body):
    """The evaluation table of a card body: {first cell: the other cells}."""
    table = body.split("## Evaluation", 1)[1].split("## Reproduce", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return {cells[0]: cells[1:] for cells in rows}


def test_bold_marks_the_best_of_each_row():
    table = _rows(cards.model_card("refinefuse.ivif"))
    assert table["TNO (8)"] == ["0.850 / 0.563", "**0.959** / **0.597**", "0.661 / 0.516", "0.599 / 0.348"]
    # Each metric on its own: refinefuse has the best MRI–CT Qabf, guided the best VIF.
    assert table["MRI–CT (21)"][:2] == ["0.591 / **0.618**", "**0.607** / 0.597"]


def test_history_cells_hold_vif_over_qabf():
    body = cards.model_card("refinefuse.ivif").split("## History", 1)[1]
    current = next(line for line in body.splitlines() if line.startswith("| **v0.10.0** (this file)<br>"))
    tno = pretrained.get_weight_info("refinefuse.ivif").metrics["ivif/train/tno (mixed split)"]
    assert current.split(" | ")[1] == f"{tno['VIF']:.3f}<br>{tno['Qabf']:.3f}"
    assert current.startswith("| **v0.10.0** (this file)<br>2026-12-05 | ")


def test_cli_prints_and_writes_cards(tmp_path, capsys):
    assert main(["weights", "card", "didfuse.ivif"]) == 0
    assert capsys.readouterr().out.strip() == cards.model_card("didfuse.ivif").strip()
    out = tmp_path / "card" / "README.md"
    assert main(["weights", "card", "didfuse.ivif", "-o", str(out), "--no-image"]) == 0
    assert out.read_text(encoding="utf-8") == cards.model_card("didfuse.ivif")
    assert not (tmp_path / "card" / "didfuse.ivif.jpg").exists()
    assert main(["weights", "card", "didfuse.ivif", "-o", str(out), "--no-image"]) == 1
    assert "exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert main(["weights", "card", "didfuse.ivf"]) == 1
    assert "Did you mean 'didfuse.ivif'?" in capsys.readouterr().err


@pytest.mark.slow
def test_comparison_picture(tmp_path):
    path = cards.comparison_picture("f3net.ivif", tmp_path / "f3net.ivif.jpg", cell=48)
    image = read_image(path)
    width, height = grid_size(len(cards.CARD_SAMPLES), 2 + 1 + len(cards.BASELINES), 48)
    assert image.shape == (height, width, 3)


@pytest.mark.slow
def test_baselines_are_what_ivfusion_measures():
    """The stored guided row of one domain, recomputed by fusing and scoring the pairs (../shared)."""
    from ivfusion.metrics import evaluate
    from ivfusion.train.splits import split_pairs

    train = require(SHARED / "data" / "ivif" / "train")
    pairs = split_pairs("mixed", [train / "tno"])["tno"]
    scores = [evaluate(ivfusion.fuse(p.ir, p.vis, method="guided", precision="fp32"), p.ir, p.vis, ["VIF", "Qabf"])
              for p in pairs]
    stored = BASELINES["methods"]["guided"]["ivif/train/tno (mixed split)"]
    assert len(pairs) == BASELINES["pairs"]["ivif/train/tno (mixed split)"]
    assert np.mean([s["VIF"] for s in scores]) == pytest.approx(stored["VIF"], abs=2e-6)
    assert np.mean([s["Qabf"] for s in scores]) == pytest.approx(stored["Qabf"], abs=2e-6)
