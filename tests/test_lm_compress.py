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
