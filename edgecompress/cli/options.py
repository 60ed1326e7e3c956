"""Options and output helpers shared by the commands."""
from __future__ import annotations

import re
from typing import Any, Callable

import click

from edgecompress.errors import UserError
from edgecompress.converters.litert_quantize import ALGORITHMS, BLOCK_SIZES
from edgecompress.converters.modes import BLOCK_MODES, TFLITE_MODES
from edgecompress.tables import to_json
from edgecompress.setting import flag_of

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
force_option = click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
unsafe_option = click.option(
    "--unsafe", is_flag=True, help="Allow Lambda layers when loading Keras models (runs code from the file)."
)
algorithm_option = click.option(
    "--algorithm", type=click.Choice(ALGORITHMS), default="auto", show_default=True,
    help=f"{', '.join(TFLITE_MODES)}: how weights are rounded. minmax: one scale per channel from its largest "
         "weight; mse, octav: the clipping range with the least error; gptq: each weight's rounding error "
         "compensated by the others, from the activations (needs --calibration); auto: each that applies, "
         "measured against float on held-out samples, the best kept (the output says which and why).",
)
block_size_option = click.option(
    "--block-size", type=int,
    help=f"{', '.join(BLOCK_MODES)} only: one scale per this many input channels of FULLY_CONNECTED weights "
         f"({', '.join(map(str, BLOCK_SIZES))}) instead of one per output channel; convolutions stay per channel.",
)


def input_shape_option(help_text: str) -> Callable[[Any], Any]:
    """--input-shape [NAME=]1xHxWxC, repeatable (parsed by edgecompress.shapes.parse_input_shapes)."""
    return click.option("--input-shape", "input_shape", multiple=True, metavar="[NAME=]1xHxWxC", help=help_text)


def in_flags(error: UserError) -> str:
    """ERROR's message with each setting it names written as the flag that sets it."""
    text = str(error)
    for setting in error.settings:
        text = re.sub(rf"(?<![\w.-]){re.escape(setting)}(?![\w-])", flag_of(setting), text)
    return text


def emit(result: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print RESULT as JSON (stdout, nothing else) or through RENDER as readable text."""
    click.echo(to_json(result) if as_json else render(result))


def size_ratio(ratio: float | None, base: str) -> str | None:
    """'3.98x smaller than BASE', or 'larger' for a ratio below 1 (a float32 export of a SavedModel)."""
    if not ratio:
        return None
    return f"{ratio:.2f}x smaller than {base}" if ratio >= 1 else f"{1 / ratio:.2f}x larger than {base}"


def rounding_row(algorithm: str | None, choice: Any) -> list[tuple[str, Any]]:
    """The weights' rounding algorithm as a row; with auto, every algorithm it measured (algorithm_choice)."""
    if algorithm is None:
        return []
    return [("rounding", choice.reason() if choice is not None else algorithm)]


def int4_search_parts(metric: str, source_accuracy: float, steps: list[Any], chosen: int | None,
                      reasons: dict[str, str]) -> list[str]:
    """Accuracy-driven int4 (converters.mixed_precision) as text: every step, and why each raised layer is."""
    from edgecompress.tables import fmt_metric, fmt_points, key_values, table

    parts = [table(
        ["float activations (int4 weights)", "int8 weights", "float", "size (bytes)", metric, "drop", "kept"],
        [[_names(s.weight_only_layers) if s.weight_only_layers + s.int8_layers + s.float_layers else "(none: all int4)",
          _names(s.int8_layers), _names(s.float_layers), s.size_bytes, fmt_metric(metric, s.accuracy),
          fmt_points(s.drop), i == chosen] for i, s in enumerate(steps)],
        title=(f"Accuracy-driven int4 (original {metric}: {fmt_metric(metric, source_accuracy)}; drop in "
               + ("% of the MAE)" if metric == "mae" else "points)")),
    )]
    kept = steps[chosen] if chosen is not None else None
    raised = [] if kept is None else [(layer, tier) for tier, layers in (
        ("float activations", kept.weight_only_layers), ("int8 weights", kept.int8_layers),
        ("float", kept.float_layers)) for layer in layers]
    if raised:
        parts.append(key_values([(f"{layer} ({tier})", reasons.get(layer, "")) for layer, tier in raised],
                                title="Why these layers are not plain int4 (measured)"))
    return parts


def int8_search_parts(metric: str, source_accuracy: float, steps: list[Any], chosen: int | None,
                      float_layers: list[str], reasons: dict[str, str], smoothed: list[str] = ()) -> list[str]:
    """Accuracy-driven int8 (converters.fallback, converters.full_int8_fallback) as text: every step, the outlier
    channels scaled, and why each layer kept float is."""
    from edgecompress.tables import fmt_metric, fmt_points, key_values, table

    parts = [table(
        ["layers with float activations", "outliers scaled", "size (bytes)", metric, "drop", "edge inputs", "kept"],
        [[", ".join(s.float_layers) or "(none: full int8)", s.smoothed, s.size_bytes, fmt_metric(metric, s.accuracy),
          fmt_points(s.drop), s.edge_fault or "-", i == chosen] for i, s in enumerate(steps)],
        title=(f"Accuracy-driven int8 (original {metric}: {fmt_metric(metric, source_accuracy)}; drop in "
               + ("% of the MAE)" if metric == "mae" else "points)")),
    )]
    notes = [("outliers scaled", "; ".join(smoothed))] if smoothed else []
    if float_layers:
        notes.append(("layers with float activations", "keep int8 weights (weight-only)"))
        notes += [(layer, reasons.get(layer, "")) for layer in float_layers]
    if notes:
        parts.append(key_values(notes))
    return parts


def _names(layers: list[str]) -> str:
    """A few layer names, or how many (the kept step's are listed in full below the table)."""
    return ", ".join(layers) if len(layers) <= 3 else f"{len(layers)} layers"


def validation_rows(v: Any) -> list[tuple[str, Any]]:
    """A converters Validation's summary as key/value rows (outputs_table has the verdict per output)."""
    edges = f" + edge inputs ({', '.join(v.edge_inputs)})" if v.edge_inputs else ""
    rows: list[tuple[str, Any]] = [("validated on", f"{v.samples} {v.data} samples{edges} with {v.runtime}")]
    if v.state:
        rows.append(("state", "kept between invocations: reset before each sample, as the original is stateless"
                     if v.state == "reset" else "kept between invocations: samples run in order, state carried over"))
    return rows


def outputs_table(v: Any) -> str:
    """One row per output of a Validation: what it is and how far it is from the reference's."""
    from edgecompress.tables import Figure, table

    def db(value: float | None) -> Any:
        return None if value is None else Figure("exact" if value == float("inf") else f"{value:.1f}")

    return table(
        ["output", "shape", "kind", "max abs error", "mean abs error", "SQNR (dB)", "cosine", "agreement", "NaN/Inf"],
        [[o.name, "x".join(map(str, o.shape)) or "scalar", o.kind, o.max_abs_error, o.mean_abs_error, db(o.sqnr_db),
          None if o.cosine is None else Figure(f"{o.cosine:.4f}"),
          None if o.agreement is None else Figure(f"{o.agreement:.1%}"), o.nonfinite] for o in v.outputs],
    )
