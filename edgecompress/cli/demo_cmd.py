"""`edgecompress demo`: the bundled example end to end (train, sweep every technique, report per device)."""
from __future__ import annotations

from typing import Any

import click

from edgecompress.cli.options import emit, force_option, json_option
from edgecompress.cli.run_cmd import render_run


@click.command("demo")
@click.option("-o", "--output-dir", default="edgecompress-demo", show_default=True,
              type=click.Path(file_okay=False, path_type=str), help="Folder for the model, data, recipe and run.")
@click.option("--task", type=click.Choice(["digits", "text", "generate"]), default="digits", show_default=True,
              help="digits: a CNN on the bundled handwritten digits; text: a BERT-style encoder on the bundled "
              "movie-review snippets (about 25 minutes on 2 cores); generate: a causal language model on the same "
              "texts, exported with a KV cache, judged by perplexity and timed per token.")
@click.option("--epochs", type=click.IntRange(min=1),
              help="The most training epochs of the example model [default: 20 for digits, 8 for text, 6 for "
              "generate (it stops once validation accuracy or loss stops improving)].")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Variants built at once, each in its own worker process.")
@force_option
@json_option
def demo_command(output_dir: str, task: str, epochs: int | None, jobs: int, force: bool, as_json: bool) -> None:
    """Train the example model on bundled data, then run its bundled recipe. digits: 11 variants of a CNN
    covering dynamic, float16 and int8 quantization, pruning, QAT, clustering, their combination, distillation
    and low-rank factorization; text: a transformer's attention heads and feed-forward units pruned, distilled,
    factorised and quantized down to int4; generate: a language model's weight modes, pruned heads and units and
    a distilled student, picked per device by decode speed within 10% of its perplexity. Each variant is scored on
    held-out data, benchmarked here and estimated on a Raspberry Pi 4 and an Android phone. Writes report.md with
    plots in OUTPUT_DIR/run."""
    from edgecompress.demo import run_demo

    result = run_demo(output_dir, force=force, epochs=epochs, jobs=jobs, task=task)
    emit(result, as_json, render_demo)




def render_demo(result: Any) -> str:
    return (render_run(result.run)
            + f"\n\ntrained the baseline in {result.train_seconds:.0f} s, ran the recipe in {result.run_seconds:.0f} s"
            + f"\nrecipe: {result.recipe} (edit it and run `edgecompress run {result.recipe}` to sweep again)")


COMMANDS = [demo_command]
