"""A small, safe renderer for the FreeMarker subset used by Sitecore Personalize "API response" templates.

The sandbox renders an experience's template with a data model (``guest``, ``offers``,
``decisionModelResults`` ...) and sends the text back unchanged as the HTTP body, so the output must
match what FreeMarker produces, byte for byte, for the constructs real templates use. Templates and
offer attribute text are untrusted: nothing here calls ``eval``/``exec``, only dict keys (never Python
attributes) are reachable, and output size, loop iterations, ``?interpret`` depth and nesting are capped.

``Template.compile`` lexes and parses once into a tree of node objects; ``Template.render`` walks it.

A render has a time limit (``TIME_LIMIT_S``, checked at every loop iteration, interpolation and built-in:
one step is bounded by the size caps, so the check comes often enough), and running out of memory is a
clean :class:`TemplateLimitError`. The sandbox renders in a worker process that is killed if the cooperative
check ever fails to stop a render (``flowlab.sandbox.workers``). The ``?interpret`` compile cache is bounded
in characters of source (``INTERPRET_CACHE_CHARS``), not only in entries: parsed trees weigh ~12 bytes per
source character, and 256 entries of request data once held +481 MB.

Deliberate deviations from FreeMarker 2.3 (lenient where strictness buys nothing in a sandbox):

* ``${bool}`` prints ``true``/``false`` (FreeMarker needs ``?c`` or ``?string``); ``"x" + bool`` too.
* Numbers print in FreeMarker's default en_US format, ``#,##0.###`` (``1234567.891`` -> ``1,234,567.891``,
  ``3.14159`` -> ``3.142``), as real templates expect (hence their ``?c`` idiom, which prints ``1234567``);
  floats are Python floats, not BigDecimal (``(0.1 + 0.2)?c`` prints ``0.30000000000000004``).
* ``${x?interpret}`` prints the rendered text (FreeMarker wants ``<@x?interpret/>``); ``<@...>`` is text.
* ``?c`` on a string returns it unchanged; listing ``""`` (e.g. ``x!``) is an empty loop.
* Dates are numbers (epoch milliseconds, as Sitecore keeps them): ``?string("yyyy-MM-dd")`` on a number
  formats it in UTC (SimpleDateFormat basics); ``?datetime("yyyy-MM-dd'T'HH:mm")``, ``?date(...)``,
  ``?time(...)`` parse a string with such a pattern (``"iso"`` or no argument: ISO 8601) into one, and on a
  number pass it through, as do ``?number_to_datetime`` and friends.
* ``?replace(a, b, flags)``: ``r`` takes Java regular expressions as Python's ``re`` reads them (named
  groups ``(?<n>...)`` are translated; ``$1`` / ``${n}`` in ``b``), ``i``, ``f``, ``m``, ``s``, ``c``.
* ``.now`` is the current time as epoch milliseconds; ``?iso_local`` / ``?iso_utc`` (and ``_ms``) print a
  date number as ISO 8601 (``2024-05-01T09:30:00Z``): the sandbox's time zone is UTC, so local is UTC.
* Not supported: macros and ``<@...>`` calls, ``<#include>``/``<#import>``, ``<#switch>``, ``<#items>``,
  ``<#function>``, ``<#attempt>``, ranges (``1..3``), sequence slicing, ``<#setting>`` (locale, time zone),
  other special variables than ``.now``, and ``?eval``/``?new``/``?api``.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from difflib import get_close_matches
from typing import Any, NoReturn

__all__ = ["Template", "TemplateError", "TemplateLimitError", "render"]

MAX_OUTPUT = 1_000_000  # characters of output (and of any string or sequence a template builds)
MAX_ITERATIONS = 100_000  # <#list> iterations per render, nested ?interpret included
MAX_INTERPRET_DEPTH = 5
MAX_NESTING = 40  # nested directives
MAX_EXPR_DEPTH = 100  # nested expression nodes; keeps recursion far below Python's limit
MAX_SOURCE = 1_000_000
TIME_LIMIT_S = 0.5  # wall time per render, nested ?interpret included
INTERPRET_CACHE_CHARS = 250_000  # total source characters of ?interpret compilations kept (~36 bytes each)
INTERPRET_CACHE_ENTRY = 50_000  # larger ?interpret sources are compiled every time, never kept


class TemplateError(Exception):
    """Syntax or evaluation error; the message says what went wrong, where, and how to fix it."""

    def __init__(
        self, message: str, line: int | None = None, column: int | None = None, *, offset: int | None = None
    ) -> None:
        self.message = message
        self.line = line
        self.column = column
        self._offset = offset  # position in the source, turned into line/column by _locate
        super().__init__(self._text())

    def _text(self) -> str:
        return (
            self.message if self.line is None else f"line {self.line}, column {self.column}: {self.message}"
        )

    def _locate(self, source: str) -> None:
        if self.line is None and self._offset is not None:
            off = min(self._offset, len(source))
            self.line = source.count("\n", 0, off) + 1
            self.column = off - source.rfind("\n", 0, off)
            self.args = (self._text(),)


class TemplateLimitError(TemplateError):
    """A render was stopped by a limit: ``kind`` is "timeout" or "memory"."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(f"{kind}: {message}")


def _out_of_time() -> NoReturn:
    raise TemplateLimitError(
        "timeout", f"the template ran longer than {TIME_LIMIT_S * 1000:g} ms and was stopped"
    )


class _MissingError(TemplateError):
    """A null/undefined value was used; `(chain)!default` and `(chain)??` catch it."""

    def __init__(self, expr: str, offset: int) -> None:
        self.expr = self.chain = expr
        super().__init__(self._msg(), offset=offset)

    def _msg(self) -> str:
        e, c = _clip(self.expr), _clip(self.chain)
        if self.chain == self.expr:
            return f"'{e}' is missing (null or undefined); use {e}!\"\" to default it or {e}?? to test it"
        return (
            f"'{e}' is missing (null or undefined) in '{c}'; use ({c})!\"\" to default the whole chain "
            f"or ({c})?? to test it"
        )

    def extend(self, chain: str) -> None:
        self.chain = chain
        self.message = self._msg()
        self.args = (self._text(),)


class _Sentinel:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


_MISSING: Any = _Sentinel()
_NOARGS: list[Any] = []


class _BreakSignal(Exception):
    pass


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- values


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, Mapping):
        return "hash"
    if isinstance(v, (list, tuple)):
        return "sequence"
    return "function" if callable(v) else "unsupported value"


def _describe(v: Any) -> str:
    k = _kind(v)
    if v is _MISSING or v is None:
        return "missing"
    if k == "string":
        return f"a string ({_clip(json.dumps(v, ensure_ascii=False), 40)})"
    if k in ("number", "boolean"):
        return f"a {k} ({_fmt_num(v) if k == 'number' else str(v).lower()})"
    if k == "sequence":
        return f"a sequence ({len(v)} items)"
    return f"a {k}" if k != "unsupported value" else f"an unsupported value ({type(v).__name__})"


def _fmt_num(v: int | float) -> str:
    """Computer-friendly number text: ints as-is, integral floats without '.0', else repr."""
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return str(int(v))


_THOUSANDTH = Decimal("0.001")


def _fmt_default(v: int | float) -> str:
    """FreeMarker's default number format (en_US ``number``: ``#,##0.###``, half-even): ``1,234.568``.

    Real templates print prices and ids with ``${x}`` and rely on this grouping, hence their ``?c`` idiom.
    """
    if isinstance(v, int) or v.is_integer():
        return f"{int(v):,}"
    if not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("-∞" if v < 0 else "∞")
    q = Decimal(repr(v)).quantize(_THOUSANDTH, rounding=ROUND_HALF_EVEN, context=_DEC)
    whole, _, frac = f"{abs(q):f}".partition(".")
    text = f"{int(whole):,}" + ("." + frac.rstrip("0") if frac.rstrip("0") else "")
    return "-" + text if q < 0 and text != "0" else text


def _to_text(v: Any, node: _Expr) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _fmt_default(v)
    node.fail(f"can't print {_describe(v)}; only strings, numbers and booleans print (use toJSON(...))")


_JSON_FAST = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _to_json(value: Any) -> str:
    """toJSON(x): compact JSON, as Sitecore's template function returns it."""
    return _JSON_FAST.encode(value)


def _json_capped(node: _Expr, ctx: _Ctx, value: Any) -> str:
    """toJSON with the output cap; streams when the template built containers (shared references can
    make the JSON exponentially larger than the data)."""
    try:
        if not ctx.built:
            text = _JSON_FAST.encode(value)
        else:
            parts, size = [], 0
            for chunk in _JSON_FAST.iterencode(value):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    node.fail(f"output too large (over {MAX_OUTPUT} characters)")
                parts.append(chunk)
            text = "".join(parts)
    except (TypeError, ValueError, RecursionError) as e:
        node.fail(f"toJSON failed: {e}")
    if len(text) > MAX_OUTPUT:
        node.fail(f"output too large (over {MAX_OUTPUT} characters)")
    return text


