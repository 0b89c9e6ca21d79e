"""The run log: every batch started through it gets a folder under ``<data_dir>/runs``, so past runs can be
listed, resumed, re-run for their failed guests and compared, after a page reload or an app restart.

One folder per run (``<id>/``):

* ``run.sqlite``: the ``RunStore`` (results, progress, status, flow, base URL, options);
* ``guests.jsonl``: the guest sample, row by row exactly as it was run. A resume must send the same guests
  (the store checks the sample's fingerprint), and a CSV round trip would renumber an uploaded sample's
  rows after skipping bad ones, so the rows are kept as JSON, not re-read from the original file;
* ``run.json``: what the store does not hold: the run's name, the target's name, whether it is a sandbox,
  the client key (public by design, reference §1.4; needed to resume) and where the guests came from.

Everything here is private to the user: folders 0700, files 0600 from creation (``flowlab.permissions``);
guest emails and response bodies are nobody else's business.

A run's status comes from its store: ``running`` (a batch holds the file), ``interrupted`` (the store says
running but nobody holds it: the process died; resume it), ``cancelled`` or ``done``.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from flowlab.batch.runner import BatchHandle, BatchOptions, start_batch
from flowlab.batch.runs import RESULT_COLUMNS, RunStore
from flowlab.batch.samples import GuestRow, GuestSample
from flowlab.config import load_settings
from flowlab.errors import ConfigError, RunStoreError
from flowlab.jsonfile import JsonFile
from flowlab.permissions import PRIVATE_DIR, open_private, private_dir

__all__ = ["RUNS_DIR", "RunLog", "RunRecord", "load_results", "read_sample", "write_sample"]

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: The folder under ``Settings.data_dir`` that holds one folder per run.
RUNS_DIR = "runs"
_STORE, _GUESTS, _INFO = "run.sqlite", "guests.jsonl", "run.json"
_SLUG = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True)
class RunRecord:
    """One run as the log lists it: identity, what it ran against, and how far it got."""

    id: str
    name: str
    friendly_id: str
    target: str
    base_url: str
    is_sandbox: bool
    created: str
    source: str
    status: str
    total: int
    done: int
    ok: int
    failed: int
    folder: Path

    @property
    def path(self) -> Path:
        """The run store (``RunStore.open(record.path)``)."""
        return self.folder / _STORE

    @property
    def missing(self) -> int:
        """Guests without a result yet: what a resume calls."""
        return max(self.total - self.done, 0)

    @property
    def resumable(self) -> bool:
        return self.status in ("cancelled", "interrupted") and self.missing > 0

    @property
    def label(self) -> str:
        """One line for a picker: name, status and counts."""
        if self.status == "running":
            counts = f"{self.total:,}"  # a count read now would be stale a second later
        else:
            counts = f"{self.done:,}/{self.total:,}" if self.done < self.total else f"{self.total:,}"
        return f"{self.name} · {self.status} · {counts} guests · {self.created[:19].replace('T', ' ')}"


def write_sample(sample: GuestSample, path: str | Path) -> Path:
    """Write a sample row by row as JSON lines; ``read_sample`` gives back the same rows and fingerprint."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with open_private(partial) as out:
        header = {"columns": list(sample.columns), "source": sample.source, "provider": sample.provider}
        out.write(orjson.dumps(header) + b"\n")
        for g in sample.guests:
            record = [g.row, g.kind, g.value, dict(g.fields), dict(g.params), dict(g.extra)]
            out.write(orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS) + b"\n")
    partial.replace(path)
    return path


def read_sample(path: str | Path) -> GuestSample:
    """The sample ``write_sample`` wrote (``RunStoreError`` if the file is missing or damaged)."""
    path = Path(path)
    try:
        with path.open("rb") as lines:
            header = orjson.loads(next(lines))
            guests = [GuestRow(*orjson.loads(line)) for line in lines if line.strip()]
    except (OSError, StopIteration, orjson.JSONDecodeError, TypeError) as exc:
        raise RunStoreError(f"the guests of this run cannot be read from {path} ({exc})") from None
    columns, source = tuple(header.get("columns", ())), str(header.get("source", ""))
    return GuestSample(guests, [], columns, source, str(header.get("provider") or "personalize"))


