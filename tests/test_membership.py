"""flowlab.analysis.membership on hand-built Edge run tables whose counts we know, then on a real Edge run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flowlab import analysis
from flowlab.admin import SandboxAdmin
from flowlab.analysis.membership import (
    attribute_summary,
    audience_names,
    edge_latency,
    is_edge_run,
    membership_dimensions,
    membership_rates,
    membership_sentence,
    parse_segments,
)
from flowlab.analysis.membership_chart import membership_chart
from flowlab.analysis.stats import wilson_interval
from flowlab.batch.runlog import load_results
from flowlab.batch.runner import BatchOptions, start_batch
from flowlab.batch.samples import edge_sample_from_sandbox
from flowlab.edge.provider import EdgeProvider
from flowlab.errors import FlowLabError, SampleError
from flowlab.sandbox import SandboxServer

GOLD, CHECKOUT, NEWS = "aud-gold", "aud-checkout", "aud-news"
AUDIENCES = [
    {"id": GOLD, "name": "Gold and platinum members", "evaluation": "batch"},
    {"id": CHECKOUT, "name": "Checking out today", "evaluation": "edge"},
    {"id": NEWS, "name": "UK newsletter subscribers", "evaluation": "batch"},
]


def _run(as_json: bool = False) -> pd.DataFrame:
    """DE: 10 answered (7 gold, 4 checkout, 2 both), 2 failed; FR: 20 answered (5 gold, 0 checkout), 1 failed."""
    rows: list[dict[str, Any]] = []
    for i in range(10):
        segments = ([GOLD] if i < 7 else []) + ([CHECKOUT] if i >= 5 and i < 9 else [])
        rows.append(
            {
                "countryCode": "DE",
                "ok": True,
                "segments": segments,
                "loyaltyTier": "gold" if i < 7 else "silver",
            }
        )
    for _ in range(2):
        rows.append({"countryCode": "DE", "ok": False, "segments": [GOLD, CHECKOUT], "loyaltyTier": "gold"})
    for i in range(20):
        rows.append(
            {"countryCode": "FR", "ok": True, "segments": [GOLD] if i < 5 else [], "loyaltyTier": "bronze"}
        )
    rows.append({"countryCode": "FR", "ok": False, "segments": None, "loyaltyTier": "bronze"})
    frame = pd.DataFrame(rows)
    frame.insert(0, "row", np.arange(1, len(frame) + 1))
    frame.insert(1, "guest", [f"LUMEN-{i:06d}" for i in range(len(frame))])
    frame["latency_ms"] = np.linspace(5.0, 40.0, len(frame))
    frame["error_type"] = np.where(frame["ok"], "", "ServerError")
    if as_json:
        frame["segments"] = [json.dumps(s) if s is not None else "" for s in frame["segments"]]
        frame["ok"] = frame["ok"].map({True: "True", False: "False"})  # a CSV round trip
    return frame


def _row(table: pd.DataFrame, audience: str, **where: str) -> pd.Series:
    mask = table["audience"] == audience
    for column, value in where.items():
        mask &= table[column] == value
    assert mask.sum() == 1, table
    return table[mask].iloc[0]


def test_overall_rates_are_exact_with_wilson_intervals() -> None:
    table = membership_rates(_run(), audiences=AUDIENCES)
    assert list(table.columns) == [
        "audience",
        "name",
        "guests",
        "members",
        "rate",
        "rate_low",
        "rate_high",
        "failed",
    ]
    assert table["audience"].tolist() == [GOLD, CHECKOUT, NEWS]  # biggest first; named but unseen last
    gold = _row(table, GOLD)
    assert (gold["guests"], gold["members"], gold["failed"]) == (
        30,
        12,
        3,
    )  # failed rows out of the denominator
    assert gold["rate"] == pytest.approx(12 / 30)
    low, high = wilson_interval(12, 30)
    assert (gold["rate_low"], gold["rate_high"]) == (pytest.approx(float(low)), pytest.approx(float(high)))
    news = _row(table, NEWS)
    assert (news["members"], news["rate"], news["rate_low"]) == (0, 0.0, 0.0)
    assert news["rate_high"] == pytest.approx(float(wilson_interval(0, 30)[1]))
    assert news["name"] == "UK newsletter subscribers"


def test_rates_by_dimension_and_confidence() -> None:
    table = membership_rates(_run(), by="countryCode", audiences={GOLD: "Gold"}, confidence=0.9)
    assert list(table.columns)[:3] == ["audience", "name", "countryCode"]
    de, fr = _row(table, GOLD, countryCode="DE"), _row(table, GOLD, countryCode="FR")
    assert (de["guests"], de["members"], de["failed"]) == (10, 7, 2)
    assert (fr["guests"], fr["members"], fr["failed"]) == (20, 5, 1)
    low, high = wilson_interval(np.array([7, 5]), np.array([10, 20]), 0.9)
    assert [de["rate_low"], fr["rate_low"]] == pytest.approx(low.tolist())
    assert [de["rate_high"], fr["rate_high"]] == pytest.approx(high.tolist())
    checkout_fr = _row(table, CHECKOUT, countryCode="FR")
    assert (checkout_fr["members"], checkout_fr["name"]) == (0, CHECKOUT)  # no name known: the id


def test_json_string_segments_give_the_same_table() -> None:
    from_lists = membership_rates(_run(), by="countryCode", audiences=AUDIENCES)
    from_json = membership_rates(_run(as_json=True), by="countryCode", audiences=AUDIENCES)
    pd.testing.assert_frame_equal(from_lists, from_json)


def test_segments_in_every_shape_the_wire_and_files_give() -> None:
    assert parse_segments([{"id": "a", "namespace": "ups"}, {"id": "b"}, {"id": "a"}]) == ("a", "b")
    assert parse_segments('["a", "b", "a"]') == ("a", "b")
    assert parse_segments(np.array(["a", "b"], dtype=object)) == ("a", "b")  # Parquet
    assert parse_segments(None) == parse_segments("") == parse_segments(float("nan")) == ()
    with pytest.raises(SampleError, match=r"row 7: segments is not JSON"):
        parse_segments("gold, silver", row=7)
    with pytest.raises(SampleError, match="must be a list"):
        parse_segments('{"id": "a"}', row=1)


def test_a_bad_cell_names_its_row_and_failed_rows_are_not_read() -> None:
    frame = _run(as_json=True)
    frame.loc[frame["ok"] == "False", "segments"] = "not json"  # failed rows are never parsed
    membership_rates(frame)
    frame.loc[4, "segments"] = "gold"
    with pytest.raises(SampleError, match=r"^row 5: segments is not JSON"):
        membership_rates(frame)


def test_an_unknown_dimension_is_a_clear_flowlab_error() -> None:
    with pytest.raises(FlowLabError, match=r"no dimension 'country'.*pick one of: countryCode, loyaltyTier"):
        membership_rates(_run(), by="country")
    with pytest.raises(SampleError, match="no dimension 'segments'"):
        attribute_summary(_run().assign(attributes=None), by="segments")
    with pytest.raises(SampleError, match="not an AEP Edge run"):
        membership_rates(pd.DataFrame({"guest": ["a"], "variant": ["A"]}))


def test_dimensions_are_the_sample_columns_not_the_answer() -> None:
    frame = _run(as_json=True).assign(identity=["Email"] * 20 + ["ECID"] * 13, attributes="{}")
    assert membership_dimensions(frame) == ["countryCode", "loyaltyTier", "identity"]
    assert is_edge_run(frame) and not is_edge_run(frame.drop(columns="segments"))


def test_no_audience_at_all() -> None:
    frame = _run().assign(segments=[[] for _ in range(33)])
    table = membership_rates(frame)
    assert table.empty and list(table.columns)[0] == "audience"
    assert "No audience was seen" in membership_sentence(table)


def test_sentences() -> None:
    overall = membership_sentence(membership_rates(_run(), audiences=AUDIENCES))
    assert overall.startswith("30 identities answered (3 failed calls left out): the biggest audience is ")
    assert "Gold and platinum members at 40.0% (95% interval" in overall
    assert "1 of 3 audiences has no member" in overall
    by = membership_sentence(membership_rates(_run(), by="countryCode", audiences=AUDIENCES))
    assert by == (
        "Gold and platinum members ranges from 25.0% (countryCode FR) to 70.0% (countryCode DE) across 2 "
        "levels of countryCode (30 identities answered)."
    )


def test_attribute_summary_counts_presence_and_top_values() -> None:
    frame = _run()
    attributes: list[Any] = []
    for i, tier in enumerate(frame["loyaltyTier"]):
        if i % 3 == 0:
            attributes.append({})  # e.g. no profile on the edge
        elif i % 3 == 1:
            attributes.append(
                {"loyaltyTier": {"value": tier}, "countryCode": {"value": frame["countryCode"][i]}}
            )
        else:
            attributes.append(json.dumps({"loyaltyTier": tier}))
    table = attribute_summary(frame.assign(attributes=attributes))
    assert table["attribute"].tolist() == ["countryCode", "loyaltyTier"]
    ok = frame["ok"].to_numpy()
    tier = table[table["attribute"] == "loyaltyTier"].iloc[0]
    expected_present = sum(1 for i in range(len(frame)) if ok[i] and i % 3 != 0)
    assert (tier["guests"], tier["present"]) == (30, expected_present)
    assert tier["share"] == pytest.approx(expected_present / 30)
    values = pd.Series(
        [frame["loyaltyTier"][i] for i in range(len(frame)) if ok[i] and i % 3 != 0]
    ).value_counts()
    first = f"{values.index[0]} {values.iloc[0] / expected_present:.0%}"
    assert tier["top_values"].startswith(first) and tier["distinct"] == len(values)
    by = attribute_summary(frame.assign(attributes=attributes), by="countryCode")
    assert set(by["countryCode"]) == {"DE", "FR"} and by["guests"].sum() == 60  # 2 attributes x 30


def test_attribute_summary_without_attributes_is_empty() -> None:
    table = attribute_summary(_run().assign(attributes=[{} for _ in range(33)]))
    assert table.empty and list(table.columns) == [
        "attribute",
        "guests",
        "present",
        "share",
        "distinct",
        "top_values",
    ]


def test_edge_latency_groups_by_event_type() -> None:
    frame = _run().assign(event_type=["commerce.checkouts"] * 12 + ["web.webpagedetails.pageViews"] * 21)
    summary, histogram = edge_latency(frame)
    assert summary["variant"].tolist() == ["commerce.checkouts", "web.webpagedetails.pageViews", "(all)"]
    assert summary["count"].tolist() == [10, 20, 30]  # answered calls only
    assert histogram["count"].sum() == 30


def test_audience_names_from_either_shape() -> None:
    assert audience_names(AUDIENCES)[GOLD] == "Gold and platinum members"
    assert audience_names({GOLD: "Gold"}) == {GOLD: "Gold"}
    with pytest.raises(TypeError, match="ids to names"):
        audience_names([{"name": "no id"}])


def test_membership_chart_spec() -> None:
    table = membership_rates(_run(), audiences=AUDIENCES)
    spec = membership_chart(table).to_dict()
    assert len(spec["layer"]) == 2 and spec["layer"][1]["mark"]["type"] == "rule"
    by = membership_rates(_run(), by="countryCode", audiences=AUDIENCES)
    spec = membership_chart(by, by="countryCode").to_dict()
    assert spec["layer"][0]["encoding"]["yOffset"]["field"] == "countryCode"
    assert spec["layer"][0]["encoding"]["color"]["scale"]["domain"] == ["FR", "DE"]
    with pytest.raises(ValueError, match="no 'countryCode' column"):
        membership_chart(table, by="countryCode")


def test_exported_from_the_analysis_package() -> None:
    assert analysis.membership_rates is membership_rates
    assert {"attribute_summary", "membership_rates", "membership_sentence"} <= set(analysis.__all__)


def test_is_edge_run_tells_callflows_rows_with_an_empty_segments_column_apart() -> None:
    callflows = pd.DataFrame({"variant": ["A", "B"], "segments": [[], []], "event_type": ["", ""]})
    assert not is_edge_run(callflows)
    assert is_edge_run(callflows.assign(variant="", event_type="web.webpagedetails.pageViews"))
    assert is_edge_run(pd.DataFrame({"variant": ["", ""], "segments": ["[]", '["a"]']}))
    assert not is_edge_run(pd.DataFrame({"variant": ["A"]}))


def test_a_real_edge_run_agrees_with_the_sandboxs_profiles(
    fresh_sandbox: SandboxServer, tmp_path: Path
) -> None:
    """1,250 identities through the runner (the demo's 1,200 profiles, 50 first-time visitors):
    batch-evaluated audiences (a page view cannot change them) are exactly the sandbox's realized
    memberships, and first-time visitors are in none."""
    url = fresh_sandbox.url
    sample = edge_sample_from_sandbox(url, limit=1250)
    options = BatchOptions(base_url=url, provider=EdgeProvider.for_sandbox(url), concurrency=20)
    handle = start_batch(sample, options, tmp_path / "edge.sqlite")
    assert handle.wait(60)
    run = load_results(tmp_path / "edge.sqlite")
    with SandboxAdmin(base_url=url) as admin:
        audiences = admin.edge_audiences()
        profiles = [
            p for offset in (0, 500, 1000) for p in admin.edge_profiles(limit=500, offset=offset)["items"]
        ]
    batch = {a["id"] for a in audiences if a["evaluation"] == "batch"}
    truth = {
        p["identity"]["id"]: {m["id"] for m in p["audiences"] if m["status"] == "realized"} & batch
        for p in profiles
    }
    table = membership_rates(run, by="profile", audiences=audiences)
    assert set(table["audience"]) == {a["id"] for a in audiences}  # every audience, members or not
    known = run[run["profile"] == "known"]
    assert len(known) == len(truth) == 1200 and run["ok"].all()
    for audience in batch:
        expected = sum(audience in truth[guest] for guest in known["guest"])
        row = _row(table, audience, profile="known")
        assert (row["guests"], row["members"]) == (len(known), expected)
        assert _row(table, audience, profile="new")["members"] == 0
    tiers = membership_rates(known, by="loyaltyTier", audiences=audiences)
    gold = tiers[tiers["name"] == "Gold and platinum members"].set_index("loyaltyTier")["rate"]
    assert gold["gold"] == gold["platinum"] == 1.0 and gold["silver"] == gold["none"] == 0.0
    attributes = attribute_summary(run).set_index("attribute")
    assert attributes.loc["loyaltyTier", "present"] == len(
        known
    )  # authenticated: mapped attributes come back
