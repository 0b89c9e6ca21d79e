"""parse_edge_response reads every example body of the reference verbatim, and hostile ones cleanly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from flowlab.edge import EdgeResponse, parse_edge_response
from flowlab.edge.response import MAX_RESPONSE_BYTES
from flowlab.errors import (
    APIResponseError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    FlowLabError,
    RateLimitError,
    ServerError,
)

FIXTURES = Path(__file__).parent / "fixtures" / "edge"
# the steering repo's shared/ sits beside the checkout (here and in CI); elsewhere these checks skip
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "adobe-edge-personalization.md"
JSON = {"content-type": "application/json;charset=utf-8"}
PROBLEM = {"content-type": "application/problem+json"}


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def wrapped(payload: Any) -> bytes:
    """A payload the reference shows on its own (the Web SDK's flattened view), inside its handle (§3.5)."""
    items = payload if isinstance(payload, list) else [payload]
    return json.dumps(
        {"requestId": "r-1", "handle": [{"type": "activation:pull", "payload": items, "eventIndex": 0}]}
    ).encode()


@pytest.mark.skipif(not REFERENCE.exists(), reason="the shared reference is not on this machine")
@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_fixtures_are_verbatim_copies_of_the_reference(name: str) -> None:
    assert raw(name).decode().strip() in REFERENCE.read_text()


def test_profile_on_the_edge_with_attributes() -> None:
    # §3.3 "Profile exists on the edge" (DOC E2)
    answer = parse_edge_response(200, JSON, raw("profile_lookup_with_attributes.json"))
    assert answer.request_id == "3c600138-d785-42ca-a025-bb725f4b5da9"
    assert answer.on_edge is True
    [dest] = answer.destinations
    assert dest.alias == "rk-demo-custom-personalization-XXXX"
    assert dest.destination_id == "9218b727-ec59-4a46-b8b9-05503f138c5d"
    assert dest.segments == [
        {"id": "85018bd8-7ad1-4e17-ae30-8389c04bd3c0", "namespace": "ups"},
        {"id": "d09a8159-8b30-4178-b2f2-7a8c5e3168d9", "namespace": "ups"},
    ]
    assert dest.attributes == {
        "zip": "19000", "firstName": "Test", "lastName": "User123", "gender": "male",
        "city": "Philadelphia", "state": "PA", "email": "test123@adobetest.com",
    }  # fmt: skip
    assert answer.errors == [] and answer.warnings == [] and answer.problem is None
    assert answer.handles[0]["eventIndex"] == 0


def test_profile_not_on_the_edge_is_an_empty_pull_not_an_error() -> None:
    answer = parse_edge_response(200, JSON, raw("profile_not_on_edge.json"))
    assert answer.request_id == "531b541a-4541-419e-ac99-fd7e452f0c0f"
    assert answer.destinations == [] and answer.on_edge is False and answer.segment_ids == []


def test_e1_destinations_without_namespace_and_with_attributes() -> None:
    plain = json.loads(raw("e1_destinations_without_attributes.json"))
    answer = parse_edge_response(200, JSON, wrapped(plain))
    [dest] = answer.destinations
    assert dest.alias == "personalizationAlias" and dest.attributes == {}
    assert dest.segments == [
        {"id": "399eb3e7-3d50-47d3-ad30-a5ad99e8ab77", "namespace": None},
        {"id": "499eb3e7-3d50-47d3-ad30-a5ad99e8ab77", "namespace": None},
    ]
    with_attrs = parse_edge_response(
        200, JSON, wrapped(json.loads(raw("e1_destination_with_attributes.json")))
    )
    assert with_attrs.destinations[0].attributes == {"countryCode": "DE", "membershipStatus": "PREMIUM"}
    assert with_attrs.segment_ids == ["399eb3e7-...", "499eb3e7-..."]


def test_the_web_sdk_mock_variant_is_read_too() -> None:
    answer = parse_edge_response(200, JSON, wrapped(json.loads(raw("s5_mock_destination_item.json"))))
    [dest] = answer.destinations
    assert (
        dest.destination_id == "ed6a852f-…"
        and dest.alias == ""
        and dest.segment_ids == ["seg-AAA", "seg-BBB"]
    )


def test_plain_interact_keeps_every_handle_and_finds_the_location_hint() -> None:
    answer = parse_edge_response(200, JSON, raw("plain_interact_no_personalization.json"))
    assert [h["type"] for h in answer.handles] == ["locationHint:result", "state:store"]
    assert answer.location_hint == "or2"
    assert answer.on_edge is None and answer.destinations == []
    assert len(answer.payloads("state:store")) == 2


def test_207_surfaces_upstream_errors_and_warnings() -> None:
    answer = parse_edge_response(207, JSON, raw("multi_status_207_errors_warnings.json"))
    assert answer.ok and answer.handles == []
    [error] = answer.errors
    assert error.code == "EXEG-0201-503" and error.status == 503
    assert "com.adobe.experience.platform.ode" in error.title
    [warning] = answer.warnings
    assert warning.code == "EXEG-0204-200" and warning.report["cause"]["code"] == 202


def test_warnings_on_a_200_are_kept() -> None:
    body = json.loads(raw("multi_status_207_errors_warnings.json"))
    del body["errors"]
    answer = parse_edge_response(200, JSON, json.dumps(body).encode())
    assert [w.code for w in answer.warnings] == ["EXEG-0204-200"] and answer.errors == []


@pytest.mark.parametrize(
    ("status", "name", "cls", "code"),
    [
        (422, "error_0104_422_consent.json", APIStatusError, "EXEG-0104-422"),
        (400, "error_0306_400_no_primary.json", BadRequestError, "EXEG-0306-400"),
        (401, "error_0500_401_inferred.json", AuthenticationError, "EXEG-0500-401"),
    ],
)
def test_problem_json_maps_onto_the_error_tree(
    status: int, name: str, cls: type[Exception], code: str
) -> None:
    with pytest.raises(cls) as info:
        parse_edge_response(
            status, PROBLEM, raw(name), url="http://127.0.0.1:9/ee/v2/interact?datastreamId=d"
        )
    error = info.value
    assert isinstance(error, APIStatusError) and error.status_code == status and error.error_code == code
    body = json.loads(raw(name))
    assert code in str(error) and body["title"] in str(error) and body["detail"] in str(error)
    answer = parse_edge_response(status, PROBLEM, raw(name), raise_for_status=False)
    assert (
        answer.problem is not None and answer.problem.code == code and answer.problem.report == body["report"]
    )
    if name.startswith("error_0104"):
        assert len(answer.problem.report["errors"]) == 3
        assert answer.request_id == "0f8821e5-ed1a-4301-b445-5f336fb50ee8"


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (502, b"<html><body>Bad gateway</body></html>", ServerError),
        (429, b"", RateLimitError),
        (503, b'{"type": 5, "title": ["x"]}', ServerError),
        (403, b"[]", AuthenticationError),
    ],
)
def test_non_problem_error_bodies_still_give_a_clear_error(
    status: int, body: bytes, cls: type[Exception]
) -> None:
    with pytest.raises(cls) as info:
        parse_edge_response(status, {}, body)
    assert f"answered {status}" in str(info.value)


