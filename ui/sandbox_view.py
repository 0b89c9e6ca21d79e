"""The Sandbox page's sections: flows, decision models, offers, guests and their tracking, loading, reset."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, ParamSpec

import streamlit as st

from flowlab import SandboxAdmin
from flowlab.errors import FlowLabError
from flowlab.personalize.offers import find_offers
from flowlab.workbench.advice import advise
from flowlab.workbench.catalog import FlowSummary, decision_table_rows, guest_rows, tracking_rows
from ui.cards import render_offer_cards
from ui.errors import show_advice
from ui.text import code, plain

__all__ = [
    "EXAMPLES",
    "show_flows",
    "show_guests",
    "show_import",
    "show_load",
    "show_models",
    "show_offers",
    "show_overview",
    "show_replay",
]

_PAGE = 25

EXAMPLES: dict[str, dict[str, Any]] = {
    "flow": {
        "friendlyId": "hello_guest",
        "name": "Hello guest",
        "type": "INTERACTIVE_API_FLOW",
        "subtype": "EXPERIENCE",
        "status": "LIVE",
        "variants": [
            {
                "ref": "hello_guest_v1",
                "name": "Greeting",
                "isControl": True,
                "tasks": [
                    {
                        "implementation": "templateRenderTask",
                        "input": {
                            "type": "application/json",
                            "template": '{"variant": "greeting", "message": "Hello ${guest.firstName!"there"}!"}',
                        },
                    }
                ],
            }
        ],
        "traffic": {"splits": [{"ref": "hello_guest_v1", "split": 100}]},
    },
    "offer": {
        "ref": "rain_jackets_20",
        "name": "Rain jackets – 20% off",
        "attributes": {
            "title": "20% off rain jackets",
            "text": "This week only, on every shell in the store.",
            "price": 119.0,
            "currency": "EUR",
            "ctaText": "Shop rainwear",
            "ctaUrl": "/collections/rain",
            "badge": "-20%",
        },
    },
    "decision model": {
        "name": "Always the rain offer",
        "nodes": [
            {
                "id": "always_rain_offers",
                "name": "Offers",
                "type": "decisionTable",
                "hitPolicy": "FIRST",
                "inputs": [{"label": "Guest Type", "expression": "guest.guestType"}],
                "outputs": [{"name": "offer", "typeRef": "com.boxever.offer"}],
                "rules": [
                    {"inputEntries": ["-"], "outputEntries": ['"rain_jackets_20"']}
                ],  # the example offer
            }
        ],
    },
}


_P = ParamSpec("_P")


def _fail(exc: FlowLabError) -> None:
    show_advice(advise(exc))


def _friendly(section: Callable[_P, None]) -> Callable[_P, None]:
    """A section whose sandbox is unreachable shows what to do instead of a traceback."""

    @functools.wraps(section)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            section(*args, **kwargs)
        except FlowLabError as exc:
            _fail(exc)

    return wrapper


def show_overview(admin: SandboxAdmin) -> None:
    """Counts and the reset button."""
    try:
        info = admin.info()
    except FlowLabError as exc:
        _fail(exc)
        return
    counts = info.get("counts") or {}
    columns = st.columns(6, vertical_alignment="bottom")
    for column, (label, key) in zip(
        columns,
        (("Flows", "flows"), ("Offers", "offers"), ("Decision models", "decisionModels"), ("Guests", "guests"),
         ("Executions", "executions")),
        strict=False,
    ):  # fmt: skip
        column.metric(label, counts.get(key, "—"))
    with columns[5].popover(
        "Reset", icon=":material/restart_alt:", width="stretch", help="Back to the demo data"
    ):
        st.write("Remove everything you loaded and every tracking record, and reload the demo tenant.")
        if st.button("Reset the sandbox", key="sandbox_reset", type="primary"):
            try:
                admin.reset()
            except FlowLabError as exc:
                _fail(exc)
            else:
                st.session_state["sandbox_message"] = "The sandbox is back to the demo data."
                st.rerun()
    message = st.session_state.pop("sandbox_message", None)
    if message:
        st.success(plain(message), icon=":material/check_circle:")
    st.caption(
        f"Client key {code(info.get('clientKey'))} · points of sale: "
        + ", ".join(code(p.get("name")) for p in info.get("pointsOfSale") or [])
    )
    replay = info.get("replay") or {}
    if replay.get("active"):
        flows = ", ".join(code(f) for f in replay.get("flowIds") or [])
        st.info(
            f"Replaying {replay.get('guests', 0):,} recorded guests of {flows}: callFlows answers a recorded "
            "guest exactly as recorded and any other request with a 404. See the Replay tab.",
            icon=":material/replay:",
        )


@_friendly
def show_flows(admin: SandboxAdmin) -> None:
    """Every flow with type, status and variants; one flow's details and definition."""
    flows = [FlowSummary.from_admin(f) for f in admin.flows()]
    rows = [
        {
            "friendlyId": f.friendly_id,
            "name": f.name,
            "kind": f.kind,
            "status": f.status,
            "runs": "yes" if f.live else "no",
            "variants (traffic split)": " · ".join(f"{v.name} {v.split:g}%" for v in f.variants),
        }
        for f in flows
    ]
    st.dataframe(rows, hide_index=True, width="stretch", key="sandbox_flows_table")
    chosen = st.selectbox(
        "Flow details", [f.friendly_id for f in flows], key="sandbox_flow", index=0 if flows else None
    )
    flow = next((f for f in flows if f.friendly_id == chosen), None)
    if flow is None:
        return
    st.markdown(f"**{plain(flow.name)}** — {plain(flow.description)}")
    st.caption(plain(flow.details))
    definition = admin.flow(flow.friendly_id)
    for variant in definition.get("variants") or []:
        tasks = ", ".join(_task(t) for t in variant.get("tasks") or [])
        st.markdown(f"- **{plain(variant.get('name'))}**: {plain(tasks)}")
    with st.expander("Definition (JSON)"):
        st.json(definition, expanded=False)


