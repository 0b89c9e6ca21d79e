"""The offline Edge Network tenant (reference adobe-edge-personalization.md): profiles, audiences, PQL, clock.

Domain modules only, no HTTP: the routes call :class:`~flowlab.sandbox.edge.tenant.EdgeTenant`. This package
is imported inside worker processes too (audience evaluation runs there), so it imports nothing heavy.
"""

from __future__ import annotations

__all__: list[str] = []
