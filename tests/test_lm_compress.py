"""Compressing a causal LM through `optimize` (issue 21): distillation on next-token distributions, head and
feed-forward pruning, judged by held-out perplexity and next-token accuracy; what it writes still exports with a
KV cache."""
from __future__ import annotations

import json

from helpers import LM_SHAPE


def _optimize(run_cli, folder, model, out, *flags):
    code, stdout, err = run_cli(["optimize", model, "-o", folder / out, "--train", folder / "lm_train.npz",
                                 "--val", folder / "lm_val.npz", "--json", *flags])
    assert code == 0, err
    return json.loads(stdout)


def test_a_narrower_student_distilled_from_the_lm_gains_perplexity(run_cli, lm_folder):
    """Per-position labels are next tokens; the KL at a temperature runs over every position's distribution."""
    from edgecompress.text.lm import LMShape, build_causal_lm, lm_shape_of
    from edgecompress.models import load_model

    teacher = load_model(lm_folder / "lm.keras").model
    student = build_causal_lm(LMShape(**{**LM_SHAPE, "vocab_size": lm_shape_of(teacher).vocab_size,
                                         "width": 16, "depth": 1, "ffn": 32}), seed=1)
    student.save(lm_folder / "student.keras")
    report = _optimize(run_cli, lm_folder, lm_folder / "student.keras", "distilled.keras",
                       "--distill-from", lm_folder / "lm.keras", "--epochs", "2")
    before, after = report["before"], report["after"]
    assert before["val_perplexity"] > 0.8 * lm_shape_of(teacher).vocab_size  # untrained: about uniform
    assert after["val_perplexity"] < before["val_perplexity"] / 2
    assert after["val_accuracy"] > before["val_accuracy"]
    assert report["training"][0]["stage"] == "distillation"


def test_pruned_heads_and_units_keep_the_head_size_and_the_file_exports_with_a_cache(run_cli, lm_folder):
    from edgecompress.models import load_model
    from edgecompress.text.lm import lm_shape_of

    report = _optimize(run_cli, lm_folder, lm_folder / "lm.keras", "pruned.keras",
                       "--prune-heads", "0.5", "--prune-ffn", "0.5", "--epochs", "1")
    assert report["after"]["params"] < report["before"]["params"]
    # Its loss is close to the original's, and the optimizer's moments are not saved with it.
    assert report["after"]["val_perplexity"] < 1.2 * report["before"]["val_perplexity"]
    assert report["after"]["saved_bytes"] < report["before"]["saved_bytes"]
    shape = lm_shape_of(load_model(lm_folder / "pruned.keras").model)
    assert (shape.heads, shape.head_dim, shape.ffn) == (1, LM_SHAPE["width"] // LM_SHAPE["heads"], LM_SHAPE["ffn"] // 2)
    code, out, err = run_cli(["convert", lm_folder / "pruned.keras", "-o", lm_folder / "pruned.tflite", "--task",
                              "generate", "--prefill-length", "16", "--calibration", lm_folder / "windows.npz", "--json"])
    assert code == 0, err
    v = json.loads(out)["validation"]
    assert v["top1_agreement"] == 1.0 and v["greedy_identical"] == v["greedy_prompts"]


LM_RECIPE = """
model = "lm.keras"
devices = ["raspberry-pi-4"]
objective = "smallest"

[data]
train = "lm_train.npz"
val = "lm_val.npz"
test = "lm_test.npz"
calibration = "windows.npz"

[training]
epochs = 1
seed = 0

[benchmark]
runs = 3

[constraints]
max_perplexity_rise = 5

[grid]
quantize = ["none", "int8-weights"]

[[variants]]
name = "int4-b32"
quantize = "int4"
block_size = 32

[[variants]]
name = "heads-ffn-int8w"
prune_heads = 0.5
prune_ffn = 0.5
quantize = "int8-weights"
"""


def test_a_recipe_sweeps_a_language_model_and_chooses_by_perplexity(run_cli, lm_folder, tmp_path):
    """The pipeline on a causal LM: each variant exported with its KV cache, scored by held-out perplexity (its
    rise over the Keras model's is the constraint), timed per generated token here and estimated on a Pi 4."""
    import numpy as np

    from helpers import write_recipe

    data = np.load(lm_folder / "lm_val.npz")
    np.savez(lm_folder / "lm_test.npz", x=data["x"][-100:], y=data["y"][-100:])
    recipe = write_recipe(lm_folder, LM_RECIPE, "lm_recipe.toml")
    code, out, err = run_cli(["run", recipe, "-o", tmp_path / "run", "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["baseline"]["task"] == "language-model" and result["baseline"]["perplexity"] > 1
    by_name = {v["name"]: v for v in result["variants"]}
    assert set(by_name) == {"float32", "int8-weights", "int4-b32", "heads-ffn-int8w"}
    for v in by_name.values():
        assert v["error"] is None, v["error"]
        assert v["perplexity"] > 1 and v["perplexity_rise"] is not None and 0 < v["accuracy"] < 1
        assert v["host_latency_ms"] > 0 and v["devices"]["raspberry-pi-4"]["estimated_p50_ms"] > 0
    assert abs(by_name["float32"]["perplexity_rise"]) < 0.01  # float32 computes what Keras computes
    assert by_name["int8-weights"]["gzip_bytes"] < by_name["float32"]["gzip_bytes"]
    (choice,) = [s for s in result["selections"] if s["target"] == "raspberry-pi-4"]
    chosen = by_name[choice["chosen"]]
    assert chosen["perplexity_rise"] <= 5
    assert all(v["gzip_bytes"] >= chosen["gzip_bytes"] for v in by_name.values() if v["perplexity_rise"] <= 5)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "held-out perplexity" in report and "perplexity" in report.split("## Variants")[1]
