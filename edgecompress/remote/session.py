"""benchmark_over_ssh: the same harness as a local `benchmark`, run on the device through SSH.

The host checks each model (reading the .tflite, no TensorFlow), asks the device who it is (edgecompress's
agent there: protocol, CPU, OS, Python, runtime, free memory), copies the models into a fresh folder on the
device and measures them one by one there. A device that drops mid-run turns the remaining models into
error rows; the models measured before keep their results.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from edgecompress import __version__
from edgecompress.benchmark import BenchmarkResult, _speedups
from edgecompress.errors import UserError
from edgecompress.fileio import gzip_size
from edgecompress.generate import LMMeasurement
from edgecompress.measure import Measurement, MeasureOptions
from edgecompress.measure.harness import check_model
from edgecompress.progress import note
from edgecompress.remote import store
from edgecompress.remote.protocol import (PROTOCOL, DeviceIdentity, lm_measurement_from_dict, measurement_from_dict,
                                          options_to_dict)
from edgecompress.remote.ssh import ConnectionLost, SshTarget, run_ssh

AGENT = "edgecompress.remote.agent"
HELLO_TIMEOUT_S = 120.0  # the first import of numpy and the runtime on a cold SD card is slow
COPY_TIMEOUT_S = 600.0
LM_TIMEOUT_S = 1800.0  # a language model's prefill and decode runs on a slow device
NOT_FOUND = (126, 127)  # the device's shell: not executable / command not found


@dataclass
class RemoteBenchmark:
    """What `benchmark --on` returns: who measured, and the results (labelled measured)."""

    target: str
    identity: DeviceIdentity
    results: list[BenchmarkResult]
    device_name: str | None = None  # the profile (or recipe device) these measurements belong to

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"measured_on": self.target, "kind": "measured", "device": asdict(self.identity),
                "results": [r.to_dict() for r in self.results]}


def _agent(python: str, *args: str) -> list[str]:
    return [python, "-m", AGENT, *args]


def _last_line(proc: Any) -> str:
    """The last line the device's agent wrote on stderr (its one-line error), or its exit code."""
    return next((ln.strip() for ln in reversed(proc.stderr.splitlines()) if ln.strip()), f"exit code {proc.returncode}")


def _hello_failure(target: SshTarget, python: str, proc) -> UserError:
    err = proc.stderr
    if proc.returncode in NOT_FOUND or "No such file or directory" in err:
        return UserError(f"no Python at {python!r} on {target.url}: install python3 there, or pass "
                         "--remote-python PATH naming the Python that has edgecompress")
    if "No module named 'edgecompress'" in err:
        return UserError(f"edgecompress is not installed for {python} on {target.url}: run "
                         f"`{python} -m pip install edgecompress` there (it brings the ai-edge-litert runtime)")
    if "No module named 'edgecompress.remote" in err:
        return UserError(f"edgecompress on {target.url} is older than remote benchmarking: run "
                         f"`{python} -m pip install -U edgecompress=={__version__}` there")
    last = _last_line(proc)
    return UserError(f"edgecompress's agent failed on {target.url}: {last}")


def hello(target: SshTarget, python: str) -> tuple[DeviceIdentity, str]:
    """The device's identity and a fresh working folder there; every way this fails is one UserError."""
    try:
        proc = run_ssh(target, _agent(python, "hello"), HELLO_TIMEOUT_S)
    except ConnectionLost as exc:
        raise UserError(str(exc)) from None
    if proc.returncode != 0:
        raise _hello_failure(target, python, proc)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    ident = DeviceIdentity(**data["identity"])
    if ident.protocol != PROTOCOL:
        raise UserError(f"edgecompress {ident.edgecompress} on {target.url} speaks protocol {ident.protocol}, this "
                        f"host {PROTOCOL}: run `{python} -m pip install -U edgecompress=={__version__}` there")
    if ident.edgecompress != __version__:
        note(f"edgecompress {ident.edgecompress} on the device, {__version__} here; protocol {PROTOCOL} matches: running")
    return ident, data["workdir"]


def _check_fits(paths: Sequence[Path], ident: DeviceIdentity, target: SshTarget) -> None:
    if ident.mem_available_mb is None:
        return
    for p in paths:
        mb = p.stat().st_size / 2**20
        if mb > ident.mem_available_mb:
            raise UserError(f"model {p} ({mb:,.0f} MB) is larger than the free memory of {target.url} "
                            f"({ident.mem_available_mb:,.0f} MB): free memory there or use a smaller variant")


def _error_row(path: Path, options: MeasureOptions, error: str, kind: str) -> Measurement:
    data = path.read_bytes()
    return Measurement(model=str(path), runtime={}, threads=options.threads, xnnpack=options.use_xnnpack,
                       size_bytes=len(data), gzip_bytes=gzip_size(data), error=error, error_kind=kind)


def _send(target: SshTarget, python: str, local: Path, remote_path: str) -> None:
    proc = run_ssh(target, _agent(python, "receive", remote_path), COPY_TIMEOUT_S, stdin=local)
    if proc.returncode != 0:
        raise ConnectionLost(f"copying {local.name} failed: {proc.stderr.strip() or proc.returncode}")


