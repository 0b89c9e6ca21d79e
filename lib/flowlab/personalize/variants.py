"""Tell which variant a response came from.

The API does not name the variant (reference §3.1): the body is what the variant's template printed. So we
detect it, in this order (design.md, "What variant means"):

1. a JSON path the user names (``variant``, ``decisionOffers[0].name``, ``$.results.decisionModelVariantName``);
2. a conventional top-level field (``variant``, ``variantId``, ``variantName``);
3. a fingerprint of what was offered (same offers → same label, readable when short);
4. a fingerprint of the normalised body.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from flowlab.personalize.offers import find_offers

__all__ = ["VariantGuess", "detect_variant", "json_path_get"]

_CONVENTIONAL = ("variant", "variantId", "variantName", "variant_name")
_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]|\[\"([^\"]*)\"\]|\['([^']*)'\]")
_MISSING = object()


@dataclass(frozen=True)
class VariantGuess:
    """A variant label and how we got it: ``path``, ``field``, ``offers``, ``body`` or ``none``."""

    label: str
    source: str


def json_path_get(data: Any, path: str) -> Any:
    """Follow a simple JSON path (``a.b[0].c``, optional leading ``$.``); a missing step gives ``_MISSING``."""
    path = path.strip().removeprefix("$").lstrip(".")
    node = data
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if match is None or match.end() == pos:
            return _MISSING
        pos = match.end()
        key, index, dq, sq = match.groups()
        if index is not None:
            if not isinstance(node, list) or int(index) >= len(node):
                return _MISSING
            node = node[int(index)]
        else:
            name = key if key is not None else (dq if dq is not None else sq)
            if not isinstance(node, dict) or name not in node:
                return _MISSING
            node = node[name]
    return node


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def detect_variant(body: Any, *, text: str = "", path: str | None = None) -> VariantGuess:
    """Best label for the variant behind a parsed body (``text`` is used when the body is not JSON)."""
    if path:
        value = json_path_get(body, path)
        if value is not _MISSING and value not in (None, ""):
            return VariantGuess(_label(value), "path")
    if isinstance(body, dict):
        for name in _CONVENTIONAL:
            value = body.get(name)
            if value not in (None, ""):
                return VariantGuess(_label(value), "field")
        if not body:
            return VariantGuess("(empty)", "body")
        if set(body) == {"message"}:
            return VariantGuess(f"({body['message']})", "body")
    offers = find_offers(body)
    if offers:
        keys = [o.title or o.key for o in offers]
        label = " + ".join(keys) if len(keys) <= 3 and sum(map(len, keys)) <= 60 else _digest(keys)
        return VariantGuess(label, "offers")
    if body is None and not text.strip():
        return VariantGuess("(no body)", "none")
    normalised = json.dumps(body, sort_keys=True, ensure_ascii=False) if body is not None else text.strip()
    return VariantGuess(_digest(normalised), "body")


def _digest(value: Any) -> str:
    raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "#" + hashlib.sha1(raw.encode()).hexdigest()[:8]
