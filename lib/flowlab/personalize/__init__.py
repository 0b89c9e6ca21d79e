"""Sitecore Personalize ``POST /v2/callFlows``: request model, clients, offers, variants, params, exports.

Every wire fact comes from ``/work/shared/reference/`` (cited as §N in docstrings).
"""

from __future__ import annotations

from flowlab.personalize.client import AsyncFlowClient, FlowClient
from flowlab.personalize.models import CHANNELS, CallFlowRequest, Identifier
from flowlab.personalize.offers import Offer, find_offers
from flowlab.personalize.variants import VariantGuess, detect_variant

__all__ = [
    "CHANNELS",
    "AsyncFlowClient",
    "CallFlowRequest",
    "FlowClient",
    "Identifier",
    "Offer",
    "VariantGuess",
    "detect_variant",
    "find_offers",
]
