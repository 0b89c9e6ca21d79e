"""The run store: one SQLite file per batch run, one row per guest, written as results arrive.

Why SQLite: a run must survive a crash and be resumed (design.md, "Nothing is lost"), be read while it is
written (the app polls progress from another thread, or another process), and stay out of memory at 100,000
guests. WAL mode gives all three: readers never block the writer, and a committed transaction survives the
death of the process.

**What a kill -9 can lose.** The batch runner commits in groups: whatever results and dispatch marks are
pending go into one transaction as soon as the previous one ends, so a result is durable a few
milliseconds after it arrives. Before a guest's request leaves, its row is marked in ``dispatched`` and the
mark committed; the transaction that stores its result removes the mark. A process killed outright loses
only the guests in flight, and the marks say which: a resume calls them again and counts them
(``in_flight_rows()``: an upper bound, over by the guests marked ahead in the runner's small reserve whose
request had not left yet, see ``flowlab.batch.runner``; on a live tenant the first call of a guest in flight may
already have been tracked). A guest with a row in the store is never called again by a resume.
(``synchronous=NORMAL``: a power cut or OS crash may also lose the last few committed transactions; a
process crash cannot.)

Tables: ``meta`` (key → JSON: provider, friendlyId, base URL, sample fingerprint, defaults, options,
created, started, finished, status ``running``/``cancelled``/``done``), ``results`` (one row per guest;
``row`` is the sample's row number) and ``dispatched`` (rows whose request may have left without a stored
result). The sample's own columns live in one JSON column, ``extra``, and become real columns in
``to_dataframe()`` and ``export()``, renamed ``sample_<name>`` where they would clash with a result column.

**Two providers, one table** (schema 3). A callFlows row fills ``variant``, ``offers`` and the request
fields (``channel``…); an AEP Edge row (``RunMeta.provider == "edge"``, whose ``friendly_id`` holds the
datastream id) has ``guest`` = the identity's id, ``identity`` = its namespace, and fills ``event_type``,
``segments`` (audience ids over every destination, deduplicated and sorted), ``destinations`` (alias →
``{"segments": [ids], "attributes": {…}}``) and ``attributes`` (every destination's attributes merged,
name → value). The other provider's columns stay empty (``""``, ``segments``/``offers`` ``[]``). In
``to_dataframe()``, ``batches()`` and Parquet exports ``offers`` and ``segments`` are **lists of text**;
``destinations`` and ``attributes`` are **JSON text** (``json.loads`` them; a JSON object has no one Arrow
type, attribute values mix numbers and text). CSV exports write the lists as JSON text too. Older stores
(schema 1 and 2) still open: the Edge columns are added to them, empty, when they are opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import orjson

from flowlab import __version__
from flowlab.csvsafe import safe_table
from flowlab.errors import RunStoreError
from flowlab.permissions import create_private, private_dir
from flowlab.redaction import redact_url

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "ERROR_TYPES",
    "MAX_BODY_CHARS",
    "READABLE_SCHEMAS",
    "RESULT_COLUMNS",
    "SCHEMA_VERSION",
    "SECRET_HEADERS",
    "SECRET_HEADER_PARTS",
    "GuestResult",
    "Progress",
    "RunMeta",
    "RunStore",
    "recorded_headers",
]

logger = logging.getLogger(__name__)

#: 3 added the Edge columns (``event_type``, ``segments``, ``destinations``, ``attributes``; added empty to
#: older stores when opened); 2 added ``headers`` and ``body_exact`` (what replay needs); 1 still opens (no
#: headers were recorded).
SCHEMA_VERSION = 3
READABLE_SCHEMAS = (1, 2, 3)
#: Longer bodies are cut (and marked) in the store; variant and offers are read from the whole body first.
MAX_BODY_CHARS = 100_000
#: Response headers a recording never keeps, and name parts that mark a credential (``x-auth-token``…).
SECRET_HEADERS = frozenset({"set-cookie", "set-cookie2", "cookie", "authorization", "proxy-authorization"})
SECRET_HEADER_PARTS = ("auth", "token", "secret", "password", "api-key", "apikey", "session", "cookie")
#: ``error_type`` values besides ``http_<status>``; "" means the guest got a 2xx answer.
ERROR_TYPES: tuple[str, ...] = ("", "timeout", "connection", "invalid_request")
#: The result columns, in table order (``extra`` holds the sample's own columns as JSON).
RESULT_COLUMNS: tuple[str, ...] = (
    "row",
    "guest",
    "identity",
    "status_code",
    "ok",
    "variant",
    "variant_source",
    "offers",
    "offer_count",
    "latency_ms",
    "attempts",
    "error",
    "error_type",
    "body",
    "execution_ref",
    "finished_at",
    "channel",
    "pointOfSale",
    "language",
    "currencyCode",
    "event_type",
    "segments",
    "destinations",
    "attributes",
)
#: Result columns added after schema 2, with the value older rows read as.
_ADDED_COLUMNS: dict[str, str] = {
    "event_type": "''",
    "segments": "'[]'",
    "destinations": "''",
    "attributes": "''",
}
#: Result columns that hold a JSON list of text: lists in read-outs, JSON text in CSV.
_LIST_COLUMNS: tuple[str, ...] = ("offers", "segments")
_SQL_TYPES = {
    "row": "INTEGER PRIMARY KEY",
    "status_code": "INTEGER",
    "ok": "INTEGER NOT NULL",
    "offer_count": "INTEGER",
    "latency_ms": "REAL",
    "attempts": "INTEGER",
    "finished_at": "REAL",
}
_QUOTED = ", ".join(f'"{c}"' for c in RESULT_COLUMNS)
_COLUMN_DEFS = ", ".join(f'"{c}" {_SQL_TYPES.get(c, "TEXT")}' for c in RESULT_COLUMNS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results ({_COLUMN_DEFS}, extra TEXT, headers TEXT, body_exact INTEGER);
CREATE INDEX IF NOT EXISTS results_progress ON results (ok, error_type, finished_at);
CREATE TABLE IF NOT EXISTS dispatched (row INTEGER PRIMARY KEY, at REAL NOT NULL);
"""
_INSERT = (
    f"INSERT OR REPLACE INTO results ({_QUOTED}, extra, headers, body_exact) "
    f"VALUES ({', '.join('?' * (len(RESULT_COLUMNS) + 3))})"
)
#: a schema-1 store (resumed by this version) has no ``headers`` or ``body_exact``: its rows leave them out
_INSERT_V1 = (
    f"INSERT OR REPLACE INTO results ({_QUOTED}, extra) VALUES ({', '.join('?' * (len(RESULT_COLUMNS) + 1))})"
)
_MARK = "INSERT OR REPLACE INTO dispatched (row, at) VALUES (?, ?)"
_UNMARK = "DELETE FROM dispatched WHERE row = ?"
_RATE_WINDOW_S = 10.0
_STATUSES = ("running", "cancelled", "done")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(slots=True)
class GuestResult:
    """What one guest's call came to: the row the store keeps (``offer_count`` is ``len(offers)``).

    Not frozen on purpose: one is made per request, and a frozen 20-field dataclass costs 6x to build.
    """

    row: int
    guest: str
    identity: str
    status_code: int | None
    ok: bool
    variant: str = ""
    variant_source: str = ""
    offers: Sequence[str] = ()
    latency_ms: float | None = None
    attempts: int = 0
    error: str = ""
    error_type: str = ""
    body: str = ""
    execution_ref: str = ""
    finished_at: float = 0.0
    channel: str = ""
    point_of_sale: str = ""
    language: str = ""
    currency_code: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: the response's headers as received (``recorded_headers`` drops the secrets); None: no response
    headers: Iterable[tuple[str, str]] | None = None
    #: AEP Edge rows only (see the module docstring); empty for callFlows rows
    event_type: str = ""
    segments: Sequence[str] = ()
    destinations: Mapping[str, Any] | None = None
    attributes: Mapping[str, Any] | None = None

    def as_sql(self) -> tuple[Any, ...]:
        """The row's values in ``RESULT_COLUMNS`` order, then ``extra``, ``headers`` (JSON), ``body_exact``.

        The Edge columns of a callFlows row cost no serialisation (constants), so its hot path is unchanged.

        ``body_exact`` says the stored body is the whole answer as received: not cut, and no byte that was
        not UTF-8 (decoded as U+FFFD); replay serves only such bodies (``flowlab.sandbox.personalize.replay``).
        """
        cut = len(self.body) > MAX_BODY_CHARS
        body = self.body[:MAX_BODY_CHARS] + "…[truncated]" if cut else self.body
        offers = orjson.dumps(list(self.offers)).decode()
        extra = orjson.dumps(self.extra, option=orjson.OPT_NON_STR_KEYS).decode()
        headers = None if self.headers is None else orjson.dumps(recorded_headers(self.headers)).decode()
        exact = None if self.status_code is None else int(not cut and "\ufffd" not in self.body)
        segments = orjson.dumps(list(self.segments)).decode() if self.segments else "[]"
        destinations = "" if self.destinations is None else orjson.dumps(self.destinations).decode()
        attributes = "" if self.attributes is None else orjson.dumps(self.attributes).decode()
        return (
            self.row, self.guest, self.identity, self.status_code, int(self.ok), self.variant,
            self.variant_source, offers, len(self.offers), self.latency_ms, self.attempts, self.error,
            self.error_type, body, self.execution_ref, self.finished_at or time.time(), self.channel,
            self.point_of_sale, self.language, self.currency_code, self.event_type, segments, destinations,
            attributes, extra, headers, exact,
        )  # fmt: skip


