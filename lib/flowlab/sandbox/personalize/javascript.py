"""Run tenant JavaScript (conditions, programmables) in QuickJS: fast, isolated and bounded.

Sitecore runs custom conditions and programmables as server-side JavaScript (reference §4.2, §5.2). The
sandbox must do the same at well over a thousand requests a second, so scripts run in-process in QuickJS
(tens of µs a call) rather than in V8 (~0.5 ms) or a subprocess.

How it is put together, and why:

* **One QuickJS context per thread.** A context must never be touched by two threads (QuickJS records the
  creating thread's stack), so each thread lazily builds its own, and every compiled wrapper is cached per
  (thread, script). Nothing that holds a QuickJS value ever leaves its thread.
* **Each script is wrapped in a function.** A script whose source is one expression (the usual IIFE,
  ``(function () { … })();``) is compiled once as ``function () { return (<source>); }``; any other script
  runs through a direct ``eval`` inside a function, which keeps the exact completion-value semantics at the
  cost of a parse per run (:attr:`Script.mode` says which). Either way a top-level ``var`` is local to the
  run.
* **Runs cannot leak state into each other.** The built-ins are frozen when the context is made (with
  SES-style "override taming", so ``obj.toString = f`` still works on ordinary objects) and moved onto a
  prototype of the global object, so assigning to them is ignored (sloppy mode) and the global object's own
  keys are only what a run creates; after every run those (``x = 1`` without ``var``, ``this.y = 2``,
  the declared globals) are deleted. A run that leaves something undeletable behind (a non-configurable
  global, a new prototype for the global object) gets the thread a fresh context.
* **Values cross as JSON**, one string per call (``JSON.parse`` inside is the fastest way into QuickJS).
  Declared globals are real properties of the global object, so ``this.tier`` works as in Sitecore. A
  declared global missing from ``values`` is ``undefined``; JS ``undefined``, functions and ``NaN`` come
  back as ``None``. :class:`SharedJSON` lets several runs of one request share one parsed copy of a large
  value (the guest) instead of encoding and parsing it for every script.
* **Limits.** QuickJS stops a run at the CPU-time limit (default 50 ms, measured with ``clock()``, i.e.
  process CPU time) and at the memory limit (default 32 MB per thread); JS recursion is capped by a 1 MB
  stack. After a timeout, out-of-memory or anything unexpected the thread's context is dropped and rebuilt
  on its next run. QuickJS's own ``JSON.stringify`` recurses in C without a stack check (a very deep value
  crashes the process), so the one scripts and this module use is guarded.
* **What QuickJS cannot interrupt.** It checks the clock only every ~10,000 bytecode branches and never
  inside a native call: a loop around one heavy native call (``new Array(1e5).join('x')``) overruns the limit
  many times over, and a catastrophically backtracking regular expression (``/(a+)+b/`` on a long string)
  cannot be stopped at all. A watchdog thread therefore (1) refuses new runs of a script while one of its
  runs is overdue (4 × the time limit, at least 200 ms), so such a script ties up at most one thread; and
  (2) quarantines a script with a run older than ``hard_limit_ms`` (default 40 × the time limit, at least
  2 s): every later run fails at once until the script is compiled again. The stuck call keeps its thread
  (it runs without the GIL, so the rest of the server carries on; :attr:`ScriptRuntime.stuck_scripts`
  lists it). Only a subprocess could bound this completely.

Promise jobs a script queues are never run: there is no event loop (Sitecore's ES5 engine has no Promise).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import orjson
import quickjs

__all__ = [
    "DEFAULT_GLOBALS",
    "Script",
    "ScriptError",
    "ScriptErrorKind",
    "ScriptResult",
    "ScriptRuntime",
    "SharedJSON",
    "check_global_name",
]

ScriptErrorKind = Literal["syntax", "timeout", "memory", "error"]

#: The globals every condition and programmable sees (reference §5.2).
DEFAULT_GLOBALS: Final[tuple[str, ...]] = ("guest", "request", "entity", "pos")

_STACK_BYTES: Final = 1024 * 1024  # about 1,600 nested JS calls
_MAX_RUNNERS_PER_THREAD: Final = 1024  # compiled wrappers kept per thread; oldest dropped first
_MAX_SHARED_PER_THREAD: Final = 4  # parsed SharedJSON values kept per thread
_HEALTH_EVERY: Final = 1024  # runs between memory checks of a thread's context
_WATCHDOG_PERIOD_S: Final = 0.05

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_RESERVED: Final = frozenset(
    "break case catch class const continue debugger default delete do else enum export extends false "
    "finally for function if import in instanceof new null return super switch this throw true try typeof "
    "var void while with yield let static implements interface package private protected public await "
    "arguments eval __proto__".split()
)
# Globals of a bare QuickJS context plus the two we add; declared globals may not shadow them.
_BUILTIN_GLOBALS: Final = frozenset(
    "Object Function Error EvalError RangeError ReferenceError SyntaxError TypeError URIError InternalError "
    "AggregateError Array parseInt parseFloat isNaN isFinite decodeURI decodeURIComponent encodeURI "
    "encodeURIComponent escape unescape Infinity NaN undefined __date_clock Number Boolean String Math "
    "Reflect Symbol eval globalThis Date RegExp JSON Proxy Map Set WeakMap WeakSet ArrayBuffer "
    "SharedArrayBuffer Uint8ClampedArray Int8Array Uint8Array Int16Array Uint16Array Int32Array "
    "Uint32Array BigInt64Array BigUint64Array Float32Array Float64Array DataView Atomics Promise BigInt "
    "print console".split()
)
_TRIVIA = r"(?:[\s\ufeff]|//[^\n\r\u2028\u2029]*|/\*[\s\S]*?\*/)*"
_LEADING_TRIVIA = re.compile(_TRIVIA)
_ONLY_TRIVIA = re.compile(_TRIVIA + r"\Z")
# Sources starting like this mean something else as a statement than inside parentheses.
_NOT_AN_EXPRESSION = re.compile(r"(?:\{|function\b|class\b|async\b|let\b)")
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

# Evaluated once per context. Strict, so that its own mistakes throw; user code never runs in here.
_PRELUDE: Final = r"""
(function (G) {
  "use strict";
  var O = Object, freeze = O.freeze, defineProperty = O.defineProperty, getPrototypeOf = O.getPrototypeOf,
      describeProperty = O.getOwnPropertyDescriptor, isExtensible = O.isExtensible, ownKeys = Reflect.ownKeys,
      parse = JSON.parse, Str = String, ErrorC = Error;
  // QuickJS's native JSON.stringify recurses in C without a stack check: a 100,000-deep array crashes the
  // process. With a replacer function it re-enters JS at every value, where the stack *is* checked, so
  // stringify always gets one (the identity: the output is the same, per the spec).
  var nativeStringify = JSON.stringify;
  function passThrough(key, value) { return value; }
  function stringify(value, replacer, space) {
    if (typeof replacer === "function") return nativeStringify(value, replacer, space);
    if (replacer !== undefined && replacer !== null) nativeStringify(value, passThrough);  // checked pass
    return nativeStringify(value, replacer === undefined || replacer === null ? passThrough : replacer, space);
  }
  defineProperty(JSON, "stringify", { value: stringify, writable: true, enumerable: false, configurable: true });
  var MAX_LINES = 1000, MAX_CHARS = 100000;
  var logs = null, logChars = 0, dropped = 0;
  var slots = new Map();

  function show(x) {
    if (typeof x === "string") return x;
    if (typeof x === "object" && x !== null) {
      try { var s = stringify(x); if (typeof s === "string") return s; } catch (e) { /* fall through */ }
    }
    try { return Str(x); } catch (e) { return "[value that cannot be shown]"; }
  }
  function log() {
    if (logs === null) return;
    var parts = [];
    for (var i = 0; i < arguments.length; i++) parts.push(show(arguments[i]));
    var line = parts.join(" ");
    if (logs.length >= MAX_LINES || logChars + line.length > MAX_CHARS) { dropped++; return; }
    logs.push(line);
    logChars += line.length;
  }
  var hidden = { value: undefined, writable: false, enumerable: false, configurable: false };
  hidden.value = log;
  defineProperty(G, "print", hidden);
  hidden.value = { log: log, info: log, warn: log, error: log, debug: log, trace: log };
  defineProperty(G, "console", hidden);

  // Let `obj.toString = f` create an own property although the inherited one is frozen (SES "taming").
  function tame(obj, name) {
    var d = describeProperty(obj, name);
    if (!d || !("value" in d) || !d.configurable) return;
    var value = d.value;
    defineProperty(obj, name, {
      get: function () { return value; },
      set: function (v) {
        if (this === obj) throw new TypeError("cannot assign to read-only property '" + Str(name) + "'");
        if ((typeof this !== "object" || this === null) && typeof this !== "function") return;
        defineProperty(this, name, { value: v, writable: true, enumerable: true, configurable: true });
      },
      enumerable: d.enumerable,
      configurable: false
    });
  }
  var i, k, names = ownKeys(O.prototype);
  for (i = 0; i < names.length; i++) if (names[i] !== "__proto__") tame(O.prototype, names[i]);
  ["constructor", "name", "toString"].forEach(function (n) { tame(Function.prototype, n); });
  ["constructor", "toString"].forEach(function (n) { tame(Array.prototype, n); });
  [ErrorC, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError, InternalError,
   AggregateError].forEach(function (C) {
    ["constructor", "name", "message", "toString"].forEach(function (n) { tame(C.prototype, n); });
  });
  tame(Promise.prototype, "constructor");

  var seen = new Set([G]);
  function deepFreeze(x) {
    if ((typeof x !== "object" || x === null) && typeof x !== "function") return;
    if (seen.has(x)) return;
    seen.add(x);
    var keys = ownKeys(x);
    for (var j = 0; j < keys.length; j++) {
      var d = describeProperty(x, keys[j]);
      if (!d) continue;
      if ("value" in d) deepFreeze(d.value); else { deepFreeze(d.get); deepFreeze(d.set); }
    }
    deepFreeze(getPrototypeOf(x));
    freeze(x);
  }
  // Intrinsics that no global names: generator, async and iterator prototypes.
  var roots = [function* () {}, (function* () {})(), async function () {}, [][Symbol.iterator](),
               new Map().entries(), new Set().values(), ""[Symbol.iterator](), /a/[Symbol.matchAll]("a")];
  try { roots.push(async function* () {}); roots.push((async function* () {})()); } catch (e) { /* older */ }
  // Move the built-ins onto a frozen prototype of the global object: lookups still find them, assignments
  // to them are ignored, and the global object's own keys are only what a run adds, so cleanup is cheap.
  var builtins = O.create(getPrototypeOf(G)), baseKeys = ownKeys(G), base = new Set();
  for (i = 0; i < baseKeys.length; i++) {
    k = baseKeys[i];
    var d = describeProperty(G, k);
    if (d.configurable) {
      defineProperty(builtins, k, d);
      delete G[k];
    } else {
      base.add(k);
    }
    if ("value" in d) deepFreeze(d.value); else { deepFreeze(d.get); deepFreeze(d.set); }
  }
  O.setPrototypeOf(G, builtins);
  deepFreeze(builtins);
  for (i = 0; i < roots.length; i++) deepFreeze(roots[i]);
  seen = null;
  var baseCount = ownKeys(G).length, baseProto = builtins;

  // Delete the globals a run created; true if it left something behind that cannot be undone.
  function cleanup() {
    var tainted = getPrototypeOf(G) !== baseProto || !isExtensible(G);
    var keys = ownKeys(G);
    if (keys.length !== baseCount) {
      for (var j = 0; j < keys.length; j++) {
        if (base.has(keys[j])) continue;
        try { if (!delete G[keys[j]]) tainted = true; } catch (e) { tainted = true; }
      }
    }
    return tainted;
  }
  function describe(e) {
    try {
      var s = Str(e);
      if (s === "[object Object]") { var j = stringify(e); if (typeof j === "string") s = j; }
      return s;
    } catch (e2) {
      return "Error: the script threw a value that cannot be shown";
    }
  }
  function prepare(body, namesJson) {
    var names = parse(namesJson), n = names.length;
    freeze(body);
    if (body.prototype) freeze(body.prototype);
    return function (json) {
      var a = parse(json), vals = a[0], shared = a[1], missing = a[2], j;
      for (j = 0; j < shared.length; j++) vals[shared[j][0]] = slots.get(shared[j][1]);
      for (j = 0; j < missing.length; j++) vals[missing[j]] = undefined;
      for (j = 0; j < n; j++) G[names[j]] = vals[j];
      logs = []; logChars = 0; dropped = 0;
      var status = 0, out;
      try {
        out = stringify(body());
      } catch (e) {
        status = 1;
        out = stringify(describe(e));
      }
      var lines = logs;
      logs = null;
      if (dropped > 0) lines.push("(" + dropped + " more log lines were dropped)");
      var tainted = cleanup();
      return "[" + status + "," + (out === undefined ? "null" : out) + "," + stringify(lines) + "," +
             (tainted ? 1 : 0) + "]";
    };
  }
  return function (op, a, b) {
    if (op === "prepare") return prepare(a, b);
    if (op === "put") { slots.set(a, parse(b)); return null; }
    if (op === "drop") { slots.delete(a); return null; }
    if (op === "take") { var l = logs || []; logs = null; return stringify(l); }
    throw new TypeError("unknown operation " + op);
  };
})(globalThis)
"""

# Sloppy on purpose: a syntax check must accept sloppy-mode programs. Parsing happens before the first
# statement runs, so `throw` stops the source from executing; declarations land in `probe`'s scope.
_CHECKER: Final = r"""
(function () {
  var sentinel = {};
  function probe(__flowlab_source__, __flowlab_sentinel__) {
    eval("throw __flowlab_sentinel__;" + __flowlab_source__);
  }
  return function (source) {
    try { probe(source, sentinel); } catch (e) {
      if (e !== sentinel && e instanceof SyntaxError) {
        return JSON.stringify([String(e), typeof e.lineNumber === "number" ? e.lineNumber : null]);
      }
    }
    return null;
  };
})()
"""

_EXPRESSION_WRAPPER: Final = "(function () { return (\n%s\n); })"
_EVAL_WRAPPER: Final = "(function () { return eval(%s); })"


class ScriptError(Exception):
    """A script could not be compiled or did not finish; ``str()`` is the message Sitecore-style.

    ``kind`` is ``"syntax"`` (compile time), ``"timeout"``, ``"memory"`` or ``"error"`` (it threw).
    """

    def __init__(
        self,
        kind: ScriptErrorKind,
        message: str,
        *,
        script: str = "",
        line: int | None = None,
        logs: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.kind: ScriptErrorKind = kind
        self.message = message
        #: The script's name (as given to :meth:`ScriptRuntime.compile`).
        self.script = script
        #: For syntax errors, the 1-based source line QuickJS reported, when it did.
        self.line = line
        #: What the script printed before it failed (empty after a memory error).
        self.logs: list[str] = list(logs)

    def __repr__(self) -> str:
        return f"ScriptError({self.kind!r}, {self.message!r}, script={self.script!r})"


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """What a run produced: the script's completion value (JSON-compatible) and its printed lines."""

    value: Any
    logs: list[str]