_BUILTIN_FUNCS: dict[str, Callable[..., Any]] = {"toJSON": _to_json}


class _Ctx:
    """Per-render state; compiled templates stay immutable, so one can serve many threads."""

    __slots__ = ("vars", "funcs", "loops", "out", "size", "iterations", "depth", "built", "deadline")

    def __init__(
        self, variables: dict[str, Any], funcs: Mapping[str, Callable[..., Any]], deadline: float = math.inf
    ) -> None:
        self.vars = variables
        self.funcs = funcs
        self.loops: dict[str, _LoopState] = {}
        self.out: list[str] = []
        self.size = 0
        self.iterations = 0
        self.depth = 0
        self.built = False  # set once the template builds a sequence/hash (see _json_capped)
        self.deadline = deadline  # time.perf_counter() value past which the render stops

    def capture(self, body: Sequence[_Node]) -> str:
        """Render `body` into a string instead of the output (for ?interpret)."""
        saved_out, saved_size = self.out, self.size
        self.out = []
        try:
            for node in body:
                node.render(self)
            return "".join(self.out)
        finally:
            self.out, self.size = saved_out, saved_size


class _LoopState:
    __slots__ = ("index", "size")

    def __init__(self, size: int) -> None:
        self.index = 0
        self.size = size


# ----------------------------------------------------------------------------------------- expressions


class _Expr:
    """Expression node. `src`/`pos` let every error quote the template text it came from."""

    __slots__ = ("src", "pos", "depth")

    def __init__(self, src: str, pos: int, *children: _Expr) -> None:
        self.src = src
        self.pos = pos
        self.depth: int = 1 + max((c.depth for c in children), default=0)
        if self.depth > MAX_EXPR_DEPTH:
            raise TemplateError("expression is nested too deeply", offset=pos)

    def eval(self, ctx: _Ctx) -> Any:
        raise NotImplementedError

    def get(self, ctx: _Ctx) -> Any:
        """Like eval, but a missing last step gives _MISSING instead of an error (for !, ??)."""
        return self.eval(ctx)

    def fail(self, message: str) -> NoReturn:
        raise TemplateError(f"'{_clip(self.src)}': {message}", offset=self.pos)


class _Lit(_Expr):
    __slots__ = ("value",)

    def __init__(self, src: str, pos: int, value: Any) -> None:
        super().__init__(src, pos)
        self.value = value

    def eval(self, ctx: _Ctx) -> Any:
        return self.value


class _Now(_Expr):
    """``.now``: the render's current time, as epoch milliseconds (dates are numbers here)."""

    __slots__ = ()

    def eval(self, ctx: _Ctx) -> Any:
        return int(time.time() * 1000)


class _Var(_Expr):
    __slots__ = ("name",)

    def __init__(self, src: str, pos: int, name: str) -> None:
        super().__init__(src, pos)
        self.name = name

    def get(self, ctx: _Ctx) -> Any:
        v = ctx.vars.get(self.name)
        if v is None:
            v = ctx.funcs.get(self.name)
            if v is None:
                return _MISSING
        return v

    def eval(self, ctx: _Ctx) -> Any:
        v = self.get(ctx)
        if v is _MISSING:
            raise _MissingError(self.src, self.pos)
        return v


class _Step(_Expr):
    """Base of `a.b`, `a[k]`, `f(x)`, `x?bi`: evaluates the target and names the chain on errors."""

    __slots__ = ("target",)
    target: _Expr

    def target_value(self, ctx: _Ctx) -> Any:
        try:
            return self.target.eval(ctx)
        except _MissingError as e:
            e.extend(self.src)
            raise

    def eval(self, ctx: _Ctx) -> Any:
        v = self.get(ctx)
        if v is _MISSING:
            raise _MissingError(self.src, self.pos)
        return v


class _Dot(_Step):
    __slots__ = ("name",)

    def __init__(self, src: str, pos: int, target: _Expr, name: str) -> None:
        super().__init__(src, pos, target)
        self.target, self.name = target, name

    def get(self, ctx: _Ctx) -> Any:
        t = self.target_value(ctx)
        if not isinstance(t, Mapping):
            self.fail(
                f"'{_clip(self.target.src)}' is {_describe(t)}, not a hash, so it has no '.{self.name}'"
            )
        v = t.get(self.name)
        return _MISSING if v is None else v


class _Index(_Step):
    __slots__ = ("key",)

    def __init__(self, src: str, pos: int, target: _Expr, key: _Expr) -> None:
        super().__init__(src, pos, target, key)
        self.target, self.key = target, key

    def get(self, ctx: _Ctx) -> Any:
        t = self.target_value(ctx)
        k = self.key.eval(ctx)
        if isinstance(t, Mapping):
            if not isinstance(k, str):
                self.fail(f"a hash key must be a string, not {_describe(k)}")
            v = t.get(k)
        elif isinstance(t, (list, tuple, str)):
            if not _is_num(k) or (isinstance(k, float) and not k.is_integer()):
                self.fail(f"a sequence index must be a whole number, not {_describe(k)}")
            if k < 0:
                self.fail(f"negative index {_fmt_num(k)}")
            v = t[int(k)] if k < len(t) else None
        else:
            self.fail(
                f"'{_clip(self.target.src)}' is {_describe(t)}; only hashes and sequences can be indexed"
            )
        return _MISSING if v is None else v


class _Call(_Step):
    __slots__ = ("args",)

    def __init__(self, src: str, pos: int, target: _Expr, args: list[_Expr]) -> None:
        super().__init__(src, pos, target, *args)
        self.target, self.args = target, args

    def get(self, ctx: _Ctx) -> Any:
        if isinstance(self.target, _Var):
            f = self.target.get(ctx)
            if f is _MISSING:
                self.fail(f"unknown function '{self.target.name}'; known: {', '.join(sorted(ctx.funcs))}")
        else:
            f = self.target_value(ctx)
        if not callable(f):
            self.fail(f"'{_clip(self.target.src)}' is {_describe(f)}, not a function")
        args = [a.eval(ctx) for a in self.args]
        if f is _to_json:
            if len(args) != 1:
                self.fail(f"toJSON takes 1 argument, got {len(args)}")
            return _json_capped(self, ctx, args[0])
        try:
            r = f(*args)
        except TemplateError:
            raise
        except Exception as e:  # functions are trusted code, but their failures are template errors
            self.fail(f"function call failed: {type(e).__name__}: {e}")
        return _MISSING if r is None else r


class _Default(_Expr):
    """`x!default` / `x!`: only the last step of an unparenthesised chain may be missing."""

    __slots__ = ("target", "default")

    def __init__(self, src: str, pos: int, target: _Expr, default: _Expr | None) -> None:
        super().__init__(src, pos, target, *([default] if default else []))
        self.target, self.default = target, default

    def eval(self, ctx: _Ctx) -> Any:
        v = self.target.get(ctx)
        if v is _MISSING:
            return "" if self.default is None else self.default.eval(ctx)
        return v


class _Exists(_Expr):
    __slots__ = ("target",)

    def __init__(self, src: str, pos: int, target: _Expr) -> None:
        super().__init__(src, pos, target)
        self.target = target

    def eval(self, ctx: _Ctx) -> Any:
        return self.target.get(ctx) is not _MISSING


class _Paren(_Expr):
    """`(a.b.c)`: under `!`, `??`, ?has_content and ?default any missing step in it is tolerated."""

    __slots__ = ("inner",)

    def __init__(self, src: str, pos: int, inner: _Expr) -> None:
        super().__init__(src, pos, inner)
        self.inner = inner

    def eval(self, ctx: _Ctx) -> Any:
        return self.inner.eval(ctx)

    def get(self, ctx: _Ctx) -> Any:
        try:
            return self.inner.get(ctx)
        except _MissingError:
            return _MISSING


def _bool(node: _Expr, v: Any) -> bool:
    if v is True or v is False:
        return bool(v)
    hint = "; test strings with == or ?has_content" if isinstance(v, str) else "; use ?? or ?has_content"
    node.fail(f"expected a boolean but got {_describe(v)}{hint}")


class _Unary(_Expr):
    __slots__ = ("op", "operand")

    def __init__(self, src: str, pos: int, op: str, operand: _Expr) -> None:
        super().__init__(src, pos, operand)
        self.op, self.operand = op, operand

    def eval(self, ctx: _Ctx) -> Any:
        v = self.operand.eval(ctx)
        if self.op == "!":
            return not _bool(self.operand, v)
        n = _num(self.operand, v)
        return -n if self.op == "-" else n


class _Logic(_Expr):
    __slots__ = ("op", "left", "right")

    def __init__(self, src: str, pos: int, op: str, left: _Expr, right: _Expr) -> None:
        super().__init__(src, pos, left, right)
        self.op, self.left, self.right = op, left, right

    def eval(self, ctx: _Ctx) -> Any:
        a = _bool(self.left, self.left.eval(ctx))
        if a is (self.op == "||"):  # short-circuit: true || ..., false && ...
            return a
        return _bool(self.right, self.right.eval(ctx))


