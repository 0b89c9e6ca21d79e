"""The QuickJS script runtime: values in and out, logs, errors, limits, isolation between runs, threads.

Everything runs real QuickJS. Scripts that cannot be interrupted (catastrophic regular expressions) are
sized from a calibration run so that they end by themselves within seconds.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flowlab.sandbox.personalize.javascript import (
    DEFAULT_GLOBALS,
    Script,
    ScriptError,
    ScriptResult,
    ScriptRuntime,
    SharedJSON,
    check_global_name,
)

HYPOTHESIS = settings(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])

IP_ADDRESS = """(function () {
  if (request && request.params && request.params.ipAddress) { return request.params.ipAddress; }
  for (var i = 0; i < guest.dataExtensions.length; i++) {
    var de = guest.dataExtensions[i];
    if (de.name === "ext") { return de.values.tier; }
  }
  return undefined;
})();"""

GUEST = {
    "firstName": "Ada",
    "dataExtensions": [{"name": "other", "values": {}}, {"name": "ext", "values": {"tier": "gold"}}],
}
TIMEOUT = "timeout: script ran longer than 50 ms and was stopped"
MEMORY = "memory: script used more than 32 MB and was stopped"


@pytest.fixture(scope="module")
def rt() -> ScriptRuntime:
    return ScriptRuntime()


def run(rt: ScriptRuntime, source: str, values: dict[str, Any] | None = None, **kw: Any) -> Any:
    return rt.compile(source, name="test", **kw).run(values or {}).value


def error_of(rt: ScriptRuntime, source: str, values: dict[str, Any] | None = None) -> ScriptError:
    script = rt.compile(source, name="test")
    with pytest.raises(ScriptError) as info:
        script.run(values or {})
    return info.value


def still_works(rt: ScriptRuntime) -> None:
    assert run(rt, "(function () { return guest.n + 1; })()", {"guest": {"n": 41}}) == 42


# ---- values in, value out ---------------------------------------------------------------------------------


def test_the_reference_programmable_reads_request_params_then_data_extensions(rt: ScriptRuntime) -> None:
    script = rt.compile(IP_ADDRESS, name="ipAddress")
    assert script.mode == "expression"
    assert script.name == "ipAddress"
    assert script.globals == DEFAULT_GLOBALS
    assert script.run({"guest": GUEST, "request": {"params": {"ipAddress": "1.2.3.4"}}}).value == "1.2.3.4"
    assert script.run({"guest": GUEST, "request": {"params": {}}}).value == "gold"
    assert script.run({"guest": {"dataExtensions": []}, "request": {"params": {}}}) == ScriptResult(None, [])


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        3.25,
        "",
        "Grüße ☕ 🚀",
        [],
        [1, "a", None],
        {},
        {"a": {"b": [1, 2.5, {"c": None}]}},
    ],
)
def test_json_values_round_trip(rt: ScriptRuntime, value: Any) -> None:
    assert run(rt, "guest", {"guest": value}) == value


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("undefined", None),
        ("(function () {})()", None),
        ("(function () { return function () {}; })()", None),
        ("NaN", None),
        ("1 / 0", None),
        ("({a: undefined, b: function () {}, c: [undefined, 1]})", {"c": [None, 1]}),
        ("new Date(0)", "1970-01-01T00:00:00.000Z"),
        ("2.0", 2),
        ("1e21", 1e21),
        ("'\\ud800x'", "\ufffdx"),  # an unpaired surrogate cannot be UTF-8: replaced
        ("({toJSON: function () { return 'custom'; }})", "custom"),
    ],
)
def test_js_only_values_come_back_as_json(rt: ScriptRuntime, source: str, expected: Any) -> None:
    assert run(rt, source) == expected


def test_missing_globals_are_undefined_and_none_is_null(rt: ScriptRuntime) -> None:
    source = "[typeof guest, typeof pos, pos === undefined, entity === null, request === null]"
    assert run(rt, source, {"guest": {}, "entity": None, "request": None}) == [
        "object",
        "undefined",
        True,
        True,
        True,
    ]


def test_completion_value_of_a_statement_list(rt: ScriptRuntime) -> None:
    script = rt.compile("var total = 0;\nfor (var i = 1; i <= 4; i++) { total += i; }\ntotal;", name="sum")
    assert script.mode == "eval"
    assert script.run({}).value == 10
    assert run(rt, "if (guest.vip) { 'yes'; } else { 'no'; }", {"guest": {"vip": True}}) == "yes"
    assert run(rt, "var x = 5;") is None


@pytest.mark.parametrize(
    "source",
    [
        "(function () { return 1; })();",
        "(function () { return 1; })()  // trailing comment; with a semicolon",
        "/* header */\n(function () {\n  return 1;\n})();\n\n",
        "!function () { return 1; }() ? 0 : 1",
        "guest.x === undefined ? 1 : 2;",
    ],
)
def test_single_expressions_are_compiled_once(rt: ScriptRuntime, source: str) -> None:
    script = rt.compile(source, name="x")
    assert script.mode == "expression"
    assert script.run({"guest": {}}).value == 1


def test_a_leading_brace_is_a_block_as_in_a_program(rt: ScriptRuntime) -> None:
    script = rt.compile("{ a: 1 }", name="block")  # a labelled statement, not an object literal
    assert script.mode == "eval"
    assert script.run({}).value == 1


def test_this_is_the_global_object_with_the_declared_globals(rt: ScriptRuntime) -> None:
    source = "(function () { return [this.tier, this['guest'].n, typeof this.JSON]; })()"
    values = {"guest": {"n": 1}, "tier": "gold"}
    assert run(rt, source, values, globals=(*DEFAULT_GLOBALS, "tier")) == ["gold", 1, "object"]


def test_upstream_output_references_are_globals(rt: ScriptRuntime) -> None:
    script = rt.compile("tier + ':' + welcomeText", name="p", globals=("guest", "tier", "welcomeText"))
    assert script.run({"tier": "gold", "welcomeText": "hi"}).value == "gold:hi"


def test_globals_may_share_a_name_with_inherited_object_members(rt: ScriptRuntime) -> None:
    names = ("toString", "constructor", "hasOwnProperty")
    script = rt.compile("[toString, constructor, hasOwnProperty, typeof valueOf]", name="x", globals=names)
    assert script.run({"toString": 1, "constructor": "c", "hasOwnProperty": [2]}).value == [
        1,
        "c",
        [2],
        "function",
    ]
    assert script.run({"toString": 3}).value == [3, None, None, "function"]  # missing: undefined
    assert run(rt, "typeof toString") == "function"


def test_values_must_be_json_compatible(rt: ScriptRuntime) -> None:
    script = rt.compile("guest", name="x")
    with pytest.raises(TypeError, match="JSON-compatible"):
        script.run({"guest": {1, 2}})
    assert script.run({"guest": [float("nan"), float("inf")]}).value == [None, None]  # as JSON.stringify
    assert script.run({"guest": 2**70}).value == pytest.approx(2.0**70)  # beyond orjson: stdlib fallback


def test_values_not_declared_as_globals_are_ignored(rt: ScriptRuntime) -> None:
    assert run(rt, "typeof extra", {"extra": 1}) == "undefined"


# ---- logs -------------------------------------------------------------------------------------------------


def test_print_and_console_log_are_collected_per_run(rt: ScriptRuntime) -> None:
    script = rt.compile(
        "print('hello', 1, {a: [1]}, [2], null, undefined, true); console.log('n=' + guest.n); "
        "console.warn('w'); console.error('e'); guest.n",
        name="logs",
    )
    result = script.run({"guest": {"n": 3}})
    assert result == ScriptResult(3, ['hello 1 {"a":[1]} [2] null undefined true', "n=3", "w", "e"])
    assert script.run({"guest": {"n": 4}}).logs == [
        'hello 1 {"a":[1]} [2] null undefined true',
        "n=4",
        "w",
        "e",
    ]
    assert rt.compile("1", name="quiet").run({}).logs == []


def test_logs_are_capped(rt: ScriptRuntime) -> None:
    logs = rt.compile("for (var i = 0; i < 1500; i++) print(i); 0", name="noisy").run({}).logs
    assert len(logs) == 1001
    assert logs[:2] == ["0", "1"]
    assert logs[-1] == "(500 more log lines were dropped)"


def test_print_of_unprintable_values_does_not_fail(rt: ScriptRuntime) -> None:
    source = (
        "var c = {}; c.c = c; var bad = {toJSON: function () { throw 1; }, toString: function () { throw 2; }};"
        "print(c, bad, Object.create(null), Symbol('s')); 1"
    )
    logs = rt.compile(source, name="odd").run({}).logs
    assert logs == ["[object Object] [value that cannot be shown] {} Symbol(s)"]


# ---- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("(function () { return guest.missing.x; })()", "TypeError: cannot read property 'x' of undefined"),
        ("null.foo()", "TypeError: cannot read property 'foo' of null"),
        ("throw new Error('boom')", "Error: boom"),
        ("throw new RangeError('out')", "RangeError: out"),
        ("throw 'just a string'", "just a string"),
        (
            "throw null",
            "null (thrown by the script, or by QuickJS when it ran out of memory creating an error)",
        ),
        ("throw undefined", "undefined"),
        ("throw {code: 7}", '{"code":7}'),
        ("undefinedVariable + 1", "ReferenceError: 'undefinedVariable' is not defined"),
        ("var c = {}; c.c = c; c", "TypeError: circular reference"),
        ("1n", "TypeError: bigint are forbidden in JSON.stringify"),
        (
            "throw {toString: function () { throw 1; }}",
            "Error: the script threw a value that cannot be shown",
        ),
    ],
)
def test_thrown_errors_have_the_js_message(rt: ScriptRuntime, source: str, message: str) -> None:
    error = error_of(rt, source, {"guest": {}})
    assert error.kind == "error"
    assert str(error) == error.message == message
    assert error.script == "test"
    still_works(rt)


def test_logs_printed_before_an_error_are_kept(rt: ScriptRuntime) -> None:
    error = error_of(rt, "print('before'); throw new TypeError('bad')")
    assert (error.kind, error.message, error.logs) == ("error", "TypeError: bad", ["before"])


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("var x = ", 1),
        ("(function () {\n  var a = 1;\n  return a +;\n})();", 3),
        ("return 5;", 1),  # a program may not return (a function body could)
        ("(function () { return 1; })()\n)", 2),
        ("let a = 1; let a = 2;", 1),
    ],
)
def test_syntax_errors_are_reported_at_compile_time(rt: ScriptRuntime, source: str, line: int) -> None:
    with pytest.raises(ScriptError) as info:
        rt.compile(source, name="broken")
    error = info.value
    assert error.kind == "syntax"
    assert error.message.startswith("SyntaxError: ")
    assert error.line == line
    assert error.message.endswith(f"(line {line})")
    assert error.script == "broken"


def test_syntax_check_does_not_run_the_source(rt: ScriptRuntime) -> None:
    rt.compile("while (true) {} function later() {}", name="never-run")  # would time out if it ran
    rt.compile("globalThis.sideEffect = 1; 2", name="side")
    assert run(rt, "typeof sideEffect") == "undefined"


@pytest.mark.parametrize("source", ["1 +\x00 2", "'\ud800'"])
def test_sources_python_cannot_hand_to_quickjs_are_syntax_errors(rt: ScriptRuntime, source: str) -> None:
    with pytest.raises(ScriptError) as info:
        rt.compile(source, name="bad")
    assert info.value.kind == "syntax"


# ---- limits -----------------------------------------------------------------------------------------------


def test_an_endless_loop_stops_at_the_time_limit() -> None:
    rt = ScriptRuntime()
    other = rt.compile("guest.n * 2", name="other")  # compiled before the context is replaced
    started = time.perf_counter()
    error = error_of(rt, "print('going'); while (true) {}")
    assert time.perf_counter() - started < 1.0
    assert (error.kind, error.message, error.logs) == ("timeout", TIMEOUT, ["going"])
    assert other.run({"guest": {"n": 21}}).value == 42
    still_works(rt)


def test_an_endless_loop_cannot_be_caught_by_the_script(rt: ScriptRuntime) -> None:
    error = error_of(rt, "try { while (true) {} } catch (e) { 'caught'; }")
    assert error.kind == "timeout"
    still_works(rt)


def test_the_time_limit_is_configurable() -> None:
    rt = ScriptRuntime(time_limit_ms=10)
    started = time.perf_counter()
    error = error_of(rt, "for (;;) {}")
    assert time.perf_counter() - started < 0.5
    assert error.message == "timeout: script ran longer than 10 ms and was stopped"


def test_unbounded_memory_growth_stops_at_the_memory_limit() -> None:
    rt = ScriptRuntime(hard_limit_ms=60_000)  # the brief's script spends ~1 s in native joins
    error = error_of(rt, "var a = []; while (true) a.push(new Array(100000).join('x'))")
    assert (error.kind, error.message) == ("memory", MEMORY)
    still_works(rt)


def test_doubling_a_string_stops_at_the_memory_limit() -> None:
    rt = ScriptRuntime(memory_limit_mb=16)
    error = error_of(rt, "var s = 'x'; while (true) { s += s; }")
    assert (error.kind, error.message) == ("memory", "memory: script used more than 16 MB and was stopped")
    still_works(rt)


def test_catching_out_of_memory_still_reports_memory(rt: ScriptRuntime) -> None:
    error = error_of(rt, "try { var s = 'x'; while (true) { s += s; } } catch (e) { throw e; }")
    assert error.kind == "memory"
    still_works(rt)


def test_deep_recursion_is_a_stack_overflow_error(rt: ScriptRuntime) -> None:
    error = error_of(rt, "function f(n) { return f(n + 1) + 1; } f(0)")
    assert (error.kind, error.message) == ("error", "InternalError: stack overflow")
    still_works(rt)
    assert run(rt, "function g(n) { return n === 0 ? 0 : 1 + g(n - 1); } g(1000)") == 1000
    assert run(rt, "function h() { return h(); } try { h(); } catch (e) { 'caught ' + e.message; }") == (
        "caught stack overflow"
    )


@pytest.mark.parametrize(
    "use",
    ["JSON.stringify(o).length", "JSON.stringify(o, null, 2).length", "JSON.stringify(o, ['a']).length", "o"],
)
def test_stringifying_a_very_deep_value_is_an_error_not_a_crash(rt: ScriptRuntime, use: str) -> None:
    # QuickJS's native JSON.stringify has no stack check: unguarded, this segfaults the whole process.
    source = f"var o = 1; for (var i = 0; i < 30000; i++) {{ o = {{a: o}}; }} {use}"
    error = error_of(rt, source)
    # Which limit trips first depends on the machine (indentation grows fast; QuickJS throws null when it
    # cannot allocate the error): the point is a ScriptError, not a dead process.
    assert error.message.startswith(("InternalError: stack overflow", "null")) or error.kind in (
        "memory",
        "timeout",
    )
    deep_print = rt.compile("var o = 1; for (var i = 0; i < 30000; i++) { o = [o]; } print(o); 1", name="p")
    assert deep_print.run({}).logs == ["[value that cannot be shown]"]
    assert run(rt, "JSON.stringify({b: [1, {c: 2}], a: 1}, ['a']) + JSON.stringify([1], null, 1)") == (
        '{"a":1}[\n 1\n]'
    )
    assert run(rt, "[JSON.stringify.name, JSON.stringify.length]") == ["stringify", 3]
    still_works(rt)


@pytest.mark.parametrize("depth", [1500, 5000, 100_000])
def test_deeply_nested_values_are_an_error_not_a_crash(rt: ScriptRuntime, depth: int) -> None:
    source = f"var o = 1; for (var i = 0; i < {depth}; i++) {{ o = [o]; }} o"
    assert error_of(rt, source).kind in ("error", "timeout")  # QuickJS or Python refuses the depth
    still_works(rt)
    nested: Any = 1
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(TypeError, match="JSON-compatible"):
        rt.compile("1", name="x").run({"guest": nested})


def test_runtime_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="time_limit_ms"):
        ScriptRuntime(time_limit_ms=0)
    with pytest.raises(ValueError, match="memory_limit_mb"):
        ScriptRuntime(memory_limit_mb=0)
    assert ScriptRuntime().hard_limit_ms == 2000
    assert ScriptRuntime(time_limit_ms=100).hard_limit_ms == 4000
    assert ScriptRuntime(hard_limit_ms=500).hard_limit_ms == 500


# ---- work QuickJS cannot interrupt: overdue gate and quarantine -------------------------------------------


def _backtracking_length(seconds: float) -> int:
    """How long a string of 'a's makes /(a+)+b/ backtrack for about ``seconds`` on this machine."""
    probe = ScriptRuntime().compile("/(a+)+b/.test(guest)", name="probe")
    started = time.perf_counter()
    probe.run({"guest": "a" * 16})
    per_16 = max(time.perf_counter() - started, 1e-4)
    return max(16, min(30, 16 + round(math.log2(seconds / per_16))))


@pytest.fixture(scope="module")
def slow_input() -> str:
    return "a" * _backtracking_length(2.0)


def _in_thread(script: Script, values: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(script.run(values))
        except ScriptError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.slow
def test_a_run_quickjs_cannot_interrupt_gets_its_script_quarantined(slow_input: str) -> None:
    rt = ScriptRuntime(hard_limit_ms=300)
    script = rt.compile("/(a+)+b/.test(guest)", name="evil regex")
    thread, outcome = _in_thread(script, {"guest": slow_input})
    _wait_for(lambda: script.quarantined)
    assert rt.stuck_scripts == ["evil regex"]
    started = time.perf_counter()
    with pytest.raises(ScriptError) as info:
        script.run({"guest": "b"})  # refused at once, whatever the input
    assert time.perf_counter() - started < 0.5
    assert info.value.kind == "timeout"
    assert "did not stop within 300 ms" in info.value.message
    thread.join(60)
    assert isinstance(outcome[0], ScriptError)
    assert outcome[0].kind == "timeout"
    assert rt.stuck_scripts == []
    assert rt.compile("/(a+)+b/.test(guest)", name="evil regex").run({"guest": "aab"}).value is True
    still_works(rt)


@pytest.mark.slow
def test_while_a_run_is_overdue_new_runs_of_that_script_are_refused(slow_input: str) -> None:
    rt = ScriptRuntime(hard_limit_ms=60_000)
    script = rt.compile("/(a+)+b/.test(guest)", name="slow regex")
    bystander = rt.compile("guest.n", name="bystander")
    thread, outcome = _in_thread(script, {"guest": slow_input})
    _wait_for(lambda: script._overdue)
    with pytest.raises(ScriptError) as info:
        script.run({"guest": "ab"})
    assert info.value.kind == "timeout"
    assert "another run of this script has been running for over 200 ms" in info.value.message
    assert bystander.run({"guest": {"n": 1}}).value == 1  # other scripts are unaffected
    thread.join(60)
    assert outcome == [ScriptResult(False, [])]  # it finished below the hard limit: a normal result
    _wait_for(lambda: not script._overdue)
    assert script.run({"guest": "ab"}).value is True
    assert not script.quarantined


# ---- isolation between runs -------------------------------------------------------------------------------


def test_top_level_var_does_not_survive_the_run(rt: ScriptRuntime) -> None:
    script = rt.compile("var seen = (typeof seen === 'undefined') ? 'fresh' : 'leaked'; seen", name="v")
    assert [script.run({}).value for _ in range(3)] == ["fresh"] * 3
    assert run(rt, "typeof seen") == "undefined"


@pytest.mark.parametrize(
    "setup",
    [
        "counter = 1;",  # implicit global (sloppy mode)
        "this.counter = 1;",
        "globalThis.counter = 1;",
        "(0, eval)('var counter = 1');",
        "Object.defineProperty(globalThis, 'counter', {value: 1, enumerable: false, configurable: true});",
        "globalThis[Symbol.for('counter')] = 1; counter = 1;",
    ],
)
def test_globals_created_by_a_run_are_gone_afterwards(rt: ScriptRuntime, setup: str) -> None:
    assert run(rt, setup + " typeof counter") == "number"
    assert run(rt, "[typeof counter, typeof globalThis[Symbol.for('counter')]]") == ["undefined", "undefined"]


def test_declared_globals_do_not_outlive_their_run(rt: ScriptRuntime) -> None:
    assert run(rt, "guest.n", {"guest": {"n": 1}}) == 1
    assert run(rt, "typeof guest") == "undefined"
    assert run(rt, "typeof tier", {"tier": "gold"}, globals=("tier",)) == "string"
    assert run(rt, "typeof tier") == "undefined"


def test_a_script_cannot_change_built_ins_for_later_runs(rt: ScriptRuntime) -> None:
    attack = (
        "Array.prototype.push = function () { return -1; };"
        "Object.prototype.polluted = 'yes';"
        "JSON = null; Math = {}; print = null;"
        "String.prototype.toUpperCase = function () { return 'hacked'; };"
        "try { Object.defineProperty(Array.prototype, 'x', {value: 1}); } catch (e) {}"
        "[].push(1)"
    )
    assert run(rt, attack) == 1  # assignments to frozen built-ins are ignored, as in sloppy mode
    source = "[typeof JSON, typeof Math.max, ({}).polluted, 'a'.toUpperCase(), [].x, typeof print]"
    assert run(rt, source) == ["object", "function", None, "A", None, "function"]


def test_ordinary_objects_may_still_override_inherited_methods(rt: ScriptRuntime) -> None:
    source = (
        "var o = {}; o.toString = function () { return 'mine'; }; o.constructor = 'c';"
        "var e = new Error('x'); e.message = 'changed'; e.name = 'Custom';"
        "function P() {} P.prototype.toString = function () { return 'P!'; };"
        "[String(o), o.constructor, String(e), String(new P())]"
    )
    assert run(rt, source) == ["mine", "c", "Custom: changed", "P!"]


@pytest.mark.parametrize(
    "attack",
    [
        "Object.defineProperty(globalThis, 'stuck', {value: 1, configurable: false}); 1",
        "Object.setPrototypeOf(globalThis, {stuck: 1}); 1",
        "Object.preventExtensions(globalThis); 1",
    ],
)
def test_a_run_that_leaves_undeletable_state_gets_a_fresh_context(rt: ScriptRuntime, attack: str) -> None:
    assert run(rt, attack) == 1
    assert run(rt, "typeof stuck") == "undefined"
    still_works(rt)


def test_scripts_do_not_see_each_others_state(rt: ScriptRuntime) -> None:
    writer = rt.compile("var secret = guest.s; leaked = guest.s; secret", name="writer")
    reader = rt.compile("[typeof secret, typeof leaked]", name="reader")
    assert writer.run({"guest": {"s": "pw"}}).value == "pw"
    assert reader.run({}).value == ["undefined", "undefined"]


def test_a_script_cannot_keep_state_on_its_wrapper_function(rt: ScriptRuntime) -> None:
    # In eval mode `arguments` is the wrapper's; the wrapper is frozen, so the assignment is ignored.
    script = rt.compile(
        "var f = arguments.callee; f.count = (f.count || 0) + 1; [typeof f, f.count]", name="self"
    )
    assert [script.run({}).value for _ in range(2)] == [["function", None]] * 2


def test_each_run_gets_fresh_copies_of_its_values(rt: ScriptRuntime) -> None:
    script = rt.compile("guest.list.push(1); guest.list.length", name="mutate")
    guest: dict[str, Any] = {"list": []}
    assert [script.run({"guest": guest}).value for _ in range(3)] == [1, 1, 1]
    assert guest == {"list": []}


def test_shared_json_is_parsed_once_and_shared_by_the_runs_given_it(rt: ScriptRuntime) -> None:
    script = rt.compile("guest.list.push(1); guest.list.length", name="shared")
    shared = SharedJSON({"list": []})
    assert shared.text == '{"list":[]}'
    assert [script.run({"guest": shared}).value for _ in range(3)] == [1, 2, 3]  # one JS object
    assert script.run({"guest": SharedJSON({"list": []})}).value == 1  # a new instance is a new object
    assert shared.value == {"list": []}  # the Python value is never touched


def test_many_shared_values_do_not_accumulate(rt: ScriptRuntime) -> None:
    script = rt.compile("guest.n", name="many")
    for n in range(50):
        assert script.run({"guest": SharedJSON({"n": n, "pad": "x" * 10_000})}).value == n


# ---- globals ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["1abc", "a-b", "", "ü", "var", "class", "JSON", "print", "console", "eval", "__proto__", "arguments"],
)
def test_global_names_must_be_usable_identifiers(rt: ScriptRuntime, name: str) -> None:
    with pytest.raises(ValueError):
        check_global_name(name)
    with pytest.raises(ValueError):
        rt.compile("1", name="x", globals=("guest", name))


def test_global_names_must_be_unique_and_a_sequence(rt: ScriptRuntime) -> None:
    with pytest.raises(ValueError, match="unique"):
        rt.compile("1", name="x", globals=("guest", "guest"))
    with pytest.raises(TypeError):
        rt.compile("1", name="x", globals="guest")
    check_global_name("$valid_Name2")


# ---- threads ----------------------------------------------------------------------------------------------


def test_one_script_runs_from_many_threads_with_a_context_each() -> None:
    rt = ScriptRuntime()
    script = rt.compile(
        "(function () { var s = 0; for (var i = 0; i < guest.n; i++) s += i; return s; })()", name="t"
    )
    errors: list[BaseException] = []
    states: list[object] = []  # the objects, not their ids: a finished thread's id could be reused

    def work(offset: int) -> None:
        try:
            for n in range(offset, offset + 150):
                assert script.run({"guest": {"n": n}}).value == n * (n - 1) // 2
            states.append(rt._state())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({id(state) for state in states}) == 4


def test_a_timeout_in_one_thread_does_not_disturb_another() -> None:
    rt = ScriptRuntime()
    good = rt.compile("guest.n + 1", name="good")
    bad = rt.compile("while (true) {}", name="bad")
    stop = threading.Event()
    failures: list[Any] = []

    def steady() -> None:
        n = 0
        while not stop.is_set():
            try:
                if good.run({"guest": {"n": n}}).value != n + 1:
                    failures.append(n)
            except ScriptError as exc:  # pragma: no cover - reported below
                failures.append(exc)
            n += 1

    thread = threading.Thread(target=steady)
    thread.start()
    try:
        for _ in range(3):
            with pytest.raises(ScriptError):
                bad.run({})
    finally:
        stop.set()
        thread.join()
    assert failures == []


# ---- properties -------------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(st.characters(blacklist_categories=["Cs"]))
)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(st.characters(blacklist_categories=["Cs"]), max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def echo(rt: ScriptRuntime) -> Script:
    return rt.compile("guest", name="echo")


def _as_doubles(value: Any) -> Any:
    """JS numbers are doubles: 2.8e16 comes back as the integer 28000000000000000."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_as_doubles(v) for v in value]
    return {k: _as_doubles(v) for k, v in value.items()}


@HYPOTHESIS
@given(value=json_values)
def test_any_json_value_round_trips(echo: Script, value: Any) -> None:
    assert _as_doubles(echo.run({"guest": value}).value) == _as_doubles(value)


@HYPOTHESIS
@given(source=st.text(max_size=60))
def test_any_source_compiles_or_raises_a_syntax_error(rt: ScriptRuntime, source: str) -> None:
    try:
        script = rt.compile(source, name="fuzz")
    except ScriptError as exc:
        assert exc.kind == "syntax"
        return
    try:
        script.run({"guest": {}})
    except ScriptError as exc:
        assert exc.kind in ("error", "timeout", "memory")
