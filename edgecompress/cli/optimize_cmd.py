"""`edgecompress optimize`: prune, cluster, quantization-aware train, distil or factorise a Keras model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgecompress.errors import UserError
from edgecompress.tables import table
from edgecompress.cli.options import emit, force_option, json_option, unsafe_option


def _render(result: Any) -> str:
    b, a = result.before, result.after
    rows = [
        ("parameters", b.params, a.params),
        ("non-zero parameters", b.nonzero_params, a.nonzero_params),
        ("distinct kernel values", b.distinct_values, a.distinct_values),
        ("saved size (bytes)", b.saved_bytes, a.saved_bytes),
        ("saved size gzipped (bytes)", b.saved_gzip_bytes, a.saved_gzip_bytes),
        ("validation accuracy", b.val_accuracy, a.val_accuracy),
    ]
    parts = [
        "applied in order: " + " -> ".join(result.plan),
        table(("", "before", "after"), rows, title=f"\nwrote {result.output}"),
    ]
    for name, details in result.details.items():
        for key, value in details.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                headers = list(value[0])
                parts.append(table(headers, [[row[h] for h in headers] for row in value], title=f"\n{name}: {key}"))
    if result.skipped_layers:
        skipped = [(s.layer, s.technique, s.reason) for s in result.skipped_layers]
        parts.append(table(("layer", "technique", "left as it is because"), skipped, title="\nskipped layers"))
    return "\n".join(parts)


def _summary(result: Any) -> dict[str, Any]:
    """The JSON contract: output, techniques, skipped_layers, before, after (plus the plan and details)."""
    return {
        "output": str(result.output),
        "techniques": result.techniques,
        "plan": result.plan,
        "skipped_layers": result.skipped_layers,
        "before": result.before,
        "after": result.after,
        "details": result.details,
    }


@click.command("optimize")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, type=click.Path(), help="The optimized model (.keras or .h5).")
@click.option("--train", "train", required=True, type=click.Path(), help=".npz with the inputs (x) and labels (y).")
@click.option("--val", "val", type=click.Path(), help=".npz for validation accuracy (same keys as --train).")
@click.option("--prune", "sparsity", type=float, help="Magnitude pruning to this final sparsity, in [0, 1).")
@click.option("--prune-pattern", help="Structured M:N sparsity instead: 2:4 (also 1:2, 4:8).")
@click.option("--cluster", "clusters", type=int, help="Weight clustering into this many shared values per kernel.")
@click.option("--qat", is_flag=True, help="Quantization-aware training for a full-integer int8 conversion.")
@click.option("--distill-from", "teacher", type=click.Path(), help="Train MODEL as a student of this teacher model.")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Distillation temperature T.")
@click.option("--alpha", type=float, default=0.1, show_default=True, help="Weight of the hard-label loss.")
@click.option("--low-rank", "energy", type=float, help="Factorise Dense / 1x1 Conv2D layers keeping this energy.")
@click.option("--epochs", type=int, default=3, show_default=True, help="Fine-tuning epochs after each technique.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Makes the fine-tuning reproducible.")
@force_option
@unsafe_option
@json_option
def optimize_cmd(
    model: str, output: str, train: str, val: str | None, sparsity: float | None, prune_pattern: str | None,
    clusters: int | None, qat: bool, teacher: str | None, temperature: float, alpha: float, energy: float | None,
    epochs: int, batch_size: int, learning_rate: float, seed: int, force: bool, unsafe: bool, as_json: bool,
) -> None:
    """Make MODEL smaller before conversion; techniques run in the order low-rank -> prune -> cluster -> QAT."""
    from edgecompress.optimize import QAT, Cluster, DistillationConfig, LowRank, Prune, TrainSettings, optimize, parse_pattern

    techniques: list[Any] = []
    if energy is not None:
        techniques.append(LowRank(energy))
    if sparsity is not None and prune_pattern is not None:
        raise UserError("--prune and --prune-pattern exclude each other: an M:N pattern fixes the sparsity")
    if sparsity is not None:
        techniques.append(Prune(sparsity))
    if prune_pattern is not None:
        techniques.append(Prune(pattern=parse_pattern(prune_pattern)))
    if clusters is not None:
        techniques.append(Cluster(clusters))
    if qat:
        techniques.append(QAT())
    distill = DistillationConfig(Path(teacher), temperature, alpha) if teacher is not None else None
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed)
    result = optimize(model, output, train, techniques, val=val, settings=settings, distill=distill,
                      force=force, unsafe=unsafe)
    emit(_summary(result) if as_json else result, as_json, _render)


COMMANDS = [optimize_cmd]
