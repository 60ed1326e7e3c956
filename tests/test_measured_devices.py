"""Device figures measured over SSH (a real OpenSSH server on 127.0.0.1, tools/loopback_sshd.py, the device's
Python the runtime-only environment): the device here IS this host, which makes the figures checkable.

A sweep with one device measured and one estimated: the report labels each device's figures, the choice for
the measured device follows its measured latency, and an unreachable device fails only its figures.
A refit from measurements (`devices calibrate --from-measurements`): the device being this host, the refitted
rule must come out as plain host scaling, k near 1."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecompress.pipeline.run import run_recipe

from loopback_sshd import free_port

RECIPE = """\
model = "{model}"
objective = "smallest"

[devices.loopback-board]
on = "{url}"
ssh_config = "{config}"
remote_python = "{python}"

[devices.raspberry-pi-4]

[devices.offline-board]
on = "ssh://127.0.0.1:{closed_port}"
ssh_config = "{config}"

[data]
test = "{test}"
calibration = "{calib}"
calibration_samples = 50

[benchmark]
runs = 5
min_secs = 0.05
{constraints}
[[variants]]
name = "float"
quantize = "none"

[[variants]]
name = "int8"
quantize = "int8"
"""


def _isolated_cache(tmp: Path, monkeypatch) -> Path:
    """A fresh measurement store; the host's device calibration (slow to redo) is shared from the usual cache."""
    from edgecompress.devices.references import cache_root

    shared = cache_root()
    cache = tmp / "cache"
    cache.mkdir()
    for part in ("references", "calibration"):
        (shared / part).mkdir(parents=True, exist_ok=True)
        (cache / part).symlink_to(shared / part)
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(cache))
    return cache


def test_a_sweep_measures_one_device_over_ssh_and_estimates_another(
        sshd, runtime_venv, digits_model_path, test_npz, calib_npz, tmp_path, monkeypatch):
    _isolated_cache(tmp_path, monkeypatch)
    recipe = tmp_path / "measured.toml"
    closed_port = free_port()

    def write(constraints: str = "") -> Path:
        recipe.write_text(RECIPE.format(model=digits_model_path, url=sshd.url, config=sshd.client_config,
                                        python=runtime_venv, closed_port=closed_port, test=test_npz, calib=calib_npz,
                                        constraints=constraints))
        return recipe

    run_dir = tmp_path / "run"
    first = run_recipe(write(), run_dir, progress=False)
    by_name = {r.name: r for r in first.records}
    for r in by_name.values():
        assert r.ok, r.error
        board, pi, offline = (r.devices[d] for d in ("loopback-board", "raspberry-pi-4", "offline-board"))
        assert board.source == "measured" and board.error is None and board.measured_on == sshd.url
        assert board.measured_p50_ms > 0 and board.measured_p90_ms >= board.measured_p50_ms
        assert board.estimated_p50_ms is None and board.identity["runtime"] == "ai-edge-litert"
        assert r.latency("loopback-board") == board.measured_p50_ms
        assert pi.source == "estimated" and pi.estimated_p50_ms > 0 and r.latency("raspberry-pi-4") == pi.estimated_p50_ms
        # the device that cannot be reached fails its own figures, not the variant
        assert offline.source == "measured" and offline.measured_p50_ms is None and "unreachable" in offline.error

    from edgecompress.remote.store import load_measurements

    kept = load_measurements()  # each measured variant is in the store, under the recipe's device name
    assert sorted(k["model"]["name"] for k in kept) == ["float.tflite", "int8.tflite"]
    assert {k["device_name"] for k in kept} == {"loopback-board"}
    assert all(Path(k["model"]["path"]).is_file() for k in kept)

    # a latency cap between the two measured figures: only the measured-faster variant may be chosen there
    p50 = {name: r.latency("loopback-board") for name, r in by_name.items()}
    faster, slower = sorted(p50, key=p50.get)
    cap = (p50[faster] + p50[slower]) / 2
    second = run_recipe(write(f"\n[constraints]\nmax_latency_ms = {{ loopback-board = {cap!r} }}\n"), run_dir,
                        progress=False)
    assert second.redone == []  # the constraint changes the choice, not the figures: nothing is measured again
    choice = {s.target: s for s in second.selections}["loopback-board"]
    assert choice.chosen == faster, choice
    assert "measured latency on loopback-board" in choice.rejected[slower], choice.rejected

    md = second.report.markdown.read_text()
    assert "| loopback-board measured p50 | raspberry-pi-4 est. p50 | offline-board measured p50 |" in md
    assert "measured latency on loopback-board <= " in md  # the constraint as the report states it
    assert "- float on offline-board: " in md and "unreachable" in md.split("- float on offline-board: ")[1]
    assert f"loopback-board on {sshd.url}" in md and "Estimated latencies (raspberry-pi-4)" in md
    shown = second.report.shown
    assert shown["accuracy_vs_latency_loopback-board.png"].xlabel.startswith(
        "measured p50 latency on loopback-board (over SSH)")
    assert shown["accuracy_vs_latency_raspberry-pi-4.png"].xlabel.startswith("estimated p50 latency on raspberry-pi-4")
    assert any("loopback-board: measured on the device over SSH" in n for n in second.notes)


