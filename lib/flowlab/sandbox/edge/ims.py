"""A fake Adobe IMS: ``POST /ims/token/v3`` (OAuth server-to-server) and the check of the tokens it issues.

Reference §2.2 (DOC D11): a form-encoded ``grant_type=client_credentials&client_id=…&client_secret=…&scope=…``
gets ``{"access_token", "token_type": "bearer", "expires_in": 86399}``. The sandbox has one demo credential
(shown by ``GET /sandbox/info``, never a real secret). Tokens are signed (HMAC with a per-server key) and
carry their expiry on the Edge tenant's *simulated* clock, so advancing the clock a day expires them the way
a real token expires after 24 h, and the checks of reference §10 step 6 can each be met: a missing or
malformed token is ``EXEG-0500-401``, a bad signature ``EXEG-0502-401``, an expired one ``EXEG-0503-401``.

A wrong secret gets an OAuth error body (RFC 6749 §5.2: ``{"error": "invalid_client", "error_description"}``)
and no token; IMS's exact wording is not in the reference [INF].
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import orjson

__all__ = [
    "DEMO_CLIENT_ID",
    "DEMO_CLIENT_SECRET",
    "DEMO_SCOPE",
    "TOKEN_LIFETIME_S",
    "TOKEN_PATH",
    "Ims",
    "ImsError",
    "TokenProblem",
]

TOKEN_PATH = "/ims/token/v3"
#: reference §2.2: ``expires_in`` of a server-to-server token
TOKEN_LIFETIME_S = 86399
DEMO_CLIENT_ID = "flowlab-sandbox-edge-client"
DEMO_CLIENT_SECRET = "p8e-SANDBOX-demo-secret-not-a-real-one"
#: the scope string of Adobe's alloy-samples (reference §2.2, SRC S7)
DEMO_SCOPE = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"


class ImsError(Exception):
    """A token request IMS refuses: an OAuth error body (RFC 6749 §5.2) with its status."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> bytes:
        return orjson.dumps({"error": self.error, "error_description": self.description})


class TokenProblem(Exception):
    """Why a bearer token is refused: the EXEG code of reference §4.2 (0500, 0502 or 0503) and a detail."""

    def __init__(self, code: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.title = title
        self.detail = detail


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64(b'{"alg":"HS256","typ":"JWT"}')


@dataclass
class Ims:
    """Issues and checks bearer tokens; ``now`` is the Edge tenant's simulated clock (epoch seconds)."""

    now: Callable[[], float]
    client_id: str = DEMO_CLIENT_ID
    client_secret: str = DEMO_CLIENT_SECRET
    scope: str = DEMO_SCOPE
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def token_response(self, raw: bytes, content_type: str | None) -> bytes:
        """The token body for a form-encoded client_credentials request, or raise ``ImsError``."""
        media = (content_type or "").split(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            raise ImsError(400, "invalid_request",
                           "send the parameters form-encoded (Content-Type: application/x-www-form-urlencoded)")  # fmt: skip
        try:
            form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            raise ImsError(400, "invalid_request", "the form is not UTF-8") from None
        if form.get("grant_type") != "client_credentials":
            raise ImsError(400, "unsupported_grant_type", "grant_type must be client_credentials")
        if not form.get("client_id"):
            raise ImsError(400, "invalid_request", "missing client_id parameter")
        if not form.get("client_secret"):
            raise ImsError(400, "invalid_request", "missing client_secret parameter")
        if not hmac.compare_digest(form["client_id"].encode(), self.client_id.encode()):
            raise ImsError(400, "invalid_client", "invalid client_id parameter")
        if not hmac.compare_digest(form["client_secret"].encode(), self.client_secret.encode()):
            raise ImsError(400, "invalid_client", "invalid client_secret parameter")
        token = self.issue(form.get("scope") or self.scope)
        return orjson.dumps({"access_token": token, "token_type": "bearer", "expires_in": TOKEN_LIFETIME_S})

    def issue(self, scope: str) -> str:
        """A signed token (JWT-shaped, like IMS's) that expires ``TOKEN_LIFETIME_S`` after ``now()``."""
        claims = {"client_id": self.client_id, "scope": scope, "exp": int(self.now()) + TOKEN_LIFETIME_S,
                  "jti": secrets.token_hex(8)}  # fmt: skip
        unsigned = f"{_HEADER}.{_b64(orjson.dumps(claims))}"
        return f"{unsigned}.{_b64(hmac.digest(self.key, unsigned.encode(), hashlib.sha256))}"

    def check(self, authorization: str) -> None:
        """Raise ``TokenProblem`` unless ``authorization`` is ``Bearer <a token this IMS issued, unexpired>``."""
        scheme, _, token = authorization.strip().partition(" ")
        parts = token.strip().split(".")
        if scheme.lower() != "bearer" or len(parts) != 3 or not all(parts):
            raise TokenProblem("EXEG-0500-401", "Invalid authorization token",
                               "The required authorization token is missing or has an invalid format. Send "
                               "Authorization: Bearer <access_token from POST /ims/token/v3>.")  # fmt: skip
        unsigned = f"{parts[0]}.{parts[1]}"
        expected = hmac.digest(self.key, unsigned.encode(), hashlib.sha256)
        try:
            signature = _unb64(parts[2])
            claims = orjson.loads(_unb64(parts[1]))
        except (ValueError, orjson.JSONDecodeError):
            signature, claims = b"", None
        if not hmac.compare_digest(signature, expected) or not isinstance(claims, dict):
            raise TokenProblem("EXEG-0502-401", "Invalid authorization token signature",
                               "The authorization token was not issued by this sandbox's IMS "
                               "(POST /ims/token/v3). Get a new token and try again.")  # fmt: skip
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= self.now():
            raise TokenProblem("EXEG-0503-401", "Authorization token expired",
                               "The authorization token has expired (tokens last 24 h on the sandbox's "
                               "simulated clock). Get a new token and try again.")  # fmt: skip
