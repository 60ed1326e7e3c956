"""The Executor interface over a Ray cluster: each item is one Ray task with declared resources.

What travels: an item that says which files it reads and writes (`files()`, see TaskFiles) has them
shipped, so workers need not share the driver's filesystem. The task receives the bytes of its inputs and
of what its write folder already holds (the stages a killed run finished), re-creates them under a scratch
folder on the worker at ROOT + the driver's absolute path, runs with its paths re-pointed there, and sends
back every file it wrote; the driver writes them at their real paths. Because a scratch path is ROOT + the
driver's path, a path the worker reports (in its result or in a JSON/log file it wrote) maps back by
dropping ROOT. The cache stays content-addressed on the driver, so a rerun reuses finished variants
whichever node built them.

Failures: an error raised by the item's function is final (Ray does not retry it) and keeps its
traceback; a worker that dies (killed, out of memory, node lost) is retried up to `retries` times by
Ray, then reported as crashed. Ctrl-C (or any exit from `map`) cancels the tasks still outstanding.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edgecompress.errors import UserError
from edgecompress.pipeline.executor import Emit, Outcome, R, TaskFiles, default_memory_mb, error_summary

_POLL_SECS = 0.25
_TEXT_SUFFIXES = (".json", ".txt", ".log")  # files whose paths are mapped back; models are binary
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its tracebacks


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs Ray: pip install 'edgecompress[ray]'") from None
    return ray


class RayExecutor:
    """Ray tasks, `jobs` CPUs' worth at once on a local instance, or as many as a cluster schedules.

    address None starts a private local instance (head on 127.0.0.1, `jobs` CPUs) for this run and stops it
    afterwards; "auto" or "ray://HOST:PORT" joins an existing cluster and leaves it running.
    """

    def __init__(self, jobs: int = 1, address: str | None = None, memory_mb: int | None = None,
                 cpus_per_task: float = 1.0, retries: int = 2) -> None:
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.jobs = jobs
        self.address = address
        self.memory_mb = memory_mb  # None: each task's share of this machine's RAM, within the largest node's
        self.cpus_per_task = cpus_per_task
        self.retries = retries
        self.where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"

    def __enter__(self) -> "RayExecutor":
        """Connect once for a whole run (every map() of it shares the instance); __exit__ disconnects."""
        self._owned = self._connect(import_ray())
        return self

    def __exit__(self, *exc: Any) -> None:
        if getattr(self, "_owned", False):
            import_ray().shutdown()
            self._owned = False

    def map(
        self, fn: Callable[[Any, Emit], R], items: Sequence[Any],
        on_event: Callable[[int, str], None] | None = None,
    ) -> Iterator[Outcome[R]]:
        ray = import_ray()
        started = self._connect(ray)  # False inside a `with` block, which already connected
        pending: dict[Any, int] = {}
        events = None
        try:
            from ray.util.queue import Queue

            memory_mb = self._task_memory_mb(ray)
            events = Queue(actor_options={"num_cpus": 0})
            gpus = ray.cluster_resources().get("GPU", 0) > 0
            # TensorFlow sizes its thread pools to the machine, not to the CPUs a task declared: without this,
            # a 1-CPU task keeps every core busy and more declared CPUs add little
            n = str(max(1, round(self.cpus_per_task)))
            threads = {"env_vars": {"TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": n}}
            remote = ray.remote(_run_remote)
            for index, item in enumerate(items):
                options = {"num_cpus": self.cpus_per_task, "memory": memory_mb * 2**20,
                           "max_retries": self.retries, "retry_exceptions": False, "runtime_env": threads}
                if gpus and getattr(item, "trains", False):
                    options["num_gpus"] = 1
                ref = remote.options(**options).remote(fn, item, _pack(item), index, events)
                pending[ref] = index
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_SECS)
                _drain(events, on_event)
                for ref in done:
                    index = pending.pop(ref)
                    yield self._outcome(ray, ref, index)
            _drain(events, on_event)
        finally:
            for ref in pending:  # interrupted (Ctrl-C, or the caller stopped reading): cancel the rest
                ray.cancel(ref, force=True)
            if events is not None:
                ray.kill(events.actor)
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        """Start or join Ray; True when this call connected (and must disconnect: ray.shutdown() stops a
        local instance it started, and only detaches from a cluster)."""
        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private loopback instance needs no token
        if self.address is None:
            ray.init(num_cpus=self.jobs, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, logging_level="ERROR")
            return True
        try:
            ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
        except ConnectionError as exc:
            raise UserError(f"cannot reach the Ray cluster at {self.address}: {exc} "
                            "(start it with `ray start --head`, or pass the right --address)") from None
        return True

    def _task_memory_mb(self, ray: Any) -> int:
        """The memory each task declares. By default a task's share of a node's memory for its share of the
        node's CPUs (more would keep CPUs idle: Ray runs no more tasks than fit in memory); an explicit budget
        over what the largest node offers is refused, since Ray would wait for ever for such a node."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        largest = max((r.get("memory", 0) for r in nodes), default=0) // 2**20
        if self.memory_mb is None:
            share = max(r.get("memory", 0) * self.cpus_per_task / max(r.get("CPU", 1), 1) for r in nodes) // 2**20
            return int(min(default_memory_mb(self.jobs), share))
        if self.memory_mb > largest:
            raise UserError(f"worker_memory_mb {self.memory_mb} is more than any Ray node offers ({largest} MB): "
                            f"give at most {largest}", settings=("worker_memory_mb",))
        return self.memory_mb

    def _outcome(self, ray: Any, ref: Any, index: int) -> Outcome:
        try:
            value, files = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the function raised: final, with its traceback
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            return Outcome(index, error=error_summary(cause), detail=_ANSI.sub("", str(exc)))
        except ray.exceptions.TaskCancelledError:
            return Outcome(index, error="the task was cancelled", crashed=True)
        except ray.exceptions.RayError as exc:  # the worker or its node died, after Ray's retries
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Outcome(index, error=f"Ray worker died ({type(exc).__name__}): {first}", detail=str(exc),
                           crashed=True)
        _unpack(files)
        return Outcome(index, value=value)


