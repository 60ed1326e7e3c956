"""The bundled demos: the whole job on real bundled data, from a trained model to the .tflite to ship.

Each task trains its example model on bundled data, writes the model, a smaller untrained student (for
distillation) and the train / validation / calibration / held-out test files, copies its bundled recipe
(edgecompress/data/demo_recipe.toml or text_recipe.toml) beside them, and runs it with the pipeline: each
variant optimized, converted, scored on the held-out test split, benchmarked on this host and estimated on
a Raspberry Pi 4 and an Android phone, then the report. Every step is the public API.

- digits (the default): a small CNN on the UCI handwritten digits, 11 variants in a few minutes.
- text: a BERT-style encoder (BERT-Mini's shape: 4 blocks of 4-head attention, width 256) on Rotten Tomatoes
  review snippets,
  with head and feed-forward pruning, distillation into a 2-block student, and every quantization mode;
  the tokenizer's vocabulary file is written beside the model, as it must ship with it.
- generate: a causal language model (2 blocks, width 128) on the same texts with a byte-level BPE, exported with
  a KV cache in each weight mode, pruned and distilled, judged by held-out perplexity and timed per token.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from edgecompress.datasets import Split, load_digits
from edgecompress.errors import UserError
from edgecompress.fileio import atomic_path, write_bytes_atomic
from edgecompress.pipeline.run import RunResult, run_recipe
from edgecompress.progress import note

RECIPE = "recipe.toml"
RUN_DIR = "run"
STAMP = "demo.json"  # what the files were prepared with: a rerun with the same settings reuses them
CALIBRATION_SAMPLES = 300
DATA_FILES = ("data/train.npz", "data/val.npz", "data/test.npz", "data/calibration.npz")
# The digits student: same layout, half the filters and a quarter of the units (about a seventh of the
# teacher's parameters), trained from scratch on the teacher's soft targets.
DIGITS_STUDENT = {"width": 8, "dense": 32}


@dataclass(frozen=True)
class DemoTask:
    name: str
    model: str  # the trained model's file name
    extra: tuple[str, ...]  # other files beside it (student, vocabulary)
    recipe: str  # the bundled recipe (edgecompress/data/...)
    epochs: int  # the most the example model trains
    prepare: Callable[[Path, int, int], None]  # (folder, epochs, seed): writes the model, extras and data


@dataclass
class DemoResult:
    output_dir: Path
    recipe: Path
    run: RunResult
    train_seconds: float
    run_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"output_dir": str(self.output_dir), "recipe": str(self.recipe), "train_seconds": self.train_seconds,
                "run_seconds": self.run_seconds, **self.run.to_dict()}


def _write_splits(out: Path, train: Split, val: Split, test: Split) -> None:
    for split, name in zip((train, val, test, Split(train.x[:CALIBRATION_SAMPLES], train.y[:CALIBRATION_SAMPLES])),
                           DATA_FILES):
        split.save_npz(out / name)


def _save_keras(model: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)  # type: ignore[attr-defined]


def _prepare_digits(out: Path, epochs: int, seed: int) -> None:
    from edgecompress.examples import build_digits_cnn, train_digits_cnn

    data = load_digits(seed)
    note(f"training the example CNN on {len(data.train.y)} bundled digits ({epochs} epochs)")
    _save_keras(train_digits_cnn(epochs=epochs, seed=seed, data=data), out / "digits.keras")
    _save_keras(build_digits_cnn(seed, **DIGITS_STUDENT), out / "student.keras")
    _write_splits(out, data.train, data.val, data.test)


def _prepare_text(out: Path, epochs: int, seed: int) -> None:
    from edgecompress.text.data import load_reviews, vocabulary_path
    from edgecompress.text.models import STUDENT_LAYOUT, EncoderShape, build_text_encoder, train_text_classifier

    data = load_reviews()
    shape = EncoderShape(len(data.vocabulary), data.train.x.shape[1])
    note(f"training the example text encoder on {len(data.train.y)} bundled reviews (at most {epochs} epochs, "
         "about a minute each on 2 cores)")
    model = train_text_classifier(build_text_encoder(shape, seed), data.train, data.val, epochs=epochs)
    _save_keras(model, out / "text.keras")
    student = EncoderShape(shape.vocab_size, shape.seq_len, **STUDENT_LAYOUT)
    _save_keras(build_text_encoder(student, seed, name="text_student"), out / "student.keras")
    shutil.copyfile(vocabulary_path(), out / "vocab.txt")
    _write_splits(out, data.train, data.val, data.test)


def _prepare_generate(out: Path, epochs: int, seed: int) -> None:
    from edgecompress.text.bpe import train_bpe
    from edgecompress.text.data import texts_by_split
    from edgecompress.text.lm import LMShape, build_causal_lm, token_windows, train_causal_lm

    texts = texts_by_split()
    note(f"learning a {LM_VOCAB}-token byte-level BPE from the bundled training texts")
    tokenizer = train_bpe(texts["train"], LM_VOCAB)
    with atomic_path(out / "tokenizer.json") as tmp:
        tokenizer.save(tmp)
    windows = {split: token_windows(tokenizer, t, LM_TEACHER["seq_len"]) for split, t in texts.items()}
    note(f"training the example language model on {len(windows['train'])} windows of {LM_TEACHER['seq_len']} tokens "
         f"(at most {epochs} epochs)")
    model = train_causal_lm(build_causal_lm(LMShape(tokenizer.size, **LM_TEACHER), seed), windows["train"],
                            windows["val"], epochs=epochs)
    _save_keras(model, out / "lm.keras")
    student = LMShape(tokenizer.size, **{**LM_TEACHER, **LM_STUDENT})
    _save_keras(build_causal_lm(student, seed + 1, name="lm_student"), out / "student.keras")
    # x: a window's tokens, y: the next token at each position
    _write_splits(out, *(Split(w[:, :-1], w[:, 1:]) for w in windows.values()))


# The language-model demo: a teacher whose decode step takes a fraction of a millisecond here, trained in minutes,
# and a student of one narrower block for distillation.
LM_VOCAB = 2048
LM_TEACHER = dict(seq_len=64, width=128, depth=2, heads=4, ffn=512)
LM_STUDENT = dict(width=64, depth=1, heads=2, ffn=256)

TASKS = {
    "digits": DemoTask("digits", "digits.keras", ("student.keras",), "demo_recipe.toml", 20, _prepare_digits),
    "text": DemoTask("text", "text.keras", ("student.keras", "vocab.txt"), "text_recipe.toml", 8, _prepare_text),
    "generate": DemoTask("generate", "lm.keras", ("student.keras", "tokenizer.json"), "generate_recipe.toml", 6,
                         _prepare_generate),
}


def _task(name: str) -> DemoTask:
    if name not in TASKS:
        raise UserError(f"unknown demo task {name!r}: use one of {', '.join(TASKS)}", settings=("task",))
    return TASKS[name]


def demo_files(out: Path, task: str = "digits") -> list[Path]:
    """The files the demo writes (the run folder aside, which is its own cache)."""
    chosen = _task(task)
    return [out / chosen.model, *(out / f for f in chosen.extra), out / RECIPE, *(out / f for f in DATA_FILES),
            out / STAMP]


def prepare_demo(out_dir: str | Path, force: bool = False, epochs: int | None = None, seed: int = 0,
                 task: str = "digits") -> Path:
    """Train TASK's example model and write its files and recipe into OUT_DIR; returns the recipe's path.

    A rerun into the same folder with the same task, epochs and seed reuses the files (and the recipe, edited
    or not): the run folder then resumes from its cache. Other demo files there need FORCE to be replaced.
    """
    chosen = _task(task)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file, not a folder: give a folder for the demo's files")
    stamp = {"task": task, "epochs": epochs or chosen.epochs, "seed": seed}
    files = demo_files(out, task)
    if not force and all(p.exists() for p in files) and _read_stamp(out / STAMP) == stamp:
        note(f"reusing the example model, data and recipe in {out} (set force to train again)")
        return out / RECIPE
    existing = [str(p.relative_to(out)) for p in files if p.exists()]
    if existing and not force:
        raise UserError(f"{out} already holds demo files ({', '.join(existing)}) from other settings or an "
                        "unfinished preparation: choose another output_dir, or set force to overwrite them",
                        settings=("output_dir", "force"))
    (out / STAMP).unlink(missing_ok=True)  # written last: its presence says the rest is complete
    (out / "data").mkdir(parents=True, exist_ok=True)
    chosen.prepare(out, stamp["epochs"], seed)
    recipe = resources.files("edgecompress").joinpath(f"data/{chosen.recipe}").read_bytes()
    write_bytes_atomic(out / RECIPE, recipe)
    write_bytes_atomic(out / STAMP, json.dumps(stamp).encode())
    return out / RECIPE


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_demo(out_dir: str | Path, force: bool = False, epochs: int | None = None, seed: int = 0, jobs: int = 2,
             task: str = "digits") -> DemoResult:
    """prepare_demo, then run its recipe into OUT_DIR/run (a rerun reuses the variants finished there)."""
    start = time.perf_counter()
    recipe = prepare_demo(out_dir, force, epochs, seed, task)
    trained = time.perf_counter()
    run = run_recipe(recipe, Path(out_dir) / RUN_DIR, jobs=jobs)
    return DemoResult(Path(out_dir), recipe, run, trained - start, time.perf_counter() - trained)
