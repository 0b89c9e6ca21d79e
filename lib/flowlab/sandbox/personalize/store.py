"""The sandbox tenant's state: definitions, guests, tracking records and execution traces, in memory.

Definitions are stored in the JSON shapes of the reference (flows §4.1, offers §3.3) and compiled once on
load (templates, scripts, decision tables), so a callFlows request does no parsing. Guest-side data grows
with traffic, so it is bounded: the newest ``TRACKING_PER_GUEST`` records per guest (Personalize itself
keeps the last 100 events per session, reference §4.2) and the newest ``MAX_TRACES`` traces.

Tracking records and traces are kept as JSON bytes, not dicts: bytes are invisible to Python's cyclic
garbage collector, and keeping ~20,000 traces as dict trees made collections pause the server for hundreds
of milliseconds (measured: p99.9 3.4 ms → 0.4 s pauses; bench/sandbox.py).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import pickle
import random
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from flowlab.sandbox.errors import BadRequest, NotFound
from flowlab.sandbox.personalize.connections import validate_connection
from flowlab.sandbox.personalize.decisions import DecisionModel, DecisionModelError
from flowlab.sandbox.personalize.demo import DemoTenant, demo_tenant
from flowlab.sandbox.personalize.dmn import mask_connection
from flowlab.sandbox.personalize.freemarker import Template, TemplateError
from flowlab.sandbox.personalize.javascript import Script, ScriptError, ScriptRuntime

__all__ = [
    "LIBRARY_KINDS",
    "LIVE_STATUSES",
    "MAX_QUARANTINE",
    "MAX_TRACES",
    "TRACKING_PER_GUEST",
    "CompiledFlow",
    "CompiledVariant",
    "Condition",
    "Tenant",
    "code_key",
    "new_ref",
]

LIVE_STATUSES = frozenset({"LIVE", "PRODUCTION"})
#: what an imported export holds besides flows, offers and decision models (listed, not run)
LIBRARY_KINDS = ("connection", "decision template", "offer template")
FLOW_TYPES = frozenset({"INTERACTIVE_API_FLOW", "INTERACTIVE_WEB_FLOW", "TRIGGERED_V3"})
TRACKING_PER_GUEST = 100
MAX_TRACES = 20_000
MAX_QUARANTINE = 10_000  # quarantined scripts and templates remembered (oldest forgotten first)
_FRIENDLY_ID = re.compile(r"^[a-z0-9_]+$")
_CONDITION_GLOBALS = ("guest", "request", "entity", "pos")


_random = random.Random()


_GUEST_NAMESPACE = uuid.UUID("6a1d3c8e-5f0b-4b8e-9d3e-2f7c1a9b0c42")


def _unit(text: str) -> float:
    """A stable number in [0, 1) for a string."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def code_key(kind: str, payload: str | bytes) -> str:
    """A content hash naming a piece of guest code: the same source is the same code, wherever posted."""
    data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    return kind[0] + hashlib.blake2b(kind.encode() + b"\x00" + data, digest_size=15).hexdigest()


def new_ref() -> str:
    """A random UUID4 string, ~5x cheaper than ``uuid.uuid4()`` (no syscall); refs need no crypto strength."""
    return str(uuid.UUID(int=_random.getrandbits(128), version=4))


@dataclass(frozen=True)
class Condition:
    friendly_id: str
    script: Script

    @functools.cached_property
    def key(self) -> str:
        return code_key("script", self.script.source)


@dataclass(frozen=True)
class CompiledVariant:
    ref: str
    name: str
    is_control: bool
    low: int  # first bucket (1..120) of this variant
    high: int  # last bucket, inclusive
    template: Template | None
    template_key: str | None  # content hash of the template source (None without a template)
    conditions: tuple[Condition, ...]
    model_refs: tuple[str, ...]
    split: float  # the configured percentage (the bucket range realises it to 1/120)
    conversion_lift: float
    average_order_value: float


