"""The Edge demo org: Lumen Outfitters again (``sandbox/demo.py``), as AEP sees the same shoppers.

Deterministic and offline: ids are uuid5 of fixed names; profiles are the Sitecore demo's guests (the same
seed, the same personas first), keyed by the identities AEP would know them by (reference §8.2):
customers by ``Email`` (primary), ``CRMID`` (their loyalty number) and an ``ECID`` per browser; anonymous
visitors by ``ECID`` only. Their orders become ``commerce.purchases`` events and their last visit a page
view, timestamped before the simulated clock's start (2026-10-01 09:00 UTC).

What it shows, by timing case (reference §5.4):

* **same-page**: "Checking out today" (edge, ``commerce.checkouts`` today) and "VIP checking out"
  (edge, segment of segments) appear in the response to the checkout itself;
* **next-page / next-session**: "Purchased in the last 7 days" (streaming, ``commerce.purchases``)
  appears 10 simulated minutes after the purchase;
* **next-session**: "Recent buyers (30 days)" (batch) after the next daily run (00:00 UTC) + 1 h 5 min,
  and the profile-attribute audiences (tier, points, newsletter, category) are realized from the run
  before the clock starts.
"""

from __future__ import annotations

import functools
import pickle
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from flowlab.sandbox.edge.clock import iso_ms
from flowlab.sandbox.edge.profiles import EdgeProfile
from flowlab.sandbox.personalize.demo import demo_tenant

__all__ = [
    "AUDIENCES",
    "DATASTREAMS",
    "DESTINATIONS",
    "ORG_ID",
    "EdgeDemo",
    "ecid",
    "edge_demo",
]

Json = dict[str, Any]

_NAMESPACE: Final = uuid.UUID("8d3f6b2a-1c4e-4f7a-9b5d-3e2a1f0c6d84")


