"""Device profiles, the devices CLI, and the latency estimates (fit on recorded timings, then for real)."""
from __future__ import annotations

import json
import math
import os
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from edgecompress.devices.calibrate import Host, HostTimings, calibrate, load_timings
from edgecompress.devices.estimate import EXPONENTS, choose_exponent, fit_device, leave_one_out, share_within
from edgecompress.devices.references import REFERENCE_MODELS
from edgecompress.devices.profiles import list_profiles, load_profile
from edgecompress.errors import UserError

SHIPPED = {"raspberry-pi-zero-2w", "raspberry-pi-3b-plus", "raspberry-pi-4", "raspberry-pi-5", "pixel-4", "pixel-3a", "pixel-3"}
PI4_TEXT = (resources.files("edgecompress.devices") / "profiles" / "raspberry-pi-4.toml").read_text()


def estimate_for(profile, p50_ms, p90_ms, is_integer, threads=None, timings=None, macs=None):
    """The estimate for a model measured at P50_MS / P90_MS on this host, from a fresh fit on TIMINGS."""
    return fit_device(profile, timings).estimate(p50_ms, p90_ms / p50_ms, is_integer, threads, macs)


def recorded(**ms: float) -> HostTimings:
    """Host timings as if measured on a 2-core host: key 'model__precision__threads' -> ms."""
    table = {}
    for key, value in ms.items():
        model, precision, threads = key.split("__")
        table[(model, precision, int(threads))] = value
    return HostTimings(Host("recorded", 2, "ai-edge-litert", "2.3.0"), table)


# Host timings for the MobileNets at 2 threads (every 4-thread published point maps to 2 host threads here).
MOBILENETS = dict(
    mobilenet_v1__float__2=10.0, mobilenet_v2__float__2=5.0, mobilenet_v3_large__float__2=4.0,
    mobilenet_v3_small__float__2=2.0, mobilenet_v1__int8__2=8.0, mobilenet_v2__int8__2=4.0,
)


def test_every_shipped_profile_loads_with_its_budget():
    assert set(list_profiles()) >= SHIPPED
    for name in list_profiles():
        p = load_profile(name)
        assert p.name == name and p.references
        assert p.memory_budget_mb == p.ram_mb - p.os_reserve_mb > 0
        assert 1 <= p.threads <= p.cores
    assert load_profile("raspberry-pi-zero-2w").memory_budget_mb == 512 - 160


def test_published_references_are_copied_from_anchors_and_derived_ones_labelled():
    pi4 = {r.key: r for r in load_profile("raspberry-pi-4").references}
    assert pi4["mobilenet_v2/int8/4t"].latency_ms == 17 and "XNNPACK" in pi4["mobilenet_v2/int8/4t"].source
    assert load_profile("pixel-4").references[-1].latency_ms == 324.1
    pi3 = load_profile("raspberry-pi-3b-plus").references
    zero = load_profile("raspberry-pi-zero-2w").references
    assert all(r.derived and r.source.startswith("derived: raspberry-pi-3b-plus") for r in zero)
    assert [z.latency_ms for z in zero] == [round(r.latency_ms * 1.4, 2) for r in pi3]
    pi5 = load_profile("raspberry-pi-5")
    assert pi5.is_derived and pi5.derived_from.scale == 0.625 and all(r.derived for r in pi5.references)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda t: t.replace("threads = 4\nruntime", "runtime"), "threads"),
        (lambda t: t.replace("ram_mb = 4096", 'ram_mb = "lots"'), "ram_mb"),
        (lambda t: t.replace('precision = "int8"', 'precision = "int4"', 1), "precision"),
        (lambda t: t.replace('model = "mobilenet_v1"', 'model = "resnet_50"', 1), "model"),
        (lambda t: t.replace("os_reserve_mb = 512", "os_reserve_mb = 9000"), "os_reserve_mb"),
        (lambda t: t.replace("[[references]]", "[[refs]]"), "references"),
    ],
)
def test_a_bad_user_profile_fails_on_one_line_naming_the_field_and_file(tmp_path, run_cli, edit, field):
    path = tmp_path / "my-board.toml"
    path.write_text(edit(PI4_TEXT))
    code, out, err = run_cli(["devices", "show", str(path)])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and f"'{field}'" in err and str(path) in err


