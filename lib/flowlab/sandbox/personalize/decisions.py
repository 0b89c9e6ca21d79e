"""Decision models: programmables (JavaScript) feeding FIRST-hit decision tables (reference §5.1–5.2, §3.4).

A model is parsed and compiled once (:meth:`DecisionModel.from_json`): JavaScript goes through the
:class:`~flowlab.sandbox.personalize.javascript.ScriptRuntime` (a syntax error rejects the model, naming the node), and
every decision-table entry becomes a Python predicate, so evaluating a table is a loop over pre-built
closures (a 10-rule table, the whole ``evaluate``, takes under 10 µs).

Evaluation order, which is also the order of ``decisionModelResultNodes``: programmables first, in list
order except that one reading another's output reference (as a bare name, ``this.ref`` or ``this["ref"]``)
runs after it; then decision tables in list order. ``dependentNodeIds`` lists the programmables a node
reads. A table input is a dotted path (``guest.orders[0].price``, ``.length`` of a list) rooted at
``guest``, ``request``, ``pos``, ``entity`` or a programmable's output reference; anything missing is
``None``. A failing programmable marks its node and the model ``error: true``, and everything downstream
sees ``None`` (JS ``null``). The programmables of one evaluation share one parsed guest, as they would
share one guest object in one flow execution. ``outputType`` is recorded, not enforced.

Input entries follow what Sitecore's decision-table editor writes (FEEL unary tests)::

    ""  -                    any value
    "a"   "a","b"            equals one of (strings are case-sensitive, as in DMN)
    not("a")  not("a","b")   none of (any of the forms below inside, too)
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
    "ANY",
    "DecisionModel",
    "DecisionModelError",
    "ModelResult",
    "Predicate",
    "evaluate_model",
    "parse_input_entry",
    "parse_output_entry",
    "parse_path",
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


@dataclass(frozen=True, slots=True)
class _Programmable:
    id: str
    name: str
    output_reference: str
    output_type: str
    script: Script
    depends_on: tuple[str, ...]  # ids of programmables whose output it reads


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


@dataclass(frozen=True, slots=True)
class _Table:
    id: str
    name: str
    labels: tuple[str, ...]
    paths: tuple[Path, ...]
    outputs: tuple[_Output, ...]
    rules: tuple[_Rule, ...]
    depends_on: tuple[str, ...]


_NodeType = Literal["programmable", "decisionTable"]


class DecisionModel:
    """A parsed, compiled decision model; :meth:`evaluate` it once per request, from any thread."""

    def __init__(
        self,
        *,
        ref: str,
        name: str,
        variant_name: str,
        programmables: Sequence[_Programmable],
        tables: Sequence[_Table],
    ) -> None:
        self.ref = ref
        self.name = name
        self.variant_name = variant_name
        self._programmables = tuple(programmables)
        self._tables = tuple(tables)

    def __repr__(self) -> str:
        counts = f"{len(self._programmables)} programmables, {len(self._tables)} tables"
        return f"<DecisionModel {self.name!r} ({counts})>"

    @property
    def scripts(self) -> list[tuple[str, Script]]:
        """(node name, script) of the programmables, in evaluation order."""
        return [(p.name, p.script) for p in self._programmables]

    @property
    def node_ids(self) -> list[str]:
        """Node ids in evaluation order."""
        return [p.id for p in self._programmables] + [t.id for t in self._tables]

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
    ) -> ModelResult:
        """Run the programmables, then the tables; a failing script is a node error, never an exception.

        ``before_script(i, script)`` is called before programmable ``i`` runs (the guest-code worker marks
        its steps and refuses quarantined scripts there); what it raises propagates.
        """
        scope: dict[str, Any] = {"guest": guest, "request": request, "pos": pos, "entity": entity}
        nodes: list[dict[str, Any]] = []
        logs: list[str] = []
        offer_refs: list[str] = []
        rows_hit: list[dict[str, Any]] = []
        table_inputs: dict[str, dict[str, Any]] = {}
        error = False
        if self._programmables:
            values: dict[str, Any] = dict(scope)
            if len(self._programmables) > 1 and guest is not None:
                values["guest"] = SharedJSON(guest)  # encoded and parsed once for all programmables
            for position, node in enumerate(self._programmables):
                if before_script is not None:
                    before_script(position, node.script)
                started = time.perf_counter()
                try:
                    result = node.script.run(values)
                except ScriptError as exc:
                    elapsed = (time.perf_counter() - started) * 1000
                    logs.extend(exc.logs)
                    error = True
                    scope[node.output_reference] = values[node.output_reference] = None
                    nodes.append(_node(node.id, node.name, "programmable", elapsed, node.depends_on, []))
                    nodes[-1]["error"] = True
                    nodes[-1]["errorCause"] = str(exc)
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                logs.extend(result.logs)
                scope[node.output_reference] = values[node.output_reference] = result.value
                outputs = [{node.output_reference: result.value}]
                nodes.append(_node(node.id, node.name, "programmable", elapsed, node.depends_on, outputs))
        for table in self._tables:
            started = time.perf_counter()
            inputs = [_resolve(scope.get(root), steps) for root, steps in table.paths]
            outputs = []
            for index, rule in enumerate(table.rules):
                for column, test in rule.tests:
                    if not test(inputs[column]):
                        break
                else:
                    row: dict[str, Any] = {"ruleId": rule.rule_id}
                    for out, value in zip(table.outputs, rule.outputs, strict=True):
                        if out.is_offer:
                            if value is not None:
                                offer_refs.append(str(value))
                            row[out.name] = (
                                {"type": out.type_ref, "value": value} if value is not None else None
                            )
                        else:
                            row[out.name] = value
                    outputs.append(row)
                    labelled = dict(zip(table.labels, inputs, strict=True))
                    rows_hit.append(
                        {"node": table.name, "ruleId": rule.rule_id, "ruleIndex": index, "inputs": labelled}
                    )
                    break
            else:
                labelled = dict(zip(table.labels, inputs, strict=True))
            table_inputs[table.name] = labelled
            elapsed = (time.perf_counter() - started) * 1000
            nodes.append(_node(table.id, table.name, "decisionTable", elapsed, table.depends_on, outputs))
        result_body = {
            "decisionModelName": self.name,
            "decisionModelRef": self.ref,
            "decisionModelVariantName": self.variant_name,
            "error": error,
            "debug": {"bucket": str(bucket if bucket is not None else 0), "logs": "\n".join(logs)},
            "decisionModelResultNodes": nodes,
        }
        return ModelResult(result_body, offer_refs, rows_hit, logs, table_inputs)


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
        programmable_raw: list[Mapping[str, Any]] = []
        table_raw: list[Mapping[str, Any]] = []
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
            kind = node.get("type")
            if kind == "programmable":
                programmable_raw.append(node)
            elif kind == "decisionTable":
                table_raw.append(node)
            else:
                raise self.fail(
                    name, "type", f'{kind!r} is not supported; use "programmable" or "decisionTable"'
                )
        programmables = self._programmables(programmable_raw)
        ref_to_id = {p.output_reference: p.id for p in programmables}
        tables = [self._table(node, ref_to_id) for node in table_raw]
        return DecisionModel(
            ref=self.ref,
            name=self.name,
            variant_name=self.variant_name,
            programmables=programmables,
            tables=tables,
        )

    def _programmables(self, raw: list[Mapping[str, Any]]) -> list[_Programmable]:
        refs: dict[str, Mapping[str, Any]] = {}
        for node in raw:
            name = str(node["name"])
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
            if ref in refs:
                raise self.fail(
                    name, "outputReference", f"{ref!r} is also the output of '{refs[ref]['name']}'"
                )
            refs[ref] = node
            source = node.get("source")
            if not isinstance(source, str) or not source.strip():
                raise self.fail(name, "source", "a programmable needs its JavaScript source")
            output_type = node.get("outputType", "String")
            if not isinstance(output_type, str):
                raise self.fail(name, "outputType", 'must be a string such as "String" or "Map"')
        # Which outputs each programmable reads: `ref` as a bare name or this.ref / this["ref"].
        reads: dict[str, list[str]] = {}
        for node in raw:
            source = str(node["source"])
            own = str(node["outputReference"])
            reads[own] = [ref for ref in refs if ref != own and _mentions(source, ref)]
        order = self._order(raw, reads)
        compiled: list[_Programmable] = []
        seen: list[str] = []
        for node in order:
            name = str(node["name"])
            ref = str(node["outputReference"])
            try:
                script = self.runtime.compile(
                    str(node["source"]), name=f"{self.name} / {name}", globals=(*DEFAULT_GLOBALS, *seen)
                )
            except ScriptError as exc:
                raise self.fail(name, "source", str(exc)) from None
            depends = tuple(str(refs[r]["id"]) for r in seen if r in reads[ref])
            compiled.append(
                _Programmable(
                    str(node["id"]), name, ref, str(node.get("outputType", "String")), script, depends
                )
            )
            seen.append(ref)
        return compiled

    def _order(self, raw: list[Mapping[str, Any]], reads: dict[str, list[str]]) -> list[Mapping[str, Any]]:
        """List order, except that a programmable runs after the ones whose outputs it reads."""
        pending = list(raw)
        done: set[str] = set()
        order: list[Mapping[str, Any]] = []
        while pending:
            for node in pending:
                if all(r in done for r in reads[str(node["outputReference"])]):
                    order.append(node)
                    done.add(str(node["outputReference"]))
                    pending.remove(node)
                    break
            else:
                names = ", ".join(f"'{n['name']}'" for n in pending)
                raise self.fail(
                    str(pending[0]["name"]),
                    "source",
                    f"programmables {names} read each other's outputs in a cycle",
                )
        return order

    def _table(self, node: Mapping[str, Any], ref_to_id: Mapping[str, str]) -> _Table:
        name = str(node["name"])
        policy = node.get("hitPolicy", "FIRST")
        if not isinstance(policy, str) or policy.strip().upper() != "FIRST":
            raise self.fail(
                name, "hitPolicy", f"{policy!r} is not supported; the sandbox evaluates FIRST only"
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
        labels: list[str] = []
        paths: list[Path] = []
        depends: list[str] = []
        for i, item in enumerate(inputs):
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
            try:
                root, steps = parse_path(expression)
            except DecisionModelError as exc:
                raise self.fail(name, f"{where}.expression", str(exc)) from None
            if root not in _CONTEXT_ROOTS and root not in ref_to_id:
                known = ", ".join([*DEFAULT_GLOBALS, *ref_to_id]) or "none"
                raise self.fail(
                    name,
                    f"{where}.expression",
                    f"{root!r} is not a context object or a programmable's output reference (known: {known})",
                )
            if root in ref_to_id and ref_to_id[root] not in depends:
                depends.append(ref_to_id[root])
            labels.append(label)
            paths.append((root, steps))
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
            where = f"rules[{r}]"
            if not isinstance(rule, Mapping):
                raise self.fail(name, where, "each rule must be an object {inputEntries, outputEntries}")
            entries = rule.get("inputEntries", [])
            results = rule.get("outputEntries", [])
            if not isinstance(entries, list) or len(entries) != len(paths):
                raise self.fail(
                    name, f"{where}.inputEntries", f"must be a list of {len(paths)} entries, one per input"
                )
            if not isinstance(results, list) or len(results) != len(compiled_outputs):
                raise self.fail(
                    name,
                    f"{where}.outputEntries",
                    f"must be a list of {len(compiled_outputs)} entries, one per output",
                )
            tests: list[tuple[int, Predicate]] = []
            for c, entry in enumerate(entries):
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
                if compiled_outputs[c].is_offer and value is not None and not isinstance(value, str):
                    raise self.fail(
                        name, f"{where}.outputEntries[{c}]", "an offer output must be a quoted offer ref"
                    )
                values.append(value)
            compiled_rules.append(_Rule(f"{prefix}_{r}", tuple(tests), tuple(values)))
        return _Table(
            id=str(node["id"]),
            name=name,
            labels=tuple(labels),
            paths=tuple(paths),
            outputs=tuple(compiled_outputs),
            rules=tuple(compiled_rules),
            depends_on=tuple(depends),
        )


def _mentions(source: str, ref: str) -> bool:
    """Does JS source read global ``ref`` (a bare name, not a property; or ``this.ref`` / ``this["ref"]``)?"""
    name = re.escape(ref)
    pattern = rf"(?<![\w$.]){name}(?![\w$])|\bthis\s*\.\s*{name}(?![\w$])|\bthis\s*\[\s*[\"']{name}[\"']\s*\]"
    return re.search(pattern, source) is not None
