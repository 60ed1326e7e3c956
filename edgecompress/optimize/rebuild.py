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


def _tf_keras_config(layer: Any, cls: Any) -> dict[str, Any]:
    config = dict(layer.get_config())
    for key in ("activation", "recurrent_activation"):
        if key in config:
            config[key] = _activation(config[key])
    dtype = config.get("dtype")
    if isinstance(dtype, dict):  # Keras 3 writes a DTypePolicy object
        config["dtype"] = dtype.get("config", {}).get("name", "float32")
    accepted = set(inspect.signature(cls.__init__).parameters) | _BASE_KWARGS
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key.endswith("_initializer"):
            continue
        if key not in accepted and value in (None, False, 0, "", [], {}):
            continue  # a Keras 3-only option left off; any other unknown one is refused by the constructor
        out[key] = _plain(value)
    return out


def _convert_layer(layer: Any, keras2: Any) -> Any:
    cls = getattr(keras2.layers, type(layer).__name__, None)
    if cls is None or not type(layer).__module__.startswith("keras"):
        raise UserError(
            f"Keras 3 layer {layer.name} ({type(layer).__name__}) has no tf-keras equivalent: "
            "TF-MOT needs tf-keras, so save the model with tf-keras (TF_USE_LEGACY_KERAS=1)"
        )
    try:
        return cls(**_tf_keras_config(layer, cls))
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"Keras 3 layer {layer.name} ({type(layer).__name__}) cannot be rebuilt in tf-keras: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


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
                result = new(*args, **_map(node.arguments.kwargs, tensors))
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
        error = max(error, float(np.max(np.abs(a - b))))
        if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
            raise UserError(
                f"the tf-keras rebuild of Keras 3 model {model.name} gives different outputs "
                f"(max difference {error:.3g}): save the model with tf-keras"
            )
    note(f"rebuilt Keras 3 model {model.name} in tf-keras: max abs output difference {error:.3g} "
         f"on {len(sample[0])} random inputs")
    return Rebuilt(rebuilt, error)
