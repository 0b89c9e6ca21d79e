"""Turn a request into something to paste elsewhere: curl, a Python snippet, a Postman v2.1 collection.

Every export is a faithful copy of what Flow Lab sends (same URL, headers and body), so "it worked in Flow
Lab" and "it works in my terminal" are the same statement. The client key is not a secret (it is public in
every browser that runs the site, reference §1.4); Postman exports still move it and the base URL into
collection variables so one collection serves several tenants. The one exception to "faithful": a base URL
is redacted (``flowlab.redaction``), so a password or token that slipped into one never lands in a snippet.
"""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Any

from flowlab.personalize.models import CallFlowRequest
from flowlab.redaction import redact_url

__all__ = ["postman_collection", "python_literal", "to_curl", "to_postman", "to_python"]

_PATH = "/v2/callFlows"


def _body_text(request: CallFlowRequest, indent: int | None = 2) -> str:
    return json.dumps(request.to_body(), indent=indent, ensure_ascii=False)


def to_curl(request: CallFlowRequest, base_url: str) -> str:
    """A ``curl`` command that sends exactly this request (POSIX shell quoting)."""
    url = redact_url(base_url.rstrip("/") + _PATH)
    body = json.dumps(request.to_body(), ensure_ascii=False)
    return (
        f"curl -sS -X POST {shlex.quote(url)} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        "  -H 'Accept: application/json' \\\n"
        f"  --data-raw {shlex.quote(body)}"
    )


def to_python(request: CallFlowRequest, base_url: str) -> str:
    """A self-contained Python snippet (httpx only) that sends this request and prints the response."""
    body = _body_text(request, indent=4)
    return (
        "import httpx\n\n"
        f"body = {_py_literal(body)}\n"
        "response = httpx.post(\n"
        f"    {redact_url(base_url.rstrip('/') + _PATH)!r},\n"
        "    json=body,\n"
        '    headers={"Accept": "application/json"},\n'
        "    timeout=10,\n"
        ")\n"
        "print(response.status_code)\n"
        "print(response.text)\n"
    )


def _py_literal(json_text: str) -> str:
    """JSON text as a Python literal (true/false/null become True/False/None)."""
    return python_literal(json.loads(json_text))


def python_literal(value: Any) -> str:
    """A JSON value as an indented Python literal, for snippets (shared by the callFlows and Edge exports)."""
    return _format(value, 0)


def _format(value: Any, depth: int) -> str:
    pad = "    " * (depth + 1)
    end = "    " * depth
    if isinstance(value, dict) and value:
        items = ",\n".join(
            f"{pad}{json.dumps(k, ensure_ascii=False)}: {_format(v, depth + 1)}" for k, v in value.items()
        )
        return "{\n" + items + ",\n" + end + "}"
    if isinstance(value, list) and value:
        return "[\n" + ",\n".join(f"{pad}{_format(v, depth + 1)}" for v in value) + ",\n" + end + "]"
    return repr(value) if not isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def to_postman(
    requests: list[CallFlowRequest] | CallFlowRequest, base_url: str, *, name: str = "Flow Lab"
) -> dict[str, Any]:
    """A Postman Collection v2.1 with ``{{baseUrl}}`` and ``{{clientKey}}`` variables, one item per request."""
    items = [requests] if isinstance(requests, CallFlowRequest) else list(requests)
    base_url = redact_url(base_url.rstrip("/"))
    client_key = items[0].client_key if items else ""
    collection_items = []
    for req in items:
        body = req.to_body()
        body["clientKey"] = "{{clientKey}}"
        kind, value = req.identity
        collection_items.append(
            {
                "name": f"{req.friendly_id} · {kind} {value}",
                "request": {
                    "method": "POST",
                    "header": [
                        {"key": "Content-Type", "value": "application/json"},
                        {"key": "Accept", "value": "application/json"},
                    ],
                    "body": {
                        "mode": "raw",
                        "raw": json.dumps(body, indent=2, ensure_ascii=False),
                        "options": {"raw": {"language": "json"}},
                    },
                    "url": {
                        "raw": "{{baseUrl}}" + _PATH,
                        "host": ["{{baseUrl}}"],
                        "path": [p for p in _PATH.split("/") if p],
                    },
                    "description": "Exported from Flow Lab.",
                },
                "response": [],
            }
        )
    return postman_collection(
        name, base_url, collection_items, {"baseUrl": base_url, "clientKey": client_key}
    )


def postman_collection(
    name: str, base_url: str, items: list[dict[str, Any]], variables: dict[str, str]
) -> dict[str, Any]:
    """A Postman Collection v2.1 around ``items``, with string collection ``variables`` (shared by the
    callFlows and Edge exports)."""
    return {
        "info": {
            "_postman_id": str(uuid.uuid5(uuid.NAMESPACE_URL, base_url + name)),
            "name": name,
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "item": items,
        "variable": [{"key": k, "value": v, "type": "string"} for k, v in variables.items()],
    }
