"""Decision models: programmables feeding FIRST-hit decision tables, Sitecore's result shape, validation.

Programmables run in real QuickJS; entries are checked form by form, and fuzzed: any entry text either
compiles to a predicate or raises DecisionModelError.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from flowlab.sandbox.personalize.decisions import (
    ANY,
    DecisionModel,
    DecisionModelError,
    ModelResult,
    evaluate_model,
    parse_input_entry,
    parse_output_entry,
    parse_path,
)
from flowlab.sandbox.personalize.demo import demo_tenant
from flowlab.sandbox.personalize.javascript import ScriptRuntime

HYPOTHESIS = settings(database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TIER_JS = """(function () {
  var des = guest.dataExtensions || [];
  for (var i = 0; i < des.length; i++) {
    if (des[i].name === "ext") { print("tier " + des[i].values.tier); return des[i].values.tier; }
  }
  return "none";
})();"""

MODEL: dict[str, Any] = {
    "ref": "5c1d0000-0000-0000-0000-000000000001",
    "name": "Hero Banner Model",
    "nodes": [
        {
            "id": "n-tier",
            "name": "Guest Tier",
            "type": "programmable",
            "outputReference": "tier",
            "outputType": "String",
            "source": TIER_JS,
        },
        {
            "id": "n-offer",
            "name": "Hero Offer",
            "type": "decisionTable",
            "hitPolicy": "FIRST",
            "inputs": [
                {"label": "Tier", "expression": "tier"},
                {"label": "Country", "expression": "guest.country"},
                {"label": "Campaign", "expression": "request.params.utm.campaign"},
            ],
            "outputs": [
                {"name": "offer", "typeRef": "com.boxever.offer"},
                {"name": "headline", "typeRef": "string"},
            ],
            "rules": [
                {
                    "inputEntries": ['"gold","platinum"', '"DE"', "-"],
                    "outputEntries": ['"offer-vip"', '"Willkommen"'],
                },
                {"inputEntries": ["", 'not("US")', ""], "outputEntries": ['"offer-world"', '"Hello"']},
            ],
        },
    ],
}


def guest(tier: str | None, country: str) -> dict[str, Any]:
    extensions = [{"name": "ext", "values": {"tier": tier}}] if tier else []
    return {"firstName": "Ada", "country": country, "dataExtensions": extensions}


REQUEST = {"params": {"utm": {"campaign": "spring"}}}


@pytest.fixture(scope="module")
def rt() -> ScriptRuntime:
    return ScriptRuntime()


@pytest.fixture(scope="module")
def model(rt: ScriptRuntime) -> DecisionModel:
    return DecisionModel.from_json(MODEL, runtime=rt)


def without_times(result: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(result)
    for node in result["decisionModelResultNodes"]:
        assert isinstance(node.pop("executionTime"), float)
    return result


def table(
    inputs: list[str], rules: list[tuple[list[str], list[str]]], outputs: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """A one-table model reading guest.<input> columns."""
    return {
        "ref": "m",
        "name": "M",
        "nodes": [
            {
                "id": "t",
                "name": "My Table",
                "type": "decisionTable",
                "inputs": [{"label": name, "expression": f"guest.{name}"} for name in inputs],
                "outputs": outputs or [{"name": "out", "typeRef": "string"}],
                "rules": [{"inputEntries": e, "outputEntries": o} for e, o in rules],
            }
        ],
    }


# ---- the reference model ----------------------------------------------------------------------------------


def test_the_first_matching_rule_wins_and_the_result_has_sitecores_shape(model: DecisionModel) -> None:
    outcome = model.evaluate(guest=guest("gold", "DE"), request=REQUEST, bucket=42)
    assert isinstance(outcome, ModelResult)
    assert without_times(outcome.result) == {
        "decisionModelName": "Hero Banner Model",
        "decisionModelRef": "5c1d0000-0000-0000-0000-000000000001",
        "decisionModelVariantName": "v1",
        "error": False,
        "debug": {"bucket": "42", "logs": "tier gold"},
        "decisionModelResultNodes": [
            {
                "id": "n-tier",
                "name": "Guest Tier",
                "type": "programmable",
                "error": False,
                "dependentNodeIds": [],
                "outputs": [{"tier": "gold"}],
            },
            {
                "id": "n-offer",
                "name": "Hero Offer",
                "type": "decisionTable",
                "error": False,
                "dependentNodeIds": ["n-tier"],
                "outputs": [
                    {
                        "ruleId": "HeroOffer_0",
                        "offer": {"type": "com.boxever.offer", "value": "offer-vip"},
                        "headline": "Willkommen",
                    }
                ],
            },
        ],
    }
    assert outcome.offer_refs == ["offer-vip"]
    assert outcome.rows_hit == [
        {
            "node": "Hero Offer",
            "ruleId": "HeroOffer_0",
            "ruleIndex": 0,
            "inputs": {"Tier": "gold", "Country": "DE", "Campaign": "spring"},
        }
    ]
    assert outcome.logs == ["tier gold"]
    assert outcome.error is False
    assert model.ref == MODEL["ref"]
    assert model.name == "Hero Banner Model"
    assert model.node_ids == ["n-tier", "n-offer"]


def test_a_later_rule_matches_when_the_first_does_not(model: DecisionModel) -> None:
    outcome = model.evaluate(guest=guest("silver", "FR"), request={"params": {}})
    table_node = outcome.result["decisionModelResultNodes"][1]
    assert table_node["outputs"] == [
        {
            "ruleId": "HeroOffer_1",
            "offer": {"type": "com.boxever.offer", "value": "offer-world"},
            "headline": "Hello",
        }
    ]
    assert outcome.rows_hit[0]["ruleIndex"] == 1
    assert outcome.rows_hit[0]["inputs"] == {"Tier": "silver", "Country": "FR", "Campaign": None}
    assert outcome.offer_refs == ["offer-world"]
    assert outcome.result["debug"]["bucket"] == "0"


def test_no_matching_rule_gives_no_output_row(model: DecisionModel) -> None:
    outcome = model.evaluate(guest=guest(None, "US"), request=REQUEST)
    assert outcome.result["decisionModelResultNodes"][1]["outputs"] == []
    assert outcome.result["error"] is False
    assert outcome.offer_refs == []
    assert outcome.rows_hit == []
    assert outcome.table_inputs == {"Hero Offer": {"Tier": "none", "Country": "US", "Campaign": "spring"}}
    assert outcome.result["decisionModelResultNodes"][0]["outputs"] == [{"tier": "none"}]


def test_the_model_json_is_not_modified_and_unknown_fields_are_ignored(rt: ScriptRuntime) -> None:
    data = copy.deepcopy(MODEL) | {"description": "d", "revision": 3}
    data["nodes"][1]["annotation"] = "x"
    before = copy.deepcopy(data)
    DecisionModel.from_json(data, runtime=rt)
    assert data == before


def test_evaluate_model_accepts_json_or_a_compiled_model(model: DecisionModel, rt: ScriptRuntime) -> None:
    a = evaluate_model(MODEL, guest=guest("gold", "DE"), request=REQUEST, bucket=3)
    b = evaluate_model(MODEL, guest=guest("gold", "DE"), request=REQUEST, bucket=3, runtime=rt)
    c = evaluate_model(model, guest=guest("gold", "DE"), request=REQUEST, bucket=3)
    assert without_times(a.result) == without_times(b.result) == without_times(c.result)


def test_variant_name_and_empty_models(rt: ScriptRuntime) -> None:
    empty = DecisionModel.from_json(
        {"ref": "r", "name": "Empty", "variantName": "v7", "nodes": []}, runtime=rt
    )
    outcome = empty.evaluate(guest={}, request={})
    assert outcome.result == {
        "decisionModelName": "Empty",
        "decisionModelRef": "r",
        "decisionModelVariantName": "v7",
        "error": False,
        "debug": {"bucket": "0", "logs": ""},
        "decisionModelResultNodes": [],
    }


def test_the_demo_tenants_models_all_compile_and_evaluate(rt: ScriptRuntime) -> None:
    for data in demo_tenant(n_guests=1).decision_models:
        outcome = DecisionModel.from_json(data, runtime=rt).evaluate(
            guest=guest("gold", "DE") | {"guestType": "customer"}, request=REQUEST, pos={"market": "DE"}
        )
        assert outcome.result["error"] is False, outcome.result


# ---- programmables ----------------------------------------------------------------------------------------


def two_programmables(first: str, second: str, *, table_reads: str = "b") -> dict[str, Any]:
    return {
        "ref": "m2",
        "name": "Chain",
        "nodes": [
            {"id": "p-b", "name": "B", "type": "programmable", "outputReference": "b", "source": second},
            {"id": "p-a", "name": "A", "type": "programmable", "outputReference": "a", "source": first},
            {
                "id": "t",
                "name": "Pick",
                "type": "decisionTable",
                "inputs": [{"label": "B", "expression": table_reads}],
                "outputs": [{"name": "out", "typeRef": "string"}],
                "rules": [
                    {"inputEntries": ["null"], "outputEntries": ['"missing"']},
                    {"inputEntries": ["-"], "outputEntries": ['"present"']},
                ],
            },
        ],
    }


def test_a_programmable_reading_another_runs_after_it(rt: ScriptRuntime) -> None:
    data = two_programmables("guest.n * 10", "(function () { return a + 1; })()")  # B listed first
    outcome = DecisionModel.from_json(data, runtime=rt).evaluate(guest={"n": 4}, request={})
    nodes = outcome.result["decisionModelResultNodes"]
    assert [n["name"] for n in nodes] == ["A", "B", "Pick"]
    assert nodes[0]["outputs"] == [{"a": 40}]
    assert nodes[1]["outputs"] == [{"b": 41}]
    assert nodes[1]["dependentNodeIds"] == ["p-a"]
    assert nodes[2]["dependentNodeIds"] == ["p-b"]
    assert nodes[2]["outputs"] == [{"ruleId": "Pick_1", "out": "present"}]


def test_this_dot_reference_counts_as_reading_it(rt: ScriptRuntime) -> None:
    data = two_programmables("'x'", "(function () { return this.a + this['a']; })()")
    outcome = DecisionModel.from_json(data, runtime=rt).evaluate(guest={}, request={})
    assert outcome.result["decisionModelResultNodes"][1]["outputs"] == [{"b": "xx"}]
    assert outcome.result["decisionModelResultNodes"][1]["dependentNodeIds"] == ["p-a"]


def test_property_names_and_comments_do_not_count_as_reading(rt: ScriptRuntime) -> None:
    data = two_programmables("guest.b", "guest.a")  # .a and .b are properties, not the outputs
    assert [
        n["name"]
        for n in DecisionModel.from_json(data, runtime=rt)
        .evaluate(guest={}, request={})
        .result["decisionModelResultNodes"]
    ] == ["B", "A", "Pick"]


def test_programmables_reading_each_other_are_a_cycle(rt: ScriptRuntime) -> None:
    with pytest.raises(DecisionModelError, match="cycle") as info:
        DecisionModel.from_json(two_programmables("b + 1", "a + 1"), runtime=rt)
    assert info.value.field == "source"


def test_a_failing_programmable_is_a_node_error_and_downstream_sees_none(rt: ScriptRuntime) -> None:
    data = two_programmables("1", "print('about to fail'); guest.missing.x")  # B fails, runs first
    outcome = DecisionModel.from_json(data, runtime=rt).evaluate(guest={}, request={})
    result = outcome.result
    assert result["error"] is True
    failed, ok, pick = result["decisionModelResultNodes"]
    assert failed["name"] == "B"
    assert failed["error"] is True
    assert failed["errorCause"] == "TypeError: cannot read property 'x' of undefined"
    assert failed["outputs"] == []
    assert (ok["name"], ok["error"], ok["outputs"]) == ("A", False, [{"a": 1}])  # evaluation went on
    assert "errorCause" not in ok
    assert pick["outputs"] == [{"ruleId": "Pick_0", "out": "missing"}]
    assert result["debug"]["logs"] == "about to fail"
    assert outcome.error is True


def test_a_downstream_programmable_sees_null_for_a_failed_upstream(rt: ScriptRuntime) -> None:
    data = two_programmables("throw new Error('no')", "a === null ? 'upstream failed' : a")
    result = DecisionModel.from_json(data, runtime=rt).evaluate(guest={}, request={}).result
    assert result["decisionModelResultNodes"][0]["errorCause"] == "Error: no"
    assert result["decisionModelResultNodes"][1]["outputs"] == [{"b": "upstream failed"}]


def test_a_runaway_programmable_times_out_as_a_node_error() -> None:
    rt = ScriptRuntime(time_limit_ms=20)
    data = two_programmables("while (true) {}", "'fine'")
    result = DecisionModel.from_json(data, runtime=rt).evaluate(guest={}, request={}).result
    assert result["decisionModelResultNodes"][1]["errorCause"] == (
        "timeout: script ran longer than 20 ms and was stopped"
    )
    assert result["decisionModelResultNodes"][0]["outputs"] == [{"b": "fine"}]


def test_programmables_see_guest_request_pos_and_entity(rt: ScriptRuntime) -> None:
    source = "[guest.n, request.params.p, pos && pos.name, entity, typeof entity]"
    data = {
        "name": "Ctx",
        "nodes": [
            {"id": "p", "name": "P", "type": "programmable", "outputReference": "ctx", "source": source}
        ],
    }
    compiled = DecisionModel.from_json(data, runtime=rt)
    out = compiled.evaluate(guest={"n": 1}, request={"params": {"p": "x"}}, pos={"name": "shop"}).result
    assert out["decisionModelResultNodes"][0]["outputs"] == [{"ctx": [1, "x", "shop", None, "object"]}]
    out = compiled.evaluate(guest={"n": 1}, request={"params": {}}, entity={"k": 2}).result
    assert out["decisionModelResultNodes"][0]["outputs"] == [{"ctx": [1, None, None, {"k": 2}, "object"]}]


def test_a_programmable_mutating_the_guest_does_not_affect_the_next_evaluation(rt: ScriptRuntime) -> None:
    data = two_programmables("guest.list.push(1); guest.list.length", "guest.list.length")
    compiled = DecisionModel.from_json(data, runtime=rt)
    g: dict[str, Any] = {"list": []}
    first = compiled.evaluate(guest=g, request={}).result["decisionModelResultNodes"]
    second = compiled.evaluate(guest=g, request={}).result["decisionModelResultNodes"]
    assert [n["outputs"] for n in first[:2]] == [n["outputs"] for n in second[:2]] == [[{"b": 0}], [{"a": 1}]]
    assert g == {"list": []}


def test_models_evaluate_concurrently_from_many_threads(model: DecisionModel) -> None:
    failures: list[Any] = []

    def work(tier: str, country: str, expected: str) -> None:
        for _ in range(100):
            refs = model.evaluate(guest=guest(tier, country), request=REQUEST).offer_refs
            if refs != [expected]:
                failures.append(refs)

    args = [("gold", "DE", "offer-vip"), ("silver", "FR", "offer-world"), ("platinum", "DE", "offer-vip")]
    threads = [threading.Thread(target=work, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# ---- input entries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "matches", "misses"),
    [
        ("", ["x", None, 1, [], {}], []),
        ("-", ["x", None, 1], []),
        ("  -  ", ["x"], []),
        ('"gold"', ["gold"], ["Gold", "GOLD", " gold", None, 1, ["gold"]]),
        ('"gold","platinum"', ["gold", "platinum"], ["silver", None]),
        ('"a, b", "c"', ["a, b", "c"], ["a", "b"]),
        ('"say \\"hi\\""', ['say "hi"'], ["say hi"]),
        ('"\\u00fc"', ["ü"], ["u"]),
        ('" "', [" "], ["", "  "]),
        ('not("US")', ["DE", None, 1], ["US"]),
        ('not("US","CA")', ["DE", None], ["US", "CA"]),
        ("not( < 5 )", [5, 6, None, "x"], [4, "4"]),
        ("not([1..3], 7)", [0, 4, None], [1, 3, 7, "2"]),
        ("not(null)", ["x", 0, False], [None]),
        ("5", [5, 5.0, "5", " 5 ", "5.0"], [6, "five", None, True, "5x"]),
        ("-2.5", [-2.5, "-2.5"], [2.5]),
        ("< 5", [4, 4.9, "4", -1], [5, 6, None, "x", True]),
        ("<= 5", [5, "5"], [5.1]),
        ("> 5", [6, "7"], [5, None]),
        (">= 5", [5, 9], [4.99]),
        ("!= 5", [4, None, "x", "6"], [5, "5"]),
        ('!= "US"', ["DE", None], ["US"]),
        ("= 5", [5], [4]),
        ('< "m"', ["a", "l"], ["m", "z", 1, None]),
        ("[1..5]", [1, 3, 5, "2"], [0, 6, 5.5, None, "x"]),
        ("(1..5)", [2, 4.9], [1, 5]),
        ("[1..5)", [1, 4], [5]),
        ("(1..5]", [5], [1]),
        ("]1..5[", [3], [1, 5]),
        ('["a".."c"]', ["a", "b", "c"], ["d", 1]),
        ("true", [True, "true"], [False, "false", 1, "TRUE", None]),
        ("false", [False, "false"], [True, 0, None]),
        ("TRUE", [True], [False]),
        ("null", [None], ["", 0, False, "null"]),
        ('"5"', ["5", 5, 5.0], ["5.0", 6]),
        ("5, 7", [5, 7, "7"], [6]),
        ('"x", 5, true, null', ["x", 5, True, None], ["y", 6, False]),
    ],
)
def test_input_entry_forms(entry: str, matches: list[Any], misses: list[Any]) -> None:
    predicate = parse_input_entry(entry)
    for value in matches:
        assert predicate(value) is True, (entry, value)
    for value in misses:
        assert predicate(value) is False, (entry, value)


def test_empty_entries_are_the_any_predicate() -> None:
    assert parse_input_entry("") is ANY
    assert parse_input_entry(" - ") is ANY


@pytest.mark.parametrize(
    "entry",
    [
        '"unterminated',
        "not(",
        'not("a"',
        'not("a") x',
        'not(not("a"))',
        '"a", not("b")',
        "< true",
        "<",
        "[1..]",
        "[1..5",
        "[1 5]",
        '[1.."x"]',
        "[null..5]",
        "gold",
        "5 6",
        '"a" "b"',
        ",",
        "'single'",
        "@",
        '"\\ud800"',
        "--",
    ],
)
def test_invalid_input_entries_raise_decision_model_error(entry: str) -> None:
    with pytest.raises(DecisionModelError, match="input entry"):
        parse_input_entry(entry)


def test_a_bad_entry_in_a_model_names_the_node_rule_and_column(rt: ScriptRuntime) -> None:
    data = table(["a", "b"], [(["-", "-"], ['"x"']), (["1", '"oops'], ['"y"'])])
    with pytest.raises(DecisionModelError) as info:
        DecisionModel.from_json(data, runtime=rt)
    message = str(info.value)
    assert "node 'My Table'" in message
    assert "rules[1].inputEntries[1]" in message
    assert "'\"oops'" in message
    assert (info.value.node, info.value.field) == ("My Table", "rules[1].inputEntries[1]")


# ---- output entries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "value"),
    [
        ('"text"', "text"),
        ('  "with \\"quotes\\" and \\n"  ', 'with "quotes" and \n'),
        ("5", 5),
        ("-1.5", -1.5),
        ("true", True),
        ("false", False),
        ("", None),
        ("   ", None),
        ("null", None),
    ],
)
def test_output_entries(entry: str, value: Any) -> None:
    parsed = parse_output_entry(entry)
    assert parsed == value
    assert type(parsed) is type(value)


@pytest.mark.parametrize("entry", ["-", "text", '"a","b"', "< 5", "[1..2]", '"open'])
def test_invalid_output_entries(entry: str) -> None:
    with pytest.raises(DecisionModelError, match="output entry"):
        parse_output_entry(entry)


def test_offer_outputs_are_typed_and_collected_in_node_order(rt: ScriptRuntime) -> None:
    outputs = [
        {"name": "Homepage Banner", "typeRef": "com.retailsite.offer"},
        {"name": "second", "typeRef": "com.boxever.offer"},
        {"name": "score", "typeRef": "double"},
        {"name": "flag", "typeRef": "boolean"},
    ]
    data = table(["k"], [(["-"], ['"o-1"', "", "0.5", "true"])], outputs)
    data["nodes"].append(copy.deepcopy(data["nodes"][0]) | {"id": "t2", "name": "Other"})
    data["nodes"][1]["rules"][0]["outputEntries"] = ['"o-2"', '"o-3"', "1", "false"]
    outcome = DecisionModel.from_json(data, runtime=rt).evaluate(guest={}, request={})
    first, second = outcome.result["decisionModelResultNodes"]
    assert first["outputs"] == [
        {
            "ruleId": "MyTable_0",
            "Homepage Banner": {"type": "com.retailsite.offer", "value": "o-1"},
            "second": None,
            "score": 0.5,
            "flag": True,
        }
    ]
    assert second["outputs"][0]["ruleId"] == "Other_0"
    assert outcome.offer_refs == ["o-1", "o-2", "o-3"]


def test_rule_ids_drop_all_whitespace_from_the_node_name(rt: ScriptRuntime) -> None:
    data = table(["k"], [(["-"], ['"x"'])])
    data["nodes"][0]["name"] = "  Home\tpage  Hero "
    outcome = DecisionModel.from_json(data, runtime=rt).evaluate(guest={}, request={})
    assert outcome.rows_hit[0]["ruleId"] == "HomepageHero_0"


# ---- input expressions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "parsed"),
    [
        ("tier", ("tier", ())),
        (" guest.country ", ("guest", ("country",))),
        ("request.params.utm.campaign", ("request", ("params", "utm", "campaign"))),
        ("guest.orders[0].price", ("guest", ("orders", 0, "price"))),
        (
            "guest.dataExtensions[1].values['Brand Scores']",
            ("guest", ("dataExtensions", 1, "values", "Brand Scores")),
        ),
        ('guest["first-name"]', ("guest", ("first-name",))),
        ("guest.orders.length", ("guest", ("orders", "length"))),
        ("$x._y", ("$x", ("_y",))),
    ],
)
def test_input_expressions_parse_to_paths(expression: str, parsed: tuple[str, tuple[Any, ...]]) -> None:
    assert parse_path(expression) == parsed


@pytest.mark.parametrize(
    "expression", ["", "  ", "1abc", "guest.", "guest..x", "guest[x]", "guest[-1]", "a + b"]
)
def test_bad_input_expressions(expression: str) -> None:
    with pytest.raises(DecisionModelError, match="input expression"):
        parse_path(expression)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("guest.country", "DE"),
        ("guest.orders[1].price", 20),
        ("guest.orders[5].price", None),
        ("guest.orders.length", 2),
        ("guest.orders.1.price", 20),
        ("guest.name.length", 3),
        ("guest.missing.deeper", None),
        ("guest.country.x", None),
        ("guest.orders.x", None),
        ("guest.ext['Brand Scores']", 0.5),
        ("pos.market", None),
    ],
)
def test_input_paths_resolve_and_missing_is_none(rt: ScriptRuntime, expression: str, value: Any) -> None:
    data = table([], [([], ['"x"'])])
    data["nodes"][0]["inputs"] = [{"label": "v", "expression": expression}]
    data["nodes"][0]["rules"] = [{"inputEntries": ["-"], "outputEntries": ['"x"']}]
    g = {
        "country": "DE",
        "name": "Ada",
        "orders": [{"price": 10}, {"price": 20}],
        "ext": {"Brand Scores": 0.5},
    }
    outcome = DecisionModel.from_json(data, runtime=rt).evaluate(guest=g, request={})
    assert outcome.rows_hit[0]["inputs"] == {"v": value}


# ---- validation -------------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "node", "field", "text"),
    [
        (_set("nodes", {}), None, "nodes", "must be a list"),
        (_set("nodes/0", "x"), None, "nodes[0]", "must be an object"),
        (_set("nodes/0/id", _DELETE), "Guest Tier", "id", "non-empty string id"),
        (_set("nodes/1/id", "n-tier"), "Hero Offer", "id", "used by another node"),
        (_set("nodes/1/name", " Guest Tier "), " Guest Tier ", "name", "same name"),
        (_set("nodes/1/name", ""), "nodes[1]", "name", "non-empty name"),
        (_set("nodes/1/type", "webhook"), "Hero Offer", "type", "not supported"),
        (_set("nodes/0/outputReference", "guest tier"), "Guest Tier", "outputReference", "identifier"),
        (_set("nodes/0/outputReference", "guest"), "Guest Tier", "outputReference", "hide the global"),
        (_set("nodes/0/outputReference", "JSON"), "Guest Tier", "outputReference", "built-in"),
        (_set("nodes/0/outputReference", "class"), "Guest Tier", "outputReference", "reserved"),
        (_set("nodes/0/source", ""), "Guest Tier", "source", "needs its JavaScript"),
        (_set("nodes/0/source", "(function () { return 1 +; })();"), "Guest Tier", "source", "SyntaxError"),
        (_set("nodes/0/outputType", 5), "Guest Tier", "outputType", "must be a string"),
        (_set("nodes/1/hitPolicy", "BEST"), "Hero Offer", "hitPolicy", "not supported"),
        (_set("nodes/1/inputs", "tier"), "Hero Offer", "inputs", "must be a list"),
        (_set("nodes/1/inputs/0", "tier"), "Hero Offer", "inputs[0]", "must be an object"),
        (
            _set("nodes/1/inputs/0/expression", ""),
            "Hero Offer",
            "inputs[0].expression",
            "needs an expression",
        ),
        (_set("nodes/1/inputs/0/expression", "tierr"), "Hero Offer", "inputs[0].expression", "known: guest"),
        (
            _set("nodes/1/inputs/1/expression", "guest..x"),
            "Hero Offer",
            "inputs[1].expression",
            "cannot read",
        ),
        (_set("nodes/1/inputs/0/label", 3), "Hero Offer", "inputs[0].label", "must be a string"),
        (_set("nodes/1/outputs", []), "Hero Offer", "outputs", "non-empty list"),
        (_set("nodes/1/outputs/1", 1), "Hero Offer", "outputs[1]", "must be an object"),
        (_set("nodes/1/outputs/1/name", "offer"), "Hero Offer", "outputs[1].name", "used twice"),
        (_set("nodes/1/outputs/1/name", "ruleId"), "Hero Offer", "outputs[1].name", "reserved"),
        (_set("nodes/1/outputs/1/typeRef", None), "Hero Offer", "outputs[1].typeRef", "must be a string"),
        (_set("nodes/1/rules", {}), "Hero Offer", "rules", "must be a list"),
        (_set("nodes/1/rules/0", []), "Hero Offer", "rules[0]", "must be an object"),
        (_set("nodes/1/rules/0/inputEntries", ["-"]), "Hero Offer", "rules[0].inputEntries", "3 entries"),
        (_set("nodes/1/rules/1/outputEntries", ['"x"']), "Hero Offer", "rules[1].outputEntries", "2 entries"),
        (
            _set("nodes/1/rules/1/inputEntries/2", 5),
            "Hero Offer",
            "rules[1].inputEntries[2]",
            "must be a string",
        ),
        (
            _set("nodes/1/rules/0/outputEntries/0", "5"),
            "Hero Offer",
            "rules[0].outputEntries[0]",
            "quoted offer ref",
        ),
        (
            _set("nodes/1/rules/0/outputEntries/1", "hello"),
            "Hero Offer",
            "rules[0].outputEntries[1]",
            "output entry",
        ),
    ],
)
def test_invalid_models_name_the_node_and_field(
    rt: ScriptRuntime, change: Any, node: str | None, field: str, text: str
) -> None:
    data = copy.deepcopy(MODEL)
    change(data)
    with pytest.raises(DecisionModelError) as info:
        DecisionModel.from_json(data, runtime=rt)
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.node, error.field) == (node, field)
    assert text in str(error)
    assert str(error).startswith("decision model 'Hero Banner Model': ")
    assert f"field '{field}'" in str(error)


def test_model_level_fields_are_checked(rt: ScriptRuntime) -> None:
    with pytest.raises(DecisionModelError, match="JSON object"):
        DecisionModel.from_json([], runtime=rt)  # type: ignore[arg-type]
    with pytest.raises(DecisionModelError, match="'name' must be a string"):
        DecisionModel.from_json({"name": 5, "nodes": []}, runtime=rt)
    assert DecisionModel.from_json({"ref": "r", "nodes": []}, runtime=rt).name == "r"


def test_null_entries_count_as_empty(rt: ScriptRuntime) -> None:
    data = table(["a"], [([None], [None])])  # type: ignore[list-item]
    outcome = DecisionModel.from_json(data, runtime=rt).evaluate(guest={}, request={})
    assert outcome.result["decisionModelResultNodes"][0]["outputs"] == [{"ruleId": "MyTable_0", "out": None}]


# ---- speed ------------------------------------------------------------------------------------------------


def test_a_ten_rule_table_evaluates_in_microseconds(rt: ScriptRuntime) -> None:
    rules = [([f'"t{i}"', f"> {i}", "-"], [f'"offer-{i}"']) for i in range(9)] + [
        (["-", "-", "-"], ['"last"'])
    ]
    data = table(["tier", "score", "country"], rules, [{"name": "offer", "typeRef": "com.boxever.offer"}])
    compiled = DecisionModel.from_json(data, runtime=rt)
    g = {"tier": "t-none", "score": 50, "country": "DE"}  # falls through to the last rule
    assert compiled.evaluate(guest=g, request={}).offer_refs == ["last"]
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(500):
            compiled.evaluate(guest=g, request={})
        best = min(best, (time.perf_counter() - started) / 500)
    assert best < 100e-6, f"{best * 1e6:.1f} µs per evaluation"  # ~15 µs on a quiet 2-core machine


# ---- properties -------------------------------------------------------------------------------------------

entry_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet='"(),.[]<>=!-0123456789 notruefalsenul', max_size=30),
    st.lists(
        st.sampled_from(['"a"', "5", "-1.5", "<", ">=", "!=", "[", "]", "(", ")", "..", ",", "not", "null"])
    ).map(" ".join),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@HYPOTHESIS
@given(text=entry_text, values=st.lists(json_values, max_size=4))
def test_any_entry_text_is_a_predicate_or_a_decision_model_error(text: str, values: list[Any]) -> None:
    try:
        predicate = parse_input_entry(text)
    except DecisionModelError:
        return
    for value in values:
        assert predicate(value) in (True, False)


@HYPOTHESIS
@given(text=entry_text)
def test_any_output_entry_is_a_value_or_a_decision_model_error(text: str) -> None:
    try:
        value = parse_output_entry(text)
    except DecisionModelError:
        return
    assert value is None or isinstance(value, str | int | float | bool)


@HYPOTHESIS
@given(text=st.text(max_size=40))
def test_any_input_expression_is_a_path_or_a_decision_model_error(text: str) -> None:
    try:
        root, steps = parse_path(text)
    except DecisionModelError:
        return
    assert root
    assert all(isinstance(step, str | int) for step in steps)
