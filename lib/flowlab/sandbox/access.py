"""Who may use the admin API (``/sandbox/…``): the person running the sandbox, not a web page they visit.

The admin API can load flows, reset the tenant and list guests with their names and emails, so:

* **Host.** ``Host`` must name the bound address with its port: ``127.0.0.1``, ``localhost``, ``[::1]``,
  the configured host, or the local address the connection arrived on. Anything else is **421 Misdirected
  Request**: a DNS-rebinding page (``evil.example`` resolving to 127.0.0.1) sends its own name.
* **Origin.** A request whose ``Origin`` is not the sandbox's own (``http://<Host>``) is **403**; admin
  routes send no CORS headers, so a browser grants no preflight and lets no page read an answer. The docs
  page at ``/sandbox/docs`` is the sandbox's own origin and works.
* **Content type.** Writes (POST, PUT, PATCH, DELETE) need ``Content-Type: application/json`` (**415**
  otherwise): a page can send ``text/plain`` or a form without a preflight, never JSON.
* **Token.** With an admin token set, every admin request needs ``Authorization: Bearer <token>`` (**401**
  otherwise; compared in constant time, never echoed). Bound to anything but loopback and without a token,
  admin writes are refused (**403**) and the server warns on start (``exposure_warning``).

The real-API routes (``/v2/…``, ``/v1.2/…``) are not guarded: the real services answer any origin and any
host, and they hold nothing a caller could not get by calling them.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from starlette.middleware.cors import CORSMiddleware

from flowlab.sandbox.errors import (
    Forbidden,
    MisdirectedRequest,
    SandboxError,
    Unauthorized,
    UnsupportedMediaType,
    send_error,
)

__all__ = [
    "ADMIN_PREFIX",
    "PUBLIC_ADMIN_PATHS",
    "AdminAccess",
    "AdminGuard",
    "RealApiCors",
    "exposure_warning",
    "is_loopback",
    "require_json",
]

ADMIN_PREFIX = "/sandbox"
#: the docs page and its schema hold no tenant data; a browser opening them cannot send a token
PUBLIC_ADMIN_PATHS = frozenset({"/sandbox/docs", "/sandbox/docs/oauth2-redirect", "/sandbox/openapi.json"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_REALM = (b"www-authenticate", b'Bearer realm="flowlab-sandbox"')


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; a wildcard or LAN address exposes the sandbox."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_json(content_type: str | None) -> None:
    """Raise 415 unless the content type is JSON (``application/json`` or ``…+json``)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            "admin writes take JSON: send Content-Type: application/json",
            f"got Content-Type {media or 'none'}; send a JSON body ({{}} when there is nothing to say)",
        )


def exposure_warning(host: str, *, has_token: bool) -> str | None:
    """What a non-loopback bind exposes and how to protect it (printed on start); None on loopback."""
    if is_loopback(host):
        return None
    head = (
        f"warning: the sandbox listens on {host}, not loopback: anyone who can reach this machine can call "
    )
    if has_token:
        return (head + "/v2/callFlows. The admin API (/sandbox/…) needs the admin token "
                "(Authorization: Bearer …); the token travels in clear text over HTTP, so use a trusted "
                "network or bind 127.0.0.1.\n")  # fmt: skip
    return (head + "/v2/callFlows and read the admin API (/sandbox/…: flows, guests with their names and "
            "emails, traces). Admin writes (load, knobs, reset) are refused until an admin token is set: "
            "restart with --admin-token or FLOWLAB_SANDBOX_ADMIN_TOKEN, or bind 127.0.0.1.\n")  # fmt: skip


@dataclass
class AdminAccess:
    """The admin API's policy: the bound host and the optional admin token."""

    host: str = "127.0.0.1"
    token: SecretStr | None = None

    @property
    def exposed(self) -> bool:
        return not is_loopback(self.host)

    def check(self, scope: dict[str, Any]) -> None:
        """Raise the ``SandboxError`` that refuses this admin request, if any."""
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        if not self._host_allowed(host, scope.get("server")):
            raise MisdirectedRequest(
                f"this sandbox does not answer admin requests for host '{host}'",
                "admin requests must name the address the sandbox is bound to (127.0.0.1, localhost or "
                f"{self.host}) with its port; other host names are refused so that DNS rebinding fails",
            )
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1").strip().lower() != f"http://{host}":
            raise Forbidden(
                "the admin API does not answer web pages of other origins",
                f"Origin {origin.decode('latin-1')!r} is not this sandbox's own (http://{host}); call the "
                "admin API from a script, the CLI, the app or the docs page at /sandbox/docs",
            )
        path, method = scope["path"], scope["method"]
        if self.token is not None and path not in PUBLIC_ADMIN_PATHS:
            given = headers.get(b"authorization", b"")
            expected = b"Bearer " + self.token.get_secret_value().encode()
            if not hmac.compare_digest(given, expected):
                raise Unauthorized(
                    "the admin API needs the admin token",
                    "send Authorization: Bearer <token>, the value of --admin-token or "
                    "FLOWLAB_SANDBOX_ADMIN_TOKEN (SandboxAdmin sends the setting)",
                )
        if method in _READS:
            return
        if self.token is None and self.exposed:
            raise Forbidden(
                f"admin writes are refused: the sandbox listens on {self.host} without an admin token",
                "restart it with --admin-token (or FLOWLAB_SANDBOX_ADMIN_TOKEN) and send "
                "Authorization: Bearer <token>, or bind it to 127.0.0.1",
            )

    def _host_allowed(self, host: str, server: tuple[str, int] | None) -> bool:
        names = {*_LOOPBACK_NAMES, _bracket(self.host)}
        if server is not None:
            names.add(_bracket(server[0]))
        if server is None:
            return host in names or host.rpartition(":")[0] in names
        port = server[1]
        allowed = {f"{name}:{port}" for name in names}
        if port == 80:
            allowed |= names
        return host in allowed


def _bracket(host: str) -> str:
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class AdminGuard:
    """ASGI middleware applying ``AdminAccess`` to ``/sandbox`` paths; other paths pass untouched."""

    def __init__(self, app: Any, access: AdminAccess) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _is_admin(scope["path"]):
            try:
                self.access.check(scope)
            except SandboxError as exc:
                await send_error(send, exc, [_REALM] if isinstance(exc, Unauthorized) else [])
                return
        await self.app(scope, receive, send)


def _is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


class RealApiCors:
    """CORS for the real-API routes only: admin paths get no ``Access-Control-*`` headers at all."""

    def __init__(self, app: Any, /, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _is_admin(scope["path"]):
            await self.app(scope, receive, send)
        else:
            await self.cors(scope, receive, send)