class SharedJSON:
    """A JSON value encoded once and parsed at most once per thread, for values many scripts read.

    Pass the same instance to several :meth:`Script.run` calls of one request (the guest, typically): the
    Python side encodes it once and each thread parses it once, instead of per script. All runs that get
    the same instance see one JS object, so a script that mutates it is seen by later runs given that
    instance; make a new instance per request.
    """

    __slots__ = ("_text", "token", "value")
    _tokens = itertools.count(1)

    def __init__(self, value: Any) -> None:
        self.value = value
        self.token = str(next(SharedJSON._tokens))
        self._text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = _dumps(self.value)
        return self._text


class ScriptRuntime:
    """Compiles scripts and owns the per-thread QuickJS contexts they run in, with their limits."""

    def __init__(
        self, *, time_limit_ms: float = 50, memory_limit_mb: int = 32, hard_limit_ms: float | None = None
    ) -> None:
        if not time_limit_ms > 0:
            raise ValueError("time_limit_ms must be positive")
        if memory_limit_mb < 1:
            raise ValueError("memory_limit_mb must be at least 1")
        self.time_limit_ms = float(time_limit_ms)
        self.memory_limit_mb = int(memory_limit_mb)
        self.hard_limit_ms = float(hard_limit_ms) if hard_limit_ms else max(2000.0, 40 * self.time_limit_ms)
        # A run this old is past any limit QuickJS enforces: refuse new runs of its script until it ends.
        self._overdue_ms = min(self.hard_limit_ms, max(200.0, 4 * self.time_limit_ms))
        self._local = threading.local()
        self._keys = itertools.count(1)

    def compile(self, source: str, *, name: str, globals: Sequence[str] = DEFAULT_GLOBALS) -> Script:
        """Check syntax now (ScriptError kind "syntax" with the JS message); later runs reuse the wrapper."""
        names = _check_globals(globals)
        if "\x00" in source:
            raise ScriptError("syntax", "SyntaxError: the source contains a NUL character", script=name)
        try:
            source.encode("utf-8")
        except UnicodeEncodeError:
            raise ScriptError(
                "syntax", "SyntaxError: the source contains an unpaired surrogate character", script=name
            ) from None
        state = self._state()
        problem = state.check(source, name)
        if problem is not None:
            message, line = problem
            suffix = f" (line {line})" if line is not None else ""
            raise ScriptError("syntax", message + suffix, script=name, line=line)
        wrapper = _EVAL_WRAPPER % _dumps(source)
        mode: Literal["expression", "eval"] = "eval"
        for candidate in _expression_candidates(source):
            if state.compiles(_EXPRESSION_WRAPPER % candidate):
                wrapper, mode = _EXPRESSION_WRAPPER % candidate, "expression"
                break
        script = Script(self, next(self._keys), name, source, names, wrapper, mode)
        state.runner(script)  # warm this thread
        return script

    @property
    def stuck_scripts(self) -> list[str]:
        """Names of scripts with a run (in any thread) older than the hard limit: a thread is stuck there."""
        now = time.monotonic()
        limit = self.hard_limit_ms / 1000
        return [
            s.name for started, s in list(_ACTIVE.values()) if s._runtime is self and now - started > limit
        ]

    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None:
            try:
                state = _ThreadState(self)
            except quickjs.JSException as exc:
                message = (
                    f"memory: a script context does not fit in {self.memory_limit_mb} MB ({_first_line(exc)})"
                )
                raise ScriptError("memory", message) from None
            self._local.state = state
        return state

    def _discard_state(self) -> None:
        self._local.state = None


