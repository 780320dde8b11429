"""The package's layers: every import points down, and no modules import each other in a cycle.

The walk reads the source (``ast``), so an import inside a function counts as much as one at the top,
and for the layers so does one only type checkers see: each is a dependency a reader has to follow.
Cycles are counted among the imports that run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.paths import REPO

PACKAGES = ("mentorcollab_langchain", "graphs")

# Low to high. A module may import its own part or any part on a lower layer. Parts that share a layer
# are independent faces of the one below them and must not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("models",),
    ("backends", "serving"),
    ("verifiers",),
    ("engine",),
    ("chat", "evals", "bench"),
    ("cli", "graphs"),
    ("mentorcollab_langchain",),  # the package's __init__: the public API gathers from every part
)
# Imports across one layer that the design wants: the graph answers exactly as the chat model does,
# with the chat face's own answer assembly and message conversion.
ALLOWED_ACROSS = {("graphs", "chat")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}


def type_checking_lines(tree: ast.Module) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks: imports there never run."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for statement in node.body:
                lines.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    return lines


def imports(module: str, path: Path, modules: set[str]) -> Iterator[tuple[str, bool]]:
    """The package modules ``path`` imports, each with whether the import runs (not type checking only).

    ``from a import b`` imports the module ``a.b`` when there is one, else the module ``a``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = type_checking_lines(tree)
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for name in names:
            if name in modules and name != module:
                yield name, node.lineno not in typing_only


def import_graph(*, at_runtime_only: bool = False) -> dict[str, set[str]]:
    modules = package_modules()
    return {
        module: {name for name, runs in imports(module, path, set(modules)) if runs or not at_runtime_only}
        for module, path in modules.items()
    }


def part(module: str) -> str:
    """The layer part a module belongs to: ``mentorcollab_langchain.engine.steps`` -> ``engine``."""
    pieces = module.split(".")
    if pieces[0] == "mentorcollab_langchain" and len(pieces) > 1:
        return pieces[1]
    return pieces[0]


def layer_of(part_name: str) -> int:
    for level, parts in enumerate(LAYERS):
        if part_name in parts:
            return level
    raise AssertionError(f"{part_name!r} is on no layer: add it to LAYERS in {__file__}")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in graph.items():
        for target in targets:
            low, high = part(target), part(module)
            if low == high or (high, low) in ALLOWED_ACROSS:
                continue
            if layer_of(low) >= layer_of(high):
                found.append(f"{module} -> {target} ({high} is layer {layer_of(high)}, {low} layer {layer_of(low)})")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules (Tarjan's algorithm), as a sorted list."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in on_stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_every_part_of_the_package_sits_on_a_layer() -> None:
    for module in package_modules():
        layer_of(part(module))


def test_no_import_points_up_the_layers() -> None:
    assert upward_imports(import_graph()) == []


def test_no_modules_import_each_other_in_a_cycle() -> None:
    assert cycles(import_graph(at_runtime_only=True)) == []


def test_the_walk_finds_an_upward_import_and_a_cycle() -> None:
    """The checks above can fail: an engine module importing the chat face is both at once."""
    graph = import_graph()
    graph["mentorcollab_langchain.engine.steps"] |= {"mentorcollab_langchain.chat.answer"}
    assert any(line.startswith("mentorcollab_langchain.engine.steps -> mentorcollab_langchain.chat.answer")
               for line in upward_imports(graph))
    assert any("mentorcollab_langchain.engine.steps" in group for group in cycles(graph))


@pytest.mark.parametrize(("module", "target"), [
    ("mentorcollab_langchain.backends.base", "mentorcollab_langchain.engine.state"),
    ("mentorcollab_langchain.evals.runner", "mentorcollab_langchain.chat.model"),
])
def test_a_backend_reaching_into_the_engine_or_one_face_into_another_is_refused(module: str, target: str) -> None:
    graph = {module: {target}, target: set()}
    assert len(upward_imports(graph)) == 1
