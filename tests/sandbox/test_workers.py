"""Guest-code workers belong to their parent: a Ctrl-C or a kernel shutdown leaves no traceback and no worker.

A Jupyter kernel that ran a sandbox sends SIGINT to its whole process group on shutdown: before issue #8's
fix each worker printed a ``KeyboardInterrupt`` traceback from ``conn.recv_bytes()``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")


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
