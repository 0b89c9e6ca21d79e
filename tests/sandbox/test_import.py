"""Importing Sitecore export folders (#11): both layouts, the report, the zip route and its guards, the CLI,
and the demo export's acceptance (over loopback, on the real sandbox)."""

from __future__ import annotations

import io
import json
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowlab.__main__ import main
from flowlab.sandbox import SandboxServer
from flowlab.sandbox.personalize.importer import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_UNCOMPRESSED_BYTES,
    import_folder,
    zip_folder,
)
from flowlab.sandbox.personalize.store import Tenant

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "sitecore-demo"
SHARED_DEMO = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "sitecore-demo-edge"
ZIP = {"Content-Type": "application/zip"}


def _items(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i["path"]: i for i in report["items"]}


def _call(server: SandboxServer, friendly_id: str, **extra: Any) -> httpx.Response:
    body = {"clientKey": server.client_key, "channel": "WEB", "pointOfSale": "lumen/de",
            "browserId": "import-1", "friendlyId": friendly_id, **extra}  # fmt: skip
    return httpx.post(f"{server.url}/v2/callFlows", json=body)


def test_folder_layout_report_lists_every_file() -> None:
    tenant = Tenant()
    report = import_folder(tenant, DEMO).to_json()
    items = _items(report)
    assert report["counts"]["files"] == sum(1 for p in DEMO.rglob("*") if p.is_file())
    flow = items["experiences/fullStack/GetGuestRef/bx-ace-editor.json"]
    assert (flow["kind"], flow["name"], flow["status"]) == ("flow", "getguestref", "loaded")
    model = items["decisioning/decisionModels/GetGuestRef/GetGuestRef.xml"]
    assert model["status"] == "loaded" and "folder 'GetGuestRef' has the flow's name" in model["reason"]
    welcome = items["decisioning/decisionModels/Dynamic Welcome Message/v14.xml"]
    assert "'Generate Welcome Message' is what the template looks up" in welcome["reason"]
    assert items["experiences/web/Slide out demo panel/bx-ace-editor.json"]["reason"].startswith("web flow")
    assert items["connections/Get City from MaxMind/bx-ace-editor.json"]["status"] == "loaded"
    assert items["decisioning/decisionModels/GetGuestRef/GetGuestRef.js"]["kind"] == "companion"
    assert items["LICENSE"]["status"] == "skipped" and items["LICENSE"]["reason"]
    assert all(i["reason"] for i in report["items"] if i["status"] == "skipped")  # nothing silent
    assert not any("Get City from MaxMind" in note for note in report["limitations"])  # connections run (#11)
    # the stored connection keeps no secret
    connection = tenant.library["connection"]["a857d8f1-6f36-47e7-8687-8e57e2614999"]
    assert connection["auth"] == {"authType": "BASIC", "username": "Redacted"}
    assert "883e44a0-6a48-4cec-b704-654885537046" in tenant.models  # the flow's own definition ref


def test_flat_layout_and_bad_files_do_not_stop_the_others(tmp_path: Path) -> None:
    export = tmp_path / "export"
    (export / "connections").mkdir(parents=True)
    (export / "offers").mkdir()
    (export / "flows").mkdir()
    shutil.copy(
        DEMO / "connections" / "Get City from MaxMind" / "bx-ace-editor.json",
        export / "connections" / "MaxMind.json",
    )
    shutil.copy(
        DEMO / "decisioning" / "offers" / "Full Stack Experience Offer" / "bx-ace-editor.json",
        export / "offers" / "Empty.json",
    )
    flow = json.loads((DEMO / "experiences" / "fullStack" / "GetGuestRef" / "bx-ace-editor.json").read_text())
    (export / "flows" / "getguestref.json").write_text(json.dumps(flow))
    (export / "GetGuestRef.xml").write_bytes(
        (DEMO / "decisioning" / "decisionModels" / "GetGuestRef" / "GetGuestRef.xml").read_bytes()
    )
    (export / "flows" / "broken.json").write_text("{not json")
    bad_flow = dict(flow, friendlyId="needs_a_model", name="Nothing", ref="x-1")
    bad_flow["transpiledVariants"][0]["tasks"][1]["input"]["decisionModelRefs"] = ["no-such-ref"]
    (export / "flows" / "orphan.json").write_text(json.dumps(bad_flow))
    (export / "evil.xml").write_text(
        '<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]><definitions>&e;</definitions>'
    )
    tenant = Tenant()
    items = _items(import_folder(tenant, export).to_json())
    assert items["connections/MaxMind.json"]["status"] == "loaded"
    assert items["offers/Empty.json"]["status"] == "loaded"
    assert items["flows/getguestref.json"]["status"] == "loaded"
    assert items["GetGuestRef.xml"]["status"] == "loaded"
    assert "not valid JSON" in items["flows/broken.json"]["reason"]
    assert (
        "no-such-ref" in items["flows/orphan.json"]["reason"]
        and items["flows/orphan.json"]["status"] == "skipped"
    )
    assert "refuses" in items["evil.xml"]["reason"]
    assert "getguestref" in tenant.flows and "needs_a_model" not in tenant.flows


