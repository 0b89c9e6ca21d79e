"""Where calls go: the built-in sandbox, a Sitecore Personalize tenant or an AEP Edge org, and the file that
remembers them.

A target has a ``provider``: ``personalize`` (a base URL plus the tenant's client key and default point of
sale) or ``edge`` (an Edge domain, a datastream id, and for the authenticated Server API an org id and an
OAuth client id; adobe-edge-personalization.md §2.1-2.2). The client key is public (it ships in every
browser that runs the site, reference §1.4), and so are Edge client and org ids (Adobe sends them as
headers, §0.2), so they may be saved. Nothing secret is ever
written: the file holds only the fields named in ``SAVED_FIELDS``, and anything else found in it (say an
``apiToken`` someone pasted in) is dropped on the next save. Secrets belong in environment variables or
Streamlit secrets: a base URL with a password (``user:pass@``) or a secret-looking query parameter
(``?api_token=``) is refused with a message that says so, and URLs are redacted on the way to the file.

The Edge client secret never has a field here: it comes from ``FLOWLAB_EDGE_CLIENT_SECRET`` or Streamlit
secrets when a call is made. Files written before Edge existed load as ``personalize`` targets.

The built-in sandbox is never saved: it runs in-process on a port picked at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from flowlab.config import REGIONS, Settings, load_settings
from flowlab.errors import ConfigError, FieldProblem
from flowlab.jsonfile import JsonFile
from flowlab.redaction import WHERE_SECRETS_GO, redact_url, secret_parts

__all__ = [
    "CONFIGURED_EDGE_NAME",
    "CONFIGURED_NAME",
    "EDGE_SANDBOX_NAME",
    "PROVIDERS",
    "SANDBOX_NAME",
    "SAVED_FIELDS",
    "TARGETS_FILE",
    "Target",
    "TargetError",
    "TargetStore",
    "configured_edge_target",
    "configured_target",
]

TARGETS_FILE = "targets.json"
SANDBOX_NAME = "Sandbox (built-in)"
CONFIGURED_NAME = "Configured tenant (env)"
EDGE_SANDBOX_NAME = "Sandbox (built-in) · AEP Edge"
CONFIGURED_EDGE_NAME = "Configured Edge org (env)"
_RESERVED = (SANDBOX_NAME, CONFIGURED_NAME, EDGE_SANDBOX_NAME, CONFIGURED_EDGE_NAME)
Provider = Literal["personalize", "edge"]
#: Provider → the name people know it by.
PROVIDERS: dict[str, str] = {"personalize": "Sitecore Personalize", "edge": "AEP Edge"}
#: The only keys a saved target may have on disk (no secret among them).
SAVED_FIELDS = (
    "name",
    "provider",
    "region",
    "baseUrl",
    "clientKey",
    "pointOfSale",
    "isSandbox",
    "datastreamId",
    "orgId",
    "clientId",
    "locationHint",
)
_HINT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_RECENT_LIMIT = 10


class TargetError(ConfigError):
    """A target form has problems; ``problems`` names each field (``name``, ``base_url``…) and the fix."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def for_field(self, field: str) -> list[str]:
        return [p.message for p in self.problems if p.field == field]


