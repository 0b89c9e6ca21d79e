"""CallFlowRequest validation: every rule, with messages that say what to fix."""

from __future__ import annotations

import pytest

from flowlab import CallFlowRequest, RequestValidationError
from flowlab.http import FlowResponse
from flowlab.personalize.models import currency_name, language_name

BASE = {"clientKey": "key", "friendlyId": "home_page_banner", "browserId": "b-1"}


def problems(**fields: object) -> dict[str, list[str]]:
    with pytest.raises(RequestValidationError) as info:
        CallFlowRequest.build(**{**BASE, **fields})
    out: dict[str, list[str]] = {}
    for p in info.value.problems:
        out.setdefault(p.field, []).append(p.message)
    return out


def test_docs_example_body_round_trips() -> None:
    body = {
        "clientKey": "abBah8aelipaPeebae7roox2tiexoSee", "channel": "WEB", "language": "en",
        "currencyCode": "EUR", "pointOfSale": "myretailsite/ireland",
        "browserId": "a38b230c-11eb-4cf9-8d5d-274e9f344925", "friendlyId": "home_page_banner",
    }  # fmt: skip
    assert CallFlowRequest.from_body(body).to_body() == body


def test_python_names_and_wire_names_both_work() -> None:
    a = CallFlowRequest.build(client_key="k", friendly_id="x", browser_id="b")
    b = CallFlowRequest.build(clientKey="k", friendlyId="x", browserId="b")
    assert a == b and a.identity == ("browserId", "b")


def test_language_is_sent_as_given_in_either_case() -> None:
    assert CallFlowRequest.build(**BASE, language="EN").to_body()["language"] == "EN"
    assert CallFlowRequest.build(**BASE, language="en").to_body()["language"] == "en"


def test_empty_language_is_rejected_with_the_reason() -> None:
    assert "400" in problems(language="")["language"][0]


def test_unknown_language_and_currency() -> None:
    assert "ISO 639" in problems(language="xx")["language"][0]
    assert "ISO 4217" in problems(currencyCode="EURO")["currencyCode"][0]
    assert CallFlowRequest.build(**BASE, currencyCode="eur").currency_code == "EUR"


def test_channel_is_upper_cased_and_checked() -> None:
    assert CallFlowRequest.build(**BASE, channel="mobile_app").channel == "MOBILE_APP"
    message = problems(channel="WEBSITE")["channel"][0]
    assert "WEBSITE" in message and "MOBILE_WEB" in message


def test_two_identities_are_rejected_naming_both() -> None:
    message = problems(email="jane@example.com")["identity"][0]
    assert message.startswith("use only one of browserId, email or identifiers")
    assert "browserId and email" in message


def test_email_with_identifiers_is_rejected() -> None:
    fields = {
        "clientKey": "k",
        "friendlyId": "x",
        "email": "a@b.c",
        "identifiers": {"provider": "BXLP", "id": "1"},
    }
    with pytest.raises(RequestValidationError, match="use only one"):
        CallFlowRequest.build(**fields)


def test_no_identity_is_rejected() -> None:
    with pytest.raises(RequestValidationError, match="give one of browserId, email or identifiers"):
        CallFlowRequest.build(clientKey="k", friendlyId="x")


def test_blank_identity_counts_as_missing() -> None:
    request = CallFlowRequest.build(clientKey="k", friendlyId="x", browserId="  ", email="a@b.c")
    assert request.identity == ("email", "a@b.c")


def test_friendly_id_rules() -> None:
    assert "required" in problems(friendlyId="")["friendlyId"][0]
    message = problems(friendlyId="Home Page")["friendlyId"][0]
    assert "home_page" in message  # suggests a fix
    assert CallFlowRequest.build(**{**BASE, "friendlyId": "hero_banner*"}).friendly_id == "hero_banner*"


def test_missing_client_key_and_unknown_field() -> None:
    with pytest.raises(RequestValidationError) as info:
        CallFlowRequest.build(friendlyId="x", browserId="b", bogus=1)
    fields = {p.field for p in info.value.problems}
    assert {"clientKey", "bogus"} <= fields


def test_identifiers_must_be_one_object() -> None:
    fields = {"clientKey": "k", "friendlyId": "x", "identifiers": [{"provider": "p", "id": "1"}]}
    with pytest.raises(RequestValidationError, match="identifiers"):
        CallFlowRequest.build(**fields)
    ok = CallFlowRequest.build(clientKey="k", friendlyId="x", identifiers={"provider": "BXLP", "id": "123"})
    assert ok.identity == ("identifiers", "BXLP:123")


def test_nested_params_are_kept() -> None:
    request = CallFlowRequest.build(**BASE, params={"utm": {"campaign": "spring", "source": "mail"}})
    assert request.to_body()["params"]["utm"]["campaign"] == "spring"


def test_invalid_email() -> None:
    fields = {"clientKey": "k", "friendlyId": "x", "email": "not-an-email"}
    with pytest.raises(RequestValidationError, match="not an email"):
        CallFlowRequest.build(**fields)


def test_iso_names() -> None:
    assert language_name("de") == "German" and language_name("DEU") == "German"
    assert currency_name("jpy") == "Yen"
    assert language_name("zz") is None and currency_name("ABC") is None


def test_flow_response_reads_json_and_offers() -> None:
    body = '{"decisionOffers":[{"ref":"o1","name":"Free shipping","attributes":{"title":"Free shipping","ctaText":"Go"}}]}'
    response = FlowResponse(200, {"X-Flowlab-Execution": "e1"}, body, 12.5)
    assert response.ok and response.is_json and response.execution_ref == "e1"
    assert [o.title for o in response.offers] == ["Free shipping"]
    not_json = FlowResponse(200, {}, "<html>", 1.0)
    assert not_json.json_body is None and not_json.offers == []
