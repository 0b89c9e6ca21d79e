"""The Analysis page's sections: pick a run and its outcomes, then split health, conversion and lift,
breakdowns, offers, latency, errors, detection accuracy, the run table and a comparison with another run.

Every table comes from ``ui.runs``' cached wrappers around ``flowlab.analysis.stats``/``flowlab.analysis.report``, keyed on
the run's file stamp and the outcome source, so a rerun after a widget change recomputes only what that
widget feeds.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from flowlab import analysis
from flowlab.analysis import budget, charts, outcomes, planning
from flowlab.analysis.membership import membership_sentence
from flowlab.analysis.membership_chart import membership_chart
from flowlab.analysis.report import comparison_rows, conversion_rows, parse_split, split_rows, verdict_kind
from flowlab.batch.runlog import RunRecord
from flowlab.batch.runs import RunStore
from flowlab.errors import FlowLabError
from flowlab.workbench.explain import explain_trace
from ui import runs
from ui.target import sandbox_admin
from ui.text import plain

__all__ = [
    "Analysis",
    "load_analysis",
    "run_picker",
    "show_breakdown",
    "show_compare",
    "show_detection",
    "show_edge_analysis",
    "show_errors",
    "show_latency",
    "show_offers",
    "show_outcomes",
    "show_overview",
    "show_planning",
    "show_split",
    "show_table",
]

_TABLE_ROWS = 1000
_SOURCES = {"sandbox": "Sandbox's simulated outcomes", "csv": "Upload an outcomes CSV", "none": "No outcomes"}
_PERCENT = st.column_config.NumberColumn(format="percent")
_INTERVALS = {"fixed": "Fixed-horizon", "sequential": "Always-valid (sequential)"}


@dataclass(frozen=True)
class Analysis:
    """One run, ready to analyse: its rows (with outcomes, if any) and what the flow says to expect."""

    record: RunRecord
    frame: pd.DataFrame
    key: tuple[Any, ...]
    has_outcomes: bool
    outcome_note: str
    expected: dict[str, float] | None
    expected_note: str
    control: str | None
    labels: dict[str, str]
    true_lifts: dict[str, float]


# ---- choosing -------------------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=8)
def _records(
    root: str, stamps: tuple[tuple[str, runs.Stamp], ...], alive: tuple[str, ...]
) -> list[RunRecord]:
    return runs.run_log().runs()


def _all_runs() -> list[RunRecord]:
    log = runs.run_log()
    folders = sorted(p for p in log.root.iterdir() if p.is_dir()) if log.root.is_dir() else []
    stamps = tuple((p.name, runs.stamp(p / "run.sqlite")) for p in folders)
    return _records(str(log.root), stamps, tuple(runs.running_ids()))


def run_picker() -> RunRecord | None:
    """The run to analyse: the session's current run by default, or any past run."""
    records = _all_runs()
    if not records:
        return None
    by_id = {r.id: r for r in records}
    if st.session_state.get("analysis_run") not in by_id:
        current = st.session_state.get("batch_run_id")
        st.session_state["analysis_run"] = current if current in by_id else records[0].id
    chosen = st.selectbox("Run", list(by_id), format_func=lambda i: _run_label(by_id[i]), key="analysis_run")
    return by_id[str(chosen)]


def _run_label(r: RunRecord) -> str:
    """Name, status, count and start, without saying the count twice (the app names runs by their size)."""
    if r.status != "running" and r.done < r.total:
        counts = f"{r.done:,} of {r.total:,} guests"
    elif f"{r.total:,} guests" in r.name:
        counts = ""
    else:
        counts = f"{r.total:,} guests"
    return " · ".join(p for p in (r.name, r.status, counts, _when(r.created)) if p)


def _when(created: str) -> str:
    """``2026-12-01T17:10:31.932Z`` as ``2026-12-01 17:10 UTC``: seconds and milliseconds tell a reader nothing."""
    return f"{created[:16].replace('T', ' ')} UTC" if created else ""


_GENERATED = re.compile(r"^generated\(n=(\d+), seed=(\d+)\)$")


def _source_text(source: str) -> str:
    """Where the guests came from, in words (``generated(n=5000, seed=42)`` → 5,000 generated guests, seed 42)."""
    found = _GENERATED.match(source)
    return f"{int(found[1]):,} generated guests (seed {found[2]})" if found else source


@st.cache_data(ttl=30, show_spinner=False)
def _sandbox_alive(base_url: str) -> bool:
    """Whether the sandbox a run called still answers (the app's own restarts on a new port)."""
    return sandbox_admin(base_url).is_sandbox()


def _has_truth(record: RunRecord) -> bool:
    return record.is_sandbox and _sandbox_alive(record.base_url)


