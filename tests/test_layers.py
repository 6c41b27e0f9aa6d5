"""The layers point one way: every import inside src/mammokit (at any level, lazy ones included) goes to the same
room or to a lower layer, and no two modules import each other, directly or through others.

The layer order, top to bottom (rooms on one line are siblings and do not import each other), as in
docs/architecture.md:

    cli, demo
    predict, export, pacs
    training | evaluation
    release
    models | data
    preprocess | datasets | synth | inspect
    dicom (dicom.py, dicom_decode.py, dicom_film.py, dicom_gpu.py)
    base (mammokit/__init__.py, config, errors, ids, io, isolate, reuse)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mammokit"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("serving",),
    ("training", "evaluation"),
    ("release",),
    ("models", "data"),
    ("preprocess", "datasets", "synth", "inspect"),
    ("dicom",),
    ("base",),
)
ROOM_OF_TOP = {  # first name under `mammokit.` -> room (anything else is its own name)
    "demo": "cli", "recipes": "cli", "cli_pacs": "cli", "predict": "serving", "export": "serving", "pacs": "serving",
    "dicom_decode": "dicom", "dicom_film": "dicom", "dicom_gpu": "dicom",
    "": "base", "config": "base", "errors": "base", "ids": "base", "io": "base", "isolate": "base", "reuse": "base",
}
LAYER_OF = {room: depth for depth, rooms in enumerate(LAYERS) for room in rooms}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    top = module.split(".")[1] if "." in module else ""
    return ROOM_OF_TOP.get(top, top)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The mammokit modules a file imports anywhere in its body (a `from pkg import sub` counts as `pkg.sub`)."""
    module = module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path.name == "__init__.py", node)
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import mammokit.training.run` -> the deepest known module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def backward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a layer or sideways to a sibling room."""
    bad = []
    for module, targets in graph.items():
        for target in sorted(targets):
            a, b = room(module), room(target)
            if a != b and LAYER_OF[b] <= LAYER_OF[a]:
                bad.append(f"{module} ({a}) -> {target} ({b})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
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


def test_every_module_has_a_room() -> None:
    unknown = sorted({room(m) for m in import_graph()} - set(LAYER_OF))
    assert not unknown, f"rooms missing from LAYERS: {unknown}"


def test_imports_point_down() -> None:
    bad = backward_imports(import_graph())
    assert not bad, f"{len(bad)} backward or sideways imports:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "mammokit.training.run" in graph["mammokit.cli"]  # imported inside a function
    assert "mammokit.models.backbone" in graph["mammokit.models.global_local"]  # relative import


@pytest.mark.parametrize("module", ["mammokit.predict", "mammokit.export"])
def test_serving_does_not_import_lightning(module: str) -> None:
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{module} imports Lightning: {out.strip()[:300]}"
