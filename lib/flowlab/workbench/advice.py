"""What to tell a person about an error: what happened, in the API's own words, and what to fix.

Nobody using the app should see a traceback. Every ``FlowLabError`` maps to an ``Advice``: a title such as
"400: use only one of browserId, email or identifiers", the detail the API gave (``developerMessage``), the
next step, and, when the error is about one field of the form, that field's wire name so the form can show
the message next to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from flowlab.errors import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ConfigError,
    FlowLabError,
    NotFoundError,
    RateLimitError,
    RequestValidationError,
    ServerError,
)
from flowlab.redaction import redact_text, redact_url

__all__ = ["Advice", "advise"]


@dataclass(frozen=True)
class Advice:
    """An error for people: ``title`` (one line), ``detail`` (the API's words), ``fix`` (the next step)."""

    title: str
    detail: str = ""
    fix: str = ""
    field: str | None = None


# (words in the API message, form field, what to do)
_BAD_REQUEST_HINTS = (
    ("only one of", "identity", "Send exactly one identity: a browser id, an email, or an identifier."),
    (
        "browserid, email or identifiers",
        "identity",
        "Say who the guest is: a browser id, an email or an identifier.",
    ),
    (
        "identifiers",
        "identity",
        "identifiers is one object with a provider and an id, e.g. LOYALTY and LY-123.",
    ),
    ("language", "language", "Pick a language code such as EN or de, or leave the language out."),
    ("friendlyid", "friendlyId", "Enter the friendlyId of a live experience or experiment."),
    ("clientkey", "clientKey", "Set the tenant's client key in the sidebar."),
    (
        "pointofsale",
        "pointOfSale",
        "Use a point of sale configured in the tenant (Settings → Points of sale).",
    ),
    ("params", "params", "params must be an object of keys and values."),
    ("json", None, "The body must be valid JSON: check params values you typed as JSON."),
)


def _host(url: str) -> str:
    """Scheme and host of a URL, never its userinfo (``user:pass@``) or query."""
    parts = urlsplit(redact_url(url))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.netloc else redact_text(url)


def _detail(error: APIStatusError) -> str:
    body = error.body or {}
    developer = body.get("developerMessage")
    if isinstance(developer, str) and developer and developer != error.api_message:
        return developer
    return "" if error.api_message else (error.response.text[:300] if error.response.text else "")


def _status(error: APIStatusError) -> Advice:
    code = error.status_code
    said = error.api_message
    detail = _detail(error)
    if isinstance(error, AuthenticationError):
        return Advice(
            f"{code}: {said or 'the tenant does not accept this client key'}",
            detail,
            "Copy the client key from Personalize (Developer center → API access) and check the region: "
            "a key from an EU tenant is unknown in the US region.",
            "clientKey",
        )
    if isinstance(error, NotFoundError):
        fix = (
            "Check the friendlyId (in Personalize: the experience's Setup details) and that the experience "
            "or experiment is live; a trailing * matches by prefix."
        )
        if "friendlyid" in detail.lower():  # the API already said how to check it
            fix = "Pick a live flow, or correct the friendlyId."
        return Advice(f"{code}: {said or 'not found'}", detail, fix, "friendlyId")
    if isinstance(error, RateLimitError):
        wait = next((v for k, v in error.response.headers.items() if k.lower() == "retry-after"), None)
        return Advice(
            f"{code}: too many requests" + (f" ({said})" if said else ""),
            detail,
            f"Wait {wait} s and try again." if wait else "Wait a moment and try again.",
        )
    if isinstance(error, ServerError):
        return Advice(
            f"{code}: {said or 'the server failed'}",
            detail,
            "On the sandbox, fix the flow's condition, decision model or template named above (the Sandbox page "
            "shows them); on a tenant, retry, and check the experience in Personalize.",
        )
    lowered = f"{said} {detail}".lower()
    for words, field, fix in _BAD_REQUEST_HINTS:
        if words in lowered:
            return Advice(f"{code}: {said or 'bad request'}", detail, fix, field)
    return Advice(
        f"{code}: {said or 'the API refused the request'}", detail, "Check the request and try again."
    )


def advise(error: FlowLabError) -> Advice:
    """Advice for any error the library raises."""
    if isinstance(error, RequestValidationError):
        listed = "; ".join(str(p) for p in error.problems)
        return Advice("The request is not valid yet", listed, "Fix the fields marked in the form.")
    if isinstance(error, APITimeoutError):
        return Advice(
            f"Timed out: no answer from {_host(error.url)}",
            error.message,
            "The tenant may be slow or unreachable: try again, raise the timeout in the sidebar, or check "
            "your VPN or proxy. (Sitecore's own SDKs give up after 400 ms on live sites.)",
        )
    if isinstance(error, APIConnectionError):
        return Advice(
            f"Cannot connect to {_host(error.url)}",
            error.message,
            "Check the target's base URL or region in the sidebar and your network. For a separate sandbox, "
            "start it with `python -m flowlab sandbox`.",
        )
    if isinstance(error, APIStatusError):
        return _status(error)
    if isinstance(error, APIResponseError):
        return Advice("The answer could not be read", error.message, "The response is shown as it came.")
    if isinstance(error, ConfigError):
        return Advice("Settings problem", str(error), "Fix the setting named above and try again.")
    return Advice("Something went wrong", str(error), "Try again; if it keeps happening, report it.")
