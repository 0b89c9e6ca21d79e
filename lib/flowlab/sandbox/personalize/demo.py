"""The demo tenant: Lumen Outfitters, a fashion and outdoor retailer with shops in DE, UK, FR and US.

The story, flow by flow (friendlyId, status):

* ``hero_banner_campaign`` (PRODUCTION): visitors who arrive from a campaign (``utm.campaign`` or the
  flattened ``utm_campaign``) see that campaign's hero; gold and platinum members get an early-access version.
* ``hero_banner_default`` (PRODUCTION): everyone else gets a hero by loyalty tier and country. Called as
  ``hero_banner*`` the pair shows fuzzy matching: the first live flow, in name order, whose condition passes.
* ``checkout_ab_test`` (PRODUCTION): free shipping (A, control) against 10% off (B); B truly converts 25%
  more.
* ``recommendations_3way`` (LIVE): bestsellers against picks by tier, and by tier and country (lifts
  1.0 / 1.10 / 1.20).
* ``guest_greeting`` (PRODUCTION): "Welcome back, Lena!", or "Welcome!" for anonymous visitors.
* ``summer_sale`` (DRAFT) and ``winter_clearance`` (PAUSED): valid definitions that do not execute.

Everything is deterministic. Definitions have uuid5 refs, so they never move when guests change. Guests
come from ``random.Random(seed)``, with timestamps relative to a fixed epoch (2026-10-01T00:00:00Z). The
hand-written ``PERSONAS`` come first and do not depend on the seed. ``variant["sandbox"]`` and
``guest["sandbox"]`` hold the hidden truth that simulated outcomes are drawn from: a guest converts with
probability ``propensity × conversionLift``.
"""

from __future__ import annotations

import base64
import functools
import pickle
import random
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from xml.sax.saxutils import escape

from flowlab.sandbox.edge.clock import iso_ms

__all__ = ["DEMO_CLIENT_KEY", "PERSONAS", "DemoTenant", "demo_tenant"]

Json = dict[str, Any]

DEMO_CLIENT_KEY = "sandbox-demo-client-key-0000000001"

_NAMESPACE: Final = uuid.UUID("5b0e7c1a-6f43-4c1e-9a7e-2f6d8b4c9e10")
_EPOCH_MS: Final = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp() * 1000)
_DAY_MS: Final = 86_400_000
_BRAND: Final = "Lumen Outfitters"
_CHANNELS: Final = ("WEB", "MOBILE_WEB", "MOBILE_APP")
_TIERS: Final = ("none", "bronze", "silver", "gold", "platinum")


def _ref(kind: str, key: str) -> str:
    """A stable ref for a definition: the same kind and key give the same uuid, whatever the seed."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{key}"))


def _rng_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class DemoTenant:
    """Everything the sandbox loads on start and on reset, in the reference's JSON shapes."""

    client_key: str
    points_of_sale: list[Json]
    offers: list[Json]
    decision_models: list[Json]
    flows: list[Json]
    guests: list[Json]


# ---- markets -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Market:
    country: str
    pos: str
    language: str
    currency: str
    fx: float  # local price = EUR catalogue price × fx
    domain: str
    weight: int  # share of guests
    cities: tuple[str, ...]
    female: tuple[str, ...]
    male: tuple[str, ...]
    surnames: tuple[str, ...]


_MARKETS: Final = (
    _Market(
        "DE", "lumen/de", "DE", "EUR", 1.0, "example.de", 35,
        ("Berlin", "München", "Hamburg", "Köln", "Frankfurt am Main", "Stuttgart", "Leipzig", "Freiburg"),
        ("Lena", "Anna", "Laura", "Julia", "Sophie", "Marie", "Katharina", "Lisa", "Hannah", "Mia", "Jana"),
        ("Lukas", "Jonas", "Felix", "Maximilian", "Leon", "Paul", "Tobias", "Jan", "Niklas", "Jürgen"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
         "Hoffmann", "Koch", "Richter", "Wolf", "Schröder", "Neumann", "Vogel"),
    ),
    _Market(
        "GB", "lumen/uk", "EN", "GBP", 0.87, "example.co.uk", 25,
        ("London", "Manchester", "Edinburgh", "Bristol", "Leeds", "Glasgow", "Cardiff", "Birmingham"),
        ("Olivia", "Amelia", "Isla", "Emily", "Grace", "Charlotte", "Chloe", "Eleanor", "Lucy", "Freya"),
        ("Oliver", "George", "Harry", "Jack", "Charlie", "Thomas", "James", "William", "Oscar", "Callum"),
        ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Davies", "Evans", "Roberts", "Walker",
         "Wright", "Hughes", "Campbell", "Murphy", "Patel", "Bennett"),
    ),
    _Market(
        "FR", "lumen/fr", "FR", "EUR", 1.0, "example.fr", 15,
        ("Paris", "Lyon", "Marseille", "Toulouse", "Bordeaux", "Lille", "Nantes", "Grenoble"),
        ("Camille", "Léa", "Manon", "Chloé", "Inès", "Emma", "Louise", "Jeanne", "Zoé", "Élodie"),
        ("Lucas", "Hugo", "Louis", "Gabriel", "Arthur", "Jules", "Nathan", "Théo", "Antoine", "Rémi"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
         "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "Fournier"),
    ),
    _Market(
        "US", "lumen/us", "EN", "USD", 1.1, "example.com", 25,
        ("New York", "Seattle", "Denver", "Austin", "Boston", "Portland", "Chicago", "San Francisco"),
        ("Emma", "Olivia", "Ava", "Sophia", "Madison", "Abigail", "Harper", "Grace", "Zoe", "Riley"),
        ("Liam", "Noah", "Ethan", "Mason", "Logan", "Jacob", "Michael", "Daniel", "Tyler", "Caleb"),
        ("Johnson", "Williams", "Miller", "Davis", "Garcia", "Rodriguez", "Martinez", "Anderson", "Clark",
         "Lewis", "Walker", "Young", "Hall", "Allen", "Nguyen", "Carter"),
    ),
)  # fmt: skip
_MARKET_BY_COUNTRY: Final = {m.country: m for m in _MARKETS}


def _points_of_sale() -> list[Json]:
    return [
        {"name": m.pos, "market": m.country, "brand": _BRAND, "language": m.language, "timeoutInMinutes": 20}
        for m in _MARKETS
    ]


def _local_price(eur: float, market: _Market) -> float:
    """A catalogue price in the market's currency, ending in .95 as shelf prices do."""
    return eur if market.fx == 1.0 else round(round(eur * market.fx) - 0.05, 2)


# ---- offers (reference §3.3) ---------------------------------------------------------------------------

