"""`optimize()`: apply the chosen techniques in their sound order (low-rank -> prune -> cluster -> QAT),
fine-tuning after each (with the teacher's soft targets when distilling), and save the result stripped of
training wrappers; with QAT the quantize wrappers stay, as the int8 converter needs them.
The source model is never changed: every technique works on an independent copy.
"""
from __future__ import annotations

import contextlib
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.errors import UserError, WrongResult
from edgecompress.fileio import atomic_path, check_output
from edgecompress.models import KERAS_SUFFIXES, LoadedModel, avoid_onednn_crash, keras_model, load_model
from edgecompress.progress import note, stage
from edgecompress.optimize.base import Context, Technique, ordered, technique_settings
from edgecompress.optimize.data import Labeled, load_labeled, load_labeled_inputs, predictions
from edgecompress.optimize.distill import DISTILLATION, DistillationConfig, load_teacher
from edgecompress.optimize.layers import SkippedLayer, freeze, import_tfmot, independent_copy, unfreeze
from edgecompress.optimize.rebuild import as_tf_keras
from edgecompress.optimize.report import ModelStats, OptimizeResult, stats
from edgecompress.optimize.train import (
    Objective, StageTraining, TrainSettings, fine_tune, holdout_split, objective_for,
)


def save_model(model: Any, path: Path, quantized: bool) -> None:
    """Save atomically; QAT models need TF-MOT's scope for their quantize wrappers.

    A QAT model saved as .keras loads back through edgecompress.models.load_model (which rebuilds it from
    its config under TF-MOT's quantize_scope); .h5 also loads with plain tf_keras under that scope.
    """
    # The optimizer's moments are no part of a model to deploy: kept, they doubled a fine-tuned model's file.
    model.optimizer = None
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy")  # .h5 when the user asks for it
        with import_tfmot().quantization.keras.quantize_scope() if quantized else contextlib.nullcontext():
            model.save(tmp)


def _source(model: str | Path | Any, unsafe: bool) -> tuple[LoadedModel, Path | None]:
    if isinstance(model, (str, Path)):
        loaded = load_model(model, unsafe=unsafe)
        if not loaded.is_keras:
            raise UserError(f"{model} is a SavedModel: optimize needs the Keras model (.keras or .h5)")
        return loaded, Path(model)
    return keras_model(model), None


def optimize(
    model: str | Path | Any,
    output: str | Path,
    train: str | Path,
    techniques: list[Technique],
    val: str | Path | None = None,
    settings: TrainSettings = TrainSettings(),
    distill: DistillationConfig | None = None,
    force: bool = False,
    unsafe: bool = False,
    model_output: str | None = None,
) -> OptimizeResult:
    """Compress MODEL (a .keras/.h5 path or an in-memory tf-keras model) into OUTPUT.

    TRAIN and VAL are .npz files with the model's inputs (`x` for a single input) and labels `y` for one output
    (MODEL_OUTPUT, a name or position, for a model with several; see evaluate.pick_output); the loss fits the
    labels (train.objective_for) and the other outputs are kept by learning back the original's values. Each
    stage trains until VAL's metric stops improving (without VAL, on a seeded share of TRAIN held out for it).
    With DISTILL, every fine-tuning uses the teacher's soft targets; alone, it trains MODEL as a student.
    """
    if not techniques and distill is None:
        every = tuple(s.name for s in technique_settings()) + ("distill_from",)
        raise UserError(f"no technique chosen: set at least one of {', '.join(every)}", settings=every)
    names = [t.name for t in techniques]
    if len(set(names)) != len(names):
        raise UserError(f"a technique is given twice ({', '.join(names)}): give each once")
    for technique in techniques:
        technique.validate()
    settings.validate()
    out = check_output(output, force)
    if isinstance(model, (str, Path)):
        switched = avoid_onednn_crash(Path(model))
        if switched:
            note(switched)
    if out.suffix.lower() not in KERAS_SUFFIXES:
        raise UserError(f"output {out} must end in {', '.join(KERAS_SUFFIXES)}")

    loaded, source_path = _source(model, unsafe)
    rebuilt = as_tf_keras(loaded.model) if loaded.flavour == "keras3" else None
    source = rebuilt.model if rebuilt is not None else loaded.model
    output = _target_output(source, loaded, train, model_output)
    original = lambda xs: predictions(source, xs)  # noqa: E731 - what the other outputs must keep computing
    train_data = load_labeled(train, loaded.inputs, loaded.outputs, "training", output).keeping(original)
    val_data = (load_labeled(val, loaded.inputs, loaded.outputs, "validation", train_data.target.index)
                .keeping(original) if val is not None else None)

    teacher = load_teacher(distill, source, unsafe) if distill is not None else None

    before = _source_stats(source, source_path, val_data)
    steps = ordered(techniques)
    plan = [t.describe() for t in steps] + ([distill.describe() + " in every fine-tuning"] if distill else [])
    note("optimizing: " + " -> ".join(plan))
    fit_data, stop_data, stopped_on = _stopping_data(train_data, val_data, settings)
    ctx = Context(frozenset(names), settings.steps_per_epoch(len(fit_data)), settings.max_epochs(not steps), fit_data)
    objective = objective_for(source, fit_data, teacher, distill)
    note(f"fine-tuning with {objective.describe}, early stopping on val {objective.label}")

    work, skipped, details, training = _apply_all(source, steps, ctx, objective, fit_data, stop_data, settings)
    if rebuilt is not None:
        details["rebuild"] = {"max_abs_error": rebuilt.max_abs_error}
    if len(loaded.outputs) > 1:
        details["outputs"] = {"against the original": _against_original(source, work, stop_data)}
    _refuse_collapse(source, work, stop_data, stopped_on, settings.rate(not steps))
    save_model(work, out, quantized=any(t.trains_for for t in techniques))
    after = stats(work, out, val_data)
    used = [t.name for t in steps] + ([DISTILLATION] if distill else [])
    return OptimizeResult(out, used, plan, skipped, before, after, details, training, stopped_on)


