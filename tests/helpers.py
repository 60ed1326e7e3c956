"""What many tests share: the one-line-error rule and recipe files.

Fixtures live in conftest.py; these are plain functions (tests/ is on pytest's pythonpath: `from helpers import ...`).
"""
from __future__ import annotations

import subprocess
from pathlib import Path


def one_line_error(result: tuple[int, str, str] | subprocess.CompletedProcess, *words: str, code: int = 2,
                   alone: bool = False) -> str:
    """The refusal RESULT (run_cli's (code, out, err), or a finished process) must be: exit CODE, nothing on
    stdout, no traceback, exactly one `error:` line and it last on stderr (after progress lines, unless ALONE),
    holding every one of WORDS. Returns that line."""
    if isinstance(result, subprocess.CompletedProcess):
        result = (result.returncode, result.stdout, result.stderr)
    got, out, err = result
    assert got == code, err
    assert out == "" and "Traceback" not in err, err
    lines = err.rstrip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert not alone or len(lines) == 1, err
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def write_recipe(folder: Path, text: str, name: str = "recipe.toml") -> Path:
    """TEXT written as FOLDER/NAME (the recipe's relative paths are read from FOLDER)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


# The shape of the small language model the lm_folder fixture trains.
LM_SHAPE = dict(seq_len=48, width=32, depth=2, heads=2, ffn=64)
