"""`edgecompress diagnose`: a thin shell over converters.diagnose."""
from __future__ import annotations

from typing import Any

import click

from edgecompress.calibration.sources import IMAGE_SCALES
from edgecompress.converters.convert import DEFAULT_CALIBRATION_SAMPLES
from edgecompress.tables import fmt_metric, fmt_points, key_values, table
from edgecompress.cli.convert_cmd import IMAGE_SCALE_HELP
from edgecompress.cli.options import algorithm_option, emit, json_option, unsafe_option


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
@click.option("--quantize", type=click.Choice(["int8", "int4"]), default="int8", show_default=True,
              help="int8: full integer, every activation's signal lost (a Keras MODEL). int4: int4 weights on one "
                   "layer at a time, the rest float, each layer's cost at the worst output (a Keras MODEL or a "
                   "float .tflite, no TensorFlow needed for the latter).")
@algorithm_option
@click.option("--model-output", metavar="NAME|INDEX",
              help="The output --data's labels are for, by name or position [default: the only output, or the only "
                   "one holding class scores].")
@unsafe_option
@json_option
@click.pass_context
def diagnose_command(ctx: click.Context, model: str, calibration: str, data: str | None, num_samples: int,
                     image_scale: str, seed: int, quantize: str, algorithm: str, model_output: str | None,
                     unsafe: bool, as_json: bool) -> None:
    """Quantize MODEL (full int8, or int4 weights one layer at a time) and show which layers lose the most
    against float, worst first."""
    from edgecompress.converters.diagnose import diagnose, diagnose_int4_file
    from edgecompress.errors import NativeCrash, UserError
    from edgecompress.isolation import run_isolated

    if quantize == "int4":
        if data is not None:
            raise UserError("--data scores full int8; int4 is measured against float on the calibration samples: "
                            "drop --data, or use --quantize int8")
        result = diagnose_int4_file(model, calibration, num_samples=num_samples, seed=seed, image_scale=image_scale,
                                    unsafe=unsafe, algorithm=algorithm)
        emit(result, as_json, render_int4)
        return

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
        unit = "% of the MAE" if a.metric == "mae" else "points"
        parts.append(key_values([(f"float {a.metric}", fmt_metric(a.metric, a.float)),
                                 (f"int8 {a.metric}", fmt_metric(a.metric, a.int8)),
                                 (f"drop ({unit})", fmt_points(a.drop))]))
    parts.append("signal lost: RMS error / RMS value when only that layer's output is int8, per channel "
                 "(a few % is normal); rmse: the int8 op against the same op in float; range: 255 x scale.\n"
                 "Keep the worst layers in float with `edgecompress convert MODEL --quantize int8 "
                 "--eval-data LABELLED.npz --max-drop POINTS`.")
    return "\n\n".join(parts)


def render_int4(result: Any) -> str:
    def db(value: float | None) -> str:
        return "does not run" if value is None else ("exact" if value == float("inf") else f"{value:.1f}")

    rows = [[s.layer, s.op, db(s.sqnr_db), "-" if s.signal_lost is None else f"{s.signal_lost:.1%}"]
            for s in result.layers]
    return "\n\n".join([
        table(["layer", "op", "SQNR alone (dB)", "signal lost"], rows,
              title=f"int4 weights on one layer at a time, the rest float, most sensitive first ({result.algorithm} "
                    f"rounding, {result.samples} held-out calibration samples)"),
        key_values([("every layer int4", f"worst output SQNR {db(result.all_int4_sqnr_db)} dB")]),
        "SQNR alone: the worst output's signal-to-noise ratio against float with only that layer's weights int4; "
        "signal lost: the same as RMS error / RMS signal.\nMove the most sensitive layers to int8 or float with "
        "`edgecompress convert MODEL --quantize int4 --calibration SRC --eval-data LABELLED.npz --max-drop POINTS`.",
    ])


COMMANDS = [diagnose_command]
