"""`benchmark --on DEVICE`: dispatch to the SSH or adb path and print the results labelled MEASURED."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from edgecompress.cli.benchmark_cmd import render
from edgecompress.errors import UserError
from edgecompress.measure import MeasureOptions
from edgecompress.progress import note
from edgecompress.tables import key_values, to_json


def benchmark_on(on: str | None, models: list[Path], options: MeasureOptions, device: str | None,
                 remote_python: str, ssh_config: Path | None, benchmark_binary: Path | None, as_json: bool) -> None:
    if on is None:
        raise UserError("--ssh-config and --benchmark-binary need --on DEVICE (ssh://USER@HOST or adb[:SERIAL])")
    if on == "adb" or on.startswith("adb:"):
        if device is not None:
            raise UserError("--device and --on adb conflict: --on measures the real device; drop --device")
        if ssh_config is not None:
            raise UserError("--ssh-config is for --on ssh://...; drop it with --on adb")
        from edgecompress.remote.adb import benchmark_over_adb

        run = benchmark_over_adb(models, options, on.partition(":")[2] or None, benchmark_binary)
    else:
        if benchmark_binary is not None:
            raise UserError("--benchmark-binary is for --on adb; over ssh the device runs edgecompress itself")
        from edgecompress.devices.profiles import load_profile
        from edgecompress.remote.session import benchmark_over_ssh
        from edgecompress.remote.ssh import parse_target

        # --device names the profile these measurements belong to (what `devices calibrate NAME
        # --from-measurements` refits): the figures themselves are the device's, never estimated
        name = None if device is None else load_profile(device).name
        run = benchmark_over_ssh(models, options, parse_target(on, ssh_config), remote_python, device_name=name)
    if as_json:
        click.echo(to_json(run.to_dict()))
    else:
        head = key_values(run.identity.pairs(), title=f"MEASURED on {run.target} (figures measured there, not estimated)")
        click.echo(head + "\n\n" + render(run.results))
    failed = [r for r in run.results if r.measurement.error]
    if failed:
        note(f"{len(failed)} of {len(run.results)} model(s) failed to run: see the error {'field' if as_json else 'lines'}")
        sys.exit(1)
