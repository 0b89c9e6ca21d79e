"""IMS OAuth server-to-server credentials and the token cache for the authenticated Edge Server API.

The authenticated Server API (``server.adobedc.net``) is the only way to get profile *attributes* back
(adobe-edge-personalization.md §1.1, §5.4). It wants three headers: ``Authorization: Bearer {token}``,
``x-api-key: {client id}`` and ``x-gw-ims-org-id: {org}`` (§0.2, DOC D4). The token comes from
``POST {ims}/ims/token/v3`` with a form-encoded ``grant_type=client_credentials`` and answers
``{access_token, token_type: "bearer", expires_in: 86399}`` (§2.2, DOC D11).

This module holds no HTTP (that lives in ``flowlab.edge.client``): it builds the token request, reads the
answer and decides when a cached token is still good. The client secret is a ``SecretStr`` from settings
(``FLOWLAB_EDGE_CLIENT_SECRET``) or from whoever constructs ``EdgeCredentials`` (the app passes Streamlit
secrets); it is never read from a saved file, and reprs, errors and exports never show it or the token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr

from flowlab.config import Settings, load_settings, resolve_base_url
from flowlab.errors import ConfigError

__all__ = ["TOKEN_PATH", "AccessToken", "EdgeCredentials", "TokenCache", "read_token_answer"]

TOKEN_PATH = "/ims/token/v3"
#: Refresh this long before ``expires_in`` runs out: a tenth of the lifetime, at most an hour, so a 24 h
#: token is renewed after about 23 h as Adobe advises (§2.2).
_MAX_MARGIN = 3600.0


@dataclass(frozen=True)
class EdgeCredentials:
    """An OAuth server-to-server credential: who we are to IMS and to the Edge.

    ``repr`` shows the client id and org but masks the secret (``SecretStr``).
    """

    client_id: str
    client_secret: SecretStr = field(repr=False)
    org_id: str
    ims_url: str = "https://ims-na1.adobelogin.com"
    scope: str = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"

    def __post_init__(self) -> None:
        if not isinstance(self.client_secret, SecretStr):  # a plain str would show up in reprs and logs
            raise ConfigError("client_secret must be a pydantic SecretStr, e.g. SecretStr(value)")
        missing = [
            name
            for name, value in (
                ("client_id (FLOWLAB_EDGE_CLIENT_ID)", self.client_id),
                ("client_secret (FLOWLAB_EDGE_CLIENT_SECRET)", self.client_secret.get_secret_value()),
                ("org_id (FLOWLAB_EDGE_ORG_ID)", self.org_id),
            )
            if not str(value).strip()
        ]
        if missing:
            raise ConfigError(f"Edge credentials need {', '.join(missing)}")
        url = resolve_base_url(base_url=self.ims_url)
        object.__setattr__(self, "ims_url", url)

    def __repr__(self) -> str:
        return f"EdgeCredentials(client_id={self.client_id!r}, org_id={self.org_id!r}, client_secret='**********')"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> EdgeCredentials | None:
        """Credentials from ``FLOWLAB_EDGE_*``, or None when no client id/secret is configured (then calls
        go unauthenticated: audiences only, no attributes)."""
        s = settings if settings is not None else load_settings()
        if not s.edge_client_id and s.edge_client_secret is None:
            return None
        return cls(
            client_id=s.edge_client_id or "",
            client_secret=s.edge_client_secret or SecretStr(""),
            org_id=s.edge_org_id or "",
            ims_url=s.edge_ims_url,
            scope=s.edge_scope,
        )

    @property
    def token_url(self) -> str:
        return self.ims_url + TOKEN_PATH

    def token_form(self) -> bytes:
        """The form-encoded body of the token request (§2.2). Holds the secret: send it, never show it."""
        return urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret.get_secret_value(),
                "scope": self.scope,
            }
        ).encode()

    def headers(self, token: AccessToken) -> dict[str, str]:
        """The three headers of an authenticated interact call (§0.2, DOC D4)."""
        return {
            "Authorization": f"Bearer {token.value.get_secret_value()}",
            "x-api-key": self.client_id,
            "x-gw-ims-org-id": self.org_id,
        }

    def scrub(self, text: str) -> str:
        """``text`` with the client secret masked, for anything built from an IMS answer."""
        secret = self.client_secret.get_secret_value()
        return text.replace(secret, "***") if secret else text


@dataclass(frozen=True)
class AccessToken:
    """An IMS access token (masked in reprs) and when, on the monotonic clock, to stop using it."""

    value: SecretStr = field(repr=False)
    expires_in: float
    refresh_at: float

    def __repr__(self) -> str:
        return f"AccessToken(value='**********', expires_in={self.expires_in:g})"


def read_token_answer(body: Any, *, now: float) -> AccessToken | str:
    """The token from IMS's JSON answer, or a message saying what is wrong with the answer."""
    if not isinstance(body, Mapping):
        return "IMS answered without a JSON object"
    token, expires_in = body.get("access_token"), body.get("expires_in")
    if not isinstance(token, str) or not token:
        return "IMS answered without an access_token"
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
        return "IMS answered without a positive expires_in (seconds)"
    margin = min(_MAX_MARGIN, float(expires_in) * 0.1)
    return AccessToken(
        value=SecretStr(token), expires_in=float(expires_in), refresh_at=now + expires_in - margin
    )


class TokenCache:
    """The current token, thread-safe. ``get`` returns it while fresh; ``put`` stores a new one;
    ``drop(token)`` forgets it after a 401 (only if it is still the current one, so one 401 among many
    concurrent calls costs one refresh, not one per call)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._token: AccessToken | None = None
        self.lock = threading.Lock()
        self.fetches = 0

    def now(self) -> float:
        return self._clock()

    def get(self) -> AccessToken | None:
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token
        return None

    def put(self, token: AccessToken) -> None:
        self._token = token
        self.fetches += 1

    def drop(self, token: AccessToken) -> None:
        if self._token is token:
            self._token = None