def _outcome_source(record: RunRecord) -> tuple[str, bytes, str]:
    options = ["sandbox", "csv", "none"] if _has_truth(record) else ["csv", "none"]
    if st.session_state.get("analysis_outcomes") not in options:
        st.session_state["analysis_outcomes"] = options[0]
    kind = st.segmented_control(
        "Outcomes", options, format_func=_SOURCES.__getitem__, key="analysis_outcomes", required=True
    )
    if kind == "csv":
        upload = st.file_uploader(
            "Outcomes CSV",
            type=["csv", "txt"],
            key="analysis_outcomes_csv",
            help="A guest column (guest, browserId or email), converted (yes/no, true/false, 1/0) and "
            "optionally revenue.",
        )
        return ("csv", upload.getvalue(), upload.name) if upload is not None else ("none", b"", "")
    return str(kind), b"", ""


@st.cache_data(ttl=30, show_spinner=False)
def _flow_summary(base_url: str, friendly_id: str) -> dict[str, Any] | None:
    return next((f for f in sandbox_admin(base_url).flows() if f.get("friendlyId") == friendly_id), None)


@st.cache_data(ttl=30, show_spinner=False)
def _flow_definition(base_url: str, friendly_id: str) -> dict[str, Any]:
    return sandbox_admin(base_url).flow(friendly_id)


@st.cache_data(max_entries=16, show_spinner=False)
def _mapping(
    key: tuple[Any, ...], _frame: pd.DataFrame, summary: str
) -> tuple[dict[str, float], str | None, dict[str, str]]:
    flow = json.loads(summary)
    return (
        outcomes.expected_shares(flow, _frame),
        outcomes.control_label(flow, _frame),
        outcomes.label_variants(flow, _frame),
    )


def load_analysis(record: RunRecord) -> Analysis:
    """The outcome picker, then the run joined with its outcomes and the flow's expected split."""
    kind, data, name = _outcome_source(record)
    path, stamp = str(record.path), runs.stamp(record.path)
    note = ""
    table = None
    try:
        table = runs.outcome_table(
            kind, base_url=record.base_url, friendly_id=record.friendly_id, stamp=stamp, data=data, name=name
        )
    except FlowLabError as exc:
        st.error(plain(str(exc)), icon=":material/error:")
    if kind == "sandbox":
        note = "Simulated by the sandbox from each guest's hidden propensity and the variant's true lift."
    outcomes_key = f"{kind}:{hashlib.sha1(data).hexdigest()}" if table is not None else "none"
    frame = runs.analysis_frame(path, stamp, outcomes_key, table)
    key = (path, stamp, outcomes_key)

    expected: dict[str, float] | None = None
    expected_note = "Expected: an equal share for every variant seen (the flow's splits are not known here)."
    control: str | None = None
    labels: dict[str, str] = {}
    truth: dict[str, float] = {}
    try:
        summary = _flow_summary(record.base_url, record.friendly_id) if _has_truth(record) else None
        if summary is not None:
            expected, control, labels = _mapping(key, frame, json.dumps(summary, sort_keys=True))
            truth = outcomes.true_lifts(_flow_definition(record.base_url, record.friendly_id), labels)
            how = "the sandbox's true assignment" if "true_variant" in frame.columns else "the variant names"
            expected_note = f"Expected: the flow's splits, matched to the detected labels by {how}."
    except FlowLabError as exc:  # the flow was deleted or the sandbox stopped meanwhile
        st.warning(
            f"The sandbox's view of this flow is not available: {plain(str(exc))}", icon=":material/warning:"
        )
    typed = st.session_state.get("analysis_split", "").strip()
    if typed:
        try:
            expected, expected_note = parse_split(typed), "Expected: the split you typed."
        except ValueError as exc:
            st.error(plain(str(exc)), icon=":material/error:")
    return Analysis(
        record, frame, key, table is not None, note, expected, expected_note, control, labels, truth
    )


# ---- overview and split ---------------------------------------------------------------------------------


def show_overview(a: Analysis) -> None:
    r = a.record
    st.caption(
        plain(f"{r.friendly_id} on {r.target} · started {_when(r.created)}")
        + (f" · {plain(_source_text(r.source))}" if r.source else "")
    )
    if r.status == "running":
        st.info(
            "This run is still going: the analysis covers the guests done so far.", icon=":material/sync:"
        )
    guests, ok, failed, status = st.columns(4)
    guests.metric("Guests with a result", f"{r.done:,}", help=f"of {r.total:,} in the sample")
    ok.metric("Served", f"{r.ok:,}")
    failed.metric("Failed calls", f"{r.failed:,}")
    status.metric("Status", r.status)


