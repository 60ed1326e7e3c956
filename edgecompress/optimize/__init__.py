"""Make a Keras model smaller before conversion: structured (head / feed-forward) pruning, low-rank, pruning, clustering, QAT, distillation.

One module per technique, registered in base.REGISTRY by subclassing Technique (so it must be imported here);
`techniques_from_settings` builds them from settings (for recipes and the CLI alike) and `optimize()` (apply.py)
runs them in order.
"""
from edgecompress.optimize.apply import optimize
from edgecompress.optimize.base import (REGISTRY, Technique, technique_classes, technique_settings,
                                        techniques_from_settings)
from edgecompress.optimize.cluster import Cluster
from edgecompress.optimize.distill import DistillationConfig
from edgecompress.optimize.layers import SkippedLayer
from edgecompress.optimize.lowrank import LowRank
from edgecompress.optimize.prune import Prune, parse_pattern
from edgecompress.optimize.qat import QAT
from edgecompress.optimize.structured import StructuredPrune
from edgecompress.optimize.report import ModelStats, OptimizeResult
from edgecompress.optimize.train import StageTraining, TrainSettings

__all__ = [
    "optimize", "OptimizeResult", "ModelStats", "SkippedLayer", "TrainSettings", "StageTraining", "Technique",
    "DistillationConfig", "Prune", "Cluster", "QAT", "LowRank", "StructuredPrune", "REGISTRY", "techniques_from_settings", "parse_pattern",
    "technique_classes", "technique_settings",
]


