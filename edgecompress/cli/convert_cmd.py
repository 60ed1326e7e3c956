"""`edgecompress convert` and `edgecompress evaluate`: thin shells over converters.convert_model and evaluate."""
from __future__ import annotations

from typing import Any

import click

from edgecompress.calibration.sources import IMAGE_SCALES
from edgecompress.converters.convert import DEFAULT_CALIBRATION_SAMPLES, VALIDATION_SAMPLES
from edgecompress.converters.modes import QUANTIZE_MODES, WEIGHT_MODES, modes_help
from edgecompress.converters.quantize import IO_TYPES
from edgecompress.tables import fmt_metric, key_values, table
from edgecompress.cli.options import (
    algorithm_option, block_size_option, emit, force_option, input_shape_option, int4_search_parts, int8_search_parts, json_option,
    outputs_table, rounding_row, size_ratio, unsafe_option, validation_rows,
)

QUANTIZE_HELP = (modes_help(QUANTIZE_MODES) + f" {', '.join(WEIGHT_MODES)}: a float32 conversion, then "
                 "litert-quantizer; dynamic too with an explicit --algorithm.")
IMAGE_SCALE_HELP = "How image-folder pixels become inputs: " + "; ".join(f"{k} = {v}" for k, v in IMAGE_SCALES.items())


@click.command("convert")
@click.argument("model", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str), help="The .tflite file to write.")
@click.option("--quantize", type=click.Choice(QUANTIZE_MODES), default="none",
              show_default=True, help=QUANTIZE_HELP)
@click.option("--calibration", type=click.Path(path_type=str),
              help="Representative samples: a .npy (single input), a .npz (one array per input name, or `x`; "
                   "labels under `y`) or a folder of jpg/png images. Also used for validation.")
@click.option("--num-samples", type=click.IntRange(min=1), default=DEFAULT_CALIBRATION_SAMPLES, show_default=True,
              help="How many calibration samples to use, chosen with --seed (all when the data has fewer).")
@click.option("--io-type", type=click.Choice(IO_TYPES), default="float32", show_default=True,
              help="Input/output type; int8/uint8 make the model integer end to end (with --quantize int8).")
