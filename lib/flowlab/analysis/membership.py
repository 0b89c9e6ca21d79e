"""Audience membership for AEP Edge runs: which share of the identities a batch called is in each audience,
overall or per level of a dimension, with Wilson intervals; what the With Attributes destination returned.

An Edge run has one row per identity with ``segments``: the audience ids of every ``activation:pull``
``profileLookup`` payload, all destinations together (adobe-edge-personalization.md §3.3; an audience is
"realized" when it is listed, §5.3), and ``attributes``: the mapped profile attributes the authenticated
Server API returns for a "With Attributes" destination (absent on the unauthenticated edge domain, §5.4).
A run read back from the store holds Python lists and dicts; a CSV export holds the same as JSON text. Both
are read here.

Conventions, as in :mod:`flowlab.analysis.stats`: only answered rows (``ok``) count; failed calls are left
out of every denominator and counted in ``failed``, because an identity the edge never answered for is not
"not a member". Rates are fractions. A missing dimension value is ``"(missing)"``, levels past the cap
are pooled as ``"(other)"``. Pure pandas: no I/O, no streamlit, inputs never modified.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from flowlab.analysis.stats import (
    MISSING,
    _as_bool,
    _levels,
    _ok_mask,
    latency_histogram,
    latency_summary,
    wilson_interval,
)
from flowlab.batch.runs import RESULT_COLUMNS
from flowlab.errors import SampleError

__all__ = [
    "EDGE_COLUMNS",
    "attribute_summary",
    "audience_names",
    "edge_latency",
    "is_edge_run",
    "membership_dimensions",
    "membership_rates",
    "membership_sentence",
    "parse_segments",
]

#: Result columns of an Edge run that hold what the edge answered (never a dimension).
EDGE_COLUMNS: tuple[str, ...] = ("segments", "destinations", "attributes")
#: Result columns that describe the call and can be worth a breakdown (anonymous ECID vs Email…).
_CALL_DIMENSIONS = ("identity", "event_type")
_NOT_DIMENSIONS = frozenset(
    {*RESULT_COLUMNS, *EDGE_COLUMNS, "body", "converted", "revenue", "true_variant", "request_id"}
) - frozenset(_CALL_DIMENSIONS)
_RATE_COLUMNS = ("audience", "name", "guests", "members", "rate", "rate_low", "rate_high", "failed")
_ATTRIBUTE_COLUMNS = ("attribute", "guests", "present", "share", "distinct", "top_values")


# --------------------------------------------------------------------------------------------- reading


def is_edge_run(frame: pd.DataFrame) -> bool:
    """Whether a run's rows are Edge rows, for a run whose provider is not recorded (a file from elsewhere).

    The run store gives callFlows rows an empty ``segments`` column too, so the column alone does not
    decide: Edge rows also carry an event type or an audience, or the table has no ``variant`` at all.
    Prefer ``RunMeta.provider == "edge"`` when it is known.
    """
    if not isinstance(frame, pd.DataFrame) or "segments" not in frame.columns:
        return False
    if "variant" not in frame.columns:
        return True
    if "event_type" in frame.columns:
        kinds = frame["event_type"]
        if bool((kinds.notna() & (kinds.astype(str).str.strip() != "")).any()):
            return True
    cells = frame["segments"]
    return bool(cells.map(lambda c: bool(parse_segments(c)) if c is not None else False).any())


def _decoded(raw: Any, row: Any, column: str) -> Any:
    """A cell as Python data: JSON text (CSV exports) is parsed, empty cells are None."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise SampleError(
                f"row {row}: {column} is not JSON ({text[:60]!r}); export the run again, or give "
                f"{column} as a JSON {'list of audience ids' if column == 'segments' else 'object'}"
            ) from None
    if isinstance(raw, np.ndarray):  # Parquet reads lists back as arrays
        return raw.tolist()
    return raw


def parse_segments(raw: Any, *, row: Any = "?") -> tuple[str, ...]:
    """The distinct audience ids of one ``segments`` cell, in order of first appearance.

    Takes a list (of ids, or of ``{"id": …, "namespace": …}`` objects as on the wire, §3.3), its JSON
    text, or an empty cell (no audience). Anything else raises ``SampleError`` naming the row.
    """
    value = _decoded(raw, row, "segments")
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise SampleError(
            f"row {row}: segments must be a list of audience ids, got {type(value).__name__} "
            f"({str(value)[:60]!r})"
        )
    ids: dict[str, None] = {}
    for item in value:
        found = item.get("id") if isinstance(item, Mapping) else item
        if found is None or (isinstance(found, str) and not found.strip()):
            continue
        if not isinstance(found, str | int):
            raise SampleError(f"row {row}: segments holds {str(item)[:60]!r}, not an audience id")
        ids[str(found).strip()] = None
    return tuple(ids)


