"""Per-call cost of a typical audience condition in QuickJS (what the sandbox uses) and V8 (mini-racer).

    python bench/javascript.py            # mini-racer is optional: pip install mini-racer to compare

The same condition, the same JSON arguments, through the sandbox's own ``ScriptRuntime`` for QuickJS and
through mini-racer's ``call`` for V8. Both stop ``while (true) {}`` at their time limit; the script checks
that too.
"""

from __future__ import annotations

import time
from typing import Any

from flowlab.sandbox.personalize.javascript import ScriptError, ScriptRuntime

SOURCE = (
    "(function () { var p = request.params || {}; var utm = p.utm || {};"
    " return guest.tier === 'gold' && (utm.campaign || p.utm_campaign) === 'spring_trail'; })()"
)
VALUES: dict[str, Any] = {
    "guest": {
        "tier": "gold",
        "country": "DE",
        "dataExtensions": [{"name": "ext", "values": {"tier": "gold"}}],
    },
    "request": {"params": {"utm": {"campaign": "spring_trail"}}},
}
CALLS = 3_000


def per_call_us(fn: Any) -> float:
    for _ in range(200):
        fn()
    started = time.perf_counter()
    for _ in range(CALLS):
        fn()
    return (time.perf_counter() - started) / CALLS * 1e6


def main() -> None:
    runtime = ScriptRuntime(time_limit_ms=50)
    script = runtime.compile(SOURCE, name="condition")
    assert script.run(VALUES).value is True
    print(f"QuickJS (flowlab ScriptRuntime): {per_call_us(lambda: script.run(VALUES)):8.1f} µs per call")
    spin = runtime.compile("(function () { while (true) {} })()", name="spin")
    started = time.perf_counter()
    try:
        spin.run({})
    except ScriptError as exc:
        print(f"  while(true) stopped after {(time.perf_counter() - started) * 1000:.0f} ms: {exc}")
    try:
        from py_mini_racer import MiniRacer
    except ImportError:
        print("V8 (mini-racer): not installed; pip install mini-racer to compare")
        return
    v8 = MiniRacer()
    v8.eval(f"var condition = function (guest, request) {{ return {SOURCE}; }}")
    guest, request = VALUES["guest"], VALUES["request"]
    assert v8.call("condition", guest, request, timeout=50) is True
    cost = per_call_us(lambda: v8.call("condition", guest, request, timeout=50))
    print(f"V8 (mini-racer call):            {cost:8.1f} µs per call")


if __name__ == "__main__":
    main()
