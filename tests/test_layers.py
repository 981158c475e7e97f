"""The house's floors (issue #21): dependencies point down, with no cycle even through imports
inside functions; the command line starts without torch; modules import at their top."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pruner_zero"

ENTRY_POINTS = {"pruner_zero", "pruner_zero.__main__"}
"""Modules that may import the library inside functions: the package (its API on first use)
and the command line (each command imports what it runs when it runs)."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _targets(module: str, path: Path, node: ast.AST, known: dict[str, Path]) -> list[str]:
    """The package modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("pruner_zero")]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if not base.startswith("pruner_zero"):
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """module -> the package modules it imports (anywhere in it), and the imports made inside
    functions as (module, line, target)."""
    known = _modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    inner: list[tuple[str, int, str]] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        in_function = {id(n) for f in ast.walk(tree)
                       if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for_types = {id(n) for f in ast.walk(tree)  # annotations only: never imported at run time
                     if isinstance(f, ast.If) and "TYPE_CHECKING" in ast.unparse(f.test)
                     for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in for_types:
                for target in _targets(module, path, node, known):
                    graph[module].add(target)
                    if id(node) in in_function:
                        inner.append((module, node.lineno, target))
    return graph, inner


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph or w == v:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_even_through_imports_inside_functions():
    graph, _ = _graph()
    # a package imports its submodules' names; a submodule reaching back up is what cycles
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_library_imports_the_library_at_the_top_of_its_modules():
    """Only the entry points (the package's lazy API, the command line) import the package
    inside functions; everything else says what it needs at its top."""
    _, inner = _graph()
    late = [f"{m}:{line} imports {t}" for m, line, t in inner
            if m not in ENTRY_POINTS and not m.startswith("pruner_zero.cli")]
    assert late == []


FLOORS = {
    0: ["errors", "files", "ppl_cache", "runtime", "sampling", "windows", "measurement", "spread",
        "search", "search.layout", "search.options", "search.settings", "search.results", "search.reaper"],
    1: ["metric", "metric.builtin", "metric.ops", "metric.sympy_forms", "metric.registry",
        "metric.tree", "metric.space", "metric.io", "metric.symbolic", "metric.simplify"],
    2: ["model", "gguf", "data", "stats", "masks", "allocation", "recipe", "layerwise", "evaluate",
        "sparsegpt", "zeroshot"],
    3: ["engine", "workbench", "tasks", "methods", "measure", "pruning"],
    4: ["search.config", "search.stored", "search.operators", "search.candidate", "search.checkpoint", "search.rundir", "search.loop",
        "search.memo", "search.fitness", "search.multitask", "search.evaluators", "search.workers",
        "search.api"],
    5: ["report", "compare"],
    6: ["", "__main__", "cli", "cli.common", "cli.prune", "cli.search", "cli.compare",
        "cli.report", "cli.tools"],
}
"""The floors of docs/ARCHITECTURE.md, bottom up: a module imports its own floor or lower ones."""


def test_every_module_is_on_a_floor_and_imports_only_its_floor_or_lower():
    floor = {("pruner_zero." + m).rstrip("."): f for f, ms in FLOORS.items() for m in ms}
    graph, _ = _graph()
    assert sorted(set(graph) - set(floor)) == [], "place the new modules on a floor"
    upward = [f"{m} (floor {floor[m]}) imports {t} (floor {floor[t]})"
              for m, targets in graph.items() for t in targets
              if t in floor and floor[t] > floor[m]]
    assert upward == []


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO)


LIGHT = ["pruner_zero", "pruner_zero.cli", "pruner_zero.errors", "pruner_zero.files",
         "pruner_zero.runtime", "pruner_zero.windows", "pruner_zero.spread",
         "pruner_zero.measurement", "pruner_zero.sampling", "pruner_zero.search.layout", "pruner_zero.search.options",
         "pruner_zero.search.settings", "pruner_zero.search.results", "pruner_zero.search.reaper"]


@pytest.mark.parametrize("module", LIGHT)
def test_the_light_floors_import_no_torch(module):
    res = _run(f"import sys, {module}; heavy = [m for m in ('torch', 'transformers', 'numpy', "
               f"'deap', 'sympy') if m in sys.modules]; assert not heavy, heavy")
    assert res.returncode == 0, res.stderr


def test_the_command_line_answers_help_without_torch():
    res = _run("import sys\nfrom pruner_zero.cli import main\n"
               "for argv in (['--help'], ['search', '--help'], ['compare', '--help'], "
               "['prune', '--help']):\n"
               "    try:\n        main(argv)\n    except SystemExit as exc:\n"
               "        assert exc.code == 0, exc.code\n"
               "assert 'torch' not in sys.modules, 'torch was imported'\n")
    assert res.returncode == 0, res.stderr
    assert "--population" in res.stdout and "--metrics" in res.stdout


def test_the_api_is_there_when_called():
    """``import pruner_zero`` is light, yet ``pruner_zero.search`` is the function (not the
    subpackage of that name) whatever was imported before."""
    res = _run("import pruner_zero.search.layout, pruner_zero\n"
               "assert callable(pruner_zero.search) and callable(pruner_zero.prune)\n"
               "from pruner_zero import SearchConfig\n"
               "assert SearchConfig(population=4).population == 4\n")
    assert res.returncode == 0, res.stderr


def test_no_long_function_many_positional_parameters_or_long_module():
    """Rooms stay small: a function over 60 lines or with more than 8 positional parameters,
    or a module over 400 lines, is split before it lands (keyword-only options are fine)."""
    import ast

    found = []
    for path in sorted((REPO / "pruner_zero").rglob("*.py")):
        src = path.read_text(encoding="utf-8")
        name = path.relative_to(REPO)
        if len(src.splitlines()) > 400:
            found.append(f"{name}: {len(src.splitlines())} lines")
        for f in ast.walk(ast.parse(src)):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                positional = [a.arg for a in f.args.posonlyargs + f.args.args
                              if a.arg not in ("self", "cls")]
                if f.end_lineno - f.lineno + 1 > 60 or len(positional) > 8:
                    found.append(f"{name}:{f.lineno} {f.name}")
    assert found == []
