"""The demo's preparation (trained model, student, data, bundled recipe) and its refusal to overwrite.

The full demo (train + 11 variants + report) takes minutes: benchmarks/demo_time.py runs and times it.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgecompress.cli.main import main
from edgecompress.demo import demo_files, prepare_demo
from edgecompress.evaluate import evaluate
from edgecompress.pipeline.recipe import load_recipe

TECHNIQUES = {"distillation", "low_rank", "prune", "cluster", "qat"}


def test_prepare_writes_a_valid_recipe_covering_every_technique(tmp_path):
    out = tmp_path / "demo"
    recipe_path = prepare_demo(out, epochs=8)
    assert all(p.is_file() for p in demo_files(out))

    recipe = load_recipe(recipe_path)  # the bundled recipe validates against the files written beside it
    assert len(recipe.variants) >= 8
    assert recipe.devices == ("raspberry-pi-4", "pixel-3a")
    settings = [v.settings for v in recipe.variants]
    assert {q.quantize for q in settings} >= {"dynamic", "float16", "int8"}
    assert {t for s in settings for t in s.techniques} == TECHNIQUES
    combined = [s for s in settings if {"prune", "cluster", "qat"} <= set(s.techniques)]
    assert combined and combined[0].quantize == "int8"
    assert any(s.prune and s.quantize == "int8" and s.techniques == ["prune"] for s in settings)

    # held-out data really is held out: no test image appears in the training or calibration files
    train, test = np.load(out / "data" / "train.npz")["x"], np.load(out / "data" / "test.npz")["x"]
    seen = {row.tobytes() for row in train.reshape(len(train), -1)}
    assert not any(row.tobytes() in seen for row in test.reshape(len(test), -1)[:100])
    assert evaluate(out / "digits.keras", out / "data" / "test.npz").accuracy > 0.9


def test_demo_never_overwrites_without_force(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "digits.keras").write_bytes(b"a user's own model")
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "-o", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--force" in err and "Traceback" not in err and err.count("\n") == 1
    assert (out / "digits.keras").read_bytes() == b"a user's own model"
    assert sorted(p.name for p in out.iterdir()) == ["digits.keras"]


def test_the_text_demo_writes_its_model_vocabulary_and_a_recipe_of_transformer_techniques(tmp_path):
    from edgecompress.text.data import vocabulary_path
    from edgecompress.text.tokenizer import load_vocabulary

    out = tmp_path / "text"
    recipe = load_recipe(prepare_demo(out, epochs=1, task="text"))
    assert all(p.is_file() for p in demo_files(out, "text"))
    assert load_vocabulary(out / "vocab.txt") == load_vocabulary(vocabulary_path())  # shipped beside the model
    settings = [v.settings for v in recipe.variants]
    assert {s.quantize for s in settings} >= {"none", "dynamic", "float16", "int8", "int4"}
    assert {t for s in settings for t in s.techniques} == {"structured_prune", "distillation", "prune", "low_rank", "qat"}
    assert np.load(out / "data" / "test.npz")["x"].dtype == np.int32  # token ids, as the model takes them
    assert evaluate(out / "text.keras", out / "data" / "test.npz").accuracy > 0.6  # one epoch already learns


def test_a_demo_rerun_reuses_its_files(tmp_path, capsys):
    """The README's first command, run twice in the same folder, resumes instead of refusing (issue 18)."""
    out = tmp_path / "demo"
    recipe = prepare_demo(out, epochs=1)
    model_bytes = (out / "digits.keras").read_bytes()
    (out / "recipe.toml").write_text(recipe.read_text() + "\n# edited by the user\n")
    assert prepare_demo(out, epochs=1) == recipe
    assert "reusing the example model" in capsys.readouterr().err
    assert (out / "digits.keras").read_bytes() == model_bytes and "edited by the user" in recipe.read_text()
    with pytest.raises(Exception, match="other settings"):  # other settings: the files are not what was asked
        prepare_demo(out, epochs=2)


def test_the_generate_demo_writes_a_language_model_its_tokenizer_and_token_windows(tmp_path):
    from tokenizers import Tokenizer

    out = tmp_path / "generate"
    recipe = load_recipe(prepare_demo(out, epochs=1, task="generate"))
    assert all(p.is_file() for p in demo_files(out, "generate"))
    settings = [v.settings for v in recipe.variants]
    assert {s.quantize for s in settings} >= {"none", "dynamic", "int8-weights", "int4-weights", "int4"}
    assert {t for s in settings for t in s.techniques} == {"structured_prune", "distillation"}
    assert recipe.constraints.max_perplexity_rise == 10 and recipe.objective == "fastest"
    data = np.load(out / "data" / "test.npz")
    assert data["x"].dtype == np.int32 and np.array_equal(data["x"][:, 1:], data["y"][:, :-1])  # next tokens
    assert Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size() == 2048  # what a device runtime reads
    result = evaluate(out / "lm.keras", out / "data" / "test.npz")
    assert result.task == "language-model" and result.perplexity < 2048 / 4  # one epoch already learns
