"""A PQL subset for audience rules (reference §5.5): parsed once into a small AST, evaluated with bounds.

Audience rules are tenant-supplied guest code, so nothing here is Python ``eval`` or a regular expression
built from the rule: the tokenizer is a hand-written scanner, the parser has caps on text size, node count,
nesting depth and literal length, and evaluation visits each node once per event at most (a ``CHAIN`` scans
the event history once, in order). ``matches()`` and ``like`` are refused, so no rule can backtrack.

The grammar (what §5.5's edge-eligible examples need, plus PQL's string functions):

    rule      := or
    or        := and ("or" and)*
    and       := not ("and" not)*
    not       := "not" not | "(" rule ")" | "true" | "false" | chain | insegment | test
    chain     := "CHAIN" "(" "xEvent" "," "timestamp" "," "[" step ("," step)* "]" ")"
    step      := NAME ":" "WHAT" "(" rule ")" "WHEN" "(" when ")"    # rule over the event: no CHAIN/inSegment
    when      := "today" | ("<" | "<=") NUMBER ("days" | "hours") "before" "now"
    insegment := "inSegment" "(" STRING ")"
    test      := path ("." method "(" [literal ["," BOOLEAN]] ")" | op literal)
    method    := equals | notEqualTo | contains | doesNotContain | startsWith | doesNotStartWith
                 | endsWith | doesNotEndWith | isNull | isNotNull | exists
    op        := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="

String functions take PQL's optional case-sensitivity flag (default true), so
``eventType.equals("commerce.checkouts", false)`` ignores case. ``CHAIN`` steps match events in order
(``C1`` after ``C0``), each inside its ``WHEN`` window relative to the evaluation time.

The AST is nested tuples of str/int/float/bool, so it pickles cheaply to a worker (``workers.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_RULE_CHARS",
    "Context",
    "PqlError",
    "Rule",
    "compile_payload",
    "evaluate",
    "parse",
    "rule_key",
]

MAX_RULE_CHARS: Final = 4096
MAX_NODES: Final = 256
MAX_DEPTH: Final = 24
MAX_LITERAL_CHARS: Final = 256
MAX_PATH_PARTS: Final = 12
MAX_CHAIN_STEPS: Final = 8
_DAY_MS: Final = 86_400_000
_HOUR_MS: Final = 3_600_000

_STRING_METHODS: Final = frozenset(
    {"equals", "notEqualTo", "contains", "doesNotContain", "startsWith", "doesNotStartWith", "endsWith",
     "doesNotEndWith"}
)  # fmt: skip
_NULL_METHODS: Final = frozenset({"isNull", "isNotNull", "exists"})
_REFUSED: Final = {
    "matches": "matches() (regular expressions) is not supported: use contains, startsWith or endsWith",
    "like": "like is not supported: use contains, startsWith or endsWith",
}
_OPS: Final = frozenset({"=", "==", "!=", "<", "<=", ">", ">="})
_KEYWORDS: Final = frozenset({"and", "or", "not", "true", "false"})

Node = tuple[Any, ...]


class PqlError(ValueError):
    """A rule that does not parse or breaks a cap; the message says where and what to fix."""


@dataclass(frozen=True)
class Rule:
    """A parsed rule: its AST and what the timing model needs to know about it without evaluating it."""

    text: str
    ast: Node
    segments: tuple[str, ...]  # audience ids it reads with inSegment
    has_events: bool  # contains a CHAIN
    max_window_ms: int  # the widest WHEN window (0 when there are no events)
    nodes: int


# ---- tokens --------------------------------------------------------------------------------------------

_PUNCT: Final = frozenset("()[],:.")


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    """(kind, value, position) tokens; kinds: name, str, num, op, punct, end. One pass, no regex."""
    out: list[tuple[str, Any, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c.isascii() and (c.isalpha() or c == "_"):
            j = i + 1
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] == "_"):
                j += 1
            out.append(("name", text[i:j], i))
            i = j
        elif c in "\"'":
            j, chars = i + 1, []
            while True:
                if j >= n:
                    raise PqlError(f"unterminated string starting at position {i}: close it with {c}")
                d = text[j]
                if d == "\\" and j + 1 < n:
                    chars.append(text[j + 1])
                    j += 2
                elif d == c:
                    break
                else:
                    chars.append(d)
                    j += 1
            value = "".join(chars)
            if len(value) > MAX_LITERAL_CHARS:
                raise PqlError(f"the string at position {i} is longer than {MAX_LITERAL_CHARS} characters")
            out.append(("str", value, i))
            i = j + 1
        elif c.isdigit() or (c == "-" and i + 1 < n and text[i + 1].isdigit()):
            j = i + 1
            while j < n and (text[j].isdigit() or text[j] == "."):
                j += 1
            raw = text[i:j]
            if len(raw) > 32 or raw.count(".") > 1 or raw.endswith("."):
                raise PqlError(f"bad number {raw!r} at position {i}")
            out.append(("num", float(raw) if "." in raw else int(raw), i))
            i = j
        elif c in "<>=!":
            op = text[i : i + 2] if text[i : i + 2] in _OPS else c
            if op not in _OPS:
                raise PqlError(f"unexpected {c!r} at position {i}: comparisons are = != < <= > >=")
            out.append(("op", op, i))
            i += len(op)
        elif c in _PUNCT:
            out.append(("punct", c, i))
            i += 1
        else:
            raise PqlError(f"unexpected character {c!r} at position {i}")
    out.append(("end", None, n))
    return out


# ---- parser --------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.nodes = 0
        self.segments: list[str] = []
        self.max_window = 0
        self.has_events = False

    # helpers
    def peek(self, ahead: int = 0) -> tuple[str, Any, int]:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> tuple[str, Any, int]:
        tok = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return tok

    def where(self, tok: tuple[str, Any, int]) -> str:
        return "the end of the rule" if tok[0] == "end" else f"{tok[1]!r} at position {tok[2]}"

    def expect(self, kind: str, value: Any = None, what: str = "") -> tuple[str, Any, int]:
        tok = self.take()
        if tok[0] != kind or (value is not None and tok[1] != value):
            raise PqlError(f"expected {what or value or kind}, found {self.where(tok)}")
        return tok

    def node(self, depth: int, *parts: Any) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise PqlError(f"the rule is too large: more than {MAX_NODES} terms")
        if depth > MAX_DEPTH:
            raise PqlError(f"the rule nests deeper than {MAX_DEPTH} levels")
        return tuple(parts)

    def is_word(self, word: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok[0] == "name" and tok[1] == word

    # grammar
    def rule(self, depth: int, in_event: bool) -> Node:
        if depth > MAX_DEPTH:
            raise PqlError(f"the rule nests deeper than {MAX_DEPTH} levels")
        parts = [self.conj(depth + 1, in_event)]
        while self.is_word("or"):
            self.take()
            parts.append(self.conj(depth + 1, in_event))
        return parts[0] if len(parts) == 1 else self.node(depth, "or", tuple(parts))

    def conj(self, depth: int, in_event: bool) -> Node:
        parts = [self.unary(depth + 1, in_event)]
        while self.is_word("and"):
            self.take()
            parts.append(self.unary(depth + 1, in_event))
        return parts[0] if len(parts) == 1 else self.node(depth, "and", tuple(parts))

    def unary(self, depth: int, in_event: bool) -> Node:
        if depth > MAX_DEPTH:
            raise PqlError(f"the rule nests deeper than {MAX_DEPTH} levels")
        tok = self.peek()
        if self.is_word("not"):
            self.take()
            return self.node(depth, "not", self.unary(depth + 1, in_event))
        if tok[0] == "punct" and tok[1] == "(":
            self.take()
            inner = self.rule(depth + 1, in_event)
            self.expect("punct", ")", "')'")
            return inner
        if self.is_word("true") or self.is_word("false"):
            self.take()
            return self.node(depth, "const", tok[1] == "true")
        if self.is_word("CHAIN") and self.peek(1)[1] == "(":
            if in_event:
                raise PqlError(f"CHAIN cannot be nested inside WHAT (position {tok[2]})")
            return self.chain(depth)
        if self.is_word("inSegment") and self.peek(1)[1] == "(":
            if in_event:
                raise PqlError(f"inSegment cannot be used inside WHAT (position {tok[2]})")
            self.take()
            self.expect("punct", "(", "'('")
            seg = self.expect("str", what="an audience id in quotes")[1]
            self.expect("punct", ")", "')'")
            self.segments.append(seg)
            return self.node(depth, "in", seg)
        if tok[0] == "name":
            return self.test(depth)
        raise PqlError(f"expected a condition, found {self.where(tok)}")

    def test(self, depth: int) -> Node:
        first = self.take()
        if first[1] in _KEYWORDS:
            raise PqlError(f"expected a field, found {self.where(first)}")
        parts = [first[1]]
        method: str | None = None
        while self.peek()[0] == "punct" and self.peek()[1] == ".":
            self.take()
            name = self.expect("name", what="a field or function name after '.'")
            if self.peek()[0] == "punct" and self.peek()[1] == "(":
                method = name[1]
                break
            parts.append(name[1])
            if len(parts) > MAX_PATH_PARTS:
                raise PqlError(f"the field path at position {first[2]} has more than {MAX_PATH_PARTS} parts")
        path = tuple(parts)
        if method is None:
            tok = self.peek()
            if tok[0] == "name" and tok[1] in _REFUSED:
                raise PqlError(_REFUSED[tok[1]])
            op = self.expect("op", what=f"a comparison or a function after {'.'.join(path)!r}")[1]
            value = self.literal()
            return self.node(depth, "cmp", path, "=" if op == "==" else op, value)
        if method in _REFUSED:
            raise PqlError(_REFUSED[method])
        self.expect("punct", "(", "'('")
        if method in _NULL_METHODS:
            self.expect("punct", ")", f"')': {method}() takes no arguments")
            return self.node(depth, "null", path, method == "isNull")
        if method not in _STRING_METHODS:
            known = ", ".join(sorted(_STRING_METHODS | _NULL_METHODS))
            raise PqlError(f"unknown function {method!r}: the sandbox supports {known}")
        value = self.expect("str", what=f"a string in quotes as {method}'s first argument")[1]
        case_sensitive = True
        if self.peek()[1] == ",":
            self.take()
            flag = self.expect("name", what="true or false (case sensitive)")
            if flag[1] not in ("true", "false"):
                raise PqlError(f"expected true or false, found {self.where(flag)}")
            case_sensitive = flag[1] == "true"
        self.expect("punct", ")", "')'")
        return self.node(depth, "str", path, method, value, case_sensitive)

    def literal(self) -> Any:
        tok = self.take()
        if tok[0] in ("str", "num"):
            return tok[1]
        if tok[0] == "name" and tok[1] in ("true", "false"):
            return tok[1] == "true"
        raise PqlError(f"expected a value (string, number, true or false), found {self.where(tok)}")

    def chain(self, depth: int) -> Node:
        start = self.take()
        self.expect("punct", "(", "'('")
        for word in ("xEvent", ",", "timestamp", ",", "["):
            if word in (",", "["):
                self.expect("punct", word, f"'{word}' (CHAIN(xEvent, timestamp, [...]))")
            else:
                self.expect("name", word, f"{word} (CHAIN(xEvent, timestamp, [...]))")
        steps: list[tuple[Node, tuple[str, int]]] = []
        while True:
            self.expect("name", what="a step name such as C0")
            self.expect("punct", ":", "':' after the step name")
            self.expect("name", "WHAT", "WHAT(...)")
            self.expect("punct", "(", "'('")
            what = self.rule(depth + 2, in_event=True)
            self.expect("punct", ")", "')' closing WHAT")
            self.expect("name", "WHEN", "WHEN(...) after WHAT(...)")
            self.expect("punct", "(", "'('")
            when = self.when()
            self.expect("punct", ")", "')' closing WHEN")
            steps.append((what, when))
            if len(steps) > MAX_CHAIN_STEPS:
                raise PqlError(f"CHAIN at position {start[2]} has more than {MAX_CHAIN_STEPS} steps")
            if self.peek()[1] == ",":
                self.take()
                continue
            break
        self.expect("punct", "]", "']' closing the CHAIN steps")
        self.expect("punct", ")", "')' closing CHAIN")
        self.has_events = True
        return self.node(depth, "chain", tuple(steps))

    def when(self) -> tuple[str, int]:
        if self.is_word("today"):
            self.take()
            self.max_window = max(self.max_window, _DAY_MS)
            return ("today", 0)
        op = self.expect("op", what="today or '< N days before now'")[1]
        if op not in ("<", "<="):
            raise PqlError(f"WHEN takes today, '< N days before now' or '<= N days before now', not {op!r}")
        amount = self.expect("num", what="a number of days or hours")[1]
        unit = self.expect("name", what="days or hours")[1]
        if unit not in ("days", "day", "hours", "hour") or not isinstance(amount, int) or amount < 0:
            raise PqlError("WHEN windows are a whole number of days or hours, e.g. '< 8 days before now'")
        self.expect("name", "before", "'before now'")
        self.expect("name", "now", "'before now'")
        window = amount * (_DAY_MS if unit.startswith("day") else _HOUR_MS)
        if window > 400 * _DAY_MS:
            raise PqlError("WHEN windows reach back at most 400 days")
        self.max_window = max(self.max_window, window)
        return ("le" if op == "<=" else "lt", window)


def parse(text: str) -> Rule:
    """Parse a rule (PqlError with a message that says what to fix)."""
    if not isinstance(text, str) or not text.strip():
        raise PqlError('the rule is empty: write a PQL condition such as loyalty.tier.equals("gold")')
    if len(text) > MAX_RULE_CHARS:
        raise PqlError(f"the rule is {len(text)} characters; the limit is {MAX_RULE_CHARS}")
    parser = _Parser(text)
    ast = parser.rule(0, in_event=False)
    tok = parser.peek()
    if tok[0] != "end":
        raise PqlError(f"unexpected {parser.where(tok)}: join conditions with and / or")
    return Rule(
        text=text,
        ast=ast,
        segments=tuple(dict.fromkeys(parser.segments)),
        has_events=parser.has_events,
        max_window_ms=parser.max_window,
        nodes=parser.nodes,
    )


def rule_key(text: str) -> str:
    """The content-hash key a worker caches a compiled rule under (``workers.py`` keys)."""
    return "pql:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def compile_payload(text: str) -> Node:
    """The worker's compiler for a rule key: rule text in, AST out."""
    return parse(text).ast


