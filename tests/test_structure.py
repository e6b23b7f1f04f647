"""The house plan, checked: layer packages, imports that follow the data flow, no cycles, no private name
across packages, a light CLI, and docs/architecture.md's module table in step with the code."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "trusttrace"
MAX_LINES = 400

# The data flow, earliest first: one set of packages (and top-level modules) per layer. A module may import
# modules of its own layer or of earlier ones only; docs/architecture.md lists them in this order.
LAYERS: list[set[str]] = [
    {"_version", "core"},  # plumbing that knows no stage
    {"runs"},  # run folders: paths, records, settings, what a folder still has to do
    {"models"},  # which checkpoints, where their files are, loading one
    {"data"},  # what is fed to models
    {"training", "testing"},  # making checkpoints (and the tests' tiny models)
    {"activations"},  # last-token activations, stored
    {"analysis"},  # probes, mutual information, phases: from activations
    {"steering"},  # vectors: built, applied, converted
    {"trace"},  # the trace job
    {"evaluate"},  # the suite
    {"steer"},  # the steer job
    {"report"},  # tables → pages
    {"demo"},  # every stage on a model pre-trained here
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


def test_long_modules_are_named():
    """Over MAX_LINES lines a module is worth a second look (a warning): the concept decides where code lives."""
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    if long:
        warnings.warn(f"modules over {MAX_LINES} lines: {long}", stacklevel=1)


def test_every_package_is_a_face_with_a_docstring():
    """A layer's ``__init__.py`` says what the package holds and imports nothing, so a listing reads as the
    plan and importing one module does not load its neighbours."""
    for package in sorted(RANK):
        init = SRC / package / "__init__.py"
        if not init.exists() or package in ("report", "cli", "evaluate"):
            continue
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{package}/__init__.py needs a docstring: what the package holds"
        assert all(isinstance(node, ast.Expr) for node in tree.body), f"{package}/__init__.py defines or imports"


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


@pytest.mark.parametrize("package", sorted(RANK))
def test_no_private_name_crosses_a_package(package):
    """Another package's ``_private`` modules and names stay its own (``_version`` is the build's version file)."""
    private = [f"{name}: {'.'.join(stem)} {n}" for name, path in _modules().items() if _top(name) == package
               for stem, names in _import_froms(name, path) if stem and _top(".".join(stem)) != package
               for n in [*stem[1:], *names] if n.startswith("_") and n != "__version__"]
    assert private == []


@pytest.mark.parametrize("module", ["trusttrace", "trusttrace.cli"])
def test_importing_loads_neither_torch_nor_pandas(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'scipy', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from trusttrace.analysis.phases import PhaseRule
    from trusttrace.cli import analysis_cmds

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


def _documented_modules() -> list[tuple[str, str]]:
    """(package or "top level", module) of each row of docs/architecture.md's module table, in order."""
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    section = doc[doc.index("## Packages and modules, by layer"):doc.index("## Run folders")]
    rows, package = [], ""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[1].startswith("`"):
            continue
        package = cells[0].strip("`/") or package
        rows.append((package, cells[1].strip("`")))
    return rows


def _code_modules() -> set[tuple[str, str]]:
    """What the table must list: every module, and each package ``__init__`` that defines something."""
    found = set()
    for name, path in _modules().items():
        parts = name.split(".")
        if not name:
            continue
        if len(parts) == 1 and path.name != "__init__.py":
            found.add(("top level", name))
        elif path.name == "__init__.py":
            if not all(isinstance(node, ast.Expr) for node in ast.parse(path.read_text()).body):
                found.add((name, "__init__"))
        else:
            found.add((parts[0], ".".join(parts[1:])))
    return found


def test_the_architecture_page_lists_every_module_in_layer_order():
    rows = _documented_modules()
    assert len(rows) == len(set(rows)), "a module is listed twice"
    assert set(rows) == _code_modules(), (f"listed but gone: {sorted(set(rows) - _code_modules())}; "
                                          f"not listed: {sorted(_code_modules() - set(rows))}")
    ranks = [RANK[module if package == "top level" else package] for package, module in rows]
    assert ranks == sorted(ranks), "docs/architecture.md lists the packages out of the layers' order"