class Script:
    """A compiled script; :meth:`run` it from any thread with that run's values for its globals."""

    def __init__(
        self,
        runtime: ScriptRuntime,
        key: int,
        name: str,
        source: str,
        globals: tuple[str, ...],
        wrapper: str,
        mode: Literal["expression", "eval"],
    ) -> None:
        self.name = name
        self.source = source
        self.globals = globals
        #: "expression": compiled once; "eval": a statement list, parsed again on each run.
        self.mode: Literal["expression", "eval"] = mode
        self._runtime = runtime
        self._key = key
        self._wrapper = wrapper
        self._names_json = json.dumps(list(globals))
        self._quarantined = False
        self._overdue = False

    def __repr__(self) -> str:
        return f"<Script {self.name!r} ({self.mode})>"

    @property
    def quarantined(self) -> bool:
        """True once a run outlived the hard limit: every later run fails at once with a timeout error."""
        return self._quarantined

    def run(self, values: Mapping[str, Any] | None = None) -> ScriptResult:
        """Run once; ``values`` maps global names to JSON-compatible values (or :class:`SharedJSON`)."""
        runtime = self._runtime
        if self._quarantined or self._overdue:
            raise self._refusal()
        state = runtime._state()
        runner = state.runners.get(self._key)
        if runner is None:
            runner = state.runner(self)
        payload = self._payload(values or {}, state)
        _ensure_watchdog()
        ident = threading.get_ident()
        _ACTIVE[ident] = (time.monotonic(), self)
        try:
            raw = runner(payload)
        except quickjs.JSException as exc:
            raise state.failed(self, exc) from None
        finally:
            _ACTIVE.pop(ident, None)
        if self._quarantined:
            runtime._discard_state()
            raise self._refusal()
        try:
            status, value, logs, tainted = _loads(cast(str, raw))
        except RecursionError:
            message = (
                "RangeError: the script's value is nested too deeply to return (about 900 levels at most)"
            )
            raise ScriptError("error", message, script=self.name) from None
        if tainted:
            runtime._discard_state()
        else:
            state.after_run()
        if status == 0:
            return ScriptResult(value, logs)
        message = str(value)
        if message.startswith("InternalError: out of memory"):
            runtime._discard_state()
            raise ScriptError("memory", _memory_message(runtime), script=self.name)
        if message == "null":  # QuickJS throws null when it has no memory left to build an Error
            runtime._discard_state()
            message = "null (thrown by the script, or by QuickJS when it ran out of memory creating an error)"
        raise ScriptError("error", message, script=self.name, logs=logs)

    def _payload(self, values: Mapping[str, Any], state: _ThreadState) -> str:
        vals: list[Any] = []
        shared: list[list[Any]] = []
        missing: list[int] = []
        for i, name in enumerate(self.globals):
            if name not in values:
                missing.append(i)
                vals.append(None)
                continue
            value = values[name]
            if isinstance(value, SharedJSON):
                state.share(value)
                shared.append([i, value.token])
                vals.append(None)
            else:
                vals.append(value)
        return _dumps([vals, shared, missing])

    def _refusal(self) -> ScriptError:
        runtime = self._runtime
        if self._quarantined:
            message = (
                f"timeout: a run of this script did not stop within {runtime.hard_limit_ms:g} ms (QuickJS "
                "cannot interrupt some native work, e.g. a catastrophically backtracking regular "
                "expression); the script is disabled until it is compiled again"
            )
        else:
            message = (
                f"timeout: another run of this script has been running for over {runtime._overdue_ms:g} ms; "
                "new runs are refused until it stops"
            )
        return ScriptError("timeout", message, script=self.name)