class _Binary(_Expr):
    __slots__ = ("op", "left", "right")

    def __init__(self, src: str, pos: int, op: str, left: _Expr, right: _Expr) -> None:
        super().__init__(src, pos, left, right)
        self.op, self.left, self.right = op, left, right

    def eval(self, ctx: _Ctx) -> Any:
        a, b, op = self.left.eval(ctx), self.right.eval(ctx), self.op
        if op in _COMPARE:
            return self.compare(a, b)
        if op == "+":
            return self.add(ctx, a, b)
        x, y = _num(self.left, a), _num(self.right, b)
        if op == "-":
            r = x - y
        elif op == "*":
            r = x * y
        elif y == 0:
            self.fail("division by zero")
        elif op == "/":
            r = x // y if isinstance(x, int) and isinstance(y, int) and x % y == 0 else x / y
        elif isinstance(x, float) or isinstance(y, float):
            r = math.fmod(x, y)  # Java's %: the sign follows the dividend
        else:
            r = abs(x) % abs(y) if x >= 0 else -(abs(x) % abs(y))
        if isinstance(r, int) and r.bit_length() > 256:
            self.fail("number too large")
        return r

    def compare(self, a: Any, b: Any) -> bool:
        op = self.op
        if type(a) is str and type(b) is str and op in ("==", "!="):
            return (a == b) is (op == "==")
        ka, kb = _kind(a), _kind(b)
        if ka != kb or ka not in ("string", "number", "boolean"):
            self.fail(f"can't compare {_describe(a)} with {_describe(b)}")
        if op == "==":
            return bool(a == b)
        if op == "!=":
            return bool(a != b)
        if ka != "number":
            self.fail(f"'{op}' only compares numbers, not {ka}s")
        return bool(_COMPARE[op](a, b))

    def add(self, ctx: _Ctx, a: Any, b: Any) -> Any:
        if isinstance(a, str) or isinstance(b, str):
            sa = a if isinstance(a, str) else _to_text(a, self.left)
            sb = b if isinstance(b, str) else _to_text(b, self.right)
            if len(sa) + len(sb) > MAX_OUTPUT:
                self.fail(f"string too large (over {MAX_OUTPUT} characters)")
            return sa + sb
        if _is_num(a) and _is_num(b):
            r = a + b
            if isinstance(r, int) and r.bit_length() > 256:
                self.fail("number too large")
            return r
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            if len(a) + len(b) > MAX_OUTPUT:
                self.fail("sequence too large")
            ctx.built = True
            return [*a, *b]
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            ctx.built = True
            return {**a, **b}
        self.fail(f"can't add {_describe(a)} and {_describe(b)}")


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class _ListLit(_Expr):
    __slots__ = ("items",)

    def __init__(self, src: str, pos: int, items: list[_Expr]) -> None:
        super().__init__(src, pos, *items)
        self.items = items

    def eval(self, ctx: _Ctx) -> Any:
        ctx.built = True
        return [i.eval(ctx) for i in self.items]


class _HashLit(_Expr):
    __slots__ = ("pairs",)

    def __init__(self, src: str, pos: int, pairs: list[tuple[_Expr, _Expr]]) -> None:
        super().__init__(src, pos, *[e for p in pairs for e in p])
        self.pairs = pairs

    def eval(self, ctx: _Ctx) -> Any:
        ctx.built = True
        out: dict[str, Any] = {}
        for k, v in self.pairs:
            key = k.eval(ctx)
            if not isinstance(key, str):
                k.fail(f"hash keys must be strings, not {_describe(key)}")
            out[key] = v.eval(ctx)
        return out


class _StrTemplate(_Expr):
    """A string literal with ${...} inside: "Hello ${name}"."""

    __slots__ = ("parts",)

    def __init__(self, src: str, pos: int, parts: list[str | _Expr]) -> None:
        super().__init__(src, pos, *[p for p in parts if isinstance(p, _Expr)])
        self.parts = parts

    def eval(self, ctx: _Ctx) -> Any:
        s = "".join(p if isinstance(p, str) else _to_text(p.eval(ctx), p) for p in self.parts)
        if len(s) > MAX_OUTPUT:
            self.fail(f"string too large (over {MAX_OUTPUT} characters)")
        return s


# -------------------------------------------------------------------------------------------- built-ins

_STRICT, _LENIENT, _LOOP = 0, 1, 2
_BuiltinFn = Callable[["_BuiltIn", _Ctx, Any, list[Any]], Any]


class _BuiltIn(_Step):
    __slots__ = ("name", "args", "fn", "mode")

    def __init__(self, src: str, pos: int, target: _Expr, name: str, args: list[_Expr]) -> None:
        super().__init__(src, pos, target, *args)
        self.target, self.name, self.args = target, name, args
        self.fn, _lo, _hi, self.mode = _BUILTINS[name]

    def get(self, ctx: _Ctx) -> Any:
        if time.perf_counter() > ctx.deadline:
            _out_of_time()
        if self.mode == _STRICT:
            v = self.target_value(ctx)
        elif self.mode == _LENIENT:
            v = self.target.get(ctx)
        else:
            v = ctx.loops.get(self.target.src)
            if v is None:
                self.fail(f"'{self.target.src}' is not the variable of an enclosing <#list>")
        args = [a.eval(ctx) for a in self.args] if self.args else _NOARGS
        try:
            r = self.fn(self, ctx, v, args)
        except TemplateError:
            raise
        except (ValueError, TypeError, ArithmeticError, RecursionError) as e:
            self.fail(f"?{self.name} failed: {e}")
        if r is None:
            return _MISSING
        if isinstance(r, str) and len(r) > MAX_OUTPUT:
            self.fail(f"string too large (over {MAX_OUTPUT} characters)")
        return r


def _s(n: _Expr, v: Any) -> str:
    """String argument; numbers convert like FreeMarker's string built-ins do (default format, grouped)."""
    if isinstance(v, str):
        return v
    if _is_num(v):
        return _fmt_default(v)
    n.fail(f"expected a string but got {_describe(v)}")


def _num(n: _Expr, v: Any) -> int | float:
    if _is_num(v):
        return v  # type: ignore[no-any-return]
    n.fail(f"expected a number but got {_describe(v)}")


def _seq(n: _Expr, v: Any) -> Sequence[Any]:
    if isinstance(v, (list, tuple)):
        return v
    n.fail(f"expected a sequence but got {_describe(v)}")


def _hash(n: _Expr, v: Any) -> Mapping[str, Any]:
    if isinstance(v, Mapping):
        return v
    n.fail(f"expected a hash but got {_describe(v)}")


_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DEC = Context(prec=1000)


def _bi_number(n: _BuiltIn, c: _Ctx, v: Any, a: list[Any]) -> Any:
    if _is_num(v):
        return v
    s = _s(n, v).strip()
    if not _NUMBER_RE.fullmatch(s) or len(s) > 400:
        n.fail(f"can't convert {_describe(v)} to a number")
    return int(s) if re.fullmatch(r"[+-]?[0-9]+", s) else float(s)


def _bi_string(n: _BuiltIn, c: _Ctx, v: Any, a: list[Any]) -> Any:
    if isinstance(v, bool):
        if len(a) == 2:
            return _s(n, a[0] if v else a[1])
        if a:
            n.fail('a boolean needs two arguments: ?string("yes", "no")')
        return "true" if v else "false"
    if _is_num(v) and len(a) < 2:
        return _fmt_pattern(n, v, _s(n, a[0])) if a else _fmt_default(v)
    if isinstance(v, str) and not a:
        return v
    n.fail(f"?string can't format {_describe(v)} with {len(a)} argument(s)")


def _fmt_pattern(n: _BuiltIn, v: int | float, pattern: str) -> str:
    """Java DecimalFormat-style patterns, the simple ones: 0, 0.00, #.##, #,##0.00, computer."""
    if pattern in ("c", "computer", "0.######"):
        return _fmt_num(v)
    if pattern == "number":
        pattern = "#,##0.###"
    if re.search(r"[A-Za-z]", pattern):
        return _fmt_date(n, v, pattern)
    if not re.fullmatch(r"[#,0]*(?:\.[0#]{0,30})?", pattern):
        n.fail(f'unsupported number format {pattern!r}; use patterns like "0.00" or "#,##0.##"')
    int_pat, _, frac_pat = pattern.partition(".")
    try:
        q = Decimal(repr(v) if isinstance(v, float) else v).quantize(
            Decimal(1).scaleb(-len(frac_pat)), rounding=ROUND_HALF_EVEN, context=_DEC
        )
    except InvalidOperation:
        return _fmt_num(v)
    int_s, _, frac_s = f"{abs(q):f}".partition(".")
    frac_s = frac_s.rstrip("0").ljust(frac_pat.count("0"), "0")
    int_s = int_s.lstrip("0").rjust(int_pat.count("0"), "0")
    if "," in int_pat and int_s:
        int_s = f"{int(int_s):,}"
    text = int_s + ("." + frac_s if frac_s else "") or "0"
    return "-" + text if q < 0 and text.strip("0.") else text


