"""The package's shape: layers import only downward, no import cycles, no private names
across modules, a lazy public API, and a command line that starts without torch."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import mlneurons

PACKAGE = Path(mlneurons.__file__).parent
LAYERS = {  # bottom up; a module may import its own layer or any lower one
    "errors": 0,
    "cache": 0,
    "provenance": 0,
    "results": 0,
    "config": 0,
    "world": 0,
    "data": 1,
    "models": 1,
    "stats": 2,
    "evaluation": 3,
    "methods": 4,
    "interfaces": 5,
}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text())
    return found


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """Every ``mlneurons`` import, also inside functions: (module, names imported from it)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlneurons"):
            out.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("mlneurons")]
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_layers_import_only_downward_and_every_module_has_a_layer():
    modules = _modules()
    upward = []
    for name, tree in modules.items():
        if name in ("mlneurons", "mlneurons.__main__"):
            continue
        assert _layer(name) is not None, f"{name} is in no layer"
        for target, _ in _imports(tree):
            if target != "mlneurons" and _layer(target) > _layer(name):
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_no_import_cycles():
    modules = _modules()
    graph = {
        name: {t for t, _ in _imports(tree) if t in modules and t != "mlneurons"}
        for name, tree in modules.items()
    }
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, " -> ".join([*path[path.index(node) :], node])
        if node in done:
            return
        for child in graph[node]:
            visit(child, [*path, node])
        done.add(node)

    for name in graph:
        visit(name, [])


def test_no_module_imports_a_private_name_of_another():
    private = [
        f"{name}: from {target} import {alias}"
        for name, tree in _modules().items()
        for target, aliases in _imports(tree)
        for alias in aliases
        if alias.startswith("_")
    ]
    assert private == []


def test_every_public_name_resolves_lazily():
    for name in mlneurons.__all__:
        value = getattr(mlneurons, name)
        assert value is not None, name
    defined = {
        "ProbeResult": "mlneurons.methods.probing.result",
        "HookStats": "mlneurons.stats.collector",
        "LapeConfig": "mlneurons.interfaces.commands.lape",
        "Config": "mlneurons.config",
    }
    for name, module in defined.items():
        assert getattr(mlneurons, name) is getattr(importlib.import_module(module), name)
    assert mlneurons.lape.select is importlib.import_module("mlneurons.methods.lape").select
    for name in ("probe", "fact_neurons", "trace", "evaluate_lrp2", "language_vectors", "FactSet"):
        assert name in mlneurons.__all__ and name in dir(mlneurons)


def test_import_and_help_do_not_import_torch():
    code = (
        "import sys, mlneurons\n"
        "from mlneurons.interfaces.cli import main\n"
        "for command in (None, 'lape', 'probe', 'lrp2'):\n"
        "    main(['--help'] if command is None else [command, '--help'])\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:3]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage: mlneurons" in done.stdout
