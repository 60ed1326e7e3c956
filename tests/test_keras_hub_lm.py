"""The language-model export takes any Keras causal LM with KerasHub's call_with_cache, not only the project's
builder (issue 21): KerasHub's GPT-2 (learned positions) and Gemma (rotary positions, grouped-query attention:
one key/value head for four query heads) at tiny configurations with random weights, nothing downloaded."""
from __future__ import annotations

import json

import pytest

from helpers import one_line_error


@pytest.fixture(scope="module")
def hub_models(lm_folder):
    import keras_hub

    vocab = json.loads((lm_folder / "tokenizer.json").read_text())["model"]["vocab"]
    gpt2 = keras_hub.models.GPT2CausalLM(backbone=keras_hub.models.GPT2Backbone(
        vocabulary_size=len(vocab), num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=48), preprocessor=None)
    gemma = keras_hub.models.GemmaCausalLM(backbone=keras_hub.models.GemmaBackbone(
        vocabulary_size=len(vocab), num_layers=2, num_query_heads=4, num_key_value_heads=1, hidden_dim=32,
        intermediate_dim=64, head_dim=8), preprocessor=None)
    paths = {"gpt2": lm_folder / "gpt2.keras", "gemma": lm_folder / "gemma.keras"}
    gpt2.save(paths["gpt2"])
    gemma.save(paths["gemma"])
    return paths


@pytest.mark.parametrize("name,extra,context", [("gpt2", [], 48), ("gemma", ["--context", "40"], 40)])
def test_a_keras_hub_causal_lm_exports_and_computes_what_keras_computes(run_cli, lm_folder, hub_models, name, extra,
                                                                          context):
    out = lm_folder / f"{name}.tflite"
    code, stdout, err = run_cli(["convert", hub_models[name], "-o", out, "--task", "generate", "--prefill-length", "8",
                                 "--calibration", lm_folder / "windows.npz", "--json", *extra])
    assert code == 0, err
    result = json.loads(stdout)
    v = result["validation"]
    assert result["context"] == context
    assert v["top1_agreement"] == 1.0 and v["max_abs_logit_error"] < 1e-4 and v["nonfinite"] == 0
    assert v["greedy_identical"] == v["greedy_prompts"] == 8
    code, stdout, err = run_cli(["generate", out, "--prompt", "The film", "--max-tokens", "5",
                                 "--tokenizer", lm_folder / "tokenizer.json", "--json"])
    assert code == 0, err
    assert len(json.loads(stdout)["tokens"]) >= 1


def test_gemma_without_a_context_is_refused_in_one_line(run_cli, lm_folder, hub_models):
    one_line_error(run_cli(["convert", hub_models["gemma"], "-o", lm_folder / "g.tflite", "--task", "generate"]),
                   "--context")
    one_line_error(run_cli(["convert", hub_models["gpt2"], "-o", lm_folder / "g.tflite", "--task", "generate",
                            "--context", "64"]), "longer")


def test_int4_weights_of_gemma_are_a_quarter_of_its_float_weights_and_stay_finite(run_cli, lm_folder, hub_models):
    from edgecompress.inspect import inspect_model

    sizes = {}
    for mode in ("none", "int4-weights"):
        out = lm_folder / f"gemma-{mode}.tflite"
        code, stdout, err = run_cli(["convert", hub_models["gemma"], "-o", out, "--task", "generate", "--context", "40",
                                     "--quantize", mode, "--calibration", lm_folder / "windows.npz", "--json"])
        assert code == 0, err
        assert json.loads(stdout)["validation"]["nonfinite"] == 0
        sizes[mode] = inspect_model(out).weight_bytes
    assert sizes["int4-weights"] < 0.3 * sizes["none"]