_DATE_TOKEN_RE = re.compile(r"'[^']*'|([A-Za-z])\1*|.", re.DOTALL)
_MONTHS = "January February March April May June July August September October November December".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


def _fmt_date(n: _BuiltIn, millis: int | float, pattern: str) -> str:
    """Java SimpleDateFormat basics for epoch milliseconds (Sitecore keeps dates as epoch), in UTC."""
    try:
        dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    except OverflowError:
        n.fail(f"{_fmt_num(millis)} is out of range for a date (epoch milliseconds)")
    out: list[str] = []
    num = {"y": dt.year, "d": dt.day, "H": dt.hour, "h": dt.hour % 12 or 12, "m": dt.minute, "s": dt.second}
    for m in _DATE_TOKEN_RE.finditer(pattern):
        tok, c, k = m.group(), m.group()[0], len(m.group())
        if c == "'":
            out.append(tok[1:-1] or "'")
        elif c == "y" and k == 2:
            out.append(f"{dt.year % 100:02d}")
        elif c in num:
            out.append(f"{num[c]:0{k}d}")
        elif c == "M":
            out.append(_MONTHS[dt.month - 1][: None if k > 3 else 3] if k >= 3 else f"{dt.month:0{k}d}")
        elif c == "E":
            out.append(_DAYS[dt.weekday()][: None if k > 3 else 3])
        elif c == "S":
            out.append(f"{dt.microsecond // 1000:03d}")
        elif c == "a":
            out.append("AM" if dt.hour < 12 else "PM")
        elif c in "XZ":
            out.append("Z" if c == "X" else "+0000")
        elif c.isalpha():
            n.fail(f"unsupported date format letter {c!r} in {pattern!r}")
        else:
            out.append(tok)
    return "".join(out)


def _iso(n: _BuiltIn, millis: Any, *, ms: bool = False) -> str:
    """``?iso_utc`` / ``?iso_local``: ISO 8601 of epoch milliseconds; the sandbox's time zone is UTC."""
    number = _num(n, millis)
    return _fmt_date(n, number, "yyyy-MM-dd'T'HH:mm:ss" + (".SSS" if ms else "")) + "Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_ZONE = r"(Z|[+-]\d{2}(?::?\d{2})?)"
_PARSE_FIELDS = {"d": "day", "H": "hour", "h": "hour12", "m": "minute", "s": "second", "S": "ms"}


def _date_bi(kind: str) -> _BuiltinFn:
    """``?datetime`` / ``?date`` / ``?time``: parse a string into a date (epoch milliseconds, UTC).

    With a SimpleDateFormat pattern (``?datetime("yyyy-MM-dd'T'HH:mm")``), or ``"iso"`` / no argument for
    ISO 8601. On a number (already a date here) they pass it through, as FreeMarker only retypes the value.
    """

    def parse(n: _BuiltIn, c: _Ctx, v: Any, a: list[Any]) -> Any:
        if _is_num(v):
            return v
        text = _s(n, v).strip()
        pattern = _s(n, a[0]) if a else "iso"
        try:
            if pattern in ("iso", "xs"):
                return _iso_millis(text, kind)
            return _pattern_millis(n, text, pattern)
        except ValueError as e:
            example = f'?{kind}("yyyy-MM-dd HH:mm:ss")' if pattern in ("iso", "xs") else ""
            n.fail(
                f"can't parse {_clip(json.dumps(text, ensure_ascii=False))} as a {kind} with the pattern "
                f"{pattern!r} ({e})" + (f"; give its pattern, e.g. {example}" if example else "")
            )

    return parse


def _iso_millis(text: str, kind: str) -> int:
    if kind == "time":
        t = datetime.fromisoformat(
            "1970-01-01T" + text.removesuffix("Z") + ("+00:00" if text.endswith("Z") else "")
        )
    else:
        t = datetime.fromisoformat(text)
    return _millis(t)


def _millis(t: datetime) -> int:
    return ((t if t.tzinfo else t.replace(tzinfo=UTC)) - _EPOCH) // _MS


def _pattern_millis(n: _BuiltIn, text: str, pattern: str) -> int:
    """Parse with a Java SimpleDateFormat pattern (the letters ``_fmt_date`` prints); the zone is UTC."""
    parts: list[str] = []
    fields: list[tuple[str, int]] = []
    for m in _DATE_TOKEN_RE.finditer(pattern):
        tok, ch, k = m.group(), m.group()[0], len(m.group())
        if ch == "'":
            parts.append(re.escape(tok[1:-1] or "'"))
            continue
        if ch == "y":
            parts.append(r"(\d{2})" if k == 2 else r"(\d{4})")
        elif ch == "M":
            names = "|".join(_MONTHS + [x[:3] for x in _MONTHS])
            parts.append(f"({names})" if k >= 3 else r"(\d{1,2})")
        elif ch in _PARSE_FIELDS:
            parts.append(r"(\d{1,3})" if ch == "S" else r"(\d{1,2})")
        elif ch == "E":
            parts.append("(" + "|".join(_DAYS + [x[:3] for x in _DAYS]) + ")")
        elif ch == "a":
            parts.append("(AM|PM)")
        elif ch in "XZ":
            parts.append(_ZONE)
        elif ch.isalpha():
            n.fail(f"unsupported date format letter {ch!r} in {pattern!r}")
        else:
            parts.append(re.escape(tok))
            continue
        fields.append((ch, k))
    found = re.fullmatch("".join(parts), text, re.IGNORECASE)
    if found is None:
        raise ValueError("the text does not match the pattern")
    value = {"y": 1970, "M": 1, "d": 1, "H": 0, "m": 0, "s": 0, "S": 0}
    pm, zone = None, timedelta(0)
    for (ch, k), got in zip(fields, found.groups(), strict=True):
        if ch == "y":
            value["y"] = 2000 + int(got) if k == 2 else int(got)
        elif ch == "M" and k >= 3:
            value["M"] = [x[:3].lower() for x in _MONTHS].index(got[:3].lower()) + 1
        elif ch == "h":
            value["H"] = int(got) % 12
        elif ch == "a":
            pm = got.upper() == "PM"
        elif ch in "XZ":
            if got.upper() != "Z":
                sign = -1 if got[0] == "-" else 1
                digits = got[1:].replace(":", "")
                zone = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        elif ch != "E":
            value[ch] = int(got)
    if pm is not None:
        value["H"] = value["H"] % 12 + (12 if pm else 0)
    t = datetime(value["y"], value["M"], value["d"], value["H"], value["m"], value["s"],
                 value["S"] * 1000, tzinfo=UTC)  # fmt: skip
    return _millis(t - zone)


def _bi_join(n: _BuiltIn, c: _Ctx, v: Any, a: list[Any]) -> Any:
    items = [_to_text(i, n) for i in _seq(n, v) if i is not None]
    sep = _s(n, a[0])
    if not items:
        return _s(n, a[1]) if len(a) > 1 else ""
    suffix = _s(n, a[2]) if len(a) > 2 else ""
    if sum(map(len, items)) + len(sep) * len(items) + len(suffix) > MAX_OUTPUT:
        n.fail(f"string too large (over {MAX_OUTPUT} characters)")
    return sep.join(items) + suffix


_REPLACE_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "c": re.VERBOSE, "r": 0, "f": 0}
_JAVA_REF = re.compile(r"\\(.?)|\$(\d+)|\$\{([A-Za-z][A-Za-z0-9]*)\}|(\$)", re.DOTALL)


def _bi_replace(n: _BuiltIn, c: _Ctx, v: Any, a: list[Any]) -> Any:
    """``?replace(a, b)`` and ``?replace(a, b, flags)``: r regex (Java syntax, ``$1`` in b), i, f first only."""
    s, old, new = _s(n, v), _s(n, a[0]), _s(n, a[1])
    flags = _s(n, a[2]) if len(a) > 2 else ""
    unknown = sorted(set(flags) - set(_REPLACE_FLAGS))
    if unknown:
        n.fail(f"unknown ?replace flag(s) {''.join(unknown)!r}; use r (regular expression), i (ignore case), "
               "f (first only), m (multi-line), s (dot matches newline), c (comments)")  # fmt: skip
    if not set(flags) - {"f"}:
        count = min(1, s.count(old)) if "f" in flags else (len(s) + 1 if not old else s.count(old))
        if len(s) + count * (len(new) - len(old)) > MAX_OUTPUT:
            n.fail(f"string too large (over {MAX_OUTPUT} characters)")
        return s.replace(old, new, 1) if "f" in flags else s.replace(old, new)
    re_flags = 0
    for f in flags:
        re_flags |= _REPLACE_FLAGS[f]
    source = re.sub(r"\(\?<(?=[A-Za-z])", "(?P<", old) if "r" in flags else re.escape(old)
    try:
        compiled = re.compile(source, re_flags)
    except re.error as e:
        n.fail(f"invalid regular expression {_clip(old)!r}: {e}")
    parts = _java_parts(n, compiled, new) if "r" in flags else [(False, new)]
    refs = sum(1 for is_group, _ in parts if is_group)
    count = 1 if "f" in flags else 0
    # Matches do not overlap, so group references copy at most len(s) each: this bounds the result.
    if len(s) + (len(s) + 1) * len(new) + refs * len(s) <= _REPLACE_FAST_BOUND:
        template = "".join(rf"\g<{v}>" if is_group else v.replace("\\", r"\\") for is_group, v in parts)
        out = compiled.sub(template, s, count=count)  # re's own expansion, no Python call per match
        if len(out) > MAX_OUTPUT:
            n.fail(f"string too large (over {MAX_OUTPUT} characters)")
        return out
    grown = 0
    groups = [(is_group, int(v) if v.isdigit() else v) for is_group, v in parts]

    def one(m: re.Match[str]) -> str:
        nonlocal grown
        if time.perf_counter() > c.deadline:
            _out_of_time()
        text = "".join((m.group(v) or "") if is_group else str(v) for is_group, v in groups)
        grown += len(text) - (m.end() - m.start())
        if len(s) + grown > MAX_OUTPUT:
            n.fail(f"string too large (over {MAX_OUTPUT} characters)")
        return text

    return compiled.sub(one, s, count=count)


