"""Sample sources for calibration, validation and evaluation: .npy, .npz and folders of images.

Every source exposes, per model input, a "column": an object with .shape, .dtype and [i] that returns
one sample. Columns are memory-mapped arrays or lazy image lists, so a source is streamed sample by
sample and never loaded whole. No TensorFlow here: evaluate uses this on a Raspberry Pi.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from edgecompress.errors import MissingExtraError, UserError
from edgecompress.fileio import require_file
from edgecompress.specs import LABEL_KEY, TensorSpec, input_key

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# How 8-bit pixels become model input values for an image folder (documented in `convert --help`).
IMAGE_SCALES = {
    "unit": "pixels / 255 -> [0, 1]",
    "symmetric": "pixels / 127.5 - 1 -> [-1, 1] (MobileNet style)",
    "raw": "pixels as they are -> [0, 255]",
}


class Column(Protocol):
    """One input's samples: shape[0] is the sample count."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __getitem__(self, index: int) -> np.ndarray: ...


@dataclass
class Source:
    """Samples for each model input (by input name) and, when present, the labels."""

    path: Path
    kind: str  # "npy", "npz" or "images"
    columns: dict[str, Column]
    labels: Column | None
    available: tuple[str, ...]  # the keys the file holds, for error messages

    @property
    def count(self) -> int:
        counts = {len_of(c) for c in self.columns.values()}
        return counts.pop() if len(counts) == 1 else 0

    def sample(self, index: int, inputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
        """Sample INDEX of every input as a batch of one, in the input's dtype."""
        return {
            s.name: np.asarray(self.columns[s.name][index]).astype(s.np_dtype, copy=False)[None]
            for s in inputs
        }

    def samples(self, indices: Sequence[int], inputs: Sequence[TensorSpec]) -> Iterator[dict[str, np.ndarray]]:
        for i in indices:
            yield self.sample(int(i), inputs)


def len_of(column: Column) -> int:
    return int(column.shape[0]) if len(column.shape) else 0


def open_source(path: str | Path, inputs: Sequence[TensorSpec], image_scale: str = "unit") -> Source:
    """Open PATH as a sample source for a model with INPUTS (nothing is read beyond headers yet)."""
    p = require_file(path, "data")
    if p.is_dir():
        return _image_source(p, inputs, image_scale)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _npy_source(p, inputs)
    if suffix == ".npz":
        return _npz_source(p, inputs)
    raise UserError(f"data {p} is not a .npy, .npz or image folder: save the samples with numpy.savez")


def _npy_source(path: Path, inputs: Sequence[TensorSpec]) -> Source:
    if len(inputs) != 1:
        names = ", ".join(s.name for s in inputs)
        raise UserError(
            f"data {path} is a .npy file but the model has {len(inputs)} inputs ({names}): "
            "give a .npz with one array per input name"
        )
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"data {path} is not a readable .npy file ({exc}): save it with numpy.save") from exc
    return Source(path, "npy", {inputs[0].name: array}, None, (path.name,))


def _npz_source(path: Path, inputs: Sequence[TensorSpec]) -> Source:
    try:
        arrays = _npz_members(path)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"data {path} is not a readable .npz file ({exc}): save it with numpy.savez") from exc
    columns: dict[str, Column] = {}
    for spec in inputs:
        key = input_key(spec.name, len(inputs), arrays)
        if key is not None:
            columns[spec.name] = arrays[key]
    return Source(path, "npz", columns, arrays.get(LABEL_KEY), tuple(arrays))


def _npz_members(path: Path) -> dict[str, Column]:
    """Every array of an .npz, memory-mapped when stored uncompressed, else loaded when first indexed."""
    members: dict[str, Column] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            if info.compress_type == zipfile.ZIP_STORED:
                members[key] = _mapped_member(path, zf, info)
            else:
                members[key] = _DeferredMember(path, key, zf, info)
    return members


def _mapped_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as fh:
        shape, fortran, dtype = _read_header(fh)
        header_len = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"array {info.filename} holds Python objects, which are refused for safety")
    # The member's bytes start after the zip local header (30 bytes + name + extra field).
    with open(path, "rb") as raw:
        raw.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
    offset = info.header_offset + 30 + int(name_len) + int(extra_len) + header_len
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _read_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, Fortran order and dtype from an .npy header, leaving FH at the first data byte."""
    major, _ = np.lib.format.read_magic(fh)
    if major == 1:
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


class _DeferredMember:
    """A compressed .npz member: its header is read now, its data only when a sample is asked for."""

    def __init__(self, path: Path, key: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        with zf.open(info) as fh:
            self.shape, _, self.dtype = _read_header(fh)
        self._path, self._key, self._data = path, key, None

    def __getitem__(self, index: int) -> np.ndarray:
        if self._data is None:  # a compressed member cannot be sliced without inflating it
            with np.load(self._path, allow_pickle=False) as npz:
                self._data = npz[self._key]
        return self._data[index]


class _ImageColumn:
    """Images of a folder, decoded, resized and scaled one at a time."""

    def __init__(self, files: list[Path], spec: TensorSpec, scale: str) -> None:
        height, width, channels = spec.sample_shape
        self.files, self.size, self.channels, self.scale = files, (int(width), int(height)), int(channels), scale
        self.shape = (len(files), int(height), int(width), int(channels))
        # raw pixels keep 8 bits for an integer input, else they are floats in 0..255
        self.dtype = np.dtype(np.uint8) if scale == "raw" and spec.np_dtype.kind in "iu" else np.dtype(np.float32)

    def __getitem__(self, index: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("L" if self.channels == 1 else "RGB").resize(self.size))
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"image {path} cannot be read ({exc}): remove it or replace it with a jpg/png") from exc
        pixels = pixels.reshape(self.shape[1:])
        if self.scale == "unit":
            return pixels.astype(np.float32) / 255.0
        if self.scale == "symmetric":
            return pixels.astype(np.float32) / 127.5 - 1.0
        return pixels.astype(self.dtype)


def _image_source(folder: Path, inputs: Sequence[TensorSpec], scale: str) -> Source:
    if scale not in IMAGE_SCALES:
        raise UserError(f"unknown image scale {scale!r}: use one of {', '.join(IMAGE_SCALES)}")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if len(inputs) != 1:
        raise UserError(
            f"data {folder} is an image folder but the model has {len(inputs)} inputs: give a .npz with one array per input"
        )
    spec = inputs[0]
    shape = spec.sample_shape
    if len(shape) != 3 or shape[2] not in (1, 3) or None in shape[:2]:
        raise UserError(
            f"input {spec.name!r} has shape {spec.describe()}, not a fixed-size image (height, width, 1 or 3): "
            "give a .npy or .npz instead of an image folder"
        )
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("reading an image folder", "pillow") from exc
    return Source(folder, "images", {spec.name: _ImageColumn(files, spec, scale)}, None, ())


def select_indices(count: int, num_samples: int | None, seed: int = 0) -> np.ndarray:
    """NUM_SAMPLES indices out of COUNT, chosen with SEED (the same every run), in file order."""
    if num_samples is not None and num_samples < 1:
        raise UserError(f"num_samples must be at least 1, got {num_samples}", settings=("num_samples",))
    if num_samples is None or num_samples >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=num_samples, replace=False))


def describe_column(column: Any) -> str:
    return f"{tuple(int(d) for d in column.shape)} {np.dtype(column.dtype).name}"
