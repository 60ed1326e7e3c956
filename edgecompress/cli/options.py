"""Options and output helpers shared by the commands."""
from __future__ import annotations

import re
from typing import Any, Callable

import click

from edgecompress.errors import UserError
from edgecompress.tables import to_json

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
force_option = click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
unsafe_option = click.option(
    "--unsafe", is_flag=True, help="Allow Lambda layers when loading Keras models (runs code from the file)."
)


# Library errors name settings; a command's flag is its setting with dashes, except those listed here.
FLAG_OF_SETTING: dict[str, str] = {}


def flag(setting: str) -> str:
    return FLAG_OF_SETTING.get(setting, "--" + setting.replace("_", "-"))


def in_flags(error: UserError) -> str:
    """ERROR's message with each setting it names written as the flag that sets it."""
    text = str(error)
    for setting in error.settings:
        text = re.sub(rf"(?<![\w.-]){re.escape(setting)}(?![\w-])", flag(setting), text)
    return text


def emit(result: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print RESULT as JSON (stdout, nothing else) or through RENDER as readable text."""
    click.echo(to_json(result) if as_json else render(result))


def validation_rows(v: Any) -> list[tuple[str, Any]]:
    """A converters Validation as key/value rows: how far the .tflite's outputs are from the reference's."""
    return [("max abs error", v.max_abs_error), ("mean abs error", v.mean_abs_error),
            ("top-1 agreement", f"{v.top1_agreement:.1%}" if v.top1_agreement is not None else None),
            ("validated on", f"{v.samples} {v.data} samples with {v.runtime}")]
