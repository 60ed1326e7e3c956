"""`benchmark --on adb`: what can be tested without an Android device.

No phone or emulator runs on these machines. Tested for real: the parser on benchmark_model's output (samples
below in the old and the newer format, as those builds print them), the command line built from the options,
the ABI check of the given binary (real ELF files), and the one-line errors. For device STATES only (no adb,
no device, an unauthorized device) a tiny fake `adb` script on PATH answers as adb does, since no device exists.
A real run through a phone was NOT tested.
"""
from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from edgecompress.errors import UserError
from edgecompress.measure import MeasureOptions
from edgecompress.remote.benchmark_model import command, parse_output

OLD_OUTPUT = """STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/edgecompress/mobilenet_v1.tflite]
#threads used for CPU inference: [4]
Loaded model /data/local/tmp/edgecompress/mobilenet_v1.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
"""

NEW_OUTPUT = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/edgecompress/model.tflite]
INFO: Report the peak memory footprint: [1]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /data/local/tmp/edgecompress/model.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 24.6229
INFO: Initialized session in 119.515ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=51629 median=51962 p95=87112

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=52162 curr=49785 min=49088 max=68610 avg=52743.2 std=3716 p5=49620 median=51891 p95=61628

INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 52743.2
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=58.2031
INFO: Overall peak memory footprint (MB) via periodic monitoring: 61.0742
"""

FAILED_OUTPUT = """INFO: STARTING!
INFO: Loaded model /data/local/tmp/edgecompress/model.tflite
ERROR: Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version of this builtin might be supported. Are you using an old TFLite binary with a newer model?
ERROR: Registration failed.
Failed to initialize the interpreter
Benchmarking failed.
"""


def test_parses_the_old_format():
    run = parse_output(OLD_OUTPUT)
    assert run.init_ms == pytest.approx(17.187) and run.first_ms == pytest.approx(3512.391)
    assert run.warmup_count == 1 and run.warmup_avg_ms == pytest.approx(3512.39)
    s = run.latency_ms
    assert s.count == 50 and s.avg == pytest.approx(2950.34) and s.std == pytest.approx(109.798)
    assert s.min == pytest.approx(2727.568) and s.max == pytest.approx(3189.954)
    assert s.p50 is None and s.p5 is None and s.p99 is None  # not printed by old builds: never made up
    assert (run.init_footprint_mb, run.overall_footprint_mb, run.peak_footprint_mb) == (4.21094, 46.0859, None)


def test_parses_the_newer_format_with_percentiles_and_peak_memory():
    run = parse_output(NEW_OUTPUT)
    assert run.init_ms == pytest.approx(119.515) and run.warmup_count == 9
    s = run.latency_ms
    assert s.count == 50 and s.p5 == pytest.approx(49.62) and s.p50 == pytest.approx(51.891)
    assert s.p95 == pytest.approx(61.628) and s.avg == pytest.approx(52.7432) and s.p90 is None
    assert run.peak_footprint_mb == pytest.approx(61.0742) and run.overall_footprint_mb == pytest.approx(58.2031)
    logcat = "\n".join(f"I tflite  : {line}" for line in NEW_OUTPUT.replace("INFO: ", "").splitlines())
    assert parse_output(logcat) == run


def test_a_failed_run_names_the_runtime_error():
    with pytest.raises(UserError, match=r"did not finish: .*Benchmarking failed|FULLY_CONNECTED"):
        parse_output(FAILED_OUTPUT)
    with pytest.raises(UserError, match="did not finish: no output"):
        parse_output("")


def test_the_command_carries_the_same_settings():
    options = MeasureOptions(threads=4, runs=30, warmup=2, min_secs=0.5, use_xnnpack=False)
    assert command("/data/local/tmp/edgecompress/benchmark_model", "/data/local/tmp/edgecompress/m.tflite", options) == [
        "/data/local/tmp/edgecompress/benchmark_model", "--graph=/data/local/tmp/edgecompress/m.tflite",
        "--num_threads=4", "--num_runs=30", "--min_secs=0.5", "--max_secs=150", "--warmup_runs=2",
        "--warmup_min_secs=0.5", "--use_xnnpack=false", "--report_peak_memory_footprint=true",
    ]


@pytest.fixture()
def fake_adb(tmp_path, monkeypatch):
    """An `adb` on PATH that answers every call with MESSAGE on stderr and exit 1 (a device state), no device."""

    def install(message: str) -> None:
        folder = tmp_path / "bin"
        folder.mkdir(exist_ok=True)
        script = folder / "adb"
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' {message!r} >&2\nexit 1\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", str(folder))

    return install


def test_shell_words_are_quoted_for_the_device(fake_adb):
    from edgecompress.remote.adb import AdbDevice

    fake_adb("unused")
    argv = AdbDevice("emulator-5554").shell_argv(["ls", "/data/local/tmp/a b; reboot"])
    assert argv == ["adb", "-s", "emulator-5554", "shell", "ls '/data/local/tmp/a b; reboot'"]


@pytest.mark.parametrize(
    "adb_says, expected",
    [
        (None, "no `adb` on PATH"),
        ("error: no devices/emulators found", "no Android device is connected"),
        ("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set", "has not authorized this computer"),
        ("error: device 'R58M123' not found", "is not connected"),
    ],
)
def test_device_state_errors_are_one_line(adb_says, expected, fake_adb, run_cli, float_tflite, tmp_path, monkeypatch):
    if adb_says is None:
        monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: no adb
    else:
        fake_adb(adb_says)
    code, out, err = run_cli(["benchmark", float_tflite, "--on", "adb:R58M123", "--benchmark-binary", sys.executable])
    assert code == 2 and out == "" and err.count("\n") == 1 and expected in err, err


def test_the_binary_must_match_the_phone_abi(tmp_path):
    from edgecompress.remote.adb import check_binary, elf_abis

    host = {"x86_64": "x86_64", "aarch64": "arm64-v8a"}[platform.machine()]
    assert elf_abis(Path(sys.executable).resolve()) == {host}  # this host's own ELF executable
    other = "armeabi-v7a" if host == "arm64-v8a" else "arm64-v8a"
    with pytest.raises(UserError, match=f"built for {host}, the device is {other}"):
        check_binary(Path(sys.executable).resolve(), other)
    text = tmp_path / "benchmark_model"
    text.write_text("#!/bin/sh\n")
    with pytest.raises(UserError, match="not an executable \\(ELF\\) file"):
        check_binary(text, "arm64-v8a")
    with pytest.raises(UserError, match="--benchmark-binary"):
        check_binary(None, "arm64-v8a")
