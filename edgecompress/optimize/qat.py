"""Quantization-aware training (TF-MOT quantize_apply on the whole model), preserving earlier pruning and
clustering.

Every layer TF-MOT (or quantize_configs) can quantize is annotated and the whole model goes through one
quantize_apply, so TF-MOT's layout transforms fold BatchNormalization into the convolution before it and
place the quantizers where the TFLite converter expects them; layers it cannot handle stay float, reported.

TF-MOT's collaborative schemes keep the zeros (prune-preserving QAT), the shared values
(cluster-preserving QAT), or both, through the fake-quantised fine-tuning and the int8 conversion.
The saved model keeps the quantize wrappers: they carry the ranges the int8 converter needs. A model
trained with a collaborative scheme does not load back (its quantizers rebuild their cluster variables
from the not-yet-loaded weights), so it is saved as the equivalent default-scheme model: the inner kernels
already hold the preserved (pruned, clustered) values, and the quantizer ranges are copied over. That model
is rebuilt from its own config before saving, as a .keras load rebuilds it: a model made by quantize_apply
tracks its kernels twice and writes a .keras file that its own rebuild cannot read.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from edgecompress.models import import_tf_keras, without_build_configs
from edgecompress.setting import Setting
from edgecompress.optimize.base import Applied, Context, Technique
from edgecompress.optimize.cluster import Cluster
from edgecompress.optimize.layers import SkippedLayer, import_tfmot, require_some
from edgecompress.optimize.prune import Prune
from edgecompress.optimize.qat_ranges import calibrate_ranges
from edgecompress.optimize.quantize_configs import qat_configs


def scheme(techniques: frozenset[str]) -> Any:
    tfmot = import_tfmot()
    combine = tfmot.experimental.combine
    if Cluster.name in techniques:
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=Prune.name in techniques)
    if Prune.name in techniques:
        return combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


@dataclass
class QAT(Technique):
    name = "qat"
    order = 40
    settings = (Setting("qat", bool, "Quantization-aware training for a full-integer int8 conversion.", off=False),)
    # Fake-quantised fine-tuning starts from a trained model: TF-MOT's guidance is about a tenth of the rate.
    learning_rate_scale = 0.1
    trains_for = "int8"
    _default_twin: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        return "qat"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> QAT | None:
        return cls() if settings.get("qat") else None

    def validate(self) -> None:
        """No parameters: 8-bit weights and activations, TF-MOT's default scheme."""

    def describe(self) -> str:
        return "quantization-aware training, int8 weights and activations (a tenth of the learning rate)"

    def apply(self, model: Any, ctx: Context) -> Applied:
        tfmot = import_tfmot()
        qkeras = tfmot.quantization.keras
        configs, skipped = qat_configs(model, self.name)
        require_some(model, set(configs), skipped, self.name)
        with qkeras.quantize_scope():
            quantized = _quantize_whole(model, configs, skipped, scheme(ctx.techniques))
            if Prune.name in ctx.techniques or Cluster.name in ctx.techniques:
                self._default_twin = _quantize_whole(model, configs, [], scheme(frozenset()))
        details: dict[str, Any] = {}
        if ctx.data is not None:
            details["ranges_from_float_model"] = calibrate_ranges(quantized, model, ctx.data.feed())
        return Applied(quantized, skipped, details, compressed=set(configs))

    def strip(self, model: Any) -> Any:
        """MODEL as a default-scheme QAT model (see the module note) that a .keras load rebuilds exactly."""
        twin, self._default_twin = self._default_twin, None
        if twin is not None:
            _copy_values(model, twin)
            model = twin
        keras = import_tf_keras()
        with import_tfmot().quantization.keras.quantize_scope():
            fresh = keras.models.model_from_json(json.dumps(without_build_configs(json.loads(model.to_json()))))
        _copy_values(model, fresh)
        return fresh


def _copy_values(source: Any, target: Any) -> None:
    """Assign SOURCE's variables to TARGET's, a model of the same layers, matched by name within each layer."""
    for from_layer, to_layer in zip(source.layers, target.layers):
        trained = {_short(from_layer, w): w for w in from_layer.weights}
        for w in to_layer.weights:
            w.assign(trained[_short(to_layer, w)])


def _annotated(model: Any, configs: dict[str, Any]) -> Any:
    keras = import_tf_keras()
    annotate = import_tfmot().quantization.keras.quantize_annotate_layer

    def clone(layer: Any) -> Any:
        if layer.name not in configs:
            return layer
        return annotate(layer, configs[layer.name]) if configs[layer.name] is not None else annotate(layer)

    return keras.models.clone_model(model, clone_function=clone)


def _quantize_whole(model: Any, configs: dict[str, Any], skipped: list[SkippedLayer], quantize_scheme: Any) -> Any:
    """quantize_apply on the whole annotated model, so TF-MOT's layout transforms see every pattern.

    A layer TF-MOT still refuses there (a config the registry rejects for this instance) is left out of the
    annotation, reported in SKIPPED, and the model annotated again: CONFIGS loses it too.
    """
    qkeras = import_tfmot().quantization.keras
    while True:
        try:
            return qkeras.quantize_apply(_annotated(model, configs), quantize_scheme)
        except (RuntimeError, ValueError) as exc:
            layer = _refused_layer(str(exc), configs)
            if layer is None:
                raise
            del configs[layer]
            reason = str(exc).splitlines()[0]
            skipped.append(SkippedLayer(layer, QAT.name, f"TF-MOT refused it ({reason[:120]}); it stays float"))


def _refused_layer(message: str, configs: dict[str, Any]) -> str | None:
    """The annotated layer an error from quantize_apply names, if any."""
    match = re.search(r"Layer ([^\s:]+):", message)
    if match and match.group(1) in configs:
        return match.group(1)
    return None


def _short(layer: Any, weight: Any) -> str:
    """A variable's name within its layer: without the outer name scope (the inner layer's or the wrapper's,
    which differ between a model made by quantize_apply and its rebuild) and without the layer's name inside
    it (quantize_layer_1_min in the twin)."""
    return weight.name.split("/", 1)[-1].replace(layer.name, "")
