"""Latency and fault knobs for the sandbox's real-API routes (``/v2/…``, ``/v1.2/…``).

Real tenants answer in 118–970 ms (reference §7) and publish no rate limits, so by default the sandbox is
fast and never fails; these knobs make it slow or flaky on purpose, to test timeouts, retries and resume:

* latency: ``50`` (fixed ms), ``20-80`` (uniform), or ``real`` (log-normal around 300 ms, 118–970 ms);
* faults: ``503=0.1,429=0.05,reset=0.02,hang=0.01`` — the probability of each per request. ``429`` and
  ``503`` carry ``Retry-After``; ``reset`` sends the headers and then drops the connection; ``hang`` never
  answers (until the client gives up or the server stops); ``207`` is the Edge's only (``edge/routes.py``:
  a 207 with an upstream error in ``errors[]``, reference adobe §4.1), callFlows answers as usual.

Admin routes (``/sandbox/…``) are never slowed or failed.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from flowlab.sandbox.errors import error_body

__all__ = [
    "FAULT_KINDS",
    "MAX_LATENCY_MS",
    "FaultInjector",
    "Knobs",
    "ResetConnection",
    "parse_faults",
    "parse_latency",
]

FAULT_KINDS = ("503", "429", "500", "reset", "hang", "207")
_RANGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*$")
_HANG_LIMIT_S = 600.0
MAX_LATENCY_MS = 60_000.0
_MAX_RETRY_AFTER_S = 3600.0


class ResetConnection(Exception):
    """Raised after the response started, so that the server drops the connection mid-answer."""


def parse_latency(spec: str | float | None) -> tuple[str, float, float]:
    """``(kind, a, b)`` from a latency spec; raises ValueError with what to write instead.

    At most ``MAX_LATENCY_MS`` (a minute; real tenants answer within a second): a schema fuzzer once set
    6.9e16 ms, after which every real-API request slept for good.
    """
    if spec is None or spec == "" or spec == 0:
        return ("fixed", 0.0, 0.0)
    if isinstance(spec, int | float):
        value = _milliseconds(float(spec), spec)
        return ("fixed", value, value)
    text = spec.strip().lower()
    if text == "real":
        return ("real", 300.0, 0.5)
    match = _RANGE.match(text)
    if match:
        low, high = (_milliseconds(float(match.group(i)), spec) for i in (1, 2))
        if low > high:
            raise ValueError(f"latency range '{spec}' is backwards: write LOW-HIGH, e.g. 20-80")
        return ("uniform", low, high)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"latency '{spec}' is not N, LOW-HIGH or 'real' (milliseconds)") from None
    value = _milliseconds(value, spec)
    return ("fixed", value, value)


def _milliseconds(value: float, spec: object) -> float:
    if not 0 <= value <= MAX_LATENCY_MS:  # also refuses NaN
        raise ValueError(
            f"latency '{spec}' must be between 0 and {MAX_LATENCY_MS:,.0f} milliseconds (a minute); "
            "real tenants answer in 118-970 ms, or write 'real'"
        )
    return value


def parse_faults(spec: str | dict[str, float] | None) -> dict[str, float]:
    """``{"503": 0.1, "reset": 0.02}`` from ``503=0.1,reset=0.02``; probabilities must add up to ≤ 1."""
    if not spec:
        return {}
    items = (
        spec.items() if isinstance(spec, dict) else (_pair(part) for part in spec.split(",") if part.strip())
    )
    faults: dict[str, float] = {}
    for kind, probability in items:
        kind = str(kind).strip().lower()
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault '{kind}': use {', '.join(FAULT_KINDS)}")
        value = float(probability)
        if not 0 <= value <= 1:
            raise ValueError(f"fault {kind}={probability} must be a probability between 0 and 1")
        faults[kind] = value
    if sum(faults.values()) > 1 + 1e-9:
        raise ValueError("fault probabilities add up to more than 1")
    return faults


def _pair(part: str) -> tuple[str, float]:
    kind, sep, value = part.partition("=")
    if not sep:
        raise ValueError(f"fault '{part.strip()}' needs a probability, e.g. 503=0.1")
    try:
        return kind, float(value)
    except ValueError:
        raise ValueError(f"fault '{part.strip()}': '{value}' is not a number between 0 and 1") from None


@dataclass
class Knobs:
    """The live knob values; the admin API may change them while the sandbox runs."""

    latency: tuple[str, float, float] = ("fixed", 0.0, 0.0)
    faults: dict[str, float] = field(default_factory=dict)
    retry_after_s: float = 1.0
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def from_specs(
        cls, latency: str | float | None = None, faults: str | None = None, seed: int | None = None
    ) -> Knobs:
        return cls(
            latency=parse_latency(latency), faults=parse_faults(faults), seed=seed, rng=random.Random(seed)
        )

    def describe(self) -> dict[str, Any]:
        kind, a, b = self.latency
        latency = "real" if kind == "real" else (f"{a:g}" if kind == "fixed" else f"{a:g}-{b:g}")
        return {"latencyMs": latency, "faults": dict(self.faults), "retryAfterS": self.retry_after_s}

    def delay_s(self) -> float:
        kind, a, b = self.latency
        if kind == "fixed":
            return a / 1000
        if kind == "uniform":
            return self.rng.uniform(a, b) / 1000
        value = self.rng.lognormvariate(math.log(a), b)
        return min(max(value, 118.0), 970.0) / 1000

    def pick_fault(self) -> str | None:
        if not self.faults:
            return None
        roll = self.rng.random()
        for kind, probability in self.faults.items():
            if roll < probability:
                return kind
            roll -= probability
        return None


class FaultInjector:
    """Pure ASGI middleware (cheap on the hot path) that applies the knobs to real-API routes."""

    def __init__(self, app: Any, knobs: Knobs) -> None:
        self.app = app
        self.knobs = knobs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(("/v2/", "/v1.2/")):
            await self.app(scope, receive, send)
            return
        knobs = self.knobs
        delay = knobs.delay_s()
        if delay:
            await asyncio.sleep(delay)
        fault = knobs.pick_fault()
        if fault is None or fault == "207":  # 207 (an upstream error in errors[]) is the Edge's only
            await self.app(scope, receive, send)
        elif fault == "hang":
            await _hang(receive)
        elif fault == "reset":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]}
            )
            await send({"type": "http.response.body", "body": b'{"partial":', "more_body": True})
            raise ResetConnection("sandbox fault: connection reset")
        else:
            status = int(fault)
            message = {
                503: "service unavailable (sandbox fault)",
                429: "too many requests (sandbox fault)",
            }.get(status, "internal error (sandbox fault)")
            body = json.dumps(error_body(status, message, "injected by the sandbox's --faults knob")).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if status in (429, 503):
                headers.append((b"retry-after", _retry_after(knobs.retry_after_s)))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})


def _retry_after(seconds: float) -> bytes:
    """The header value: the knob within 0 s to an hour (a knob of ``inf`` used to send ``Retry-After: inf``)."""
    bounded = min(max(seconds, 0.0), _MAX_RETRY_AFTER_S) if math.isfinite(seconds) else _MAX_RETRY_AFTER_S
    return f"{bounded:g}".encode()


async def _hang(receive: Any) -> None:
    """Never answer: wait until the client disconnects (or a generous cap, so servers can always stop)."""
    try:
        async with asyncio.timeout(_HANG_LIMIT_S):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
    except TimeoutError:
        return