_REPLACE_FAST_BOUND = 8 * MAX_OUTPUT  # characters a regex ?replace may build before its size check


def _java_parts(n: _BuiltIn, compiled: re.Pattern[str], template: str) -> list[tuple[bool, str]]:
    """Java's Matcher replacement (``$1``, ``${name}``, ``\\$``) as (is a group, literal or group) parts."""
    parts: list[tuple[bool, str]] = []
    at = 0
    for r in _JAVA_REF.finditer(template):
        parts.append((False, template[at : r.start()]))
        at = r.end()
        escaped, number, name, lone = r.groups()
        if escaped == "":
            n.fail("the replacement ends with a lone backslash; write \\\\ for a backslash")
        if lone is not None:
            n.fail("a lone '$' in a regular-expression replacement; write \\$ for a dollar sign")
        if escaped is not None:
            parts.append((False, escaped))
            continue
        group = number if number is not None else name
        if (int(number) > compiled.groups) if number is not None else (name not in compiled.groupindex):
            n.fail(f"the replacement refers to group {group}, which the expression does not have")
        parts.append((True, group))
    parts.append((False, template[at:]))
    return [p for p in parts if p[0] or p[1]]


def _bi_split(n: _BuiltIn, c: _Ctx, v: Any, a: list[Any]) -> Any:
    sep = _s(n, a[0])
    if not sep:
        n.fail("?split needs a non-empty separator")
    return _s(n, v).split(sep)


def _bi_interpret(n: _BuiltIn, c: _Ctx, v: Any, a: list[Any]) -> Any:
    if c.depth >= MAX_INTERPRET_DEPTH:
        n.fail(f"?interpret nested more than {MAX_INTERPRET_DEPTH} levels deep")
    try:
        tpl = _compile_cached(_s(n, v))
    except TemplateError as e:
        n.fail(f"the interpreted text has a syntax error: {e}")
    c.depth += 1
    try:
        return c.capture(tpl._nodes)
    except TemplateLimitError:
        raise
    except TemplateError as e:
        e._locate(tpl.source)
        n.fail(f"error in the interpreted text: {e}")
    finally:
        c.depth -= 1


def _loop_bi(fn: Callable[[_LoopState], Any]) -> tuple[_BuiltinFn, int, int, int]:
    return (lambda n, c, v, a: fn(v)), 0, 0, _LOOP


def _str_bi(fn: Callable[[str], Any]) -> tuple[_BuiltinFn, int, int, int]:
    return (lambda n, c, v, a: fn(_s(n, v))), 0, 0, _STRICT


def _has_content(v: Any) -> bool:
    return v is not _MISSING and (not isinstance(v, (str, list, tuple, Mapping)) or len(v) > 0)


def _type_bi(kind: str) -> tuple[_BuiltinFn, int, int, int]:
    return (lambda n, c, v, a: _kind(v) == kind), 0, 0, _STRICT


def _size(n: _BuiltIn, v: Any) -> int:
    if isinstance(v, (list, tuple, Mapping)):
        return len(v)
    n.fail(
        f"?size needs a sequence or hash, not {_describe(v)}"
        + ("; use ?length" if isinstance(v, str) else "")
    )


def _first_last(i: int) -> _BuiltinFn:
    return lambda n, c, v, a: _seq(n, v)[i] if _seq(n, v) else None


_BUILTINS: dict[str, tuple[_BuiltinFn, int, int, int]] = {
    "has_content": ((lambda n, c, v, a: _has_content(v)), 0, 0, _LENIENT),
    "default": ((lambda n, c, v, a: a[0] if v is _MISSING else v), 1, 1, _LENIENT),
    "is_hash": _type_bi("hash"),
    "is_sequence": _type_bi("sequence"),
    "is_string": _type_bi("string"),
    "is_number": _type_bi("number"),
    "is_boolean": _type_bi("boolean"),
    "size": ((lambda n, c, v, a: _size(n, v)), 0, 0, _STRICT),
    "length": _str_bi(len),
    "string": (_bi_string, 0, 2, _STRICT),
    "c": (
        (lambda n, c, v, a: _fmt_num(v) if _is_num(v) else v if isinstance(v, str) else _to_text(v, n)),
        0,
        0,
        _STRICT,
    ),
    "upper_case": _str_bi(str.upper),
    "lower_case": _str_bi(str.lower),
    "cap_first": _str_bi(lambda s: re.sub(r"\S", lambda m: m.group().upper(), s, count=1)),
    "trim": _str_bi(str.strip),
    "json_string": _str_bi(lambda s: json.dumps(s, ensure_ascii=False)[1:-1]),
    "html": _str_bi(
        lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    ),
    "number": (_bi_number, 0, 0, _STRICT),
    "number_to_datetime": ((lambda n, c, v, a: _num(n, v)), 0, 0, _STRICT),  # dates stay epoch millis
    "number_to_date": ((lambda n, c, v, a: _num(n, v)), 0, 0, _STRICT),
    "number_to_time": ((lambda n, c, v, a: _num(n, v)), 0, 0, _STRICT),
    "datetime": (_date_bi("datetime"), 0, 1, _STRICT),
    "date": (_date_bi("date"), 0, 1, _STRICT),
    "time": (_date_bi("time"), 0, 1, _STRICT),
    "iso_local": ((lambda n, c, v, a: _iso(n, v)), 0, 0, _STRICT),
    "iso_utc": ((lambda n, c, v, a: _iso(n, v)), 0, 0, _STRICT),
    "iso_local_ms": ((lambda n, c, v, a: _iso(n, v, ms=True)), 0, 0, _STRICT),
    "iso_utc_ms": ((lambda n, c, v, a: _iso(n, v, ms=True)), 0, 0, _STRICT),
    "long": ((lambda n, c, v, a: int(_num(n, _bi_number(n, c, v, a)))), 0, 0, _STRICT),
    "int": ((lambda n, c, v, a: int(_num(n, v))), 0, 0, _STRICT),
    "round": ((lambda n, c, v, a: v if isinstance(_num(n, v), int) else math.floor(v + 0.5)), 0, 0, _STRICT),
    "floor": ((lambda n, c, v, a: math.floor(_num(n, v))), 0, 0, _STRICT),
    "ceiling": ((lambda n, c, v, a: math.ceil(_num(n, v))), 0, 0, _STRICT),
    "abs": ((lambda n, c, v, a: abs(_num(n, v))), 0, 0, _STRICT),
    "replace": (_bi_replace, 2, 3, _STRICT),
    "contains": ((lambda n, c, v, a: _s(n, a[0]) in _s(n, v)), 1, 1, _STRICT),
    "starts_with": ((lambda n, c, v, a: _s(n, v).startswith(_s(n, a[0]))), 1, 1, _STRICT),
    "ends_with": ((lambda n, c, v, a: _s(n, v).endswith(_s(n, a[0]))), 1, 1, _STRICT),
    "split": (_bi_split, 1, 1, _STRICT),
    "join": (_bi_join, 1, 3, _STRICT),
    "first": (_first_last(0), 0, 0, _STRICT),
    "last": (_first_last(-1), 0, 0, _STRICT),
    "keys": ((lambda n, c, v, a: list(_hash(n, v).keys())), 0, 0, _STRICT),
    "values": ((lambda n, c, v, a: list(_hash(n, v).values())), 0, 0, _STRICT),
    "then": ((lambda n, c, v, a: a[0] if _bool(n.target, v) else a[1]), 2, 2, _STRICT),
    "interpret": (_bi_interpret, 0, 0, _STRICT),
    "index": _loop_bi(lambda st: st.index),
    "counter": _loop_bi(lambda st: st.index + 1),
    "has_next": _loop_bi(lambda st: st.index + 1 < st.size),
    "is_first": _loop_bi(lambda st: st.index == 0),
    "is_last": _loop_bi(lambda st: st.index + 1 == st.size),
}