def test_a_bad_profile_field_is_named_with_its_line(tmp_path, run_cli):
    """Profiles find lines the way recipes do (tomlfields.TomlLines): top-level fields and [[references]] too."""
    path = tmp_path / "my-board.toml"
    text = PI4_TEXT.replace("ram_mb = 4096", 'ram_mb = "lots"')
    path.write_text(text)
    line = text.splitlines().index('ram_mb = "lots"') + 1
    assert f"my-board.toml line {line}: field 'ram_mb'" in run_cli(["devices", "show", str(path)])[2]
    lines = PI4_TEXT.splitlines()
    second = [i for i, t in enumerate(lines) if t == "[[references]]"][1]
    at = next(i for i in range(second, len(lines)) if lines[i].startswith("latency_ms"))
    lines[at] = "latency_ms = -3"
    path.write_text("\n".join(lines) + "\n")
    err = run_cli(["devices", "show", str(path)])[2]
    assert f"references #2 line {at + 1}: field 'latency_ms'" in err, err


def test_a_user_profile_file_loads_and_an_unknown_name_lists_the_known_ones(tmp_path, run_cli):
    path = tmp_path / "my-pi.toml"
    path.write_text(PI4_TEXT.replace('name = "raspberry-pi-4"', 'name = "my-pi"'))
    assert load_profile(path).name == "my-pi" and load_profile(path).path == str(path)
    code, _, err = run_cli(["devices", "show", "raspberry-pi-6"])
    assert code == 2 and "unknown device 'raspberry-pi-6'" in err and "raspberry-pi-zero-2w" in err
    code, _, err = run_cli(["devices", "show", str(tmp_path / "missing.toml")])
    assert code == 2 and "does not exist" in err


def test_devices_list_and_show_as_text_and_json(run_cli):
    code, out, _ = run_cli(["devices", "list"])
    assert code == 0 and "raspberry-pi-zero-2w" in out and "derived from raspberry-pi-3b-plus" in out
    code, out, _ = run_cli(["devices", "list", "--json"])
    listed = {d["name"]: d for d in json.loads(out)}
    assert set(listed) >= SHIPPED and listed["raspberry-pi-3b-plus"]["memory_budget_mb"] == 1024 - 256
    code, out, _ = run_cli(["devices", "show", "pixel-3a"])
    assert code == 0 and "Snapdragon 670" in out and "published" in out and "Calibration on this host" in out
    code, out, _ = run_cli(["devices", "show", "raspberry-pi-5", "--json"])
    shown = json.loads(out)
    assert shown["derived_from"]["profile"] == "raspberry-pi-4" and shown["memory_budget_mb"] == 4096 - 512


# Amdahl fractions of the published 1-thread vs 4-thread pairs (MobileNet v2 float): Pixel, Pixel 2, Pixel 3a.
DEVICE_P = sum((1 - multi / one) / (1 - 1 / 4) for one, multi in [(49, 26), (53, 18), (55, 28)]) / 3


def amdahl(p: float, n: int) -> float:
    return (1 - p) + p / n


def test_estimate_on_recorded_timings_uses_the_hand_computed_factor():
    pi4 = load_profile("raspberry-pi-4")
    timings = recorded(**MOBILENETS)
    est = estimate_for(pi4, 2.0, 3.0, is_integer=False, timings=timings)
    factor = (77 / 10 * 46 / 5 * 40 / 4 * 15 / 2) ** 0.25  # without MACs: geometric mean of device ms / host ms
    assert est.exponent == 1.0 and est.factor == pytest.approx(factor)
    assert (est.p50_ms, est.p90_ms) == (pytest.approx(2 * factor), pytest.approx(3 * factor))
    assert est.kind == "estimate" and not est.derived and len(est.references) == 4
    est8 = estimate_for(pi4, 2.0, 3.0, is_integer=True, timings=timings)
    assert est8.factor == pytest.approx(math.sqrt(24 / 8 * 17 / 4))
    # The leave-one-out score comes with it: Pi 4's 6 points, each predicted without itself.
    assert est.leave_one_out_points == 6 and 0 <= est.leave_one_out_within_20pct <= 1


def test_with_macs_the_estimate_is_k_times_host_ms_to_the_e_times_gmacs_to_the_1_minus_e():
    pi4 = load_profile("raspberry-pi-4")
    est = estimate_for(pi4, 2.0, 3.0, is_integer=False, timings=recorded(**MOBILENETS), macs=50_000_000)
    e = est.exponent
    assert e in EXPONENTS and f"host ms^{e:.2f}" in est.rule
    gmacs = {"mobilenet_v1": 0.568742376, "mobilenet_v2": 0.300992936, "mobilenet_v3_large": 0.21943292, "mobilenet_v3_small": 0.057955448}
    host = {"mobilenet_v1": 10, "mobilenet_v2": 5, "mobilenet_v3_large": 4, "mobilenet_v3_small": 2}
    device = {"mobilenet_v1": 77, "mobilenet_v2": 46, "mobilenet_v3_large": 40, "mobilenet_v3_small": 15}
    k = math.exp(sum(math.log(device[m] / (host[m] ** e * gmacs[m] ** (1 - e))) for m in host) / 4)
    assert est.factor == pytest.approx(k)
    assert est.p50_ms == pytest.approx(k * 2.0**e * 0.05 ** (1 - e)) and est.p90_ms == pytest.approx(est.p50_ms * 1.5)


