"""The package layout: no import cycle, the pretrained package independent of the networks and
small, the deprecated ``ivfusion.weights`` alias, and a wheel that bundles every default weight."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Set

import pytest

import ivfusion
from ivfusion import pretrained

from .conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "ivfusion"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """``{module: modules of ivfusion it imports}`` from every import statement of every module,
    at module level or inside functions. ``from pkg import name`` counts as importing ``pkg.name``
    when that is a module, else ``pkg``; a package's ``__init__`` is the package's own node."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in files else target)
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as ``[a, b, ..., a]``, or ``[]``."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def reachable(graph: Dict[str, Set[str]], start: str) -> Set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "ivfusion.models._builder" in graph and "ivfusion.pretrained.hub" in graph
    assert "ivfusion.pretrained" in graph["ivfusion.models._builder"]
    assert find_cycle(graph) == []


def test_pretrained_package_knows_nothing_of_the_networks():
    graph = import_graph()
    for name in [n for n in graph if n == "ivfusion.pretrained" or n.startswith("ivfusion.pretrained.")]:
        assert not {m for m in reachable(graph, name) if m.startswith("ivfusion.models")}, name
    # The registry only registers: the builder is the one place that joins networks and weights.
    assert not {m for m in reachable(graph, "ivfusion.models._registry") if m.startswith("ivfusion.pretrained")}


def test_pretrained_modules_are_small():
    for path in (PACKAGE / "pretrained").glob("*.py"):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 420, f"{path.name}: {lines} lines"


def test_deprecated_weights_alias_warns_and_forwards():
    legacy = importlib.import_module("ivfusion.weights")
    for name, new in [("load_weights", ivfusion.models.load_weights), ("resolve_weight", pretrained.resolve_weight),
                      ("export_checkpoint", importlib.import_module("ivfusion.train.export").export_checkpoint),
                      ("BUNDLED_DIR", pretrained.BUNDLED_DIR)]:
        with pytest.warns(DeprecationWarning, match=rf"ivfusion\.weights\.{name} is deprecated.*use ivfusion\."):
            assert getattr(legacy, name) is new
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        legacy.nope
    # Importing ivfusion and its subpackages never touches the alias.
    code = "import ivfusion, ivfusion.train, ivfusion.deploy, ivfusion.cli; assert 'ivfusion.weights' not in __import__('sys').modules"
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], check=True, cwd=REPO_ROOT)


@pytest.mark.slow
def test_wheel_bundles_every_default_weight(tmp_path):
    try:
        import setuptools  # noqa: F401
        import wheel  # noqa: F401

        isolation = ["--no-build-isolation"]  # the build tools are here: no download
    except ImportError:
        isolation = []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(tmp_path),
                    str(REPO_ROOT)], check=True, capture_output=True, timeout=600)
    (wheel_file,) = tmp_path.glob("ivfusion-*.whl")
    names = set(zipfile.ZipFile(wheel_file).namelist())
    assert "ivfusion/pretrained/weights_manifest.json" in names
    manifest = pretrained.get_manifest()
    for method in ivfusion.list_models():
        info = manifest.weights[pretrained.default_weight(method)]
        assert f"ivfusion/pretrained/files/{info.basename}" in names, method
    assert "ivfusion/train/mixed_val.json" in names
    for name in ivfusion.data.list_samples():  # the sample pairs and their attribution
        info = ivfusion.data.sample_info(name)
        assert {f"ivfusion/data/samples/{info.ir.name}", f"ivfusion/data/samples/{info.vis.name}"} <= names
    assert "ivfusion/data/samples/ATTRIBUTION.md" in names
    assert not [n for n in names if n.startswith("ivfusion/weights/")]  # the old data folder is gone
