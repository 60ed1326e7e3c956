"""Weight clustering (TF-MOT cluster_weights): N shared values per kernel, k-means++ initialised.

After pruning, clustering keeps the zeros (TF-MOT's sparsity-preserving clustering), so the two combine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from edgecompress.errors import UserError
from edgecompress.setting import Setting
from edgecompress.optimize.base import Applied, Context, Technique
from edgecompress.optimize.layers import cluster_judge, import_tfmot, plan, wrap_layers
from edgecompress.optimize.prune import Prune


@dataclass
class Cluster(Technique):
    clusters: int = 16

    name = "cluster"
    order = 30
    settings = (Setting("cluster", int, "Weight clustering into this many shared values per kernel (0: off).", off=0,
                        low=0),)

    @classmethod
    def label(cls, values: Mapping[str, Any]) -> str:
        return f"cluster{values['cluster']}"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Cluster | None:
        clusters = settings.get("cluster")
        return cls(clusters) if clusters is not None and clusters != 0 else None

    def validate(self) -> None:
        if not isinstance(self.clusters, int) or self.clusters < 2:
            raise UserError(f"cluster {self.clusters!r} is below 2: give at least 2 clusters, for example 16",
                            settings=("cluster",))

    def describe(self) -> str:
        return f"cluster each kernel into {self.clusters} shared values (k-means++)"

    def apply(self, model: Any, ctx: Context) -> Applied:
        tfmot = import_tfmot()
        chosen, skipped = plan(model, cluster_judge(), self.name)
        init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
        if Prune.name in ctx.techniques:
            # TF-MOT's sparsity-preserving clustering keeps pruned zeros at zero (not in its public API).
            from tensorflow_model_optimization.python.core.clustering.keras.experimental import cluster as experimental

            cluster = experimental.cluster_weights
            params = {"preserve_sparsity": True}
        else:
            cluster, params = tfmot.clustering.keras.cluster_weights, {}
        wrapped = wrap_layers(
            model,
            chosen,
            lambda layer: cluster(layer, number_of_clusters=self.clusters, cluster_centroids_init=init, **params),
        )
        return Applied(wrapped, skipped, compressed=chosen)

    def strip(self, model: Any) -> Any:
        return import_tfmot().clustering.keras.strip_clustering(model)
