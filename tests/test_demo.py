"""The initial demo, end to end on the bundled digits, and its refusal to overwrite."""
from __future__ import annotations

import json

from edgecompress.cli.main import main


def test_demo_end_to_end_and_no_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["demo", "-o", str(out), "--epochs", "8", "--json"])
    result = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in result["rows"]}
    keras, fp32, int8 = rows["keras (float32)"], rows["tflite float32"], rows["tflite int8"]
    assert result["test_samples"] == 300
    assert keras["accuracy"] > 0.9
    assert abs(fp32["accuracy"] - keras["accuracy"]) <= 1 / 300
    assert abs(int8["accuracy"] - keras["accuracy"]) <= 0.02
    assert 0.22 < int8["size_bytes"] / fp32["size_bytes"] < 0.32
    for name in ("digits.keras", "calibration.npz", "test.npz", "digits_float32.tflite", "digits_int8.tflite"):
        assert (out / name).is_file()

    before = (out / "digits_int8.tflite").read_bytes()
    try:
        main(["demo", "-o", str(out)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "--force" in err and "Traceback" not in err
    assert (out / "digits_int8.tflite").read_bytes() == before
