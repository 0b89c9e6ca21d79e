"""Decision models: programmables (JavaScript), decision tables and connection nodes (reference §5.1–5.2, §3.4).

A model is parsed and compiled once (:meth:`DecisionModel.from_json`): JavaScript goes through the
:class:`~flowlab.sandbox.personalize.javascript.ScriptRuntime` (a syntax error rejects the model, naming the node), and
every decision-table entry becomes a Python predicate, so evaluating a table is a loop over pre-built
closures (a 10-rule table, the whole ``evaluate``, takes under 10 µs). Sitecore's DMN XML is read into this
JSON form by :mod:`~flowlab.sandbox.personalize.dmn` (#11).

Nodes: ``programmable`` ``{outputReference, source, outputType}``; ``decisionTable`` ``{hitPolicy, aggregation?,
inputs: [{label, expression, expressionLanguage?: "javascript", typeRef?}], outputs: [{name, typeRef}],
rules: [{id?, inputEntries, outputEntries}]}``; ``connection`` ``{outputReference, connection}`` (the
connection JSON, secrets masked). Any node may list ``requires`` (ids it depends on, DMN's
``requiredDecision``).

Evaluation order, which is also the order of ``decisionModelResultNodes``: dependency order, where a node
depends on the ids in its ``requires`` and on every node whose output it reads (a programmable or JavaScript
input naming it as a bare name, ``this.ref`` or ``this["ref"]``; a path input rooted at it; a bare-variable
entry; a connection mapping). Among ready nodes, programmables and connections run before tables, then list
order: a model of programmables feeding tables runs as it always did. ``dependentNodeIds`` lists what a node
reads. A path input is a dotted path (``guest.orders[0].price``, ``.length`` of a list) rooted at
``guest``, ``request``, ``pos``, ``entity`` or another node's output; anything missing is ``None``. Scripts see
every upstream output as a global. Table outputs reach later nodes by output name: the value for UNIQUE,
FIRST and ANY (and an aggregated COLLECT), a list of values for RULE ORDER and COLLECT.

Hit policies (JSON default FIRST, DMN default UNIQUE): UNIQUE with more than one match and ANY with
disagreeing matches fail the node; RULE ORDER and COLLECT give one output row per match; COLLECT with
SUM/COUNT/MIN/MAX gives one row ``{output: aggregate}`` over the single output's non-null values. An input
``typeRef`` of boolean/integer/long/double converts "true"/"5"-like strings; outputs likewise.

A failing programmable, JavaScript input or hit policy marks its node and the model ``error: true``, and
everything downstream sees ``None`` (JS ``null``). A connection node is called by the engine, never here
(guest code runs in workers, which must not wait on a network; ``connections.py``): without its answer in
``connections``, evaluation stops at the node and :attr:`ModelResult.pending` holds the node and its input
values (each ``urlParameters`` / ``inputMappings`` ``mapping``: an upstream output or path, or a quoted
literal such as ``"\"en\""``); the engine calls it and evaluates again with the answer supplied. A supplied
error fails the node, stops evaluation, and :attr:`ModelResult.failure` carries it (the engine fails the
flow, as Sitecore does). The scripts of one evaluation share one parsed guest. ``outputType`` is recorded,
not enforced.

Input entries follow what Sitecore's decision-table editor writes (FEEL unary tests)::

    ""  -                    any value
    "a"   "a","b"            equals one of (strings are case-sensitive, as in DMN)
    not("a")  not("a","b")   none of (any of the forms below inside, too)
    tier  not(guest.tier)    equals (or not) another variable's value
    5   < 5  <= 5  > 5  >= 5  != 5  = 5      (also < "m": strings compare by code point)
    [1..5]  (1..5)  [1..5)  ]1..5[           ranges, closed or open at either end
    true  false  null

Lenient on purpose, because programmables often return numbers as strings: a number-like string input
matches a numeric entry, a number input matches a number-like string entry, and the strings ``"true"`` /
``"false"`` match ``true`` / ``false``. Output entries are a quoted string, a number, ``true``/``false``,
or empty/``null`` for ``None``; an output whose ``typeRef`` ends in ``.offer`` becomes
``{"type": typeRef, "value": ref}`` and its ref is collected in :attr:`ModelResult.offer_refs`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from flowlab.sandbox.personalize.javascript import (
    DEFAULT_GLOBALS,
    Script,
    ScriptError,
    ScriptRuntime,
    SharedJSON,
    check_global_name,
)

__all__ = [
    "AGGREGATIONS",
    "ANY",
    "HIT_POLICIES",
    "DecisionModel",
    "DecisionModelError",
    "ModelResult",
    "Predicate",
    "evaluate_model",
    "parse_input_entry",
    "parse_output_entry",
    "parse_path",
    "parse_reference_entry",
]

Predicate = Callable[[Any], bool]
Path = tuple[str, tuple[str | int, ...]]  # (root name, steps)


def _any(value: Any) -> bool:
    return True


#: The predicate of an empty or ``-`` entry; evaluation skips columns holding it.
ANY: Final[Predicate] = _any

_CONTEXT_ROOTS: Final = frozenset(DEFAULT_GLOBALS)


class DecisionModelError(ValueError):
    """The model JSON cannot be used; the message names the node and the field, and says what is wrong."""

    def __init__(self, message: str, *, node: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.field = field


@dataclass(frozen=True, slots=True)
class ModelResult:
    """One evaluation: Sitecore's result object plus what the sandbox needs around it."""

    #: ``{decisionModelName, decisionModelRef, decisionModelVariantName, error, debug,
    #: decisionModelResultNodes}`` (reference §3.4)
    result: dict[str, Any]
    #: Refs of the offers chosen, in node order (the template's ``offers``).
    offer_refs: list[str]
    #: ``{node, ruleId, ruleIndex, inputs: {label: value}}`` per decision table that hit a rule.
    rows_hit: list[dict[str, Any]]
    #: Lines printed by the programmables, in order (``debug.logs`` joined).
    logs: list[str]
    #: ``{node name: {label: value}}`` for every decision table, hit or not: why a table did not match.
    table_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Why the evaluation stopped and the flow fails (a connection that failed), else None.
    failure: str | None = None
    #: ``{node, name, inputs}`` of the connection node that needs calling before evaluation can go on.
    pending: dict[str, Any] | None = None

    @property
    def error(self) -> bool:
        return bool(self.result["error"])


