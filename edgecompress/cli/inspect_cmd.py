"""`edgecompress inspect`: what a .tflite file holds, from the flatbuffer alone (no TensorFlow)."""
from __future__ import annotations

from pathlib import Path

import click

from edgecompress.cli.options import emit, input_shape_option, json_option


def _io_rows(specs: list) -> list[list]:
    def quant(values: list) -> str:
        if not values:
            return "-"
        return ", ".join(f"{v:.6g}" for v in values[:3]) + (f" (+{len(values) - 3})" if len(values) > 3 else "")

    return [[_short(s.name), str(s.shape), s.dtype, quant(s.scale), quant(s.zero_point)] for s in specs]


def _short(name: str, width: int = 48) -> str:
    """Converter names fuse several op paths with ';' and run long: show the last path, ending with the layer."""
    parts = [p for p in name.split(";") if p]
    last = parts[-1] if parts else name
    return last if len(last) <= width else "..." + last[-(width - 3):]


def _granularity(w) -> str:
    return f"blockwise ({w.block_size})" if w.block_size else w.quantized


def _sized_at(report) -> str:
    if not report.resolved_at:
        return "batch 1"
    return ", ".join(f"{name}={'x'.join(map(str, shape))}" for name, shape in report.resolved_at.items())


def render(report) -> str:
    from edgecompress.tables import key_values, table

    io_headers = ["name", "shape", "dtype", "scale", "zero point"]
    sections = [
        key_values(
            [
                ("file", report.path),
                ("size (bytes)", report.size_bytes),
                ("gzip size (bytes)", report.gzip_bytes),
                ("weights (bytes)", report.weight_bytes),
                ("everything else (bytes)", report.other_bytes),
                ("parameters", report.parameter_count),
                ("estimated MACs", report.macs_total),
                ("shapes", f"dynamic: {report.resolved_tensors} tensors sized by the runtime at {_sized_at(report)}"
                 if report.resolved_tensors else "as stored in the file"),
                ("integer model", report.integer_model),
                ("stateful", f"{report.state_variables} variables kept between invocations"
                 if report.state_variables else "no"),
                ("float16 weights", f"{report.float16_weights} constants, dequantized to float32 as the model loads"
                 if report.float16_weights else "no"),
                ("subgraphs", report.subgraphs),
                ("signatures", ", ".join(report.signatures) or "-"),
            ],
            title="Model",
        ),
        table(io_headers, _io_rows(report.inputs), title="Inputs"),
        table(io_headers, _io_rows(report.outputs), title="Outputs"),
        table(
            ["operator", "kind", "count", "versions", "MACs"],
            [[o.name, o.kind, o.count, ",".join(map(str, o.versions)), o.macs] for o in report.operators],
            title="Operators",
        ),
        table(
            ["dtype", "tensors", "constants", "constant bytes", "activation bytes"],
            [[d.dtype, d.tensors, d.constant_tensors, d.constant_bytes, d.activation_bytes] for d in report.dtypes],
            title="Tensors by dtype",
        ),
        table(
            ["weight tensor", "shape", "dtype", "quantized", "storage", "bytes", "dense bytes", "sparsity", "distinct"],
            [
                [_short(w.name), str(w.shape), w.dtype, _granularity(w), w.storage, w.stored_bytes, w.dense_bytes,
                 w.sparsity, w.distinct_values]
                for w in report.weights
            ],
            title="Weight tensors",
        ),
    ]
    if report.warnings:
        sections.append("Warnings\n" + "\n".join(f"! {w}" for w in report.warnings))
    return "\n\n".join(sections)


@click.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@input_shape_option("Size an input with free dimensions (batch 1 first; repeat for several inputs) before MACs and "
                    "sizes are counted [default: 1 in every free dimension].")
@json_option
def inspect_command(model: Path, input_shape: tuple[str, ...], as_json: bool) -> None:
    """Show a .tflite file's inputs, operators, dtypes, parameters, weight sparsity and estimated MACs.

    Flex (SELECT_TF_OPS) and custom operators are listed: whether a runtime has them is for that runtime to say
    (benchmark and check ask it).
    """
    from edgecompress.inspect import inspect_model
    from edgecompress.shapes import parse_input_shapes

    emit(inspect_model(model, parse_input_shapes(input_shape)), as_json, render)


COMMANDS = [inspect_command]
