"""The import graph of include/edgeloop: no circle between modules, and the simulator stays above the stages.

Every import counts, at module top or inside a function (a function-local import closes a circle as
surely as one at the top, only later). The fleet simulator is a harness: only the `edgeloop` command,
the demo and the local stack may import it, never a stage or a layer below them.
"""

from __future__ import annotations

import ast
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[2] / "include"
HARNESS = "edgeloop.simulator"
HARNESS_USERS = ("edgeloop.simulator", "edgeloop.cli", "edgeloop.demo", "edgeloop.devstack")


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name `path` imports, anywhere in the file, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # a submodule, or a name in `base`
    return names


def import_graph(root: Path, package: str = "edgeloop") -> dict[str, set[str]]:
    """Module -> the modules of `package` under `root` that it imports (the deepest module each name is in)."""
    files = {module_name(root, p): p for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for imported in imported_names(name, path):
            module = imported
            while module and module not in files:
                module = module.rpartition(".")[0]
            if module and module != name:
                targets.add(module)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as `[a, b, ..., a]`, or [] when there is none (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def harness_imports(graph: dict[str, set[str]]) -> list[str]:
    """`module -> simulator module` for every module outside the harness's users that imports the simulator."""

    def within(name: str, packages: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in packages)

    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if not within(module, HARNESS_USERS)
        for target in targets
        if within(target, (HARNESS,))
    )


def test_no_import_circle_between_modules() -> None:
    cycle = find_cycle(import_graph(INCLUDE))
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_no_stage_imports_the_simulator() -> None:
    assert harness_imports(import_graph(INCLUDE)) == []


def write(root: Path, modules: dict[str, str]) -> Path:
    for name, text in modules.items():
        path = root / Path(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_function_local_import_that_closes_a_circle_is_found(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "edgeloop.__init__": "",
            "edgeloop.spec": "def objects():\n    from edgeloop.rollout.manifests import name\n",
            "edgeloop.rollout.__init__": "",
            "edgeloop.rollout.manifests": "from ..fleet import agents\n",
            "edgeloop.fleet.__init__": "",
            "edgeloop.fleet.agents": "from edgeloop.spec import PipelineSpec\n",
        },
    )
    assert find_cycle(import_graph(root)) == [
        "edgeloop.fleet.agents",
        "edgeloop.spec",
        "edgeloop.rollout.manifests",
        "edgeloop.fleet.agents",
    ]


def test_a_stage_importing_the_simulator_is_found_and_the_demo_may(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "edgeloop.__init__": "",
            "edgeloop.simulator.__init__": "",
            "edgeloop.simulator.fleet": "",
            "edgeloop.training.__init__": "",
            "edgeloop.training.seed": "def seed():\n    from edgeloop.simulator import fleet\n",
            "edgeloop.demo": "from edgeloop.simulator.fleet import simulate\n",
        },
    )
    assert harness_imports(import_graph(root)) == ["edgeloop.training.seed -> edgeloop.simulator.fleet"]