@dataclass(frozen=True)
class Target:
    """A place to send calls. Sandbox targets are safe to hammer; any other is someone's analytics."""

    name: str
    base_url: str
    client_key: str = ""
    point_of_sale: str = ""
    is_sandbox: bool = False
    region: str | None = None
    builtin: bool = False
    provider: Provider = "personalize"
    #: AEP Edge only (§2.2): the datastream, and for the authenticated Server API the IMS org and client id.
    datastream_id: str = ""
    org_id: str = ""
    client_id: str = ""
    location_hint: str | None = None

    @property
    def label(self) -> str:
        """The environment label the app always shows: SANDBOX or LIVE."""
        return "SANDBOX" if self.is_sandbox else "LIVE"

    @property
    def is_edge(self) -> bool:
        return self.provider == "edge"

    @property
    def provider_name(self) -> str:
        return PROVIDERS[self.provider]

    @property
    def description(self) -> str:
        if self.is_edge:
            if self.is_sandbox:
                return "Flow Lab sandbox: AEP Edge Network (offline)"
            auth = f"client {self.client_id}" if self.client_id else "unauthenticated edge (no attributes)"
            return f"AEP Edge, datastream {self.datastream_id}, {auth}"
        where = f"Sitecore Personalize, region {self.region.upper()}" if self.region else self.base_url
        return "Flow Lab sandbox tenant (offline)" if self.is_sandbox else where

    def with_client_key(self, client_key: str) -> Target:
        return replace(self, client_key=client_key)

    @classmethod
    def sitecore(
        cls,
        name: str,
        *,
        client_key: str,
        region: str | None = None,
        base_url: str | None = None,
        point_of_sale: str = "",
        is_sandbox: bool = False,
    ) -> Target:
        """A tenant by region (eu, us, ap, jpe) or by custom base URL; raises ``TargetError`` per field."""
        problems: list[FieldProblem] = []
        name = name.strip()
        if not name:
            problems.append(FieldProblem("name", "give the target a name, e.g. 'Acme EU production'"))
        elif name in _RESERVED:
            problems.append(FieldProblem("name", f"'{name}' is reserved: pick another name"))
        url = (base_url or "").strip().rstrip("/")
        region = (region or "").strip().lower() or None
        url_problem = _url_problem(url)
        if url_problem is not None:
            problems.append(url_problem)
        elif not url and region is None:
            problems.append(FieldProblem("base_url", "pick a region or enter a base URL"))
        elif not url and region not in REGIONS:
            problems.append(FieldProblem("region", f"unknown region '{region}': use {', '.join(REGIONS)}"))
        if not url and region in REGIONS:
            url = REGIONS[region]
        elif url:
            region = next((r for r, u in REGIONS.items() if u == url), None)
        key = client_key.strip()
        if any(ch.isspace() for ch in key):
            problems.append(FieldProblem("client_key", "the client key has spaces in it: paste it again"))
        if problems:
            raise TargetError(problems)
        return cls(name, url, key, point_of_sale.strip(), is_sandbox, region)

    @classmethod
    def edge(
        cls,
        name: str,
        *,
        base_url: str,
        datastream_id: str,
        org_id: str = "",
        client_id: str = "",
        location_hint: str | None = None,
        is_sandbox: bool = False,
    ) -> Target:
        """An AEP Edge org: the Edge domain (https://server.adobedc.net for the authenticated Server API,
        https://edge.adobedc.net without a token), the datastream, and org + client id for the token.
        There is no secret argument: the secret is read from the environment when a call is made."""
        problems: list[FieldProblem] = []
        name = name.strip()
        if not name:
            problems.append(FieldProblem("name", "give the target a name, e.g. 'Acme web (AEP)'"))
        elif name in _RESERVED:
            problems.append(FieldProblem("name", f"'{name}' is reserved: pick another name"))
        url = base_url.strip().rstrip("/")
        url_problem = _url_problem(url)
        if url_problem is not None:
            problems.append(url_problem)
        elif not url:
            problems.append(
                FieldProblem(
                    "base_url",
                    "enter the Edge domain: https://server.adobedc.net (with a client id) or "
                    "https://edge.adobedc.net (unauthenticated: audiences only)",
                )
            )
        datastream = datastream_id.strip()
        if not datastream:
            problems.append(
                FieldProblem("datastream_id", "enter the datastream id (Data Collection → Datastreams)")
            )
        elif any(ch.isspace() for ch in datastream):
            problems.append(
                FieldProblem("datastream_id", "the datastream id has spaces in it: paste it again")
            )
        org, client = org_id.strip(), client_id.strip()
        if client and not org:
            problems.append(
                FieldProblem("org_id", "an authenticated call needs the IMS org id too, e.g. ABC123@AdobeOrg")
            )
        if org and not org.endswith("@AdobeOrg"):
            problems.append(FieldProblem("org_id", f"'{org}' is not an IMS org id: it ends in @AdobeOrg"))
        hint = (location_hint or "").strip().lower() or None
        if hint is not None and (len(hint) > 16 or not set(hint) <= _HINT_CHARS):
            problems.append(
                FieldProblem("location_hint", f"'{hint}' is not a location hint: use or2, va6, irl1, ind1…")
            )
        if problems:
            raise TargetError(problems)
        return cls(
            name,
            url,
            is_sandbox=is_sandbox,
            provider="edge",
            datastream_id=datastream,
            org_id=org,
            client_id=client,
            location_hint=hint,
        )

    def to_json(self) -> dict[str, Any]:
        """The saved form: only ``SAVED_FIELDS``, never anything secret."""
        data = {
            "name": self.name,
            "provider": self.provider,
            "region": self.region,
            "baseUrl": redact_url(self.base_url),
            "clientKey": self.client_key,
            "pointOfSale": self.point_of_sale,
            "isSandbox": self.is_sandbox,
            "datastreamId": self.datastream_id,
            "orgId": self.org_id,
            "clientId": self.client_id,
            "locationHint": self.location_hint,
        }
        assert tuple(data) == SAVED_FIELDS
        return data

    @classmethod
    def from_json(cls, data: Any) -> Target:
        """Read a saved target (unknown keys are ignored); ``TargetError`` if it cannot be used."""
        if not isinstance(data, dict):
            raise TargetError([FieldProblem("", "a saved target must be a JSON object")])
        text: dict[str, str] = {k: v for k in SAVED_FIELDS if isinstance(v := data.get(k), str)}
        provider = data.get("provider", "personalize")  # files from before Edge have no provider
        if provider == "edge":
            return cls.edge(
                text.get("name", ""),
                base_url=text.get("baseUrl", ""),
                datastream_id=text.get("datastreamId", ""),
                org_id=text.get("orgId", ""),
                client_id=text.get("clientId", ""),
                location_hint=text.get("locationHint"),
                is_sandbox=data.get("isSandbox") is True,
            )
        if provider != "personalize":
            raise TargetError(
                [FieldProblem("provider", f"unknown provider {provider!r}: use personalize or edge")]
            )
        return cls.sitecore(
            text.get("name", ""),
            client_key=text.get("clientKey", ""),
            region=text.get("region"),
            base_url=text.get("baseUrl"),
            point_of_sale=text.get("pointOfSale", ""),
            is_sandbox=data.get("isSandbox") is True,
        )


