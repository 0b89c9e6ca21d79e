"""The Connections and Triggers pages' logic: a connection's inputs, where its calls go, its request to
copy; triggered flows, the events that fire them and what they delivered to their destinations (#11).

Architects "replicate the request in Postman first", so a connection's request is exported the way the
sandbox builds it (``build_request``: ``${key}`` placeholders filled from the inputs, the custom headers),
addressed either to the real system as written or to where the sandbox sends it (its mock, a route).
Secrets never travel inline: the sandbox answers with them masked, and every secret place becomes a
variable the reader fills in, ``$PASSWORD`` in a shell and ``{{password}}`` in Postman (BASIC auth:
``username`` / ``password``; OAuth 2.0 client_credentials: ``client_id`` / ``client_secret``; a key header
or an ``apikey=`` query value: a variable named after it).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from flowlab.personalize.export import postman_collection
from flowlab.redaction import redact_url
from flowlab.sandbox.personalize.connections import (
    auth_kind,
    build_request,
    mask_headers,
    mask_url,
    rewrite_json_strings,
)

__all__ = [
    "PENDING",
    "STANDARD_EVENTS",
    "ConnectionInput",
    "ExportRequest",
    "auth_type",
    "connection_inputs",
    "connection_rows",
    "delivery_rows",
    "event_body",
    "export_request",
    "flow_triggers",
    "input_values",
    "output_rows",
    "route_help",
    "routing_text",
    "to_curl",
    "to_postman",
    "triggered_rows",
]

#: The host the sandbox's in-process mocks answer on; over HTTP they sit at ``<sandbox>/sandbox/mocks/…``.
_MOCK_HOST: Final = "flowlab-sandbox"
_VARIABLE = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
_MASKED = re.compile(r"\*{3,}|^redacted$", re.IGNORECASE)
_JSON_TYPES: Final = frozenset({"object", "array", "json", "boolean", "number", "integer", "double", "long"})
_VIA = {
    "mock": "the sandbox's built-in mock of this system (offline)",
    "override": "a route set for this connection (--connection or PUT /sandbox/connections/{ref})",
    "connections-to": "the base URL given to every connection (--connections-to)",
    "loopback": "the URL as written (a loopback address)",
    "refused": "nowhere: the sandbox does not call the internet unless told to",
}


@dataclass(frozen=True)
class ConnectionInput:
    """One value a connection's URL or body needs (``urlParameters`` / ``inputMappings``)."""

    key: str
    label: str
    type: str
    example: str
    where: str  # "URL" or "body"


def auth_type(connection: Mapping[str, Any]) -> str:
    """``NONE``, ``BASIC`` or ``OAUTH2``, read the way the sandbox reads it when it calls the connection
    (:func:`auth_kind`); an authType it does not know is shown as written, upper-cased."""
    auth = connection.get("auth")
    if not isinstance(auth, Mapping):
        return "NONE"
    return auth_kind(auth) or str(auth.get("authType")).strip().upper()


def connection_inputs(connection: Mapping[str, Any]) -> list[ConnectionInput]:
    """The inputs a test call takes, each with its ``exampleValue`` (as text, for a form field)."""
    inputs: dict[str, ConnectionInput] = {}
    for group, where in (("urlParameters", "URL"), ("inputMappings", "body")):
        for item in connection.get(group) or []:
            if not isinstance(item, Mapping) or not item.get("key"):
                continue
            key = str(item["key"])
            example = item.get("exampleValue")
            text = example if isinstance(example, str) else "" if example is None else json.dumps(example)
            label = str(item.get("label") or key)
            inputs.setdefault(
                key, ConnectionInput(key, label, str(item.get("type") or "String"), text, where)
            )
    return list(inputs.values())


def input_values(inputs: Sequence[ConnectionInput], texts: Mapping[str, str]) -> dict[str, Any]:
    """Form text to input values: a string stays a string; an Object/Array/number input is read as JSON
    when it parses (``[1, 2]``, ``42``) and sent as the text otherwise."""
    values: dict[str, Any] = {}
    for item in inputs:
        text = texts.get(item.key, item.example)
        if item.type.strip().lower() in _JSON_TYPES:
            try:
                values[item.key] = json.loads(text)
                continue
            except ValueError:
                pass
        values[item.key] = text
    return values


def routing_text(routing: Mapping[str, Any] | None) -> str:
    """Where this connection's calls go now, in words."""
    routing = routing or {}
    via = str(routing.get("via") or "")
    where = _VIA.get(via, via or "unknown")
    if via == "refused":
        return f"{where}. {routing.get('reason') or ''}".strip()
    url = routing.get("url")
    return f"{where}: {url}" if url and via != "mock" else where


