"""Offer extraction and variant detection on the shapes real templates produce (reference §3.1)."""

from __future__ import annotations

from flowlab.personalize.offers import find_offers
from flowlab.personalize.variants import detect_variant, json_path_get

SITECORE_OFFER = {
    "ref": "509f6494", "name": "Website Home Page Hero - Fitness Fanatic",
    "attributes": {"title": "fuel your fitness", "imageUrl": "https://x/y.png", "subtitle": "new gear",
                   "buttonText": "fitness", "buttonUrl": "/fitness"},
}  # fmt: skip


def test_sitecore_offer_objects_under_any_key() -> None:
    offers = find_offers({"decisionOffers": [SITECORE_OFFER]})
    assert len(offers) == 1
    offer = offers[0]
    assert (offer.title, offer.text, offer.cta_text, offer.cta_url) == (
        "fuel your fitness",
        "new gear",
        "fitness",
        "/fitness",
    )
    assert offer.ref == "509f6494" and offer.path == "decisionOffers[0]"


def test_flat_and_legacy_shapes() -> None:
    legacy = {
        "result": {
            "offers": [{"attributes": {"Name": "Summer", "ImageUrl": "a.png", "LinkUrl": "/s"}, "ref": "r"}]
        }
    }
    assert [o.title for o in find_offers(legacy)] == ["Summer"]
    flat = {"hero": {"title": "Hi", "price": "19.90", "currency": "EUR"}}
    assert find_offers(flat)[0].price == 19.9


def test_things_that_are_not_offers() -> None:
    assert find_offers({"message": "Welcome back, Lena"}) == []
    assert find_offers({"variantId": "abc"}) == []
    assert find_offers(None) == [] and find_offers("text") == []
    results = {"results": {"decisionModelResultNodes": [{"name": "Map Page Variant", "outputs": []}]}}
    assert find_offers(results) == []


def test_variant_from_path_field_offers_and_body() -> None:
    assert detect_variant({"variant": "B"}).label == "B"
    assert detect_variant({"variantId": ""}, path=None).source in {"body", "offers"}
    assert detect_variant({"a": {"b": [1, {"c": "X"}]}}, path="a.b[1].c").label == "X"
    guess = detect_variant({"decisionOffers": [SITECORE_OFFER]})
    assert guess.source == "offers" and guess.label == "fuel your fitness"
    assert detect_variant({}).label == "(empty)"
    assert detect_variant({"message": "No matching variant"}).label == "(No matching variant)"
    same = detect_variant({"x": 1, "y": 2}).label
    assert same.startswith("#") and same == detect_variant({"y": 2, "x": 1}).label
    assert detect_variant(None, text="<html>").label.startswith("#")


def test_json_path_misses_are_not_errors() -> None:
    assert detect_variant({"variant": "B"}, path="missing.path").label == "B"
    assert json_path_get({"a": [1]}, "a[5]") is not json_path_get({"a": [1]}, "a[0]")
    assert json_path_get({"a b": 1}, '$["a b"]') == 1
