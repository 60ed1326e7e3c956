"""The bundled demo: the whole job on real bundled data, from a trained model to the .tflite to ship.

It trains the example classifier on the bundled digits, writes the model, a smaller untrained student (for
distillation) and the train / validation / calibration / held-out test files, copies the bundled recipe
(edgecompress/data/demo_recipe.toml: every technique, at least 8 variants) beside them, and runs it with
the pipeline: each variant optimized, converted, scored on the held-out test split, benchmarked on this host
and estimated on a Raspberry Pi 4 and an Android phone, then the report. Every step is the public API.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgecompress.datasets import Split, load_digits
from edgecompress.errors import UserError
from edgecompress.fileio import write_bytes_atomic
from edgecompress.pipeline.run import RunResult, run_recipe
from edgecompress.progress import note

RECIPE = "recipe.toml"
RUN_DIR = "run"
CALIBRATION_SAMPLES = 300
# The student for distillation: same layout, half the filters and a quarter of the units (about a seventh
# of the teacher's parameters), trained from scratch on the teacher's soft targets.
STUDENT = {"width": 8, "dense": 32}


@dataclass
class DemoResult:
    output_dir: Path
    recipe: Path
    run: RunResult
    train_seconds: float
    run_seconds: float


def demo_files(out: Path) -> list[Path]:
    """The files the demo writes (the run folder aside, which is its own cache)."""
    data = out / "data"
    return [out / "digits.keras", out / "student.keras", out / RECIPE,
            data / "train.npz", data / "val.npz", data / "test.npz", data / "calibration.npz"]


def prepare_demo(out_dir: str | Path, force: bool = False, epochs: int = 20, seed: int = 0) -> Path:
    """Train the baseline and write the demo's model, student, data and recipe; returns the recipe's path."""
    from edgecompress.examples import build_digits_cnn, train_digits_cnn

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file, not a folder: give a folder for the demo's files")
    existing = [str(p.relative_to(out)) for p in demo_files(out) if p.exists()]
    if existing and not force:
        raise UserError(f"{out} already holds demo files ({', '.join(existing)}): "
                        "choose another output_dir, or set force to overwrite them", settings=("output_dir", "force"))
    (out / "data").mkdir(parents=True, exist_ok=True)
    data = load_digits(seed)
    note(f"training the example CNN on {len(data.train.y)} bundled digits ({epochs} epochs)")
    model = train_digits_cnn(epochs=epochs, seed=seed, data=data)
    _save_keras(model, out / "digits.keras")
    _save_keras(build_digits_cnn(seed, **STUDENT), out / "student.keras")
    data.train.save_npz(out / "data" / "train.npz")
    data.val.save_npz(out / "data" / "val.npz")
    data.test.save_npz(out / "data" / "test.npz")
    Split(data.train.x[:CALIBRATION_SAMPLES], data.train.y[:CALIBRATION_SAMPLES]).save_npz(out / "data" / "calibration.npz")
    recipe = resources.files("edgecompress").joinpath("data/demo_recipe.toml").read_bytes()
    return write_bytes_atomic(out / RECIPE, recipe)


def _save_keras(model: object, path: Path) -> None:
    from edgecompress.fileio import atomic_path

    with atomic_path(path) as tmp:
        model.save(tmp)  # type: ignore[attr-defined]


def run_demo(out_dir: str | Path, force: bool = False, epochs: int = 20, seed: int = 0, jobs: int = 2) -> DemoResult:
    """prepare_demo, then run its recipe into OUT_DIR/run (a rerun reuses the variants finished there)."""
    start = time.perf_counter()
    recipe = prepare_demo(out_dir, force, epochs, seed)
    trained = time.perf_counter()
    run = run_recipe(recipe, Path(out_dir) / RUN_DIR, jobs=jobs)
    return DemoResult(Path(out_dir), recipe, run, trained - start, time.perf_counter() - trained)
