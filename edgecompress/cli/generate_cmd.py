"""`edgecompress generate`: text from a language-model .tflite (prefill and decode signatures), streamed, with
time to first token and tokens per second; the runtime side only (no TensorFlow)."""
from __future__ import annotations

from typing import Any

import click

from edgecompress.cli.options import emit, json_option
from edgecompress.tables import key_values


@click.command("generate")
@click.argument("model", type=click.Path(path_type=str))
@click.option("--prompt", required=True, help="The text to continue.")
@click.option("--max-tokens", type=int, default=64, show_default=True, help="The most tokens to generate.")
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="0: greedy (the likeliest token each step); above: sampled from softmax(logits / T).")
@click.option("--seed", type=int, default=0, show_default=True, help="Makes sampling reproducible.")
@click.option("--tokenizer", type=click.Path(path_type=str),
              help="The model's tokenizer.json [default: tokenizer.json beside MODEL].")
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads [default: the runtime's].")
@json_option
def generate_command(model: str, prompt: str, max_tokens: int, temperature: float, seed: int, tokenizer: str | None,
                     threads: int | None, as_json: bool) -> None:
    """Continue PROMPT with the language model MODEL (.tflite written by `convert --task generate`); the text is
    streamed as it comes, then time to first token and tokens per second."""
    from edgecompress.generate import generate_text

    result = generate_text(model, prompt, tokenizer, max_tokens, temperature, seed, threads,
                           on_text=None if as_json else lambda piece: click.echo(piece, nl=False))
    if not as_json:
        click.echo("\n")
    emit(result, as_json, _render)


def _render(result: Any) -> str:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f} tokens/s"

    return key_values([
        ("prompt tokens", result.prompt_tokens),
        ("generated tokens", f"{len(result.tokens)} (stopped: {result.stopped})"),
        ("time to first token", f"{result.time_to_first_token_ms:.2f} ms"),
        ("prefill", rate(result.prefill_tokens_per_s)),
        ("decode", rate(result.decode_tokens_per_s)),
        ("runtime", result.runtime),
    ])


COMMANDS = [generate_command]
