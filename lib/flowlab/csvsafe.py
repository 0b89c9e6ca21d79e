"""CSV that is safe to open in a spreadsheet: text cells that would run as a formula are made inert.

A run's bodies, variants, errors and sample columns come from templates, tenants and uploaded CSVs that
anyone may have written, and Excel, LibreOffice and Google Sheets run a text cell that starts with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return as a formula (``=HYPERLINK(…)``, DDE's
``=cmd|' /C calc'!A0``). OWASP's "CSV Injection" remedy: prefix such a cell with a single quote and keep
it quoted, so the spreadsheet shows it as text. Every CSV Flow Lab writes goes through this module.

What is left alone: numeric columns (a negative number is a number, not a formula), text cells that are
plain numbers (``-5``, ``+1.5e3``), and every other format: Parquet and SQLite keep the exact values,
because only CSV is text that a spreadsheet interprets.
"""

from __future__ import annotations

import csv
import io
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["FORMULA_STARTS", "csv_bytes", "safe_cell", "safe_frame", "safe_table"]

#: First characters that make a spreadsheet read a text cell as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA = r"^[=+\-@\t\r]"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_NUMBER_RE = re.compile(_NUMBER)


def safe_cell(value: str) -> str:
    """``value`` as a spreadsheet must show it: ``'=cmd…`` for a formula, unchanged otherwise."""
    if value.startswith(FORMULA_STARTS) and not _NUMBER_RE.match(value):
        return "'" + value
    return value


def safe_table(table: pa.Table) -> pa.Table:
    """The table with its text columns (and column names) made safe; vectorised, for 100,000-row runs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            risky = pc.and_not(
                pc.match_substring_regex(column, _FORMULA), pc.match_substring_regex(column, _NUMBER)
            )
            if pc.any(risky).as_py():  # most chunks have none: no copy of a 100 MB body column for them
                column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    names = [safe_cell(name) for name in table.column_names]
    return pa.Table.from_arrays(columns, names=names)


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of the frame whose text cells (and column names) are safe; numbers are never touched."""
    import pandas as pd

    out = frame.copy()
    for name in out.columns:
        series = out[name]
        if pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype):
            out[name] = series.map(lambda v: safe_cell(v) if isinstance(v, str) else v)
    out.columns = [safe_cell(str(c)) if isinstance(c, str) else c for c in out.columns]
    return out


def csv_bytes(frame: pd.DataFrame, *, index: bool = False) -> bytes:
    """The frame as UTF-8 CSV for a download: formula cells made safe, every text cell quoted."""
    buffer = io.StringIO()
    safe_frame(frame).to_csv(buffer, index=index, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    return buffer.getvalue().encode("utf-8")