def connection_rows(connections: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The picker's table: name, system type, auth, where each connection is used, where its calls go."""
    return [
        {
            "name": c.get("name"),
            "system": str(c.get("systemType") or "").replace("_", " ").lower(),
            "auth": auth_type(c),
            "used by": "; ".join(str(u) for u in c.get("usedBy") or []) or "nothing yet",
            "calls go to": str((c.get("routing") or {}).get("via") or ""),
        }
        for c in connections
    ]


def output_rows(connection: Mapping[str, Any], outputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each output mapping with the value the call produced (compact JSON), as a decision model sees it."""
    rows = []
    for item in connection.get("outputMappings") or []:
        if not isinstance(item, Mapping):
            continue
        ref = str(item.get("outputReference") or "")
        value = outputs.get(ref)
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append(
            {
                "output": item.get("label") or ref,
                "reference": ref,
                "type": item.get("type"),
                "value": "—" if value is None else text[:500],
            }
        )
    return rows


def route_help(connection: Mapping[str, Any], sandbox_url: str) -> str:
    """How to send this connection elsewhere: the CLI flags and the admin route (a Markdown list)."""
    name, ref = str(connection.get("name") or ""), str(connection.get("ref") or "")
    one = shlex.quote(f"{name}=http://127.0.0.1:9000")
    base = redact_url(sandbox_url.rstrip("/"))
    return (
        f"- this one, at start: `python -m flowlab sandbox --connection {one}` (name or ref; path and query "
        "are kept)\n"
        "- every connection: `python -m flowlab sandbox --connections-to http://127.0.0.1:9000`\n"
        f"- at run time: `curl -X PUT {base}/sandbox/connections/{ref} -H 'Content-Type: application/json' "
        """-d '{"baseUrl": "http://127.0.0.1:9000"}'` (`{"baseUrl": null}` goes back to the default)"""
    )


@dataclass(frozen=True)
class ExportRequest:
    """A connection's request with ``{{variable}}`` in every secret place, ready for curl or Postman."""

    name: str
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: str | None
    auth: str  # NONE, BASIC or OAUTH2
    #: OAuth 2.0: the token URL, scope and where the credentials go (HEADER or BODY)
    oauth: dict[str, str] = field(default_factory=dict)
    #: variable -> what fills it (empty: a secret the reader supplies)
    variables: dict[str, str] = field(default_factory=dict)


def _var_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "secret"


def export_request(
    connection: Mapping[str, Any],
    inputs: Mapping[str, Any],
    *,
    routed: bool = False,
    sandbox_url: str = "",
) -> ExportRequest:
    """The request the sandbox builds for these inputs, secrets as variables.

    ``routed=False``: addressed to the system as the connection writes it (for a terminal or Postman next to
    the real system); ``True``: to where the sandbox sends it now (its mock, served over HTTP at
    ``sandbox_url``, or the route).
    """
    conn = dict(connection)
    routing = conn.get("routing") or {}
    if routed and routing.get("url"):
        conn["request"] = {**(conn.get("request") or {}), "connectionUrl": str(routing["url"])}
    method, url, raw_headers, body = build_request(conn, inputs)
    if routed and sandbox_url and (urlsplit(url).hostname or "") == _MOCK_HOST:
        parts = urlsplit(url)
        url = sandbox_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    variables: dict[str, str] = {}
    url = _url_variables(url, variables)
    masked = mask_headers(raw_headers)
    headers = []
    for name, value in raw_headers.items():
        if masked[name] != value or _MASKED.search(value):
            var = _var_name(name)
            variables[var] = ""
            headers.append((name, f"{{{{{var}}}}}"))
        else:
            headers.append((name, value))
    body = _body_variables(body, variables) if body is not None else None
    kind = auth_type(connection)
    oauth: dict[str, str] = {}
    auth = connection.get("auth") if isinstance(connection.get("auth"), Mapping) else {}
    assert isinstance(auth, Mapping)
    if kind == "BASIC":
        username = str(auth.get("username") or "")
        variables["username"] = "" if _MASKED.search(username) else username
        variables["password"] = ""
    elif kind == "OAUTH2":
        client_id = str(auth.get("clientId") or "")
        variables["client_id"] = "" if _MASKED.search(client_id) else client_id
        variables["client_secret"] = ""
        token_url = redact_url(str(auth.get("accessTokenUrl") or ""))
        if not token_url or _MASKED.search(token_url):  # the sandbox masks a token URL that carries secrets
            token_url = "{{access_token_url}}"
            variables["access_token_url"] = ""
        oauth = {
            "accessTokenUrl": token_url,
            "scope": str(auth.get("scope") or ""),
            "credentialsIn": "BODY" if str(auth.get("credentialsIn") or "").upper() == "BODY" else "HEADER",
        }
    name = str(connection.get("name") or connection.get("ref") or "connection")
    return ExportRequest(name, method, url, headers, body, kind, oauth, variables)


def _url_variables(url: str, variables: dict[str, str]) -> str:
    """Secret query values (``apikey=…``) and a ``user:pass@`` part become variables."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        variables["username"], variables["password"] = "", ""
        url = url.replace(parts.netloc, "{{username}}:{{password}}@" + host, 1)
        parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = []
    for piece in parts.query.split("&"):  # raw pieces: the encoding the sandbox chose stays as it is
        key, eq, value = piece.partition("=")
        probe = f"http://h/?{unquote(key)}=v"
        if value and (mask_url(probe) != probe or _MASKED.search(unquote(value))):
            var = _var_name(unquote(key))
            variables[var] = ""
            pairs.append(f"{key}={{{{{var}}}}}")
        else:
            pairs.append(key + eq + value)
    return url.split("?", 1)[0] + "?" + "&".join(pairs)


def _body_variables(body: str, variables: dict[str, str]) -> str:
    def variable(key: str, value: str) -> str | None:
        header_like = mask_headers({key: "x"})[key] != "x"
        if not (header_like or _MASKED.search(value)):
            return None
        name = _var_name(key)
        variables[name] = ""
        return f"{{{{{name}}}}}"

    return rewrite_json_strings(body, variable)


def _shell(text: str) -> str:
    """One shell word: single-quoted, or double-quoted with ``${VAR}`` where ``{{var}}`` stands."""
    if not _VARIABLE.search(text):
        return shlex.quote(text)
    out, last = [], 0
    for match in _VARIABLE.finditer(text):
        out.append(re.sub(r'(["\\$`])', r"\\\1", text[last : match.start()]))
        out.append("${" + match.group(1).upper() + "}")
        last = match.end()
    out.append(re.sub(r'(["\\$`])', r"\\\1", text[last:]))
    return '"' + "".join(out) + '"'