def show_split(a: Analysis) -> None:
    """Expected vs observed share per variant, the SRM verdict, and the same test per dimension."""
    frozen = runs.frozen(a.expected)
    health = runs.split(a.key, a.frame, frozen)
    kind = verdict_kind(health)
    icon = {
        "success": ":material/check_circle:",
        "warning": ":material/warning:",
        "error": ":material/error:",
    }
    getattr(st, kind)(plain(health.verdict), icon=icon[kind])
    chart, table = st.columns([2, 3], gap="large")
    chart.altair_chart(charts.split_chart(health.table), width="stretch", height=300)
    with table:
        st.dataframe(split_rows(health.table, a.labels), hide_index=True, width="stretch")
        st.caption(
            f"{plain(a.expected_note)} Chi-square test, p = {_p(health.p_value)}; a mismatch is flagged at "
            "p < 0.001 (GrowthBook, Eppo)."
        )
        st.text_input(
            "Expected split (optional)",
            key="analysis_split",
            placeholder="e.g. A=50, B=50",
            help="Override the expected shares, e.g. for a live tenant whose splits Flow Lab cannot read.",
        )
    dims = runs.dimensions(a.key, a.frame)
    if dims:
        by_dimension = runs.split_dimensions(a.key, a.frame, tuple(dims), frozen)
        flagged = int((by_dimension["mismatches"] > 0).sum())
        label = "Split health per dimension" + (
            f" · {flagged} with a mismatch" if flagged else " · all healthy"
        )
        with st.expander(label, expanded=bool(flagged)):
            st.dataframe(
                by_dimension,
                hide_index=True,
                width="stretch",
                column_config={
                    "worst_p_value": st.column_config.NumberColumn("worst p-value", format="%.4f"),
                    "worst_share": st.column_config.NumberColumn("its share", format="percent"),
                    "expected_share": _PERCENT,
                },
            )
            st.caption(
                "The same test inside each level of each dimension (up to 10 levels; the rest pooled as "
                "'(other)'). One broken segment can hide inside a healthy total."
            )


def _p(p_value: float) -> str:
    if not math.isfinite(p_value):
        return "n/a"
    return "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"


# ---- outcomes -------------------------------------------------------------------------------------------


def show_outcomes(a: Analysis) -> None:
    """Conversion by variant with intervals, and lift vs the control in words and charts."""
    if not a.has_outcomes:
        st.info(
            "Pick outcomes above (the sandbox's simulated conversions, or a CSV of guest → converted, "
            "revenue) to compare conversion and revenue per variant.",
            icon=":material/info:",
        )
        return
    table = runs.conversion(a.key, a.frame, a.control)
    if table.empty:
        st.warning(
            "No guest was served a variant, so there is nothing to compare.", icon=":material/warning:"
        )
        return
    kind = st.segmented_control(
        "Intervals",
        list(_INTERVALS),
        format_func=_INTERVALS.__getitem__,
        key="analysis_intervals",
        required=True,
        default="fixed",
        help="Fixed-horizon intervals are right for one look at a planned size; always-valid ones stay "
        "right however often you look (mixture SPRT, as GrowthBook and Eppo document).",
    )
    control_name = str(table.loc[table["is_control"], "variant"].iloc[0])
    served = int(table["guests"].sum())
    if kind == "sequential":
        table = runs.sequential_conversion(a.key, a.frame, control_name, float(max(served, 1)))
        st.caption(
            f"Shown: always-valid 95% intervals (mixture SPRT, tuned for this run's {served:,} guests). "
            "They hold at every look, so reading the run while it grows and stopping early is safe; the "
            "price is a wider interval than a single planned look needs."
        )
    else:
        st.caption(
            "Shown: fixed-horizon 95% intervals, valid for one look at the run's planned size. Read "
            "repeatedly while the run grows, they call a winner by chance far more often than 5%: pick "
            "always-valid intervals if you look before the end."
        )
    rows = table[~table["is_control"]].reset_index(drop=True)
    for sentence, (_, row) in zip(outcomes.lift_sentences(table), rows.iterrows(), strict=False):
        significant = float(row["p_value"]) < 0.05 and (row["lift_low"] > 0 or row["lift_high"] < 0)
        box = st.success if significant and row["lift"] > 0 else st.warning if significant else st.info
        box(
            plain(sentence), icon=":material/trending_up:" if row["lift"] >= 0 else ":material/trending_down:"
        )
    notes = [a.outcome_note] if a.outcome_note else []
    control = str(table.loc[table["is_control"], "variant"].iloc[0])
    for _, row in rows.iterrows():
        true = a.true_lifts.get(str(row["variant"]))
        if true is None:
            continue
        covered = row["lift_low"] <= true <= row["lift_high"]
        notes.append(
            f"The sandbox's truth: {row['variant']} was built to convert {abs(true):.0%} "
            f"{'better' if true >= 0 else 'worse'} than {control}, "
            f"{'inside' if covered else 'outside'} the 95% interval of the estimate."
        )
    if notes:
        st.caption(plain(" ".join(notes)))
    left, right = st.columns(2, gap="large")
    height = 120 + 40 * len(table)
    left.altair_chart(charts.conversion_chart(table), width="stretch", height=height)
    if len(rows):
        right.altair_chart(charts.lift_chart(table), width="stretch", height=height)
    st.dataframe(conversion_rows(table), hide_index=True, width="stretch")
    if len(rows):
        st.info(
            plain("Does peeking change the verdict? " + runs.peeking(a.key, a.frame, control_name)),
            icon=":material/visibility:",
        )


