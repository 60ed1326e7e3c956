"""`edgecompress optimize`: prune, cluster, quantization-aware train, distil or factorise a Keras model."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from edgecompress.optimize.base import technique_settings
from edgecompress.tables import fmt_metric, table
from edgecompress.cli.options import emit, force_option, json_option, unsafe_option


def _render(result: Any) -> str:
    b, a = result.before, result.after
    rows = [
        ("parameters", b.params, a.params),
        ("non-zero parameters", b.nonzero_params, a.nonzero_params),
        ("distinct kernel values", b.distinct_values, a.distinct_values),
        ("saved size (bytes)", b.saved_bytes, a.saved_bytes),
        ("saved size gzipped (bytes)", b.saved_gzip_bytes, a.saved_gzip_bytes),
    ]
    watched = result.training[0].metric if result.training else "accuracy"
    if watched == "MAE":
        rows.append(("validation MAE", fmt_metric("MAE", b.val_mae), fmt_metric("MAE", a.val_mae)))
    else:
        rows.append(("validation accuracy", fmt_metric("accuracy", b.val_accuracy), fmt_metric("accuracy", a.val_accuracy)))
    if a.val_perplexity is not None:
        rows.append(("validation perplexity", f"{b.val_perplexity:.2f}", f"{a.val_perplexity:.2f}"))
    stages = [(t.stage, t.epochs_run, t.max_epochs, t.best_epoch or "-", fmt_metric(t.metric, t.best_val_score),
               t.stop_reason) for t in result.training]
    parts = [
        "applied in order: " + " -> ".join(result.plan),
        table(("", "before", "after"), rows, title=f"\nwrote {result.output}"),
        table(("stage", "epochs run", "max", "kept epoch", f"val {watched}", "why it stopped"), stages,
              title=f"\ntraining, early stopping on {result.stopped_on}"),
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


def technique_options(command: Any) -> Any:
    """A flag per declared technique setting (optimize/<technique>.py), listed in the order techniques apply."""
    for setting in reversed(technique_settings()):
        kind = {"is_flag": True} if setting.kind is bool else {"type": setting.kind}
        command = click.option(setting.flag, setting.name, help=setting.help, **kind)(command)
    return command


@click.command("optimize")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("-o", "--output", required=True, type=click.Path(), help="The optimized model (.keras or .h5).")
@click.option("--train", "train", required=True, type=click.Path(), help=".npz with the inputs (x) and labels (y).")
@click.option("--val", "val", type=click.Path(),
              help=".npz for validation accuracy and early stopping (same keys as --train); without it, "
              "a seeded 10% of --train is held out.")
@technique_options
@click.option("--distill-from", type=click.Path(), help="Train MODEL as a student of this teacher model.")
@click.option("--temperature", type=float, default=4.0, show_default=True, help="Distillation temperature T.")
@click.option("--alpha", type=float, default=0.1, show_default=True, help="Weight of the hard-label loss.")
@click.option("--epochs", type=int, help="The most epochs each stage trains; it stops sooner once the validation "
              "accuracy stops improving [default: 30; 100 for --distill-from alone].")
@click.option("--patience", type=int, default=5, show_default=True,
              help="Epochs without a better validation accuracy before a stage stops (its best epoch is kept).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--learning-rate", type=float,
              help="Adam's initial step; halved when validation stalls [default: 1e-3; 3e-3 for --distill-from alone].")
@click.option("--seed", type=int, default=0, show_default=True, help="Makes the fine-tuning reproducible.")
@click.option("--model-output", metavar="NAME|INDEX",
              help="The output --train's labels are for, by name or position, for a model with several; the others "
                   "keep what they compute [default: the only output, or the only one the labels fit].")
@force_option
@unsafe_option
@json_option
@click.pass_context
def optimize_cmd(
    ctx: click.Context, model: str, output: str, train: str, val: str | None, distill_from: str | None,
    temperature: float, alpha: float, epochs: int | None, patience: int, batch_size: int, learning_rate: float | None,
    seed: int, model_output: str | None, force: bool, unsafe: bool, as_json: bool, **technique_values: Any,
) -> None:
    """Make MODEL smaller before conversion; techniques run in the order heads/feed-forward pruning -> low-rank ->
    prune -> cluster -> QAT."""
    from edgecompress.errors import NativeCrash
    from edgecompress.isolation import run_isolated
    from edgecompress.models import ONEDNN_ENV
    from edgecompress.progress import note
    from edgecompress.optimize import DistillationConfig, TrainSettings, optimize, techniques_from_settings

    techniques = techniques_from_settings(technique_values)
    distill = DistillationConfig(Path(distill_from), temperature, alpha) if distill_from is not None else None
    settings = TrainSettings(epochs=epochs, patience=patience, batch_size=batch_size, learning_rate=learning_rate,
                             seed=seed)
    # In a child process: a crash in TensorFlow's native code becomes one line naming the stage and the signal.
    # oneDNN, off already for the layers it is known to crash on, is turned off for one retry of any other crash.
    def attempt(env: dict[str, str]) -> Any:
        return run_isolated(optimize, model, output, train, techniques, val=val, settings=settings,
                            distill=distill, force=force, unsafe=unsafe, model_output=model_output, what="optimize",
                            debug=bool(ctx.obj and ctx.obj.get("debug")), env=env)

    try:
        result = attempt({})
    except NativeCrash as crash:
        if ONEDNN_ENV in os.environ:  # the user's own choice
            raise
        note(f"{crash}; retrying with TensorFlow's oneDNN kernels off ({ONEDNN_ENV}=0)")
        result = attempt({ONEDNN_ENV: "0"})
    emit(result, as_json, _render)


COMMANDS = [optimize_cmd]
