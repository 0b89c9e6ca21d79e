"""Drive the real app in Debian's Chromium: shared by the browser tests and the screenshot script.

``start_app`` runs ``streamlit run app.py`` the way a user does (on a free port, with a throw-away data dir
and the built-in sandbox on a chosen port); the page helpers wait for Streamlit's reruns to finish.
Playwright always uses ``/usr/bin/chromium``: never a browser it downloads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "ROOT", "choose", "free_port", "settle", "start_app"]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_app(data_dir: Path, *, sandbox_port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``streamlit run app.py`` on a free port; its output goes to ``data_dir/streamlit.log``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLAB_")}
    env |= {"FLOWLAB_DATA_DIR": str(data_dir), "FLOWLAB_SANDBOX_PORT": str(sandbox_port or free_port())}
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
        "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    log_path = data_dir / "streamlit.log"
    with log_path.open("wb") as log:  # the child keeps its own handle
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    process.wait(timeout=10)
    raise RuntimeError(f"the app did not start:\n{log_path.read_text(errors='replace')}")


def settle(page: Page, timeout_ms: int = 20_000) -> None:
    """Wait until Streamlit has finished the current run (the 'Running…' widget is gone)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms
    )


def choose(page: Page, key: str, text: str) -> None:
    """Choose an option in the selectbox with this widget key by typing part of its label."""
    box = page.locator(f".st-key-{key} input[role='combobox']")
    box.click()
    box.fill(text)
    page.locator("[role='option']", has_text=text).first.click()
    settle(page)
