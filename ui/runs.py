"""Batch runs in the app: the running batches of this process, the session's current run, and cached reads.

**Running batches** live in a module-level registry keyed by run id, not only in ``st.session_state``:
the batch thread belongs to the process, so a page reload (a new session) can find and reattach to it, and
a widget click (a rerun) never touches it.

**Caching.** A run is loaded once per change of its files: every cached read is keyed on the store's path
and a stamp of its files (size and modification time of the SQLite file and its WAL), so a finished run is
read from disk once and a running one whenever it has new rows. The raw run goes to ``st.cache_resource``
(one shared, read-only copy: ``st.cache_data`` would unpickle ~30 MB per rerun at 100,000 guests, and
flowlab.analysis.stats never modifies its inputs); the aggregated tables go to ``st.cache_data``.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from flowlab import analysis
from flowlab.analysis import budget, report, sequential
from flowlab.analysis.membership import (
    attribute_summary as membership_attributes,
    edge_latency as membership_latency,
    is_edge_run,
    membership_dimensions,
    membership_rates,
)
from flowlab.analysis.outcomes import read_outcomes, sandbox_outcomes, with_outcomes
from flowlab.batch.runlog import RunLog, RunRecord
from flowlab.batch.runner import BatchHandle, BatchOptions
from flowlab.batch.runs import RunStore
from flowlab.batch.samples import GuestSample
from ui.target import sandbox_admin

__all__ = [
    "Stamp",
    "accuracy",
    "analysis_frame",
    "attributes",
    "budget_table",
    "breakdown",
    "compare",
    "conversion",
    "current_run",
    "dimensions",
    "edge_dimensions",
    "edge_latency",
    "errors",
    "export_bytes",
    "frozen",
    "handle",
    "is_edge",
    "latency",
    "levels",
    "membership",
    "offers",
    "outcome_table",
    "peeking",
    "resume_run",
    "run_frame",
    "run_log",
    "running_ids",
    "served_per_variant",
    "sequential_conversion",
    "set_current_run",
    "split",
    "split_dimensions",
    "stamp",
    "start_run",
    "table",
]

_HANDLES: dict[str, BatchHandle] = {}
_LOCK = threading.Lock()
_CURRENT = "batch_run_id"

Stamp = tuple[int, int, int, int]


def run_log() -> RunLog:
    """The run log of the configured data dir (read each time: tests and users may change FLOWLAB_DATA_DIR)."""
    return RunLog()


# ---- running batches ------------------------------------------------------------------------------------


def _register(run_id: str, batch: BatchHandle) -> None:
    with _LOCK:
        _HANDLES[run_id] = batch


def handle(run_id: str | None) -> BatchHandle | None:
    """The batch of this run if it was started by this process (running or finished)."""
    if run_id is None:
        return None
    with _LOCK:
        return _HANDLES.get(run_id)


def running_ids() -> list[str]:
    """Runs this process is still calling, newest first."""
    with _LOCK:
        return sorted((i for i, h in _HANDLES.items() if not h.done), reverse=True)


def start_run(sample: GuestSample, options: BatchOptions, *, name: str, target: str, is_sandbox: bool) -> str:
    """Record and start a run in the background; it becomes the session's current run."""
    record, batch = run_log().start(sample, options, name=name, target=target, is_sandbox=is_sandbox)
    _register(record.id, batch)
    set_current_run(record.id)
    return record.id


def resume_run(run_id: str, *, only_failed: bool = False, **overrides: Any) -> None:
    """Resume a cancelled or interrupted run (``only_failed``: call its failed guests again)."""
    batch = run_log().resume(run_id, only_failed=only_failed, **overrides)
    _register(run_id, batch)
    set_current_run(run_id)


def current_run() -> RunRecord | None:
    """The session's run; after a page reload, the newest batch this process is still running."""
    run_id = st.session_state.get(_CURRENT)
    if run_id is None:
        alive = running_ids()
        run_id = alive[0] if alive else None
        if run_id is not None:
            st.session_state[_CURRENT] = run_id
    if run_id is None:
        return None
    try:
        return run_log().get(str(run_id))
    except Exception:  # deleted meanwhile, or unreadable: forget it
        st.session_state.pop(_CURRENT, None)
        return None


