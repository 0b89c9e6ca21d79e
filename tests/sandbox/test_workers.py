"""Guest-code workers belong to their parent: a Ctrl-C or a kernel shutdown leaves no traceback and no worker.

A Jupyter kernel that ran a sandbox sends SIGINT to its whole process group on shutdown: before issue #8's
fix each worker printed a ``KeyboardInterrupt`` traceback from ``conn.recv_bytes()``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from flowlab.sandbox.workers import WorkerPool


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_sigint_to_the_process_group_leaves_no_traceback_and_no_worker(tmp_path: Path) -> None:
    log = tmp_path / "sandbox.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowlab", "sandbox", "--port", "0"],
            stderr=stderr, stdout=subprocess.DEVNULL, start_new_session=True,  # its own process group
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            match = re.search(r"Flow Lab sandbox on http://[^:]+:(\d+)", log.read_text())
            url = f"http://127.0.0.1:{match.group(1)}" if match else None
            time.sleep(0.05)
        assert url, log.read_text()
        info = httpx.get(f"{url}/sandbox/info", timeout=10).json()
        body = {"clientKey": info["clientKey"], "channel": "WEB", "pointOfSale": "lumen/de",
                "browserId": "sigint", "friendlyId": "checkout_ab_test"}  # fmt: skip
        assert httpx.post(f"{url}/v2/callFlows", json=body, timeout=30).status_code == 200
        workers = _children(process.pid)
        assert len(workers) >= 2, workers  # the pool and its spare
        time.sleep(0.3)  # every worker is idle in recv_bytes(), where the traceback came from
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.05)
        text = log.read_text()
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        assert not [pid for pid in workers if _alive(pid)], "workers outlived the sandbox"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_waiters_on_two_loops_and_a_thread_share_one_worker_and_cancelled_ones_leak_nothing() -> None:
    """Checkout hands a released worker straight to a waiter of the same loop; others get it thread-safely."""
    pool = WorkerPool(size=1)
    task = "flowlab.sandbox.limits:check_depth"  # check_depth(0, resolve): returns None at once
    done: list[str] = []

    async def callers(name: str) -> None:
        jobs = [asyncio.ensure_future(pool.run(task, 0)) for _ in range(30)]
        await asyncio.sleep(0)  # every job is waiting for the one worker now
        for job in jobs[1::3]:
            job.cancel()
        results = await asyncio.gather(*jobs, return_exceptions=True)
        cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
        assert all(r is None for r in results if not isinstance(r, BaseException)), results
        done.append(f"{name}: {len(results) - cancelled} ran, {cancelled} cancelled")

    def blocking() -> None:
        for _ in range(20):
            assert pool.run_sync(task, 0) is None
        done.append("thread: 20 ran")

    try:
        threads = [
            threading.Thread(target=asyncio.run, args=(callers("a"),)),
            threading.Thread(target=asyncio.run, args=(callers("b"),)),
            threading.Thread(target=blocking),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(done) == 3, done
        assert len(pool._idle) == 1 and not pool._waiters  # the worker is back, nobody waits
        assert pool.run_sync(task, 0) is None
    finally:
        pool.close()
