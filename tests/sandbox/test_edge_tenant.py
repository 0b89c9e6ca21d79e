"""The Edge tenant: demo data invariants, each timing case of reference §5.4, audiences, the worker pool."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from flowlab.sandbox.edge import demo as D
from flowlab.sandbox.edge.tenant import Datastream, EdgeTenant
from flowlab.sandbox.personalize.demo import PERSONAS
from flowlab.sandbox.workers import WorkerPool

LENA = ("Email", "lena.vogel@example.de")
GRACE = ("CRMID", "LY-US-300871")
NEW_US_VISITOR = ("ECID", D.ecid(PERSONAS[4]["browserId"]))
MINUTE = 60


@pytest.fixture(scope="module")
def shared() -> EdgeTenant:
    return EdgeTenant()


@pytest.fixture
def tenant() -> EdgeTenant:
    return EdgeTenant(n_profiles=200)


def edge_stream(t: EdgeTenant) -> Datastream:
    ds = t.datastream(D.DATASTREAMS[0]["id"])
    assert ds is not None and ds.edge_segmentation and ds.personalization_destinations
    return ds


def plain_stream(t: EdgeTenant) -> Datastream:
    ds = t.datastream(D.DATASTREAMS[1]["id"])
    assert ds is not None and not ds.edge_segmentation
    return ds


def names(t: EdgeTenant, payload: list[dict[str, Any]] | None, alias: str = "lumen-web-segments") -> set[str]:
    assert payload is not None
    (item,) = [i for i in payload if i["alias"] == alias]
    return {t.audience(s["id"]).name for s in item["segments"]}  # type: ignore[union-attr]


# ---- demo data ----------------------------------------------------------------------------------------


def test_demo_org_matches_the_issue(shared: EdgeTenant) -> None:
    assert shared.org_id.endswith("@AdobeOrg") and len(shared.org_id) == 24 + len("@AdobeOrg")
    streams = shared.datastreams()
    assert any(d.edge_segmentation and d.personalization_destinations and d.enabled for d in streams)
    assert any(not d.edge_segmentation and not d.personalization_destinations and d.enabled for d in streams)
    dests = {d.alias: d for d in shared.destinations()}
    assert not dests["lumen-web-segments"].with_attributes
    assert (
        dests["lumen-cms-attributes"].with_attributes and len(dests["lumen-cms-attributes"].attributes) >= 4
    )
    audiences = shared.audiences()
    assert len(audiences) >= 8
    assert {a["evaluation"] for a in audiences} == {"edge", "streaming", "batch"}
    rules = {a["evaluation"]: [] for a in audiences}  # type: dict[str, list[str]]
    for a in audiences:
        rules[a["evaluation"]].append(a["rule"])
    assert any("commerce.checkouts" in r and "WHEN(today)" in r for r in rules["edge"])
    assert any("commerce.purchases" in r for r in rules["streaming"])
    assert any("CHAIN" not in r and "inSegment" not in r for r in rules["batch"])
    assert any("inSegment" in a["rule"] for a in audiences)
    assert shared.profiles(limit=1)["total"] >= 1000


def test_demo_is_deterministic_and_reuses_the_sitecore_shoppers() -> None:
    a, b = EdgeTenant(n_profiles=50), EdgeTenant(n_profiles=50)
    assert a.profiles(limit=50) == b.profiles(limit=50)
    assert a.audiences() == b.audiences() and a.org_id == b.org_id
    lena = a.profiles(limit=1, identity=LENA)["items"][0]
    assert lena["attributes"]["person"]["name"]["firstName"] == "Lena"
    assert {"namespace": "CRMID", "id": "LY-DE-104233"} in lena["identities"]
    assert a.profile(("CRMID", "LY-DE-104233")) is a.profile(LENA)


def test_demo_memberships_are_spread(shared: EdgeTenant) -> None:
    counts: Counter[str] = Counter()
    page = shared.profiles(limit=500)
    for offset in range(0, page["total"], 500):
        for item in shared.profiles(limit=500, offset=offset)["items"]:
            counts.update(a["id"] for a in item["audiences"] if a["status"] == "realized")
    for audience in ("gold-plus", "points-1000", "uk-newsletter", "hiking-fans", "recent-buyers-30d"):
        assert 10 < counts[D._id("audience", audience)] < 1000, audience


# ---- the payload (§3.3) -------------------------------------------------------------------------------


def test_payload_shape_and_attributes_only_when_authenticated(tenant: EdgeTenant) -> None:
    ds = edge_stream(tenant)
    payload = tenant.lookup(ds, LENA, None, authenticated=True)
    assert payload is not None and [i["alias"] for i in payload] == [
        "lumen-web-segments",
        "lumen-cms-attributes",
    ]
    for item in payload:
        assert item["type"] == "profileLookup" and item["destinationId"]
        assert all(s["namespace"] == "ups" for s in item["segments"])
    attrs = payload[1]["attributes"]
    assert attrs["firstName"] == {"value": "Lena"} and attrs["loyaltyTier"] == {"value": "gold"}
    assert "attributes" not in payload[0]
    anonymous = tenant.lookup(ds, LENA, None, authenticated=False)
    assert anonymous is not None and all("attributes" not in i for i in anonymous)
    assert [i["segments"] for i in anonymous] == [i["segments"] for i in payload]
    assert "Gold and platinum members" in names(tenant, payload)


def test_unknown_identity_and_case_sensitive_namespaces(tenant: EdgeTenant) -> None:
    ds = edge_stream(tenant)
    assert tenant.lookup(ds, ("Email", "nobody@example.com"), {"eventType": "x"}, authenticated=True) is None
    assert tenant.lookup(ds, ("email", LENA[1]), None, authenticated=True) is None  # §2.3: exact match


def test_datastream_without_personalization_destinations_gives_no_items(tenant: EdgeTenant) -> None:
    assert (
        tenant.lookup(plain_stream(tenant), LENA, {"eventType": "commerce.checkouts"}, authenticated=True)
        == []
    )


# ---- timing (§5.4) ------------------------------------------------------------------------------------


def test_same_page_checkout(tenant: EdgeTenant) -> None:
    ds = edge_stream(tenant)
    before = names(
        tenant, tenant.lookup(ds, LENA, {"eventType": "web.webpagedetails.pageViews"}, authenticated=True)
    )
    assert "Checking out today" not in before and "VIP checking out" not in before
    after = names(tenant, tenant.lookup(ds, LENA, {"eventType": "commerce.checkouts"}, authenticated=True))
    assert {"Checking out today", "VIP checking out"} <= after  # in the response to the checkout itself
    since = {a["id"]: a for a in tenant.profiles(limit=1, identity=LENA)["items"][0]["audiences"]}
    assert since[D.A_CHECKOUT] == {
        "id": D.A_CHECKOUT,
        "status": "realized",
        "since": "2026-10-01T09:00:00.000Z",
    }
    tenant.clock.advance(24 * 3600)  # tomorrow, no checkout today: the edge exits it on the next hit
    later = names(tenant, tenant.lookup(ds, LENA, None, authenticated=True))
    assert "Checking out today" not in later and "VIP checking out" not in later
    exited = {a["id"]: a for a in tenant.profiles(limit=1, identity=LENA)["items"][0]["audiences"]}
    assert exited[D.A_CHECKOUT]["status"] == "exited"


def test_grace_is_not_vip_checking_out_without_gold(tenant: EdgeTenant) -> None:
    ds = edge_stream(tenant)
    camille = ("Email", "camille.laurent@example.fr")  # silver: checks out, but is no VIP
    got = names(tenant, tenant.lookup(ds, camille, {"eventType": "commerce.checkouts"}, authenticated=True))
    assert "Checking out today" in got and "VIP checking out" not in got


def test_next_page_purchase_after_segmentation_and_replication(tenant: EdgeTenant) -> None:
    ds = edge_stream(tenant)
    purchase = {"eventType": "commerce.purchases", "commerce": {"order": {"priceTotal": 320.0}}}
    first = names(tenant, tenant.lookup(ds, NEW_US_VISITOR, purchase, authenticated=True))
    assert "Purchased in the last 7 days" not in first and "Big basket today" not in first
    tenant.clock.advance(9 * MINUTE)
    assert "Purchased in the last 7 days" not in names(
        tenant, tenant.lookup(ds, NEW_US_VISITOR, None, authenticated=True)
    )
    tenant.clock.advance(1 * MINUTE)  # 5 min segmentation + 5 min replication
    later = names(tenant, tenant.lookup(ds, NEW_US_VISITOR, None, authenticated=True))
    assert {"Purchased in the last 7 days", "Big basket today"} <= later
    assert "Recent buyers (30 days)" not in later  # batch: not before the daily run


def test_next_session_batch_after_the_daily_run(tenant: EdgeTenant) -> None:
    ds = edge_stream(tenant)
    tenant.lookup(ds, NEW_US_VISITOR, {"eventType": "commerce.purchases"}, authenticated=True)
    tenant.clock.advance(15 * 3600)  # 2026-10-02 00:00: the run starts
    assert "Recent buyers (30 days)" not in names(
        tenant, tenant.lookup(ds, NEW_US_VISITOR, None, authenticated=True)
    )
    tenant.clock.advance(3600 + 5 * MINUTE)  # + batch delay (1 h) + replication (5 min)
    assert "Recent buyers (30 days)" in names(
        tenant, tenant.lookup(ds, NEW_US_VISITOR, None, authenticated=True)
    )
    tenant.clock.advance(7 * 24 * 3600)  # a week later the streaming window lapsed: the daily run exits it
    assert "Purchased in the last 7 days" not in names(
        tenant, tenant.lookup(ds, NEW_US_VISITOR, None, authenticated=True)
    )


def test_edge_audience_on_a_datastream_without_edge_segmentation_goes_the_streaming_way(
    tenant: EdgeTenant,
) -> None:
    tenant.lookup(plain_stream(tenant), LENA, {"eventType": "commerce.checkouts"}, authenticated=True)
    ds = edge_stream(tenant)
    tenant.clock.advance(10 * MINUTE)
    settled = {
        a["id"]
        for a in tenant.profiles(limit=1, identity=LENA)["items"][0]["audiences"]
        if a["status"] == "realized"
    }
    assert D.A_CHECKOUT in settled
    assert "Checking out today" in names(tenant, tenant.lookup(ds, LENA, None, authenticated=True))


# ---- audiences ----------------------------------------------------------------------------------------


def test_load_audience_validates_and_infers_the_evaluation(tenant: EdgeTenant) -> None:
    edge = tenant.load_audience(
        {
            "name": "Cart today",
            "rule": 'CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("commerce.productListAdds")) WHEN(today)])',
        }
    )
    assert edge["evaluation"] == "edge" and edge["destinations"] == [
        d.destination_id for d in tenant.destinations()
    ]
    assert (
        tenant.load_audience({"name": "Seattle", "rule": 'homeAddress.city.equals("Seattle")'})["evaluation"]
        == "batch"
    )
    week = 'CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("x")) WHEN(< 8 days before now)])'
    today = week.replace("< 8 days before now", "today")
    assert tenant.load_audience({"name": "Week", "rule": week})["evaluation"] == "streaming"
    bad = [
        ({"name": "x"}, "rule must be"),
        ({"name": "x", "rule": 'loyalty.tier.matches("a")'}, "not supported"),
        ({"name": "x", "rule": week, "evaluation": "edge"}, "within 24 hours"),
        ({"name": "x", "rule": 'inSegment("nope")'}, "names no audience"),
        ({"name": "x", "rule": "true", "evaluation": "hourly"}, "one of edge"),
        ({"name": "x", "rule": "true", "destinations": ["nope"]}, "unknown destination"),
        ({"name": "x", "rule": "true", "colour": "red"}, "unknown audience fields"),
        ([1, 2], "JSON object"),
        ({"id": D.A_GOLD_PLUS, "name": "loop", "rule": f'inSegment("{D.A_VIP_CHECKOUT}")'}, "cycle"),
        (
            {"name": "x", "rule": f'inSegment("{D.A_CHECKOUT}") and {today}', "evaluation": "edge"},
            "not edge-eligible",
        ),
    ]
    for definition, message in bad:
        with pytest.raises(ValueError, match=message):
            tenant.load_audience(definition)  # type: ignore[arg-type]


def test_a_new_edge_audience_works_on_the_next_request(tenant: EdgeTenant) -> None:
    loaded = tenant.load_audience(
        {
            "id": "munich-today",
            "name": "Munich today",
            "rule": 'homeAddress.city.equals("München") and CHAIN(xEvent, timestamp, '
            '[C0: WHAT(eventType.equals("web.webpagedetails.pageViews")) WHEN(today)])',
        }
    )
    payload = tenant.lookup(
        edge_stream(tenant), LENA, {"eventType": "web.webpagedetails.pageViews"}, authenticated=False
    )
    assert loaded["id"] in {s["id"] for s in payload[0]["segments"]}  # type: ignore[index]


def test_reset_restores_the_demo(tenant: EdgeTenant) -> None:
    tenant.load_audience({"id": "extra", "name": "Extra", "rule": "true"})
    tenant.lookup(edge_stream(tenant), LENA, {"eventType": "commerce.checkouts"}, authenticated=True)
    tenant.clock.advance(3600)
    tenant.reset()
    assert tenant.audience("extra") is None and tenant.clock.iso() == "2026-10-01T09:00:00.000Z"
    realized = {
        a["id"]
        for a in tenant.profiles(limit=1, identity=LENA)["items"][0]["audiences"]
        if a["status"] == "realized"
    }
    assert D.A_CHECKOUT not in realized


def test_profiles_paging_and_bad_arguments(tenant: EdgeTenant) -> None:
    page = tenant.profiles(limit=3, offset=2)
    assert page["total"] == 200 and len(page["items"]) == 3 and page["offset"] == 2
    assert tenant.profiles(limit=5, offset=199)["items"][0]["identity"]["namespace"] in ("Email", "ECID")
    assert tenant.profiles(limit=1, identity=("Email", "nobody@x"))["total"] == 0
    for kwargs in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": True}):
        with pytest.raises(ValueError):
            tenant.profiles(**kwargs)  # type: ignore[arg-type]


def test_event_history_is_capped(tenant: EdgeTenant) -> None:
    ds = edge_stream(tenant)
    for i in range(150):
        tenant.lookup(ds, LENA, {"eventType": "e", "blob": "x" * 10_000, "n": i}, authenticated=False)
    profile = tenant.profile(LENA)
    assert profile is not None and len(profile.events) == 100
    assert all("blob" not in xdm for _, xdm in profile.events[-10:])  # over 4 KB: cut to the usual fields


# ---- the worker pool ----------------------------------------------------------------------------------


def test_lookup_through_the_worker_pool_matches_in_process(tenant: EdgeTenant) -> None:
    """The route's path: begin, ``pool.run_sync(task, args, keys, provide)``, finish (guest code off the loop)."""
    pool = WorkerPool(size=1)
    try:
        ds = edge_stream(tenant)
        job = tenant.begin_lookup(ds, LENA, {"eventType": "commerce.checkouts"}, authenticated=True)
        assert job is not None
        remote = pool.run_sync(job.task, job.args, keys=job.keys, provide=job.provide)
        assert remote == tenant.run_job(job)
        payload = tenant.finish_lookup(job, remote)
        assert {"Checking out today", "VIP checking out"} <= names(tenant, payload)
        assert set(job.qualified) >= {D.A_CHECKOUT, D.A_VIP_CHECKOUT}
    finally:
        pool.close()
