"""Flow Lab: preview, batch and analyse personalization decision API calls, with an offline sandbox.

The library never imports streamlit; the app, the CLI and notebooks all build on these names.
"""

from __future__ import annotations

__version__ = "0.1.0"

from flowlab.client import AsyncFlowClient, FlowClient, RetryPolicy, SandboxAdmin
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
from flowlab.explain import Explanation, explain_trace
from flowlab.models import CHANNELS, CallFlowRequest, FlowResponse, Identifier
from flowlab.offers import Offer, find_offers
from flowlab.personas import Persona, PersonaStore
from flowlab.preview import Preview, run_preview
from flowlab.targets import Target, TargetStore
from flowlab.variants import VariantGuess, detect_variant

__all__ = [
    "__version__",
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncFlowClient",
    "AuthenticationError",
    "BadRequestError",
    "CallFlowRequest",
    "CHANNELS",
    "ConfigError",
    "detect_variant",
    "explain_trace",
    "Explanation",
    "find_offers",
    "FlowClient",
    "FlowLabError",
    "FlowResponse",
    "Identifier",
    "load_settings",
    "NotFoundError",
    "Offer",
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
