"""The run store: rows, progress, read-outs, exports, and refusing what is not this run."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pandas as pd
import pytest

from flowlab.batch.runs import MAX_BODY_CHARS, RESULT_COLUMNS, GuestResult, RunMeta, RunStore
from flowlab.errors import RunStoreError

META = RunMeta(
    friendly_id="checkout_ab_test",
    base_url="http://127.0.0.1:9",
    sample_fingerprint="fp-1",
    total=6,
    defaults={"channel": "WEB", "language": None},
    extra_columns=("segment", "outcome", "variant"),
)


def result(row: int, *, ok: bool = True, error_type: str = "", **fields: object) -> GuestResult:
    values: dict[str, object] = {
        "guest": f"b-{row}",
        "identity": "browserId",
        "status_code": 200 if ok else (503 if error_type.startswith("http") else None),
        "ok": ok,
        "variant": "A" if row % 2 else "B",
        "variant_source": "field",
        "offers": ["Free shipping"] if ok else [],
        "latency_ms": 12.5,
        "attempts": 1,
        "error": "" if ok else "it broke",
        "error_type": error_type,
        "body": '{"variant": "A"}',
        "execution_ref": f"x-{row}",
        "channel": "WEB",
        "extra": {
            "segment": "gold" if row < 3 else "none",
            "outcome": row * 1.5 if row > 1 else 1,
            "variant": "exp",
        },
    }
    values.update(fields)
    return GuestResult(row=row, **values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore.create(tmp_path / "run.sqlite", META)


def test_rows_progress_and_replacing_a_row(store: RunStore) -> None:
    store.write(
        [
            result(1),
            result(2),
            result(3, ok=False, error_type="timeout"),
            result(4, ok=False, error_type="http_503"),
        ]
    )
    progress = store.progress()
    assert (progress.total, progress.done, progress.ok, progress.failed) == (6, 4, 2, 2)
    assert progress.errors_by_type == {"timeout": 1, "http_503": 1}
    assert progress.status == "running" and progress.rps > 0 and progress.eta_s is not None
    assert store.done_rows() == {1, 2, 3, 4} and store.failed_rows() == {3, 4}
    store.write([result(3, attempts=2)])  # a re-run replaces the row, never adds one
    assert store.done_rows() == {1, 2, 3, 4} and store.failed_rows() == {4}
    assert store.progress().errors_by_type == {"http_503": 1}
    store.set_status("cancelled")
    assert store.meta.status == "cancelled" and store.meta.finished and store.progress().rps == 0


def test_dataframe_has_typed_columns_and_expanded_sample_columns(store: RunStore) -> None:
    store.write([result(2), result(1), result(3, ok=False, error_type="connection")])
    frame = store.to_dataframe()
    assert list(frame.columns) == [*RESULT_COLUMNS, "segment", "outcome", "sample_variant"]
    assert list(frame["row"]) == [1, 2, 3]
    assert list(frame["ok"]) == [True, True, False]
    assert frame["offers"].tolist() == [["Free shipping"], ["Free shipping"], []]
    assert frame["offer_count"].tolist() == [1, 1, 0]
    assert frame["status_code"].isna().tolist() == [False, False, True]
    assert frame["outcome"].tolist() == [1.0, 3.0, 4.5]  # integers and reals: one float column
    assert frame["sample_variant"].tolist() == ["exp"] * 3  # renamed: "variant" is a result column
    assert str(frame["finished_at"].dt.tz) == "UTC"
    picked = store.to_dataframe(columns=["variant", "segment"])
    assert list(picked.columns) == ["variant", "segment"] and len(picked) == 3
    with pytest.raises(KeyError, match="no column 'nope'"):
        store.to_dataframe(columns=["nope"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_exports_are_written_in_chunks_and_read_back(store: RunStore, tmp_path: Path, suffix: str) -> None:
    store.write([result(r, ok=r % 3 != 0, error_type="" if r % 3 else "timeout") for r in range(1, 7)])
    path = store.export(tmp_path / f"out{suffix}", chunk_rows=4)
    back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert back["row"].tolist() == [1, 2, 3, 4, 5, 6]
    assert back["ok"].tolist() == [True, True, False, True, True, False]
    assert list(back.columns) == list(store.to_dataframe().columns)
    offers = back["offers"].tolist()
    assert offers[0] == '["Free shipping"]' if suffix == ".csv" else list(offers[0]) == ["Free shipping"]
    assert not (tmp_path / f"out{suffix}.partial").exists()


def test_an_empty_run_exports_its_columns(store: RunStore, tmp_path: Path) -> None:
    assert pd.read_csv(store.export(tmp_path / "empty.csv")).columns.tolist() == list(RESULT_COLUMNS)
    assert store.to_dataframe().empty


def test_long_bodies_are_cut_and_marked(store: RunStore) -> None:
    store.write([result(1, body="x" * (MAX_BODY_CHARS + 10))])
    body = store.to_dataframe(columns=["body"])["body"][0]
    assert body.endswith("…[truncated]") and len(body) == MAX_BODY_CHARS + len("…[truncated]")


def test_create_refuses_an_unfinished_run_and_replaces_a_finished_one(
    store: RunStore, tmp_path: Path
) -> None:
    store.close()
    store = RunStore.create(store.path, META)  # an unfinished run without rows has nothing to keep
    store.write([result(1)])
    with pytest.raises(RunStoreError, match=r"holds an unfinished run \(1 of 6 guests, running\): resume it"):
        RunStore.create(store.path, META)
    store.set_status("done")
    store.close()
    again = RunStore.create(store.path, META)
    assert again.done_rows() == set() and again.meta.status == "running"


def test_open_refuses_what_is_not_a_run_store(tmp_path: Path) -> None:
    with pytest.raises(RunStoreError, match="no run store at"):
        RunStore.open(tmp_path / "missing.sqlite")
    (tmp_path / "text.sqlite").write_text("hello, not a database")
    with pytest.raises(RunStoreError, match="is not a Flow Lab run store"):
        RunStore.open(tmp_path / "text.sqlite")
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE t (x)")
    other.close()
    with pytest.raises(RunStoreError, match="is not a Flow Lab run store"):
        RunStore.open(tmp_path / "other.sqlite")
    other = sqlite3.connect(tmp_path / "other.sqlite")  # refused without being touched
    assert other.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
    assert other.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    other.close()


def test_a_resume_must_be_the_same_run(store: RunStore) -> None:
    reopened = RunStore.open(store.path)
    reopened.check_same_run(META)
    reopened.check_same_run(RunMeta("checkout_ab_test", "http://127.0.0.1:9/", "fp-1", 6, {"channel": "WEB"}))
    other = RunMeta("hero_banner_default", "http://127.0.0.1:9", "fp-2", 6, {"channel": "MOBILE_APP"})
    with pytest.raises(RunStoreError) as raised:
        reopened.check_same_run(other)
    message = str(raised.value)
    assert "holds another run" in message
    assert "friendlyId is 'hero_banner_default', the stored run's is 'checkout_ab_test'" in message
    assert "guest sample is 'fp-2'" in message and "request defaults" in message


def test_one_writer_at_a_time(store: RunStore) -> None:
    other = RunStore.open(store.path)
    with store.claim():
        with pytest.raises(RunStoreError, match="is being written by another batch"), other.claim():
            pass
    with other.claim():  # released when the first batch ends
        pass


def test_progress_can_be_polled_while_rows_are_written(store: RunStore) -> None:
    poller = RunStore.open(store.path)
    errors: list[BaseException] = []
    seen: list[int] = []

    def poll() -> None:
        try:
            for _ in range(50):
                seen.append(poller.progress().done)
                poller.to_dataframe(columns=["row", "ok"])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=poll)
    thread.start()
    for start in range(1, 3001, 100):
        store.write([result(r) for r in range(start, start + 100)])
    thread.join()
    assert not errors
    assert seen == sorted(seen) and store.progress().done == 3000


def test_a_schema_2_store_opens_with_empty_edge_columns_and_takes_edge_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with RunStore.create(path, META) as store:
        store.write([result(1)])
    conn = sqlite3.connect(path)  # what a schema-2 store (before Edge batches) looks like
    for column in ("event_type", "segments", "destinations", "attributes"):
        conn.execute(f'ALTER TABLE results DROP COLUMN "{column}"')
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    with RunStore.open(path) as store:
        assert store.meta.provider == "personalize"
        edge = GuestResult(2, "x@example.com", "Email", 200, True, event_type="commerce.checkouts",
                           segments=["s2", "s1"], destinations={"web": {"segments": ["s1", "s2"], "attributes": {}}},
                           attributes={"tier": "gold"})  # fmt: skip
        store.write([edge])
        frame = store.to_dataframe()
        assert frame["segments"].tolist() == [[], ["s2", "s1"]]
        assert frame["event_type"].tolist() == ["", "commerce.checkouts"]
        assert frame["attributes"].tolist() == ["", '{"tier":"gold"}']
        exported = pd.read_csv(store.export(tmp_path / "old.csv"), keep_default_na=False)
        assert exported["segments"].tolist() == ["[]", '["s2","s1"]']


def test_run_meta_records_the_provider_and_a_resume_checks_it() -> None:
    edge = RunMeta("ds-1", "http://127.0.0.1:9", "fp", 3, provider="edge")
    assert RunMeta.from_record(edge.to_record()) == edge
    assert (
        RunMeta.from_record({k: v for k, v in META.to_record().items() if k != "provider"}).provider
        == "personalize"
    )
    differences = edge.differences(RunMeta("ds-1", "http://127.0.0.1:9", "fp", 3))
    assert differences == ["provider is 'personalize', the stored run's is 'edge'"]
