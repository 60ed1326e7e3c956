"""The text workload's acceptance figures, side by side in one run (issue 12).

On the bundled Rotten Tomatoes reviews (held-out test split, 1,275 snippets):
- a bag-of-words logistic regression (scikit-learn; unigrams and bigrams, C chosen on the validation split)
  against the BERT-style teacher (edgecompress.text.models, 4 blocks, width 128, 4 heads, FFN 512);
- the teacher converted in every mode that runs on it: accuracy and size;
- a 2-block, width-64 student distilled from the teacher (KL at T = 4), then full int8: gzip size and host
  p50 against the float32 teacher, and its accuracy drop;
- the teacher with 50% of its attention heads and feed-forward units removed, fine-tuned: MACs (inspect),
  host p50 and accuracy drop;
- int4 weights on the teacher: accuracy drop.
All latencies: one LiteRT benchmark run over every model, one thread, fed the first test review's real ids.

    .venv/bin/python benchmarks/text_workload.py [--workdir DIR] [--seed 0]

Models are kept in --workdir: a rerun reuses the trained teacher (delete it to retrain).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

GOALS = {"student_gzip_x": 8.0, "student_speedup": 3.0, "student_drop": 1.5, "pruned_drop": 1.5, "int4_drop": 1.0}
TEACHER_MODES = ("none", "dynamic", "float16", "int8", "int16x8", "int4", "int8-weights")


def bag_of_words(ngrams: tuple[int, int]) -> tuple[float, float]:
    """(C chosen on val, test accuracy) of a logistic regression on word (NGRAMS) counts of the raw reviews."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    from edgecompress.text.data import load_raw_texts

    raw = [r for r in load_raw_texts() if r.label != "plot"]
    parts = {s: ([r.text for r in raw if r.split == s], [r.label == "fresh" for r in raw if r.split == s])
             for s in ("train", "val", "test")}
    vectorizer = CountVectorizer(ngram_range=ngrams)
    x_train = vectorizer.fit_transform(parts["train"][0])
    fits = {c: LogisticRegression(C=c, max_iter=3000).fit(x_train, parts["train"][1]) for c in (0.1, 0.3, 1.0, 3.0)}
    best = max(fits, key=lambda c: fits[c].score(vectorizer.transform(parts["val"][0]), parts["val"][1]))
    return best, float(fits[best].score(vectorizer.transform(parts["test"][0]), parts["test"][1]))


