"""Search over a recipe's variants: the strategies on a known landscape (the search logic itself, with the
builds replaced by a function of the settings), then a real TPE run of a recipe end to end."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from edgecompress.errors import UserError
from edgecompress.pipeline.grid import Variant
from edgecompress.pipeline.recipe import SearchSettings, load_recipe
from edgecompress.pipeline.record import VariantRecord
from edgecompress.pipeline.run import run_recipe
from edgecompress.pipeline.search import axes, run_search

GRID = """\
model = "{model}"
objective = "smallest"

[data]
train = "{data}"
test = "{data}"

[constraints]
max_accuracy_drop = 1.0

[grid]
quantize = ["none", "dynamic", "float16", "int8"]
prune = [0, 0.5, 0.7, 0.8]
cluster = [0, 8, 16]
"""


@pytest.fixture()
def grid_recipe(tmp_path, digits_model_path, test_npz):
    path = tmp_path / "grid.toml"
    path.write_text(GRID.format(model=digits_model_path, data=test_npz))
    return load_recipe(path, known_devices=lambda: [])


def landscape(variant: Variant) -> VariantRecord:
    """Size falls with every technique; accuracy falls once pruning and clustering go too far together."""
    s = variant.settings
    size = {"none": 100.0, "float16": 50.0, "dynamic": 26.0, "int8": 25.0}[s.quantize]
    size *= 1 - 0.8 * s.prune
    size *= {0: 1.0, 8: 0.45, 16: 0.55}[s.cluster]
    drop = 2.0 * (s.prune >= 0.8) + 1.5 * (s.cluster == 8 and s.prune >= 0.7) + 0.3 * (s.quantize == "int8")
    return VariantRecord(variant.name, {}, [], "k", gzip_bytes=int(size * 1000), accuracy=0.99 - drop / 100,
                         accuracy_drop=drop)


def best_feasible(recipe) -> float:
    return min(r.gzip_bytes for r in map(landscape, recipe.variants) if r.accuracy_drop <= 1.0)


def search(recipe, **settings):
    built: list[str] = []

    def run_batch(variants):
        built.extend(v.name for v in variants)
        return [landscape(v) for v in variants]

    result = run_search(replace(recipe, search=SearchSettings(**settings)), ["host"], run_batch, batch_size=2)
    return result, built


def test_the_space_is_the_settings_that_vary(grid_recipe):
    space = axes(grid_recipe.variants)
    assert list(space) == ["quantize", "prune", "cluster"]
    assert len(grid_recipe.variants) == 48


def test_tpe_finds_the_best_in_a_third_of_the_grid(grid_recipe):
    target = best_feasible(grid_recipe)
    found = []
    for seed in (0, 1, 2):
        result, built = search(grid_recipe, strategy="tpe", trials=16, seed=seed)
        assert len(built) == len(set(built)) == len(result.trials) == 16  # each trial a distinct variant, built once
        found.append(result.best().objective)
    assert sum(found) / 3 <= target * 1.05, (found, target)


def test_a_seed_repeats_the_same_trials(grid_recipe):
    first, _ = search(grid_recipe, strategy="tpe", trials=8, seed=7)
    again, _ = search(grid_recipe, strategy="tpe", trials=8, seed=7)
    assert [t.variant for t in first.trials] == [t.variant for t in again.trials]


def test_random_and_grid_orders(grid_recipe):
    in_order, built = search(grid_recipe, strategy="grid", trials=5)
    assert built == [v.name for v in grid_recipe.variants[:5]]
    shuffled, built = search(grid_recipe, strategy="random", trials=5, seed=3)
    assert built != [v.name for v in grid_recipe.variants[:5]] and len(set(built)) == 5


def test_stop_when_met_ends_at_the_first_feasible_batch(grid_recipe):
    result, built = search(grid_recipe, strategy="grid", stop_when="met")
    assert any(t.feasible for t in result.trials) and len(built) == 2  # the first batch already has one
    assert "stop_when" in result.stopped


def test_the_trace_says_why_a_trial_is_infeasible(grid_recipe):
    result, _ = search(grid_recipe, strategy="grid")
    breaking = [t for t in result.trials if not t.feasible]
    assert breaking and all(t.why.startswith("breaks accuracy drop") for t in breaking)
    trace = result.best_by_trial()
    assert all(b is None or a is None or b <= a for a, b in zip(trace, trace[1:]))  # never gets worse


def test_search_settings_are_checked(tmp_path, grid_recipe):
    bad = grid_recipe.path.read_text() + '\n[search]\nstrategy = "bayes"\n'
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    with pytest.raises(UserError, match="strategy"):
        load_recipe(path, known_devices=lambda: [])
    path.write_text(grid_recipe.path.read_text() + '\n[search]\ntrials = 0\n')
    with pytest.raises(UserError, match="trials"):
        load_recipe(path, known_devices=lambda: [])


REAL = """\
model = "{model}"
objective = "smallest"

[data]
train = "{train}"
test = "{test}"
calibration = "{calib}"
calibration_samples = 50

[benchmark]
runs = 5
min_secs = 0.05

[constraints]
max_accuracy_drop = 1.0

[search]
strategy = "tpe"
trials = 3
seed = 0

[grid]
quantize = ["none", "dynamic", "float16", "int8"]
"""


def test_a_tpe_search_runs_end_to_end(digits, digits_model_path, test_npz, calib_npz, tmp_path):
    train = digits.train.save_npz(tmp_path / "train.npz")
    recipe = tmp_path / "search.toml"
    recipe.write_text(REAL.format(model=digits_model_path, train=train, test=test_npz, calib=calib_npz))
    result = run_recipe(recipe, tmp_path / "run", jobs=2, progress=False)
    assert result.search is not None and len(result.search.trials) == 3 == len(result.records)
    assert len({t.variant for t in result.search.trials}) == 3
    assert result.selections[0].chosen in {t.variant for t in result.search.trials}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [t["variant"] for t in saved["search"]["trials"]] == [t.variant for t in result.search.trials]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Search" in report and "search_trace.png" in report
    assert (tmp_path / "run" / "plots" / "search_trace.png").stat().st_size > 1000