def _drain(events: Any, on_event: Callable[[int, str], None] | None) -> None:
    size = events.qsize()
    if size and on_event is not None:
        for index, text in events.get_nowait_batch(size):
            on_event(index, text)


# -------------------------------------------------------------------------------- shipping files both ways


def _files_of(item: Any) -> TaskFiles | None:
    method = getattr(item, "files", None)
    return method() if callable(method) else None


def _read_tree(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {str(f): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}
    return {str(path): path.read_bytes()} if path.is_file() else {}


def _pack(item: Any) -> dict[str, Any] | None:
    """The bytes of the item's inputs and of what its write targets already hold, keyed by driver path."""
    spec = _files_of(item)
    if spec is None:
        return None
    blobs: dict[str, bytes] = {}
    for path in (*spec.inputs, *spec.writes):
        blobs.update(_read_tree(Path(path)))
    return {"roots": [str(p) for p in (*spec.inputs, *spec.writes)], "writes": [str(p) for p in spec.writes],
            "blobs": blobs}


def _unpack(files: dict[str, bytes] | None) -> None:
    """Write what a worker sent back at its driver paths (atomically: temporary name, then rename)."""
    for name, data in (files or {}).items():
        target = Path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.ray-partial")
        tmp.write_bytes(data)
        os.replace(tmp, target)


def _mirror(root: Path, path: Path) -> Path:
    return root / str(path).lstrip("/")


def _relocated(value: Any, roots: Sequence[Path], scratch: Path) -> Any:
    """VALUE with every Path at or under one of ROOTS re-pointed into SCRATCH (dataclasses walked)."""
    if isinstance(value, Path):
        return _mirror(scratch, value) if any(value == r or r in value.parents for r in roots) else value
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: _relocated(getattr(value, f.name), roots, scratch)
                                 for f in fields(value) if f.init})
    if isinstance(value, (list, tuple)):
        return type(value)(_relocated(v, roots, scratch) for v in value)
    if isinstance(value, dict):
        return {k: _relocated(v, roots, scratch) for k, v in value.items()}
    return value


def _unmirrored(value: Any, scratch: str) -> Any:
    """VALUE (JSON-like) with scratch paths turned back into driver paths."""
    if isinstance(value, str):
        return value.replace(scratch, "")
    if isinstance(value, (list, tuple)):
        return type(value)(_unmirrored(v, scratch) for v in value)
    if isinstance(value, dict):
        return {k: _unmirrored(v, scratch) for k, v in value.items()}
    return value


def _run_remote(fn: Callable[[Any, Emit], Any], item: Any, shipped: dict[str, Any] | None, index: int,
                events: Any) -> tuple[Any, dict[str, bytes] | None]:
    """The Ray task: materialise the shipped files, run FN, and return (value, files written)."""

    def emit(text: str) -> None:
        events.put_nowait((index, text))

    if shipped is None:
        return fn(item, emit), None
    scratch = Path(tempfile.mkdtemp(prefix="edgecompress-ray-"))
    try:
        for name, data in shipped["blobs"].items():
            target = _mirror(scratch, Path(name))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for write in shipped["writes"]:  # the folders the task writes into exist on the driver: here too
            _mirror(scratch, Path(write)).parent.mkdir(parents=True, exist_ok=True)
        roots = [Path(r) for r in shipped["roots"]]
        value = fn(_relocated(item, roots, scratch), emit)
        prefix = str(scratch)
        back: dict[str, bytes] = {}
        for write in shipped["writes"]:
            for name, data in _read_tree(_mirror(scratch, Path(write))).items():
                if Path(name).suffix in _TEXT_SUFFIXES:
                    data = data.replace(prefix.encode(), b"")
                back[name[len(prefix):]] = data
        return _unmirrored(value, prefix), back
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