def test_zip_route_loads_and_the_flow_answers(fresh_sandbox: SandboxServer) -> None:
    answer = httpx.post(f"{fresh_sandbox.url}/sandbox/import", content=zip_folder(DEMO), headers=ZIP)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["counts"]["loaded"] == 7 and "items" in report
    reply = _call(fresh_sandbox, "getguestref")
    assert reply.status_code == 200
    guest = httpx.get(f"{fresh_sandbox.url}/sandbox/guests", params={"browserId": "import-1"}).json()
    assert json.loads(reply.text) == {"guestRef": guest["items"][0]["ref"]}


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("body", "headers", "status", "text"),
    [
        (b"plainly not a zip", ZIP, 400, "not a zip archive"),
        (_zip({"../../etc/cron.d/x": b"x"}), ZIP, 400, "points outside the export folder"),
        (_zip({"/abs/flow.json": b"{}"}), ZIP, 400, "points outside"),
        (_zip({f"f{i}.json": b"" for i in range(MAX_FILES + 1)}), ZIP, 413, "files, over the limit"),
        (
            _zip(
                {
                    f"z{i}.bin": bytes(MAX_FILE_BYTES)
                    for i in range(MAX_UNCOMPRESSED_BYTES // MAX_FILE_BYTES + 1)
                }
            ),
            ZIP,
            413,
            "zip bomb",
        ),  # fmt: skip
        (_zip({"a.json": b"{}"}), {"Content-Type": "application/json"}, 415, "application/zip"),
    ],
)
def test_zip_route_guards(
    fresh_sandbox: SandboxServer, body: bytes, headers: dict[str, str], status: int, text: str
) -> None:
    answer = httpx.post(f"{fresh_sandbox.url}/sandbox/import", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["status"] == str(status) and text in error["message"] + error["developerMessage"]


def test_one_oversized_file_is_skipped_not_fatal(fresh_sandbox: SandboxServer) -> None:
    body = _zip(
        {"big.json": bytes(MAX_FILE_BYTES + 1), "offers/o.json": b'{"name": "O", "offerTypeRef": "t"}'}
    )
    report = httpx.post(f"{fresh_sandbox.url}/sandbox/import", content=body, headers=ZIP).json()
    items = _items(report)
    assert items["big.json"]["status"] == "skipped" and "limit per file" in items["big.json"]["reason"]
    assert items["offers/o.json"]["status"] == "loaded"


def test_import_route_is_an_admin_write(fresh_sandbox: SandboxServer) -> None:
    answer = httpx.post(
        f"{fresh_sandbox.url}/sandbox/import",
        content=_zip({"a.json": b"{}"}),
        headers={**ZIP, "Origin": "http://evil.example"},
    )
    assert answer.status_code == 403


def test_cli_import_prints_the_table_and_exits_by_what_loaded(
    fresh_sandbox: SandboxServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["import", str(DEMO), "--base-url", fresh_sandbox.url]) == 0
    out = capsys.readouterr().out
    assert "loaded  flow" in out and "getguestref" in out and "note: decision model" not in out  # (#11)
    assert "GetGuestRef.js" not in out and "companion or other files" in out  # listed with --all-files
    broken = tmp_path / "broken"
    (broken / "offers").mkdir(parents=True)
    (broken / "offers" / "o.json").write_text('{"name": "O", "offerTypeRef": "t", "attributes": []}')
    assert main(["import", str(broken), "--base-url", fresh_sandbox.url, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["items"][0]["status"] == "skipped" and "attributes" in report["items"][0]["reason"]
    assert main(["import", str(tmp_path / "missing")]) == 2


def test_load_is_kept_across_resets() -> None:
    with SandboxServer(load=[DEMO]) as server:
        assert server.app.load_reports[0].counts()["loaded"] == 7
        httpx.post(f"{server.url}/sandbox/reset", json={})
        assert _call(server, "getguestref").status_code == 200


@pytest.mark.skipif(
    not SHARED_DEMO.exists(), reason="../shared (the whole demo export) is not on this machine"
)
def test_the_whole_demo_export() -> None:
    started = time.perf_counter()
    with SandboxServer(load=[SHARED_DEMO]) as server:
        load_s = time.perf_counter() - started
        report = server.app.load_reports[0].to_json()
        skipped = [i for i in report["items"] if i["status"] == "skipped" and i["kind"] == "flow"]
        assert [i["name"] for i in skipped] == ["ticket_checkout_vip_upsell"]  # an older revision of one
        flows = {f["friendlyId"]: f for f in httpx.get(f"{server.url}/sandbox/flows").json()}
        web = sorted(p.parent for p in SHARED_DEMO.rglob("web/*/bx-ace-editor.json"))
        for folder in web:
            definition = json.loads((folder / "bx-ace-editor.json").read_text())
            listed = flows[definition["friendlyId"]]
            assert listed["type"] == "INTERACTIVE_WEB_FLOW" and listed["variants"]
        assert flows["session_browse_abandonment"]["type"] == "TRIGGERED_V3"
        reply = _call(server, "getguestref")
        assert reply.status_code == 200 and set(json.loads(reply.text)) == {"guestRef"}
        welcome = _call(server, "dynamic_welcome_message")  # its connections answer from the mocks (#11)
        assert welcome.status_code == 200 and "PLAY! Summit" in welcome.json()["message"]
        trace = httpx.get(f"{server.url}/sandbox/executions/{welcome.headers['x-flowlab-execution']}").json()
        assert [c["node"] for c in trace["connections"]] == ["Get City from MaxMind", "Azure Translation"]
    assert load_s < 2.0 + 3.0  # the import itself is ~0.1 s; the rest is the server starting