def _id(kind: str, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{key}"))


#: The org, in IMS form: 24 upper-case hex digits and ``@AdobeOrg`` (reference §2.2).
ORG_ID: Final = uuid.uuid5(_NAMESPACE, "org:lumen").hex[:24].upper() + "@AdobeOrg"

DESTINATION_WEB: Final = _id("destination", "web")
DESTINATION_ATTRIBUTES: Final = _id("destination", "attributes")

#: ``{destinationId, alias, name, withAttributes, mappings: {target name: source XDM path}}`` (§1.2, §1.3).
DESTINATIONS: Final[list[Json]] = [
    {
        "destinationId": DESTINATION_WEB,
        "alias": "lumen-web-segments",
        "name": "Lumen web personalization (Custom Personalization)",
        "withAttributes": False,
        "mappings": {},
    },
    {
        "destinationId": DESTINATION_ATTRIBUTES,
        "alias": "lumen-cms-attributes",
        "name": "Lumen CMS (Custom Personalization With Attributes)",
        "withAttributes": True,
        "mappings": {
            "firstName": "person.name.firstName",
            "countryCode": "homeAddress.countryCode",
            "loyaltyTier": "loyalty.tier",
            "loyaltyPoints": "loyalty.points",
            "preferredCategory": "_lumen.preferredCategory",
        },
    },
]

#: ``{id, name, enabled, edgeSegmentation, personalizationDestinations, destinationIds}`` (§8.1).
DATASTREAMS: Final[list[Json]] = [
    {
        "id": _id("datastream", "web-edge"),
        "name": "Lumen web (edge segmentation, personalization destinations)",
        "enabled": True,
        "edgeSegmentation": True,
        "personalizationDestinations": True,
        "destinationIds": [DESTINATION_WEB, DESTINATION_ATTRIBUTES],
    },
    {
        "id": _id("datastream", "analytics"),
        "name": "Lumen analytics (data collection only)",
        "enabled": True,
        "edgeSegmentation": False,
        "personalizationDestinations": False,
        "destinationIds": [],
    },
    {
        "id": _id("datastream", "legacy"),
        "name": "Lumen legacy site (disabled)",
        "enabled": False,
        "edgeSegmentation": True,
        "personalizationDestinations": True,
        "destinationIds": [DESTINATION_WEB],
    },
]

_BOTH: Final = [DESTINATION_WEB, DESTINATION_ATTRIBUTES]
A_CHECKOUT: Final = _id("audience", "checkout-today")
A_HIKING_DE: Final = _id("audience", "hiking-de-today")
A_VIP_CHECKOUT: Final = _id("audience", "vip-checkout")
A_PURCHASED_7D: Final = _id("audience", "purchased-7d")
A_BIG_BASKET: Final = _id("audience", "big-basket-today")
A_RECENT_BUYERS: Final = _id("audience", "recent-buyers-30d")
A_GOLD_PLUS: Final = _id("audience", "gold-plus")
A_POINTS_1000: Final = _id("audience", "points-1000")
A_UK_NEWSLETTER: Final = _id("audience", "uk-newsletter")
A_HIKING_FANS: Final = _id("audience", "hiking-fans")


def _chain(what: str, when: str = "today") -> str:
    return f"CHAIN(xEvent, timestamp, [C0: WHAT({what}) WHEN({when})])"


#: The audience definitions, dependencies first (``POST /sandbox/edge/audiences`` shape).
AUDIENCES: Final[list[Json]] = [
    {"id": A_GOLD_PLUS, "name": "Gold and platinum members", "evaluation": "batch", "destinations": _BOTH,
     "description": "Loyalty tier gold or platinum (a profile attribute: the daily batch run).",
     "rule": 'loyalty.tier.equals("gold", false) or loyalty.tier.equals("platinum", false)'},
    {"id": A_POINTS_1000, "name": "1,000+ loyalty points", "evaluation": "batch", "destinations": _BOTH,
     "description": "Loyalty points of 1,000 or more.", "rule": "loyalty.points >= 1000"},
    {"id": A_UK_NEWSLETTER, "name": "UK newsletter subscribers", "evaluation": "batch",
     "destinations": [DESTINATION_WEB], "description": "Newsletter opt-in, home country GB.",
     "rule": '_lumen.newsletter = true and homeAddress.countryCode.equals("GB", false)'},
    {"id": A_HIKING_FANS, "name": "Hiking fans", "evaluation": "batch", "destinations": _BOTH,
     "description": "Preferred category hiking.", "rule": '_lumen.preferredCategory.equals("hiking")'},
    {"id": A_RECENT_BUYERS, "name": "Recent buyers (30 days)", "evaluation": "batch", "destinations": _BOTH,
     "description": "A purchase in the last 30 days, as the daily batch run sees it.",
     "rule": _chain('eventType.equals("commerce.purchases", false)', "< 30 days before now")},
    {"id": A_PURCHASED_7D, "name": "Purchased in the last 7 days", "evaluation": "streaming",
     "destinations": _BOTH, "description": "A commerce.purchases event in the last 7 days (streaming).",
     "rule": _chain('eventType.equals("commerce.purchases", false)', "< 7 days before now")},
    {"id": A_BIG_BASKET, "name": "Big basket today", "evaluation": "streaming", "destinations": _BOTH,
     "description": "A purchase over 200 today (streaming: not on the active-on-edge merge policy).",
     "rule": _chain('eventType.equals("commerce.purchases", false) and commerce.order.priceTotal > 200')},
    {"id": A_CHECKOUT, "name": "Checking out today", "evaluation": "edge", "destinations": _BOTH,
     "description": "A commerce.checkouts event today (reference §5.5's first example).",
     "rule": _chain('eventType.equals("commerce.checkouts", false)')},
    {"id": A_HIKING_DE, "name": "Browsing hiking today (DE)", "evaluation": "edge",
     "destinations": [DESTINATION_WEB], "description": "German shoppers viewing a hiking page today.",
     "rule": 'homeAddress.countryCode.equals("DE", false) and '
     + _chain('eventType.equals("web.webpagedetails.pageViews", false) and '
              'web.webPageDetails.URL.contains("/hiking")')},
    {"id": A_VIP_CHECKOUT, "name": "VIP checking out", "evaluation": "edge", "destinations": _BOTH,
     "description": "Segment of segments: gold or platinum, and checking out today.",
     "rule": f'inSegment("{A_GOLD_PLUS}") and inSegment("{A_CHECKOUT}")'},
]  # fmt: skip


def ecid(browser_id: str) -> str:
    """A 38-digit ECID for a browser (reference §8.2: ECIDs are 38-digit numeric strings)."""
    return str(uuid.UUID(browser_id).int % 10**38).zfill(38)


def _market_domain(country: str) -> str:
    return {"DE": "example.de", "GB": "example.co.uk", "FR": "example.fr"}.get(country, "example.com")


def _events(guest: Json) -> list[tuple[int, Json]]:
    events: list[tuple[int, Json]] = []
    for order in guest["orders"]:
        ts = int(datetime.fromisoformat(order["orderedAt"].replace("Z", "+00:00")).timestamp() * 1000)
        events.append((ts, {
            "eventType": "commerce.purchases",
            "timestamp": order["orderedAt"],
            "commerce": {"purchases": {"value": 1},
                         "order": {"purchaseID": order["ref"], "priceTotal": order["price"],
                                   "currencyCode": order["currencyCode"]}},
            "productListItems": [{"SKU": i["productId"], "name": i["name"], "priceTotal": i["price"],
                                  "quantity": i["quantity"]} for i in order["orderItems"]],
        }))  # fmt: skip
    last = int(guest["lastSeen"])
    category = guest["dataExtensions"][0]["values"]["preferredCategory"]
    url = f"https://www.{_market_domain(guest['country'])}/{category}"
    events.append((last, {
        "eventType": "web.webpagedetails.pageViews",
        "timestamp": iso_ms(last),
        "web": {"webPageDetails": {"URL": url, "name": f"category:{category}"}},
    }))  # fmt: skip
    events.sort(key=lambda e: e[0])
    return events


def _profile(guest: Json) -> EdgeProfile:
    values = guest["dataExtensions"][0]["values"]
    identities: list[tuple[str, str]] = []
    if guest.get("email"):
        identities.append(("Email", guest["email"]))
    for identifier in guest["identifiers"]:
        if identifier["provider"] == "LOYALTY":
            identities.append(("CRMID", identifier["id"]))
    identities.extend(("ECID", ecid(b)) for b in guest["browserIds"])
    attributes: Json = {}
    if guest.get("firstName"):
        attributes["person"] = {"name": {"firstName": guest["firstName"], "lastName": guest["lastName"]},
                                "gender": guest["gender"]}  # fmt: skip
    if guest.get("email"):
        attributes["personalEmail"] = {"address": guest["email"]}
    attributes["homeAddress"] = {"countryCode": guest["country"], "city": guest["city"]}
    attributes["preferredLanguage"] = guest["language"].lower()
    attributes["loyalty"] = {"tier": values["tier"], "points": values["loyaltyPoints"]}
    attributes["_lumen"] = {
        "guestType": guest["guestType"],
        "preferredCategory": values["preferredCategory"],
        "newsletter": values["newsletter"],
        "device": values["device"],
        "orders": len(guest["orders"]),
    }
    return EdgeProfile(identities=identities, attributes=attributes, events=_events(guest))


@dataclass(frozen=True)
class EdgeDemo:
    """What the Edge tenant loads on start and on reset."""

    org_id: str
    datastreams: list[Json]
    destinations: list[Json]
    audiences: list[Json]
    profiles: list[EdgeProfile]


def edge_demo(*, seed: int = 7, n_profiles: int = 1200) -> EdgeDemo:
    """The demo org, built fresh (profiles are mutable); guests are the Sitecore demo's for ``seed``.

    Like ``demo_tenant``, a copy of the first build for these arguments (unpickled: every start and reset
    makes one)."""
    demo: EdgeDemo = pickle.loads(_edge_pickle(seed, n_profiles))
    return demo


@functools.lru_cache(maxsize=4)
def _edge_pickle(seed: int, n_profiles: int) -> bytes:
    built = EdgeDemo(
        org_id=ORG_ID,
        datastreams=[dict(d) for d in DATASTREAMS],
        destinations=[dict(d) for d in DESTINATIONS],
        audiences=[dict(a) for a in AUDIENCES],
        profiles=[_profile(g) for g in demo_tenant(seed=seed, n_guests=n_profiles).guests],
    )
    return pickle.dumps(built, protocol=pickle.HIGHEST_PROTOCOL)
