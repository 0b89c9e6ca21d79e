"""Which tenant the app talks to: the built-in sandbox (default, started once per process) or a saved tenant.

The sidebar picker lists the sandbox, a tenant configured through ``FLOWLAB_*`` environment variables, and
tenants saved in ``<data_dir>/targets.json`` (``flowlab.workbench.targets``). The environment label (SANDBOX in green,
LIVE in red) is always on screen, and the first call on a live target waits for an acknowledgement that it
writes tracking events into that tenant's analytics.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from flowlab import FlowClient, SandboxAdmin
from flowlab.config import REGIONS, load_settings
from flowlab.errors import ConfigError, RunStoreError
from flowlab.sandbox import SandboxServer
from flowlab.workbench.targets import (
    CONFIGURED_NAME,
    SANDBOX_NAME,
    Target,
    TargetError,
    TargetStore,
    configured_target,
)
from ui.text import code, plain

__all__ = [
    "Target",
    "current_target",
    "flow_client",
    "live_call_allowed",
    "page_header",
    "sandbox_admin",
    "sandbox_server",
    "sandbox_target",
    "target_badge",
    "target_sidebar",
    "timeout_s",
]

_KEY = "target_name"
_CUSTOM = "custom"


@st.cache_resource(show_spinner="Starting the sandbox tenant…")
def sandbox_server() -> SandboxServer:
    """One sandbox per app process, shared by every session, started on first use (FLOWLAB_SANDBOX_*)."""
    settings = load_settings()
    server = SandboxServer(
        host=settings.sandbox_host,
        port=settings.sandbox_port,
        latency_ms=settings.sandbox_latency_ms,
        faults=settings.sandbox_faults or None,
        admin_token=settings.sandbox_admin_token,
    )
    replay = [p.strip() for p in settings.sandbox_replay.split(",") if p.strip()]
    try:  # FLOWLAB_SANDBOX_REPLAY: a file that is not a run store is said on the Sandbox page, not raised
        server.app.replay.load(replay)
    except RunStoreError as exc:
        server.replay_problem = f"FLOWLAB_SANDBOX_REPLAY: {exc}"
    return server.start()


@st.cache_resource
def sandbox_admin(base_url: str) -> SandboxAdmin:
    """The admin API client of a sandbox (one per URL and process)."""
    return SandboxAdmin(base_url=base_url)


@st.cache_resource
def flow_client(base_url: str, timeout: float) -> FlowClient:
    """A callFlows client per target and timeout; no retries, since every execution is a tracking event."""
    return FlowClient(base_url=base_url, timeout=timeout, retries=0)


def sandbox_target() -> Target:
    server = sandbox_server()
    return Target(SANDBOX_NAME, server.url, server.client_key, "lumen/de", is_sandbox=True, builtin=True)


def _secret_client_key(name: str) -> str:
    """A client key kept out of targets.json: ``[targets."<name>"] client_key`` in Streamlit secrets."""
    try:
        value: Any = st.secrets["targets"][name]["client_key"]
    except Exception:  # no secrets file, or no entry: st.secrets raises several kinds here
        return ""
    return str(value)


def _targets() -> list[Target]:
    targets = [sandbox_target()]
    try:
        configured = configured_target()
    except ConfigError:
        configured = None
    if configured is not None:
        targets.append(configured)
    try:
        saved = TargetStore().targets()
    except ConfigError as exc:
        st.sidebar.warning(plain(str(exc)), icon="⚠️")
        saved = []
    for target in saved:
        targets.append(
            target if target.client_key else target.with_client_key(_secret_client_key(target.name))
        )
    return targets


def _pick(targets: list[Target]) -> Target:
    chosen = st.session_state.get(_KEY)
    found = next((t for t in targets if t.name == chosen), None)
    configured = next((t for t in targets if t.name == CONFIGURED_NAME), None)
    return found or configured or targets[0]


def current_target() -> Target:
    """The target picked in the sidebar (a tenant set by FLOWLAB_BASE_URL/REGION, else the sandbox)."""
    return _pick(_targets())


def timeout_s() -> float:
    """The request timeout picked in the sidebar (seconds)."""
    return float(st.session_state.get("timeout_s") or load_settings().timeout)


def live_call_allowed(target: Target) -> bool:
    """Sandbox calls are always fine; a live tenant needs the tracking-event acknowledgement first."""
    return target.is_sandbox or bool(st.session_state.get(f"live_ack::{target.name}"))


def target_badge(target: Target, *, where: Any = None) -> None:
    """The environment label: green SANDBOX or red LIVE, with the target's name."""
    place = where if where is not None else st
    colour = "green" if target.is_sandbox else "red"
    icon = ":material/science:" if target.is_sandbox else ":material/public:"
    place.badge(f"{target.label} · {target.name}", color=colour, icon=icon)


def page_header(title: str, caption: str, target: Target) -> None:
    """A page title with the environment label beside it, so the target is visible without the sidebar."""
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.title(title)
    with right:
        target_badge(target)
    st.caption(caption)


