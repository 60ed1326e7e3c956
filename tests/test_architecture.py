"""The import direction of docs/architecture.md, read from the source with ast: lower layers never import
higher ones, nothing but the CLI imports the CLI, and the runtime side never imports TensorFlow on import."""
from __future__ import annotations

import ast
import tomllib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folders at the top of the repository that install as subpackages: read from pyproject's package-dir.
TOP = {folder: package for package, folder in tomllib.loads(
    (ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].items() if folder != package}
TENSORFLOW = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "keras")

BASE = ("errors", "fileio", "tables", "progress", "quiet", "specs", "tomlfields", "setting", "datasets", "isolation")
RUNTIME_SIDE = ("runtime", "tflite_reader", "shapes", "runner", "compare", "probe_inputs", "macs", "inspect", "evaluate",
                "measure", "generate")
KERAS_LOADING = ("models", "keras_activations", "keras_layers", "text")
# importer -> what it must never import (edgecompress.* prefixes, without "edgecompress.")
FORBIDDEN = {
    **dict.fromkeys(BASE, ("runtime", "models", "calibration", "converters", "optimize", "devices", "benchmark",
                           "pipeline", "cli")),
    **dict.fromkeys(RUNTIME_SIDE, ("converters", "optimize", "devices", "benchmark", "pipeline", "cli")),
    **dict.fromkeys(KERAS_LOADING, ("calibration", "converters", "optimize", "devices", "benchmark", "pipeline",
                                          "cli")),
    "calibration": ("converters", "optimize", "devices", "benchmark", "pipeline", "cli"),
    "converters": ("optimize", "devices", "benchmark", "pipeline", "cli"),
    "optimize": ("converters", "devices", "benchmark", "pipeline", "cli"),
    "devices": ("converters", "optimize", "benchmark", "pipeline", "cli"),
    "benchmark": ("converters", "optimize", "pipeline", "cli"),
    "remote": ("converters", "optimize", "pipeline", "cli"),
    "check": ("converters", "optimize", "pipeline", "cli"),
    "pipeline": ("cli",),
    "demo": ("cli",),
}
NO_TENSORFLOW_ON_IMPORT = RUNTIME_SIDE + BASE + KERAS_LOADING + ("calibration", "converters", "optimize", "devices",
                                                    "benchmark", "remote", "check", "pipeline", "demo", "cli")


def _module(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] in TOP:
        parts = TOP[parts[0]].split(".") + parts[1:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources(root: Path = ROOT) -> dict[str, Path]:
    folders = [root / "edgecompress", *(root / name for name in TOP)]
    return {_module(root, p): p for folder in folders for p in folder.rglob("*.py")}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _imports(sources: dict[str, Path], module: str, top_level_only: bool) -> set[str]:
    """Modules MODULE imports: anywhere in it, or only the statements that run on import (not in functions)."""
    tree = _tree(sources[module])
    nodes: list[ast.AST] = []
    if top_level_only:
        todo = list(tree.body)
        while todo:  # module level, including inside if/try blocks, but not function or class bodies
            node = todo.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try, ast.With)):
                todo += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                         *[s for h in getattr(node, "handlers", []) for s in h.body]]
    else:
        nodes = list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in sources}
    return found


def _layer(module: str) -> str | None:
    """The key of FORBIDDEN that MODULE (edgecompress.x.y) falls under."""
    parts = module.split(".")[1:]
    return parts[0] if parts and parts[0] in FORBIDDEN else None


def _under(module: str, prefix: str) -> bool:
    return module == f"edgecompress.{prefix}" or module.startswith(f"edgecompress.{prefix}.")


def wrong_imports(sources: dict[str, Path]) -> list[str]:
    wrong = []
    for module in sorted(sources):
        layer = _layer(module)
        for imported in sorted(_imports(sources, module, top_level_only=False)):
            if layer and any(_under(imported, p) for p in FORBIDDEN[layer]):
                wrong.append(f"{module} imports {imported}")
            elif _under(imported, "cli") and not _under(module, "cli") and module != "edgecompress.__main__":
                wrong.append(f"{module} imports {imported}: only the CLI imports the CLI")
    return wrong


def _on_import(sources: dict[str, Path], module: str) -> set[str]:
    """Every module that importing MODULE runs, its packages' __init__ included (module-level imports only)."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current not in sources:
            continue
        parts = current.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a package's __init__ runs first
        todo += list(_imports(sources, current, top_level_only=True))
    return seen


def tensorflow_on_import(sources: dict[str, Path]) -> dict[str, list[str]]:
    wrong = {}
    for module in sorted(sources):
        if _layer(module) in NO_TENSORFLOW_ON_IMPORT or _under(module, "cli"):
            heavy = sorted(m for m in _on_import(sources, module) if m.split(".")[0] in TENSORFLOW)
            if heavy:
                wrong[module] = heavy
    return wrong


def test_lower_layers_never_import_higher_ones():
    assert len(_sources()) > 60 and "edgecompress.converters.quantize" in _sources()
    assert wrong_imports(_sources()) == []


def test_the_runtime_side_never_imports_tensorflow_on_import():
    assert tensorflow_on_import(_sources()) == {}


def test_the_checks_see_a_wrong_import(tmp_path):
    """A small tree breaking each rule once: a calibration module importing converters (inside a function),
    the CLI imported from below, and TensorFlow reached on import through a package's __init__."""
    files = {
        "edgecompress/__init__.py": "",
        "edgecompress/runtime.py": "from edgecompress.converters.quantize import MODES\n",
        "edgecompress/cli/__init__.py": "",
        "edgecompress/cli/main.py": "",
        "edgecompress/examples.py": "from edgecompress.cli import main\n",
        "converters/__init__.py": "try:\n    import tensorflow\nexcept ImportError:\n    pass\n",
        "converters/quantize.py": "MODES = ()\n",
        "calibration/__init__.py": "",
        "calibration/sources.py": "def f():\n    from edgecompress.converters import quantize\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    sources = _sources(tmp_path)
    assert wrong_imports(sources) == [
        "edgecompress.calibration.sources imports edgecompress.converters",
        "edgecompress.calibration.sources imports edgecompress.converters.quantize",
        "edgecompress.examples imports edgecompress.cli: only the CLI imports the CLI",
        "edgecompress.examples imports edgecompress.cli.main: only the CLI imports the CLI",
        "edgecompress.runtime imports edgecompress.converters.quantize",
    ]
    assert tensorflow_on_import(sources) == {"edgecompress.converters": ["tensorflow"],
                                             "edgecompress.converters.quantize": ["tensorflow"],
                                             "edgecompress.runtime": ["tensorflow"]}