# ---- entries ------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<num>-?(?:\d+(?:\.\d+)?|\.\d+))
    | (?P<op><=|>=|!=|<|>|=)
    | (?P<dots>\.\.)
    | (?P<punct>[\[\](),])
    | (?P<word>[A-Za-z_]\w*)
    )""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_NUMBER_LIKE = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")

Token = tuple[str, str]  # (kind, text)


class _EntryError(Exception):
    """A problem in one entry; from_json adds the node and field."""


def _tokens(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            bad = text[pos:].lstrip()[:12]
            raise _EntryError(f"unexpected {bad!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _unquote(token: str) -> str:
    def replace(m: re.Match[str]) -> str:
        esc = m.group(1)
        if esc[0] == "u" and len(esc) == 5:
            return chr(int(esc[1:], 16))
        return _ESCAPES.get(esc, esc)

    text = _ESCAPE.sub(replace, token[1:-1])
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise _EntryError(f"string {token} has an unpaired \\u surrogate escape") from None


def _number_text(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _real_number(value: Any) -> float | int | None:
    """The value as a number for numeric tests: numbers, and number-like strings; never bools."""
    kind = type(value)
    if kind is int or kind is float:
        return cast("int | float", value)
    if kind is str and _NUMBER_LIKE.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


_Value = str | int | float | bool | None


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise _EntryError("the entry ends too early")
        self.i += 1
        return token

    def expect(self, text: str) -> None:
        token = self.peek()
        if token is None or token[1] != text:
            found = "the end" if token is None else repr(token[1])
            raise _EntryError(f"expected {text!r} but found {found}")
        self.i += 1

    def done(self) -> None:
        token = self.peek()
        if token is not None:
            raise _EntryError(f"unexpected {token[1]!r} after a complete test")

    def literal(self) -> _Value:
        kind, text = self.take()
        if kind == "str":
            return _unquote(text)
        if kind == "num":
            return _number_text(text)
        if kind == "word":
            word = text.lower()
            if word in ("true", "false"):
                return word == "true"
            if word == "null":
                return None
        raise _EntryError(f'expected a value ("text", a number, true, false or null) but found {text!r}')

    def entry(self) -> Predicate:
        token = self.peek()
        if token is not None and token[0] == "word" and token[1].lower() == "not":
            self.i += 1
            self.expect("(")
            inner = self.tests()
            self.expect(")")
            self.done()
            return _negate(inner)
        tests = self.tests()
        self.done()
        return tests

    def tests(self) -> Predicate:
        predicates = [self.test()]
        while (token := self.peek()) is not None and token[1] == ",":
            self.i += 1
            predicates.append(self.test())
        return predicates[0] if len(predicates) == 1 else _one_of(predicates)

    def test(self) -> Predicate:
        token = self.peek()
        if token is None:
            raise _EntryError("expected a test but the entry ends")
        kind, text = token
        if kind == "op":
            self.i += 1
            return _compare(text, self.literal())
        if kind == "punct" and text in "[(]":
            return self.range()
        if kind == "word" and text.lower() == "not":
            raise _EntryError("not(...) must be the whole entry, not one test in a list")
        return _equals(self.literal())

    def range(self) -> Predicate:
        opening = self.take()[1]
        low = self.endpoint()
        self.expect("..")
        high = self.endpoint()
        kind, closing = self.take()
        if kind != "punct" or closing not in "])[":
            raise _EntryError(f"expected ']', ')' or '[' to end the range but found {closing!r}")
        if type(low) is not type(high) and not (
            isinstance(low, int | float) and isinstance(high, int | float)
        ):
            raise _EntryError("a range needs two numbers or two strings")
        return _between(low, high, low_closed=opening == "[", high_closed=closing == "]")

    def endpoint(self) -> str | int | float:
        value = self.literal()
        if value is None or isinstance(value, bool):
            raise _EntryError("range ends must be numbers or strings")
        return value


def _equals(literal: _Value) -> Predicate:
    if literal is None:
        return lambda v: v is None
    if isinstance(literal, bool):
        text = "true" if literal else "false"
        return lambda v: v is literal or v == text
    if isinstance(literal, str):
        number = _real_number(literal)
        if number is None:
            return lambda v: v == literal and type(v) is str
        return lambda v: (v == literal) if type(v) is str else (type(v) in (int, float) and v == number)
    target = literal
    return lambda v: _real_number(v) == target


def _compare(op: str, literal: _Value) -> Predicate:
    if op == "=":
        return _equals(literal)
    if op == "!=":
        equal = _equals(literal)
        return lambda v: not equal(v)
    if literal is None or isinstance(literal, bool):
        raise _EntryError(f"{op} needs a number or a string, not {literal!r}")
    if isinstance(literal, str):
        text = literal
        if op == "<":
            return lambda v: type(v) is str and v < text
        if op == "<=":
            return lambda v: type(v) is str and v <= text
        if op == ">":
            return lambda v: type(v) is str and v > text
        return lambda v: type(v) is str and v >= text
    limit = literal
    if op == "<":
        return lambda v: (n := _real_number(v)) is not None and n < limit
    if op == "<=":
        return lambda v: (n := _real_number(v)) is not None and n <= limit
    if op == ">":
        return lambda v: (n := _real_number(v)) is not None and n > limit
    return lambda v: (n := _real_number(v)) is not None and n >= limit


def _between(low: Any, high: Any, *, low_closed: bool, high_closed: bool) -> Predicate:
    convert: Callable[[Any], Any]
    if isinstance(low, str):
        convert = lambda v: v if type(v) is str else None  # noqa: E731
    else:
        convert = _real_number

    def test(value: Any) -> bool:
        v = convert(value)
        if v is None:
            return False
        above = v >= low if low_closed else v > low
        below = v <= high if high_closed else v < high
        return bool(above and below)

    return test


def _one_of(predicates: Sequence[Predicate]) -> Predicate:
    tests = tuple(predicates)
    return lambda v: any(test(v) for test in tests)


def _negate(predicate: Predicate) -> Predicate:
    return lambda v: not predicate(v)


def parse_input_entry(text: str) -> Predicate:
    """Compile one decision-table input entry to a predicate, or raise :class:`DecisionModelError`."""
    if not isinstance(text, str):
        raise DecisionModelError(f"an input entry must be a string, not {type(text).__name__}")
    stripped = text.strip()
    if stripped in ("", "-"):
        return ANY
    try:
        return _Parser(stripped).entry()
    except _EntryError as exc:
        raise DecisionModelError(f"input entry {text!r}: {exc}") from None


def parse_output_entry(text: str) -> str | int | float | bool | None:
    """An output entry's value: a quoted string, a number, true/false, or empty / null for ``None``."""
    if not isinstance(text, str):
        raise DecisionModelError(f"an output entry must be a string, not {type(text).__name__}")
    stripped = text.strip()
    if stripped == "":
        return None
    try:
        parser = _Parser(stripped)
        value = parser.literal()
        parser.done()
    except _EntryError as exc:
        raise DecisionModelError(
            f'output entry {text!r}: {exc}; write a quoted string ("text"), a number, true, false or null'
        ) from None
    return value


# ---- input expressions ----------------------------------------------------------------------------------

_ROOT = re.compile(r"\s*([A-Za-z_$][\w$]*)")
_STEP = re.compile(
    r"""\s*(?:
      \.\s*(?P<key>[^.\[\]\s"']+)
    | \[\s*(?P<index>\d+)\s*\]
    | \[\s*(?P<quoted>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*\]
    )""",
    re.VERBOSE | re.DOTALL,
)


def parse_path(expression: str) -> Path:
    """``guest.orders[0].price`` → ``("guest", ("orders", 0, "price"))``; raises DecisionModelError."""
    if not isinstance(expression, str):
        raise DecisionModelError(f"an input expression must be a string, not {type(expression).__name__}")
    text = expression.strip()
    root = _ROOT.match(text)
    if root is None:
        raise DecisionModelError(
            f"input expression {expression!r} must start with a name, e.g. guest.country"
        )
    steps: list[str | int] = []
    pos = root.end()
    while pos < len(text):
        step = _STEP.match(text, pos)
        if step is None or step.end() == pos:
            raise DecisionModelError(
                f"input expression {expression!r}: cannot read {text[pos:][:20]!r}; use dotted keys and "
                "[n] indexes, e.g. guest.orders[0].price"
            )
        if step.group("key") is not None:
            steps.append(step.group("key"))
        elif step.group("index") is not None:
            steps.append(int(step.group("index")))
        else:
            quoted = step.group("quoted")
            steps.append(_ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), quoted[1:-1]))
        pos = step.end()
    return root.group(1), tuple(steps)


def _resolve(value: Any, steps: tuple[str | int, ...]) -> Any:
    """Follow a path; anything missing (or the wrong shape) is ``None``. ``.length`` works on lists."""
    for step in steps:
        if type(value) is dict:
            value = value.get(step) if type(step) is str else value.get(str(step))
        elif type(value) is list or type(value) is tuple:
            if type(step) is int or (type(step) is str and step.isdigit()):
                index = int(step)
                value = value[index] if index < len(value) else None
            elif step == "length":
                value = len(value)
            else:
                return None
        elif type(value) is str and step == "length":
            value = len(value)
        else:
            return None
    return value


# ---- compiled nodes -------------------------------------------------------------------------------------

HIT_POLICIES: Final = ("UNIQUE", "FIRST", "ANY", "RULE ORDER", "COLLECT")
AGGREGATIONS: Final = ("SUM", "COUNT", "MIN", "MAX")
_NUMBER_TYPES: Final = frozenset({"integer", "long", "int", "double", "number", "float"})


@dataclass(frozen=True, slots=True)
class _Programmable:
    id: str
    name: str
    output_reference: str
    output_type: str
    script: Script
    depends_on: tuple[str, ...]  # ids of the nodes whose outputs it reads


@dataclass(frozen=True, slots=True)
class _Output:
    name: str
    type_ref: str
    is_offer: bool


@dataclass(frozen=True, slots=True)
class _Rule:
    rule_id: str
    tests: tuple[tuple[int, Predicate], ...]  # (input column, predicate); ANY columns left out
    outputs: tuple[str | int | float | bool | None, ...]
    #: (input column, path of another variable, negated): entries that name a variable, not a value
    refs: tuple[tuple[int, Path, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class _Input:
    label: str
    path: Path | None  # a dotted path, or None for a JavaScript input
    script: Script | None
    type_ref: str


@dataclass(frozen=True, slots=True)
class _Table:
    id: str
    name: str
    labels: tuple[str, ...]
    inputs: tuple[_Input, ...]
    outputs: tuple[_Output, ...]
    rules: tuple[_Rule, ...]
    depends_on: tuple[str, ...]
    hit_policy: str = "FIRST"
    aggregation: str | None = None


@dataclass(frozen=True, slots=True)
class _Connection:
    id: str
    name: str
    output_reference: str
    connection: Mapping[str, Any]  # the connection JSON, secrets already masked
    depends_on: tuple[str, ...]
    #: (key, path of an upstream value or None, literal): one per urlParameters / inputMappings entry
    inputs: tuple[tuple[str, Path | None, Any], ...] = ()


_Compiled = _Programmable | _Table | _Connection
_NodeType = Literal["programmable", "decisionTable", "connection"]


class _TableFailure(Exception):
    """A hit policy was violated (UNIQUE or ANY): the node fails, with this message."""


class DecisionModel:
    """A parsed, compiled decision model; :meth:`evaluate` it once per request, from any thread."""

    def __init__(self, *, ref: str, name: str, variant_name: str, nodes: Sequence[_Compiled]) -> None:
        self.ref = ref
        self.name = name
        self.variant_name = variant_name
        self._nodes = tuple(nodes)

    def __repr__(self) -> str:
        kinds = [type(n).__name__.strip("_").lower() for n in self._nodes]
        counts = ", ".join(f"{kinds.count(k)} {k}s" for k in ("programmable", "table", "connection"))
        return f"<DecisionModel {self.name!r} ({counts})>"

    @property
    def scripts(self) -> list[tuple[str, Script]]:
        """(node name, script) of the programmables and JavaScript table inputs, in evaluation order."""
        out: list[tuple[str, Script]] = []
        for node in self._nodes:
            if isinstance(node, _Programmable):
                out.append((node.name, node.script))
            elif isinstance(node, _Table):
                out.extend((node.name, i.script) for i in node.inputs if i.script is not None)
        return out

    @property
    def node_ids(self) -> list[str]:
        """Node ids in evaluation order."""
        return [n.id for n in self._nodes]

    @property
    def connections(self) -> list[tuple[str, Mapping[str, Any]]]:
        """(node name, connection JSON with secrets masked) of the connection nodes."""
        return [(n.name, n.connection) for n in self._nodes if isinstance(n, _Connection)]

    def leading_call(self) -> tuple[str, str, dict[str, Any]] | None:
        """(node id, node name, input values) of the connection node evaluation stops at first, when that is
        known before any node runs: the model's first node in evaluation order, a connection that depends on
        no node and whose inputs are all literals (or empty). Else None."""
        first = self._nodes[0] if self._nodes else None
        if not isinstance(first, _Connection) or first.depends_on:
            return None
        if any(path is not None for _, path, _ in first.inputs):
            return None
        return first.id, first.name, {key: literal for key, _, literal in first.inputs}

    def connection_node(self, node_id: str) -> tuple[str, str, Mapping[str, Any]] | None:
        """(node name, output reference, connection JSON) of a connection node, by id."""
        for n in self._nodes:
            if isinstance(n, _Connection) and n.id == node_id:
                return n.name, n.output_reference, n.connection
        return None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, runtime: ScriptRuntime) -> DecisionModel:
        """Validate and compile; raises :class:`DecisionModelError` naming the node and field at fault."""
        return _Loader(data, runtime).load()

    def evaluate(
        self,
        *,
        guest: Mapping[str, Any],
        request: Mapping[str, Any],
        pos: Mapping[str, Any] | None = None,
        bucket: int | None = None,
        entity: Mapping[str, Any] | None = None,
        before_script: Callable[[int, Script], None] | None = None,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> ModelResult:
        """Run the nodes in dependency order; a failing script or table is a node error, never an exception.

        ``before_script(i, script)`` is called before script ``i`` of :attr:`scripts` runs (the guest-code
        worker marks its steps and refuses quarantined scripts there); what it raises propagates.
        ``connections``: answers of connection nodes by node id, ``{"value": json}`` or ``{"error": text}``;
        a connection node without one stops the evaluation with :attr:`ModelResult.pending`.
        """
        scope: dict[str, Any] = {"guest": guest, "request": request, "pos": pos, "entity": entity}
        nodes: list[dict[str, Any]] = []
        logs: list[str] = []
        offer_refs: list[str] = []
        rows_hit: list[dict[str, Any]] = []
        table_inputs: dict[str, dict[str, Any]] = {}
        error = False
        failure: str | None = None
        pending: dict[str, Any] | None = None
        values: dict[str, Any] = dict(scope)
        if guest is not None and len(self.scripts) > 1:
            values["guest"] = SharedJSON(guest)  # encoded and parsed once for all scripts
        position = 0

        def run(script: Script) -> Any:
            nonlocal position
            if before_script is not None:
                before_script(position, script)
            position += 1
            result = script.run(values)
            logs.extend(result.logs)
            return result.value

        for node in self._nodes:
            started = time.perf_counter()
            if isinstance(node, _Programmable):
                try:
                    value = run(node.script)
                except ScriptError as exc:
                    logs.extend(exc.logs)
                    error = True
                    scope[node.output_reference] = values[node.output_reference] = None
                    nodes.append(_node(node.id, node.name, "programmable", _ms(started), node.depends_on, []))
                    nodes[-1].update(error=True, errorCause=str(exc))
                    continue
                scope[node.output_reference] = values[node.output_reference] = value
                outputs: list[dict[str, Any]] = [{node.output_reference: value}]
                nodes.append(
                    _node(node.id, node.name, "programmable", _ms(started), node.depends_on, outputs)
                )
            elif isinstance(node, _Connection):
                answer = (connections or {}).get(node.id)
                if answer is None:
                    inputs_ = {
                        key: literal if path is None else _resolve(scope.get(path[0]), path[1])
                        for key, path, literal in node.inputs
                    }
                    pending = {"node": node.id, "name": node.name, "inputs": inputs_}
                    break
                if answer.get("error") is not None:
                    failure = str(answer["error"])
                    error = True
                    nodes.append(_node(node.id, node.name, "connection", _ms(started), node.depends_on, []))
                    nodes[-1].update(error=True, errorCause=failure)
                    break
                value = answer.get("value")
                scope[node.output_reference] = values[node.output_reference] = value
                nodes.append(
                    _node(node.id, node.name, "connection", float(answer.get("ms", 0.0)), node.depends_on,
                          [{node.output_reference: value}])
                )  # fmt: skip
            else:
                try:
                    inputs = [
                        _coerce(
                            run(i.script)
                            if i.script is not None
                            else _resolve(scope.get(i.path[0]), i.path[1])
                            if i.path is not None
                            else None,
                            i.type_ref,
                        )
                        for i in node.inputs
                    ]
                    labelled = dict(zip(node.labels, inputs, strict=True))
                    table_inputs[node.name] = labelled
                    outputs = _hit(node, inputs, scope, offer_refs, rows_hit, labelled)
                except (ScriptError, _TableFailure) as exc:
                    if isinstance(exc, ScriptError):
                        logs.extend(exc.logs)
                    error = True
                    _publish(node, None, scope, values)
                    nodes.append(
                        _node(node.id, node.name, "decisionTable", _ms(started), node.depends_on, [])
                    )
                    nodes[-1].update(error=True, errorCause=str(exc))
                    continue
                _publish(node, outputs, scope, values)
                nodes.append(
                    _node(node.id, node.name, "decisionTable", _ms(started), node.depends_on, outputs)
                )
        result_body = {
            "decisionModelName": self.name,
            "decisionModelRef": self.ref,
            "decisionModelVariantName": self.variant_name,
            "error": error,
            "debug": {"bucket": str(bucket if bucket is not None else 0), "logs": "\n".join(logs)},
            "decisionModelResultNodes": nodes,
        }
        return ModelResult(result_body, offer_refs, rows_hit, logs, table_inputs, failure, pending)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _coerce(value: Any, type_ref: str) -> Any:
    """An input or output value as its ``typeRef`` says (lenient: what does not convert stays as it is)."""
    kind = type_ref.lower()
    if kind == "boolean" and type(value) is str and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if kind in _NUMBER_TYPES and type(value) is not bool:
        number = _real_number(value)
        if number is not None:
            return int(number) if kind in ("integer", "long", "int") else float(number)
    return value


def _matches(rule: _Rule, inputs: Sequence[Any], scope: Mapping[str, Any]) -> bool:
    for column, test in rule.tests:
        if not test(inputs[column]):
            return False
    for column, (root, steps), negated in rule.refs:
        other = _resolve(scope.get(root), steps)
        value = inputs[column]
        same = value == other or (
            (a := _real_number(value)) is not None and a == _real_number(other) and type(value) is not bool
        )
        if same == negated:
            return False
    return True


def _row(table: _Table, rule: _Rule, offer_refs: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"ruleId": rule.rule_id}
    for out, value in zip(table.outputs, rule.outputs, strict=True):
        if out.is_offer:
            if value is not None:
                offer_refs.append(str(value))
            row[out.name] = {"type": out.type_ref, "value": value} if value is not None else None
        else:
            row[out.name] = value
    return row


def _hit(
    table: _Table,
    inputs: list[Any],
    scope: Mapping[str, Any],
    offer_refs: list[str],
    rows_hit: list[dict[str, Any]],
    labelled: dict[str, Any],
) -> list[dict[str, Any]]:
    """The table's output rows under its hit policy (raises _TableFailure when UNIQUE/ANY is violated)."""
    policy = table.hit_policy
    matched: list[tuple[int, _Rule]] = []
    for index, rule in enumerate(table.rules):
        if _matches(rule, inputs, scope):
            matched.append((index, rule))
            if policy == "FIRST":
                break
    if policy == "UNIQUE" and len(matched) > 1:
        ids = ", ".join(r.rule_id for _, r in matched)
        raise _TableFailure(
            f"hit policy UNIQUE: {len(matched)} rules match ({ids}); make the rules exclusive or use FIRST"
        )
    if policy == "ANY" and len({r.outputs for _, r in matched}) > 1:
        ids = ", ".join(r.rule_id for _, r in matched)
        raise _TableFailure(f"hit policy ANY: rules {ids} match with different outputs; make them agree")
    if policy == "ANY":
        matched = matched[:1]
    local_offers: list[str] = []
    rows = [_row(table, rule, local_offers) for _, rule in matched]
    for index, rule in matched:
        rows_hit.append({"node": table.name, "ruleId": rule.rule_id, "ruleIndex": index, "inputs": labelled})
    if table.aggregation is not None:
        out = table.outputs[0]
        found = [row[out.name] for row in rows if row[out.name] is not None]
        numbers = [n for n in (_real_number(v) for v in found) if n is not None]
        aggregate: Any
        if table.aggregation == "COUNT":
            aggregate = len(found)
        elif table.aggregation == "SUM":
            aggregate = sum(numbers) if numbers else None
        elif table.aggregation == "MIN":
            aggregate = min(numbers) if numbers else None
        else:
            aggregate = max(numbers) if numbers else None
        return [{out.name: aggregate}]
    offer_refs.extend(local_offers)
    return rows


def _publish(
    table: _Table, rows: list[dict[str, Any]] | None, scope: dict[str, Any], values: dict[str, Any]
) -> None:
    """What later nodes see of a table: each output's value (a list of values for RULE ORDER/COLLECT)."""
    many = table.hit_policy in ("RULE ORDER", "COLLECT") and table.aggregation is None
    for out in table.outputs:
        if rows is None:
            value: Any = None
        elif many:
            value = [row.get(out.name) for row in rows]
        else:
            value = rows[0].get(out.name) if rows else None
        scope[out.name] = value
        if _OUTPUT_REFERENCE.fullmatch(out.name) and out.name not in _CONTEXT_ROOTS:
            values[out.name] = value


def _node(
    node_id: str,
    name: str,
    kind: _NodeType,
    elapsed_ms: float,
    depends_on: tuple[str, ...],
    outputs: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "id": node_id,
        "name": name,
        "type": kind,
        "error": False,
        "executionTime": elapsed_ms,
        "dependentNodeIds": list(depends_on),
        "outputs": outputs,
    }


_default_runtime: ScriptRuntime | None = None


def evaluate_model(
    model: DecisionModel | Mapping[str, Any],
    *,
    guest: Mapping[str, Any],
    request: Mapping[str, Any],
    pos: Mapping[str, Any] | None = None,
    bucket: int | None = None,
    entity: Mapping[str, Any] | None = None,
    runtime: ScriptRuntime | None = None,
) -> ModelResult:
    """Evaluate a compiled model, or parse model JSON first (with ``runtime``, else a shared default one)."""
    global _default_runtime
    if not isinstance(model, DecisionModel):
        if runtime is None:
            if _default_runtime is None:
                _default_runtime = ScriptRuntime()
            runtime = _default_runtime
        model = DecisionModel.from_json(model, runtime=runtime)
    return model.evaluate(guest=guest, request=request, pos=pos, bucket=bucket, entity=entity)


# ---- loading --------------------------------------------------------------------------------------------

_OUTPUT_REFERENCE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_REFERENCE_ENTRY = re.compile(
    r"\s*(?P<not>not\s*\(\s*)?(?P<ref>[A-Za-z_$][\w$]*(?:\s*\.\s*[A-Za-z_$][\w$]*)*)\s*(?(not)\)\s*)"
)
_KINDS: Final = ("programmable", "decisionTable", "connection")


def parse_reference_entry(text: str) -> tuple[Path, bool] | None:
    """An input entry naming a variable (``tier``, ``not(guest.tier)``): (its path, negated), else None."""
    match = _REFERENCE_ENTRY.fullmatch(text)
    if match is None:
        return None
    ref = re.sub(r"\s+", "", match.group("ref"))
    if ref.lower() in ("true", "false", "null", "not"):
        return None
    return parse_path(ref), match.group("not") is not None


class _Loader:
    """Turns model JSON into a :class:`DecisionModel`, with errors that name the node and field."""

    def __init__(self, data: Mapping[str, Any], runtime: ScriptRuntime) -> None:
        if not isinstance(data, Mapping):
            raise DecisionModelError(f"a decision model must be a JSON object, not {type(data).__name__}")
        self.data = data
        self.runtime = runtime
        self.ref = self._optional_str(data, "ref", "")
        self.name = self._optional_str(data, "name", self.ref or "Decision model")
        self.variant_name = self._optional_str(data, "variantName", "v1")

    def fail(self, node: str | None, field: str, problem: str) -> DecisionModelError:
        where = f"node '{node}'" if node is not None else "the model"
        return DecisionModelError(
            f"decision model '{self.name}': {where}, field '{field}': {problem}", node=node, field=field
        )

    @staticmethod
    def _optional_str(obj: Mapping[str, Any], key: str, default: str) -> str:
        value = obj.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            raise DecisionModelError(
                f"decision model: field '{key}' must be a string, not {type(value).__name__}", field=key
            )
        return value

    def load(self) -> DecisionModel:
        raw_nodes = self.data.get("nodes")
        if not isinstance(raw_nodes, list):
            raise self.fail(None, "nodes", "must be a list of nodes (programmables and decision tables)")
        ids: set[str] = set()
        names: set[str] = set()
        nodes: list[Mapping[str, Any]] = []
        for index, node in enumerate(raw_nodes):
            if not isinstance(node, Mapping):
                raise self.fail(None, f"nodes[{index}]", "each node must be an object")
            label = node.get("name") if isinstance(node.get("name"), str) else f"nodes[{index}]"
            node_id = node.get("id")
            if not isinstance(node_id, str) or not node_id.strip():
                raise self.fail(label, "id", "every node needs a non-empty string id")
            name = node.get("name")
            if not isinstance(name, str) or not name.strip():
                raise self.fail(f"nodes[{index}]", "name", "every node needs a non-empty name")
            if node_id in ids:
                raise self.fail(name, "id", f"id {node_id!r} is used by another node")
            if name.strip() in names:
                raise self.fail(
                    name, "name", "another node has the same name (templates look nodes up by name)"
                )
            ids.add(node_id)
            names.add(name.strip())
            if node.get("type") not in _KINDS:
                raise self.fail(
                    name,
                    "type",
                    f'{node.get("type")!r} is not supported; use "programmable", "decisionTable" or '
                    '"connection"',
                )
            requires = node.get("requires", [])
            if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
                raise self.fail(name, "requires", "must be a list of node ids")
            nodes.append(node)
        for node in nodes:
            for required in node.get("requires", []):
                if required not in ids:
                    raise self.fail(str(node["name"]), "requires", f"names unknown node id {required!r}")
        provides = self._provided(nodes)
        by_name = {ref: str(node["id"]) for node in nodes for ref in provides[str(node["id"])]}
        reads = {str(n["id"]): self._reads(n, by_name) for n in nodes}
        order = self._order(nodes, reads)
        compiled: list[_Compiled] = []
        seen: list[str] = []
        position = {str(n["id"]): i for i, n in enumerate(order)}
        for node in order:
            node_id = str(node["id"])
            depends = reads[node_id]
            if node["type"] != "decisionTable":
                depends = sorted(depends, key=position.__getitem__)
            globals_ = (*DEFAULT_GLOBALS, *(g for g in seen if g not in DEFAULT_GLOBALS))
            if node["type"] == "programmable":
                compiled.append(self._programmable(node, globals_, tuple(depends)))
            elif node["type"] == "connection":
                compiled.append(self._connection(node, tuple(depends)))
            else:
                compiled.append(self._table(node, by_name, globals_, tuple(depends)))
            seen.extend(g for g in provides[node_id] if _usable_global(g))
        return DecisionModel(ref=self.ref, name=self.name, variant_name=self.variant_name, nodes=compiled)

    def _provided(self, nodes: list[Mapping[str, Any]]) -> dict[str, list[str]]:
        """The names each node's output is known by (output references; a table's output names)."""
        provides: dict[str, list[str]] = {}
        owner: dict[str, str] = {}
        for node in nodes:
            name = str(node["name"])
            if node["type"] == "decisionTable":
                outputs = node.get("outputs")
                names = [
                    str(o["name"]) for o in outputs if isinstance(o, Mapping) and isinstance(o.get("name"), str)
                ] if isinstance(outputs, list) else []  # fmt: skip
                provides[str(node["id"])] = [n for n in names if n != "ruleId"]
                continue
            ref = node.get("outputReference")
            if not isinstance(ref, str) or not _OUTPUT_REFERENCE.fullmatch(ref):
                raise self.fail(
                    name, "outputReference", f"{ref!r} must be a JavaScript identifier, e.g. guestTier"
                )
            if ref in _CONTEXT_ROOTS:
                raise self.fail(name, "outputReference", f"{ref!r} would hide the global of the same name")
            try:
                check_global_name(ref)
            except ValueError as exc:
                raise self.fail(name, "outputReference", str(exc)) from None
            if ref in owner:
                raise self.fail(name, "outputReference", f"{ref!r} is also the output of '{owner[ref]}'")
            owner[ref] = name
            provides[str(node["id"])] = [ref]
        return provides

    def _reads(self, node: Mapping[str, Any], by_name: Mapping[str, str]) -> list[str]:
        """Ids of the nodes this one reads: named in ``requires``, or by output name in its code or inputs."""
        own = str(node["id"])
        found: list[str] = []

        def add(node_id: str | None) -> None:
            if node_id is not None and node_id != own and node_id not in found:
                found.append(node_id)

        kind = node["type"]
        if kind == "programmable":
            source = node.get("source")
            if isinstance(source, str):
                for ref, node_id in by_name.items():
                    if _mentions(source, ref):
                        add(node_id)
        elif kind == "decisionTable":
            for item in node.get("inputs") or []:
                if not isinstance(item, Mapping) or not isinstance(item.get("expression"), str):
                    continue
                if str(item.get("expressionLanguage") or "").lower() == "javascript":
                    for ref, node_id in by_name.items():
                        if _mentions(item["expression"], ref):
                            add(node_id)
                else:
                    root = _ROOT.match(item["expression"])
                    add(by_name.get(root.group(1)) if root else None)
            for rule in node.get("rules") or []:
                entries = rule.get("inputEntries") if isinstance(rule, Mapping) else None
                for entry in entries if isinstance(entries, list) else []:
                    ref_entry = parse_reference_entry(entry) if isinstance(entry, str) else None
                    if ref_entry is not None:
                        add(by_name.get(ref_entry[0][0]))
        else:
            connection = node.get("connection")
            if isinstance(connection, Mapping):
                for key in ("urlParameters", "inputMappings"):
                    for item in connection.get(key) or []:
                        mapping = item.get("mapping") if isinstance(item, Mapping) else None
                        root = _ROOT.match(mapping) if isinstance(mapping, str) else None
                        add(by_name.get(root.group(1)) if root else None)
        for required in node.get("requires", []):
            add(required)
        return found

    def _order(self, nodes: list[Mapping[str, Any]], reads: dict[str, list[str]]) -> list[Mapping[str, Any]]:
        """Dependency order; among ready nodes, programmables and connections before tables, then list order."""
        pending = sorted(nodes, key=lambda n: n["type"] == "decisionTable")  # stable: list order kept
        done: set[str] = set()
        order: list[Mapping[str, Any]] = []
        while pending:
            for node in pending:
                if all(r in done for r in reads[str(node["id"])]):
                    order.append(node)
                    done.add(str(node["id"]))
                    pending.remove(node)
                    break
            else:
                names = ", ".join(f"'{n['name']}'" for n in pending)
                field = "source" if pending[0]["type"] == "programmable" else "requires"
                raise self.fail(
                    str(pending[0]["name"]), field, f"nodes {names} read each other's outputs in a cycle"
                )
        return order

    def _programmable(
        self, node: Mapping[str, Any], globals_: tuple[str, ...], depends: tuple[str, ...]
    ) -> _Programmable:
        name = str(node["name"])
        source = node.get("source")
        if not isinstance(source, str) or not source.strip():
            raise self.fail(name, "source", "a programmable needs its JavaScript source")
        output_type = node.get("outputType", "String")
        if not isinstance(output_type, str):
            raise self.fail(name, "outputType", 'must be a string such as "String" or "Map"')
        try:
            script = self.runtime.compile(source, name=f"{self.name} / {name}", globals=globals_)
        except ScriptError as exc:
            raise self.fail(name, "source", str(exc)) from None
        return _Programmable(
            str(node["id"]), name, str(node["outputReference"]), output_type, script, depends
        )

    def _connection(self, node: Mapping[str, Any], depends: tuple[str, ...]) -> _Connection:
        name = str(node["name"])
        connection = node.get("connection")
        if not isinstance(connection, Mapping):
            raise self.fail(name, "connection", "a connection node needs the connection's JSON object")
        inputs: list[tuple[str, Path | None, Any]] = []
        for group in ("urlParameters", "inputMappings"):
            items = connection.get(group) or []
            if not isinstance(items, list):
                raise self.fail(name, f"connection.{group}", "must be a list of {key, mapping}")
            for i, item in enumerate(items):
                where = f"connection.{group}[{i}]"
                if not isinstance(item, Mapping) or not isinstance(item.get("key"), str) or not item["key"]:
                    raise self.fail(
                        name, f"{where}.key", "each entry needs the key of its ${key} placeholder"
                    )
                mapping = item.get("mapping")
                text = mapping.strip() if isinstance(mapping, str) else ""
                if mapping is not None and not isinstance(mapping, str):
                    raise self.fail(
                        name, f"{where}.mapping", "must be an output reference or a quoted literal"
                    )
                if text.startswith(('"', "'")):
                    try:
                        literal = parse_output_entry(text.replace("'", '"') if text[0] == "'" else text)
                    except DecisionModelError as exc:
                        raise self.fail(name, f"{where}.mapping", str(exc)) from None
                    inputs.append((item["key"], None, literal))
                elif text:
                    try:
                        inputs.append((item["key"], parse_path(text), None))
                    except DecisionModelError as exc:
                        raise self.fail(name, f"{where}.mapping", str(exc)) from None
                else:
                    inputs.append((item["key"], None, None))
        return _Connection(
            str(node["id"]), name, str(node["outputReference"]), dict(connection), depends, tuple(inputs)
        )

    def _table(
        self,
        node: Mapping[str, Any],
        by_name: Mapping[str, str],
        globals_: tuple[str, ...],
        depends: tuple[str, ...],
    ) -> _Table:
        name = str(node["name"])
        raw_policy = node.get("hitPolicy", "FIRST")
        policy = re.sub(r"[\s_]+", " ", raw_policy.strip().upper()) if isinstance(raw_policy, str) else None
        if policy not in HIT_POLICIES:
            raise self.fail(
                name, "hitPolicy", f"{raw_policy!r} is not supported; use one of {', '.join(HIT_POLICIES)}"
            )
        raw_aggregation = node.get("aggregation")
        aggregation = raw_aggregation.strip().upper() if isinstance(raw_aggregation, str) else raw_aggregation
        if aggregation is not None and (policy != "COLLECT" or aggregation not in AGGREGATIONS):
            raise self.fail(
                name,
                "aggregation",
                f"{raw_aggregation!r}: only COLLECT takes one of {', '.join(AGGREGATIONS)}",
            )
        inputs = node.get("inputs", [])
        outputs = node.get("outputs")
        rules = node.get("rules", [])
        if not isinstance(inputs, list):
            raise self.fail(name, "inputs", "must be a list of {label, expression}")
        if not isinstance(outputs, list) or not outputs:
            raise self.fail(name, "outputs", "must be a non-empty list of {name, typeRef}")
        if not isinstance(rules, list):
            raise self.fail(name, "rules", "must be a list of {inputEntries, outputEntries}")
        if aggregation is not None and len(outputs) != 1:
            raise self.fail(name, "aggregation", f"{aggregation} needs exactly one output")
        compiled_inputs: list[_Input] = []
        for i, item in enumerate(inputs):
            compiled_inputs.append(self._input(name, i, item, by_name, globals_))
        compiled_outputs: list[_Output] = []
        for i, item in enumerate(outputs):
            where = f"outputs[{i}]"
            if not isinstance(item, Mapping):
                raise self.fail(name, where, "each output must be an object {name, typeRef}")
            out_name = item.get("name")
            if not isinstance(out_name, str) or not out_name.strip():
                raise self.fail(name, f"{where}.name", "each output needs a name")
            if out_name == "ruleId" or out_name in (o.name for o in compiled_outputs):
                raise self.fail(
                    name, f"{where}.name", f"{out_name!r} is used twice (or is the reserved 'ruleId')"
                )
            type_ref = item.get("typeRef", "string")
            if not isinstance(type_ref, str):
                raise self.fail(
                    name, f"{where}.typeRef", 'must be a string such as "string" or "com.boxever.offer"'
                )
            compiled_outputs.append(_Output(out_name, type_ref, type_ref.lower().endswith(".offer")))
        prefix = re.sub(r"\s+", "", name)
        compiled_rules: list[_Rule] = []
        for r, rule in enumerate(rules):
            compiled_rules.append(self._rule(name, prefix, r, rule, compiled_inputs, compiled_outputs))
        return _Table(
            id=str(node["id"]),
            name=name,
            labels=tuple(i.label for i in compiled_inputs),
            inputs=tuple(compiled_inputs),
            outputs=tuple(compiled_outputs),
            rules=tuple(compiled_rules),
            depends_on=depends,
            hit_policy=policy,
            aggregation=aggregation,
        )

    def _input(
        self, name: str, i: int, item: Any, by_name: Mapping[str, str], globals_: tuple[str, ...]
    ) -> _Input:
        where = f"inputs[{i}]"
        if not isinstance(item, Mapping):
            raise self.fail(name, where, "each input must be an object {label, expression}")
        expression = item.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise self.fail(
                name, f"{where}.expression", "each input needs an expression such as guest.country"
            )
        label = item.get("label") or expression.strip()
        if not isinstance(label, str):
            raise self.fail(name, f"{where}.label", "must be a string")
        type_ref = item.get("typeRef") or ""
        if not isinstance(type_ref, str):
            raise self.fail(name, f"{where}.typeRef", 'must be a string such as "string" or "boolean"')
        language = item.get("expressionLanguage") or "path"
        if not isinstance(language, str) or language.lower() not in ("path", "javascript"):
            raise self.fail(
                name, f"{where}.expressionLanguage", f'{language!r}: use "javascript" or leave it out'
            )
        if language.lower() == "javascript":
            try:
                script = self.runtime.compile(
                    expression, name=f"{self.name} / {name} / {label}", globals=globals_
                )
            except ScriptError as exc:
                raise self.fail(name, f"{where}.expression", str(exc)) from None
            return _Input(label, None, script, type_ref)
        try:
            root, steps = parse_path(expression)
        except DecisionModelError as exc:
            raise self.fail(name, f"{where}.expression", str(exc)) from None
        if root not in _CONTEXT_ROOTS and root not in by_name:
            known = ", ".join([*DEFAULT_GLOBALS, *by_name]) or "none"
            raise self.fail(
                name,
                f"{where}.expression",
                f"{root!r} is not a context object or another node's output (known: {known})",
            )
        return _Input(label, (root, steps), None, type_ref)

    def _rule(
        self,
        name: str,
        prefix: str,
        r: int,
        rule: Any,
        inputs: Sequence[_Input],
        outputs: Sequence[_Output],
    ) -> _Rule:
        where = f"rules[{r}]"
        if not isinstance(rule, Mapping):
            raise self.fail(name, where, "each rule must be an object {inputEntries, outputEntries}")
        entries = rule.get("inputEntries", [])
        results = rule.get("outputEntries", [])
        if not isinstance(entries, list) or len(entries) != len(inputs):
            raise self.fail(
                name, f"{where}.inputEntries", f"must be a list of {len(inputs)} entries, one per input"
            )
        if not isinstance(results, list) or len(results) != len(outputs):
            raise self.fail(
                name, f"{where}.outputEntries", f"must be a list of {len(outputs)} entries, one per output"
            )
        rule_id = rule.get("id")
        if rule_id is not None and (not isinstance(rule_id, str) or not rule_id.strip()):
            raise self.fail(name, f"{where}.id", "must be a non-empty string (or left out)")
        tests: list[tuple[int, Predicate]] = []
        refs: list[tuple[int, Path, bool]] = []
        for c, entry in enumerate(entries):
            reference = parse_reference_entry(entry) if isinstance(entry, str) else None
            if reference is not None:
                refs.append((c, reference[0], reference[1]))
                continue
            try:
                predicate = parse_input_entry("" if entry is None else entry)
            except DecisionModelError as exc:
                raise self.fail(name, f"{where}.inputEntries[{c}]", str(exc)) from None
            if predicate is not ANY:
                tests.append((c, predicate))
        values: list[str | int | float | bool | None] = []
        for c, entry in enumerate(results):
            try:
                value = parse_output_entry("" if entry is None else entry)
            except DecisionModelError as exc:
                raise self.fail(name, f"{where}.outputEntries[{c}]", str(exc)) from None
            if outputs[c].is_offer and value is not None and not isinstance(value, str):
                raise self.fail(
                    name, f"{where}.outputEntries[{c}]", "an offer output must be a quoted offer ref"
                )
            if not outputs[c].is_offer:
                value = _coerce(value, outputs[c].type_ref)
            values.append(value)
        return _Rule(rule_id or f"{prefix}_{r}", tuple(tests), tuple(values), tuple(refs))


def _usable_global(name: str) -> bool:
    """Can a node's output name be a JavaScript global of later scripts?"""
    if not _OUTPUT_REFERENCE.fullmatch(name) or name in _CONTEXT_ROOTS:
        return False
    try:
        check_global_name(name)
    except ValueError:
        return False
    return True


def _mentions(source: str, ref: str) -> bool:
    """Does JS source read global ``ref`` (a bare name, not a property; or ``this.ref`` / ``this["ref"]``)?"""
    name = re.escape(ref)
    pattern = rf"(?<![\w$.]){name}(?![\w$])|\bthis\s*\.\s*{name}(?![\w$])|\bthis\s*\[\s*[\"']{name}[\"']\s*\]"
    return re.search(pattern, source) is not None
