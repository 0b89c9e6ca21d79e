"""Choices for the form's pickers: channels, ISO 639 languages, ISO 4217 currencies, flows on a target.

Every picker keeps a value it does not know (typed by the user, or from a hand-edited persona) in its list,
so the form can show it and validation can say what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import pycountry

from flowlab.errors import FlowLabError
from flowlab.personalize.models import CHANNELS, currency_name, language_name
from flowlab.workbench.catalog import FlowSummary, flow_options
from flowlab.workbench.targets import Target, TargetStore
from ui.target import sandbox_admin

__all__ = [
    "CHANNEL_HELP",
    "channel_label",
    "currency_label",
    "currency_options",
    "flow_catalog",
    "friendly_id_options",
    "language_label",
    "language_options",
    "point_of_sale_options",
    "with_current",
]

_CHANNEL_NAMES = {
    "WEB": "website",
    "MOBILE_WEB": "mobile website",
    "MOBILE_APP": "native app",
    "EMAIL": "email",
    "SMS": "text message",
    "CALL_CENTER": "call centre agent",
    "PUSH_NOTIFICATION": "push notification",
}
CHANNEL_HELP = (
    "The touchpoint the guest is on. Personalize documents these channels: "
    + ", ".join(CHANNELS)
    + ". Flows and decision models can target or branch on it."
)
_FIRST_LANGUAGES = ("EN", "DE", "FR", "ES", "IT", "NL", "JA")
_FIRST_CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF", "AUD", "CAD")


def with_current(options: Sequence[str], current: object) -> list[str]:
    """``options`` plus the current value if it is not one of them (first, so it is visible)."""
    values = list(options)
    if isinstance(current, str) and current not in values:
        values.insert(1 if values and values[0] == "" else 0, current)
    return values


def channel_label(code: str) -> str:
    name = _CHANNEL_NAMES.get(code)
    return f"{code} — {name}" if name else f"{code} (not a documented channel)"


@cache
def language_options() -> tuple[str, ...]:
    """Two-letter ISO 639 codes in upper case (as Sitecore's examples write them), common ones first."""
    codes = sorted(str(lang.alpha_2).upper() for lang in pycountry.languages if hasattr(lang, "alpha_2"))
    return ("", *_FIRST_LANGUAGES, *(c for c in codes if c not in _FIRST_LANGUAGES))


def language_label(code: str) -> str:
    if not code:
        return "(not sent)"
    name = language_name(code)
    return f"{code} — {name}" if name else f"{code} (not an ISO 639 code)"


@cache
def currency_options() -> tuple[str, ...]:
    codes = sorted(str(c.alpha_3) for c in pycountry.currencies)
    return ("", *_FIRST_CURRENCIES, *(c for c in codes if c not in _FIRST_CURRENCIES))


def currency_label(code: str) -> str:
    if not code:
        return "(not sent)"
    name = currency_name(code)
    return f"{code} — {name}" if name else f"{code} (not an ISO 4217 code)"


def flow_catalog(target: Target) -> list[FlowSummary]:
    """The sandbox's flows (empty for tenants: Personalize has no public API to list them)."""
    if not target.is_sandbox:
        return []
    try:
        return [FlowSummary.from_admin(f) for f in sandbox_admin(target.base_url).flows()]
    except FlowLabError:
        return []


def friendly_id_options(target: Target, flows: Sequence[FlowSummary]) -> list[str]:
    """Sandbox: its flows and useful ``prefix*`` wildcards. Tenant: the friendlyIds called recently."""
    if flows:
        return flow_options(flows)
    if target.is_sandbox:
        return []
    try:
        return TargetStore().recent_friendly_ids(target.name)
    except FlowLabError:
        return []


def point_of_sale_options(target: Target) -> list[str]:
    """The sandbox's points of sale, or the tenant's default one."""
    if target.is_sandbox:
        try:
            return [str(p["name"]) for p in sandbox_admin(target.base_url).info().get("pointsOfSale", [])]
        except FlowLabError:
            return [target.point_of_sale] if target.point_of_sale else []
    return [target.point_of_sale] if target.point_of_sale else []
