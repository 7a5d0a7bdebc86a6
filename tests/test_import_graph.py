"""The package's layers read one way: no import cycles, and nothing below the command line imports it. The tests
import nothing from benchmarks/ (scripts that measure, not a library: what tests need is in the package or in
the tests' own helpers).

The graph is read from the source (every ``import`` and ``from … import`` of a ``facegnet`` module, at any depth
of a function), so a lazy import inside a function counts as much as one at the top of a file.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "facegnet"
TESTS = Path(__file__).resolve().parent
BENCHMARKS = PACKAGE.parent / "benchmarks"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that ``name`` (a module or a name inside one) refers to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of facegnet it imports}`` for every module of the package."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges: set[str] = set()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved and resolved != module:
                    edges.add(resolved)
        graph[module] = edges
    return graph


def _is_package_init(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between modules, or None (a package's ``__init__`` naming its own modules is no cycle)."""
    def edges(module: str) -> set[str]:
        # A package __init__ that re-exports its submodules, and submodules importing their parent package's
        # siblings through it, would make every package a cycle; only module-to-module edges count.
        return {t for t in graph[module] if not _is_package_init(t)}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges(module)):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_the_reader_sees_the_known_edges():
    graph = import_graph()
    assert "facegnet.detection.detector" in graph["facegnet.recognizer"]
    assert "facegnet.cli.common" in graph["facegnet.cli.verify"]


def test_no_import_cycle():
    assert _cycle(import_graph()) is None


def test_a_cycle_is_found_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]


def test_nothing_below_the_command_line_imports_it():
    offenders = {module: sorted(t for t in targets if t == "facegnet.cli" or t.startswith("facegnet.cli."))
                 for module, targets in import_graph().items()
                 if not (module == "facegnet.cli" or module.startswith("facegnet.cli.") or module == "facegnet.__main__")}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_the_tests_import_nothing_from_the_benchmarks():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    assert "host_info" in scripts  # the reader below knows what it looks for
    offenders = {}
    for path in TESTS.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
        if found := sorted(names & (scripts | {"benchmarks"})):
            offenders[path.name] = found
    assert offenders == {}
