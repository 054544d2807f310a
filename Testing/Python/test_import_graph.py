"""The Lib packages' import graph, read from the source (ast): no cycle between modules, counting imports at
module level and inside functions alike, and sub-packages only import their own layer or the ones below."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

LIBS = {"CovidCTScreenLib": REPO / "CovidCTScreen" / "CovidCTScreenLib",
        "CovidCTTrainingLib": REPO / "CovidCTTraining" / "CovidCTTrainingLib"}
# CovidCTScreenLib's sub-packages, lowest first: each may import its own package, the ones before it and the
# top-level modules (errors, the package's __init__), never one after it.
LAYERS = ["input", "lungs", "models", "lesions", "report", "screening", "evaluation", "app", "slicer_glue"]


def _module_name(root: Path, package: str, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(libs: dict[str, Path] = LIBS) -> dict[str, Path]:
    """Dotted name -> file of every module and package of the Libs."""
    return {_module_name(root, pkg, p): p for pkg, root in libs.items() for p in sorted(root.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The Lib modules ``name`` imports anywhere in its file (module level, functions, branches)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # 'from pkg import sub' imports the module pkg.sub; 'from mod import name' imports mod
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def import_graph(libs: dict[str, Path] = LIBS) -> dict[str, set[str]]:
    files = modules(libs)
    return {name: imports(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 else -1  # top-level modules sit below every sub-package


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in graph.items():
        for dst in sorted(targets):
            if src.startswith("CovidCTScreenLib") and dst.startswith("CovidCTTrainingLib"):
                bad.append(f"{src} -> {dst} (the screening Lib never needs the training Lib)")
            elif src.startswith("CovidCTScreenLib") and _layer(dst) > _layer(src):
                bad.append(f"{src} -> {dst} (imports a higher layer)")
    return bad


def test_every_module_is_in_the_graph():
    graph = import_graph()
    assert len(graph) >= 60 and "CovidCTScreenLib.app.worker" in graph and "CovidCTTrainingLib.cli" in graph
    assert {n.split(".")[1] for n in graph if n.startswith("CovidCTScreenLib.") and n.count(".") >= 2} == set(LAYERS)
    # function-level imports are edges too (the pipeline imports the report writer inside screen_to_folder)
    assert "CovidCTScreenLib.report.report" in graph["CovidCTScreenLib.screening.pipeline"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_layers():
    assert layer_violations(import_graph()) == []


@pytest.fixture
def copy_of_screen_lib(tmp_path):
    import shutil

    root = tmp_path / "CovidCTScreenLib"
    shutil.copytree(LIBS["CovidCTScreenLib"], root)
    return root


def test_a_function_level_cycle_is_found(copy_of_screen_lib):
    """An import inside a function of volume_io back to the pipeline (which imports volume_io) is a cycle."""
    f = copy_of_screen_lib / "input" / "volume_io.py"
    f.write_text(f.read_text() + "\n\ndef _late():\n    from ..screening.pipeline import screen\n\n    return screen\n")
    graph = import_graph({"CovidCTScreenLib": copy_of_screen_lib})
    assert cycles(import_graph({"CovidCTScreenLib": LIBS["CovidCTScreenLib"]})) == []
    assert any({"CovidCTScreenLib.input.volume_io", "CovidCTScreenLib.screening.pipeline"} <= set(c)
               for c in cycles(graph))
    assert ("CovidCTScreenLib.input.volume_io -> CovidCTScreenLib.screening.pipeline (imports a higher layer)"
            in layer_violations(graph))
