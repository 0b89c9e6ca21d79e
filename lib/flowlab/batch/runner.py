"""The batch runner: call a decision API once for every guest of a sample, and keep one result row per guest.

The runner takes a **provider** (``flowlab.batch.provider.Provider``: how a row becomes a request, how it
is sent, what an answer means): ``PersonalizeProvider`` (callFlows, the default: ``BatchOptions(base_url,
client_key, friendly_id)``) or ``EdgeProvider`` (AEP Edge: ``BatchOptions(base_url=url,
provider=EdgeProvider(datastream_id))``). Everything below is shared by both.

What it does, and why:

* **Concurrency and rate.** ``concurrency`` workers share one keep-alive pool of as many connections; an
  optional ``rps`` cap (a token bucket, for all workers together) bounds the arrival rate. The two are
  separate knobs because they answer different questions (how much in flight; how fast).
* **Retries** for connection errors, timeouts, 408, 429 and 5xx (the provider may narrow this: the Edge
  retries 429, 502, 503, 504 and only connect failures), honouring ``Retry-After``, with the project's one
  ``RetryPolicy``; other answers are final. A 401 gets one more try when the provider refreshes its
  credentials; an answer the provider calls **fatal** (no guest can succeed: an unknown datastream) stops
  the run at once with its message, without a row for the guests that got it. A **retry budget** keeps a failing server from
  being hammered: every new guest earns ``retry_budget`` retries (0.5: one retry per two guests, so at
  most a third of all requests are retries) on top of a small reserve; when it is spent, failures stand.
* **Streaming, and exact resume.** Guests are taken from the sample lazily; results go to the ``RunStore``
  in **group commits**: the writer commits whatever is pending as soon as its previous commit ends, so a
  result is durable within milliseconds of its arrival. Results wait for the writer in a bounded queue
  (``queue_rows``); when it is full the workers wait (backpressure), so memory stays flat whatever the
  sample size, and a slow disk slows the run instead of filling memory.
* **Dispatch marks.** A guest's request leaves only after its row is marked as dispatched in a committed
  group, so after a kill -9 the marks without a result are a superset of the guests in flight: a resume
  calls them again and reports how many (``BatchSummary.in_flight_before``, ``resume_state``). Waiting for
  a commit before every request cost up to a fifth of the throughput on a busy 2-core machine, so each
  group also marks a small **reserve** of the next guests, sized to what the workers took during the
  previous commit (twice that, at most ``concurrency``), and workers take marked guests from it without
  waiting. The count is therefore an **upper bound**: the guests in flight plus at most that reserve (a
  cancel or a clean end releases the reserve, so only a crash over-counts).
* **Cancel, resume, retry failed.** ``cancel()`` stops new calls, gives those in flight a second to finish
  and marks the run ``cancelled``. A resume skips every guest that has a row; ``only_failed`` calls again
  the guests whose row is not ok (and any without a row), replacing their rows. Either way every guest
  ends with exactly one row. What a kill -9 can lose is in ``flowlab.batch.runs``.
* **Hot path.** Bodies are serialised with orjson and posted through ``flowlab.http.BatchTransport`` (raw
  aiohttp: httpx's per-request work caps a 2-core machine well below the goal, see ``bench/batch.py``).
  Group commits run on the event loop itself (a few hundred µs each): in a writer thread every commit
  waited for the GIL behind the busy loop, groups took 5–10x longer and the reserve ran dry. Where
  uvloop is installed, the sync entry points use it.

Only ``options.base_url`` is ever called; the app adds the live-tenant confirmation before it starts a run.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flowlab.admin import SandboxAdmin
from flowlab.batch.provider import Provider
from flowlab.batch.runs import GuestResult, Progress, RunMeta, RunStore
from flowlab.batch.samples import GuestRow, GuestSample
from flowlab.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConfigError,
    FlowLabError,
    RequestValidationError,
    RunStoreError,
)
from flowlab.http import BatchTransport, RetryPolicy
from flowlab.personalize.provider import PersonalizeProvider
from flowlab.redaction import redact_url

__all__ = [
    "STORE_SUFFIX",
    "BatchHandle",
    "BatchOptions",
    "BatchStopped",
    "BatchSummary",
    "ResumeState",
    "resume_state",
    "run_batch",
    "run_batch_to_file",
    "start_batch",
    "store_path_for",
]

logger = logging.getLogger(__name__)

#: For ``--out results.csv`` (or ``.parquet``) the run store is ``results.csv.sqlite`` beside it.
STORE_SUFFIX = ".sqlite"
_CANCEL_GRACE_S = 1.0
_PROGRESS_EVERY_S = 0.1  # progress callbacks (a tqdm bar, say) at most this often, not at every commit
_OUT_SUFFIXES = (".csv", ".parquet", ".sqlite", ".db")

ProgressCallback = Callable[[Progress], None]


class BatchStopped(FlowLabError):
    """The run stopped because an answer meant no guest could succeed (the provider's ``fatal``)."""


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch. Defaults are modest (the CLI passes ``concurrency=50``).

    ``defaults`` are request fields (wire names: channel, pointOfSale, language, currencyCode) that rows
    may override. ``retry_budget``: retries earned per new guest (see the module docstring). ``provider``:
    what to call (None: callFlows with ``client_key``, ``friendly_id``, ``defaults`` and ``variant_path``,
    which are unused, and may be empty, with another provider).
    """

    base_url: str
    client_key: str = ""
    friendly_id: str = ""
    defaults: Mapping[str, str | None] = field(default_factory=dict)
    concurrency: int = 20
    rps: float | None = None
    retries: int = 3
    timeout: float = 10.0
    variant_path: str | None = None
    retry_budget: float = 0.5
    queue_rows: int = 1000
    provider: Provider | None = None
    #: callFlows only: run the flow in any status on a sandbox (``X-Flowlab-Simulate: 1``; see check_target)
    simulate: bool = False
    _provider: Provider = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problems = [
            "concurrency must be 1 or more" if self.concurrency < 1 else "",
            "rps must be more than 0 (or None for no cap)" if self.rps is not None and self.rps <= 0 else "",
            "retries must be 0 or more" if self.retries < 0 else "",
            "timeout must be positive seconds" if self.timeout <= 0 else "",
            "retry_budget must be 0 or more" if self.retry_budget < 0 else "",
            "queue_rows must be 1 or more" if self.queue_rows < 1 else "",
        ]
        if any(problems):
            raise ConfigError("; ".join(p for p in problems if p))
        provider = self.provider
        if provider is None:
            provider = PersonalizeProvider(
                self.client_key,
                self.friendly_id,
                defaults=self.defaults,
                variant_path=self.variant_path,
                simulate=self.simulate,
            )
        elif not isinstance(provider, Provider):
            raise ConfigError(
                f"provider must be a flowlab.batch.provider.Provider, not {type(provider).__name__}"
            )
        object.__setattr__(self, "_provider", provider)

    @property
    def active_provider(self) -> Provider:
        """The provider this batch calls: ``provider``, or callFlows built from the other fields."""
        return self._provider

    def check(self, sample: GuestSample | None = None) -> None:
        """Raise if the provider's settings can make no valid request (``RequestValidationError``), or
        ``sample`` is of the wrong kind for it (``SampleError``): checked before a store is created or a
        guest is called, since it would fail every row."""
        self._provider.check(sample)

    def check_target(self) -> None:
        """A simulated run must go to a Flow Lab sandbox: a live tenant ignores the header and would run
        (and record) its live flow instead. ``ConfigError`` otherwise; asks the base URL once."""
        if not self._provider.settings.get("simulate"):
            return
        with SandboxAdmin(base_url=self.base_url, timeout=min(self.timeout, 10.0)) as admin:
            if admin.is_sandbox():
                return
        raise ConfigError(
            f"--simulate runs a flow in any status on a Flow Lab sandbox only; {redact_url(self.base_url)} "
            "is not one (a live tenant ignores the switch and runs its live flow): point --base-url at a "
            "sandbox (python -m flowlab sandbox) or leave --simulate out"
        )

    def run_meta(self, sample: GuestSample) -> RunMeta:
        """What makes a run this run (``--resume`` checks it); no client key or secret is recorded."""
        provider = self._provider
        options = {
            "concurrency": self.concurrency,
            "rps": self.rps,
            "retries": self.retries,
            "timeout": self.timeout,
            **provider.settings,
            "retryBudget": self.retry_budget,
        }
        return RunMeta(
            friendly_id=provider.target,
            base_url=self.base_url,
            sample_fingerprint=sample.fingerprint,
            total=len(sample),
            defaults=dict(provider.defaults),
            options=options,
            extra_columns=sample.columns,
            provider=provider.name,
            simulate=bool(provider.settings.get("simulate")),
        )


@dataclass(frozen=True)
class BatchSummary:
    """How a run ended.

    ``total``, ``ok``, ``failed`` and ``errors_by_type`` cover the whole run (every session of it);
    ``called``, ``elapsed_s``, ``rps`` (guests finished per second) and the retry counts cover this session;
    ``in_flight_before`` counts the guests that were in flight when the previous session stopped (called
    again in this one; the tenant may have recorded their first call). ``budget_line`` is
    :func:`flowlab.analysis.budget.budget_sentence` for the run (what share of each variant's guests a 400 ms
    timeout would have sent to the default), filled in by :func:`run_batch_to_file`.
    """

    total: int
    ok: int
    failed: int
    elapsed_s: float
    rps: float
    errors_by_type: Mapping[str, int]
    store_path: Path
    called: int = 0
    retries: int = 0
    retries_denied: int = 0
    cancelled: bool = False
    output: Path | None = None
    in_flight_before: int = 0
    budget_line: str = ""
    #: what a row is: "guest" (callFlows) or "identity" (AEP Edge)
    noun: str = "guest"

    @property
    def missing(self) -> int:
        """Guests without a row yet (a cancelled run); a resume calls them."""
        return self.total - self.ok - self.failed

    def describe(self) -> str:
        """One line for a terminal or a status bar."""
        errors = ", ".join(
            f"{k or 'other'} {v:,}" for k, v in sorted(self.errors_by_type.items(), key=lambda kv: -kv[1])
        )
        text = f"{_count(self.total, self.noun)}: {self.ok:,} ok, {self.failed:,} failed" + (
            f" ({errors})" if errors else ""
        )
        text += f"; {self.called:,} called in {self.elapsed_s:.1f} s ({self.rps:,.0f}/s)"
        if self.retries or self.retries_denied:
            text += f", {self.retries:,} retries" + (
                f" ({self.retries_denied:,} over budget)" if self.retries_denied else ""
            )
        if self.in_flight_before:
            text += f"; {self.in_flight_before:,} in flight at the last stop were called again"
        if self.cancelled:
            text += f"; cancelled with {self.missing:,} to go (resume to finish)"
        text += f"; results in {self.output or self.store_path}"
        return text + (f"\n{self.budget_line}" if self.budget_line else "")


# ---- pacing ---------------------------------------------------------------------------------------------


class _RateLimiter:
    """A token bucket over all workers (GCRA form): at most ``rps`` a second, bursts of ``burst``."""

    def __init__(self, rps: float, burst: float | None = None) -> None:
        self.interval = 1.0 / rps
        self.burst = burst if burst is not None else max(1.0, min(rps / 10, 20.0))
        self.next_at = 0.0

    async def acquire(self) -> None:
        now = time.monotonic()
        slot = max(self.next_at, now - (self.burst - 1) * self.interval)
        self.next_at = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class _RetryBudget:
    """Retries earned by new requests: each first attempt adds ``ratio``; a retry spends one."""

    def __init__(self, ratio: float, reserve: float) -> None:
        self.ratio = ratio
        self.cap = reserve
        self.balance = reserve
        self.spent = 0
        self.denied = 0

    def earn(self) -> None:
        self.balance = min(self.cap, self.balance + self.ratio)

    def spend(self) -> bool:
        if self.balance >= 1.0:
            self.balance -= 1.0
            self.spent += 1
            return True
        self.denied += 1
        return False


# ---- the runner -----------------------------------------------------------------------------------------


class _Runner:
    """One session of a run: workers, the writer and the counters, on one event loop.

    The writer task commits groups on the loop; the writer thread (``_in_writer``) is left for the rare
    store calls at the start and end of a session.
    """

    def __init__(
        self,
        sample: GuestSample,
        options: BatchOptions,
        store: RunStore,
        *,
        only_failed: bool = False,
        on_progress: ProgressCallback | None = None,
        columnar_copy: bool = True,
    ) -> None:
        self.sample = sample
        self.options = options
        self.store = store
        self.only_failed = only_failed
        self.on_progress = on_progress
        self.columnar_copy = columnar_copy
        self.provider = options.active_provider
        self.policy = RetryPolicy(max_retries=options.retries, statuses=self.provider.retry_statuses)
        self.budget = _RetryBudget(options.retry_budget, reserve=max(10.0, float(options.concurrency)))
        self.limiter = _RateLimiter(options.rps) if options.rps else None
        self._fatal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()  # binds to the loop that first waits on it (Python >= 3.10)
        # The group being gathered for the next commit: results (as SQL rows, converted here, not on the
        # writer), dispatch marks, released marks; ``_group`` is set once that commit is durable.
        self._rows: list[tuple[Any, ...]] = []
        self._marks: list[tuple[int, float]] = []
        self._released: list[int] = []
        self._reserving: list[GuestRow] = []  # guests marked in the group being gathered
        self._writing: list[GuestRow] = []  # guests marked in the group being written
        self._reserve: collections.deque[GuestRow] = collections.deque()  # marked (durably), not yet taken
        self._guests: Iterator[GuestRow] = iter(())
        self._exhausted = False
        self._taken = 0  # guests taken from the reserve since the writer last topped it up
        self._hungry = 0  # workers waiting for the reserve
        self._refilled = asyncio.Event()
        self._wake = asyncio.Event()  # something is pending for the writer
        self._space = asyncio.Event()  # the result queue has room
        self._space.set()
        self._reported = 0.0
        self.in_flight_before = 0
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flowlab-run-writer")
        self._started = 0.0
        self._base = Progress(0, 0, 0, 0, {}, 0.0, 0.0, None)
        self._called = 0
        self._ok = 0
        self._errors: Counter[str] = Counter()

    # -- control, from any thread --

    def cancel(self) -> None:
        """Stop calling new guests; those in flight get ``_CANCEL_GRACE_S`` to finish. Thread-safe."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stop.set()  # not running (yet, or any more): nothing waits on it
        else:
            loop.call_soon_threadsafe(self._stop.set)

    # -- the run --

    def _pending(self) -> tuple[list[GuestRow], Progress]:
        """The guests to call, and the counts they start from (re-called rows no longer count as done)."""
        skip = self.store.done_rows()
        if self.only_failed:
            skip -= self.store.failed_rows()
        todo = [g for g in self.sample.guests if g.row not in skip]
        done = len(self.sample) - len(todo)
        marks = self.store.in_flight_rows()
        self.in_flight_before = len(marks & {g.row for g in todo}) if marks else 0
        before = self.store.progress()
        errors = {} if self.only_failed else dict(before.errors_by_type)
        failed = 0 if self.only_failed else before.failed
        return todo, Progress(len(self.sample), done, done - failed, failed, errors, time.time(), 0.0, None)

    async def run(self) -> BatchSummary:
        self._loop = asyncio.get_running_loop()
        self.options.check(self.sample)
        todo, self._base = self._pending()
        provider = self.provider
        await provider.open(self.options.base_url, self.options.timeout)  # e.g. the IMS token: fails fast
        try:
            await self._in_writer(self.store.mark_started, self.options.run_meta(self.sample).options)
            self._started = time.perf_counter()
            self._guests = iter(todo)
            writer = asyncio.create_task(self._writer())
            try:
                async with BatchTransport(
                    base_url=self.options.base_url,
                    max_connections=self.options.concurrency,
                    path=provider.path,
                ) as http:
                    count = min(self.options.concurrency, len(todo))
                    workers = [asyncio.create_task(self._worker(http)) for _ in range(count)]
                    await self._supervise(workers, writer)
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                complete = await self._finish()
        finally:
            await provider.close()
        if self._fatal is not None:
            raise BatchStopped(
                f"the batch stopped: {self._fatal.rstrip('.')}. Nothing more was called; fix it and run again"
            )
        return self._summary(cancelled=not complete)

    async def _supervise(self, workers: list[asyncio.Task[None]], writer: asyncio.Task[None]) -> None:
        """Wait for the workers; once cancelled, give the calls in flight a grace period, then stop them.

        A failing writer (disk full…) ends the run at once rather than let results pile up in memory.
        """
        stop: asyncio.Task[Any] = asyncio.create_task(self._stop.wait())
        running: set[asyncio.Task[Any]] = set(workers)
        try:
            while running:
                watched = running | {stop, writer}
                finished, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in finished - {stop}:
                    task.result()  # a bug in a worker, or the writer's error, surfaces here
                running -= finished
                if stop in finished and running:
                    await asyncio.wait(running, timeout=_CANCEL_GRACE_S)
                    return
        finally:
            stop.cancel()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, http: BatchTransport) -> None:
        while not self._stop.is_set():
            guest = await self._take()
            if guest is None:
                return
            result = await self._call(guest, http)
            if result is None:
                return
            await self._record(result)

    async def _take(self) -> GuestRow | None:
        """The next guest whose dispatch mark is durable (from the reserve); None when none are left."""
        while not self._reserve:
            if self._stop.is_set() or (self._exhausted and not (self._reserving or self._writing)):
                return None
            refilled = self._refilled
            self._hungry += 1
            self._wake.set()
            try:
                await refilled.wait()
            finally:
                self._hungry -= 1
        self._taken += 1
        self._wake.set()  # the writer tops the reserve up in its next group
        return self._reserve.popleft()

    async def _record(self, result: GuestResult) -> None:
        """Queue a result for the next group commit; wait while the queue is full (backpressure).

        A fatal answer (see the module docstring) is not kept: it stops the run, and its guest is released.
        """
        if not result.ok:
            fatal = self.provider.fatal(result)
            if fatal is not None:
                if self._fatal is None:
                    self._fatal = fatal
                self._released.append(result.row)
                self._stop.set()
                self._wake.set()
                return
        while len(self._rows) >= self.options.queue_rows:
            self._space.clear()
            await self._space.wait()
        self._rows.append(result.as_sql())
        self._wake.set()
        self._called += 1
        if result.ok:
            self._ok += 1
        else:
            self._errors[result.error_type] += 1

    async def _call(self, guest: GuestRow, http: BatchTransport) -> GuestResult | None:
        """One guest, with retries; None if the run stopped before the guest had an answer worth keeping.

        The guest's dispatch mark is durable (it came from the reserve); if its request never leaves (the
        run stopped first), the mark is released in the next group, so it does not count as in flight.
        """
        provider = self.provider
        try:
            body, context = provider.prepare(guest)
        except RequestValidationError as exc:
            return provider.failure(guest, None, str(exc), "invalid_request")
        sent = False
        refreshed = False
        try:
            self.budget.earn()
            attempt = 0
            while True:
                attempt += 1
                if self.limiter is not None:
                    await self.limiter.acquire()
                if self._stop.is_set():
                    return None
                started = time.perf_counter()
                sent = True
                headers_sent = provider.headers()
                try:
                    status, headers, text, latency_ms = await http.post_call_flows(
                        body, self.options.timeout, headers_sent
                    )
                except APIError as exc:
                    if (provider.retry_sent or _nothing_sent(exc)) and await self._retry(
                        attempt, self.policy.delay(attempt)
                    ):
                        continue
                    if self._stop.is_set():
                        return None
                    kind = "timeout" if isinstance(exc, APITimeoutError) else "connection"
                    latency = (time.perf_counter() - started) * 1000
                    return provider.failure(guest, context, str(exc), kind, latency, attempt)
                if 200 <= status < 300:
                    return provider.answer(guest, context, status, headers, text, latency_ms, attempt)
                if status == 401 and not refreshed and headers_sent is not None:
                    refreshed = True  # once per guest: if fresh credentials fail too, the 401 is the answer
                    if await provider.unauthorized(headers_sent):
                        attempt -= 1
                        continue
                if self.policy.retryable_status(status):
                    if await self._retry(attempt, self.policy.delay(attempt, headers.get("Retry-After"))):
                        continue
                    if self._stop.is_set():
                        return None
                return provider.answer(guest, context, status, headers, text, latency_ms, attempt)
        finally:
            if not sent:
                self._released.append(guest.row)

    async def _retry(self, attempt: int, delay: float) -> bool:
        """Wait ``delay`` before another attempt, if retries, the budget and the run allow one."""
        if attempt > self.options.retries or self._stop.is_set() or not self.budget.spend():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return not self._stop.is_set()

    # -- the writer --

    async def _in_writer(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a store call on the writer thread: SQLite work stays off the event loop, in order.

        Shielded: cancelling the awaiting task (the writer at the end of a run, or the whole run) must not
        cancel a queued write, whose rows are in no other place.
        """
        assert self._loop is not None
        return await asyncio.shield(self._loop.run_in_executor(self._executor, function, *args))

    async def _writer(self) -> None:
        """Group commits: whatever is pending goes into one transaction as soon as the previous one ends,
        with marks for the guests that top the reserve up."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._top_up()
            rows, marks, released, self._writing = self._rows, self._marks, self._released, self._reserving
            self._rows, self._marks, self._released, self._reserving = [], [], [], []
            self._space.set()
            self.store.write_rows(rows, marks, released)  # on the loop: see the class docstring
            self._reserve.extend(self._writing)
            self._writing = []
            refilled, self._refilled = self._refilled, asyncio.Event()
            refilled.set()
            if self.on_progress is not None and time.monotonic() - self._reported >= _PROGRESS_EVERY_S:
                self._reported = time.monotonic()
                self.on_progress(self._snapshot())
            await asyncio.sleep(0)  # let the workers run before the next group

    def _top_up(self) -> None:
        """Mark the next guests so that the reserve holds about twice what the workers took during the
        last commit (at least one, at most ``concurrency``), plus one for every worker waiting."""
        target = min(self.options.concurrency, max(1, 2 * self._taken))
        self._taken = 0
        if self._stop.is_set():
            return
        want = self._hungry + target - len(self._reserve) - len(self._reserving)
        now = time.time()
        while want > 0 and not self._exhausted:
            guest = next(self._guests, None)
            if guest is None:
                self._exhausted = True
                break
            self._reserving.append(guest)
            self._marks.append((guest.row, now))
            want -= 1

    async def _finish(self) -> bool:
        """Write what is left and record how the run ended: ``done`` if every guest has a row, else
        ``cancelled`` (resumable). Queued after any write in flight, and waited for even on cancel.

        Marks not yet committed are dropped, and the reserve is released: those requests never left.
        """

        def finish() -> bool:
            self.store.write_rows(rows, (), released)
            complete = self.store.progress().done >= len(self.sample)
            self.store.set_status("done" if complete else "cancelled", columnar_copy=self.columnar_copy)
            return complete

        rows = self._rows
        unsent = [*self._reserve, *self._reserving, *self._writing]
        released = [*self._released, *(g.row for g in unsent)]
        self._rows, self._marks, self._released, self._reserving, self._writing = [], [], [], [], []
        self._reserve.clear()
        try:
            complete: bool = await self._in_writer(finish)
        finally:
            self._executor.shutdown(wait=True)
        if self.on_progress is not None:
            self.on_progress(self._snapshot())
        return complete

    # -- counts --

    def _snapshot(self) -> Progress:
        base = self._base
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        rps = self._called / elapsed
        done = base.done + self._called
        errors = Counter(base.errors_by_type) + self._errors
        eta = (base.total - done) / rps if rps > 0 else None
        failed = base.failed + self._called - self._ok
        return Progress(base.total, done, base.ok + self._ok, failed, dict(errors), base.started, rps, eta)

    def _summary(self, cancelled: bool) -> BatchSummary:
        final = self.store.progress()
        elapsed = time.perf_counter() - self._started
        return BatchSummary(
            total=final.total,
            ok=final.ok,
            failed=final.failed,
            elapsed_s=elapsed,
            rps=self._called / elapsed if elapsed > 0 else 0.0,
            errors_by_type=dict(final.errors_by_type),
            store_path=self.store.path,
            called=self._called,
            retries=self.budget.spent,
            retries_denied=self.budget.denied,
            cancelled=cancelled,
            in_flight_before=self.in_flight_before,
            noun=_noun(self.store.meta.provider),
        )


def _nothing_sent(error: APIError) -> bool:
    """True when the request never reached the server (``BatchTransport``'s "cannot connect" error), so
    sending it again cannot record anything twice."""
    return (
        isinstance(error, APIConnectionError)
        and not isinstance(error, APITimeoutError)
        and error.message.startswith("cannot connect")
    )


# ---- entry points ---------------------------------------------------------------------------------------


async def run_batch(
    sample: GuestSample,
    options: BatchOptions,
    store: RunStore,
    *,
    only_failed: bool = False,
    on_progress: ProgressCallback | None = None,
    columnar_copy: bool = True,
) -> BatchSummary:
    """Call the flow for every guest of ``sample`` that has no row in ``store`` yet (resume is built in).

    ``only_failed`` also calls again the guests whose row is not ok, replacing those rows. ``on_progress``
    gets in-memory counts after every write (about ten times a second). Cancelling the awaiting task
    cancels the run: rows written so far stay, and the run is marked ``cancelled`` (resumable).
    """
    runner = _Runner(
        sample, options, store, only_failed=only_failed, on_progress=on_progress, columnar_copy=columnar_copy
    )
    with store.claim():
        return await runner.run()


@dataclass(frozen=True)
class ResumeState:
    """What resuming a run store will do: guests with a result, guests to call, and how many of those were
    in flight when the run stopped (dispatch marks without a result: an upper bound, see the module doc)."""

    total: int
    done: int
    to_call: int
    in_flight: int
    noun: str = "guest"

    def describe(self) -> str:
        """One line for a terminal or the app, said before the resumed run calls anyone."""
        have = "has" if self.done == 1 else "have"
        text = (
            f"resuming: {self.done:,} of {_count(self.total, self.noun)} {have} a result; "
            f"calling the {self.to_call:,} left"
        )
        if self.in_flight:
            were = "was" if self.in_flight == 1 else "were"
            text += (
                f". Up to {self.in_flight:,} of them {were} in flight when the run stopped: the tenant may "
                "already have recorded that first call, and they are called again"
            )
        return text


def resume_state(path: str | Path, *, only_failed: bool = False) -> ResumeState | None:
    """The state of the run store at ``path`` (None if there is none yet), read before a resume."""
    path = Path(path)
    if not path.exists():
        return None
    with RunStore.open(path) as store:
        total = store.meta.total
        done = store.done_rows()
        skip = done - store.failed_rows() if only_failed else done
        marks = store.in_flight_rows() - skip
        noun = _noun(store.meta.provider)
    return ResumeState(total, len(done), max(total - len(skip), 0), len(marks), noun)


def _noun(provider: str) -> str:
    return "identity" if provider == "edge" else "guest"


def _count(n: int, noun: str) -> str:
    """``1 guest``, ``300 guests``, ``2 identities``."""
    if n == 1:
        return f"1 {noun}"
    return f"{n:,} " + (noun[:-1] + "ies" if noun.endswith("y") else noun + "s")


def store_path_for(out: str | Path) -> Path:
    """Where the run store of an output file lives: the file itself for ``.sqlite``/``.db``, else
    ``<out>.sqlite`` beside it (``results.csv`` → ``results.csv.sqlite``), so a resume finds it."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in _OUT_SUFFIXES:
        raise RunStoreError(
            f"--out '{out}' must end in .csv, .parquet or .sqlite (the format follows the name)"
        )
    return out if suffix in (".sqlite", ".db") else out.with_name(out.name + STORE_SUFFIX)


def _open_store(sample: GuestSample, options: BatchOptions, path: str | Path, *, resume: bool) -> RunStore:
    """The store for a run: a new one, or (``resume``) the existing one after checking it is this run."""
    path = Path(path)
    meta = options.run_meta(sample)
    if not (resume and path.exists()):
        return RunStore.create(path, meta)
    store = RunStore.open(path)
    try:
        store.check_same_run(meta)
    except RunStoreError:
        store.close()
        raise
    return store


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (it comes with uvicorn[standard]): measurably faster on the hot path."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run_sync(coro: Coroutine[Any, Any, BatchSummary]) -> BatchSummary:
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(coro)


def run_batch_to_file(
    sample: GuestSample,
    options: BatchOptions,
    out: str | Path,
    *,
    resume: bool = False,
    only_failed: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """Run a batch into ``out`` (``.csv``, ``.parquet`` or ``.sqlite``), for the CLI and scripts.

    The run store is ``store_path_for(out)``; CSV and Parquet are exported from it when the run ends.
    ``progress`` draws a tqdm bar on stderr (done/total, guests/s, ETA, errors). Ctrl+C cancels the run
    (resumable with ``resume=True``) and raises ``KeyboardInterrupt``.
    """
    out = Path(out)
    store_path = store_path_for(out)
    options.check(sample)
    options.check_target()
    store = _open_store(sample, options, store_path, resume=resume or only_failed)
    try:
        with _ProgressBar(enabled=progress) as bar:
            summary = _run_sync(
                # No columnar copy: it serves the app's Analysis page, and writing it holds the whole run
                # in memory (a 100,000-guest CLI run peaked at 401 MB with it, ~150 MB without).
                run_batch(
                    sample,
                    options,
                    store,
                    only_failed=only_failed,
                    on_progress=bar.update,
                    columnar_copy=False,
                )
            )
        if summary.cancelled:
            logger.warning(
                "batch cancelled: resume with --resume to call the %d guests left", summary.missing
            )
        summary = replace(summary, budget_line=_budget_line(store))
        if out != store_path:
            summary = replace(summary, output=store.export(out))
        return summary
    except (KeyboardInterrupt, asyncio.CancelledError):
        logger.warning(
            "batch interrupted: rows so far are in %s; run again with --resume to finish", store_path
        )
        raise
    finally:
        store.close()


def _budget_line(store: RunStore) -> str:
    """The timeout-budget sentence for the run so far (JSS's 400 ms), said at the end of a CLI run (#10)."""
    from flowlab.analysis.budget import budget_sentence, timeout_budget

    if store.progress().ok == 0 or store.meta.provider != "personalize":
        return ""  # JSS's timeout is a callFlows fact; the Edge has no documented equivalent
    return budget_sentence(timeout_budget(store.to_dataframe(["ok", "variant", "latency_ms"])))


class _ProgressBar:
    """A tqdm bar on stderr fed by the runner's counts (never by polling the store)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, progress: Progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm  # type: ignore[import-untyped]

            self.bar = tqdm(total=progress.total, initial=progress.done, unit="guest", file=sys.stderr,
                            dynamic_ncols=True, smoothing=0.1)  # fmt: skip
        self.bar.update(progress.done - self.bar.n)
        errors = " ".join(f"{k}={v}" for k, v in sorted(progress.errors_by_type.items()) if v)
        self.bar.set_postfix_str(
            f"failed={progress.failed}" + (f" ({errors})" if errors else ""), refresh=False
        )


class BatchHandle:
    """A batch running in a background thread with its own event loop (for the Streamlit app).

    Nothing the page does (reruns, widget clicks) touches it; poll ``progress()``, call ``cancel()``.
    """

    def __init__(self, runner: _Runner, store: RunStore) -> None:
        self.store_path = store.path
        self._runner = runner
        self._store = store
        self._final: Progress | None = None
        self.summary: BatchSummary | None = None
        self.error: BaseException | None = None
        self._claim = contextlib.ExitStack()
        self._claim.enter_context(store.claim())  # here, so a second batch on the file fails in the caller
        self._thread = threading.Thread(target=self._main, name="flowlab-batch", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            self.summary = _run_sync(self._runner.run())
        except BaseException as exc:  # reported through .error: a thread has nobody else to tell
            self.error = exc
            logger.exception("batch failed")
        finally:
            with contextlib.suppress(Exception):
                self._final = self._store.progress()
            self._claim.close()
            self._store.close()

    def progress(self) -> Progress:
        """Counts from the run store (SQL aggregates): safe from any thread, any time."""
        final = self._final
        if final is not None:
            return final
        try:
            return self._store.progress()
        except Exception:  # the store closed between the check and the query
            return self._final or Progress(0, 0, 0, 0, {}, 0.0, 0.0, None, "running")

    def cancel(self) -> None:
        """Stop the run soon (calls in flight get a second); it stays resumable."""
        self._runner.cancel()

    @property
    def in_flight_before(self) -> int:
        """For a resume: guests in flight when the run last stopped, called again now (0 until known)."""
        return self._runner.in_flight_before

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends (or ``timeout`` seconds); True if it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def start_batch(
    sample: GuestSample,
    options: BatchOptions,
    store_path: str | Path,
    *,
    resume: bool = False,
    only_failed: bool = False,
) -> BatchHandle:
    """Start a batch in the background and return at once; store problems raise here, before it starts."""
    options.check(sample)
    options.check_target()
    store = _open_store(sample, options, store_path, resume=resume or only_failed)
    try:
        return BatchHandle(_Runner(sample, options, store, only_failed=only_failed), store)
    except BaseException:
        store.close()
        raise