def test_a_device_without_int8_figures_borrows_the_int8_shift_and_moves_threads_by_amdahl():
    pixel3a = load_profile("pixel-3a")
    timings = recorded(**MOBILENETS, mobilenet_v2__float__1=8.0)
    est = estimate_for(pixel3a, 1.0, 1.0, is_integer=True, timings=timings)
    # Pairs (float ms, int8 ms) of Pi 4, Pi 3B+, Pixel 4, Pixel 3; host int8/float is 8/10 and 4/5 = 0.8 for both.
    pairs = [(77, 24), (46, 17), (114, 46), (79, 30), (14, 5), (23.9, 13.4)]
    shift = math.exp(sum(math.log(i / f / 0.8) for f, i in pairs) / len(pairs))
    # The 1-thread point moved to 4 device threads (2 host threads); the host's own fraction: 8 ms -> 5 ms.
    host_p = (1 - 5 / 8) / (1 - 1 / 2)
    moved = 55 / 8 * amdahl(DEVICE_P, 4) / amdahl(DEVICE_P, 1) / (amdahl(host_p, 2) / amdahl(host_p, 1))
    assert est.factor == pytest.approx(math.sqrt(28 / 5 * moved) * shift)
    assert "shift" in est.rule and "Amdahl" in est.rule


def test_an_estimate_at_another_thread_count_moves_every_reference():
    timings = recorded(**MOBILENETS)  # no host pair: the host is assumed to scale like the devices
    est = estimate_for(load_profile("raspberry-pi-4"), 1.0, 1.0, False, threads=1, timings=timings)
    move = amdahl(DEVICE_P, 1) / amdahl(DEVICE_P, 4) / (amdahl(DEVICE_P, 1) / amdahl(DEVICE_P, 2))
    assert est.threads == 1
    assert est.factor == pytest.approx((77 / 10 * 46 / 5 * 40 / 4 * 15 / 2) ** 0.25 * move)


def test_leave_one_out_predicts_each_point_without_it():
    points = leave_one_out(load_profile("raspberry-pi-3b-plus"), recorded(**MOBILENETS), use_macs=False)
    by_key = {p.reference: p for p in points}
    assert by_key["mobilenet_v1/float/4t"].predicted_ms == pytest.approx(10 * 79 / 5)
    assert by_key["mobilenet_v2/int8/4t"].predicted_ms == pytest.approx(4 * 46 / 8)
    assert share_within(points, 0.2) == sum(abs(p.error) <= 0.2 for p in points) / 4
    # Derived profiles have nothing published: no score rather than a borrowed one.
    zero = estimate_for(load_profile("raspberry-pi-zero-2w"), 1.0, 1.0, False, timings=recorded(**MOBILENETS))
    assert zero.derived and zero.leave_one_out_within_20pct is None
    assert zero.factor == pytest.approx(1.4 * math.sqrt(114 / 10 * 79 / 5))


def test_the_nested_leave_one_out_finds_the_exponent_the_points_follow(tmp_path):
    """Two boards whose latencies follow device ms = c x host ms^0.6 x GMACs^0.4 exactly: e = 0.6 is chosen
    without each held-out point, and every point is predicted exactly; e = 1 cannot do that."""
    timings = recorded(**MOBILENETS)
    host = {"mobilenet_v1": 10, "mobilenet_v2": 5, "mobilenet_v3_large": 4, "mobilenet_v3_small": 2}
    boards = []
    for name, c in (("board-a", 3.0), ("board-b", 7.0)):
        refs = "".join(
            f'[[references]]\nmodel = "{m}"\nprecision = "float"\nthreads = 4\nsource = "synthetic"\n'
            f"latency_ms = {c * h**0.6 * (REFERENCE_MODELS[m].macs / 1e9) ** 0.4}\n"
            for m, h in host.items()
        )
        path = tmp_path / f"{name}.toml"
        path.write_text(PI4_TEXT.split("[[references]]")[0].replace('"raspberry-pi-4"', f'"{name}"') + refs)
        boards.append(load_profile(path))
    assert choose_exponent(boards, timings) == 0.6
    for board in boards:
        nested = leave_one_out(board, timings, boards)
        assert len(nested) == 4 and all(abs(p.error) < 1e-9 for p in nested)
        assert max(abs(p.error) for p in leave_one_out(board, timings, boards, use_macs=False)) > 0.1


