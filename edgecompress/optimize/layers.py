"""Which layers each technique can compress, and wrapping only those.

TF-MOT's whole-model pruning and clustering refuse a model as soon as one layer is unsupported. Here each
layer is judged on its own through TF-MOT's registries, the supported ones are wrapped through clone_model's
clone_function, and the others stay as they are and are reported. (QAT annotates per layer the same way but
quantizes the model as a whole: see quantize_configs.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgecompress.errors import MissingExtraError, UserError
from edgecompress.models import import_tf_keras


@dataclass(frozen=True)
class SkippedLayer:
    """A layer a technique left unchanged, and why."""

    layer: str
    technique: str
    reason: str


# Layer -> None when the technique can wrap it, else the reason it cannot.
Judge = Callable[[Any], "str | None"]


def import_tfmot() -> Any:
    """TF-MOT, imported after TensorFlow is set up for tf-keras (it only works on tf-keras models)."""
    import_tf_keras("model optimization")
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as exc:
        raise MissingExtraError("model optimization", "tensorflow-model-optimization") from exc
    return tfmot


def has_weights(layer: Any) -> bool:
    return bool(layer.trainable_weights)


def _class(layer: Any) -> str:
    return type(layer).__name__


def prune_judge(m_by_n: tuple[int, int] | None) -> Judge:
    import_tfmot()
    from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    keras = import_tf_keras()

    def judge(layer: Any) -> str | None:
        if isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
            return None
        if not PruneRegistry.supports(layer):
            return f"{_class(layer)} is not supported by TF-MOT pruning"
        if not PruneRegistry._is_rnn_layer(layer) and not PruneRegistry._weight_names(layer):
            return f"TF-MOT pruning leaves the weights of {_class(layer)} dense"
        # M:N masks are laid out for TFLite's Dense and Conv2D kernels only (rank 2 or 4).
        if m_by_n and type(layer) not in (keras.layers.Dense, keras.layers.Conv2D):
            return f"{m_by_n[0]}:{m_by_n[1]} structured sparsity applies to Dense and Conv2D kernels only"
        return None

    return judge


def cluster_judge() -> Judge:
    import_tfmot()
    from tensorflow_model_optimization.python.core.clustering.keras import clusterable_layer
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import ClusteringRegistry

    def judge(layer: Any) -> str | None:
        if isinstance(layer, clusterable_layer.ClusterableLayer):
            return None
        if not ClusteringRegistry.supports(layer):
            return f"{_class(layer)} is not supported by TF-MOT clustering"
        if type(layer) in ClusteringRegistry._LAYERS_WEIGHTS_MAP and not ClusteringRegistry._LAYERS_WEIGHTS_MAP[
            type(layer)
        ]:
            return f"TF-MOT clustering leaves the weights of {_class(layer)} unclustered"
        return None

    return judge


def _all_layers(model: Any) -> list[Any]:
    keras = import_tf_keras()
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def plan(model: Any, judge: Judge, technique: str) -> tuple[set[str], list[SkippedLayer]]:
    """Names of the layers to wrap, and the skipped ones.

    Layers without weights have nothing to prune or cluster and are neither wrapped nor reported.
    """
    keras = import_tf_keras()
    chosen: set[str] = set()
    skipped: list[SkippedLayer] = []
    for layer in _all_layers(model):
        if isinstance(layer, keras.Model):
            skipped.append(SkippedLayer(layer.name, technique, "nested models are left as they are"))
            continue
        if not has_weights(layer):
            continue
        reason = judge(layer)
        if reason is None:
            chosen.add(layer.name)
        else:
            skipped.append(SkippedLayer(layer.name, technique, reason))
    require_some(model, chosen, skipped, technique)
    return chosen, skipped


def require_some(model: Any, chosen: set[str], skipped: list[SkippedLayer], technique: str) -> None:
    """Refuse a model where the technique would change no layer that holds weights."""
    if not any(has_weights(layer) and layer.name in chosen for layer in _all_layers(model)):
        raise UserError(
            f"no layer of this model supports {technique} "
            f"(skipped: {', '.join(s.layer for s in skipped) or 'none with weights'}): choose another technique"
        )


def wrap_layers(model: Any, chosen: set[str], wrap: Callable[[Any], Any]) -> Any:
    """A new model whose CHOSEN layers are wrapped; the others are the same layer objects, untouched."""
    keras = import_tf_keras()
    return keras.models.clone_model(
        model, clone_function=lambda layer: wrap(layer) if layer.name in chosen else layer
    )


def independent_copy(model: Any) -> Any:
    """A freshly built copy that shares no weights with MODEL: TF-MOT wrappers modify the layers they wrap.

    Weights are matched by name within each layer, since a stripped wrapper can leave a layer's variables
    in another order than a fresh build (seen with MultiHeadAttention), which TF-MOT's own flat
    get_weights/set_weights copies then reject.
    """
    keras = import_tf_keras()
    copy = keras.models.clone_model(model)
    for source, target in zip(model.layers, copy.layers):
        by_name = {w.name: w for w in source.weights}
        if len(by_name) == len(source.weights) and {w.name for w in target.weights} == set(by_name):
            for w in target.weights:
                w.assign(by_name[w.name])
        else:
            target.set_weights(source.get_weights())
    return copy


def freeze(model: Any, names: set[str]) -> list[str]:
    """Make the named layers that hold weights untrainable; returns the ones frozen.

    A layer an earlier technique pruned or clustered but this one cannot wrap would lose its zeros and
    shared values if fine-tuned freely, so it sits out this stage's fine-tuning.
    """
    frozen = []
    for layer in model.layers:
        if layer.name in names and layer.trainable_weights:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def unfreeze(model: Any, names: list[str]) -> None:
    for layer in model.layers:
        if layer.name in names:
            layer.trainable = True
