"""The runtime-only install (numpy, click, ai-edge-litert, litert-quantizer; what a Raspberry Pi has) inspects,
evaluates and quantizes .tflite files, and those paths never load TensorFlow, even where TensorFlow is installed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization")

# Runs a CLI command in-process, then reports which heavy modules got imported (last stdout line).
PROBE = """
import json, sys
from edgecompress.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
print()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
""" % (HEAVY,)


def _run(python: Path | str, *args: str) -> subprocess.CompletedProcess:
    # Run outside the repository: `python -c` puts the working folder on sys.path, and the source tree there
    # would shadow the installed package being tested.
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, timeout=300, cwd=Path(python).anchor
    )


def _heavy_modules_after(python: Path | str, *cli_args: str) -> tuple[str, list[str]]:
    result = _run(python, "-c", PROBE, *cli_args)
    assert result.returncode == 0, result.stderr
    *output, last = result.stdout.rstrip("\n").split("\n")
    return "\n".join(output), json.loads(last)


def test_tensorflow_cannot_be_imported_there(runtime_venv):
    result = _run(runtime_venv, "-c", "import tensorflow")
    assert result.returncode != 0 and "No module named 'tensorflow'" in result.stderr
    listing = _run(runtime_venv, "-m", "pip", "list", "--format=json")
    names = {p["name"].lower() for p in json.loads(listing.stdout)}
    assert {"numpy", "click", "ai-edge-litert", "litert-quantizer", "edgecompress"} <= names
    assert not names & {"tensorflow", "tensorflow-cpu", "tf-keras", "keras"}


def test_inspect_cli_in_the_runtime_venv(runtime_venv, int8_tflite):
    cli = Path(runtime_venv).parent / "edgecompress"
    result = _run(cli, "inspect", str(int8_tflite), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["integer_model"] is True
    assert {o["name"] for o in data["operators"]} == {"CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"}
    assert data["inputs"][0]["dtype"] == "int8" and data["macs_total"] > 370_000
    table = _run(cli, "inspect", str(int8_tflite))
    assert table.returncode == 0 and "Weight tensors" in table.stdout
    bad = _run(cli, "inspect", str(int8_tflite.parent / "nope.tflite"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("where", ["runtime venv", "full venv"])
def test_inspect_loads_no_tensorflow(where, runtime_venv, float_tflite):
    """In the full venv TensorFlow is importable, so this catches any import of it on the inspect path."""
    python = runtime_venv if where == "runtime venv" else sys.executable
    output, heavy = _heavy_modules_after(python, "inspect", str(float_tflite), "--json")
    assert json.loads(output)["parameter_count"] > 70_000
    assert heavy == []


@pytest.mark.parametrize("where", ["runtime venv", "full venv"])
def test_evaluate_tflite_without_tensorflow(where, runtime_venv, float_tflite, test_npz):
    python = runtime_venv if where == "runtime venv" else sys.executable
    output, heavy = _heavy_modules_after(python, "evaluate", str(float_tflite), "--data", str(test_npz), "--json")
    result = json.loads(output)
    assert result["samples"] == len(np.load(test_npz)["y"])
    assert result["accuracy"] > 0.9
    assert heavy == []


@pytest.mark.parametrize("where", ["runtime venv", "full venv"])
def test_quantize_int4_without_tensorflow(where, runtime_venv, float_tflite, test_npz, tmp_path):
    """With calibration samples, auto measures every rounding algorithm, gptq's Hessians included: all of it on
    the runtime and numpy."""
    python = runtime_venv if where == "runtime venv" else sys.executable
    out = tmp_path / "int4.tflite"
    output, heavy = _heavy_modules_after(python, "quantize", str(float_tflite), "-o", str(out), "--quantize", "int4",
                                         "--calibration", str(test_npz), "--json")
    result = json.loads(output)
    assert result["ratio"] > 6 and result["validation"]["top1_agreement"] >= 0.97
    assert len(result["algorithm_choice"]["trials"]) == 4
    assert heavy == []
    evaluated, _ = _heavy_modules_after(python, "evaluate", str(out), "--data", str(test_npz), "--json")
    assert json.loads(evaluated)["accuracy"] > 0.95
