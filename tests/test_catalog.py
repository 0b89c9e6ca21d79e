"""Flow summaries and table rows from the sandbox's admin API."""

from __future__ import annotations

from flowlab import FlowClient, SandboxAdmin
from flowlab.sandbox import SandboxServer
from flowlab.workbench.catalog import (
    FlowSummary,
    decision_table_rows,
    flow_options,
    guest_rows,
    tracking_rows,
    wildcard_options,
)


def test_flow_summaries(admin: SandboxAdmin) -> None:
    flows = {f.friendly_id: f for f in (FlowSummary.from_admin(d) for d in admin.flows())}
    ab = flows["checkout_ab_test"]
    assert ab.kind == "Experiment" and ab.live and len(ab.variants) == 2
    assert ab.label == "checkout_ab_test — Checkout incentive A/B test"
    assert "A – Free shipping (50%, control, buckets 1–60)" in ab.details
    assert "does not run" in flows["summer_sale"].details


def test_wildcards_and_picker_order(admin: SandboxAdmin) -> None:
    assert wildcard_options(["hero_banner_campaign", "hero_banner_default", "checkout_ab_test"]) == [
        "hero_banner*"
    ]
    assert wildcard_options(["a_x", "a_y", "a_y_z"]) == ["a*", "a_y*"]
    options = flow_options([FlowSummary.from_admin(d) for d in admin.flows()])
    assert options.index("hero_banner*") == options.index("hero_banner_campaign") - 1
    assert options[-2:] == ["summer_sale", "winter_clearance"]  # flows that do not run come last


def test_decision_table_rows_name_offers(admin: SandboxAdmin) -> None:
    model = next(m for m in admin.decision_models() if m["name"] == "Hero Banner – Campaign Model")
    table = next(n for n in model["nodes"] if n["type"] == "decisionTable")
    rows = decision_table_rows(table, admin.offers())
    assert rows[0] == {
        "#": "1",
        "Tier": "gold or platinum",
        "Campaign": "spring_trail",
        "→ offer": "Early access for members",
    }
    assert rows[1] == {
        "#": "2",
        "Tier": "any",
        "Campaign": "spring_trail",
        "→ offer": "The Spring Trail Collection",
    }


def test_guest_and_tracking_rows(sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    page = admin.guests(limit=1)
    row = guest_rows(page["items"])[0]
    assert row["name"] == "Lena Vogel" and row["tier"] == "gold" and row["orders"] > 0
    with FlowClient(base_url=sandbox.url, retries=0) as client:
        client.call(clientKey=sandbox.client_key, friendlyId="checkout_ab_test", browserId="catalog-rows")
    guest = admin.guests(browserId="catalog-rows")["items"][0]
    rows = tracking_rows(admin.tracking(guest["ref"]), admin.flows())
    assert rows[-1]["flow"] == "checkout_ab_test" and rows[-1]["outcome"] == "EXECUTED"
    assert rows[-1]["variant"] in {"A – Free shipping", "B – 10% off"} and rows[-1]["offers"] == 1
