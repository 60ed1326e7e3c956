"""Embedding tables get quantized: the converter's GATHER on a constant table becomes EMBEDDING_LOOKUP
(converters.embedding_lookup), which computes the same rows and which ai-edge-quantizer quantizes."""
from __future__ import annotations

import numpy as np
import pytest

VOCAB, WIDTH, SEQ = 600, 32, 12


@pytest.fixture(scope="module")
def embedding_model(tmp_path_factory):
    """A tiny tf-keras text classifier whose embedding table holds most of its weights."""
    from edgecompress.models import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    ids = keras.Input((SEQ,), dtype="int32", name="ids")
    x = keras.layers.Embedding(VOCAB, WIDTH, name="table")(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(ids, keras.layers.Dense(3, activation="softmax", name="probs")(x))
    path = tmp_path_factory.mktemp("embedding") / "tiny.keras"
    model.save(path)
    return path


def _outputs(data: bytes, ids: np.ndarray, folder) -> np.ndarray:
    from edgecompress.runtime import load_interpreter

    path = folder / "model.tflite"
    path.write_bytes(data)
    interpreter, _ = load_interpreter(path)
    (feed,), (fetch,) = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for sample in ids:
        interpreter.set_tensor(feed["index"], sample[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(fetch["index"])[0])
    return np.array(rows)


def _ops(data: bytes) -> set[str]:
    from edgecompress.tflite_reader import parse_model

    return {op.name for sg in parse_model(data, "test").subgraphs for op in sg.operators}


def test_gather_becomes_an_equivalent_embedding_lookup(embedding_model, tmp_path):
    from edgecompress.converters.convert import to_tflite
    from edgecompress.converters.embedding_lookup import gathers_to_embedding_lookups
    from edgecompress.models import load_model

    original = to_tflite(load_model(embedding_model))
    assert "GATHER" in _ops(original)
    rewritten, count = gathers_to_embedding_lookups(original)
    assert count == 1 and "GATHER" not in _ops(rewritten) and "EMBEDDING_LOOKUP" in _ops(rewritten)
    ids = np.random.default_rng(0).integers(0, VOCAB, (20, SEQ), dtype=np.int32)
    np.testing.assert_array_equal(_outputs(rewritten, ids, tmp_path), _outputs(original, ids, tmp_path))
    assert gathers_to_embedding_lookups(rewritten) == (rewritten, 0)  # nothing left to rewrite


# The float32 table alone is 76,800 bytes; per-row scales and zero points come on top of the packed values.
@pytest.mark.parametrize("mode, dtype, smaller", [("int4", "int4", 3.5), ("int8-weights", "int8", 2.5)])
def test_embedding_table_is_quantized(embedding_model, tmp_path, mode, dtype, smaller):
    from edgecompress.converters import convert_model
    from edgecompress.tflite_reader import read_model

    result = convert_model(embedding_model, tmp_path / "q.tflite", quantize=mode)
    tables = [t for sg in read_model(result.output).subgraphs for t in sg.tensors
              if t.shape == (VOCAB, WIDTH) and t.is_constant]
    assert [t.dtype for t in tables] == [dtype]
    assert result.size_bytes < VOCAB * WIDTH * 4 / smaller
    assert result.validation.top1_agreement >= 0.95
