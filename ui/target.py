"""Which tenant the app talks to: the built-in sandbox (default, started once per process) or a saved tenant.

The sidebar first picks the provider, **Sitecore Personalize** or **AEP Edge**; each has the built-in
sandbox by default, a target from the environment (``FLOWLAB_*`` / ``FLOWLAB_EDGE_*``) and saved targets.
An Edge client secret is read from ``FLOWLAB_EDGE_CLIENT_SECRET`` or Streamlit secrets
(``[targets."<name>"] client_secret``) when a call is made; it is never saved and never shown.

The sidebar picker lists the sandbox, a tenant configured through ``FLOWLAB_*`` environment variables, and
tenants saved in ``<data_dir>/targets.json`` (``flowlab.workbench.targets``). The environment label (SANDBOX in green,
LIVE in red) is always on screen, and the first call on a live target waits for an acknowledgement that it
writes tracking events into that tenant's analytics.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from pydantic import SecretStr

from flowlab import FlowClient, SandboxAdmin
from flowlab.config import REGIONS, load_settings
from flowlab.edge import EdgeClient, EdgeCredentials
from flowlab.errors import ConfigError, RunStoreError
from flowlab.sandbox import SandboxServer
from flowlab.workbench.targets import (
    CONFIGURED_EDGE_NAME,
    CONFIGURED_NAME,
    EDGE_SANDBOX_NAME,
    PROVIDERS,
    SANDBOX_NAME,
    Target,
    TargetError,
    TargetStore,
    configured_edge_target,
    configured_target,
)
from ui.text import code, plain

__all__ = [
    "Target",
    "current_target",
    "edge_client",
    "edge_sandbox_target",
    "flow_client",
    "live_call_allowed",
    "page_header",
    "provider",
    "sandbox_admin",
    "sandbox_server",
    "sandbox_target",
    "sitecore_only",
    "target_badge",
    "target_sidebar",
    "timeout_s",
]

_KEY = "target_name"
_EDGE_KEY = "edge_target_name"
_PROVIDER_KEY = "target_provider"
_CUSTOM = "custom"
_EDGE_DOMAINS = {
    "https://server.adobedc.net": "Server API (authenticated: audiences and attributes)",
    "https://edge.adobedc.net": "Edge domain (unauthenticated: audiences only)",
}


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


def edge_sandbox_target() -> Target:
    """The sandbox's Edge side: its first datastream (edge segmentation and both destinations on)."""
    server = sandbox_server()
    edge = _edge_info(server.url)
    stream = edge["datastreams"][0]["id"]
    client_id = edge["credentials"]["clientId"]
    return Target(
        EDGE_SANDBOX_NAME,
        server.url,
        is_sandbox=True,
        builtin=True,
        provider="edge",
        datastream_id=stream,
        org_id=edge["orgId"],
        client_id=client_id,
    )


@st.cache_resource
def _edge_info(base_url: str) -> dict[str, Any]:
    with SandboxAdmin(base_url=base_url) as admin:
        return dict(admin.info()["edge"])


def _edge_secret(name: str) -> SecretStr | None:
    """The client secret: Streamlit secrets ``[targets."<name>"] client_secret``, else FLOWLAB_EDGE_CLIENT_SECRET."""
    try:
        value: Any = st.secrets["targets"][name]["client_secret"]
        return SecretStr(str(value))
    except Exception:  # no secrets file, or no entry: st.secrets raises several kinds here
        return load_settings().edge_client_secret


def edge_client(target: Target, *, authenticated: bool = True) -> EdgeClient:
    """An interact client for an Edge target; ``authenticated=False`` is the unauthenticated edge call.

    One per target, mode and timeout per process (IMS tokens are cached per client); the secret is read
    inside, so it is never a cache key, a widget value or in session state.
    """
    return _edge_client(target, authenticated, timeout_s())


