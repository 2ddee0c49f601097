"""The layering docs/ARCHITECTURE.md promises: arrows one way, no cycles, no borrowed private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sdclip"

# what each part of sdclip may import (besides itself); the bottom of the list is the bottom layer
ALLOWED = {
    "errors": set(),
    "prompts": {"errors"},
    "models": {"errors"},
    "_lru": {"errors"},
    "datasets": {"errors"},
    "conditioning": {"errors", "prompts", "models", "_lru"},
    "scoring": {"errors", "prompts", "models", "_lru"},
    "inspection": {"errors", "prompts", "models", "conditioning"},
    "plots": {"errors", "prompts", "inspection", "scoring"},
    "compat": {"errors", "models", "scoring"},
    "report": {"errors", "scoring"},
    "testing": {"errors", "models"},
    "testing_mmdit": {"errors", "models", "testing"},
    "training": {"errors", "prompts", "models", "scoring"},
    "cli": {"errors", "prompts", "models", "conditioning", "scoring", "inspection", "plots", "compat", "report", "training", "datasets"},
    "__main__": {"cli"},
}
MAX_LINES = 420  # the ~400-line guideline, with a little slack


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str]]:
    """(imported module, imported name) for every sdclip import in the module, at any depth."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    typing_only = {  # imports under `if TYPE_CHECKING:` never run
        id(inner) for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("sdclip"):
                target = node.module
            else:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.append((full, "") if full in modules else (target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("sdclip.")]
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sdclip"


def test_subpackages_import_only_the_layers_below():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        part = _part(name)
        if part == "sdclip":  # the lazy public table names everything
            continue
        for target, _ in _imports(name, path, modules):
            other = _part(target)
            if other not in (part, "sdclip") and other not in ALLOWED[part]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_private_names_cross_a_subpackage():
    modules = _modules()
    borrowed = []
    for name, path in modules.items():
        for target, imported in _imports(name, path, modules):
            if _part(target) == _part(name) or target == "sdclip._lru":
                continue
            private_module = any(piece.startswith("_") and not piece.startswith("__") for piece in target.split("."))
            if private_module or (imported.startswith("_") and not imported.startswith("__")):
                borrowed.append(f"{name} imports {target}{'.' + imported if imported else ''}")
    assert not borrowed, "\n".join(borrowed)


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {name: {t for t, _ in _imports(name, path, modules) if t in modules and t != name}
             for name, path in modules.items()}
    # a package's __init__ re-exporting its own modules is not a cycle users can hit
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") or t.startswith(name + "."))}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_modules_stay_small():
    long = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: lines for name, lines in long.items() if lines > MAX_LINES} == {}
