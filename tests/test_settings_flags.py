"""The library's errors name settings (what a recipe writes); the CLI shows them as its flags."""
from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest

from edgecompress.cli.main import cli
from edgecompress.cli.options import in_flags
from edgecompress.setting import flag_of as flag
from edgecompress.converters.convert import _explain
from edgecompress.converters.quantize import check_options
from edgecompress.errors import UserError
from edgecompress.optimize import TrainSettings, techniques_from_settings
from edgecompress.pipeline.grid import VariantSettings

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [ROOT / "converters", ROOT / "calibration", ROOT / "devices", ROOT / "edgecompress"]


def _message(call) -> str:
    with pytest.raises(UserError) as err:
        call()
    return str(err.value)


def test_library_errors_name_settings_not_flags():
    cases = [
        (lambda: check_options("int8", "float32", False), ["quantize int8", "set calibration"]),
        (lambda: check_options("float16", "int8", True), ["io_type int8 needs quantize int8"]),
        (lambda: TrainSettings(epochs=0).validate(), ["epochs 0"]),
        # a recipe variant's techniques are built the same way: its error is what the report shows
        (lambda: techniques_from_settings(VariantSettings(cluster=1).as_dict()), ["cluster 1 is below 2"]),
    ]
    for call, words in cases:
        message = _message(call)
        assert "--" not in message, message
        for word in words:
            assert word in message, message


def test_a_converter_failure_in_a_recipe_names_the_setting():
    """A recipe has no --allow-flex: the explanation of a TF-ops failure used to tell recipe users to pass it."""
    error = _explain(RuntimeError("... TF Select ops: MatrixInverse\n..."), "none")
    assert isinstance(error, UserError) and "set allow_flex" in str(error) and "--" not in str(error)
    assert in_flags(error).count("--allow-flex") == 1


def test_the_cli_shows_settings_as_flags_word_by_word():
    error = UserError("prune and prune_pattern exclude each other: prunes stay", settings=("prune", "prune_pattern"))
    assert in_flags(error) == "--prune and --prune-pattern exclude each other: prunes stay"
    assert in_flags(UserError("io_type int8 needs quantize int8", settings=("io_type",))) == (
        "--io-type int8 needs quantize int8")  # only the settings the error lists


def _options(command: click.Command) -> set[str]:
    opts = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
    for sub in getattr(command, "commands", {}).values():
        opts |= _options(sub)
    return opts


def _named_settings() -> set[str]:
    """Every setting a library UserError lists (settings=(...) in the source)."""
    found = set()
    for folder in LIBRARY:
        for path in folder.rglob("*.py"):
            if "cli" in path.relative_to(ROOT).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UserError":
                    for kw in node.keywords:
                        if kw.arg == "settings":
                            # every string in the tuple, both branches of a conditional included
                            found |= {c.value for c in ast.walk(kw.value)
                                      if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return found


def test_every_setting_a_library_error_names_is_a_cli_flag():
    settings = _named_settings()
    assert {"calibration", "allow_flex", "epochs", "prune_pattern"} <= settings
    options = _options(cli)
    assert {s for s in settings if flag(s) not in options} == set()
