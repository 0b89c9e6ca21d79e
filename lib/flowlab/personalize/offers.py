"""Find offers in a flow response body, whatever shape the template gave it.

The callFlows body is the template's output (reference §3.1), so offers can sit under ``decisionOffers``,
``offers``, ``results``, or anywhere else. We walk the JSON and treat an object as an offer when it carries
offer-like attributes (a title or name plus an image, text, price or call to action), which covers Sitecore's
offer object (``{ref, name, attributes: {...}}``, §3.3) and flat shapes like ``{title, imageUrl}``.
Attribute names vary by tenant, so each card field has a list of synonyms, matched case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Offer", "find_offers"]

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "title": ("title", "headline", "heading", "name", "offername"),
    "text": ("text", "subtitle", "description", "body", "copy", "message"),
    "price": ("price", "amount", "value"),
    "currency": ("currency", "currencycode"),
    "image_url": ("imageurl", "image", "img", "imagesrc", "picture", "thumbnail"),
    "cta_text": ("ctatext", "buttontext", "cta", "calltoaction", "linktext"),
    "cta_url": ("ctaurl", "buttonurl", "linkurl", "url", "href", "link"),
    "badge": ("badge", "label", "tag"),
}
_SIGNALS = ("image_url", "text", "price", "cta_text", "cta_url")
_MAX_DEPTH = 8


@dataclass(frozen=True)
class Offer:
    """One offer as a card: values are plain text from the body; the UI escapes them before showing."""

    title: str
    ref: str = ""
    name: str = ""
    text: str = ""
    price: float | None = None
    currency: str = ""
    image_url: str = ""
    cta_text: str = ""
    cta_url: str = ""
    badge: str = ""
    path: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A stable identity for counting: the ref when present, else the title."""
        return self.ref or self.name or self.title


def _lookup(source: Mapping[str, Any]) -> dict[str, Any]:
    lowered = {str(k).lower().replace("_", "").replace("-", ""): v for k, v in source.items()}
    found: dict[str, Any] = {}
    for card_field, names in _SYNONYMS.items():
        for name in names:
            value = lowered.get(name)
            if value is not None and not isinstance(value, Mapping | list):
                found[card_field] = value
                break
    return found


def _as_offer(obj: Mapping[str, Any], path: str) -> Offer | None:
    attrs = obj.get("attributes")
    attributes: Mapping[str, Any] = attrs if isinstance(attrs, Mapping) else {}
    fields = {**_lookup(obj), **_lookup(attributes)}
    ref = obj.get("ref")
    name = obj.get("name")
    has_identity = "title" in fields or isinstance(name, str)
    looks_like_offer = any(s in fields for s in _SIGNALS) or (attributes and isinstance(ref, str))
    if not (has_identity and looks_like_offer):
        return None
    price = fields.get("price")
    try:
        price_value = float(price) if price is not None and not isinstance(price, bool) else None
    except (TypeError, ValueError):
        price_value = None
    title = fields.get("title", name)
    return Offer(
        title=str(title),
        ref=str(ref) if isinstance(ref, str | int) else "",
        name=str(name) if isinstance(name, str) else "",
        text=str(fields.get("text", "")),
        price=price_value,
        currency=str(fields.get("currency", "")),
        image_url=str(fields.get("image_url", "")),
        cta_text=str(fields.get("cta_text", "")),
        cta_url=str(fields.get("cta_url", "")),
        badge=str(fields.get("badge", "")),
        path=path,
        attributes=dict(attributes) if attributes else {k: v for k, v in obj.items() if k != "ref"},
    )


def _walk(node: Any, path: str, depth: int) -> Iterator[Offer]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, Mapping):
        offer = _as_offer(node, path or "$")
        if offer is not None:
            yield offer
            return
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]", depth + 1)


def find_offers(body: Any) -> list[Offer]:
    """Every offer-like object in a parsed JSON body, in document order."""
    return list(_walk(body, "", 0))