@dataclass(frozen=True)
class CompiledFlow:
    definition: dict[str, Any]
    variants: tuple[CompiledVariant, ...]
    allocation_high: int  # buckets above this are outside the flow's traffic allocation

    @property
    def friendly_id(self) -> str:
        return str(self.definition["friendlyId"])

    @property
    def ref(self) -> str:
        return str(self.definition["ref"])

    @property
    def status(self) -> str:
        return str(self.definition.get("status", ""))

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES and self.definition.get("type") == "INTERACTIVE_API_FLOW"

    def variant_for(self, bucket: int) -> CompiledVariant | None:
        if bucket > self.allocation_high:
            return None
        for variant in self.variants:
            if variant.low <= bucket <= variant.high:
                return variant
        return None


def _embedded_connections(value: Any, depth: int = 0) -> list[Mapping[str, Any]]:
    """Connection JSON objects inside a flow definition (a triggered flow's ``connectionTask``)."""
    if depth > 8:
        return []
    if isinstance(value, Mapping):
        if isinstance(value.get("request"), Mapping) and "systemType" in value and value.get("name"):
            return [value]
        return [c for v in value.values() for c in _embedded_connections(v, depth + 1)]
    if isinstance(value, list):
        return [c for v in value for c in _embedded_connections(v, depth + 1)]
    return []


def _problem(kind: str, name: str, message: str) -> BadRequest:
    return BadRequest(f"{kind} '{name}' is invalid: {message}")


def _bucket_ranges(splits: list[tuple[str, float, float | None, float | None]]) -> dict[str, tuple[int, int]]:
    """Map variant splits (percent) onto buckets 1..120 (universal assignment, reference §4.3)."""
    ranges: dict[str, tuple[int, int]] = {}
    cumulative = 0.0
    for ref, split, low, high in splits:
        if low is not None and high is not None:
            ranges[ref] = (int(round(low * 1.2)) + 1, int(round(high * 1.2)))
            continue
        start = int(round(cumulative * 1.2)) + 1
        cumulative += split
        ranges[ref] = (start, int(round(cumulative * 1.2)))
    return ranges