def load_results(path: str | Path, *, body: bool = False) -> pd.DataFrame:
    """A run's results as a DataFrame, without the ``body`` column unless asked.

    Bodies are most of a run's bytes (a demo body with an inline image is 2.5 kB; 100,000 of them are
    250 MB) and no analysis reads them, so leaving them in SQLite makes loading a large run several times
    cheaper. Sample columns that clash with a result column come out as ``sample_<name>``, as in the store.
    """
    with RunStore.open(path) as store:
        if body:
            return store.to_dataframe()
        fixed = [c for c in RESULT_COLUMNS if c != "body"]
        try:  # the sample's columns as recorded: saves a pass over every row's JSON
            return store.to_dataframe([*fixed, *_extra_names(store.meta.extra_columns)])
        except KeyError:  # a column no row has a value for (or an empty run): ask the rows
            return store.to_dataframe([*fixed, *_extra_names(store.extra_types())])


def _edge_provider(base_url: str, datastream: str, stored: Any, is_sandbox: bool) -> Any:
    """The Edge provider a stored run was started with (see ``RunLog.options``)."""
    from flowlab.edge.provider import EdgeProvider

    authenticated = bool(stored.get("authenticated", True))
    if is_sandbox:
        return EdgeProvider.for_sandbox(base_url, authenticated=authenticated, datastream=datastream)
    return EdgeProvider.from_settings(load_settings(), datastream_id=datastream, authenticated=authenticated)


