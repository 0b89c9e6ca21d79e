"""Run the sandbox on loopback: in a background thread (app, CLI, notebooks, tests) or in the foreground.

``SandboxServer`` binds its socket before the thread starts, so ``url`` is known and connectable at once
(port 0 picks a free port); ``stop()`` ends it, cutting hung fault requests after one second. Bound to
anything but loopback, both print a warning on stderr saying what is exposed (``access.exposure_warning``).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import uvicorn
from pydantic import SecretStr

from flowlab.sandbox.access import exposure_warning
from flowlab.sandbox.app import SandboxApp, create_app
from flowlab.sandbox.faults import ResetConnection
from flowlab.sandbox.personalize.importer import report_table

__all__ = ["SandboxServer", "serve", "serve_forever"]


class _QuietResets(logging.Filter):
    """The ``reset`` fault raises on purpose; keep that out of the server log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ResetConnection)


logging.getLogger("uvicorn.error").addFilter(_QuietResets())


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port}: {exc.strerror}; try another --port (0 picks a free one)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _return_large_buffers_to_the_os() -> None:
    """Pin glibc's mmap threshold at 128 KiB, so request-sized buffers are mapped and unmapped.

    glibc raises the threshold after the first large free, after which 1 MiB request bodies come from the
    heap, where long-lived traces pin them: 300 requests of 1 MiB grew the server by 64 KiB each (by
    ~17 KiB, the same as small requests, with the threshold pinned). Only in the sandbox's own process.
    """
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD; a no-op where mallopt is not glibc's
    except (AttributeError, OSError):
        return


def _warn_if_exposed(app: SandboxApp) -> None:
    warning = exposure_warning(app.access.host, has_token=app.access.token is not None)
    if warning:
        sys.stderr.write(warning)
        sys.stderr.flush()


def _config(app: SandboxApp, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,  # nothing sits in front of the sandbox; saves a middleware pass per request
        lifespan="off",
        timeout_graceful_shutdown=1,
        backlog=2048,
    )


class SandboxServer:
    """A sandbox tenant served by uvicorn in a daemon thread.

    >>> with SandboxServer() as sandbox:                                      # doctest: +SKIP
    ...     print(sandbox.url, sandbox.client_key)
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: str | float | None = None,
        faults: str | None = None,
        seed: int | None = None,
        app: SandboxApp | None = None,
        log_level: str = "warning",
        admin_token: str | SecretStr | None = None,
        replay: Sequence[str | Path] = (),
        replay_latency: bool = False,
        load: Sequence[str | Path] = (),
        connections_to: str | None = None,
        connection_routes: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app or create_app(
            latency_ms=latency_ms, faults=faults, seed=seed, host=host, admin_token=admin_token,
            replay=replay, replay_latency=replay_latency, load=load, connections_to=connections_to,
            connection_routes=connection_routes,
        )  # fmt: skip
        self.app.access.host = host
        #: why the replay its starter asked for is off (a file that is not a run store); "" if none
        self.replay_problem = ""
        self._host = host
        self._port = port
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def client_key(self) -> str:
        return self.app.tenant.client_key

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the sandbox is not running: call start() first")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        if self._thread is not None:
            return self
        self._sock = _bind(self._host, self._port)
        _warn_if_exposed(self.app)
        self._server = uvicorn.Server(_config(self.app, self._log_level))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="flowlab-sandbox", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start on {self.url}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self.app.engine.connections.close_from_outside()  # on the server's loop, while it still runs
            self._server.should_exit = True
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None
        _forget_endpoints()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _forget_endpoints() -> None:
    """Let a stopped sandbox be freed: FastAPI memoizes facts about endpoint callables in module-level LRU
    caches (4,096 entries, keyed by the callable), and the sandbox's endpoints close over its engine, so each
    stopped sandbox stayed alive with its whole tenant (a test process grew to ~4 GB). Clearing costs the
    live apps one re-check per route."""
    from fastapi.dependencies import models

    for value in vars(models).values():
        clear = getattr(value, "cache_clear", None)
        if callable(clear):
            clear()


def serve(**kwargs: Any) -> SandboxServer:
    """Start a sandbox in the background and return it (``.url``, ``.client_key``, ``.stop()``)."""
    return SandboxServer(**kwargs).start()


def serve_forever(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    latency_ms: str | None = None,
    faults: str | None = None,
    announce: Callable[[str], None] | None = None,
    admin_token: str | SecretStr | None = None,
    replay: Sequence[str | Path] = (),
    replay_latency: bool = False,
    load: Sequence[str | Path] = (),
    connections_to: str | None = None,
    connection_routes: Mapping[str, str] | None = None,
) -> None:
    """Serve in the foreground until Ctrl+C (``python -m flowlab sandbox``); ``announce(url)`` once bound.

    ``replay``: run stores to answer callFlows from (``replay.py``); read before the port is bound, so a
    file that is not a run store stops the command with a ``RunStoreError`` and nothing listens.
    ``load``: Sitecore export folders to import first (importer.py); their reports go to stderr.
    """
    app = create_app(
        latency_ms=latency_ms, faults=faults, host=host, admin_token=admin_token,
        replay=replay, replay_latency=replay_latency, load=load, connections_to=connections_to,
        connection_routes=connection_routes,
    )  # fmt: skip
    for folder, report in zip(load, app.load_reports, strict=True):
        sys.stderr.write(f"imported {folder}:\n{report_table(report.to_json())}\n")
    sock = _bind(host, port)
    # The demo data lives as long as the process: keep it out of every garbage collection. Only here,
    # where the sandbox owns the process; the in-thread sandbox never changes its host's GC.
    gc.freeze()
    _return_large_buffers_to_the_os()
    if announce is not None:
        announce(f"http://{host}:{sock.getsockname()[1]}")
    if app.replay.active:
        replay_info = app.replay.describe()
        sys.stderr.write(
            f"  replaying {replay_info['guests']} recorded guests of {', '.join(replay_info['flowIds'])} "
            f"from {', '.join(r['file'] for r in replay_info['runs'])}; unrecorded requests get a 404\n"
        )
    _warn_if_exposed(app)
    server = uvicorn.Server(_config(app, "info"))
    server.run(sockets=[sock])
