"""Quantization-aware training (TF-MOT quantize_apply), preserving earlier pruning and clustering.

TF-MOT's collaborative schemes keep the zeros (prune-preserving QAT), the shared values
(cluster-preserving QAT), or both, through the fake-quantised fine-tuning and the int8 conversion.
The saved model keeps the quantize wrappers: they carry the ranges the int8 converter needs. A model
trained with a collaborative scheme does not load back (its quantizers rebuild their cluster variables
from the not-yet-loaded weights), so it is saved as the equivalent default-scheme model: the inner kernels
already hold the preserved (pruned, clustered) values, and the quantizer ranges are copied over.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from edgecompress.optimize.base import Applied, Context, Technique, register
from edgecompress.optimize.layers import import_tfmot, plan, qat_judge, wrap_layers


def scheme(techniques: frozenset[str]) -> Any:
    tfmot = import_tfmot()
    combine = tfmot.experimental.combine
    if "cluster" in techniques:
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity="prune" in techniques)
    if "prune" in techniques:
        return combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


@register
@dataclass
class QAT(Technique):
    name = "qat"
    order = 40
    _default_twin: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> QAT | None:
        return cls() if settings.get("qat") else None

    def validate(self) -> None:
        """No parameters: 8-bit weights and activations, TF-MOT's default scheme."""

    def describe(self) -> str:
        return "quantization-aware training, int8 weights and activations"

    def apply(self, model: Any, ctx: Context) -> Applied:
        tfmot = import_tfmot()
        qkeras = tfmot.quantization.keras
        chosen, skipped = plan(model, qat_judge(), self.name, weightless_matter=True)
        annotated = wrap_layers(model, chosen, qkeras.quantize_annotate_layer)
        with qkeras.quantize_scope():
            quantized = qkeras.quantize_apply(annotated, scheme(ctx.techniques))
            if "prune" in ctx.techniques or "cluster" in ctx.techniques:
                self._default_twin = qkeras.quantize_apply(annotated, scheme(frozenset()))
        return Applied(quantized, skipped, compressed=chosen)

    def strip(self, model: Any) -> Any:
        """MODEL as a default-scheme QAT model with the same weights and ranges (see the module note)."""
        twin, self._default_twin = self._default_twin, None
        if twin is None:
            return model
        for source, target in zip(model.layers, twin.layers):
            trained = {_short(source, w): w for w in source.weights}
            for w in target.weights:
                w.assign(trained[_short(target, w)])
        return twin


def _short(layer: Any, weight: Any) -> str:
    """A variable's name without its layer's name, which differs in the twin (quantize_layer_1)."""
    return weight.name.replace(layer.name, "")