# -------------------------------------------------------------------------------------------- directives


class _Node:
    __slots__ = ()

    def render(self, ctx: _Ctx) -> None:
        raise NotImplementedError


def _too_large() -> NoReturn:
    raise TemplateError(f"output too large (over {MAX_OUTPUT} characters)")


class _Text(_Node):
    __slots__ = ("text", "n")

    def __init__(self, text: str) -> None:
        self.text, self.n = text, len(text)

    def render(self, ctx: _Ctx) -> None:
        ctx.out.append(self.text)
        ctx.size += self.n


class _Interp(_Node):
    __slots__ = ("expr",)

    def __init__(self, expr: _Expr) -> None:
        self.expr = expr

    def render(self, ctx: _Ctx) -> None:
        if time.perf_counter() > ctx.deadline:
            _out_of_time()
        v = self.expr.eval(ctx)
        s = v if type(v) is str else _to_text(v, self.expr)
        ctx.out.append(s)
        ctx.size += len(s)
        if ctx.size > MAX_OUTPUT:
            _too_large()


class _If(_Node):
    __slots__ = ("branches",)

    def __init__(self, branches: list[tuple[_Expr | None, tuple[_Node, ...]]]) -> None:
        self.branches = branches

    def render(self, ctx: _Ctx) -> None:
        for cond, body in self.branches:
            if cond is None or _bool(cond, cond.eval(ctx)):
                for node in body:
                    node.render(ctx)
                return


class _List(_Node):
    __slots__ = ("seq", "names", "body", "else_body")

    def __init__(
        self, seq: _Expr, names: list[str], body: tuple[_Node, ...], else_body: tuple[_Node, ...]
    ) -> None:
        self.seq, self.names, self.body, self.else_body = seq, names, body, else_body

    def render(self, ctx: _Ctx) -> None:
        seq, names = self.seq.eval(ctx), self.names
        items: Sequence[Any]
        if isinstance(seq, Mapping):
            if len(names) != 2:
                self.seq.fail(f"is a hash; list it with <#list {_clip(self.seq.src)} as key, value>")
            items = list(seq.items())
        elif isinstance(seq, (list, tuple)) and len(names) == 1:
            items = seq
        elif seq == "":  # the empty default of x! is an empty sequence too
            items = ()
        else:
            self.seq.fail(f"can't list {_describe(seq)}" + ("; use 'as x'" if isinstance(seq, list) else ""))
        if not items:
            for node in self.else_body:
                node.render(ctx)
            return
        variables, loops, state = ctx.vars, ctx.loops, _LoopState(len(items))
        saved = [(name, variables.get(name, _MISSING), loops.get(name)) for name in names]
        for name in names:
            loops[name] = state
        try:
            for i, item in enumerate(items):
                ctx.iterations += 1
                if ctx.iterations > MAX_ITERATIONS:
                    raise TemplateError(
                        f"too many loop iterations (over {MAX_ITERATIONS})", offset=self.seq.pos
                    )
                if ctx.size > MAX_OUTPUT:
                    _too_large()
                if time.perf_counter() > ctx.deadline:
                    _out_of_time()
                state.index = i
                if len(names) == 2:
                    variables[names[0]], variables[names[1]] = item
                else:
                    variables[names[0]] = item
                try:
                    for node in self.body:
                        node.render(ctx)
                except _BreakSignal:
                    break
        finally:
            for name, value, loop in saved:
                if value is _MISSING:
                    variables.pop(name, None)
                else:
                    variables[name] = value
                if loop is None:
                    loops.pop(name, None)
                else:
                    loops[name] = loop


class _Sep(_Node):
    __slots__ = ("loop", "body")

    def __init__(self, loop: str, body: tuple[_Node, ...]) -> None:
        self.loop, self.body = loop, body

    def render(self, ctx: _Ctx) -> None:
        st = ctx.loops.get(self.loop)
        if st is not None and st.index + 1 < st.size:
            for node in self.body:
                node.render(ctx)


class _Assign(_Node):
    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, _Expr]]) -> None:
        self.pairs = pairs

    def render(self, ctx: _Ctx) -> None:
        for name, expr in self.pairs:
            ctx.vars[name] = expr.eval(ctx)


class _Break(_Node):
    __slots__ = ()

    def render(self, ctx: _Ctx) -> None:
        raise _BreakSignal


# ----------------------------------------------------------------------------------------------- lexer

