"""Load a Sitecore Personalize export folder into the sandbox tenant, with a report of every file.

Layouts (reference "sitecore-exports.md"): the folder-per-asset layout (``experiences/fullStack/<name>/
bx-ace-editor.json``, ``decisioning/decisionModels/<name>/v3.xml`` …) and the older flat one
(``connections/<name>.json``). A file's kind comes from its folder (``decisionModels``, ``offers``,
``offerTemplates``, ``decisionTemplates``, ``connections``, ``experiences``/``experiments``) and, for flat
or unknown places, from its fields. Every file ends up in the :class:`ImportReport` as **loaded** or
**skipped** with a reason; a bad file never stops the others.

* Flows: ``transpiledVariants`` (template variables filled in) win over ``variants``. INTERACTIVE_API_FLOW
  runs; TRIGGERED_V3 runs when its trigger fires (``triggers.py``: events, closed sessions);
  INTERACTIVE_WEB_FLOW is loaded and listed (web flows render in the visitor's browser). Two files with one flow (same ref or
  friendlyId, e.g. ``experiences/`` and ``experiments/``): the higher ``revision`` loads, the other is
  skipped naming it.
* Decision models: an export's DMN carries no ref, while a flow's ``decisionModelTask`` names definition
  refs. A ref is mapped to the DMN model that (1) has a node the flow's templates look up with
  ``getDecisionModelResultNode("…")``; else (2) whose folder name equals the flow's name or friendlyId
  (letters and digits compared, case ignored); else (3) whose folder name is contained in the flow's name.
  A model no flow names is loaded under a stable ref of its own (``dmn:<folder>``-derived UUID).
* Connections (and offer / decision templates) are stored in the tenant's library; connections are
  checked (``connections.validate_connection``), called by decision models of the same ref during
  execution, listed by ``GET /sandbox/connections`` with secrets masked. Companion files
  (``.js``/``.txt``/``.html``/``.css`` copies of code already inside a
  definition) are skipped as such.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final, Literal

from flowlab.sandbox.errors import BadRequest, PayloadTooLarge, SandboxError
from flowlab.sandbox.personalize.dmn import DmnError, DmnModel, parse_dmn

if TYPE_CHECKING:
    from flowlab.sandbox.personalize.store import Tenant

__all__ = [
    "DEFINITION_KINDS",
    "MAX_FILE_BYTES",
    "MAX_FILES",
    "MAX_UNCOMPRESSED_BYTES",
    "ImportItem",
    "ImportReport",
    "import_files",
    "import_folder",
    "import_zip",
    "read_folder",
    "read_zip",
    "report_table",
    "zip_folder",
]

MAX_FILES: Final = 5_000  # files in one export (zip or folder)
MAX_FILE_BYTES: Final = 5 * 1024 * 1024  # one file
MAX_UNCOMPRESSED_BYTES: Final = 64 * 1024 * 1024  # a whole zip, uncompressed

_NAMESPACE = uuid.UUID("0b6f1f4e-3c0c-4f4e-9a43-6d1d8c9a7e11")
_LOOKUP = re.compile(r"getDecisionModelResultNode\s*\(\s*[\"']([^\"']+)[\"']\s*\)")
_COMPANIONS = frozenset({".js", ".txt", ".html", ".css", ".ftl"})
_FLOW_TYPES = frozenset({"INTERACTIVE_API_FLOW", "INTERACTIVE_WEB_FLOW", "TRIGGERED_V3"})

Status = Literal["loaded", "skipped"]
#: kinds of Sitecore definition: one of these skipped is a failed import (``flowlab import`` exits 1);
#: companions and other files are reported too, but skipping them is expected
DEFINITION_KINDS: Final = frozenset(
    {"flow", "decision model", "offer", "offer template", "decision template", "connection"}
)


@dataclass
class ImportItem:
    """One file of the export and what became of it."""

    path: str
    kind: str
    name: str
    status: Status
    reason: str = ""


@dataclass
class ImportReport:
    """Every file of one import, loaded or skipped with a reason, and what the sandbox does not run yet."""

    items: list[ImportItem] = field(default_factory=list)
    limitations: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[ImportItem]:
        return [i for i in self.items if i.status == "skipped"]

    def add(self, path: str, kind: str, name: str, status: Status, reason: str = "") -> None:
        self.items.append(ImportItem(path, kind, name, status, reason))

    def counts(self) -> dict[str, int]:
        loaded = sum(1 for i in self.items if i.status == "loaded")
        return {"files": len(self.items), "loaded": loaded, "skipped": len(self.items) - loaded}

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts(),
            "items": [asdict(i) for i in self.items],
            "limitations": list(self.limitations),
        }


# ---- reading an export ----------------------------------------------------------------------------------


def read_folder(root: str | Path) -> dict[str, bytes | str]:
    """The export's files by relative POSIX path; a file too large holds the reason it is not read."""
    base = Path(root)
    if not base.is_dir():
        raise BadRequest(f"'{root}' is not a folder", "give the folder that holds the Sitecore export")
    files: dict[str, bytes | str] = {}
    for folder, dirs, names in os.walk(base, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            rel = path.relative_to(base).as_posix()
            if len(files) >= MAX_FILES:
                raise PayloadTooLarge(
                    f"the folder holds more than {MAX_FILES:,} files", "import a smaller folder"
                )
            if path.is_symlink():
                files[rel] = "a symbolic link: not followed"
                continue
            size = path.stat().st_size
            files[rel] = (
                path.read_bytes()
                if size <= MAX_FILE_BYTES
                else f"{size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit per file"
            )
    return files


def read_zip(data: bytes) -> dict[str, bytes | str]:
    """A zip of an export folder, read in memory within the file-count and size caps.

    Entries that would land outside the folder (``../``, absolute paths, drive letters: zip-slip) refuse
    the whole archive, as do encrypted entries and archives over the caps (zip bombs): nothing is extracted
    to disk, and sizes are counted as the data inflates, not taken from the headers.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise BadRequest(
            "the body is not a zip archive",
            "send a zip of the export folder with Content-Type: application/zip (e.g. python -m flowlab import DIR)",
        ) from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > MAX_FILES:
            raise PayloadTooLarge(f"the zip holds {len(infos):,} files, over the limit of {MAX_FILES:,}")
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
                raise BadRequest(
                    f"zip entry '{name[:200]}' points outside the export folder",
                    "entries must be relative paths without '..' (zip-slip is refused)",
                )
            if info.flag_bits & 0x1:
                raise BadRequest(f"zip entry '{name[:200]}' is encrypted", "send an unencrypted zip")
        files: dict[str, bytes | str] = {}
        total = 0
        for info in infos:
            try:
                with archive.open(info) as handle:
                    content = handle.read(MAX_FILE_BYTES + 1)
            except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
                files[info.filename] = f"cannot be read from the zip ({exc})"
                continue
            if len(content) > MAX_FILE_BYTES:
                files[info.filename] = f"over the {MAX_FILE_BYTES:,}-byte limit per file"
                total += len(content)
            else:
                files[info.filename] = content
                total += len(content)
            if total > MAX_UNCOMPRESSED_BYTES:
                raise PayloadTooLarge(
                    f"the zip inflates to more than {MAX_UNCOMPRESSED_BYTES:,} bytes",
                    "an export folder is a few MB; this looks like a zip bomb",
                )
    return files


def zip_folder(root: str | Path) -> bytes:
    """A folder as an in-memory zip (what ``POST /sandbox/import`` takes), within the import's caps."""
    files = read_folder(root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, content in files.items():
            if isinstance(content, bytes):
                archive.writestr(rel, content)
    return buffer.getvalue()


def report_table(report: Mapping[str, Any], *, all_files: bool = False) -> str:
    """The JSON report as a text table: definitions (and, with ``all_files``, every file), then the notes."""
    rows = [i for i in report.get("items", []) if all_files or i.get("kind") in DEFINITION_KINDS]
    widths = [len("status"), len("kind"), len("name")]
    for item in rows:
        for k, key in enumerate(("status", "kind", "name")):
            widths[k] = min(max(widths[k], len(str(item.get(key, "")))), 48)
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(("status", "kind", "name"), widths, strict=True)) + "  reason"
    ]
    for item in rows:
        cells = [
            str(item.get(key, ""))[:48].ljust(w)
            for key, w in zip(("status", "kind", "name"), widths, strict=True)
        ]
        lines.append("  ".join(cells) + "  " + str(item.get("reason", "")))
    counts = report.get("counts", {})
    others = sum(1 for i in report.get("items", []) if i.get("kind") not in DEFINITION_KINDS)
    lines.append(
        f"{counts.get('files', 0)} files: {counts.get('loaded', 0)} loaded, {counts.get('skipped', 0)} skipped"
        + (f" ({others} are companion or other files, not definitions)" if others and not all_files else "")
    )
    lines.extend(f"note: {note}" for note in report.get("limitations", []))
    return "\n".join(lines)


