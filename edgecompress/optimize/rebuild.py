"""Keras 3 models rebuilt as tf-keras models, since TF-MOT 0.8.1 works only on tf-keras: given a Keras 3 model,
quantize_model and prune_low_magnitude raise ValueError and cluster_weights returns None.

Each built-in layer is re-created from its config as the tf-keras layer of the same class, called on the
same graph, given the same weights; keras.ops arithmetic becomes Rescaling or merge layers, and activations
tf-keras lacks come from edgecompress.keras_activations. The rebuilt model must give the same outputs as the
original on random inputs, or it is refused. Initializers are dropped from the configs: the weights are copied.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecompress.errors import UserError
from edgecompress.keras_activations import KERAS3_NAMES
from edgecompress.models import import_tf_keras
from edgecompress.progress import note

# Base-layer keyword arguments every tf-keras layer accepts besides its own.
_BASE_KWARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "input_dim"}


def _plain(value: Any) -> Any:
    """A Keras 3 serialized object as tf-keras reads it: {class_name, config} without module fields."""
    if isinstance(value, dict) and "class_name" in value:
        return {"class_name": value["class_name"], "config": _plain(value.get("config", {}))}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _activation(value: Any) -> Any:
    """A Keras 3 activation name as tf-keras knows it (edgecompress.keras_activations for the ones it lacks)."""
    return KERAS3_NAMES.get(value, value) if isinstance(value, str) else value


# Keras 3 names for arguments tf-keras spells otherwise.
_RENAMED = {"negative_slope": "alpha"}
# Keras 3 resolves data_format=None to the global image format, channels_last here; tf-keras layers without the
# argument compute channels_last.
_IMPLIED = {"data_format": "channels_last"}
# Config keys holding a whole layer (wrappers, RNN cells), and the attributes of the Keras 3 layer that hold it.
_NESTED = {"layer": ("layer", "forward_layer"), "backward_layer": ("backward_layer",), "cell": ("cell",)}


def _keras3_default(layer: Any, key: str) -> Any:
    for cls in type(layer).__mro__:
        parameter = inspect.signature(cls.__init__).parameters.get(key) if "__init__" in vars(cls) else None
        if parameter is not None:
            return parameter.default
    return inspect.Parameter.empty


def _same(value: Any, default: Any) -> bool:
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # arrays
        return False


def _nested(layer: Any, key: str, keras2: Any) -> Any:
    """The tf-keras rebuild of the layer a wrapper's (or an RNN's) config holds under KEY."""
    for attribute in _NESTED[key]:
        inner = getattr(layer, attribute, None)
        if inner is not None:
            return _convert_layer(inner, keras2)
    raise UserError(f"Keras 3 layer {layer.name} ({type(layer).__name__}) holds a {key} that cannot be found to "
                    "rebuild: save the model with tf-keras")


def _tf_keras_config(layer: Any, cls: Any, keras2: Any) -> dict[str, Any]:
    """LAYER's config as CLS (its tf-keras class) takes it. An argument tf-keras lacks is left off when Keras 3
    has it at the value that computes what tf-keras computes without it, translated when tf-keras names it
    otherwise, and refused in one line when it would change the computation."""
    config = dict(layer.get_config())
    if "cells" in config:  # StackedRNNCells
        config["cells"] = [_convert_layer(cell, keras2) for cell in layer.cells]
    for key in _NESTED:
        if isinstance(config.get(key), dict):
            config[key] = _nested(layer, key, keras2)
    for key in ("activation", "recurrent_activation"):
        if key in config:
            config[key] = _activation(config[key])
    dtype = config.get("dtype")
    if isinstance(dtype, dict):  # Keras 3 writes a DTypePolicy object
        config["dtype"] = dtype.get("config", {}).get("name", "float32")
    if config.get("output_mode") == "int" and "vocabulary_dtype" in config:  # tf-keras lookups give ids as dtype
        config["dtype"] = config["vocabulary_dtype"]
    accepted = set(inspect.signature(cls.__init__).parameters) | _BASE_KWARGS
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key.endswith("_initializer"):
            continue
        if key in accepted:
            out[key] = _plain(value)
        elif _RENAMED.get(key) in accepted:
            out[_RENAMED[key]] = _plain(value)
        elif (default := _keras3_default(layer, key)) is inspect.Parameter.empty:
            continue  # not an argument in Keras 3 either: state get_config reports (IntegerLookup's vocabulary_size)
        elif not (_same(value, None) or value is False or _same(value, _IMPLIED.get(key, None)) or _same(value, default)):
            raise UserError(
                f"Keras 3 layer {layer.name} ({type(layer).__name__}) sets {key}={value!r}, which tf-keras's "
                f"{cls.__name__} lacks: TF-MOT needs tf-keras, so leave {key} at its default or save the model with "
                "tf-keras (TF_USE_LEGACY_KERAS=1)")
    return out


def _convert_layer(layer: Any, keras2: Any) -> Any:
    cls = getattr(keras2.layers, type(layer).__name__, None)
    if cls is None or not type(layer).__module__.startswith("keras"):
        raise UserError(
            f"Keras 3 layer {layer.name} ({type(layer).__name__}) has no tf-keras equivalent: "
            "TF-MOT needs tf-keras, so save the model with tf-keras (TF_USE_LEGACY_KERAS=1)"
        )
    config = _tf_keras_config(layer, cls, keras2)
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"Keras 3 layer {layer.name} ({type(layer).__name__}) cannot be rebuilt in tf-keras: {_said(exc)}"
        ) from exc


def _said(exc: BaseException) -> str:
    """EXC's message on one line (tf-keras raises some with a tuple of arguments)."""
    said = " ".join(str(a) for a in exc.args) if exc.args else type(exc).__name__
    return said.splitlines()[0] if said.strip() else type(exc).__name__


