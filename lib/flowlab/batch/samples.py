"""Guest samples: who a batch calls, read from a CSV, generated, or taken from the sandbox's demo guests.

A guest CSV (design.md) has one identity per row: a ``browserId`` column, or ``email``, or
``identifiers.provider`` with ``identifiers.id``. Optional ``channel``, ``pointOfSale``, ``language`` and
``currencyCode`` columns override the batch defaults for that row; ``params.<name>`` columns become params
(``params.utm.campaign`` nests; ``42``, ``3.5``, ``true`` become numbers and booleans, ``007`` stays text);
every other column is kept for analysis (segment, outcome…). Known column names match in any case; ``,``,
``;`` and tab separators are all accepted, as spreadsheets in different locales write them.

Rows are checked with ``CallFlowRequest``'s own rules, so a sample that reads clean sends clean requests.
A bad row does not stop the file: it is skipped and reported as a ``RowProblem``. **Row numbers** count guest
rows from 1, not counting the header, so row 17 sits on line 18 of the file (and in row 18 of a
spreadsheet); every message gives both. A file that cannot be used at all raises ``SampleError``.

**Limits.** A guest CSV may have at most ``MAX_COLUMNS`` (1,000) columns and ``MAX_FIELD_CHARS`` (65,536)
characters in one field; a file past either is refused with one line that names where. Quoting is read
strictly (RFC 4180): a quote that opens a field and is never closed, or text after a closing quote, is an
error naming the line where that quoted field starts, instead of silently swallowing the rows after it.
Reading costs time in proportion to the file's size: a row is worked on only as far as it has cells, so a
wide header cannot make every short row pay for all its columns.

**Edge samples.** A CSV whose header has ``identity.namespace`` and ``identity.id`` is an AEP Edge sample
(``GuestSample.provider == "edge"``): one primary identity per row (``Email``, ``ECID``, ``CRMID``, ``Phone``
or a custom namespace code), an optional ``eventType`` column, ``data.<path>`` and ``xdm.<path>`` columns
nested into the event's ``data`` and ``xdm`` (values read as for ``params.*``), and every other column kept
for analysis. Rows are checked with ``flowlab.edge.models.InteractRequest``'s rules (namespace code, email
format, the 64 KB body). In a ``GuestRow`` of an Edge sample, ``kind`` is the namespace, ``value`` the id,
``fields`` holds ``eventType`` and ``params`` holds ``{"data": …, "xdm": …}``.
``edge_sample_from_sandbox`` takes one from the sandbox's edge profiles.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import itertools
import logging
import random
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from flowlab.edge.models import InteractRequest
from flowlab.errors import FieldProblem, RequestValidationError, SampleError
from flowlab.personalize.models import CallFlowRequest

if TYPE_CHECKING:
    import pandas as pd

    from flowlab.admin import SandboxAdmin

__all__ = [
    "EDGE_IDENTITY_COLUMNS",
    "IDENTITY_COLUMNS",
    "IDENTITY_KINDS",
    "MAX_COLUMNS",
    "MAX_FIELD_CHARS",
    "OVERRIDE_FIELDS",
    "PROVIDERS",
    "GuestRow",
    "GuestSample",
    "RowProblem",
    "edge_sample_from_sandbox",
    "generate_guests",
    "guests_from_sandbox",
    "read_guests",
]

logger = logging.getLogger(__name__)

#: Request fields a sample column may set per row (wire names).
OVERRIDE_FIELDS: tuple[str, ...] = ("channel", "pointOfSale", "language", "currencyCode")
#: The ways to say who a guest is (``GuestRow.kind``), as callFlows names them.
IDENTITY_KINDS: tuple[str, ...] = ("browserId", "email", "identifiers")
#: The columns that say who a guest is; a file needs ``browserId``, ``email`` or both ``identifiers.*``.
IDENTITY_COLUMNS: tuple[str, ...] = ("browserId", "email", "identifiers.provider", "identifiers.id")
#: The columns that make a CSV an AEP Edge sample (one primary identity per row).
EDGE_IDENTITY_COLUMNS: tuple[str, ...] = ("identity.namespace", "identity.id")
#: What a sample is for (``GuestSample.provider``): callFlows guests or AEP Edge identities.
PROVIDERS: tuple[str, ...] = ("personalize", "edge")
_EVENT_TYPE = "eventType"
_EDGE_PARTS = ("data.", "xdm.")
#: XDM fields an Edge row sets through its own columns, never through ``xdm.*`` (InteractRequest's rule).
_OWN_XDM = {"identitymap": "identity.namespace/identity.id", "eventtype": "eventType", "timestamp": "",
            "_id": ""}  # fmt: skip
#: Columns a guest CSV may have: far more than any sample needs, few enough that a broken file is caught early.
MAX_COLUMNS = 1_000
#: Characters one field may hold (64 Ki): an ID, an email or a note fit; a runaway quoted field does not.
MAX_FIELD_CHARS = 65_536
_PARAMS = "params."
_KNOWN = {name.lower(): name for name in (*IDENTITY_COLUMNS, *OVERRIDE_FIELDS)}
_INT = re.compile(r"-?(?:0|[1-9]\d{0,14})")  # longer digit strings are IDs, not numbers: kept as text
_FLOAT = re.compile(r"-?(?:0|[1-9]\d{0,14})\.\d{1,15}")
_MAYBE_SCALAR = frozenset("-0123456789tfTF")
# Placeholders for the fields a sample does not carry, so rows can be checked before a batch exists.
_CHECK = {"clientKey": "sample-check", "friendlyId": "sample_check"}
_EMPTY: Mapping[str, Any] = {}


# ---- rows -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestRow:
    """One guest of a sample: its row number, identity, request overrides, params and analysis columns.

    ``kind`` is ``browserId``, ``email`` or ``identifiers``; for identifiers ``value`` is ``PROVIDER:ID``
    (split at the first colon, as ``CallFlowRequest.identity`` prints it).
    """

    row: int
    kind: str
    value: str
    fields: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def identity_fields(self) -> dict[str, Any]:
        """The identity as request fields: ``{"browserId": …}`` or ``{"identifiers": {provider, id}}``.

        Raises ``RequestValidationError`` for a kind that is not an identity or an empty value.
        """
        if self.kind not in IDENTITY_KINDS or not self.value:
            message = f"identity must be one of {', '.join(IDENTITY_KINDS)} with a value, not {self.kind!r}"
            raise RequestValidationError([FieldProblem("identity", message)])
        if self.kind == "identifiers":
            provider, _, ident = self.value.partition(":")
            return {"identifiers": {"provider": provider, "id": ident}}
        return {self.kind: self.value}

    def to_request(
        self, client_key: str, friendly_id: str, defaults: Mapping[str, str | None] | None = None
    ) -> CallFlowRequest:
        """The validated request for this guest: ``defaults`` (wire names), then this row's overrides."""
        fields: dict[str, Any] = {k: v for k, v in (defaults or _EMPTY).items() if v is not None}
        fields.update(self.fields)
        return CallFlowRequest.build(
            clientKey=client_key,
            friendlyId=friendly_id,
            params=dict(self.params),
            **fields,
            **self.identity_fields,
        )


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why a row was skipped: ``row`` counts guest rows from 1 (not the header); ``line`` is the file line."""

    row: int
    field: str
    message: str
    line: int = 0

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line else "")
        if self.field and self.field != "identity":
            where += f", column {self.field}"
        return f"{where}: {self.message}"


@dataclass
class GuestSample:
    """The guests of a batch (in row order), the rows that were skipped, and the analysis columns.

    ``provider`` says what the guests are for: ``personalize`` (callFlows) or ``edge`` (AEP Edge identities).
    """

    guests: list[GuestRow]
    problems: list[RowProblem] = field(default_factory=list)
    columns: tuple[str, ...] = ()
    source: str = ""
    provider: str = "personalize"

    def __len__(self) -> int:
        return len(self.guests)

    def __iter__(self) -> Iterator[GuestRow]:
        return iter(self.guests)

    @cached_property
    def fingerprint(self) -> str:
        """A digest of every guest row (identity, overrides, params, extras): a resume must match it."""
        digest = hashlib.sha256()
        for guest in self.guests:
            record = (guest.row, guest.kind, guest.value, guest.fields, guest.params, guest.extra)
            digest.update(orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))
        return digest.hexdigest()[:32]

    def header(self) -> list[str]:
        """The CSV header that ``to_csv`` writes: identity, overrides, flattened params, then extras."""
        if self.provider == "edge":
            return self._edge_header()
        kinds: set[str] = set()
        overrides: set[str] = set()
        params: dict[str, None] = {}
        for guest in self.guests:
            kinds.add(guest.kind)
            overrides.update(guest.fields)
            params.update(dict.fromkeys(_flatten(guest.params)))
        identity = [
            c
            for c in IDENTITY_COLUMNS
            if c in kinds or (c.startswith("identifiers") and "identifiers" in kinds)
        ]
        extras = [c for c in self.columns if c not in _KNOWN.values()]
        return [
            *identity,
            *(f for f in OVERRIDE_FIELDS if f in overrides),
            *(_PARAMS + p for p in params),
            *extras,
        ]

    def _edge_header(self) -> list[str]:
        event_type = any(_EVENT_TYPE in g.fields for g in self.guests)
        nested: dict[str, None] = {}
        for guest in self.guests:
            nested.update(dict.fromkeys(_flatten(guest.params)))
        extras = [c for c in self.columns if c not in (*EDGE_IDENTITY_COLUMNS, _EVENT_TYPE)]
        return [*EDGE_IDENTITY_COLUMNS, *([_EVENT_TYPE] if event_type else []), *nested, *extras]

    def records(self) -> Iterator[dict[str, Any]]:
        """Each guest as a flat ``{column: value}`` dict, in the layout of ``header()``."""
        if self.provider == "edge":
            for guest in self.guests:
                record: dict[str, Any] = {"identity.namespace": guest.kind, "identity.id": guest.value}
                record.update(guest.fields)
                record.update(_flatten(guest.params))
                record.update(guest.extra)
                yield record
            return
        for guest in self.guests:
            record = _flatten(guest.identity_fields)  # identifiers -> identifiers.provider, identifiers.id
            record.update(guest.fields)
            record.update({_PARAMS + k: v for k, v in _flatten(guest.params).items()})
            record.update(guest.extra)
            yield record

    def to_csv(self, path: str | Path) -> Path:
        """Write the sample as a guest CSV (UTF-8) that ``read_guests`` reads back to the same rows."""
        path = Path(path)
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=self.header(), extrasaction="ignore")
            writer.writeheader()
            for record in self.records():
                writer.writerow({k: _cell(v) for k, v in record.items()})
        return path

    def to_dataframe(self) -> pd.DataFrame:
        """The sample as a table (one row per guest, a ``row`` column first), for previews."""
        import pandas as pd

        header = self.header()
        frame = pd.DataFrame.from_records(list(self.records()), columns=header)
        frame.insert(0, "row", [g.row for g in self.guests])
        return frame


# ---- checking rows with the request model's rules --------------------------------------------------------


class _Checker:
    """Checks rows with ``CallFlowRequest``: identity and params per row, overrides once per combination."""

    def __init__(self) -> None:
        self._combos: dict[tuple[tuple[str, str], ...], list[FieldProblem]] = {}

    def problems(self, identity: Mapping[str, Any], fields: Mapping[str, str]) -> list[FieldProblem]:
        """Every problem of one row: its identity, then its overrides (from the cache).

        Params are not checked here: cells parsed by ``_scalar`` are JSON by construction, and that is all
        the model asks of params; skipping them halves the cost of reading a large file.
        """
        return self._check(**_CHECK, **identity) + (self.combo(fields) if fields else [])

    def combo(self, fields: Mapping[str, str]) -> list[FieldProblem]:
        """Problems of one combination of override fields (channel, pointOfSale, language, currencyCode)."""
        key = tuple(sorted(fields.items()))
        found = self._combos.get(key)
        if found is None:
            found = self._combos[key] = self._check(**_CHECK, browserId="check", **fields)
        return found

    @staticmethod
    def _check(**request: Any) -> list[FieldProblem]:
        try:
            CallFlowRequest.build(**request)
        except RequestValidationError as exc:
            return exc.problems
        return []


def _scalar(text: str) -> Any:
    """A cell as a value: numbers and booleans when clearly so, otherwise the text; empty is None."""
    text = text.strip()
    if not text:
        return None
    if text[0] not in _MAYBE_SCALAR:
        return text
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _nest(pairs: Iterable[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for path, value in pairs:
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return params


# ---- reading a CSV ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """What each column of a guest CSV means, worked out once from the header."""

    identity: dict[str, int]
    overrides: dict[str, int]
    params: list[tuple[tuple[str, ...], int]]
    extras: list[tuple[str, int]]
    width: int
    names: tuple[str, ...]
    provider = "personalize"

    @cached_property
    def _param_ends(self) -> list[int]:
        return [i for _, i in self.params]

    @cached_property
    def _extra_ends(self) -> list[int]:
        return [i for _, i in self.extras]

    @cached_property
    def _named_end(self) -> int:
        """One past the last identity or override column: how far a short row is padded."""
        return max([*self.identity.values(), *self.overrides.values()], default=-1) + 1

    @classmethod
    def from_header(cls, header: Sequence[str], name: str) -> _Layout:
        if len(header) > MAX_COLUMNS:
            raise SampleError(
                f"{name}: line 1: {len(header):,} columns; a guest sample may have at most {MAX_COLUMNS:,}"
            )
        _check_field_sizes(header, None, name, "line 1")
        names = [cell.strip().lstrip("\ufeff") or f"column_{i + 1}" for i, cell in enumerate(header)]
        seen: set[str] = set()
        identity: dict[str, int] = {}
        overrides: dict[str, int] = {}
        params: list[tuple[tuple[str, ...], int]] = []
        extras: list[tuple[str, int]] = []
        for index, column in enumerate(names):
            canonical = _KNOWN.get(column.lower(), column)
            if canonical.lower() in seen:
                raise SampleError(f"{name}: column '{column}' appears twice in the header; keep one")
            seen.add(canonical.lower())
            if canonical in IDENTITY_COLUMNS:
                identity[canonical] = index
            elif canonical in OVERRIDE_FIELDS:
                overrides[canonical] = index
            elif canonical.lower().startswith(_PARAMS):
                path = tuple(canonical[len(_PARAMS) :].split("."))
                if not all(path):
                    raise SampleError(
                        f"{name}: column '{column}' needs a param name, e.g. params.utm.campaign"
                    )
                params.append((path, index))
            else:
                extras.append((column, index))
        _check_params(params, name)
        layout = cls(identity, overrides, params, extras, len(names), tuple(names))
        layout.check_identity(name, names)
        return layout

    def check_identity(self, name: str, names: Sequence[str]) -> None:
        ids = self.identity
        if ("identifiers.provider" in ids) != ("identifiers.id" in ids):
            have = "identifiers.provider" if "identifiers.provider" in ids else "identifiers.id"
            missing = "identifiers.id" if have == "identifiers.provider" else "identifiers.provider"
            raise SampleError(
                f"{name}: has a {have} column but no {missing} column; add it (they go together)"
            )
        if not ids:
            found = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
            raise SampleError(
                f"{name}: no identity column. Add a browserId, email, or identifiers.provider + "
                f"identifiers.id column to the header (found: {found or 'nothing'})"
            )

    def row(
        self, number: int, cells: Sequence[str], checker: _Checker, line: int
    ) -> GuestRow | list[RowProblem]:
        """One data row as a guest, or its problems. A row shorter than the header is not padded to the
        header's width (that made reading O(rows x columns)): it is padded only up to the last identity
        or override column, and its missing params and sample columns are left out."""
        count = len(cells)
        params, extras = self.params, self.extras
        if count < self.width:
            if count < self._named_end:
                cells = [*cells, *[""] * (self._named_end - count)]
            params = params[: bisect.bisect_left(self._param_ends, count)]
            extras = extras[: bisect.bisect_left(self._extra_ends, count)]
        elif count > self.width and any(c.strip() for c in cells[self.width :]):
            message = f"has {count} values but the header has {self.width} columns (a stray separator?)"
            return [RowProblem(number, "", message, line)]
        identity: dict[str, Any] = {}
        for column in ("browserId", "email"):
            if column in self.identity and (value := cells[self.identity[column]].strip()):
                identity[column] = value
        if "identifiers.id" in self.identity:
            provider = cells[self.identity["identifiers.provider"]].strip()
            ident = cells[self.identity["identifiers.id"]].strip()
            if provider or ident:
                identity["identifiers"] = {"provider": provider, "id": ident}
        fields = {f: v for f, i in self.overrides.items() if (v := cells[i].strip())}
        nested = _nest((path, v) for path, i in params if (v := _scalar(cells[i])) is not None)
        problems = checker.problems(identity, fields)
        if problems:
            return [RowProblem(number, p.field, p.message, line) for p in problems]
        extra = {column: _scalar(cells[i]) for column, i in extras}
        return _guest_row(number, identity, fields, nested, extra)


class _EdgeLayout:
    """What each column of an Edge sample means (identity, eventType, ``data.*``/``xdm.*``, extras)."""

    provider = "edge"

    def __init__(self, header: Sequence[str], name: str) -> None:
        if len(header) > MAX_COLUMNS:
            raise SampleError(
                f"{name}: line 1: {len(header):,} columns; a guest sample may have at most {MAX_COLUMNS:,}"
            )
        _check_field_sizes(header, None, name, "line 1")
        names = [cell.strip().lstrip("\ufeff") or f"column_{i + 1}" for i, cell in enumerate(header)]
        known = {c.lower(): c for c in (*EDGE_IDENTITY_COLUMNS, _EVENT_TYPE)}
        seen: set[str] = set()
        self.named: dict[str, int] = {}
        self.nested: list[tuple[tuple[str, ...], int]] = []
        self.extras: list[tuple[str, int]] = []
        for index, column in enumerate(names):
            lowered = column.lower()
            if lowered in seen:
                raise SampleError(f"{name}: column '{column}' appears twice in the header; keep one")
            seen.add(lowered)
            if lowered in known:
                self.named[known[lowered]] = index
            elif lowered.startswith(_EDGE_PARTS):
                head, _, rest = column.partition(".")
                path = (head.lower(), *rest.split("."))
                if not all(path):
                    raise SampleError(
                        f"{name}: column '{column}' needs a field name, e.g. data.cart.value or "
                        "xdm.commerce.order.priceTotal"
                    )
                own = _OWN_XDM.get(path[1].lower()) if head.lower() == "xdm" else None
                if own is not None:
                    instead = f"use the {own} column" if own else "Flow Lab sets it for every event"
                    raise SampleError(f"{name}: column '{column}' cannot set {path[1]}: {instead}")
                self.nested.append((path, index))
            else:
                self.extras.append((column, index))
        _check_params(self.nested, name, prefix="")
        self.width = len(names)
        self.names = tuple(names)

    def row(
        self, number: int, cells: Sequence[str], checker: object, line: int
    ) -> GuestRow | list[RowProblem]:
        """One data row as an Edge identity, or its problems (each naming its column)."""
        if len(cells) > self.width and any(c.strip() for c in cells[self.width :]):
            message = f"has {len(cells)} values but the header has {self.width} columns (a stray separator?)"
            return [RowProblem(number, "", message, line)]

        def cell(index: int) -> str:
            return cells[index].strip() if index < len(cells) else ""

        namespace = cell(self.named["identity.namespace"])
        ident = cell(self.named["identity.id"])
        missing = [c for c, v in (("identity.namespace", namespace), ("identity.id", ident)) if not v]
        if missing:
            what = " and ".join(missing)
            example = (
                "e.g. Email, ECID or CRMID" if "identity.namespace" in missing else "the identity's value"
            )
            return [RowProblem(number, missing[0], f"{what} is empty: fill it in ({example})", line)]
        fields = {}
        if _EVENT_TYPE in self.named and (event_type := cell(self.named[_EVENT_TYPE])):
            fields[_EVENT_TYPE] = event_type
        nested = _nest(
            (p, v) for p, i in self.nested if i < len(cells) and (v := _scalar(cells[i])) is not None
        )
        try:
            InteractRequest.build(
                identity=(namespace, ident),
                event_type=fields.get(_EVENT_TYPE),
                data=nested.get("data") or {},
                xdm=nested.get("xdm") or {},
                timestamp=None,
            )
        except RequestValidationError as exc:
            return [
                RowProblem(number, _edge_column(p.field, p.message), p.message, line) for p in exc.problems
            ]
        extra = {column: _scalar(cells[i]) for column, i in self.extras if i < len(cells)}
        return GuestRow(number, namespace, ident, fields or _EMPTY, nested or _EMPTY, extra or _EMPTY)


def _edge_column(wire: str, message: str) -> str:
    """The CSV column a problem of ``InteractRequest`` (named by its wire field) comes from."""
    if "identityMap" in wire:
        return "identity.namespace" if "namespace" in message else "identity.id"
    if wire.endswith("eventType"):
        return _EVENT_TYPE
    if wire.startswith(("event.data", "event.xdm")):
        return wire.removeprefix("event.")
    return wire


def _layout_for(header: Sequence[str], name: str) -> _Layout | _EdgeLayout:
    """An Edge layout when the header has ``identity.namespace`` and ``identity.id``, else callFlows'."""
    lowered = {cell.strip().lstrip("\ufeff").lower() for cell in header}
    edge = [c for c in EDGE_IDENTITY_COLUMNS if c in lowered]
    if len(edge) == 2:
        return _EdgeLayout(header, name)
    if edge:
        other = EDGE_IDENTITY_COLUMNS[1 - EDGE_IDENTITY_COLUMNS.index(edge[0])]
        raise SampleError(f"{name}: has an {edge[0]} column but no {other} column; add it (they go together)")
    return _Layout.from_header(header, name)