@click.option("--image-scale", type=click.Choice(list(IMAGE_SCALES)), default="unit", show_default=True,
              help=IMAGE_SCALE_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for choosing samples.")
@click.option("--validation-samples", type=click.IntRange(min=1), default=VALIDATION_SAMPLES, show_default=True,
              help="Samples the .tflite and the original both run to measure the error.")
@block_size_option
@algorithm_option
@click.option("--allow-flex", is_flag=True,
              help="Allow TensorFlow (Flex / SELECT_TF_OPS) ops; stock runtimes cannot run the result.")
@click.option("--max-drop", type=float, metavar="POINTS",
              help="With --quantize int8: keep the most damaging layers in float; with int4: move the layers int4 "
                   "hurts most (measured each alone on --calibration) to int8, then to float; until the loss on "
                   "--eval-data is at most POINTS (top-1 points; MAE increase in % for regression). Exits 2 if no "
                   "attempt gets there (the best one is written).")
@click.option("--eval-data", type=click.Path(path_type=str),
              help="Labelled samples (.npz with the input(s) and labels under `y`) that --max-drop measures on.")
@click.option("--model-output", metavar="NAME|INDEX",
              help="The output --eval-data's labels are for, by name or position [default: the only output, or the only one "
                   "holding class scores].")
@input_shape_option("Fix the free dimensions of an input (a fully convolutional model) at export, batch 1 first; "
                    "repeat it for several inputs, and convert once per shape for several scales.")
@click.option("--keep-failed", is_flag=True,
              help="Write the .tflite even when its outputs are NaN/Inf where the original's are finite (the "
                   "command still fails), to inspect it.")
@click.option("--task", type=click.Choice(["predict", "generate"]), default="predict", show_default=True,
              help="generate: a causal language model to a .tflite with LiteRT-LM's prefill and decode signatures "
                   "and a KV cache (quantize none, dynamic or a weight mode; --calibration: token windows under x "
                   "for its validation).")
@click.option("--prefill-length", type=click.IntRange(min=1), help="--task generate: the prompt tokens one prefill "
              "call takes [default: half the model's context].")
@click.option("--context", type=click.IntRange(min=1), help="--task generate: the KV cache's rows, prompt and "
              "generated tokens together [default: the model's positions; needed for rotary positions, as Gemma's].")
@click.option("--tokenizer", type=click.Path(path_type=str), help="--task generate with -o OUT.litertlm: the "
              "tokenizer.json the LiteRT-LM bundle holds [default: tokenizer.json beside MODEL].")
@force_option
@unsafe_option
@json_option
def convert_command(model: str, output: str, quantize: str, calibration: str | None, num_samples: int,
                    io_type: str, image_scale: str, seed: int, validation_samples: int, block_size: int | None,
                    algorithm: str, allow_flex: bool, max_drop: float | None, eval_data: str | None, model_output: str | None,
                    input_shape: tuple[str, ...], keep_failed: bool, task: str, prefill_length: int | None,
                    context: int | None, tokenizer: str | None, force: bool, unsafe: bool, as_json: bool) -> None:
    """Convert a Keras MODEL (.keras, .h5 or SavedModel folder) to a .tflite with a fixed batch of 1,
    then check it against the original on validation samples. With --task generate, a causal language model to
    a .tflite with prefill and decode signatures, or to a LiteRT-LM bundle (-o OUT.litertlm)."""
    from edgecompress.converters import convert_model
    from edgecompress.errors import UserError
    from edgecompress.shapes import parse_input_shapes

    if task == "generate":
        given = [flag for flag, value in (("--io-type", io_type != "float32"), ("--max-drop", max_drop is not None),
                                          ("--eval-data", eval_data), ("--input-shape", input_shape)) if value]
        if given:
            raise UserError(f"{given[0]} does not apply to --task generate: leave it out")
        from edgecompress.converters.generative import convert_generative

        emit(convert_generative(model, output, quantize, prefill_length, calibration, block_size, algorithm, force,
                                unsafe, seed=seed, tokenizer=tokenizer, context=context), as_json, render_generative)
        return
    for flag, value in (("--prefill-length", prefill_length), ("--context", context), ("--tokenizer", tokenizer)):
        if value is not None:
            raise UserError(f"{flag} is for --task generate: add --task generate, or leave it out")
    result = convert_model(
        model, output, quantize=quantize, calibration=calibration, num_samples=num_samples, io_type=io_type,
        force=force, unsafe=unsafe, allow_flex=allow_flex, image_scale=image_scale, seed=seed,
        validation_samples=validation_samples, block_size=block_size, eval_data=eval_data, max_drop=max_drop,
        keep_failed=keep_failed, model_output=model_output, input_shapes=parse_input_shapes(input_shape) or None,
        algorithm=algorithm,
    )
    emit(result, as_json, render_conversion)
    if result.target_met is False:
        raise UserError(
            f"no {result.quantize} model came within --max-drop {max_drop:g} (best: drop {result.drop:.2f} with "
            f"{len(result.float_layers)} layer(s) in float, written to {result.output}): raise --max-drop, "
            "or use --quantize dynamic or float16"
        )


def render_conversion(result: Any) -> str:
    parts = []
    if result.calibration:
        parts.append(table(
            ["input", "count", "min", "max", "mean"],
            [[s.name, s.count, s.min, s.max, s.mean] for s in result.calibration],
            title="Calibration data",
        ))
    parts.append(table(
        ["", "size (bytes)", "gzip (bytes)"],
        [["original file", result.source_size_bytes, result.source_gzip_bytes],
         ["original weights", result.source_weight_bytes, None],
         [f"tflite ({_mode(result)}, {result.io_type} I/O)", result.size_bytes, result.gzip_bytes]],
        title=f"Wrote {result.output}",
    ))
    v = result.validation
    rows = [("size ratio", size_ratio(result.ratio, f"the original's {result.ratio_base}")),
            *rounding_row(result.algorithm, result.algorithm_choice)]
    if v is not None:
        rows += validation_rows(v)
    else:
        rows += [("flex ops", ", ".join(result.flex_ops)),
                 ("validated on", "not validated: stock runtimes cannot run Flex ops")]
    parts.append(key_values(rows, title="Validation against the original"))
    if v is not None:
        parts.append(outputs_table(v))
    if result.steps and result.quantize == "int4":
        parts += int4_search_parts(result.metric, result.source_accuracy, result.steps, result.chosen_step,
                                   result.precision_reasons)
    elif result.steps:
        parts += int8_search_parts(result.metric, result.source_accuracy, result.steps, result.chosen_step,
                                   result.float_layers, result.precision_reasons, result.smoothed)
    return "\n\n".join(parts)


def render_generative(result: Any) -> str:
    v = result.validation
    rows = [("signatures", f"prefill ({result.prefill_length} tokens), decode (1 token); context {result.context}, "
                           f"vocabulary {result.vocab_size}"),
            ("size (bytes)", f"{result.size_bytes:,} ({result.gzip_bytes:,} gzipped)"),
            *([("weights rounded by", result.algorithm)] if result.algorithm else []),
            ("teacher-forced next token", f"{v.top1_agreement:.1%} agree with the Keras model over {v.positions} "
                                          f"positions (max logit error {v.max_abs_logit_error:.3g})"),
            ("greedy generations", f"{v.greedy_identical} of {v.greedy_prompts} identical to the Keras model's for "
                                   f"{v.greedy_tokens} tokens")]
    return key_values(rows, title=f"Wrote {result.output} ({'float32' if result.quantize == 'none' else result.quantize})")


def _mode(result: Any) -> str:
    return result.quantize + (f", blocks of {result.block_size}" if result.block_size else "")


@click.command("evaluate")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--data", required=True, type=click.Path(path_type=str),
              help="Labelled samples: a .npz with the input(s) (by input name, or `x`) and labels under `y` "
                   "(integer classes -> accuracy, floats -> mean absolute error).")