def _task(task: dict[str, Any]) -> str:
    impl = task.get("implementation")
    data = task.get("input") or {}
    if impl == "conditionsTask":
        return "conditions " + ", ".join(str(r.get("friendlyId")) for r in data.get("rules") or [])
    if impl == "decisionModelTask":
        return f"{len(data.get('decisionModelRefs') or [])} decision model(s)"
    if impl == "templateRenderTask":
        return "API response template"
    return str(impl)


@_friendly
def show_models(admin: SandboxAdmin) -> None:
    """A decision model's programmables (JavaScript) and decision tables (rows, offers by title)."""
    models = admin.decision_models()
    offers = admin.offers()
    names = {str(m.get("ref")): str(m.get("name")) for m in models}
    ref = st.selectbox("Decision model", list(names), format_func=names.__getitem__, key="sandbox_model")
    model = next((m for m in models if str(m.get("ref")) == ref), None)
    if model is None:
        return
    if model.get("description"):
        st.caption(plain(model["description"]))
    for node in model.get("nodes") or []:
        kind = node.get("type")
        st.markdown(f"**{plain(node.get('name'))}** · {plain(kind)}")
        if kind == "decisionTable":
            st.caption(f"Hit policy {plain(node.get('hitPolicy', 'FIRST'))}: the first matching row wins.")
            st.dataframe(decision_table_rows(node, offers), hide_index=True, width="stretch")
        elif kind == "programmable":
            st.code(str(node.get("source") or ""), language="javascript", wrap_lines=True)
        else:
            st.json(node, expanded=False)


@_friendly
def show_offers(admin: SandboxAdmin) -> None:
    """Every offer as the card a guest would see."""
    raw = admin.offers()
    query = st.text_input("Search offers", key="sandbox_offer_search", placeholder="boots, VIP, -10%…")
    offers = find_offers(raw)
    if query.strip():
        needle = query.strip().lower()
        offers = [o for o in offers if needle in " ".join([o.title, o.name, o.text, o.badge]).lower()]
    st.caption(f"{len(offers)} of {len(raw)} offers")
    render_offer_cards(offers, empty="No offer matches.")


