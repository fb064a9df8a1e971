"""Import structure, read from the source (ast, nothing imported): no cycle inside `synthmed/`, and
the one-way rule `synthmed` -> `lightning_modules`, `datamodules` (the two never import `synthmed`;
`lightning_modules/nets/` never imports Lightning).

Every import statement counts, also those inside functions (a lazy import hides a cycle from
Python, not from a reader); only `if TYPE_CHECKING:` blocks are skipped (never executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / package).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(path: Path, name: str) -> set[str]:
    """Dotted names of everything `path` (module `name`) imports, relative imports made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports (a name resolves to the deepest module it names)."""
    known = modules(package)
    graph = {}
    for name, path in known.items():
        targets = set()
        for imported in imported_names(path, name):
            parts = imported.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative DFS with colours)."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child) == 1:
                return path[path.index(child):] + [child]
            elif colour.get(child) == 0:
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_no_import_cycle_inside_synthmed():
    graph = import_graph("synthmed")
    assert len(graph) > 20 and "synthmed.pipeline.kinds" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", ["lightning_modules", "datamodules"])
def test_model_and_data_packages_never_import_synthmed(package):
    offenders = {name: sorted(i for i in imported_names(path, name) if i.split(".")[0] == "synthmed")
                 for name, path in modules(package).items()}
    assert not {k: v for k, v in offenders.items() if v}


def test_nets_never_import_lightning():
    offenders = {name: sorted(i for i in imported_names(path, name) if i.split(".")[0] in ("lightning", "pytorch_lightning"))
                 for name, path in modules("lightning_modules").items() if ".nets" in name}
    assert not {k: v for k, v in offenders.items() if v}


def test_pipeline_modules_have_one_direction():
    """spec -> kinds -> runs; report -> kinds/spec; the runner on top: nothing imports the runner."""
    graph = import_graph("synthmed")
    assert "synthmed.pipeline.runner" not in set().union(*(t for n, t in graph.items() if n != "synthmed.pipeline.runner"))
    assert "synthmed.pipeline.spec" not in graph["synthmed.pipeline.kinds"]
