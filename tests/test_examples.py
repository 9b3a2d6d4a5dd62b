"""The example notebooks: stored outputs (a reader on GitHub sees the pictures), only the bundled
sample pairs as data (no dataset folder, no random noise), and they run top to bottom (code cells
executed in order, in examples/). The docs build executes them again (mkdocs-jupyter)."""
import json
import re

import pytest

from .conftest import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "examples").glob("*.ipynb"))


def _code_cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_has_its_outputs_and_uses_the_samples(path):
    cells = _code_cells(path)
    counts = [c.get("execution_count") for c in cells]
    assert None not in counts and counts == sorted(counts), f"{path.name}: execute it top to bottom and save"
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert outputs and not [o for o in outputs if o["output_type"] == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"], f"{path.name}: a warning was stored"
    source = "\n".join("".join(c["source"]) for c in cells)
    assert "sample_pair(" in source
    assert "shared" not in source, f"{path.name} reads a dataset folder"
    assert not re.search(r"np\.random|default_rng|torch\.rand|randint", source), f"{path.name} fuses noise"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_code_fits_the_site(path):
    """The docs render a code cell about 72 characters wide (1280-pixel window, beside the prompts and the
    navigation); a longer line hides its end behind a scroll bar."""
    for cell in _code_cells(path):
        for line in "".join(cell["source"]).splitlines():
            assert len(line) <= 72, f"{path.name}: {line!r}"


@pytest.mark.parametrize("name", ["01_quickstart", "04_medical"])
def test_picture_notebooks_store_their_pictures(name):
    outputs = [o for c in _code_cells(REPO_ROOT / "examples" / f"{name}.ipynb") for o in c.get("outputs", [])]
    assert any("image/jpeg" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    pytest.importorskip("IPython")  # the notebooks show pictures with IPython.display (extra [docs])
    monkeypatch.chdir(path.parent)
    namespace = {"__name__": "__notebook__"}
    for i, cell in enumerate(_code_cells(path)):
        exec(compile("".join(cell["source"]), f"{path.name}[cell {i}]", "exec"), namespace)
