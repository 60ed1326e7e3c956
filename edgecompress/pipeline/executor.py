"""Running a sweep's variants in parallel, behind one small interface.

The interface (Executor) is one method:

    map(fn, items, on_event) -> iterator of Outcome, in completion order

`fn(item, emit)` is a module-level (picklable) function run in a worker; `emit(text)` sends a short progress
event to the parent, which passes it to `on_event(index, text)`. An item whose fn raises, or whose worker
dies (native crash, out of memory), gives an Outcome with `error` set; the other items go on.

LocalExecutor is the implementation for one machine; RayExecutor (ray_executor.py) runs the same items as
Ray tasks on a cluster, shipping the files an item declares through `files()` (TaskFiles). Nothing else in
the pipeline knows which executor runs it.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Protocol, Sequence, TypeVar

from edgecompress.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

Emit = Callable[[str], None]

# How often the parent wakes to check the workers' memory while nothing else happens.
_POLL_SECS = 0.25


@dataclass
class Outcome(Generic[R]):
    index: int  # position of the item in the sequence given to map()
    value: R | None = None
    error: str | None = None  # one line for the report; None when fn returned
    detail: str | None = None  # the traceback, for --debug and the record
    crashed: bool = False  # the worker died (signal, memory budget): worth retrying, unlike a raised error


@dataclass(frozen=True)
class TaskFiles:
    """The files an item reads (INPUTS) and the files or folders it writes (WRITES, whose current content it
    may reuse): what an executor without a shared filesystem ships to the worker and back."""

    inputs: tuple[Path, ...]
    writes: tuple[Path, ...]


def error_summary(exc: BaseException) -> str:
    """One line for the report: a UserError's message already says what is wrong and how to fix it; others
    need their type."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return first if isinstance(exc, UserError) else f"{type(exc).__name__}: {first}"


class Executor(Protocol):
    """Also a context manager: a run holds it open (an executor with a cluster connects once for the run)."""

    jobs: int
    where: str  # for the report: what ran the builds

    def __enter__(self) -> "Executor":
        ...

    def __exit__(self, *exc: Any) -> None:
        ...

    def map(
        self, fn: Callable[[Any, Emit], R], items: Sequence[Any],
        on_event: Callable[[int, str], None] | None = None,
    ) -> Iterator[Outcome[R]]:
        ...


def default_memory_mb(jobs: int) -> int:
    """Each worker's share of 80% of the machine's RAM."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return max(512, int(total * 0.8 / max(1, jobs)))


class LocalExecutor:
    """Worker processes on this machine: at most `jobs` at once, one fresh process per item.

    A fresh (spawned) process per item keeps memory bounded: TensorFlow never frees what a training run
    took, so a long-lived worker would grow variant after variant. Each worker's resident memory (with its
    children) is also watched against `memory_mb`: over it, the worker is killed and its item fails with a
    clear error, instead of the machine swapping or the OOM killer taking the whole run. (RLIMIT_AS does not
    work here: TensorFlow reserves gigabytes of address space it never touches, and hangs when refused.)
    Workers die with the parent (PR_SET_PDEATHSIG), so a killed run leaves no worker writing behind it.
    """

    def __init__(self, jobs: int = 1, memory_mb: int | None = None) -> None:
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.jobs = jobs
        self.memory_mb = memory_mb or default_memory_mb(jobs)
        self.where = f"{jobs} local worker process{'es' if jobs > 1 else ''}"

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass  # each map() starts and reaps its own workers

    def map(
        self, fn: Callable[[Any, Emit], R], items: Sequence[Any],
        on_event: Callable[[int, str], None] | None = None,
    ) -> Iterator[Outcome[R]]:
        ctx = multiprocessing.get_context("spawn")  # fork would copy a parent's TensorFlow threads
        waiting = list(enumerate(items))
        running: dict[Any, _Worker] = {}
        try:
            while waiting or running:
                while waiting and len(running) < self.jobs:
                    index, item = waiting.pop(0)
                    parent_end, child_end = ctx.Pipe(duplex=False)
                    # not daemonic: a worker may start its own children (the benchmark measures in a child)
                    proc = ctx.Process(target=_child, args=(child_end, fn, item, os.getpid()))
                    proc.start()
                    child_end.close()  # so the parent sees EOF when the child exits
                    running[parent_end] = _Worker(index, proc)
                for conn in multiprocessing.connection.wait(list(running), timeout=_POLL_SECS):
                    outcome = self._receive(conn, running[conn], on_event)  # type: ignore[arg-type]
                    if outcome is not None:
                        running.pop(conn).finish()
                        conn.close()  # type: ignore[union-attr]
                        yield outcome
                for conn, worker in list(running.items()):
                    used = _tree_rss_mb(worker.proc.pid)
                    if used > self.memory_mb:
                        worker.proc.kill()
                        worker.killed_for_memory = used
        finally:
            for worker in running.values():
                worker.proc.kill()
                worker.finish()

    def _receive(self, conn: Any, worker: "_Worker", on_event: Callable[[int, str], None] | None) -> Outcome | None:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            worker.finish()
            return Outcome(worker.index, error=worker.death_message(self.memory_mb), crashed=True)
        if kind == "event":
            if on_event is not None:
                on_event(worker.index, payload)
            return None
        if kind == "ok":
            return Outcome(worker.index, value=payload)
        summary, detail = payload
        return Outcome(worker.index, error=summary, detail=detail)


@dataclass
class _Worker:
    index: int
    proc: Any
    killed_for_memory: float | None = None

    def finish(self) -> None:
        self.proc.join(timeout=10)

    def death_message(self, memory_mb: int) -> str:
        if self.killed_for_memory is not None:
            return (f"worker used {self.killed_for_memory:.0f} MB, over its {memory_mb} MB budget, and was stopped: "
                    "run fewer jobs at once or give each worker more memory")
        code = self.proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return f"worker process was killed by {name} (a crash in native code, or out of memory)"
        return f"worker process exited with code {code} before reporting a result"


def _child(conn: Any, fn: Callable[[Any, Emit], Any], item: Any, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle

    def emit(text: str) -> None:
        conn.send(("event", text))

    try:
        result = fn(item, emit)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes the item's recorded error
        conn.send(("error", (error_summary(exc), traceback.format_exc())))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this worker when its parent dies (a killed run must not keep writing)."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the call above took effect
        os._exit(1)


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of PID and its descendants, in MB (0 when it has gone)."""
    total_kb = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        proc = Path(f"/proc/{p}")
        try:
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
            for task in (proc / "task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total_kb / 1024
