"""Recipe parsing and validation: every bad field is named with its line, through the CLI's error policy."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecompress.cli.main import main
from edgecompress.errors import UserError
from edgecompress.pipeline.recipe import load_recipe
from helpers import write_recipe

GOOD = """\
model = "model.keras"
devices = ["raspberry-pi-4", "pixel-3a"]
objective = "fastest"

[data]
train = "data/train.npz"
test = "data/test.npz"

[training]
epochs = 1
patience = 2

[constraints]
max_accuracy_drop = 1.5
max_gzip_kb = 100
max_latency_ms = { "raspberry-pi-4" = 5, pixel-3a = 2.5 }

[grid]
quantize = ["dynamic", "int8"]
prune = [0, 0.5]

[[variants]]
name = "full-int8"
quantize = "int8"
io_type = "int8"

[[variants]]
quantize = "int8"
qat = true
cluster = 8
"""


@pytest.fixture()
def folder(tmp_path: Path, digits_model_path: Path) -> Path:
    """A recipe's folder with the files it names: a real model, .npz files with x and y."""
    (tmp_path / "data").mkdir()
    shutil.copy(digits_model_path, tmp_path / "model.keras")
    np.savez(tmp_path / "data" / "unlabelled.npz", x=np.zeros((2, 8, 8, 1), np.float32))
    for name in ("train", "test"):
        np.savez(tmp_path / "data" / f"{name}.npz", x=np.zeros((2, 8, 8, 1), np.float32), y=np.zeros(2, np.int64))
    return tmp_path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return lines[occurrence - 1]


def test_good_recipe_parses_with_paths_from_its_folder(folder, monkeypatch):
    monkeypatch.chdir("/")  # relative paths are read from the recipe's folder, not the working directory
    recipe = load_recipe(write_recipe(folder, GOOD))
    assert recipe.model == (folder / "model.keras").resolve()
    assert recipe.data.train == (folder / "data" / "train.npz").resolve()
    assert recipe.data.calibration == recipe.data.train  # defaults to the training data
    assert recipe.data.eval == recipe.data.test
    assert recipe.devices == ("raspberry-pi-4", "pixel-3a")
    assert recipe.objective == "fastest"
    assert recipe.constraints.max_latency_ms == {"raspberry-pi-4": 5.0, "pixel-3a": 2.5}
    assert recipe.constraints.max_gzip_kb == 100.0
    assert (recipe.training.epochs, recipe.training.patience) == (1, 2)
    assert load_recipe(write_recipe(folder, GOOD.replace("epochs = 1\npatience = 2\n", ""))).training.epochs is None
    names = [v.name for v in recipe.variants]
    # explicit variants first, then the grid in a stable order
    assert names == ["full-int8", "cluster8-qat-int8", "dynamic", "prune0.5-dynamic", "int8", "prune0.5-int8"]
    qat = recipe.variants[1].settings
    assert qat.qat and qat.cluster == 8 and qat.techniques == ["cluster", "qat"]


def test_a_single_latency_limit_applies_to_every_device(folder):
    recipe = load_recipe(write_recipe(folder, GOOD.replace('{ "raspberry-pi-4" = 5, pixel-3a = 2.5 }', "7")))
    assert recipe.constraints.max_latency_ms == {"raspberry-pi-4": 7.0, "pixel-3a": 7.0}


def test_every_quantization_mode_is_a_recipe_value(folder):
    """Recipes take the modes converters/modes.py declares, a new one (int4-weights) included, with no list of
    their own."""
    from edgecompress.converters.modes import QUANTIZE_MODES

    assert "int4-weights" in QUANTIZE_MODES
    for mode in QUANTIZE_MODES:
        text = GOOD.replace('quantize = "int8"\nio_type = "int8"', f'quantize = "{mode}"')
        assert load_recipe(write_recipe(folder, text)).variants[0].settings.quantize == mode