# keras.ops arithmetic in a Keras 3 graph (x + 3.0 in MobileNetV3's hard_sigmoid) -> tf-keras layers:
# with a number, Rescaling (x * scale + offset), which TF-MOT and TFLite quantize; with two tensors, the merge layer.
_SCALAR_OPS = {
    "Add": lambda c: (1.0, c),
    "Subtract": lambda c: (1.0, -c),
    "Multiply": lambda c: (c, 0.0),
    "Divide": lambda c: (1.0 / c, 0.0),
    "TrueDivide": lambda c: (1.0 / c, 0.0),
}
_NUMBER_FIRST = {"Subtract": lambda c: (-1.0, c)}  # c - x; c * x and c + x are as above
_TENSOR_OPS = {"Add": "Add", "Subtract": "Subtract", "Multiply": "Multiply"}


def _convert_op(op: Any, args: tuple[Any, ...], keras2: Any) -> tuple[Any, Any]:
    """The tf-keras layer for a keras.ops call in the graph, and what to call it on."""
    kind = type(op).__name__
    numbers = [a for a in args if isinstance(a, (int, float))]
    tensors = [a for a in args if not isinstance(a, (int, float))]
    if len(args) == 2 and len(numbers) == 1 and kind in _SCALAR_OPS:
        rule = _NUMBER_FIRST.get(kind, _SCALAR_OPS[kind]) if isinstance(args[0], (int, float)) else _SCALAR_OPS[kind]
        if kind in ("Divide", "TrueDivide") and isinstance(args[0], (int, float)):
            rule = None  # c / x is not affine
        if rule is not None:
            scale, offset = rule(float(numbers[0]))
            return keras2.layers.Rescaling(scale, offset, name=op.name), tensors[0]
    if len(args) == 2 and not numbers and kind in _TENSOR_OPS:
        return getattr(keras2.layers, _TENSOR_OPS[kind])(name=op.name), list(tensors)
    raise UserError(
        f"Keras 3 operation {op.name} ({kind}) has no tf-keras layer to rebuild it with: "
        "use layers (e.g. Add, Multiply, Rescaling) instead of keras.ops in the model"
    )


def _map(value: Any, tensors: dict[int, Any]) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, tensors) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, tensors) for k, v in value.items()}
    return tensors.get(id(value), value)


