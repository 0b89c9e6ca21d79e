"""DMN decision models (Camunda dialect, as Sitecore exports them): every hit policy, the input entries the
reference lists, JavaScript inputs, typeRefs, dependency order, connection nodes, placeholders, and hostile
XML refused (#11). Real sandbox code throughout; the demo's own DMN files from tests/fixtures."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from flowlab.sandbox.personalize.decisions import DecisionModel, DecisionModelError
from flowlab.sandbox.personalize.dmn import MASK, DmnError, mask_connection, parse_dmn
from flowlab.sandbox.personalize.freemarker import Template, TemplateError
from flowlab.sandbox.personalize.javascript import ScriptRuntime

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "sitecore-demo"
MODELS = DEMO / "decisioning" / "decisionModels"
NS = (
    'xmlns="http://www.omg.org/spec/DMN/20151101/dmn.xsd" xmlns:biodi="http://bpmn.io/schema/dmn/biodi/1.0" '
    'xmlns:camunda="http://camunda.org/schema/1.0/dmn"'
)


@pytest.fixture(scope="module")
def rt() -> ScriptRuntime:
    return ScriptRuntime()


def _dmn(*decisions: str) -> str:
    return f'<definitions {NS} id="definitions" name="definitions">{"".join(decisions)}</definitions>'


def _programmable(node_id: str, name: str, var: str, script: str, requires: tuple[str, ...] = ()) -> str:
    reqs = "".join(
        f'<informationRequirement><requiredDecision href="#{r}"/></informationRequirement>' for r in requires
    )
    return (
        f'<decision id="{node_id}" name="{name}"><variable typeRef="string" name="{var}"/>{reqs}'
        f'<literalExpression expressionLanguage="javascript"><text><![CDATA[{script}]]></text>'
        "</literalExpression></decision>"
    )


def _table(
    rules: list[tuple[list[str], list[str]]],
    *,
    policy: str | None = None,
    aggregation: str | None = None,
    inputs: str = '<input label="Tier"><inputExpression typeRef="string"><text>tier</text></inputExpression></input>',
    outputs: str = '<output name="pick" typeRef="string"/>',
    requires: tuple[str, ...] = ("p1",),
) -> str:
    attrs = (f' hitPolicy="{policy}"' if policy else "") + (
        f' aggregation="{aggregation}"' if aggregation else ""
    )
    body = "".join(
        f'<rule id="R_{i}">'
        + "".join(f"<inputEntry><text><![CDATA[{e}]]></text></inputEntry>" for e in ins)
        + "".join(f"<outputEntry><text><![CDATA[{e}]]></text></outputEntry>" for e in outs)
        + "</rule>"
        for i, (ins, outs) in enumerate(rules)
    )
    reqs = "".join(
        f'<informationRequirement><requiredDecision href="#{r}"/></informationRequirement>' for r in requires
    )
    return f'<decision id="t1" name="Pick">{reqs}<decisionTable{attrs}>{inputs}{outputs}{body}</decisionTable></decision>'


def _run(rt: ScriptRuntime, xml: str, guest: dict[str, Any] | None = None, **request: Any) -> dict[str, Any]:
    model = parse_dmn(xml, ref="m1", name="Test")
    compiled = DecisionModel.from_json(model.definition, runtime=rt)
    result = compiled.evaluate(guest=guest or {"ref": "g"}, request={"params": request})
    return {node["name"]: node for node in result.result["decisionModelResultNodes"]} | {"_": result}


TIER = _programmable("p1", "Tier", "tier", "(function () { return guest.tier || ' '; })();")
GOLD_RULES = [(['"gold"'], ['"a"']), (['"gold","silver"'], ['"b"']), ([""], ['"c"'])]


@pytest.mark.parametrize(
    ("policy", "aggregation", "tier", "outputs", "error"),
    [
        (None, None, "bronze", [{"ruleId": "R_2", "pick": "c"}], None),  # UNIQUE by default: one match
        (None, None, "gold", [], "hit policy UNIQUE: 3 rules match"),
        ("FIRST", None, "gold", [{"ruleId": "R_0", "pick": "a"}], None),
        (
            "RULE ORDER",
            None,
            "silver",
            [{"ruleId": "R_1", "pick": "b"}, {"ruleId": "R_2", "pick": "c"}],
            None,
        ),
        ("COLLECT", None, "gold", [{"ruleId": f"R_{i}", "pick": p} for i, p in enumerate("abc")], None),
        ("ANY", None, "gold", [], "hit policy ANY"),
    ],
)
def test_hit_policies(
    rt: ScriptRuntime, policy: str | None, aggregation: str | None, tier: str, outputs: Any, error: str | None
) -> None:
    nodes = _run(rt, _dmn(TIER, _table(GOLD_RULES, policy=policy, aggregation=aggregation)), {"tier": tier})
    assert nodes["Pick"]["outputs"] == outputs
    assert nodes["Pick"]["error"] is (error is not None)
    if error:
        assert error in nodes["Pick"]["errorCause"] and nodes["_"].result["error"] is True


def test_any_with_agreeing_rules_returns_one_row(rt: ScriptRuntime) -> None:
    rules = [(['"gold"'], ['"x"']), ([""], ['"x"'])]
    nodes = _run(rt, _dmn(TIER, _table(rules, policy="ANY")), {"tier": "gold"})
    assert nodes["Pick"]["outputs"] == [{"ruleId": "R_0", "pick": "x"}]


@pytest.mark.parametrize(("aggregation", "expected"), [("SUM", 6), ("COUNT", 3), ("MIN", 1), ("MAX", 3)])
def test_collect_aggregations(rt: ScriptRuntime, aggregation: str, expected: int) -> None:
    rules = [([""], ["1"]), ([""], ["2"]), ([""], ["3"]), (['"nobody"'], ["100"])]
    outputs = '<output name="score" typeRef="integer"/>'
    xml = _dmn(TIER, _table(rules, policy="COLLECT", aggregation=aggregation, outputs=outputs))
    assert _run(rt, xml, {"tier": "gold"})["Pick"]["outputs"] == [{"score": expected}]


@pytest.mark.parametrize(
    ("entry", "tier", "hit"),
    [
        ('"gold"', "gold", True),
        ('"gold"', "Gold", False),  # strings are case-sensitive, as in DMN
        ('"gold","silver"', "silver", True),
        ('not(" ")', "gold", True),
        ('not(" ")', " ", False),  # the demo's "missing" sentinel
        ('" "', " ", True),
        ("", "anything", True),
        ("other", "gold", True),  # a bare variable reference: equals that variable's value
        ("other", "silver", False),
        ("not(other)", "silver", True),
    ],
)
def test_input_entries(rt: ScriptRuntime, entry: str, tier: str, hit: bool) -> None:
    other = _programmable("p2", "Other", "other", "(function () { return 'gold'; })();")
    xml = _dmn(TIER, other, _table([([entry], ['"yes"'])], policy="FIRST", requires=("p1", "p2")))
    outputs = _run(rt, xml, {"tier": tier})["Pick"]["outputs"]
    assert outputs == ([{"ruleId": "R_0", "pick": "yes"}] if hit else [])


def test_boolean_input_with_typeref_and_true_entry(rt: ScriptRuntime) -> None:
    flag = _programmable("p1", "Flag", "flag", "(function () { return 'true'; })();")
    inputs = (
        '<input label="Flag"><inputExpression typeRef="boolean"><text>flag</text></inputExpression></input>'
    )
    xml = _dmn(flag, _table([(["true"], ['"on"']), (["false"], ['"off"'])], inputs=inputs))
    assert _run(rt, xml)["Pick"]["outputs"] == [{"ruleId": "R_0", "pick": "on"}]


def test_javascript_input_expression_and_path_into_the_guest(rt: ScriptRuntime) -> None:
    inputs = (
        '<input label="Orders"><inputExpression typeRef="integer" expressionLanguage="javascript">'
        "<text>guest.orders.length + request.params.extra</text></inputExpression></input>"
        '<input label="Country"><inputExpression typeRef="string"><text>guest.address.country</text>'
        "</inputExpression></input>"
    )
    rules = [([">= 3", '"IE"'], ['"loyal"']), (["", ""], ['"new"'])]
    xml = _dmn(_table(rules, policy="FIRST", inputs=inputs, requires=()))
    guest = {"orders": [1, 2], "address": {"country": "IE"}}
    assert _run(rt, xml, guest, extra=1)["Pick"]["outputs"][0]["pick"] == "loyal"
    assert _run(rt, xml, guest, extra=0)["Pick"]["outputs"][0]["pick"] == "new"


def test_dependency_order_follows_required_decisions_not_document_order(rt: ScriptRuntime) -> None:
    # the table comes first in the file and a programmable reads its output through `this`
    message = _programmable(
        "p3",
        "Message",
        "message",
        "(function () { return 'Hi ' + this.pick + ' ' + tier; })();",
        ("t1", "p1"),
    )
    xml = _dmn(message, _table([([""], ['"there"'])], policy="FIRST"), TIER)
    model = DecisionModel.from_json(parse_dmn(xml, ref="m", name="Order").definition, runtime=rt)
    assert model.node_ids == ["p1", "t1", "p3"]
    result = model.evaluate(guest={"tier": "gold"}, request={})
    nodes = result.result["decisionModelResultNodes"]
    assert nodes[-1]["outputs"] == [{"message": "Hi there gold"}]
    assert nodes[-1]["dependentNodeIds"] == ["p1", "t1"]


def test_a_cycle_is_refused_naming_the_nodes(rt: ScriptRuntime) -> None:
    a = _programmable("a", "A", "aa", "(function () { return 1; })();", ("b",))
    b = _programmable("b", "B", "bb", "(function () { return 2; })();", ("a",))
    with pytest.raises(DecisionModelError, match="cycle"):
        DecisionModel.from_json(parse_dmn(_dmn(a, b), ref="m", name="Cycle").definition, runtime=rt)


def test_offer_outputs(rt: ScriptRuntime) -> None:
    outputs = '<output name="hero" typeRef="com.boxever.offer" biodi:offerTemplateRef="tpl-1"/>'
    xml = _dmn(TIER, _table([(['"gold"'], ['"offer-ref-1"']), ([""], [""])], policy="FIRST", outputs=outputs))
    nodes = _run(rt, xml, {"tier": "gold"})
    assert nodes["Pick"]["outputs"] == [
        {"ruleId": "R_0", "hero": {"type": "com.boxever.offer", "value": "offer-ref-1"}}
    ]
    assert nodes["_"].offer_refs == ["offer-ref-1"]
    assert (
        parse_dmn(xml, ref="m", name="x").definition["nodes"][1]["outputs"][0]["offerTemplateRef"] == "tpl-1"
    )


def test_the_demo_getguestref_model_and_template(rt: ScriptRuntime) -> None:
    model = parse_dmn((MODELS / "GetGuestRef" / "GetGuestRef.xml").read_bytes(), ref="r", name="GetGuestRef")
    result = DecisionModel.from_json(model.definition, runtime=rt).evaluate(guest={"ref": "g-42"}, request={})
    assert result.result["decisionModelResultNodes"][0]["outputs"] == [{"getguestref": "g-42"}]
    template = (DEMO / "experiences" / "fullStack" / "GetGuestRef" / "Personalisation.txt").read_text()
    body = Template.compile(template).render({"decisionModelResults": result.result}, {})
    assert body.split() == ["{", '"guestRef"', ":", '"g-42"', "}"]


def test_the_demo_welcome_model_stops_at_its_connection(rt: ScriptRuntime) -> None:
    xml = (MODELS / "Dynamic Welcome Message" / "v14.xml").read_bytes()
    model = parse_dmn(xml, ref="r", name="Dynamic Welcome Message", variant_name="v14")
    assert model.limitations == []  # connections run (#11, connections.py)
    kinds = {n["name"]: n["type"] for n in model.definition["nodes"]}
    assert (
        kinds["Azure Translation"] == "connection" and kinds["Message Template Selector"] == "decisionTable"
    )
    connection = next(n for n in model.definition["nodes"] if n["name"] == "Azure Translation")["connection"]
    key = next(h for h in connection["customHeaders"] if h["name"] == "Ocp-Apim-Subscription-Key")
    assert key["value"] == MASK  # secrets never kept
    compiled = DecisionModel.from_json(model.definition, runtime=rt)
    guest = {"firstName": "Ann", "sessions": [], "dataExtensions": []}
    result = compiled.evaluate(guest=guest, request={"params": {"ipAddress": "81.2.69.160"}})
    # evaluation stops at the connection and asks the engine to call it, with its mapped input
    assert result.failure is None and result.pending is not None
    assert result.pending["name"] == "Get City from MaxMind"
    assert result.pending["inputs"] == {"ipAddress": "81.2.69.160"}
    nodes = result.result["decisionModelResultNodes"]
    assert [n["name"] for n in nodes] == ["Get First Name", "Get Guest IP Address"]
    assert nodes[0]["outputs"] == [{"firstName": "Ann"}]
    # a failed call fails the node and the model, with the connection's error
    failed = compiled.evaluate(
        guest=guest, request={}, connections={result.pending["node"]: {"error": "Read timed out"}}
    )
    assert (
        failed.failure == "Read timed out" and failed.result["decisionModelResultNodes"][-1]["error"] is True
    )


def test_placeholders_take_their_default_or_are_reported(rt: ScriptRuntime) -> None:
    script = "(function () { return '[[Greeting | string | Hello | {required: true}]]' + '[[Name | string]]'; })();"
    model = parse_dmn(_dmn(_programmable("p", "Greet", "greet", script)), ref="m", name="Tpl")
    assert "'Hello'" in model.definition["nodes"][0]["source"]
    assert (
        len(model.warnings) == 1
        and "[[Name | string]]" in model.warnings[0]
        and "no default" in model.warnings[0]
    )


def test_connection_secrets_are_masked() -> None:
    masked = mask_connection(
        {
            "auth": {"authType": "OAUTH2", "clientId": "id", "clientSecret": "s3cret"},
            "request": {"connectionUrl": "https://x.example/v1?apikey=abc&q=1"},
            "customHeaders": [{"name": "X-Api-Key", "value": "k"}, {"name": "Accept", "value": "json"}],
            "password": "p",
        }
    )
    assert masked["auth"]["clientSecret"] == MASK and masked["auth"]["clientId"] == "id"
    assert masked["request"]["connectionUrl"] == f"https://x.example/v1?apikey={MASK}&q=1"
    assert masked["customHeaders"] == [
        {"name": "X-Api-Key", "value": MASK},
        {"name": "Accept", "value": "json"},
    ]
    assert masked["password"] == MASK


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<definitions><decision id="a" name="&lol3;"/></definitions>"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<definitions><decision id="a" name="&secret;"/></definitions>"""


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL])
def test_hostile_xml_is_refused_with_a_clear_error(xml: str) -> None:
    with pytest.raises(DmnError, match="refuses") as info:
        parse_dmn(xml, ref="m", name="Evil")
    assert "DOCTYPE" in str(info.value) and "root:" not in str(info.value)


