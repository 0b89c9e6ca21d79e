"""The CLI contract of design.md: real subprocesses, one-line errors, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flowlab.sandbox import DEMO_CLIENT_KEY, SandboxServer

ROOT = Path(__file__).resolve().parents[1]


def flowlab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowlab", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr
    assert result.stderr.strip().count("\n") <= 2


def test_call_without_base_url_uses_an_in_process_sandbox() -> None:
    result = flowlab(
        "call", "--client-key", DEMO_CLIENT_KEY, "--friendly-id", "checkout_ab_test", "--browser-id", "X"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["variant"] in {"A", "B"}


def test_call_against_a_running_sandbox_with_params(sandbox: SandboxServer) -> None:
    result = flowlab(
        "call", "--base-url", sandbox.url, "--client-key", sandbox.client_key, "--friendly-id", "hero_banner*",
        "--browser-id", "cli-1", "--param", "utm.campaign=spring_trail", "--language", "EN", "--currency", "EUR",
        "--pos", "lumen/de", "-v",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["campaign"] == "spring_trail"
    assert "200 in" in result.stderr and "x-flowlab-execution" in result.stderr.lower()


def test_call_with_email_and_identifier(sandbox: SandboxServer) -> None:
    base = [
        "call",
        "--base-url",
        sandbox.url,
        "--client-key",
        sandbox.client_key,
        "--friendly-id",
        "guest_greeting",
    ]
    assert flowlab(*base, "--email", "someone@example.com").returncode == 0
    assert flowlab(*base, "--identifier", "LOYALTY:LY-1").returncode == 0


def test_two_identities_is_a_usage_error() -> None:
    result = flowlab("call", "--friendly-id", "x", "--browser-id", "a", "--email", "b@c.d")
    assert_clean_failure(result, 2, "use only one of --browser-id, --email or --identifier")


def test_wrong_channel_is_rejected_by_argparse() -> None:
    result = flowlab("call", "--friendly-id", "x", "--browser-id", "a", "--channel", "WEBSITE")
    assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr


def test_invalid_language_names_the_field() -> None:
    result = flowlab("call", "--friendly-id", "checkout_ab_test", "--browser-id", "a", "--language", "xx")
    assert_clean_failure(result, 2, "language")


def test_unknown_flow_prints_body_and_exits_1(sandbox: SandboxServer) -> None:
    result = flowlab("call", "--base-url", sandbox.url, "--client-key", sandbox.client_key,
                     "--friendly-id", "nope", "--browser-id", "a")  # fmt: skip
    assert result.returncode == 1
    assert json.loads(result.stdout)["code"] == "404"
    assert "no flow with friendlyId 'nope'" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_base_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = flowlab("call", "--base-url", f"http://127.0.0.1:{port}", "--client-key", "k", "--friendly-id", "x",
                     "--browser-id", "a")  # fmt: skip
    assert_clean_failure(result, 1, "cannot connect")


def test_bad_param_and_identifier_syntax() -> None:
    assert_clean_failure(
        flowlab("call", "--friendly-id", "x", "--browser-id", "a", "--param", "novalue"), 2, "KEY=VALUE"
    )
    assert_clean_failure(flowlab("call", "--friendly-id", "x", "--identifier", "justid"), 2, "PROVIDER:ID")


def test_bad_base_url_setting_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLAB_BASE_URL", "ftp://nope")
    result = subprocess.run([sys.executable, "-m", "flowlab", "call", "--friendly-id", "x", "--browser-id", "a"],
                            capture_output=True, text=True, timeout=60, env=os.environ.copy())  # fmt: skip
    assert_clean_failure(result, 2, "http")


def test_sandbox_command_serves_until_interrupted() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowlab", "sandbox", "--port", str(port), "--latency-ms", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/sandbox/info").json()
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.1)
        assert info["clientKey"] == DEMO_CLIENT_KEY and info["knobs"]["latencyMs"] == "5"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert "Traceback" not in err and DEMO_CLIENT_KEY in err


def test_sandbox_command_rejects_bad_faults() -> None:
    assert_clean_failure(flowlab("sandbox", "--faults", "503=2"), 2, "probability")


def test_sandbox_command_reports_a_busy_port(sandbox: SandboxServer) -> None:
    assert_clean_failure(flowlab("sandbox", "--port", str(sandbox.port)), 1, "cannot listen")


def test_a_large_batch_on_a_live_tenant_needs_yes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that is not a Flow Lab sandbox counts as live: over the threshold, --yes is required."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Tenant(BaseHTTPRequestHandler):
        calls = 0

        def do_GET(self) -> None:  # no /sandbox/info here: a "live" tenant
            self.send_response(404)
            self.end_headers()

        def do_POST(self) -> None:
            Tenant.calls += 1
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"variant": "A"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Tenant)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        guests = tmp_path / "g.csv"
        guests.write_text("browserId\n" + "\n".join(f"b-{i}" for i in range(5)) + "\n")
        env = {**os.environ, "FLOWLAB_BATCH_CONFIRM_THRESHOLD": "3"}
        base = [sys.executable, "-m", "flowlab", "batch", "--base-url", url, "--client-key", "k",
                "--friendly-id", "x", "--guests", str(guests), "--out", str(tmp_path / "run.csv"), "-q"]  # fmt: skip
        refused = subprocess.run(
            base, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
        )
        assert_clean_failure(refused, 2, "pass --yes to confirm")
        assert Tenant.calls == 0
        confirmed = subprocess.run([*base, "--yes"], capture_output=True, text=True, timeout=60, env=env)
        assert confirmed.returncode == 0, confirmed.stderr
        assert Tenant.calls == 5
    finally:
        server.shutdown()
        server.server_close()


def test_batch_summary_ends_with_the_timeout_budget_line(tmp_path: Path) -> None:
    """With the sandbox's real latency some calls pass JSS's 400 ms: the summary says whose guests (#10)."""
    import pandas as pd

    guests = tmp_path / "g.csv"
    guests.write_text("browserId\n" + "\n".join(f"budget-{i}" for i in range(150)) + "\n")
    with SandboxServer(seed=4, latency_ms="real") as slow:
        result = flowlab(
            "batch", "--base-url", slow.url, "--client-key", slow.client_key, "--friendly-id",
            "checkout_ab_test", "--guests", str(guests), "--out", str(tmp_path / "run.parquet"), "-q",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    run = pd.read_parquet(tmp_path / "run.parquet")
    over = run[run["ok"]].groupby("variant")["latency_ms"].apply(lambda ms: float((ms > 400).mean()))
    assert over.max() > 0
    assert last.startswith("With JSS's 400 ms timeout, ") and "guests would have seen the default" in last
    assert f"of {over.idxmax()}'s guests would have seen the default" in last
