"""What a sandbox holds, summarised for pickers and tables: flows, decision tables, guests, tracking.

The admin API answers with plain dicts in the reference's shapes; the app wants labels a marketer can read
("checkout_ab_test — Checkout incentive A/B test"), the ``*`` prefixes worth offering (a trailing ``*`` runs
the first live flow, in name order, whose conditions pass; reference §4.4), and flat rows for tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "FlowSummary",
    "VariantSummary",
    "decision_table_rows",
    "entry_text",
    "flow_options",
    "guest_rows",
    "tracking_rows",
    "wildcard_options",
]


@dataclass(frozen=True)
class VariantSummary:
    """One variant: its share of traffic and the buckets (1–120) that land on it."""

    name: str
    split: float
    is_control: bool
    low: int
    high: int

    @property
    def label(self) -> str:
        control = ", control" if self.is_control else ""
        return f"{self.name} ({self.split:g}%{control}, buckets {self.low}–{self.high})"


@dataclass(frozen=True)
class FlowSummary:
    """A flow as the sandbox's flow list describes it."""

    friendly_id: str
    name: str
    type: str
    subtype: str
    status: str
    live: bool
    description: str
    variants: tuple[VariantSummary, ...]

    @classmethod
    def from_admin(cls, data: Mapping[str, Any]) -> FlowSummary:
        """From one entry of ``GET /sandbox/flows``."""
        variants = []
        for v in data.get("variants") or []:
            low, high = (list(v.get("buckets") or []) + [0, 0])[:2]
            variants.append(
                VariantSummary(
                    name=str(v.get("name") or v.get("ref") or "?"),
                    split=float(v.get("split") or 0),
                    is_control=bool(v.get("isControl")),
                    low=int(low),
                    high=int(high),
                )
            )
        return cls(
            friendly_id=str(data.get("friendlyId") or ""),
            name=str(data.get("name") or ""),
            type=str(data.get("type") or ""),
            subtype=str(data.get("subtype") or ""),
            status=str(data.get("status") or ""),
            live=bool(data.get("live")),
            description=str(data.get("description") or ""),
            variants=tuple(variants),
        )

    @property
    def kind(self) -> str:
        """``Experiment`` or ``Experience`` (or the raw type for other flows)."""
        return self.subtype.capitalize() if self.subtype else self.type

    @property
    def label(self) -> str:
        return f"{self.friendly_id} — {self.name}" if self.name else self.friendly_id

    @property
    def details(self) -> str:
        """Kind, status and variants in one line."""
        state = self.status + ("" if self.live else ", does not run")
        count = len(self.variants)
        variants = ", ".join(v.label for v in self.variants)
        return f"{self.kind} · {state} · {count} variant{'s' if count != 1 else ''}: {variants}"


def wildcard_options(friendly_ids: Iterable[str]) -> list[str]:
    """``prefix*`` for every group of two or more friendlyIds sharing a prefix up to an ``_``.

    Includes a whole friendlyId when others extend it, as Personalize's numbered duplicates do
    (``product_recommender`` and ``product_recommender_2`` → ``product_recommender*``).
    """
    ids = sorted(set(friendly_ids))
    found: set[str] = set()
    for a, b in zip(ids, ids[1:], strict=False):
        common = _common_prefix(a, b)
        if common == a and b[len(a) :].startswith("_"):  # product_recommender, product_recommender_2
            found.add(a + "*")
            continue
        cut = common.rfind("_")
        if cut > 0:
            found.add(common[:cut] + "*")
    return sorted(found)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def flow_options(flows: Sequence[FlowSummary]) -> list[str]:
    """friendlyIds for a picker: each ``prefix*`` just before the flows it matches, runnable flows first."""
    live = sorted(f.friendly_id for f in flows if f.live)
    rest = sorted(f.friendly_id for f in flows if not f.live)
    options: list[str] = []
    wildcards = wildcard_options(live)
    for friendly_id in live:
        for w in wildcards:
            if friendly_id.startswith(w[:-1]) and w not in options:
                options.append(w)
        options.append(friendly_id)
    return options + rest