# Product-ish shapes drawn white on the gradient, right half of a 600×300 canvas.
_SHAPES: Final = {
    "mountain": '<path d="M320 250 440 90l50 70 30-35 80 125z"/><circle cx="530" cy="70" r="24"/>',
    "shoe": '<path d="M330 230c8-55 40-85 80-75l30 30 80 12c35 6 55 22 55 48v10H330z"/>',
    "boot": '<path d="M400 60h80v120l60 22c25 9 40 25 40 45v13H400z"/>',
    "jacket": '<path d="M420 70l40-12 20 25 20-25 40 12 45 85-35 15-10-20v115H435V150l-10 20-35-15z'
    'm58 20v135h4V90z"/>',
    "shirt": '<path d="M420 80l45-15h50l45 15 35 55-40 15-10-15v115H440V135l-10 15-40-15z"/>',
    "backpack": '<path d="M420 110q0-50 60-50t60 50v140H420zm30 50v50h60v-50z"/>',
    "truck": '<path d="M320 100h160v110H320zm165 40h55l45 45v25H485z"/>'
    '<circle cx="370" cy="225" r="24"/><circle cx="530" cy="225" r="24"/>',
    "tag": '<path d="M360 80h170l50 70-50 70H360zm30 55v30h30v-30z"/>',
    "gift": '<path d="M370 135h210v115H370zm-10-40h230v40H360zm105 0v155h20V95z"/>',
    "star": '<path d="M470 50l30 65 70 8-52 48 14 70-62-35-62 35 14-70-52-48 70-8z"/>',
    "tent": '<path d="M330 250l140-180 140 180zm140-110l-50 110h100z"/>',
    "poles": '<path d="M410 50h16l50 200h-16zm120 0h16l-50 200h-16z"/>',
}


def _image(shape: str, start: str, end: str, label: str) -> str:
    """A small offline 600×300 SVG banner (gradient, shape, label) as a base64 data URL."""
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="600" height="300" viewBox="0 0 600 300">'
        f'<defs><linearGradient id="g" x2="1" y2="1"><stop stop-color="{start}"/>'
        f'<stop offset="1" stop-color="{end}"/></linearGradient></defs>'
        '<rect width="600" height="300" fill="url(#g)"/>'
        f'<g fill="#fff" fill-opacity=".85" fill-rule="evenodd">{_SHAPES[shape]}</g>'
        '<g fill="#fff" font-family="Helvetica,Arial,sans-serif" font-weight="700">'
        '<text x="36" y="58" font-size="16" letter-spacing="4" fill-opacity=".8">LUMEN</text>'
        f'<text x="36" y="250" font-size="34">{escape(label)}</text></g></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


_OFFER_TYPES: Final = {"hero": "Hero banner", "incentive": "Incentive", "product": "Product recommendation"}


def _offer(
    key: str,
    kind: str,
    name: str,
    description: str,
    *,
    title: str,
    text: str,
    cta: tuple[str, str],
    art: tuple[str, str, str, str],
    price: float | None = None,
    currency: str = "EUR",
    badge: str | None = None,
) -> Json:
    """One offer; ``art`` is (shape, gradient start, gradient end, label) for its generated image."""
    attributes: Json = {"title": title, "text": text}
    if price is not None:
        attributes |= {"price": price, "currency": currency}
    attributes |= {"imageUrl": _image(*art), "ctaText": cta[0], "ctaUrl": cta[1]}
    if badge is not None:
        attributes["badge"] = badge
    return {
        "ref": _ref("offer", key),
        "name": name,
        "description": description,
        "status": "ACTIVE",
        "archived": False,
        "offerTypeRef": _ref("offerType", _OFFER_TYPES[kind]),
        "tags": [],
        "attributes": attributes,
    }


def _hero_offers() -> list[Json]:
    return [
        _offer("hero_spring_trail", "hero", "Hero – Spring Trail Collection",
               "Campaign hero for spring_trail visitors.",
               title="The Spring Trail Collection",
               text="Lightweight boots and shells for the first warm days on the trail.",
               cta=("Shop the collection", "/collections/spring-trail"),
               art=("mountain", "#0f766e", "#064e3b", "Spring Trail"), badge="New"),
        _offer("hero_spring_trail_vip", "hero", "Hero – Spring Trail Early Access (Gold & Platinum)",
               "Campaign hero for gold and platinum members who arrive from spring_trail.",
               title="Early access for members",
               text="Gold and Platinum members shop the Spring Trail Collection 48 hours before the rest.",
               cta=("Shop early", "/collections/spring-trail?access=early"),
               art=("mountain", "#b45309", "#78350f", "Early Access"), badge="Members only"),
        _offer("hero_run_club", "hero", "Hero – Run Club Week",
               "Campaign hero for run_club visitors.",
               title="Run Club Week",
               text="New trail runners and weatherproof layers, plus free gait analysis in store.",
               cta=("Find your shoe", "/collections/running"),
               art=("shoe", "#be123c", "#881337", "Run Club")),
        _offer("hero_city_commuter", "hero", "Hero – City Commuter Rainwear",
               "Campaign hero for city_commuter visitors.",
               title="Rain-ready for the commute",
               text="Breathable shells and waterproof backpacks that look sharp in the office.",
               cta=("Shop rainwear", "/collections/city-rainwear"),
               art=("jacket", "#334155", "#0f172a", "City Rainwear")),
        _offer("hero_welcome", "hero", "Hero – Welcome to Lumen",
               "Default hero for first-time and anonymous visitors.",
               title="Gear for every trail and every street",
               text="New here? Join Lumen today and get 10% off your first order.",
               cta=("Join Lumen", "/account/register"),
               art=("mountain", "#2563eb", "#1e3a8a", "Welcome")),
        _offer("hero_members", "hero", "Hero – New Arrivals for Members",
               "Default hero for bronze and silver members outside the four home markets.",
               title="New in for members",
               text="Fresh colours and new fits, with member points on every order.",
               cta=("See what's new", "/new-in"),
               art=("shirt", "#7c3aed", "#4c1d95", "New In")),
        _offer("hero_vip", "hero", "Hero – VIP Lounge (Gold & Platinum)",
               "Default hero for gold and platinum members.",
               title="Your VIP lounge",
               text="Private sale prices, free express delivery and double points, all season long.",
               cta=("Enter the lounge", "/vip"),
               art=("star", "#a16207", "#422006", "VIP Lounge"), badge="VIP"),
        _offer("hero_de", "hero", "Hero – Alpine Autumn (DE)",
               "Default hero for bronze and silver members in Germany.",
               title="Herbst in den Alpen",
               text="Wanderschuhe, Fleece und Stöcke für goldene Tage in den Bergen.",
               cta=("Jetzt entdecken", "/de/kollektionen/alpen"),
               art=("mountain", "#c2410c", "#7c2d12", "Alpenherbst")),
        _offer("hero_gb", "hero", "Hero – Highland Walks (UK)",
               "Default hero for bronze and silver members in the UK.",
               title="Made for the Highlands",
               text="Waterproof boots and warm layers for wet and windy weekends.",
               cta=("Shop walking gear", "/uk/collections/walking"),
               art=("boot", "#15803d", "#14532d", "Highlands")),
        _offer("hero_fr", "hero", "Hero – Weekend in the Mountains (FR)",
               "Default hero for bronze and silver members in France.",
               title="Cap sur la montagne",
               text="Chaussures, polaires et sacs pour vos week-ends en altitude.",
               cta=("Découvrir", "/fr/collections/montagne"),
               art=("backpack", "#0369a1", "#0c4a6e", "La Montagne")),
        _offer("hero_us", "hero", "Hero – National Parks Season (US)",
               "Default hero for bronze and silver members in the US.",
               title="National Parks season",
               text="Tents, packs and trail shoes for your next park trip.",
               cta=("Plan your trip", "/us/collections/national-parks"),
               art=("tent", "#4d7c0f", "#1a2e05", "National Parks")),
        _offer("hero_summer_sale", "hero", "Hero – Summer Sale up to 40% off",
               "Hero for the summer sale (draft experience).",
               title="Summer Sale: up to 40% off",
               text="Last season's favourites at their lowest prices of the year.",
               cta=("Shop the sale", "/sale"),
               art=("tag", "#db2777", "#831843", "Summer Sale"), badge="-40%"),
    ]  # fmt: skip