def set_current_run(run_id: str | None) -> None:
    if run_id is None:
        st.session_state.pop(_CURRENT, None)
    else:
        st.session_state[_CURRENT] = run_id


def export_bytes(path: Path, suffix: str) -> bytes:
    """The run exported as ``.csv`` (formula cells made safe) or ``.parquet``.

    Written to a temporary file of its own beside the store (mode 0600, in the run's private folder; one
    per click, so two sessions exporting the same run never share a file), read back, and removed.
    """
    fd, name = tempfile.mkstemp(prefix=".export-", suffix=suffix, dir=path.parent)
    os.close(fd)
    out = Path(name)
    try:
        with RunStore.open(path) as store:
            store.export(out)
        return out.read_bytes()
    finally:
        out.unlink(missing_ok=True)


# ---- cached reads ---------------------------------------------------------------------------------------


def stamp(path: Path) -> Stamp:
    """Changes whenever the store gets new rows (the WAL grows) or is checkpointed."""
    parts = []
    for file in (path, path.with_name(path.name + "-wal")):
        try:
            info = file.stat()
            parts += [info.st_mtime_ns, info.st_size]
        except FileNotFoundError:
            parts += [0, 0]
    return (parts[0], parts[1], parts[2], parts[3])


# Result columns the Analysis page never reads: leaving them in SQLite makes the first load of a big run
# cheaper (bodies are most of a run's bytes; the others are per-guest text no table or chart shows).
_NOT_ANALYSED = ("body", "identity", "variant_source", "offer_count", "execution_ref", "finished_at")


@st.cache_resource(max_entries=3, show_spinner="Loading the run…")
def run_frame(path: str, stamp: Stamp) -> pd.DataFrame:
    """The run's rows as the Analysis page uses them, shared read-only by every session."""
    with RunStore.open(path) as store:
        return store.to_dataframe(exclude=_NOT_ANALYSED, shared_offers=True)  # read-only: share equal lists


@st.cache_resource(max_entries=3, show_spinner="Fetching the sandbox's simulated outcomes…")
def _sandbox_outcomes(base_url: str, friendly_id: str, stamp: Stamp) -> pd.DataFrame:
    return sandbox_outcomes(sandbox_admin(base_url), friendly_id)


@st.cache_resource(max_entries=3, show_spinner=False)
def _csv_outcomes(data: bytes, name: str) -> pd.DataFrame:
    source = io.BytesIO(data)
    source.name = name
    return read_outcomes(source)


def outcome_table(
    kind: str, *, base_url: str = "", friendly_id: str = "", stamp: Stamp = (0, 0, 0, 0), data: bytes = b"",
    name: str = "outcomes.csv",
) -> pd.DataFrame | None:  # fmt: skip
    """Outcomes from the sandbox (``kind="sandbox"``) or an uploaded CSV (``"csv"``); None for ``"none"``.

    Raises the library's errors (``SampleError`` for a bad CSV, ``APIError`` when the sandbox is gone).
    """
    if kind == "sandbox":
        return _sandbox_outcomes(base_url, friendly_id, stamp)
    if kind == "csv" and data:
        return _csv_outcomes(data, name)
    return None


@st.cache_resource(max_entries=3, show_spinner="Joining outcomes…")
def _joined(path: str, stamp: Stamp, outcomes_key: str, _outcomes: pd.DataFrame) -> pd.DataFrame:
    return with_outcomes(run_frame(path, stamp), _outcomes)


def analysis_frame(path: str, stamp: Stamp, outcomes_key: str, outcomes: pd.DataFrame | None) -> pd.DataFrame:
    """The run, joined with outcomes when there are some (``outcomes_key`` names them for the cache)."""
    if outcomes is None:
        return run_frame(path, stamp)
    return _joined(path, stamp, outcomes_key, outcomes)