WIDTHS = (96, 192, 320, 448, 640, 896)  # MLPs of 0.03 to 0.9 M MACs, random weights


@pytest.fixture(scope="module")
def random_mlps(plain_convert, tmp_path_factory) -> list[Path]:
    import tf_keras as keras

    folder = tmp_path_factory.mktemp("mlps")
    paths = []
    for i, width in enumerate(WIDTHS):
        keras.utils.set_random_seed(i)
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(width, "relu"),
                                  keras.layers.Dense(width, "relu"), keras.layers.Dense(10)])
        paths.append(folder / f"mlp{width}.tflite")
        paths[-1].write_bytes(plain_convert(model))
    return paths


def test_a_refit_from_measurements_of_this_host_over_ssh_finds_host_scaling(
        sshd, runtime_venv, random_mlps, run_cli, tmp_path, monkeypatch):
    _isolated_cache(tmp_path, monkeypatch)
    pi = Path(__file__).resolve().parents[1] / "devices" / "profiles" / "raspberry-pi-4.toml"
    head = pi.read_text().split("[[references]]")[0].replace('name = "raspberry-pi-4"', 'name = "loopback-board"')
    profile = tmp_path / "loopback-board.toml"
    profile.write_text(head + "references = []  # never published: calibrated from measurements alone\n")

    code, out, err = run_cli(["benchmark", *random_mlps, "--on", sshd.url, "--ssh-config", sshd.client_config,
                              "--remote-python", runtime_venv, "--device", profile, "--runs", "20", "--min-secs", "0.3"])
    assert code == 0, err
    from edgecompress.remote.store import load_measurements

    assert [k["device_name"] for k in load_measurements()] == ["loopback-board"] * len(WIDTHS)

    code, out, err = run_cli(["devices", "calibrate", profile, "--from-measurements"])
    assert code == 0, err
    assert "Leave-one-out error over your measured points" in out and "after (your measurements)" in out
    assert "before (published figures)" not in out  # nothing published to predict with
    assert "loopback-board has no published figures: it is calibrated from your measurements alone." in out
    assert f"loopback-board is now calibrated from {len(WIDTHS)} of your measurements" in out

    code, out, err = run_cli(["devices", "calibrate", profile, "--from-measurements", "--json"])
    refit = json.loads(out)
    # the device is this host: the fit maps each host time back to itself. (k and e alone are not asserted:
    # over this narrow range of MACs, host noise moves e to 0.8 with k compensating, the predictions unchanged.)
    from edgecompress.devices.estimate import cost

    fit = refit["fit"]
    for point in refit["points"]:
        mapped = fit["k"]["float"] * cost(point["host_ms"], point["macs"], fit["exponent"])
        assert 0.67 < mapped / point["host_ms"] < 1.5, (point, fit)  # a broken fit is off by far more
    assert refit["after"]["points"] == len(WIDTHS) and refit["after"]["within_20pct"] >= 0.8, refit["after"]

    # later estimates for the device use the refit, and say so
    code, out, err = run_cli(["benchmark", random_mlps[-1], "--device", profile, "--threads", "1", "--json",
                              "--runs", "10", "--min-secs", "0.1"])
    assert code == 0, err
    result = json.loads(out)[0]
    assert "calibrated from 6 of your measurements" in result["device"]["calibration"]["rule"], result["device"]
    # the device is this host: its estimate is the host's own p50, within the refit's error
    estimated = result["device"]["estimated_latency_ms"]["p50"]
    assert 0.75 < estimated / result["latency_ms"]["p50"] < 1.33, (estimated, result["latency_ms"])

    # the same measurements, selected by address, refit a published profile: before and after both printed;
    # a model whose file is gone cannot be timed on this host again: skipped, and said so
    random_mlps[0].unlink()
    code, out, err = run_cli(["devices", "calibrate", "raspberry-pi-4", "--from-measurements", "--on", sshd.url])
    assert code == 0, err
    assert "before (published figures)" in out and "after (your measurements)" in out
    assert f"skipped {random_mlps[0].name}: the file is no longer at {random_mlps[0]}" in out
    assert f"raspberry-pi-4 is now calibrated from {len(WIDTHS) - 1} of your measurements" in out


def test_a_refit_needs_measurements_and_a_device(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path))  # an empty store
    code, out, err = run_cli(["devices", "calibrate", "raspberry-pi-4", "--from-measurements"])
    assert code == 2 and "0 usable measurement(s) of raspberry-pi-4 (0 skipped), a refit needs 3" in err, err
    assert "--device raspberry-pi-4" in err
    code, out, err = run_cli(["devices", "calibrate", "--from-measurements"])
    assert code == 2 and "name it" in err, err
    code, out, err = run_cli(["devices", "calibrate", "raspberry-pi-4", "--on", "ssh://pi@raspberrypi.local"])
    assert code == 2 and "add --from-measurements" in err, err
