"""Accuracy of a .tflite or Keras model on labelled data: top-1 for integer labels (one-hot too), F1 for 0/1
labels shaped like an output of scores in [0, 1] (several decisions per sample: notes in a piano roll, tags,
mask pixels), MAE for float ones.

The .tflite path touches only numpy and edgecompress.runtime (through edgecompress.runner), so it runs on a
Raspberry Pi without TensorFlow; only a Keras model pulls TensorFlow in, through edgecompress.models.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgecompress.calibration.checks import check_labels, check_source
from edgecompress.calibration.sources import Source, open_source
from edgecompress.errors import UserError
from edgecompress.isolation import crash_for_tests, run_isolated
from edgecompress.runtime import TFLITE_IDENTIFIER
from edgecompress.specs import TensorSpec

KERAS_BATCH = 256
KERAS_LM_BATCH = 16  # windows per forward pass: a window's logits are (T, vocab) floats
# task -> what judges it; a language model is judged by its perplexity on held-out text (lower is better)
METRICS = {"classification": "accuracy", "multilabel": "f1", "regression": "mae", "language-model": "perplexity"}


@dataclass(frozen=True)
class EvalResult:
    model: str
    samples: int
    task: str  # "classification", "multilabel" or "regression"
    accuracy: float | None
    mae: float | None
    runtime: str
    output: str = ""  # the output scored (a model with several outputs is scored on one)
    output_index: int = 0  # its position, the same in the Keras model and its .tflite
    precision: float | None = None  # binary classifiers (one sigmoid, 0/1 labels): of the positives decided
    recall: float | None = None  # and of the true positives found
    f1: float | None = None  # multilabel: of the decisions at 0.5 over every value (micro)
    perplexity: float | None = None  # language models: over every next token (accuracy: the top-1 share of them)

    @property
    def metric(self) -> str:
        """The name of the figure this result is judged by."""
        return METRICS[self.task]

    @property
    def score(self) -> float:
        """That figure: accuracy for a classifier, F1 for multilabel, MAE for regression."""
        return getattr(self, self.metric)

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract: {accuracy, f1 or mae, samples}, plus what ran."""
        metric = {self.metric: self.score}
        if self.perplexity is not None:
            metric.update(accuracy=self.accuracy)
        if self.precision is not None:
            metric.update(precision=self.precision, recall=self.recall)
        return {**metric, "samples": self.samples, "model": self.model, "task": self.task, "runtime": self.runtime,
                "output": self.output}


def evaluate(model_path: str | Path, data_path: str | Path, unsafe: bool = False,
             model_output: str | None = None, stream: bool = False) -> EvalResult:
    """Run MODEL_PATH (.tflite, or a Keras model) over DATA_PATH (.npz with inputs and labels under `y`).

    MODEL_OUTPUT (a name or a position) is the output the labels are for; by default the only output, or
    of several the only one holding class scores (see pick_output). A .tflite that keeps state between
    invocations is reset before each sample, as Keras does per batch, unless STREAM (samples in order)."""
    path = Path(model_path)
    from edgecompress.generate import is_generative

    if is_generative(path):
        return run_isolated(_evaluate_lm, str(path), str(data_path), what=f"the runtime, running {path.name}")
    if path.suffix.lower() == ".tflite" or (path.is_file() and _looks_like_tflite(path)):
        # In a child process: a file that crashes the runtime is one line (isolation.NativeCrash), not our death.
        return run_isolated(_evaluate_file, str(path), str(data_path), model_output, stream,
                            what=f"the runtime, running {path.name}")
    from edgecompress.models import load_model

    loaded = load_model(path, unsafe=unsafe)
    lm = _causal_lm(loaded.model, data_path)
    if lm is not None:
        return _evaluate_keras_lm(str(path), lm, data_path)
    return evaluate_keras(loaded, data_path, model_output)


def _evaluate_file(path: str, data_path: str, model_output: str | None, stream: bool) -> EvalResult:
    return _run(path, *_tflite(Path(path), stream), data_path, model_output)


def _evaluate_lm(path: str, data_path: str) -> EvalResult:
    """A language-model .tflite (prefill and decode signatures) on token windows: edgecompress.generate."""
    from edgecompress.generate import LMRunner, score_next_tokens, token_windows_of

    runner = LMRunner(path)
    scores = score_next_tokens(runner, *token_windows_of(data_path, runner.spec.context, runner.spec.vocab_size))
    return EvalResult(path, scores.windows, "language-model", scores.accuracy, None,
                      f"{runner.runtime.name} {runner.runtime.version}", "logits", perplexity=scores.perplexity)


def _causal_lm(model: Any, data_path: str | Path) -> Any:
    """MODEL as a causal LM (edgecompress.text.lm.as_causal_lm), or None for any other model. One without fixed
    positions (rotary, as Gemma's) is read at the length of DATA_PATH's windows."""
    from edgecompress.text.lm import as_causal_lm

    for context in (None, _window_length(data_path)):
        try:
            return as_causal_lm(model, context)
        except ValueError:
            continue
    return None


