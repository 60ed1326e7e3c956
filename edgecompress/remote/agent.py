"""The device side of `benchmark --on ssh://...`: `python -m edgecompress.remote.agent VERB [ARGS]`.

Verbs (each prints one JSON document on stdout):
  hello                      the device's identity (DeviceIdentity) and a fresh working folder
  measure MODEL OPTIONS_JSON one Measurement from the same harness as a local `benchmark`
  measure_lm MODEL THREADS RUNS
                             a language model's LMMeasurement (prefill and decode), as a local `benchmark` times it
  receive FILE               write stdin to FILE inside a working folder (how models reach the device:
                             through the ssh session itself, so neither scp nor SFTP is needed there)
  cleanup FOLDER             remove a working folder made by hello
Bad input ends with exit 2 and the one-line message on stderr, as the CLI does.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgecompress import __version__
from edgecompress.errors import UserError
from edgecompress.remote.protocol import PROTOCOL, DeviceIdentity, options_from_dict

WORK_PREFIX = "edgecompress-remote-"


def _cpu_model() -> str:
    """x86 names the model per core; ARM boards (a Pi) name the board in `Model`, or only the part number."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    for key in ("model name", "Model", "Hardware", "CPU part"):
        if fields.get(key):
            return fields[key] if key != "CPU part" else f"ARM part {fields[key]}"
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def _mem_available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def identity() -> DeviceIdentity:
    from edgecompress.runtime import runtime_info

    runtime = runtime_info()
    return DeviceIdentity(
        host=socket.gethostname(),
        machine=platform.machine(),
        cpu_model=_cpu_model(),
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        os=_os_name(),
        python=platform.python_version(),
        runtime=runtime.name,
        runtime_version=runtime.version,
        mem_available_mb=_mem_available_mb(),
        edgecompress=__version__,
        protocol=PROTOCOL,
    )


def _hello() -> dict[str, Any]:
    return {"identity": dataclasses.asdict(identity()), "workdir": tempfile.mkdtemp(prefix=WORK_PREFIX)}


def _measure(model: str, options_json: str, inputs: str | None = None) -> dict[str, Any]:
    from edgecompress.measure import measure

    return dataclasses.asdict(measure(model, options_from_dict(json.loads(options_json), inputs)))


def _measure_lm(model: str, threads: str, runs: str) -> dict[str, Any]:
    from edgecompress.generate import measure_lm

    return dataclasses.asdict(measure_lm(model, int(threads) or None, int(runs)))


def _work_folder(folder: Path) -> Path:
    # Only ever a folder hello made: the host never writes or removes anything else on the device.
    if folder.parent != Path(tempfile.gettempdir()) or not folder.name.startswith(WORK_PREFIX):
        raise UserError(f"{folder} is not an edgecompress working folder: refusing to touch it")
    return folder


def _receive(file: str) -> dict[str, Any]:
    path = Path(file)
    _work_folder(path.parent)
    with open(path, "wb") as out:
        size = out.write(sys.stdin.buffer.read())
    return {"received": file, "bytes": size}


def _cleanup(folder: str) -> dict[str, Any]:
    shutil.rmtree(_work_folder(Path(folder)), ignore_errors=True)
    return {"removed": folder}


VERBS = {"hello": _hello, "receive": _receive, "measure": _measure, "measure_lm": _measure_lm, "cleanup": _cleanup}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in VERBS:
        print(f"usage: python -m edgecompress.remote.agent {{{','.join(VERBS)}}} [ARGS]", file=sys.stderr)
        return 2
    try:
        result = VERBS[argv[0]](*argv[1:])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