@_friendly
def show_guests(admin: SandboxAdmin) -> None:
    """Guests (page by page, or found by browser id or email), one guest's attributes and tracking."""
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    query = left.text_input("Find a guest by browser ID or email", key="sandbox_guest_search").strip()
    filters = {"email": query} if "@" in query else ({"browserId": query} if query else {})
    page = 1
    if not filters:
        page = int(right.number_input("Page", min_value=1, value=1, step=1, key="sandbox_guest_page"))
    try:
        result = admin.guests(limit=_PAGE, offset=(page - 1) * _PAGE, **filters)
    except FlowLabError as exc:
        _fail(exc)
        return
    guests = result.get("items") or []
    st.caption(f"{result.get('total', 0)} guest(s)" + ("" if filters else f", page {page}"))
    st.dataframe(guest_rows(guests), hide_index=True, width="stretch", key="sandbox_guests_table")
    if not guests:
        return
    labels = {str(g["ref"]): r["name"] + (f" · {r['email']}" if r["email"] else "") for g, r in zip(
        guests, guest_rows(guests), strict=True)}  # fmt: skip
    ref = st.selectbox("Guest", list(labels), format_func=labels.__getitem__, key="sandbox_guest")
    guest = next(g for g in guests if str(g["ref"]) == ref)
    attributes, tracking = st.columns(2)
    with attributes:
        st.markdown("**Attributes**")
        st.json({k: v for k, v in guest.items() if k not in ("orders", "sessions")}, expanded=1)
        st.caption(f"{len(guest.get('orders') or [])} order(s)")
    with tracking:
        st.markdown("**Tracking records** (one per flow execution, oldest first)")
        records = admin.tracking(str(ref))
        if records:
            st.dataframe(tracking_rows(records, admin.flows()), hide_index=True, width="stretch")
            with st.expander("Raw records"):
                st.json(records, expanded=False)
        else:
            st.caption("No executions yet: call a flow as this guest on the Preview page.")


def show_load(admin: SandboxAdmin) -> None:
    """Load a flow, offer or decision model from JSON (pasted or uploaded)."""
    kind = st.segmented_control(
        "What to load", list(EXAMPLES), key="sandbox_load_kind", default="flow", required=True
    )
    kind = kind or "flow"
    st.caption(
        "Paste JSON in the reference's shape (a flow as Personalize exports it, an offer with attributes, a "
        "decision model with nodes), or upload a .json file. A flow with the same friendlyId is replaced."
    )
    if st.button("Insert an example", key="sandbox_load_example"):
        st.session_state["sandbox_load_json"] = json.dumps(EXAMPLES[kind], indent=2, ensure_ascii=False)
        st.rerun()
    upload = st.file_uploader("Upload a .json file", type=["json"], key="sandbox_load_file")
    text = st.text_area("JSON", key="sandbox_load_json", height=260)
    if st.button("Load into the sandbox", key="sandbox_load", type="primary", icon=":material/upload:"):
        source = upload.getvalue().decode("utf-8", "replace") if upload is not None else text
        _load(admin, kind, source)
    result = st.session_state.pop("sandbox_load_result", None)
    if result:
        st.success(plain(result), icon=":material/check_circle:")


def _load(admin: SandboxAdmin, kind: str, source: str) -> None:
    st.session_state["sandbox_load_result"] = None
    try:
        data = json.loads(source)
    except ValueError as exc:
        st.error(plain(f"That is not valid JSON: {exc}"), icon=":material/error:")
        return
    if not isinstance(data, dict):
        st.error("The JSON must be one object.", icon=":material/error:")
        return
    try:
        if kind == "flow":
            loaded = admin.load_flow(data)
            message = f"Loaded flow '{loaded.get('friendlyId')}' ({loaded.get('status')}). Call it on the Preview page."
        elif kind == "offer":
            loaded = admin.load_offer(data)
            message = f"Loaded offer '{loaded.get('name')}', ref {loaded.get('ref')}."
        else:
            loaded = admin.load_decision_model(data)
            message = f"Loaded decision model '{loaded.get('name')}', ref {loaded.get('ref')}."
    except FlowLabError as exc:
        _fail(exc)
        return
    st.session_state["sandbox_load_result"] = message
    st.rerun()  # the other tabs were drawn before the load: redraw them with it


def show_import(admin: SandboxAdmin) -> None:
    """Import a zip of a Sitecore export folder (``POST /sandbox/import``); every file's fate as a table (#11)."""
    from flowlab.sandbox.limits import MAX_BODY_BYTES

    st.caption(
        "Zip the folder Sitecore's export wrote (experiences, decisioning, connections…; the folder-per-asset "
        "layout or the older flat one) and upload it: flows, DMN decision models, offers, templates and "
        f"connections are loaded. Up to {MAX_BODY_BYTES // 1024:,} KB zipped; a larger export loads with "
        "`python -m flowlab sandbox --load DIR`."
    )
    upload = st.file_uploader("Export folder (zip)", type=["zip"], key="sandbox_import_file")
    if st.button(
        "Import export folder (zip)",
        key="sandbox_import",
        type="primary",
        icon=":material/drive_folder_upload:",
        disabled=upload is None,
    ):
        data = upload.getvalue() if upload is not None else b""
        if len(data) > MAX_BODY_BYTES:
            st.error(
                plain(
                    f"{upload.name if upload else 'The zip'} is {len(data) / 1024:,.0f} KB, over the sandbox's "
                    f"{MAX_BODY_BYTES // 1024:,} KB limit for one upload. Load the folder when starting the "
                    "sandbox instead: python -m flowlab sandbox --load DIR"
                ),
                icon=":material/error:",
            )
        else:
            try:
                report = admin.import_export(data)
            except FlowLabError as exc:
                _fail(exc)
            else:
                st.session_state["sandbox_import_report"] = report
                st.rerun()  # the counts and the other tabs were drawn before the import
    report = st.session_state.get("sandbox_import_report")
    if report:
        _import_report(report)


