"""What a run leaves in RUN_DIR: results.json, report.md and the PNG plots it shows.

matplotlib is imported here only, lazily, with the Agg backend (no display needed).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from edgecompress.fileio import atomic_path, write_text_atomic
from edgecompress.tables import duration_unit, fmt_duration, fmt_points, json_ready, markdown_table
from edgecompress.pipeline.recipe import Constraints
from edgecompress.pipeline.record import VariantRecord
from edgecompress.pipeline.select import OBJECTIVE_TEXT, Selection, describe_constraints, pareto_front, status, violations
from edgecompress.pipeline.search import SearchResult
from edgecompress.pipeline.search_report import search_markdown, write_search_plot

PLOTS = "plots"


@dataclass
class Report:
    results: Path
    markdown: Path
    plots: list[Path]
    shown: dict[str, Plotted] = field(default_factory=dict)  # plot file name -> what it shows


def figure_sources(records: Sequence[VariantRecord], targets: Sequence[str]) -> dict[str, str]:
    """Target -> "measured" (the host; a device timed over SSH) or "estimated" (a device profile's estimate)."""
    return {t: "measured" if any(r.latency_source(t) == "measured" for r in records) or t == "host" else "estimated"
            for t in targets}


def language_models(records: Sequence[VariantRecord]) -> bool:
    """Whether the run's variants are language models: judged by perplexity, timed per generated token."""
    return any(r.perplexity is not None for r in records)


def table_headers(targets: Sequence[str], sources: dict[str, str] | None = None, lm: bool = False) -> list[str]:
    """The table's columns; a device's latency column says whether its figures are measured or estimated. A
    language model's accuracy is next-token top-1 beside its perplexity, and its latency one decode step."""
    kind = {"measured": "measured", "estimated": "est."}
    step = " per token" if lm else ""
    scores = ["next-token acc. %", "perplexity", "rise %"] if lm else ["accuracy %", "drop pts"]
    return (["#", "variant", "techniques", "quantize", "size KB", "gzip KB", *scores, f"host p50{step}"]
            + [f"{t} {kind[(sources or {}).get(t, 'estimated')]} p50{step}" for t in targets if t != "host"]
            + ["status"])


def table_rows(records: Sequence[VariantRecord], targets: Sequence[str], constraints: Constraints,
               lm: bool = False) -> list[list[Any]]:
    """One row per variant: the columns of table_headers (sizes and accuracy stay numbers for alignment)."""
    rows = []
    for number, r in enumerate(records, 1):  # the numbers the plots show
        scores = ([r.perplexity, None if r.perplexity_rise is None else f"{r.perplexity_rise:+.1f}"] if lm
                  else [fmt_points(r.accuracy_drop)])
        rows.append([
            number,
            r.name,
            "+".join(r.techniques) or "-",
            r.settings.get("quantize"),
            None if r.size_bytes is None else r.size_bytes / 1024,
            None if r.gzip_bytes is None else r.gzip_bytes / 1024,
            None if r.accuracy is None else r.accuracy * 100,
            *scores,
            fmt_duration(r.host_latency_ms),
            *[fmt_duration(r.latency(t)) for t in targets if t != "host"],
            status(r, constraints, targets),
        ])
    return rows


def write_results(path: Path, data: dict[str, Any]) -> Path:
    write_text_atomic(path, json.dumps(json_ready(data), indent=2, default=str, allow_nan=False) + "\n")
    return path


def results_data(recipe: Path, objective: str, constraints: Constraints, baseline: dict[str, Any] | None,
                 records: Sequence[VariantRecord], selections: Sequence[Selection], notes: Sequence[str]) -> dict[str, Any]:
    return {
        "recipe": str(recipe),
        "objective": objective,
        "constraints": asdict(constraints),
        "baseline": baseline,
        "variants": [r.to_dict() for r in records],
        "selections": [asdict(s) for s in selections],
        "notes": list(notes),
    }


# -------------------------------------------------------------------------------------------- plots


@dataclass
class Plotted:
    """What one panel shows: each variant's number in the key, the ones marked failing, the front, the legend."""

    xlabel: str = ""
    numbers: dict[str, int] = field(default_factory=dict)
    failing: list[str] = field(default_factory=list)
    front: list[str] = field(default_factory=list)  # drawn only when it has 2 points or more
    legend: list[str] = field(default_factory=list)


def _points(records: Sequence[VariantRecord], x_of: Any) -> tuple[list[VariantRecord], list[tuple[float, float]]]:
    kept = [r for r in records if r.ok and r.accuracy is not None and x_of(r) is not None]
    return kept, [(float(x_of(r)), r.accuracy * 100) for r in kept]


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label(ax: Any, points: Sequence[tuple[float, float]], texts: Sequence[str]) -> None:
    """Each point's number beside it, moved away (with a leader line) where it would cover another label or point.

    Greedy, in points (1/72 inch) on the final axes: labels are tried right/left of the marker, then farther
    up or down, and the first free place wins.
    """
    scale = 72 / ax.figure.dpi
    where = [tuple(ax.transData.transform(p) * scale) for p in points]
    taken = [(x - 4, y - 4, x + 4, y + 4) for x, y in where]  # the markers
    for (x, y), point, text in zip(where, points, texts):
        width, height = 4.5 * len(text) + 2, 8
        choices = [(dx, dy) for k in range(6) for dy in (3 + 11 * k, -11 - 11 * k) for dx in (5, -5 - width)]
        for dx, dy in choices:
            box = (x + dx, y + dy, x + dx + width, y + dy + height)
            if not any(_overlaps(box, other) for other in taken):
                break
        taken.append(box)
        far = abs(dy) > 11
        ax.annotate(text, point, xytext=(dx, dy), textcoords="offset points", fontsize=7, va="bottom",
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if far else None)


def _scatter(ax: Any, records: Sequence[VariantRecord], numbers: dict[str, int], failing: set[str], x_of: Any,
             chosen: dict[str, list[str]], xlabel: str, key: bool = True) -> Plotted:
    kept, points = _points(records, x_of)
    if not points:
        ax.text(0.5, 0.5, "no finished variant to plot", ha="center", va="center", transform=ax.transAxes)
        return Plotted(xlabel)
    shown = Plotted(xlabel, numbers={r.name: numbers[r.name] for r in kept},
                    failing=[r.name for r in kept if r.name in failing])
    good = [p for r, p in zip(kept, points) if r.name not in failing]
    bad = [p for r, p in zip(kept, points) if r.name in failing]
    if good:
        ax.scatter(*zip(*good), color="tab:blue", s=30, zorder=3, label="meets the constraints")
    if bad:
        ax.scatter(*zip(*bad), marker="x", color="0.55", s=40, linewidths=1.5, zorder=3, label="breaks the constraints")
    front = pareto_front(points)
    shown.front = [kept[i].name for i in front]
    if len(front) >= 2:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="tab:orange", zorder=2,
                drawstyle="steps-post", label="Pareto front")
    for r, (x, y) in zip(kept, points):
        if r.name in chosen:
            ax.scatter([x], [y], marker="*", color="tab:red", s=220, zorder=5, label=f"chosen ({', '.join(chosen[r.name])})")
    xs = [x for x, _ in points]
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.margins(0.08)
    ax.autoscale_view()
    _label(ax, points, [str(numbers[r.name]) for r in kept])
    if key:
        ax.text(1.02, 1.0, "\n".join(f"{numbers[r.name]:>2}  {r.name}" for r in kept), transform=ax.transAxes,
                va="top", ha="left", fontsize=7, family="monospace")
    # below the axes: inside, it covered points (a corner of the plot is where low-accuracy variants sit)
    legend = ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    shown.legend = [t.get_text() for t in legend.get_texts()]
    return shown


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def write_plots(folder: Path, records: Sequence[VariantRecord], selections: Sequence[Selection],
                constraints: Constraints) -> dict[Path, Plotted]:
    """accuracy_vs_size.png and one accuracy_vs_latency_TARGET.png per target.

    Points carry the variant's number in the report table (the key beside each panel names them); variants
    that break the constraints are grey crosses, the chosen ones red stars, the Pareto front a dashed step line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(exist_ok=True)
    numbers = {r.name: i for i, r in enumerate(records, 1)}
    targets = [s.target for s in selections]
    failing_any = {r.name for r in records if r.ok and any(violations(r, constraints, t) for t in targets)}
    chosen_any: dict[str, list[str]] = {}
    for s in selections:
        if s.chosen:
            chosen_any.setdefault(s.chosen, []).append(s.target)
    out: dict[Path, Plotted] = {}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    shown = _scatter(axes[0], records, numbers, failing_any, lambda r: None if r.size_bytes is None else r.size_bytes / 1024,
                     chosen_any, ".tflite size (KB)", key=False)  # one key, beside the right panel
    axes[0].set_title("accuracy vs size")
    _scatter(axes[1], records, numbers, failing_any, lambda r: None if r.gzip_bytes is None else r.gzip_bytes / 1024,
             chosen_any, "gzip size (KB): what pruning and clustering shrink")
    axes[1].set_title("accuracy vs gzip size")
    out[_save(fig, folder / "accuracy_vs_size.png")] = shown
    plt.close(fig)
    for s in selections:
        fig, ax = plt.subplots(figsize=(7.5, 4.8))
        chosen = {s.chosen: [s.target]} if s.chosen else {}
        failing = {r.name for r in records if r.ok and violations(r, constraints, s.target)}
        latencies = [ms for r in records if (ms := r.latency(s.target)) is not None]
        factor, unit = duration_unit(max(latencies, default=1.0))
        source = figure_sources(records, [s.target])[s.target]
        what = ("measured p50 latency on this host" if s.target == "host"
                else f"{source} p50 latency on {s.target}" + (" (over SSH)" if source == "measured" else ""))
        shown = _scatter(ax, records, numbers, failing,
                         lambda r, t=s.target: None if r.latency(t) is None else r.latency(t) * factor,
                         chosen, f"{what} ({unit})")
        ax.set_title(f"accuracy vs latency: {s.target}" + (f" ({source})" if s.target != "host" else ""))
        out[_save(fig, folder / f"accuracy_vs_latency_{s.target}.png")] = shown
        plt.close(fig)
    return out


# ----------------------------------------------------------------------------------------- markdown


def markdown(recipe: Path, objective: str, constraints: Constraints, baseline: dict[str, Any] | None,
             records: Sequence[VariantRecord], selections: Sequence[Selection], targets: Sequence[str],
             plots: Sequence[Path], notes: Sequence[str], run_dir: Path) -> str:
    out = [f"# edgecompress run: {recipe.name}", ""]
    sources = figure_sources(records, targets)
    limits = describe_constraints(constraints, sources)
    out += [f"**Objective**: {objective}, {OBJECTIVE_TEXT[objective]} among the variants that meet the constraints.",
            "", "**Constraints**: " + ("; ".join(limits) if limits else "none (every finished variant qualifies)") + ".",
            "", "Status: ok meets every constraint; fails names the constraints a variant breaks; failed names the "
            "stage that stopped it (see Notes).", ""]
    if baseline and baseline.get("perplexity") is not None:
        out.append(f"Source model: {baseline.get('model')}, held-out perplexity {baseline['perplexity']:.2f} "
                   f"(next-token accuracy {baseline['accuracy'] * 100:.2f}%) on {baseline.get('samples')} windows. "
                   "Latencies are one decode step (a generated token); a device's estimate is the step the lower of "
                   "its memory-bandwidth roofline and its compute estimate allows (`benchmark --device`).")
    elif baseline and baseline.get("accuracy") is not None:
        out.append(f"Source model: {baseline.get('model')}, held-out accuracy {baseline['accuracy'] * 100:.2f}% "
                   f"on {baseline.get('samples')} samples. Accuracy drops are in points below it.")
    estimated = [t for t in targets if sources[t] == "estimated"]
    measured = {t: r.devices[t].measured_on for r in records for t in targets
                if t != "host" and sources[t] == "measured" and t in r.devices and r.devices[t].measured_on}
    out.append("")
    if estimated:
        out.append(f"Estimated latencies ({', '.join(estimated)}): the host's measurement scaled by each device's "
                   "factor, calibrated against published figures (`edgecompress devices show NAME`).")
    if measured:
        out.append("Measured latencies (p50, timed on the device itself over SSH): "
                   + ", ".join(f"{t} on {on}" for t, on in measured.items()) + ".")
    out += ["Host latency is measured (p50).", ""]
    out += ["## Variants", "", markdown_table(table_headers(targets, sources, language_models(records)),
                                                table_rows(records, targets, constraints, language_models(records))), ""]
    for s in selections:
        title = "this host" if s.target == "host" else s.target
        out += [f"## Choice for {title} (objective: {s.objective})", ""]
        if s.chosen:
            out.append(f"**{s.chosen}**: {s.why}.")
        else:
            out.append(f"**None**: {s.why}.")
            if s.closest:
                out += ["", "Closest variants and the constraints they break:", ""]
                out += [f"- {name}: {'; '.join(broken)}" for name, broken in s.closest]
        if s.rejected:
            out += ["", "Why the others lost:", ""]
            out += [f"- {name}: {reason}" for name, reason in s.rejected.items()]
        out.append("")
    if plots:
        out += ["## Plots", ""]
        out += [f"![{p.stem}]({p.relative_to(run_dir).as_posix()})" for p in plots]
        out.append("")
    failed = [r for r in records if not r.ok]
    # a device whose figures failed (unreachable over SSH, no estimate) leaves the variant's other figures standing
    device_errors = [f"- {r.name} on {d}: {res.error}" for r in records if r.ok for d, res in r.devices.items() if res.error]
    twins = [f"- {r.name} runs the same graph as {r.same_graph_as} (operators, shapes and dtypes; only the weights' "
             "values differ, which dense kernels do not see): timed once, so their latencies are the same figures"
             for r in records if r.same_graph_as]
    outside: dict[str, list[str]] = {}
    for r in records:
        for device, res in r.devices.items():
            if res.calibration and res.calibration.get("outside_fit"):
                outside.setdefault(device, []).append(r.name)
    extrapolated = [f"- {device} estimates of {', '.join(names)} lie outside the range the estimate was fitted on "
                    f"(e.g. {next(r for r in records if r.name == names[0]).devices[device].calibration['outside_fit']})"
                    ": take them as an order of magnitude, or measure on the device" for device, names in outside.items()]
    if failed or notes or device_errors or twins or extrapolated:
        out += ["## Notes", ""]
        for r in failed:
            log = run_dir / "variants" / r.name / "log.txt"
            out.append(f"- {r.name} failed in {r.failed_stage}: {r.error}"
                       + (f" (log: {log.relative_to(run_dir).as_posix()})" if log.exists() else ""))
        out += device_errors
        out += extrapolated
        out += twins
        out += [f"- {n}" for n in notes]
        out.append("")
    return "\n".join(out)


def write_report(run_dir: Path, recipe: Path, objective: str, constraints: Constraints,
                 baseline: dict[str, Any] | None, records: Sequence[VariantRecord], selections: Sequence[Selection],
                 targets: Sequence[str], notes: Sequence[str], search: SearchResult | None = None) -> Report:
    data = results_data(recipe, objective, constraints, baseline, records, selections, notes)
    if search is not None:
        data["search"] = search.to_dict()
    results = write_results(run_dir / "results.json", data)
    shown = write_plots(run_dir / PLOTS, records, selections, constraints)
    plots = list(shown)
    if search is not None:
        plots.append(write_search_plot(run_dir / PLOTS, search))
    text = markdown(recipe, objective, constraints, baseline, records, selections, targets, plots, notes, run_dir)
    if search is not None:
        text += "\n" + search_markdown(search)
    md = write_text_atomic(run_dir / "report.md", text)
    return Report(results, md, plots, {p.name: s for p, s in shown.items()})
