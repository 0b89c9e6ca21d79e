"""The batch runner against a real sandbox over loopback: rows, resume, retries, faults, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from flowlab.admin import SandboxAdmin
from flowlab.batch.runner import BatchOptions, run_batch, run_batch_to_file, start_batch, store_path_for
from flowlab.batch.runs import RunStore
from flowlab.batch.samples import GuestRow, GuestSample, generate_guests, read_guests
from flowlab.errors import ConfigError, RequestValidationError, RunStoreError
from flowlab.sandbox import SandboxServer

FLOW = "checkout_ab_test"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A sandbox of this test's own: tests count its executions and change its knobs."""
    with SandboxServer(seed=3) as server:
        yield server


def knobs(server: SandboxServer, **values: object) -> None:
    httpx.put(f"{server.url}/sandbox/knobs", json=values, timeout=10).raise_for_status()


def executions(server: SandboxServer) -> int:
    with SandboxAdmin(base_url=server.url) as admin:
        return int(admin.info()["counts"]["executions"])


def options(server: SandboxServer, **overrides: object) -> BatchOptions:
    values: dict[str, object] = {"base_url": server.url, "client_key": server.client_key, "friendly_id": FLOW}
    return BatchOptions(**{**values, **overrides})  # type: ignore[arg-type]


def rows_of(path: Path) -> pd.DataFrame:
    with RunStore.open(path) as store:
        return store.to_dataframe()


# ---- the basics -----------------------------------------------------------------------------------------


def test_every_guest_gets_exactly_one_row_and_the_true_variant(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    sample = generate_guests(300, seed=11)
    summary = run_batch_to_file(
        sample, options(sandbox, concurrency=20), tmp_path / "run.sqlite", progress=False
    )
    assert (summary.total, summary.ok, summary.failed, summary.called) == (300, 300, 0, 300)
    assert not summary.cancelled and "300 guests: 300 ok, 0 failed" in summary.describe()
    frame = rows_of(tmp_path / "run.sqlite")
    assert sorted(frame["row"]) == list(range(1, 301))
    assert set(frame["variant"]) == {"A", "B"} and set(frame["variant_source"]) == {"field"}
    assert (frame["offer_count"] == 1).all() and (frame["attempts"] == 1).all()
    assert frame["execution_ref"].str.len().gt(0).all()
    assert frame["tier"].tolist() == [g.extra["tier"] for g in sample.guests]
    assert executions(sandbox) == 300
    with SandboxAdmin(base_url=sandbox.url) as admin:  # detection agrees with the sandbox's own truth
        for _, row in frame.head(10).iterrows():
            names = [c["variant"]["name"] for c in admin.execution(row["execution_ref"])["candidates"]]
            assert names[0].startswith(f"{row['variant']} ")
    with RunStore.open(tmp_path / "run.sqlite") as store:
        assert store.meta.status == "done"


def test_csv_identity_forms_and_exports(sandbox: SandboxServer, tmp_path: Path) -> None:
    guests = tmp_path / "guests.csv"
    guests.write_text(
        "browserId,email,identifiers.provider,identifiers.id,channel,params.utm.campaign,segment\n"
        "b-csv-1,,,,MOBILE_WEB,run_club,a\n,new.guest@example.com,,,,,b\n,,LOYALTY,LY-DE-104233,,,c\n"
    )
    sample = read_guests(guests)
    for out in (tmp_path / "out.csv", tmp_path / "out.parquet"):
        summary = run_batch_to_file(sample, options(sandbox), out, progress=False)
        assert summary.ok == 3 and summary.output == out and summary.store_path == store_path_for(out)
        frame = pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)
        assert frame["identity"].tolist() == ["browserId", "email", "identifiers"]
        assert frame["guest"].tolist() == ["b-csv-1", "new.guest@example.com", "LOYALTY:LY-DE-104233"]
        assert frame["channel"].tolist() == ["MOBILE_WEB", "WEB", "WEB"]
        assert frame["segment"].tolist() == ["a", "b", "c"]
    with SandboxAdmin(base_url=sandbox.url) as admin:  # the sandbox got exactly the body the model builds
        for guest, ref in zip(sample.guests, frame["execution_ref"], strict=True):
            sent = guest.to_request(sandbox.client_key, FLOW).to_body()
            received = admin.execution(ref)["request"]
            identity = {k: sent[k] for k in ("browserId", "email", "identifiers") if k in sent}
            assert received["identity"] == identity and received["params"] == sent.get("params", {})
            assert {k: received[k] for k in ("channel", "pointOfSale", "friendlyId")} == {
                k: sent[k] for k in ("channel", "pointOfSale", "friendlyId")
            }
    assert store_path_for(tmp_path / "out.csv") == tmp_path / "out.csv.sqlite"
    with pytest.raises(RunStoreError, match=r"must end in \.csv, \.parquet or \.sqlite"):
        store_path_for(tmp_path / "out.xlsx")