@pytest.mark.parametrize(
    ("xml", "text"),
    [
        ("<definitions><decision", "not well-formed"),
        ("<html/>", "not a DMN <definitions>"),
        (_dmn(), "no <decision>"),
        (_dmn('<decision id="a" name="A"><variable name="x"/></decision>'), "neither"),
        (_dmn(_programmable("p", "P", "x", "1", ("nope",))), "not in the file"),
    ],
)
def test_bad_dmn_says_what_is_wrong(xml: str, text: str) -> None:
    with pytest.raises(DmnError, match=text):
        parse_dmn(xml, ref="m", name="Bad")


# ---- the FreeMarker the demo's templates need (.now, ?iso_local) ---------------------------------------


def test_now_and_iso_formats() -> None:
    before = int(time.time() * 1000)
    now = int(Template.compile("${.now?c}").render({}, {}))
    assert before <= now <= int(time.time() * 1000)
    text = Template.compile("${d?iso_local}|${d?iso_utc}|${d?iso_utc_ms}|${0?iso_local}").render(
        {"d": 1700000000123}, {}
    )
    assert text == "2023-11-14T22:13:20Z|2023-11-14T22:13:20Z|2023-11-14T22:13:20.123Z|1970-01-01T00:00:00Z"
    with pytest.raises(TemplateError, match=r"unknown special variable \.today"):
        Template.compile("${.today}")


def test_the_demo_triggered_template_renders() -> None:
    source = (
        '<#assign aDateTime = .now>{"Email": "${guest.email}", "CustomFields": '
        '["SubscriptionTimestamp=${aDateTime?iso_local}"]}'
    )
    body = json.loads(Template.compile(source).render({"guest": {"email": "a@b.c"}}, {}))
    stamp = body["CustomFields"][0].split("=", 1)[1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp) and body["Email"] == "a@b.c"
