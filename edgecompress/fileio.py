"""Writing files atomically and guarding the user's existing files.

Every output goes to a temporary file in the destination folder and is renamed into place, so a failure
(or a kill) never leaves a half-written file and never damages an existing one.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
from pathlib import Path
from typing import Iterator

from edgecompress.errors import UserError


def check_output(path: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing file unless FORCE; make sure the folder exists."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"output {out} is a folder: give a file name, for example {out / 'model.tflite'}")
    if out.exists() and not force:
        raise UserError(f"output {out} already exists: choose another name or set force to overwrite it",
                        settings=("force",))
    if not out.parent.exists():
        raise UserError(f"output folder {out.parent} does not exist: create it first")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside PATH; on success rename it to PATH, on failure remove it.

    suffix defaults to PATH's own, since some writers (Keras) choose the format by extension.
    """
    final = Path(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=suffix if suffix is not None else final.suffix, dir=final.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file 0600; the finished file gets what any other file the user creates would get.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it, which races
    with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def gzip_size(data: bytes) -> int:
    """Size after gzip at the default level: what pruning and clustering shrink (zeros and repeats)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def path_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a file or, for a folder (SavedModel), of everything below it."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} {p} does not exist: check the path")
    return p
