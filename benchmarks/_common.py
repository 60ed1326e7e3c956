"""What the benchmark scripts share: the repository's tools/, the bundled digits as data files,
and the figures' formats. A script run as `python benchmarks/NAME.py` imports it as `_common`."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> ModuleType:
    """The repository's tools/NAME.py (real_models, loopback_sshd: what builds or serves what is measured)."""
    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))
    return importlib.import_module(name)


def digits_files(folder: Path, digits: Any = None) -> tuple[Path, Path, Path]:
    """The bundled digits' train, val and test splits as FOLDER/{train,val,test}.npz (x, y)."""
    from edgecompress.datasets import load_digits

    digits = digits or load_digits(seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    return (digits.train.save_npz(folder / "train.npz"), digits.val.save_npz(folder / "val.npz"),
            digits.test.save_npz(folder / "test.npz"))


def pct(share: float | None) -> str:
    """A share as a whole percentage, '-' when there is none."""
    return "-" if share is None else f"{100 * share:.0f}%"


def signed_pct(error: float | None) -> str:
    """A relative error as a signed whole percentage (+33%), '-' when there is none."""
    return "-" if error is None else f"{100 * error:+.0f}%"