@st.cache_resource(show_spinner=False)
def _edge_client(target: Target, authenticated: bool, timeout: float) -> EdgeClient:
    if target.is_sandbox:
        client = EdgeClient.for_sandbox(
            target.base_url,
            authenticated=authenticated,
            datastream=target.datastream_id,
            timeout=timeout,
            retries=0,
        )
    else:
        credentials = None
        if authenticated and target.client_id:
            secret = _edge_secret(target.name)
            if secret is None or not secret.get_secret_value():
                raise ConfigError(
                    "no client secret for this Edge target: set FLOWLAB_EDGE_CLIENT_SECRET, or "
                    f'[targets."{target.name}"] client_secret in Streamlit secrets; or send without a token'
                )
            settings = load_settings()
            credentials = EdgeCredentials(
                client_id=target.client_id,
                client_secret=secret,
                org_id=target.org_id,
                ims_url=settings.edge_ims_url,
                scope=settings.edge_scope,
            )
        client = EdgeClient(
            base_url=target.base_url,
            datastream_id=target.datastream_id,
            credentials=credentials,
            region=target.location_hint,
            timeout=timeout,
            retries=0,
        )
    return client


def _secret_client_key(name: str) -> str:
    """A client key kept out of targets.json: ``[targets."<name>"] client_key`` in Streamlit secrets."""
    try:
        value: Any = st.secrets["targets"][name]["client_key"]
    except Exception:  # no secrets file, or no entry: st.secrets raises several kinds here
        return ""
    return str(value)


def provider() -> str:
    """The provider picked in the sidebar: ``personalize`` (default) or ``edge``."""
    picked = st.session_state.get(_PROVIDER_KEY)
    return picked if picked in PROVIDERS else "personalize"


def _targets(which: str | None = None) -> list[Target]:
    which = which or provider()
    targets = [edge_sandbox_target() if which == "edge" else sandbox_target()]
    try:
        configured = configured_edge_target() if which == "edge" else configured_target()
    except ConfigError:
        configured = None
    if configured is not None:
        targets.append(configured)
    try:
        saved = [t for t in TargetStore().targets() if t.provider == which]
    except ConfigError as exc:
        st.sidebar.warning(plain(str(exc)), icon="⚠️")
        saved = []
    for target in saved:
        targets.append(
            target
            if target.client_key or target.is_edge
            else target.with_client_key(_secret_client_key(target.name))
        )
    return targets


def _pick(targets: list[Target]) -> Target:
    edge = targets[0].is_edge
    chosen = st.session_state.get(_EDGE_KEY if edge else _KEY)
    found = next((t for t in targets if t.name == chosen), None)
    configured_name = CONFIGURED_EDGE_NAME if edge else CONFIGURED_NAME
    configured = next((t for t in targets if t.name == configured_name), None)
    return found or configured or targets[0]


def current_target() -> Target:
    """The target picked in the sidebar for the picked provider (an env-configured one, else the sandbox)."""
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


def sitecore_only(target: Target, page: str) -> None:
    """Stop a Sitecore-only page politely when AEP Edge is picked, with a link to Edge preview."""
    if not target.is_edge:
        return
    st.info(
        f"{page} calls Sitecore flows; for AEP Edge use **Edge preview** (or pick Sitecore Personalize in the "
        "sidebar).",
        icon=":material/swap_horiz:",
    )
    st.page_link("app_pages/edge_preview.py", label="Open Edge preview", icon=":material/person_search:")
    st.stop()


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


def _add_edge_target_form() -> None:
    problems: dict[str, list[str]] = st.session_state.get("edge_form_problems", {})
    with st.sidebar.expander("Add an AEP Edge org", icon=":material/add:"):
        st.text_input("Name", key="new_edge_name", placeholder="Acme web (AEP)")
        for message in problems.get("name", []):
            st.caption(f":red[{plain(message)}]")
        st.selectbox(
            "Edge domain",
            [*_EDGE_DOMAINS, _CUSTOM],
            key="new_edge_domain",
            format_func=lambda d: "Custom base URL" if d == _CUSTOM else f"{d} — {_EDGE_DOMAINS[d]}",
        )
        if st.session_state.get("new_edge_domain") == _CUSTOM:
            st.text_input("Base URL", key="new_edge_url", placeholder="https://server.adobedc.net")
        for message in problems.get("base_url", []):
            st.caption(f":red[{plain(message)}]")
        st.text_input("Datastream id", key="new_edge_datastream", help="Data Collection → Datastreams.")
        for message in problems.get("datastream_id", []):
            st.caption(f":red[{plain(message)}]")
        st.text_input("IMS org id", key="new_edge_org", placeholder="ABC123@AdobeOrg")
        for message in problems.get("org_id", []):
            st.caption(f":red[{plain(message)}]")
        st.text_input(
            "Client id",
            key="new_edge_client",
            help="The OAuth server-to-server credential's client id (Developer Console). The client secret is "
            'never typed here: set FLOWLAB_EDGE_CLIENT_SECRET or [targets."<name>"] client_secret in '
            "Streamlit secrets. Leave empty for unauthenticated calls (audiences only).",
        )
        st.text_input("Location hint (optional)", key="new_edge_hint", placeholder="irl1")
        for message in problems.get("location_hint", []):
            st.caption(f":red[{plain(message)}]")
        st.button("Save target", key="new_edge_save", on_click=_save_edge_target, icon=":material/save:")


