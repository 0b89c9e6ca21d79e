"""Time the Analysis page on a 100,000-guest run: first render, then re-renders after widget changes.

    .venv/bin/python bench/analysis_page.py [--guests 100000] [--keep DIR]

Builds a synthetic run (no network): a generated sample of ``--guests`` guests, recorded in a fresh run log
(``RunLog.prepare``) and filled through ``RunStore.write`` with A/B results that look like the demo
experiment's (a 50/50 split, one offer per variant, log-normal latencies, 1% of calls failing with 503),
plus an outcomes CSV (B converts ~25% better); finishing the run writes its columnar copy
(``RunStore.write_columns``). It times reading the run on its own: row by row (the read the page used
before; ``batches()``, still used for exports) against column by column from SQLite
(``RunStore.to_dataframe``), with and without the columns the page never reads, and from the columnar copy.
Then it drives the real app with Streamlit's ``AppTest`` through the entry point, as the tests do, and
prints the time of:

* the app's start, and when the page's modules (altair, scipy.stats, pyarrow.parquet: once per process)
  are ready: ``app.py`` imports them in a background thread while the first page shows;
* the first render of the run (reads the columnar copy and computes every section; cached afterwards);
* uploading the outcomes CSV (joins 100,000 outcomes);
* a plain re-render, and re-renders after changing the breakdown dimension, the level cap, and a run-table
  filter (each computes one new aggregate from the cached run).

Goals: the first render of a 100,000-guest run < 1 s (issue #8), every re-render < 1.5 s. Numbers vary
with the machine's load; the load average is printed with each verdict.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.5
FIRST_GOAL_S = 1.0


def build(data_dir: Path, n: int) -> Path:
    """A run of ``n`` guests in ``data_dir``'s run log, and an outcomes CSV for it; returns the CSV."""
    from flowlab.batch.runlog import RunLog
    from flowlab.batch.runner import BatchOptions
    from flowlab.batch.runs import GuestResult, RunStore
    from flowlab.batch.samples import generate_guests

    sample = generate_guests(n, seed=7)
    options = BatchOptions(
        base_url="https://tenant.example", client_key="bench", friendly_id="checkout_ab_test"
    )
    log = RunLog(data_dir / "runs")
    run_id = log.prepare(sample, options, name=f"bench · {n:,} guests", target="bench tenant")
    rng = random.Random(7)
    offers = {"A": "Free shipping", "B": "10% off your order"}
    outcomes_path = data_dir / "outcomes.csv"
    with (
        RunStore.create(log.store_path(run_id), options.run_meta(sample)) as store,
        outcomes_path.open("w", newline="") as out,
    ):
        writer = csv.writer(out)
        writer.writerow(["guest", "converted", "revenue"])
        batch: list[GuestResult] = []
        for guest in sample.guests:
            variant = "A" if rng.random() < 0.5 else "B"
            ok = rng.random() > 0.01
            body = f'{{"variant": "{variant}", "decisionOffers": [{{"name": "{offers[variant]}"}}]}}'
            batch.append(
                GuestResult(
                    row=guest.row, guest=guest.value, identity=guest.kind, status_code=200 if ok else 503, ok=ok,
                    variant=variant if ok else "", variant_source="field" if ok else "",
                    offers=[offers[variant]] if ok else [], latency_ms=rng.lognormvariate(3.2, 0.4), attempts=1,
                    error="" if ok else "503 Service Unavailable", error_type="" if ok else "http_503",
                    body=body if ok else "", channel=guest.fields["channel"],
                    point_of_sale=guest.fields["pointOfSale"], language=guest.fields["language"],
                    currency_code=guest.fields.get("currencyCode", ""), extra=guest.extra,
                )
            )  # fmt: skip
            converted = rng.random() < (0.05 if variant == "A" else 0.0625)
            writer.writerow(
                [
                    guest.value,
                    "yes" if converted else "no",
                    f"{rng.uniform(30, 120):.2f}" if converted else "",
                ]
            )
            if len(batch) >= 5000:
                store.write(batch)
                batch = []
        store.write(batch)
        store.set_status("done")
    return outcomes_path


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def reads(data_dir: Path) -> None:
    """The run read on its own, best of three each: row by row (what the page loaded before), column by
    column (``RunStore.to_dataframe``), and column by column without the columns the page never reads."""
    import pandas as pd
    import pyarrow as pa

    from flowlab.batch.runlog import RunLog
    from flowlab.batch.runs import RunStore
    from ui.runs import _NOT_ANALYSED

    path = RunLog(data_dir / "runs").runs()[0].path
    with RunStore.open(path) as store:
        all_but_body = list(store.to_dataframe(exclude=["body"]).columns)

        def row_by_row() -> pd.DataFrame:
            table = pa.concat_tables(list(store.batches(all_but_body)))
            frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
            frame["offers"] = frame["offers"].map(lambda v: [] if v is None else list(v))
            return frame

        copy = store.columns_path.with_name(store.columns_path.name + ".bench")
        store.columns_path.rename(copy)  # the SQLite reads first, without the columnar copy
        ways = (
            (f"row by row, {len(all_but_body)} columns (before)", row_by_row),
            (f"column by column, {len(all_but_body)} columns", lambda: store.to_dataframe(all_but_body)),
            ("column by column, the page's columns", lambda: store.to_dataframe(exclude=_NOT_ANALYSED)),
            (
                "columnar copy, the page's columns",
                lambda: store.to_dataframe(exclude=_NOT_ANALYSED, shared_offers=True),
            ),
        )
        times = []
        for label, read in ways:
            if label.startswith("columnar"):
                copy.rename(store.columns_path)
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                read()
                best = min(best, time.perf_counter() - started)
            times.append(best)
            print(f"read the run: {label:<37} {best:6.2f} s")
        print(
            f"    SQLite column by column {times[0] / times[2]:.1f}x faster than row by row; the columnar copy "
            f"{times[2] / times[3]:.0f}x faster than that (load average {_load():.2f})"
        )


