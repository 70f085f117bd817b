"""The package layout (issue 18): no import cycles, one home per method, a small core."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

HWKIT = ROOT / "hwkit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Every hwkit module -> the hwkit modules it imports, at top level or inside functions."""
    modules = {_module_name(p): p for p in HWKIT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t.startswith("hwkit") and t != mod and t != "hwkit":
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules), or None. A package's own __init__ importing its
    submodules is not a cycle of interest, so edges from a package to its children are skipped."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if n.startswith(m + "."):
                continue
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_each_method_is_one_folder_with_library_run_and_cli():
    for method in ("amp", "shiftadd", "cqmlp"):
        folder = HWKIT / "compress" / method
        assert (folder / "__init__.py").is_file() and (folder / "cli.py").is_file(), method
    for method in ("amp", "shiftadd", "synapse"):
        assert (HWKIT / "compress" / method / "run.py").is_file() or method == "synapse", method
    top = sorted(p.name for p in HWKIT.glob("*.py"))
    assert len(top) <= 13, top


def test_every_subcommand_module_has_add_parser_and_run():
    import importlib

    from hwkit.cli import COMMANDS

    for name, module in COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(getattr(mod, "add_parser", None)) and callable(getattr(mod, "run", None)), name


def nested_module_classes() -> list[str]:
    """``file:line class`` of every nn.Module / autograd.Function subclass defined inside a function."""
    found = []
    for path in sorted(HWKIT.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ClassDef) and any(
                        ast.unparse(b).endswith(("Module", "autograd.Function")) for b in node.bases):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    return sorted(set(found))


def test_no_module_classes_defined_inside_functions():
    """Module classes live at module level: typed for mypy, picklable by name."""
    assert nested_module_classes() == []
