"""A causal language model to a .tflite with a KV cache: the `prefill` and `decode` signatures LiteRT-LM runs.

The signatures follow LiteRT-LM's runtime (the names its liblitert-lm.so looks up, and litert-torch's generative
exports): inputs `tokens` (int32, (1, N)), `input_pos` (int32, (N,)) and per layer `kv_cache_k_{i}` /
`kv_cache_v_{i}` (float32, (1, heads, seq_len, head_dim)); outputs the updated caches under the same names,
and `logits` (float32, (1, N, vocab)). `prefill` takes N = the prefill length (a prompt padded to it: the padding
writes cache rows that decoding then overwrites, and no real token attends to them); `decode` takes one token.

The model is any Keras causal LM with KerasHub's interface `call_with_cache(token_ids, cache,
cache_update_index)` and the cache (1, depth, 2, context, heads, head_dim): one `edgecompress.text.lm.build_causal_lm`
made, or a KerasHub CausalLM task (GPT2CausalLM, GemmaCausalLM, ...; its shape read from its backbone), a file of
it loaded in safe mode (edgecompress.text.lm.as_causal_lm).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgecompress.errors import UserError
from edgecompress.models import import_tf
from edgecompress.generate import CACHE_PREFIX, DECODE, INPUT_POS, LOGITS, PREFILL, TOKENS
from edgecompress.text.lm import CausalLM, LMShape, as_causal_lm



def cache_shape(shape: LMShape) -> tuple[int, int, int, int]:
    """A cache tensor in the file: (1, heads, seq_len, head_dim), the layout LiteRT-LM reads the context from
    (its third dimension: with (1, seq_len, heads, head_dim) the runtime took the head count for the context)."""
    return (1, shape.heads, shape.seq_len, shape.head_dim)


def _from_file(tf: Any, cache: Any) -> Any:
    return tf.transpose(cache, [0, 2, 1, 3])  # (1, heads, seq_len, head_dim) -> call_with_cache's (1, seq_len, heads, ...)


def _to_file(tf: Any, cache: Any) -> Any:
    return tf.transpose(cache, [0, 2, 1, 3])


def cache_name(kind: str, layer: int) -> str:
    """kv_cache_k_0, kv_cache_v_0, ...: LiteRT-LM's per-layer cache tensors."""
    return f"{CACHE_PREFIX}{kind}_{layer}"


@dataclass(frozen=True)
class GenerativeSpec:
    shape: LMShape
    prefill_length: int


def causal_lm(model: Any, context: int | None = None) -> CausalLM:
    """MODEL as the export takes it (module doc); any other model is refused in one line."""
    try:
        return as_causal_lm(model, context)
    except (ValueError, AttributeError, IndexError) as exc:
        raise UserError(f"--task generate takes causal language models with KerasHub's call_with_cache (the ones "
                        f"edgecompress.text.lm builds, KerasHub's CausalLM tasks), and this one cannot be exported: "
                        f"{exc}", settings=("context",)) from None


def generative_module(lm: CausalLM, spec: GenerativeSpec) -> Any:
    """A tf.Module whose `prefill` and `decode` functions have LiteRT-LM's signatures (module doc)."""
    tf = import_tf()
    step = lm.step
    shape = spec.shape
    cache_spec = tf.TensorSpec(cache_shape(shape), tf.float32)
    names = [cache_name(kind, layer) for layer in range(shape.depth) for kind in ("k", "v")]

    def run(tokens: Any, input_pos: Any, caches: dict[str, Any]) -> dict[str, Any]:
        cache = tf.stack([tf.stack([_from_file(tf, caches[cache_name("k", i)]), _from_file(tf, caches[cache_name("v", i)])],
                                   axis=1) for i in range(shape.depth)], axis=1)  # (1, depth, 2, seq_len, heads, head_dim)
        logits, _, cache = step(tokens, cache, input_pos[0])
        out = {LOGITS: logits}
        for i in range(shape.depth):
            out[cache_name("k", i)] = _to_file(tf, cache[:, i, 0])
            out[cache_name("v", i)] = _to_file(tf, cache[:, i, 1])
        return out

    def signature(length: int) -> Callable[..., dict[str, Any]]:
        specs = {TOKENS: tf.TensorSpec((1, length), tf.int32, name=TOKENS),
                 INPUT_POS: tf.TensorSpec((length,), tf.int32, name=INPUT_POS),
                 **{n: tf.TensorSpec(cache_spec.shape, tf.float32, name=n) for n in names}}

        @tf.function(input_signature=[specs])
        def fn(inputs: dict[str, Any]) -> dict[str, Any]:
            return run(inputs[TOKENS], inputs[INPUT_POS], {n: inputs[n] for n in names})

        return fn

    module = tf.Module()
    module.model = lm.model  # owns the variables the functions read
    # A Keras 3 model (KerasHub's) wraps each tf.Variable; unless the module holds the tf.Variables themselves, the
    # SavedModel does not tie them to what the functions capture and the converter leaves them as uninitialized
    # VAR_HANDLE reads: GPT-2's file gave NaN everywhere.
    module.tf_variables = [v if isinstance(v, tf.Variable) else v._value for v in lm.model.variables]
    module.prefill = signature(spec.prefill_length)
    module.decode = signature(1)
    return module


