"""`edgecompress check`: operator versions against a runtime, and one inference on the Raspberry Pi OS
userland (Debian bookworm arm64) under QEMU against the host's.

The userland and the aarch64 wheels are fetched once into the edgecompress cache (about 235 MB + wheels);
qemu-user-static and debootstrap are installed with apt-get when missing (root in CI), since the command
itself installs nothing as root.
"""
from __future__ import annotations

import json

import pytest

from edgecompress.errors import UserError

PI = "raspberry-pi-4"
BOTH = ["--runtime", "ai-edge-litert==2.3.0", "--runtime", "tflite-runtime==2.14.0"]


@pytest.fixture(scope="module")
def dynamic_tflite(digits_model, session_dir):
    """Dynamic-range quantization by TF 2.21's converter: FULLY_CONNECTED at a version newer than TFLite 2.14."""
    import tensorflow as tf

    fn = tf.function(lambda x: digits_model(x, training=False)).get_concrete_function(tf.TensorSpec([1, 8, 8, 1], tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], digits_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    path = session_dir / "digits_dynamic.tflite"
    path.write_bytes(conv.convert())
    return path


def test_static_operator_versions(int8_tflite, dynamic_tflite):
    from edgecompress.devices.compat import model_ops, static_check

    int8 = model_ops(int8_tflite)
    assert int8.min_runtime_version and ("CONV_2D", 3) in int8.ops
    assert static_check(int8, "tflite-runtime", "2.14.0").ok is True
    dynamic = model_ops(dynamic_tflite)
    fc = max(v for n, v in dynamic.ops if n == "FULLY_CONNECTED")
    assert fc >= 12 and dynamic.min_runtime_version == "2.17.0"
    old = static_check(dynamic, "tflite-runtime", "2.14.0")
    assert old.ok is False and f"FULLY_CONNECTED v{fc}" in old.message and "2.17.0" in old.message
    assert static_check(dynamic, "ai-edge-litert", "2.3.0").ok is True
    assert static_check(dynamic, "ai-edge-litert", "0.9.0").ok is None  # unknown release: no guess


def test_android_profiles_get_the_static_check(run_cli, dynamic_tflite):
    code, out, _ = run_cli(["check", dynamic_tflite, "--device", "pixel-3a", "--runtime", "tflite-runtime==2.14.0", "--json"])
    report = json.loads(out)
    assert code == 1 and report["userland"] is None
    (verdict,) = report["verdicts"]
    assert verdict["runs"] is False and verdict["emulated"] is False and "FULLY_CONNECTED" in verdict["static"]["message"]
    code, out, _ = run_cli(["check", dynamic_tflite, "--device", "pixel-3a", "--json"])
    assert code == 0 and json.loads(out)["verdicts"][0]["runs"] is True


def test_int8_runs_on_the_pi_userland_under_both_runtimes(emulation_tools, int8_tflite):
    import dataclasses

    from edgecompress.check import check
    from edgecompress.cli.check_cmd import render

    result = check(int8_tflite, PI, ["ai-edge-litert==2.3.0", "tflite-runtime==2.14.0"])
    report = json.loads(json.dumps(dataclasses.asdict(result)))
    assert report["userland"].startswith("Raspberry Pi OS") and report["host_runtime"].startswith("ai-edge-litert")
    for verdict in report["verdicts"]:
        assert verdict["runs"] is True and verdict["emulated"] is True, verdict
        assert verdict["guest"]["machine"] == "aarch64" and verdict["guest"]["python"].startswith("3.11")
        (out0,) = verdict["agreement"]
        assert out0["dtype"] == "int8" and out0["max_steps"] is not None and out0["max_steps"] <= 2
        assert out0["check"]["kind"] == "classes" and out0["check"]["agreement"] >= 0.9 and out0["device_nonfinite"] == 0
    assert report["inputs"] == "8 generated samples + edge inputs (zeros, min, max)"
    numpies = {v["runtime"]: v["guest"]["numpy"] for v in report["verdicts"]}
    assert numpies["tflite-runtime 2.14.0"].startswith("1.")  # the old runtime needs numpy<2 in the guest
    table = render(result)
    assert table.count("RUNS (on the emulated userland)") == 2 and "integer step" in table
    assert "says nothing about the device's latency" in table and " ms" not in table  # QEMU time is never shown


def test_an_operator_version_the_old_runtime_lacks_is_named(run_cli, emulation_tools, dynamic_tflite):
    code, out, err = run_cli(["check", dynamic_tflite, "--device", PI, *BOTH, "--json"])
    assert code == 1, err
    new, old = json.loads(out)["verdicts"]
    assert new["runs"] is True and new["agreement"][0]["check"]["max_abs_error"] < 1e-4
    assert old["runs"] is False and old["emulated"] is True
    assert old["missing_op"].startswith("FULLY_CONNECTED v1")  # the runtime's own refusal, parsed
    assert "ai-edge-litert==2.3.0" in old["advice"] and "--quantize int8" in old["advice"]


def test_missing_host_tools_are_named_not_installed(float_tflite, monkeypatch, tmp_path):
    from edgecompress.check import check

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match=r"needs .*qemu-user-static.*sudo apt-get install"):
        check(float_tflite, PI)