BAD = [
    # (replace this, with this, the line holding this, words the message must hold)
    ('quantize = "int8"\nqat = true', 'quantize = "int8"\nqat = true\nsparsity = 0.5', "sparsity = 0.5",
     ["variants[1].sparsity", "unknown field"]),
    ('io_type = "int8"', 'io_type = "int8"\ndistill = true', "distill = true", ["variants[0].distill", "unknown field"]),
    ('name = "full-int8"\nquantize = "int8"', 'name = "full-int8"\nquantize = "int2"', 'quantize = "int2"',
     ["variants[0].quantize", "int2", "int16x8", "int4", "int8-weights"]),
    ('name = "full-int8"\nquantize = "int8"', 'name = "full-int8"\nquantize = "int8"\nblock_size = 32',
     "block_size = 32", ["variants[0].block_size", "int4"]),
    ('name = "full-int8"\nquantize = "int8"', 'name = "full-int8"\nquantize = "int4"\nblock_size = 48',
     "block_size = 48", ["variants[0].block_size", "48", "0 (per channel)", "32, 64, 128, 256"]),
    ('name = "full-int8"\nquantize = "int8"', 'name = "full-int8"\nquantize = "int4"\nalgorithm = "hadamard"',
     'algorithm = "hadamard"', ["variants[0].algorithm", "hadamard", "gptq", "auto"]),
    ('name = "full-int8"\nquantize = "int8"', 'name = "full-int8"\nquantize = "int8"\nalgorithm = "gptq"',
     'algorithm = "gptq"', ["variants[0].algorithm", "dynamic, int4, int8-weights", "not int8"]),
    ('quantize = "int8"\nio_type', 'quantize = "float16"\nio_type', 'io_type = "int8"',
     ["variants[0].io_type", "needs quantize", "int8"]),
    ('quantize = "int8"\nqat = true', 'quantize = "dynamic"\nqat = true', "qat = true", ["variants[1].qat", "int8"]),
    ('test = "data/test.npz"', 'test = "data/missing.npz"', "missing.npz", ["data.test", "does not exist"]),
    ('devices = ["raspberry-pi-4", "pixel-3a"]', 'devices = ["raspberry-pi-4", "pixel-99"]', "pixel-99",
     ["devices", "unknown device 'pixel-99'", "raspberry-pi-5"]),
    ("prune = [0, 0.5]", "prune = [0, 1.5]", "prune = [0, 1.5]", ["grid.prune", "1.5", "< 1"]),
    ("epochs = 1", 'epochs = "two"', 'epochs = "two"', ["training.epochs", "integer"]),
    ('objective = "fastest"', 'objective = "cheapest"', "cheapest", ["objective", "smallest"]),
    ("pixel-3a = 2.5", "pixel-3a = -1", "pixel-3a = -1", ["max_latency_ms.pixel-3a", "> 0"]),
    ("pixel-3a = 2.5", "pixel-4 = 1", "pixel-4 = 1", ["pixel-4", "not in the recipe's devices"]),
    ("cluster = 8", "cluster = 1", "cluster = 1", ["variants[1].cluster", "at least 2 clusters"]),
    ("max_accuracy_drop = 1.5", "max_accuracy_drop = true", "max_accuracy_drop", ["constraints.max_accuracy_drop", "number"]),
    ("[training]", "[train]", "[train]", ["train", "unknown field"]),
    # a file of the wrong kind is caught before any work starts
    ('train = "data/train.npz"', 'train = "model.keras"', 'train = "model.keras"',
     ["data.train", "model.keras is not a .npz file", "numpy.savez"]),
    ('model = "model.keras"', 'model = "data/train.npz"', 'model = "data/train.npz"',
     ["model", "train.npz is not a Keras model file"]),
    ('test = "data/test.npz"', 'test = "data/unlabelled.npz"', "unlabelled.npz", ["data.test", "no labels `y`"]),
    ('io_type = "int8"', 'io_type = "float32"\nmax_drop = 1', "max_drop = 1", ["variants[0].max_drop", "data.val"]),
    ('quantize = "int8"\nqat = true', 'quantize = "dynamic"\nmax_drop = 1', "max_drop = 1",
     ["variants[1].max_drop", "int8"]),
    ('io_type = "int8"', 'io_type = "float32"\nmax_drop = -1', "max_drop = -1", ["variants[0].max_drop", "0"]),
]