# ---- planning -------------------------------------------------------------------------------------------

_PLAN_KEYS = (
    "analysis_plan_baseline",
    "analysis_plan_lift",
    "analysis_plan_confidence",
    "analysis_plan_power",
)


def _plan_start(a: Analysis) -> tuple[planning.PlanInputs, str]:
    """Where the planner starts: the flow's ``sampleSizeConfig`` on the sandbox, else the observed control
    rate (a live tenant's flow definition is not readable with a client key), else a stated placeholder."""
    if _has_truth(a.record):
        try:
            plan = planning.planning_defaults(_flow_definition(a.record.base_url, a.record.friendly_id))
        except (FlowLabError, ValueError) as exc:
            st.warning(
                f"The flow's sampleSizeConfig is not usable: {plain(str(exc))}", icon=":material/warning:"
            )
            plan = None
        if plan is not None:
            return plan, f"Starting from the flow's sampleSizeConfig ({plain(a.record.friendly_id)})."
    if a.has_outcomes:
        table = runs.conversion(a.key, a.frame, a.control)
        control = table[table["is_control"]]
        if len(control) and 0 < float(control["rate"].iloc[0]) < 1:
            rate = float(control["rate"].iloc[0])
            return (
                planning.PlanInputs(baseline=rate, mde=0.2, source="observed control rate"),
                f"Starting from the observed control rate ({rate:.2%}) and a 20% lift: "
                + (
                    "this flow has no sampleSizeConfig."
                    if _has_truth(a.record)
                    else "a live tenant's flow definition (and its sampleSizeConfig) is not readable here."
                ),
            )
    return (
        planning.PlanInputs(baseline=0.05, mde=0.2, source="placeholder"),
        "Starting from a placeholder 5% baseline and a 20% lift (no sampleSizeConfig and no outcomes to "
        "measure the control's rate): type the rate you expect.",
    )


def show_planning(a: Analysis) -> None:
    """Is the experiment big enough? Guests needed per variant, the lift this run can detect, power curve."""
    served = runs.served_per_variant(a.key, a.frame)
    if len(served) < 2:
        st.caption("Needs at least two variants with served guests to plan a comparison.")
        return
    start, note = _plan_start(a)
    origin = (a.record.id, start)
    if st.session_state.get("analysis_plan_from") != origin:  # a new run or source: start from its plan
        st.session_state["analysis_plan_from"] = origin
        values = (start.baseline * 100, start.mde * 100, start.confidence * 100, start.power * 100)
        for name, value in zip(_PLAN_KEYS, values, strict=True):
            st.session_state[name] = round(float(value), 4)
    c1, c2, c3, c4 = st.columns(4)
    baseline = c1.number_input(
        "Baseline conversion (%)", 0.01, 99.0, step=0.5, format="%.2f", key=_PLAN_KEYS[0],
        help="The control's conversion rate you expect.",
    )  # fmt: skip
    lift = c2.number_input(
        "Lift to detect (%)", 1.0, 1000.0, step=5.0, format="%.0f", key=_PLAN_KEYS[1],
        help="Relative: 20% lifts a 5% rate to 6%.",
    )  # fmt: skip
    confidence = c3.number_input("Confidence (%)", 50.0, 99.9, step=1.0, format="%.1f", key=_PLAN_KEYS[2])
    power = c4.number_input(
        "Power (%)", 50.0, 99.9, step=5.0, format="%.0f", key=_PLAN_KEYS[3],
        help="The chance of finding the lift if it is real; 80% is the convention (Sitecore stores none).",
    )  # fmt: skip
    guests = min(served.values())
    try:
        plan = planning.PlanInputs(
            baseline=float(baseline) / 100,
            mde=float(lift) / 100,
            alpha=round(1 - float(confidence) / 100, 12),
            power=float(power) / 100,
            source=start.source,
        )
        sentence = planning.planning_sentence(guests, plan, variants=len(served))
        curve = planning.power_curve(
            plan.baseline, plan.mde, alpha=plan.alpha, power=plan.power, variants=len(served),
            max_guests=max(2 * plan.sample_size(len(served)), 2 * guests),
        )  # fmt: skip
    except ValueError as exc:
        st.error(plain(str(exc)), icon=":material/error:")
        return
    observed = ""
    if a.has_outcomes and start.source != "observed control rate":
        control = runs.conversion(a.key, a.frame, a.control)
        rate = float(control.loc[control["is_control"], "rate"].iloc[0]) if len(control) else math.nan
        if math.isfinite(rate) and abs(rate - plan.baseline) > 0.25 * plan.baseline:
            observed = (
                f" This run's control converts at {rate:.1%}: type that as the baseline to plan from it."
            )
    enough = guests >= plan.sample_size(len(served))
    (st.success if enough else st.warning)(
        plain(sentence[0].upper() + sentence[1:]), icon=":material/groups:"
    )
    st.caption(
        note + f" Per variant: the smallest arm ({guests:,} served guests)"
        + (f"; with {len(served)} variants, α is split over the {len(served) - 1} comparisons with the "
           "control." if len(served) > 2 else ".") + observed
    )  # fmt: skip
    st.altair_chart(
        charts.power_chart(curve, guests=guests, target_power=plan.power), width="stretch", height=220
    )


