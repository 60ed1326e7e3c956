"""A causal LM to the device (issue 21): `convert --task generate` writes LiteRT-LM's prefill and decode signatures
with a KV cache and proves them against the Keras model; `generate` runs them without TensorFlow."""
from __future__ import annotations

import json
import sys

import pytest

from helpers import LM_SHAPE as SHAPE
from helpers import one_line_error
from test_runtime_only import _heavy_modules_after


@pytest.fixture(scope="module")
def float_lm(lm_folder):
    from edgecompress.cli.main import main

    out = lm_folder / "lm.tflite"
    try:
        main(["convert", str(lm_folder / "lm.keras"), "-o", str(out), "--task", "generate", "--prefill-length", "16",
              "--calibration", str(lm_folder / "windows.npz")])
    except SystemExit as exc:
        assert not exc.code
    return out


def test_the_float32_file_has_the_two_signatures_and_computes_the_keras_models_tokens(run_cli, lm_folder, float_lm):
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_path=str(float_lm)).get_signature_list()
    caches = [f"kv_cache_{k}_{i}" for i in range(SHAPE["depth"]) for k in "kv"]
    for name in ("prefill", "decode"):
        assert sorted(signatures[name]["inputs"]) == sorted(["tokens", "input_pos", *caches])
        assert sorted(signatures[name]["outputs"]) == sorted(["logits", *caches])
    code, out, err = run_cli(["convert", lm_folder / "lm.keras", "-o", lm_folder / "again.tflite", "--task", "generate",
                              "--calibration", lm_folder / "windows.npz", "--json"])
    assert code == 0, err
    v = json.loads(out)["validation"]
    assert v["top1_agreement"] == 1.0 and v["max_abs_logit_error"] < 1e-4 and v["nonfinite"] == 0
    assert v["greedy_identical"] == v["greedy_prompts"] == 8 and v["greedy_tokens"] == 32


def test_weight_modes_are_smaller_and_say_how_close_they_stay(run_cli, lm_folder, float_lm):
    code, out, err = run_cli(["convert", lm_folder / "lm.keras", "-o", lm_folder / "int8w.tflite", "--task", "generate",
                              "--quantize", "int8-weights", "--calibration", lm_folder / "windows.npz", "--json"])
    assert code == 0, err
    from edgecompress.inspect import inspect_model

    result = json.loads(out)
    # The weights a quarter of float32's, the embedding table (a GATHER and the tied head) included; a model this
    # small is mostly graph, which both files carry.
    assert inspect_model(lm_folder / "int8w.tflite").weight_bytes < 0.3 * inspect_model(float_lm).weight_bytes
    assert result["size_bytes"] < float_lm.stat().st_size
    assert result["validation"]["top1_agreement"] > 0.9