def _incentive_offers() -> list[Json]:
    return [
        _offer("free_shipping", "incentive", "Checkout – Free shipping",
               "Checkout incentive A (control): free standard delivery.",
               title="Free shipping",
               text="Free standard delivery on this order, no minimum spend.",
               cta=("Go to checkout", "/checkout"),
               art=("truck", "#0891b2", "#164e63", "Free Shipping"), badge="Free"),
        _offer("ten_percent_off", "incentive", "Checkout – 10% off",
               "Checkout incentive B: 10% off the basket with code LUMEN10.",
               title="10% off your order",
               text="Use code LUMEN10 at checkout for 10% off everything in your basket.",
               cta=("Apply code", "/checkout?code=LUMEN10"),
               art=("tag", "#dc2626", "#7f1d1d", "10% Off"), badge="-10%"),
        _offer("bundle_boots_socks", "incentive", "Bundle – Boots + Merino Socks",
               "Bundle offer for members: boots with two pairs of merino socks.",
               title="Boots + socks bundle",
               text="Buy any hiking boot and get two pairs of merino socks for half price.",
               cta=("Build your bundle", "/bundles/boots-socks"),
               art=("gift", "#9333ea", "#581c87", "Bundle Deal"), price=174.95, badge="Bundle"),
        _offer("double_points", "incentive", "Loyalty – Double points",
               "Loyalty offer: double points on every order this week.",
               title="Double points this week",
               text="Members earn 2 points for every euro spent until Sunday.",
               cta=("See my points", "/account/loyalty"),
               art=("star", "#ca8a04", "#713f12", "Double Points"), badge="2x"),
        _offer("winter_clearance", "incentive", "Winter Clearance – 30% off",
               "Clearance offer for last winter's jackets and boots (paused experiment).",
               title="Winter clearance: 30% off",
               text="Jackets, boots and fleece from last winter, now 30% off while stocks last.",
               cta=("Shop clearance", "/clearance"),
               art=("tag", "#1d4ed8", "#172554", "Clearance"), badge="-30%"),
    ]  # fmt: skip


def _product_offers() -> list[Json]:
    gb, us = _MARKET_BY_COUNTRY["GB"], _MARKET_BY_COUNTRY["US"]
    return [
        _offer("bestseller_trail_runner", "product", "Bestseller – Trail Runner 2",
               "Bestselling product recommendation.",
               title="Trail Runner 2", text="Our best-selling trail shoe: grippy, light and ready for mud.",
               cta=("View product", "/p/LO-R200"), price=129.95,
               art=("shoe", "#ea580c", "#9a3412", "Trail Runner 2"), badge="Bestseller"),
        _offer("bestseller_down_jacket", "product", "Bestseller – Packable Down Jacket",
               "Bestselling product recommendation.",
               title="Packable Down Jacket", text="Warm as a duvet, packs into its own pocket.",
               cta=("View product", "/p/LO-C300"), price=179.95,
               art=("jacket", "#0f766e", "#134e4a", "Down Jacket"), badge="Bestseller"),
        _offer("bestseller_merino_layer", "product", "Bestseller – Merino Base Layer",
               "Bestselling product recommendation.",
               title="Merino Base Layer", text="Soft, odour-resistant merino for every season.",
               cta=("View product", "/p/LO-R230"), price=59.95,
               art=("shirt", "#475569", "#1e293b", "Merino Layer"), badge="Bestseller"),
        _offer("gold_summit_boot", "product", "Gold pick – Summit GTX Boot",
               "Premium recommendation for gold and platinum members.",
               title="Summit GTX Boot", text="Our most technical boot: waterproof and crampon-ready.",
               cta=("View product", "/p/LO-H100"), price=239.95,
               art=("boot", "#a16207", "#451a03", "Summit GTX"), badge="Gold pick"),
        _offer("gold_expedition_parka", "product", "Gold pick – Expedition Parka",
               "Premium recommendation for gold and platinum members.",
               title="Expedition Parka", text="800-fill down and a storm hood for the coldest days.",
               cta=("View product", "/p/LO-C350"), price=349.95,
               art=("jacket", "#854d0e", "#1c1917", "Expedition"), badge="Gold pick"),
        _offer("member_daypack", "product", "Member pick – Daypack 20L",
               "Recommendation for bronze and silver members.",
               title="Daypack 20L", text="A light daypack with a rain cover and a padded laptop sleeve.",
               cta=("View product", "/p/LO-H140"), price=89.95,
               art=("backpack", "#4f46e5", "#312e81", "Daypack 20L")),
        _offer("pick_de", "product", "Pick for Germany – Alpine Trekking Poles",
               "Country recommendation for Germany.",
               title="Alpine Trekking Poles", text="Carbon poles that fold to 38 cm, for Alpine descents.",
               cta=("Zum Produkt", "/de/p/LO-H130"), price=79.95,
               art=("poles", "#b91c1c", "#450a0a", "Trekking Poles")),
        _offer("pick_gb", "product", "Pick for the UK – Stormproof Shell",
               "Country recommendation for the UK.",
               title="Stormproof Shell", text="Three-layer waterproof shell built for British weather.",
               cta=("View product", "/uk/p/LO-C310"), price=_local_price(169.95, gb), currency=gb.currency,
               art=("jacket", "#1e40af", "#172554", "Storm Shell")),
        _offer("pick_fr", "product", "Pick for France – City Commuter Backpack",
               "Country recommendation for France.",
               title="Sac City Commuter", text="Le sac étanche pour le vélo et le bureau.",
               cta=("Voir le produit", "/fr/p/LO-C320"), price=99.95,
               art=("backpack", "#0e7490", "#083344", "City Backpack")),
        _offer("pick_us", "product", "Pick for the US – Trail Camp Tent 2P",
               "Country recommendation for the US.",
               title="Trail Camp Tent 2P", text="A two-person tent that pitches in three minutes.",
               cta=("View product", "/us/p/LO-T500"), price=_local_price(299.95, us), currency=us.currency,
               art=("tent", "#3f6212", "#1a2e05", "Trail Tent 2P")),
    ]  # fmt: skip


