"""``params`` as rows of key and value, and the ``utm_*`` campaign helpers.

The form edits params as a two-column table; the wire wants nested JSON. The rules match the CLI's
``--param KEY=VALUE``: a dotted key nests (``utm.campaign`` → ``{"utm": {"campaign": …}}``), and a value
that is JSON (a number, ``true``, ``[1, 2]``, ``{"a": 1}``) is sent as that JSON, anything else as text. One
addition: a quoted JSON string (``"01234"``) is sent as that text without the quotes, so numbers can be
sent as text.

Campaign parameters come in two styles (reference §2.1): the Cloud SDK nests them without the prefix and in
lower case (``params.utm.campaign``); the older Engage SDK flattened them (``params.utm_campaign``). Flows
written for one style do not see the other, so the helper asks which one to send.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from flowlab.errors import FieldProblem, RequestValidationError

__all__ = [
    "UTM_FIELDS",
    "UtmStyle",
    "merge_params",
    "params_to_rows",
    "rows_to_params",
    "utm_from_url",
    "utm_params",
]

UtmStyle = Literal["nested", "flat"]
#: The campaign parameters analytics tools put on landing-page URLs.
UTM_FIELDS = ("source", "medium", "campaign", "term", "content")


def _value(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(value, str):
        return value  # a quoted JSON string: the way to send "01234" as text
    return value if isinstance(value, dict | list | int | float | bool) else raw


def _text(value: Any) -> str:
    """A value for the editor that reads back as the same value (text that looks like JSON is quoted)."""
    if isinstance(value, str) and not isinstance(_value(value), str):
        return json.dumps(value, ensure_ascii=False)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def rows_to_params(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows of ``{"key": …, "value": …}`` into params; blank rows are skipped.

    Raises ``RequestValidationError`` (field ``params``) for a key that is used twice or that is both a
    value and a group (``utm`` and ``utm.campaign``).
    """
    params: dict[str, Any] = {}
    problems: list[FieldProblem] = []
    seen: set[str] = set()
    for row in rows:
        key = str(row.get("key") or "").strip()
        raw = row.get("value")
        raw_text = "" if raw is None else str(raw)
        if not key:
            if raw_text.strip():
                problems.append(FieldProblem("params", f"the value '{raw_text}' has no key"))
            continue
        parts = key.split(".")
        if key in seen:
            problems.append(FieldProblem("params", f"'{key}' is given twice"))
            continue
        if any(not p.strip() for p in parts):
            problems.append(
                FieldProblem("params", f"'{key}' has an empty part: write keys like utm.campaign")
            )
            continue
        seen.add(key)
        node = params
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(FieldProblem("params", f"'{key}' clashes with the value given for '{part}'"))
                break
            node = child
        else:
            if isinstance(node.get(parts[-1]), dict):
                problems.append(FieldProblem("params", f"'{key}' clashes with keys under '{key}.'"))
                continue
            node[parts[-1]] = _value(raw_text)
    if problems:
        raise RequestValidationError(problems)
    return params


def params_to_rows(params: Mapping[str, Any], prefix: str = "") -> list[dict[str, str]]:
    """Params as ``{"key", "value"}`` rows (nested objects become dotted keys), for the editor."""
    rows: list[dict[str, str]] = []
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(params_to_rows(value, prefix=f"{path}."))
        else:
            rows.append({"key": path, "value": _text(value)})
    return rows


def utm_from_url(url: str) -> dict[str, str]:
    """The ``utm_*`` parameters of a landing-page URL, by field: ``{"campaign": "spring_trail", …}``."""
    text = url.strip()
    query = urlsplit(text).query if "?" in text else text  # a full URL, or just its query string
    found: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=False):
        name = key.lower()
        if name.startswith("utm_") and name[4:] and value:
            found[name[4:]] = value
    return found


def utm_params(values: Mapping[str, str], style: UtmStyle = "nested") -> dict[str, Any]:
    """Campaign fields as params: ``{"utm": {"campaign": …}}`` (Cloud SDK) or ``{"utm_campaign": …}``."""
    clean = {k.lower().removeprefix("utm_"): v.strip() for k, v in values.items() if v and v.strip()}
    if style == "flat":
        return {f"utm_{k}": v for k, v in clean.items()}
    return {"utm": clean} if clean else {}


def merge_params(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` laid over ``base``; nested objects merge key by key."""
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_params(current, value)
        else:
            merged[key] = value
    return merged
