"""Structured pruning of transformers: whole attention heads and feed-forward neurons are removed.

Unlike magnitude pruning (zeros in a kernel of unchanged shape), the result has smaller weight shapes:
a MultiHeadAttention layer with fewer heads (its query, key, value and output kernels cut along the head
axis) and feed-forward pairs Dense(F) -> Dense(width) with fewer hidden units F, so it does fewer
multiply-accumulates on every runtime. What goes is chosen by a score measured on training data:

- a head's score is how much the loss rises when that head alone is silenced (its slice of the output
  projection set to zero), one head at a time (the ablation of Michel et al., 2019);
- a hidden unit's score is the mean absolute activation it feeds forward times the norm of its row in the
  second Dense kernel: the size of its contribution to the block's output.

Each layer keeps the highest-scoring (1 - FRACTION) of its heads (at least one) or units, the others are
cut; then the model is fine-tuned like after any technique. A feed-forward pair is any Dense whose output
reaches exactly one Dense through parameter-free layers (Dropout, Activation): any model built from
stock Keras layers qualifies, whatever its names.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from edgecompress.errors import UserError
from edgecompress.setting import Setting
from edgecompress.models import import_tf, import_tf_keras
from edgecompress.optimize.base import Applied, Context, Technique
from edgecompress.optimize.data import Labeled
from edgecompress.optimize.distill import ends_in_softmax
from edgecompress.optimize.layers import SkippedLayer

TECHNIQUE = "structured_prune"
SCORE_SAMPLES = 512  # training samples the scores are measured on
_PASS_THROUGH = ("Dropout", "Activation")  # between the two Dense layers of a feed-forward pair


def _outside(value: float, setting: str) -> str | None:
    if 0.0 <= value < 1.0:
        return None
    return f"{setting} {value} is outside [0, 1): give the share of each layer to remove, e.g. 0.5"


def _kept(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices (ascending) of the best (1 - FRACTION) of SCORES, at least one."""
    keep = max(1, int(round(len(scores) * (1.0 - fraction))))
    return np.sort(np.argsort(-scores, kind="stable")[:keep])


def _consumers(layer: Any, members: set[int]) -> list[Any]:
    """The layers of the model (ids MEMBERS) that take LAYER's output, read from the live graph."""
    return [node.outbound_layer for node in layer._outbound_nodes if id(node.outbound_layer) in members]


def ffn_pairs(model: Any) -> dict[str, str]:
    """First Dense -> second Dense of each feed-forward pair in MODEL."""
    keras = import_tf_keras()
    members = {id(layer) for layer in model.layers}
    pairs: dict[str, str] = {}
    for layer in model.layers:
        if type(layer) is not keras.layers.Dense:
            continue
        nxt = _consumers(layer, members)
        while len(nxt) == 1 and type(nxt[0]).__name__ in _PASS_THROUGH:
            nxt = _consumers(nxt[0], members)
        if len(nxt) == 1 and type(nxt[0]) is keras.layers.Dense:
            pairs[layer.name] = nxt[0].name
    return pairs


def _loss(model: Any, data: Labeled, probabilities: bool) -> float:
    keras = import_tf_keras()
    out = model.predict(data.feed(), batch_size=128, verbose=0)
    # One-hot rows are as wide as the output; class indices (one per sample, or per position for a language
    # model) have no class axis.
    labels = np.argmax(data.y, axis=-1) if data.y.shape == out.shape else data.y
    return float(np.mean(keras.losses.sparse_categorical_crossentropy(labels, out, from_logits=not probabilities)))


def head_scores(model: Any, layer: Any, data: Labeled, base_loss: float, probabilities: bool) -> np.ndarray:
    """The loss increase when each head of LAYER (a MultiHeadAttention of MODEL) is silenced alone."""
    dense = layer._output_dense
    kernel = dense.kernel.numpy()  # (heads, value_dim, width)
    scores = np.zeros(kernel.shape[0])
    for head in range(kernel.shape[0]):
        silenced = kernel.copy()
        silenced[head] = 0.0
        dense.kernel.assign(silenced)
        scores[head] = _loss(model, data, probabilities) - base_loss
    dense.kernel.assign(kernel)
    return scores


