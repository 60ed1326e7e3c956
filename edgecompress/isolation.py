"""Running work where a native crash cannot take the tool down: a child process.

TensorFlow's and the runtimes' native code can die by a signal (seen: TF 2.21's oneDNN kernels segfault while
training a 1x1 stride-2 convolution). In a child, that death becomes one line naming the stage the child had
reached and the signal, instead of exit 139 with nothing said. The child reports its stages through
progress.stage; its return value and its exceptions (UserErrors with their settings) come back pickled.
"""
from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import pickle
import signal
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator

from edgecompress import progress
from edgecompress.errors import NativeCrash, UserError

# Test hook: "NAME:SIGNAL" (b.tflite:SIGSEGV) makes a child that runs a file whose name contains NAME (the
# temporary file an output is written to, too) send itself SIGNAL once the model is loaded, the way a runtime
# crashes on a bad file; tests prove the isolation with it.
TEST_SIGNAL_ENV = "EDGECOMPRESS_TEST_CHILD_SIGNAL"


def run_isolated(fn: Callable[..., Any], *args: Any, what: str, debug: bool = False,
                 env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) in a child process: its result, or its exception re-raised here; a death by a signal
    is a NativeCrash naming WHAT, the last stage reported and the signal. DEBUG: the child prints tracebacks.
    ENV: variables set for the child only. FN must be importable by name (a module-level function).

    The child is `python -m edgecompress.isolation`, not a multiprocessing spawn: a spawn re-runs the caller's
    main script, which breaks scripts without a main guard and code read from stdin."""
    receive_fd, send_fd = os.pipe()
    with _environment(env or {}):
        proc = subprocess.Popen([sys.executable, "-m", "edgecompress.isolation", str(send_fd)],
                                stdin=subprocess.PIPE, pass_fds=(send_fd,))
    os.close(send_fd)  # so that the child's death reads as EOF here
    receive = Connection(receive_fd, writable=False)
    stage = None
    try:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a child that died at start says so below
            proc.stdin.write(pickle.dumps((fn, args, kwargs, debug)))
            proc.stdin.close()
        while True:
            try:
                kind, payload = receive.recv()
            except EOFError:
                break
            if kind == "stage":
                stage = payload
            elif kind in ("stdout", "stderr"):  # the child's Python-level output, written where ours goes
                stream = sys.stdout if kind == "stdout" else sys.stderr
                stream.write(payload)
                stream.flush()
            elif kind == "ok":
                return payload
            else:
                raise payload
    finally:
        receive.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    raise NativeCrash(_death(proc.returncode, what, stage))


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def crash_for_tests(model: str | os.PathLike) -> None:
    """Send this process the signal TEST_SIGNAL_ENV names for MODEL's file name (nothing when unset)."""
    name, _, sig = os.environ.get(TEST_SIGNAL_ENV, "").rpartition(":")
    if name and name in os.path.basename(model):
        os.kill(os.getpid(), getattr(signal, sig))


def _death(code: int | None, what: str, stage: str | None) -> str:
    where = f" in its {stage} stage" if stage else ""
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        return (f"{what} crashed in native code{where} ({name}): a TensorFlow or runtime defect, not your input; "
                "rerun with --debug for the Python stack where it died, and report it with the model")
    return f"{what} ended{where} with exit code {code} before reporting a result"


def _child(send: Any, fn: Callable[..., Any], args: tuple, kwargs: dict, debug: bool) -> None:
    if debug:
        faulthandler.enable()  # the Python stack of a native crash, on stderr
    progress.on_stage(lambda name: send.send(("stage", name)))
    # Progress and notes go through the parent's streams, so that whoever captures those (a test, a log) gets
    # them; native libraries still write to the inherited file descriptors.
    sys.stdout, sys.stderr = _Forward(send, "stdout"), _Forward(send, "stderr")
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        if debug:
            traceback.print_exc()
        send.send(("error", exc if _picklable(exc) else RuntimeError(f"{type(exc).__name__}: {exc}")))
    else:
        send.send(("ok", result))
    finally:
        send.close()


class _Forward(io.TextIOBase):
    """A text stream whose writes are sent to the parent as (KIND, text)."""

    def __init__(self, send: Any, kind: str) -> None:
        self._send, self._kind = send, kind

    def writable(self) -> bool:
        return True

    def write(self, text: str | bytes) -> int:  # click writes bytes to streams it takes for binary ones
        if text:
            self._send.send((self._kind, text.decode(errors="replace") if isinstance(text, bytes) else text))
        return len(text)


def _picklable(exc: BaseException) -> bool:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send a summary instead
        return False
    return isinstance(exc, (UserError, KeyboardInterrupt)) or type(exc).__module__ == "builtins"


def _main(send_fd: int) -> None:
    """The child: the request (fn, args, kwargs, debug) pickled on stdin, messages to the parent on SEND_FD."""
    fn, args, kwargs, debug = pickle.load(sys.stdin.buffer)
    _child(Connection(send_fd, readable=False), fn, args, kwargs, debug)


if __name__ == "__main__":
    _main(int(sys.argv[1]))
