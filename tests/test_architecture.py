"""The house: no import cycle inside niflow, rooms import only rooms before them, and no
module over 600 lines.

Every ``import`` and ``from … import`` statement counts, wherever it stands (inside a
function, under ``if TYPE_CHECKING:``): a lazy import hides a cycle from Python, not from
the reader. The rooms follow the pipeline (DEVELOPERS.md): data → model → training →
evaluation → interpretation → figures → run folders → report → command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "niflow"
MAX_LINES = 600

# room of each top-level module or sub-package, in the order imports may flow
ROOMS = [
    {"_atomic", "_version", "_system"},
    {"config"},
    {"data"},
    {"model"},
    {"train"},
    {"evaluate"},
    {"interpret"},
    {"figures"},
    {"runs"},
    {"report"},
    {"cli", "__main__"},
]
RANK = {name: i for i, names in enumerate(ROOMS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """niflow modules that ``path`` imports anywhere (a name imported from a package that is
    itself a module counts as that module)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([mod] if mod else []))
            if mod.split(".")[0] != "niflow":
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                out.add(sub if sub in known else mod)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "niflow"}
    return out - {name}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, path, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def room(module: str) -> int | None:
    parts = module.split(".")
    return None if len(parts) == 1 else RANK.get(parts[1])


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_finder_sees_lazy_and_relative_imports(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from niflow.data import io\n"
                    "from .sibling import x\nimport niflow.config\nimport numpy\n")
    known = {"niflow.data", "niflow.data.io", "niflow.pkg.sibling", "niflow.config"}
    assert imported("niflow.pkg.mod", path, known) == {
        "niflow.data.io", "niflow.pkg.sibling", "niflow.config"}


def test_no_import_cycle_inside_niflow():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_module_belongs_to_a_room():
    homeless = [m for m in modules() if m != "niflow" and room(m) is None]
    assert not homeless, f"modules outside the rooms of DEVELOPERS.md: {homeless}"


def test_rooms_import_only_rooms_before_them():
    backward = []
    for module, deps in import_graph().items():
        here = room(module)
        if here is None:  # the package itself re-exports the public API
            continue
        backward += [f"{module} -> {d}" for d in deps
                     if d != "niflow" and (room(d) or 0) > here]
    assert not backward, "imports against the pipeline's order: " + ", ".join(sorted(backward))


def test_no_internal_module_imports_the_package_root():
    # ``niflow/__init__`` imports every room, so importing it from inside is a cycle
    offenders = [m for m, deps in import_graph().items() if "niflow" in deps and m != "niflow"]
    assert not offenders, f"modules importing niflow itself: {offenders}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_module_is_at_most_600_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{module_name(path)} has {n} lines (at most {MAX_LINES})"