@pytest.mark.parametrize("old,new,at,words", BAD, ids=[b[1].splitlines()[-1][:30] for b in BAD])
def test_bad_field_names_field_and_line(folder, old, new, at, words):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(UserError) as err:
        load_recipe(write_recipe(folder, text))
    message = str(err.value)
    assert f"line {line_of(text, at)}:" in message, message
    for word in words:
        assert word in message, message
    assert "\n" not in message


def test_not_toml_gives_the_parser_line(folder):
    with pytest.raises(UserError, match=r"not valid TOML: .*line 5"):
        load_recipe(write_recipe(folder, GOOD.replace("[data]", "[data")))


def test_grid_drops_contradictions_but_not_everything(folder):
    text = GOOD.replace('prune = [0, 0.5]', 'qat = [false, true]')
    recipe = load_recipe(write_recipe(folder, text))
    assert "qat-int8" in [v.name for v in recipe.variants]
    assert "qat-dynamic" not in [v.name for v in recipe.variants]
    assert any("qat-dynamic" in n and "needs quantize" in n for n in recipe.notes)
    text = GOOD.replace('quantize = ["dynamic", "int8"]', 'quantize = ["float16"]').replace("prune = [0, 0.5]", "qat = [true]")
    with pytest.raises(UserError, match=rf"line {line_of(text, '[grid]')}: grid: every combination contradicts"):
        load_recipe(write_recipe(folder, text))


def test_training_technique_needs_training_data(folder):
    text = GOOD.replace('train = "data/train.npz"', 'calibration = "data/train.npz"')
    with pytest.raises(UserError, match=r"variants\[1\]: cluster fine-tunes the model: set data.train"):
        load_recipe(write_recipe(folder, text))


def test_duplicate_names_and_equivalent_variants(folder):
    text = GOOD.replace('name = "full-int8"\nquantize = "int8"\nio_type = "int8"', 'quantize = "int8"\nprune = 0.5')
    recipe = load_recipe(write_recipe(folder, text))  # the explicit prune0.5-int8 and the grid's are one variant
    assert [v.name for v in recipe.variants].count("prune0.5-int8") == 1
    assert any("duplicate" in n for n in recipe.notes)
    text = GOOD.replace("cluster = 8", 'cluster = 8\nname = "full-int8"')
    with pytest.raises(UserError, match=r"two variants are named 'full-int8'"):
        load_recipe(write_recipe(folder, text))


def test_run_command_reports_a_bad_recipe_in_one_line(folder, capsys):
    path = write_recipe(folder, GOOD.replace('quantize = "int8"\nqat = true', 'quantize = "dynamic"\nqat = true'))
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(path), "-o", str(folder / "run")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: recipe recipe.toml line ") and "Traceback" not in err
    assert not (folder / "run").exists()  # nothing written for a recipe that does not load


def test_max_drop_variant_uses_val(folder):
    np.savez(folder / "data" / "val.npz", x=np.zeros((2, 8, 8, 1), np.float32), y=np.zeros(2, np.int64))
    text = GOOD.replace('test = "data/test.npz"', 'test = "data/test.npz"\nval = "data/val.npz"')
    text = text.replace('io_type = "int8"', 'io_type = "float32"\nmax_drop = 0.5')
    settings = load_recipe(write_recipe(folder, text)).variants[0].settings
    assert settings.max_drop == 0.5 and settings.auto_name() == "int8-maxdrop0.5"


