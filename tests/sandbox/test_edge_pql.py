"""The PQL subset of reference §5.5: grammar, evaluation, caps (rules are tenant-supplied guest code)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from flowlab.sandbox.edge.pql import MAX_DEPTH, MAX_NODES, MAX_RULE_CHARS, Context, PqlError, evaluate, parse

NOW = int(datetime(2026, 10, 1, 9, 0, tzinfo=UTC).timestamp() * 1000)
HOUR = 3_600_000
DAY = 24 * HOUR
PROFILE = {
    "homeAddress": {"countryCode": "US", "city": "Seattle"},
    "loyalty": {"tier": "Gold", "points": 1200},
    "_lumen": {"newsletter": True},
}


def check(rule: str, events: list[tuple[int, dict]] | None = None, segments: set[str] | None = None) -> bool:
    ctx = Context(attributes=PROFILE, events=events or [], segments=segments or set(), now_ms=NOW)
    return evaluate(parse(rule).ast, ctx)


def checkout(ts: int) -> tuple[int, dict]:
    return ts, {"eventType": "commerce.checkouts", "commerce": {"order": {"priceTotal": 250}}}


# ---- the examples of §5.5, verbatim -------------------------------------------------------------------


def test_reference_examples_parse_and_evaluate() -> None:
    single = 'CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("commerce.checkouts", false)) WHEN(today)])'
    assert check(single, [checkout(NOW - HOUR)])
    assert not check(single, [checkout(NOW - 10 * HOUR)])  # yesterday (09:00 - 10 h)
    assert check('homeAddress.country.equals("US", false)') is False  # no such field: the example's path
    assert check('homeAddress.countryCode.equals("us", false)')
    both = 'homeAddress.countryCode.equals("US", false) and ' + single
    assert check(both, [checkout(NOW - HOUR)]) and not check(both)
    assert check('inSegment("a730") and inSegment("8fbb")', segments={"a730", "8fbb"})
    assert not check('inSegment("a730") and inSegment("8fbb")', segments={"a730"})
    multi = (
        'CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("directMarketing.emailClicked")) WHEN(today), '
        'C1: WHAT(eventType.equals("commerce.checkouts")) WHEN(today)])'
    )
    click = (NOW - 2 * HOUR, {"eventType": "directMarketing.emailClicked"})
    assert check(multi, [click, checkout(NOW - HOUR)])
    assert not check(multi, [checkout(NOW - 3 * HOUR), click])  # steps match in order


def test_string_functions_are_case_sensitive_unless_told() -> None:
    assert not check('loyalty.tier.equals("gold")')
    assert check('loyalty.tier.equals("gold", false)')
    assert check('loyalty.tier.equals("Gold", true)')
    assert check('homeAddress.city.startsWith("Sea") and homeAddress.city.endsWith("tle")')
    assert check('homeAddress.city.contains("att") and homeAddress.city.doesNotContain("x")')
    assert check('loyalty.tier.notEqualTo("silver")')
    assert check("homeAddress.zip.isNull() and homeAddress.city.isNotNull() and loyalty.exists()")


def test_comparisons_and_boolean_logic() -> None:
    assert check("loyalty.points >= 1000 and loyalty.points < 2000")
    assert not check("loyalty.points > 1200")
    assert check('_lumen.newsletter = true and not (homeAddress.countryCode = "GB")')
    assert check("loyalty.points = 1000 or loyalty.points == 1200")
    assert not check('loyalty.points = "1200"')  # no coercion between strings and numbers
    assert not check("missing.field > 3") and check("missing.field != 3")
    assert check("true") and not check("false or not true")


def test_time_windows() -> None:
    purchase = 'CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("p")) WHEN(< 7 days before now)])'
    assert check(purchase, [(NOW - 6 * DAY, {"eventType": "p"})])
    assert not check(purchase, [(NOW - 7 * DAY, {"eventType": "p"})])
    inclusive = purchase.replace("< 7", "<= 7")
    assert check(inclusive, [(NOW - 7 * DAY, {"eventType": "p"})])
    assert not check(purchase, [(NOW + HOUR, {"eventType": "p"})])  # an event after now does not count
    hours = purchase.replace("7 days", "2 hours")
    assert check(hours, [(NOW - HOUR, {"eventType": "p"})]) and not check(
        hours, [(NOW - 3 * HOUR, {"eventType": "p"})]
    )
    deep = "CHAIN(xEvent, timestamp, [C0: WHAT(commerce.order.priceTotal > 200) WHEN(today)])"
    assert check(deep, [checkout(NOW - HOUR)])


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("", "empty"),
        ('loyalty.tier.matches("(a+)+$")', "not supported"),
        ('city like "%es%"', "not supported"),
        ('loyalty.tier.equals("gold"', "expected"),
        ('loyalty.tier.frobnicate("x")', "unknown function"),
        ('"unterminated', "unterminated"),
        ("loyalty.points > ", "expected a value"),
        ("a = 1 b = 2", "join conditions"),
        ("__import__('os').system('x')", "expected"),
        ('CHAIN(xEvent, timestamp, [C0: WHAT(inSegment("x")) WHEN(today)])', "inside WHAT"),
        ('CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("x")) WHEN(> 2 days before now)])', "WHEN"),
        ('CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("x")) WHEN(< 900 days before now)])', "400"),
        ("a = 1 ; b = 2", "unexpected character"),
    ],
)
def test_bad_rules_say_what_to_fix(rule: str, message: str) -> None:
    with pytest.raises(PqlError, match=message):
        parse(rule)


def test_caps_on_size_nodes_and_depth() -> None:
    with pytest.raises(PqlError, match="limit"):
        parse("a = 1 or " * (MAX_RULE_CHARS // 8) + "a = 1")
    with pytest.raises(PqlError, match="too large"):
        parse(" or ".join(f"a = {i}" for i in range(MAX_NODES + 1)))
    with pytest.raises(PqlError, match="nests deeper"):
        parse("(" * (MAX_DEPTH + 2) + "a = 1" + ")" * (MAX_DEPTH + 2))
    with pytest.raises(PqlError, match="nests deeper"):
        parse("not " * (MAX_DEPTH + 2) + "a = 1")
    with pytest.raises(PqlError, match="longer than"):
        parse('a = "' + "x" * 300 + '"')


def test_the_worst_rule_within_the_caps_evaluates_quickly() -> None:
    """A CHAIN of 8 steps, each a wide WHAT, over 100 events: bounded by nodes × events."""
    what = " or ".join(f'eventType.contains("zq{i}", false)' for i in range(12))
    steps = ", ".join(f"C{i}: WHAT({what}) WHEN(today)" for i in range(8))
    rule = parse(f"CHAIN(xEvent, timestamp, [{steps}])")
    assert rule.nodes <= MAX_NODES and len(rule.text) <= MAX_RULE_CHARS
    events = [(NOW - i * 1000, {"eventType": "y" * 4000}) for i in range(100)]
    started = time.perf_counter()
    assert not evaluate(rule.ast, Context(attributes={}, events=events, segments=set(), now_ms=NOW))
    assert time.perf_counter() - started < 0.5  # about 10 ms; the bound is far from a stall


def test_parse_reports_what_the_timing_model_needs() -> None:
    rule = parse(
        'inSegment("a") and CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("x")) WHEN(< 3 days before now)])'
    )
    assert rule.segments == ("a",) and rule.has_events and rule.max_window_ms == 3 * DAY
    profile_only = parse("loyalty.points > 3")
    assert profile_only.segments == () and not profile_only.has_events and profile_only.max_window_ms == 0