def _save_edge_target() -> None:
    state = st.session_state
    domain = state.get("new_edge_domain")
    try:
        target = Target.edge(
            str(state.get("new_edge_name") or ""),
            base_url=str(state.get("new_edge_url") or "") if domain == _CUSTOM else str(domain or ""),
            datastream_id=str(state.get("new_edge_datastream") or ""),
            org_id=str(state.get("new_edge_org") or ""),
            client_id=str(state.get("new_edge_client") or ""),
            location_hint=str(state.get("new_edge_hint") or ""),
        )
        TargetStore().save(target)
    except TargetError as exc:
        grouped: dict[str, list[str]] = {}
        for p in exc.problems:
            grouped.setdefault(p.field, []).append(p.message)
        state["edge_form_problems"] = grouped
        return
    except ConfigError as exc:
        state["edge_form_problems"] = {"name": [str(exc)]}
        return
    state["edge_form_problems"] = {}
    state[_EDGE_KEY] = target.name
    for key in ("new_edge_name", "new_edge_url", "new_edge_datastream", "new_edge_org", "new_edge_client"):
        state[key] = ""


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
    st.session_state[_EDGE_KEY] = EDGE_SANDBOX_NAME


def target_sidebar() -> Target:
    """The sidebar: pick the target, see its label and details, acknowledge live tracking, add tenants."""
    try:
        load_settings()
    except ConfigError as exc:  # e.g. credentials in FLOWLAB_BASE_URL: say what to fix, never a traceback
        st.error(f"Flow Lab cannot start with these settings. {plain(str(exc))}", icon="⚙️")
        st.stop()
    sidebar = st.sidebar
    if st.session_state.get(_PROVIDER_KEY) not in PROVIDERS:
        st.session_state[_PROVIDER_KEY] = "personalize"
    sidebar.segmented_control(
        "Provider",
        list(PROVIDERS),
        key=_PROVIDER_KEY,
        format_func=lambda p: PROVIDERS[p],
        selection_mode="single",
        help="Which decision API: Sitecore Personalize's callFlows, or AEP Edge's interact (Custom "
        "Personalization destinations). Each has the built-in sandbox.",
    )
    if st.session_state.get(_PROVIDER_KEY) not in PROVIDERS:  # a click on the picked one clears it
        st.session_state[_PROVIDER_KEY] = "personalize"
    edge = provider() == "edge"
    key = _EDGE_KEY if edge else _KEY
    targets = _targets()
    target = _pick(targets)
    names = [t.name for t in targets]
    by_name = {t.name: t for t in targets}
    if st.session_state.get(key) not in names:
        st.session_state[key] = target.name
    sidebar.selectbox(
        "Target",
        names,
        key=key,
        format_func=lambda n: f"{by_name[n].label} · {n}",
        help="Where calls go. The sandbox is an offline copy of the API with demo data; any other target is "
        "a real tenant whose analytics record every call.",
    )
    target = by_name[st.session_state[key]]
    target_badge(target, where=sidebar)
    sidebar.caption(f"{plain(target.description)}  \n{code(target.base_url)}")
    if not target.is_sandbox:
        if edge and target.client_id and _edge_secret(target.name) is None:
            sidebar.warning(
                "No client secret: set FLOWLAB_EDGE_CLIENT_SECRET or Streamlit secrets, or send without a "
                "token (audiences only).",
                icon="🔑",
            )
        elif not edge and not target.client_key:
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
    if edge:
        _add_edge_target_form()
    else:
        _add_target_form()
    return target
