"""What the app needs beyond the APIs: saved targets, personas, previews, the "why" of a trace, advice
and the sandbox catalog. Streamlit-free, so notebooks and the CLI can use the same helpers."""

from __future__ import annotations

__all__: list[str] = []