def test_request_id_falls_back_to_the_header() -> None:
    answer = parse_edge_response(200, {"X-Request-Id": "h-1"}, b'{"handle": []}')
    assert answer.request_id == "h-1"


def test_unknown_handle_types_and_unrelated_pull_items_are_kept_not_parsed() -> None:
    body = {
        "requestId": "r",
        "handle": [
            {"type": "rtml:inferences", "payload": {"anything": [1, 2]}},
            {"type": "activation:pull", "payload": [{"type": "somethingElse", "x": 1}], "eventIndex": 0},
            {"type": "future:thing", "newField": True},
        ],
        "newTopLevel": {"a": 1},
    }
    answer = parse_edge_response(200, JSON, json.dumps(body).encode())
    assert [h["type"] for h in answer.handles] == ["rtml:inferences", "activation:pull", "future:thing"]
    assert answer.destinations == [] and answer.on_edge is True


def test_attribute_values_keep_their_json_type_and_unwrapped_values_are_tolerated() -> None:
    item = {"type": "profileLookup", "destinationId": "d", "alias": "a", "segments": [],
            "attributes": {"n": {"value": 3}, "b": {"value": False}, "raw": "x", "none": {"value": None}}}  # fmt: skip
    dest = parse_edge_response(200, JSON, wrapped(item)).destinations[0]
    assert dest.attributes == {"n": 3, "b": False, "raw": "x", "none": None}


