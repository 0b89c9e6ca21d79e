"""Connections under load: a flow whose decision model calls a data system that answers after 50 ms.

The sandbox runs in its own process (``python -m flowlab sandbox``), the data system is
``bench/fixed_delay_server.py`` (another process), and ``concurrency`` callers post callFlows back to back
through raw aiohttp (the batch runner's transport). Ideal: ``concurrency / delay`` req/s. Issue #11 asks for
connection calls that never block the server; this prints how close a connection-bound flow gets to ideal,
for a call that starts its model and for one fed by guest code (one worker round trip more)::

    python bench/connections.py [--seconds 8] [--concurrency 50] [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from batch import for_seconds, run_loop, server  # bench/batch.py: the delay server and the load loop

from flowlab.admin import SandboxAdmin
from flowlab.http import BatchTransport

__all__ = ["main"]

FLOW = "bench_connection"
FED_FLOW = "bench_connection_fed"


def _sandbox() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowlab", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if "http://127.0.0.1:" in line:
            url = "http://127.0.0.1:" + line.split("http://127.0.0.1:", 1)[1].split()[0].rstrip("/.,")
            return proc, url
    proc.kill()
    raise RuntimeError("the sandbox did not start")


def _load(admin: SandboxAdmin, upstream: str) -> None:
    """Two flows on the same 50 ms system: one whose model starts with the call (its input a literal), and
    one whose call takes its input from a programmable (guest code runs before the call: a worker trip more)."""
    connection = {
        "name": "Bench data system", "description": "answers after a fixed delay",
        "auth": {"authType": "NONE"},
        "request": {"requestType": "POST", "connectionUrl": f"{upstream}/lookup",
                    "requestBody": '{"who": "${who}"}'},
        "urlParameters": [], "inputMappings": [{"key": "who", "mapping": '"bench"'}],
        "outputMappings": [{"label": "Variant", "outputReference": "variant", "type": "String"}],
        "customHeaders": [], "systemType": "DATA_SYSTEM", "connectionTimeout": 5000, "socketTimeout": 5000,
    }  # fmt: skip
    stored = admin.add_connection(connection)
    fed = {**connection, "ref": stored["ref"], "inputMappings": [{"key": "who", "mapping": "who"}]}
    read = {"id": "read", "name": "Read it", "type": "programmable", "outputReference": "variant",
            "source": "(function () { return answer ? answer.variant : 'none'; })();", "requires": ["call"]}  # fmt: skip
    models = {
        FLOW: [{"id": "call", "name": "Look up", "type": "connection", "outputReference": "answer",
                "connection": {**connection, "ref": stored["ref"]}}, read],
        FED_FLOW: [{"id": "who", "name": "Who", "type": "programmable", "outputReference": "who",
                    "source": "(function () { return request.channel || 'bench'; })();"},
                   {"id": "call", "name": "Look up", "type": "connection", "outputReference": "answer",
                    "connection": fed, "requires": ["who"]}, read],
    }  # fmt: skip
    template = '{"variant": "${getDecisionModelResultNode("Read it").outputs[0].variant}"}'
    for friendly_id, nodes in models.items():
        model = {"ref": f"{friendly_id}-model", "name": f"{friendly_id} model", "nodes": nodes}
        flow = {
            "friendlyId": friendly_id, "name": friendly_id, "type": "INTERACTIVE_API_FLOW", "status": "LIVE",
            "variants": [{"ref": "v", "name": "Only", "isControl": True, "tasks": [
                {"implementation": "decisionModelTask", "input": {"decisionModelRefs": [model["ref"]]}},
                {"implementation": "templateRenderTask", "input": {"template": template}}]}],
            "traffic": {"splits": [{"ref": "v", "split": 100}]},
        }  # fmt: skip
        admin.load_decision_model(model)
        admin.load_flow(flow)


async def _drive(url: str, client_key: str, friendly_id: str, concurrency: int, seconds: float) -> float:
    counter = iter(range(10**9))
    async with BatchTransport(base_url=url, max_connections=concurrency) as transport:

        async def post() -> None:
            body = (
                f'{{"clientKey":"{client_key}","channel":"WEB","browserId":"bench-{next(counter)}",'
                f'"friendlyId":"{friendly_id}"}}'
            ).encode()
            status, _, text, _ = await transport.post_call_flows(body, 30)
            if status != 200:
                raise RuntimeError(f"{status}: {text[:300]}")

        return await for_seconds(seconds, concurrency, post)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    ideal = args.concurrency / (args.delay_ms / 1000)
    print(f"cores: {os.cpu_count()}, load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with server(args.delay_ms) as upstream:
        proc, url = _sandbox()
        try:
            with SandboxAdmin(base_url=url) as admin:
                _load(admin, upstream)
                key = admin.info()["clientKey"]
            plain = run_loop(_drive(url, key, "checkout_ab_test", args.concurrency, args.seconds))
            leading = run_loop(_drive(url, key, FLOW, args.concurrency, args.seconds))
            fed = run_loop(_drive(url, key, FED_FLOW, args.concurrency, args.seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"{'flow':<58}{'req/s':>8}{'ideal':>8}{'ratio':>7}")
    print(f"{'checkout_ab_test (no connection)':<58}{plain:>8.0f}{'-':>8}{'':>7}")
    for name, rate, how in ((FLOW, leading, "first node"), (FED_FLOW, fed, "after a programmable")):
        label = f"{name} ({args.delay_ms:g} ms connection, {how})"
        print(f"{label:<58}{rate:>8.0f}{ideal:>8.0f}{rate / ideal:>7.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
