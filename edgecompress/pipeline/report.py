"""What a run leaves in RUN_DIR: results.json, report.md and the PNG plots it shows.

matplotlib is imported here only, lazily, with the Agg backend (no display needed).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from edgecompress.fileio import atomic_path, write_text_atomic
from edgecompress.tables import fmt
from edgecompress.pipeline.record import VariantRecord
from edgecompress.pipeline.select import Selection, pareto_front
from edgecompress.pipeline.search import SearchResult
from edgecompress.pipeline.search_report import search_markdown, write_search_plot

PLOTS = "plots"


@dataclass
class Report:
    results: Path
    markdown: Path
    plots: list[Path]


def table_headers(targets: Sequence[str]) -> list[str]:
    return (["variant", "techniques", "quantize", "size KB", "gzip KB", "accuracy %", "drop pts", "host ms"]
            + [f"{t} est. ms" for t in targets if t != "host"] + ["status"])


def table_rows(records: Sequence[VariantRecord], targets: Sequence[str]) -> list[list[Any]]:
    """One row per variant: the columns of table_headers (numbers stay numbers for alignment)."""
    rows = []
    for r in records:
        status = "ok" + (" (cached)" if r.reused else "") if r.ok else f"failed: {r.failed_stage}"
        rows.append([
            r.name,
            "+".join(r.techniques) or "-",
            r.settings.get("quantize"),
            None if r.size_bytes is None else r.size_bytes / 1024,
            None if r.gzip_bytes is None else r.gzip_bytes / 1024,
            None if r.accuracy is None else r.accuracy * 100,
            r.accuracy_drop,
            r.host_latency_ms,
            *[r.latency(t) for t in targets if t != "host"],
            status,
        ])
    return rows


def write_results(path: Path, data: dict[str, Any]) -> Path:
    write_text_atomic(path, json.dumps(data, indent=2, default=str, allow_nan=False) + "\n")
    return path


def results_data(recipe: Path, baseline: dict[str, Any] | None, records: Sequence[VariantRecord],
                 selections: Sequence[Selection], notes: Sequence[str]) -> dict[str, Any]:
    return {
        "recipe": str(recipe),
        "baseline": baseline,
        "variants": [r.to_dict() for r in records],
        "selections": [asdict(s) for s in selections],
        "notes": list(notes),
    }


# -------------------------------------------------------------------------------------------- plots


def _points(records: Sequence[VariantRecord], x_of: Any) -> tuple[list[VariantRecord], list[tuple[float, float]]]:
    kept = [r for r in records if r.ok and r.accuracy is not None and x_of(r) is not None]
    return kept, [(float(x_of(r)), r.accuracy * 100) for r in kept]


def _scatter(ax: Any, records: Sequence[VariantRecord], x_of: Any, chosen: dict[str, list[str]], xlabel: str) -> None:
    kept, points = _points(records, x_of)
    if not points:
        ax.text(0.5, 0.5, "no finished variant to plot", ha="center", va="center", transform=ax.transAxes)
        return
    xs, ys = zip(*points)
    ax.scatter(xs, ys, color="tab:blue", s=30, zorder=3, label="variant")
    front = pareto_front(points)
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="tab:orange", zorder=2, drawstyle="steps-post",
            label="Pareto front")
    # rings above the chosen star, so a chosen point on the front shows both marks
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], facecolors="none", edgecolors="tab:orange", s=360,
               linewidths=1.5, zorder=6)
    for r, (x, y) in zip(kept, points):
        ax.annotate(r.name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if r.name in chosen:
            ax.scatter([x], [y], marker="*", color="tab:red", s=260, zorder=5,
                       label=f"chosen ({', '.join(chosen[r.name])})")
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def write_plots(folder: Path, records: Sequence[VariantRecord], selections: Sequence[Selection]) -> list[Path]:
    """accuracy_vs_size.png and one accuracy_vs_latency_TARGET.png per target; Pareto front and choices marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(exist_ok=True)
    chosen_any: dict[str, list[str]] = {}
    for s in selections:
        if s.chosen:
            chosen_any.setdefault(s.chosen, []).append(s.target)
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    _scatter(axes[0], records, lambda r: None if r.size_bytes is None else r.size_bytes / 1024, chosen_any,
             ".tflite size (KB)")
    axes[0].set_title("accuracy vs size")
    _scatter(axes[1], records, lambda r: None if r.gzip_bytes is None else r.gzip_bytes / 1024, chosen_any,
             "gzip size (KB): what pruning and clustering shrink")
    axes[1].set_title("accuracy vs gzip size")
    paths.append(_save(fig, folder / "accuracy_vs_size.png"))
    plt.close(fig)
    for s in selections:
        fig, ax = plt.subplots(figsize=(7, 4.8))
        chosen = {s.chosen: [s.target]} if s.chosen else {}
        what = "measured p50 latency on this host (ms)" if s.target == "host" else f"estimated p50 latency on {s.target} (ms)"
        _scatter(ax, records, lambda r, t=s.target: r.latency(t), chosen, what)
        ax.set_title(f"accuracy vs latency: {s.target}" + (" (estimate)" if s.target != "host" else ""))
        paths.append(_save(fig, folder / f"accuracy_vs_latency_{s.target}.png"))
        plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------- markdown


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(recipe: Path, baseline: dict[str, Any] | None, records: Sequence[VariantRecord],
             selections: Sequence[Selection], targets: Sequence[str], plots: Sequence[Path],
             notes: Sequence[str], run_dir: Path) -> str:
    out = [f"# edgecompress run: {recipe.name}", ""]
    if baseline and baseline.get("accuracy") is not None:
        out.append(f"Source model: {baseline.get('model')}, held-out accuracy {baseline['accuracy'] * 100:.2f}% "
                   f"on {baseline.get('samples')} samples. Accuracy drops are in points below it.")
    out += ["", "Device latencies are estimates: the host's measurement scaled by each device's factor, calibrated "
            "against published figures (`edgecompress devices show NAME`). Host latency is measured (p50).", ""]
    out += ["## Variants", "", _md_table(table_headers(targets), table_rows(records, targets)), ""]
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
    if failed or notes:
        out += ["## Notes", ""]
        for r in failed:
            log = run_dir / "variants" / r.name / "log.txt"
            out.append(f"- {r.name} failed in {r.failed_stage}: {r.error}"
                       + (f" (log: {log.relative_to(run_dir).as_posix()})" if log.exists() else ""))
        out += [f"- {n}" for n in notes]
        out.append("")
    return "\n".join(out)


def write_report(run_dir: Path, recipe: Path, baseline: dict[str, Any] | None, records: Sequence[VariantRecord],
                 selections: Sequence[Selection], targets: Sequence[str], notes: Sequence[str],
                 search: SearchResult | None = None) -> Report:
    data = results_data(recipe, baseline, records, selections, notes)
    if search is not None:
        data["search"] = search.to_dict()
    results = write_results(run_dir / "results.json", data)
    plots = write_plots(run_dir / PLOTS, records, selections)
    if search is not None:
        plots.append(write_search_plot(run_dir / PLOTS, search))
    text = markdown(recipe, baseline, records, selections, targets, plots, notes, run_dir)
    if search is not None:
        text += "\n" + search_markdown(search)
    md = write_text_atomic(run_dir / "report.md", text)
    return Report(results, md, plots)
