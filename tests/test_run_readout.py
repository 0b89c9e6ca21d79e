"""``RunStore.to_dataframe`` reads column by column; it must give exactly what the row-by-row read gives."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from flowlab.batch.runs import GuestResult, RunMeta, RunStore

META = RunMeta("checkout_ab_test", "http://127.0.0.1:9", "fp", 40, extra_columns=("tier", "score", "variant"))

# Sample values of every JSON kind, including mixed columns and awkward text.
EXTRAS: list[dict[str, Any]] = [
    {"tier": "gold", "score": 1, "variant": "exp", "vip": True, "tags": ["a", "b"], "note": None},
    {"tier": "none", "score": 2.5, "variant": "exp", "vip": False, "tags": {"k": 1}, "note": "x\u001fy"},
    {"tier": "Ünïcode ✓", "score": None, "vip": None, "note": 7, "mixed": True},
    {"score": 3, "mixed": "text", "only_null": None},
    {},
]


def result(row: int, rng: random.Random) -> GuestResult:
    ok = rng.random() > 0.3
    offers = rng.choice([[], ["Free shipping"], ["10% off", 'quote " and \\ backslash'], ["a\nb", "ç"]])
    return GuestResult(
        row=row,
        guest=f"g-{row}-\u001f-{rng.random()}",
        identity="browserId",
        status_code=200 if ok else rng.choice([None, 503]),
        ok=ok,
        variant=rng.choice(["A", "B", ""]),
        variant_source="field",
        offers=offers if ok else [],
        latency_ms=rng.lognormvariate(3.2, 0.4) if ok else rng.choice([None, 0.1 + 0.2]),
        attempts=rng.randint(0, 3),
        error="" if ok else "it broke, with a , and a \t",
        error_type="" if ok else "http_503",
        body='{"variant": "A"}',
        execution_ref=f"x-{row}",
        finished_at=1_764_607_913.0 + rng.random(),
        channel="WEB",
        extra=rng.choice(EXTRAS),
    )


def row_by_row(store: RunStore, columns: list[str] | None = None) -> pd.DataFrame:
    """The read the column reader replaces: Arrow tables built row by row (``RunStore.batches``)."""
    table = pa.concat_tables(list(store.batches(columns)))
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    for column in ("offers", "segments"):  # the list columns
        if column in frame.columns:
            frame[column] = frame[column].map(lambda v: [] if v is None else list(v))
    return frame


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    store = RunStore.create(tmp_path / "run.sqlite", META)
    rng = random.Random(8)
    rows = list(range(1, 41))
    rng.shuffle(rows)  # written out of order, as a concurrent batch does
    store.write([result(r, rng) for r in rows if r != 17])  # and with a gap
    return store


@pytest.mark.parametrize("chunk_rows", [1, 7, 39, 20_000])
def test_column_read_equals_row_read(store: RunStore, chunk_rows: int) -> None:
    frame = store.to_dataframe(chunk_rows=chunk_rows)
    pd.testing.assert_frame_equal(frame, row_by_row(store), check_exact=True)
    assert frame["row"].tolist() == [r for r in range(1, 41) if r != 17]
    sample = ["tier", "score", "sample_variant", "mixed", "note", "only_null", "tags", "vip"]
    assert list(frame.columns[-8:]) == sample  # the sample's order first, then the rest by name


def test_picked_columns_and_exact_floats(store: RunStore) -> None:
    columns = ["latency_ms", "offers", "score", "sample_variant", "ok", "finished_at"]
    frame = store.to_dataframe(columns, chunk_rows=5)
    pd.testing.assert_frame_equal(frame, row_by_row(store, columns), check_exact=True)
    with store._reader() as conn:  # the stored doubles, bit for bit (SQLite's JSON would round them)
        stored = [v for (v,) in conn.execute("SELECT latency_ms FROM results ORDER BY row")]
    assert [None if pd.isna(v) else v for v in frame["latency_ms"]] == stored
    with pytest.raises(KeyError, match="no column 'nope'"):
        store.to_dataframe(["variant", "nope"])


def test_offer_lists_are_not_shared_between_rows(store: RunStore) -> None:
    offers = store.to_dataframe(["offers"])["offers"]
    same = [cell for cell in offers if cell == ["Free shipping"]]
    assert len(same) > 1 and len({id(cell) for cell in same}) == len(same)


def test_excluded_columns_stay_in_sqlite(store: RunStore) -> None:
    frame = store.to_dataframe(exclude=("body", "identity", "finished_at"))
    columns = [c for c in store.to_dataframe().columns if c not in ("body", "identity", "finished_at")]
    assert list(frame.columns) == columns and "tags" in columns  # sample columns kept, found in the rows
    pd.testing.assert_frame_equal(frame, row_by_row(store, columns), check_exact=True)
