"""The Batch run page's run panel: live progress while a batch runs (a fragment polling once a second, so
nothing else reruns), then its summary, resume / re-run failed, the link to its analysis and the exports;
and the list of past runs."""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
import streamlit as st

from flowlab.batch.runlog import RunRecord
from flowlab.errors import FlowLabError
from ui import runs
from ui.batch_view import PROBLEM_KEY, in_flight_note, show_problem
from ui.target import Target, live_call_allowed
from ui.text import plain

__all__ = ["past_runs", "run_panel"]

_POLL_S = 1.0


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _errors_line(errors: dict[str, int]) -> str:
    parts = [f"{k or 'other'} {v:,}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1]) if v]
    return ", ".join(parts)


@st.fragment(run_every=_POLL_S)
def _live_progress(run_id: str) -> None:
    """Polls the running batch once a second; only this panel reruns, the batch never notices."""
    batch = runs.handle(run_id)
    if batch is None or batch.done:
        st.rerun()  # the whole page, to show the summary
        return
    p = batch.progress()
    st.progress(p.fraction, text=f"**{p.done:,} / {p.total:,} guests** · {p.fraction:.0%}")
    rate, eta, elapsed, errors, cancel = st.columns([1, 1, 1, 1, 1], vertical_alignment="center")
    rate.metric("Requests/s", f"{p.rps:,.0f}", help="Guests finished per second, over the last 10 seconds.")
    eta.metric("Time left", _duration(p.eta_s))
    elapsed.metric("Running for", _duration(time.time() - p.started if p.started else None))
    errors.metric("Errors", f"{p.failed:,}")
    cancel.button(
        "Cancel", key="batch_cancel", icon=":material/stop:", on_click=batch.cancel, width="stretch"
    )
    if p.errors_by_type:
        st.caption(f"Errors by type: {plain(_errors_line(dict(p.errors_by_type)))}")
    note = in_flight_note(batch.store_path, resuming=batch.in_flight_before)
    if note:
        st.caption(plain(note))


def _summary(record: RunRecord) -> None:
    batch = runs.handle(record.id)
    error = batch.error if batch is not None else None
    if error is not None:
        st.error(f"The run stopped: {plain(str(error))}", icon=":material/error:")
    if record.status == "done":
        failed = f", {record.failed:,} failed (re-run them below)" if record.failed else ""
        st.success(
            f"Done: {record.total:,} guests, {record.ok:,} ok{failed}.", icon=":material/check_circle:"
        )
    elif record.status in ("cancelled", "interrupted"):
        how = "Cancelled" if record.status == "cancelled" else "Interrupted (the app stopped while it ran)"
        st.warning(
            f"{how} with {record.missing:,} of {record.total:,} guests to go ({record.ok:,} ok, "
            f"{record.failed:,} failed so far). Resume to call them; guests that already have a result are "
            "not called again.",
            icon=":material/pause_circle:",
        )
        note = in_flight_note(record.path)
        if note:
            st.caption(plain(note))
    else:
        st.info("Running in another session or process.", icon=":material/sync:")
    summary = batch.summary if batch is not None else None
    if summary is not None:
        st.caption(f"Last session: {plain(summary.describe().split('; results in')[0])}")


def _why_not(record: RunRecord, target: Target) -> str | None:
    """Why this run cannot be resumed or re-run from here, if it cannot."""
    if record.base_url.rstrip("/") != target.base_url.rstrip("/"):
        if record.is_sandbox:
            return (
                "The sandbox this run used has restarted since (a new address), so start a new run instead."
            )
        return f"This run called {record.target}: pick that target in the sidebar to resume it."
    if not live_call_allowed(target):
        return "Acknowledge the live-tenant warning in the sidebar first."
    return None


def _actions(record: RunRecord, target: Target, pacing: dict[str, Any]) -> None:
    """Resume / re-run failed (when they apply), open the analysis, export."""
    why = _why_not(record, target)
    buttons: list[tuple[str, str, str, bool]] = []
    if record.resumable:
        buttons.append((f"Resume ({record.missing:,} to go)", "batch_resume", ":material/play_arrow:", False))
    if record.failed and record.status != "running":
        buttons.append(
            (f"Re-run {record.failed:,} failed guests", "batch_rerun_failed", ":material/replay:", True)
        )
    columns = st.columns(5, vertical_alignment="center")
    for column, (label, key, icon, only_failed) in zip(columns, buttons, strict=False):
        column.button(
            label,
            key=key,
            icon=icon,
            type="primary" if key == "batch_resume" else "secondary",
            disabled=why is not None,
            help=why,
            width="stretch",
            on_click=_resume,
            args=(record.id, pacing, only_failed),
        )
    rest = columns[len(buttons) :]
    with rest[0]:
        st.page_link("app_pages/analysis.py", label="Analyse this run", icon=":material/analytics:")
    _exports(record, rest[1], rest[2])
    if why and buttons:
        st.caption(plain(why))
    show_problem()


def _resume(run_id: str, pacing: dict[str, Any], only_failed: bool) -> None:
    """Resume / Re-run failed callback (before the rerun, like Run)."""
    st.session_state.pop(PROBLEM_KEY, None)
    try:
        runs.resume_run(run_id, only_failed=only_failed, **pacing)
    except FlowLabError as exc:
        st.session_state[PROBLEM_KEY] = str(exc)


def _exports(record: RunRecord, csv_place: Any, parquet_place: Any) -> None:
    """Download buttons whose files are written only when clicked (a 100,000-row export takes seconds)."""
    csv_place.download_button(
        "Export CSV",
        data=lambda: runs.export_bytes(record.path, ".csv"),
        file_name=f"{record.id}.csv",
        mime="text/csv",
        key="batch_export_csv",
        icon=":material/download:",
        width="stretch",
    )
    parquet_place.download_button(
        "Export Parquet",
        data=lambda: runs.export_bytes(record.path, ".parquet"),
        file_name=f"{record.id}.parquet",
        mime="application/vnd.apache.parquet",
        key="batch_export_parquet",
        icon=":material/download:",
        width="stretch",
    )


def run_panel(record: RunRecord | None, target: Target, pacing: dict[str, Any]) -> None:
    """The session's run: live progress while it runs, else its summary, resume and exports."""
    if record is None:
        st.info(
            "No run yet. Pick guests and a flow, then press **Run**: progress shows here while the batch "
            "runs in the background (you can keep using the app).",
            icon=":material/arrow_back:",
        )
        return
    flow = "" if record.friendly_id in record.name else f" · {plain(record.friendly_id)}"
    where = f" on {plain(record.target)}" + (f" · {plain(record.source)}" if record.source else "")
    st.markdown(f"**{plain(record.name)}**{flow}{where}")
    batch = runs.handle(record.id)
    if batch is not None and not batch.done:
        _live_progress(record.id)
        return
    _summary(record)
    _actions(record, target, pacing)


def past_runs(current: RunRecord | None) -> None:
    """Every recorded run, newest first; pick one to make it the current run (to resume or export it)."""
    records = runs.run_log().runs()
    if not records:
        st.caption("Runs you start are kept here (in the data folder), to resume, export or compare later.")
        return
    table = pd.DataFrame(
        {
            "name": [r.name for r in records],
            "flow": [r.friendly_id for r in records],
            "target": [r.target for r in records],
            "created": [r.created[:19].replace("T", " ") for r in records],
            "status": [r.status for r in records],
            "guests": [
                f"{r.done:,} / {r.total:,}" if r.status != "running" else "in progress" for r in records
            ],
            "failed": [r.failed for r in records],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch", key="batch_runs_table")
    by_id = {r.id: r for r in records}
    if current is not None and current.id in by_id:
        st.session_state["batch_open_run"] = current.id
    st.selectbox(
        "Open a run",
        list(by_id),
        index=None,
        format_func=lambda i: by_id[i].label,
        key="batch_open_run",
        placeholder="Pick a run to resume, re-run or export",
        on_change=_open_run,
    )


def _open_run() -> None:
    chosen = st.session_state.get("batch_open_run")
    if chosen is not None:
        runs.set_current_run(str(chosen))