def _target_output(source: Any, loaded: LoadedModel, train: str | Path, model_output: str | None) -> int | None:
    """The output the labels are for: MODEL_OUTPUT resolved, else (several outputs, integer labels) the only
    class output, as evaluate picks it; None leaves it to the labels' shape (optimize.data)."""
    if len(loaded.outputs) == 1 and model_output is None:
        return None
    from edgecompress.evaluate import pick_output

    xs, y = load_labeled_inputs(train, loaded.inputs, "training")
    values = predictions(source, [x[:16] for x in xs])
    integer = np.issubdtype(y.dtype, np.integer)
    try:
        return pick_output(str(loaded.path), loaded.outputs, values, model_output, classification=integer)
    except UserError:
        if model_output is not None:
            raise
        return None  # the labels' shape may still single out one output


def _against_original(source: Any, work: Any, data: Labeled) -> list[dict[str, Any]]:
    """Each output of WORK against SOURCE's on DATA (the data early stopping watched): the labelled one, and
    the ones fine-tuning had to keep."""
    from edgecompress.compare import compare_output

    rows = []
    for i, (want, got) in enumerate(zip(predictions(source, data.x), predictions(work, data.x))):
        check = compare_output(source.output_names[i], want, got)
        rows.append({"output": check.name, "labels": "yes" if i == data.target.index else "kept",
                     "kind": check.kind, "sqnr_db": check.sqnr_db, "cosine": check.cosine,
                     "agreement": check.agreement})
    return rows


def _refuse_collapse(source: Any, work: Any, data: Labeled, what: str, rate: float) -> None:
    """A WrongResult (nothing written) when an output of WORK no longer follows its input on DATA where
    SOURCE's did (compare.collapse): the metric early stopping watched can look fine on imbalanced labels."""
    from edgecompress.compare import collapse

    for i, (want, got) in enumerate(zip(predictions(source, data.x), predictions(work, data.x))):
        why = collapse(want, got)
        if why:
            raise WrongResult(
                f"the optimized model's output {source.output_names[i]!r} {why} on the {what}: it no longer "
                f"computes what the original did; fine-tune at a lower learning_rate (this run: {rate:g}; try "
                f"{rate / 100:g}) or compress less", settings=("learning_rate",))


def _stopping_data(train: Labeled, val: Labeled | None, settings: TrainSettings) -> tuple[Labeled, Labeled, str]:
    """(data to fit, data to stop on, what the latter is): VAL, else a seeded share of TRAIN held out."""
    if val is not None:
        return train, val, "validation data"
    fit, held = holdout_split(train, settings.holdout, settings.seed)
    what = f"{len(held)} training samples held out ({settings.holdout:.0%}, seed {settings.seed})"
    note(f"no validation data: early stopping watches {what}, training uses the other {len(fit)}")
    return fit, held, what


def _apply_all(
    source: Any, steps: list[Technique], ctx: Context, objective: Objective, train: Labeled, val: Labeled,
    settings: TrainSettings,
) -> tuple[Any, list[SkippedLayer], dict[str, Any], list[StageTraining]]:
    """Apply each technique to an independent copy of the previous result, fine-tune, strip."""
    work = source
    skipped: list[SkippedLayer] = []
    details: dict[str, Any] = {}
    training: list[StageTraining] = []
    constrained: set[str] = set()  # layers earlier techniques pruned or clustered
    for technique in steps:
        stage(technique.name)
        applied = technique.apply(independent_copy(work), ctx)
        skipped.extend(applied.skipped)
        if applied.details:
            details[technique.name] = applied.details
        frozen = freeze(applied.model, constrained - applied.compressed)
        if frozen:
            note(f"{technique.name}: {', '.join(frozen)} frozen while fine-tuning, to keep what earlier techniques did")
        # QAT fine-tunes at a fraction of the rate (its learning_rate_scale), as TF-MOT's examples do
        rate = replace(settings, learning_rate=settings.rate(False) * technique.learning_rate_scale)
        training.append(fine_tune(applied.model, objective, train, val, rate, technique.callbacks(),
                                  technique.name, first_compared=technique.first_compared_epoch(ctx)))
        work = technique.strip(applied.model)
        unfreeze(work, frozen)
        constrained |= applied.compressed
    if not steps:  # distillation alone: the student is trained as it is, for the longer budget
        stage(DISTILLATION)
        work = independent_copy(source)
        training.append(fine_tune(work, objective, train, val, settings, [], DISTILLATION, training_alone=True))
    return work, skipped, details, training


def _source_stats(source: Any, path: Path | None, val: Labeled | None) -> ModelStats:
    if path is not None and path.is_file():
        return stats(source, path, val)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "source.keras"
        source.save(saved)
        return stats(source, saved, val)