class _ThreadState:
    """One thread's QuickJS context, its compiled wrappers and its parsed shared values."""

    __slots__ = ("api", "checker", "ctx", "runners", "runs", "runtime", "shared")

    def __init__(self, runtime: ScriptRuntime) -> None:
        self.runtime = runtime
        ctx = quickjs.Context()
        ctx.set_memory_limit(runtime.memory_limit_mb * 1024 * 1024)
        ctx.set_max_stack_size(_STACK_BYTES)
        ctx.set_time_limit(-1)
        self.api: Any = ctx.eval(_PRELUDE)  # freezing every built-in takes longer than a script may
        self.checker: Any = ctx.eval(_CHECKER)
        ctx.set_time_limit(runtime.time_limit_ms / 1000)
        self.ctx: Any = ctx
        self.runners: dict[int, Any] = {}
        self.shared: dict[str, None] = {}
        self.runs = 0

    def check(self, source: str, name: str) -> tuple[str, int | None] | None:
        try:
            found = self.checker(source)
        except quickjs.JSException as exc:  # a parse so large it hit a limit
            self.runtime._discard_state()
            raise ScriptError("syntax", f"SyntaxError: {_first_line(exc)}", script=name) from None
        if found is None:
            return None
        message, line = json.loads(cast(str, found))
        return str(message), line if isinstance(line, int) else None

    def compiles(self, wrapper: str) -> bool:
        try:
            self.ctx.eval(wrapper)
        except quickjs.JSException:
            return False
        return True

    def runner(self, script: Script) -> Any:
        try:
            body = self.ctx.eval(script._wrapper)
            runner = self.api("prepare", body, script._names_json)
        except quickjs.JSException as exc:  # out of memory, most likely: start afresh next time
            self.runtime._discard_state()
            raise _classify(self.runtime, script, exc, []) from None
        if len(self.runners) >= _MAX_RUNNERS_PER_THREAD:
            del self.runners[next(iter(self.runners))]
        self.runners[script._key] = runner
        return runner

    def share(self, value: SharedJSON) -> None:
        if value.token in self.shared:
            return
        if len(self.shared) >= _MAX_SHARED_PER_THREAD:
            oldest = next(iter(self.shared))
            del self.shared[oldest]
            self.api("drop", oldest)
        try:
            self.api("put", value.token, value.text)
        except quickjs.JSException as exc:
            self.runtime._discard_state()
            raise ScriptError("memory", f"{_memory_message(self.runtime)} ({_first_line(exc)})") from None
        self.shared[value.token] = None

    def after_run(self) -> None:
        self.runs += 1
        if self.runs % _HEALTH_EVERY == 0:
            used = int(self.ctx.memory()["memory_used_size"])
            if used > self.runtime.memory_limit_mb * 1024 * 1024 // 2:
                self.runtime._discard_state()

    def failed(self, script: Script, exc: quickjs.JSException) -> ScriptError:
        """A JS exception escaped the wrapper (timeout, out of memory): salvage logs, drop the context."""
        logs: list[str] = []
        if "out of memory" not in str(exc):
            try:
                logs = [str(line) for line in json.loads(cast(str, self.api("take")))]
            except (quickjs.JSException, ValueError, TypeError):
                pass
        self.runtime._discard_state()
        return _classify(self.runtime, script, exc, logs)


