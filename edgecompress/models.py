"""Loading Keras models: the one place that imports TensorFlow and knows Keras 2 from Keras 3.

TF-MOT works only on tf-keras (Keras 2) models, and TensorFlow 2.21's tf.keras is Keras 3 unless
TF_USE_LEGACY_KERAS=1 is set before TensorFlow is first imported (TF-MOT sets it on its own import, too late
once tf.keras was touched), so import_tf() sets it.
Models are loaded in Keras's safe mode, and their configs are scanned as data for Lambda layers first,
because tf-keras loads a Lambda from a .h5 file even in safe mode.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgecompress.errors import MissingExtraError, UserError
from edgecompress.fileio import require_file
from edgecompress.quiet import quiet_native_stderr
from edgecompress.specs import TensorSpec

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"  # read once, when TensorFlow loads


def import_tf(what: str = "this command") -> ModuleType:
    """Import TensorFlow with tf.keras bound to tf-keras; a clear error when the [full] extra is missing."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        try:
            with quiet_native_stderr():
                import tensorflow as tf  # noqa: F401
                import tf_keras  # noqa: F401

                # Device discovery prints a CUDA error on a CPU-only machine: do it while muted.
                tf.config.list_physical_devices("GPU")
        except ImportError as exc:
            raise MissingExtraError(what, exc.name or "tensorflow") from exc
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
        tf.get_logger().setLevel("ERROR")
    import tensorflow as tf

    return tf


def import_tf_keras(what: str = "this command") -> ModuleType:
    import_tf(what)
    import tf_keras

    from edgecompress import keras_activations
    from edgecompress import keras_layers

    keras_activations.register()  # the activations rebuilt Keras 3 models use, so that their files load
    keras_layers.register()  # the text encoders' position embeddings

    return tf_keras