def to_curl(request: ExportRequest) -> str:
    """A ``curl`` command (POSIX shell); secrets come from shell variables, never inline."""
    lines = [f"curl -sS -X {request.method} {_shell(request.url)}"]
    if request.auth == "BASIC":
        lines.append(_shell("{{username}}:{{password}}").join(["-u ", ""]))
    elif request.auth == "OAUTH2":
        lines.append('-H "Authorization: Bearer ${ACCESS_TOKEN}"')
    lines += [f"-H {_shell(f'{name}: {value}')}" for name, value in request.headers]
    if request.body is not None:
        lines.append(f"--data-raw {_shell(request.body)}")
    command = " \\\n  ".join(lines)
    needed = {v.upper() for v in request.variables}
    prelude = ""
    if request.auth == "OAUTH2":
        token = request.oauth
        creds = (
            [
                '#   --data-urlencode client_id="${CLIENT_ID}" \\',
                '#   --data-urlencode client_secret="${CLIENT_SECRET}" \\',
            ]
            if token.get("credentialsIn") == "BODY"
            else ['#   -u "${CLIENT_ID}:${CLIENT_SECRET}" \\']
        )
        scope = token.get("scope")
        prelude = "\n".join(
            [
                "# ACCESS_TOKEN is an OAuth 2.0 client_credentials token; get one with CLIENT_ID and "
                "CLIENT_SECRET set, e.g.:",
                f"# curl -sS -X POST {_shell(token.get('accessTokenUrl') or '')} \\",
                *creds,
                "#   --data-urlencode grant_type=client_credentials"
                + (f" --data-urlencode scope={shlex.quote(scope)}" if scope else ""),
            ]
        )
        prelude += "\n"
        needed |= {"ACCESS_TOKEN"}
    if needed:
        prelude = f"# set first (never pasted inline): {' '.join(sorted(needed))}\n" + prelude
    return prelude + command