def _window_length(data_path: str | Path) -> int | None:
    try:
        with np.load(data_path, allow_pickle=False) as data:
            return int(data["x"].shape[1]) if "x" in data.files and data["x"].ndim == 2 else None
    except (OSError, ValueError):
        return None  # the data's own check says what is wrong with it


def _evaluate_keras_lm(path: str, lm: Any, data_path: str | Path) -> EvalResult:
    """A Keras causal LM on token windows: its forward pass's logits, scored as the .tflite's are."""
    from edgecompress.generate import scores_of, token_windows_of

    x, y = token_windows_of(data_path, lm.shape.seq_len, lm.shape.vocab_size)
    batches = ((lm.forward(x[i:i + KERAS_LM_BATCH].astype(np.int32)), y[i:i + KERAS_LM_BATCH])
               for i in range(0, len(x), KERAS_LM_BATCH))
    scores = scores_of(batches, len(x))
    return EvalResult(path, scores.windows, "language-model", scores.accuracy, None, "keras", "logits",
                      perplexity=scores.perplexity)


def evaluate_keras(loaded: Any, data_path: str | Path, model_output: str | None = None) -> EvalResult:
    """Score an already loaded Keras model (an edgecompress.models.LoadedModel) on DATA_PATH."""
    return _run(str(loaded.path), *_keras(loaded), data_path, model_output)


def pick_output(model: str, outputs: list[TensorSpec], predictions: list[np.ndarray], model_output: str | None,
                classification: bool) -> int:
    """The output the labels are for: MODEL_OUTPUT (a name, or a position), else the only output, else (for
    integer labels) the only one whose values are class scores; anything else is a one-line error listing them."""
    from edgecompress.compare import output_kind

    listed = ", ".join(f"{o.name} {'x'.join(map(str, p.shape[1:]))}" for o, p in zip(outputs, predictions))
    if model_output is not None:
        names = [o.name for o in outputs]
        if model_output in names:
            return names.index(model_output)
        if model_output.isdigit() and int(model_output) < len(outputs):
            return int(model_output)
        raise UserError(f"{model} has no output {model_output!r}: its outputs are {listed}; set model_output to "
                        "one of their names or positions", settings=("model_output",))
    if len(outputs) == 1:
        return 0
    classes = [i for i, p in enumerate(predictions) if output_kind(p) == "classes"] if classification else []
    if len(classes) == 1:
        return classes[0]
    raise UserError(f"{model} has {len(outputs)} outputs ({listed}): set model_output to the one the labels are for",
                    settings=("model_output",))


def evaluate_bytes(data: bytes, eval_data: str | Path, reference: EvalResult) -> EvalResult:
    """Score a .tflite held in memory on labelled EVAL_DATA (the runtime reads files), on the output REFERENCE
    was scored on: a .tflite keeps its Keras source's outputs' order, not their names."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgecompress-") as folder:
        path = Path(folder) / "candidate.tflite"
        path.write_bytes(data)
        return evaluate(path, eval_data, model_output=str(reference.output_index))


def drop_points(reference: EvalResult, other: EvalResult) -> float:
    """How much worse OTHER is than REFERENCE: top-1 (or F1) points for a classifier, MAE increase in % for
    regression."""
    if reference.task != "regression":
        return 100.0 * (reference.score - other.score)
    if not reference.mae:
        raise UserError(
            f"{reference.model} reproduces the labels exactly (MAE 0), so a relative MAE drop is undefined: "
            "give real targets, not the model's own outputs"
        )
    return 100.0 * (other.mae - reference.mae) / reference.mae  # type: ignore[operator]


def _run(
    model: str, inputs: Callable[[Source | None], list[TensorSpec]], outputs: list[TensorSpec],
    batches: Callable[[Source], Iterator[list[np.ndarray]]], runtime: str, data_path: str | Path,
    model_output: str | None,
) -> EvalResult:
    source = open_source(data_path, inputs(None))
    check_source(source, inputs(source))
    labels = check_labels(source)
    predictions = [np.concatenate(per_output) for per_output in zip(*batches(source))]
    index = pick_output(model, outputs, predictions, model_output, np.issubdtype(labels.dtype, np.integer))
    result = _score(model, predictions[index], labels, runtime, outputs[index].name)
    return dataclasses.replace(result, output=outputs[index].name, output_index=index)


def _looks_like_tflite(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8)[4:8] == TFLITE_IDENTIFIER


def _tflite(path: Path, stream: bool) -> tuple[list[TensorSpec], list[TensorSpec],
                                              Callable[[Source], Iterator[list[np.ndarray]]], str]:
    from edgecompress.runner import TFLiteRunner

    runner = TFLiteRunner(path)
    crash_for_tests(path)

    def inputs(source: Source | None) -> list[TensorSpec]:
        """What the data's arrays are taken as (TFLiteRunner.feed_specs: the one rule for integer inputs)."""
        if source is None:
            return runner.real_inputs
        return runner.feed_specs({name: np.dtype(column.dtype) for name, column in source.columns.items()})

    def batches(source: Source) -> Iterator[list[np.ndarray]]:
        specs = inputs(source)
        for i in range(source.count):
            yield runner.run(source.sample(i, specs), reset=not stream)

    state = ""
    if runner.state_variables:
        state = ", state carried from sample to sample" if stream else ", state reset before each sample"
    return inputs, runner.outputs, batches, f"{runner.runtime.name} {runner.runtime.version}{state}"


