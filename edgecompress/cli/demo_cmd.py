"""`edgecompress demo`: the bundled example end to end (train, export float32 and int8, compare)."""
from __future__ import annotations

from typing import Any

import click

from ..tables import table
from .options import emit, force_option, json_option


@click.command("demo")
@click.option("-o", "--output-dir", default="edgecompress-demo", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Folder for the model, data and .tflite files.")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True, help="Training epochs.")
@force_option
@json_option
def demo_command(output_dir: str, epochs: int, force: bool, as_json: bool) -> None:
    """Train the example CNN on the bundled digits, export it as float32 and int8 .tflite files, and compare
    size and accuracy on the held-out test split."""
    from ..demo import run_demo

    emit(run_demo(output_dir, force=force, epochs=epochs), as_json, render_demo)


def render_demo(result: Any) -> str:
    base = result.rows[0]
    rows = [[r.model, r.size_bytes, r.gzip_bytes, f"{base.size_bytes / r.size_bytes:.1f}x",
             f"{r.accuracy:.2%}", f"{(r.accuracy - base.accuracy) * 100:+.1f}"] for r in result.rows]
    return table(["model", "size (bytes)", "gzip (bytes)", "smaller", "test accuracy", "vs keras (points)"], rows,
                 title=f"Digits classifier, {result.test_samples} held-out test images (files in {result.output_dir})")


COMMANDS = [demo_command]