def test_generate_streams_text_and_reports_speed(run_cli, float_lm):
    code, out, err = run_cli(["generate", float_lm, "--prompt", "The film is", "--max-tokens", "12", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert 1 <= len(result["tokens"]) <= 12 and result["prompt_tokens"] >= 4
    assert result["decode_tokens_per_s"] is None or result["decode_tokens_per_s"] > 0
    assert result["prefill_tokens_per_s"] > 0 and result["time_to_first_token_ms"] > 0
    code, text, err = run_cli(["generate", float_lm, "--prompt", "The film is", "--max-tokens", "12"])
    assert code == 0 and result["text"] in text and "decode" in text
    sampled = [run_cli(["generate", float_lm, "--prompt", "A", "--temperature", "1", "--seed", "3", "--json"])[1]
               for _ in range(2)]
    assert json.loads(sampled[0])["tokens"] == json.loads(sampled[1])["tokens"]  # the seed makes it reproducible


def test_bad_input_is_one_line(run_cli, float_lm, float_tflite, lm_folder, digits_model_path):
    one_line_error(run_cli(["generate", float_lm, "--prompt", "  "]), "--prompt", "empty")
    one_line_error(run_cli(["generate", float_lm, "--prompt", "x", "--max-tokens", "0"]), "--max-tokens")
    one_line_error(run_cli(["generate", float_lm, "--prompt", "word " * 60]), "context")
    one_line_error(run_cli(["generate", float_tflite, "--prompt", "x", "--tokenizer", lm_folder / "tokenizer.json"]),
                   "no prefill", "--task generate")
    one_line_error(run_cli(["generate", float_lm, "--prompt", "x", "--tokenizer", lm_folder / "windows.npz"]),
                   "tokenizer.json")
    one_line_error(run_cli(["convert", lm_folder / "lm.keras", "-o", lm_folder / "x.tflite", "--task", "generate",
                            "--quantize", "int8"]), "KV cache")
    one_line_error(run_cli(["convert", digits_model_path, "-o", lm_folder / "y.tflite", "--task", "generate"]),
                   "causal language models")


def test_benchmark_times_prefill_and_decode_tokens(run_cli, float_lm, float_tflite):
    code, out, err = run_cli(["benchmark", float_lm, "--runs", "3", "--json"])
    assert code == 0, err
    (result,) = json.loads(out)
    m = result["measurement"]
    assert m["prefill_length"] == 16 and m["context"] == SHAPE["seq_len"] and m["threads"] == 1
    assert m["prefill_tokens_per_s"] > 0 and m["decode_tokens_per_s"] > 0 and m["peak_rss_mb"] > 10
    assert m["decode_ms"]["count"] == 3 * 32  # 32 decode steps after the prefill, three times
    assert m["time_to_first_token_ms"] > m["prefill_ms"]["p50"] and result["device"] is None
    one_line_error(run_cli(["benchmark", float_lm, float_tflite]), "separately")
    one_line_error(run_cli(["benchmark", float_lm, "--on", "adb"]), "ssh://")
    one_line_error(run_cli(["benchmark", float_lm, "--inputs", float_tflite]), "--inputs")


def test_benchmark_on_a_device_over_ssh_times_decode_there(sshd, runtime_venv, float_lm, tmp_path):
    """The loopback server's device Python is the runtime-only venv: no TensorFlow on either side."""
    import subprocess
    from pathlib import Path

    cli = str(Path(runtime_venv).parent / "edgecompress")
    common = [cli, "benchmark", str(float_lm), "--runs", "3"]
    remote = ["--on", sshd.url, "--ssh-config", str(sshd.client_config), "--remote-python", str(runtime_venv)]
    proc = subprocess.run(common + remote + ["--json"], capture_output=True, text=True, timeout=600, cwd="/")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["kind"] == "measured" and data["measured_on"] == sshd.url
    (m,) = [r["measurement"] for r in data["results"]]
    assert m["model"] == str(float_lm) and m["decode_ms"]["count"] == 3 * 32 and m["threads"] == 1
    assert m["decode_tokens_per_s"] > 0 and m["prefill_tokens_per_s"] > 0 and m["peak_rss_mb"] > 10
    table = subprocess.run(common + remote, capture_output=True, text=True, timeout=600, cwd="/")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith(f"MEASURED on {sshd.url}") and "decode tok/s" in table.stdout


def test_benchmark_under_a_device_gives_the_bandwidth_roofline_beside_the_compute_estimate(run_cli, float_lm):
    from edgecompress.devices.profiles import load_profile
    from edgecompress.inspect import inspect_model

    code, out, err = run_cli(["benchmark", float_lm, "--runs", "3", "--device", "raspberry-pi-4", "--json"])
    assert code == 0, err
    (result,) = json.loads(out)
    d, m = result["device"], result["measurement"]
    caches = 2 * SHAPE["depth"] * SHAPE["seq_len"] * SHAPE["width"] * 4  # K and V, every layer, float32
    assert d["bytes_per_token"] == inspect_model(float_lm).weight_bytes + caches == inspect_model(float_lm).weight_bytes + m["cache_bytes"]
    assert d["bandwidth_gbs"] == load_profile("raspberry-pi-4").memory.gbs == 12.8
    assert d["roofline_tokens_per_s"] == pytest.approx(12.8e9 / d["bytes_per_token"])
    assert d["compute_tokens_per_s"] > 0 and d["threads"] == 4
    sides = {"memory": d["roofline_tokens_per_s"], "compute": d["compute_tokens_per_s"]}
    assert d["bound"] == min(sides, key=sides.get) and d["estimated_tokens_per_s"] == sides[d["bound"]]


LITERT_LM = """
import json, sys
import litert_lm
engine = litert_lm.Engine(sys.argv[1], max_num_tokens=int(sys.argv[2]))
texts = []
for prompt in json.loads(sys.argv[3]):
    session = engine.create_session(apply_prompt_template=False, max_output_tokens=int(sys.argv[4]),
                                    sampler_config=litert_lm.SamplerConfig(top_k=1, temperature=0.0))
    session.run_prefill([prompt])
    texts.append(session.run_decode().texts[0])
print(json.dumps(texts))
"""


def test_a_litertlm_bundle_runs_in_litert_lms_own_runtime_and_writes_what_generate_writes(run_cli, lm_folder, float_lm):
    import subprocess

    from edgecompress.generate import generate_text

    bundle = lm_folder / "lm.litertlm"
    code, out, err = run_cli(["convert", lm_folder / "lm.keras", "-o", bundle, "--task", "generate",
                              "--prefill-length", "16", "--calibration", lm_folder / "windows.npz", "--json"])
    assert code == 0, err
    assert json.loads(out)["validation"]["greedy_identical"] == 8
    prompts = ["The acting is", "A story of", "It's a", "Funny, sad and", "The director", "Nothing in this film"]
    proc = subprocess.run([sys.executable, "-c", LITERT_LM, str(bundle), str(SHAPE["seq_len"]), json.dumps(prompts),
                           "12"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    mine = [generate_text(float_lm, p, lm_folder / "tokenizer.json", max_tokens=12).text for p in prompts]
    # LiteRT-LM writes a generated <bos> as text; edgecompress leaves special tokens out of the text.
    assert [t.replace("<bos>", "") for t in theirs] == mine
    one_line_error(run_cli(["convert", lm_folder / "lm.keras", "-o", lm_folder / "x.litertlm", "--task", "generate",
                            "--tokenizer", lm_folder / "missing.json"]), "--tokenizer")


@pytest.mark.parametrize("where", ["runtime venv", "full venv"])
def test_generate_loads_no_tensorflow(where, runtime_venv, float_lm):
    python = runtime_venv if where == "runtime venv" else sys.executable
    output, heavy = _heavy_modules_after(python, "generate", str(float_lm), "--prompt", "The plot", "--max-tokens",
                                         "5", "--json")
    assert len(json.loads(output)["tokens"]) <= 5
    assert heavy == []


def test_a_prompt_whose_last_chunk_would_pass_the_context_is_prefilled_right(run_cli, lm_folder):
    """Prefill 20 into a context of 48: a 44-token prompt's third chunk would cover rows 40..59, past the cache."""
    import numpy as np

    from edgecompress.generate import LMRunner
    from edgecompress.models import load_model

    out = lm_folder / "prefill20.tflite"
    code, _, err = run_cli(["convert", lm_folder / "lm.keras", "-o", out, "--task", "generate", "--prefill-length",
                            "20", "--calibration", lm_folder / "windows.npz"])
    assert code == 0, err
    ids = [int(i) for i in np.load(lm_folder / "windows.npz")["x"][0, :44]]
    runner = LMRunner(out)
    logits, _ = runner.prefill(ids, runner.empty_caches())
    reference = load_model(lm_folder / "lm.keras").model(np.array([ids], np.int32)).numpy()[0]
    assert logits.shape == reference.shape and np.abs(logits - reference).max() < 1e-4


def test_evaluate_gives_the_files_held_out_perplexity_as_keras_computes_it(run_cli, lm_folder, float_lm, tmp_path):
    import numpy as np

    from edgecompress.models import load_model
    from edgecompress.text.lm import perplexity

    code, out, err = run_cli(["evaluate", float_lm, "--data", lm_folder / "lm_val.npz", "--json"])
    assert code == 0, err
    result = json.loads(out)
    data = np.load(lm_folder / "lm_val.npz")
    windows = np.concatenate([data["x"], data["y"][:, -1:]], axis=1)
    keras = perplexity(load_model(lm_folder / "lm.keras").model, windows)
    assert result["task"] == "language-model" and result["samples"] == len(windows)
    assert abs(result["perplexity"] / keras - 1) < 1e-4 and 0 < result["accuracy"] < 1
    np.savez(tmp_path / "floats.npz", x=np.zeros((2, 8), np.float32))
    one_line_error(run_cli(["evaluate", float_lm, "--data", tmp_path / "floats.npz"]), "token windows under x")
    np.savez(tmp_path / "long.npz", x=np.zeros((2, SHAPE["seq_len"] + 2), np.int32))
    one_line_error(run_cli(["evaluate", float_lm, "--data", tmp_path / "long.npz"]), "context")


def test_int4_blocks_reach_both_signatures_weights_and_the_tied_table_is_stored_once(run_cli, lm_folder):
    """Prefill and decode share their weights: blocks chosen in one subgraph only stored each layer twice. The
    output head is the embedding table: kept per row, as the lookup quantizes it, both read one stored copy."""
    from edgecompress.tflite_reader import read_model

    out = lm_folder / "int4-b32.tflite"
    code, _, err = run_cli(["convert", lm_folder / "lm.keras", "-o", out, "--task", "generate", "--quantize", "int4",
                            "--block-size", "32", "--calibration", lm_folder / "windows.npz"])
    assert code == 0, err
    model = read_model(out)
    for graph in model.subgraphs:
        tables = {graph.tensor(op.inputs[1]).buffer for op in graph.operators if op.name == "EMBEDDING_LOOKUP"}
        weights = [graph.tensor(op.inputs[1]) for op in graph.operators if op.name == "FULLY_CONNECTED"]
        head = [w for w in weights if w.buffer in tables]
        assert len(head) == 1 and head[0].quantization.block_size == 0, graph.name
        assert all(w.quantization.block_size == 32 for w in weights if w not in head), graph.name


def test_evaluate_scores_a_keras_lm_as_its_file(run_cli, lm_folder, float_lm):
    results = []
    for model in (lm_folder / "lm.keras", float_lm):
        code, out, err = run_cli(["evaluate", model, "--data", lm_folder / "lm_val.npz", "--json"])
        assert code == 0, err
        results.append(json.loads(out))
    keras, tflite = results
    assert keras["task"] == tflite["task"] == "language-model" and keras["runtime"] == "keras"
    assert abs(keras["perplexity"] / tflite["perplexity"] - 1) < 1e-4 and abs(keras["accuracy"] - tflite["accuracy"]) < 1e-3
