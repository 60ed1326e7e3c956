"""The reference architectures behind the published device latencies, as cached .tflite files.

Device estimates compare host timings of these architectures with their published on-device latencies
(each profile's references name their source), so each one is rebuilt here with random weights (timing does not depend on the weights)
and converted to the precisions that some profile cites. Building needs TensorFlow, which the benchmark
process must never import: `build()` runs `python -m edgecompress.devices.reference_builders NAME:PRECISION`
in a child process, one per architecture, and on a runtime-only install says that calibration needs
`edgecompress[full]` on the host. The builders themselves live in reference_builders.py (the child).

Cache: $EDGECOMPRESS_CACHE/references/ (default ~/.cache/edgecompress/references/).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from edgecompress.errors import UserError
from edgecompress.progress import bar

PRECISIONS = ("float", "int8")


class CalibrationUnavailable(UserError):
    """The host cannot build the references (no TensorFlow): the benchmark still measures, without estimates."""


@dataclass(frozen=True)
class ReferenceModel:
    name: str
    title: str
    input_size: int  # image side, or the sequence length of a text model
    builder: str  # name of a builder in reference_builders.py, which runs only in a child with TensorFlow
    # Multiply-accumulates as `edgecompress inspect` counts them on the built .tflite (float and int8 alike):
    # a feature of the estimate (estimate.py), recorded so that estimating needs no reference file.
    macs: int
    # Large models take minutes to convert (170-220 MB each): calibrate.py can leave them out (--skip-large).
    large: bool = False


REFERENCE_MODELS: dict[str, ReferenceModel] = {
    m.name: m
    for m in (
        ReferenceModel("mobilenet_v1", "MobileNet v1 1.0/224", 224, "_mobilenet_v1", 568_742_376),
        ReferenceModel("mobilenet_v2", "MobileNet v2 1.0/224", 224, "_mobilenet_v2", 300_992_936),
        ReferenceModel("mobilenet_v3_large", "MobileNet v3 Large 1.0/224", 224, "_mobilenet_v3_large", 219_432_920),
        ReferenceModel("mobilenet_v3_small", "MobileNet v3 Small 1.0/224", 224, "_mobilenet_v3_small", 57_955_448),
        ReferenceModel("squeezenet", "SqueezeNet 1.0 (224)", 224, "_squeezenet", 777_749_872),
        ReferenceModel("nasnet_mobile", "NASNet mobile (224)", 224, "_nasnet_mobile", 569_134_259),
        ReferenceModel("inception_v3", "Inception v3 (299)", 299, "_inception_v3", 5_715_930_184, large=True),
        ReferenceModel("inception_v4", "Inception V4 (299)", 299, "_inception_v4", 12_258_977_992, large=True),
        ReferenceModel("inception_resnet_v2", "Inception-ResNet-V2 (299)", 299, "_inception_resnet_v2", 13_168_309_960, large=True),
        # Transformers (text): input_size is the sequence length of token ids.
        ReferenceModel("mobilebert", "MobileBERT (seq 128)", 128, "_mobilebert_128", 2_698_184_192),
        ReferenceModel("mobilebert_squad", "MobileBERT SQuAD (seq 384)", 384, "_mobilebert_squad_384", 8_707_571_712),
    )
}


def cache_root() -> Path:
    """$EDGECOMPRESS_CACHE, else ~/.cache/edgecompress."""
    env = os.environ.get("EDGECOMPRESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgecompress"


def reference_path(model: str, precision: str) -> Path:
    return cache_root() / "references" / f"{model}-{precision}.tflite"


def check_model_name(model: str, where: str) -> None:
    if model not in REFERENCE_MODELS:
        raise UserError(f"{where}: unknown reference model {model!r}; known: {', '.join(REFERENCE_MODELS)}")


def missing(needed: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted({(m, p) for m, p in needed if not reference_path(m, p).exists()})


def build(needed: Iterable[tuple[str, str]]) -> dict[str, float]:
    """Build the missing (model, precision) references, one child process per model; returns seconds per model."""
    todo: dict[str, list[str]] = {}
    for model, precision in missing(needed):
        todo.setdefault(model, []).append(precision)
    if not todo:
        return {}
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf_keras") is None:
        raise CalibrationUnavailable(
            "device estimates need the reference models built on the host, which needs TensorFlow: "
            "pip install 'edgecompress[full]' on this machine (the benchmark itself runs without it)"
        )
    seconds: dict[str, float] = {}
    with bar(list(todo.items()), label="building reference models (once)") as items:
        for model, precisions in items:
            start = time.perf_counter()
            args = [sys.executable, "-m", "edgecompress.devices.reference_builders"]
            proc = subprocess.run(args + [f"{model}:{p}" for p in precisions], capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise UserError(f"building reference {model} failed: {tail}")
            seconds[model] = time.perf_counter() - start
    return seconds
