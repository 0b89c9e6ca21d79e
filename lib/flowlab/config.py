"""One settings object for the library, the CLI, the app and the notebooks.

Precedence: environment variables (prefix ``FLOWLAB_``) > a ``.env`` file in the working directory >
defaults. With no ``FLOWLAB_BASE_URL`` and no ``FLOWLAB_REGION``, everything runs against the built-in
sandbox tenant. Secrets are ``SecretStr``: their repr, logs and exports show ``**********``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowlab.errors import ConfigError
from flowlab.redaction import MASK, WHERE_SECRETS_GO, redact_url, secret_parts

__all__ = ["REGIONS", "Region", "Settings", "load_settings", "resolve_base_url"]

Region = Literal["eu", "us", "ap", "jpe"]

#: Sitecore Personalize's regional API hosts (reference §1.2).
REGIONS: dict[str, str] = {
    "eu": "https://api-engage-eu.sitecorecloud.io",
    "us": "https://api-engage-us.sitecorecloud.io",
    "ap": "https://api-engage-ap.sitecorecloud.io",
    "jpe": "https://api-engage-jpe.sitecorecloud.io",
}


def resolve_base_url(*, base_url: str | None = None, region: str | None = None) -> str | None:
    """The base URL for a region name or an explicit URL; None means "use the sandbox"."""
    if base_url:
        url = base_url.strip().rstrip("/")
        shown = redact_url(url) if "://" in url else (MASK if "@" in url else url)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"base URL '{shown}' must start with http:// or https://")
        secrets = secret_parts(url)
        if secrets:
            them = "them" if len(secrets) > 1 else "it"
            raise ConfigError(
                f"base URL '{shown}' carries {' and '.join(secrets)}: remove {them}; {WHERE_SECRETS_GO}"
            )
        return url
    if region:
        try:
            return REGIONS[region.lower()]
        except KeyError:
            raise ConfigError(f"unknown region '{region}': use one of {', '.join(REGIONS)}") from None
    return None


class Settings(BaseSettings):
    """Every knob, with its environment variable ``FLOWLAB_<NAME>`` (see the README's settings table)."""

    model_config = SettingsConfigDict(
        env_prefix="FLOWLAB_", env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True
    )

    base_url: str | None = Field(default=None, description="API base URL; empty means the sandbox")
    region: Region | None = Field(default=None, description="Sitecore region (eu, us, ap, jpe)")
    client_key: str | None = Field(default=None, description="The tenant's public client key")
    point_of_sale: str = Field(default="", description="Default point of sale")
    channel: str = Field(default="WEB", description="Default channel")
    language: str | None = Field(default=None, description="Default language (ISO 639)")
    currency: str | None = Field(default=None, description="Default currency (ISO 4217)")
    api_token: SecretStr | None = Field(default=None, description="Reserved for admin APIs; never logged")
    timeout: float = Field(default=10.0, gt=0, description="Per-request timeout in seconds")
    retries: int = Field(default=2, ge=0, le=10, description="Retries for connection errors, 408, 429, 5xx")
    sandbox_host: str = Field(default="127.0.0.1", description="Where the sandbox listens")
    sandbox_port: int = Field(default=0, ge=0, le=65535, description="Sandbox port; 0 picks a free one")
    sandbox_latency_ms: str = Field(default="0", description="Sandbox latency: N, LOW-HIGH or 'real'")
    sandbox_faults: str = Field(default="", description="Sandbox faults, e.g. 503=0.1,429=0.05")
    sandbox_admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for the sandbox's admin API; needed for writes off loopback"
    )
    sandbox_replay: str = Field(
        default="", description="Run stores (.sqlite, comma-separated) the built-in sandbox replays"
    )
    batch_concurrency: int = Field(default=20, ge=1, le=1000, description="Concurrent requests in a batch")
    batch_confirm_threshold: int = Field(
        default=200, ge=0, description="Batches larger than this on a live tenant need confirmation"
    )
    data_dir: Path = Field(default=Path.home() / ".flowlab", description="Saved targets, personas and runs")
    # AEP Edge Network (flowlab.edge; reference adobe-edge-personalization.md §2.1-2.2)
    edge_base_url: str | None = Field(
        default=None, description="Edge host, e.g. https://server.adobedc.net; empty means the sandbox"
    )
    edge_region: str | None = Field(default=None, description="Edge location hint (or2, va6, irl1, ...)")
    edge_datastream_id: str | None = Field(default=None, description="Datastream ID for interact calls")
    edge_org_id: str | None = Field(default=None, description="IMS org ID, e.g. ABC123@AdobeOrg")
    edge_client_id: str | None = Field(
        default=None, description="OAuth server-to-server client ID (x-api-key)"
    )
    edge_client_secret: SecretStr | None = Field(
        default=None, description="OAuth server-to-server client secret; never logged or exported"
    )
    edge_ims_url: str = Field(default="https://ims-na1.adobelogin.com", description="Adobe IMS host")
    edge_scope: str = Field(
        default="openid,AdobeID,read_organizations,additional_info.projectedProductContext,session",
        description="IMS scopes for the token (Developer Console shows the ones to use)",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        try:
            return resolve_base_url(base_url=value) if value else None
        except ConfigError as exc:
            raise ConfigError(f"FLOWLAB_BASE_URL: {exc}") from None

    @field_validator("edge_base_url", "edge_ims_url")
    @classmethod
    def _edge_urls(cls, value: str | None, info: ValidationInfo) -> str | None:
        try:
            return resolve_base_url(base_url=value) if value else None
        except ConfigError as exc:
            raise ConfigError(f"FLOWLAB_{str(info.field_name).upper()}: {exc}") from None

    @property
    def target_url(self) -> str | None:
        """The configured tenant URL, or None for the sandbox."""
        return resolve_base_url(base_url=self.base_url, region=self.region)

    @property
    def uses_sandbox(self) -> bool:
        return self.target_url is None


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation problems into one ``ConfigError`` that names the variables."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        parts = [f"FLOWLAB_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid settings: " + "; ".join(parts)) from None
