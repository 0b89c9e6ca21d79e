"""An interact call to paste elsewhere: curl, a Python snippet, a Postman v2.1 collection.

Faithful copies of what ``EdgeClient`` sends (URL, headers, body), with one deliberate difference: the IMS
access token is never written out. It is a variable the reader fills in (``$ACCESS_TOKEN`` in shells and
Python, ``{{accessToken}}`` in Postman), and the Postman collection carries a token request that sets it
from ``{{clientSecret}}``, left empty. Client id and org id are identifiers, not secrets (Adobe sends them
as headers, adobe-edge-personalization.md §0.2), so they are kept. Without credentials the exports are the
unauthenticated edge call: no auth headers at all (§2.1).
"""

from __future__ import annotations

import json
import shlex
from typing import Any
from urllib.parse import urlsplit

from flowlab.edge.auth import TOKEN_PATH, EdgeCredentials
from flowlab.edge.client import interact_url
from flowlab.edge.models import InteractRequest
from flowlab.personalize.export import postman_collection, python_literal
from flowlab.redaction import redact_url

__all__ = ["to_curl", "to_postman", "to_python"]


def _url(base_url: str, datastream_id: str, version: int, region: str | None) -> str:
    return redact_url(interact_url(base_url.rstrip("/"), datastream_id, version=version, region=region))


def _body(request: InteractRequest, version: int) -> dict[str, Any]:
    return request.to_body() if version == 2 else request.to_v1_body()


def to_curl(
    request: InteractRequest,
    base_url: str,
    datastream_id: str,
    *,
    credentials: EdgeCredentials | None = None,
    version: int = 2,
    region: str | None = None,
) -> str:
    """A ``curl`` command (POSIX shell); authenticated calls read the token from ``$ACCESS_TOKEN``."""
    url = _url(base_url, datastream_id, version, region)
    lines = [f"curl -sS -X POST {shlex.quote(url)}"]
    if credentials is not None:
        lines += [
            '-H "Authorization: Bearer $ACCESS_TOKEN"',
            f"-H {shlex.quote('x-api-key: ' + credentials.client_id)}",
            f"-H {shlex.quote('x-gw-ims-org-id: ' + credentials.org_id)}",
        ]
    lines += [
        "-H 'Content-Type: application/json'",
        f"--data-raw {shlex.quote(_compact(_body(request, version)))}",
    ]
    command = " \\\n  ".join(lines)
    if credentials is None:
        return command
    token = (
        "# ACCESS_TOKEN is an IMS token (reference §2.2); get one with CLIENT_SECRET set, e.g.:\n"
        f"# curl -sS -X POST {shlex.quote(redact_url(credentials.token_url))} \\\n"
        "#   --data-urlencode grant_type=client_credentials \\\n"
        f"#   --data-urlencode client_id={shlex.quote(credentials.client_id)} \\\n"
        '#   --data-urlencode "client_secret=$CLIENT_SECRET" \\\n'
        f"#   --data-urlencode scope={shlex.quote(credentials.scope)}\n"
    )
    return token + command


def to_python(
    request: InteractRequest,
    base_url: str,
    datastream_id: str,
    *,
    credentials: EdgeCredentials | None = None,
    version: int = 2,
    region: str | None = None,
) -> str:
    """A self-contained Python snippet (httpx only); the token comes from the ``ACCESS_TOKEN`` variable."""
    headers = '{"Content-Type": "application/json"}'
    prelude = "import httpx\n\n"
    if credentials is not None:
        prelude = "import os\n\nimport httpx\n\n"
        prelude += 'ACCESS_TOKEN = os.environ["ACCESS_TOKEN"]  # an IMS token (/ims/token/v3), never inline\n'
        headers = (
            "{\n"
            '        "Authorization": f"Bearer {ACCESS_TOKEN}",\n'
            f'        "x-api-key": {json.dumps(credentials.client_id)},\n'
            f'        "x-gw-ims-org-id": {json.dumps(credentials.org_id)},\n'
            '        "Content-Type": "application/json",\n'
            "    }"
        )
    return (
        prelude
        + f"body = {python_literal(_body(request, version))}\n"
        + "response = httpx.post(\n"
        + f"    {_url(base_url, datastream_id, version, region)!r},\n"
        + "    json=body,\n"
        + f"    headers={headers},\n"
        + "    timeout=10,\n"
        + ")\n"
        + "print(response.status_code)\n"
        + "print(response.text)\n"
    )


def to_postman(
    requests: list[InteractRequest] | InteractRequest,
    base_url: str,
    datastream_id: str,
    *,
    credentials: EdgeCredentials | None = None,
    version: int = 2,
    region: str | None = None,
    name: str = "Flow Lab · AEP Edge",
) -> dict[str, Any]:
    """A Postman v2.1 collection: ``{{baseUrl}}``, ``{{datastreamId}}``, and with credentials an "IMS token"
    request that stores ``{{accessToken}}`` for the interact items (``{{clientSecret}}`` is left empty)."""
    items = [requests] if isinstance(requests, InteractRequest) else list(requests)
    base = redact_url(base_url.rstrip("/"))
    sample = urlsplit(interact_url("http://h", "{{datastreamId}}", version=version, region=region))
    path = [p for p in sample.path.split("/") if p]
    param = sample.query.split("=", 1)[0]
    headers = [{"key": "Content-Type", "value": "application/json"}]
    variables = {"baseUrl": base, "datastreamId": datastream_id}
    collection_items: list[dict[str, Any]] = []
    if credentials is not None:
        headers = [
            {"key": "Authorization", "value": "Bearer {{accessToken}}"},
            {"key": "x-api-key", "value": "{{clientId}}"},
            {"key": "x-gw-ims-org-id", "value": "{{orgId}}"},
            *headers,
        ]
        variables |= {
            "imsUrl": redact_url(credentials.ims_url),
            "clientId": credentials.client_id,
            "clientSecret": "",
            "orgId": credentials.org_id,
            "scope": credentials.scope,
            "accessToken": "",
        }
        collection_items.append(_token_item())
    for req in items:
        namespace, value = req.primary_identity
        collection_items.append(
            {
                "name": f"interact · {req.event_type or 'lookup'} · {namespace} {value}",
                "request": {
                    "method": "POST",
                    "header": headers,
                    "body": {
                        "mode": "raw",
                        "raw": json.dumps(_body(req, version), indent=2, ensure_ascii=False),
                        "options": {"raw": {"language": "json"}},
                    },
                    "url": {
                        "raw": "{{baseUrl}}/" + "/".join(path) + f"?{param}={{{{datastreamId}}}}",
                        "host": ["{{baseUrl}}"],
                        "path": path,
                        "query": [{"key": param, "value": "{{datastreamId}}"}],
                    },
                    "description": "Exported from Flow Lab (adobe-edge-personalization.md §2).",
                },
                "response": [],
            }
        )
    return postman_collection(name, base, collection_items, variables)


def _token_item() -> dict[str, Any]:
    form = [
        {"key": "grant_type", "value": "client_credentials"},
        {"key": "client_id", "value": "{{clientId}}"},
        {"key": "client_secret", "value": "{{clientSecret}}"},
        {"key": "scope", "value": "{{scope}}"},
    ]
    return {
        "name": "IMS token (fill in clientSecret first)",
        "event": [
            {
                "listen": "test",
                "script": {
                    "type": "text/javascript",
                    "exec": ['pm.collectionVariables.set("accessToken", pm.response.json().access_token);'],
                },
            }
        ],
        "request": {
            "method": "POST",
            "header": [{"key": "Content-Type", "value": "application/x-www-form-urlencoded"}],
            "body": {"mode": "urlencoded", "urlencoded": form},
            "url": {
                "raw": "{{imsUrl}}" + TOKEN_PATH,
                "host": ["{{imsUrl}}"],
                "path": [p for p in TOKEN_PATH.split("/") if p],
            },
        },
        "response": [],
    }


def _compact(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))
