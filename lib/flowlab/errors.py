"""Every exception Flow Lab raises, in one tree.

Callers catch one base and get a message that says what went wrong and what to fix; raw ``httpx``,
``aiohttp`` or ``pydantic`` exceptions never escape the library.

::

    FlowLabError                       base of everything flowlab raises
    ├── ConfigError                    a setting is missing or invalid (names the FLOWLAB_ variable)
    ├── RequestValidationError         a request failed our pre-flight checks (lists field problems)
    ├── SampleError                    a guest sample (CSV) cannot be used; names row and field
    ├── RunStoreError                  a run file is missing, locked or belongs to another run
    └── APIError                       anything about talking to the API; carries .request
        ├── APIConnectionError         could not connect, or the connection broke (DNS, refused, reset)
        │   └── APITimeoutError        no answer within the timeout
        ├── APIResponseError           a 2xx answer whose body is not what we need (e.g. not JSON)
        └── APIStatusError             a non-2xx answer; carries .response, .status_code, .body
            ├── BadRequestError        400: the API rejected the request (body says why)
            ├── AuthenticationError    401/403: unknown or wrong client key
            ├── NotFoundError          404
            ├── RateLimitError         429
            └── ServerError            5xx

``APIStatusError.body`` holds the API's error body when it sent one; Sitecore uses
``{status, code, message, developerMessage, moreInfoUrl}`` (reference §3.5) and so does the sandbox; the AEP
Edge Network sends RFC 7807 problem+json ``{type, status, title, detail, report}`` (``error_code`` reads the
``EXEG-…`` code from ``type``).

Secrets never travel in an error: every URL in a message, ``str(error)`` and ``APIError.url`` goes through
``flowlab.redaction`` (userinfo and secret-looking query values become ``***``), whoever builds the error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flowlab.redaction import redact_text, redact_url

if TYPE_CHECKING:
    from flowlab.http import FlowResponse
    from flowlab.personalize.models import CallFlowRequest

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "FieldProblem",
    "FlowLabError",
    "NotFoundError",
    "RateLimitError",
    "RequestValidationError",
    "RunStoreError",
    "SampleError",
    "ServerError",
    "status_error_class",
]


class FlowLabError(Exception):
    """Base class: ``except FlowLabError`` catches everything the library raises on purpose."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))

    def __str__(self) -> str:
        return redact_text(super().__str__())


class ConfigError(FlowLabError):
    """A setting is missing or has a value we cannot use."""


class FieldProblem:
    """One problem with one field, phrased so that a person knows what to change."""

    __slots__ = ("field", "message")

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message

    def __repr__(self) -> str:
        return f"FieldProblem({self.field!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldProblem) and (self.field, self.message) == (other.field, other.message)

    def __hash__(self) -> int:
        return hash((self.field, self.message))

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class RequestValidationError(FlowLabError, ValueError):
    """The request failed pre-flight validation; ``problems`` lists each field and what to fix."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid request")

    def for_field(self, field: str) -> list[str]:
        """Messages for one field (the form shows them next to that field)."""
        return [p.message for p in self.problems if p.field == field]


class SampleError(FlowLabError, ValueError):
    """A guest sample cannot be read at all (not: one bad row, which is reported per row)."""


class RunStoreError(FlowLabError):
    """The run store cannot be opened or does not belong to the run being resumed."""


class APIError(FlowLabError):
    """Talking to the API failed. ``request`` is the flow request we tried to send, when known."""

    def __init__(self, message: str, *, request: CallFlowRequest | None = None, url: str = "") -> None:
        super().__init__(redact_text(message))
        self.message = message
        self.request = request
        self.url = url

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        self._message = redact_text(value)

    @property
    def url(self) -> str:
        return self._url

    @url.setter
    def url(self, value: str) -> None:
        self._url = redact_url(value)


class APIConnectionError(APIError):
    """No HTTP answer: DNS failure, refused or reset connection."""


class APITimeoutError(APIConnectionError):
    """No answer within the configured timeout."""


class APIResponseError(APIError):
    """The API answered 2xx, but the body is not usable (for example not JSON)."""


class APIStatusError(APIError):
    """The API answered with a non-2xx status."""

    status_code: int = 0

    def __init__(
        self,
        message: str,
        *,
        response: FlowResponse,
        request: CallFlowRequest | None = None,
        url: str = "",
    ) -> None:
        super().__init__(message, request=request, url=url)
        self.response = response
        self.status_code = response.status_code
        body = response.json_body
        self.body: Mapping[str, Any] | None = body if isinstance(body, Mapping) else None

    @property
    def api_message(self) -> str:
        """The API's own ``message`` (or ``developerMessage``), if its error body had one."""
        if not self.body:
            return ""
        for key in ("message", "developerMessage", "error_msg", "detail"):
            value = self.body.get(key)
            if isinstance(value, str) and value:
                return value
        return ""

    @property
    def error_code(self) -> str:
        """The API's error code: Sitecore's ``code``, or the ``EXEG-…`` code that ends an AEP Edge
        problem+json ``type`` (adobe-edge-personalization.md §4.1); empty when the body has none."""
        if not self.body:
            return ""
        kind = self.body.get("type")
        if isinstance(kind, str) and "/" in kind:
            return kind.rsplit("/", 1)[1]
        code = self.body.get("code")
        return str(code) if isinstance(code, str | int) and not isinstance(code, bool) else ""


class BadRequestError(APIStatusError):
    """400: the API rejected the request; ``api_message`` says why."""

    status_code = 400


class AuthenticationError(APIStatusError):
    """401/403: the client key is unknown or not allowed."""

    status_code = 401


class NotFoundError(APIStatusError):
    """404: the URL or the resource does not exist."""

    status_code = 404


class RateLimitError(APIStatusError):
    """429: too many requests; retry after ``Retry-After``."""

    status_code = 429


class ServerError(APIStatusError):
    """5xx: the server failed; usually worth a retry."""

    status_code = 500


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The most specific error class for a non-2xx status code."""
    if status_code == 400:
        return BadRequestError
    if status_code in (401, 403):
        return AuthenticationError
    if status_code == 404:
        return NotFoundError
    if status_code == 429:
        return RateLimitError
    if status_code >= 500:
        return ServerError
    return APIStatusError
