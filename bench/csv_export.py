"""What neutralising formula cells costs a CSV export (``flowlab.csvsafe``), on a 100,000-guest run.

    .venv/bin/python bench/csv_export.py [--guests 100000] [--repeat 3]

Builds a synthetic run (no network) whose rows look like the demo experiment's (a 1.5 kB JSON body, a
variant, an offer, three sample columns), once with a formula in the body and a sample cell of every 50th
row (every chunk has some: the worst case) and once with none (the usual case). Then it times
``RunStore.export("run.csv")`` (chunked Arrow tables → ``safe_table`` → pyarrow's CSV writer) against the
same chunks written without ``safe_table``, and ``.parquet`` for scale. Best of ``--repeat``; the numbers
vary with the machine's load, which is printed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def build(path: Path, n: int, *, every: int) -> None:
    from flowlab.batch.runs import GuestResult, RunMeta, RunStore

    body = '{"variant": "%s", "offers": [{"name": "Free shipping", "text": "' + "x" * 1400 + '"}]}'
    meta = RunMeta("checkout_ab_test", "http://127.0.0.1:9", "fp", n, extra_columns=("tier", "note", "delta"))
    with RunStore.create(path, meta) as store:
        for start in range(0, n, 10_000):
            store.write(
                GuestResult(
                    row=i, guest=f"guest-{i}", identity="browserId", status_code=200, ok=True,
                    variant="AB"[i % 2], offers=["Free shipping"], latency_ms=12.5, attempts=1,
                    body=("=HYPERLINK(1)" if i % every == 0 else body % "AB"[i % 2]),
                    extra={"tier": "gold", "note": "@SUM(1)" if i % every == 0 else "ok", "delta": -(i % 7)},
                )
                for i in range(start, min(start + 10_000, n))
            )  # fmt: skip


def plain_csv(store_path: Path, out: Path) -> None:
    """The export as it was before neutralising: the same chunks, straight to pyarrow's writer."""
    import pyarrow.csv as pa_csv

    from flowlab.batch.runs import RunStore, _offers_as_json

    with RunStore.open(store_path) as store:
        writer = None
        for table in store.batches():
            table = _offers_as_json(table)
            writer = writer or pa_csv.CSVWriter(str(out), table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()


def best(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from flowlab.batch.runs import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, every in (("formulas in every chunk", 50), ("no formulas", args.guests + 1)):
            store_path = work / f"run-{every}.sqlite"
            build(store_path, args.guests, every=every)

            def safe(path: Path = store_path) -> None:
                with RunStore.open(path) as store:
                    store.export(work / "safe.csv")

            def parquet(path: Path = store_path) -> None:
                with RunStore.open(path) as store:
                    store.export(work / "run.parquet")

            def plain(path: Path = store_path) -> None:
                plain_csv(path, work / "plain.csv")

            t_plain = best(plain, args.repeat)
            t_safe = best(safe, args.repeat)
            t_parquet = best(parquet, args.repeat)
            size = (work / "safe.csv").stat().st_size / 1e6
            print(
                f"{args.guests:,} guests, {label}, CSV {size:.0f} MB; load average {os.getloadavg()[0]:.2f}"
            )
            print(f"  CSV, verbatim (before):    {t_plain:6.2f} s")
            print(f"  CSV, formulas neutralised: {t_safe:6.2f} s  ({t_safe / t_plain:.2f}x)")
            print(f"  Parquet (exact values):    {t_parquet:6.2f} s")


if __name__ == "__main__":
    main()
