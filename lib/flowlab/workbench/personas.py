"""Personas: a named guest with everything a call needs except the flow (identity, POS, channel…).

Marketers think in people ("a gold member in Munich on her phone"), not in request bodies, so the app
offers personas: the sandbox's demo personas out of the box (``flowlab.sandbox.personalize.demo.PERSONAS``), plus any the
user saves, in ``<data_dir>/personas.json``. A persona turns into a ``CallFlowRequest`` for any flow.

A persona has exactly one identity (browserId, email or identifiers), as callFlows requires (reference
§2.3). Other fields are checked when the request is built, so a hand-edited file with, say, a bad language
code still loads and the form shows what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowlab.config import load_settings
from flowlab.errors import ConfigError
from flowlab.jsonfile import JsonFile
from flowlab.personalize.models import CallFlowRequest, Identifier

__all__ = ["PERSONAS_FILE", "Persona", "PersonaError", "PersonaStore", "demo_personas", "starter_persona"]

PERSONAS_FILE = "personas.json"
_IDENTITY_KINDS = ("browserId", "email", "identifiers")


class PersonaError(ConfigError):
    """A persona cannot be used: no name, or not exactly one identity."""


def _opt(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return str(value) if value is not None and str(value).strip() else None


@dataclass(frozen=True)
class Persona:
    """A named guest: identity, point of sale, channel, language, currency and params."""

    name: str
    description: str = ""
    browser_id: str | None = None
    email: str | None = None
    identifier: Identifier | None = None
    point_of_sale: str = ""
    channel: str = "WEB"
    language: str | None = None
    currency: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    demo: bool = False

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise PersonaError("a persona needs a name")
        given = [k for k, v in zip(_IDENTITY_KINDS, self._identities(), strict=True) if v is not None]
        if len(given) != 1:
            found = " and ".join(given) if given else "none"
            raise PersonaError(
                f"persona '{self.name}' needs exactly one of browserId, email or identifiers (found {found})"
            )

    def _identities(self) -> tuple[object, object, object]:
        return (self.browser_id, self.email, self.identifier)

    @property
    def identity_kind(self) -> str:
        """``browserId``, ``email`` or ``identifiers``."""
        return next(k for k, v in zip(_IDENTITY_KINDS, self._identities(), strict=True) if v is not None)

    @property
    def identity_value(self) -> str:
        if self.identifier is not None:
            return f"{self.identifier.provider}:{self.identifier.id}"
        return str(self.browser_id or self.email)

    @property
    def summary(self) -> str:
        """One line for pickers: who, where, how."""
        value = self.identity_value
        if self.browser_id is not None and len(value) > 14:
            value = value[:8] + "…"
        parts = [
            f"{self.identity_kind} {value}",
            self.point_of_sale,
            self.channel,
            self.language,
            self.currency,
        ]
        return " · ".join(p for p in parts if p)

    def request_fields(self) -> dict[str, Any]:
        """The persona's callFlows fields (wire names), without ``clientKey`` and ``friendlyId``."""
        fields: dict[str, Any] = {"channel": self.channel, "pointOfSale": self.point_of_sale}
        if self.language is not None:
            fields["language"] = self.language
        if self.currency is not None:
            fields["currencyCode"] = self.currency
        if self.browser_id is not None:
            fields["browserId"] = self.browser_id
        if self.email is not None:
            fields["email"] = self.email
        if self.identifier is not None:
            fields["identifiers"] = self.identifier.model_dump()
        if self.params:
            fields["params"] = dict(self.params)
        return fields

    def to_request(self, *, client_key: str, friendly_id: str) -> CallFlowRequest:
        """This persona calling ``friendly_id``; ``RequestValidationError`` says what to fix."""
        return CallFlowRequest.build(clientKey=client_key, friendlyId=friendly_id, **self.request_fields())

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, **self.request_fields()}

    @classmethod
    def from_json(cls, data: Any, *, demo: bool = False) -> Persona:
        """Read a persona in wire names (``browserId``, ``pointOfSale``, ``currencyCode``…)."""
        if not isinstance(data, Mapping):
            raise PersonaError("a persona must be a JSON object")
        ident = data.get("identifiers")
        identifier = None
        if ident is not None:
            if not isinstance(ident, Mapping) or not ident.get("provider") or not ident.get("id"):
                raise PersonaError(f"persona '{data.get('name')}': identifiers must be {{provider, id}}")
            identifier = Identifier(provider=str(ident["provider"]), id=str(ident["id"]))
        params = data.get("params") or {}
        if not isinstance(params, Mapping):
            raise PersonaError(f"persona '{data.get('name')}': params must be a JSON object")
        return cls(
            name=str(data.get("name") or ""),
            description=str(data.get("description") or ""),
            browser_id=_opt(data, "browserId"),
            email=_opt(data, "email"),
            identifier=identifier,
            point_of_sale=str(data.get("pointOfSale") or ""),
            channel=str(data.get("channel") or "WEB"),
            language=_opt(data, "language"),
            currency=_opt(data, "currencyCode") or _opt(data, "currency"),
            params=dict(params),
            demo=demo,
        )

    @classmethod
    def from_request(cls, name: str, request: CallFlowRequest, description: str = "") -> Persona:
        """Save what the form sent as a persona (the flow is not part of it)."""
        body = request.to_body()
        for key in ("clientKey", "friendlyId"):
            body.pop(key, None)
        return cls.from_json({"name": name, "description": description, **body})


