"""Built-in mock systems, so imported connections run offline (#11).

Sitecore's demo export calls MaxMind (geo-IP), Azure Translator and Sitecore Send; Flow Lab never calls the
internet by default, so the sandbox answers those calls itself, in the shapes the real systems use:

* ``maxmind``: ``GET /geoip/v2.1/city/{ip}``: a GeoIP2 City answer (city, country, continent, location,
  subdivisions, traits), the same city for the same IP (a hash picks one of a few); ``me`` or an empty IP
  answers for a fixed documentation address; an invalid IP is a 400 ``IP_ADDRESS_INVALID`` and a private
  or loopback one a 400 ``IP_ADDRESS_RESERVED``.
* ``translator``: ``POST /translate?api-version=3.0&from=&to=`` with ``[{"text": ...}]``: Azure
  Translator's array ``[{"translations": [{"text", "to"}]}]``; a few phrases are known per language, other
  text comes back as ``[fr] text``.
* ``crm``: ``GET /customers/{id or email}``: a customer record derived from the id (tier, lifetime value).
* ``send`` (Sitecore Send / Moosend ``/v3/subscribers/{list}/subscribe.json``) and ``capture`` (any path,
  any method): record the delivery and answer ``{"Code": 0, "Error": null, "Context": {...}}`` (send) or
  ``{"status": "captured", "ref"}``; ``GET /sandbox/mocks/deliveries`` lists what was recorded, secrets
  masked.

The engine calls them in-process (an ASGI transport: no socket, no base URL); ``/sandbox/mocks/{system}/…``
serves the same answers over HTTP for a person with curl. Both honour the sandbox's latency and fault knobs
(``faults.py``), as the real systems would be slow or fail. The mocks are plain functions of the request:
no tenant state but the delivery log.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import time
import uuid
from collections import deque
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl

from flowlab.sandbox.faults import Knobs

__all__ = ["MAX_DELIVERIES", "MOCK_SYSTEMS", "MockResponse", "MockSystems"]

#: Deliveries the capture keeps (oldest dropped first).
MAX_DELIVERIES: Final = 1_000
#: The mock systems, by the name used in ``/sandbox/mocks/{name}/…``.
MOCK_SYSTEMS: Final = ("capture", "crm", "maxmind", "send", "translator")
_PREFIX: Final = "/sandbox/mocks"
_ME_IP: Final = "174.0.167.183"  # the demo connection's exampleValue

_CITIES: Final = (
    ("Calgary", "Alberta", "AB", "Canada", "CA", "North America", "NA", 51.0447, -114.0719, "America/Edmonton"),
    ("Copenhagen", "Capital Region", "84", "Denmark", "DK", "Europe", "EU", 55.6761, 12.5683, "Europe/Copenhagen"),
    ("Paris", "Île-de-France", "IDF", "France", "FR", "Europe", "EU", 48.8566, 2.3522, "Europe/Paris"),
    ("Berlin", "Land Berlin", "BE", "Germany", "DE", "Europe", "EU", 52.52, 13.405, "Europe/Berlin"),
    ("Austin", "Texas", "TX", "United States", "US", "North America", "NA", 30.2672, -97.7431, "America/Chicago"),
    ("Sydney", "New South Wales", "NSW", "Australia", "AU", "Oceania", "OC", -33.8688, 151.2093, "Australia/Sydney"),
    ("São Paulo", "São Paulo", "SP", "Brazil", "BR", "South America", "SA", -23.5505, -46.6333, "America/Sao_Paulo"),
    ("Tokyo", "Tokyo", "13", "Japan", "JP", "Asia", "AS", 35.6762, 139.6503, "Asia/Tokyo"),
)  # fmt: skip

_PHRASES: Final = {
    "welcome to": {"fr": "Bienvenue à", "de": "Willkommen bei", "es": "Bienvenido a", "it": "Benvenuto a",
                   "nl": "Welkom bij", "pt": "Bem-vindo ao", "da": "Velkommen til", "ja": "ようこそ"},
    "welcome back to": {"fr": "Bon retour à", "de": "Willkommen zurück bei", "es": "Bienvenido de nuevo a",
                        "it": "Bentornato a", "nl": "Welkom terug bij", "pt": "Bem-vindo de volta ao",
                        "da": "Velkommen tilbage til", "ja": "おかえりなさい"},
    "welcome": {"fr": "Bienvenue", "de": "Willkommen", "es": "Bienvenido", "it": "Benvenuto", "nl": "Welkom",
                "pt": "Bem-vindo", "da": "Velkommen", "ja": "ようこそ"},
    "hello": {"fr": "Bonjour", "de": "Hallo", "es": "Hola", "it": "Ciao", "nl": "Hallo", "pt": "Olá",
              "da": "Hej", "ja": "こんにちは"},
}  # fmt: skip
_TIERS: Final = ("bronze", "silver", "gold", "platinum")


@dataclass
class MockResponse:
    """What a mock answers: status, JSON body, headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})

    def content(self) -> bytes:
        return json.dumps(self.body, ensure_ascii=False).encode()


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


