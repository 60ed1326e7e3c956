"""`edgecompress run RECIPE.toml`: sweep a recipe's variants and choose the one to ship per device."""
from __future__ import annotations

from typing import Any

import click

from edgecompress.cli.options import emit, json_option


def render_run(result: Any) -> str:
    """The variant table, each target's choice with its reason, and where the report is."""
    from edgecompress.pipeline.report import figure_sources, language_models, table_headers, table_rows
    from edgecompress.tables import table

    sources = figure_sources(result.records, result.targets)
    lm = language_models(result.records)
    lines = [table(table_headers(result.targets, sources, lm), table_rows(result.records, result.targets,
                                                                          result.constraints, lm),
                   title=f"{len(result.records)} variants of {result.recipe.name}"), ""]
    for s in result.selections:
        where = "this host" if s.target == "host" else s.target
        if s.chosen:
            lines.append(f"{where}: {s.chosen} ({s.why})")
        else:
            closest = "; ".join(f"{name}: {', '.join(broken)}" for name, broken in s.closest)
            lines.append(f"{where}: none - {s.why}" + (f" (closest: {closest})" if closest else ""))
    from edgecompress.tables import fmt_duration

    spent = ", ".join(f"{phase} {fmt_duration(s * 1000)}" for phase, s in result.phase_seconds.items() if s)
    lines += ["", f"report: {result.report.markdown}", f"results: {result.report.results}"]
    if spent:
        lines.append(f"time: {spent} (of {fmt_duration(result.seconds * 1000)} in all)")
    return "\n".join(lines)


@click.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "run_dir", type=click.Path(file_okay=False),
              help="Run folder (default: runs/RECIPE_NAME). Rerunning into it reuses finished variants.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Variants built at once, each in its own worker process.")
@click.option("--worker-memory-mb", type=click.IntRange(min=256), default=None,
              help="Memory budget of each worker (default: 80% of RAM shared by the jobs).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Where builds run (default: the recipe's [execution], else local worker processes).")
@click.option("--address", default=None,
              help="With --executor ray: the cluster to join (auto or ray://HOST:PORT); default a private local instance.")
@json_option
def run_command(recipe: str, run_dir: str | None, jobs: int, worker_memory_mb: int | None, executor: str | None,
                address: str | None, as_json: bool) -> None:
    """Optimize, convert, evaluate and benchmark every variant of RECIPE (TOML); report the best per device.

    Exits 2 on a bad recipe or files (before any work), 1 when no variant finished (the report says why).
    """
    from edgecompress.errors import UserError
    from edgecompress.pipeline.recipe import Execution
    from edgecompress.pipeline.run import run_recipe

    if address is not None and executor != "ray":
        raise UserError("--address names a Ray cluster: add --executor ray")
    execution = Execution(executor, address) if executor is not None else None
    result = run_recipe(recipe, run_dir, jobs=jobs, worker_memory_mb=worker_memory_mb, execution=execution)
    emit(result, as_json, render_run)
    if not any(r.ok for r in result.records):  # a run that produced nothing failed, whatever the report says
        click.echo(f"error: no variant finished: {result.report.markdown} says why for each", err=True)
        click.get_current_context().exit(1)


COMMANDS = [run_command]
