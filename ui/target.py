"""Which tenant the app talks to: the built-in sandbox (default, started once per process) or a tenant."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from flowlab.config import load_settings
from flowlab.sandbox import SandboxServer

__all__ = ["Target", "current_target", "sandbox_server", "target_badge"]


@dataclass(frozen=True)
class Target:
    """A place to send calls. ``is_sandbox`` targets are safe to hammer; others are someone's analytics."""

    name: str
    base_url: str
    client_key: str
    point_of_sale: str = ""
    is_sandbox: bool = False

    @property
    def label(self) -> str:
        return "SANDBOX" if self.is_sandbox else "LIVE"


@st.cache_resource(show_spinner="Starting the sandbox tenant…")
def sandbox_server() -> SandboxServer:
    """One sandbox per app process, shared by every session, started on first use."""
    return SandboxServer().start()


def current_target() -> Target:
    """The target chosen in the sidebar (the sandbox unless FLOWLAB_BASE_URL/REGION names a tenant)."""
    chosen = st.session_state.get("target")
    if isinstance(chosen, Target):
        return chosen
    settings = load_settings()
    if settings.target_url and settings.client_key:
        target = Target("Configured tenant", settings.target_url, settings.client_key, settings.point_of_sale)
    else:
        server = sandbox_server()
        target = Target("Sandbox tenant", server.url, server.client_key, "lumen/de", is_sandbox=True)
    st.session_state["target"] = target
    return target


def target_badge(target: Target) -> None:
    """The always-visible environment label: green for the sandbox, red for a live tenant."""
    colour = "green" if target.is_sandbox else "red"
    st.sidebar.markdown(f":{colour}-badge[{target.label}] **{target.name}**")
    st.sidebar.caption(f"{target.base_url}")