# ---- decision models (reference §5.1–5.2) --------------------------------------------------------------

# Programmables: ES5 IIFEs; globals guest, request (request.params), pos, and upstream output references.
_JS_TIER: Final = (
    "(function () { var des = guest.dataExtensions || []; for (var i = 0; i < des.length; i++) { "
    "var de = des[i]; if (de.name === 'ext' && de.values && de.values.tier) { return de.values.tier; } } "
    "return 'none'; })();"
)
# Cloud SDK sends params nested (utm.campaign); the old Engage SDK sent them flattened (utm_campaign).
_JS_CAMPAIGN: Final = (
    "(function () { var p = (request && request.params) || {}; "
    "var c = (p.utm && p.utm.campaign) || p.utm_campaign || ''; return String(c).toLowerCase(); })();"
)
_JS_COUNTRY: Final = (
    "(function () { if (guest.country) { return guest.country; } "
    "return (typeof pos !== 'undefined' && pos && pos.market) || ''; })();"
)
_JS_GREETING: Final = (
    "(function () { var n = guest.firstName; return n ? 'Welcome back, ' + n + '!' : 'Welcome!'; })();"
)
# Condition: truthy passes, and the returned object is `filter` in the template.
_JS_HAS_CAMPAIGN: Final = (
    "(function () { var p = (request && request.params) || {}; "
    "var c = (p.utm && p.utm.campaign) || p.utm_campaign; if (!c) { return false; } "
    "c = String(c).toLowerCase().replace(/[^a-z0-9_-]/g, ''); return c ? { campaign: c } : false; })();"
)

_ANY: Final = "-"
_TIER_IN: Final = ("Tier", "tier")
_CAMPAIGN_IN: Final = ("Campaign", "campaign")
_COUNTRY_IN: Final = ("Country", "country")
_GUEST_TYPE_IN: Final = ("Guest Type", "guest.guestType")


def _is(*values: str) -> str:
    """A decision-table input entry matching any of the given strings: ``"a","b"``."""
    return ",".join(f'"{v}"' for v in values)


_TOP_TIERS: Final = _is("gold", "platinum")

_Input = tuple[str, str]  # (label, expression)
_Rule = tuple[Sequence[str], Sequence[str]]  # (input entries, offer keys)


def _programmable(name: str, output: str, source: str, output_type: str = "String") -> Json:
    return {
        "name": name,
        "type": "programmable",
        "outputReference": output,
        "outputType": output_type,
        "source": source,
    }


def _tier_node() -> Json:
    return _programmable("Guest Tier", "tier", _JS_TIER)


def _table(name: str, inputs: Sequence[_Input], outputs: Sequence[str], rules: Sequence[_Rule]) -> Json:
    """A FIRST-hit decision table whose outputs are offers; rules give offer keys, stored as offer refs."""
    return {
        "name": name,
        "type": "decisionTable",
        "hitPolicy": "FIRST",
        "inputs": [{"label": label, "expression": expression} for label, expression in inputs],
        "outputs": [{"name": output, "typeRef": "com.boxever.offer"} for output in outputs],
        "rules": [
            {"inputEntries": list(entries), "outputEntries": [f'"{_ref("offer", key)}"' for key in offers]}
            for entries, offers in rules
        ],
    }


def _model(key: str, name: str, description: str, *nodes: Json) -> Json:
    """A decision model; nodes are listed upstream first and get stable ids."""
    return {
        "ref": _ref("decisionModel", key),
        "name": name,
        "description": description,
        "nodes": [{"id": _ref("node", f"{key}/{node['name']}"), **node} for node in nodes],
    }


def _static_model(key: str, name: str, description: str, offers: Sequence[str]) -> Json:
    """A model that always returns the same offers (one rule that matches every guest)."""
    outputs = ["offer"] if len(offers) == 1 else [f"offer{i}" for i in range(1, len(offers) + 1)]
    return _model(key, name, description, _table("Offers", [_GUEST_TYPE_IN], outputs, [([_ANY], offers)]))


