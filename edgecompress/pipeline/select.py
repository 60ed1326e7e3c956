"""Choosing what to ship: per target, the variant that meets the constraints and best fits the objective.

Every other variant gets the reason it lost (a failed stage, the constraint it breaks, or a worse objective
value); when no variant meets the constraints, the closest ones are named with the constraints they break.
Also the Pareto fronts the report plots (size vs accuracy, latency vs accuracy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from edgecompress.pipeline.record import VariantRecord
from edgecompress.pipeline.recipe import Constraints
from edgecompress.tables import fmt_duration, fmt_points

OBJECTIVE_TEXT = {
    "smallest": "the smallest gzip size",
    "fastest": "the lowest latency",
    "most_accurate": "the highest accuracy",
}
CLOSEST = 3


@dataclass
class Selection:
    target: str  # a device name, or "host" when the recipe names none
    objective: str
    chosen: str | None
    why: str
    rejected: dict[str, str] = field(default_factory=dict)  # variant -> reason
    closest: list[tuple[str, list[str]]] = field(default_factory=list)  # when nothing meets the constraints


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def violations(record: VariantRecord, constraints: Constraints, target: str) -> list[tuple[str, float]]:
    """(what fails, how far: relative excess) for each constraint RECORD breaks on TARGET."""
    out: list[tuple[str, float]] = []
    limit = constraints.max_accuracy_drop
    if limit is not None:
        if record.accuracy_drop is None:
            out.append(("accuracy drop unknown (no top-1 accuracy for this model)", float("inf")))
        elif record.accuracy_drop > limit:
            out.append((f"accuracy drop {fmt_points(record.accuracy_drop)} > {fmt_points(limit)} points",
                        (record.accuracy_drop - limit) / max(limit, 1.0)))
    limit = constraints.max_perplexity_rise
    if limit is not None:
        if record.perplexity_rise is None:
            out.append(("perplexity rise unknown (no perplexity for this model)", float("inf")))
        elif record.perplexity_rise > limit:
            out.append((f"perplexity {record.perplexity_rise:+.1f}% > +{limit:g}%",
                        (record.perplexity_rise - limit) / max(limit, 1.0)))
    for value, cap, what in (
        (record.size_bytes, constraints.max_size_kb, "size"),
        (record.gzip_bytes, constraints.max_gzip_kb, "gzip size"),
    ):
        if cap is not None and value is not None and value > cap * 1024:
            out.append((f"{what} {_kb(value)} > {cap:g} KB", value / (cap * 1024) - 1))
    cap = constraints.max_latency_ms.get(target)
    if cap is not None:
        latency = record.latency(target)
        if latency is None:
            what = "measured latency" if record.latency_source(target) == "measured" else "latency estimate"
            out.append((f"no {what} for {target}", float("inf")))
        elif latency > cap:
            out.append((f"{record.latency_source(target)} latency on {target} {fmt_duration(latency)} > {fmt_duration(cap)}",
                        latency / cap - 1))
    return out


def describe_constraints(constraints: Constraints, sources: Mapping[str, str] | None = None) -> list[str]:
    """The constraints as the report states them, one phrase each (SOURCES: device -> "measured"/"estimated")."""
    out = []
    if constraints.max_accuracy_drop is not None:
        out.append(f"accuracy drop <= {fmt_points(constraints.max_accuracy_drop)} points below the source model")
    if constraints.max_perplexity_rise is not None:
        out.append(f"perplexity <= {constraints.max_perplexity_rise:g}% above the source model's")
    if constraints.max_size_kb is not None:
        out.append(f".tflite size <= {constraints.max_size_kb:g} KB")
    if constraints.max_gzip_kb is not None:
        out.append(f"gzip size <= {constraints.max_gzip_kb:g} KB")
    out += [f"{(sources or {}).get(device, 'estimated')} latency on {device} <= {fmt_duration(ms)}"
            for device, ms in constraints.max_latency_ms.items()]
    return out


def status(record: VariantRecord, constraints: Constraints, targets: Sequence[str]) -> str:
    """"ok", "fails: <the constraints it breaks on any target>" or "failed: <stage>"."""
    if not record.ok:
        return f"failed: {record.failed_stage}"
    broken = list(dict.fromkeys(text for t in targets for text, _ in violations(record, constraints, t)))
    if broken:
        return "fails: " + "; ".join(broken)
    return "ok" + (" (cached)" if record.reused else "")


def _rank_key(objective: str, target: str) -> Callable[[VariantRecord], tuple[float, ...]]:
    """Lower is better; ties broken by gzip size, then accuracy, so the choice is deterministic."""
    inf = float("inf")

    def key(r: VariantRecord) -> tuple[float, ...]:
        gzip = float(r.gzip_bytes) if r.gzip_bytes is not None else inf
        # a language model ranks by perplexity; regression models have no accuracy: their mean absolute error
        # ranks them instead (lower is better, as perplexity)
        acc = r.perplexity if r.perplexity is not None else -r.accuracy if r.accuracy is not None else (
            r.mae if r.mae is not None else inf)
        latency = r.latency(target)
        lat = latency if latency is not None else inf
        if objective == "smallest":
            return gzip, acc, lat
        if objective == "fastest":
            return lat, gzip, acc
        return acc, gzip, lat

    return key


def _describe(r: VariantRecord, objective: str, target: str) -> str:
    if objective == "smallest":
        return f"gzip size {_kb(r.gzip_bytes)}" if r.gzip_bytes is not None else "size unknown"
    if objective == "fastest":
        latency = r.latency(target)
        return f"latency {fmt_duration(latency)}" if latency is not None else "latency unknown"
    if r.perplexity is not None:
        return f"perplexity {r.perplexity:.2f}"
    return f"accuracy {r.accuracy * 100:.2f}%" if r.accuracy is not None else "accuracy unknown"


def select(records: Sequence[VariantRecord], constraints: Constraints, objective: str, target: str) -> Selection:
    """The best variant for TARGET, with every other variant's reason for losing."""
    rejected: dict[str, str] = {}
    meeting: list[VariantRecord] = []
    breaking: list[tuple[VariantRecord, list[tuple[str, float]]]] = []
    for r in records:
        if not r.ok:
            rejected[r.name] = f"failed in {r.failed_stage or 'a stage'}: {r.error}"
            continue
        broken = violations(r, constraints, target)
        if broken:
            rejected[r.name] = "breaks the constraints: " + "; ".join(text for text, _ in broken)
            breaking.append((r, broken))
        else:
            meeting.append(r)
    if not meeting:
        breaking.sort(key=lambda rb: (len(rb[1]), sum(x for _, x in rb[1])))
        closest = [(r.name, [text for text, _ in broken]) for r, broken in breaking[:CLOSEST]]
        why = ("no variant meets the constraints" if breaking else "no variant finished")
        return Selection(target, objective, None, why, rejected, closest)
    ranked = sorted(meeting, key=_rank_key(objective, target))
    best = ranked[0]
    for r in ranked[1:]:
        rejected[r.name] = (f"meets the constraints, but {_describe(r, objective, target)} vs "
                            f"{_describe(best, objective, target)} for {best.name}")
    why = (f"{OBJECTIVE_TEXT[objective]} ({_describe(best, objective, target)}) of the "
           f"{len(meeting)} variant{'s' if len(meeting) > 1 else ''} that meet the constraints")
    return Selection(target, objective, best.name, why, rejected)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower x (size, latency) AND higher y (accuracy).

    A point is dominated when another is at least as good on both and better on one. Returned by x.
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])
