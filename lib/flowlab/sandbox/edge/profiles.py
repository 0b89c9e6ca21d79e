"""Edge profiles keyed by identity (reference §10 "State model": hub profiles, identities linked into one).

A profile has identities (``(namespace, id)``, exactly as sent: the match is case-sensitive, §2.3), XDM-ish
attributes, an event history and audience memberships ``{id: (status, since)}`` with the XDM statuses
``realized`` / ``exited`` (§5.3), plus the transitions still travelling hub → edge. Sizes are capped so a
stream of requests cannot grow a profile without bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["MAX_EVENTS", "MAX_EVENT_BYTES", "EdgeProfile", "ProfileStore", "trim_event"]

Json = dict[str, Any]
Identity = tuple[str, str]

#: Events kept per profile (the newest); an edge rule looks back 24 h, a hub rule at most 400 days.
MAX_EVENTS: Final = 100
#: An event's XDM is kept whole up to this size; larger ones keep only the fields rules usually read.
MAX_EVENT_BYTES: Final = 4096
_KEPT_FIELDS: Final = ("eventType", "timestamp", "web", "commerce", "productListItems", "channel")


def trim_event(xdm: Mapping[str, Any]) -> Json:
    """The XDM an event keeps in history: without ``identityMap``, and cut down when very large."""
    kept = {k: v for k, v in xdm.items() if k != "identityMap"}
    try:
        size = len(json.dumps(kept, separators=(",", ":"), default=str))
    except (TypeError, ValueError):
        size = MAX_EVENT_BYTES + 1
    if size <= MAX_EVENT_BYTES:
        return kept
    small: Json = {k: kept[k] for k in _KEPT_FIELDS if k in kept}
    if len(json.dumps(small, separators=(",", ":"), default=str)) <= MAX_EVENT_BYTES:
        return small
    return {k: kept[k] for k in ("eventType", "timestamp") if k in kept and isinstance(kept[k], str)}


@dataclass
class EdgeProfile:
    """One profile; ``identities[0]`` is the primary one it is listed under."""

    identities: list[Identity]
    attributes: Json
    events: list[tuple[int, Json]] = field(default_factory=list)
    memberships: dict[str, tuple[str, int]] = field(default_factory=dict)
    pending: list[tuple[int, str, str]] = field(default_factory=list)
    runs_done: int = 0
    version: int = 0

    @property
    def identity(self) -> Identity:
        return self.identities[0]

    def record(self, ts_ms: int, xdm: Mapping[str, Any]) -> None:
        """Add an event to the history (kept oldest first, the newest ``MAX_EVENTS``)."""
        self.events.append((ts_ms, trim_event(xdm)))
        if len(self.events) > 1 and self.events[-2][0] > ts_ms:
            self.events.sort(key=lambda e: e[0])
        if len(self.events) > MAX_EVENTS:
            del self.events[: len(self.events) - MAX_EVENTS]
        self.version += 1

    def state(self) -> Json:
        """Plain data for :func:`flowlab.sandbox.edge.audiences.advance` (picklable, for a worker)."""
        return {
            "attributes": self.attributes,
            "events": self.events,
            "memberships": {k: list(v) for k, v in self.memberships.items()},
            "pending": [list(p) for p in self.pending],
            "runsDone": self.runs_done,
        }

    def apply(self, result: Mapping[str, Any]) -> None:
        """Take :func:`advance`'s result (last writer wins for concurrent requests on one profile)."""
        self.memberships = {k: (str(v[0]), int(v[1])) for k, v in result["memberships"].items()}
        self.pending = [(int(d), str(a), str(s)) for d, a, s in result["pending"]]
        self.runs_done = max(self.runs_done, int(result["runsDone"]))
        self.version += 1

    def realized(self) -> list[str]:
        return [k for k, (status, _) in self.memberships.items() if status == "realized"]

    def to_json(self, iso: Any) -> Json:
        """The admin shape: ``{identity: {namespace, id}, identities, attributes, audiences}``."""
        namespace, value = self.identity
        return {
            "identity": {"namespace": namespace, "id": value},
            "identities": [{"namespace": ns, "id": i} for ns, i in self.identities],
            "attributes": self.attributes,
            "audiences": [
                {"id": aud_id, "status": status, "since": iso(since)}
                for aud_id, (status, since) in sorted(self.memberships.items(), key=lambda m: m[1][1])
            ],
            "events": len(self.events),
        }


class ProfileStore:
    """Profiles in insertion order, found by any of their identities."""

    def __init__(self, profiles: Sequence[EdgeProfile] = ()) -> None:
        self._profiles: list[EdgeProfile] = []
        self._by_identity: dict[Identity, EdgeProfile] = {}
        for profile in profiles:
            self.add(profile)

    def add(self, profile: EdgeProfile) -> None:
        taken = [i for i in profile.identities if i in self._by_identity]
        if taken:
            raise ValueError(f"identity already belongs to another profile: {taken[0]}")
        self._profiles.append(profile)
        for identity in profile.identities:
            self._by_identity[identity] = profile

    def get(self, identity: Identity) -> EdgeProfile | None:
        return self._by_identity.get(identity)

    def __len__(self) -> int:
        return len(self._profiles)

    def __iter__(self) -> Iterator[EdgeProfile]:
        return iter(self._profiles)

    def page(self, limit: int, offset: int) -> list[EdgeProfile]:
        return self._profiles[offset : offset + limit]
