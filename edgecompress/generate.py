"""Text generation with a language-model .tflite that has `prefill` and `decode` signatures (converters/generative.py
writes them; LiteRT-LM's runtime reads the same): runtime side only, no TensorFlow.

The prompt is cut into prefill-length chunks run through `prefill` (the last chunk padded), then `decode` runs one
token at a time, each reading and returning the per-layer KV caches. Timing follows LiteRT-LM's benchmark: time to
first token (the prefill and the first decode step), prefill tokens/s (prompt tokens over the prefill time) and
decode tokens/s (generated tokens after the first over their time).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgecompress.errors import UserError
from edgecompress.measure.stats import LatencyStats
from edgecompress.runtime import load_interpreter

PREFILL, DECODE = "prefill", "decode"
TOKENS, INPUT_POS, LOGITS = "tokens", "input_pos", "logits"
CACHE_PREFIX = "kv_cache_"


@dataclass(frozen=True)
class LMFile:
    """What a generative .tflite takes: its prefill length, context length and cache tensors."""

    prefill_length: int
    context: int  # the caches' rows: prompt and generated tokens together
    vocab_size: int
    caches: dict[str, tuple[int, ...]]  # name -> shape


@dataclass
class Generation:
    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)  # generated, the end-of-text token excluded
    stopped: str = "max_tokens"  # or "eos", "context"
    time_to_first_token_s: float = 0.0
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None  # over the tokens after the first


class LMRunner:
    """A generative .tflite loaded once, run step by step."""

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        self.path = Path(path)
        self.interpreter, self.runtime = load_interpreter(path, num_threads=num_threads)
        signatures = self.interpreter.get_signature_list()
        missing = [s for s in (PREFILL, DECODE) if s not in signatures]
        if missing:
            raise UserError(f"{self.path} has no {' and no '.join(missing)} signature (it has "
                            f"{', '.join(signatures) or 'none'}): convert the language model with "
                            "`edgecompress convert MODEL -o OUT.tflite --task generate`")
        self._prefill = self.interpreter.get_signature_runner(PREFILL)
        self._decode = self.interpreter.get_signature_runner(DECODE)
        self.spec = self._spec()

    def _spec(self) -> LMFile:
        inputs = self._prefill.get_input_details()
        caches = {n: tuple(int(v) for v in d["shape"]) for n, d in inputs.items() if n.startswith(CACHE_PREFIX)}
        if TOKENS not in inputs or INPUT_POS not in inputs or not caches:
            raise UserError(f"{self.path}'s prefill signature lacks {TOKENS}, {INPUT_POS} or {CACHE_PREFIX}* inputs: "
                            "it is not a generative model edgecompress or litert-torch wrote")
        vocab = int(self._decode.get_output_details()[LOGITS]["shape"][-1])
        # A cache is (1, heads, seq_len, head_dim): its third dimension is the context (LiteRT-LM reads it there).
        return LMFile(int(inputs[TOKENS]["shape"][1]), next(iter(caches.values()))[2], vocab, caches)

    def empty_caches(self) -> dict[str, np.ndarray]:
        return {n: np.zeros(s, np.float32) for n, s in self.spec.caches.items()}

    def prefill(self, ids: list[int], caches: dict[str, np.ndarray], start: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """IDS at positions START.. through prefill chunks: (the logits of every id, (n, vocab)), the caches."""
        size = self.spec.prefill_length
        logits = []
        for offset in range(0, len(ids), size):
            if start + offset + size > self.spec.context:
                # A padded chunk would write rows past the cache's end (the file's scatter fails): the last
                # tokens go through decode one at a time instead.
                for i, token in enumerate(ids[offset:]):
                    row, caches = self.decode(token, start + offset + i, caches)
                    logits.append(row[None])
                break
            chunk = ids[offset:offset + size]
            tokens = np.zeros((1, size), np.int32)
            tokens[0, :len(chunk)] = chunk
            pos = np.arange(start + offset, start + offset + size, dtype=np.int32)
            out = self._prefill(**{TOKENS: tokens, INPUT_POS: pos}, **caches)
            caches = {n: out[n] for n in caches}
            logits.append(out[LOGITS][0, :len(chunk)])
        return np.concatenate(logits), caches

    def decode(self, token: int, position: int, caches: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        out = self._decode(**{TOKENS: np.array([[token]], np.int32), INPUT_POS: np.array([position], np.int32)}, **caches)
        return out[LOGITS][0, 0], {n: out[n] for n in caches}

    def teacher_forced(self, ids: list[int], prompt: int) -> np.ndarray:
        """Logits at every position of IDS: the first PROMPT through prefill, the rest one decode step each."""
        first, caches = self.prefill(ids[:prompt], self.empty_caches())
        rows = [first]
        for position in range(prompt, len(ids)):
            row, caches = self.decode(ids[position], position, caches)
            rows.append(row[None])
        return np.concatenate(rows)

    def generate(self, prompt: list[int], max_tokens: int, temperature: float = 0.0, seed: int = 0,
                 eos: int | None = None, on_token: Callable[[int], None] | None = None) -> Generation:
        """Up to MAX_TOKENS after PROMPT: greedy at temperature 0, else sampled from softmax(logits / T)."""
        if not prompt:
            raise UserError("the prompt is empty: give some text to continue", settings=("prompt",))
        if len(prompt) >= self.spec.context:
            raise UserError(f"the prompt is {len(prompt)} tokens, the model's context {self.spec.context}: shorten it",
                            settings=("prompt",))
        if max_tokens < 1:
            raise UserError(f"max_tokens {max_tokens} is below 1: ask for at least one token", settings=("max_tokens",))
        rng = np.random.default_rng(seed)
        result = Generation(len(prompt))
        start = time.perf_counter()
        logits, caches = self.prefill(prompt, self.empty_caches())
        prefilled = time.perf_counter()
        result.prefill_tokens_per_s = len(prompt) / max(prefilled - start, 1e-9)
        row, position = logits[-1], len(prompt)
        first_at = None
        while True:
            token = _pick(row, temperature, rng)
            if first_at is None:
                first_at = time.perf_counter()
                result.time_to_first_token_s = first_at - start
            if eos is not None and token == eos:
                result.stopped = "eos"
                break
            result.tokens.append(token)
            if on_token is not None:
                on_token(token)
            if len(result.tokens) >= max_tokens:
                break
            if position >= self.spec.context:
                result.stopped = "context"
                break
            row, caches = self.decode(token, position, caches)
            position += 1
        decoded = len(result.tokens) - 1
        if decoded > 0:
            result.decode_tokens_per_s = decoded / max(time.perf_counter() - first_at, 1e-9)
        return result


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = (logits - logits.max()) / temperature
    probs = np.exp(scaled)
    return int(rng.choice(len(probs), p=probs / probs.sum()))


@dataclass
class TextGeneration:
    """`generate`'s result: the text after the prompt and how fast it came."""

    model: str
    prompt: str
    text: str
    tokens: list[int]
    prompt_tokens: int
    stopped: str
    time_to_first_token_ms: float
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    runtime: str