_Tok = tuple[str, str, int]  # (kind, text, offset); kind is num, str, name or op
_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
    |(?P<num>[0-9]+(?:\.[0-9]+)?)
    |(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|r"[^"]*"|r'[^']*')
    |(?P<name>[^\W\d]\w*)
    |(?P<op>\?\?|==|!=|<=|>=|&&|\|\||[-+*/%!?.,:()\[\]{}<>=])""",
    re.VERBOSE | re.DOTALL,
)
_MARK_RE = re.compile(r"<#--|</?#(?=[A-Za-z_])|\$\{")
_NAME_RE = re.compile(r"[A-Za-z_]\w*")
_END_TAG_RE = re.compile(r"</#([A-Za-z_]\w*)\s*>")
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{1,4}|.)", re.DOTALL)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "l": "<", "g": ">", "a": "&", "{": "{"}
_ESCAPES.update({c: c for c in "\"'\\="})
_PAIRS = {"(": ")", "[": "]", "{": "}"}


def _scan_expr(
    src: str, pos: int, closer: str, limit: int, what: str, start: int
) -> tuple[list[_Tok], int, bool]:
    """Tokenise an expression up to its closing `}` or `>` (or `/>`) at bracket depth 0.

    Returns (tokens, offset after the closer, self-closed). Like FreeMarker, a bare `>` ends a tag:
    write `(a > b)` or `a gt b` inside directives.
    """
    toks: list[_Tok] = []
    stack: list[str] = []  # open brackets
    while pos < limit:
        c = src[pos]
        if not stack:
            if c == closer:
                return toks, pos + 1, False
            if closer == ">" and src.startswith("/>", pos):
                return toks, pos + 2, True
        m = _TOKEN_RE.match(src, pos, limit)
        if m is None:
            problem = "unterminated string literal" if c in "\"'" else f"unexpected character {c!r}"
            raise TemplateError(f"{problem} in {what}", offset=pos)
        kind = m.lastgroup or "ws"
        if kind != "ws":
            text = m.group()
            if text in _PAIRS:
                stack.append(_PAIRS[text])
            elif stack and text == stack[-1]:
                stack.pop()
            elif text == closer == "}":  # "${(a}": end here and let the parser say what is missing
                return toks, pos + 1, False
            toks.append((kind, text, pos))
        pos = m.end()
    raise TemplateError(f"unclosed {what}: missing '{closer}'", offset=start)


class _Atom:
    """A lexed template piece: text, interp (${}), tag (<#x>), end (</#x>) or comment."""

    __slots__ = ("kind", "pos", "text", "toks", "end")

    def __init__(
        self, kind: str, pos: int, text: str = "", toks: list[_Tok] | None = None, end: int = 0
    ) -> None:
        self.kind, self.pos, self.text, self.toks, self.end = kind, pos, text, toks or [], end


def _lex(src: str) -> list[_Atom]:
    atoms: list[_Atom] = []
    pos, n = 0, len(src)
    while pos < n:
        m = _MARK_RE.search(src, pos)
        if m is None:
            atoms.append(_Atom("text", pos, src[pos:]))
            break
        start, mark = m.start(), m.group()
        if start > pos:
            atoms.append(_Atom("text", pos, src[pos:start]))
        if mark == "<#--":
            close = src.find("-->", m.end())
            if close < 0:
                raise TemplateError("unclosed comment: <#-- has no -->", offset=start)
            atoms.append(_Atom("comment", start))
            pos = close + 3
        elif mark == "${":
            toks, pos, _ = _scan_expr(src, m.end(), "}", n, "${...}", start)
            atoms.append(_Atom("interp", start, toks=toks, end=pos - 1))
        elif mark == "<#":
            name_m = _NAME_RE.match(src, m.end())
            assert name_m is not None  # guaranteed by the lookahead in _MARK_RE
            toks, pos, closed = _scan_expr(src, name_m.end(), ">", n, f"<#{name_m.group()} tag", start)
            atoms.append(_Atom("tag", start, name_m.group(), toks, pos - (2 if closed else 1)))
        else:
            end_m = _END_TAG_RE.match(src, start)
            if end_m is None:
                raise TemplateError("malformed end tag; expected </#name>", offset=start)
            atoms.append(_Atom("end", start, end_m.group(1)))
            pos = end_m.end()
    return atoms


def _strip_whitespace(atoms: list[_Atom]) -> list[_Atom]:
    """FreeMarker white-space stripping: a line holding only FTL tags/comments and white-space loses the
    white-space, its line break included."""
    pieces: list[_Atom] = []
    for a in atoms:
        if a.kind == "text":
            pieces.extend(_Atom("text", a.pos + m.start(), m.group()) for m in _LINE_RE.finditer(a.text))
        else:
            pieces.append(a)
    out: list[_Atom] = []
    line: list[_Atom] = []

    def flush() -> None:
        only_tags = any(p.kind in ("tag", "end", "comment") for p in line) and all(
            p.kind in ("tag", "end", "comment") or (p.kind == "text" and not p.text.strip(" \t\r\n"))
            for p in line
        )
        for p in line:
            if p.kind == "text" and out and out[-1].kind == "text":
                if not only_tags:
                    out[-1] = _Atom("text", out[-1].pos, out[-1].text + p.text)
            elif not (only_tags and p.kind == "text"):
                out.append(p)
        line.clear()

    for p in pieces:
        line.append(p)
        if p.kind == "text" and p.text[-1] in "\r\n":
            flush()
    flush()
    return out


def _unescape(body: str, offset: int) -> str:
    def sub(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] == "x" and len(e) > 1:
            code = int(e[1:], 16)
            if 0xD800 <= code <= 0xDFFF:
                raise TemplateError(f"invalid character escape \\{e}", offset=offset + m.start())
            return chr(code)
        if e not in _ESCAPES:
            raise TemplateError(f"unknown escape \\{e} in string literal", offset=offset + m.start())
        return _ESCAPES[e]

    return _ESCAPE_RE.sub(sub, body) if "\\" in body else body


# ---------------------------------------------------------------------------------------------- parser

_LEVELS: list[frozenset[str]] = [
    frozenset({"||"}),
    frozenset({"&&"}),
    frozenset({"==", "!=", "="}),
    frozenset({"<", "<=", ">", ">=", "lt", "lte", "gt", "gte"}),
    frozenset({"+", "-"}),
    frozenset({"*", "/", "%"}),
]
_CANON = {"=": "==", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_KEYWORDS = frozenset({"as", "lt", "lte", "gt", "gte", "using"})


class _ExprParser:
    """Recursive descent over one expression's tokens, FreeMarker precedence."""

    def __init__(self, src: str, toks: list[_Tok], end: int) -> None:
        self.src, self.toks, self.end, self.i, self.nest = src, toks, end, 0, 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def at(self, *texts: str) -> bool:
        t = self.peek()
        return t is not None and t[0] in ("op", "name") and t[1] in texts

    def error(self, message: str) -> NoReturn:
        t = self.peek()
        raise TemplateError(message, offset=t[2] if t else self.end)

    def expect(self, text: str, context: str) -> None:
        if not self.at(text):
            t = self.peek()
            self.error(f"expected '{text}' {context}, found " + (f"'{t[1]}'" if t else "the end"))
        self.i += 1

    def name(self, context: str) -> str:
        t = self.peek()
        if t is None or t[0] != "name":
            self.error(f"expected a name {context}")
        self.i += 1
        return t[1]

    def span(self, start: int) -> str:
        kind, text, pos = self.toks[self.i - 1]
        return self.src[start : pos + len(text)]

    def whole(self, context: str) -> _Expr:
        """Parse one expression that must use all the tokens."""
        e = self.expr()
        if self.peek() is not None:
            self.error(f"unexpected '{self.toks[self.i][1]}' {context}")
        return e

    def expr(self) -> _Expr:
        self.nest += 1
        if self.nest > MAX_EXPR_DEPTH:
            self.error("expression is nested too deeply")
        try:
            return self.binary(0)
        finally:
            self.nest -= 1

    def binary(self, level: int) -> _Expr:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        ops = _LEVELS[level]
        while (t := self.peek()) is not None and t[0] in ("op", "name") and t[1] in ops:
            self.i += 1
            right = self.binary(level + 1)
            op, src = _CANON.get(t[1], t[1]), self.span(left.pos)
            left = (
                _Logic(src, left.pos, op, left, right)
                if level < 2
                else _Binary(src, left.pos, op, left, right)
            )
        return left

    def unary(self) -> _Expr:
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] in ("!", "-", "+"):
            self.i += 1
            self.nest += 1
            if self.nest > MAX_EXPR_DEPTH:
                self.error("expression is nested too deeply")
            operand = self.unary()
            self.nest -= 1
            return _Unary(self.span(t[2]), t[2], t[1], operand)
        return self.postfix()

    def can_start(self) -> bool:
        t = self.peek()
        if t is None:
            return False
        return t[0] in ("num", "str") or (t[0] == "name" and t[1] not in _KEYWORDS) or t[1] in "([{!-+"

    def postfix(self) -> _Expr:
        node = self.primary()
        start = node.pos
        while (t := self.peek()) is not None and t[0] == "op":
            op = t[1]
            if op == ".":
                self.i += 1
                name = self.name("after '.'")
                node = _Dot(self.span(start), start, node, name)
            elif op == "[":
                self.i += 1
                key = self.expr()
                self.expect("]", "to close '['")
                node = _Index(self.span(start), start, node, key)
            elif op == "(":
                self.i += 1
                args = self.items(")")
                node = _Call(self.span(start), start, node, args)
            elif op == "?":
                self.i += 1
                node = self.builtin(node, start)
            elif op == "??":
                self.i += 1
                node = _Exists(self.span(start), start, node)
            elif op == "!":
                self.i += 1
                default = self.expr() if self.can_start() else None
                return _Default(self.span(start), start, node, default)
            else:
                break
        return node

    def builtin(self, target: _Expr, start: int) -> _Expr:
        name = self.name("after '?'")
        if name not in _BUILTINS:
            close = get_close_matches(name, _BUILTINS, 1)
            self.i -= 1
            self.error(f"unknown built-in ?{name}" + (f"; did you mean ?{close[0]}?" if close else ""))
        args: list[_Expr] = []
        if self.at("("):
            self.i += 1
            args = self.items(")")
        _fn, lo, hi, mode = _BUILTINS[name]
        if not lo <= len(args) <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            self.i -= 1
            self.error(f"?{name} takes {want} argument(s), got {len(args)}")
        if mode == _LOOP and not isinstance(target, _Var):
            self.error(f"?{name} only works on a <#list> loop variable")
        return _BuiltIn(self.span(start), start, target, name, args)

    def items(self, close: str) -> list[_Expr]:
        out: list[_Expr] = []
        if self.at(close):
            self.i += 1
            return out
        while True:
            out.append(self.expr())
            if self.at(","):
                self.i += 1
                continue
            self.expect(close, "after a list item or argument")
            return out

    def primary(self) -> _Expr:
        t = self.peek()
        if t is None:
            self.error("expected an expression")
        kind, text, pos = t
        self.i += 1
        if kind == "num":
            if len(text) > 300:
                self.error("number literal too long")
            return _Lit(text, pos, float(text) if "." in text else int(text))
        if kind == "str":
            return self.string(text, pos)
        if kind == "name" and text not in _KEYWORDS:
            return _Lit(text, pos, text == "true") if text in ("true", "false") else _Var(text, pos, text)
        if text == "." and kind == "op":
            special = self.name("after '.' (a special variable such as .now)")
            if special != "now":
                self.i -= 1
                self.error(f"unknown special variable .{special}; the sandbox knows .now")
            return _Now(self.span(pos), pos)
        if text == "(":
            inner = self.expr()
            self.expect(")", "to close '('")
            return _Paren(self.span(pos), pos, inner)
        if text == "[":
            items = self.items("]")
            return _ListLit(self.span(pos), pos, items)
        if text == "{":
            pairs: list[tuple[_Expr, _Expr]] = []
            while not self.at("}"):
                if pairs:
                    self.expect(",", "between hash entries")
                key = self.expr()
                self.expect(":", "after a hash key")
                pairs.append((key, self.expr()))
            self.i += 1
            return _HashLit(self.span(pos), pos, pairs)
        self.i -= 1
        self.error(f"unexpected '{text}'; expected an expression")

    def string(self, text: str, pos: int) -> _Expr:
        if text[0] == "r":
            return _Lit(text, pos, text[2:-1])
        body, base = text[1:-1], pos + 1
        if "${" not in body:
            return _Lit(text, pos, _unescape(body, base))
        parts: list[str | _Expr] = []
        k = 0
        while (j := body.find("${", k)) >= 0:
            if j > k:
                parts.append(_unescape(body[k:j], base + k))
            toks, end, _ = _scan_expr(
                self.src, base + j + 2, "}", base + len(body), "${ in a string", base + j
            )
            parts.append(_ExprParser(self.src, toks, end - 1).whole("in ${...}"))
            k = end - base
        if k < len(body):
            parts.append(_unescape(body[k:], base + k))
        return _StrTemplate(text, pos, parts)


class _Parser:
    """Builds the node tree from atoms, tracking open directives so errors say what is unclosed."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.atoms = _strip_whitespace(_lex(source))
        self.i = 0
        self.stops: list[frozenset[str]] = []
        self.open: list[_Atom] = []
        self.loop_vars: list[str] = []

    def where(self, a: _Atom) -> str:
        return f"line {self.src.count(chr(10), 0, a.pos) + 1}"

    def parse(self) -> tuple[_Node, ...]:
        return self.block(frozenset())[0]

    def block(self, stop: frozenset[str]) -> tuple[tuple[_Node, ...], _Atom | None]:
        """Parse until an atom named in `stop` (returned, consumed) or the end (None)."""
        if len(self.open) > MAX_NESTING:
            raise TemplateError(f"directives nested more than {MAX_NESTING} deep", offset=self.open[-1].pos)
        self.stops.append(stop)
        nodes: list[_Node] = []
        try:
            while self.i < len(self.atoms):
                a = self.atoms[self.i]
                self.i += 1
                if a.kind == "text":
                    nodes.append(_Text(a.text))
                elif a.kind == "interp":
                    nodes.append(_Interp(self.expr(a, "an expression inside ${}").whole("inside ${...}")))
                elif a.kind == "tag":
                    if a.text in stop:
                        return tuple(nodes), a
                    node = self.directive(a)
                    if node is not None:
                        nodes.append(node)
                elif a.kind == "end":
                    if "/" + a.text in stop:
                        return tuple(nodes), a
                    self.unexpected_end(a)
            return tuple(nodes), None
        finally:
            self.stops.pop()

    def unexpected_end(self, a: _Atom) -> NoReturn:
        if self.open:
            inner = self.open[-1]
            msg = (
                f"unexpected </#{a.text}>; <#{inner.text}> opened at {self.where(inner)} must be closed first"
            )
        else:
            msg = f"unexpected </#{a.text}>: no <#{a.text}> is open"
        raise TemplateError(msg, offset=a.pos)

    def unclosed(self, a: _Atom) -> NoReturn:
        raise TemplateError(
            f"unclosed <#{a.text}> opened at {self.where(a)}: expected </#{a.text}> before the end",
            offset=len(self.src),
        )

    def expr(self, a: _Atom, what: str) -> _ExprParser:
        if not a.toks:
            raise TemplateError(f"expected {what}", offset=a.end)
        return _ExprParser(self.src, a.toks, a.end)

    def no_params(self, a: _Atom) -> None:
        if a.toks:
            raise TemplateError(f"<#{a.text}> takes no parameters", offset=a.toks[0][2])

    def directive(self, a: _Atom) -> _Node | None:
        name = a.text
        if name == "if":
            return self.parse_if(a)
        if name == "list":
            return self.parse_list(a)
        if name == "assign":
            return self.parse_assign(a)
        if name == "sep":
            return self.parse_sep(a)
        if name == "break":
            self.no_params(a)
            if not self.loop_vars:
                raise TemplateError("<#break> must be inside <#list>", offset=a.pos)
            return _Break()
        if name in ("else", "elseif"):
            raise TemplateError(f"<#{name}> without a matching <#if> (or <#list> for <#else>)", offset=a.pos)
        raise TemplateError(
            f"unknown or unsupported directive <#{name}>; "
            "supported: if, elseif, else, list, sep, assign, break",
            offset=a.pos,
        )

    def parse_if(self, a: _Atom) -> _Node:
        self.open.append(a)
        branches: list[tuple[_Expr | None, tuple[_Node, ...]]] = []
        cond: _Expr | None = self.expr(a, "a condition after <#if").whole("in <#if>")
        while True:
            body, stop = self.block(frozenset({"elseif", "else", "/if"}))
            branches.append((cond, body))
            if stop is None:
                self.unclosed(a)
            if stop.kind == "end":
                break
            if cond is None:
                raise TemplateError(f"<#{stop.text}> after <#else>", offset=stop.pos)
            if stop.text == "elseif":
                cond = self.expr(stop, "a condition after <#elseif").whole("in <#elseif>")
            else:
                self.no_params(stop)
                cond = None
        self.open.pop()
        return _If(branches)

    def parse_list(self, a: _Atom) -> _Node:
        p = self.expr(a, "<#list sequence as item>")
        seq = p.expr()
        p.expect("as", "in <#list sequence as item>")
        names = [p.name("after 'as'")]
        if p.at(","):
            p.i += 1
            names.append(p.name("after ','"))
        if p.peek() is not None:
            p.error(f"unexpected '{p.toks[p.i][1]}' in <#list>")
        self.open.append(a)
        self.loop_vars.append(names[0])
        body, stop = self.block(frozenset({"else", "/list"}))
        self.loop_vars.pop()
        else_body: tuple[_Node, ...] = ()
        if stop is not None and stop.kind == "tag":
            self.no_params(stop)
            else_body, stop = self.block(frozenset({"/list"}))
        if stop is None:
            self.unclosed(a)
        self.open.pop()
        return _List(seq, names, body, else_body)

    def parse_sep(self, a: _Atom) -> _Node:
        self.no_params(a)
        if not self.loop_vars:
            raise TemplateError("<#sep> must be inside <#list>", offset=a.pos)
        self.open.append(a)
        body, stop = self.block(self.stops[-1] | {"/sep"})
        self.open.pop()
        if stop is not None and not (stop.kind == "end" and stop.text == "sep"):
            self.i -= 1  # no </#sep>: it ends where the enclosing block ends, which must see the stop too
        return _Sep(self.loop_vars[-1], body)

    def parse_assign(self, a: _Atom) -> _Node:
        p = self.expr(a, f"name = value after <#{a.text}")
        pairs: list[tuple[str, _Expr]] = []
        while p.peek() is not None:
            name = p.name(f"in <#{a.text}>")
            p.expect("=", f"after '{name}' in <#{a.text}>")
            pairs.append((name, p.expr()))
            if p.at(","):
                p.i += 1
        return _Assign(pairs)


class Template:
    """A compiled template: compile once (slow path), render many times (fast path)."""

    __slots__ = ("source", "_nodes")

    def __init__(self, source: str, nodes: tuple[_Node, ...]) -> None:
        self.source = source
        self._nodes = nodes

    @classmethod
    def compile(cls, source: str) -> Template:
        """Parse `source`; raises TemplateError (with line and column) on bad syntax."""
        if not isinstance(source, str):
            raise TemplateError(f"template source must be a string, not {type(source).__name__}")
        if len(source) > MAX_SOURCE:
            raise TemplateError(f"template too large (over {MAX_SOURCE} characters)")
        try:
            return cls(source, _Parser(source).parse())
        except TemplateError as e:
            e._locate(source)
            raise
        except RecursionError:
            raise TemplateError("template nested too deeply") from None

    def render(
        self,
        data: Mapping[str, Any],
        functions: Mapping[str, Callable[..., Any]] | None = None,
        *,
        time_limit_s: float | None = TIME_LIMIT_S,
    ) -> str:
        """Render with `data` as the data model; `functions` are extra callables templates may call.

        Past ``time_limit_s`` (None: no limit) or out of memory: :class:`TemplateLimitError`.
        """
        funcs = {**_BUILTIN_FUNCS, **functions} if functions else _BUILTIN_FUNCS
        deadline = math.inf if time_limit_s is None else time.perf_counter() + time_limit_s
        ctx = _Ctx(dict(data), funcs, deadline)
        try:
            for node in self._nodes:
                node.render(ctx)
        except TemplateLimitError:
            raise
        except TemplateError as e:
            e._locate(self.source)
            raise
        except RecursionError:
            raise TemplateError("template nested too deeply while rendering") from None
        except MemoryError:
            raise TemplateLimitError("memory", "the template ran out of memory and was stopped") from None
        except Exception as e:  # a safety net: evaluation must only ever raise TemplateError
            raise TemplateError(f"internal error while rendering: {type(e).__name__}: {e}") from e
        if ctx.size > MAX_OUTPUT:
            _too_large()
        return "".join(ctx.out)

    def __repr__(self) -> str:
        return f"Template({_clip(self.source, 40)!r})"


_cache: OrderedDict[str, Template] = OrderedDict()
_cache_chars = 0
_cache_lock = threading.Lock()


def _compile_cached(source: str) -> Template:
    """Compile through a small LRU cache bounded in source characters (large sources are not kept)."""
    global _cache_chars
    with _cache_lock:
        found = _cache.get(source)
        if found is not None:
            _cache.move_to_end(source)
            return found
    template = Template.compile(source)
    if len(source) > INTERPRET_CACHE_ENTRY:
        return template
    with _cache_lock:
        if source not in _cache:
            _cache[source] = template
            _cache_chars += len(source)
            while _cache_chars > INTERPRET_CACHE_CHARS:
                dropped, _ = _cache.popitem(last=False)
                _cache_chars -= len(dropped)
    return template


def render(
    source: str, data: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]] | None = None
) -> str:
    """Compile (cached: the sandbox renders the same few templates over and over) and render."""
    if not isinstance(source, str):
        raise TemplateError(f"template source must be a string, not {type(source).__name__}")
    return _compile_cached(source).render(data, functions)