def _check_params(params: Sequence[tuple[tuple[str, ...], int]], name: str, prefix: str = _PARAMS) -> None:
    paths = {path for path, _ in params}
    for path in paths:
        for depth in range(1, len(path)):
            if path[:depth] in paths:
                parent, child = ".".join(path[:depth]), ".".join(path)
                raise SampleError(
                    f"{name}: columns {prefix}{parent} and {prefix}{child} conflict; keep one of them"
                )


def _guest_row(
    number: int,
    identity: Mapping[str, Any],
    fields: Mapping[str, str],
    params: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> GuestRow:
    ((kind, value),) = identity.items()
    if kind == "identifiers":
        value = f"{value['provider']}:{value['id']}"
    return GuestRow(number, kind, str(value), fields or _EMPTY, params or _EMPTY, extra or _EMPTY)


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


@contextmanager
def _open_text(source: str | Path | IO[str] | IO[bytes]) -> Iterator[tuple[IO[str], str]]:
    """A text stream over ``source`` (UTF-8, BOM or not), after refusing what is clearly not a CSV."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise SampleError(f"{path}: no such file; give the path of a guest CSV")
        with path.open("rb") as raw:
            _refuse_binary(raw.peek(4096)[:4096], str(path))
            with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
                yield text, str(path)
        return
    name = str(getattr(source, "name", "") or "guest sample")
    probe = source.read(0)
    if isinstance(probe, bytes):
        binary: IO[bytes] = source  # type: ignore[assignment]
        if binary.seekable():
            start = binary.tell()
            _refuse_binary(binary.read(4096), name)
            binary.seek(start)
        yield io.TextIOWrapper(binary, encoding="utf-8-sig", newline=""), name
    else:
        yield source, name  # type: ignore[misc]


def _refuse_binary(head: bytes, name: str) -> None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SampleError(f"{name}: is UTF-16 text; save it as 'CSV UTF-8 (comma delimited)' instead")
    if head.startswith(b"PK\x03\x04") or b"\x00" in head:
        raise SampleError(
            f"{name}: is not a CSV file (it looks binary, e.g. an Excel .xlsx); save it as CSV UTF-8"
        )


def read_guests(source: str | Path | IO[str] | IO[bytes]) -> GuestSample:
    """Read a guest CSV (a path, or an open text or binary file) into a ``GuestSample``.

    Rows are streamed and checked as they are read (100,000 rows take a few seconds); bad rows are
    skipped and listed in ``problems``. Raises ``SampleError`` for a file that cannot be used at all.
    """
    with _open_text(source) as text:
        stream, name = text
        try:
            return _read(stream, name)
        except UnicodeDecodeError as exc:
            raise SampleError(
                f"{name}: is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as 'CSV UTF-8'"
            ) from None


def _read(stream: IO[str], name: str) -> GuestSample:
    first = stream.readline()
    if not first.strip().lstrip("\ufeff"):
        raise SampleError(f"{name}: is empty; the first line must be a header such as 'browserId,segment'")
    if first.lstrip("\ufeff").lstrip()[:1] in ("{", "["):
        raise SampleError(
            f"{name}: looks like JSON, not CSV; give a CSV with a header line such as 'email,segment'"
        )
    delimiter = _sniff_delimiter(first)
    held: list[str] = []  # the physical lines of the record being read, for messages about quotes
    reader = csv.reader(_holding(first, stream, held), delimiter=delimiter, strict=True)
    number = 0
    layout: _Layout | _EdgeLayout | None = None
    try:
        layout = _layout_for(next(reader), name)
        checker = _Checker()
        guests: list[GuestRow] = []
        problems: list[RowProblem] = []
        held.clear()
        for cells in reader:
            lines = len(held)  # a quoted field may span lines: the record starts on the first of them
            fits = lines == 1 and len(held[0]) <= MAX_FIELD_CHARS  # then no cell can be over the cap
            held.clear()
            if not any(c.strip() for c in cells):
                continue
            number += 1
            line = reader.line_num - lines + 1
            if not fits:
                _check_field_sizes(cells, layout.names, name, f"row {number} (line {line})")
            result = layout.row(number, cells, checker, line)
            if isinstance(result, GuestRow):
                guests.append(result)
            else:
                problems.extend(result)
    except csv.Error as exc:
        raise SampleError(
            _csv_problem(exc, name, layout, number + 1, reader.line_num, held, delimiter)
        ) from None
    if number == 0:
        raise SampleError(f"{name}: has a header but no guest rows; add one row per guest")
    return GuestSample(guests, problems, tuple(c for c, _ in layout.extras), name, layout.provider)


def _holding(first: str, rest: IO[str], held: list[str]) -> Iterator[str]:
    """The file's lines for ``csv.reader``, each also appended to ``held`` (the reader's caller clears it
    after every record, so it holds the lines of the record being read)."""
    held.append(first)
    yield first
    for line in rest:
        held.append(line)
        yield line


def _check_field_sizes(cells: Sequence[str], names: Sequence[str] | None, name: str, where: str) -> None:
    """``SampleError`` for a cell over ``MAX_FIELD_CHARS`` (``names``: the header's, None for the header)."""
    if cells and max(map(len, cells)) > MAX_FIELD_CHARS:
        index, size = max(enumerate(map(len, cells)), key=lambda pair: pair[1])
        column = f", column {_column(names, index)}"
        raise SampleError(
            f"{name}: {where}{column}: a field of {size:,} characters; a field may have at most "
            f"{MAX_FIELD_CHARS:,}"
        )


def _csv_problem(
    exc: csv.Error,
    name: str,
    layout: _Layout | _EdgeLayout | None,
    row: int,
    line_num: int,
    held: Sequence[str],
    sep: str,
) -> str:
    """One line for a record ``csv.reader`` refused; for quoting, where the quoted field in question starts.

    ``row`` is the guest row being read, ``held`` that record's physical lines (ending at ``line_num``).
    """
    start = line_num - len(held) + 1
    where = f"row {row} (line {start})" if layout is not None else f"line {start}"
    text = str(exc)
    quoted = _quoted_field(held, sep)
    if quoted is not None:
        opened, index = start + quoted[0], quoted[1]
        where += f", column {_column(layout.names if layout else None, index)}"
        if "expected after" in text:
            return (
                f"{name}: {where}: the quoted field that starts on line {opened:,} has text after its "
                'closing quote: is a closing " missing? (Inside quotes, write a quote as "".)'
            )
        if "unexpected end of data" in text:
            return (
                f"{name}: {where}: the quoted field that starts on line {opened:,} is never closed; "
                'add the closing " or remove the opening one'
            )
        if "field limit" in text:
            return (
                f"{name}: {where}: the quoted field that starts on line {opened:,} runs on for over "
                f'{MAX_FIELD_CHARS:,} characters: is its closing " missing?'
            )
    if "field limit" in text:
        return (
            f"{name}: {where}: a field of over {MAX_FIELD_CHARS:,} characters; a field may have at most that"
        )
    return f"{name}, line {line_num}: not a readable CSV ({text})"


def _column(names: Sequence[str] | None, index: int) -> str:
    """A column for a message: its header name (shortened), else its position."""
    if names is None or index >= len(names):
        return f"{index + 1}"
    column = names[index]
    return column if len(column) <= 60 else column[:57] + "…"


def _quoted_field(lines: Sequence[str], sep: str) -> tuple[int, int] | None:
    """In a record ``csv.reader`` refused, the quoted field at fault: (line offset where it opens, field
    index). That is the first one with text after its closing quote, else one still open at the end.

    Scans like the reader (RFC 4180: a quote opens a field only at its start; ``""`` inside is a quote);
    it runs only on a refused record, so plain Python is fast enough.
    """
    opened: tuple[int, int] | None = None
    in_quotes, at_start, index = False, True, 0
    for offset, line in enumerate(lines):
        i, size = 0, len(line)
        while i < size:
            if in_quotes:
                j = line.find('"', i)
                if j < 0:
                    break  # the field goes on, on the next line
                if j + 1 < size and line[j + 1] == '"':
                    i = j + 2
                    continue
                in_quotes, at_start, i = False, False, j + 1
                if i < size and line[i] not in (sep, "\r", "\n"):
                    return opened  # text after the closing quote
                continue
            char = line[i]
            if char == '"' and at_start:
                in_quotes, opened = True, (offset, index)
            elif char == sep:
                at_start, index = True, index + 1
            else:
                at_start = char in "\r\n"
            i += 1
    return opened if in_quotes else None


# ---- synthetic and sandbox samples ----------------------------------------------------------------------

#: Language and currency of the sandbox's points of sale, used when ``generate_guests`` is not told.
_MARKETS: dict[str, tuple[str, str]] = {
    "lumen/de": ("DE", "EUR"),
    "lumen/uk": ("EN", "GBP"),
    "lumen/fr": ("FR", "EUR"),
    "lumen/us": ("EN", "USD"),
}
_TIER_MIX: dict[str, float] = {"none": 0.45, "bronze": 0.25, "silver": 0.18, "gold": 0.09, "platinum": 0.03}
_DEVICES = (("mobile", "desktop", "tablet"), (55, 35, 10))


def generate_guests(
    n: int,
    *,
    seed: int,
    channels: Sequence[str] = ("WEB", "MOBILE_WEB", "MOBILE_APP"),
    points_of_sale: Sequence[str] = tuple(_MARKETS),
    languages: Sequence[str] | None = None,
    campaigns: Sequence[str | None] = (None, None, "spring_trail", "run_club", "city_commuter"),
    tier_mix: Mapping[str, float] | None = None,
) -> GuestSample:
    """A synthetic sample of ``n`` new guests (fresh browserIds), the same for the same arguments and seed.

    Each guest gets a channel and point of sale (uniformly), a language (from ``languages``, or the
    point of sale's own for the sandbox's shops), a campaign (``None`` = none; it becomes
    ``params.utm.campaign``) and the analysis columns ``segment``, ``tier`` (drawn from ``tier_mix``),
    ``campaign`` and ``device``. Values are checked like a CSV's: a bad one raises ``SampleError``.
    """
    if n < 0:
        raise SampleError(f"n must be 0 or more, not {n}")
    mix = dict(tier_mix if tier_mix is not None else _TIER_MIX)
    if (
        not (channels and points_of_sale and campaigns)
        or min(mix.values(), default=-1) < 0
        or sum(mix.values()) <= 0
    ):
        raise SampleError(
            "channels, points_of_sale and campaigns need a value each, tier_mix positive weights"
        )
    rng = random.Random(seed)
    tiers, tier_weights = list(mix), list(itertools.accumulate(mix.values()))
    devices, device_weights = _DEVICES[0], list(itertools.accumulate(_DEVICES[1]))
    checker = _Checker()
    guests = []
    for row in range(1, n + 1):
        pos = rng.choice(points_of_sale)
        language, currency = _MARKETS.get(pos, ("EN", ""))
        fields = {"channel": rng.choice(channels), "pointOfSale": pos, "language": language}
        if languages:
            fields["language"] = rng.choice(languages)
        if currency:
            fields["currencyCode"] = currency
        campaign = rng.choice(campaigns)
        tier = rng.choices(tiers, cum_weights=tier_weights)[0]
        device = rng.choices(devices, cum_weights=device_weights)[0]
        problems = checker.combo(fields)
        if problems:
            raise SampleError(f"generate_guests: {problems[0].field}: {problems[0].message}")
        params = (
            {"utm": {"source": "newsletter", "medium": "email", "campaign": campaign}} if campaign else _EMPTY
        )
        segment = "member" if tier != "none" else ("campaign_visitor" if campaign else "visitor")
        extra = {"segment": segment, "tier": tier, "campaign": campaign, "device": device}
        browser_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        guests.append(GuestRow(row, "browserId", browser_id, fields, params, extra))
    return GuestSample(
        guests, [], ("segment", "tier", "campaign", "device"), f"generated(n={n}, seed={seed})"
    )


def guests_from_sandbox(admin: SandboxAdmin, n: int) -> GuestSample:
    """The sandbox's first ``n`` demo guests (personas first), with their attributes as analysis columns.

    Each is called by its first browserId (else email, else first identifier), at its country's point of
    sale and language, so flows see the guest's real data (tier, orders…). Fewer if the sandbox has fewer.
    """
    markets = {p.get("market"): p for p in admin.info().get("pointsOfSale", [])}
    checker = _Checker()
    guests: list[GuestRow] = []
    problems: list[RowProblem] = []
    offset, columns = 0, {"guestRef": None, "guestType": None, "country": None, "city": None, "orders": None}
    while len(guests) + len(problems) < n:
        page = admin.guests(limit=min(1000, n - len(guests) - len(problems)), offset=offset)
        items = page.get("items", [])
        if not items:
            break
        offset += len(items)
        for item in items:
            number = len(guests) + len(problems) + 1
            identity = _sandbox_identity(item)
            market = markets.get(item.get("country"), {})
            fields = {
                k: str(v)
                for k, v in (("pointOfSale", market.get("name")), ("language", market.get("language")))
                if v
            }
            extra = _sandbox_extra(item)
            columns.update(dict.fromkeys(extra))
            found = checker.problems(identity, fields)
            if found:
                problems.extend(RowProblem(number, p.field, p.message) for p in found)
            else:
                guests.append(_guest_row(number, identity, fields, {}, extra))
    if len(guests) < n:
        logger.info("the sandbox has %d guests; asked for %d", len(guests), n)
    return GuestSample(guests, problems, tuple(columns), f"sandbox guests (n={n})")


def _sandbox_identity(guest: Mapping[str, Any]) -> dict[str, Any]:
    if guest.get("browserIds"):
        return {"browserId": guest["browserIds"][0]}
    if guest.get("email"):
        return {"email": guest["email"]}
    identifiers = guest.get("identifiers") or []
    return {"identifiers": dict(identifiers[0])} if identifiers else {}


def _sandbox_extra(guest: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "guestRef": guest.get("ref"),
        "guestType": guest.get("guestType"),
        "country": guest.get("country"),
        "city": guest.get("city"),
        "orders": len(guest.get("orders") or []),
    }
    for extension in guest.get("dataExtensions") or []:
        values = extension.get("values") if isinstance(extension, Mapping) else None
        for key, value in (values or {}).items():
            if value is None or isinstance(value, str | int | float | bool):
                extra.setdefault(key, value)
    return extra


#: Profile attributes that make useful analysis columns of an Edge sample, by XDM path.
_EDGE_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "countryCode": ("homeAddress", "countryCode"),
    "loyaltyTier": ("loyalty", "tier"),
    "preferredCategory": ("_lumen", "preferredCategory"),
    "guestType": ("_lumen", "guestType"),
    "device": ("_lumen", "device"),
    "newsletter": ("_lumen", "newsletter"),
}
_EDGE_PAGE = 500  # the most GET /sandbox/edge/profiles gives in one page


