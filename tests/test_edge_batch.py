"""AEP Edge batches: the shared runner with ``EdgeProvider``, against the real sandbox over loopback."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from flowlab.admin import SandboxAdmin
from flowlab.batch.runner import BatchOptions, BatchStopped, run_batch_to_file, start_batch
from flowlab.batch.runs import RunStore
from flowlab.batch.samples import edge_sample_from_sandbox, generate_guests, read_guests
from flowlab.edge.auth import AccessToken
from flowlab.edge.provider import EdgeProvider
from flowlab.errors import SampleError
from flowlab.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[1]
HEADER = ["identity.namespace", "identity.id", "eventType", "data.x", "country"]


@pytest.fixture(scope="module")
def edge_sandbox() -> Iterator[SandboxServer]:
    """A sandbox of this module's own: Edge batches record events on its profiles."""
    with SandboxServer(seed=9) as server:
        yield server


@pytest.fixture(scope="module")
def with_attributes(edge_sandbox: SandboxServer) -> str:
    """The alias of the sandbox's "With Attributes" destination."""
    with SandboxAdmin(base_url=edge_sandbox.url) as admin:
        destinations = admin.info()["edge"]["destinations"]
    return str(next(d["alias"] for d in destinations if d["withAttributes"]))


def write_csv(path: Path, base_url: str, n: int) -> Path:
    """``n`` known profiles of the sandbox as an Edge CSV with the issue's columns."""
    profiles = edge_sample_from_sandbox(base_url, limit=n, new_visitors=False)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for i, guest in enumerate(profiles.guests):
            writer.writerow(
                [guest.kind, guest.value, "commerce.checkouts", i % 7, guest.extra["countryCode"]]
            )
    return path


@pytest.fixture(scope="module")
def sample_csv(edge_sandbox: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("edge") / "identities.csv", edge_sandbox.url, 300)


def rows(path: Path) -> list[dict[str, object]]:
    with RunStore.open(path) as store:
        return list(store.to_dataframe().to_dict("records"))


@pytest.mark.parametrize("authenticated", [True, False])
def test_edge_batch_rows_carry_segments_and_attributes_only_with_a_token(
    edge_sandbox: SandboxServer, sample_csv: Path, with_attributes: str, tmp_path: Path, authenticated: bool
) -> None:
    sample = read_guests(sample_csv)
    assert sample.provider == "edge" and len(sample) == 300 and not sample.problems
    assert sample.guests[0].params == {"data": {"x": 0}} and sample.columns == ("country",)
    provider = EdgeProvider.for_sandbox(edge_sandbox.url, authenticated=authenticated)
    options = BatchOptions(base_url=edge_sandbox.url, provider=provider, concurrency=20)
    summary = run_batch_to_file(sample, options, tmp_path / "run.parquet", progress=False)
    assert (summary.ok, summary.failed) == (300, 0), summary.describe()
    store = tmp_path / "run.parquet.sqlite"
    with RunStore.open(store) as opened:
        meta = opened.meta
    assert (meta.provider, meta.friendly_id) == ("edge", provider.datastream_id)
    found = rows(store)
    assert [r["row"] for r in found] == list(range(1, 301))
    for row in found:
        segments = row["segments"]
        assert isinstance(segments, list) and segments and segments == sorted(set(segments)), row
        assert row["event_type"] == "commerce.checkouts" and row["identity"] in (
            "Email",
            "ECID",
            "CRMID",
            "Phone",
        )
        destinations = json.loads(str(row["destinations"]))
        attributes = json.loads(str(row["attributes"]))
        assert set(segments) == {s for d in destinations.values() for s in d["segments"]}
        assert (row["variant"], row["channel"]) == ("", "")  # callFlows columns stay empty
        if authenticated:
            assert destinations[with_attributes]["attributes"] and "countryCode" in attributes
            assert attributes["countryCode"] == row["country"]
        else:
            assert attributes == {} and all(not d["attributes"] for d in destinations.values())
    table = pq.read_table(tmp_path / "run.parquet")
    assert pa.types.is_list(table.schema.field("segments").type)
    assert table.column("segments").to_pylist() == [r["segments"] for r in found]


