"""Low-rank factorization: a Dense (or 1x1 Conv2D) kernel W is replaced by two thinner layers.

W (n_in x n_out) ~= U_r S_r V_r^T, split as A = U_r sqrt(S_r) and B = sqrt(S_r) V_r^T, so the layer
becomes Dense(r, linear, no bias) -> Dense(n_out, bias, original activation). The rank r is the smallest
one keeping ENERGY of the spectral energy (sum of squared singular values); the relative Frobenius error
of the kernel is then sqrt(1 - ENERGY). A layer is replaced only when the two layers have fewer
parameters. The model is rebuilt from its config (Sequential or Functional, any graph), so the new layers
sit flat in the graph where TF-MOT can still wrap them, and the source model is only read.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from edgecompress.errors import UserError
from edgecompress.setting import Setting
from edgecompress.models import import_tf_keras
from edgecompress.optimize.base import Applied, Context, Technique
from edgecompress.optimize.layers import SkippedLayer

TECHNIQUE = "low_rank"


@dataclass(frozen=True)
class FactorisedLayer:
    layer: str
    rank: int
    full_rank: int
    params_before: int
    params_after: int


@dataclass
class LowRankResult:
    model: Any  # the rebuilt tf-keras model, not compiled
    layers: list[FactorisedLayer] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)

    @property
    def params_before(self) -> int:
        return sum(f.params_before for f in self.layers)

    @property
    def params_after(self) -> int:
        return sum(f.params_after for f in self.layers)


def check_energy(energy: float) -> float:
    if not 0.0 < energy <= 1.0:
        raise UserError(
            f"low_rank energy {energy} is outside (0, 1]: give the share of spectral energy to keep, e.g. 0.9",
            settings=("low_rank",),
        )
    return float(energy)


def choose_rank(singular_values: np.ndarray, energy: float) -> int:
    """The smallest rank whose singular values hold at least ENERGY of sum(s^2)."""
    power = np.asarray(singular_values, dtype=np.float64) ** 2
    total = power.sum()
    if total == 0.0:
        return 1
    # A small tolerance so that energy 1.0 is reached despite rounding in the cumulative sum.
    kept = np.cumsum(power) / total
    return int(min(np.searchsorted(kept, energy - 1e-9) + 1, len(power)))


def split_kernel(kernel2d: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_in, n_out) -> A (n_in, rank), B (rank, n_out) with A @ B the best rank-RANK approximation."""
    u, s, vt = np.linalg.svd(kernel2d.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return (u[:, :rank] * root).astype(kernel2d.dtype), (root[:, None] * vt[:rank]).astype(kernel2d.dtype)


def _candidate(layer: Any, keras: Any) -> str | None:
    """None when LAYER can be factorised; otherwise why not (for layers holding weights)."""
    kind = type(layer)
    # Exact types: subclasses (Conv2DTranspose, custom Dense) compute something else with their kernel.
    if kind is keras.layers.Dense:
        return None
    if kind is keras.layers.Conv2D:
        if tuple(layer.kernel_size) != (1, 1):
            return f"{'x'.join(map(str, layer.kernel_size))} convolution: only 1x1 convolutions are factorised"
        if layer.groups != 1:
            return "grouped convolution: only plain 1x1 convolutions are factorised"
        return None
    if isinstance(layer, keras.Model):
        return "nested model: only top-level Dense and 1x1 Conv2D layers are factorised"
    return f"{kind.__name__} layer: only Dense and 1x1 Conv2D layers are factorised"


def _plan(layer: Any, energy: float) -> tuple[FactorisedLayer, str | None]:
    """The rank for LAYER at ENERGY and, when factorising saves nothing, why it is kept."""
    kernel = layer.kernel.numpy()
    n_in, n_out = int(np.prod(kernel.shape[:-1])), int(kernel.shape[-1])
    bias = n_out if layer.use_bias else 0
    full_rank = min(n_in, n_out)
    rank = choose_rank(np.linalg.svd(kernel.reshape(n_in, n_out), compute_uv=False), energy)
    plan = FactorisedLayer(layer.name, rank, full_rank, n_in * n_out + bias, rank * (n_in + n_out) + bias)
    if plan.params_after >= plan.params_before:
        limit = (n_in * n_out - 1) // (n_in + n_out)
        return plan, (
            f"keeping {energy:g} of the spectral energy needs rank {rank} of {full_rank}, "
            f"which saves no parameters (rank must be at most {limit}): lower the energy to factorise it"
        )
    return plan, None


def _unique_name(base: str, taken: set[str]) -> str:
    name, n = f"{base}_lowrank", 1
    while name in taken:
        n += 1
        name = f"{base}_lowrank{n}"
    taken.add(name)
    return name


def _split_entry(entry: dict[str, Any], rank: int, first_name: str, functional: bool) -> list[dict[str, Any]]:
    """Two layer-config entries replacing ENTRY: the thin linear projection, then the original layer."""
    first, second = copy.deepcopy(entry), copy.deepcopy(entry)
    cfg = first["config"]
    cfg["name"] = first_name
    cfg["units" if "units" in cfg else "filters"] = rank
    cfg.update(activation="linear", use_bias=False, activity_regularizer=None, bias_regularizer=None,
               bias_constraint=None)
    if "filters" in second["config"]:
        # The projection carries the stride; the second 1x1 conv then maps pixel to pixel.
        second["config"].update(strides=[1, 1], padding="valid", dilation_rate=[1, 1])
    for part in (first, second):
        part.pop("build_config", None)  # shapes changed; layers are built when the graph is rebuilt
    if functional:
        first["name"] = first_name
        second["inbound_nodes"] = [[[first_name, i, 0, {}]] for i in range(len(entry["inbound_nodes"]))]
    return [first, second]


def factorize(model: Any, energy: float) -> LowRankResult:
    """A new model with every Dense / 1x1 Conv2D layer that gains from it factorised at ENERGY.

    The result keeps the original layer names (the second layer of each pair takes the original name,
    so output names do not change) and is ready for fine-tuning; MODEL itself is not changed.
    """
    energy = check_energy(energy)
    keras = import_tf_keras("low-rank factorization")
    if not isinstance(model, keras.Model) or not (isinstance(model, keras.Sequential) or model._is_graph_network):
        raise UserError(
            "low-rank factorization needs a tf-keras Sequential or Functional model: "
            "rebuild a subclassed model functionally"
        )
    plans: dict[str, FactorisedLayer] = {}
    skipped: list[SkippedLayer] = []
    for layer in model.layers:
        if not layer.weights:
            continue
        reason = _candidate(layer, keras)
        if reason is None:
            plan, reason = _plan(layer, energy)
            if reason is None:
                plans[layer.name] = plan
                continue
        skipped.append(SkippedLayer(layer.name, TECHNIQUE, reason))

    config = model.get_config()
    functional = not isinstance(model, keras.Sequential)
    taken = {entry["config"]["name"] for entry in config["layers"]}
    first_names: dict[str, str] = {}
    entries: list[dict[str, Any]] = []
    for entry in config["layers"]:
        name = entry["config"]["name"]
        if name in plans:
            first_names[name] = _unique_name(name, taken)
            entries.extend(_split_entry(entry, plans[name].rank, first_names[name], functional))
        else:
            entries.append(entry)
    config["layers"] = entries
    rebuilt = (keras.Sequential if not functional else keras.Model).from_config(config)

    for layer in model.layers:
        target = rebuilt.get_layer(layer.name)
        if layer.name not in plans:
            target.set_weights(layer.get_weights())
            continue
        kernel = layer.kernel.numpy()
        a, b = split_kernel(kernel.reshape(-1, kernel.shape[-1]), plans[layer.name].rank)
        head = kernel.shape[:-2]  # (1, 1) for a 1x1 convolution, () for Dense
        rebuilt.get_layer(first_names[layer.name]).set_weights([a.reshape(*head, *a.shape)])
        target.set_weights([b.reshape(*head, *b.shape)] + ([layer.bias.numpy()] if layer.use_bias else []))
    return LowRankResult(rebuilt, list(plans.values()), skipped)


@dataclass
class LowRank(Technique):
    """Factorise first (low_rank = ENERGY), so later stages prune, cluster and quantise the thin layers."""

    energy: float
    name: ClassVar[str] = TECHNIQUE
    order: ClassVar[int] = 10
    settings = (Setting(TECHNIQUE, float, "Factorise Dense / 1x1 Conv2D layers keeping this share of each kernel's "
                        "spectral energy, in (0, 1] (0: off).", off=0.0, low=0, high=1),)

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        return f"lowrank{values[TECHNIQUE]:g}"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> LowRank | None:
        energy = settings.get(TECHNIQUE)
        return cls(energy) if energy is not None and energy != 0 else None

    def validate(self) -> None:
        check_energy(self.energy)

    def describe(self) -> str:
        return f"low-rank factorization keeping {self.energy:g} of each layer's spectral energy"

    def apply(self, model: Any, ctx: Context) -> Applied:
        result = factorize(model, self.energy)
        if not result.layers:
            raise UserError(
                f"no Dense or 1x1 Conv2D layer saves parameters at low-rank energy {self.energy:g} "
                f"(skipped: {', '.join(s.layer for s in result.skipped) or 'no layer with weights'}): "
                "lower the energy or choose another technique"
            )
        return Applied(result.model, result.skipped, {"ranks": [asdict(f) for f in result.layers]})
