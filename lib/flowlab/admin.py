"""The sandbox's admin API client (``/sandbox/...``), for the app, notebooks and tests."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Self
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from flowlab.config import load_settings
from flowlab.errors import APIError
from flowlab.http import (
    DEFAULT_TIMEOUT,
    FlowResponse,
    connection_error,
    http_response,
    require_base_url,
    status_error,
    timeout_config,
)

__all__ = ["SandboxAdmin"]


class SandboxAdmin:
    """The sandbox's admin API (``/sandbox/...``): what it holds, traces, tracking, loading and reset.

    ``admin_token`` (default: the ``FLOWLAB_SANDBOX_ADMIN_TOKEN`` setting; ``""`` for none) is sent as
    ``Authorization: Bearer`` on every admin call to ``base_url``, and on nothing else: ``is_sandbox()``
    asks without it, so probing a live tenant never hands it the token.
    """

    def __init__(
        self, *, base_url: str, timeout: float = DEFAULT_TIMEOUT, admin_token: str | SecretStr | None = None
    ) -> None:
        self.base_url = require_base_url(base_url)
        if admin_token is None:
            admin_token = load_settings().sandbox_admin_token
        token = admin_token.get_secret_value() if isinstance(admin_token, SecretStr) else admin_token
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_config(timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> FlowResponse:
        started = time.perf_counter()
        try:
            headers = {**(self._auth if auth else {}), **kwargs.pop("headers", {})}
            raw = self._http.request(method, path, headers=headers or None, **kwargs)
        except httpx.TransportError as exc:
            raise connection_error(exc, self.base_url + path, None) from exc
        return http_response(raw, started=started, request=None, attempts=1)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if not response.ok:
            raise status_error(response)
        return response.json_body

    def is_sandbox(self) -> bool:
        """True when the base URL answers like a Flow Lab sandbox (asked without the admin token)."""
        try:
            response = self._send("GET", "/sandbox/info", auth=False)
        except APIError:
            return False
        if response.status_code == 401:  # a sandbox with an admin token names its realm
            return 'realm="flowlab-sandbox"' in response.headers.get("www-authenticate", "")
        info = response.json_body
        return response.ok and isinstance(info, dict) and "clientKey" in info

    def info(self) -> dict[str, Any]:
        return dict(self._json("GET", "/sandbox/info"))

    def flows(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/sandbox/flows"))

    def flow(self, friendly_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/sandbox/flows/{friendly_id}"))

    def offers(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/sandbox/offers"))

    def decision_models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/sandbox/decision-models"))

    def guests(self, *, limit: int = 50, offset: int = 0, **filters: str) -> dict[str, Any]:
        return dict(
            self._json("GET", "/sandbox/guests", params={"limit": limit, "offset": offset, **filters})
        )

    def tracking(self, guest_ref: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/sandbox/guests/{guest_ref}/tracking"))

    def execution(self, ref: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/sandbox/executions/{ref}"))

    def outcomes(self, friendly_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/sandbox/flows/{friendly_id}/outcomes"))

    def load_flow(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/sandbox/flows", json=dict(definition)))

    def load_offer(self, offer: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/sandbox/offers", json=dict(offer)))

    def load_decision_model(self, model: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", "/sandbox/decision-models", json=dict(model)))

    def reset(self) -> dict[str, Any]:
        return dict(self._json("POST", "/sandbox/reset", json={}))

    def import_export(self, archive: bytes) -> dict[str, Any]:
        """Load a zip of a Sitecore export folder; the import report (``POST /sandbox/import``, #11)."""
        headers = {"Content-Type": "application/zip"}
        return dict(self._json("POST", "/sandbox/import", content=archive, headers=headers))

    def connections(self) -> list[dict[str, Any]]:
        """Every connection (library and embedded), secrets masked, with ``usedBy`` and ``routing`` (#11)."""
        return list(self._json("GET", "/sandbox/connections"))

    def connection(self, ref_or_name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/sandbox/connections/{quote(ref_or_name, safe='')}"))

    def add_connection(self, connection: Mapping[str, Any]) -> dict[str, Any]:
        """Load Sitecore's connection JSON (with Flow Lab's auth keys); answered with secrets masked."""
        return dict(self._json("POST", "/sandbox/connections", json=dict(connection)))

    def route_connection(self, ref_or_name: str, base_url: str | None) -> dict[str, Any]:
        """Send one connection to ``base_url`` (path and query kept); ``None``: back to the default route."""
        path = f"/sandbox/connections/{quote(ref_or_name, safe='')}"
        return dict(self._json("PUT", path, json={"baseUrl": base_url}))

    def test_connection(self, ref_or_name: str, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Call a connection once: ``{request, response: {status, headers, body}, outputs, latencyMs, error}``."""
        path = f"/sandbox/connections/{quote(ref_or_name, safe='')}/test"
        return dict(self._json("POST", path, json={"inputs": dict(inputs or {})}))

    def add_guest(self, guest: Mapping[str, Any]) -> dict[str, Any]:
        """Add a guest in Sitecore's guest-context shape (sessions, dataExtensions, orders…): ``{ref}`` (#11)."""
        return dict(self._json("POST", "/sandbox/guests", json=dict(guest)))

    def send_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Send a Stream API event (``POST /v1.2/events``, with its ``client_key``) as the Engage SDK does:
        ``{ref, status, version, client_key}``; triggered flows it fires run in the background."""
        return dict(self._json("POST", "/v1.2/events", json=dict(event), auth=False))

    def close_session(
        self, *, browser_id: str | None = None, email: str | None = None, guest_ref: str | None = None
    ) -> dict[str, Any]:
        """Close the guest's open session (one of the three identities) and fire SESSION_CLOSED flows:
        ``{guestRef, session, openedNow, fired}``."""
        given = {"browserId": browser_id, "email": email, "guestRef": guest_ref}
        return dict(self._json("POST", "/sandbox/sessions/close", json={k: v for k, v in given.items() if v}))

    def deliveries(
        self, *, guest_ref: str = "", friendly_id: str = "", limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """What triggered flows sent: ``{total, items: [{ref, friendlyId, guestRef, trigger, connection, method,
        url, requestBody, status, attempts, latencyMs, error, at, …}]}``, newest first, secrets masked."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if guest_ref:
            params["guestRef"] = guest_ref
        if friendly_id:
            params["friendlyId"] = friendly_id
        return dict(self._json("GET", "/sandbox/deliveries", params=params))

    def edge_audiences(self) -> list[dict[str, Any]]:
        """The Edge tenant's audiences: ``[{id, name, description, rule, evaluation, destinations}]``."""
        return list(self._json("GET", "/sandbox/edge/audiences"))

    def edge_profiles(self, *, limit: int = 50, offset: int = 0, identity: str = "") -> dict[str, Any]:
        """``{total, items: [{identity, identities, attributes, audiences: [{id, status, since}]}]}``;
        ``identity`` is ``NAMESPACE:ID`` (any of a profile's identities finds it)."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if identity:
            params["identity"] = identity
        return dict(self._json("GET", "/sandbox/edge/profiles", params=params))

    def edge_clock(self) -> dict[str, Any]:
        """The simulated Edge clock: ``{now, epochMs}`` (it moves only when told)."""
        return dict(self._json("GET", "/sandbox/edge/clock"))

    def advance_edge_clock(self, seconds: float) -> dict[str, Any]:
        """Move the simulated Edge clock forward, so streaming and batch audiences arrive (§5.2)."""
        return dict(self._json("POST", "/sandbox/edge/clock", json={"advanceSeconds": seconds}))