def generative_tflite(lm: CausalLM, prefill_length: int | None = None) -> tuple[bytes, GenerativeSpec]:
    """LM as float32 .tflite bytes with the prefill and decode signatures, and what they take."""
    tf = import_tf()
    shape = lm.shape
    length = prefill_length or shape.seq_len // 2
    if not 1 <= length <= shape.seq_len:
        raise UserError(f"prefill length {length} is outside 1..{shape.seq_len} (the model's context): give a "
                        "shorter --prefill-length", settings=("prefill_length",))
    spec = GenerativeSpec(shape, length)
    module = generative_module(lm, spec)
    with tempfile.TemporaryDirectory() as folder:
        # Through a SavedModel: the converter keeps each signature's name and its inputs' and outputs' names.
        tf.saved_model.save(module, folder, signatures={
            PREFILL: module.prefill.get_concrete_function(), DECODE: module.decode.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[PREFILL, DECODE])
        return converter.convert(), spec


# ------------------------------------------------------------------------------------------ conversion

GREEDY_PROMPT, GREEDY_TOKENS = 8, 32  # each validation greedy generation: its prompt and generated lengths
MIN_TOP1 = 0.9  # teacher-forced next-token agreement below which the export is said to compute something else


@dataclass(frozen=True)
class GenerativeValidation:
    """The .tflite against the Keras model: teacher-forced logits at every position of SEQUENCES (the first
    prefill-length ids through `prefill`, the rest through `decode`), and greedy generations from prompts."""

    sequences: int
    positions: int
    top1_agreement: float  # share of positions whose next-token argmax is the Keras model's
    max_abs_logit_error: float
    nonfinite: int  # positions with a NaN or Inf logit
    greedy_identical: int  # generations identical to the Keras model's, token for token
    greedy_prompts: int
    greedy_tokens: int
    first_divergence: list[int | None]  # per prompt: the first generated position that differs


@dataclass(frozen=True)
class GenerativeConversion:
    output: str
    quantize: str
    size_bytes: int
    gzip_bytes: int
    source: str
    prefill_length: int
    context: int
    vocab_size: int
    algorithm: str | None
    validation: GenerativeValidation
    warnings: list[str]
    seconds: float


def convert_generative(model_path: str | Path, output: str | Path, quantize: str = "none",
                       prefill_length: int | None = None, validation_data: str | Path | None = None,
                       block_size: int | None = None, algorithm: str = "auto", force: bool = False,
                       unsafe: bool = False, sequences: int = 8, seed: int = 0,
                       tokenizer: str | Path | None = None, context: int | None = None) -> GenerativeConversion:
    """A causal LM (a Keras file) to a prefill/decode .tflite in QUANTIZE (none or a weight mode), checked against
    the Keras model on VALIDATION_DATA's token windows (`x`, int32; random ids without it), written atomically.
    An OUTPUT ending in .litertlm is the LiteRT-LM bundle of that file, TOKENIZER (default: tokenizer.json beside
    the model) and its metadata (converters/litertlm.py). CONTEXT: the cache's rows (default: the model's
    positions; a model without a limit of its own, such as rotary positions, needs it)."""
    import time

    from edgecompress.converters.litert_quantize import quantize_weights
    from edgecompress.converters.modes import WEIGHT_MODES
    from edgecompress.fileio import check_output, gzip_size, write_bytes_atomic
    from edgecompress.models import load_model
    from edgecompress.progress import note

    started = time.perf_counter()
    if quantize != "none" and quantize not in WEIGHT_MODES + ("dynamic",):
        raise UserError(f"--task generate takes quantize none, dynamic or a weight mode ({', '.join(WEIGHT_MODES)}), "
                        f"not {quantize}: the KV cache stays float")
    out = check_output(output, force)
    words = None
    if out.suffix == ".litertlm":
        words = Path(tokenizer) if tokenizer else Path(model_path).with_name("tokenizer.json")
        if not words.is_file():
            raise UserError(f"tokenizer {words} does not exist: a .litertlm bundle holds the model's tokenizer.json, "
                            "give it with --tokenizer", settings=("tokenizer",))
    loaded = load_model(Path(model_path), unsafe=unsafe)
    if not loaded.is_keras:
        raise UserError(f"{model_path} is a SavedModel: --task generate takes the Keras causal LM (.keras or .h5)")
    lm = causal_lm(loaded.model, context)
    note("converting: prefill and decode signatures with a KV cache")
    data, spec = generative_tflite(lm, prefill_length)
    chosen = None
    if quantize != "none":
        weights = quantize_weights(data, quantize, block_size, source=str(model_path), algorithm=algorithm)
        data, chosen = weights.data, weights.algorithm
    ids = _validation_ids(validation_data, spec, sequences, seed)
    with tempfile.TemporaryDirectory(prefix="edgecompress-lm-") as folder:
        candidate = Path(folder) / "lm.tflite"
        candidate.write_bytes(data)
        note(f"validating: {len(ids)} sequences teacher-forced and greedy against the Keras model")
        validation = validate_generative(lm, candidate, spec, ids)
    if validation.nonfinite:
        raise UserError(f"the {'float32' if quantize == 'none' else quantize} language model gives NaN or Inf logits at {validation.nonfinite} of "
                        f"{validation.positions} positions: nothing written; try a less aggressive quantize mode")
    warnings = []
    if validation.top1_agreement < MIN_TOP1:
        warnings.append(f"next-token agreement with the Keras model is {validation.top1_agreement:.1%} (below "
                        f"{MIN_TOP1:.0%}): the {quantize} file predicts other tokens")
    for warning in warnings:
        note(f"warning: {warning}")
    if words is not None:
        from edgecompress.converters.litertlm import write_litertlm

        with tempfile.TemporaryDirectory(prefix="edgecompress-lm-") as folder:
            (Path(folder) / "lm.tflite").write_bytes(data)
            write_litertlm(Path(folder) / "lm.tflite", words, out, spec.shape.seq_len, force=True)
        data = out.read_bytes()
    else:
        write_bytes_atomic(out, data)
    return GenerativeConversion(str(out), quantize, len(data), gzip_size(data), str(model_path), spec.prefill_length,
                                spec.shape.seq_len, spec.shape.vocab_size, chosen, validation, warnings,
                                time.perf_counter() - started)


def _validation_ids(path: str | Path | None, spec: GenerativeSpec, count: int, seed: int) -> np.ndarray:
    """COUNT sequences of the model's context length: the first windows of PATH's `x`, else seeded random ids."""
    length = spec.shape.seq_len
    if path is None:
        return np.random.default_rng(seed).integers(0, spec.shape.vocab_size, (count, length)).astype(np.int32)
    from edgecompress.fileio import require_file

    with np.load(require_file(path, "validation data")) as data:
        if "x" not in data.files:
            raise UserError(f"{path} has no `x`: give token windows under x (int32, one per row)")
        x = np.asarray(data["x"])
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() >= spec.shape.vocab_size:
        raise UserError(f"{path}'s x must be token ids (rows of integers in 0..{spec.shape.vocab_size - 1}), "
                        f"not {x.dtype} of shape {x.shape}")
    return x[:count, :length].astype(np.int32)


def validate_generative(lm: CausalLM, tflite: Path, spec: GenerativeSpec, ids: np.ndarray) -> GenerativeValidation:
    from edgecompress.generate import LMRunner

    tf = import_tf()
    runner = LMRunner(tflite)
    reference = np.asarray(lm.forward(ids))
    prompt = min(spec.prefill_length, ids.shape[1] - 1)
    agree, total, worst, nonfinite = 0, 0, 0.0, 0
    for row, ref in zip(ids, reference):
        got = runner.teacher_forced([int(i) for i in row], prompt)
        finite = np.isfinite(got).all(axis=-1)
        nonfinite += int((~finite).sum())
        agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
        total += len(row)
        worst = max(worst, float(np.abs(np.where(finite[:, None], got, 0) - ref).max()))
    step = lm.step
    identical, divergence = 0, []
    greedy_prompt = min(GREEDY_PROMPT, spec.shape.seq_len // 2)  # a short context holds fewer tokens
    budget = min(GREEDY_TOKENS, spec.shape.seq_len - greedy_prompt)
    for row in ids:
        prompt_ids = [int(i) for i in row[:greedy_prompt]]
        theirs = runner.generate(prompt_ids, budget).tokens
        mine = _keras_greedy(tf, step, spec, prompt_ids, budget)
        first = next((i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b), None)
        identical += first is None
        divergence.append(first)
    return GenerativeValidation(len(ids), total, agree / max(total, 1), worst, nonfinite, identical, len(ids),
                                budget, divergence)


def _keras_greedy(tf: Any, step: Callable[..., Any], spec: GenerativeSpec, prompt: list[int], count: int) -> list[int]:
    shape = spec.shape
    cache = tf.zeros((1, shape.depth, 2, shape.seq_len, shape.heads, shape.head_dim))
    logits, _, cache = step(tf.constant([prompt], tf.int32), cache, 0)
    out: list[int] = []
    position = len(prompt)
    while True:
        token = int(tf.argmax(logits[0, -1]))
        out.append(token)
        if len(out) >= count:
            return out
        logits, _, cache = step(tf.constant([[token]], tf.int32), cache, position)
        position += 1
