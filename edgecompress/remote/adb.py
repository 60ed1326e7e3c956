"""`benchmark --on adb[:SERIAL]`: TFLite's benchmark_model on an Android device, through the `adb` client.

The user gives benchmark_model built for the phone's ABI (--benchmark-binary; it cannot be bundled). Each model
and the binary are pushed to DEVICE_DIR, run with the same thread and phase settings as a local benchmark, and
the output is read into the same statistics (edgecompress.remote.benchmark_model). Nothing of edgecompress runs
on the phone. Every remote word goes through `adb shell`'s device shell, so each is shlex-quoted.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from edgecompress.benchmark import BenchmarkResult, _speedups
from edgecompress.errors import UserError
from edgecompress.fileio import gzip_size, require_file
from edgecompress.measure import Measurement, MeasureOptions
from edgecompress.measure.harness import check_model
from edgecompress.progress import note
from edgecompress.remote import store
from edgecompress.remote.benchmark_model import command, parse_output
from edgecompress.remote.protocol import DeviceIdentity
from edgecompress.remote.session import RemoteBenchmark

DEVICE_DIR = "/data/local/tmp/edgecompress"
ADB_TIMEOUT_S = 60.0
# ELF e_machine values -> the Android ABIs a binary of that machine runs on.
ELF_ABIS = {0xB7: {"arm64-v8a"}, 0x28: {"armeabi-v7a", "armeabi"}, 0x3E: {"x86_64"}, 0x03: {"x86"}}
# adb's own words for the device states a user can fix (first match wins).
ADB_STATES = (
    ("unauthorized", "{who} has not authorized this computer: unlock it and accept the USB debugging prompt"),
    ("no devices/emulators found", "no Android device is connected: plug one in with USB debugging enabled (adb devices)"),
    ("more than one device", "more than one Android device is connected: name one with --on adb:SERIAL (adb devices)"),
    ("not found", "{who} is not connected: check `adb devices` for its serial"),
    ("offline", "{who} is offline: reconnect it (adb reconnect)"),
)


class AdbDevice:
    def __init__(self, serial: str | None) -> None:
        if shutil.which("adb") is None:
            raise UserError("no `adb` on PATH: install Android's platform tools (apt-get install adb) to use --on adb")
        self.serial = serial
        self.who = f"Android device {serial}" if serial else "the Android device"

    def argv(self, *args: str) -> list[str]:
        return ["adb", *(["-s", self.serial] if self.serial else []), *args]

    def shell_argv(self, remote: Sequence[str]) -> list[str]:
        return self.argv("shell", " ".join(shlex.quote(a) for a in remote))

    def _state_error(self, text: str) -> UserError | None:
        for phrase, message in ADB_STATES:
            if phrase in text:
                return UserError(message.format(who=self.who))
        return None

    def run(self, argv: list[str], timeout: float = ADB_TIMEOUT_S) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UserError(f"{self.who} did not answer within {timeout:g} s: check the cable and `adb devices`") from None
        return proc

    def require_ready(self) -> None:
        proc = self.run(self.argv("get-state"))
        if proc.returncode != 0 or proc.stdout.strip() != "device":
            text = proc.stderr + proc.stdout
            raise self._state_error(text) or UserError(f"{self.who} is not ready: {text.strip() or proc.returncode}")

    def shell(self, *remote: str, timeout: float = ADB_TIMEOUT_S) -> str:
        proc = self.run(self.shell_argv(remote), timeout)
        if proc.returncode != 0:
            raise self._state_error(proc.stderr) or UserError(f"`{' '.join(remote)}` failed on {self.who}: "
                                                               f"{(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    def push(self, local: Path, remote: str) -> None:
        proc = self.run(self.argv("push", str(local), remote), timeout=600.0)
        if proc.returncode != 0:
            raise self._state_error(proc.stderr) or UserError(f"adb push {local.name} failed: {proc.stderr.strip()}")


def elf_abis(binary: Path) -> set[str]:
    """The Android ABIs BINARY (an ELF executable) runs on; empty when it is not an ELF file."""
    head = binary.read_bytes()[:20]
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return set()
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_ABIS.get(machine, set())


def check_binary(binary: Path | None, abi: str) -> Path:
    if binary is None:
        raise UserError(f"--on adb needs TFLite's benchmark_model built for {abi}: pass it with --benchmark-binary "
                        "(it cannot be bundled; TensorFlow publishes nightly builds per ABI)")
    path = require_file(binary, "--benchmark-binary")
    abis = elf_abis(path)
    if not abis:
        raise UserError(f"--benchmark-binary {path} is not an executable (ELF) file: give benchmark_model for {abi}")
    if abi not in abis:
        raise UserError(f"--benchmark-binary {path} is built for {'/'.join(sorted(abis))}, the device is {abi}: "
                        f"give benchmark_model for {abi}")
    return path


def _meminfo_mb(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return None


def identity(device: AdbDevice) -> DeviceIdentity:
    props = {}
    for key in ("ro.product.model", "ro.product.cpu.abi", "ro.soc.model", "ro.board.platform",
                "ro.build.version.release", "ro.build.version.sdk"):
        props[key] = device.shell("getprop", key).strip()
    cores = device.shell("cat", "/sys/devices/system/cpu/possible").strip()  # e.g. "0-7"
    count = sum(int(b) - int(a) + 1 for a, _, b in (r.partition("-") if "-" in r else (r, "", r) for r in cores.split(",")))
    return DeviceIdentity(
        host=f"{props['ro.product.model'] or 'Android device'}" + (f" ({device.serial})" if device.serial else ""),
        machine=props["ro.product.cpu.abi"],
        cpu_model=props["ro.soc.model"] or props["ro.board.platform"] or "unknown",
        cores=count,
        os=f"Android {props['ro.build.version.release']} (SDK {props['ro.build.version.sdk']})",
        python="-",
        runtime="benchmark_model (TFLite)",
        runtime_version="as given by --benchmark-binary",
        mem_available_mb=_meminfo_mb(device.shell("cat", "/proc/meminfo")),
        edgecompress="-",
        protocol=0,
    )


def _measurement(path: Path, options: MeasureOptions, output: str | None, error: str | None) -> Measurement:
    data = path.read_bytes()
    base = Measurement(model=str(path), runtime={"name": "benchmark_model", "version": "-"}, threads=options.threads,
                       xnnpack=options.use_xnnpack, size_bytes=len(data), gzip_bytes=gzip_size(data))
    if error is not None:
        base.error, base.error_kind = error, "remote"
        return base
    run = parse_output(output or "")
    base.init_ms, base.first_ms = run.init_ms, run.first_ms
    base.warmup_count, base.warmup_avg_ms, base.latency_ms = run.warmup_count, run.warmup_avg_ms, run.latency_ms
    # benchmark_model reports footprint deltas from its own start, not RSS: the peak is the closest figure.
    base.peak_rss_mb, base.model_load_rss_mb = run.peak_footprint_mb, run.init_footprint_mb
    return base


def benchmark_over_adb(paths: Sequence[str | Path], options: MeasureOptions, serial: str | None,
                       binary: Path | None) -> RemoteBenchmark:
    if not paths:
        raise UserError("no model given: pass one or more .tflite files")
    options.validate()
    if options.inputs is not None:
        raise UserError("--inputs is not supported with --on adb: benchmark_model feeds random inputs")
    models = [Path(p) for p in paths]
    for p in models:
        check_model(p, use_xnnpack=None)  # the device's runtime says what it lacks
    device = AdbDevice(serial)
    device.require_ready()
    ident = identity(device)
    tool = check_binary(binary, ident.machine)
    device.shell("mkdir", "-p", DEVICE_DIR)
    remote_tool = f"{DEVICE_DIR}/benchmark_model"
    device.push(tool, remote_tool)
    device.shell("chmod", "755", remote_tool)
    measurements = []
    for i, path in enumerate(models, 1):
        note(f"[{i}/{len(models)}] benchmark_model {path.name} on {device.who} ({options.threads} thread(s))")
        remote_model = f"{DEVICE_DIR}/{path.name}"
        try:
            device.push(path, remote_model)
            out = device.run(device.shell_argv(command(remote_tool, remote_model, options)), options.timeout)
            text = out.stdout + out.stderr
            m = _measurement(path, options, text, None)
        except UserError as exc:  # the device dropped, or benchmark_model did not finish: an error row
            m = _measurement(path, options, None, str(exc))
        measurements.append(m)
    results = [BenchmarkResult(m, s) for m, s in zip(measurements, _speedups(measurements))]
    run = RemoteBenchmark(f"adb:{serial}" if serial else "adb", ident, results)
    store.record(run)
    return run