@st.cache_data(max_entries=32, show_spinner=False)
def split(key: tuple[Any, ...], _frame: pd.DataFrame, expected: tuple[tuple[str, float], ...] | None) -> Any:
    """``analysis.split_health``, cached per run state and expectation."""
    return analysis.split_health(_frame, dict(expected) if expected is not None else None)


@st.cache_data(max_entries=32, show_spinner=False)
def split_dimensions(
    key: tuple[Any, ...], _frame: pd.DataFrame, dims: tuple[str, ...], expected: tuple[tuple[str, float], ...] | None
) -> pd.DataFrame:  # fmt: skip
    return report.split_by_dimensions(_frame, dims, dict(expected) if expected is not None else None)


@st.cache_data(max_entries=32, show_spinner=False)
def conversion(key: tuple[Any, ...], _frame: pd.DataFrame, control: str | None) -> pd.DataFrame:
    return analysis.conversion_by_variant(_frame, control=control)


@st.cache_data(max_entries=32, show_spinner=False)
def sequential_conversion(
    key: tuple[Any, ...], _frame: pd.DataFrame, control: str | None, planned_guests: float
) -> pd.DataFrame:
    """Always-valid intervals (``sequential.sequential_conversion``) tuned for ``planned_guests``."""
    return sequential.sequential_conversion(_frame, control=control, planned_guests=planned_guests)


@st.cache_data(max_entries=16, show_spinner="Looking at the run as it grew…")
def peeking(key: tuple[Any, ...], _frame: pd.DataFrame, control: str | None) -> str:
    """``sequential.peeking_sentence`` over 10 looks: "does peeking change the verdict?"."""
    return sequential.peeking_sentence(sequential.peeking_path(_frame, looks=10, control=control))


@st.cache_data(max_entries=16, show_spinner=False)
def served_per_variant(key: tuple[Any, ...], _frame: pd.DataFrame) -> dict[str, int]:
    """Served guests per variant (ok and labelled), in the analysis' variant order."""
    if "variant" not in _frame.columns:
        return {}
    ok = _frame["ok"].astype(bool) if "ok" in _frame.columns else True
    labels = _frame.loc[ok & _frame["variant"].notna(), "variant"].astype(str)
    counts = labels[labels != ""].value_counts()
    return {v: int(counts[v]) for v in analysis.variant_order(counts.index.astype(str))}


@st.cache_data(max_entries=16, show_spinner=False)
def budget_table(key: tuple[Any, ...], _frame: pd.DataFrame, budget_ms: float) -> pd.DataFrame:
    return budget.timeout_budget(_frame, budget_ms)


@st.cache_data(max_entries=32, show_spinner=False)
def breakdown(
    key: tuple[Any, ...], _frame: pd.DataFrame, dimension: str, value: str, levels: int
) -> pd.DataFrame:
    return analysis.breakdown(_frame, dimension, value=value, max_levels=levels)


