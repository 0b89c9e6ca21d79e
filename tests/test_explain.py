"""Explanations of real sandbox traces, and the diff helpers behind the compare view."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flowlab import FlowClient, SandboxAdmin
from flowlab.sandbox import SandboxServer
from flowlab.workbench.catalog import FlowSummary, entry_text
from flowlab.workbench.explain import diff_bodies, differing, explain_trace, flatten_json
from flowlab.workbench.personas import demo_personas


@pytest.fixture
def run(sandbox: SandboxServer, admin: SandboxAdmin) -> Iterator[Any]:
    """Call a flow as a demo persona (or a browser id) and return (trace, explanation)."""
    personas = {p.name: p for p in demo_personas()}

    def call(
        friendly_id: str, persona: str | None = None, browser_id: str = "explain-test", **kw: Any
    ) -> Any:
        with FlowClient(base_url=sandbox.url, retries=0) as client:
            if persona is not None:
                request = personas[persona].to_request(client_key=sandbox.client_key, friendly_id=friendly_id)
                response = client.call(request, raise_for_status=False)
            else:
                response = client.call(
                    clientKey=sandbox.client_key, friendlyId=friendly_id, browserId=browser_id,
                    raise_for_status=False, **kw,
                )  # fmt: skip
        trace = admin.execution(response.execution_ref or "")
        flows = [FlowSummary.from_admin(f) for f in admin.flows()]
        return trace, explain_trace(trace, models=admin.decision_models(), offers=admin.offers(), flows=flows)

    yield call


def texts(explanation: Any) -> str:
    return "\n".join(explanation.lines)


def test_bucket_and_variant_of_an_experiment(run: Any, admin: SandboxAdmin) -> None:
    trace, why = run("checkout_ab_test", browser_id="explain-bucket")
    bucket = trace["bucket"]
    variant = trace["variant"]["name"]
    low, high = trace["candidates"][0]["variant"]["buckets"]
    assert why.bucket == bucket and why.variant == variant and why.flow == "checkout_ab_test"
    assert f"Bucket {bucket} of 120 → variant '{variant}' (buckets {low}–{high})" in texts(why)
    other = "B – 10% off" if variant.startswith("A") else "A – Free shipping"
    assert f"'{other}' gets buckets" in texts(why)
    assert why.headline.startswith(f"Variant '{variant}'")
    # the explanation's variant is the one the TRACKING record names
    record = admin.tracking(trace["guest"]["ref"])[-1]
    assert record["arbitraryData"]["flowExecution"]["flowVariantRef"] == why.variant_ref


def test_condition_result_and_decision_table_row(run: Any) -> None:
    _, why = run("hero_banner_campaign", persona="First-time UK visitor (paid search)")
    text = texts(why)
    assert "Condition utm_campaign_present passed (returned {campaign: spring_trail})" in text
    assert (
        "Decision table 'Hero Offer' row 2 of 7 fired: Tier = none, Campaign = spring_trail "
        "(rule: Tier is any, Campaign is spring_trail) → offer 'The Spring Trail Collection'"
    ) in text
    assert "Programmable 'Guest Tier' returned tier = none" in text
    assert why.offers == ("The Spring Trail Collection",)
    passed = [r for r in why.reasons if r.verdict == "pass"]
    assert {r.step for r in passed} == {"condition", "decision"}


def test_fuzzy_match_explains_the_skipped_flow(run: Any) -> None:
    _, why = run("hero_banner*", persona="Lena Vogel")
    text = texts(why)
    assert "'hero_banner*' matches live flows by prefix" in text
    assert (
        "hero_banner_campaign: Condition utm_campaign_present did not pass (returned false) → flow skipped"
        in text
    )
    assert (
        "row 1 of 7 fired: Tier = gold, Country = DE (rule: Tier is gold or platinum, Country is any)" in text
    )
    assert why.flow == "hero_banner_default" and why.variant == "Default hero"


def test_known_and_new_guests(run: Any) -> None:
    _, known = run("checkout_ab_test", persona="Grace Miller")
    assert "Known customer found by email" in texts(known)
    _, new = run("checkout_ab_test", browser_id="never-seen-before-explain")
    assert "New visitor: no guest had this browserId" in texts(new)


def only_flow(friendly_id: str, condition: str) -> dict[str, Any]:
    return {
        "friendlyId": friendly_id, "name": friendly_id, "type": "INTERACTIVE_API_FLOW", "subtype": "EXPERIENCE",
        "status": "LIVE", "traffic": {"splits": [{"ref": "v1", "split": 100}]},
        "variants": [{"ref": "v1", "name": "Only", "isControl": True, "tasks": [
            {"implementation": "conditionsTask", "input": {"rules": [
                {"id": "scriptCondition", "friendlyId": "gate", "ruleData": {"expression": condition}}]}},
            {"implementation": "templateRenderTask", "input": {"template": '{"ok": true}'}}]}],
    }  # fmt: skip


def test_no_matching_variant_and_errors(fresh_sandbox: SandboxServer) -> None:
    with (
        SandboxAdmin(base_url=fresh_sandbox.url) as admin,
        FlowClient(base_url=fresh_sandbox.url, retries=0) as c,
    ):
        admin.load_flow(only_flow("gated", "(function () { return false; })();"))
        admin.load_flow(only_flow("broken", "(function () { throw new Error('boom'); })();"))
        gated = c.call(clientKey=fresh_sandbox.client_key, friendlyId="gated", browserId="b")
        broken = c.call(
            clientKey=fresh_sandbox.client_key, friendlyId="broken", browserId="b", raise_for_status=False
        )
        no_match = explain_trace(admin.execution(gated.execution_ref or ""))
        failed = explain_trace(admin.execution(broken.execution_ref or ""))
    assert no_match.outcome == "no matching variant" and no_match.variant is None
    assert "Condition gate did not pass (returned false) → no variant for this guest" in texts(no_match)
    assert "No matching variant" in no_match.headline
    assert failed.outcome == "error" and failed.status == 500
    assert "boom" in texts(failed) and failed.headline.startswith("Error 500")
    assert any(r.step == "error" and r.verdict == "fail" for r in failed.reasons)


def test_without_definitions_refs_stand_in_for_names(run: Any, admin: SandboxAdmin) -> None:
    trace, _ = run("checkout_ab_test", browser_id="explain-bare")
    bare = explain_trace(trace)
    assert any("fired" in line and "→ offer offer " in line for line in bare.lines)  # ref, not title
    assert "(rule:" not in texts(bare)


def test_decision_table_entries_in_words() -> None:
    assert entry_text("-") == "any"
    assert entry_text('"gold","platinum"') == "gold or platinum"
    assert entry_text('not("none")') == "not none"
    assert entry_text(">= 3") == ">= 3"


def test_differing_and_body_diffs() -> None:
    a = {"Variant": "A", "Offers": "Free shipping", "Latency": "3 ms"}
    b = {"Variant": "B", "Offers": "Free shipping", "Latency": "5 ms"}
    assert differing([a, b], ignore=["Latency"]) == ["Variant"]
    assert differing([a, {**a, "Extra": "x"}]) == ["Extra"]
    assert differing([a, a]) == []
    body_a = {"variant": "A", "decisionOffers": [{"attributes": {"title": "Free shipping"}}]}
    body_b = {"variant": "B", "decisionOffers": [{"attributes": {"title": "10% off"}}, {"x": 1}]}
    assert flatten_json(body_a) == {"variant": "A", "decisionOffers[0].attributes.title": "Free shipping"}
    assert diff_bodies([body_a, body_b]) == [
        "variant", "decisionOffers[0].attributes.title", "decisionOffers[1].x",
    ]  # fmt: skip
    assert flatten_json({}) == {"$": {}}
