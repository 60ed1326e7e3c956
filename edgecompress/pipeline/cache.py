"""The run folder as a cache: what each variant's work depends on, and how a killed run resumes.

A variant's files live in RUN_DIR/variants/NAME/. Its `key` (a hash of the edgecompress version, the bytes
of the model and data files it uses, and its settings) is written there first; stage outputs follow, each
written atomically; the record (record.json) is written LAST, atomically. So at any moment a variant is
either finished (a record whose key matches) or not, and every file at its final name is complete. A rerun
reuses finished variants, reuses complete stage outputs of unfinished ones, and deletes the temporary files
a kill left behind. A changed setting or input changes the key, and the folder's stale files are cleared.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from edgecompress import __version__
from edgecompress.errors import UserError
from edgecompress.fileio import write_text_atomic
from edgecompress.tables import json_ready
from edgecompress.pipeline.grid import Variant
from edgecompress.pipeline.recipe import Recipe

MARKER = "run.json"  # identifies an edgecompress run folder; never overwrite anything else


@lru_cache(maxsize=None)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (a SavedModel folder: of its files, in order), memoised per size and mtime."""
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(file_digest(f).encode())
        return h.hexdigest()
    st = path.stat()
    return _digest(str(path), st.st_size, st.st_mtime_ns)


def make_key(parts: dict[str, Any]) -> str:
    """A stable hash of PARTS (JSON-able) and the edgecompress version."""
    blob = json.dumps({"edgecompress": __version__, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file written by this module, or None when it is missing (atomic writes: never partial)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(json_ready(data), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n")


@dataclass(frozen=True)
class VariantDir:
    """One variant's folder and the files in it."""

    path: Path
    name: str

    @property
    def key_file(self) -> Path:
        return self.path / "key"

    @property
    def record_file(self) -> Path:
        return self.path / "record.json"

    @property
    def build_file(self) -> Path:
        return self.path / "build.json"

    @property
    def tflite(self) -> Path:
        return self.path / f"{self.name}.tflite"

    @property
    def keras(self) -> Path:
        return self.path / f"{self.name}.keras"

    def finished(self, key: str) -> dict[str, Any] | None:
        """The record when this variant was finished with KEY, else None.

        A variant that failed with an error is finished (the same inputs fail the same way); one whose
        worker died (a crash, the memory budget) is tried again.
        """
        record = read_json(self.record_file)
        ok = record is not None and record.get("key") == key and not record.get("retry")
        return record if ok else None

    def built(self, key: str) -> dict[str, Any] | None:
        build = read_json(self.build_file)
        return build if build is not None and build.get("key") == key else None

    def claim(self, key: str) -> None:
        """Start (or resume) work under KEY: files made under another key are removed first."""
        self.path.mkdir(parents=True, exist_ok=True)
        old = self.key_file.read_text().strip() if self.key_file.exists() else None
        if old != key:
            for child in self.path.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            write_text_atomic(self.key_file, key)


class RunDir:
    """RUN_DIR: a folder this tool made (marked by run.json), locked while a run uses it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def variant(self, name: str) -> VariantDir:
        return VariantDir(self.path / "variants" / name, name)

    @contextlib.contextmanager
    def open(self, recipe: Path) -> Iterator["RunDir"]:
        """Create or reuse the folder, hold its lock, and clear what a killed run left half-written."""
        marker = self.path / MARKER
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"run folder {self.path} is a file: choose another -o")
        if self.path.is_dir() and any(self.path.iterdir()) and not marker.exists():
            raise UserError(f"{self.path} already holds other files and is not an edgecompress run folder: "
                            "choose an empty or new folder with -o")
        self.path.mkdir(parents=True, exist_ok=True)
        # The lock is on the folder itself, so a finished run leaves no lock file behind.
        folder = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another edgecompress run is using {self.path}: wait for it or choose another -o") from None
            remove_partial_files(self.path)
            write_json(marker, {"edgecompress": __version__, "recipe": str(recipe)})
            yield self
        finally:
            os.close(folder)  # releases the lock


def remove_partial_files(root: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a kill interrupted (hidden names, by construction)."""
    removed = []
    for path in sorted(root.rglob(".*"), reverse=True):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def partial_files(root: Path) -> list[Path]:
    """Temporary files of unfinished atomic writes under ROOT (none after a clean run)."""
    return sorted(root.rglob(".*"))


@dataclass
class VariantKeys:
    """The cache keys of a run: the baseline's, and each variant's build and record (build plus measuring)."""

    baseline: str
    build: dict[str, str]
    record: dict[str, str]


def variant_keys(recipe: Recipe, variants: list[Variant]) -> VariantKeys:
    """Each variant's cache keys: only the inputs and settings it depends on are hashed into them."""
    data = recipe.data
    model, evaluation = file_digest(recipe.model), file_digest(data.eval)
    build, record = {}, {}
    for v in variants:
        s = v.settings
        settings = s.as_dict()
        if s.distill_student is not None:
            settings["distill_student"] = file_digest(s.distill_student)
        parts: dict[str, Any] = {"model": model, "eval": evaluation, "settings": settings}
        if data.eval_output is not None:  # scored on another output: other figures
            parts["eval_output"] = data.eval_output
        if s.uses_calibration:
            parts["calibration"] = [file_digest(data.calibration), data.calibration_samples, recipe.training.seed]
        if s.needs_training:
            parts["train"] = file_digest(data.train)
            parts["val"] = file_digest(data.val) if data.val else None
            parts["training"] = asdict(recipe.training)
        if s.max_drop is not None:  # the fallback decision is measured on val
            parts["val"] = file_digest(data.val)
        build[v.name] = make_key(parts)
        measuring: dict[str, Any] = {"build": build[v.name], "benchmark": asdict(recipe.benchmark),
                                     "devices": list(recipe.devices)}
        if recipe.measured:  # where a device is measured is part of its figures
            measuring["measured"] = {n: [a.on, a.remote_python] for n, a in recipe.measured.items()}
        record[v.name] = make_key(measuring)
    return VariantKeys(make_key({"baseline": model, "eval": evaluation, "eval_output": data.eval_output}), build, record)
