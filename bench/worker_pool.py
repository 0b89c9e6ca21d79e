"""What the guest-code worker pool costs the sandbox's event loop: CPU per request, in-process, no HTTP.

The server's throughput is bound by its one event-loop thread, so the pool's cost is the CPU that thread
spends per request with guest code in workers vs inline (before issue #8). CPU time, not wall time or
req/s: on a shared, loaded machine wrk's throughput swings by 2x between runs (bare FastAPI: 4,000-8,100
req/s), while the loop's CPU per request moves by ~10 %. Runs alternate the two modes.

    python bench/worker_pool.py [--requests 6000] [--rounds 3]

Prints, per mode, the loop's CPU per request and its parts: plan (validate, guest, bucket), the pickled
job and reply and the socket, finish (trace, tracking record), and the garbage collector's share.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pickle
import sys
import time
import types
from collections import defaultdict
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import uvloop

import flowlab.sandbox.personalize.engine as engine_module
import flowlab.sandbox.workers as workers_module
from flowlab.sandbox.personalize.engine import Engine
from flowlab.sandbox.personalize.store import Tenant

PARTS: defaultdict[str, float] = defaultdict(float)
GC: dict[str, float] = {"runs": 0, "s": 0.0, "started": 0.0}


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            PARTS[name] += time.thread_time() - started

    return wrapper


def on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        GC["started"] = time.perf_counter()
    else:
        GC["runs"] += 1
        GC["s"] += time.perf_counter() - GC["started"]


def instrument() -> None:
    """Time the synchronous parts (measurement only: the wrappers cost ~1 us each)."""
    Engine._plan = timed("plan", Engine._plan)  # type: ignore[method-assign]
    Engine._finish = timed("finish", Engine._finish)  # type: ignore[method-assign]
    engine_module.run_stage = timed("stage (inline)", engine_module.run_stage)
    workers_module.pickle = types.SimpleNamespace(  # type: ignore[assignment]
        dumps=timed("pickle", pickle.dumps), loads=timed("pickle", pickle.loads), HIGHEST_PROTOCOL=5
    )
    Connection.send_bytes = timed("socket", Connection.send_bytes)  # type: ignore[method-assign]
    Connection.recv_bytes = timed("socket", Connection.recv_bytes)  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)


def run(engine: Engine, mode: str, requests: int, concurrency: int = 50) -> None:
    tenant = engine.tenant
    body = {"clientKey": tenant.client_key, "channel": "WEB", "pointOfSale": "lumen/de",
            "friendlyId": "checkout_ab_test", "params": {}}  # fmt: skip
    engine.guest_code = mode  # type: ignore[assignment]
    sent = 0

    async def client() -> None:
        nonlocal sent
        while sent < requests:
            sent += 1
            await engine.execute_async({**body, "browserId": f"{mode}-{sent}-{time.perf_counter_ns()}"})

    async def main() -> None:
        await asyncio.gather(*(client() for _ in range(concurrency)))

    uvloop.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    instrument()
    engine = Engine(Tenant())
    for mode in ("workers", "inline"):
        run(engine, mode, 1000)  # warm up: workers started, code compiled
    gc.freeze()  # as the sandbox server does
    print(f"{args.requests:,} requests per row, 50 concurrent, one event loop; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print("loop CPU per request (us), and its parts:")
    totals: dict[str, list[float]] = {"workers": [], "inline": []}
    for _ in range(args.rounds):
        for mode in ("workers", "inline"):
            PARTS.clear()
            GC.update(runs=0, s=0.0)
            started = time.process_time()
            run(engine, mode, args.requests)
            per = 1e6 / args.requests
            total = (time.process_time() - started) * per
            totals[mode].append(total)
            parts = ", ".join(f"{name} {seconds * per:.0f}" for name, seconds in PARTS.items())
            print(f"  {mode:8} {total:5.0f}   {parts}, gc {GC['s'] * per:.0f} ({GC['runs']:.0f} runs)")
    best = {mode: min(values) for mode, values in totals.items()}
    print(f"best of {args.rounds}: workers {best['workers']:.0f} us, inline {best['inline']:.0f} us per request: "
          f"the pool costs the loop {best['workers'] - best['inline']:.0f} us "
          f"(x{best['workers'] / best['inline']:.2f})")  # fmt: skip
    engine.pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
