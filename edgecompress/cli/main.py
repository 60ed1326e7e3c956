"""The `edgecompress` command group and its error policy.

Bad input (UserError, click usage errors) prints one line and exits 2 (the settings a UserError names shown
as the flags that set them); anything unexpected prints a short
message and exits 1, with the traceback only under --debug.
"""
from __future__ import annotations

import sys

import click

from edgecompress import __version__
from edgecompress.errors import UserError
from edgecompress.cli.options import in_flags


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgecompress")
@click.option("--debug", is_flag=True, help="Show the full traceback of internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compress Keras models, export them to TFLite, and benchmark them for Raspberry Pi and Android."""
    ctx.obj = {"debug": debug}


def _register() -> None:
    # Each command lives in its own module; importing them must stay cheap (no TensorFlow).
    from edgecompress.cli import (
        benchmark_cmd, check_cmd, convert_cmd, demo_cmd, devices_cmd, diagnose_cmd, generate_cmd, inspect_cmd,
        optimize_cmd, quantize_cmd, run_cmd,
    )

    for module in (benchmark_cmd, check_cmd, convert_cmd, demo_cmd, devices_cmd, diagnose_cmd, generate_cmd,
                   inspect_cmd, optimize_cmd, quantize_cmd, run_cmd):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = cli.main(args=argv, prog_name="edgecompress", standalone_mode=False)
        if isinstance(code, int) and code:  # a command's ctx.exit(CODE) comes back as the return value here
            sys.exit(code)
    except UserError as exc:
        click.echo(f"error: {in_flags(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # usage errors (exit 2): one line, with where to look
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(
            f"internal error: {type(exc).__name__}: {first}\n(rerun with `edgecompress --debug ...` for the traceback)",
            err=True,
        )
        sys.exit(1)