@dataclass
class LoadedModel:
    """A model ready to call: a Keras model (tf-keras or Keras 3) or a SavedModel signature."""

    path: Path
    flavour: str  # "tf-keras", "keras3" or "savedmodel"
    model: Any  # the Keras model, or the SavedModel's serving function
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def is_keras(self) -> bool:
        return self.flavour != "savedmodel"

    @property
    def is_stateful(self) -> bool:
        """A Keras model with a stateful layer (state carried from batch to batch, as streaming models do)."""
        return any(getattr(layer, "stateful", False) for layer in getattr(self.model, "layers", []))

    @property
    def weight_bytes(self) -> int:
        """Bytes of the model's variables as it computes with them: the fair base for a size ratio (a Keras 2
        .h5 can hold optimizer state too: two thirds of fer's emotion model file is Adam's)."""
        return sum(int(np.prod(v.shape)) * np.dtype(_dtype_name(v.dtype)).itemsize for v in self.model.variables)

    def predict(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run a batch; FEEDS maps input names to arrays. Returns the outputs in order."""
        tf = import_tf()
        if self.flavour == "savedmodel":
            result = self.model(**{k: tf.constant(v) for k, v in feeds.items()})
            return [np.asarray(result[o.name]) for o in self.outputs]
        args = [feeds[s.name] for s in self.inputs]
        out = self.model(args if len(args) > 1 else args[0], training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in outs]


def _dtype_name(dtype: Any) -> str:
    return dtype.name if hasattr(dtype, "name") else str(dtype)  # tf.DType or Keras 3's dtype string


def keras_flavour(path: Path) -> str:
    """Tell a tf-keras file from a Keras 3 one by the version Keras wrote into it."""
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "savedmodel"
        raise UserError(f"{path} is a folder without saved_model.pb: give a .keras or .h5 file or a SavedModel folder")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        version = json.loads(_read_keras_zip(path, "metadata.json")).get("keras_version", "")
    elif suffix in (".h5", ".hdf5"):
        version = _h5_attrs(path).get("keras_version", "")
    else:
        raise UserError(
            f"{path} is not a Keras model file: give a .keras or .h5 file or a SavedModel folder"
        )
    return "keras3" if str(version).startswith("3") else "tf-keras"


def _read_keras_zip(path: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise UserError(f"{path} is not a valid .keras model ({exc}): re-save it with model.save('model.keras')") from exc


def _h5_attrs(path: Path) -> dict[str, Any]:
    import h5py  # comes with TensorFlow

    try:
        with h5py.File(path, "r") as fh:
            attrs = {k: fh.attrs[k] for k in fh.attrs}
    except OSError as exc:
        raise UserError(f"{path} is not a valid .h5 Keras model ({exc}): re-save it with model.save()") from exc
    if "model_config" not in attrs:
        raise UserError(f"{path} holds weights only, not a model: save the whole model with model.save()")
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}


def _model_config(path: Path) -> Any:
    if path.suffix.lower() == ".keras":
        return json.loads(_read_keras_zip(path, "config.json"))
    return json.loads(_h5_attrs(path)["model_config"])


def strided_pointwise_convs(config: Any) -> list[str]:
    """Names of Conv2D layers with a 1x1 kernel and stride 2 anywhere in a Keras model config."""
    found: list[str] = []
    if isinstance(config, dict):
        inner = config.get("config", {})
        if config.get("class_name") == "Conv2D" and isinstance(inner, dict):
            if list(inner.get("kernel_size", [])) == [1, 1] and 2 in list(inner.get("strides", [])):
                found.append(str(inner.get("name", "?")))
        for value in config.values():
            found.extend(strided_pointwise_convs(value))
    elif isinstance(config, list):
        for value in config:
            found.extend(strided_pointwise_convs(value))
    return found


def avoid_onednn_crash(path: Path) -> str | None:
    """Turn TensorFlow's oneDNN kernels off for this process when the model at PATH has a layer they crash on
    in training, before TensorFlow loads; returns a note saying so, or None.

    TF 2.21's oneDNN kernels crash (SIGSEGV, or an abort) training a 1x1 stride-2 Conv2D on an even-sized map:
    fer's emotion CNN and every ResNet shortcut. Off costs 2.3x in training time on a fer-like CNN
    (benchmarks/onednn_training.py), so it is off only for such models. A user's own setting wins.
    """
    if ONEDNN_ENV in os.environ or path.is_dir() or path.suffix.lower() not in KERAS_SUFFIXES:
        return None
    layers = strided_pointwise_convs(_model_config(path))
    if not layers:
        return None
    if "tensorflow" in sys.modules:
        return (f"warning: TensorFlow is already loaded with oneDNN on, which crashes training {layers[0]} "
                f"(1x1, stride 2): set {ONEDNN_ENV}=0 before importing TensorFlow")
    os.environ[ONEDNN_ENV] = "0"
    return (f"oneDNN off for this training: TF 2.21's oneDNN kernels crash training {layers[0]} (1x1 convolution, "
            "stride 2); training runs about 2x slower without them")


def lambda_layers(config: Any) -> list[str]:
    """Names of Lambda layers anywhere in a Keras model config (nested models included)."""
    found: list[str] = []
    if isinstance(config, dict):
        if config.get("class_name") == "Lambda":
            found.append(str(config.get("config", {}).get("name", "?")))
        for value in config.values():
            found.extend(lambda_layers(value))
    elif isinstance(config, list):
        for value in config:
            found.extend(lambda_layers(value))
    return found


def is_quantized_config(config: Any) -> bool:
    """True for a QAT model's config (TF-MOT quantize wrappers, e.g. from `optimize --qat`)."""
    return "QuantizeWrapper" in json.dumps(config)


def _quantize_scope(config: Any) -> contextlib.AbstractContextManager:
    """TF-MOT's quantize wrappers load only inside its scope."""
    if not is_quantized_config(config):
        return contextlib.nullcontext()
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_scope()


def without_build_configs(config: Any) -> Any:
    """CONFIG without the layers' build_config entries.

    TF-MOT 0.8.1's QuantizeLayer and QuantizeWrapper do not mark themselves built in build(), so a .keras
    load that builds them from build_config builds them a second time on the graph call and then holds more
    variables than the file: built only by the graph call, they match it.
    """
    if isinstance(config, dict):
        return {k: without_build_configs(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [without_build_configs(v) for v in config]
    return config


def _load_quantized_keras(tf_keras: Any, path: Path, config: Any) -> Any:
    """A QAT model from a .keras file written by `optimize` (see without_build_configs)."""
    model = tf_keras.models.model_from_json(json.dumps(without_build_configs(config)))
    model.load_weights(path)
    return model


def load_model(path: str | Path, unsafe: bool = False) -> LoadedModel:
    """Load a .keras / .h5 file (tf-keras or Keras 3) or a SavedModel folder, in safe mode unless UNSAFE."""
    p = require_file(path, "model")
    flavour = keras_flavour(p)
    config = _model_config(p) if flavour != "savedmodel" else None
    if config is not None and not unsafe:
        lambdas = lambda_layers(config)
        if lambdas:
            raise UserError(
                f"{p} has Lambda layers ({', '.join(lambdas)}) whose code would run on loading: "
                "set unsafe only if you trust the file", settings=("unsafe",)
            )
    tf = import_tf("loading a Keras model")
    try:
        if flavour == "savedmodel":
            return _load_savedmodel(tf, p)
        if flavour == "keras3":
            import keras

            model = keras.saving.load_model(p, compile=False, safe_mode=not unsafe)
        else:
            tf_keras = import_tf_keras()
            with _quantize_scope(config):
                if p.suffix.lower() == ".keras" and is_quantized_config(config):
                    model = _load_quantized_keras(tf_keras, p, config)  # its Lambda layers were refused above
                else:
                    model = tf_keras.models.load_model(p, compile=False, safe_mode=not unsafe)
    except (ValueError, TypeError, OSError, KeyError) as exc:
        raise UserError(f"cannot load {p} as a {flavour} model: {str(exc).splitlines()[0]}") from exc
    return keras_model(model, p, flavour)


def keras_model(model: Any, path: Path | None = None, flavour: str | None = None) -> LoadedModel:
    """Wrap an in-memory Keras model (tf-keras or Keras 3)."""
    if flavour is None:
        flavour = "tf-keras" if type(model).__module__.startswith("tf_keras") else "keras3"
    names = getattr(model, "input_names", None) or [t.name.split(":")[0] for t in model.inputs]
    inputs = [
        TensorSpec(str(n), tuple(t.shape), np.dtype(t.dtype.name if hasattr(t.dtype, "name") else t.dtype).name)
        for n, t in zip(names, model.inputs)
    ]
    out_names = getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))]
    outputs = [
        TensorSpec(str(n), tuple(t.shape), np.dtype(t.dtype.name if hasattr(t.dtype, "name") else t.dtype).name)
        for n, t in zip(out_names, model.outputs)
    ]
    return LoadedModel(Path(path) if path else Path("<memory>"), flavour, model, inputs, outputs)


def _load_savedmodel(tf: Any, path: Path) -> LoadedModel:
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures.get("serving_default")
    if fn is None:
        raise UserError(f"SavedModel {path} has no 'serving_default' signature: export it with one")
    _, kwargs = fn.structured_input_signature
    inputs = [
        TensorSpec(name, tuple(spec.shape.as_list()), spec.dtype.as_numpy_dtype().dtype.name)
        for name, spec in sorted(kwargs.items())
    ]
    outputs = [
        TensorSpec(name, tuple(spec.shape.as_list()), spec.dtype.as_numpy_dtype().dtype.name)
        for name, spec in sorted(fn.structured_outputs.items())
    ]
    # Keep the loaded object alive with its function: the signature holds only weak references.
    fn._edgecompress_owner = loaded  # type: ignore[attr-defined]
    return LoadedModel(path, "savedmodel", fn, inputs, outputs)
