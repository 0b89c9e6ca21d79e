"""Personas: the sandbox's demo guests out of the box, saved ones in a file, each one a valid request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowlab import FlowClient, SandboxAdmin
from flowlab.errors import RequestValidationError
from flowlab.personalize.models import CallFlowRequest, Identifier
from flowlab.sandbox import PERSONAS, SandboxServer
from flowlab.workbench.personas import Persona, PersonaError, PersonaStore, demo_personas


def test_demo_personas_mirror_the_sandbox() -> None:
    personas = demo_personas()
    assert [p.name for p in personas] == [p["name"] for p in PERSONAS]
    assert all(p.demo for p in personas)
    lena = personas[0]
    assert lena.identity_kind == "browserId" and lena.channel == "MOBILE_WEB" and lena.language == "DE"
    assert "gold" in lena.description.lower()
    kinds = {p.identity_kind for p in personas}
    assert kinds == {"browserId", "email", "identifiers"}  # the demo set shows every identity


def test_every_demo_persona_is_a_known_guest(sandbox: SandboxServer, admin: SandboxAdmin) -> None:
    """Demo personas are found by exactly their identity: the sandbox never has to create them."""
    with FlowClient(base_url=sandbox.url, retries=0) as client:
        for persona in demo_personas():
            request = persona.to_request(client_key=sandbox.client_key, friendly_id="hero_banner*")
            response = client.call(request)
            trace = admin.execution(response.execution_ref or "")
            assert trace["guest"]["created"] is False, persona.name


def test_request_fields_use_wire_names() -> None:
    persona = Persona(
        "Camille",
        identifier=Identifier(provider="LOYALTY", id="LY-1"),
        point_of_sale="lumen/fr",
        channel="MOBILE_APP",
        language="fr",
        currency="EUR",
        params={"utm": {"campaign": "x"}},
    )
    fields = persona.request_fields()
    assert fields == {
        "channel": "MOBILE_APP",
        "pointOfSale": "lumen/fr",
        "language": "fr",
        "currencyCode": "EUR",
        "identifiers": {"provider": "LOYALTY", "id": "LY-1"},
        "params": {"utm": {"campaign": "x"}},
    }
    request = persona.to_request(client_key="k", friendly_id="hero_banner*")
    assert request.to_body()["language"] == "fr"  # sent as given
    assert persona.summary.startswith("identifiers LOYALTY:LY-1")


def test_exactly_one_identity() -> None:
    with pytest.raises(PersonaError, match="exactly one"):
        Persona("two", browser_id="b", email="e@x.com")
    with pytest.raises(PersonaError, match="found none"):
        Persona("none")
    with pytest.raises(PersonaError, match="name"):
        Persona(" ", browser_id="b")


def test_round_trip_through_json_and_requests() -> None:
    request = CallFlowRequest.build(
        clientKey="k", friendlyId="checkout_ab_test", email="a@b.com", channel="web", params={"a": 1}
    )
    persona = Persona.from_request("From a call", request, "made in a test")
    assert persona.email == "a@b.com" and persona.channel == "WEB" and persona.params == {"a": 1}
    assert Persona.from_json(persona.to_json()) == persona
    again = persona.to_request(client_key="k", friendly_id="checkout_ab_test")
    assert again.to_body() == request.to_body()


def test_a_hand_edited_persona_loads_and_the_request_says_what_is_wrong() -> None:
    persona = Persona.from_json({"name": "Odd", "browserId": "b-1", "language": "xx", "currency": "EUR"})
    assert persona.currency == "EUR"  # the old `currency` alias is read too
    with pytest.raises(RequestValidationError) as caught:
        persona.to_request(client_key="k", friendly_id="f")
    assert caught.value.for_field("language")


def test_store_saves_replaces_deletes_and_keeps_demo_first() -> None:
    store = PersonaStore()
    assert store.path.name == "personas.json" and store.saved() == []
    mine = Persona("Mine", browser_id="b-1", point_of_sale="lumen/uk")
    store.save(mine)
    store.save(Persona("Other", email="o@example.com"))
    store.save(Persona("Mine", browser_id="b-2"))
    assert [p.name for p in store.saved()] == ["Mine", "Other"]
    assert store.get("Mine") is not None and store.get("Mine").browser_id == "b-2"  # type: ignore[union-attr]
    everyone = [p.name for p in PersonaStore().all()]
    assert everyone[: len(PERSONAS)] == [p["name"] for p in PERSONAS] and everyone[-2:] == ["Mine", "Other"]
    assert [p.name for p in store.all(include_demo=False)] == ["Mine", "Other"]
    store.delete("Other")
    assert [p.name for p in store.saved()] == ["Mine"]


def test_a_saved_persona_overrides_its_demo_namesake() -> None:
    store = PersonaStore()
    store.save(Persona("Lena Vogel", email="lena@elsewhere.example"))
    lena = store.get("Lena Vogel")
    assert lena is not None and lena.email == "lena@elsewhere.example" and not lena.demo
    assert [p.name for p in store.all()].count("Lena Vogel") == 1


def test_bad_entries_are_skipped_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "personas.json"
    path.write_text(json.dumps({"personas": [{"name": "ok", "email": "a@b.c"}, {"name": "two", "email": "a@b.c",
                                "browserId": "b"}, {"name": "bad", "browserId": "b", "params": [1]}]}))  # fmt: skip
    store = PersonaStore(path)
    assert [p.name for p in store.saved()] == ["ok"]
    assert len(store.problems) == 2 and "exactly one" in store.problems[0]
