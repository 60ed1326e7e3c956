"""Calibration sources (.npy, .npz, image folders), their checks and statistics, on real digits data."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgecompress.calibration import load_samples, open_source, select_indices
from edgecompress.errors import UserError
from edgecompress.specs import TensorSpec

IMAGE = [TensorSpec("image", (None, 8, 8, 1), "float32")]


@pytest.fixture()
def digits_x(digits):
    return digits.train.x[:120]


@pytest.mark.parametrize("writer", ["npz", "npz_compressed", "npz_named", "npy"])
def test_sources_stream_the_chosen_samples(tmp_path, digits_x, writer):
    path = tmp_path / ("data.npy" if writer == "npy" else "data.npz")
    if writer == "npy":
        np.save(path, digits_x)
    elif writer == "npz_compressed":
        np.savez_compressed(path, x=digits_x)
    else:
        np.savez(path, **{"image" if writer == "npz_named" else "x": digits_x})
    samples = load_samples(path, IMAGE, num_samples=25, seed=3)
    assert len(samples) == 25
    np.testing.assert_array_equal(samples.batch()["image"], digits_x[samples.indices])
    first = next(samples.samples())
    assert first["image"].shape == (1, 8, 8, 1) and first["image"].dtype == np.float32
    stats = samples.stats[0]
    chosen = digits_x[samples.indices]
    assert (stats.name, stats.count) == ("image", 25)
    assert stats.min == pytest.approx(chosen.min()) and stats.max == pytest.approx(chosen.max())
    assert stats.mean == pytest.approx(chosen.mean(), rel=1e-6)


def test_uncompressed_npz_is_memory_mapped_not_loaded(tmp_path, digits_x):
    path = tmp_path / "data.npz"
    np.savez(path, x=digits_x, y=np.arange(len(digits_x)))
    source = open_source(path, IMAGE)
    assert isinstance(source.columns["image"], np.memmap)
    assert source.count == len(digits_x) and source.labels is not None


def test_selection_is_seeded_and_reproducible():
    a, b, c = select_indices(1000, 50, seed=1), select_indices(1000, 50, seed=1), select_indices(1000, 50, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(set(a.tolist())) == 50 and list(a) == sorted(a)
    np.testing.assert_array_equal(select_indices(10, 50), np.arange(10))


def _png(path, pixels):
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.mark.parametrize("scale, low, high", [("unit", 0.0, 1.0), ("symmetric", -1.0, 1.0), ("raw", 0.0, 255.0)])
def test_image_folder_resizes_and_scales(tmp_path, scale, low, high):
    folder = tmp_path / "images"
    folder.mkdir()
    big = np.zeros((32, 32), np.uint8)
    big[:, 16:] = 255  # left half black, right half white
    _png(folder / "a.png", big)
    Image.fromarray(np.full((20, 24, 3), 255, np.uint8)).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("ignored")
    samples = load_samples(folder, IMAGE, image_scale=scale)
    batch = samples.batch()["image"]
    assert batch.shape == (2, 8, 8, 1)
    assert batch[0, :, 0, 0] == pytest.approx(np.full(8, low)) and batch[0, :, -1, 0] == pytest.approx(np.full(8, high))
    assert batch[1] == pytest.approx(np.full((8, 8, 1), high), abs=1e-3 * high)


def test_image_folder_rgb_input(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((10, 10, 3), [255, 0, 0], np.uint8)).save(folder / "red.png")
    batch = load_samples(folder, [TensorSpec("rgb", (None, 4, 4, 3), "float32")]).batch()["rgb"]
    assert batch.shape == (1, 4, 4, 3)
    assert batch[0, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.0])


def _error(path, inputs=IMAGE, **kw) -> str:
    with pytest.raises(UserError) as err:
        load_samples(path, inputs, **kw)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_wrong_shape_names_input_expected_and_found(tmp_path, digits_x):
    path = tmp_path / "flat.npz"
    np.savez(path, x=digits_x.reshape(len(digits_x), 64))
    message = _error(path)
    assert "'image'" in message and "(8, 8, 1)" in message and "(64,)" in message


def test_wrong_dtype(tmp_path, digits_x):
    path = tmp_path / "ints.npz"
    np.savez(path, x=(digits_x * 16).astype(np.int64))
    message = _error(path)
    assert "'image'" in message and "float32" in message and "int64" in message


def test_nan_and_inf_name_the_sample(tmp_path, digits_x):
    for bad in (np.nan, np.inf):
        x = digits_x.copy()
        x[17, 3, 3, 0] = bad
        path = tmp_path / "bad.npz"
        np.savez(path, x=x)
        message = _error(path)
        assert "'image'" in message and "sample 17" in message and "NaN or infinite" in message


def test_empty_sets(tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8, 1), np.float32))
    assert "no samples" in _error(tmp_path / "empty.npz")
    (tmp_path / "no_images").mkdir()
    assert "no jpg/png images" in _error(tmp_path / "no_images")


def test_missing_key_lists_what_was_found(tmp_path, digits_x):
    np.savez(tmp_path / "other.npz", pixels=digits_x, y=np.zeros(len(digits_x)))
    message = _error(tmp_path / "other.npz")
    assert "'image'" in message and "pixels, y" in message and "'x'" in message


def test_multi_input_needs_every_key_and_equal_counts(tmp_path):
    inputs = [TensorSpec("a", (None, 4), "float32"), TensorSpec("b", (None, 3), "float32")]
    np.savez(tmp_path / "only_a.npz", a=np.zeros((5, 4), np.float32))
    assert "'b'" in _error(tmp_path / "only_a.npz", inputs)
    np.savez(tmp_path / "uneven.npz", a=np.zeros((5, 4), np.float32), b=np.zeros((4, 3), np.float32))
    assert "different sample counts" in _error(tmp_path / "uneven.npz", inputs)
    np.savez(tmp_path / "ok.npz", a=np.ones((5, 4), np.float32), b=np.zeros((5, 3), np.float32))
    stats = load_samples(tmp_path / "ok.npz", inputs).stats
    assert [(s.name, s.mean) for s in stats] == [("a", 1.0), ("b", 0.0)]


def test_npy_for_a_multi_input_model_and_unknown_files(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.float32))
    inputs = [TensorSpec("a", (None, 4), "float32"), TensorSpec("b", (None, 3), "float32")]
    assert ".npz" in _error(tmp_path / "x.npy", inputs)
    (tmp_path / "x.csv").write_text("1,2")
    assert "not a .npy, .npz or image folder" in _error(tmp_path / "x.csv")
    assert "does not exist" in _error(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "not a readable .npz" in _error(tmp_path / "junk.npz")
