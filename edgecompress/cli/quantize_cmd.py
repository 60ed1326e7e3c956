"""`edgecompress quantize`: a thin shell over converters.quantize_file (no TensorFlow: works on a Raspberry Pi)."""
from __future__ import annotations

from typing import Any

import click

from edgecompress.converters.full_int8 import FULL_INT8_IO_TYPES, RANGE_METHODS
from edgecompress.converters.modes import FILE_MODES, modes_help
from edgecompress.cli.options import (
    algorithm_option, block_size_option, emit, force_option, int4_search_parts, int8_search_parts, json_option, outputs_table,
    rounding_row, size_ratio, validation_rows,
)

MODE_HELP = modes_help(FILE_MODES)


@click.command("quantize")
@click.argument("model", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str), help="The .tflite file to write.")
@click.option("--quantize", type=click.Choice(FILE_MODES), required=True, help=MODE_HELP)
@click.option("--calibration", type=click.Path(path_type=str),
              help="Representative samples (.npz with one array per input, or `x`): for int8 and int16x8 their "
                   "activation ranges set the scales; for the weight modes gptq rounds from their activations and "
                   "auto measures on them. They validate too when --inputs is not given.")
@click.option("--num-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Calibration samples to use.")
@click.option("--calibration-method", type=click.Choice(RANGE_METHODS), default="minmax", show_default=True,
              help="int8, int16x8: each activation's range, from its min and max over the samples (as "
                   "TFLiteConverter), or its 0.01th-99.99th percentiles (rare extremes clipped: finer steps for the rest).")
@click.option("--io-type", type=click.Choice(FULL_INT8_IO_TYPES), default="float32", show_default=True,
              help="int8: the type of the model's inputs and outputs (float32 keeps a QUANTIZE and a DEQUANTIZE at "
                   "the edges; int8 is what integer-only accelerators take).")
@click.option("--int16-head", "int16_heads", multiple=True, metavar="OUTPUT",
              help="int8 only: 16-bit activations (weights int8) on the ops only this output depends on, for a head "
                   "whose values int8 steps are too coarse for (a detector's scores). Repeatable.")
@block_size_option
@algorithm_option
@click.option("--max-drop", type=float, metavar="POINTS",
              help="int8: keep the activations of the layers int8 hurts most float (their weights int8); int4: "
                   "raise the layers int4 hurts most (each measured alone on --calibration): float activations, "
                   "int8 weights, then float; until the loss on --eval-data is at most POINTS (top-1 points; MAE increase in % for "
                   "regression). Exits 2 if no attempt gets there (the best one is written).")
@click.option("--eval-data", type=click.Path(path_type=str),
              help="Labelled samples (.npz with the input(s) and labels under `y`) that --max-drop measures on.")
@click.option("--model-output", metavar="NAME|INDEX",
              help="The output --eval-data's labels are for, by name or position [default: the only output, or the "
                   "only one holding class scores].")
@click.option("--inputs", type=click.Path(path_type=str),
              help="Validation samples: a .npz (one array per input name, or `x`) or .npy; random ones otherwise.")
@click.option("--validation-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Samples both .tflite files run to measure the error.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for choosing or generating samples.")
@click.option("--stream", is_flag=True,
              help="A streaming model: run the samples in order with its state carried over (by default a model "
                   "that keeps state is reset before each sample).")
@click.option("--allow-partial", is_flag=True,
              help="Keep a file in which the mode left float some weights its kernels take as integers (a file in "
                   "which nothing was quantized is refused whatever the flag).")
@click.option("--keep-failed", is_flag=True,
              help="Write the .tflite even when its outputs are NaN/Inf where MODEL's are finite (the command "
                   "still fails), to inspect it.")
@force_option
@json_option
def quantize_command(model: str, output: str, quantize: str, calibration: str | None, num_samples: int,
                     calibration_method: str, io_type: str, int16_heads: tuple[str, ...],
                     block_size: int | None, algorithm: str, max_drop: float | None, eval_data: str | None,
                     model_output: str | None, inputs: str | None, validation_samples: int, seed: int, stream: bool,
                     allow_partial: bool, keep_failed: bool, force: bool, as_json: bool) -> None:
    """Quantize a float32 .tflite MODEL with litert-quantizer (no TensorFlow needed),
    then check the result against MODEL."""
    from edgecompress.converters.quantize_file import quantize_tflite

    result = quantize_tflite(model, output, quantize, block_size=block_size, inputs=inputs, force=force,
                             seed=seed, validation_samples=validation_samples, keep_failed=keep_failed,
                             allow_partial=allow_partial, stream=stream, calibration=calibration,
                             num_samples=num_samples, io_type=io_type, calibration_method=calibration_method,
                             int16_heads=int16_heads, algorithm=algorithm, max_drop=max_drop, eval_data=eval_data,
                             model_output=model_output)
    emit(result, as_json, render)
    if result.search is not None and not result.search.target_met:
        from edgecompress.errors import UserError

        raise UserError(f"no {result.quantize} model came within --max-drop {max_drop:g} (best: drop {result.search.kept.drop:.2f}, "
                        f"written to {result.output}): raise --max-drop, or use --quantize int8-weights or dynamic")


def render(result: Any) -> str:
    from edgecompress.tables import key_values, table

    mode = result.quantize + (f", blocks of {result.block_size}" if result.block_size else "")
    sizes = table(
        ["", "size (bytes)", "gzip (bytes)"],
        [["input", result.source_size_bytes, result.source_gzip_bytes],
         [f"quantized ({mode})", result.size_bytes, result.gzip_bytes]],
        title=f"Wrote {result.output}",
    )
    from edgecompress.converters.coverage import describe_float

    rows = [("size ratio", size_ratio(result.ratio, "the input")),
            ("left float", describe_float(result.coverage) or "nothing"),
            *rounding_row(result.algorithm, result.algorithm_choice), *validation_rows(result.validation)]
    parts = [sizes, key_values(rows, title=f"Validation against {result.input}"), outputs_table(result.validation)]
    search = result.search
    if search is not None and result.quantize == "int4":
        parts += int4_search_parts(search.metric, search.source_accuracy, search.steps, search.chosen, search.reasons)
    elif search is not None:
        parts += int8_search_parts(search.metric, search.source_accuracy, search.steps, search.chosen,
                                   search.kept.float_layers, search.reasons)
    return "\n\n".join(parts)


COMMANDS = [quantize_command]