def to_postman(request: ExportRequest) -> dict[str, Any]:
    """A Postman v2.1 collection of this one request; secrets are empty collection variables."""
    parts = urlsplit(request.url)
    query = [{"key": k, "value": v} for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    url: dict[str, Any] = {
        "raw": request.url,
        "protocol": parts.scheme,
        "host": (parts.hostname or "").split("."),
        "path": [p for p in parts.path.split("/") if p],
    }
    if parts.port:
        url["port"] = str(parts.port)
    if query:
        url["query"] = query
    item: dict[str, Any] = {
        "name": request.name,
        "request": {
            "method": request.method,
            "header": [{"key": k, "value": v} for k, v in request.headers],
            "url": url,
            "description": "Exported from Flow Lab's Connections page; fill in the empty variables.",
        },
        "response": [],
    }
    if request.body is not None:
        item["request"]["body"] = {
            "mode": "raw",
            "raw": request.body,
            "options": {"raw": {"language": "json"}},
        }
    if request.auth == "BASIC":
        item["request"]["auth"] = {
            "type": "basic",
            "basic": [
                {"key": "username", "value": "{{username}}", "type": "string"},
                {"key": "password", "value": "{{password}}", "type": "string"},
            ],
        }
    elif request.auth == "OAUTH2":
        oauth = request.oauth
        settings = {
            "grant_type": "client_credentials",
            "accessTokenUrl": oauth.get("accessTokenUrl", ""),
            "clientId": "{{client_id}}",
            "clientSecret": "{{client_secret}}",
            "scope": oauth.get("scope", ""),
            "client_authentication": "body" if oauth.get("credentialsIn") == "BODY" else "header",
        }
        item["request"]["auth"] = {
            "type": "oauth2",
            "oauth2": [{"key": k, "value": v, "type": "string"} for k, v in settings.items()],
        }
    base = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return postman_collection(f"Flow Lab · {request.name}", base, [item], dict(request.variables))


# ---- triggered experiences: what fires them, the events that do, what they delivered ---------------------

#: Event types every guest can send (the Engage SDK's own); custom ones come from the triggered flows.
STANDARD_EVENTS: Final = ("VIEW", "IDENTITY")
#: Delivery states that are not final yet (the sandbox delivers in the background).
PENDING: Final = frozenset({"QUEUED", "RUNNING"})


def flow_triggers(definition: Mapping[str, Any]) -> list[str]:
    """The trigger values a triggered flow lists (``SESSION_CLOSED``, a custom event type…)."""
    values = []
    for trigger in definition.get("triggers") or []:
        if not isinstance(trigger, Mapping):
            continue
        for ident in trigger.get("identifiers") or []:
            if isinstance(ident, Mapping) and ident.get("value"):
                values.append(str(ident["value"]))
    return list(dict.fromkeys(values))


def triggered_rows(definitions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per triggered flow: its name, friendlyId, status and what fires it."""
    return [
        {
            "flow": d.get("name"),
            "friendlyId": d.get("friendlyId"),
            "status": d.get("status"),
            "fired by": ", ".join(flow_triggers(d)) or "—",
        }
        for d in definitions
    ]


def event_body(
    guest: Mapping[str, Any],
    kind: str,
    *,
    client_key: str,
    pos: str,
    page: str = "home",
    channel: str = "WEB",
) -> dict[str, Any]:
    """A Stream API event as the Engage SDK sends it, from this guest's first browser; an IDENTITY event
    carries the guest's email and identifiers, which is what links the browser to the guest."""
    browsers = guest.get("browserIds") or []
    body: dict[str, Any] = {
        "type": kind,
        "browser_id": str(browsers[0]) if browsers else "",
        "client_key": client_key,
        "channel": channel,
        "pos": pos,
        "language": str(guest.get("language") or "EN").upper(),
        "currency": "EUR",
        "page": page,
    }
    if kind.upper() == "IDENTITY":
        email = guest.get("email")
        identifiers = [dict(i) for i in guest.get("identifiers") or [] if isinstance(i, Mapping)]
        if email:
            body["email"] = email
            identifiers = identifiers or [{"provider": "email", "id": email}]
        if identifiers:
            body["identifiers"] = identifiers
        for key, field_ in (("firstname", "firstName"), ("lastname", "lastName")):
            if guest.get(field_):
                body[key] = guest[field_]
    return body


def delivery_rows(items: Sequence[Mapping[str, Any]], flows: Mapping[str, str]) -> list[dict[str, Any]]:
    """Deliveries, newest first, as a table: when, which flow on which trigger, to which destination, how."""
    rows = []
    for item in items:
        at = item.get("at")
        when = ""
        if isinstance(at, int | float):
            when = datetime.fromtimestamp(at / 1000, UTC).strftime("%H:%M:%S")
        latency = item.get("latencyMs")
        rows.append(
            {
                "at (UTC)": when,
                "flow": flows.get(str(item.get("friendlyId")), str(item.get("friendlyId") or "")),
                "trigger": item.get("trigger"),
                "destination": (item.get("connection") or {}).get("name"),
                "status": item.get("status"),
                "HTTP": item.get("responseStatus"),
                "attempts": item.get("attempts"),
                "latency (ms)": round(float(latency)) if isinstance(latency, int | float) else None,
                "error": item.get("error") or "",
            }
        )
    return rows
