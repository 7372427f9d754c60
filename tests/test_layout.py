"""The house's layout as a specification (issue 23): no import circle anywhere in ``ctviewer`` or
``training``, and the layers of ``docs/design.md`` import downwards only.

The graph is read from the source (``ast``), every ``import`` counted wherever it stands (a
function-level import is still a dependency: it only moves the moment of the failure).
``from package import name`` is an edge to ``package.name`` where that is a module, else to
``package`` itself: a module inside a package that imports the package's public face
(``__init__``) instead of its sibling makes a circle, and is reported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ctviewer", "training")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_package, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for t in targets:
                while t and t not in mods and "." in t:  # "ctviewer.imaging.io.load" -> the module
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_finds_a_circle_where_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    assert _resolve("ctviewer.studies.scan", False, 1, "records") == "ctviewer.studies.records"
    assert _resolve("ctviewer.studies", True, 1, "scan") == "ctviewer.studies.scan"
    assert _resolve("ctviewer.gui.app", False, 2, "history") == "ctviewer.history"


def test_no_import_circle_in_the_application_or_training():
    found = circles(import_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


# What each part may import of the project (besides itself and BASE): arrows point down only.
BASE = {"ctviewer", "ctviewer.paths"}  # the version, and where the bundled resources are
LAYERS = {
    "ctviewer.imaging": set(),
    "ctviewer.inference": {"ctviewer.imaging"},
    "ctviewer.studies": {"ctviewer.imaging", "ctviewer.inference"},
    "ctviewer.privacy": {"ctviewer.imaging", "ctviewer.studies"},
    "ctviewer.reports": {"ctviewer.imaging", "ctviewer.inference", "ctviewer.studies", "ctviewer.privacy"},
    "ctviewer.pacs": {"ctviewer.imaging", "ctviewer.paths", "ctviewer.privacy"},
    "ctviewer.archive": {"ctviewer.imaging", "ctviewer.inference", "ctviewer.studies", "ctviewer.reports",
                         "ctviewer.pacs"},
}


def _part(mod: str) -> str:
    for part in LAYERS:
        if mod == part or mod.startswith(part + "."):
            return part
    return mod


@pytest.mark.parametrize("part", sorted(LAYERS))
def test_each_part_imports_only_the_layers_below_it(part):
    graph = import_graph()
    wrong = sorted(f"{m} -> {t}" for m, ts in graph.items() if _part(m) == part
                   for t in ts if _part(t) != part and _part(t) not in LAYERS[part] | BASE)
    assert wrong == []


def test_the_application_never_imports_training():
    graph = import_graph()
    wrong = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith("ctviewer")
                   for t in ts if t.startswith("training"))
    assert wrong == []


def test_the_top_of_ctviewer_holds_the_entry_points_only():
    """The parts live in packages named for what they do (issue 23)."""
    top = sorted(p.stem for p in (ROOT / "ctviewer").glob("*.py"))
    assert top == ["__init__", "__main__", "cli", "deid_check", "history", "logs", "paths", "platform_check",
                   "selftest"]
    for pkg in ("studies", "pacs", "privacy"):
        assert (ROOT / "ctviewer" / pkg / "__init__.py").is_file()