def test_cancel_then_resume_calls_each_identity_once(
    edge_sandbox: SandboxServer, sample_csv: Path, tmp_path: Path
) -> None:
    sample = read_guests(sample_csv)
    store = tmp_path / "run.sqlite"
    options = BatchOptions(
        base_url=edge_sandbox.url, provider=EdgeProvider.for_sandbox(edge_sandbox.url), concurrency=4, rps=150
    )
    handle = start_batch(sample, options, store)
    deadline = time.monotonic() + 20
    while handle.progress().done < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    handle.cancel()
    assert (
        handle.wait(10) and handle.error is None and handle.summary is not None and handle.summary.cancelled
    )
    first = {r["row"]: r["finished_at"] for r in rows(store)}
    assert 30 <= len(first) < 300
    again = BatchOptions(base_url=edge_sandbox.url, provider=EdgeProvider.for_sandbox(edge_sandbox.url))
    summary = run_batch_to_file(sample, again, store, resume=True, progress=False)
    assert (summary.called, summary.ok, summary.total) == (300 - len(first), 300, 300)
    after = {r["row"]: r["finished_at"] for r in rows(store)}
    assert sorted(after) == list(range(1, 301))
    assert all(after[r] == first[r] for r in first)  # the rows done before were not called again


def test_a_refused_token_is_refreshed_once(
    edge_sandbox: SandboxServer, sample_csv: Path, tmp_path: Path
) -> None:
    provider = EdgeProvider.for_sandbox(edge_sandbox.url)
    stale = AccessToken(SecretStr("expired-or-revoked"), 3600, time.monotonic() + 3600)
    provider.tokens.put(stale)  # the cache believes in it; the Edge answers 401
    sample = read_guests(sample_csv)
    options = BatchOptions(base_url=edge_sandbox.url, provider=provider, concurrency=10)
    summary = run_batch_to_file(sample, options, tmp_path / "run.sqlite", progress=False)
    assert (summary.ok, summary.failed) == (300, 0), summary.describe()
    assert provider.tokens.fetches == 2  # the stale one, then exactly one refresh for all guests
    assert {r["attempts"] for r in rows(tmp_path / "run.sqlite")} == {1}


def test_a_bad_datastream_stops_the_run_at_once_with_the_exeg_message(
    edge_sandbox: SandboxServer, sample_csv: Path, tmp_path: Path
) -> None:
    sample = read_guests(sample_csv)
    options = BatchOptions(
        base_url=edge_sandbox.url, provider=EdgeProvider("no-such-datastream"), concurrency=5
    )
    started = time.monotonic()
    with pytest.raises(BatchStopped, match="EXEG-0003-400 Invalid datastream ID") as stopped:
        run_batch_to_file(sample, options, tmp_path / "run.csv", progress=False)
    assert "no-such-datastream" in str(stopped.value) and time.monotonic() - started < 5
    with RunStore.open(tmp_path / "run.csv.sqlite") as store:
        assert store.progress().done == 0 and store.in_flight_rows() == set()
    fixed = BatchOptions(base_url=edge_sandbox.url, provider=EdgeProvider.for_sandbox(edge_sandbox.url))
    assert (
        run_batch_to_file(sample, fixed, tmp_path / "run.csv", progress=False).ok == 300
    )  # no rows to resume


def test_a_sample_of_the_wrong_kind_is_refused_before_anything_is_called(
    edge_sandbox: SandboxServer, sample_csv: Path, tmp_path: Path
) -> None:
    edge = BatchOptions(base_url=edge_sandbox.url, provider=EdgeProvider("ds"))
    with pytest.raises(SampleError, match="callFlows guest sample: an Edge batch needs identity.namespace"):
        run_batch_to_file(generate_guests(3, seed=1), edge, tmp_path / "a.csv", progress=False)
    callflows = BatchOptions(base_url=edge_sandbox.url, client_key="k", friendly_id="checkout_ab_test")
    with pytest.raises(SampleError, match="AEP Edge sample .*--provider edge"):
        start_batch(read_guests(sample_csv), callflows, tmp_path / "b.sqlite")
    assert not (tmp_path / "a.csv.sqlite").exists() and not (tmp_path / "b.sqlite").exists()


