"""Does `edgecompress benchmark` agree with Google's litert-benchmark? And what does its bookkeeping cost?

On a MobileNetV2 1.0/224 .tflite (weights=None: latency does not depend on the weight values) the script runs
our harness (edgecompress.measure, one child process per run) and `litert-benchmark` (installed with
ai-edge-litert) alternately, several rounds, same model, same thread count, same number of runs, and prints
the ratio of the medians of their p50s (goal: within 3%). Each round swaps which tool goes first, so a
drift in the machine's load hits both alike. On a shared, loaded machine rounds differ by tens of percent,
so it also prints two load-robust views: the median of the per-round ratios (each pair ran back to back)
and the ratio of the best rounds (the least disturbed run of each tool).

Then it measures the harness's per-invoke overhead in this process (no TensorFlow here either):
  - bookkeeping alone: the timed loop of edgecompress.measure.phases around a no-op step;
  - on the real model: wall time per run of the timed loop vs a bare `for ...: interpreter.invoke()` loop,
    in short alternating blocks (the difference is within the noise unless the bookkeeping is heavy).

    /work/venv/bin/python benchmarks/litert_fidelity.py [--rounds 7] [--runs 50] [--threads 1 2]

The model is built once (tf_keras + TFLiteConverter, in a subprocess: the timing processes never import
TensorFlow) and cached under $EDGECOMPRESS_CACHE or ~/.cache/edgecompress/fidelity/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgecompress.devices.references import cache_root
from edgecompress.measure import MeasureOptions, measure
from edgecompress.measure.phases import PhaseRule, run_phase
from edgecompress.runtime import load_interpreter
from edgecompress.tables import table

MODEL_NAME = "mobilenet_v2_1.0_224.tflite"


def build_model(path: Path) -> None:
    """MobileNetV2 1.0/224, random weights, float32, batch 1 (runs in a subprocess: imports TensorFlow)."""
    from edgecompress.models import import_tf, import_tf_keras

    keras = import_tf_keras("building MobileNetV2")
    tf = import_tf("building MobileNetV2")
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), alpha=1.0)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, 224, 224, 3], tf.float32))
    data = tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert()
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def cached_model() -> Path:
    path = cache_root() / "fidelity" / MODEL_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"building {path} (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, __file__, "--build", str(path)], check=True)
    return path


def ours(model: Path, threads: int, runs: int, warmup: int) -> float:
    m = measure(model, MeasureOptions(threads=threads, runs=runs, warmup=warmup, min_secs=0.0, warmup_min_secs=0.0))
    if m.error:
        raise SystemExit(f"our harness failed: {m.error}")
    return m.latency_ms.p50


def theirs(tool: str, model: Path, threads: int, runs: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [tool, "--model", str(model), "--num_threads", str(threads), "--num_runs", str(runs),
               "--warmup_runs", str(warmup), "--result_json", str(out)]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return float(json.loads(out.read_text())["latency"]["median_ms"])


def compare(tool: str, model: Path, threads: int, rounds: int, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    a, b = [], []
    for r in range(rounds):
        order = [("ours", a), ("theirs", b)] if r % 2 == 0 else [("theirs", b), ("ours", a)]
        for who, sink in order:
            sink.append(ours(model, threads, runs, warmup) if who == "ours" else theirs(tool, model, threads, runs, warmup))
        print(f"  threads {threads} round {r + 1}/{rounds}: ours p50 {a[-1]:.2f} ms, litert-benchmark median {b[-1]:.2f} ms", file=sys.stderr)
    return a, b


def bookkeeping_us(n: int = 200_000) -> float:
    """Per-run cost of the timed loop itself (clock reads, append, the phase rule) around a no-op."""
    t0 = time.perf_counter()
    run_phase(lambda: None, PhaseRule(runs=n, min_secs=0.0))
    return (time.perf_counter() - t0) / n * 1e6


def loop_overhead_us(model: Path, threads: int, blocks: int = 60, block_runs: int = 5) -> tuple[float, float]:
    """(bare invoke loop ms/run, our loop minus bare loop in us/run): medians over short alternating blocks."""
    interp, _ = load_interpreter(model, num_threads=threads)
    for _ in range(5):
        interp.invoke()
    bare, ours_loop = [], []
    for b in range(blocks):
        for which in (("bare", "ours") if b % 2 == 0 else ("ours", "bare")):
            t0 = time.perf_counter()
            if which == "bare":
                for _ in range(block_runs):
                    interp.invoke()
                bare.append((time.perf_counter() - t0) / block_runs)
            else:
                run_phase(interp.invoke, PhaseRule(runs=block_runs, min_secs=0.0))
                ours_loop.append((time.perf_counter() - t0) / block_runs)
    return statistics.median(bare) * 1e3, (statistics.median(ours_loop) - statistics.median(bare)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5, help="warm-up runs for both tools (litert-benchmark's default)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build_model(args.build)
        return
    tool = shutil.which("litert-benchmark") or str(Path(sys.executable).with_name("litert-benchmark"))
    model = cached_model()
    print(f"model {model} ({model.stat().st_size:,} B); host load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    rows = []
    for threads in args.threads:
        a, b = compare(tool, model, threads, args.rounds, args.runs, args.warmup)
        ma, mb = statistics.median(a), statistics.median(b)
        paired = statistics.median(x / y for x, y in zip(a, b))
        rows.append([threads, args.rounds, ma, mb, ma / mb, f"{100 * (ma / mb - 1):+.1f}%", paired, min(a) / min(b)])
    print(table(
        ["threads", "rounds", "ours p50 ms", "litert-benchmark ms", "ratio of medians", "diff", "median paired ratio", "ratio of best rounds"],
        rows, title=f"p50 vs litert-benchmark, {args.runs} runs per round (goal: ratio within 3%)",
    ))  # fmt: skip
    print(f"\nharness bookkeeping per timed run (no-op step): {bookkeeping_us():.2f} us")
    for threads in args.threads:
        bare_ms, extra_us = loop_overhead_us(model, threads)
        print(f"threads {threads}: bare invoke loop {bare_ms:.2f} ms/run; our timed loop adds {extra_us:+.1f} us/run "
              f"({100 * extra_us / 1000 / bare_ms:+.2f}%)")  # fmt: skip


if __name__ == "__main__":
    main()
