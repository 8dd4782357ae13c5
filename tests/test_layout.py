"""The shape of the tree: no import circles (lazy imports included), small modules, who may import what, and
no citations of documents the repository does not have."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = {"backend/stableavatar": "stableavatar", ".": "addon"}
ADDON_DIRS = ("blender_addon", "operators", "ui")
LONG_OK = {"backend/stableavatar/dit.py", "bench/run.py"}  # the single-file model and the benchmark harness


def _addon_files():
    yield from (REPO / p for p in ("__init__.py", "registration.py", "preferences.py"))
    for d in ADDON_DIRS:
        yield from sorted((REPO / d).glob("*.py"))


def _backend_files():
    yield from sorted((REPO / "backend" / "stableavatar").rglob("*.py"))


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, root: Path) -> set[str]:
    """Every module of the same tree `path` imports, at module level or inside functions."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            modules = [m for a in node.names if _exists(m := f"{target}.{a.name}" if target else a.name, root)]
            out.update(modules or [target])  # `from . import x` names module x; `from .m import f`, module m
    return {m for m in out if m and m != name and _exists(m, root)}


def _exists(module: str, root: Path) -> bool:
    p = root.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


@pytest.mark.parametrize("tree", ["backend", "addon"])
def test_no_import_circles(tree):
    root = REPO / "backend" if tree == "backend" else REPO.parent
    files = list(_backend_files()) if tree == "backend" else list(_addon_files())
    graph = {_module_name(f, root): _imports(f, root) for f in files}  # the add-on: the repository folder
    # a package's __init__ importing its own submodules is registration, not a circle
    graph = {m: {d for d in deps if not m.startswith(d + ".") or not d} for m, deps in graph.items()}
    graph = {m: {d for d in deps if not (d.startswith(m + ".") and (root / m.replace(".", "/") / "__init__.py")
                                         .is_file())} for m, deps in graph.items()}
    assert _cycles(graph) == []


def test_modules_stay_small():
    long = {str(p.relative_to(REPO)): n for p in [*_backend_files(), *_addon_files(), *(REPO / "bench").glob("*.py")]
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert set(long) <= LONG_OK, long


def test_addon_never_imports_torch_and_backend_never_imports_bpy():
    for f in _addon_files():
        assert not re.search(r"^\s*(import|from)\s+torch\b", f.read_text(), re.M), f
    for f in _backend_files():
        assert not re.search(r"^\s*(import|from)\s+bpy\b", f.read_text(), re.M), f


def test_no_citations_of_documents_outside_the_repository():
    bad = re.compile(r"spec §|library-notes|blender-notes|stableavatar-reference|\.\./shared|\bissue \d+\b")
    hits = []
    for p in [*_backend_files(), *_addon_files(), *(REPO / "bench").glob("*.py"), *(REPO / "docs").glob("*.md"),
              REPO / "README.md", *(REPO / "demo").glob("*.py")]:
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if bad.search(line) and "official issue" not in line:
                hits.append(f"{p.relative_to(REPO)}:{i}: {line.strip()[:100]}")
    assert hits == []
    for ref in re.findall(r"docs/[\w./-]+\.md", "\n".join(p.read_text() for p in [*_backend_files(), *_addon_files()])):
        assert (REPO / ref).is_file(), f"a comment cites {ref}, which does not exist"
