"""edgecompress: compress Keras models, export them to TFLite, and know how they run on edge devices.

The CLI (edgecompress.cli) is a thin shell over the functions in these modules; nothing at this level
imports TensorFlow, so the runtime-only install (numpy, click, ai-edge-litert) can import the package.
"""
from pathlib import Path as _Path

__version__ = "0.1.0"

# converters/, calibration/ and devices/ sit beside this folder in the repository (the design card's layout)
# and are installed inside it as edgecompress.converters, .calibration, .devices (pyproject's package-dir).
# From a plain checkout, searching the repository root too makes the same absolute imports resolve.
_ROOT = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "converters").is_dir() and (_ROOT / "converters" / "__init__.py").is_file():
    __path__.append(str(_ROOT))  # type: ignore[name-defined]  # noqa: F821 - a package's own __path__