def _keras(loaded: Any) -> tuple[list[TensorSpec], list[TensorSpec], Callable[[Source], Iterator[list[np.ndarray]]],
                                 str]:
    from edgecompress.models import import_tf

    tf = import_tf()

    def batches(source: Source) -> Iterator[list[np.ndarray]]:
        for start in range(0, source.count, KERAS_BATCH):
            feeds = [source.sample(i, loaded.inputs) for i in range(start, min(start + KERAS_BATCH, source.count))]
            yield loaded.predict({s.name: np.concatenate([f[s.name] for f in feeds]) for s in loaded.inputs})

    return lambda source: loaded.inputs, loaded.outputs, batches, f"tensorflow {tf.__version__} ({loaded.flavour})"


def _score(model: str, predictions: np.ndarray, labels: np.ndarray, runtime: str, output: str) -> EvalResult:
    n = len(labels)
    if np.issubdtype(labels.dtype, np.integer) and _is_binary(predictions, labels):
        return _binary(model, predictions.reshape(n), labels.reshape(n), runtime)
    if np.issubdtype(labels.dtype, np.integer) and _is_one_hot(predictions, labels):
        labels = np.argmax(labels, axis=-1)
    elif np.issubdtype(labels.dtype, np.integer) and _is_multilabel(predictions, labels):
        return _multilabel(model, predictions.reshape(labels.shape) >= 0.5, labels == 1, runtime)
    if np.issubdtype(labels.dtype, np.integer):
        if predictions.ndim != 2 or predictions.shape[1] < 2:
            raise UserError(
                f"integer labels mean classification, but {model}'s output {output!r} has shape "
                f"{predictions.shape[1:]}, not class scores: give float targets under `y` for a regression model"
            )
        accuracy = float(np.mean(np.argmax(predictions, axis=1) == labels))
        return EvalResult(model, n, "classification", accuracy, None, runtime)
    if predictions.size != labels.size:
        raise UserError(
            f"float labels mean regression, but {model}'s output {output!r} gives {predictions.size // n} values "
            f"per sample for {labels.size // n} targets: give targets shaped like that output, or set model_output "
            "to another", settings=("model_output",)
        )
    mae = float(np.mean(np.abs(predictions.reshape(labels.shape).astype(np.float64) - labels)))
    return EvalResult(model, n, "regression", None, mae, runtime)


def _is_binary(predictions: np.ndarray, labels: np.ndarray) -> bool:
    """One value in [0, 1] per sample (a sigmoid) and labels that are 0 or 1."""
    return (predictions.size == len(labels) and labels.size == len(labels) and bool(np.isin(labels, (0, 1)).all())
            and float(predictions.min()) >= 0 and float(predictions.max()) <= 1)


def _is_one_hot(predictions: np.ndarray, labels: np.ndarray) -> bool:
    """Class scores per sample, and labels of the same shape with a single 1 per sample."""
    from edgecompress.compare import output_kind

    return (labels.shape == predictions.shape and labels.ndim == 2 and output_kind(predictions) == "classes"
            and bool(np.isin(labels, (0, 1)).all()) and bool((labels.sum(axis=1) == 1).all()))


def _is_multilabel(predictions: np.ndarray, labels: np.ndarray) -> bool:
    """Several values in [0, 1] per sample, and 0/1 labels for each of them."""
    return (labels.size == predictions.size and labels.size > len(labels) and bool(np.isin(labels, (0, 1)).all())
            and float(predictions.min()) >= 0 and float(predictions.max()) <= 1)


def _multilabel(model: str, decided: np.ndarray, truth: np.ndarray, runtime: str) -> EvalResult:
    """Every value decided at 0.5: F1, precision and recall over all of them (micro)."""
    precision, recall = _precision_recall(decided, truth)
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return EvalResult(model, len(truth), "multilabel", None, None, runtime, precision=precision, recall=recall, f1=f1)


def _binary(model: str, probability: np.ndarray, labels: np.ndarray, runtime: str) -> EvalResult:
    """A one-sigmoid classifier decided at 0.5: accuracy, precision and recall of the positive class."""
    decided = probability >= 0.5
    truth = labels == 1
    precision, recall = _precision_recall(decided, truth)
    return EvalResult(model, len(labels), "classification", float(np.mean(decided == truth)), None, runtime,
                      precision=precision, recall=recall)


def _precision_recall(decided: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Of the positives decided, the share that are true; of the true ones, the share decided."""
    hits = float(np.sum(decided & truth))
    return (hits / float(np.sum(decided)) if decided.any() else 0.0,
            hits / float(np.sum(truth)) if truth.any() else 0.0)
