"""Edge sandbox throughput: ``POST /ee/v2/interact`` on the demo datastream, wrk like bench/sandbox.py.

Every request is a demo profile (round robin over 1,000 identities) with a page view or a checkout, on the
datastream with edge segmentation and personalization destinations, unauthenticated; so each one records the
event, evaluates the edge audiences in a worker (one pool round trip, issue #8) and answers activation:pull.

    python bench/edge.py [--seconds 10] [--connections 50] [--rate 1500]

Goal (issue #9): >= 1,500 req/s with p99 < 50 ms at that load. The sandbox runs with its guardrail raised
(the 1,500 lookups/s guardrail would otherwise answer 429 to a saturating load, as Adobe's would).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_sandbox", Path(__file__).with_name("sandbox.py"))
assert _spec and _spec.loader
bench_sandbox = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_sandbox)

SERVER = """
import gc, sys, uvicorn
from flowlab.sandbox import create_app
app = create_app()
app.edge.guardrail.limit = 10**9
gc.freeze()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
"""

LUA = (
    """
counter = 0
ids = {IDS}
"""
    + bench_sandbox.WRK_PACE
    + """request = function()
  counter = counter + 1
  local ident = ids[(counter % #ids) + 1]
  local kind = (counter % 4 == 0) and "commerce.checkouts" or "web.webpagedetails.pageViews"
  local body = '{"event":{"xdm":{"eventType":"' .. kind .. '","identityMap":{"' .. ident[1] ..
    '":[{"id":"' .. ident[2] .. '","primary":true}]}}}}'
  return wrk.format("POST", "/ee/v2/interact?datastreamId=DATASTREAM", {["Content-Type"] = "application/json"}, body)
end
"""
    + bench_sandbox.WRK_DONE
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rate", type=int, default=1500, help="offered load for the latency row (req/s)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "edge_app.py").write_text(SERVER)
        port = bench_sandbox.free_port()
        proc = bench_sandbox.start([sys.executable, str(tmpdir / "edge_app.py"), str(port)], port, ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            info = httpx.get(f"{base}/sandbox/info").json()["edge"]
            datastream = next(d["id"] for d in info["datastreams"] if d["edgeSegmentation"])
            pages = (
                httpx.get(f"{base}/sandbox/edge/profiles", params={"limit": 500, "offset": o})
                for o in (0, 500)
            )
            items = [item for page in pages for item in page.json()["items"]]
            pairs = ((i["identity"]["namespace"], i["identity"]["id"]) for i in items)
            ids = ",".join(f'{{"{namespace}","{value}"}}' for namespace, value in pairs)
            script = tmpdir / "edge.lua"
            script.write_text(LUA.replace("{IDS}", "{" + ids + "}").replace("DATASTREAM", datastream))
            run = _wrk_at(port)
            run(2, args.connections, script)  # warm-up
            saturated = run(args.seconds, args.connections, script)
            pace_ms = max(0.0, 1000 * args.connections / args.rate - 1.0)
            paced = run(args.seconds, args.connections, script, pace_ms)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    print(
        f"wrk, {args.connections} connections, {args.seconds} s per row, one server process, {os.cpu_count()} cores"
    )
    print(f"{'load':>14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'non-2xx':>8}")
    for load, r in (("saturated", saturated), (f"~{args.rate:,} req/s", paced)):
        print(
            f"{load:>14} {r['rps']:8.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:7.0f} {r['non2xx']:8.0f}"
        )
    goal = saturated["rps"] >= 1500 and paced["p99"] < 50
    print(f"goal (>= 1,500 req/s, p99 < 50 ms at ~{args.rate:,} req/s): {'met' if goal else 'NOT met'}")
    return 0


def _wrk_at(port: int):  # type: ignore[no-untyped-def]
    """bench/sandbox.py's wrk runner, pointed at the interact path."""

    def run(seconds: int, connections: int, script: Path, pace_ms: float = 0) -> dict[str, float]:
        return dict(bench_sandbox.wrk(port, seconds, connections, script, pace_ms))

    return run


if __name__ == "__main__":
    raise SystemExit(main())
