"""The bundled demo: train the example classifier on the bundled digits, export it as float32 and int8,
and compare size and held-out accuracy. Every step goes through the public API."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .converters import ConversionResult, convert_model
from .datasets import Split, load_digits
from .errors import UserError
from .evaluate import evaluate
from .examples import train_digits_cnn
from .progress import note

CALIBRATION_SAMPLES = 300


@dataclass(frozen=True)
class DemoRow:
    model: str
    path: str
    size_bytes: int
    gzip_bytes: int
    accuracy: float


@dataclass(frozen=True)
class DemoResult:
    output_dir: str
    test_samples: int
    rows: list[DemoRow]


def demo_files(out_dir: Path) -> dict[str, Path]:
    return {name: out_dir / name for name in
            ("digits.keras", "calibration.npz", "test.npz", "digits_float32.tflite", "digits_int8.tflite")}


def run_demo(out_dir: str | Path, force: bool = False, epochs: int = 20, seed: int = 0) -> DemoResult:
    """Write the model, data and both .tflite files to OUT_DIR (existing files only with FORCE)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file, not a folder: give a folder for the demo's files")
    files = demo_files(out)
    existing = [p.name for p in files.values() if p.exists()]
    if existing and not force:
        raise UserError(f"{out} already holds demo files ({', '.join(existing)}): pass --force to overwrite them")
    out.mkdir(parents=True, exist_ok=True)
    data = load_digits(seed)
    note(f"training the example CNN on {len(data.train.y)} digits ({epochs} epochs)")
    model = train_digits_cnn(epochs=epochs, seed=seed, data=data)
    model.save(files["digits.keras"])
    Split(data.train.x[:CALIBRATION_SAMPLES], data.train.y[:CALIBRATION_SAMPLES]).save_npz(files["calibration.npz"])
    data.test.save_npz(files["test.npz"])
    exports: list[tuple[str, ConversionResult]] = [
        ("tflite float32", convert_model(files["digits.keras"], files["digits_float32.tflite"], "none",
                                         calibration=files["calibration.npz"], force=True)),
        ("tflite int8", convert_model(files["digits.keras"], files["digits_int8.tflite"], "int8",
                                      calibration=files["calibration.npz"], io_type="int8", force=True)),
    ]
    keras = evaluate(files["digits.keras"], files["test.npz"])
    rows = [DemoRow("keras (float32)", str(files["digits.keras"]), exports[0][1].source_size_bytes or 0,
                    exports[0][1].source_gzip_bytes or 0, keras.accuracy or 0.0)]
    for label, result in exports:
        acc = evaluate(result.output, files["test.npz"]).accuracy or 0.0
        rows.append(DemoRow(label, result.output, result.size_bytes, result.gzip_bytes, acc))
    return DemoResult(str(out), keras.samples, rows)