# ---- breakdowns, offers, latency, errors ----------------------------------------------------------------


def show_breakdown(a: Analysis) -> None:
    dims = runs.dimensions(a.key, a.frame)
    if not dims:
        st.caption("This run has no column with a few repeating values to break it down by.")
        return
    left, middle, right = st.columns([2, 2, 1])
    dimension = left.selectbox("Break down by", dims, key="analysis_dimension")
    values = {"variant": "Variant", "error_type": "Error type"}
    value = middle.selectbox("Show", list(values), format_func=values.__getitem__, key="analysis_value")
    levels = int(right.number_input("Levels shown", 2, 50, 10, key="analysis_levels"))
    table = runs.breakdown(a.key, a.frame, str(dimension), str(value), levels)
    if table.empty:
        st.caption("Nothing to show for this choice.")
        return
    st.altair_chart(charts.breakdown_chart(table, str(dimension), value=str(value)), width="stretch")
    if (table[str(dimension)] == analysis.OTHER).any():  # say so only when levels were pooled
        st.caption(
            f"The {levels} biggest levels of {plain(str(dimension))}; the rest are pooled as '(other)'."
        )


def show_offers(a: Analysis) -> None:
    table = runs.offers(a.key, a.frame)
    if table.empty:
        st.caption("No offers were found in the responses.")
        return
    st.altair_chart(charts.offers_chart(table), width="stretch")


def show_latency(a: Analysis) -> None:
    summary, histogram = runs.latency(a.key, a.frame)
    if summary.empty:
        st.caption("No successful calls yet.")
        return
    overall = summary.iloc[-1]
    p50, p95, p99, worst = st.columns(4)
    p50.metric("p50", f"{overall['p50']:,.0f} ms")
    p95.metric("p95", f"{overall['p95']:,.0f} ms")
    p99.metric("p99", f"{overall['p99']:,.0f} ms")
    worst.metric("max", f"{overall['max']:,.0f} ms")
    st.altair_chart(charts.latency_chart(histogram), width="stretch")
    number = st.column_config.NumberColumn(format="%.1f")
    st.dataframe(
        summary,
        hide_index=True,
        width="stretch",
        column_config={c: number for c in ("mean", "p50", "p95", "p99", "max")},
    )
    _show_budget(a, histogram)


def _show_budget(a: Analysis, histogram: pd.DataFrame) -> None:
    """What the visitor sees when the API is slow: the share of each variant's calls past the budget."""
    st.markdown("**Timeout budget**")
    left, right = st.columns([1, 3], gap="large")
    limit = left.number_input(
        "Budget (ms)", 1, 60_000, int(budget.JSS_TIMEOUT_MS), step=50, key="analysis_budget",
        help="A site that waits no longer than this serves its default experience instead.",
    )  # fmt: skip
    right.caption(
        f"{budget.JSS_TIMEOUT_MS:,.0f} ms by default: Sitecore JSS's personalize middleware gives up after "
        "400 ms and serves the default experience (its default since 2023; 250 ms before was too short). "
        "Change it to your site's own timeout."
    )
    table = runs.budget_table(a.key, a.frame, float(limit))
    text = budget.budget_sentence(table)
    over = bool((table.loc[table["variant"] != analysis.ALL, "share_over"] > 0).any())
    (st.warning if over else st.success)(plain(text), icon=":material/timer:")
    st.altair_chart(charts.budget_chart(histogram, budget_ms=float(limit)), width="stretch")
    st.dataframe(
        table.drop(columns=["budget_ms"]),
        hide_index=True,
        width="stretch",
        column_config={
            "over_budget": st.column_config.NumberColumn("over budget", format="%d"),
            "share_over": st.column_config.NumberColumn("share over", format="percent"),
            "share_over_low": st.column_config.NumberColumn("interval from", format="percent"),
            "share_over_high": st.column_config.NumberColumn("interval to", format="percent"),
            **{c: st.column_config.NumberColumn(format="%.1f") for c in ("p50", "p95", "p99")},
        },
    )


