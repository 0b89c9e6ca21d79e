"""The run log against a real sandbox: recording, listing, status, resume, re-run failed, samples, delete."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flowlab.batch.runlog import RunLog, load_results, read_sample, write_sample
from flowlab.batch.runner import BatchOptions
from flowlab.batch.runs import RunStore
from flowlab.batch.samples import generate_guests, read_guests
from flowlab.errors import RunStoreError
from flowlab.sandbox import SandboxServer

FLOW = "checkout_ab_test"


@pytest.fixture
def tenant() -> Iterator[SandboxServer]:
    with SandboxServer(seed=4) as server:
        yield server


def options(server: SandboxServer, **overrides: object) -> BatchOptions:
    values: dict[str, object] = {"base_url": server.url, "client_key": server.client_key, "friendly_id": FLOW}
    return BatchOptions(**{**values, **overrides})  # type: ignore[arg-type]


def test_the_log_lives_in_the_data_dir_and_starts_empty(tmp_path: Path) -> None:
    log = RunLog()
    assert log.root == tmp_path / "flowlab-data" / "runs"
    assert log.runs() == []
    with pytest.raises(RunStoreError, match="no run 'nope'"):
        log.get("nope")


def test_a_started_run_is_listed_with_its_name_status_and_counts(tenant: SandboxServer) -> None:
    log = RunLog()
    record, handle = log.start(generate_guests(200, seed=1), options(tenant), name="first", target="Sandbox")
    assert record.status == "running" and record.name == "first" and record.total == 200
    assert handle.wait(30) and handle.error is None
    (listed,) = log.runs()
    assert (listed.id, listed.status, listed.done, listed.ok, listed.failed) == (
        record.id,
        "done",
        200,
        200,
        0,
    )
    assert listed.friendly_id == FLOW and listed.base_url == tenant.url and listed.target == "Sandbox"
    assert listed.label.startswith("first · done · 200 guests · 20") and not listed.resumable
    second, handle = log.start(generate_guests(10, seed=2), options(tenant))
    handle.wait(30)
    assert [r.id for r in log.runs()] == [second.id, record.id]  # newest first
    assert log.get(second.id).name == f"{FLOW} · 10 guests"


def test_cancel_then_resume_calls_each_guest_once(tenant: SandboxServer) -> None:
    log = RunLog()
    record, handle = log.start(generate_guests(300, seed=3), options(tenant, concurrency=2, rps=30))
    time.sleep(1.0)
    handle.cancel()
    assert handle.wait(30)
    cancelled = log.get(record.id)
    assert cancelled.status == "cancelled" and cancelled.resumable and 0 < cancelled.done < 300
    resumed = log.resume(record.id, rps=None, concurrency=20)
    assert resumed.wait(60) and resumed.summary is not None
    assert resumed.summary.called == cancelled.missing
    done = log.get(record.id)
    assert (done.status, done.done, done.ok) == ("done", 300, 300)
    frame = load_results(done.path)
    assert sorted(frame["row"]) == list(range(1, 301)) and "body" not in frame.columns
    assert log.options(record.id).concurrency == 20  # the options of its latest session


def test_rerun_failed_guests_replaces_only_their_rows(tenant: SandboxServer) -> None:
    httpx.put(f"{tenant.url}/sandbox/knobs", json={"faults": "503=0.3"}, timeout=10).raise_for_status()
    log = RunLog()
    record, handle = log.start(generate_guests(100, seed=5), options(tenant, retries=0))
    handle.wait(30)
    first = log.get(record.id)
    assert first.status == "done" and first.failed > 0
    httpx.put(f"{tenant.url}/sandbox/knobs", json={"faults": ""}, timeout=10).raise_for_status()
    rerun = log.resume(record.id, only_failed=True)
    assert rerun.wait(30) and rerun.summary is not None and rerun.summary.called == first.failed
    assert (log.get(record.id).failed, log.get(record.id).ok) == (0, 100)


def test_a_run_nobody_holds_is_interrupted(tenant: SandboxServer) -> None:
    log = RunLog()
    sample = generate_guests(20, seed=6)
    run_id = log.prepare(sample, options(tenant), name="crashed")
    with RunStore.create(log.store_path(run_id), options(tenant).run_meta(sample)):
        pass  # a process that died before finishing: the store still says "running"
    record = log.get(run_id)
    assert record.status == "interrupted" and record.resumable and record.missing == 20
    handle = log.resume(run_id)
    assert handle.wait(30)
    assert log.get(run_id).status == "done"


def test_resume_refuses_a_running_run_and_another_target(tenant: SandboxServer) -> None:
    log = RunLog()
    record, handle = log.start(generate_guests(200, seed=7), options(tenant, concurrency=1, rps=20))
    with pytest.raises(RunStoreError, match="still running"):
        log.resume(record.id)
    with pytest.raises(RunStoreError, match="still running"):
        log.delete(record.id)
    handle.cancel()
    handle.wait(30)
    with pytest.raises(RunStoreError, match="base URL"):
        log.resume(record.id, base_url="http://127.0.0.1:9")
    log.delete(record.id)
    assert log.runs() == []


def test_a_sample_round_trips_with_its_row_numbers_and_fingerprint(tmp_path: Path) -> None:
    text = "browserId,email,tier,score\nb1,,gold,1\n,x@example.com,,2.5\nb3,b3@example.com,silver,\nb4,,007,true\n"
    sample = read_guests(io.StringIO(text))
    assert [g.row for g in sample.guests] == [1, 2, 4] and len(sample.problems) == 1
    back = read_sample(write_sample(sample, tmp_path / "guests.jsonl"))
    assert [g.row for g in back.guests] == [1, 2, 4]
    assert back.fingerprint == sample.fingerprint and back.columns == sample.columns
    generated = generate_guests(50, seed=9)
    assert read_sample(write_sample(generated, tmp_path / "g.jsonl")).fingerprint == generated.fingerprint


def test_a_damaged_sample_file_is_a_run_store_error(tmp_path: Path) -> None:
    (tmp_path / "guests.jsonl").write_text("not json\n")
    with pytest.raises(RunStoreError, match="cannot be read"):
        read_sample(tmp_path / "guests.jsonl")
