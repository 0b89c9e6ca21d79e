"""The sandbox's Sitecore Personalize tenant: flows, decision models (tables and programmables), the
FreeMarker subset, QuickJS, the guest store, demo data and replay of recorded runs."""

from __future__ import annotations

__all__: list[str] = []
