"""AEP Edge Network personalization: ``POST /ee/v2/interact`` for Custom Personalization destinations.

Request model (``InteractRequest``), clients (``EdgeClient``, ``AsyncEdgeClient``), IMS auth
(``EdgeCredentials``), response parsing (``parse_edge_response`` → ``EdgeResponse``) and exports. Every wire
fact comes from ``/work/shared/reference/adobe-edge-personalization.md`` (cited as §N in docstrings).
"""

from __future__ import annotations

from flowlab.edge.auth import AccessToken, EdgeCredentials
from flowlab.edge.client import AsyncEdgeClient, EdgeClient, interact_url
from flowlab.edge.models import MAX_BODY_BYTES, IdentityItem, InteractRequest
from flowlab.edge.response import Destination, EdgeProblem, EdgeResponse, parse_edge_response

__all__ = [
    "MAX_BODY_BYTES",
    "AccessToken",
    "AsyncEdgeClient",
    "Destination",
    "EdgeClient",
    "EdgeCredentials",
    "EdgeProblem",
    "EdgeResponse",
    "IdentityItem",
    "InteractRequest",
    "interact_url",
    "parse_edge_response",
]
