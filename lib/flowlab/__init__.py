"""Flow Lab: preview, batch and analyse personalization decision API calls, with an offline sandbox.

The library never imports streamlit; the app, the CLI and notebooks all build on these names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from flowlab.config import REGIONS, Settings, load_settings
from flowlab.errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    FlowLabError,
    NotFoundError,
    RateLimitError,
    RequestValidationError,
    RunStoreError,
    SampleError,
    ServerError,
)

if TYPE_CHECKING:  # what static checkers see; at run time these load on first use (PEP 562)
    from flowlab.admin import SandboxAdmin
    from flowlab.edge.client import AsyncEdgeClient, EdgeClient
    from flowlab.edge.models import InteractRequest
    from flowlab.edge.response import EdgeResponse, parse_edge_response
    from flowlab.http import FlowResponse, RetryPolicy
    from flowlab.personalize.client import AsyncFlowClient, FlowClient
    from flowlab.personalize.models import CHANNELS, CallFlowRequest, Identifier
    from flowlab.personalize.offers import Offer, find_offers
    from flowlab.personalize.variants import VariantGuess, detect_variant
    from flowlab.workbench.explain import Explanation, explain_trace
    from flowlab.workbench.personas import Persona, PersonaStore
    from flowlab.workbench.preview import Preview, run_preview
    from flowlab.workbench.targets import Target, TargetStore

#: Public name -> module. Loaded on first access, so ``import flowlab.sandbox`` (or ``flowlab.errors``)
#: does not pull in httpx, the clients or pandas: the sandbox must never import a client (design.md).
_LAZY = {
    "AsyncEdgeClient": "flowlab.edge.client",
    "AsyncFlowClient": "flowlab.personalize.client",
    "CallFlowRequest": "flowlab.personalize.models",
    "CHANNELS": "flowlab.personalize.models",
    "detect_variant": "flowlab.personalize.variants",
    "EdgeClient": "flowlab.edge.client",
    "EdgeResponse": "flowlab.edge.response",
    "explain_trace": "flowlab.workbench.explain",
    "Explanation": "flowlab.workbench.explain",
    "find_offers": "flowlab.personalize.offers",
    "FlowClient": "flowlab.personalize.client",
    "FlowResponse": "flowlab.http",
    "Identifier": "flowlab.personalize.models",
    "InteractRequest": "flowlab.edge.models",
    "Offer": "flowlab.personalize.offers",
    "parse_edge_response": "flowlab.edge.response",
    "Persona": "flowlab.workbench.personas",
    "PersonaStore": "flowlab.workbench.personas",
    "Preview": "flowlab.workbench.preview",
    "RetryPolicy": "flowlab.http",
    "run_preview": "flowlab.workbench.preview",
    "SandboxAdmin": "flowlab.admin",
    "Target": "flowlab.workbench.targets",
    "TargetStore": "flowlab.workbench.targets",
    "VariantGuess": "flowlab.personalize.variants",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__",
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncEdgeClient",
    "AsyncFlowClient",
    "AuthenticationError",
    "BadRequestError",
    "CallFlowRequest",
    "CHANNELS",
    "ConfigError",
    "detect_variant",
    "EdgeClient",
    "EdgeResponse",
    "explain_trace",
    "Explanation",
    "find_offers",
    "FlowClient",
    "FlowLabError",
    "FlowResponse",
    "Identifier",
    "InteractRequest",
    "load_settings",
    "NotFoundError",
    "Offer",
    "parse_edge_response",
    "Persona",
    "PersonaStore",
    "Preview",
    "RateLimitError",
    "REGIONS",
    "RequestValidationError",
    "RetryPolicy",
    "run_preview",
    "RunStoreError",
    "SampleError",
    "SandboxAdmin",
    "ServerError",
    "Settings",
    "Target",
    "TargetStore",
    "VariantGuess",
]