def _hashable_offers(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with each ``offers`` list as a tuple (a shallow copy; the cached run stays as it is).

    ``flowlab.analysis.stats`` counts offers per distinct cell, which needs hashable cells: with lists it parses
    100,000 cells one by one (0.3 s), with tuples a few distinct ones. Each distinct list *object* becomes
    one tuple (``run_frame`` shares equal lists), so the conversion is a few array operations, not a
    Python loop over every row.
    """
    if "offers" not in frame.columns or frame["offers"].dtype != object:
        return frame
    cells = frame["offers"].to_numpy(dtype=object)
    ids = np.fromiter(map(id, cells), dtype=np.int64, count=len(cells))
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    distinct = np.empty(len(first), dtype=object)
    for i, cell in enumerate(cells[first]):
        distinct[i] = tuple(cell) if isinstance(cell, list) else cell
    return frame.assign(offers=pd.Series(distinct[inverse.ravel()], index=frame.index, dtype=object))


@st.cache_data(max_entries=16, show_spinner=False)
def offers(key: tuple[Any, ...], _frame: pd.DataFrame) -> pd.DataFrame:
    return analysis.offers_by_variant(_hashable_offers(_frame))


@st.cache_data(max_entries=16, show_spinner=False)
def latency(key: tuple[Any, ...], _frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return analysis.latency_summary(_frame), analysis.latency_histogram(_frame)


@st.cache_data(max_entries=16, show_spinner=False)
def errors(key: tuple[Any, ...], _frame: pd.DataFrame) -> pd.DataFrame:
    return analysis.errors_by_type(_frame)


@st.cache_data(max_entries=16, show_spinner=False)
def dimensions(key: tuple[Any, ...], _frame: pd.DataFrame) -> list[str]:
    return report.dimensions(_frame)


@st.cache_data(max_entries=16, show_spinner=False)
def levels(key: tuple[Any, ...], _frame: pd.DataFrame, column: str) -> list[str]:
    """The values a table filter offers for ``column``."""
    return report.levels(_frame, column)


@st.cache_data(max_entries=16, show_spinner=False)
def accuracy(key: tuple[Any, ...], _frame: pd.DataFrame) -> float | None:
    return analysis.detection_accuracy(_frame)


@st.cache_data(max_entries=16, show_spinner=False)
def compare(key: tuple[Any, ...], _before: pd.DataFrame, _after: pd.DataFrame) -> Any:
    return analysis.compare_runs(_hashable_offers(_before), _hashable_offers(_after))


@st.cache_data(max_entries=16, show_spinner=False)
def table(
    key: tuple[Any, ...], _frame: pd.DataFrame, filters: tuple[Any, ...], limit: int
) -> tuple[pd.DataFrame, int]:
    """The first ``limit`` rows matching the filters (variants, ok, dimension, levels), and how many match."""
    variants, ok, dimension, levels = filters
    found = report.filter_run(_frame, variants=variants, ok=ok, dimension=dimension, levels=levels)
    return found[report.table_columns(_frame)].head(limit), len(found)


def frozen(mapping: Mapping[str, float] | None) -> tuple[tuple[str, float], ...] | None:
    """A mapping as a hashable, ordered tuple (a cache key)."""
    return None if mapping is None else tuple(sorted((str(k), float(v)) for k, v in mapping.items()))


# ---- AEP Edge runs (audience membership; flowlab.analysis.membership) -----------------------------------


@st.cache_data(max_entries=64, show_spinner=False)
def _provider(path: str, stamp: Stamp) -> str:
    """The provider the run store recorded (``RunMeta.provider``; older stores say ``personalize``)."""
    with RunStore.open(path) as store:
        return str(store.meta.provider)


def is_edge(record: RunRecord) -> bool:
    """An AEP Edge run: its record or its store says so (``provider``); a store that cannot say (an older
    one) is judged by its rows."""
    provider = getattr(record, "provider", None)
    if provider is None:
        try:
            provider = _provider(str(record.path), stamp(record.path))
        except Exception:  # unreadable meta: the rows decide
            return is_edge_run(run_frame(str(record.path), stamp(record.path)))
    return bool(provider == "edge")


@st.cache_data(max_entries=32, show_spinner=False)
def membership(
    key: tuple[Any, ...], _frame: pd.DataFrame, by: str | None, audiences: tuple[tuple[str, str], ...]
) -> pd.DataFrame:
    """``flowlab.analysis.membership.membership_rates`` per run state, dimension and audience names."""
    return membership_rates(_frame, by=by, audiences=dict(audiences))


@st.cache_data(max_entries=32, show_spinner=False)
def attributes(key: tuple[Any, ...], _frame: pd.DataFrame, by: str | None) -> pd.DataFrame:
    return membership_attributes(_frame, by=by)


@st.cache_data(max_entries=16, show_spinner=False)
def edge_latency(key: tuple[Any, ...], _frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Latency per event type (the tables' ``variant`` column holds it)."""
    return membership_latency(_frame)


@st.cache_data(max_entries=16, show_spinner=False)
def edge_dimensions(key: tuple[Any, ...], _frame: pd.DataFrame) -> list[str]:
    return membership_dimensions(_frame)