# ---- evaluation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a rule sees: profile attributes, events ``(timestamp ms, xdm)`` oldest first, memberships, now."""

    attributes: Mapping[str, Any]
    events: Sequence[tuple[int, Mapping[str, Any]]]
    segments: frozenset[str] | set[str]
    now_ms: int


_MISSING: Final = object()


def _get(root: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = root
    for part in path:
        if not isinstance(value, Mapping):
            return _MISSING
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if actual is _MISSING or actual is None:
        return op == "!=" and expected is not None
    if op in ("=", "!="):
        same = (actual == expected) if (_number(actual) and _number(expected)) else (
            type(actual) is type(expected) and actual == expected
        )  # fmt: skip
        return same if op == "=" else not same
    if not (
        (_number(actual) and _number(expected)) or (isinstance(actual, str) and isinstance(expected, str))
    ):
        return False
    if op == "<":
        return bool(actual < expected)
    if op == "<=":
        return bool(actual <= expected)
    if op == ">":
        return bool(actual > expected)
    return bool(actual >= expected)


def _string(actual: Any, method: str, expected: str, case_sensitive: bool) -> bool:
    negated = method in ("notEqualTo", "doesNotContain", "doesNotStartWith", "doesNotEndWith")
    if not isinstance(actual, str):
        return negated and (actual is _MISSING or actual is None)
    if not case_sensitive:
        actual, expected = actual.casefold(), expected.casefold()
    if method in ("equals", "notEqualTo"):
        hit = actual == expected
    elif method in ("contains", "doesNotContain"):
        hit = expected in actual
    elif method in ("startsWith", "doesNotStartWith"):
        hit = actual.startswith(expected)
    else:
        hit = actual.endswith(expected)
    return bool(hit != negated)


def _day_start(now_ms: int) -> int:
    day = datetime.fromtimestamp(now_ms / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(day.timestamp() * 1000)


def _in_window(ts: int, when: tuple[str, int], ctx: Context) -> bool:
    if ts > ctx.now_ms:
        return False
    kind, window = when
    if kind == "today":
        return ts >= _day_start(ctx.now_ms)
    if kind == "lt":
        return ts > ctx.now_ms - window
    return ts >= ctx.now_ms - window


def _eval(node: Node, root: Mapping[str, Any], ctx: Context) -> bool:
    kind = node[0]
    if kind == "and":
        return all(_eval(child, root, ctx) for child in node[1])
    if kind == "or":
        return any(_eval(child, root, ctx) for child in node[1])
    if kind == "not":
        return not _eval(node[1], root, ctx)
    if kind == "const":
        return bool(node[1])
    if kind == "cmp":
        return _compare(_get(root, node[1]), node[2], node[3])
    if kind == "str":
        return _string(_get(root, node[1]), node[2], node[3], node[4])
    if kind == "null":
        value = _get(root, node[1])
        missing = value is _MISSING or value is None
        return missing if node[2] else not missing
    if kind == "in":
        return node[1] in ctx.segments
    if kind == "chain":
        steps = node[1]
        at = 0
        for ts, xdm in ctx.events:  # ordered steps: the earliest match of each, then the next after it
            what, when = steps[at]
            if _in_window(ts, when, ctx) and _eval(what, xdm, ctx):
                at += 1
                if at == len(steps):
                    return True
        return False
    raise PqlError(f"unknown node {kind!r}")


def evaluate(ast: Node, ctx: Context) -> bool:
    """Does the profile in ``ctx`` qualify? Bounded: each node once, each CHAIN one pass over the events."""
    return _eval(ast, ctx.attributes, ctx)