def _add_target_form() -> None:
    problems: dict[str, list[str]] = st.session_state.get("target_form_problems", {})
    with st.sidebar.expander("Add a Sitecore Personalize tenant", icon=":material/add:"):
        st.text_input("Name", key="new_target_name", placeholder="Acme EU production")
        for message in problems.get("name", []):
            st.caption(f":red[{plain(message)}]")
        region = st.selectbox(
            "Region",
            [*REGIONS, _CUSTOM],
            key="new_target_region",
            format_func=lambda r: "Custom base URL" if r == _CUSTOM else f"{r.upper()} — {REGIONS[r]}",
            help="Shown in Personalize under Settings → Company information → Environment.",
        )
        if region == _CUSTOM:
            st.text_input(
                "Base URL", key="new_target_url", placeholder="https://api-engage-eu.sitecorecloud.io"
            )
        for message in problems.get("base_url", []) + problems.get("region", []):
            st.caption(f":red[{plain(message)}]")
        st.text_input(
            "Client key",
            key="new_target_key",
            help="The tenant's public client key (Developer center → API access). It is public, so it is "
            'saved; leave it empty to read it from Streamlit secrets: [targets."<name>"] client_key.',
        )
        for message in problems.get("client_key", []):
            st.caption(f":red[{plain(message)}]")
        st.text_input("Default point of sale", key="new_target_pos", placeholder="myretailsite/ireland")
        st.checkbox(
            "This is a Flow Lab sandbox (python -m flowlab sandbox)", key="new_target_sandbox", value=False
        )
        st.button("Save target", key="new_target_save", on_click=_save_target, icon=":material/save:")


def _save_target() -> None:
    state = st.session_state
    region = state.get("new_target_region")
    try:
        target = Target.sitecore(
            str(state.get("new_target_name") or ""),
            client_key=str(state.get("new_target_key") or ""),
            region=None if region == _CUSTOM else region,
            base_url=str(state.get("new_target_url") or "") if region == _CUSTOM else None,
            point_of_sale=str(state.get("new_target_pos") or ""),
            is_sandbox=bool(state.get("new_target_sandbox")),
        )
        TargetStore().save(target)
    except TargetError as exc:
        grouped: dict[str, list[str]] = {}
        for p in exc.problems:
            grouped.setdefault(p.field, []).append(p.message)
        state["target_form_problems"] = grouped
        return
    except ConfigError as exc:
        state["target_form_problems"] = {"name": [str(exc)]}
        return
    state["target_form_problems"] = {}
    state[_KEY] = target.name
    for key in ("new_target_name", "new_target_key", "new_target_url", "new_target_pos"):
        state[key] = ""


def _delete_target(name: str) -> None:
    TargetStore().delete(name)
    st.session_state[_KEY] = SANDBOX_NAME


def target_sidebar() -> Target:
    """The sidebar: pick the target, see its label and details, acknowledge live tracking, add tenants."""
    try:
        load_settings()
    except ConfigError as exc:  # e.g. credentials in FLOWLAB_BASE_URL: say what to fix, never a traceback
        st.error(f"Flow Lab cannot start with these settings. {plain(str(exc))}", icon="⚙️")
        st.stop()
    targets = _targets()
    target = _pick(targets)
    names = [t.name for t in targets]
    by_name = {t.name: t for t in targets}
    if st.session_state.get(_KEY) not in names:
        st.session_state[_KEY] = target.name
    sidebar = st.sidebar
    sidebar.selectbox(
        "Target",
        names,
        key=_KEY,
        format_func=lambda n: f"{by_name[n].label} · {n}",
        help="Where calls go. The sandbox is an offline copy of the API with demo data; any other target is "
        "a real tenant whose analytics record every call.",
    )
    target = by_name[st.session_state[_KEY]]
    target_badge(target, where=sidebar)
    sidebar.caption(f"{plain(target.description)}  \n{code(target.base_url)}")
    if not target.is_sandbox:
        if not target.client_key:
            sidebar.error("No client key: add it to the target or to Streamlit secrets.", icon="🔑")
        if live_call_allowed(target):
            sidebar.caption(":red[Live tenant: every call writes a tracking event.]")
        else:
            sidebar.warning(
                "Every call on this target executes the flow for real and writes a tracking event into "
                "this tenant's analytics (it counts as a visit in experiment results).",
                icon="⚠️",
            )
            sidebar.checkbox(
                "I understand; allow calls", key=f"live_ack::{target.name}", persist_state="session"
            )
        if not target.builtin and target.name in {t.name for t in TargetStore().targets()}:
            sidebar.button(
                "Remove this target",
                key="target_delete",
                on_click=_delete_target,
                args=(target.name,),
                icon=":material/delete:",
            )
    sidebar.number_input(
        "Timeout (seconds)",
        min_value=0.5,
        max_value=120.0,
        step=0.5,
        key="timeout_s",
        value=float(load_settings().timeout),
        help="How long to wait for an answer. Sitecore's own SDKs give up after 0.4 s on live sites.",
    )
    _add_target_form()
    return target
