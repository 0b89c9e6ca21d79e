"""Saved targets: validation per field, the file under FLOWLAB_DATA_DIR, atomic writes, never a secret."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from flowlab import FlowClient
from flowlab.config import REGIONS
from flowlab.errors import ConfigError
from flowlab.sandbox import SandboxServer
from flowlab.workbench.targets import (
    CONFIGURED_NAME,
    SANDBOX_NAME,
    SAVED_FIELDS,
    Target,
    TargetError,
    TargetStore,
    configured_target,
)


def test_a_tenant_by_region_gets_the_regional_url() -> None:
    target = Target.sitecore("Acme EU", client_key="pk-123", region="EU", point_of_sale="acme/ie")
    assert target.base_url == REGIONS["eu"]
    assert target.region == "eu" and target.label == "LIVE" and not target.is_sandbox
    assert "EU" in target.description


def test_a_custom_url_that_is_a_region_is_recognised() -> None:
    target = Target.sitecore("x", client_key="k", base_url=REGIONS["us"] + "/")
    assert target.base_url == REGIONS["us"] and target.region == "us"


def test_problems_name_the_field() -> None:
    with pytest.raises(TargetError) as caught:
        Target.sitecore(" ", client_key="has space", base_url="ftp://nope")
    fields = {p.field for p in caught.value.problems}
    assert fields == {"name", "base_url", "client_key"}
    assert "https://" in caught.value.for_field("base_url")[0]
    with pytest.raises(TargetError, match="region"):
        Target.sitecore("x", client_key="k", region="mars")
    with pytest.raises(TargetError, match="reserved"):
        Target.sitecore(SANDBOX_NAME, client_key="k", region="eu")


def test_store_lives_in_the_data_dir_and_round_trips() -> None:
    store = TargetStore()
    assert store.path == Path(os.environ["FLOWLAB_DATA_DIR"]) / "targets.json"
    assert store.targets() == []
    eu = Target.sitecore("Acme EU", client_key="pk-eu", region="eu", point_of_sale="acme/ie")
    us = Target.sitecore("Acme US", client_key="pk-us", region="us")
    store.save(eu)
    store.save(us)
    store.save(Target.sitecore("Acme EU", client_key="pk-eu-2", region="eu"))  # replaces in place
    assert [t.name for t in store.targets()] == ["Acme EU", "Acme US"]
    assert store.get("Acme EU") is not None and store.get("Acme EU").client_key == "pk-eu-2"  # type: ignore[union-attr]
    store.delete("Acme US")
    assert [t.name for t in TargetStore().targets()] == ["Acme EU"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert not [p for p in store.path.parent.iterdir() if p.name.endswith(".tmp")]  # no leftovers


def test_the_file_never_holds_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLAB_API_TOKEN", "super-secret-token")
    store = TargetStore()
    store.path.parent.mkdir(parents=True, exist_ok=True)
    hand_edited = {"targets": [{**Target.sitecore("T", client_key="k", region="eu").to_json(),
                                "apiToken": "pasted-secret", "clientSecret": "also-secret"}]}  # fmt: skip
    store.path.write_text(json.dumps(hand_edited))
    assert store.targets()[0].name == "T"  # unknown keys are ignored on read…
    store.save(Target.sitecore("U", client_key="k2", region="us"))  # …and dropped on the next write
    text = store.path.read_text()
    assert "pasted-secret" not in text and "also-secret" not in text and "super-secret-token" not in text
    for entry in json.loads(text)["targets"]:
        assert tuple(entry) == SAVED_FIELDS


def test_builtin_targets_are_not_saved() -> None:
    sandbox = Target(SANDBOX_NAME, "http://127.0.0.1:1", "k", is_sandbox=True, builtin=True)
    with pytest.raises(TargetError):
        TargetStore().save(sandbox)


def test_bad_entries_are_skipped_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    path.write_text(
        json.dumps({"targets": [{"name": "ok", "region": "eu", "clientKey": "k"}, {"name": ""}, 3]})
    )
    store = TargetStore(path)
    assert [t.name for t in store.targets()] == ["ok"]
    assert len(store.problems) == 2
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        store.targets()


def test_recent_friendly_ids_newest_first_and_bounded() -> None:
    store = TargetStore()
    store.save(Target.sitecore("T", client_key="k", region="eu"))
    for i in range(12):
        store.remember_friendly_id("T", f"flow_{i}")
    store.remember_friendly_id("T", "flow_5")
    recent = store.recent_friendly_ids("T")
    assert recent[0] == "flow_5" and len(recent) == 10 and len(set(recent)) == 10
    store.remember_friendly_id("unknown target", "x")  # ignored, no error
    assert store.recent_friendly_ids("unknown target") == []


def test_configured_target_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert configured_target() is None
    monkeypatch.setenv("FLOWLAB_REGION", "ap")
    monkeypatch.setenv("FLOWLAB_CLIENT_KEY", "pk-ap")
    target = configured_target()
    assert target is not None and target.name == CONFIGURED_NAME
    assert target.base_url == REGIONS["ap"] and target.client_key == "pk-ap"


def test_a_saved_sandbox_target_calls_the_sandbox(sandbox: SandboxServer) -> None:
    """A separately started sandbox can be saved as a target (flagged as a sandbox) and called."""
    store = TargetStore()
    store.save(
        Target.sitecore("Local sandbox", client_key=sandbox.client_key, base_url=sandbox.url, is_sandbox=True)
    )
    target = store.get("Local sandbox")
    assert target is not None and target.is_sandbox and target.label == "SANDBOX"
    with FlowClient(base_url=target.base_url, retries=0) as client:
        response = client.call(clientKey=target.client_key, friendlyId="checkout_ab_test", browserId="t-1")
    assert response.ok


def test_edge_targets_save_without_a_secret_and_old_files_still_load(tmp_path: Path) -> None:
    from flowlab.workbench.targets import SAVED_FIELDS

    path = tmp_path / "targets.json"
    path.write_text(
        '{"version": 1, "targets": [{"name": "Old EU", "region": "eu", "clientKey": "k", "pointOfSale": "p"}]}'
    )
    store = TargetStore(path)
    (old,) = store.targets()
    assert old.provider == "personalize" and old.client_key == "k"
    edge = Target.edge(
        "Acme web",
        base_url="https://server.adobedc.net/",
        datastream_id="ds-1",
        org_id="ABC123@AdobeOrg",
        client_id="client-1",
        location_hint="IRL1",
    )
    store.save(edge)
    assert store.get("Acme web") == edge and edge.location_hint == "irl1" and edge.is_edge
    saved = path.read_text()
    assert "secret" not in saved.lower()
    assert all(set(entry) == set(SAVED_FIELDS) for entry in json.loads(saved)["targets"])
    with pytest.raises(TargetError) as problems:
        Target.edge("x", base_url="https://u:p@edge.adobedc.net", datastream_id="", client_id="c")
    fields = {p.field for p in problems.value.problems}
    assert fields == {"base_url", "datastream_id", "org_id"}