@click.option("--model-output", metavar="NAME|INDEX",
              help="The output the labels are for, by name or position [default: the only output, or the only one "
                   "holding class scores].")
@click.option("--stream", is_flag=True,
              help="A streaming .tflite: run the samples in order with its state carried over (by default a model "
                   "that keeps state is reset before each sample, as Keras does per batch).")
@unsafe_option
@json_option
def evaluate_command(model: str, data: str, model_output: str | None, stream: bool, unsafe: bool,
                     as_json: bool) -> None:
    """Run a .tflite or Keras MODEL over labelled DATA: top-1 accuracy, F1 (0/1 labels for many scores per
    sample) or mean absolute error; a language model's .tflite over token windows (x, and next tokens y):
    perplexity and next-token accuracy."""
    from edgecompress.evaluate import evaluate

    result = evaluate(model, data, unsafe=unsafe, model_output=model_output, stream=stream)
    emit(result, as_json, render_evaluation)


def render_evaluation(result: Any) -> str:
    metric = (result.metric, fmt_metric(result.metric, result.score))
    binary = [("precision", f"{result.precision:.2%}"), ("recall", f"{result.recall:.2%}")] \
        if result.precision is not None else []
    tokens = [("next-token accuracy", fmt_metric("accuracy", result.accuracy))] if result.perplexity is not None else []
    return key_values([("model", result.model), ("output", result.output), metric, *tokens, *binary,
                       ("samples", result.samples), ("ran with", result.runtime)])


COMMANDS = [convert_command, evaluate_command]