def _decision_models() -> list[Json]:
    countries = [m.country for m in _MARKETS]
    reco = ("offer1", "offer2", "offer3")
    bestsellers = ("bestseller_trail_runner", "bestseller_down_jacket", "bestseller_merino_layer")
    gold_picks = ("gold_summit_boot", "gold_expedition_parka")
    return [
        _model(
            "hero_campaign",
            "Hero Banner – Campaign Model",
            "Picks the campaign's hero; gold and platinum members get early access to spring_trail.",
            _tier_node(),
            _programmable("Campaign", "campaign", _JS_CAMPAIGN),
            _table(
                "Hero Offer",
                [_TIER_IN, _CAMPAIGN_IN],
                ["offer"],
                [
                    ([_TOP_TIERS, _is("spring_trail")], ["hero_spring_trail_vip"]),
                    ([_ANY, _is("spring_trail")], ["hero_spring_trail"]),
                    ([_ANY, _is("run_club")], ["hero_run_club"]),
                    ([_ANY, _is("city_commuter")], ["hero_city_commuter"]),
                    ([_TOP_TIERS, _ANY], ["hero_vip"]),
                    (['not("none")', _ANY], ["hero_members"]),
                    ([_ANY, _ANY], ["hero_welcome"]),
                ],
            ),
        ),
        _model(
            "hero_default",
            "Hero Banner Model",
            "Picks the home page hero by loyalty tier and country.",
            _tier_node(),
            _programmable("Country", "country", _JS_COUNTRY),
            _table(
                "Hero Offer",
                [_TIER_IN, _COUNTRY_IN],
                ["offer"],
                [
                    ([_TOP_TIERS, _ANY], ["hero_vip"]),
                    ([_is("none"), _ANY], ["hero_welcome"]),
                    *(([_ANY, _is(c)], [f"hero_{c.lower()}"]) for c in countries),
                    ([_ANY, _ANY], ["hero_members"]),
                ],
            ),
        ),
        _static_model("checkout_free_shipping", "Checkout – Free Shipping",
                      "Always offers free shipping.", ["free_shipping"]),
        _static_model("checkout_ten_percent", "Checkout – 10% Off",
                      "Always offers 10% off.", ["ten_percent_off"]),
        _static_model("reco_bestsellers", "Recommendations – Bestsellers",
                      "The three bestsellers, for everyone.", bestsellers),
        _model(
            "reco_tier",
            "Recommendations – By Tier",
            "Three products picked by loyalty tier.",
            _tier_node(),
            _table(
                "Recommended Products",
                [_TIER_IN],
                reco,
                [
                    ([_TOP_TIERS], [*gold_picks, "double_points"]),
                    ([_is("bronze", "silver")],
                     ["member_daypack", "bundle_boots_socks", "bestseller_trail_runner"]),
                    ([_ANY], ["bestseller_trail_runner", "bestseller_down_jacket", "member_daypack"]),
                ],
            ),
        ),
        _model(
            "reco_tier_country",
            "Recommendations – By Tier and Country",
            "Three products picked by loyalty tier and country: the country's pick comes first.",
            _tier_node(),
            _programmable("Country", "country", _JS_COUNTRY),
            _table(
                "Recommended Products",
                [_TIER_IN, _COUNTRY_IN],
                reco,
                [
                    *(([_TOP_TIERS, _is(c)], [f"pick_{c.lower()}", *gold_picks]) for c in countries),
                    ([_TOP_TIERS, _ANY], [*gold_picks, "double_points"]),
                    *(([_ANY, _is(c)], [f"pick_{c.lower()}", *bestsellers[:2]]) for c in countries),
                    ([_ANY, _ANY], bestsellers),
                ],
            ),
        ),
        _model(
            "welcome_message",
            "Welcome Message",
            "Greets known guests by first name; anonymous visitors get a plain welcome.",
            _programmable("Welcome Message", "welcomeMessage", _JS_GREETING),
        ),
        _static_model("summer_sale", "Summer Sale Hero",
                      "Always shows the summer sale hero.", ["hero_summer_sale"]),
        _static_model("winter_clearance_banner", "Winter Clearance – Banner",
                      "The clearance offer alone.", ["winter_clearance"]),
        _static_model("winter_clearance_bundle", "Winter Clearance – Banner + Bundle",
                      "The clearance offer with the boots bundle.",
                      ["winter_clearance", "bundle_boots_socks"]),
    ]  # fmt: skip


# ---- flows (reference §4.1) ----------------------------------------------------------------------------


def _render(template: str) -> Json:
    return {
        "implementation": "templateRenderTask",
        "input": {"inputType": "templateRenderTaskInput", "type": "application/json", "template": template},
    }


def _decide(*model_keys: str) -> Json:
    refs = [_ref("decisionModel", key) for key in model_keys]
    return {
        "implementation": "decisionModelTask",
        "input": {"inputType": "decisionModelTaskInput", "decisionModelRefs": refs},
    }


def _condition(friendly_id: str, expression: str) -> Json:
    rule = {"id": "scriptCondition", "friendlyId": friendly_id, "ruleData": {"expression": expression}}
    return {
        "implementation": "conditionsTask",
        "input": {"inputType": "conditionsTaskInput", "rules": [rule]},
    }


def _offers_template(variant: str, *, campaign: bool = False) -> str:
    """A template that prints the variant and the decision model's offers (and the campaign, if asked)."""
    offers = '  "decisionOffers": ${toJSON(offers)}'
    if campaign:
        offers += '<#if filter?? && filter.campaign??>,\n  "campaign": "${filter.campaign?json_string}"</#if>'
    return "\n".join(["{", f'  "variant": "{variant}",', offers, "}"])


_GREETING_TEMPLATE: Final = "\n".join(
    [
        '<#assign greeting = getDecisionModelResultNode("Welcome Message")>',
        '<#assign message = (greeting.outputs[0].welcomeMessage)!"Welcome!">',
        "{",
        '  "variant": "greeting",',
        '  "message": "${message?json_string}"',
        "}",
    ]
)


def _variant(
    flow: str,
    key: str,
    name: str,
    tasks: list[Json],
    *,
    control: bool = True,
    lift: float = 1.0,
    aov: float = 70.0,
) -> Json:
    """A variant; ``sandbox`` is the hidden true effect (conversion lift, average order value)."""
    return {
        "ref": _ref("variant", f"{flow}/{key}"),
        "name": name,
        "isControl": control,
        "tasks": tasks,
        "sandbox": {"conversionLift": lift, "averageOrderValue": aov},
    }


def _flow(
    friendly_id: str,
    name: str,
    description: str,
    *,
    subtype: str,
    status: str,
    variants: Sequence[tuple[Json, int]],
    goal: tuple[str, str],
    schedule: Json | None = None,
) -> Json:
    """A flow; ``variants`` pairs each variant with its split (percent); ``goal`` is (name, page regex)."""
    return {
        "ref": _ref("flow", friendly_id),
        "name": name,
        "friendlyId": friendly_id,
        "type": "INTERACTIVE_API_FLOW",
        "subtype": subtype,
        "channels": list(_CHANNELS),
        "businessProcess": "interactive_v1",
        "status": status,
        "schedule": schedule or {"type": "simpleSchedule", "startDate": "2026-09-01T08:00:00.000Z"},
        "traffic": {
            "type": "simpleTraffic",
            "weightingAlgorithm": "USER_DEFINED",
            "allocation": 100,
            "splits": [{"ref": variant["ref"], "split": split} for variant, split in variants],
        },
        "variants": [variant for variant, _ in variants],
        "goals": {
            "primary": {
                "type": "pageViewGoal",
                "name": goal[0],
                "friendlyId": f"{friendly_id}_goal",
                "ref": _ref("goal", friendly_id),
                "description": f"{goal[0]}: a page view whose URL matches {goal[1]}",
                "goalCalculation": {
                    "type": "binary",
                    "calculation": "INCREASE",
                    "target": "conversionPerSession",
                    "result": 50,
                },
                "pageParameters": [{"matchCondition": "Regex", "parameterString": goal[1]}],
            }
        },
        "sampleSizeConfig": {"baseValue": 0.05, "minimumDetectableDifference": 0.2, "confidenceLevel": 0.95},
        "description": description,
    }


_PURCHASE: Final = ("Purchase", ".+/checkout/confirmation")