def _extra_names(columns: Iterable[str]) -> list[str]:
    """Sample columns as the store names them in a read-out (``sample_<name>`` on a clash)."""
    return [f"sample_{k}" if k in RESULT_COLUMNS or k == "extra" else k for k in columns]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunLog:
    """The runs under ``root`` (default ``Settings().data_dir / "runs"``), newest first."""

    def __init__(self, root: str | Path | None = None) -> None:
        #: The data dir when ``root`` is its ``runs`` folder: made private with it.
        self.data_dir: Path | None = load_settings().data_dir if root is None else None
        self.root = Path(root) if root is not None else load_settings().data_dir / RUNS_DIR

    # ---- listing ---------------------------------------------------------------------------------------

    def runs(self) -> list[RunRecord]:
        """Every run with a readable store, newest first (unreadable folders are logged and skipped)."""
        if not self.root.is_dir():
            return []
        records = []
        for folder in self.root.iterdir():
            if folder.is_dir() and (folder / _STORE).is_file():
                try:
                    records.append(self._record(folder))
                except (RunStoreError, ConfigError) as exc:
                    logger.warning("skipping run %s: %s", folder.name, exc)
        return sorted(records, key=lambda r: (r.created, r.id), reverse=True)

    def get(self, run_id: str) -> RunRecord:
        """One run by id; ``RunStoreError`` if there is none."""
        folder = self.root / run_id
        if "/" in run_id or run_id in ("", ".", "..") or not (folder / _STORE).is_file():
            raise RunStoreError(f"no run '{run_id}' in {self.root}")
        return self._record(folder)

    def _record(self, folder: Path) -> RunRecord:
        info = JsonFile(folder / _INFO).read() or {}
        with RunStore.open(folder / _STORE) as store:
            meta = store.meta
            progress = store.progress()
            status = progress.status
            if status == "running":
                status = "running" if _held(store) else "interrupted"
        return RunRecord(
            id=folder.name,
            name=str(info.get("name") or meta.friendly_id),
            friendly_id=meta.friendly_id,
            target=str(info.get("target") or meta.base_url),
            base_url=meta.base_url,
            is_sandbox=bool(info.get("isSandbox")),
            created=str(info.get("created") or meta.created),
            source=str(info.get("source") or ""),
            status=status,
            total=progress.total,
            done=progress.done,
            ok=progress.ok,
            failed=progress.failed,
            folder=folder,
        )

    # ---- starting and resuming -------------------------------------------------------------------------

    def prepare(
        self,
        sample: GuestSample,
        options: BatchOptions,
        *,
        name: str = "",
        target: str = "",
        is_sandbox: bool = False,
    ) -> str:
        """Record a new run (its folder, guests and info) without starting it; returns the run id.

        ``start`` is this plus ``start_batch``; scripts that fill a store themselves (benchmarks, imports)
        write to ``store_path(run_id)``.
        """
        run_id = self._new_id(options.active_provider.target)
        folder = self.root / run_id
        if self.data_dir is not None:
            private_dir(self.data_dir)
        private_dir(self.root)
        folder.mkdir(mode=PRIVATE_DIR)
        try:
            write_sample(sample, folder / _GUESTS)
            JsonFile(folder / _INFO).write(
                {
                    "name": name.strip() or f"{options.active_provider.target} · {len(sample):,} guests",
                    "target": target,
                    "isSandbox": is_sandbox,
                    "clientKey": options.client_key,
                    "source": sample.source,
                    "created": _now(),
                }
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return run_id

    def store_path(self, run_id: str) -> Path:
        """Where a run's store lives (whether or not it exists yet)."""
        return self.root / run_id / _STORE

    def start(
        self,
        sample: GuestSample,
        options: BatchOptions,
        *,
        name: str = "",
        target: str = "",
        is_sandbox: bool = False,
    ) -> tuple[RunRecord, BatchHandle]:
        """Record a new run and start it in the background."""
        run_id = self.prepare(sample, options, name=name, target=target, is_sandbox=is_sandbox)
        try:
            handle = start_batch(sample, options, self.store_path(run_id))
        except BaseException:
            shutil.rmtree(self.root / run_id, ignore_errors=True)
            raise
        return self.get(run_id), handle

    def options(self, run_id: str, **overrides: Any) -> BatchOptions:
        """The options a run was started with (``overrides`` replace some: e.g. ``rps=None``).

        An Edge run gets its provider back from the sandbox (its demo credentials) or, on a live org, from
        the ``FLOWLAB_EDGE_*`` settings: no secret is kept with a run. Pass ``provider=`` to choose.
        """
        record = self.get(run_id)
        info = JsonFile(record.folder / _INFO).read() or {}
        with RunStore.open(record.path) as store:
            meta = store.meta
        stored = meta.options
        values: dict[str, Any] = {
            "base_url": meta.base_url,
            "client_key": str(info.get("clientKey") or ""),
            "friendly_id": meta.friendly_id,
            "defaults": dict(meta.defaults),
            "concurrency": int(stored.get("concurrency") or 20),
            "rps": stored.get("rps"),
            "retries": int(stored.get("retries", 3)),
            "timeout": float(stored.get("timeout") or 10.0),
            "variant_path": stored.get("variantPath"),
            "retry_budget": float(stored.get("retryBudget", 0.5)),
        }
        if meta.simulate:  # a simulated run resumes simulated (#11)
            values["simulate"] = True
        if meta.provider == "edge" and "provider" not in overrides:
            values["provider"] = _edge_provider(meta.base_url, meta.friendly_id, stored, record.is_sandbox)
        values.update(overrides)
        return BatchOptions(**values)

    def sample(self, run_id: str) -> GuestSample:
        """The guests of a run, exactly as they were run."""
        return read_sample(self.get(run_id).folder / _GUESTS)

    def resume(self, run_id: str, *, only_failed: bool = False, **overrides: Any) -> BatchHandle:
        """Call the guests of a run that have no result yet (``only_failed``: also those whose call failed).

        Raises ``RunStoreError`` when the run is being written, or when its target has changed (the
        store refuses another base URL: the calls would go somewhere else).
        """
        record = self.get(run_id)
        if record.status == "running":
            raise RunStoreError(f"run '{record.name}' is still running; cancel it first")
        options = self.options(run_id, **overrides)
        return start_batch(self.sample(run_id), options, record.path, resume=True, only_failed=only_failed)

    def delete(self, run_id: str) -> None:
        """Remove a run's folder (not while it runs)."""
        record = self.get(run_id)
        if record.status == "running":
            raise RunStoreError(f"run '{record.name}' is still running; cancel it first")
        shutil.rmtree(record.folder)

    def _new_id(self, friendly_id: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        slug = _SLUG.sub("_", friendly_id.lower()).strip("_")[:40] or "run"
        return f"{stamp}-{slug}-{secrets.token_hex(2)}"


def _held(store: RunStore) -> bool:
    """True when a batch (in any process) holds the store: it is really running."""
    try:
        with store.claim():
            return False
    except RunStoreError:
        return True
