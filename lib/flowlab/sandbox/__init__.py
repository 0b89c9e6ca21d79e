"""The sandbox tenant: a real HTTP server on loopback that speaks callFlows, with demo data.

>>> from flowlab.sandbox import serve                                        # doctest: +SKIP
>>> sandbox = serve()            # a fresh demo tenant on a free 127.0.0.1 port
>>> sandbox.url, sandbox.client_key
"""

from __future__ import annotations

from flowlab.sandbox.app import SandboxApp, create_app
from flowlab.sandbox.personalize.demo import DEMO_CLIENT_KEY, PERSONAS, demo_tenant
from flowlab.sandbox.server import SandboxServer, serve, serve_forever

__all__ = [
    "DEMO_CLIENT_KEY",
    "PERSONAS",
    "SandboxApp",
    "SandboxServer",
    "create_app",
    "demo_tenant",
    "serve",
    "serve_forever",
]
