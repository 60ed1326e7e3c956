"""Does a runtime know a model's operators? The static part of `edgecompress check`, from the file alone.

TFLite's converter writes `min_runtime_version` into the model's metadata: the oldest TensorFlow Lite runtime
that has every (operator, version) pair the model uses. A runtime numbered like TensorFlow (tflite-runtime,
tensorflow) is compared with it directly. LiteRT (ai-edge-litert, LiteRT for Android) restarted its
numbering at 1.0, so its releases map to the TensorFlow runtime they include (LITERT_INCLUDES_TF).
When the model needs more, the operators with the newest versions are the ones to look at; the emulated run
(edgecompress.devices.userland) names the exact one, because the runtime itself refuses it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from edgecompress.errors import UserError
from edgecompress.runtime import check_tflite_file
from edgecompress.tflite_reader import TFLiteModel, parse_model

# Seen here: ai-edge-litert 2.3.0 loads and runs models converted by TensorFlow 2.21 (op versions included).
LITERT_INCLUDES_TF = {"2.3.0": "2.21.0"}
TF_NUMBERED = ("tflite-runtime", "tensorflow")


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.strip().split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def min_runtime_version(data: bytes) -> str | None:
    """The `min_runtime_version` metadata the converter wrote (None for files without it)."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(data, 0)
    for i in range(root.MetadataLength()):
        meta = root.Metadata(i)
        if meta.Name() != b"min_runtime_version":
            continue
        buf = root.Buffers(meta.Buffer())
        raw = bytes(buf.DataAsNumpy()) if buf.DataLength() else data[buf.Offset(): buf.Offset() + buf.Size()]
        return raw.split(b"\0", 1)[0].decode("ascii", errors="replace") or None
    return None


@dataclass(frozen=True)
class ModelOps:
    model: TFLiteModel
    ops: tuple[tuple[str, int], ...]  # (operator, version), unique, sorted by name
    min_runtime_version: str | None


def model_ops(path: str | Path) -> ModelOps:
    data = check_tflite_file(path)
    model = parse_model(data, str(path))
    try:
        needed = min_runtime_version(data)
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, MemoryError):
        raise UserError(f"model {path} has damaged metadata: re-export it with a TFLite converter") from None
    ops = tuple(sorted({(op.name, op.version) for op in model.operators}))
    return ModelOps(model, ops, needed)


def tf_runtime_of(name: str, version: str) -> str | None:
    """The TensorFlow Lite runtime version a runtime release includes (None when not known)."""
    if name in TF_NUMBERED:
        return version
    if "litert" in name.lower():
        return LITERT_INCLUDES_TF.get(version)
    return None


@dataclass(frozen=True)
class StaticVerdict:
    runtime: str  # "NAME VERSION"
    includes_tf: str | None
    needs: str | None
    ok: bool | None  # None: cannot tell from the file
    newest_ops: tuple[tuple[str, int], ...]  # the highest-versioned ops (suspects when not ok)
    message: str


def static_check(ops: ModelOps, runtime_name: str, runtime_version: str) -> StaticVerdict:
    runtime = f"{runtime_name} {runtime_version}"
    includes = tf_runtime_of(runtime_name, runtime_version)
    top = max((v for _, v in ops.ops), default=1)
    newest = tuple(o for o in ops.ops if o[1] == top and top > 1)
    if ops.min_runtime_version is None or includes is None:
        why = "the model has no min_runtime_version" if includes else f"which TensorFlow Lite release {runtime} includes is not known"
        return StaticVerdict(runtime, includes, ops.min_runtime_version, None, newest, f"cannot tell from the file: {why}")
    if version_tuple(ops.min_runtime_version) <= version_tuple(includes):
        return StaticVerdict(runtime, includes, ops.min_runtime_version, True, newest,
                             f"every operator version is known to {runtime} (model needs TFLite {ops.min_runtime_version}, "
                             f"the runtime has {includes})")
    suspects = ", ".join(f"{n} v{v}" for n, v in newest) or "an operator"
    return StaticVerdict(runtime, includes, ops.min_runtime_version, False, newest,
                         f"the model needs TFLite {ops.min_runtime_version} (its min_runtime_version) and {runtime} has "
                         f"{includes}: newest operators {suspects}")