def show_errors(a: Analysis) -> None:
    table = runs.errors(a.key, a.frame)
    if table.empty:
        st.success("No failed calls.", icon=":material/check_circle:")
        return
    st.altair_chart(charts.errors_chart(table), width="stretch")
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={"share": _PERCENT, "share_of_errors": st.column_config.NumberColumn(format="percent")},
    )


def show_detection(a: Analysis) -> None:
    """How often the detected label agrees with the sandbox's true variant (sandbox outcomes only)."""
    if "true_variant" not in a.frame.columns:
        st.caption("Needs the sandbox's outcomes, which carry each guest's true variant.")
        return
    accuracy = runs.accuracy(a.key, a.frame)
    if accuracy is None:
        st.caption("No served guest has a known true variant yet.")
        return
    kind = st.success if accuracy >= 0.999 else st.warning
    kind(
        f"Detection agrees with the sandbox's true assignment for {accuracy:.1%} of served guests.",
        icon=":material/verified:",
    )
    if a.labels:
        mapping = pd.DataFrame({"detected label": list(a.labels), "true variant": list(a.labels.values())})
        st.dataframe(mapping, hide_index=True)


# ---- the run table --------------------------------------------------------------------------------------


def show_table(a: Analysis) -> None:
    frame = a.frame
    dims = runs.dimensions(a.key, frame)
    c1, c2, c3, c4 = st.columns([2, 1, 1, 2])
    variants = c1.multiselect(
        "Variants", runs.levels(a.key, frame, "variant"), key="analysis_filter_variants"
    )
    status = c2.selectbox("Calls", ["all", "ok", "failed"], key="analysis_filter_ok")
    dimension = c3.selectbox("Dimension", ["(none)", *dims], key="analysis_filter_dimension")
    levels: list[str] = []
    if dimension != "(none)":
        choices = runs.levels(a.key, frame, dimension)
        levels = c4.multiselect(f"{dimension} is", choices, key="analysis_filter_levels")
    ok = None if status == "all" else status == "ok"
    filters = (tuple(variants), ok, None if dimension == "(none)" else dimension, tuple(levels))
    rows, matching = runs.table(a.key, frame, filters, _TABLE_ROWS)
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        height=360,
        key="analysis_table",
        column_config={"latency_ms": st.column_config.NumberColumn("latency (ms)", format="%.1f")},
    )
    shown = min(matching, _TABLE_ROWS)
    st.caption(
        f"{matching:,} of {len(frame):,} guests match; showing the first {shown:,}. "
        "Export the whole run (CSV or Parquet) on the Batch run page."
    )


# ---- comparing runs -------------------------------------------------------------------------------------


def show_compare(a: Analysis) -> None:
    """Two runs side by side; with a simulated run (``batch --simulate``, #11), *Simulated vs live*: the
    share of guests whose answer changed, who they are, and the sandbox's reasons on each side."""
    others = [r for r in _all_runs() if r.id != a.record.id]
    if not others:
        st.caption("Run the flow again (e.g. after changing it) to compare two runs here.")
        return
    by_id = {r.id: r for r in others}
    simulated = _simulated(str(a.record.path), runs.stamp(a.record.path))
    if simulated:  # the live runs over the same guests first: that is the comparison people want
        sample = _sample_of(str(a.record.path), runs.stamp(a.record.path))
        first = [r.id for r in others if not _simulated(str(r.path), runs.stamp(r.path))
                 and _sample_of(str(r.path), runs.stamp(r.path)) == sample]  # fmt: skip
    else:
        first = [r.id for r in others if r.friendly_id == a.record.friendly_id]
    order = first + [i for i in by_id if i not in first]
    before_id = st.selectbox(
        "Compare with (live)" if simulated else "Compare with (before)",
        order,
        format_func=lambda i: by_id[i].label,
        key="analysis_compare",
    )
    before = by_id[str(before_id)]
    before_frame = runs.run_frame(str(before.path), runs.stamp(before.path))
    key = (a.key, str(before.path), runs.stamp(before.path))
    result = runs.compare(key, before_frame, a.frame)
    if simulated or _simulated(str(before.path), runs.stamp(before.path)):
        _simulated_vs_live(
            result, live=before, simulated=a.record if simulated else before, flipped=not simulated
        )
    st.info(plain(result.summary), icon=":material/compare_arrows:")
    variants, offers = comparison_rows(result)
    left, right = st.columns(2, gap="large")
    with left:
        st.markdown("**Variant shares** (of served guests)")
        st.dataframe(variants, hide_index=True, width="stretch")
    with right:
        st.markdown("**Offers per variant** (share of the variant's guests shown each offer)")
        st.dataframe(offers, hide_index=True, width="stretch")
    if result.switched_count:
        st.markdown(
            f"**Guests who switched variant** (first {len(result.switched)} of {result.switched_count:,})"
        )
        st.dataframe(result.switched, hide_index=True, width="stretch")