def recorded_headers(headers: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Response headers as a recording keeps them: in order, repeats kept, no cookie or credential."""
    return [
        [name, value]
        for name, value in headers
        if (low := name.lower()) not in SECRET_HEADERS and not any(p in low for p in SECRET_HEADER_PARTS)
    ]


@dataclass(frozen=True)
class RunMeta:
    """What a run is: target, flow, sample, request defaults and options; ``differences`` guards a resume.

    ``provider`` is ``personalize`` (callFlows; ``friendly_id`` is the flow) or ``edge`` (AEP Edge;
    ``friendly_id`` holds the datastream id).
    """

    friendly_id: str
    base_url: str
    sample_fingerprint: str
    total: int
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    extra_columns: tuple[str, ...] = ()
    status: str = "running"
    created: str = ""
    started: float = 0.0
    finished: str = ""
    provider: str = "personalize"
    #: a simulated run (``batch --simulate``): a sandbox ran the flow in any status, not only live (#11)
    simulate: bool = False

    def differences(self, other: RunMeta) -> list[str]:
        """What makes ``other`` a different run (flow, target, sample, request defaults); empty if none."""
        checks = (
            ("provider", self.provider, other.provider),
            (
                "datastream id" if self.provider == "edge" else "friendlyId",
                self.friendly_id,
                other.friendly_id,
            ),
            ("base URL", self.base_url.rstrip("/"), other.base_url.rstrip("/")),
            ("guest sample", self.sample_fingerprint, other.sample_fingerprint),
            ("request defaults", _clean(self.defaults), _clean(other.defaults)),
            ("simulate", self.simulate, other.simulate),
        )
        return [
            f"{name} is {theirs!r}, the stored run's is {ours!r}"
            for name, ours, theirs in checks
            if ours != theirs
        ]

    def to_record(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "friendlyId": self.friendly_id,
            "baseUrl": redact_url(self.base_url),
            "sample": self.sample_fingerprint,
            "total": self.total,
            "defaults": _clean(self.defaults),
            "options": dict(self.options),
            "extraColumns": list(self.extra_columns),
            "status": self.status,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            **({"simulate": True} if self.simulate else {}),
        }

    @classmethod
    def from_record(cls, raw: Mapping[str, Any]) -> RunMeta:
        return cls(
            friendly_id=raw.get("friendlyId", ""),
            base_url=raw.get("baseUrl", ""),
            sample_fingerprint=raw.get("sample", ""),
            total=int(raw.get("total", 0)),
            defaults=raw.get("defaults", {}),
            options=raw.get("options", {}),
            extra_columns=tuple(raw.get("extraColumns", ())),
            status=raw.get("status", "running"),
            created=raw.get("created", ""),
            started=float(raw.get("started") or 0.0),
            finished=raw.get("finished", ""),
            provider=raw.get("provider") or "personalize",
            simulate=raw.get("simulate") is True,
        )


def _clean(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults as they shape requests: unset (None) values are left out."""
    return {k: v for k, v in defaults.items() if v is not None}


@dataclass(frozen=True)
class Progress:
    """A run's progress, from the store: counts, errors by type, recent rate (guests/s) and ETA (s)."""

    total: int
    done: int
    ok: int
    failed: int
    errors_by_type: Mapping[str, int]
    started: float
    rps: float
    eta_s: float | None
    status: str = "running"

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0


class RunStore:
    """One run's SQLite file. Thread-safe: one connection behind a lock; read-outs use their own.

    >>> meta = RunMeta("checkout_ab_test", url, sample.fingerprint, len(sample))  # doctest: +SKIP
    >>> store = RunStore.create("run.sqlite", meta)                              # doctest: +SKIP
    >>> store.progress().done, store.to_dataframe().head()                       # doctest: +SKIP
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, schema: int = SCHEMA_VERSION) -> None:
        self.path = path
        self._conn = conn
        self.schema = schema  # 1: an old store, resumed without recording headers (its table has none)
        self._lock = threading.Lock()
        self._claim: int | None = None

    # ---- opening --------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, meta: RunMeta) -> RunStore:
        """A new store for ``meta``.

        Refuses a file that holds an unfinished run with rows (resume it instead) or is not a run store; a
        finished run (or one that stopped before its first row) is replaced, as any output file would be.
        """
        path = Path(path)
        if path.exists():
            cls._remove_finished(path)
        private_dir(path.parent, tighten=False)
        create_private(path)  # 0600 before SQLite opens it: its -wal and -shm files take the same mode
        store = cls(path, cls._connect(path))
        record = meta.to_record()
        record.update(
            created=meta.created or _now_iso(), started=meta.started or time.time(), status="running"
        )
        store._put_meta({**record, "schema": SCHEMA_VERSION, "flowlab": __version__})
        return store

    @classmethod
    def _remove_finished(cls, path: Path) -> None:
        with cls.open(path) as old, old.claim():
            progress = old.progress()
            if progress.status != "done" and progress.done:  # an unfinished run with rows: keep it
                raise RunStoreError(
                    f"{path} holds an unfinished run ({progress.done} of {progress.total} guests, "
                    f"{progress.status}): resume it (--resume), or delete the file to start over"
                )
        logger.info("replacing the finished run in %s", path)
        for suffix in ("", "-wal", "-shm", ".columns.parquet"):  # the last: its columnar copy
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{path}{suffix}")

    @classmethod
    def open(cls, path: str | Path) -> RunStore:
        """An existing store: to resume it, poll its progress, or analyse it."""
        path = Path(path)
        if not path.is_file():
            raise RunStoreError(f"no run store at {path}: start a run without --resume first")
        schema = _schema_of(path)
        if schema not in READABLE_SCHEMAS:
            what = "is not a Flow Lab run store" if schema is None else f"has store schema {schema}"
            raise RunStoreError(f"{path} {what}; choose another file")
        return cls(path, cls._connect(path), schema)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            present = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
            for column, default in _ADDED_COLUMNS.items():  # an older store: its rows read as empty
                if column not in present:
                    conn.execute(f'ALTER TABLE results ADD COLUMN "{column}" TEXT DEFAULT {default}')
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        with self._lock:
            self._release_claim()
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- one writer at a time -------------------------------------------------------------------------

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the file for one batch: another batch on it (in any process) gets a ``RunStoreError``.

        An advisory ``flock`` on a lock file beside the store (``<store>-claim``): the OS drops it when the
        process dies, even by kill -9. Not on the store file itself: closing any descriptor of a file drops
        every POSIX lock the process holds on it, SQLite's included, so the check that a run is held
        (``runlog``, in the process that runs the batch) let another process's reader take the store for
        unused, checkpoint and delete the WAL that the batch was still committing to (#8).
        """
        if self._claim is not None:
            raise RunStoreError(f"{self.path} is already being written by this process")
        fd = os.open(self.path.with_name(self.path.name + "-claim"), os.O_RDWR | os.O_CREAT, 0o600)
        if sys.platform != "win32":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunStoreError(
                    f"{self.path} is being written by another batch; wait for it or cancel it"
                ) from None
        self._claim = fd
        try:
            yield
        finally:
            self._release_claim()

    def _release_claim(self) -> None:
        if self._claim is not None:
            os.close(self._claim)  # closing the descriptor drops the lock
            self._claim = None

    # ---- meta -----------------------------------------------------------------------------------------

    def _put_meta(self, values: Mapping[str, Any]) -> None:
        rows = [(k, orjson.dumps(v).decode()) for k, v in values.items()]
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)
            self._conn.execute("COMMIT")

    def _get_meta(self) -> dict[str, Any]:
        with self._lock:
            return {k: orjson.loads(v) for k, v in self._conn.execute("SELECT key, value FROM meta")}

    @property
    def meta(self) -> RunMeta:
        return RunMeta.from_record(self._get_meta())

    def check_same_run(self, meta: RunMeta) -> None:
        """Raise ``RunStoreError`` unless ``meta`` is the run this store holds (checked before a resume)."""
        differences = self.meta.differences(meta)
        if differences:
            raise RunStoreError(
                f"{self.path} holds another run, so this one cannot resume it: {'; '.join(differences)}. "
                "Use another output file, or the same flow, target, guests and defaults"
            )

    def mark_started(self, options: Mapping[str, Any] | None = None) -> None:
        """Record that a (re)run starts now: the rate and ETA count from here."""
        values: dict[str, Any] = {"status": "running", "started": time.time(), "finished": ""}
        if options is not None:
            values["options"] = dict(options)
        self.columns_path.unlink(missing_ok=True)  # rows will change: the columnar copy would be stale
        self._put_meta(values)

    def set_status(self, status: str, *, columnar_copy: bool = True) -> None:
        """``running``, ``cancelled`` or ``done`` (the latter two record the finish time).

        ``done`` also writes the columnar copy (:meth:`write_columns`) unless ``columnar_copy`` is false.
        """
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {', '.join(_STATUSES)}, not {status!r}")
        self._put_meta({"status": status, "finished": "" if status == "running" else _now_iso()})
        if status == "done" and columnar_copy:
            self.write_columns()

    # ---- rows -----------------------------------------------------------------------------------------

    def write(self, results: Iterable[GuestResult]) -> int:
        """Store results in one transaction (an existing row is replaced); returns how many."""
        return self.write_rows([r.as_sql() for r in results])

    def write_rows(
        self,
        rows: Sequence[tuple[Any, ...]],
        dispatched: Sequence[tuple[int, float]] = (),
        released: Sequence[int] = (),
    ) -> int:
        """Store rows made by ``GuestResult.as_sql()`` and dispatch marks, in one transaction (a group).

        A stored row clears its guest's mark; ``dispatched`` adds marks ``(row, time)`` for requests about
        to leave; ``released`` drops the marks of guests whose request never left. The runner converts rows
        beforehand, so a group costs only SQLite's own work (a few hundred µs).
        """
        if rows or dispatched or released:
            with self._lock:
                self._conn.execute("BEGIN")
                try:  # in the order these happen to a guest: marked, then answered or released
                    if dispatched:
                        self._conn.executemany(_MARK, dispatched)
                    if rows:
                        if self.schema == 1:  # an old store: no headers or body_exact columns
                            self._conn.executemany(_INSERT_V1, [r[: len(RESULT_COLUMNS) + 1] for r in rows])
                        else:
                            self._conn.executemany(_INSERT, rows)
                        self._conn.executemany(_UNMARK, [(r[0],) for r in rows])
                    if released:
                        self._conn.executemany(_UNMARK, [(r,) for r in released])
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
        return len(rows)

    def in_flight_rows(self) -> set[int]:
        """Rows marked as dispatched with no result stored since: the guests in flight when the last
        session stopped. Their first call may have reached the tenant; a resume calls them again."""
        with self._lock:
            return {r for (r,) in self._conn.execute("SELECT row FROM dispatched")}

    def done_rows(self) -> set[int]:
        """Row numbers that have a result, ok or not: a resume never calls them again."""
        with self._lock:
            return {r for (r,) in self._conn.execute("SELECT row FROM results")}

    def failed_rows(self) -> set[int]:
        """Row numbers whose result is not ok: what "retry only failed guests" calls again."""
        with self._lock:
            return {r for (r,) in self._conn.execute("SELECT row FROM results WHERE ok = 0")}

    def progress(self) -> Progress:
        """Counts from SQL aggregates over a covering index: cheap enough to poll from a UI."""
        meta = self.meta
        now = time.time()
        since = max(meta.started, now - _RATE_WINDOW_S)
        with self._lock:
            done, ok, recent = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(ok), 0), COALESCE(SUM(finished_at >= ?), 0) FROM results",
                (since,),
            ).fetchone()
            errors = dict(
                self._conn.execute("SELECT error_type, COUNT(*) FROM results WHERE ok = 0 GROUP BY 1")
            )
        rps = recent / (now - since) if meta.status == "running" and now > since else 0.0
        eta = (meta.total - done) / rps if rps > 0 else None
        return Progress(meta.total, done, ok, done - ok, errors, meta.started, rps, eta, meta.status)

    # ---- reading out ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection of its own: one consistent snapshot, never in the writer's way."""
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("BEGIN")
            yield conn
        finally:
            conn.close()

    def extra_types(self) -> dict[str, str]:
        """The JSON kind of each sample column over all rows: ``integer``, ``real``, ``bool`` or ``text``."""
        with self._reader() as conn:
            return self._extra_types(conn)

    def _extra_types(self, conn: sqlite3.Connection) -> dict[str, str]:
        query = "SELECT j.key, group_concat(DISTINCT j.type) FROM results, json_each(results.extra) AS j GROUP BY 1"
        found: dict[str, str] = dict(conn.execute(query).fetchall())
        order = self.meta.extra_columns
        keys = [k for k in order if k in found] + sorted(k for k in found if k not in order)
        return {k: _json_kind(set(found[k].split(",")) - {"null"}) for k in keys}

    def batches(
        self, columns: Sequence[str] | None = None, *, chunk_rows: int = 20_000
    ) -> Iterator[pa.Table]:
        """The results in row order as Arrow tables of up to ``chunk_rows`` rows, so memory stays flat.

        The first table may be empty (a run with no rows yet), so callers always see the columns.
        """
        with self._reader() as conn:
            layout = _Layout.build(self._extra_types(conn), columns)
            cursor = conn.execute(f"SELECT {layout.select} FROM results ORDER BY row")
            rows = cursor.fetchmany(chunk_rows)
            yield layout.table(rows)
            while rows := cursor.fetchmany(chunk_rows):
                yield layout.table(rows)

    def to_dataframe(
        self,
        columns: Sequence[str] | None = None,
        *,
        exclude: Sequence[str] = (),
        chunk_rows: int = 20_000,
        shared_offers: bool = False,
    ) -> pd.DataFrame:
        """The results as a DataFrame, one row per guest, sample columns expanded, ``offers`` as lists.

        ``columns`` picks columns (in that order); ``exclude`` leaves result columns out of the default
        set, e.g. ``body``, which is most of a run's bytes and no analysis reads.

        Read column by column, not row by row: SQLite folds each column of a chunk into one JSON array
        (``json_group_array``), orjson parses it in one call and Arrow takes the list, so no tuple is built
        per row; ``offers`` and the sample columns (``extra``) are parsed once per distinct text, which
        also gives the sample columns' kinds without a pass over every row's JSON. ``shared_offers=True``
        gives rows with equal offers one shared list (for readers that never modify a cell, like the app's
        cached frame: 100,000 list copies cost ~0.1 s). A finished run is read from its columnar copy
        (:meth:`write_columns`) when the columns asked for are in it. REAL columns are fetched
        plainly, since SQLite's JSON prints 15 digits and would round them. ``segments`` comes back as lists
        like ``offers``; ``destinations`` and ``attributes`` as JSON text (module docstring). At 100,000 guests this is
        1.5-2x faster than the row-by-row read, whose per-row Python work it skips; what remains is mostly
        SQLite's own scan (``bench/analysis_page.py``).
        """
        import pandas as pd
        import pyarrow as pa

        if "body" in exclude or (columns is not None and "body" not in columns):
            copy = None
            if self.columns_path.is_file():
                copy = self._read_columns(columns, exclude, shared_offers)
            if copy is not None:
                return copy
        extra_order = self.meta.extra_columns
        fetched = [c for c in RESULT_COLUMNS if c not in exclude] if columns is None else columns
        with self._reader() as conn:
            read = _ColumnRead.fetch(conn, fetched, chunk_rows, extra=columns is None)
        kinds = read.extra_kinds(extra_order)
        if columns is None:
            columns = [c for c in _Layout.build(kinds, None).wanted if c not in exclude]
        layout = _Layout.build(kinds, columns)
        table = read.table(layout)
        frame: pd.DataFrame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        for column in _list_columns(layout.wanted):  # in table order, so each lands at its index
            series = read.list_series(column, shared=shared_offers)
            frame.insert(layout.wanted.index(column), column, series)
        return frame

    # ---- the columnar copy (a finished run's fast read) -------------------------------------------------

    @property
    def columns_path(self) -> Path:
        """Where a finished run keeps its columnar copy (``run.sqlite.columns.parquet``)."""
        return self.path.with_name(self.path.name + ".columns.parquet")

    def write_columns(self, *, chunk_rows: int = 20_000) -> Path | None:
        """Write the finished run's columnar copy: every ``to_dataframe`` column but ``body`` in Parquet.

        Why: the first look at a big run is mostly SQLite's scan and the per-row JSON (about 1 s at
        100,000 guests on a busy machine); ``pyarrow`` reads this copy in tens of milliseconds
        (``bench/analysis_page.py``). ``set_status("done")`` writes it; ``to_dataframe`` uses it while it
        matches the store (same finish time and row count) and falls back to SQLite otherwise (a running
        run, an old run, a resumed one: ``mark_started`` removes it). Best effort: a failure is logged, the
        store stays the truth, and None is returned. Offers and segments are kept as JSON text,
        dictionary-encoded.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        partial = self.columns_path.with_name(self.columns_path.name + ".partial")
        try:
            meta = self.meta
            with self._reader() as conn:
                rows = conn.execute("SELECT count(*) FROM results").fetchone()[0]
                read = _ColumnRead.fetch(conn, [c for c in RESULT_COLUMNS if c != "body"], chunk_rows, True)
            kinds = read.extra_kinds(meta.extra_columns)
            columns = [c for c in _Layout.build(kinds, None).wanted if c != "body"]
            table = read.table(_Layout.build(kinds, columns))
            for column in _list_columns(columns):
                texts = pa.array(read.values[column], pa.string()).dictionary_encode()
                table = table.add_column(columns.index(column), column, texts)
            stamp = orjson.dumps({"finished": meta.finished, "rows": rows, "version": __version__})
            table = table.replace_schema_metadata({b"flowlab": stamp})
            create_private(partial)
            pq.write_table(table, partial, compression="snappy")
            os.replace(partial, self.columns_path)
            return self.columns_path
        except (OSError, sqlite3.Error, pa.ArrowException, ValueError) as exc:
            partial.unlink(missing_ok=True)
            logger.warning(
                "no columnar copy of %s (the analysis reads the store instead): %s", self.path, exc
            )
            return None

    def _read_columns(
        self, columns: Sequence[str] | None, exclude: Sequence[str], shared_offers: bool
    ) -> pd.DataFrame | None:
        """``to_dataframe``'s answer from the columnar copy, or None when there is none that matches."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(self.columns_path)
        except (OSError, pa.ArrowException):
            return None
        meta = self.meta
        stamp = orjson.loads((schema.metadata or {}).get(b"flowlab", b"{}"))
        if meta.status != "done" or stamp.get("finished") != meta.finished:
            return None
        wanted = [c for c in schema.names if c not in exclude] if columns is None else list(columns)
        if any(c not in schema.names for c in wanted):
            return None
        with self._reader() as conn:
            if conn.execute("SELECT count(*) FROM results").fetchone()[0] != stamp.get("rows"):
                return None
        table = pq.read_table(self.columns_path, columns=wanted, memory_map=True)
        lists = {c: table.column(c).combine_chunks() for c in _list_columns(wanted)}
        if lists:
            table = table.drop_columns(list(lists))
        frame: pd.DataFrame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        for column, encoded in lists.items():
            texts = encoded.dictionary.to_pylist()
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            frame.insert(wanted.index(column), column, _offer_series(texts, codes, shared_offers))
        return frame

    def export(self, path: str | Path, *, chunk_rows: int = 20_000) -> Path:
        """Write the results to ``.csv`` (offers and segments as JSON text) or ``.parquet``, chunk by chunk.

        The file appears complete or not at all (written beside it, then renamed), with mode 0600. CSV
        text cells that a spreadsheet would run as a formula are neutralised (``flowlab.csvsafe``);
        Parquet keeps every value exactly.
        """
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise RunStoreError(f"cannot export to '{path.name}': use a .csv or .parquet file name")
        partial = create_private(path.with_name(path.name + ".partial"))
        writer: Any = None
        try:
            for table in self.batches(chunk_rows=chunk_rows):
                if suffix == ".csv":
                    table = safe_table(_lists_as_json(table))
                    writer = writer or pa_csv.CSVWriter(str(partial), table.schema)
                else:
                    writer = writer or pq.ParquetWriter(str(partial), table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        os.replace(partial, path)
        return path


def _schema_of(path: Path) -> Any:
    """The store schema version a file declares, or None; a read-only look that never changes the file."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError:  # not SQLite, or SQLite without our meta table
        return None
    return orjson.loads(row[0]) if row else None


# ---- Arrow conversion -----------------------------------------------------------------------------------


def _json_kind(types: set[str]) -> str:
    if types and types <= {"integer"}:
        return "integer"
    if types and types <= {"integer", "real"}:
        return "real"
    if types and types <= {"true", "false"}:
        return "bool"
    return "text"


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else str(value)


def _as_real(value: Any) -> float | None:
    return None if value is None else float(value)


def _same(value: Any) -> Any:
    return value


_COERCE = {"integer": _same, "real": _as_real, "bool": _same, "text": _as_text}


def _arrow_types() -> tuple[dict[str, Any], dict[str, Any]]:
    import pyarrow as pa

    fixed = {
        "row": pa.int64(),
        "status_code": pa.int64(),
        "ok": pa.bool_(),
        "offers": pa.list_(pa.string()),
        "segments": pa.list_(pa.string()),
        "offer_count": pa.int64(),
        "latency_ms": pa.float64(),
        "attempts": pa.int64(),
        "finished_at": pa.timestamp("ms", tz="UTC"),
    }
    kinds = {"integer": pa.int64(), "real": pa.float64(), "bool": pa.bool_(), "text": pa.string()}
    return fixed, kinds


@dataclass(frozen=True)
class _Layout:
    """Which columns a read-out selects and their Arrow types, worked out once per read-out."""

    columns: list[str]  # result columns to select, in table order
    extras: dict[str, tuple[str, str]]  # sample column -> (output name, JSON kind)
    wanted: list[str]  # output columns, in the caller's order
    schema: pa.Schema

    @classmethod
    def build(cls, extra_kinds: Mapping[str, str], columns: Sequence[str] | None) -> _Layout:
        import pyarrow as pa

        fixed, kinds = _arrow_types()
        names = {k: (f"sample_{k}" if k in RESULT_COLUMNS or k == "extra" else k) for k in extra_kinds}
        wanted = list(columns) if columns is not None else [*RESULT_COLUMNS, *names.values()]
        unknown = [c for c in wanted if c not in RESULT_COLUMNS and c not in names.values()]
        if unknown:
            raise KeyError(f"no column {', '.join(map(repr, unknown))} in this run")
        picked = [c for c in RESULT_COLUMNS if c in wanted]
        extras = {k: (n, extra_kinds[k]) for k, n in names.items() if n in wanted}
        fields = [pa.field(c, fixed.get(c, pa.string())) for c in picked]
        fields += [pa.field(name, kinds[kind]) for name, kind in extras.values()]
        return cls(picked, extras, wanted, pa.schema(fields))

    @property
    def select(self) -> str:
        return ", ".join([*(f'"{c}"' for c in self.columns), "extra"])

    def table(self, rows: Sequence[tuple[Any, ...]]) -> pa.Table:
        import pyarrow as pa

        data: dict[str, list[Any]] = {}
        for index, column in enumerate(self.columns):
            values = [r[index] for r in rows]
            if column in _LIST_COLUMNS:
                values = [orjson.loads(v) if v else [] for v in values]
            elif column == "ok":
                values = [bool(v) for v in values]
            elif column == "finished_at":
                values = [None if v is None else int(v * 1000) for v in values]
            data[column] = values
        if self.extras:
            parsed = [orjson.loads(r[-1]) if r[-1] else {} for r in rows]
            for key, (name, kind) in self.extras.items():
                coerce = _COERCE[kind]
                data[name] = [coerce(p.get(key)) for p in parsed]
        return pa.Table.from_pydict(data, schema=self.schema).select(self.wanted)


#: Columns fetched as plain values: SQLite's JSON prints REALs with 15 significant digits (not round-trip).
_REAL_COLUMNS = frozenset(c for c, t in _SQL_TYPES.items() if t == "REAL")
_JSON_TYPES: dict[type, str] = {type(None): "null", int: "integer", float: "real", str: "text"}


def _json_type(value: Any) -> str:
    """The name SQLite's ``json_type`` gives a parsed JSON value (so kinds match ``extra_types()``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return _JSON_TYPES.get(type(value), "text")


def _distinct(texts: Sequence[Any]) -> tuple[list[int], list[Any]]:
    """Codes per row and the distinct texts, in order of first sight (a run repeats a few texts)."""
    index: dict[Any, int] = {}
    codes = [index.setdefault(t, len(index)) for t in texts]
    return codes, list(index)


@dataclass(frozen=True)
class _ColumnRead:
    """One snapshot of the results, read column by column (why: ``RunStore.to_dataframe``)."""

    values: dict[str, list[Any]]  # result column -> values in row order (list columns as JSON text)
    extra_codes: list[int]  # per row: index into ``extras``
    extras: list[dict[str, Any]]  # the distinct ``extra`` objects, parsed

    @classmethod
    def fetch(
        cls, conn: sqlite3.Connection, columns: Sequence[str] | None, chunk_rows: int, extra: bool = False
    ) -> _ColumnRead:
        """Read ``columns`` (None: all), and the sample columns when any is asked for (or ``extra``)."""
        picked = [c for c in RESULT_COLUMNS if columns is None or c in columns]
        with_extra = extra or columns is None or any(c not in RESULT_COLUMNS for c in columns)
        folded = ["row", *(c for c in picked if c != "row" and c not in _REAL_COLUMNS)]
        plain = [c for c in picked if c in _REAL_COLUMNS]
        inner = ", ".join([*(f'"{c}"' for c in folded), *(["extra"] if with_extra else [])])
        outer = ", ".join(
            [
                *(f'json_group_array("{c}")' for c in folded),
                *(["json_group_array(extra)"] if with_extra else []),
            ]
        )
        page = "FROM results WHERE row > ? ORDER BY row LIMIT ?"
        fold_sql = f"SELECT {outer} FROM (SELECT {inner} {page})"
        plain_sql = "SELECT " + ", ".join(f'"{c}"' for c in plain) + f" {page}"
        values: dict[str, list[Any]] = {c: [] for c in [*folded, *plain]}
        extra_texts: list[Any] = []
        last = -(2**63)
        while True:
            arrays = [orjson.loads(text) for text in conn.execute(fold_sql, (last, chunk_rows)).fetchone()]
            rows = arrays[0]
            if not rows:
                break
            order = _row_order(rows)
            for name, array in zip(folded, arrays, strict=False):
                values[name] += array if order is None else [array[i] for i in order]
            if with_extra:
                extra_texts += arrays[-1] if order is None else [arrays[-1][i] for i in order]
            if plain:  # the same page of the same snapshot, in row order
                fetched = conn.execute(plain_sql, (last, chunk_rows)).fetchall()
                for name, column in zip(plain, zip(*fetched, strict=True), strict=True):
                    values[name] += column
            last = max(rows)
            if len(rows) < chunk_rows:
                break
        codes, texts = _distinct(extra_texts)
        extras = [parsed if isinstance(parsed := orjson.loads(t) if t else {}, dict) else {} for t in texts]
        return cls({c: values[c] for c in picked}, codes, extras)

    def extra_kinds(self, order: Sequence[str]) -> dict[str, str]:
        """Each sample column's kind, as ``RunStore.extra_types`` would say, from the distinct objects."""
        found: dict[str, set[str]] = {}
        for extra in self.extras:
            for key, value in extra.items():
                found.setdefault(key, set()).add(_json_type(value))
        keys = [k for k in order if k in found] + sorted(k for k in found if k not in order)
        return {k: _json_kind(found[k] - {"null"}) for k in keys}

    def table(self, layout: _Layout) -> pa.Table:
        """Everything but the list columns (see ``list_series``) as Arrow, in the layout's order and types."""
        import pyarrow as pa
        import pyarrow.compute as pc

        arrays: dict[str, pa.Array] = {}
        for column in layout.columns:
            if column in _LIST_COLUMNS:
                continue
            values, kind = self.values[column], layout.schema.field(column).type
            if column == "ok":
                arrays[column] = pc.not_equal(pa.array(values, pa.int64()), 0)
            elif column == "finished_at":
                arrays[column] = pa.array([None if v is None else int(v * 1000) for v in values], kind)
            else:
                arrays[column] = pa.array(values, kind)
        for key, (name, kind_name) in layout.extras.items():
            coerce = _COERCE[kind_name]
            distinct = [coerce(extra.get(key)) for extra in self.extras]
            arrays[name] = pa.array([distinct[c] for c in self.extra_codes], layout.schema.field(name).type)
        wanted = [c for c in layout.wanted if c not in _LIST_COLUMNS]
        return pa.table(
            {c: arrays[c] for c in wanted}, schema=pa.schema([layout.schema.field(c) for c in wanted])
        )

    def list_series(self, column: str = "offers", *, shared: bool = False) -> pd.Series:
        """A list column (``offers``, ``segments``) as one list per row, each distinct JSON text parsed once
        (and copied per row unless ``shared``)."""
        codes, texts = _distinct(self.values[column])
        return _offer_series(texts, codes, shared)


def _list_columns(columns: Sequence[str]) -> list[str]:
    """The list columns among ``columns``, in the order they appear there."""
    return [c for c in columns if c in _LIST_COLUMNS]


def _offer_series(texts: Sequence[str | None], codes: Any, shared: bool) -> pd.Series:
    """One list per row from the distinct JSON texts and each row's index into them."""
    import numpy as np
    import pandas as pd

    parsed = [orjson.loads(t) if t else [] for t in texts]
    if not shared:
        return pd.Series(list(map(list.copy, map(parsed.__getitem__, codes))), dtype=object)
    distinct = np.empty(len(parsed), dtype=object)
    for i, value in enumerate(parsed):  # item by item: equal-length lists must not become a 2-D array
        distinct[i] = value
    return pd.Series(distinct[np.asarray(codes, dtype=np.intp)], dtype=object)


def _row_order(rows: Sequence[int]) -> list[int] | None:
    """None when a folded page came in row order (as SQLite does); else the positions that sort it."""
    if rows == sorted(rows):  # row is the primary key: no two are equal
        return None
    return sorted(range(len(rows)), key=rows.__getitem__)


def _lists_as_json(table: pa.Table) -> pa.Table:
    """CSV has no lists: ``offers`` and ``segments`` are written as JSON text, as the store keeps them."""
    import pyarrow as pa

    for column in _list_columns(table.column_names):
        values = [orjson.dumps(v).decode() for v in table.column(column).to_pylist()]
        index = table.column_names.index(column)
        table = table.set_column(index, pa.field(column, pa.string()), pa.array(values, pa.string()))
    return table


_offers_as_json = _lists_as_json  # the name bench/csv_export.py imports