class MockSystems:
    """The mock systems of one sandbox, with its knobs and its delivery log."""

    def __init__(self, knobs: Knobs | None = None) -> None:
        self.knobs = knobs or Knobs()
        self.deliveries: deque[dict[str, Any]] = deque(maxlen=MAX_DELIVERIES)

    def reset(self) -> None:
        self.deliveries.clear()

    async def handle(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> MockResponse:
        """Answer one request to ``/sandbox/mocks/{system}/…`` (the prefix may be left out)."""
        if path.startswith(_PREFIX):
            path = path[len(_PREFIX) :]
        system, _, rest = path.lstrip("/").partition("/")
        rest = "/" + rest
        method = method.upper()
        if system == "deliveries" and method == "GET":
            items = list(self.deliveries)
            return MockResponse(200, {"total": len(items), "items": items[::-1]})
        if system not in MOCK_SYSTEMS:
            return MockResponse(404, {"error": f"no mock system '{system}'", "systems": list(MOCK_SYSTEMS)})
        delay = self.knobs.delay_s()
        if delay:
            await asyncio.sleep(delay)
        fault = self.knobs.pick_fault()
        if fault == "hang":
            await asyncio.sleep(600)  # the caller's socket timeout ends it first
        if fault == "reset":
            raise ConnectionResetError("sandbox fault: connection reset")
        if fault in ("429", "500", "503"):
            return MockResponse(int(fault), {"error": "injected by the sandbox's --faults knob"})
        params = dict(parse_qsl(query, keep_blank_values=True))
        if system == "maxmind":
            return _maxmind(method, rest)
        if system == "translator":
            return _translator(method, rest, params, body)
        if system == "crm":
            return _crm(method, rest)
        return self._capture(system, method, rest, query, headers, body)

    def _capture(
        self, system: str, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> MockResponse:
        from flowlab.sandbox.personalize.connections import mask_headers, mask_url

        text = body.decode("utf-8", "replace")
        try:
            parsed: Any = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        ref = str(uuid.uuid4())
        self.deliveries.append(
            {
                "ref": ref,
                "system": system,
                "method": method,
                "path": mask_url(path + (f"?{query}" if query else "")),
                "headers": mask_headers(dict(headers)),
                "body": parsed if parsed is not None else text,
                "at": int(time.time() * 1000),
            }
        )
        if system == "send":
            data = parsed if isinstance(parsed, dict) else {}
            now = f"/Date({int(time.time() * 1000)})/"
            context = {"ID": ref, "Name": data.get("Name"), "Email": data.get("Email"), "CreatedOn": now,
                       "UpdatedOn": now, "UnsubscribedOn": None, "SubscribeType": 1,
                       "CustomFields": data.get("CustomFields") or []}  # fmt: skip
            return MockResponse(200, {"Code": 0, "Error": None, "Context": context})
        return MockResponse(200, {"status": "captured", "ref": ref})

    async def asgi(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        """The mocks as a plain ASGI app (the engine's in-process transport)."""
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        answer = await self.handle(
            scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"), headers,
            b"".join(chunks),
        )  # fmt: skip
        content = answer.content()
        raw = [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        raw.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        await send({"type": "http.response.body", "body": content})


def _maxmind(method: str, path: str) -> MockResponse:
    prefix = "/geoip/v2.1/city/"
    if method != "GET" or not (path.startswith(prefix) or path == prefix.rstrip("/")):
        return MockResponse(404, {"code": "PATH_NOT_FOUND", "error": f"the path {path} is not a valid route"})
    raw = path[len(prefix) :].strip("/")
    text = _ME_IP if raw in ("", "me") else raw
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return MockResponse(
            400, {"code": "IP_ADDRESS_INVALID", "error": f'The value "{text}" is not a valid IP address.'}
        )
    if address.is_private or address.is_loopback or address.is_reserved or address.is_link_local:
        return MockResponse(
            400,
            {"code": "IP_ADDRESS_RESERVED", "error": f"The IP address '{text}' is a reserved IP address."},
        )
    city, region, region_code, country, iso, continent, continent_code, lat, lon, zone = _CITIES[
        _hash("geo", text) % len(_CITIES)
    ]
    geo = _hash("geoname", city) % 9_000_000 + 1_000_000
    country_geo = {"geoname_id": _hash("geoname", iso) % 9_000_000, "iso_code": iso, "names": {"en": country}}
    network = f"{text}/32" if address.version == 4 else f"{text}/128"
    return MockResponse(
        200,
        {
            "city": {"geoname_id": geo, "names": {"en": city}},
            "continent": {"code": continent_code, "geoname_id": _hash("c", continent) % 9_000_000,
                          "names": {"en": continent}},
            "country": country_geo,
            "location": {"accuracy_radius": 20, "latitude": lat, "longitude": lon, "time_zone": zone},
            "registered_country": country_geo,
            "subdivisions": [{"geoname_id": geo + 1, "iso_code": region_code, "names": {"en": region}}],
            "traits": {"ip_address": text, "network": network},
        },
    )  # fmt: skip


def _translator(method: str, path: str, params: Mapping[str, str], body: bytes) -> MockResponse:
    if method != "POST" or path.rstrip("/") != "/translate":
        return MockResponse(
            404, {"error": {"code": 404001, "message": "The requested resource was not found."}}
        )
    targets = [t.strip().lower() for t in params.get("to", "").split(",") if t.strip()]
    if not targets:
        return MockResponse(400, {"error": {"code": 400036, "message": "The target language is not valid."}})
    try:
        items = json.loads(body.decode() or "null")
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return MockResponse(
            400, {"error": {"code": 400074, "message": "The body of the request is not valid JSON."}}
        )
    source = params.get("from", "").lower()
    answer = []
    for item in items:
        text = str(next((v for k, v in item.items() if k.lower() == "text"), ""))
        translations = [{"text": _translate(text, source, to), "to": to} for to in targets]
        entry: dict[str, Any] = {"translations": translations}
        if not source:
            entry = {"detectedLanguage": {"language": "en", "score": 1.0}, **entry}
        answer.append(entry)
    return MockResponse(200, answer)


def _translate(text: str, source: str, target: str) -> str:
    language = target.split("-")[0]
    if language == (source.split("-")[0] or "en"):
        return text
    known = _PHRASES.get(text.strip().lower(), {}).get(language)
    return known if known is not None else f"[{language}] {text}"


def _crm(method: str, path: str) -> MockResponse:
    prefix = "/customers/"
    key = path[len(prefix) :].strip("/") if path.startswith(prefix) else ""
    if method != "GET" or not key:
        return MockResponse(404, {"error": "use GET /sandbox/mocks/crm/customers/{id or email}"})
    h = _hash("crm", key.lower())
    email = key if "@" in key else f"customer{h % 100_000}@example.com"
    return MockResponse(
        200,
        {
            "id": key if "@" not in key else f"C{h % 1_000_000:06d}",
            "email": email,
            "tier": _TIERS[h % len(_TIERS)],
            "lifetimeValue": round((h % 500_000) / 100, 2),
            "ordersCount": h % 40,
            "newsletter": bool(h & 1),
        },
    )
