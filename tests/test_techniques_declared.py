"""Each technique declares its settings once, in its own module (issue 20): registration cannot be forgotten,
no other package module spells a technique's setting names, and docs/settings.md is the declarations' table."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import edgecompress.optimize as optimize
from edgecompress.optimize.base import REGISTRY, Technique

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("edgecompress", "converters", "calibration", "devices")


def test_every_technique_module_is_registered_by_importing_the_package():
    registered = dict(REGISTRY)
    for info in pkgutil.iter_modules(optimize.__path__):
        importlib.import_module(f"edgecompress.optimize.{info.name}")
    assert REGISTRY == registered, "a technique module is not imported by edgecompress/optimize/__init__.py"
    assert {cls.__name__ for cls in REGISTRY.values()} >= {"Prune", "Cluster", "QAT", "LowRank", "StructuredPrune"}


def _spellings(path: Path) -> dict[str, list[int]]:
    """Names spelled in PATH as data or as a field: string constants, attributes, keyword arguments, parameters."""
    found: dict[str, list[int]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value
        elif isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, (ast.keyword, ast.arg)):
            name = node.arg
        else:
            continue
        found.setdefault(name, []).append(getattr(node, "lineno", 0))
    return found


def test_a_technique_setting_is_spelled_only_in_its_module():
    sources = {path.resolve(): _spellings(path) for folder in PACKAGE_FOLDERS for path in (ROOT / folder).rglob("*.py")}
    for cls in REGISTRY.values():
        own = Path(importlib.import_module(cls.__module__).__file__).resolve()
        for setting in cls.settings:
            for path, names in sources.items():
                if path != own and setting.name in names:
                    raise AssertionError(f"{setting.name} ({cls.__name__}) is spelled in {path}: lines {names[setting.name]}")


def test_every_technique_declares_settings_flags_and_names():
    for cls in REGISTRY.values():
        assert issubclass(cls, Technique) and cls.settings
        first = cls.settings[0]
        on = {s.name: s.off for s in cls.settings} | {first.name: {bool: True, int: 8, float: 0.5, str: None}[first.kind]}
        if first.kind is str:
            on[first.name] = first.choices[0]
        assert cls.from_settings(on) is not None, f"{cls.__name__} is not turned on by {first.name}"
        assert cls.from_settings({s.name: s.off for s in cls.settings}) is None
        assert re.fullmatch(r"[a-z0-9.\-of]+", cls.label(on)), cls.label(on)


def test_docs_settings_table_is_generated_from_the_declarations():
    import settings_doc as doc  # tools/ is on pytest's pythonpath

    assert (ROOT / "docs" / "settings.md").read_text() == doc.render(), "run: python tools/settings_doc.py"