def configured_target(settings: Settings | None = None) -> Target | None:
    """The tenant named by ``FLOWLAB_BASE_URL``/``FLOWLAB_REGION`` + ``FLOWLAB_CLIENT_KEY``, if any."""
    settings = settings or load_settings()
    url = settings.target_url
    if not url or not settings.client_key:
        return None
    region = next((r for r, u in REGIONS.items() if u == url), None)
    return Target(CONFIGURED_NAME, url, settings.client_key, settings.point_of_sale, region=region)


def configured_edge_target(settings: Settings | None = None) -> Target | None:
    """The Edge org named by ``FLOWLAB_EDGE_BASE_URL`` + ``FLOWLAB_EDGE_DATASTREAM_ID``, if any."""
    settings = settings or load_settings()
    if not settings.edge_base_url or not settings.edge_datastream_id:
        return None
    return Target(
        CONFIGURED_EDGE_NAME,
        settings.edge_base_url.rstrip("/"),
        provider="edge",
        datastream_id=settings.edge_datastream_id,
        org_id=settings.edge_org_id or "",
        client_id=settings.edge_client_id or "",
        location_hint=settings.edge_region,
    )


def _url_problem(url: str) -> FieldProblem | None:
    """A base URL that is not http(s) or carries a secret (``user:pass@``, ``?api_token=``)."""
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        shown = redact_url(url) if "://" in url or "@" not in url else "***"
        return FieldProblem("base_url", f"'{shown}' must start with https:// (or http://)")
    secrets = secret_parts(url)
    if secrets:
        return FieldProblem(
            "base_url",
            f"the base URL carries {' and '.join(secrets)}: remove "
            f"{'them' if len(secrets) > 1 else 'it'}; {WHERE_SECRETS_GO}",
        )
    return None


class TargetStore:
    """Saved targets and each target's recent friendlyIds, in ``<data_dir>/targets.json``."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.file = JsonFile(path if path is not None else load_settings().data_dir / TARGETS_FILE)
        #: Entries of the file that could not be read, as messages (the rest still load).
        self.problems: list[str] = []

    @property
    def path(self) -> Path:
        return self.file.path

    def _load(self) -> tuple[list[Target], dict[str, list[str]]]:
        data = self.file.read() or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path} must hold a JSON object with a 'targets' list")
        self.problems = []
        targets: list[Target] = []
        for i, entry in enumerate(data.get("targets") or []):
            try:
                targets.append(Target.from_json(entry))
            except TargetError as exc:
                self.problems.append(f"target #{i + 1} in {self.path} was skipped: {exc}")
        recent_raw = data.get("recentFriendlyIds")
        recent: dict[str, list[str]] = {}
        if isinstance(recent_raw, dict):
            for name, ids in recent_raw.items():
                if isinstance(ids, list):
                    recent[str(name)] = [str(i) for i in ids if isinstance(i, str)][:_RECENT_LIMIT]
        return targets, recent

    def _save(self, targets: list[Target], recent: dict[str, list[str]]) -> None:
        names = {t.name for t in targets} | {CONFIGURED_NAME}
        self.file.write(
            {
                "version": 1,
                "targets": [t.to_json() for t in targets],
                "recentFriendlyIds": {k: v for k, v in recent.items() if k in names},
            }
        )

    def targets(self) -> list[Target]:
        """Saved targets, in the order they were added."""
        return self._load()[0]

    def get(self, name: str) -> Target | None:
        return next((t for t in self.targets() if t.name == name), None)

    def save(self, target: Target) -> None:
        """Add a target, or replace the one with the same name."""
        if target.builtin or target.name in _RESERVED:
            raise TargetError([FieldProblem("name", f"'{target.name}' is not saved: it is built in")])
        targets, recent = self._load()
        for i, existing in enumerate(targets):
            if existing.name == target.name:
                targets[i] = target
                break
        else:
            targets.append(target)
        self._save(targets, recent)

    def delete(self, name: str) -> None:
        targets, recent = self._load()
        self._save([t for t in targets if t.name != name], recent)

    def recent_friendly_ids(self, name: str) -> list[str]:
        """The friendlyIds last called on a target, newest first."""
        return self._load()[1].get(name, [])

    def remember_friendly_id(self, name: str, friendly_id: str) -> None:
        """Put ``friendly_id`` first in the target's recent list (kept to the last ten)."""
        friendly_id = friendly_id.strip()
        if not friendly_id:
            return
        targets, recent = self._load()
        if name != CONFIGURED_NAME and all(t.name != name for t in targets):
            return  # the built-in sandbox lists its flows itself
        ids = [friendly_id, *(i for i in recent.get(name, []) if i != friendly_id)]
        recent[name] = ids[:_RECENT_LIMIT]
        self._save(targets, recent)