def _flows() -> list[Json]:
    hero_c, hero_d = "hero_banner_campaign", "hero_banner_default"
    checkout, reco = "checkout_ab_test", "recommendations_3way"
    return [
        _flow(
            hero_c, "Hero banner – campaign visitors",
            "Visitors who arrive from a campaign link see that campaign's hero banner; gold and platinum "
            "members get early access.",
            subtype="EXPERIENCE", status="PRODUCTION", goal=_PURCHASE,
            variants=[(_variant(hero_c, "campaign", "Campaign hero", [
                _condition("utm_campaign_present", _JS_HAS_CAMPAIGN),
                _decide("hero_campaign"),
                _render(_offers_template("campaign", campaign=True)),
            ]), 100)],
        ),
        _flow(
            hero_d, "Hero banner – everyone else",
            "Everyone without a campaign sees a hero banner chosen by loyalty tier and country.",
            subtype="EXPERIENCE", status="PRODUCTION", goal=_PURCHASE,
            variants=[(_variant(hero_d, "default", "Default hero", [
                _decide("hero_default"), _render(_offers_template("default")),
            ]), 100)],
        ),
        _flow(
            checkout, "Checkout incentive A/B test",
            "Half of shoppers are offered free shipping at checkout, the other half 10% off: which one "
            "turns more baskets into orders?",
            subtype="EXPERIMENT", status="PRODUCTION", goal=_PURCHASE,
            variants=[
                (_variant(checkout, "a", "A – Free shipping", [
                    _decide("checkout_free_shipping"), _render(_offers_template("A")),
                ], aov=72.0), 50),
                (_variant(checkout, "b", "B – 10% off", [
                    _decide("checkout_ten_percent"), _render(_offers_template("B")),
                ], control=False, lift=1.25, aov=65.0), 50),
            ],
        ),
        _flow(
            reco, "Homepage recommendations – three-way test",
            "Bestsellers for everyone, against picks by loyalty tier, against picks by tier and country.",
            subtype="EXPERIMENT", status="LIVE", goal=("Product page view", ".+/p/LO-[A-Z0-9-]+"),
            variants=[
                (_variant(reco, "bestsellers", "bestsellers", [
                    _decide("reco_bestsellers"), _render(_offers_template("bestsellers")),
                ], aov=85.0), 34),
                (_variant(reco, "tier", "tier", [
                    _decide("reco_tier"), _render(_offers_template("tier")),
                ], control=False, lift=1.10, aov=88.0), 33),
                (_variant(reco, "tier_country", "tier_country", [
                    _decide("reco_tier_country"), _render(_offers_template("tier_country")),
                ], control=False, lift=1.20, aov=90.0), 33),
            ],
        ),
        _flow(
            "guest_greeting", "Personal greeting",
            "Greets known customers by first name on the home page; anonymous visitors see a plain welcome.",
            subtype="EXPERIENCE", status="PRODUCTION", goal=_PURCHASE,
            variants=[(_variant("guest_greeting", "greeting", "Welcome message", [
                _decide("welcome_message"), _render(_GREETING_TEMPLATE),
            ]), 100)],
        ),
        _flow(
            "summer_sale", "Summer sale hero",
            "Next summer's sale banner for everyone; still a draft, so it does not run yet.",
            subtype="EXPERIENCE", status="DRAFT", goal=_PURCHASE,
            schedule={"type": "simpleSchedule", "startDate": "2027-06-15T06:00:00.000Z",
                      "endDate": "2027-07-15T22:00:00.000Z"},
            variants=[(_variant("summer_sale", "sale", "Summer sale hero", [
                _decide("summer_sale"), _render(_offers_template("summer_sale")),
            ]), 100)],
        ),
        _flow(
            "winter_clearance", "Winter clearance test",
            "Clearance banner alone, against the banner with a boots bundle; paused until the winter "
            "stock arrives.",
            subtype="EXPERIMENT", status="PAUSED", goal=_PURCHASE,
            schedule={"type": "simpleSchedule", "startDate": "2026-01-05T06:00:00.000Z"},
            variants=[
                (_variant("winter_clearance", "a", "A – Clearance banner", [
                    _decide("winter_clearance_banner"), _render(_offers_template("A")),
                ], aov=60.0), 50),
                (_variant("winter_clearance", "b", "B – Clearance + bundle", [
                    _decide("winter_clearance_bundle"), _render(_offers_template("B")),
                ], control=False, lift=1.05, aov=95.0), 50),
            ],
        ),
    ]  # fmt: skip


# ---- guests (reference §6.3) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Product:
    id: str
    name: str
    price: float  # EUR
    category: str


_CATALOG: Final = tuple(
    _Product(*row)
    for row in (
        ("LO-H100", "Summit GTX Boot", 239.95, "hiking"),
        ("LO-H110", "Trailhead Hiking Boot", 159.95, "hiking"),
        ("LO-H120", "Merino Hiking Socks (2 pack)", 24.95, "hiking"),
        ("LO-H130", "Alpine Trekking Poles", 79.95, "hiking"),
        ("LO-H140", "Daypack 20L", 89.95, "hiking"),
        ("LO-T500", "Trail Camp Tent 2P", 299.95, "hiking"),
        ("LO-R200", "Trail Runner 2", 129.95, "running"),
        ("LO-R210", "Road Racer Shoe", 119.95, "running"),
        ("LO-R220", "Running Tights", 49.95, "running"),
        ("LO-R230", "Merino Base Layer", 59.95, "running"),
        ("LO-R240", "Running Vest 5L", 64.95, "running"),
        ("LO-C300", "Packable Down Jacket", 179.95, "city"),
        ("LO-C310", "Stormproof Shell", 169.95, "city"),
        ("LO-C320", "City Commuter Backpack", 99.95, "city"),
        ("LO-C330", "Organic Cotton Hoodie", 74.95, "city"),
        ("LO-C350", "Expedition Parka", 349.95, "city"),
        ("LO-K400", "Kids Rain Jacket", 44.95, "kids"),
        ("LO-K410", "Kids Hiking Shoe", 59.95, "kids"),
        ("LO-K420", "Kids Fleece", 34.95, "kids"),
        ("LO-K430", "Kids Backpack 10L", 29.95, "kids"),
    )
)
_CATEGORIES: Final = ("hiking", "running", "city", "kids")
_BY_CATEGORY: Final = {c: tuple(p for p in _CATALOG if p.category == c) for c in _CATEGORIES}
_ORDER_COUNTS: Final = {
    "none": (0, 2),
    "bronze": (1, 4),
    "silver": (2, 7),
    "gold": (4, 12),
    "platinum": (8, 20),
}
_TIER_BONUS: Final = {"none": 0, "bronze": 50, "silver": 250, "gold": 1000, "platinum": 3000}
_TIER_PROPENSITY: Final = {"none": 0.03, "bronze": 0.05, "silver": 0.07, "gold": 0.11, "platinum": 0.15}