@st.cache_data(max_entries=64, show_spinner=False)
def _simulated(path: str, stamp: runs.Stamp) -> bool:
    """Was this run a simulation (``RunMeta.simulate``: a sandbox flow run in any status)?"""
    with RunStore.open(path) as store:
        return store.meta.simulate


@st.cache_data(max_entries=64, show_spinner=False)
def _sample_of(path: str, stamp: runs.Stamp) -> str:
    with RunStore.open(path) as store:
        return store.meta.sample_fingerprint


@st.cache_data(max_entries=8, show_spinner=False)
def _execution_refs(path: str, stamp: runs.Stamp) -> dict[str, str]:
    """Guest → sandbox execution ref (the Analysis frame leaves the refs out to stay small)."""
    with RunStore.open(path) as store:
        frame = store.to_dataframe(["guest", "execution_ref"])
    return dict(zip(frame["guest"].astype(str), frame["execution_ref"].astype(str), strict=True))


def _simulated_vs_live(result: Any, *, live: RunRecord, simulated: RunRecord, flipped: bool) -> None:
    """The share of guests whose answer changed, the guests, and why for one of them (sandbox traces)."""
    st.markdown("#### Simulated vs live")
    left, right = st.columns(2)
    share = result.changed_share
    left.metric(
        "Guests whose answer changed",
        "–" if share is None else f"{share:.1%}",
        help="Variant or offers differ, out of the guests served in both runs.",
    )
    right.metric("Changed / served in both", f"{result.changed_count:,} / {result.common_guests:,}")
    if flipped:
        st.caption("This run is the live one; the simulated run is the one picked above.")
    if not result.changed_count:
        st.success("Every guest served in both runs got the same answer.", icon=":material/check:")
        return
    changed = result.changed
    table = changed.rename(
        columns={
            "variant_before": "variant (live)" if not flipped else "variant (simulated)",
            "variant_after": "variant (simulated)" if not flipped else "variant (live)",
            "offers_before": "offers (live)" if not flipped else "offers (simulated)",
            "offers_after": "offers (simulated)" if not flipped else "offers (live)",
        }
    )
    st.markdown(f"**Guests whose answer changed** (first {len(changed)} of {result.changed_count:,})")
    st.dataframe(table, hide_index=True, width="stretch")
    guest = st.selectbox("Why? Pick a guest", list(changed["guest"].astype(str)), key="analysis_why_guest")
    if not (live.is_sandbox and simulated.is_sandbox):
        st.caption("Reasons come from the sandbox's traces; the live run was not on a sandbox.")
        return
    columns = st.columns(2, gap="large")
    for column, title, record in ((columns[0], "Live", live), (columns[1], "Simulated", simulated)):
        with column:
            st.markdown(f"**{title}** · {plain(record.friendly_id)}")
            ref = _execution_refs(str(record.path), runs.stamp(record.path)).get(str(guest), "")
            try:
                trace = sandbox_admin(record.base_url).execution(ref) if ref else None
            except FlowLabError as exc:  # the sandbox restarted: its traces are gone
                st.caption(f"No trace: {plain(str(exc))}")
                continue
            if trace is None:
                st.caption("No execution ref was recorded for this guest.")
                continue
            why = explain_trace(trace)
            st.markdown(plain(why.headline))
            st.markdown("\n".join(f"- {plain(line)}" for line in why.lines))


# ---- AEP Edge runs: audience membership ------------------------------------------------------------------

_OVERALL = "(overall)"


@st.cache_data(ttl=30, show_spinner=False)
def _audience_names(base_url: str) -> tuple[tuple[str, str], ...]:
    """The sandbox's audience names (a live org's audiences are shown by id: the Edge API has no names)."""
    return tuple(
        (str(a["id"]), str(a.get("name") or a["id"])) for a in sandbox_admin(base_url).edge_audiences()
    )