def generate_text(model: str | Path, prompt: str, tokenizer: str | Path | None = None, max_tokens: int = 64,
                  temperature: float = 0.0, seed: int = 0, num_threads: int | None = None,
                  on_text: Callable[[str], None] | None = None) -> TextGeneration:
    """Continue PROMPT with MODEL, its TOKENIZER (default: tokenizer.json beside it); ON_TEXT receives each new
    piece of text as it is generated."""
    from edgecompress.runtime import check_tflite_file
    from edgecompress.text.bpe import load_tokenizer

    if temperature < 0:
        raise UserError(f"temperature {temperature} is below 0: use 0 for greedy, or a positive value",
                        settings=("temperature",))
    if not prompt.strip():
        raise UserError("the prompt is empty: give some text to continue", settings=("prompt",))
    check_tflite_file(model)
    path = Path(tokenizer) if tokenizer else Path(model).with_name("tokenizer.json")
    if not path.is_file():
        raise UserError(f"tokenizer {path} does not exist: give the model's tokenizer.json", settings=("tokenizer",))
    words = load_tokenizer(path)
    runner = LMRunner(model, num_threads)
    generated: list[int] = []
    shown = 0  # characters passed to ON_TEXT so far

    def on_token(token: int) -> None:
        nonlocal shown
        generated.append(token)
        text = words.decode(generated)  # whole: a character may span several tokens
        if on_text is not None and not text.endswith("\ufffd"):
            on_text(text[shown:])
            shown = len(text)

    result = runner.generate(words.encode(prompt, bos=True), max_tokens, temperature, seed, words.eos_id, on_token)
    return TextGeneration(str(model), prompt, words.decode(result.tokens), result.tokens, result.prompt_tokens,
                          result.stopped, 1000 * result.time_to_first_token_s, result.prefill_tokens_per_s,
                          result.decode_tokens_per_s, f"{runner.runtime.name} {runner.runtime.version}")


# ------------------------------------------------------------------------------------------- scoring

@dataclass(frozen=True)
class NextTokenScores:
    windows: int
    tokens: int  # next tokens scored
    perplexity: float  # exp of their mean cross-entropy
    accuracy: float  # share whose highest logit is the true next token


def score_next_tokens(runner: LMRunner, x: np.ndarray, y: np.ndarray) -> NextTokenScores:
    """RUNNER's perplexity and next-token accuracy on windows X (token ids, (N, T)) with next tokens Y (N, T):
    each window prefilled from empty caches, every logit computed by the runtime."""
    return scores_of(((runner.prefill([int(i) for i in ids], runner.empty_caches())[0], targets)
                      for ids, targets in zip(x, y)), len(x))