def _import_report(report: dict[str, Any]) -> None:
    counts = report.get("counts") or {}
    files, loaded, skipped = st.columns(3)
    files.metric("Files", counts.get("files", 0))
    loaded.metric("Loaded", counts.get("loaded", 0))
    skipped.metric("Skipped", counts.get("skipped", 0))
    rows = [
        {
            "file": item.get("path"),
            "kind": item.get("kind"),
            "name": item.get("name"),
            "loaded/skipped": item.get("status"),
            "reason": item.get("reason"),
        }
        for item in report.get("items") or []
    ]
    widths = {"file": "medium", "kind": "small", "name": "medium", "loaded/skipped": "small"}
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(rows), 640),  # every row when they fit, no inner scrolling for a demo export
        key="sandbox_import_table",
        column_config={k: st.column_config.Column(width=w) for k, w in widths.items()},  # type: ignore[arg-type]
    )
    for limitation in report.get("limitations") or []:
        st.caption(plain(f"Not supported: {limitation}"))


def show_replay(admin: SandboxAdmin, problem: str = "") -> None:
    """What the sandbox replays, and replaying runs from the run log (or stopping)."""
    if problem:
        st.error(plain(problem), icon=":material/error:")
    try:
        replay = admin.info().get("replay") or {}
    except FlowLabError as exc:
        _fail(exc)
        return
    st.caption(
        "A batch run is a recording: each guest's status, headers and body. Replaying it, the sandbox answers "
        "callFlows for a recorded friendlyId and guest with exactly what was recorded (Preview, Compare and "
        "Batch work as usual) and every other request with a 404, so nothing reaches the demo engine and no "
        "tracking record is written. Any client key is accepted: a recording never keeps the tenant's."
    )
    runs = replay.get("runs") or []
    if runs:
        st.dataframe(
            [
                {
                    "File": r.get("path"),
                    "friendlyId": r.get("friendlyId"),
                    "Recorded": r.get("recordedAt"),
                    "Guests": r.get("guests"),
                    "Replayable": r.get("replayable"),
                    "Headers recorded": r.get("headersRecorded"),
                    "Not replayable": ", ".join(
                        f"{k}: {v}" for k, v in (r.get("notReplayable") or {}).items()
                    ),
                }
                for r in runs
            ],  # fmt: skip
            hide_index=True,
        )
        if st.button("Stop replaying", key="sandbox_replay_stop", icon=":material/stop:"):
            _set_replay(admin, [], False, "The sandbox runs its demo engine again.")
    else:
        st.write("Nothing is being replayed: callFlows runs the demo engine.")
    records = [r for r in _run_records() if r.done]
    if not records:
        st.caption("No runs in the run log yet: run a batch on the Batch page first.")
        return
    labels = {r.label + f" · {r.friendly_id}": str(r.path) for r in records}
    picked = st.multiselect("Replay a recorded run", list(labels), key="sandbox_replay_runs")
    latency = st.toggle("With the recorded latency", key="sandbox_replay_latency")
    if st.button(
        "Replay", key="sandbox_replay_start", type="primary", icon=":material/replay:", disabled=not picked
    ):
        message = f"Replaying {len(picked)} run{'s' if len(picked) != 1 else ''}: Preview shows the recorded answers."
        _set_replay(admin, [labels[p] for p in picked], latency, message)
    result = st.session_state.pop("sandbox_replay_result", None)
    if result:
        st.success(plain(result), icon=":material/check_circle:")


def _run_records() -> list[Any]:
    from flowlab.batch.runlog import RunLog

    return RunLog().runs()


def _set_replay(admin: SandboxAdmin, paths: list[str], latency: bool, message: str) -> None:
    try:  # the admin API's PUT /sandbox/replay (no SandboxAdmin method for it yet)
        admin._json("PUT", "/sandbox/replay", json={"paths": paths, "latency": latency})
    except FlowLabError as exc:
        _fail(exc)
        return
    st.session_state["sandbox_replay_result"] = message
    st.rerun()
