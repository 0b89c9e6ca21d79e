"""Run untrusted work with limits: a pool of worker processes that can be abandoned.

Guest code (conditions, programmables, templates; later the Edge audience evaluation and connection calls)
must never run on the server's event loop: QuickJS checks its clock only every ~10,000 branches and never
inside a native call, so one catastrophically backtracking regular expression held the whole server for
good, and a pure-Python template has no preemption at all. Here every job runs in a worker process; a job
past its limit is killed with its worker (SIGKILL), a pre-started spare takes the worker's place at once,
and the caller gets :class:`WorkerTimeout` (or :class:`WorkerCrashed`) within about the limit. Other
workers keep serving meanwhile, and the caller's event loop only waits on a socket.

How it fits together, and why:

* **Processes, started with** ``subprocess`` (fork+exec in C, as the "spawn" start method does, so no
  ``fork()`` of the threaded server), running ``python -m flowlab.sandbox.workers``. Not
  ``multiprocessing``: its spawn and forkserver start methods re-import the host's ``__main__`` in each
  child, which under Streamlit is Streamlit's CLI.
* **One pool per process**, shared by every sandbox in it (tests start many): :func:`shared_pool`. Workers
  start lazily on first use; ``atexit`` stops them; a worker whose parent dies exits within a second.
* **A job is one round trip**: ``("module:function", args)``; the function runs in the worker as
  ``function(args, resolve)``. Code the job needs is named by content-hash *keys*; a worker compiles a key's
  payload once and keeps it (bounded LRU). Payloads travel only when a worker says it lacks them, so a
  steady stream of requests ships only per-request data.
* **Limits per step.** A job announces each step (``step(marker, limit_s)``) in a small shared memory
  block; the caller's timer reads it and kills the worker when the current step is past its limit. When
  the worker has used little CPU in that step (a starved machine, not a runaway), the deadline stretches up
  to 3 × the limit before the kill. :attr:`WorkerTimeout.marker` says which step was killed.
* **Memory.** Each worker has an address-space limit (``RLIMIT_AS``, its start-up size plus
  ``memory_limit_mb``), so a memory bomb fails in that worker (``MemoryError``, or its death), never in the
  server. A job that hit ``MemoryError`` asks for its worker to be replaced.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import importlib
import itertools
import mmap
import os
import pickle
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any, Final

from flowlab.errors import FlowLabError

__all__ = [
    "DEFAULT_JOB_LIMIT_S",
    "WorkerCrashed",
    "WorkerError",
    "WorkerPool",
    "WorkerTimeout",
    "shared_pool",
    "step",
]

#: The limit of a job's first step, until it announces another (seconds).
DEFAULT_JOB_LIMIT_S: Final = 2.0
_MARKER: Final = struct.Struct("dddd")  # step marker, started (monotonic), limit (s), CPU at start (s)
_CACHE_ENTRIES: Final = 512  # compiled payloads a worker keeps
_CACHE_BYTES: Final = 64 * 1024 * 1024  # ... and their approximate total payload size
_STRETCH: Final = 3.0  # a starved step may run this many times its limit before the kill
_FIRST_LOOK_S: Final = 0.05  # a job still running this long gets its step marker read (then at its deadline)
_STARTUP_LIMIT_S: Final = 30.0  # a job sent to a worker still starting may wait this long
# Workers import only the guest-code modules: empty parent packages skip flowlab's and flowlab.sandbox's
# __init__ (the HTTP client, FastAPI), which halves a worker's start-up time and memory.
# SIGINT is ignored first thing: a Ctrl-C or a Jupyter kernel's shutdown reaches the whole process group,
# and the parent decides its workers' fate (it closes their sockets: EOF ends them quietly).
_WORKER_START: Final = """
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
import importlib.util, sys, types
for name in ("flowlab", "flowlab.sandbox"):
    spec = importlib.util.find_spec(name)
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules[name] = package
from flowlab.sandbox.workers import _worker_main
_worker_main({}, {}, {})
"""
_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

Blob = tuple[str, Any]  # ("module:function" compiler, payload)
_Waiter = concurrent.futures.Future["_Worker"] | tuple[asyncio.AbstractEventLoop, asyncio.Future["_Worker"]]
Provider = Callable[[Sequence[str]], Mapping[str, Blob]]


class WorkerError(FlowLabError):
    """A job did not finish: its worker was killed or died. ``marker`` is the step it was in."""

    def __init__(self, message: str, *, marker: int, elapsed_s: float, limit_s: float) -> None:
        super().__init__(message)
        self.marker = marker
        self.elapsed_s = elapsed_s
        self.limit_s = limit_s


class WorkerTimeout(WorkerError):
    """The step ran past its limit; the worker was killed."""


class WorkerCrashed(WorkerError):
    """The worker died during the job (out of memory, a crash in native code)."""


class _JobFailed(FlowLabError):
    """The job's function raised; the worker is fine. Carries the remote exception's text."""


# ---- the worker side ----------------------------------------------------------------------------------

_marker_map: mmap.mmap | None = None


def step(marker: int, limit_s: float) -> None:
    """From a job: a new step starts, which may take ``limit_s`` seconds (a no-op outside a worker)."""
    if _marker_map is not None:
        _MARKER.pack_into(
            _marker_map, 0, float(marker), time.monotonic(), float(limit_s), time.process_time()
        )


def _resolve_callable(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    if not module.startswith("flowlab.") or not name:
        raise ValueError(f"not a flowlab function: {path!r}")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _worker_main(sock_fd: int, marker_fd: int, memory_limit_mb: int) -> None:
    """Serve jobs until the pool closes the socket (or the parent dies)."""
    global _marker_map
    import flowlab.sandbox.personalize.engine  # noqa: F401  (the usual job; imported before the memory limit)

    _marker_map = mmap.mmap(marker_fd, _MARKER.size)
    if memory_limit_mb > 0:
        size = _address_space()
        if size:
            limit = size + memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    parent = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), name="flowlab-worker-parent", daemon=True).start()
    conn = Connection(sock_fd)
    cache: OrderedDict[str, tuple[Any, int]] = OrderedDict()
    cached_bytes = 0
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        job_id, task, args, keys, blobs = pickle.loads(raw)
        step(-1, DEFAULT_JOB_LIMIT_S)
        recycle = False
        try:
            for key, (compiler, payload) in blobs.items():
                size = _approx_size(payload)
                cache[key] = (_resolve_callable(compiler)(payload), size)
                cached_bytes += size
            missing = [k for k in keys if k not in cache]
            if missing:
                reply: tuple[Any, ...] = ("missing", job_id, missing)
            else:
                for k in keys:
                    cache.move_to_end(k)
                result = _resolve_callable(task)(args, lambda key: cache[key][0])
                reply = ("ok", job_id, result)
        except MemoryError:
            reply, recycle = ("error", job_id, "MemoryError: the worker ran out of memory"), True
        except Exception as exc:  # the job's own failure: report it, keep serving
            reply = ("error", job_id, f"{type(exc).__name__}: {exc}")
        while len(cache) > _CACHE_ENTRIES or (cached_bytes > _CACHE_BYTES and len(cache) > 1):
            _, (_, size) = cache.popitem(last=False)
            cached_bytes -= size
        if reply[0] == "ok" and isinstance(reply[2], dict) and reply[2].get("recycle"):
            recycle = True  # the job saw MemoryError and handled it: still, start afresh
        try:
            conn.send_bytes(pickle.dumps((*reply, recycle), protocol=pickle.HIGHEST_PROTOCOL))
        except MemoryError:
            conn.send_bytes(pickle.dumps(("error", job_id, "MemoryError while sending the result", True)))
            recycle = True
        if recycle:
            return


def _approx_size(payload: Any) -> int:
    if isinstance(payload, (str, bytes)):
        return len(payload)
    return 1024


def _address_space() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


# ---- the pool side ------------------------------------------------------------------------------------


class _Worker:
    """One worker process, its socket and its step marker."""

    def __init__(self, memory_limit_mb: int) -> None:
        ours, theirs = socket.socketpair()
        marker_fd = os.memfd_create("flowlab-worker-marker")
        os.ftruncate(marker_fd, _MARKER.size)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_START.format(theirs.fileno(), marker_fd, memory_limit_mb)],
                pass_fds=(theirs.fileno(), marker_fd),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )  # fmt: skip
            self.marker = mmap.mmap(marker_fd, _MARKER.size)
        finally:
            theirs.close()
            os.close(marker_fd)
        self.conn = Connection(ours.detach())
        self.fd = self.conn.fileno()
        self.next_job = itertools.count(1)
        self.dead = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_marker(self) -> tuple[int, float, float, float]:
        marker, started, limit, cpu = _MARKER.unpack_from(self.marker, 0)
        return int(marker), started, limit, cpu

    def cpu_seconds(self) -> float | None:
        """CPU time the worker used so far (user + system), from /proc; None where that is unknown."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _TICKS
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        self.dead = True
        try:
            self.proc.kill()
        except OSError:
            pass

    def close(self) -> None:
        self.dead = True
        try:
            self.conn.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=2)
        try:
            self.marker.close()
        except (BufferError, ValueError):
            pass