class Tenant:
    """One sandbox tenant. Thread-safe for the admin API; the hot path only reads dicts and appends."""

    def __init__(self, *, runtime: ScriptRuntime | None = None, demo: DemoTenant | None = None) -> None:
        self.runtime = runtime or ScriptRuntime()
        self._lock = threading.RLock()
        self._demo = demo
        self._demo_pickle: bytes | None = None
        #: content key of a script or template -> why it is quarantined. Keyed by content, not by the
        #: compiled object, so posting the same code again keeps it; kept across resets.
        self.quarantine: OrderedDict[str, str] = OrderedDict()
        self._offers_code: tuple[str, dict[str, dict[str, Any]]] | None = None
        #: export folders (as read) loaded again after every reset: ``sandbox --load``
        self._kept_imports: list[Mapping[str, bytes | str]] = []
        self.reset()

    # ---- loading -------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the demo data: definitions, guests, and no tracking or traces."""
        if self._demo is None:
            demo = demo_tenant()  # a fresh copy each time: nothing below needs to copy it again
        else:  # a caller's demo: kept pristine, copied (pickled once, unpickled per reset)
            if self._demo_pickle is None:
                self._demo_pickle = pickle.dumps(self._demo, protocol=pickle.HIGHEST_PROTOCOL)
            demo = pickle.loads(self._demo_pickle)
        with self._lock:
            self.client_key = demo.client_key
            self.points_of_sale: dict[str, dict[str, Any]] = {p["name"]: dict(p) for p in demo.points_of_sale}
            self.offers: dict[str, dict[str, Any]] = {}
            self._offers_code = None
            self.models: dict[str, DecisionModel] = {}
            self.model_defs: dict[str, dict[str, Any]] = {}
            self.model_keys: dict[str, str] = {}
            self.flows: dict[str, CompiledFlow] = {}
            self.guests: dict[str, dict[str, Any]] = {}
            self.propensity: dict[str, float] = {}  # hidden: a guest's base conversion rate
            self.by_browser: dict[str, str] = {}
            self.by_email: dict[str, str] = {}
            self.by_identifier: dict[tuple[str, str], str] = {}
            self.tracking: dict[str, tuple[bytes, ...]] = {}
            self.assignments: dict[str, dict[str, str]] = {}
            self.sessions: dict[tuple[str, str, str], tuple[str, float]] = {}
            self.traces: OrderedDict[str, bytes] = OrderedDict()
            for offer in demo.offers:
                self.add_offer(offer)
            for model in demo.decision_models:
                self.add_decision_model(model)
            for flow in demo.flows:
                self.add_flow(flow)
            for guest in demo.guests:
                self._index_guest(guest)
            #: connections, offer templates and decision templates of imported exports, by kind and ref
            self.library: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in LIBRARY_KINDS}
            if self._kept_imports:
                from flowlab.sandbox.personalize.importer import import_files  # imports this module

                for files in self._kept_imports:
                    import_files(self, files)

    def keep_import(self, files: Mapping[str, bytes | str]) -> None:
        """Load this export again after every reset (the server's ``--load`` folders)."""
        with self._lock:
            self._kept_imports.append(files)

    def add_library_item(self, kind: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """Store a connection, offer template or decision template; a connection is checked, and answered masked.

        A connection keeps its secrets here (the engine calls it with them: ``connections.py``); every
        answer, trace and listing shows it through ``mask_connection``.
        """
        if kind not in LIBRARY_KINDS:
            raise BadRequest(f"unknown library kind {kind!r}", f"one of {', '.join(LIBRARY_KINDS)}")
        data = validate_connection(item) if kind == "connection" else dict(item)
        data.setdefault("ref", new_ref())
        with self._lock:
            self.library[kind][str(data["ref"])] = data
        return mask_connection(data) if kind == "connection" else data

    def connection_catalog(self) -> dict[str, dict[str, Any]]:
        """Every connection by ref: the library's and those embedded in decision models and flows (deduplicated).

        ``{ref: {"connection": JSON with secrets, "usedBy": ["decision model 'X', node 'Y'", ...]}}``; the
        library's definition wins over an embedded copy of the same ref.
        """
        found: dict[str, dict[str, Any]] = {
            ref: {"connection": c, "usedBy": []} for ref, c in self.library["connection"].items()
        }

        def add(connection: Mapping[str, Any], where: str) -> None:
            ref = str(connection.get("ref") or connection.get("name") or "")
            if not ref:
                return
            entry = found.setdefault(ref, {"connection": dict(connection), "usedBy": []})
            if where not in entry["usedBy"]:
                entry["usedBy"].append(where)

        for model in self.model_defs.values():
            for node in model.get("nodes") or []:
                if isinstance(node, Mapping) and node.get("type") == "connection":
                    connection = node.get("connection")
                    if isinstance(connection, Mapping):
                        add(connection, f"decision model '{model.get('name')}', node '{node.get('name')}'")
        for friendly_id, flow in self.flows.items():
            for connection in _embedded_connections(flow.definition):
                add(connection, f"flow '{friendly_id}'")
        return found

    def find_connection(self, ref_or_name: str) -> dict[str, Any]:
        """A catalog entry by ref, or by name (case and surrounding spaces ignored); NotFound otherwise."""
        catalog = self.connection_catalog()
        if ref_or_name in catalog:
            return catalog[ref_or_name]
        wanted = ref_or_name.strip().lower()
        for entry in catalog.values():
            if str(entry["connection"].get("name") or "").strip().lower() == wanted:
                return entry
        raise NotFound(
            f"no connection '{ref_or_name[:80]}'",
            "GET /sandbox/connections lists them (imported, posted, and embedded in decision models and flows)",
        )

    def add_offer(self, offer: Mapping[str, Any]) -> dict[str, Any]:
        data = dict(offer)
        data.setdefault("ref", new_ref())
        name = str(data.get("name") or data["ref"])
        if not isinstance(data.get("attributes", {}), dict):
            raise _problem("offer", name, "'attributes' must be an object of offer attributes")
        data.setdefault("attributes", {})
        data.setdefault("status", "ACTIVE")
        data.setdefault("name", name)
        with self._lock:
            self.offers[str(data["ref"])] = data
            self._offers_code = None
        return data

    def add_decision_model(self, model: Mapping[str, Any]) -> dict[str, Any]:
        data = dict(model)
        data.setdefault("ref", new_ref())
        try:
            compiled = DecisionModel.from_json(data, runtime=self.runtime)
        except (DecisionModelError, ScriptError) as exc:
            raise _problem("decision model", str(data.get("name", data["ref"])), str(exc)) from None
        with self._lock:
            self.models[str(data["ref"])] = compiled
            self.model_defs[str(data["ref"])] = data
            self.model_keys[str(data["ref"])] = code_key(
                "model", orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
            )
        return data

    def add_flow(self, flow: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and compile a flow definition (reference §4.1 shape); replaces one with the same friendlyId."""
        data = copy.deepcopy(dict(flow))
        friendly_id = data.get("friendlyId")
        if not isinstance(friendly_id, str) or not _FRIENDLY_ID.match(friendly_id):
            raise BadRequest(f"flow friendlyId {friendly_id!r} is invalid: use a-z, 0-9 and _ only")
        data.setdefault("ref", new_ref())
        data.setdefault("name", friendly_id)
        data.setdefault("type", "INTERACTIVE_API_FLOW")
        data.setdefault("subtype", "EXPERIENCE")
        data.setdefault("status", "DRAFT")
        if data["type"] not in FLOW_TYPES:
            raise _problem("flow", friendly_id, f"type must be one of {', '.join(sorted(FLOW_TYPES))}")
        variants = data.get("variants")
        if not isinstance(variants, list) or not variants:
            raise _problem("flow", friendly_id, "it needs at least one variant with tasks")
        for variant in variants:
            if not isinstance(variant, dict):
                raise _problem("flow", friendly_id, "each variant must be an object")
            variant.setdefault("ref", new_ref())
        traffic = data.setdefault("traffic", {})
        splits_raw = traffic.get("splits") or [
            {"ref": v["ref"], "split": 100 / len(variants)} for v in variants
        ]
        by_ref = {str(v["ref"]): v for v in variants}
        splits = []
        for s in splits_raw:
            if str(s.get("ref")) not in by_ref:
                raise _problem(
                    "flow", friendly_id, f"traffic split names unknown variant ref {s.get('ref')!r}"
                )
            splits.append((str(s["ref"]), float(s.get("split", 0)), s.get("lowSplit"), s.get("highSplit")))
        total = sum(s[1] for s in splits)
        if abs(total - 100) > 0.5 and not all(s[2] is not None for s in splits):
            raise _problem("flow", friendly_id, f"variant splits add up to {total:g}%, not 100%")
        ranges = _bucket_ranges(splits)
        compiled = tuple(
            self._compile_variant(friendly_id, by_ref[ref], ranges[ref], split) for ref, split, *_ in splits
        )
        allocation = float(traffic.get("allocation", 100))
        flow_obj = CompiledFlow(data, compiled, int(round(allocation * 1.2)))
        with self._lock:
            self.flows[friendly_id] = flow_obj
        return data

    def _compile_variant(
        self, flow_id: str, variant: dict[str, Any], bucket_range: tuple[int, int], split: float
    ) -> CompiledVariant:
        name = str(variant.get("name", variant["ref"]))
        template: Template | None = None
        conditions: list[Condition] = []
        model_refs: list[str] = []
        for task in variant.get("tasks", []):
            impl = task.get("implementation")
            task_input = task.get("input", {})
            if impl == "templateRenderTask":
                try:
                    template = Template.compile(str(task_input.get("template", "")))
                except TemplateError as exc:
                    raise _problem("flow", flow_id, f"template of variant '{name}': {exc}") from None
            elif impl == "conditionsTask":
                for i, rule in enumerate(task_input.get("rules", [])):
                    rule_id = str(rule.get("friendlyId") or f"condition_{i}")
                    expression = (rule.get("ruleData") or {}).get("expression")
                    if not isinstance(expression, str):
                        continue  # segment conditions have no script; the sandbox has no segments
                    try:
                        script = self.runtime.compile(expression, name=rule_id, globals=_CONDITION_GLOBALS)
                    except ScriptError as exc:
                        raise _problem("flow", flow_id, f"condition '{rule_id}': {exc}") from None
                    conditions.append(Condition(rule_id, script))
            elif impl == "decisionModelTask":
                for ref in task_input.get("decisionModelRefs", []):
                    if str(ref) not in self.models:
                        raise _problem(
                            "flow", flow_id, f"variant '{name}' uses unknown decision model {ref!r}"
                        )
                    model_refs.append(str(ref))
        extra = variant.get("sandbox") or {}
        return CompiledVariant(
            ref=str(variant["ref"]),
            name=name,
            is_control=bool(variant.get("isControl", False)),
            low=bucket_range[0],
            high=bucket_range[1],
            template=template,
            template_key=code_key("template", template.source) if template is not None else None,
            conditions=tuple(conditions),
            model_refs=tuple(model_refs),
            split=split,
            conversion_lift=float(extra.get("conversionLift", 1.0)),
            average_order_value=float(extra.get("averageOrderValue", 60.0)),
        )

    def offers_code(self) -> tuple[str, dict[str, dict[str, Any]]]:
        """(content key, the offers by ref): what guest-code workers need to build a template's ``offers``."""
        current = self._offers_code
        if current is None:
            with self._lock:
                offers = dict(self.offers)
                current = (code_key("offers", orjson.dumps(offers, option=orjson.OPT_SORT_KEYS)), offers)
                self._offers_code = current
        return current

    def quarantine_code(self, key: str, reason: str) -> None:
        """Refuse this script or template from now on (until its source changes)."""
        with self._lock:
            self.quarantine[key] = reason
            self.quarantine.move_to_end(key)
            while len(self.quarantine) > MAX_QUARANTINE:
                self.quarantine.popitem(last=False)

    # ---- flows ---------------------------------------------------------------------------------------

    def candidates(self, friendly_id: str) -> list[CompiledFlow]:
        """Flows a friendlyId can mean: the exact one, or with a trailing ``*`` all by prefix, in order."""
        if friendly_id.endswith("*"):
            prefix = friendly_id[:-1]
            return [self.flows[k] for k in sorted(self.flows) if k.startswith(prefix)]
        flow = self.flows.get(friendly_id)
        return [flow] if flow is not None else []

    # ---- guests --------------------------------------------------------------------------------------

    def _index_guest(self, guest: dict[str, Any]) -> dict[str, Any]:
        """Index a guest; its hidden simulation data moves out, so flows and the admin API never see it."""
        ref = str(guest["ref"])
        hidden = guest.pop("sandbox", None) or {}
        if "propensity" in hidden:
            self.propensity[ref] = float(hidden["propensity"])
        self.guests[ref] = guest
        for browser_id in guest.get("browserIds", []):
            self.by_browser[str(browser_id)] = ref
        if guest.get("email"):
            self.by_email[str(guest["email"]).lower()] = ref
        for ident in guest.get("identifiers", []):
            self.by_identifier[(str(ident.get("provider")), str(ident.get("id")))] = ref
        return guest

    @property
    def lock(self) -> threading.RLock:
        """The tenant's lock, for changes that span several of its indexes (``events.py``)."""
        return self._lock

    def index_guest(self, guest: dict[str, Any]) -> dict[str, Any]:
        """Add or re-index a guest (its browserIds, email, identifiers then find it): ``events.py``, #11."""
        with self._lock:
            return self._index_guest(guest)

    def find_or_create_guest(self, kind: str, value: Any) -> tuple[dict[str, Any], bool]:
        """The guest behind an identity; unknown identities become new visitor guests (reference §2.3)."""
        if kind == "browserId":
            ref = self.by_browser.get(value)
        elif kind == "email":
            ref = self.by_email.get(str(value).lower())
        else:
            ref = self.by_identifier.get((str(value["provider"]), str(value["id"])))
        if ref is not None:
            return self.guests[ref], False
        now = int(time.time() * 1000)
        if kind == "identifiers":
            identity = f"identifiers:{value['provider']}:{value['id']}"
        else:
            identity = f"{kind}:{str(value).lower() if kind == 'email' else value}"
        # The ref follows from the identity, so the same guest sample gets the same guests, buckets and
        # simulated outcomes after a restart. Their hidden base conversion rate is 10-25%: high enough
        # that a 5,000-guest A/B run measures the demo's built-in lift within about +-10%.
        # Tuples, not lists, and no nested dicts: a batch creates a guest per request, and a flat dict of
        # strings and tuples of strings drops out of the cyclic GC's bookkeeping (see the module
        # docstring); JSON, templates and scripts see arrays.
        guest: dict[str, Any] = {
            "ref": str(uuid.uuid5(_GUEST_NAMESPACE, identity)),
            "guestType": "visitor",
            "firstSeen": now,
            "lastSeen": now,
            "browserIds": (value,) if kind == "browserId" else (),
            "email": str(value).lower() if kind == "email" else None,
            "identifiers": (dict(value),) if kind == "identifiers" else (),
            "dataExtensions": (),
            "orders": (),
            "sessions": (),
        }
        # a flat dict of plain values: once it survives a full collection the GC stops tracking it
        self.propensity[guest["ref"]] = round(0.10 + 0.15 * _unit(identity), 4)
        with self._lock:
            return self._index_guest(guest), True

    def create_browser(self) -> tuple[str, str]:
        """A new browser id and its new visitor guest, as ``browser/create.json`` does."""
        browser_id = new_ref()
        guest, _ = self.find_or_create_guest("browserId", browser_id)
        return browser_id, str(guest["ref"])

    def list_guests(
        self, *, limit: int, offset: int, browser_id: str | None = None, email: str | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        if browser_id or email:
            ref = (
                self.by_browser.get(browser_id or "")
                if browser_id
                else self.by_email.get((email or "").lower())
            )
            items = [self.guests[ref]] if ref else []
        else:
            items = list(self.guests.values())
        return len(items), items[offset : offset + limit]

    def session_ref(self, guest_ref: str, channel: str, browser_ref: str | None, pos: str) -> str:
        """Browser calls share an open session (POS timeout, default 20 min); email/identifier calls get a new one."""
        if browser_ref is None:
            return new_ref()
        timeout_s = 60 * float(self.points_of_sale.get(pos, {}).get("timeoutInMinutes", 20))
        key = (guest_ref, channel, browser_ref)
        now = time.monotonic()
        current = self.sessions.get(key)
        ref = current[0] if current and now - current[1] < timeout_s else new_ref()
        self.sessions[key] = (ref, now)
        return ref

    # ---- records -------------------------------------------------------------------------------------

    def add_tracking(self, guest_ref: str, record: dict[str, Any]) -> None:
        records = self.tracking.get(guest_ref, ())
        self.tracking[guest_ref] = (*records[-(TRACKING_PER_GUEST - 1) :], orjson.dumps(record))
        execution = record["arbitraryData"]["flowExecution"]
        if execution.get("flowVariantRef"):
            self.assignments.setdefault(guest_ref, {}).setdefault(
                execution["flowRef"], execution["flowVariantRef"]
            )

    def tracking_records(self, guest_ref: str) -> list[dict[str, Any]]:
        """A guest's TRACKING records, oldest first."""
        return [orjson.loads(r) for r in self.tracking.get(guest_ref, ())]

    def add_trace(self, ref: str, trace: dict[str, Any]) -> None:
        self.traces[ref] = orjson.dumps(trace, default=str)
        if len(self.traces) > MAX_TRACES:
            self.traces.popitem(last=False)

    def trace(self, ref: str) -> dict[str, Any]:
        try:
            return dict(orjson.loads(self.traces[ref]))
        except KeyError:
            raise NotFound(
                f"no execution '{ref}'",
                f"the sandbox keeps the newest {MAX_TRACES:,} execution traces; this one is unknown or expired",
            ) from None

    def flow_assignments(self, flow_ref: str) -> Iterable[tuple[dict[str, Any], str]]:
        """(guest, variant ref first served) for every guest a variant of this flow was served to."""
        for guest_ref, flows in self.assignments.items():
            variant_ref = flows.get(flow_ref)
            if variant_ref is not None:
                yield self.guests[guest_ref], variant_ref
