"""The Edge sandbox over loopback: IMS, interact's validation order and EXEG codes, envelope, timing, admin."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flowlab.sandbox import SandboxServer

PROBLEM = "application/problem+json"


@pytest.fixture
def edge(fresh_sandbox: SandboxServer) -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    with httpx.Client(base_url=fresh_sandbox.url, timeout=30) as http:
        yield http, http.get("/sandbox/info").json()["edge"]


def _on(info: dict[str, Any]) -> str:
    return next(
        d["id"] for d in info["datastreams"] if d["personalizationDestinations"] and d["edgeSegmentation"]
    )


def _off(info: dict[str, Any]) -> str:
    return next(d["id"] for d in info["datastreams"] if not d["personalizationDestinations"])


def _token(http: httpx.Client, info: dict[str, Any]) -> str:
    creds = info["credentials"]
    form = {"grant_type": "client_credentials", "client_id": creds["clientId"],
            "client_secret": creds["clientSecret"], "scope": creds["scope"]}  # fmt: skip
    answer = http.post("/ims/token/v3", data=form)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _profile(http: httpx.Client, index: int = 0) -> tuple[str, str]:
    item = http.get("/sandbox/edge/profiles", params={"limit": 1, "offset": index}).json()["items"][0]
    return item["identity"]["namespace"], item["identity"]["id"]


def _event(identity: tuple[str, str], event_type: str = "web.webpagedetails.pageViews") -> dict[str, Any]:
    namespace, value = identity
    return {"event": {"xdm": {"eventType": event_type,
                              "identityMap": {namespace: [{"id": value, "primary": True}]}}}}  # fmt: skip


def _interact(
    http: httpx.Client, datastream: str, body: Any, token: str | None = None, **kw: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post("/ee/v2/interact", params={"datastreamId": datastream}, json=body, headers=headers, **kw)


def _code(answer: httpx.Response) -> str:
    assert answer.headers["content-type"].startswith(PROBLEM), answer.text
    body = answer.json()
    assert body["status"] == answer.status_code and body["title"] and body["detail"]
    assert body["report"]["requestId"] and body["report"]["orgId"]
    return str(body["type"]).rsplit("/", 1)[1]


def _segments(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    pull = next(h for h in answer.json()["handle"] if h["type"] == "activation:pull")
    return {item["alias"]: item for item in pull["payload"]}


def test_ims_issues_a_token_for_the_demo_credential_and_refuses_a_wrong_secret(edge: Any) -> None:
    http, info = edge
    assert info["credentials"]["tokenUrl"].endswith("/ims/token/v3")
    answer = http.post("/ims/token/v3", data={"grant_type": "client_credentials",
                                             "client_id": info["credentials"]["clientId"],
                                             "client_secret": "wrong"})  # fmt: skip
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_client",
        "error_description": "invalid client_secret parameter",
    }
    assert "access_token" not in answer.text
    token = _token(http, info)
    assert token.startswith("eyJ")
    assert (
        http.post("/ims/token/v3", data={"grant_type": "password"}).json()["error"]
        == "unsupported_grant_type"
    )


def test_each_validation_step_has_its_exeg_code_in_problem_json(edge: Any) -> None:
    http, info = edge
    ds = _on(info)
    ok = _event(_profile(http))
    url = f"/ee/v2/interact?datastreamId={ds}"
    assert _code(http.post(url, content=b"{}")) == "EXEG-0106-400"  # no content type
    assert (
        _code(http.post(url, content=b"{}", headers={"content-type": "application/xml"})) == "EXEG-0111-415"
    )
    assert _code(http.post(url, content=b"", headers={"content-type": "application/json"})) == "EXEG-0109-408"
    big = b'{"event": "' + b"x" * 70_000 + b'"}'
    assert _code(http.post(url, content=big, headers={"content-type": "application/json"})) == "EXEG-0112-413"
    assert _code(http.post(url, content=b"{nope", headers={"content-type": "text/plain"})) == "EXEG-0101-400"
    assert _code(http.post("/ee/v2/interact", json=ok)) == "EXEG-0002-400"
    assert _code(_interact(http, "no-such-datastream", ok)) == "EXEG-0003-400"
    assert _code(_interact(http, ds, ok, token="not-a-token")) == "EXEG-0500-401"
    forged = _token(http, info)[:-4] + "AAAA"
    assert _code(_interact(http, ds, ok, token=forged)) == "EXEG-0502-401"
    assert _code(_interact(http, ds, {"query": {}})) == "EXEG-0103-400"
    no_primary = {"event": {"xdm": {"identityMap": {"Email": [{"id": "a@example.com"}]}}}}
    assert _code(_interact(http, ds, no_primary)) == "EXEG-0306-400"
    two = {"event": {"xdm": {"identityMap": {"Email": [{"id": "a@example.com", "primary": True}],
                                             "CRMID": [{"id": "C-1", "primary": True}]}}}}  # fmt: skip
    answer = _interact(http, ds, two)
    assert _code(answer) == "EXEG-0104-422"
    assert "Email, CRMID" in answer.json()["report"]["errors"][0]
    shaped = {"event": {"xdm": {"identityMap": {"Email": "a@example.com"}}}}
    assert _code(_interact(http, ds, shaped)) == "EXEG-0102-400"


def test_the_validation_order_decides_which_error_wins(edge: Any) -> None:
    http, info = edge
    url = "/ee/v2/interact?datastreamId=unknown"
    # bad content type before an empty body; size before JSON; JSON before the datastream; datastream before auth
    assert _code(http.post(url, content=b"", headers={"content-type": "image/png"})) == "EXEG-0111-415"
    big = b"{" * 70_000
    assert _code(http.post(url, content=big, headers={"content-type": "application/json"})) == "EXEG-0112-413"
    assert (
        _code(http.post(url, content=b"[", headers={"content-type": "application/json"})) == "EXEG-0101-400"
    )
    bad_token = {"Authorization": "Bearer x.y.z"}
    assert _code(http.post(url, json={}, headers=bad_token)) == "EXEG-0003-400"
    assert _code(_interact(http, _on(info), {}, token="x.y.z")) == "EXEG-0502-401"


def test_a_token_expires_after_a_simulated_day(edge: Any) -> None:
    http, info = edge
    token = _token(http, info)
    ok = _event(_profile(http))
    assert _interact(http, _on(info), ok, token=token).status_code == 200
    assert http.post("/sandbox/edge/clock", json={"advanceSeconds": 86_400}).status_code == 200
    assert _code(_interact(http, _on(info), ok, token=token)) == "EXEG-0503-401"


def test_the_envelope_has_the_request_id_handles_in_order_and_the_headers(edge: Any) -> None:
    http, info = edge
    answer = http.post(f"/ee/irl1/v2/interact?datastreamId={_on(info)}&requestId=my-trace-1",
                       json=_event(_profile(http)))  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json;charset=utf-8"
    body = answer.json()
    assert re.fullmatch(r"my-trace-1-[0-9a-f]{16}", body["requestId"])
    assert answer.headers["x-request-id"] == body["requestId"]
    assert answer.headers["x-adobe-edge"].startswith("IRL1;")
    assert int(answer.headers["x-rate-limit-remaining"]) >= 0
    types = [h["type"] for h in body["handle"]]
    assert types == ["identity:result", "activation:pull", "locationHint:result", "state:store"]
    assert body["handle"][1]["eventIndex"] == 0 and "eventIndex" not in body["handle"][0]
    assert re.fullmatch(r"\d{38}", body["handle"][0]["payload"][0]["id"])
    assert body["handle"][2]["payload"] == [{"scope": "EdgeNetwork", "hint": "irl1", "ttlSeconds": 1800}]
    keys = [entry["key"] for entry in body["handle"][3]["payload"]]
    org = info["orgId"].replace("@", "_")
    assert keys == [f"kndctr_{org}_identity", f"kndctr_{org}_cluster"]
    given = http.post(f"/ee/v1/interact?configId={_on(info)}", json={"events": [_event(_profile(http))["event"]]},
                      headers={"x-request-id": "hdr-id"})  # fmt: skip
    assert given.status_code == 200 and given.json()["requestId"].startswith("hdr-id-")
    spelled = http.post(f"/ee/v2/interact?dataStreamId={_on(info)}", json=_event(_profile(http)))
    assert spelled.status_code == 200


def test_unknown_identity_gets_an_empty_activation_pull(edge: Any) -> None:
    http, info = edge
    answer = _interact(http, _on(info), _event(("CRMID", "nobody-knows-me")))
    pull = [h for h in answer.json()["handle"] if h["type"] == "activation:pull"]
    assert pull == [{"type": "activation:pull", "payload": [], "eventIndex": 0}]


def test_a_datastream_without_personalization_destinations_has_no_activation_pull(edge: Any) -> None:
    http, info = edge
    answer = _interact(http, _off(info), _event(_profile(http)))
    assert answer.status_code == 200
    assert "activation:pull" not in [h["type"] for h in answer.json()["handle"]]


def test_attributes_only_with_a_token_and_only_for_with_attributes(edge: Any) -> None:
    http, info = edge
    with_attributes = next(d["alias"] for d in info["destinations"] if d["withAttributes"])
    identity = _profile(http)
    anonymous = _segments(_interact(http, _on(info), _event(identity)))
    signed = _segments(_interact(http, _on(info), _event(identity), token=_token(http, info)))
    assert all("attributes" not in item for item in anonymous.values())
    assert signed[with_attributes]["attributes"]
    assert all(set(v) == {"value"} for v in signed[with_attributes]["attributes"].values())
    for alias, item in signed.items():
        if alias != with_attributes:
            assert "attributes" not in item
        assert item["type"] == "profileLookup" and all(s["namespace"] == "ups" for s in item["segments"])


def _audience(http: httpx.Client, evaluation: str, event_type: str) -> str:
    return next(a["id"] for a in http.get("/sandbox/edge/audiences").json()
                if a["evaluation"] == evaluation and event_type in a["rule"])  # fmt: skip


def _ids(answer: httpx.Response) -> set[str]:
    return {s["id"] for item in _segments(answer).values() for s in item["segments"]}


def test_an_edge_audience_shows_on_the_same_page_a_streaming_one_after_the_clock_moves(edge: Any) -> None:
    http, info = edge
    checkout = _audience(http, "edge", "commerce.checkouts")
    purchase = _audience(http, "streaming", "commerce.purchases")
    for index in range(50):  # a profile in neither audience yet
        identity = _profile(http, index)
        before = _ids(_interact(http, _on(info), _event(identity)))
        if not {checkout, purchase} & before:
            break
    same_page = _ids(_interact(http, _on(info), _event(identity, "commerce.checkouts")))
    assert checkout in same_page and checkout not in before
    bought = _ids(_interact(http, _on(info), _event(identity, "commerce.purchases")))
    assert purchase not in bought  # not on the same page: the hub has yet to segment and replicate it
    http.post("/sandbox/edge/clock", json={"advanceSeconds": 11 * 60})
    assert purchase in _ids(_interact(http, _on(info), _event(identity)))


def test_guardrail_answers_429_with_retry_after(fresh_sandbox: SandboxServer) -> None:
    fresh_sandbox.app.edge.guardrail.limit = 2
    fresh_sandbox.app.edge.guardrail.window_s = 60.0
    with httpx.Client(base_url=fresh_sandbox.url, timeout=30) as http:
        info = http.get("/sandbox/info").json()["edge"]
        answers = [_interact(http, _on(info), _event(_profile(http))) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert _code(answers[2]) == "EXEG-EMUL-429" and int(answers[2].headers["retry-after"]) >= 1
    assert answers[1].headers["x-rate-limit-remaining"] == "0"


def test_the_207_fault_carries_an_upstream_error(edge: Any) -> None:
    http, info = edge
    assert http.put("/sandbox/knobs", json={"faults": "207=1"}).status_code == 200
    answer = _interact(http, _on(info), _event(_profile(http)))
    assert answer.status_code == 207
    body = answer.json()
    assert body["errors"][0]["type"].endswith("EXEG-0201-503")
    assert "activation:pull" not in [h["type"] for h in body["handle"]]
    assert http.put("/sandbox/knobs", json={"faults": "503=1"}).status_code == 200
    failed = _interact(http, _on(info), _event(_profile(http)))
    assert failed.status_code == 503 and _code(failed) == "EXEG-0000-503" and failed.headers["retry-after"]


def test_admin_routes_profiles_audiences_clock_and_reset(edge: Any) -> None:
    http, info = edge
    page = http.get("/sandbox/edge/profiles", params={"limit": 5, "offset": 10}).json()
    assert page["total"] >= 1000 and len(page["items"]) == 5
    namespace, value = page["items"][0]["identity"]["namespace"], page["items"][0]["identity"]["id"]
    one = http.get("/sandbox/edge/profiles", params={"identity": f"{namespace}:{value}"}).json()
    assert one["total"] == 1 and one["items"][0]["identity"] == {"namespace": namespace, "id": value}
    assert http.get("/sandbox/edge/profiles", params={"identity": "no-colon"}).status_code == 400
    assert http.get("/sandbox/edge/profiles", params={"limit": 501}).status_code == 400  # was a 500
    audiences = http.get("/sandbox/edge/audiences").json()
    assert len(audiences) >= 8 and {a["evaluation"] for a in audiences} == {"edge", "streaming", "batch"}
    bad = http.post("/sandbox/edge/audiences", json={"name": "x", "rule": "eval(", "evaluation": "edge"})
    assert bad.status_code == 400 and bad.json()["message"]
    start = http.get("/sandbox/edge/clock").json()["now"]
    moved = http.post("/sandbox/edge/clock", json={"advanceSeconds": 600}).json()["now"]
    assert moved > start
    assert http.post("/sandbox/edge/clock", json={"advanceSeconds": -1}).status_code == 400
    assert http.post("/sandbox/reset", json={}).status_code == 200
    assert http.get("/sandbox/edge/clock").json()["now"] == start
    assert {d["withAttributes"] for d in info["destinations"]} == {True, False}
    assert len(next(d for d in info["destinations"] if d["withAttributes"])["attributes"]) >= 4


def test_a_request_id_that_cannot_be_a_header_is_cleaned_not_a_dropped_connection(edge: Any) -> None:
    """Schemathesis found it: the id is echoed in x-request-id, and a control character there broke the answer."""
    http, info = edge
    given = "abc\x7f\x0bdéf\U000b5aeb"
    answer = http.post(
        "/ee/v2/interact",
        params={"datastreamId": _on(info), "requestId": given},
        json=_event(_profile(http)),
    )
    assert answer.status_code == 200, answer.text
    assert re.fullmatch(r"abcdf-[0-9a-f]{16}", answer.headers["x-request-id"])
    assert answer.json()["requestId"] == answer.headers["x-request-id"]


def test_an_unreadable_location_hint_is_a_documented_404(edge: Any) -> None:
    http, info = edge
    answer = http.post("/ee/null,null/v2/interact", params={"datastreamId": _on(info)}, json={})
    assert answer.status_code == 404
    assert answer.json()["message"] == "no such location hint"
    spec = http.get("/sandbox/openapi.json").json()
    assert "404" in spec["paths"]["/ee/{locationHint}/v2/interact"]["post"]["responses"]


def test_the_profiles_identity_filter_declares_its_form(edge: Any) -> None:
    http, _ = edge
    spec = http.get("/sandbox/openapi.json").json()
    params = spec["paths"]["/sandbox/edge/profiles"]["get"]["parameters"]
    identity = next(p for p in params if p["name"] == "identity")
    assert identity["schema"]["pattern"]
    assert http.get("/sandbox/edge/profiles", params={"identity": "CRMID:"}).status_code == 400