def demo_personas() -> list[Persona]:
    """The sandbox's demo guests (a gold member in Munich on mobile, a paid-search visitor, …)."""
    from flowlab.sandbox.personalize.demo import PERSONAS

    return [Persona.from_json(p, demo=True) for p in PERSONAS]


def starter_persona() -> Persona:
    """The demo persona a first visit to the sandbox starts with, so the first press of Call flow shows offers.

    Lena Vogel: a known gold-tier guest that every live demo flow answers with offers (``hero_banner*``
    gives her the VIP lounge). Only for the sandbox: the demo guests do not exist on a real tenant.
    """
    return demo_personas()[0]


class PersonaStore:
    """Saved personas in ``<data_dir>/personas.json``, plus the demo personas when asked."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.file = JsonFile(path if path is not None else load_settings().data_dir / PERSONAS_FILE)
        #: Entries of the file that could not be read, as messages (the rest still load).
        self.problems: list[str] = []

    @property
    def path(self) -> Path:
        return self.file.path

    def saved(self) -> list[Persona]:
        """The user's personas, in the order they were saved."""
        data = self.file.read() or {}
        entries = data.get("personas") if isinstance(data, dict) else None
        if data and not isinstance(entries, list):
            raise ConfigError(f"{self.path} must hold a JSON object with a 'personas' list")
        self.problems = []
        personas: list[Persona] = []
        for i, entry in enumerate(entries or []):
            try:
                personas.append(Persona.from_json(entry))
            except (PersonaError, ValueError) as exc:
                self.problems.append(f"persona #{i + 1} in {self.path} was skipped: {exc}")
        return personas

    def all(self, *, include_demo: bool = True) -> list[Persona]:
        """Demo personas first (when asked), then saved ones; a saved persona wins over a demo namesake."""
        saved = self.saved()
        names = {p.name for p in saved}
        demo = [p for p in demo_personas() if p.name not in names] if include_demo else []
        return [*demo, *saved]

    def get(self, name: str, *, include_demo: bool = True) -> Persona | None:
        return next((p for p in self.all(include_demo=include_demo) if p.name == name), None)

    def save(self, persona: Persona) -> None:
        """Add a persona, or replace the saved one with the same name."""
        personas = self.saved()
        for i, existing in enumerate(personas):
            if existing.name == persona.name:
                personas[i] = persona
                break
        else:
            personas.append(persona)
        self.file.write({"version": 1, "personas": [p.to_json() for p in personas]})

    def delete(self, name: str) -> None:
        personas = [p for p in self.saved() if p.name != name]
        self.file.write({"version": 1, "personas": [p.to_json() for p in personas]})