def unit_scores(model: Any, first: Any, second: Any, data: Labeled) -> np.ndarray:
    """Mean |activation| of each hidden unit of FIRST times the norm of its row in SECOND's kernel."""
    keras = import_tf_keras()
    probe = keras.Model(model.inputs, first.output)
    activations = probe.predict(data.feed(), batch_size=128, verbose=0)
    mean_abs = np.abs(activations.reshape(-1, activations.shape[-1])).mean(axis=0)
    return mean_abs * np.linalg.norm(second.kernel.numpy(), axis=1)


@dataclass
class StructurePlan:
    """What structured pruning keeps, and the scores behind it (the optimize result's details)."""

    heads: dict[str, np.ndarray]  # attention layer -> heads kept
    units: dict[str, np.ndarray]  # first Dense of a pair -> units kept
    pairs: dict[str, str]
    details: dict[str, Any]


def plan(model: Any, heads: float, ffn: float, data: Labeled) -> tuple[StructurePlan, list[SkippedLayer]]:
    """What to keep in each layer, from scores measured on DATA (at most SCORE_SAMPLES of it)."""
    keras = import_tf_keras()
    if data.target.kind != "classes" or data.target.outputs > 1:
        raise UserError("prune_heads and prune_ffn score heads and units by the class loss: they need a "
                        "single-output model with class labels", settings=("prune_heads", "prune_ffn"))
    sample = data.take(np.arange(min(len(data), SCORE_SAMPLES)))
    probabilities = ends_in_softmax(model)
    result = StructurePlan({}, {}, {}, {"heads": {}, "ffn": {}})
    skipped: list[SkippedLayer] = []
    attention = [layer for layer in model.layers if type(layer) is keras.layers.MultiHeadAttention]
    if heads > 0:
        base = _loss(model, sample, probabilities)
        for layer in attention:
            scores = head_scores(model, layer, sample, base, probabilities)
            kept = _kept(scores, heads)
            result.heads[layer.name] = kept
            result.details["heads"][layer.name] = {"kept": kept.tolist(), "of": len(scores),
                                                   "loss_rise": [round(float(s), 5) for s in scores]}
    if ffn > 0:
        pairs = ffn_pairs(model)
        for first, second in pairs.items():
            scores = unit_scores(model, model.get_layer(first), model.get_layer(second), sample)
            kept = _kept(scores, ffn)
            result.units[first], result.pairs[first] = kept, second
            result.details["ffn"][first] = {"kept": len(kept), "of": len(scores), "feeds": second}
    for layer in model.layers:  # the Dense layers left whole (embeddings and norms are not its business)
        if type(layer) is keras.layers.Dense and ffn > 0 and layer.name not in result.units \
                and layer.name not in result.pairs.values():
            skipped.append(SkippedLayer(layer.name, TECHNIQUE, "Dense layer that feeds no single Dense: its "
                                        "outputs are the model's or a residual's, whose width must stay"))
    return result, skipped


def _slice_attention(source: Any, target: Any, kept: np.ndarray) -> None:
    for part in ("_query_dense", "_key_dense", "_value_dense"):
        weights = getattr(source, part).get_weights()  # kernel (width, heads, dim), bias (heads, dim)
        getattr(target, part).set_weights([weights[0][:, kept]] + [b[kept] for b in weights[1:]])
    out = source._output_dense.get_weights()  # kernel (heads, dim, width), bias (width,)
    target._output_dense.set_weights([out[0][kept]] + out[1:])


