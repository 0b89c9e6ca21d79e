"""The Edge tenant: what the interact and admin routes call (reference §10 "State model").

One org with datastreams, Custom Personalization destinations, edge profiles, audiences and a simulated
clock. A lookup is two halves around the worker pool, because audience rules are tenant-supplied guest code
(issue #8): :meth:`EdgeTenant.begin_lookup` records the event and returns a :class:`LookupJob` (plain data
plus compiled-rule keys), the route runs it with ``await pool.run(...)``, and
:meth:`EdgeTenant.finish_lookup` applies the result and builds the ``activation:pull`` payload (§3.3).
:meth:`EdgeTenant.lookup` does all three in-process, for tests and the embedded CLI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from flowlab.sandbox.edge.audiences import Audience, Timing, advance, audience_from_definition, ordered
from flowlab.sandbox.edge.clock import SimClock, iso_ms
from flowlab.sandbox.edge.demo import edge_demo
from flowlab.sandbox.edge.pql import compile_payload
from flowlab.sandbox.edge.profiles import EdgeProfile, ProfileStore

__all__ = ["ADVANCE_TASK", "COMPILER", "Datastream", "Destination", "EdgeTenant", "LookupJob"]

Json = dict[str, Any]

#: The worker-pool task and the compiler of its rule keys (``workers.py``: ``"module:function"``).
ADVANCE_TASK: Final = "flowlab.sandbox.edge.audiences:advance_job"
COMPILER: Final = "flowlab.sandbox.edge.pql:compile_payload"
MAX_PAGE: Final = 500


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
    #: After finish: the edge audiences this request's event evaluation qualified (the preview's "why").
    qualified: list[str] = field(default_factory=list)


def _get(root: Mapping[str, Any], path: str) -> Any:
    value: Any = root
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class EdgeTenant:
    """The offline Edge Network org: datastreams, destinations, profiles, audiences and the simulated clock."""

    org_id: str
    clock: SimClock

    def __init__(
        self,
        *,
        seed: int = 7,
        n_profiles: int = 1200,
        timing: Timing | None = None,
        clock: SimClock | None = None,
    ) -> None:
        self.seed = seed
        self.n_profiles = n_profiles
        self.timing = timing or Timing()
        self.clock = clock or SimClock()
        self._lock = threading.RLock()
        self.reset()

    # ---- configuration ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the demo org and the clock's start (``POST /sandbox/reset``)."""
        demo = edge_demo(seed=self.seed, n_profiles=self.n_profiles)
        with self._lock:
            self.clock.reset()
            self.org_id = demo.org_id
            self._datastreams = {
                d["id"]: Datastream(
                    id=d["id"],
                    name=d["name"],
                    enabled=d["enabled"],
                    edge_segmentation=d["edgeSegmentation"],
                    personalization_destinations=d["personalizationDestinations"],
                    destination_ids=tuple(d["destinationIds"]),
                )
                for d in demo.datastreams
            }
            self._destinations = {
                d["destinationId"]: Destination(
                    destination_id=d["destinationId"],
                    alias=d["alias"],
                    name=d["name"],
                    with_attributes=d["withAttributes"],
                    mappings=dict(d["mappings"]),
                )
                for d in demo.destinations
            }
            self._audiences: dict[str, Audience] = {}
            self._ordered: list[Audience] = []
            self._rules: dict[str, str] = {}  # rule key -> rule text (what a worker compiles)
            self._compiled: dict[str, Any] = {}  # rule key -> AST (for in-process evaluation)
            for definition in demo.audiences:
                self._add_audience(definition)
            self._profiles = ProfileStore(demo.profiles)

    def datastream(self, datastream_id: str) -> Datastream | None:
        return self._datastreams.get(datastream_id)

    def datastreams(self) -> list[Datastream]:
        return list(self._datastreams.values())

    def destinations(self) -> list[Destination]:
        return list(self._destinations.values())

    def info(self) -> Json:
        """``{orgId, datastreams, destinations, now}`` in the admin API's JSON shape."""
        return {
            "orgId": self.org_id,
            "datastreams": [
                {"id": d.id, "name": d.name, "enabled": d.enabled, "edgeSegmentation": d.edge_segmentation,
                 "personalizationDestinations": d.personalization_destinations}
                for d in self._datastreams.values()
            ],
            "destinations": [
                {"destinationId": d.destination_id, "alias": d.alias, "withAttributes": d.with_attributes,
                 "attributes": d.attributes}
                for d in self._destinations.values()
            ],
            "now": self.clock.iso(),
        }  # fmt: skip

    # ---- audiences -----------------------------------------------------------------------------------

    def audiences(self) -> list[Json]:
        """``[{id, name, description, rule, evaluation, destinations}]``, dependencies first."""
        return [a.to_json() for a in self._ordered]

    def audience(self, audience_id: str) -> Audience | None:
        return self._audiences.get(audience_id)

    def load_audience(self, definition: Json) -> Json:
        """Add or replace one audience (ValueError, worth a 400, says what to fix). Returns it as JSON.

        A new audience realizes the way its type does: edge ones on the next request, streaming ones on
        the next event, batch ones (and every type, as a backfill) at the next daily run.
        """
        with self._lock:
            return self._add_audience(definition).to_json()

    def _add_audience(self, definition: Json) -> Audience:
        audience = audience_from_definition(
            definition, known=self._audiences, destinations=list(self._destinations)
        )
        self._audiences[audience.id] = audience
        self._ordered = ordered(self._audiences.values())
        self._rules[audience.key] = audience.rule.text
        self._compiled[audience.key] = audience.rule.ast
        return audience

    def _specs(self) -> list[tuple[str, str, str]]:
        return [(a.id, a.evaluation, a.key) for a in self._ordered]

    def provide(self, keys: Sequence[str]) -> dict[str, tuple[str, Any]]:
        """Compiled-rule payloads for a worker that lacks them (``workers.py`` ``provide``)."""
        return {k: (COMPILER, self._rules[k]) for k in keys if k in self._rules}

    def _rule_of(self, key: str) -> Any:
        ast = self._compiled.get(key)
        if ast is None:  # a rule replaced meanwhile: still answer with the text we shipped
            ast = compile_payload(self._rules[key])
        return ast

    # ---- lookups -------------------------------------------------------------------------------------

    def begin_lookup(
        self,
        datastream: Datastream,
        identity: tuple[str, str],
        event: Json | None,
        *,
        authenticated: bool,
    ) -> LookupJob | None:
        """:meth:`lookup`'s first half: records the event; None when the identity is unknown to the edge.

        The event is recorded at the simulated now (the edge receives it now; its own ``timestamp`` stays
        in the stored XDM).
        """
        with self._lock:
            profile = self._profiles.get(identity)
            if profile is None:
                return None
            now = self.clock.now_ms()
            if event is not None:
                profile.record(now, event)
            specs = self._specs()
            args: Json = {
                "state": profile.state(),
                "audiences": specs,
                "now": now,
                "timing": self.timing.as_job(),
                "ingest": event is not None,
                "edge": datastream.edge_segmentation,
            }
        return LookupJob(
            task=ADVANCE_TASK,
            args=args,
            keys=list(dict.fromkeys(s[2] for s in specs)),
            provide=self.provide,
            datastream=datastream,
            authenticated=authenticated,
            profile_key=profile.identity,
        )

    def finish_lookup(self, job: LookupJob, result: Any) -> list[Json]:
        """:meth:`lookup`'s second half: applies the worker's result, returns the ``activation:pull`` payload.

        One item per destination bound to the datastream, even with no segments [INF, §11 question 3];
        ``attributes`` only for a With Attributes destination on an authenticated call, otherwise the item
        has no ``attributes`` at all (seed 002: "segment membership only"; §11 question 4). An empty list
        when the datastream has Personalization Destinations off (the route sends no handle then).
        """
        with self._lock:
            profile = self._profiles.get(job.profile_key)
            if profile is None:  # reset meanwhile
                return []
            profile.apply(result)
            job.qualified = [a for a in result.get("qualified", []) if a in self._audiences]
            return self._payload(profile, job.datastream, job.authenticated)

    def lookup(
        self,
        datastream: Datastream,
        identity: tuple[str, str],
        event: Json | None,
        *,
        authenticated: bool,
    ) -> list[Json] | None:
        """The ``activation:pull`` payload for one profile (reference §3.3), evaluated in this process.

        None: the identity is unknown to the edge (the route sends ``payload: []``). The routes use
        :meth:`begin_lookup` / :meth:`finish_lookup` around the worker pool instead.
        """
        job = self.begin_lookup(datastream, identity, event, authenticated=authenticated)
        if job is None:
            return None
        return self.finish_lookup(job, self.run_job(job))

    def run_job(self, job: LookupJob) -> Json:
        """Run a job's evaluation here (what the worker does), e.g. for tests and the embedded CLI."""
        args = job.args
        return advance(
            args["state"],
            [(str(a[0]), str(a[1]), str(a[2])) for a in args["audiences"]],
            args["now"],
            args["timing"],
            ingest=args["ingest"],
            edge=args["edge"],
            rule_of=self._rule_of,
        )

    def _payload(self, profile: EdgeProfile, datastream: Datastream, authenticated: bool) -> list[Json]:
        if not datastream.personalization_destinations:
            return []
        realized = set(profile.realized())
        items: list[Json] = []
        for destination_id in datastream.destination_ids:
            destination = self._destinations.get(destination_id)
            if destination is None:
                continue
            item: Json = {"type": "profileLookup", "destinationId": destination.destination_id,
                          "alias": destination.alias}  # fmt: skip
            if destination.with_attributes and authenticated:
                attributes: Json = {}
                for name, path in destination.mappings.items():
                    value = _get(profile.attributes, path)
                    if value is not None:
                        attributes[name] = {"value": value}
                item["attributes"] = attributes
            item["segments"] = [
                {"id": a.id, "namespace": "ups"}
                for a in self._ordered
                if a.id in realized and destination_id in a.destinations
            ]
            items.append(item)
        return items

    # ---- profiles ------------------------------------------------------------------------------------

    def settle(self, profile: EdgeProfile) -> None:
        """Bring a profile's memberships to now without an event (an admin read, not an edge request)."""
        now = self.clock.now_ms()
        result = advance(
            profile.state(), self._specs(), now, self.timing.as_job(), ingest=False, edge=False,
            rule_of=self._rule_of,
        )  # fmt: skip
        profile.apply(result)

    def profile(self, identity: tuple[str, str]) -> EdgeProfile | None:
        return self._profiles.get(identity)

    def profiles(self, *, limit: int = 50, offset: int = 0, identity: tuple[str, str] | None = None) -> Json:
        """``{total, limit, offset, items: [{identity: {namespace, id}, identities, attributes, audiences}]}``.

        ``audiences`` are ``[{id, status, since}]`` with the XDM statuses ``realized`` / ``exited`` (§5.3),
        as the edge has them at the simulated now.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be a whole number from 1 to {MAX_PAGE}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError("offset must be a whole number, 0 or more")
        with self._lock:
            if identity is not None:
                found = self._profiles.get(identity)
                page = [found] if found is not None and offset == 0 else []
                total = 1 if found is not None else 0
            else:
                page = self._profiles.page(limit, offset)
                total = len(self._profiles)
            for profile in page:
                self.settle(profile)
            return {"total": total, "limit": limit, "offset": offset,
                    "items": [p.to_json(iso_ms) for p in page]}  # fmt: skip