def _attributes(raw: Any, row: Any) -> dict[str, Any]:
    """One ``attributes`` cell as ``name → value``; the wire's ``{"value": …}`` wrappers are unwrapped."""
    value = _decoded(raw, row, "attributes")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SampleError(f"row {row}: attributes must be an object of name → value, got {str(value)[:60]!r}")
    out: dict[str, Any] = {}
    for name, item in value.items():
        if isinstance(item, Mapping) and set(item) == {"value"}:
            item = item["value"]
        out[str(name)] = item
    return out


def audience_names(audiences: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """Audience id → display name, from a mapping or the sandbox's ``GET /sandbox/edge/audiences`` list."""
    if audiences is None:
        return {}
    if isinstance(audiences, Mapping):
        return {str(k): str(v) for k, v in audiences.items()}
    names: dict[str, str] = {}
    for item in audiences:
        if not isinstance(item, Mapping) or "id" not in item:
            raise TypeError(f"audiences must map ids to names or list {{id, name}} objects, got {item!r}")
        names[str(item["id"])] = str(item.get("name") or item["id"])
    return names


def _row_labels(frame: pd.DataFrame) -> list[Any]:
    """How a message names a row: the run's ``row`` number when it has one, else the position."""
    if "row" in frame.columns:
        return frame["row"].tolist()
    return list(range(1, len(frame) + 1))


def _check_by(frame: pd.DataFrame, by: str | None) -> None:
    if by is None:
        return
    if by not in frame.columns or by in EDGE_COLUMNS:
        dims = membership_dimensions(frame)
        hint = f"pick one of: {', '.join(dims)}" if dims else "this run has no column to break it down by"
        raise SampleError(f"the run has no dimension {by!r} to break membership down by; {hint}")


def _require_segments(frame: pd.DataFrame) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"the run must be a pandas DataFrame, not {type(frame).__name__}")
    if "segments" not in frame.columns:
        have = ", ".join(map(str, frame.columns)) or "none"
        raise SampleError(f"the run has no 'segments' column (it is not an AEP Edge run): it has {have}")