def test_malformed_edge_csv_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "identity.namespace,identity.id,eventType,data.cart.value,segment\n"
        "Email,ok@example.com,commerce.checkouts,12.5,a\n"
        "Email,,commerce.checkouts,1,b\n"
        "Email,not-an-email,,1,c\n"
        "Bad Namespace!,x,,1,d\n"
    )
    sample = read_guests(path)
    assert [g.value for g in sample.guests] == ["ok@example.com"]
    assert sample.guests[0].params == {"data": {"cart": {"value": 12.5}}}
    messages = [str(p) for p in sample.problems]
    assert messages[0].startswith("row 2 (line 3), column identity.id: identity.id is empty")
    assert messages[1].startswith("row 3 (line 4), column identity.id: Email 'not-an-email'")
    assert messages[2].startswith("row 4 (line 5), column identity.namespace: 'Bad Namespace!'")
    for header, wanted in (
        (
            "identity.namespace,identity.id,xdm.eventType",
            "column 'xdm.eventType' cannot set eventType: use the eventType",
        ),
        ("identity.namespace,identity.id,data.", "column 'data.' needs a field name"),
        ("identity.namespace,email", "has an identity.namespace column but no identity.id column"),
        ("identity.namespace,identity.id,data.a,data.a.b", "columns data.a and data.a.b conflict"),
    ):
        path.write_text(header + "\nEmail,x@example.com,1,2\n")
        with pytest.raises(SampleError, match=wanted.replace(".", r"\.").replace("(", r"\(")):
            read_guests(path)


def test_cli_edge_batch_writes_a_csv_with_segments(sample_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    done = subprocess.run(
        [sys.executable, "-m", "flowlab", "batch", "--provider", "edge", "--guests", str(sample_csv),
         "--out", str(out), "--concurrency", "20", "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "300 identities: 300 ok, 0 failed" in done.stderr and "Traceback" not in done.stderr
    with out.open(newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 300 and all(orjson.loads(r["segments"]) for r in records)
    assert {"event_type", "segments", "destinations", "attributes", "country"} <= set(records[0])
    wrong = subprocess.run(
        [sys.executable, "-m", "flowlab", "batch", "--provider", "edge", "--guests", str(sample_csv),
         "--out", str(tmp_path / "x.csv"), "--base-url", "http://127.0.0.1:9", "--no-auth", "--quiet"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert wrong.returncode == 2 and "--datastream-id is required" in wrong.stderr, wrong.stderr


def test_cli_sample_then_batch_prints_membership_by_a_dimension(tmp_path: Path) -> None:
    """The CLI path of #9's "done when": a sample of sandbox identities, a batch, rates by dimension."""

    def flowlab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flowlab", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    made = flowlab("sample", "--provider", "edge", "--size", "400", "--event-type", "commerce.checkouts",
                   "--out", "ids.csv")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "400 identities in ids.csv" in made.stderr and "loyaltyTier" in made.stderr
    with (tmp_path / "ids.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 400 and {r["eventType"] for r in rows} == {"commerce.checkouts"}

    done = flowlab("batch", "--provider", "edge", "--guests", "ids.csv", "--out", "out.csv", "--quiet",
                   "--by", "loyaltyTier")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("audience membership by loyaltyTier")
    gold = [line.split() for line in lines if line.split()[:1] == ["gold"] and "Gold and platinum" in line]
    assert gold and gold[0][-3] == "100.0%"  # every gold profile is in the batch audience "Gold and platinum"
    checkout = [line for line in lines if "Checking out today" in line]
    assert checkout and all("100.0%" in line for line in checkout)  # the edge audience, on this very event

    wrong = flowlab("batch", "--provider", "edge", "--guests", "ids.csv", "--out", "x.csv", "--by", "nope")
    assert wrong.returncode == 2 and "--by nope: not a column of ids.csv; pick one of:" in wrong.stderr
    bad = flowlab("sample", "--provider", "edge", "--size", "0", "--out", "ids.csv")
    assert bad.returncode == 2 and "--size must be 1 or more" in bad.stderr and "Traceback" not in bad.stderr