@dataclass(frozen=True)
class _Profile:
    """Who a guest is; ``_guest`` adds history (timestamps, orders) and the hidden propensity."""

    ref: str
    browser_ids: tuple[str, ...]
    market: _Market
    customer: bool
    first_name: str | None
    last_name: str | None
    gender: str | None
    language: str
    city: str
    tier: str
    device: str
    newsletter: bool
    category: str
    n_orders: int
    email: str | None = None
    loyalty_id: str | None = None


def _orders(rng: random.Random, p: _Profile, start: int, end: int) -> list[Json]:
    market, orders = p.market, []
    for ordered_at in sorted(rng.randint(start, end) for _ in range(p.n_orders)):
        items: list[Json] = []
        for _ in range(rng.choices((1, 2, 3), (60, 30, 10))[0]):
            product = rng.choice(_BY_CATEGORY[p.category] if rng.random() < 0.6 else _CATALOG)
            price = _local_price(product.price, market)
            items.append(
                {"type": "PRODUCT", "productId": product.id, "name": product.name, "price": price,
                 "quantity": 1, "currencyCode": market.currency}
            )  # fmt: skip
        orders.append(
            {
                "ref": _rng_uuid(rng),
                "orderedAt": iso_ms(ordered_at),
                "status": "PURCHASED",
                "currencyCode": market.currency,
                "price": round(sum(item["price"] for item in items), 2),
                "pointOfSale": market.pos,
                "channel": "WEB",
                "orderItems": items,
            }
        )
    return orders


def _sessions(p: _Profile, first_seen: int, last_seen: int) -> list[Json]:
    """1-2 closed WEB sessions of page views (reference §6.3 shape), so scripts written for real tenants
    find ``guest.sessions[i].sessionType/pointOfSale/events`` (#11). A random stream of its own per guest,
    so the guests' other fields stay what they were."""
    rng = random.Random(f"sessions:{p.ref}")
    market, sessions = p.market, []
    for n in range(rng.randint(1, 2)):
        started = rng.randint(first_seen, max(first_seen, last_seen))
        ref = _rng_uuid(rng)
        browser = p.browser_ids[n % len(p.browser_ids)] if p.browser_ids else None
        pages = ["home", *(f"/{market.country.lower()}/p/{rng.choice(_CATALOG).id}"
                           for _ in range(rng.randint(0, 2)))]  # fmt: skip
        events = [
            {"ref": _rng_uuid(rng), "type": "VIEW", "status": "PROCESSED", "channel": "WEB",
             "pointOfSale": market.pos, "browserRef": browser, "sessionRef": ref,
             "createdAt": iso_ms(started + i * 45_000),
             "arbitraryData": {"page": page, "language": market.language, "currency": market.currency,
                               "_bx_version": "1.2"}}
            for i, page in enumerate(pages)
        ]  # fmt: skip
        ended = started + len(pages) * 45_000
        sessions.append(
            {"ref": ref, "guestRef": p.ref, "browserRef": browser, "status": "CLOSED", "sessionType": "WEB",
             "channel": "WEB", "pointOfSale": market.pos, "startedAt": iso_ms(started), "endedAt": iso_ms(ended),
             "duration": ended - started, "events": events,
             "dataExtensions": [{"name": "SessionStatistics", "key": "default",
                                 "values": {"views": len(pages), "adds": 0, "searches": 0, "checkouts": 0,
                                            "payments": 0, "confirms": 0, "selects": 0}}]}
        )  # fmt: skip
    return sorted(sessions, key=lambda s: str(s["startedAt"]))


def _guest(rng: random.Random, p: _Profile) -> Json:
    """A guest context (reference §6.3 subset) with its history drawn from ``rng``."""
    days = rng.uniform(30, 900) if p.customer else rng.uniform(0.5, 120)
    first_seen = _EPOCH_MS - int(days * _DAY_MS)
    last_seen = _EPOCH_MS - int(rng.random() ** 3 * (_EPOCH_MS - first_seen))  # most were here recently
    orders = _orders(rng, p, first_seen, last_seen)
    spent_eur = sum(order["price"] for order in orders) / p.market.fx
    points = 0 if p.tier == "none" else int(spent_eur) + _TIER_BONUS[p.tier]
    identifiers = [{"provider": "email", "id": p.email}] if p.email else []
    if p.loyalty_id:
        identifiers.append({"provider": "LOYALTY", "id": p.loyalty_id})
    score = (
        _TIER_PROPENSITY[p.tier]
        + 0.004 * len(orders)
        + (0.01 if p.newsletter else 0.0)
        + (0.01 if p.device == "desktop" else 0.0)
        + rng.uniform(-0.01, 0.01)
    )
    values = {
        "tier": p.tier,
        "device": p.device,
        "loyaltyPoints": points,
        "newsletter": p.newsletter,
        "preferredCategory": p.category,
    }
    return {
        "ref": p.ref,
        "guestType": "customer" if p.customer else "visitor",
        "email": p.email,
        "firstName": p.first_name,
        "lastName": p.last_name,
        "gender": p.gender,
        "language": p.language,
        "country": p.market.country,
        "city": p.city,
        "browserIds": list(p.browser_ids),
        "identifiers": identifiers,
        "firstSeen": first_seen,
        "lastSeen": last_seen,
        "dataExtensions": [{"name": "ext", "key": "default", "values": values}],
        "orders": orders,
        "sessions": _sessions(p, first_seen, last_seen),
        "sandbox": {"propensity": round(min(0.25, max(0.02, score)), 4)},
    }


_GERMAN: Final = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", " ": ""})


def _email(first: str, last: str, domain: str, taken: set[str]) -> str:
    """``first.last@domain`` in lower-case ASCII, numbered when taken."""
    local = unicodedata.normalize("NFKD", f"{first}.{last}".lower().translate(_GERMAN))
    local = local.encode("ascii", "ignore").decode("ascii")
    email, n = f"{local}@{domain}", 2
    while email in taken:
        email, n = f"{local}{n}@{domain}", n + 1
    taken.add(email)
    return email


def _random_profile(rng: random.Random, emails: set[str], loyalty_ids: set[str]) -> _Profile:
    market = rng.choices(_MARKETS, weights=[m.weight for m in _MARKETS])[0]
    customer = rng.random() >= 0.40
    tier = rng.choices(_TIERS, weights=(15, 40, 32, 10, 3))[0] if customer else "none"
    gender = rng.choice(("female", "male"))
    first = rng.choice(market.female if gender == "female" else market.male)
    last = rng.choice(market.surnames)
    low, high = _ORDER_COUNTS[tier]
    loyalty_id = None
    if tier != "none" and rng.random() < 0.6:
        while loyalty_id is None or loyalty_id in loyalty_ids:
            loyalty_id = f"LY-{market.country}-{rng.randrange(100_000, 1_000_000)}"
        loyalty_ids.add(loyalty_id)
    return _Profile(
        ref=_rng_uuid(rng),
        browser_ids=tuple(_rng_uuid(rng) for _ in range(1 + (rng.random() < (0.35 if customer else 0.1)))),
        market=market,
        customer=customer,
        first_name=first if customer else None,
        last_name=last if customer else None,
        gender=gender if customer else None,
        language="EN" if market.language != "EN" and rng.random() < 0.08 else market.language,
        city=rng.choice(market.cities),
        tier=tier,
        device=rng.choices(("mobile", "desktop", "tablet"), (55, 35, 10))[0],
        newsletter=rng.random() < (0.55 if customer else 0.05),
        category=rng.choices(_CATEGORIES, (35, 25, 28, 12))[0],
        n_orders=rng.randint(low, high) if customer else 0,
        email=_email(first, last, market.domain, emails) if customer else None,
        loyalty_id=loyalty_id,
    )