def membership_dimensions(frame: pd.DataFrame, *, max_levels: int = 200) -> list[str]:
    """Columns worth breaking membership down by: the sample's own columns (countryCode, loyaltyTier…),
    the identity namespace and the event type, when they have 2 to ``max_levels`` repeating values."""
    found = []
    for column in frame.columns:
        if column in _NOT_DIMENSIONS:
            continue
        values = frame[column]
        if values.dtype == object and values.map(lambda v: isinstance(v, list | dict | tuple)).any():
            continue
        distinct = values.nunique(dropna=False)
        if 2 <= distinct <= max_levels and distinct <= max(len(frame) // 2, 2):
            found.append(str(column))
    return found


# --------------------------------------------------------------------------------------------- rates


def _levels_of(frame: pd.DataFrame, by: str | None, max_levels: int) -> tuple[np.ndarray, list[str]]:
    if by is None:
        return np.zeros(len(frame), dtype=np.intp), []
    return _levels(frame[by], max_levels)


def membership_rates(
    frame: pd.DataFrame,
    *,
    by: str | None = None,
    audiences: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
    confidence: float = 0.95,
    max_levels: int = 20,
) -> pd.DataFrame:
    """Share of answered identities in each audience, overall or per level of ``by``, with Wilson intervals.

    Columns: ``audience, name, [by], guests, members, rate, rate_low, rate_high, failed``: ``guests`` are
    the answered (``ok``) rows of the level, ``members`` those whose ``segments`` list the audience,
    ``failed`` the level's failed calls (left out of ``guests``). Every audience named in ``audiences``
    (id → name, or the sandbox's audience list) gets a row, members or not: "nobody qualified" is an
    answer too. Audiences come biggest first overall (ties by name); levels biggest first, at most
    ``max_levels`` (the rest pooled as ``"(other)"``).
    """
    _require_segments(frame)
    _check_by(frame, by)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    names = audience_names(audiences)
    ok = _ok_mask(frame)
    level_codes, levels = _levels_of(frame, by, max_levels)
    n_levels = max(len(levels), 1)
    guests = np.bincount(level_codes[ok], minlength=n_levels)
    failed = np.bincount(level_codes[~ok], minlength=n_levels)

    ids: dict[str, int] = {name: i for i, name in enumerate(names)}
    row_levels: list[int] = []
    row_ids: list[int] = []
    parsed: dict[str, tuple[str, ...]] = {}  # JSON text repeats: parse each distinct cell once
    cells = frame["segments"].to_numpy(dtype=object)
    labels = _row_labels(frame)
    for i in np.flatnonzero(ok).tolist():
        cell = cells[i]
        if isinstance(cell, str):
            found = parsed.get(cell)
            if found is None:
                found = parsed[cell] = parse_segments(cell, row=labels[i])
        elif type(cell) is list and all(type(item) is str and item for item in cell):
            found = tuple(dict.fromkeys(cell))  # the store's own lists: the common case, kept cheap
        else:
            found = parse_segments(cell, row=labels[i])
        for audience in found:
            row_levels.append(int(level_codes[i]))
            row_ids.append(ids.setdefault(audience, len(ids)))
    n_ids = len(ids)
    if not n_ids:
        return _empty_rates(by)
    flat = np.asarray(row_levels, dtype=np.intp) * n_ids + np.asarray(row_ids, dtype=np.intp)
    grid = np.bincount(flat, minlength=n_levels * n_ids).reshape(n_levels, n_ids)
    id_list = list(ids)
    totals = grid.sum(axis=0)
    order = sorted(
        range(n_ids), key=lambda j: (-int(totals[j]), names.get(id_list[j], id_list[j]).casefold())
    )

    level_index = np.repeat(np.arange(n_levels), n_ids)
    audience_index = np.tile(np.asarray(order, dtype=np.intp), n_levels)
    if by is not None:  # audience-major: each audience's levels side by side
        level_index = np.tile(np.arange(n_levels), n_ids)
        audience_index = np.repeat(np.asarray(order, dtype=np.intp), n_levels)
    members = grid[level_index, audience_index].astype("int64")
    n = guests[level_index].astype("int64")
    low, high = wilson_interval(members, n, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(n > 0, members / np.where(n > 0, n, 1), np.nan)
    table = pd.DataFrame(
        {
            "audience": pd.Series([id_list[j] for j in audience_index], dtype=object),
            "name": pd.Series([names.get(id_list[j], id_list[j]) for j in audience_index], dtype=object),
            "guests": n,
            "members": members,
            "rate": rate.astype(float),
            "rate_low": low,
            "rate_high": high,
            "failed": failed[level_index].astype("int64"),
        }
    )
    if by is not None:
        table.insert(2, by, pd.Series([levels[k] for k in level_index], dtype=object))
    return table


def _empty_rates(by: str | None) -> pd.DataFrame:
    dtypes = {"audience": "object", "name": "object", "guests": "int64", "members": "int64",
              "rate": "float64", "rate_low": "float64", "rate_high": "float64", "failed": "int64"}  # fmt: skip
    table = pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in _RATE_COLUMNS})
    if by is not None:
        table.insert(2, by, pd.Series(dtype=object))
    return table


def _by_column(rates: pd.DataFrame) -> str | None:
    extra = [c for c in rates.columns if c not in _RATE_COLUMNS]
    return str(extra[0]) if extra else None


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%" if math.isfinite(share) else "n/a"


def membership_sentence(rates: pd.DataFrame, *, confidence: float = 0.95) -> str:
    """One line a marketer reads above the table, from :func:`membership_rates` (overall or per level).

    Overall: how many identities were answered, the biggest audience with its interval, and how many
    audiences have no member. Per level: where the biggest audience is most and least common.
    """
    if not isinstance(rates, pd.DataFrame) or not {"name", "guests", "members"} <= set(rates.columns):
        raise TypeError("membership_sentence takes the table from membership_rates")
    by = _by_column(rates)
    if rates.empty:
        return "No audience was seen in this run: no identity was answered with an audience yet."
    if by is None:
        answered, failed = int(rates["guests"].iloc[0]), int(rates["failed"].iloc[0])
        head = f"{_count(answered, 'identity', 'identities')} answered" + (
            f" ({_count(failed, 'failed call', 'failed calls')} left out)" if failed else ""
        )
        if answered == 0:
            return head + ": nothing to measure yet."
        top = rates.iloc[0]
        empty = int((rates["members"] == 0).sum())
        text = (
            f"{head}: the biggest audience is {top['name']} at {_pct(float(top['rate']))} "
            f"({confidence:.0%} interval {_pct(float(top['rate_low']))}–{_pct(float(top['rate_high']))})"
        )
        if len(rates) > 1:
            second = rates.iloc[1]
            text += f", then {second['name']} at {_pct(float(second['rate']))}"
        if empty:
            text += f"; {empty} of {len(rates)} audiences {'has' if empty == 1 else 'have'} no member"
        return text + "."
    first = rates["audience"].iloc[0]
    part = rates[(rates["audience"] == first) & (rates["guests"] > 0)]
    answered = int(rates.drop_duplicates(by)["guests"].sum())
    answered_text = _count(answered, "identity", "identities") + " answered"
    if part.empty:
        return f"No identity was answered in any {by} level: nothing to measure yet."
    name = str(part["name"].iloc[0])
    if len(part) == 1:
        row = part.iloc[0]
        return f"{name}: {_pct(float(row['rate']))} in {by} {row[by]} ({answered_text})."
    most = part.loc[part["rate"].idxmax()]
    least = part.loc[part["rate"].idxmin()]
    return (
        f"{name} ranges from {_pct(float(least['rate']))} ({by} {least[by]}) to "
        f"{_pct(float(most['rate']))} ({by} {most[by]}) across {len(part)} levels of {by} "
        f"({answered_text})."
    )