def _rebuild_graph(model: Any, keras3: Any, keras2: Any) -> tuple[Any, list[tuple[Any, Any]]]:
    tensors: dict[int, Any] = {}
    inputs = []
    for t in model.inputs:
        new = keras2.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name)
        tensors[id(t)] = new
        inputs.append(new)
    pairs: list[tuple[Any, Any]] = []
    if isinstance(model, keras3.Sequential):
        x = inputs[0]
        for layer in model.layers:
            new = _convert_layer(layer, keras2)
            x = new(x)
            pairs.append((layer, new))
        return keras2.Model(inputs, x, name=model.name), pairs
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if isinstance(op, keras3.layers.InputLayer):
                continue
            args = _map(node.arguments.args, tensors)
            if isinstance(op, keras3.layers.Layer):
                new = _convert_layer(op, keras2)
                # Keras 3 records training=True on the nodes of its random augmentation layers; the tf-keras
                # model must follow the training flag it is called with (inference: identity, as in Keras 3).
                kwargs = {k: v for k, v in node.arguments.kwargs.items() if k != "training"}
                try:
                    result = new(*args, **_map(kwargs, tensors))
                except (TypeError, ValueError) as exc:
                    raise UserError(f"Keras 3 layer {op.name} ({type(op).__name__}) cannot be rebuilt in tf-keras: "
                                    f"{_said(exc)}") from exc
            else:
                new, inputs_of_op = _convert_op(op, args, keras2)
                result = new(inputs_of_op)
            outs = result if isinstance(result, (list, tuple)) else [result]
            for old, fresh in zip(node.outputs, outs):
                tensors[id(old)] = fresh
            if isinstance(op, keras3.layers.Layer):
                pairs.append((op, new))
    outputs = _map(list(model.outputs), tensors)
    return keras2.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name), pairs


def _copy_weights(pairs: list[tuple[Any, Any]]) -> None:
    for old, new in pairs:
        weights = old.get_weights()
        shapes = [w.shape for w in weights]
        if shapes != [tuple(w.shape) for w in new.weights]:
            raise UserError(
                f"Keras 3 layer {old.name} ({type(old).__name__}) holds weights {shapes} that its tf-keras "
                "rebuild does not: save the model with tf-keras"
            )
        new.set_weights(weights)


def _sample(model: Any, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.random((2, *(4 if d is None else d for d in t.shape[1:]))).astype(np.dtype(t.dtype))
        for t in model.inputs
    ]


def _as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


@dataclass(frozen=True)
class Rebuilt:
    """The tf-keras twin of a Keras 3 model and the largest output difference seen between the two."""

    model: Any
    max_abs_error: float


def as_tf_keras(model: Any) -> Rebuilt:
    """The tf-keras twin of a Keras 3 Sequential or Functional model, with identical outputs."""
    import keras as keras3

    keras2 = import_tf_keras("rebuilding a Keras 3 model")
    if not isinstance(model, keras3.Sequential) and not hasattr(model, "_nodes_by_depth"):
        raise UserError(
            f"Keras 3 model {model.name} is subclassed: "
            "only Sequential and Functional models can be rebuilt in tf-keras"
        )
    rebuilt, pairs = _rebuild_graph(model, keras3, keras2)
    _copy_weights(pairs)
    sample = _sample(model)
    feed = sample if len(sample) > 1 else sample[0]
    error = 0.0
    for a, b in zip(_as_list(model(feed, training=False)), _as_list(rebuilt(feed, training=False))):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:  # Keras 3's RandomCrop passes images through at inference, tf-keras's crops them
            raise UserError(f"the tf-keras rebuild of Keras 3 model {model.name} gives outputs of shape {b.shape} "
                            f"where the model gives {a.shape}: save the model with tf-keras")
        error = max(error, float(np.max(np.abs(a - b))))
        if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
            raise UserError(
                f"the tf-keras rebuild of Keras 3 model {model.name} gives different outputs "
                f"(max difference {error:.3g}): save the model with tf-keras"
            )
    note(f"rebuilt Keras 3 model {model.name} in tf-keras: max abs output difference {error:.3g} "
         f"on {len(sample[0])} random inputs")
    return Rebuilt(rebuilt, error)
