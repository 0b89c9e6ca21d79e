"""A finished run's columnar copy (#8): the Analysis page's fast first read, identical to the SQLite one."""

from __future__ import annotations

import stat
from pathlib import Path

import pandas as pd

from flowlab.batch.runner import BatchOptions, run_batch_to_file, start_batch
from flowlab.batch.runs import GuestResult, RunMeta, RunStore
from flowlab.batch.samples import generate_guests
from flowlab.sandbox import SandboxServer

PAGE_EXCLUDES = ("body", "identity", "variant_source", "offer_count", "execution_ref", "finished_at")

META = RunMeta(
    friendly_id="checkout_ab_test",
    base_url="http://127.0.0.1:9",
    sample_fingerprint="fp-1",
    total=4,
    extra_columns=("segment", "score"),
)


def result(row: int, *, ok: bool = True, offers: tuple[str, ...] = ("Free shipping",)) -> GuestResult:
    return GuestResult(
        row=row, guest=f"b-{row}", identity="browserId", status_code=200 if ok else 503, ok=ok,
        variant=("A" if row % 2 else "B") if ok else "", variant_source="field", offers=list(offers) if ok else [],
        latency_ms=10.0 + row, attempts=1, error="" if ok else "503", error_type="" if ok else "http_503",
        body='{"variant": "A"}', execution_ref=f"x-{row}", channel="WEB",
        extra={"segment": "gold" if row < 2 else "none", "score": row * 1.5},
    )  # fmt: skip


def reads_equal(store: RunStore, **kwargs: object) -> pd.DataFrame:
    """The copy's answer, checked against SQLite's for the same arguments (copy moved aside)."""
    fast = store.to_dataframe(**kwargs)  # type: ignore[arg-type]
    aside = store.columns_path.rename(store.columns_path.with_name("aside"))
    try:
        slow = store.to_dataframe(**kwargs)  # type: ignore[arg-type]
    finally:
        aside.rename(store.columns_path)
    pd.testing.assert_frame_equal(fast, slow)
    return fast


def test_finishing_a_run_writes_a_private_copy_that_reads_the_same(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "run.sqlite", META) as store:
        store.write([result(1), result(2, offers=("Free shipping", "Gift")), result(3, ok=False), result(4)])
        assert not store.columns_path.exists()  # a running run has none
        store.set_status("done")
        assert store.columns_path.is_file()
        assert stat.S_IMODE(store.columns_path.stat().st_mode) == 0o600
        page = reads_equal(store, exclude=PAGE_EXCLUDES)
        assert page["offers"].tolist() == [
            ["Free shipping"],
            ["Free shipping", "Gift"],
            [],
            ["Free shipping"],
        ]
        reads_equal(store, exclude=["body"])
        reads_equal(store, columns=["score", "variant", "offers"])
        shared = reads_equal(store, exclude=PAGE_EXCLUDES, shared_offers=True)
        assert shared["offers"][0] is shared["offers"][3]  # equal offers: one list
        assert store.to_dataframe(exclude=PAGE_EXCLUDES)["offers"][0] is not page["offers"][3]
        assert "body" in store.to_dataframe().columns  # the body is never in the copy: read from SQLite


def test_a_stale_copy_is_never_read(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "run.sqlite", META) as store:
        store.write([result(1), result(2)])
        store.set_status("done")
        store.write([result(3)])  # a row after the copy (no resume mark): the count differs
        assert store.to_dataframe(exclude=PAGE_EXCLUDES)["row"].tolist() == [1, 2, 3]
        store.mark_started()  # a resume: the copy goes
        assert not store.columns_path.exists()
        store.write([result(2, ok=False)])
        store.set_status("done")
        assert reads_equal(store, exclude=PAGE_EXCLUDES)["ok"].tolist() == [True, False, True]


def test_a_batch_run_leaves_a_copy_the_page_reads(fresh_sandbox: SandboxServer, tmp_path: Path) -> None:
    options = BatchOptions(
        base_url=fresh_sandbox.url, client_key=fresh_sandbox.client_key, friendly_id="checkout_ab_test"
    )
    handle = start_batch(generate_guests(200, seed=3), options, tmp_path / "run.sqlite")
    handle.wait()
    with RunStore.open(tmp_path / "run.sqlite") as store:
        assert store.columns_path.is_file()
        frame = reads_equal(store, exclude=PAGE_EXCLUDES, shared_offers=True)
    assert len(frame) == 200 and set(frame["variant"]) == {"A", "B"}


def test_a_cli_run_keeps_no_copy(fresh_sandbox: SandboxServer, tmp_path: Path) -> None:
    """The copy serves the app's Analysis page; writing it holds the run in memory, which the CLI avoids."""
    options = BatchOptions(
        base_url=fresh_sandbox.url, client_key=fresh_sandbox.client_key, friendly_id="checkout_ab_test"
    )
    summary = run_batch_to_file(
        generate_guests(200, seed=3), options, tmp_path / "run.sqlite", progress=False
    )
    with RunStore.open(summary.store_path) as store:
        assert store.meta.status == "done"
        assert not store.columns_path.exists()


def test_replacing_a_finished_run_removes_its_copy(tmp_path: Path) -> None:
    with RunStore.create(tmp_path / "run.sqlite", META) as store:
        store.write([result(1)])
        store.set_status("done")
        copy = store.columns_path
    assert copy.is_file()
    with RunStore.create(tmp_path / "run.sqlite", META) as again:
        assert not copy.exists()
        again.write([result(1), result(2)])
        assert again.to_dataframe(exclude=PAGE_EXCLUDES)["row"].tolist() == [1, 2]