def _classify(runtime: ScriptRuntime, script: Script, exc: Exception, logs: list[str]) -> ScriptError:
    first = _first_line(exc)
    if "interrupted" in first:
        message = f"timeout: script ran longer than {runtime.time_limit_ms:g} ms and was stopped"
        return ScriptError("timeout", message, script=script.name, logs=logs)
    if "out of memory" in first or "Failed obtaining" in first:
        return ScriptError("memory", _memory_message(runtime), script=script.name)
    return ScriptError("error", first, script=script.name, logs=logs)


def _memory_message(runtime: ScriptRuntime) -> str:
    return f"memory: script used more than {runtime.memory_limit_mb} MB and was stopped"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_global_name(name: str) -> None:
    """Raise ValueError unless ``name`` can be a script global (an identifier that hides no built-in)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a JavaScript identifier (ASCII letters, digits, _ and $)")
    if name in _RESERVED or name in _BUILTIN_GLOBALS:
        raise ValueError(f"{name!r} is a JavaScript reserved word or the name of a built-in global")


def _check_globals(names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError("globals must be a sequence of names, not one string")
    result = tuple(names)
    for name in result:
        check_global_name(name)
    if len(set(result)) != len(result):
        raise ValueError(f"global names must be unique: {list(result)}")
    return result


def _expression_candidates(source: str) -> Iterator[str]:
    """The source as one expression: itself, then without a final ``;`` (up to three tries)."""
    start = _LEADING_TRIVIA.match(source)
    if _NOT_AN_EXPRESSION.match(source, start.end() if start else 0):
        return
    yield source
    end = len(source)
    for _ in range(3):
        i = source.rfind(";", 0, end)
        if i < 0 or not _ONLY_TRIVIA.match(source, i + 1):
            return
        yield source[:i] + " " + source[i + 1 :]
        end = i


def _dumps(value: Any) -> str:
    """JSON for QuickJS: orjson when it can (fast), the stdlib for big ints; never NaN or lone surrogates."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"script values must be JSON-compatible: {exc}") from None


