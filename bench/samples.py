"""Benchmark reading guest CSVs: wide files are refused fast, and reading stays linear in the file size.

    .venv/bin/python bench/samples.py

Prints seconds for: a 100,000-column header (refused: over ``MAX_COLUMNS``), a header at the column cap
with 100,000 short rows (each used to be padded to the header's width: O(rows x columns)), the same rows
under a one-column header (the linear baseline), and 100,000 generated guests (the everyday case).
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flowlab.batch.samples import MAX_COLUMNS, generate_guests, read_guests
from flowlab.errors import SampleError


def timed(label: str, make: Callable[[], str]) -> None:
    text = make()
    started = time.perf_counter()
    try:
        sample = read_guests(io.StringIO(text))
        outcome = f"{len(sample):,} guests"
    except SampleError as exc:
        outcome = f"refused: {exc}"
    elapsed = time.perf_counter() - started
    print(f"{label:<52} {len(text) / 1e6:7.1f} MB {elapsed:7.2f} s  {outcome[:90]}", flush=True)


def main() -> None:
    rows = 100_000
    timed(
        "100,000 columns, 300 short rows",
        lambda: "browserId," + ",".join(f"c{i}" for i in range(99_999)) + "\n" + "b-1\n" * 300,
    )
    timed(
        f"{MAX_COLUMNS:,} columns, {rows:,} short rows",
        lambda: "browserId," + ",".join(f"c{i}" for i in range(MAX_COLUMNS - 1)) + "\n" + "b-1,x\n" * rows,
    )
    timed(f"2 columns, {rows:,} rows (the same cells)", lambda: "browserId,c0\n" + "b-1,x\n" * rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_guests(rows, seed=3).to_csv(Path(tmp) / "guests.csv")
        timed(f"{rows:,} generated guests (overrides, params, extras)", path.read_text)


if __name__ == "__main__":
    main()