def scores_of(pairs: Iterable[tuple[np.ndarray, np.ndarray]], windows: int) -> NextTokenScores:
    """Perplexity and next-token accuracy over PAIRS of (logits (..., T, vocab), next tokens (..., T))."""
    nll, correct = [], 0
    for logits, targets in pairs:
        logits = np.asarray(logits, np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        nll.append(-np.take_along_axis(log_p, targets[..., None].astype(np.int64), axis=-1).reshape(-1))
        correct += int((logits.argmax(axis=-1) == targets).sum())
    flat = np.concatenate(nll)
    return NextTokenScores(windows, flat.size, float(np.exp(flat.mean())), correct / flat.size)


def token_windows_of(path: str | Path, context: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """An .npz's windows `x` (token ids, (N, T)) and next tokens `y` (the same shape; without it, each window's
    own ids one place on: x[:, 1:] scored after x[:, :-1]), checked against a model's CONTEXT and VOCAB_SIZE."""
    from edgecompress.fileio import require_file

    try:
        with np.load(require_file(path, "evaluation data"), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npz file ({exc}): save token windows with numpy.savez(x=...)") from None
    x = arrays.get("x")
    if x is None or x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise UserError(f"{path} needs token windows under x (integers, one window per row) for a language model")
    y = arrays.get("y")
    if y is None:
        x, y = x[:, :-1], x[:, 1:]
    if y.shape != x.shape or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: y must hold the next token at each position of x, shape {x.shape}, not {y.shape}")
    if x.shape[1] < 1 or x.shape[1] > context:
        raise UserError(f"{path}: windows of {x.shape[1]} tokens do not fit the model's context of {context}: "
                        "cut them shorter")
    for name, ids in (("x", x), ("y", y)):
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise UserError(f"{path}: {name} holds ids outside the vocabulary 0..{vocab_size - 1}: tokenize with "
                            "the model's tokenizer")
    return x, y


# ------------------------------------------------------------------------------------------- measuring

@dataclass
class LMMeasurement:
    """A language-model .tflite timed on this host: whole prefill calls and single decode steps (benchmark)."""

    model: str
    runtime: str
    threads: int | None
    prefill_length: int
    context: int
    size_bytes: int
    init_ms: float
    prefill_ms: LatencyStats  # one prefill call of prefill_length tokens
    decode_ms: LatencyStats  # one decode step
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    time_to_first_token_ms: float  # a full prefill and one decode step, at the medians
    peak_rss_mb: float
    cache_bytes: int  # every layer's K and V cache: what a decode step reads besides the weights


def is_generative(path: str | Path) -> bool:
    """Whether PATH has the prefill and decode signatures (read from the file, nothing run); a file that cannot be
    read is not (whoever runs it says what is wrong with it)."""
    from edgecompress.tflite_reader import read_model

    try:
        names = {s.key for s in read_model(path).signatures}
    except UserError:
        return False
    return {PREFILL, DECODE} <= names


def measure_lm(path: str | Path, num_threads: int | None = None, runs: int = 10, seed: int = 0) -> LMMeasurement:
    """RUNS prefill calls from empty caches and RUNS x the decode steps that fit after one, each timed alone (one
    warm-up of each first). Run it in a child (benchmark does): the peak RSS is the process's."""
    import resource

    from edgecompress.measure.stats import latency_stats

    start = time.perf_counter()
    runner = LMRunner(path, num_threads)
    init_ms = 1000 * (time.perf_counter() - start)
    spec = runner.spec
    rng = np.random.default_rng(seed)
    prompt = [int(i) for i in rng.integers(0, spec.vocab_size, spec.prefill_length)]
    runner.prefill(prompt, runner.empty_caches())  # warm-up
    prefill_ms = []
    for _ in range(runs):
        began = time.perf_counter()
        _, caches = runner.prefill(prompt, runner.empty_caches())
        prefill_ms.append(1000 * (time.perf_counter() - began))
    steps = max(1, min(32, spec.context - spec.prefill_length))
    decode_ms: list[float] = []
    for _ in range(runs):
        position, work = spec.prefill_length, caches
        for token in rng.integers(0, spec.vocab_size, steps):
            began = time.perf_counter()
            _, work = runner.decode(int(token), position, work)
            decode_ms.append(1000 * (time.perf_counter() - began))
            position += 1
    prefill, decode = latency_stats(prefill_ms), latency_stats(decode_ms)
    return LMMeasurement(str(path), f"{runner.runtime.name} {runner.runtime.version}", num_threads,
                         spec.prefill_length, spec.context, Path(path).stat().st_size, init_ms, prefill, decode,
                         1000 * spec.prefill_length / prefill.p50, 1000 / decode.p50, prefill.p50 + decode.p50,
                         resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                         sum(4 * int(np.prod(shape)) for shape in spec.caches.values()))
