"""The house plan, checked: small modules, imports that follow the data flow, no cycles, a light CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "trusttrace"
MAX_LINES = 400

# The data flow, earliest first: a module may import modules of its own layer or of earlier ones only.
LAYERS: list[set[str]] = [
    {"_version", "_io", "_alloc", "names", "hub", "assets", "progress", "tables", "stats", "layout", "remote", "batching",
     "executors", "integrity", "verify", "errors", "settings", "outputs", "packing", "runlock", "filenames", "unfinished"},  # plumbing that knows no stage
    {"checkpoints"},  # which revisions
    {"models", "model_files", "gguf_cache"},  # loading one
    {"data", "statements", "groups", "corpus", "corpus_builtin"},  # what is fed to models
    {"training", "pretrain", "finetune", "testing"},  # making checkpoints (and test models)
    {"extract", "store", "random_init_cache"},  # activations
    {"linesearch"},  # numerical pieces
    {"logreg", "splits", "probes", "controls", "mutual_info", "mi_engine", "mi_stats", "steering", "correlation", "saved_probes"},  # from activations
    {"analysis", "vectors", "fetcher", "interop"},
    {"resume", "trace", "trace_unit", "live"},  # the trace job
    {"evaluate"},  # the suite
    {"sweep", "sweep_config", "phases", "proxy_sweep", "steer_controls"},  # jobs over traces
    {"report"},  # tables → pages
    {"demo", "demo_plan", "demo_summary"},  # the demo, the plan that sizes it to a time budget, its summary
    {"cli", "__main__"},  # the command, and `python -m trusttrace`
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    """Dotted names (relative to the package) of every module file."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _import_froms(name: str, path: Path) -> list[tuple[list[str], list[str]]]:
    """Every import of a package module in ``name``'s file (anywhere in it): (module path, names imported)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                stem = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "trusttrace":
                stem = node.module.split(".")[1:]
            else:
                continue
            found.append((stem, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".")[1:], []) for a in node.names if a.name.split(".")[0] == "trusttrace"]
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports, as dotted names relative to the package."""
    found = set()
    for stem, names in _import_froms(name, path):
        found.add(".".join(stem))
        found.update(".".join([*stem, n]) for n in names)
    return {m for m in found if m in _modules()} - {name}


def _top(name: str) -> str:
    return name.split(".")[0] if name else ""


def test_no_module_is_over_the_limit():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def test_every_module_has_a_place_in_the_data_flow():
    assert {_top(name) for name in _modules() if name} <= set(RANK), "add new modules to LAYERS"


@pytest.mark.parametrize("name", sorted(n for n in _modules() if n))
def test_imports_follow_the_data_flow(name):
    later = sorted(m for m in _imports(name, _modules()[name]) if RANK[_top(m)] > RANK[_top(name)])
    assert later == [], f"{name} imports later stages {later}"


def test_no_import_cycle_and_nothing_imports_the_package_root():
    graph = {name: _imports(name, path) for name, path in _modules().items() if name}
    assert not [name for name, deps in graph.items() if "" in deps], "import the defining module, not trusttrace"
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if dep.startswith(node + "."):  # a package importing its own submodules is not a cycle
                continue
            assert state.get(dep) != 1, f"import cycle: {' → '.join([*trail, node, dep])}"
            if dep not in state:
                visit(dep, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("reader", ["report", "demo", "cli"])
def test_readers_import_no_job_internals(reader):
    private = [f"{name}: {'.'.join(stem)}.{n}" for name, path in _modules().items() if _top(name) == reader
               for stem, names in _import_froms(name, path) if _top(".".join(stem)) != reader
               for n in names if n.startswith("_") and n != "__version__"]
    assert private == []


@pytest.mark.parametrize("module", ["trusttrace", "trusttrace.cli"])
def test_importing_loads_neither_torch_nor_pandas(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'scipy', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from trusttrace.cli import analysis_cmds
    from trusttrace.phases import PhaseRule

    params = inspect.signature(analysis_cmds.phases).parameters
    assert params["smooth"].default == PhaseRule.smooth and params["min_drop"].default == PhaseRule.min_drop


def test_make_bench_runs_every_benchmark_and_the_readme_lists_it():
    """Each script in benchmarks/ is run by `make bench` (after the install of what it compares against) and
    named in the README's Benchmarks section; the AVX2 wrapper is a tool, listed but not run."""
    root = Path(__file__).parents[1]
    makefile = (root / "Makefile").read_text()
    recipe = makefile[makefile.index("\nbench:"):].split("\n\n")[0]
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Benchmarks"):readme.index("## Tests")]
    scripts = sorted(p.name for p in (root / "benchmarks").glob("*.py") if not p.name.startswith("_"))
    assert len(scripts) >= 15
    run = {name for name in scripts if f"benchmarks/{name}" in recipe}
    assert set(scripts) - run == {"as_avx2_cpu.py"}, "add the missing benchmarks to the Makefile's bench recipe"
    assert [name for name in scripts if f"benchmarks/{name}" not in section] == []
    assert "$(VENV)/.bench-done" in recipe and "'.[peers]'" in makefile  # nnsight, which peers.py compares with
