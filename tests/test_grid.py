"""Grid expansion: every combination, stable names and order, contradictions left out, equivalents merged."""
from __future__ import annotations

from pathlib import Path

from edgecompress.pipeline.grid import Variant, VariantSettings, dedupe, expand_grid, normalized


def test_cross_product_in_a_stable_order_with_stable_names():
    kept, skipped = expand_grid({"prune": [0.0, 0.5, 0.8], "quantize": ["none", "dynamic", "float16", "int8"]})
    assert not skipped
    assert len(kept) == 12
    names = [s.auto_name() for s in kept]
    assert len(set(names)) == 12
    # quantize varies slowest (field order, not the order the axes were written in)
    assert names[:3] == ["float32", "prune0.5-float32", "prune0.8-float32"]
    assert names[-1] == "prune0.8-int8"
    again, _ = expand_grid({"quantize": ["none", "dynamic", "float16", "int8"], "prune": [0.0, 0.5, 0.8]})
    assert [s.auto_name() for s in again] == names


def test_contradictory_combinations_are_left_out_with_a_reason():
    kept, skipped = expand_grid({"quantize": ["float16", "int8"], "qat": [False, True], "io_type": ["float32", "int8"]})
    assert {s.auto_name() for s in kept} == {"float16", "int8", "qat-int8", "int8-ioint8", "qat-int8-ioint8"}
    assert len(skipped) == 3
    assert any(s.startswith("qat-float16:") and "needs quantize" in s for s in skipped)
    assert any(s.startswith("float16-ioint8:") for s in skipped)


def test_equivalent_settings_are_one_variant():
    a = Variant("explicit", VariantSettings(quantize="int8", prune=0.5))
    b = Variant("prune0.5-int8", normalized(VariantSettings(quantize="int8", prune=1 / 2)))
    c = Variant("float32", VariantSettings())
    d = Variant("float32-again", normalized(VariantSettings(prune=0, cluster=0)))
    assert [v.name for v in dedupe([a, b, c, d])] == ["explicit", "float32"]


def test_names_cover_every_technique():
    s = VariantSettings(quantize="int8", prune=0.8, cluster=16, qat=True, low_rank=0.9,
                        distill_student=Path("/x/student.keras"), io_type="int8", epochs=5)
    assert s.auto_name() == "distill-student-lowrank0.9-prune0.8-cluster16-qat-int8-ioint8-ep5"
    assert s.techniques == ["distillation", "low_rank", "prune", "cluster", "qat"]
    assert s.needs_training and s.needs_calibration
    pattern = VariantSettings(prune_pattern="2:4", quantize="dynamic")
    assert pattern.auto_name() == "prune2of4-dynamic" and pattern.techniques == ["prune"]
    assert not VariantSettings(quantize="float16").needs_training
    assert VariantSettings(prune=0.5, prune_pattern="2:4").conflict()[0] == "prune_pattern"  # the pattern fixes it


def test_int4_block_sizes_cross_only_with_int4():
    kept, skipped = expand_grid({"quantize": ["int4", "int8-weights"], "block_size": [None, 32]})
    assert [s.auto_name() for s in kept] == ["int4", "int4-b32", "int8-weights"]
    assert len(skipped) == 1 and skipped[0].startswith("int8-weights-b32:") and "int4" in skipped[0]
