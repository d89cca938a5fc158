"""The package's import graph: no cycles, and no import running back up the layers.

Layers, bottom up: errors/settings -> cluster -> data -> defs -> CLI and bench. The cluster
layer knows nothing of the data path or Dagster, the data path nothing of Dagster, and the
benchmarks measure cluster/ and data/ code only, never defs/ -- but for `bench seed`, whose
first section runs the main job itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "citus_pipeline"

# (importing module prefix, imported module prefixes it must not use)
FORBIDDEN = [
    ("citus_pipeline.errors", ("citus_pipeline.",)),
    ("citus_pipeline.settings", ("citus_pipeline.",)),
    ("citus_pipeline.waiting", ("citus_pipeline.cluster", "citus_pipeline.data")),
    (
        "citus_pipeline.cluster",
        ("citus_pipeline.data", "citus_pipeline.defs", "citus_pipeline.bench"),
    ),
    ("citus_pipeline.data", ("citus_pipeline.defs", "citus_pipeline.bench")),
    ("citus_pipeline.bench", ("citus_pipeline.defs", "citus_pipeline.pipeline_commands")),
]


# The one import allowed up the layers: the seed bench's first section IS the main job (the
# reference experiment run through Dagster as users run it), so it calls `run_pipeline`.
ALLOWED = {("citus_pipeline.bench.seed", "citus_pipeline.pipeline_commands")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports (anywhere in the file)."""
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names} & modules.keys()
            if subs and len(subs) == len(node.names):
                deps |= subs  # `from . import schema`: the submodule, not its package
            elif target in modules:
                deps.add(target)
    deps.discard(name)
    return deps


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    assert _cycle(_graph()) is None


def test_no_import_runs_back_up_the_layers():
    wrong = [
        f"{m} imports {d}"
        for m, deps in _graph().items()
        for prefix, banned in FORBIDDEN
        if m.startswith(prefix)
        for d in deps
        if d.startswith(banned) and not d.startswith(prefix) and (m, d) not in ALLOWED
    ]
    assert wrong == []


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