def _loads(raw: str) -> tuple[int, Any, list[str], int]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = json.loads(raw)
        if _LONE_SURROGATE_ESCAPE.search(raw):
            data = _scrub_surrogates(data)
    status, value, logs, tainted = data
    return int(status), value, [str(line) for line in logs], int(tainted)


def _scrub_surrogates(value: Any) -> Any:
    """Replace unpaired surrogates (legal in JS strings, not in UTF-8) with U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_scrub_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_scrub_surrogates(k): _scrub_surrogates(v) for k, v in value.items()}
    return value


# ---- watchdog: notices runs QuickJS cannot interrupt ------------------------------------------------------

_ACTIVE: dict[int, tuple[float, Script]] = {}  # thread ident -> (monotonic start, script), during a run
_watchdog_lock = threading.Lock()
_watchdog: threading.Thread | None = None


def _ensure_watchdog() -> None:
    global _watchdog
    if _watchdog is not None:
        return
    with _watchdog_lock:
        if _watchdog is None:
            thread = threading.Thread(target=_watch, name="flowlab-script-watchdog", daemon=True)
            thread.start()
            _watchdog = thread


def _watch() -> None:
    """The only writer of ``Script._overdue`` and ``_quarantined``, so the run path needs no lock."""
    overdue: set[Script] = set()
    while True:
        time.sleep(_WATCHDOG_PERIOD_S)
        now = time.monotonic()
        late: set[Script] = set()
        try:
            active = list(_ACTIVE.values())
        except RuntimeError:  # changed size while copied: look again next tick
            continue
        for started, script in active:
            age_ms = (now - started) * 1000
            runtime = script._runtime
            if age_ms > runtime._overdue_ms:
                late.add(script)
                if age_ms > runtime.hard_limit_ms:
                    script._quarantined = True
        for script in overdue - late:
            script._overdue = False
        for script in late:
            script._overdue = True
        overdue = late