HOSTILE = [
    (b"not json at all", "not JSON"),
    (b"", "an empty body"),
    (b"   ", "an empty body"),
    (b"\xff\xfe{", "not JSON"),
    (b"[1, 2]", "a JSON list"),
    (b'"text"', "a JSON string"),
    (b"{}", "has no 'handle'"),
    (b'{"requestId": "r"}', "has no 'handle'"),
    (b'{"handle": {"type": "x"}}', "'handle' that is an object"),
    (b'{"handle": [], "requestId": 5}', "requestId that is a number"),
    (b'{"handle": [7]}', "handle[0] is a number"),
    (b'{"handle": [{"type": "activation:pull", "payload": {"a": 1}}]}', "handle[0].payload is an object"),
    (b'{"handle": [{"type": "activation:pull", "payload": ["x"]}]}', "handle[0].payload[0] is a string"),
    (b'{"handle": [{"type": "activation:pull", "payload": [{"type": "profileLookup", "segments": "s"}]}]}',
     "handle[0].payload[0].segments is a string"),
    (b'{"handle": [{"type": "activation:pull", "payload": [{"type": "profileLookup", "segments": [{"id": 4}]}]}]}',
     "handle[0].payload[0].segments[0].id is a number"),
    (b'{"handle": [{"type": "activation:pull", "payload": [{"type": "profileLookup", "segments": [{}]}]}]}',
     "segments[0].id is missing"),
    (b'{"handle": [{"type": "activation:pull", "payload": [{"type": "profileLookup", "segments": [3]}]}]}',
     "segments[0] is a number"),
    (b'{"handle": [{"type": "activation:pull", "payload": [{"type": "profileLookup", "attributes": []}]}]}',
     "attributes is a list"),
    (b'{"handle": [{"type": "activation:pull", "payload": [{"type": "profileLookup", "alias": 1}]}]}',
     "alias is a number"),
    (b'{"handle": [], "errors": "boom"}', "'errors' is a string"),
    (b'{"handle": [], "warnings": {"a": 1}}', "'warnings' is an object"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "words"), HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_2xx_bodies_give_a_clear_response_error(body: bytes, words: str) -> None:
    with pytest.raises(APIResponseError) as info:
        parse_edge_response(200, JSON, body, url="http://127.0.0.1:1/ee/v2/interact?datastreamId=d")
    assert words in str(info.value), str(info.value)
    assert len(str(info.value)) < 600


def test_a_huge_body_is_refused_unread() -> None:
    body = b'{"handle": [], "pad": "' + b"x" * MAX_RESPONSE_BYTES + b'"}'
    with pytest.raises(APIResponseError, match="more than the 8,388,608"):
        parse_edge_response(200, JSON, body)


def test_errors_and_warnings_of_any_shape_are_surfaced_not_dropped() -> None:
    body = b'{"handle": [], "errors": ["plain text", 5, {"title": "t", "status": "503"}]}'
    answer = parse_edge_response(207, JSON, body)
    assert [e.title for e in answer.errors] == ["plain text", "5", "t"] and answer.errors[2].status == 503


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
        ["handle", "type", "payload", "segments", "id", "attributes", "alias", "destinationId", "value",
         "errors", "warnings", "requestId", "namespace", "activation:pull", "profileLookup"]), inner, max_size=5),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([200, 207, 400, 401, 429, 500, 503]), value=json_values)
def test_any_json_gives_an_answer_or_a_flowlab_error_never_a_crash(status: int, value: Any) -> None:
    try:
        answer = parse_edge_response(status, JSON, json.dumps(value).encode())
    except FlowLabError:
        return
    assert isinstance(answer, EdgeResponse)
    assert all(isinstance(s["id"], str) for d in answer.destinations for s in d.segments)
