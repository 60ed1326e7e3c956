"""`benchmark --on ssh://...` through a real OpenSSH server on 127.0.0.1 (tools/loopback_sshd.py: its own
host key and a throwaway client key; openssh-server is installed with apt-get when missing, as root in CI).

Both sides are the runtime-only environment (no TensorFlow): the host CLI and the device's Python.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecompress.errors import UserError
from edgecompress.remote.protocol import PROTOCOL, DeviceIdentity
from helpers import one_line_error

RUN_FAST = ["--runs", "5", "--min-secs", "0"]


def _cli(runtime_venv: Path, *args, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"EDGECOMPRESS_CACHE": str(cache)} if cache else {})}
    return subprocess.run([str(Path(runtime_venv).parent / "edgecompress"), "benchmark", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd="/", env=env)


def test_benchmark_on_the_device_through_ssh(sshd, runtime_venv, float_tflite, int8_tflite, tmp_path, monkeypatch):
    proc = _cli(runtime_venv, float_tflite, int8_tflite, "--on", sshd.url, "--ssh-config", sshd.client_config,
                "--remote-python", runtime_venv, *RUN_FAST, "--threads", "1", "--json", cache=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["kind"] == "measured" and data["measured_on"] == sshd.url
    device = data["device"]
    probe = subprocess.run([str(runtime_venv), "-c", "import platform; print(platform.python_version())"],
                           capture_output=True, text=True, check=True)
    assert device["python"] == probe.stdout.strip()  # the device's Python, not the host's
    assert device["runtime"] == "ai-edge-litert" and device["protocol"] == PROTOCOL
    assert device["cores"] == len(os.sched_getaffinity(0)) and device["mem_available_mb"] > 100
    assert device["cpu_model"] and device["os"]
    results = data["results"]
    assert [r["model"] for r in results] == [str(float_tflite), str(int8_tflite)]
    for r in results:
        assert r["error"] is None and r["latency_ms"]["count"] >= 5 and r["latency_ms"]["p50"] > 0
        assert r["init_ms"] > 0 and r["peak_rss_mb"] > r["model_load_rss_mb"] > 0
        assert r["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert results[1]["inputs"][0]["dtype"] == "int8" and results[1]["speedup_vs_first"] > 0

    from edgecompress.remote.store import load_measurements

    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path))
    kept = load_measurements()  # every device measurement is kept, with what a refit needs
    assert [k["model"]["name"] for k in kept] == [float_tflite.name, int8_tflite.name]
    assert [k["model"]["integer"] for k in kept] == [False, True] and kept[0]["model"]["macs"] > 370_000
    assert kept[1]["figures_ms"]["p50"] == results[1]["latency_ms"]["p50"] and kept[0]["device"] == device

    table = _cli(runtime_venv, float_tflite, "--on", sshd.url, "--ssh-config", sshd.client_config,
                 "--remote-python", runtime_venv, *RUN_FAST)
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith(f"MEASURED on {sshd.url}") and "timed runs (ms)" in table.stdout
    assert "ai-edge-litert" in table.stdout and "free memory" in table.stdout


def test_unreachable_port(sshd, runtime_venv, float_tflite):
    from loopback_sshd import free_port

    url = f"ssh://{sshd.url.split('//')[1].split('@')[0]}@127.0.0.1:{free_port()}"
    line = one_line_error(_cli(runtime_venv, float_tflite, "--on", url, "--ssh-config", sshd.client_config))
    assert "unreachable" in line and "Connection refused" in line


def test_refused_key(sshd, runtime_venv, float_tflite):
    line = one_line_error(_cli(runtime_venv, float_tflite, "--on", sshd.url, "--ssh-config", sshd.bad_key_config,
                                "--remote-python", runtime_venv))
    assert "authentication refused" in line


def test_missing_edgecompress_and_missing_python(sshd, runtime_venv, float_tflite, tmp_path):
    bare = tmp_path / "bare"  # a Python with nothing installed: what a fresh device has
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    line = one_line_error(_cli(runtime_venv, float_tflite, "--on", sshd.url, "--ssh-config", sshd.client_config,
                                "--remote-python", bare / "bin" / "python"))
    assert "edgecompress is not installed" in line and "pip install edgecompress" in line
    line = one_line_error(_cli(runtime_venv, float_tflite, "--on", sshd.url, "--ssh-config", sshd.client_config,
                                "--remote-python", tmp_path / "no-such-python"))
    assert "no Python at" in line and "--remote-python" in line


def test_a_device_that_drops_mid_run_gives_an_error_row(sshd, runtime_venv, float_tflite, int8_tflite, tmp_path):
    """The device's Python is a wrapper that kills its own SSH session when asked to measure the second model:
    the connection really drops (ssh exits 255) in the middle of the run."""
    second = tmp_path / "second.tflite"
    second.write_bytes(int8_tflite.read_bytes())
    wrapper = tmp_path / "dropping-python"
    wrapper.write_text(
        "#!/bin/sh\n"
        # the nearest sshd above this process serves this session only (the listener is further up)
        'case "$*" in *measure*second.tflite*)\n'
        '  p=$PPID; while [ "$(cat /proc/$p/comm)" != sshd ]; do p=$(cut -d" " -f4 /proc/$p/stat); done\n'
        '  kill -9 "$p" ;;\nesac\n'
        f'exec {runtime_venv} "$@"\n'
    )
    wrapper.chmod(0o755)
    proc = _cli(runtime_venv, float_tflite, second, "--on", sshd.url, "--ssh-config", sshd.client_config,
                "--remote-python", wrapper, *RUN_FAST, "--json")
    assert proc.returncode == 1, proc.stderr
    first, dropped = json.loads(proc.stdout)["results"]
    assert first["error"] is None and first["latency_ms"]["count"] >= 5
    assert dropped["error_kind"] == "connection" and dropped["latency_ms"] is None
    assert "dropped" in dropped["error"]


def test_a_model_larger_than_the_free_memory_is_refused(tmp_path):
    from edgecompress.remote.session import _check_fits
    from edgecompress.remote.ssh import parse_target

    model = tmp_path / "big.tflite"
    model.write_bytes(b"\0" * (3 * 2**20))
    ident = DeviceIdentity("pi", "aarch64", "Raspberry Pi 4", 4, "Debian 12", "3.11.2", "ai-edge-litert", "2.3.0",
                           mem_available_mb=2.0, edgecompress="0.1.0", protocol=PROTOCOL)
    with pytest.raises(UserError, match=r"big.tflite \(3 MB\) is larger than the free memory of ssh://pi@pi.local \(2 MB\)"):
        _check_fits([model], ident, parse_target("ssh://pi@pi.local"))
    _check_fits([model], DeviceIdentity(**{**ident.__dict__, "mem_available_mb": 4.0}), parse_target("ssh://pi@pi.local"))


@pytest.mark.parametrize("url", ["http://pi", "ssh://", "ssh://pi:secret@host", "ssh://pi@host:99999", "ssh://pi@host/x"])
def test_bad_addresses_are_refused(url):
    from edgecompress.remote.ssh import parse_target

    with pytest.raises(UserError, match="ssh://USER@HOST|port"):
        parse_target(url)


def test_remote_arguments_are_quoted_for_the_device_shell():
    from edgecompress.remote.ssh import parse_target

    argv = parse_target("ssh://pi@pi.local:2222").ssh_argv(["python3", "-m", "x", "a b; rm -rf ~", "$(id)"])
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    assert argv[-3:] == ["pi@pi.local", "--", "python3 -m x 'a b; rm -rf ~' '$(id)'"]


@pytest.fixture(scope="module")
def pi_python(tmp_path_factory) -> Path:
    """A wrapper that is the Raspberry Pi OS arm64 userland's Python 3.11 under QEMU, with ai-edge-litert's
    aarch64 wheels and this checkout's edgecompress (a pure-Python wheel) importable: the device's Python."""
    import shlex
    import shutil

    import click

    from apt_packages import ensure_packages
    from edgecompress.devices.profiles import load_profile
    from edgecompress.devices.userland import RuntimeSpec, guest_python, missing_tools

    ensure_packages(missing_tools())
    folder = tmp_path_factory.mktemp("pi-python")
    wheel = folder / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w",
                    str(wheel), str(Path(__file__).resolve().parents[1])], check=True, capture_output=True)
    extra = folder / "site"
    for whl in wheel.glob("*.whl"):
        shutil.unpack_archive(whl, extra, "zip")
    shutil.copytree(Path(click.__file__).parent, extra / "click")  # pure Python
    wrapper = folder / "python3"
    cmd = guest_python(load_profile("raspberry-pi-4").userland, RuntimeSpec("ai-edge-litert", "2.3.0"), [extra], str(wrapper))
    wrapper.write_text(f"#!/bin/sh\nexec {' '.join(map(shlex.quote, cmd))} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def test_benchmark_on_the_pi_userland_through_ssh(sshd, runtime_venv, pi_python, int8_tflite):
    """End to end on aarch64: the device's Python is Raspberry Pi OS's under QEMU. Only that it runs there is
    checked: QEMU time is instruction translation, never a latency."""
    proc = _cli(runtime_venv, int8_tflite, "--on", sshd.url, "--ssh-config", sshd.client_config,
                "--remote-python", pi_python, "--runs", "2", "--min-secs", "0", "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    device, (result,) = data["device"], data["results"]
    assert device["machine"] == "aarch64" and device["python"].startswith("3.11") and "bookworm" in device["os"]
    assert device["runtime"] == "ai-edge-litert" and device["cpu_model"].startswith("Raspberry Pi 4")
    assert result["error"] is None and result["latency_ms"]["count"] >= 2 and result["peak_rss_mb"] > 0


@pytest.fixture()
def other_release(runtime_venv, tmp_path):
    """A device Python whose edgecompress is another release: this package copied with its version (and, when
    asked, its protocol) changed, put first on the path by a wrapper around the runtime-only venv's Python."""
    import shutil

    site = subprocess.run([str(runtime_venv), "-c", "import edgecompress, os; print(os.path.dirname(edgecompress.__file__))"],
                          capture_output=True, text=True, check=True, cwd="/").stdout.strip()

    def make(version: str, protocol: int | None = None) -> Path:
        package = tmp_path / version / "edgecompress"
        shutil.copytree(site, package)
        init = package / "__init__.py"
        init.write_text(init.read_text().replace('__version__ = "', f'__version__ = "{version}"  # was "', 1))
        if protocol is not None:
            proto = package / "remote" / "protocol.py"
            proto.write_text(proto.read_text().replace("\nPROTOCOL = ", f"\nPROTOCOL = {protocol}  # was ", 1))
        wrapper = tmp_path / version / "python"
        wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={package.parent} exec {runtime_venv} "$@"\n')
        wrapper.chmod(0o755)
        return wrapper

    return make


def test_another_release_on_the_device(sshd, runtime_venv, float_tflite, other_release):
    same_protocol = _cli(runtime_venv, float_tflite, "--on", sshd.url, "--ssh-config", sshd.client_config,
                         "--remote-python", other_release("0.0.9"), *RUN_FAST, "--json")
    assert same_protocol.returncode == 0, same_protocol.stderr
    assert "edgecompress 0.0.9 on the device" in same_protocol.stderr and "matches: running" in same_protocol.stderr
    assert json.loads(same_protocol.stdout)["device"]["edgecompress"] == "0.0.9"
    line = one_line_error(_cli(runtime_venv, float_tflite, "--on", sshd.url, "--ssh-config", sshd.client_config,
                                "--remote-python", other_release("9.0.0", protocol=PROTOCOL + 1)))
    assert f"speaks protocol {PROTOCOL + 1}" in line and "pip install -U edgecompress==" in line
