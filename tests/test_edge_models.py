"""InteractRequest: the exact v2/v1 bodies of the reference, and messages that name the field to fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowlab.edge import MAX_BODY_BYTES, InteractRequest
from flowlab.errors import RequestValidationError

FIXTURES = Path(__file__).parent / "fixtures" / "edge"


def problems(**fields: object) -> list[tuple[str, str]]:
    with pytest.raises(RequestValidationError) as info:
        InteractRequest.build(**fields)  # type: ignore[arg-type]
    return [(p.field, p.message) for p in info.value.problems]


def test_minimal_profile_lookup_is_adobes_documented_body() -> None:
    # reference §2.3, "Minimal profile-lookup request" (DOC E2)
    request = InteractRequest.build(identity=("Email", "test123@adobetest.com"), timestamp=None)
    assert request.body_bytes() == (
        b'{"event":{"xdm":{"identityMap":{"Email":[{"id":"test123@adobetest.com","primary":true}]}}}}'
    )


def test_the_rich_reference_request_round_trips_exactly() -> None:
    body = json.loads((FIXTURES / "request_rich_v2.json").read_text())
    request = InteractRequest.from_body(body)
    assert request.to_body() == body
    assert request.primary_identity == ("CRMID", "C-000123")
    assert request.event_type == "commerce.productViews"


def test_fields_build_the_v2_single_event_body() -> None:
    request = InteractRequest.build(
        identity="CRMID:C-1",
        authenticated_state="authenticated",
        event_type="commerce.checkouts",
        timestamp=datetime(2026, 7, 30, 14, 9, 20, 859000, tzinfo=UTC),
        page_url="https://shop.example.com/checkout",
        page_name="checkout",
        xdm={"commerce": {"checkouts": {"value": 1}}},
        data={"loyaltyTier": "gold"},
        query={"identity": {"fetch": ["ECID"]}},
    )
    assert request.to_body() == {
        "event": {
            "xdm": {
                "eventType": "commerce.checkouts",
                "timestamp": "2026-07-30T14:09:20.859Z",
                "identityMap": {
                    "CRMID": [{"id": "C-1", "authenticatedState": "authenticated", "primary": True}]
                },
                "web": {"webPageDetails": {"URL": "https://shop.example.com/checkout", "name": "checkout"}},
                "commerce": {"checkouts": {"value": 1}},
            },
            "data": {"loyaltyTier": "gold"},
        },
        "query": {"identity": {"fetch": ["ECID"]}},
    }
    v1 = request.to_v1_body()
    assert v1["events"] == [request.to_body()["event"]] and v1["query"] == request.query


def test_timestamp_defaults_to_now_in_utc_and_can_be_left_out() -> None:
    stamp = InteractRequest.build(identity=("ECID", "0590763811"))._xdm_body()["timestamp"]
    assert (
        stamp.endswith("Z")
        and abs(datetime.fromisoformat(stamp).timestamp() - datetime.now(UTC).timestamp()) < 60
    )
    assert "timestamp" not in InteractRequest.build(identity=("ECID", "1"), timestamp=None)._xdm_body()


@pytest.mark.parametrize("namespace", ["ECID", "Email", "CRMID", "Phone", "LoyaltyId", "Email_LC_SHA256"])
def test_standard_and_custom_namespaces(namespace: str) -> None:
    value = "a@b.example" if namespace == "Email" else "v-1"
    assert InteractRequest.build(identity=(namespace, value)).primary_identity == (namespace, value)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({}, "event.xdm.identityMap", "is required"),
        ({"identity": "jane"}, "event.xdm.identityMap", "NAMESPACE:ID"),
        ({"identity": ("Email", "jane")}, "event.xdm.identityMap", "not an email address"),
        ({"identity": ("Email", "  ")}, "event.xdm.identityMap.Email[0].id", "id is empty"),
        ({"identity": ("e mail", "x")}, "event.xdm.identityMap", "not a namespace code"),
        ({"identity_map": {}}, "event.xdm.identityMap", "no identity"),
        ({"identity_map": {"ECID": []}}, "event.xdm.identityMap", "ECID has no identities"),
        ({"identity_map": {"ECID": [{"id": "1"}]}}, "event.xdm.identityMap", "EXEG-0306-400"),
        (
            {
                "identity_map": {
                    "ECID": [{"id": "1", "primary": True}],
                    "CRMID": [{"id": "2", "primary": True}],
                }
            },
            "event.xdm.identityMap",
            "mark exactly one as primary",
        ),
        (
            {"identity_map": {"ECID": [{"id": "1", "primary": True, "authenticatedState": "maybe"}]}},
            "event.xdm.identityMap.ECID[0].authenticatedState",
            "ambiguous, authenticated, loggedOut",
        ),
        ({"identity": ("ECID", "1"), "timestamp": "yesterday"}, "event.xdm.timestamp", "ISO 8601"),
        ({"identity": ("ECID", "1"), "timestamp": "2026-07-30T14:09:20"}, "event.xdm.timestamp", "time zone"),
        (
            {"identity": ("ECID", "1"), "page_url": "shop.example.com"},
            "event.xdm.web.webPageDetails.URL",
            "https://",
        ),
        ({"identity": ("ECID", "1"), "event_type": 7}, "event.xdm.eventType", "must be text"),
        ({"identity": ("ECID", "1"), "data": [1]}, "event.data", "must be an object"),
        ({"identity": ("ECID", "1"), "xdm": {"identityMap": {}}}, "event.xdm", "cannot be set through xdm"),
        ({"identity": ("ECID", "1"), "colour": "red"}, "", "unknown field 'colour'"),
        ({"identity": ("ECID", "1"), "data": {"x": float("nan")}}, "", "must be JSON"),
    ],
)
def test_every_problem_names_its_wire_field_and_the_fix(
    fields: dict[str, object], field: str, words: str
) -> None:
    found = problems(**fields)
    assert any(f == field and words in m for f, m in found), found


def test_body_over_64_kb_is_refused_before_sending_naming_the_largest_part() -> None:
    overhead = len(
        InteractRequest.build(identity=("ECID", "1"), timestamp=None, data={"blob": ""}).body_bytes()
    )
    fits = InteractRequest.build(
        identity=("ECID", "1"), timestamp=None, data={"blob": "x" * (MAX_BODY_BYTES - overhead)}
    )
    assert len(fits.body_bytes()) == MAX_BODY_BYTES
    [(field, message)] = problems(
        identity=("ECID", "1"), timestamp=None, data={"blob": "x" * (MAX_BODY_BYTES - overhead + 1)}
    )
    assert field == "body"
    assert "65,537 bytes" in message and "EXEG-0112-413" in message and "event.data alone" in message


def test_size_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(RequestValidationError, match="64 KB"):
        InteractRequest.build(identity=("ECID", "1"), data={"note": "é" * 40_000})  # 40k chars, 80k bytes


def test_from_body_rejects_what_is_not_a_v2_body() -> None:
    with pytest.raises(RequestValidationError, match="event.xdm"):
        InteractRequest.from_body({"events": [{"xdm": {}}]})
    with pytest.raises(RequestValidationError, match="unknown field"):
        InteractRequest.from_body(
            {"event": {"xdm": {"identityMap": {"ECID": [{"id": "1", "primary": True}]}}}, "x": 1}
        )
