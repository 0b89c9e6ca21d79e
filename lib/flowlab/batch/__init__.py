"""Batches: the runner (``runner``, which takes a provider), the run store (``runs``), guest samples
(``samples``) and the run log (``runlog``).

Nothing is imported here, so that reading a run store (``flowlab.batch.runs``, which the sandbox's replay
does) never pulls in the runner or an HTTP client.
"""

from __future__ import annotations

__all__: list[str] = []