def teacher(work: Path, seed: int) -> tuple[Path, float]:
    from edgecompress.text.data import load_reviews
    from edgecompress.text.models import EncoderShape, build_text_encoder, train_text_classifier

    path = work / "teacher.keras"
    if path.exists():
        return path, 0.0
    data = load_reviews()
    start = time.perf_counter()
    model = train_text_classifier(build_text_encoder(EncoderShape(len(data.vocabulary), data.train.x.shape[1]), seed),
                                  data.train, data.val, epochs=8, verbose=2)
    model.save(path)
    return path, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="text-workload-"))
    work.mkdir(parents=True, exist_ok=True)

    from edgecompress.benchmark import benchmark
    from edgecompress.converters import convert_model
    from edgecompress.datasets import Split
    from edgecompress.evaluate import evaluate
    from edgecompress.inspect import inspect_model
    from edgecompress.measure import MeasureOptions
    from edgecompress.optimize import DistillationConfig, StructuredPrune, TrainSettings, optimize
    from edgecompress.text.data import load_reviews
    from edgecompress.text.models import STUDENT_LAYOUT, EncoderShape, build_text_encoder

    data = load_reviews()
    npz = {}
    for name, split in (("train", data.train), ("val", data.val), ("test", data.test),
                        ("calibration", Split(data.train.x[:300], data.train.y[:300]))):
        split.save_npz(npz.setdefault(name, work / f"{name}.npz"))

    c, bow = bag_of_words((1, 1))
    c2, bigrams = bag_of_words((1, 2))
    print(f"logistic regression on word counts (C={c:g} chosen on val): test accuracy {bow:.2%}; "
          f"on word and word-pair counts (C={c2:g}): {bigrams:.2%}", flush=True)
    teacher_path, seconds = teacher(work, args.seed)
    print(f"teacher: {teacher_path} ({'trained in %.0f s' % seconds if seconds else 'reused'})", flush=True)

    def convert(model: Path, mode: str, name: str) -> tuple[Path, float]:
        out = work / f"{name}-{mode}.tflite"
        convert_model(model, out, quantize=mode, calibration=npz["calibration"], force=True, validation_samples=50)
        return out, evaluate(out, npz["test"]).accuracy

    converted = {mode: convert(teacher_path, mode, "teacher") for mode in TEACHER_MODES}
    base_acc = converted["none"][1]
    print(f"teacher float32 test accuracy {base_acc:.2%} (bag of words {bow:.2%})", flush=True)

    fine_tune = TrainSettings(epochs=8, patience=2, learning_rate=3e-4, seed=args.seed)  # as the recipe
    pruned = optimize(teacher_path, work / "pruned.keras", npz["train"], [StructuredPrune(heads=0.5, ffn=0.5)],
                      val=npz["val"], settings=fine_tune, force=True).output
    pruned_fp32, pruned_acc = convert(pruned, "none", "pruned")

    student_path = work / "student.keras"
    student_shape = EncoderShape(len(data.vocabulary), data.train.x.shape[1], **STUDENT_LAYOUT)
    build_text_encoder(student_shape, args.seed, name="text_student").save(student_path)
    distilled = optimize(student_path, work / "distilled.keras", npz["train"], [], val=npz["val"],
                         settings=TrainSettings(epochs=20, patience=3, learning_rate=1e-3, seed=args.seed),
                         distill=DistillationConfig(teacher_path), force=True).output
    student_int8, student_acc = convert(distilled, "int8", "distilled")

    pruned_int8, pruned_int8_acc = convert(pruned, "int8", "pruned")
    student_dynamic, student_dynamic_acc = convert(distilled, "dynamic", "distilled")
    rows = {f"teacher {m}": converted[m] for m in TEACHER_MODES}
    rows.update({"pruned none": (pruned_fp32, pruned_acc), "pruned int8": (pruned_int8, pruned_int8_acc),
                 "distilled int8": (student_int8, student_acc), "distilled dynamic": (student_dynamic, student_dynamic_acc)})
    options = MeasureOptions(threads=1, runs=200, min_secs=3.0, inputs=npz["test"])
    measured = benchmark([path for path, _ in rows.values()], options)
    p50 = {name: r.measurement.latency_ms.p50 for name, r in zip(rows, measured)}

    print("\n| model | test accuracy | drop (points) | size (bytes) | gzip (bytes) | MACs | host p50 (ms) |")
    print("|---|---|---|---|---|---|---|")
    report = {}
    for name, (path, acc) in rows.items():
        info = inspect_model(path)
        latency = p50[name]
        report[name] = (acc, info.gzip_bytes, info.macs_total, latency)
        print(f"| {name} | {acc:.2%} | {(base_acc - acc) * 100:+.2f} | {info.size_bytes:,} | {info.gzip_bytes:,} | "
              f"{info.macs_total:,} | {'-' if latency is None else f'{latency:.3f}'} |")

    t_gzip, t_macs, t_p50 = report["teacher none"][1], report["teacher none"][2], p50["teacher none"]
    checks = [
        ("teacher >= bag-of-words logistic regression", base_acc >= bow, f"{base_acc:.2%} vs {bow:.2%}"),
        ("distilled int8 gzip >= 8x smaller", t_gzip / report["distilled int8"][1] >= GOALS["student_gzip_x"],
         f"{t_gzip / report['distilled int8'][1]:.1f}x"),
        ("distilled int8 host p50 >= 3x faster", t_p50 / p50["distilled int8"] >= GOALS["student_speedup"],
         f"{t_p50 / p50['distilled int8']:.1f}x"),
        ("distilled int8 <= 1.5 points below", (base_acc - student_acc) * 100 <= GOALS["student_drop"],
         f"{(base_acc - student_acc) * 100:+.2f}"),
        ("pruned: fewer MACs", report["pruned none"][2] < t_macs, f"{report['pruned none'][2] / t_macs:.2f}x the teacher's"),
        ("pruned: faster on the host", p50["pruned none"] < t_p50, f"{t_p50 / p50['pruned none']:.2f}x"),
        ("pruned <= 1.5 points below", (base_acc - pruned_acc) * 100 <= GOALS["pruned_drop"],
         f"{(base_acc - pruned_acc) * 100:+.2f}"),
        ("int4 teacher <= 1 point below", (base_acc - converted["int4"][1]) * 100 <= GOALS["int4_drop"],
         f"{(base_acc - converted['int4'][1]) * 100:+.2f}"),
    ]
    print("\n| goal | met | measured |\n|---|---|---|")
    for goal, met, figure in checks:
        print(f"| {goal} | {'yes' if met else 'NO'} | {figure} |")
    sys.exit(0 if all(met for _, met, _ in checks) else 1)


if __name__ == "__main__":
    main()