def _measure_one(target: SshTarget, python: str, workdir: str, path: Path, options: MeasureOptions,
                 remote_inputs: str | None) -> Measurement:
    remote_model = f"{workdir}/{path.name}"
    _send(target, python, path, remote_model)
    args = [remote_model, json.dumps(options_to_dict(options))] + ([remote_inputs] if remote_inputs else [])
    proc = run_ssh(target, _agent(python, "measure", *args), options.timeout + HELLO_TIMEOUT_S)
    if proc.returncode != 0:
        return _error_row(path, options, f"on {target.url}: {_last_line(proc)}", "remote")
    return measurement_from_dict(json.loads(proc.stdout.strip().splitlines()[-1]), str(path))


@contextlib.contextmanager
def device_session(target: SshTarget, python: str, models: Sequence[Path]) -> Iterator[tuple[DeviceIdentity, str]]:
    """The device's identity and a working folder there, removed at the end whatever happens."""
    note(f"connecting to {target.url}")
    ident, workdir = hello(target, python)
    _check_fits(models, ident, target)
    try:
        yield ident, workdir
    finally:
        try:
            run_ssh(target, _agent(python, "cleanup", workdir), HELLO_TIMEOUT_S)
        except ConnectionLost:
            note(f"could not remove {workdir} on {target.url} (the connection is gone)")


def benchmark_over_ssh(
    paths: Sequence[str | os.PathLike],
    options: MeasureOptions,
    target: SshTarget,
    remote_python: str = "python3",
    device_name: str | None = None,
) -> RemoteBenchmark:
    """Measure each model on TARGET with the device's own edgecompress and runtime (see the module doc).

    DEVICE_NAME (a profile's name) is kept with each measurement in the store: what
    `devices calibrate NAME --from-measurements` refits that device from."""
    if not paths:
        raise UserError("no model given: pass one or more .tflite files")
    options.validate()
    models = [Path(p) for p in paths]
    for p in models:
        check_model(p, options.inputs, use_xnnpack=None)  # the device's runtime says what it lacks
    measurements: list[Measurement] = []
    with device_session(target, remote_python, models) as (ident, workdir):
        remote_inputs = None
        if options.inputs is not None:
            remote_inputs = f"{workdir}/inputs.npz"
            try:
                _send(target, remote_python, Path(options.inputs), remote_inputs)
            except ConnectionLost as exc:  # nothing was measured
                raise UserError(f"the device dropped before measuring: {exc}") from None
        for i, path in enumerate(models, 1):
            note(f"[{i}/{len(models)}] measuring {path} on {target.url} ({options.threads} thread(s))")
            try:
                m = _measure_one(target, remote_python, workdir, path, options, remote_inputs)
            except ConnectionLost as exc:
                m = _error_row(path, options, f"the device dropped: {exc}", "connection")
            if m.error:
                note(f"[{i}/{len(models)}] {path}: {m.error}")
            measurements.append(m)
    results = [BenchmarkResult(m, s) for m, s in zip(measurements, _speedups(measurements))]
    run = RemoteBenchmark(target.url, ident, results, device_name)
    store.record(run)
    return run


@dataclass
class RemoteLMBenchmark:
    """`benchmark --on ssh://` of language models: who measured, and each file's prefill and decode figures."""

    target: str
    identity: DeviceIdentity
    measurements: list[LMMeasurement]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"measured_on": self.target, "kind": "measured", "device": asdict(self.identity),
                "results": [{"measurement": asdict(m)} for m in self.measurements]}


def benchmark_lm_over_ssh(paths: Sequence[str | os.PathLike], target: SshTarget, remote_python: str = "python3",
                          threads: int | None = None, runs: int = 10) -> RemoteLMBenchmark:
    """Language-model files timed on TARGET by the device's own edgecompress (edgecompress.generate.measure_lm,
    in the agent's own process: its peak memory is the model's). A device that fails mid-run is one UserError."""
    models = [Path(p) for p in paths]
    measurements = []
    with device_session(target, remote_python, models) as (ident, workdir):
        for i, path in enumerate(models, 1):
            note(f"[{i}/{len(models)}] measuring {path} on {target.url} (prefill and decode, "
                 f"{threads or 'the runtime default'} thread(s))")
            remote_model = f"{workdir}/{path.name}"
            try:
                _send(target, remote_python, path, remote_model)
                proc = run_ssh(target, _agent(remote_python, "measure_lm", remote_model, str(threads or 0), str(runs)),
                               LM_TIMEOUT_S)
            except ConnectionLost as exc:
                raise UserError(f"the device dropped while measuring {path}: {exc}") from None
            if proc.returncode != 0:
                raise UserError(f"measuring {path} on {target.url} failed: {_last_line(proc)}")
            measurements.append(lm_measurement_from_dict(json.loads(proc.stdout.strip().splitlines()[-1]), str(path)))
    return RemoteLMBenchmark(target.url, ident, measurements)
