"""`edgecompress check MODEL.tflite --device NAME [--runtime NAME==VERSION ...]`: will it run there, and agree?"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from edgecompress.check import CHECK_SAMPLES
from edgecompress.cli.options import json_option
from edgecompress.tables import fmt, key_values, table, to_json


def _agreement(verdict) -> str:
    if not verdict.agreement:
        return "-"
    parts = []
    for a in verdict.agreement:
        c = a.check
        found = [f"SQNR {'exact' if c.sqnr_db == float('inf') else fmt(c.sqnr_db)} dB" if c.sqnr_db is not None else
                 f"max abs error {fmt(c.max_abs_error)}"]
        if a.max_steps is not None:
            found.append(f"{a.max_steps} integer step{'s' if a.max_steps != 1 else ''}")
        if a.device_nonfinite:
            found.append(f"NaN/Inf on {a.device_nonfinite}")
        parts.append(f"{a.name}: {', '.join(found)}")
    return "; ".join(parts)


def _outcome(verdict) -> str:
    if verdict.runs is None:
        return "unknown (static check inconclusive)"
    if verdict.runs:
        return "RUNS" + (" (on the emulated userland)" if verdict.emulated else " (operator versions known)")
    return "FAILS" + (f": lacks {verdict.missing_op}" if verdict.missing_op else "")


def render(report) -> str:
    where = f"{report.userland}, under QEMU" if report.userland else "operator versions only (no userland to emulate)"
    head = key_values(
        [
            ("device", f"{report.device} ({where})"),
            ("operators", ", ".join(f"{n} v{v}" for n, v in report.ops)),
            ("min_runtime_version", report.min_runtime_version or "- (not in the file)"),
            ("outputs compared with", f"{report.host_runtime} on this host, same inputs: {report.inputs}"
             if report.userland else "-"),
        ],
        title=f"== check {report.model}",
    )
    rows = [[v.runtime, _outcome(v), v.static.message, _agreement(v)] for v in report.verdicts]
    parts = [head, table(["runtime", "verdict", "operator versions (static)", "outputs vs host"], rows, title="Verdicts")]
    for v in report.verdicts:
        if v.runs is False:
            parts.append(f"{v.runtime}: {v.error or v.static.message}\n  to avoid it: {v.advice or '-'}")
    if report.userland:
        parts.append("QEMU translates every instruction: its time says nothing about the device's latency and is not shown.")
    return "\n\n".join(parts)


@click.command("check")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--device", required=True, help="A device profile name (see `edgecompress devices list`) or a PROFILE.toml file.")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME==VERSION",
              help="Runtime to check against (repeatable): ai-edge-litert==2.3.0, tflite-runtime==2.14.0. Default: the profile's.")
@click.option("--inputs", type=click.Path(path_type=str),
              help="Samples to run (.npz with one array per input name, or `x`; or .npy); generated ones otherwise. "
                   "Edge inputs (all zeros, the minimum, the maximum) are always added.")
@click.option("--num-samples", type=click.IntRange(min=1), default=CHECK_SAMPLES, show_default=True,
              help="How many samples to run under emulation (QEMU is slow: seconds per inference of a large model).")
@json_option
def check_command(model: Path, device: str, runtimes: tuple[str, ...], inputs: str | None, num_samples: int,
                  as_json: bool) -> None:
    """Check MODEL.tflite against a device's own software stack: its runtime's operator versions and, for a
    device with a Linux userland (Raspberry Pi OS), the same inputs run on that userland under QEMU and on
    this host, judged output by output. Exit code 1 when a runtime cannot run the model or its outputs are
    NaN/Inf or disagree with this host's.
    """
    from edgecompress.check import check

    report = check(model, device, runtimes, inputs=inputs, num_samples=num_samples)
    click.echo(to_json(dataclasses.asdict(report)) if as_json else render(report))
    if any(v.runs is False for v in report.verdicts):
        sys.exit(1)


COMMANDS = [check_command]
