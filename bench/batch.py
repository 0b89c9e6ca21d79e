"""Benchmark the batch engine against plain clients and Newman, on loopback, in one run (about 3 minutes).

    .venv/bin/python bench/batch.py [--quick] [--skip-newman] [--skip-rss] [--runner-only]

A minimal fixed-delay server (``bench/fixed_delay_server.py``) runs in a subprocess, so the client under test
has a core of its own on a 2-core machine. For each scenario (concurrency / server delay) it measures:

* ``httpx.AsyncClient`` (httpx's own transport) and httpx on the ``httpx-aiohttp`` transport, posting the
  same pre-serialised body for a fixed time;
* ``flowlab.http.BatchTransport`` alone (raw aiohttp, the runner's hot path) for the same time;
* the batch runner end to end (``run_batch_to_file`` into SQLite: requests, retries logic, variant and
  offer detection, the run store) over a generated sample.

It prints req/s and the ratio to ideal (concurrency / delay); then, for the runner's group commits, how
long an answer waits until it is durable and how many guests a kill -9 would report as in flight
(``--runner-only`` keeps only the runner's rows, this and the RSS run: a before/after check of a runner
change). Then the peak RSS of a 100,000-guest runner run (in a subprocess: ``VmHWM``), and, if ``npm
install newman`` works, Newman on the 50 ms server with a Postman collection from
``flowlab.personalize.export.to_postman`` and a data file of the same guests.

Issue goals: >= 0.90 of ideal at 50/50 ms and 200/100 ms; >= 3,000 req/s at 0 ms; RSS <= 300 MB at 100k
guests; >= 50x Newman. Another busy process on the machine lowers every number: the load average is printed.

``--edge`` (about 30 s) measures the runner with ``EdgeProvider`` instead: the same server answering an AEP
Edge interact envelope (two destinations, six audiences, five attributes, as the sandbox's demo does) at
50 concurrent / 50 ms, next to the callFlows runner on the same scenario. Goal: >= 0.90 of ideal (#9).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from flowlab.batch.runner import BatchOptions, run_batch, run_batch_to_file
from flowlab.batch.runs import RunStore
from flowlab.batch.samples import GuestRow, GuestSample, generate_guests, read_guests
from flowlab.edge.provider import EdgeProvider
from flowlab.http import BatchTransport
from flowlab.personalize.export import to_postman

HERE = Path(__file__).resolve().parent
SERVER = HERE / "fixed_delay_server.py"
BODY = orjson.dumps(
    {
        "clientKey": "bench-key",
        "channel": "WEB",
        "pointOfSale": "lumen/de",
        "browserId": "b-1",
        "friendlyId": "bench",
    }
)
NEWMAN_DIR = Path(tempfile.gettempdir()) / "newman"


@contextmanager
def server(delay_ms: float, body_file: Path | None = None) -> Iterator[str]:
    """The fixed-delay server in a subprocess on a free 127.0.0.1 port; yields its base URL."""
    extra = ["--body-file", str(body_file)] if body_file is not None else []
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--delay-ms", str(delay_ms), *extra], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the bench server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def for_seconds(seconds: float, concurrency: int, post: Callable[[], Awaitable[None]]) -> float:
    """req/s of ``concurrency`` workers posting back to back for ``seconds`` (after one warm-up round)."""
    await asyncio.gather(*(post() for _ in range(concurrency)))
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await post()
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def httpx_plain(url: str, concurrency: int, seconds: float) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, pool=None)) as client:

        async def post() -> None:
            (await client.post(url + "/v2/callFlows", content=BODY)).raise_for_status()

        return await for_seconds(seconds, concurrency, post)


async def httpx_aiohttp(url: str, concurrency: int, seconds: float) -> float:
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(
        transport=transport, limits=limits, timeout=httpx.Timeout(30, pool=None)
    ) as client:

        async def post() -> None:
            (await client.post(url + "/v2/callFlows", content=BODY)).raise_for_status()

        return await for_seconds(seconds, concurrency, post)


async def raw_transport(url: str, concurrency: int, seconds: float) -> float:
    async with BatchTransport(base_url=url, max_connections=concurrency) as transport:

        async def post() -> None:
            status, *_ = await transport.post_call_flows(BODY, 30)
            assert status == 200

        return await for_seconds(seconds, concurrency, post)


def runner(url: str, concurrency: int, sample: GuestSample, workdir: Path) -> float:
    options = BatchOptions(base_url=url, client_key="bench-key", friendly_id="bench", concurrency=concurrency)
    out = workdir / f"run-{concurrency}-{time.monotonic_ns()}.sqlite"
    started = time.perf_counter()
    summary = run_batch_to_file(sample, options, out, progress=False)
    elapsed = time.perf_counter() - started
    if summary.ok != len(sample):
        raise RuntimeError(f"runner: {summary.describe()}")
    return len(sample) / elapsed


def run_loop(coro: Awaitable[float]) -> float:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def row(scenario: str, client: str, rps: float, ideal: float | None) -> None:
    ratio = f"{rps / ideal:6.2f}" if ideal else "     -"
    print(
        f"{scenario:<18} {client:<38} {rps:>9,.0f} {(f'{ideal:,.0f}' if ideal else '-'):>8} {ratio}",
        flush=True,
    )


def throughput(quick: bool, workdir: Path, *, runner_only: bool = False) -> dict[str, float]:
    """Every client on every scenario; the raw transport and the runner get the best of two runs.

    ``runner_only``: just the batch runner (a before/after check of a runner change in about a minute).
    """
    seconds = 1.5 if quick else 2.5
    tries = 1 if quick else 2
    results: dict[str, float] = {}
    print(f"{'scenario':<18} {'client':<38} {'req/s':>9} {'ideal':>8}  ratio")
    # enough guests that start-up and the last round trip (fixed costs of any finite run) weigh little
    for concurrency, delay_ms, guests in ((50, 50, 5_000), (200, 100, 30_000), (50, 0, 15_000)):
        ideal = concurrency / (delay_ms / 1000) if delay_ms else None
        scenario = f"{concurrency} conc / {delay_ms} ms"
        sample = generate_guests(guests // (3 if quick else 1), seed=concurrency + delay_ms)
        with server(delay_ms) as url:
            if runner_only:
                rps = max(runner(url, concurrency, sample, workdir) for _ in range(tries))
                row(scenario, f"batch runner, {len(sample):,} guests, best of {tries}", rps, ideal)
                results[scenario] = rps
                continue
            row(scenario, "httpx.AsyncClient", run_loop(httpx_plain(url, concurrency, seconds)), ideal)
            row(
                scenario,
                "httpx + aiohttp transport",
                run_loop(httpx_aiohttp(url, concurrency, seconds)),
                ideal,
            )
            best = max(run_loop(raw_transport(url, concurrency, seconds)) for _ in range(tries))
            row(scenario, f"BatchTransport (raw aiohttp), best of {tries}", best, ideal)
            rps = max(runner(url, concurrency, sample, workdir) for _ in range(tries))
            row(scenario, f"batch runner, {len(sample):,} guests, best of {tries}", rps, ideal)
            results[scenario] = rps
    return results


# ---- AEP Edge: the same runner with EdgeProvider ----------------------------------------------------------

_SEGMENTS = [{"id": f"{i:08d}-9b78-5974-8e5c-a471c7712691", "namespace": "ups"} for i in range(6)]
_ATTRIBUTES = {"firstName": "Lena", "countryCode": "DE", "loyaltyTier": "gold", "loyaltyPoints": 2439,
               "preferredCategory": "hiking"}  # fmt: skip
#: An interact answer shaped like the sandbox's (adobe-edge-personalization.md §3.1, §3.3).
EDGE_ENVELOPE = orjson.dumps(
    {
        "requestId": "b1d1c35a-6008-4e24-b2b7-a562e986f7d6-c4b2ed84010a5497",
        "handle": [
            {"type": "identity:result", "payload": [{"id": "40871929702231882574173454532963426569",
                                                      "namespace": {"code": "ECID"}}]},
            {"type": "activation:pull", "eventIndex": 0, "payload": [
                {"type": "profileLookup", "destinationId": "2fecb7d0-8125-5197-a16d-a53e8d98d460",
                 "alias": "lumen-web-segments", "segments": _SEGMENTS},
                {"type": "profileLookup", "destinationId": "5b3e9d6b-786d-557c-922c-4b87d0ca2704",
                 "alias": "lumen-cms-attributes", "segments": _SEGMENTS,
                 "attributes": {k: {"value": v} for k, v in _ATTRIBUTES.items()}},
            ]},
            {"type": "locationHint:result", "payload": [{"scope": "EdgeNetwork", "hint": "or2", "ttlSeconds": 1800}]},
        ],
    }
)  # fmt: skip


def edge_sample(n: int) -> GuestSample:
    """``n`` Edge identities with an event type and event data (no sandbox needed)."""
    guests = [
        GuestRow(i, "Email", f"guest{i}@example.com", {"eventType": "commerce.checkouts"},
                 {"data": {"cart": {"value": i % 200}}}, {"country": ("DE", "FR", "GB", "US")[i % 4]})
        for i in range(1, n + 1)
    ]  # fmt: skip
    return GuestSample(guests, [], ("country",), f"bench edge (n={n})", "edge")


def edge_runner(url: str, concurrency: int, sample: GuestSample, workdir: Path) -> float:
    options = BatchOptions(base_url=url, provider=EdgeProvider("bench-datastream"), concurrency=concurrency)
    out = workdir / f"edge-{concurrency}-{time.monotonic_ns()}.sqlite"
    started = time.perf_counter()
    summary = run_batch_to_file(sample, options, out, progress=False)
    elapsed = time.perf_counter() - started
    if summary.ok != len(sample):
        raise RuntimeError(f"edge runner: {summary.describe()}")
    with RunStore.open(out) as store:  # the answers were read, not just counted
        segments = store.to_dataframe(["segments"])["segments"]
    assert all(len(s) == len(_SEGMENTS) for s in segments)
    return len(sample) / elapsed


def edge_throughput(quick: bool, workdir: Path) -> None:
    """The Edge runner and the callFlows runner at 50 concurrent / 50 ms, best of two each."""
    concurrency, delay_ms = 50, 50
    ideal = concurrency / (delay_ms / 1000)
    scenario = f"{concurrency} conc / {delay_ms} ms"
    guests = 1_700 if quick else 5_000
    tries = 1 if quick else 2
    body_file = workdir / "edge-envelope.json"
    body_file.write_bytes(EDGE_ENVELOPE)
    print(f"{'scenario':<18} {'client':<38} {'req/s':>9} {'ideal':>8}  ratio")
    with server(delay_ms, body_file) as url:
        sample = edge_sample(guests)
        rps = max(edge_runner(url, concurrency, sample, workdir) for _ in range(tries))
        row(scenario, f"Edge runner, {len(sample):,} ids, best of {tries}", rps, ideal)
    with server(delay_ms) as url:
        callflows = generate_guests(guests, seed=concurrency + delay_ms)
        rps = max(runner(url, concurrency, callflows, workdir) for _ in range(tries))
        row(scenario, f"callFlows runner, {len(callflows):,}, best of {tries}", rps, ideal)


def read_speed(guests: int, workdir: Path) -> None:
    path = generate_guests(guests, seed=3).to_csv(workdir / "guests.csv")
    started = time.perf_counter()
    sample = read_guests(path)
    print(
        f"read_guests: {len(sample):,} CSV rows parsed and checked in {time.perf_counter() - started:.1f} s"
    )


# ---- durability: how soon a result is committed, and what a kill -9 would report ------------------------


class _TimedStore(RunStore):
    """A run store that notes, at each group commit, how long its results waited and how many guests are
    marked as dispatched without a result (what a resume after a kill -9 at that moment would report)."""

    lags: list[float]
    marked: set[int]
    outstanding: list[int]

    def write_rows(
        self,
        rows: Sequence[tuple[Any, ...]],
        dispatched: Sequence[tuple[int, float]] = (),
        released: Sequence[int] = (),
    ) -> int:
        count = super().write_rows(rows, dispatched, released)
        now = time.time()
        self.lags += [now - row[15] for row in rows]  # finished_at: when the answer arrived
        self.marked.update(r for r, _ in dispatched)
        self.marked.difference_update([row[0] for row in rows], released)
        self.outstanding.append(len(self.marked))
        return count


def durability(workdir: Path) -> None:
    """Per scenario: result-to-durable delay (p50/p99/max) and the in-flight count a kill would report."""
    print("durability: from an answer's arrival to its commit; guests marked in flight at each commit")
    for concurrency, delay_ms, guests in ((50, 50, 5_000), (50, 0, 15_000)):
        sample = generate_guests(guests, seed=5)
        with server(delay_ms) as url:
            options = BatchOptions(
                base_url=url, client_key="bench-key", friendly_id="bench", concurrency=concurrency
            )
            store = _TimedStore.create(
                workdir / f"durable-{concurrency}-{delay_ms}.sqlite", options.run_meta(sample)
            )
            store.lags, store.marked, store.outstanding = [], set(), []
            with store:
                summary = run_loop_summary(run_batch(sample, options, store))
        lags = sorted(store.lags)
        marks = sorted(store.outstanding)
        pick = lambda values, q: values[min(len(values) - 1, int(len(values) * q))]  # noqa: E731
        print(
            f"  {concurrency} conc / {delay_ms} ms, {summary.ok:,} ok: answer -> durable p50 "
            f"{pick(lags, 0.5) * 1000:.1f} ms, p99 {pick(lags, 0.99) * 1000:.1f} ms, max {lags[-1] * 1000:.0f} ms; "
            f"marked in flight p50 {pick(marks, 0.5)}, max {marks[-1]} (concurrency {concurrency}; "
            f"bound: in flight + a reserve of at most {concurrency})"
        )


def run_loop_summary(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# ---- memory: a 100,000-guest run in a subprocess --------------------------------------------------------


def rss_child(url: str, guests: int, out: str) -> None:
    """Run inside the subprocess: generate the sample, run it, print VmHWM (peak RSS) as JSON."""
    sample = generate_guests(guests, seed=100)
    options = BatchOptions(base_url=url, client_key="bench-key", friendly_id="bench", concurrency=50)
    started = time.perf_counter()
    summary = run_batch_to_file(sample, options, Path(out), progress=False)
    elapsed = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    hwm_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    print(
        json.dumps(
            {"ok": summary.ok, "total": summary.total, "elapsed_s": elapsed, "vmhwm_mb": hwm_kb / 1024}
        )
    )


def peak_rss(guests: int, workdir: Path) -> None:
    with server(0) as url:
        out = workdir / "rss.sqlite"
        done = subprocess.run(
            [sys.executable, __file__, "--rss-child", url, str(guests), str(out)],
            capture_output=True, text=True, timeout=150, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        print(f"RSS run failed: {done.stderr.strip()[-500:]}")
        return
    result = json.loads(done.stdout.strip().splitlines()[-1])
    verdict = "ok" if result["vmhwm_mb"] <= 300 else "OVER the 300 MB goal"
    print(
        f"{result['total']:,}-guest runner run: {result['ok']:,} ok in {result['elapsed_s']:.1f} s "
        f"({result['total'] / result['elapsed_s']:,.0f}/s); "
        f"peak RSS (VmHWM) {result['vmhwm_mb']:.0f} MB ({verdict})"
    )


# ---- Newman ---------------------------------------------------------------------------------------------


def newman_binary() -> Path | None:
    binary = NEWMAN_DIR / "node_modules" / ".bin" / "newman"
    if binary.exists():
        return binary
    if shutil.which("npm") is None:
        print("Newman: skipped (npm is not installed)")
        return None
    try:
        subprocess.run(
            ["npm", "install", "--prefix", str(NEWMAN_DIR), "newman", "--no-audit", "--no-fund", "--silent"],
            capture_output=True, text=True, timeout=150, check=True,
        )  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"Newman: skipped (npm install newman failed: {str(exc)[:200]})")
        return None
    return binary if binary.exists() else None


def newman(runner_rps: float, workdir: Path, iterations: int) -> None:
    binary = newman_binary()
    if binary is None:
        return
    sample = generate_guests(iterations, seed=7)
    options = BatchOptions(base_url="http://127.0.0.1", client_key="bench-key", friendly_id="bench")
    with server(50) as url:
        first = sample.guests[0].to_request(options.client_key, options.friendly_id)
        collection = to_postman(first, url, name="Flow Lab bench")
        request = collection["item"][0]["request"]
        body = json.loads(request["body"]["raw"])
        body["browserId"] = "{{browserId}}"  # one request, driven by the data file, as users run Newman
        request["body"]["raw"] = json.dumps(body)
        (workdir / "collection.json").write_text(json.dumps(collection))
        with (workdir / "guests.csv").open("w", newline="") as data:
            writer = csv.writer(data)
            writer.writerow(["browserId"])
            writer.writerows([g.value] for g in sample.guests)
        report = workdir / "newman.json"
        done = subprocess.run(
            [str(binary), "run", str(workdir / "collection.json"), "-d", str(workdir / "guests.csv"),
             "-r", "json", "--reporter-json-export", str(report), "--timeout-request", "10000"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    if done.returncode != 0 or not report.exists():
        print(f"Newman: failed ({(done.stderr or done.stdout).strip()[-300:]})")
        return
    run = json.loads(report.read_text())["run"]
    seconds = (run["timings"]["completed"] - run["timings"]["started"]) / 1000
    requests = run["stats"]["requests"]["total"]
    rps = requests / seconds
    print(
        f"Newman {requests} requests at 50 conc-equivalent / 50 ms: {rps:,.1f} req/s (sequential); "
        f"batch runner {runner_rps:,.0f} req/s = {runner_rps / rps:,.0f}x Newman (goal >= 50x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the batch engine (see the module docstring).")
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test of the bench)")
    parser.add_argument("--skip-newman", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--runner-only", action="store_true", help="only the batch runner's rows and RSS")
    parser.add_argument("--edge", action="store_true", help="only the Edge runner vs the callFlows runner")
    parser.add_argument("--rss-child", nargs=3, metavar=("URL", "GUESTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        url, guests, out = args.rss_child
        rss_child(url, int(guests), out)
        return
    load = os.getloadavg()
    print(f"cores: {os.cpu_count()}, load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
          + ("  (busy machine: numbers will be low)" if load[0] > 0.7 else ""))  # fmt: skip
    started = time.perf_counter()
    if args.edge:
        with tempfile.TemporaryDirectory(prefix="flowlab-bench-") as tmp:
            edge_throughput(args.quick, Path(tmp))
        print(
            f"bench took {time.perf_counter() - started:.0f} s; load average after: {os.getloadavg()[0]:.2f}"
        )
        return
    with tempfile.TemporaryDirectory(prefix="flowlab-bench-") as tmp:
        workdir = Path(tmp)
        results = throughput(args.quick, workdir, runner_only=args.runner_only)
        durability(workdir)
        if not args.runner_only:
            read_speed(20_000 if args.quick else 100_000, workdir)
        if not args.skip_rss:
            peak_rss(20_000 if args.quick else 100_000, workdir)
        if not (args.skip_newman or args.runner_only):
            newman(results["50 conc / 50 ms"], workdir, 60 if args.quick else 150)
    print(f"bench took {time.perf_counter() - started:.0f} s; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
