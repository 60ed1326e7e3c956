"""Silencing what native libraries print on file descriptor 2 (TensorFlow's CUDA probes, the converter's
MLIR diagnostics, LiteRT's "Created ... XNNPACK delegate" line), so users see only edgecompress's own lines.

Python-level writes to sys.stderr are not affected only if they are flushed before; the block is kept short.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator


@contextlib.contextmanager
def quiet_native_stderr(replay_on_error: bool = True) -> Iterator[None]:
    """Send fd 2 to a temporary file for the block; on an exception, replay what was captured if asked
    (callers that turn the exception into their own one-line message pass replay_on_error=False)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            if replay_on_error:
                sink.seek(0)
                sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
