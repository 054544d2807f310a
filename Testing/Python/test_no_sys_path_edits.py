"""No code of the project imports by editing ``sys.path``: scripts, tests and benchmarks import the Lib packages
(logic they share lives there) or a sibling module. One exception: bench_screen.py's child process puts the
baseline source tree given by ``--src`` first on ``sys.path`` on purpose, to time old code against new."""

from __future__ import annotations

import ast

from conftest import REPO

SCANNED = ("Testing", "scripts", "CovidCTScreen", "CovidCTTraining")
ALLOWED = {("Testing/benchmarks/bench_screen.py", "_child")}  # (file, enclosing function)
SITE_CALLS = {"addsitedir"}


def _is_sys_path(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
            and node.value.id == "sys")


def sys_path_edits(source: str, name: str) -> list[tuple[int, str]]:
    """(line, enclosing function or '') of every edit of sys.path in ``source``: a call of one of its methods
    (insert, append, extend, ...), an assignment to it or to an item or slice of it, ``site.addsitedir``, and
    ``from sys import path``."""
    tree = ast.parse(source, name)
    found = []

    def visit(node: ast.AST, func: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        edit = False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            edit = _is_sys_path(node.func.value) or node.func.attr in SITE_CALLS
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            edit = any(_is_sys_path(t) or (isinstance(t, ast.Subscript) and _is_sys_path(t.value)) for t in targets)
        elif isinstance(node, ast.ImportFrom):
            edit = node.module == "sys" and any(a.name == "path" for a in node.names)
        if edit:
            found.append((node.lineno, func))
        for child in ast.iter_child_nodes(node):
            visit(child, func)

    visit(tree, "")
    return found


def test_no_file_edits_sys_path():
    bad = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            bad += [f"{rel}:{line}" for line, func in sys_path_edits(path.read_text(), rel)
                    if (rel, func) not in ALLOWED]
    assert bad == []


def test_the_scan_finds_each_kind_of_edit():
    source = ("import sys, site\n"
              "sys.path.insert(0, 'scripts')\n"
              "def f():\n    sys.path.append('x')\n"
              "sys.path[:0] = ['y']\n"
              "sys.path = ['z']\n"
              "sys.path += ['w']\n"
              "site.addsitedir('v')\n"
              "from sys import path\n"
              "print(sys.path, len(sys.path))\n")  # reading it is no edit
    assert sys_path_edits(source, "x.py") == [(2, ""), (4, "f"), (5, ""), (6, ""), (7, ""), (8, ""), (9, "")]
    # the one allowed edit is still there, so the exception is not stale
    bench = REPO / "Testing" / "benchmarks" / "bench_screen.py"
    assert [f for _, f in sys_path_edits(bench.read_text(), "bench_screen.py")] == ["_child"]