def test_bad_defaults_fail_before_any_call_and_bad_rows_get_an_invalid_request_row(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    sample = generate_guests(5, seed=1)
    with pytest.raises(RequestValidationError, match="unknown channel 'TV'"):
        run_batch_to_file(
            sample, options(sandbox, defaults={"channel": "TV"}), tmp_path / "a.sqlite", progress=False
        )
    assert not (tmp_path / "a.sqlite").exists()  # refused before a store existed, so a fixed rerun just runs
    assert run_batch_to_file(sample, options(sandbox), tmp_path / "a.sqlite", progress=False).ok == 5
    hand_made = GuestSample(
        [GuestRow(1, "browserId", "b-1"), GuestRow(2, "browserId", "b-2", {"language": "xx"})]
    )
    summary = run_batch_to_file(hand_made, options(sandbox), tmp_path / "b.sqlite", progress=False)
    assert (summary.ok, summary.failed, summary.errors_by_type) == (1, 1, {"invalid_request": 1})
    bad = rows_of(tmp_path / "b.sqlite").iloc[1]
    assert bad["attempts"] == 0 and pd.isna(bad["status_code"]) and "ISO 639" in bad["error"]
    assert executions(sandbox) == 6
    with pytest.raises(ConfigError, match="concurrency must be 1 or more"):
        options(sandbox, concurrency=0)


def test_no_result_is_lost_when_a_run_ends_during_a_write(sandbox: SandboxServer, tmp_path: Path) -> None:
    """Regression: ending the writer must not cancel a write that is queued but not started."""
    sample = generate_guests(8, seed=13)
    fast_flushes = options(sandbox, concurrency=8)
    for attempt in range(25):
        summary = run_batch_to_file(sample, fast_flushes, tmp_path / f"run-{attempt}.sqlite", progress=False)
        assert summary.ok == 8, summary.describe()


# ---- cancel, resume, retry failed -----------------------------------------------------------------------


def test_cancel_then_resume_calls_every_guest_exactly_once(sandbox: SandboxServer, tmp_path: Path) -> None:
    knobs(sandbox, latencyMs="20")
    sample = generate_guests(400, seed=21)
    store = tmp_path / "run.sqlite"
    handle = start_batch(sample, options(sandbox, concurrency=5), store)
    deadline = time.monotonic() + 20
    while handle.progress().done < 40 and time.monotonic() < deadline:
        time.sleep(0.02)
    handle.cancel()
    assert handle.wait(10) and handle.done and handle.error is None
    assert handle.summary is not None and handle.summary.cancelled
    first = handle.progress()
    assert first.status == "cancelled" and 40 <= first.done < 400
    with pytest.raises(RunStoreError, match="holds an unfinished run"):
        start_batch(sample, options(sandbox), store)
    resumed = start_batch(sample, options(sandbox, concurrency=20), store, resume=True)
    assert resumed.wait(30) and resumed.summary is not None
    assert (resumed.summary.called, resumed.summary.ok) == (400 - first.done, 400)
    frame = rows_of(store)
    assert sorted(frame["row"]) == list(range(1, 401))
    assert executions(sandbox) == 400  # calls in flight at the cancel finished and were kept


def test_resume_refuses_another_runs_store(sandbox: SandboxServer, tmp_path: Path) -> None:
    sample = generate_guests(20, seed=1)
    store = tmp_path / "run.sqlite"
    run_batch_to_file(sample, options(sandbox), store, progress=False)
    for other_sample, other_options in (
        (sample, options(sandbox, friendly_id="hero_banner_default")),
        (generate_guests(20, seed=2), options(sandbox)),
        (sample, options(sandbox, defaults={"channel": "MOBILE_APP"})),
    ):
        with pytest.raises(RunStoreError, match="holds another run, so this one cannot resume it"):
            run_batch_to_file(other_sample, other_options, store, resume=True, progress=False)
    assert executions(sandbox) == 20


def test_only_failed_guests_are_called_again(sandbox: SandboxServer, tmp_path: Path) -> None:
    knobs(sandbox, faults="503=0.5", retryAfterS=0)
    sample = generate_guests(120, seed=5)
    store = tmp_path / "run.sqlite"
    first = run_batch_to_file(sample, options(sandbox, retries=0), store, progress=False)
    assert first.failed > 20 and first.errors_by_type == {"http_503": first.failed}
    before = rows_of(store).set_index("row")
    knobs(sandbox, faults="")
    again = run_batch_to_file(sample, options(sandbox, retries=0), store, only_failed=True, progress=False)
    assert (again.called, again.ok, again.failed) == (first.failed, 120, 0), (
        first.describe(),
        again.describe(),
    )
    after = rows_of(store).set_index("row")
    assert len(after) == 120
    kept = before.index[before["ok"]]
    assert (after.loc[kept, "execution_ref"] == before.loc[kept, "execution_ref"]).all()
    assert executions(sandbox) == 120  # a 503 fault never reaches the flow


# ---- pacing, retries, faults ----------------------------------------------------------------------------


def test_the_rps_cap_holds_loosely(sandbox: SandboxServer, tmp_path: Path) -> None:
    started = time.perf_counter()
    summary = run_batch_to_file(generate_guests(60, seed=2), options(sandbox, concurrency=10, rps=30),
                                tmp_path / "run.sqlite", progress=False)  # fmt: skip
    elapsed = time.perf_counter() - started
    assert summary.ok == 60
    assert elapsed >= 1.4  # 60 at 30/s with a burst of 3: about 1.9 s; uncapped it takes ~0.2 s
    frame = rows_of(tmp_path / "run.sqlite")
    span = (frame["finished_at"].max() - frame["finished_at"].min()).total_seconds()
    assert 59 / span < 45


def test_the_retry_budget_stops_hammering_a_failing_server(sandbox: SandboxServer, tmp_path: Path) -> None:
    knobs(sandbox, faults="503=1", retryAfterS=0)
    summary = run_batch_to_file(generate_guests(100, seed=3), options(sandbox, concurrency=10, retries=5),
                                tmp_path / "run.sqlite", progress=False)  # fmt: skip
    assert summary.failed == 100 and summary.errors_by_type == {"http_503": 100}
    attempts = int(rows_of(tmp_path / "run.sqlite")["attempts"].sum())
    assert attempts == 100 + summary.retries
    assert summary.retries <= 0.5 * 100 + 10  # earned (0.5 per guest) plus the reserve; 500 without a budget
    assert summary.retries_denied > 0 and "over budget" in summary.describe()


def test_a_hang_ends_at_the_timeout(sandbox: SandboxServer, tmp_path: Path) -> None:
    knobs(sandbox, faults="hang=1")
    started = time.perf_counter()
    summary = run_batch_to_file(generate_guests(10, seed=4), options(sandbox, concurrency=10, timeout=0.5, retries=0),
                                tmp_path / "run.sqlite", progress=False)  # fmt: skip
    assert time.perf_counter() - started < 5
    assert summary.errors_by_type == {"timeout": 10}
    frame = rows_of(tmp_path / "run.sqlite")
    assert frame["latency_ms"].between(450, 2000).all()
    assert frame["error"].str.contains("within the timeout").all()


def test_connection_refused_is_a_connection_error(tmp_path: Path) -> None:
    closed = BatchOptions(base_url="http://127.0.0.1:9", client_key="k", friendly_id=FLOW, retries=0)
    summary = run_batch_to_file(generate_guests(3, seed=1), closed, tmp_path / "run.sqlite", progress=False)
    assert summary.errors_by_type == {"connection": 3}
    assert rows_of(tmp_path / "run.sqlite")["error"].str.contains("cannot connect").all()


@pytest.mark.slow
def test_faults_every_guest_one_row_and_almost_all_ok(sandbox: SandboxServer, tmp_path: Path) -> None:
    knobs(sandbox, faults="503=0.2,429=0.05,reset=0.02,hang=0.01", retryAfterS=0.2)
    sample = generate_guests(1_000, seed=6)
    started = time.perf_counter()
    summary = run_batch_to_file(sample, options(sandbox, concurrency=50, retries=5, timeout=1.0),
                                tmp_path / "run.sqlite", progress=False)  # fmt: skip
    elapsed = time.perf_counter() - started
    frame = rows_of(tmp_path / "run.sqlite")
    assert sorted(frame["row"]) == list(range(1, 1001))
    assert summary.ok >= 990, summary.describe()
    assert summary.retries > 150 and frame["attempts"].max() > 1
    assert frame["latency_ms"].max() < 1_500  # a hung attempt ends at the 1 s timeout
    assert elapsed < 40


# ---- cancelling the awaiting task, and kill -9 ----------------------------------------------------------


def test_cancelling_the_task_marks_the_run_cancelled(sandbox: SandboxServer, tmp_path: Path) -> None:
    knobs(sandbox, latencyMs="50")
    sample = generate_guests(400, seed=8)

    async def main() -> None:
        with RunStore.create(tmp_path / "run.sqlite", options(sandbox).run_meta(sample)) as store:
            task = asyncio.create_task(run_batch(sample, options(sandbox, concurrency=5), store))
            deadline = time.monotonic() + 30
            while store.progress().done < 20 and time.monotonic() < deadline:  # 5 x 50 ms: ~100 a second
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert store.meta.status == "cancelled" and 20 <= store.progress().done < 400

    asyncio.run(main())


KILL_GUESTS = 2_000
KILL_CONCURRENCY = 10


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [20, 1_000, 1_850], ids=["early", "middle", "late"])
def test_kill_9_then_resume_calls_again_only_the_guests_in_flight(tmp_path: Path, kill_at: int) -> None:
    """kill -9 of the CLI at several points, then --resume: every guest ends with exactly one row; a guest
    with a stored row is never called again; the guests called twice are no more than the in-flight count
    that the resume reports (the dispatch marks), and within the run's bound (in flight + reserve)."""
    with SandboxServer(latency_ms=20) as sandbox, SandboxAdmin(base_url=sandbox.url) as admin:
        guests = generate_guests(KILL_GUESTS, seed=12).to_csv(tmp_path / "guests.csv")
        out = tmp_path / "run.sqlite"
        command = [sys.executable, "-m", "flowlab", "batch", "--base-url", sandbox.url, "--client-key",
                   sandbox.client_key, "--friendly-id", FLOW, "--guests", str(guests), "--out", str(out),
                   "--concurrency", str(KILL_CONCURRENCY), "--quiet"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
        with (tmp_path / "stderr.txt").open("wb") as stderr:
            proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=stderr)
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and proc.poll() is None:
                    if out.exists() and _stored(out) >= kill_at:
                        break
                    time.sleep(0.01)
                time.sleep(0.07)  # not just after a commit (when a store that buffers results is empty)
                assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.wait(10)
        with RunStore.open(out) as store:
            before = store.to_dataframe(columns=["row", "guest"])
            marked = store.in_flight_rows() - set(before["row"])
            assert store.meta.status == "running" and kill_at <= len(before) < KILL_GUESTS
        called_before = int(admin.info()["counts"]["executions"])
        resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=120, check=False)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        first_line = resumed.stderr.splitlines()[0]
        assert first_line.startswith(f"resuming: {len(before):,} of {KILL_GUESTS:,} guests have a result")
        if marked:
            were = "was" if len(marked) == 1 else "were"
            assert (
                f"Up to {len(marked):,} of them {were} in flight when the run stopped: the tenant may "
                in first_line
            )
        assert f"{KILL_GUESTS:,} guests: {KILL_GUESTS:,} ok, 0 failed" in resumed.stderr
        after = rows_of(out)
        assert sorted(after["row"]) == list(range(1, KILL_GUESTS + 1))  # none missing, none twice

        twice = int(admin.info()["counts"]["executions"]) - KILL_GUESTS  # no faults, so no retries
        assert 0 <= twice <= len(marked) <= 2 * KILL_CONCURRENCY  # in flight + at most a reserve as large
        by_row = dict(zip(after["row"], after["guest"], strict=True))
        repeats = 0
        for row in marked:  # the guests called twice are among the marked ones
            (guest,) = admin.guests(browserId=by_row[row])["items"]
            repeats += len(admin.tracking(guest["ref"])) - 1
        assert repeats == twice and called_before >= len(before)
        for browser_id in before["guest"].sample(min(len(before), 50), random_state=1):  # stored: once only
            (guest,) = admin.guests(browserId=browser_id)["items"]
            assert len(admin.tracking(guest["ref"])) == 1, browser_id


def _stored(path: Path) -> int:
    try:
        with RunStore.open(path) as store:
            return store.progress().done
    except (RunStoreError, OSError):
        return 0
