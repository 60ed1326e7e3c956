"""The search's part of a run's report: its trace as a table, and the best feasible objective by trial."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompress.fileio import atomic_path
from edgecompress.pipeline.search import SearchResult

UNITS = {"smallest": ("gzip size (KB)", 1 / 1024), "fastest": ("p50 latency (ms)", 1.0),
         "most_accurate": ("accuracy (%)", -100.0)}


def shown(search: SearchResult, value: float | None) -> float | None:
    """An objective value in the report's units (KB, ms, accuracy in % rather than negated)."""
    if value is None:
        return None
    if search.objective == "most_accurate" and value > 0:  # a regression model's MAE, already positive
        return value
    return value * UNITS[search.objective][1]


def search_markdown(search: SearchResult) -> str:
    label = UNITS[search.objective][0]
    best = search.best()
    lines = ["## Search", "",
             f"Strategy {search.strategy} over {search.candidates} candidates, objective {search.objective} on "
             f"{search.target}: {search.stopped}. "
             + (f"Best feasible: **{best.variant}** at trial {best.number}." if best else "No trial was feasible."),
             "", f"| trial | variant | settings | {label} | feasible |", "|---|---|---|---|---|"]
    for t in search.trials:
        settings = ", ".join(f"{k}={v}" for k, v in t.settings.items())
        value = shown(search, t.objective)
        lines.append(f"| {t.number} | {t.variant} | {settings} | {'-' if value is None else f'{value:.4g}'} | "
                     f"{'yes' if t.feasible else 'no: ' + t.why.replace('|', '/')} |")
    return "\n".join(lines + [""])


def write_search_plot(folder: Path, search: SearchResult) -> Path:
    """search_trace.png: every trial's objective (feasible filled, infeasible hollow) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for feasible, style in ((True, {"color": "tab:blue"}), (False, {"facecolors": "none", "edgecolors": "grey"})):
        points = [(t.number, shown(search, t.objective)) for t in search.trials
                  if t.feasible == feasible and t.objective is not None]
        if points:
            ax.scatter(*zip(*points), label="feasible" if feasible else "breaks a constraint", zorder=3, **style)
    best: list[Any] = [shown(search, b) for b in search.best_by_trial()]
    steps = [(i + 1, b) for i, b in enumerate(best) if b is not None]
    if steps:
        ax.step(*zip(*steps), where="post", color="tab:green", label="best feasible so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(UNITS[search.objective][0])
    ax.set_title(f"{search.strategy} search: {search.objective} on {search.target}")
    ax.legend(loc="best", fontsize=8)
    folder.mkdir(exist_ok=True)
    path = folder / "search_trace.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