class WorkerPool:
    """Worker processes for guest code: ``await pool.run(...)`` from any event loop, or ``run_sync``."""

    def __init__(self, size: int | None = None, *, memory_limit_mb: int = 512) -> None:
        self.size = size or max(2, min(4, os.cpu_count() or 2))
        self.memory_limit_mb = memory_limit_mb
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._spare: _Worker | None = None
        #: callers waiting for a worker, oldest first: a future of ``run_sync``'s thread, or an event loop's
        self._waiters: deque[_Waiter] = deque()
        self._started = False
        self._closed = False
        self._spawning = False
        #: How many workers were killed for a limit or found dead (for tests and the README).
        self.replaced = 0

    # -- lifecycle

    def start(self) -> None:
        """Start the workers and the spare (idempotent; called on first use)."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            workers = [_Worker(self.memory_limit_mb) for _ in range(self.size)]
            self._all.extend(workers)
            self._idle.extend(workers)
            self._spare = _Worker(self.memory_limit_mb)

    def close(self) -> None:
        """Stop every worker; pending callers get WorkerCrashed."""
        with self._lock:
            self._closed = True
            workers = [*self._all, *([self._spare] if self._spare else [])]
            self._all, self._idle, self._spare = [], [], None
            waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if isinstance(waiter, concurrent.futures.Future):
                waiter.cancel()
            else:
                _call_in(waiter[0], waiter[1].cancel)
        for worker in workers:
            worker.close()

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._all]

    # -- checkout

    def _acquire(self) -> concurrent.futures.Future[_Worker]:
        """A worker for a thread without an event loop (``run_sync``): a future it may block on."""
        if not self._started:
            self.start()
        future: concurrent.futures.Future[_Worker] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            if self._idle:
                future.set_result(self._idle.pop())
            else:
                self._waiters.append(future)
        return future

    def _acquire_async(self, loop: asyncio.AbstractEventLoop) -> _Worker | asyncio.Future[_Worker]:
        """An idle worker now, or a future of ``loop`` that a release resolves.

        An asyncio future, not a ``concurrent.futures`` one: a worker released on the same loop (the
        usual case under load, as every request's ``finally`` hands its worker to the next) resolves it
        directly, with no thread-safe wake-up through the loop's self-pipe.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            if self._idle:
                return self._idle.pop()
            future: asyncio.Future[_Worker] = loop.create_future()
            self._waiters.append((loop, future))
        return future

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if isinstance(waiter, concurrent.futures.Future):
                    if waiter.set_running_or_notify_cancel():
                        waiter.set_result(worker)
                        return
                    continue
                loop, future = waiter
                if future.done() or loop.is_closed():  # cancelled (a closed loop's waiters are gone)
                    continue
                if _running_loop() is loop:
                    future.set_result(worker)
                    return
                if _call_in(loop, self._hand_over, future, worker):
                    return
            if not self._closed:
                self._idle.append(worker)
                return
        worker.close()

    def _hand_over(self, future: asyncio.Future[_Worker], worker: _Worker) -> None:
        """On the waiter's loop: give it the worker, or pass the worker on when it stopped waiting."""
        if future.done():
            self._release(worker)
        else:
            future.set_result(worker)

    def _replace(self, worker: _Worker) -> None:
        """A worker was killed or died: the spare takes its place now; a new spare starts in the background."""
        worker.kill()
        with self._lock:
            self.replaced += 1
            if worker in self._all:
                self._all.remove(worker)
            spare, self._spare = self._spare, None
            if spare is not None:
                self._all.append(spare)
            start_thread = not self._spawning and not self._closed
            self._spawning = self._spawning or start_thread
        threading.Thread(target=worker.close, name="flowlab-worker-reap", daemon=True).start()
        if spare is not None:
            self._release(spare)
        if start_thread:
            threading.Thread(target=self._refill, name="flowlab-worker-spawn", daemon=True).start()

    def _refill(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed or (len(self._all) >= self.size and self._spare is not None):
                        return
                fresh = _Worker(self.memory_limit_mb)
                with self._lock:
                    closed = self._closed
                    as_worker = not closed and len(self._all) < self.size
                    if as_worker:
                        self._all.append(fresh)
                    elif not closed:
                        self._spare = fresh
                if closed:
                    fresh.close()
                elif as_worker:
                    self._release(fresh)
        finally:
            with self._lock:
                self._spawning = False

    # -- the deadline

    def _verdict(self, worker: _Worker, now: float) -> tuple[float, WorkerError | None]:
        """(seconds until the next look, or the error to kill with)."""
        marker, started, limit, cpu_start = worker.read_marker()
        elapsed = now - started
        if elapsed < limit:
            return limit - elapsed + 0.002, None
        if elapsed < _STRETCH * limit:
            cpu = worker.cpu_seconds()
            if cpu is not None and cpu - cpu_start < 0.5 * limit:  # starved, not running away: wait
                return min(limit / 2, _STRETCH * limit - elapsed) + 0.002, None
        message = f"the job's step ran {elapsed:.2f} s, past its {limit:g} s limit; its worker was killed"
        return 0.0, WorkerTimeout(message, marker=marker, elapsed_s=elapsed, limit_s=limit)

    def _crashed(self, worker: _Worker) -> WorkerCrashed:
        marker, started, limit, _ = worker.read_marker()
        code = worker.proc.poll()
        how = f"exit code {code}" if code is not None else "its connection broke"
        return WorkerCrashed(
            f"the worker died during the job ({how})",
            marker=marker,
            elapsed_s=time.monotonic() - started,
            limit_s=limit,
        )

    # -- running

    async def run(
        self, task: str, args: Any, *, keys: Sequence[str] = (), provide: Provider | None = None
    ) -> Any:
        """Run ``task(args, resolve)`` in a worker; WorkerTimeout/WorkerCrashed if it had to be abandoned."""
        loop = asyncio.get_running_loop()
        if not self._started:
            await loop.run_in_executor(None, self.start)
        checkout = self._acquire_async(loop)
        if isinstance(checkout, _Worker):  # an idle worker
            worker = checkout
        else:
            try:
                worker = await checkout
            except asyncio.CancelledError:  # a worker handed over as we were cancelled goes back
                if checkout.done() and not checkout.cancelled():
                    self._release(checkout.result())
                raise
        ok = False
        try:
            job_id = next(worker.next_job)
            blobs: Mapping[str, Blob] = {}
            while True:
                reply = await self._round_trip(loop, worker, (job_id, task, args, list(keys), blobs))
                if reply[0] == "missing" and provide is not None:
                    blobs = provide(reply[2])
                    continue
                break
            ok = not reply[3]  # a worker that asked to be recycled is exiting
        finally:
            if ok and not worker.dead:  # it answered, so it lives: no waitpid per job
                self._release(worker)
            else:
                self._replace(worker)
        return _unpack(reply)

    async def _round_trip(self, loop: asyncio.AbstractEventLoop, worker: _Worker, message: Any) -> Any:
        future: asyncio.Future[Any] = loop.create_future()
        timer: asyncio.TimerHandle | None = None

        def readable() -> None:
            if future.done():
                return
            try:
                os.set_blocking(worker.fd, True)  # uvloop's add_reader made it non-blocking: read it whole
                future.set_result(pickle.loads(worker.conn.recv_bytes()))
            except (EOFError, OSError):
                future.set_exception(self._crashed(worker))

        def check() -> None:
            nonlocal timer
            if future.done():
                return
            delay, error = self._verdict(worker, time.monotonic())
            if error is None:
                timer = loop.call_later(delay, check)
                return
            worker.kill()
            future.set_exception(error)

        step_now(worker)
        try:
            os.set_blocking(
                worker.fd, True
            )  # an idle worker reads at once; a big job must not fail with EAGAIN
            worker.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            raise self._crashed(worker) from None
        loop.add_reader(worker.fd, readable)
        timer = loop.call_later(_FIRST_LOOK_S, check)
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            loop.remove_reader(worker.fd)

    def run_sync(
        self, task: str, args: Any, *, keys: Sequence[str] = (), provide: Provider | None = None
    ) -> Any:
        """:meth:`run` for code without an event loop (blocks the calling thread, never the worker pool)."""
        worker = self._acquire().result()
        ok = False
        try:
            job_id = next(worker.next_job)
            blobs: Mapping[str, Blob] = {}
            while True:
                reply = self._round_trip_sync(worker, (job_id, task, args, list(keys), blobs))
                if reply[0] == "missing" and provide is not None:
                    blobs = provide(reply[2])
                    continue
                break
            ok = not reply[3]  # a worker that asked to be recycled is exiting
        finally:
            if ok and not worker.dead:  # it answered, so it lives: no waitpid per job
                self._release(worker)
            else:
                self._replace(worker)
        return _unpack(reply)

    def _round_trip_sync(self, worker: _Worker, message: Any) -> Any:
        step_now(worker)
        try:
            os.set_blocking(worker.fd, True)
            worker.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            raise self._crashed(worker) from None
        wait = _FIRST_LOOK_S
        while True:
            try:
                if worker.conn.poll(wait):
                    return pickle.loads(worker.conn.recv_bytes())
            except (EOFError, OSError):
                raise self._crashed(worker) from None
            wait, error = self._verdict(worker, time.monotonic())
            if error is not None:
                worker.kill()
                raise error


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _call_in(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> bool:
    """``callback(*args)`` on ``loop`` from any thread; False if that loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def step_now(worker: _Worker) -> None:
    """Reset a worker's marker from the pool side as a job is sent (the worker's own clock takes over)."""
    _MARKER.pack_into(worker.marker, 0, -1.0, time.monotonic(), _STARTUP_LIMIT_S, 0.0)


def _unpack(reply: Any) -> Any:
    kind, _, value, _ = reply
    if kind == "ok":
        return value
    if kind == "missing":
        raise _JobFailed(f"the worker lacks compiled code for {value} and nothing provides it")
    raise _JobFailed(str(value))


_shared: WorkerPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process's one pool (created on first use, stopped at exit)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                pool = WorkerPool()
                atexit.register(pool.close)
                _shared = pool
    return _shared