def timed(label: str, action, results: list[tuple[str, float]]) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    at = action()
    elapsed = time.perf_counter() - started
    if at.exception:
        raise SystemExit(f"{label}: the page raised {at.exception[0].value}")
    results.append((label, elapsed))
    print(f"{label:<46} {elapsed:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guests", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="build the run in this folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.keep or Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        os.environ["FLOWLAB_DATA_DIR"] = str(data_dir)
        started = time.perf_counter()
        outcomes_csv = build(data_dir, args.guests)
        print(f"built a {args.guests:,}-guest run in {time.perf_counter() - started:.1f} s ({data_dir})")

        sys.path.insert(0, str(ROOT))
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        started = time.perf_counter()
        at.run()
        print(f"{'app start (the Preview page)':<46} {time.perf_counter() - started:6.2f} s")
        warm = [t for t in threading.enumerate() if t.name == "flowlab-warm-imports"]
        for thread in warm:
            thread.join()
        ready = time.perf_counter() - started
        print(
            f"{'page modules imported (app.py warms them up)':<46} {ready:6.2f} s after the start "
            + ("(waited for the warm-up thread)" if warm else "(done during the app's start)")
        )
        at.switch_page("app_pages/analysis.py")
        results: list[tuple[str, float]] = []
        timed("first render (loads the run)", at.run, results)
        first = results[0][1]
        verdict = "meets" if first < FIRST_GOAL_S else "MISSES"
        print(
            f"    first render {first:.2f} s: {verdict} the {FIRST_GOAL_S} s goal (load average {_load():.2f})"
        )
        upload = at.file_uploader(key="analysis_outcomes_csv") if _has(at, "analysis_outcomes_csv") else None
        if upload is None:
            at.segmented_control(key="analysis_outcomes").set_value("csv")
            at.run()
            upload = at.file_uploader(key="analysis_outcomes_csv")
        upload.set_value(("outcomes.csv", outcomes_csv.read_bytes(), "text/csv"))
        timed("upload outcomes (reads and joins them)", at.run, results)
        lift = [i.value for i in [*at.success, *at.info] if "converts" in i.value]
        print(f"    {lift[0].replace(chr(92), '') if lift else 'no lift sentence!'}")
        first_renders = len(results)
        timed("re-render, nothing changed", at.run, results)
        dims = at.selectbox(key="analysis_dimension")
        timed("re-render, breakdown by tier", lambda: dims.set_value("tier").run(), results)
        levels = at.number_input(key="analysis_levels")
        timed("re-render, 3 levels shown", lambda: levels.set_value(3).run(), results)
        variants = at.multiselect(key="analysis_filter_variants")
        timed("re-render, run table filtered to B", lambda: variants.set_value(["B"]).run(), results)
        status = at.selectbox(key="analysis_filter_ok")
        timed("re-render, run table: failed calls only", lambda: status.set_value("failed").run(), results)
        rerenders = [t for _, t in results[first_renders:]]
        worst = max(rerenders)
        verdict = "meets" if worst < GOAL_S else "MISSES"
        print(f"slowest re-render {worst:.2f} s: {verdict} the {GOAL_S} s goal (load average {_load():.2f})")
        reads(data_dir)


def _has(at, key: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        at.file_uploader(key=key)
    except KeyError:
        return False
    return True


if __name__ == "__main__":
    main()