# ---- rows for tables ---------------------------------------------------------------------------------

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_NOT = re.compile(r"^not\s*\((.*)\)$", re.S)


def entry_text(entry: Any) -> str:
    """A decision-table input entry in words: ``-`` → any, ``"a","b"`` → a or b, ``not("x")`` → not x."""
    raw = str(entry).strip()
    if raw in ("", "-"):
        return "any"
    negated = _NOT.match(raw)
    inner = negated.group(1) if negated else raw
    values = _QUOTED.findall(inner)
    words = " or ".join(values) if values and _QUOTED.sub("", inner).replace(",", "").strip() == "" else inner
    return f"not {words}" if negated else words


def _when(epoch_ms: Any) -> str:
    if not isinstance(epoch_ms, int | float):
        return ""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _offer_label(ref: str, offers: Mapping[str, Mapping[str, Any]]) -> str:
    offer = offers.get(ref)
    if offer is None:
        return ref
    attributes = offer.get("attributes") or {}
    return str(attributes.get("title") or offer.get("name") or ref)


def decision_table_rows(
    node: Mapping[str, Any], offers: Iterable[Mapping[str, Any]] = ()
) -> list[dict[str, str]]:
    """A decision-table node as rows: ``#``, one column per input, one per output (offers by title)."""
    by_ref = {str(o.get("ref")): o for o in offers}
    inputs = [str(i.get("label") or i.get("expression") or "?") for i in node.get("inputs") or []]
    outputs = [str(o.get("name") or "?") for o in node.get("outputs") or []]
    rows = []
    for n, rule in enumerate(node.get("rules") or [], start=1):
        row = {"#": str(n)}
        for label, entry in zip(inputs, rule.get("inputEntries") or [], strict=False):
            row[label] = entry_text(entry)
        for name, entry in zip(outputs, rule.get("outputEntries") or [], strict=False):
            row[f"→ {name}"] = _offer_label(str(entry).strip('"'), by_ref)
        rows.append(row)
    return rows


def _extension(guest: Mapping[str, Any]) -> Mapping[str, Any]:
    for ext in guest.get("dataExtensions") or []:
        values = ext.get("values") if isinstance(ext, Mapping) and ext.get("name") == "ext" else None
        if isinstance(values, Mapping):
            return values
    return {}


def guest_rows(guests: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Guests as table rows: name, type, email, country, tier, orders, browser ids, ref."""
    rows = []
    for guest in guests:
        name = " ".join(str(guest.get(k)) for k in ("firstName", "lastName") if guest.get(k))
        rows.append(
            {
                "name": name or "(anonymous)",
                "type": guest.get("guestType") or "",
                "email": guest.get("email") or "",
                "country": guest.get("country") or "",
                "tier": _extension(guest).get("tier", ""),
                "orders": len(guest.get("orders") or []),
                "browserIds": ", ".join(str(b) for b in guest.get("browserIds") or []),
                "ref": guest.get("ref") or "",
            }
        )
    return rows


def tracking_rows(
    records: Iterable[Mapping[str, Any]], flows: Iterable[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """TRACKING records (reference §6.4) as rows: when, flow, variant, bucket, outcome, offers."""
    variants = {str(v.get("ref")): str(v.get("name")) for f in flows for v in f.get("variants") or []}
    rows = []
    for record in records:
        data = record.get("arbitraryData") or {}
        execution = data.get("flowExecution") or {}
        offers = ((execution.get("decision") or {}).get("output") or {}).get("offers") or []
        variant_ref = execution.get("flowVariantRef")
        rows.append(
            {
                "when (UTC)": _when(record.get("createdAt")),
                "flow": execution.get("flowFriendlyId") or "",
                "variant": variants.get(str(variant_ref), variant_ref or "—"),
                "bucket": execution.get("bucket"),
                "outcome": data.get("category") or "",
                "offers": len(offers),
                "channel": record.get("channel") or "",
                "pointOfSale": record.get("pointOfSale") or "",
                "execution": record.get("flowExecutionRef") or "",
            }
        )
    return rows