# --------------------------------------------------------------------------------------------- attributes


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def attribute_summary(
    frame: pd.DataFrame, *, by: str | None = None, top: int = 3, max_levels: int = 20
) -> pd.DataFrame:
    """What the With Attributes destination returned: per attribute (and level of ``by``), the answered
    rows, how many carried the attribute, that share, its distinct values and the ``top`` most common.

    Columns: ``attribute, [by], guests, present, share, distinct, top_values`` where ``top_values`` reads
    like ``gold 41% · silver 30% · bronze 20%`` (shares of the rows that carry the attribute). Empty when
    no row has an attribute, e.g. a run without a token: the unauthenticated edge domain returns audiences
    only (reference §5.4).
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"the run must be a pandas DataFrame, not {type(frame).__name__}")
    if "attributes" not in frame.columns:
        have = ", ".join(map(str, frame.columns)) or "none"
        raise SampleError(f"the run has no 'attributes' column (it is not an AEP Edge run): it has {have}")
    _check_by(frame, by)
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    ok = _ok_mask(frame)
    level_codes, levels = _levels_of(frame, by, max_levels)
    n_levels = max(len(levels), 1)
    guests = np.bincount(level_codes[ok], minlength=n_levels)
    counts: dict[str, list[dict[str, int]]] = {}
    cells = frame["attributes"].to_numpy(dtype=object)
    labels = _row_labels(frame)
    for i in np.flatnonzero(ok).tolist():
        for name, value in _attributes(cells[i], labels[i]).items():
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            per_level = counts.setdefault(name, [{} for _ in range(n_levels)])
            text = _value_text(value)
            per_level[int(level_codes[i])][text] = per_level[int(level_codes[i])].get(text, 0) + 1
    rows = []
    for name in sorted(counts, key=str.casefold):
        for k in range(n_levels):
            values = counts[name][k]
            present = sum(values.values())
            ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
            shown = " · ".join(f"{v} {c / present:.0%}" for v, c in ranked) if present else ""
            row: dict[str, Any] = {"attribute": name}
            if by is not None:
                row[by] = levels[k]
            n = int(guests[k])
            row.update(guests=n, present=present, share=present / n if n else math.nan, distinct=len(values),
                       top_values=shown)  # fmt: skip
            rows.append(row)
    columns = list(_ATTRIBUTE_COLUMNS)
    if by is not None:
        columns.insert(1, by)
    table = pd.DataFrame(rows, columns=columns)
    for column in ("guests", "present", "distinct"):
        table[column] = table[column].astype("int64")
    table["share"] = table["share"].astype("float64")
    return table


# --------------------------------------------------------------------------------------------- latency


def edge_latency(frame: pd.DataFrame, *, bins: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Latency of answered calls per event type (one group if the run has one), as
    :func:`~flowlab.analysis.stats.latency_summary` and :func:`~flowlab.analysis.stats.latency_histogram`
    give it for variants: their ``variant`` column holds the event type."""
    if not isinstance(frame, pd.DataFrame) or "latency_ms" not in frame.columns:
        raise SampleError("the run has no 'latency_ms' column to measure")
    if "event_type" in frame.columns:
        kinds = frame["event_type"].astype(object).where(frame["event_type"].notna(), "").astype(str)
        kinds = kinds.where(kinds.str.strip() != "", MISSING)
    else:
        kinds = pd.Series("interact", index=frame.index, dtype=object)
    labelled = pd.DataFrame({"variant": kinds, "latency_ms": frame["latency_ms"]}, index=frame.index)
    if "ok" in frame.columns:
        labelled["ok"] = _as_bool(frame["ok"])
    return latency_summary(labelled), latency_histogram(labelled, bins=bins)