def test_no_calibrated_reference_is_a_user_error():
    with pytest.raises(UserError, match="devices calibrate"):
        estimate_for(load_profile("pixel-4"), 1.0, 1.0, False, timings=recorded())


def test_real_calibration_on_one_small_reference_then_an_estimate(float_tflite, tmp_path, monkeypatch, run_cli):
    """Real build (TensorFlow child), real host timing, real measurement: SqueezeNet only, to stay quick."""
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path / "cache"))
    code, out, _ = run_cli(["devices", "calibrate", "--device", "pixel-4", "--reference", "squeezenet", "--json"])
    assert code == 0
    result = json.loads(out)
    assert [(m["model"], m["precision"]) for m in result["measured"]] == [("squeezenet", "float")]
    assert (tmp_path / "cache" / "references" / "squeezenet-float.tflite").exists()
    timings = load_timings()
    host_ms = timings.ms[("squeezenet", "float", min(4, timings.host.cores))]

    from edgecompress.measure import MeasureOptions, measure

    m = measure(float_tflite, MeasureOptions(threads=min(4, timings.host.cores), runs=20, min_secs=0.2))
    pixel4 = load_profile("pixel-4")
    est = estimate_for(pixel4, m.latency_ms.p50, m.latency_ms.p90, is_integer=False, timings=timings)
    assert est.references == ("squeezenet/float/4t",)
    assert est.factor == pytest.approx(23.9 / host_ms)
    assert est.p50_ms == pytest.approx(m.latency_ms.p50 * 23.9 / host_ms) and est.p90_ms >= est.p50_ms
    from edgecompress.inspect import inspect_model

    with_macs = estimate_for(pixel4, m.latency_ms.p50, m.latency_ms.p90, False, timings=timings, macs=inspect_model(float_tflite).macs_total)
    # One reference timed: no point can be predicted from the others, so no exponent to choose (e = 1).
    assert with_macs.exponent == 1.0 and with_macs.p50_ms == pytest.approx(est.p50_ms)
    # The cache answers the next time: nothing is re-measured.
    assert calibrate([pixel4], models={"squeezenet"}).measured == []


def test_without_tensorflow_calibration_says_it_needs_the_full_extra(runtime_venv, tmp_path):
    env = {**os.environ, "EDGECOMPRESS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [str(Path(runtime_venv).parent / "edgecompress"), "devices", "calibrate", "--reference", "squeezenet"],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "edgecompress[full]" in proc.stderr and proc.stderr.count("\n") == 1
    assert "benchmark itself runs without it" in proc.stderr


def test_the_mobilebert_reference_has_the_papers_size():
    # MobileBERT (Sun et al. 2020) has 25.3M parameters; ours has 128 positions instead of 512 and no segment embeddings.
    from edgecompress.devices.reference_builders import _mobilebert
    from edgecompress.models import import_tf_keras

    model = _mobilebert(128, "classify")(import_tf_keras())
    assert 24.0e6 < model.count_params() < 25.3e6
    assert model.inputs[0].dtype.name == "int32"


@pytest.mark.parametrize("precision", ["float", "int8"])
def test_a_token_id_reference_converts_with_its_int32_input(precision):
    from ai_edge_litert.interpreter import Interpreter

    from edgecompress.devices.reference_builders import _convert
    from edgecompress.models import import_tf, import_tf_keras

    keras = import_tf_keras()
    ids = keras.Input((8,), dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(1000, 4)(ids))))
    (spec,) = Interpreter(model_content=_convert(import_tf(), model, precision)).get_input_details()
    assert list(spec["shape"]) == [1, 8] and spec["dtype"].__name__ == "int32"


def test_every_reference_models_recorded_mac_count_is_what_inspect_counts_on_its_file():
    """The estimates read each reference's MAC count from REFERENCE_MODELS, not from its file: every one is checked
    against inspect on the built .tflite (float; int8 for one: the count is the same). Building the missing ones
    takes minutes once (the large ones 20-60 s each); they are cached as calibration caches them."""
    from edgecompress.devices.references import build, reference_path
    from edgecompress.inspect import inspect_model

    build([(name, "float") for name in REFERENCE_MODELS] + [("squeezenet", "int8")])
    counted = {name: inspect_model(reference_path(name, "float")).macs_total for name in REFERENCE_MODELS}
    assert counted == {name: ref.macs for name, ref in REFERENCE_MODELS.items()}
    assert inspect_model(reference_path("squeezenet", "int8")).macs_total == REFERENCE_MODELS["squeezenet"].macs