# ---- personas ------------------------------------------------------------------------------------------


def _persona(key: str, country: str, **fields: Any) -> _Profile:
    market = _MARKET_BY_COUNTRY[country]
    defaults: Json = {"first_name": None, "last_name": None, "gender": None, "language": market.language}
    browser_ids = (_ref("browser", key),)
    return _Profile(ref=_ref("guest", key), browser_ids=browser_ids, market=market, **defaults | fields)


_PERSONA_PROFILES: Final = (
    _persona("lena_vogel", "DE", customer=True, first_name="Lena", last_name="Vogel", gender="female",
             city="München", tier="gold", device="mobile", newsletter=True, category="hiking", n_orders=9,
             email="lena.vogel@example.de", loyalty_id="LY-DE-104233"),
    _persona("uk_paid_visitor", "GB", customer=False, city="Manchester", tier="none", device="desktop",
             newsletter=False, category="hiking", n_orders=0),
    _persona("grace_miller", "US", customer=True, first_name="Grace", last_name="Miller", gender="female",
             city="Seattle", tier="platinum", device="desktop", newsletter=True, category="running",
             n_orders=16, email="grace.miller@example.com", loyalty_id="LY-US-300871"),
    _persona("camille_laurent", "FR", customer=True, first_name="Camille", last_name="Laurent",
             gender="female", city="Lyon", tier="silver", device="tablet", newsletter=False, category="city",
             n_orders=4, email="camille.laurent@example.fr", loyalty_id="LY-FR-204518"),
    _persona("us_new_visitor", "US", customer=False, city="Denver", tier="none", device="mobile",
             newsletter=False, category="running", n_orders=0),
)  # fmt: skip

#: The guests the app's persona picker offers and the tests use: the callFlows request fields of each
#: (one identity: ``browserId``, ``email`` or ``identifiers``; point of sale, channel, language, currency,
#: params), plus a name and a description. Their guests come first in ``DemoTenant.guests``, are the same
#: for every seed, and are found by exactly the identity given here.
PERSONAS: Final[list[Json]] = [
    {
        "name": "Lena Vogel",
        "description": "Gold-tier loyalty member in Munich who shops on her phone; 9 orders, loves hiking. "
        "No campaign, so hero_banner* shows her the VIP lounge.",
        "browserId": _ref("browser", "lena_vogel"),
        "pointOfSale": "lumen/de",
        "channel": "MOBILE_WEB",
        "language": "DE",
        "currencyCode": "EUR",
        "params": {},
    },
    {
        "name": "First-time UK visitor (paid search)",
        "description": "Anonymous first visit from a Google Ads click on the spring_trail campaign "
        "(Cloud SDK style nested utm params).",
        "browserId": _ref("browser", "uk_paid_visitor"),
        "pointOfSale": "lumen/uk",
        "channel": "WEB",
        "language": "EN",
        "currencyCode": "GBP",
        "params": {"utm": {"source": "google", "medium": "cpc", "campaign": "spring_trail"}},
    },
    {
        "name": "Grace Miller",
        "description": "Platinum customer in Seattle, identified by email from the newsletter; 16 orders. "
        "Old Engage SDK style flattened params (utm_campaign=run_club).",
        "email": "grace.miller@example.com",
        "pointOfSale": "lumen/us",
        "channel": "WEB",
        "language": "EN",
        "currencyCode": "USD",
        "params": {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "run_club"},
    },
    {
        "name": "Camille Laurent",
        "description": "Silver member in Lyon, identified by her loyalty card number in the app; 4 orders.",
        "identifiers": {"provider": "LOYALTY", "id": "LY-FR-204518"},  # callFlows takes one object
        "pointOfSale": "lumen/fr",
        "channel": "MOBILE_APP",
        "language": "FR",
        "currencyCode": "EUR",
        "params": {},
    },
    {
        "name": "New US visitor",
        "description": "Anonymous visitor in Denver on a phone, no campaign: the welcome hero and a plain "
        "'Welcome!'.",
        "browserId": _ref("browser", "us_new_visitor"),
        "pointOfSale": "lumen/us",
        "channel": "WEB",
        "language": "EN",
        "currencyCode": "USD",
        "params": {},
    },
]


# ---- the tenant ----------------------------------------------------------------------------------------


def _guests(seed: int, n_guests: int) -> list[Json]:
    guests = [_guest(random.Random(f"persona:{p.ref}"), p) for p in _PERSONA_PROFILES]
    emails = {p.email for p in _PERSONA_PROFILES if p.email}
    loyalty_ids = {p.loyalty_id for p in _PERSONA_PROFILES if p.loyalty_id}
    rng = random.Random(seed)
    for _ in range(n_guests - len(guests)):
        guests.append(_guest(rng, _random_profile(rng, emails, loyalty_ids)))
    return guests


def demo_tenant(*, seed: int = 7, n_guests: int = 1200) -> DemoTenant:
    """The demo tenant, built fresh on every call (callers may mutate it).

    Definitions (points of sale, offers, decision models, flows) never depend on ``seed``; guests do, except
    the ``PERSONAS``, which come first. ``n_guests`` counts the personas, which are always included. A call
    unpickles a copy of the first build for its arguments: ~15× cheaper than generating 1,200 guests again,
    and every sandbox start and reset makes one.
    """
    if n_guests < 0:
        raise ValueError(f"n_guests must be 0 or more, not {n_guests}")
    demo: DemoTenant = pickle.loads(_demo_pickle(seed, n_guests))
    return demo


@functools.lru_cache(maxsize=4)
def _demo_pickle(seed: int, n_guests: int) -> bytes:
    built = DemoTenant(
        client_key=DEMO_CLIENT_KEY,
        points_of_sale=_points_of_sale(),
        offers=[*_hero_offers(), *_incentive_offers(), *_product_offers()],
        decision_models=_decision_models(),
        flows=_flows(),
        guests=_guests(seed, n_guests),
    )
    return pickle.dumps(built, protocol=pickle.HIGHEST_PROTOCOL)
