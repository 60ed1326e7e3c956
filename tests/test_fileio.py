"""Files edgecompress writes follow the user's umask, as any other program's do (issue 18: they were 0600)."""
from __future__ import annotations

import os
import stat

import pytest

from edgecompress.fileio import current_umask, write_bytes_atomic


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        path = write_bytes_atomic(tmp_path / "model.tflite", b"data")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]  # no temporary file left beside it