def edge_sample_from_sandbox(
    base_url: str,
    *,
    limit: int = 5000,
    event_type: str | None = None,
    new_visitors: bool = True,
    seed: int = 0,
    admin_token: str | None = None,
) -> GuestSample:
    """An Edge sample of ``limit`` identities from the sandbox at ``base_url`` (``GET /sandbox/edge/profiles``).

    Each profile is called by its primary identity; its attributes become analysis columns (``countryCode``,
    ``loyaltyTier``, ``preferredCategory``, ``guestType``, ``device``, ``newsletter``) and ``profile`` is
    ``known``. The demo has 1,200 profiles: with ``new_visitors`` the rest of ``limit`` are first-time
    visitors (fresh ECIDs from ``seed``, ``profile`` = ``new``), whom only edge audiences on the event can
    qualify. ``event_type`` (e.g. ``commerce.checkouts``) goes on every row.
    """
    from flowlab.admin import SandboxAdmin

    if limit < 0:
        raise SampleError(f"limit must be 0 or more, not {limit}")
    fields = {_EVENT_TYPE: event_type} if event_type else _EMPTY
    columns = ("profile", *_EDGE_DIMENSIONS)
    guests: list[GuestRow] = []
    with SandboxAdmin(base_url=base_url, admin_token=admin_token) as admin:
        offset = 0
        while len(guests) < limit:
            page = admin.edge_profiles(limit=min(_EDGE_PAGE, limit - len(guests)), offset=offset)
            items = page.get("items") or []
            if not items:
                break
            offset += len(items)
            for item in items:
                identity = item.get("identity") or {}
                namespace, ident = identity.get("namespace"), identity.get("id")
                if not (isinstance(namespace, str) and isinstance(ident, str) and namespace and ident):
                    continue
                extra: dict[str, Any] = {"profile": "known"}
                attributes = item.get("attributes") or {}
                for column, path in _EDGE_DIMENSIONS.items():
                    extra[column] = _dig(attributes, path)
                guests.append(GuestRow(len(guests) + 1, namespace, ident, fields, _EMPTY, extra))
    if new_visitors and len(guests) < limit:
        rng = random.Random(seed)
        empty = dict.fromkeys(_EDGE_DIMENSIONS)
        while len(guests) < limit:
            ecid = str(rng.getrandbits(126)).zfill(38)  # an ECID is 38 digits
            guests.append(
                GuestRow(len(guests) + 1, "ECID", ecid, fields, _EMPTY, {"profile": "new", **empty})
            )
    source = f"sandbox edge profiles (n={limit}" + (f", {event_type}" if event_type else "") + ")"
    return GuestSample(guests, [], columns, source, "edge")


def _dig(node: Any, path: Sequence[str]) -> Any:
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node if node is None or isinstance(node, str | int | float | bool) else None