def shrink(model: Any, chosen: StructurePlan) -> Any:
    """A new model with CHOSEN's heads and units only; MODEL is not changed."""
    keras = import_tf_keras()
    config = copy.deepcopy(model.get_config())
    for entry in config["layers"]:
        cfg, name = entry["config"], entry["config"]["name"]
        if name in chosen.heads:
            cfg["num_heads"] = len(chosen.heads[name])
        elif name in chosen.units:
            cfg["units"] = len(chosen.units[name])
        else:
            continue
        entry.pop("build_config", None)
    rebuilt = keras.Model.from_config(config)
    second_of = {second: first for first, second in chosen.pairs.items()}
    for layer in model.layers:
        target = rebuilt.get_layer(layer.name)
        if layer.name in chosen.heads:
            _slice_attention(layer, target, chosen.heads[layer.name])
        elif layer.name in chosen.units:
            kept = chosen.units[layer.name]
            kernel, *bias = layer.get_weights()
            target.set_weights([kernel[:, kept]] + [b[kept] for b in bias])
        elif layer.name in second_of:
            kernel, *bias = layer.get_weights()
            target.set_weights([kernel[chosen.units[second_of[layer.name]]]] + bias)
        else:
            target.set_weights(layer.get_weights())
    return rebuilt


@dataclass
class StructuredPrune(Technique):
    """prune_heads / prune_ffn = the share of each attention layer's heads / each feed-forward layer's units
    to remove. Applied first: the later techniques then work on the smaller layers."""

    heads: float = 0.0
    ffn: float = 0.0
    name: ClassVar[str] = TECHNIQUE
    order: ClassVar[int] = 5
    settings = (
        Setting("prune_heads", float, "Transformers: remove this share of each attention layer's heads (the least "
                "important, measured on the training data), in [0, 1).", off=0.0, low=0, high=1, high_open=True),
        Setting("prune_ffn", float, "Transformers: remove this share of each feed-forward layer's hidden units, "
                "in [0, 1).", off=0.0, low=0, high=1, high_open=True),
    )

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        parts = [f"heads{values['prune_heads']:g}"] * bool(values.get("prune_heads"))
        return "-".join(parts + [f"ffn{values['prune_ffn']:g}"] * bool(values.get("prune_ffn")))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> StructuredPrune | None:
        heads, ffn = settings.get("prune_heads") or 0.0, settings.get("prune_ffn") or 0.0
        return cls(heads, ffn) if heads or ffn else None

    def validate(self) -> None:
        if (why := _outside(self.heads, "prune_heads")) is not None:
            raise UserError(why, settings=("prune_heads",))
        if (why := _outside(self.ffn, "prune_ffn")) is not None:
            raise UserError(why, settings=("prune_ffn",))

    def describe(self) -> str:
        parts = [f"{self.heads:.0%} of the attention heads"] * bool(self.heads)
        parts += [f"{self.ffn:.0%} of the feed-forward units"] * bool(self.ffn)
        return "remove " + " and ".join(parts) + " (lowest measured importance first)"

    def apply(self, model: Any, ctx: Context) -> Applied:
        keras = import_tf_keras("structured pruning")
        import_tf()
        if not getattr(model, "_is_graph_network", False):
            raise UserError("structured pruning needs a tf-keras Functional or Sequential model: rebuild the "
                            "subclassed model with keras.Model(inputs, outputs)")
        if isinstance(model, keras.Sequential):  # the same layers as a graph, whose config names each input
            model = keras.Model(model.inputs, model.outputs, name=model.name)
        if ctx.data is None:
            raise UserError("structured pruning measures importance on training data: give training data")
        chosen, skipped = plan(model, self.heads, self.ffn, ctx.data)
        if self.heads and not chosen.heads:
            raise UserError("prune_heads found no MultiHeadAttention layer in the model: leave prune_heads at 0",
                            settings=("prune_heads",))
        if self.ffn and not chosen.units:
            raise UserError("prune_ffn found no feed-forward pair (a Dense feeding one Dense) in the model: "
                            "leave prune_ffn at 0", settings=("prune_ffn",))
        return Applied(shrink(model, chosen), skipped, chosen.details)