def test_bad_runtime_spec(run_cli, float_tflite):
    code, _, err = run_cli(["check", float_tflite, "--device", PI, "--runtime", "tflite-runtime"])
    assert code == 2 and "NAME==VERSION" in err and err.count("\n") == 1


def test_damaged_files_are_refused_in_one_line(int8_tflite, tmp_path):
    """Mutated copies of a real model: every one is read or refused with a UserError, never a crash."""
    import random

    from edgecompress.devices.compat import model_ops, static_check

    data, rng = int8_tflite.read_bytes(), random.Random(0)
    for i in range(150):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        path = tmp_path / f"m{i}.tflite"
        path.write_bytes(mutated[: rng.randrange(len(mutated))] if rng.random() < 0.3 else mutated)
        try:
            static_check(model_ops(path), "tflite-runtime", "2.14.0")
        except UserError as exc:
            assert "\n" not in str(exc)


def test_a_metadata_entry_pointing_outside_the_file(int8_tflite, tmp_path):
    """The min_runtime_version entry's buffer index overwritten with a huge one: refused, not a struct.error."""
    import struct

    from ai_edge_litert import schema_py_generated as schema

    from edgecompress.devices.compat import model_ops

    data = bytearray(int8_tflite.read_bytes())
    root = schema.Model.GetRootAs(bytes(data), 0)
    (meta,) = [root.Metadata(i) for i in range(root.MetadataLength()) if root.Metadata(i).Name() == b"min_runtime_version"]
    struct.pack_into("<I", data, meta._tab.Pos + meta._tab.Offset(6), 1_000_000)  # field 1 of Metadata: buffer
    path = tmp_path / "damaged.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged"):
        model_ops(path)


@pytest.fixture(scope="module")
def log_tflite(session_dir):
    """log(x) then a Dense layer: finite for positive samples, NaN/-Inf for an all-zero input (an edge input)."""
    import tensorflow as tf

    dense = tf.keras.layers.Dense(3)
    dense.build((None, 6))
    fn = tf.function(lambda x: dense(tf.math.log(x))).get_concrete_function(tf.TensorSpec([1, 6], tf.float32))
    path = session_dir / "log.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], dense).convert())
    return path


def test_nan_on_the_device_is_never_a_pass(run_cli, emulation_tools, log_tflite):
    """A model NaN on an edge input: FAILS (exit 1), the output and the sample count named, the cause said."""
    code, out, _ = run_cli(["check", log_tflite, "--device", PI, "--json"])
    (verdict,) = json.loads(out)["verdicts"]
    assert code == 1 and verdict["runs"] is False and verdict["emulated"] is True
    (out0,) = verdict["agreement"]
    assert out0["device_nonfinite"] >= 1 and out0["check"]["reference_nonfinite"] == out0["device_nonfinite"]
    assert "NaN/Inf on" in verdict["error"] and "this host's too" in verdict["error"]
    assert "the model itself gives NaN/Inf" in verdict["advice"]


def test_check_runs_the_users_samples(run_cli, emulation_tools, int8_tflite, calib_npz):
    code, out, err = run_cli(["check", int8_tflite, "--device", PI, "--inputs", calib_npz, "--num-samples", "5"])
    assert code == 0, err
    assert "5 given samples + edge inputs (zeros, min, max)" in out and "RUNS (on the emulated userland)" in out


def test_a_host_crash_is_one_line(run_cli, emulation_tools, int8_tflite, tmp_path, monkeypatch):
    """check's host side runs the file in a child process: a runtime crash there is one line, exit 1 (issue 25)."""
    import shutil

    from edgecompress.isolation import TEST_SIGNAL_ENV

    doomed = shutil.copy(int8_tflite, tmp_path / "doomed.tflite")
    monkeypatch.setenv(TEST_SIGNAL_ENV, "doomed.tflite:SIGSEGV")
    code, out, err = run_cli(["check", doomed, "--device", PI])
    assert code == 1 and out == "" and "(SIGSEGV)" in err and "doomed.tflite" in err and "Traceback" not in err
