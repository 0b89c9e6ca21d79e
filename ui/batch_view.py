"""The Batch run page's flow and options: the flow picker, pacing (the default concurrency stated), the
live-tenant confirmation over the threshold, and the Run button (a callback that starts the batch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from flowlab.batch.runner import BatchOptions, resume_state
from flowlab.batch.samples import GuestSample
from flowlab.config import load_settings
from flowlab.edge.provider import EdgeProvider
from flowlab.errors import FlowLabError
from flowlab.workbench.catalog import FlowSummary
from flowlab.workbench.targets import TargetStore
from ui import runs
from ui.target import Target, edge_client, live_call_allowed, sandbox_admin
from ui.text import plain

__all__ = [
    "PROBLEM_KEY",
    "RunSettings",
    "datastream_picker",
    "edge_start_button",
    "flow_picker",
    "in_flight_note",
    "live_confirmation",
    "run_settings",
    "show_problem",
    "simulate_switch",
    "start_button",
]

#: Where a failed start, resume or re-run leaves its message for the page to show.
PROBLEM_KEY = "batch_problem"


# ---- flow and options -----------------------------------------------------------------------------------


@st.cache_data(ttl=10, show_spinner=False)
def _flows(base_url: str) -> list[dict[str, Any]]:
    return sandbox_admin(base_url).flows()


def simulate_switch(target: Target) -> bool:
    """Simulate before you publish (#11): on a sandbox, run a flow in any status (X-Flowlab-Simulate: 1)."""
    if not target.is_sandbox:
        return False
    return st.checkbox(
        "Simulate (sandbox only, any status)",
        key="batch_simulate",
        help="Runs a DRAFT or PAUSED flow (or an imported one before it goes live) over the sample in the "
        "sandbox; compare it with a run of the live flow on the Analysis page (Simulated vs live).",
    )


def flow_picker(target: Target, *, any_status: bool = False) -> str:
    """The flow to run: the sandbox's live flows (``any_status``: every interactive flow), or a friendlyId
    typed for a tenant."""
    flows_data: list[dict[str, Any]] | None = None
    if target.is_sandbox:
        try:
            flows_data = _flows(target.base_url)
        except FlowLabError as exc:
            st.warning(
                f"The sandbox's flow list is not available: {plain(str(exc))}", icon=":material/warning:"
            )
    if flows_data is not None:
        flows = [FlowSummary.from_admin(f) for f in flows_data]
        live = {
            f.friendly_id: f for f in flows if f.live or (any_status and f.type == "INTERACTIVE_API_FLOW")
        }
        ids = sorted(live)
        default = ids.index("checkout_ab_test") if "checkout_ab_test" in ids else 0
        friendly_id = st.selectbox(
            "Flow", ids, index=default, key="batch_flow", format_func=lambda i: live[i].label
        )
        if friendly_id in live:
            status = "" if live[friendly_id].live else f"{live[friendly_id].status}, simulated · "
            st.caption(plain(status + live[friendly_id].details))
        return str(friendly_id or "")
    recent = TargetStore().recent_friendly_ids(target.name)
    value = st.text_input(
        "Flow (friendlyId)",
        value=recent[0] if recent else "",
        key="batch_flow_text",
        placeholder="e.g. checkout_ab_test",
        help="The friendlyId from the experiment's Setup details.",
    )
    return value.strip()


@dataclass(frozen=True)
class RunSettings:
    """The pacing and detection options of the form, as ``BatchOptions`` fields."""

    concurrency: int
    rps: float | None
    retries: int
    timeout: float
    variant_path: str | None
    name: str

    def pacing(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "rps": self.rps,
            "retries": self.retries,
            "timeout": self.timeout,
        }


def run_settings(*, edge: bool = False) -> RunSettings:
    """Concurrency (the default stated), optional rate cap, retries, timeout, variant path, run name.

    ``edge``: an AEP Edge batch, which has no variant to detect (no variant path) and retries only 429,
    502, 503 and 504."""
    settings = load_settings()
    default = settings.batch_concurrency
    c1, c2 = st.columns(2)
    concurrency = int(
        c1.number_input(
            "Concurrency",
            1,
            1000,
            default,
            key="batch_concurrency",
            help=f"Requests in flight at once. Default {default} (FLOWLAB_BATCH_CONCURRENCY).",
        )
    )
    rps = float(
        c2.number_input(
            "Max requests/s",
            0.0,
            10_000.0,
            0.0,
            step=10.0,
            format="%.0f",
            key="batch_rps",
            help="A cap on the rate for all workers together; 0 means no cap.",
        )
    )
    c3, c4 = st.columns(2)
    retries = int(
        c3.number_input(
            "Retries",
            0,
            10,
            3,
            key="batch_retries",
            help="For 429, 502, 503 and 504 (Retry-After honoured)."
            if edge
            else "For timeouts, 408, 429 and 5xx (Retry-After honoured).",
        )
    )
    timeout = float(
        c4.number_input("Timeout (s)", 0.5, 120.0, float(settings.timeout), step=0.5, key="batch_timeout")
    )
    st.caption(
        f"Default concurrency is a modest **{default}** requests at a time (FLOWLAB_BATCH_CONCURRENCY), "
        "with no rate cap: fine for the sandbox; on a live tenant set a cap its owners agree to."
    )
    left, right = st.columns(2)
    path = ""
    if not edge:
        path = left.text_input(
            "Variant JSON path (optional)",
            key="batch_variant_path",
            placeholder="variant or decisionOffers[0].name",
            help="Where the response names the variant. Empty: a 'variant' field, else a fingerprint of the "
            "offers.",
        )
    name = right.text_input(
        "Run name (optional)", key="batch_name", placeholder="e.g. checkout before the fix"
    )
    return RunSettings(concurrency, rps or None, retries, timeout, path.strip() or None, name.strip())


def live_confirmation(target: Target, n: int, friendly_id: str, *, edge: bool = False) -> bool:
    """On a live tenant over the threshold, the user must confirm; True when the run may start."""
    if target.is_sandbox:
        return True
    threshold = load_settings().batch_confirm_threshold
    if not live_call_allowed(target):
        st.warning(
            "This is a live tenant: acknowledge in the sidebar that calls write tracking events first.",
            icon=":material/public:",
        )
        return False
    if n <= threshold:
        return True
    flow, name = plain(friendly_id or "the flow"), plain(target.name)
    effect = (
        f"Each one sends an event through {flow} on {name}: {n:,} events that org's Experience Platform "
        "collects, and may segment on."
        if edge
        else f"Each one executes {flow} for real on {name} and writes a tracking event: {n:,} visits in that "
        "tenant's experiment results."
    )
    st.warning(
        f"**{n:,} calls on a live tenant.** {effect} Batches over {threshold:,} guests need this "
        "confirmation (FLOWLAB_BATCH_CONFIRM_THRESHOLD).",
        icon=":material/warning:",
    )
    return st.checkbox(f"Yes, call {flow} for {n:,} guests on {name}", key="batch_confirm")


def start_button(
    target: Target,
    sample: GuestSample | None,
    friendly_id: str,
    options: RunSettings,
    *,
    simulate: bool = False,
) -> None:
    """Start the run in the background (it becomes this session's current run); ``simulate`` on a sandbox
    runs the flow in any status."""
    current = runs.handle(st.session_state.get("batch_run_id"))
    busy = current is not None and not current.done
    n = len(sample) if sample is not None else 0
    allowed = live_confirmation(target, n, friendly_id) if n else False
    valid = f"the {n:,} valid rows" if sample is not None and sample.problems else f"{n:,} guests"
    st.button(
        f"Run {valid}",
        key="batch_start",
        type="primary",
        icon=":material/play_arrow:",
        disabled=not (n and friendly_id and allowed) or busy,
        help="A run is in progress: cancel it or wait for it." if busy else None,
        on_click=_start,
        args=(target, sample, friendly_id, options, simulate),
    )
    show_problem()


def _start(
    target: Target, sample: GuestSample | None, friendly_id: str, options: RunSettings, simulate: bool = False
) -> None:
    """The Run button's callback: it runs before the rerun, so the page already shows the new run."""
    st.session_state.pop(PROBLEM_KEY, None)
    if sample is None:
        return
    try:
        batch = BatchOptions(
            base_url=target.base_url,
            client_key=target.client_key,
            friendly_id=friendly_id,
            defaults=_defaults(target),
            variant_path=options.variant_path,
            simulate=simulate and target.is_sandbox,
            **options.pacing(),
        )
        name = options.name or (f"{friendly_id} (simulated)" if batch.simulate else "")
        runs.start_run(sample, batch, name=name, target=target.name, is_sandbox=target.is_sandbox)
    except FlowLabError as exc:
        st.session_state[PROBLEM_KEY] = str(exc)
        return
    if not target.is_sandbox:
        TargetStore().remember_friendly_id(target.name, friendly_id)


def show_problem() -> None:
    problem = st.session_state.get(PROBLEM_KEY)
    if problem:
        st.error(plain(problem), icon=":material/error:")


def _defaults(target: Target) -> dict[str, str | None]:
    settings = load_settings()
    return {
        "channel": settings.channel,
        "pointOfSale": target.point_of_sale or settings.point_of_sale or None,
        "language": settings.language,
        "currencyCode": settings.currency,
    }


def in_flight_note(store_path: Path, *, resuming: int | None = None) -> str | None:
    """What a resume does to the guests that were in flight when the run stopped (#8); None if none were.

    ``resuming``: the count of a resume running now; without it, the count is read from the run store.
    """
    if resuming is not None:
        count, now = resuming, True
    else:
        try:
            state = resume_state(store_path)
        except FlowLabError:
            return None
        count, now = (state.in_flight if state is not None else 0), False
    if not count:
        return None
    guests = f"{count:,} guest{'' if count == 1 else 's'}"
    if now:
        return (
            f"Calling again up to {guests} that were in flight when the run stopped: the tenant may already "
            "have recorded their first call."
        )
    return (
        f"Up to {guests} were in flight when it stopped: the tenant may already have recorded that first "
        "call. Resuming calls them again."
    )


# ---- AEP Edge batches -----------------------------------------------------------------------------------


@st.cache_data(ttl=10, show_spinner=False)
def _datastreams(base_url: str) -> list[dict[str, Any]]:
    return list(sandbox_admin(base_url).info().get("edge", {}).get("datastreams", []))


def datastream_picker(target: Target) -> tuple[str, bool]:
    """The datastream to call and whether to send a token: the sandbox's enabled datastreams, or the id
    typed for a live org; the token is on by default (attributes come back only with one)."""
    streams: list[dict[str, Any]] | None = None
    if target.is_sandbox:
        try:
            streams = [d for d in _datastreams(target.base_url) if d.get("enabled", True)]
        except FlowLabError as exc:
            st.warning(
                f"The sandbox's datastreams are not available: {plain(str(exc))}", icon=":material/warning:"
            )
    if streams:
        by_id = {str(d["id"]): d for d in streams}
        ids = list(by_id)
        default = ids.index(target.datastream_id) if target.datastream_id in by_id else 0
        chosen = st.selectbox(
            "Datastream", ids, index=default, key="batch_datastream",
            format_func=lambda i: str(by_id[i].get("name") or i),
        )  # fmt: skip
        stream = by_id[str(chosen)]
        if not stream.get("personalizationDestinations"):
            st.caption(
                "This datastream has no personalization destinations: the answers carry no audiences "
                "(a data-collection-only datastream)."
            )
        datastream = str(chosen)
    else:
        datastream = st.text_input(
            "Datastream id",
            value=target.datastream_id,
            key="batch_datastream_text",
            placeholder="e.g. 0a106b8e-54ce-4c7b-9c5d-5d8f3a1b2c3d",
            help="Data Collection → Datastreams shows it.",
        ).strip()
    can_sign = target.is_sandbox or bool(target.client_id)
    authenticated = st.toggle(
        "Send with a token (Server API)",
        value=can_sign,
        disabled=not can_sign,
        key="batch_edge_auth",
        help="With an IMS token, With Attributes destinations return the mapped attributes; without one, "
        "audiences only." + ("" if can_sign else " This target has no client id: unauthenticated only."),
    )
    return datastream, bool(authenticated and can_sign)


def _edge_provider(target: Target, datastream: str, authenticated: bool) -> EdgeProvider:
    """The runner's Edge provider; a live target's credentials come from its client (never from a form)."""
    if target.is_sandbox:
        return EdgeProvider.for_sandbox(target.base_url, authenticated=authenticated, datastream=datastream)
    credentials = edge_client(target, authenticated=True).credentials if authenticated else None
    return EdgeProvider(datastream, credentials=credentials, region=target.location_hint)


def edge_start_button(
    target: Target, sample: GuestSample | None, datastream: str, authenticated: bool, options: RunSettings
) -> None:
    """Start an AEP Edge batch in the background (it becomes this session's current run)."""
    current = runs.handle(st.session_state.get("batch_run_id"))
    busy = current is not None and not current.done
    n = len(sample) if sample is not None else 0
    allowed = (
        live_confirmation(target, n, f"datastream {datastream}", edge=True) if n and datastream else False
    )
    valid = f"the {n:,} valid rows" if sample is not None and sample.problems else f"{n:,} identities"
    st.button(
        f"Run {valid}",
        key="batch_start",
        type="primary",
        icon=":material/play_arrow:",
        disabled=not (n and datastream and allowed) or busy,
        help="A run is in progress: cancel it or wait for it." if busy else None,
        on_click=_start_edge,
        args=(target, sample, datastream, authenticated, options),
    )
    show_problem()


def _start_edge(
    target: Target, sample: GuestSample | None, datastream: str, authenticated: bool, options: RunSettings
) -> None:
    st.session_state.pop(PROBLEM_KEY, None)
    if sample is None:
        return
    try:
        provider = _edge_provider(target, datastream, authenticated)
        batch = BatchOptions(base_url=target.base_url, provider=provider, **options.pacing())
        runs.start_run(sample, batch, name=options.name, target=target.name, is_sandbox=target.is_sandbox)
    except FlowLabError as exc:
        st.session_state[PROBLEM_KEY] = str(exc)