def import_folder(tenant: Tenant, root: str | Path, *, keep: bool = False) -> ImportReport:
    """Load an export folder into ``tenant``; the report lists every file.

    ``keep``: the tenant loads it again after every reset (``sandbox --load``).
    """
    files = read_folder(root)
    if keep:
        tenant.keep_import(files)
    return import_files(tenant, files)


def import_files(tenant: Tenant, files: Mapping[str, bytes | str]) -> ImportReport:
    """Load an export already read (:func:`read_folder`, :func:`read_zip`) into ``tenant``."""
    return _Import(tenant, files).run()


def import_zip(tenant: Tenant, data: bytes) -> ImportReport:
    """Load a zip of an export folder into ``tenant``; the report lists every file."""
    return _Import(tenant, read_zip(data)).run()


# ---- classifying and loading --------------------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@dataclass
class _Flow:
    path: str
    data: dict[str, Any]
    lookups: list[str]
    refs: list[str]


@dataclass
class _Model:
    path: str
    folder: str
    model: DmnModel
    refs: list[str] = field(default_factory=list)


class _Import:
    def __init__(self, tenant: Tenant, files: Mapping[str, bytes | str]) -> None:
        self.tenant = tenant
        self.files = files
        self.report = ImportReport()
        self.flows: list[_Flow] = []
        self.models: list[_Model] = []
        self.definitions: dict[str, list[tuple[str, dict[str, Any]]]] = {
            "offer": [],
            "offer template": [],
            "decision template": [],
            "connection": [],
        }

    def run(self) -> ImportReport:
        definition_dirs = {
            str(PurePosixPath(p).parent)
            for p in self.files
            if p.lower().endswith((".json", ".xml")) and not isinstance(self.files[p], str)
        }
        for path in sorted(self.files):
            try:
                self._classify(path, definition_dirs)
            except Exception as exc:  # one bad file must never stop the others
                self.report.add(
                    path, "unknown", PurePosixPath(path).stem, "skipped", f"cannot be read: {exc}"
                )
        self._load()
        return self.report

    def _classify(self, path: str, definition_dirs: set[str]) -> None:
        content = self.files[path]
        pure = PurePosixPath(path)
        parts = [p.lower() for p in pure.parts]
        name = pure.parent.name if pure.name == "bx-ace-editor.json" else pure.stem
        if isinstance(content, str):
            self.report.add(path, "file", name, "skipped", content)
            return
        suffix = pure.suffix.lower()
        if suffix == ".xml":
            if "decisionmodels" in parts or b"<definitions" in content[:4096]:
                self._dmn(path, pure, content)
            else:
                self.report.add(path, "file", name, "skipped", "an XML file that is not a DMN <definitions>")
            return
        if suffix in _COMPANIONS and str(pure.parent) in definition_dirs:
            self.report.add(
                path,
                "companion",
                pure.stem,
                "skipped",
                "a copy of code or markup already inside the definition beside it, which is what loads",
            )
            return
        if suffix != ".json":
            self.report.add(
                path, "file", name, "skipped", f"not a Sitecore definition ({suffix or 'no extension'})"
            )
            return
        try:
            data = json.loads(content)
        except (ValueError, UnicodeDecodeError) as exc:
            self.report.add(path, "file", name, "skipped", f"not valid JSON ({exc})")
            return
        if not isinstance(data, dict):
            self.report.add(path, "file", name, "skipped", "a JSON file that is not an object")
            return
        kind = self._kind(parts, data)
        name = str(data.get("name") or name)
        if kind is None:
            self.report.add(path, "file", name, "skipped", "not a Sitecore definition (unknown fields)")
        elif kind == "flow":
            self._flow(path, data)
        else:
            self.definitions[kind].append((path, data))

    @staticmethod
    def _kind(parts: list[str], data: dict[str, Any]) -> str | None:
        if data.get("type") in _FLOW_TYPES and isinstance(data.get("variants"), list):
            return "flow"
        if "offertemplates" in parts:
            return "offer template"
        if "decisiontemplates" in parts:
            return "decision template"
        if "connections" in parts or ("systemType" in data and "request" in data):
            return "connection"
        if "offers" in parts or "offerTypeRef" in data:
            return "offer"
        if data.get("type") == "DECISION" and "templateElements" in data:
            return "decision template"
        return None

    def _dmn(self, path: str, pure: PurePosixPath, content: bytes) -> None:
        flat = pure.parent.name.lower() in ("", "decisionmodels")  # <name>.xml, not <name>/v3.xml
        folder = pure.stem if flat else pure.parent.name
        variant = "v1" if flat else pure.stem
        try:
            model = parse_dmn(content, ref="", name=folder, variant_name=variant)
        except DmnError as exc:
            self.report.add(path, "decision model", folder, "skipped", str(exc))
            return
        self.models.append(_Model(path, folder, model))

    def _flow(self, path: str, data: dict[str, Any]) -> None:
        data = dict(data)
        if isinstance(data.get("transpiledVariants"), list) and data["transpiledVariants"]:
            data["variants"] = data.pop("transpiledVariants")
        lookups: list[str] = []
        refs: list[str] = []
        for variant in data["variants"]:
            for task in variant.get("tasks", []) if isinstance(variant, dict) else []:
                task_input = task.get("input") or {}
                if task.get("implementation") == "templateRenderTask":
                    lookups.extend(_LOOKUP.findall(str(task_input.get("template", ""))))
                elif task.get("implementation") == "decisionModelTask":
                    refs.extend(
                        str(r) for r in task_input.get("decisionModelRefs") or [] if str(r) not in refs
                    )
        self.flows.append(_Flow(path, data, lookups, refs))

    # ---- decision-model refs ----------------------------------------------------------------------

    def _resolve(self, flow: _Flow, ref: str) -> tuple[_Model | None, str]:
        for model in self.models:
            if ref in model.refs:
                return model, "already mapped"
        free = [m for m in self.models if not m.refs] or self.models
        for looked in flow.lookups:
            for model in free:
                if looked.strip() in (n.strip() for n in model.model.node_names):
                    return model, f"its node '{looked}' is what the template looks up"
        names = {_norm(str(flow.data.get("name", ""))), _norm(str(flow.data.get("friendlyId", "")))}
        for model in free:
            if _norm(model.folder) in names:
                return model, f"its folder '{model.folder}' has the flow's name"
        flow_name = _norm(str(flow.data.get("name", "")))
        for model in free:
            if _norm(model.folder) and _norm(model.folder) in flow_name:
                return model, f"the flow's name contains its folder name '{model.folder}'"
        return None, ""

    # ---- loading -----------------------------------------------------------------------------------

    def _load(self) -> None:
        tenant, report = self.tenant, self.report
        for path, data in self.definitions["offer"]:
            self._store(path, "offer", data, tenant.add_offer)
        for kind in ("offer template", "decision template", "connection"):
            for path, data in self.definitions[kind]:
                self._store(path, kind, data, lambda d, k=kind: tenant.add_library_item(k, d))
        flows = self._latest_flows()
        notes: dict[str, list[str]] = {}
        unresolved: dict[str, list[str]] = {}
        for flow in flows:
            for ref in flow.refs:
                if ref in tenant.models and not any(ref in m.refs for m in self.models):
                    continue  # a model the tenant already holds (loaded earlier, or posted as JSON)
                model, why = self._resolve(flow, ref)
                if model is None:
                    unresolved.setdefault(flow.path, []).append(ref)
                    continue
                if ref not in model.refs:
                    model.refs.append(ref)
                    notes.setdefault(model.path, []).append(
                        f"ref {ref} of flow '{flow.data.get('friendlyId')}': {why}"
                    )
        failed_models: set[str] = set()
        for model in self.models:
            refs = model.refs or [str(uuid.uuid5(_NAMESPACE, f"dmn:{model.folder}"))]
            try:
                for ref in refs:
                    definition = dict(model.model.definition, ref=ref)
                    tenant.add_decision_model(definition)
            except SandboxError as exc:
                failed_models.update(refs)
                report.add(model.path, "decision model", model.folder, "skipped", exc.message)
                continue
            reason = "; ".join(
                [
                    *(notes.get(model.path) or [f"no flow names it: loaded as {refs[0]}"]),
                    *model.model.warnings,
                ]
            )
            report.add(model.path, "decision model", model.folder, "loaded", reason)
            report.limitations.extend(model.model.limitations)
        for flow in flows:
            friendly = str(flow.data.get("friendlyId") or flow.data.get("name"))
            missing = unresolved.get(flow.path, []) + [r for r in flow.refs if r in failed_models]
            if missing:
                report.add(
                    flow.path,
                    "flow",
                    friendly,
                    "skipped",
                    f"decision model ref(s) {', '.join(missing)} not found in the export (no DMN model has a "
                    "node its templates look up, or the flow's name): add the model's folder and import again",
                )
                continue
            kind = str(flow.data.get("type"))
            reason = {
                "INTERACTIVE_WEB_FLOW": "web flow: listed with its variants (it renders in the visitor's browser)",
                "TRIGGERED_V3": "triggered flow: runs when its trigger fires (an event, a closed session)",
            }.get(kind, "")
            self._store(flow.path, "flow", flow.data, tenant.add_flow, name=friendly, note=reason)
        report.items.sort(key=lambda i: i.path)

    def _latest_flows(self) -> list[_Flow]:
        """One file per flow: the highest revision (then the newest) wins; the others are reported."""
        best: dict[str, _Flow] = {}
        for flow in self.flows:
            key = str(flow.data.get("friendlyId") or flow.data.get("ref") or flow.path)
            other = best.get(key)
            if other is None or _version(flow) > _version(other):
                if other is not None:
                    self._older(other, flow)
                best[key] = flow
            else:
                self._older(flow, other)
        return [
            f
            for f in self.flows
            if best.get(str(f.data.get("friendlyId") or f.data.get("ref") or f.path)) is f
        ]

    def _older(self, older: _Flow, newer: _Flow) -> None:
        self.report.add(
            older.path,
            "flow",
            str(older.data.get("friendlyId")),
            "skipped",
            f"revision {older.data.get('revision')} of the same flow as {newer.path} (revision "
            f"{newer.data.get('revision')}), which is loaded",
        )

    def _store(
        self, path: str, kind: str, data: dict[str, Any], load: Any, *, name: str = "", note: str = ""
    ) -> None:
        label = name or str(data.get("name") or data.get("ref") or PurePosixPath(path).stem)
        try:
            load(data)
        except SandboxError as exc:
            self.report.add(path, kind, label, "skipped", exc.message)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            self.report.add(path, kind, label, "skipped", f"a field has the wrong type or shape ({exc!r})")
        else:
            self.report.add(path, kind, label, "loaded", note)


def _version(flow: _Flow) -> tuple[int, str]:
    revision = flow.data.get("revision")
    return (revision if isinstance(revision, int) else -1, str(flow.data.get("modifiedAt") or ""))