def show_edge_analysis(record: RunRecord) -> None:
    """An AEP Edge run: membership rates per audience with intervals, by a dimension; the attributes the
    With Attributes destination returned; latency, errors and the run table. No variants here: the Edge
    answers which audiences a profile is in, not which experience it gets."""
    path, stamp = str(record.path), runs.stamp(record.path)
    frame = runs.run_frame(path, stamp)
    key = (path, stamp, "edge")
    st.caption(
        plain(f"Datastream {record.friendly_id} on {record.target} · started {_when(record.created)}")
        + (f" · {plain(_source_text(record.source))}" if record.source else "")
    )
    if record.status == "running":
        st.info(
            "This run is still going: the analysis covers the identities done so far.", icon=":material/sync:"
        )
    done, answered, failed, status = st.columns(4)
    done.metric("Identities with a result", f"{record.done:,}", help=f"of {record.total:,} in the sample")
    answered.metric("Answered", f"{record.ok:,}")
    failed.metric("Failed calls", f"{record.failed:,}", help="Left out of every membership rate.")
    status.metric("Status", record.status)

    names: tuple[tuple[str, str], ...] = ()
    if _has_truth(record):
        try:
            names = _audience_names(record.base_url)
        except FlowLabError as exc:
            st.warning(
                f"The sandbox's audience names are not available: {plain(str(exc))}",
                icon=":material/warning:",
            )

    st.subheader("Audience membership")
    dims = runs.edge_dimensions(key, frame)
    by_choice = st.selectbox(
        "By", [_OVERALL, *dims], key="analysis_edge_by",
        help="A column of the sample (countryCode, loyaltyTier…), the identity namespace or the event type.",
    )  # fmt: skip
    by = None if by_choice == _OVERALL else str(by_choice)
    try:
        rates = runs.membership(key, frame, by, names)
    except FlowLabError as exc:
        st.error(plain(str(exc)), icon=":material/error:")
        return
    st.info(plain(membership_sentence(rates)), icon=":material/groups:")
    if not rates.empty:
        shown = rates[rates["guests"] > 0]
        height = 80 + 26 * len(shown) if by is None else 80 + 18 * len(shown)
        st.altair_chart(membership_chart(rates, by=by), width="stretch", height=min(height, 1200))
        st.dataframe(
            rates,
            hide_index=True,
            width="stretch",
            key="analysis_edge_rates",
            column_config={
                "audience": st.column_config.TextColumn("audience id"),
                "guests": st.column_config.NumberColumn("answered", format="%d"),
                "rate": _PERCENT,
                "rate_low": st.column_config.NumberColumn("95% interval from", format="percent"),
                "rate_high": st.column_config.NumberColumn("to", format="percent"),
            },
        )
        st.caption(
            "An identity is a member when the activation:pull answer lists the audience for any destination "
            "(Edge lists realized audiences only). Intervals: Wilson, 95%. Failed calls are left out of "
            "every rate."
            + ("" if names else " Audiences are shown by id: a live org's Edge answer carries no names.")
        )

    st.subheader("Attributes")
    table = runs.attributes(key, frame, by)
    if table.empty:
        st.info(
            "No row carried a profile attribute. Attributes come only from a Custom Personalization With "
            "Attributes destination through the authenticated Server API; a call without a token gets "
            "audiences only.",
            icon=":material/info:",
        )
    else:
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            key="analysis_edge_attributes",
            column_config={"guests": st.column_config.NumberColumn("answered", format="%d"), "share": _PERCENT,
                           "top_values": st.column_config.TextColumn("top values")},
        )  # fmt: skip

    latency, errors, rows = st.tabs(["Latency", "Errors", "Run table"])
    with latency:
        summary, histogram = runs.edge_latency(key, frame)
        if summary.empty:
            st.caption("No answered calls yet.")
        else:
            overall = summary.iloc[-1]
            p50, p95, p99, worst = st.columns(4)
            p50.metric("p50", f"{overall['p50']:,.0f} ms")
            p95.metric("p95", f"{overall['p95']:,.0f} ms")
            p99.metric("p99", f"{overall['p99']:,.0f} ms")
            worst.metric("max", f"{overall['max']:,.0f} ms")
            st.altair_chart(charts.latency_chart(histogram, group="Event type"), width="stretch")
            number = st.column_config.NumberColumn(format="%.1f")
            st.dataframe(
                summary.rename(columns={"variant": "event type"}),
                hide_index=True,
                width="stretch",
                column_config={c: number for c in ("mean", "p50", "p95", "p99", "max")},
            )
            st.caption(
                "One colour per event type of the sample. Adobe publishes up to 500 ms end to end for the Edge."
            )
    with errors:
        failures = runs.errors(key, frame)
        if failures.empty:
            st.success("No failed calls.", icon=":material/check_circle:")
        else:
            st.altair_chart(charts.errors_chart(failures), width="stretch")
            st.dataframe(failures, hide_index=True, width="stretch", column_config={"share": _PERCENT,
                         "share_of_errors": st.column_config.NumberColumn(format="percent")})  # fmt: skip
    with rows:
        wanted = ["row", "guest", "identity", "event_type", "ok", "status_code", "segments", "attributes",
                  "latency_ms", "error_type", "error", *dims]  # fmt: skip
        columns = list(dict.fromkeys(c for c in wanted if c in frame.columns))
        st.dataframe(
            frame[columns].head(_TABLE_ROWS),
            hide_index=True,
            width="stretch",
            height=360,
            key="analysis_edge_table",
            column_config={"latency_ms": st.column_config.NumberColumn("latency (ms)", format="%.1f")},
        )
        st.caption(
            f"The first {min(len(frame), _TABLE_ROWS):,} of {len(frame):,} identities. "
            "Export the whole run (CSV or Parquet) on the Batch run page."
        )
