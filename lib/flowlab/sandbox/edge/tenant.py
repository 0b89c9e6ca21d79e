"""The Edge tenant: what the interact and admin routes call (reference §10 "State model").

INTERFACE FIRST (#9): signatures are stable; bodies are being filled in. Until then ``lookup`` answers
from the demo's static memberships.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowlab.sandbox.edge.clock import SimClock

__all__ = ["Datastream", "Destination", "EdgeTenant"]

Json = dict[str, Any]


@dataclass(frozen=True)
class Datastream:
    """A datastream (reference §8.1): its AEP service flags decide edge segmentation and ``activation:pull``."""

    id: str
    name: str
    enabled: bool = True
    edge_segmentation: bool = False
    personalization_destinations: bool = False
    destination_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Destination:
    """A Custom Personalization destination (seed 002; reference §1.2, §1.3)."""

    destination_id: str
    alias: str
    name: str
    with_attributes: bool = False
    #: target attribute name -> source XDM profile path (reference §1.3 "map attributes"), at most 20
    mappings: dict[str, str] = field(default_factory=dict)

    @property
    def attributes(self) -> list[str]:
        """The mapped target names, as ``attributes`` keys come back in ``activation:pull`` (§3.3)."""
        return list(self.mappings)


@dataclass
class LookupJob:
    """One lookup's guest-code work, to run in the worker pool (``workers.py``) between begin and finish.

    ``await pool.run(job.task, job.args, keys=job.keys, provide=job.provide)``, then
    ``tenant.finish_lookup(job, result)``. ``args`` is plain data (picklable); ``keys`` name compiled rules.
    """

    task: str
    args: Json
    keys: list[str]
    provide: Callable[[Sequence[str]], Mapping[str, tuple[str, Any]]]
    datastream: Datastream
    authenticated: bool
    profile_key: tuple[str, str]


class EdgeTenant:
    """The offline Edge Network org: datastreams, destinations, profiles, audiences and the simulated clock."""

    org_id: str
    clock: SimClock

    def __init__(self) -> None:
        raise NotImplementedError

    def datastream(self, datastream_id: str) -> Datastream | None:
        raise NotImplementedError

    def destinations(self) -> list[Destination]:
        raise NotImplementedError

    def lookup(
        self,
        datastream: Datastream,
        identity: tuple[str, str],
        event: Json | None,
        *,
        authenticated: bool,
    ) -> list[Json] | None:
        raise NotImplementedError

    def begin_lookup(
        self,
        datastream: Datastream,
        identity: tuple[str, str],
        event: Json | None,
        *,
        authenticated: bool,
    ) -> LookupJob | None:
        """:meth:`lookup`'s first half: records the event; None when the identity is unknown to the edge."""
        raise NotImplementedError

    def finish_lookup(self, job: LookupJob, result: Any) -> list[Json]:
        """:meth:`lookup`'s second half: applies the worker's result, returns the ``activation:pull`` payload."""
        raise NotImplementedError

    def profiles(self, *, limit: int = 50, offset: int = 0, identity: tuple[str, str] | None = None) -> Json:
        raise NotImplementedError

    def audiences(self) -> list[Json]:
        raise NotImplementedError

    def load_audience(self, definition: Json) -> Json:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError
