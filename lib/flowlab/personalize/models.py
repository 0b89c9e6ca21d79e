"""The request model for ``POST /v2/callFlows`` (the answer is ``flowlab.http.FlowResponse``).

``CallFlowRequest`` is validated before anything is sent, with messages that name the field and say what to
fix: the API itself answers most mistakes with a bare 400 (reference §2.3). ``FlowResponse`` keeps the exact
status, headers and body text, because the body is whatever the flow's template printed (reference §3.1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import pycountry
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowlab.errors import FieldProblem, RequestValidationError

__all__ = [
    "CHANNELS",
    "FRIENDLY_ID_PATTERN",
    "CallFlowRequest",
    "Channel",
    "Identifier",
    "currency_name",
    "language_name",
]

Channel = Literal["WEB", "MOBILE_APP", "MOBILE_WEB", "EMAIL", "SMS", "CALL_CENTER", "PUSH_NOTIFICATION"]
#: The flow channels Personalize documents (reference §2.1, ``FlowChannel``).
CHANNELS: tuple[str, ...] = Channel.__args__  # type: ignore[attr-defined]

#: friendlyIds are ``a-z``, ``0-9`` and ``_``; a trailing ``*`` asks for a fuzzy match (reference §4.4).
FRIENDLY_ID_PATTERN = re.compile(r"^[a-z0-9_]+\*?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_IDENTITY_FIELDS = ("browserId", "email", "identifiers")


def language_name(code: str) -> str | None:
    """The English name of an ISO 639 code (two or three letters, any case), or None if unknown."""
    code = code.strip().lower()
    if len(code) == 2:
        lang = pycountry.languages.get(alpha_2=code)
    elif len(code) == 3:
        lang = pycountry.languages.get(alpha_3=code)
    else:
        return None
    return str(lang.name) if lang is not None else None


def currency_name(code: str) -> str | None:
    """The name of an ISO 4217 currency code, or None if unknown."""
    cur = pycountry.currencies.get(alpha_3=code.strip().upper()) if len(code.strip()) == 3 else None
    return str(cur.name) if cur is not None else None


class Identifier(BaseModel):
    """A guest identifier as callFlows takes it: one object ``{provider, id}`` (reference §2.1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str = Field(min_length=1)
    id: str = Field(min_length=1)


class CallFlowRequest(BaseModel):
    """One flow execution request, validated the way the form and the CLI need it.

    Build it with Python names (``friendly_id=``) or wire names (``friendlyId=``); ``to_body()`` gives the
    exact JSON body that is sent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    client_key: str = Field(alias="clientKey")
    friendly_id: str = Field(alias="friendlyId")
    channel: str = "WEB"
    point_of_sale: str = Field(default="", alias="pointOfSale")
    language: str | None = None
    currency_code: str | None = Field(default=None, alias="currencyCode")
    browser_id: str | None = Field(default=None, alias="browserId")
    email: str | None = None
    identifiers: Identifier | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("client_key")
    @classmethod
    def _client_key(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("clientKey is required: copy it from the tenant (or use the sandbox's key)")
        return value

    @field_validator("friendly_id")
    @classmethod
    def _friendly_id(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("friendlyId is required: the ID of a live experience or experiment")
        if not FRIENDLY_ID_PATTERN.match(value):
            hint = re.sub(r"[^a-z0-9_*]", "_", value.lower().replace(" ", "_")).rstrip("_")
            raise ValueError(
                f"'{value}' is not a friendlyId: use only a-z, 0-9 and _ (a trailing * matches by prefix), "
                f"for example '{hint}'"
            )
        return value

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        upper = value.strip().upper()
        if upper not in CHANNELS:
            raise ValueError(f"unknown channel '{value}': use one of {', '.join(CHANNELS)}")
        return upper

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        stripped = value.strip()
        if not stripped:
            raise ValueError("language is empty (the API answers 400): leave it out or use a code like EN")
        if language_name(stripped) is None:
            raise ValueError(f"'{value}' is not an ISO 639 language code: use two letters such as EN or de")
        return stripped  # sent as the user typed it: both EN and en appear in official examples

    @field_validator("currency_code")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if currency_name(value) is None:
            raise ValueError(f"'{value}' is not an ISO 4217 currency code: use three letters such as EUR")
        return value.strip().upper()

    @field_validator("browser_id", "email")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(f"'{value}' is not an email address")
        return value

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"params must be JSON (strings, numbers, lists, objects): {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_identity(self) -> CallFlowRequest:
        given = [f for f, v in zip(_IDENTITY_FIELDS, self._identities(), strict=True) if v is not None]
        if len(given) > 1:
            raise ValueError(f"use only one of browserId, email or identifiers (got {' and '.join(given)})")
        if not given:
            raise ValueError("give one of browserId, email or identifiers to say who the guest is")
        return self

    def _identities(self) -> tuple[object, object, object]:
        return (self.browser_id, self.email, self.identifiers)

    @classmethod
    def build(cls, **fields: Any) -> CallFlowRequest:
        """Validate ``fields`` (Python or wire names); raise ``RequestValidationError`` listing every problem."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(_problems(exc)) from None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CallFlowRequest:
        """Read a wire body (as sent to callFlows); unknown keys are reported, not dropped."""
        return cls.build(**dict(body))

    @property
    def identity(self) -> tuple[str, str]:
        """``(kind, value)``, e.g. ``("browserId", "…")`` or ``("identifiers", "BXLP:123")``."""
        if self.browser_id is not None:
            return ("browserId", self.browser_id)
        if self.email is not None:
            return ("email", self.email)
        assert self.identifiers is not None
        return ("identifiers", f"{self.identifiers.provider}:{self.identifiers.id}")

    def to_body(self) -> dict[str, Any]:
        """The exact JSON body for ``POST /v2/callFlows`` (wire names, empty fields left out)."""
        body: dict[str, Any] = {"clientKey": self.client_key, "channel": self.channel}
        if self.language is not None:
            body["language"] = self.language
        if self.currency_code is not None:
            body["currencyCode"] = self.currency_code
        body["pointOfSale"] = self.point_of_sale
        if self.browser_id is not None:
            body["browserId"] = self.browser_id
        if self.email is not None:
            body["email"] = self.email
        if self.identifiers is not None:
            body["identifiers"] = self.identifiers.model_dump()
        body["friendlyId"] = self.friendly_id
        if self.params:
            body["params"] = self.params
        return body


_WIRE_NAMES = {name: (info.alias or name) for name, info in CallFlowRequest.model_fields.items()}


def _problems(exc: ValidationError) -> list[FieldProblem]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field_name = ".".join(_WIRE_NAMES.get(loc[0], loc[0]) if i == 0 else p for i, p in enumerate(loc))
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "missing":
            message = f"{field_name} is required"
        elif err["type"] == "extra_forbidden":
            message = f"unknown field '{field_name}'; callFlows takes {', '.join(_WIRE_NAMES.values())}"
        elif err["type"] == "string_type":
            message = f"{field_name} must be text"
        elif not field_name:
            field_name = "identity" if "browserId" in message else ""
        problems.append(FieldProblem(field_name, message))
    return problems