def test_a_grid_crosses_int4_blocks_with_other_modes(folder):
    text = GOOD.replace("prune = [0, 0.5]", "block_size = [0, 32]").replace(
        'quantize = ["dynamic", "int8"]', 'quantize = ["int8-weights", "int4"]')
    assert text != GOOD
    recipe = load_recipe(write_recipe(folder, text))
    names = [v.name for v in recipe.variants]
    assert {"int8-weights", "int4", "int4-b32"} <= set(names) and "int8-weights-b32" not in names
    assert any("int8-weights-b32" in n and "int4" in n for n in recipe.notes)


def test_a_grid_crosses_rounding_algorithms_with_the_weight_modes_only(folder):
    text = GOOD.replace("prune = [0, 0.5]", 'algorithm = ["auto", "gptq"]').replace(
        'quantize = ["dynamic", "int8"]', 'quantize = ["int4", "float16"]')
    recipe = load_recipe(write_recipe(folder, text))
    names = [v.name for v in recipe.variants]
    assert {"int4", "int4-gptq", "float16"} <= set(names) and "float16-gptq" not in names
    assert any("float16-gptq" in n for n in recipe.notes)
    gptq = next(v.settings for v in recipe.variants if v.name == "int4-gptq")
    assert gptq.needs_calibration and gptq.uses_calibration


TABLED = GOOD.replace('devices = ["raspberry-pi-4", "pixel-3a"]\n', "") + """
[devices.raspberry-pi-4]
on = "ssh://pi@raspberrypi.local:2222"

[devices.pixel-3a]
"""


def test_devices_as_tables_name_the_ones_measured_over_ssh(folder):
    from edgecompress.pipeline.recipe import DeviceAccess

    recipe = load_recipe(write_recipe(folder, TABLED))
    assert recipe.devices == ("raspberry-pi-4", "pixel-3a")
    assert recipe.measured == {"raspberry-pi-4": DeviceAccess("ssh://pi@raspberrypi.local:2222")}
    assert load_recipe(write_recipe(folder, GOOD)).measured == {}
    # a board no profile describes can be measured (its figures are never estimated)
    board = TABLED.replace("[devices.raspberry-pi-4]", "[devices.my-board]").replace('"raspberry-pi-4" = 5', "my-board = 5")
    assert load_recipe(write_recipe(folder, board)).measured["my-board"].on == "ssh://pi@raspberrypi.local:2222"


BAD_DEVICES = [
    ('on = "ssh://pi@raspberrypi.local:2222"', 'on = "http://raspberrypi.local"', "http://",
     ["devices.raspberry-pi-4.on", "ssh://USER@HOST[:PORT]"]),
    ('on = "ssh://pi@raspberrypi.local:2222"', 'on = "ssh://pi@raspberrypi.local:2222"\nport = 22', "port = 22",
     ["devices.raspberry-pi-4.port", "unknown field", "remote_python"]),
    ('on = "ssh://pi@raspberrypi.local:2222"', 'on = "ssh://pi@raspberrypi.local:2222"\nssh_config = "nope"',
     'ssh_config = "nope"', ["devices.raspberry-pi-4.ssh_config", "does not exist"]),
    ("[devices.pixel-3a]\n", '[devices.pixel-3a]\nremote_python = "python3"\n', "remote_python",
     ["devices.pixel-3a.remote_python", 'add on = "ssh://']),
    ("[devices.pixel-3a]\n", "[devices.pixel-3a]\n\n[devices.pixel-99]\n", "[devices.pixel-99]",
     ["devices.pixel-99", "unknown device 'pixel-99'", "measure it"]),
]


@pytest.mark.parametrize("old,new,at,words", BAD_DEVICES, ids=[b[2][:20] for b in BAD_DEVICES])
def test_bad_device_table_names_field_and_line(folder, old, new, at, words):
    text = TABLED.replace(old, new, 1)
    with pytest.raises(UserError) as err:
        load_recipe(write_recipe(folder, text))
    message = str(err.value)
    assert f"line {line_of(text, at)}:" in message, message
    assert all(word in message for word in words), message
