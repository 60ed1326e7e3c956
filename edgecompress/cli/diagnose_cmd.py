"""`edgecompress diagnose`: a thin shell over converters.diagnose."""
from __future__ import annotations

from typing import Any

import click

from edgecompress.calibration.sources import IMAGE_SCALES
from edgecompress.converters.convert import DEFAULT_CALIBRATION_SAMPLES
from edgecompress.tables import fmt_metric, fmt_points, key_values, table
from edgecompress.cli.convert_cmd import IMAGE_SCALE_HELP
from edgecompress.cli.options import emit, json_option, unsafe_option


@click.command("diagnose")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--calibration", required=True, type=click.Path(path_type=str),
              help="Representative samples (.npz, .npy or an image folder), as for `convert --quantize int8`.")
@click.option("--data", type=click.Path(path_type=str),
              help="Labelled samples (.npz with labels under `y`): adds float vs int8 accuracy.")
@click.option("--num-samples", type=click.IntRange(min=1), default=DEFAULT_CALIBRATION_SAMPLES, show_default=True,
              help="Calibration samples to quantize with and compare on.")
@click.option("--image-scale", type=click.Choice(list(IMAGE_SCALES)), default="unit", show_default=True,
              help=IMAGE_SCALE_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for choosing samples.")
@click.option("--model-output", metavar="NAME|INDEX",
              help="The output --data's labels are for, by name or position [default: the only output, or the only "
                   "one holding class scores].")
@unsafe_option
@json_option
@click.pass_context
def diagnose_command(ctx: click.Context, model: str, calibration: str, data: str | None, num_samples: int,
                     image_scale: str, seed: int, model_output: str | None, unsafe: bool, as_json: bool) -> None:
    """Quantize a Keras MODEL to full int8 and show which layers lose the most against float, worst first."""
    from edgecompress.converters.diagnose import diagnose
    from edgecompress.errors import NativeCrash
    from edgecompress.isolation import run_isolated

    # In a child process: TensorFlow's debugger runs the int8 file in this process's runtime, and a file that
    # corrupts the runtime (TF 2.21's full-int8 stacked LSTMs) must cost one line, not the tool.
    try:
        result = run_isolated(diagnose, model, calibration, data=data, num_samples=num_samples, seed=seed,
                              image_scale=image_scale, unsafe=unsafe, model_output=model_output, what="diagnose",
                              debug=bool(ctx.obj and ctx.obj.get("debug")))
    except NativeCrash as crash:
        raise NativeCrash(f"{crash}. Full int8 of this model is what crashed: export it with --quantize dynamic, "
                          "float16 or int8-weights, which keep float activations") from crash
    emit(result, as_json, render_diagnosis)


def render_diagnosis(result: Any) -> str:
    parts = [table(
        ["layer", "op", "signal lost", "rmse", "rmse/scale", "range", "tensor"],
        [[l.name, l.op, f"{l.signal_lost:.1%}", l.rmse, l.rmse_over_scale, l.range, l.tensor] for l in result.layers],
        title=f"int8 against float, per layer, worst first ({result.samples} calibration samples)",
    )]
    a = result.accuracy
    if a is not None:
        unit = "points" if a.metric == "accuracy" else "% of the MAE"
        parts.append(key_values([(f"float {a.metric}", fmt_metric(a.metric, a.float)),
                                 (f"int8 {a.metric}", fmt_metric(a.metric, a.int8)),
                                 (f"drop ({unit})", fmt_points(a.drop))]))
    parts.append("signal lost: RMS error / RMS value when only that layer's output is int8, per channel "
                 "(a few % is normal); rmse: the int8 op against the same op in float; range: 255 x scale.\n"
                 "Keep the worst layers in float with `edgecompress convert MODEL --quantize int8 "
                 "--eval-data LABELLED.npz --max-drop POINTS`.")
    return "\n\n".join(parts)


COMMANDS = [diagnose_command]
