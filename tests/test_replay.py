"""Record a tenant, replay it offline (#10): a run store served back byte for byte by a second sandbox.

One sandbox plays the live tenant (``live_tenant``); a batch against it is the recording; a second sandbox
replays the store. Nothing is mocked: both are real servers on loopback.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from streamlit.testing.v1 import AppTest

from flowlab.__main__ import main
from flowlab.batch.runner import BatchOptions, run_batch_to_file
from flowlab.batch.runs import MAX_BODY_CHARS, GuestResult, RunMeta, RunStore
from flowlab.batch.samples import generate_guests
from flowlab.errors import RunStoreError
from flowlab.sandbox import SandboxServer
from flowlab.sandbox.personalize.replay import load_recording

FLOW = "checkout_ab_test"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, SandboxServer]]:
    """A 120-guest run of the demo A/B test against a sandbox that plays the live tenant."""
    path = tmp_path_factory.mktemp("recording") / "run.sqlite"
    with SandboxServer(seed=8) as live:
        options = BatchOptions(
            base_url=live.url, client_key=live.client_key, friendly_id=FLOW, concurrency=10
        )
        summary = run_batch_to_file(generate_guests(120, seed=21), options, path, progress=False)
        assert summary.ok == 120
        yield path, live


@pytest.fixture
def replaying(recording: tuple[Path, SandboxServer]) -> Iterator[SandboxServer]:
    with SandboxServer(seed=1, replay=[recording[0]]) as server:
        yield server


def rows(path: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM results ORDER BY row").fetchall()
    finally:
        conn.close()


def post(server: SandboxServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/callFlows", json={"clientKey": "any-key", **body}, timeout=10)


def test_a_recorded_guest_gets_the_recorded_answer_byte_for_byte(
    recording: tuple[Path, SandboxServer], replaying: SandboxServer
) -> None:
    for row in rows(recording[0])[:20]:
        answer = post(replaying, friendlyId=FLOW, **{row["identity"]: row["guest"]})
        assert answer.status_code == row["status_code"]
        assert answer.content == row["body"].encode()  # the exact bytes, not an equal JSON
        own = {"date", "server"}  # the replaying server's
        served = sorted((k, v) for k, v in answer.headers.multi_items() if k not in own)
        recorded = sorted((k.lower(), v) for k, v in orjson.loads(row["headers"]) if k.lower() not in own)
        assert served == recorded  # every other header, exactly (execution ref, content type, Vary, length)
        assert ("x-flowlab-execution", row["execution_ref"]) in served
    row = rows(recording[0])[0]
    origin = {"Origin": "https://shop.example"}  # a browser's request: CORS headers as the tenant sent them
    body = {"clientKey": "k", "friendlyId": FLOW, row["identity"]: row["guest"]}
    answer = httpx.post(f"{replaying.url}/v2/callFlows", json=body, headers=origin, timeout=10)
    assert (
        answer.headers.get_list("vary") == ["Origin"] and answer.headers["access-control-allow-origin"] == "*"
    )
    legacy = rows(recording[0])[0]  # the legacy GET form replays too
    message = orjson.dumps(
        {"clientKey": "k", "friendlyId": FLOW, legacy["identity"]: legacy["guest"]}
    ).decode()
    answer = httpx.get(f"{replaying.url}/v2/callFlows", params={"message": message}, timeout=10)
    assert answer.status_code == 200 and answer.content == legacy["body"].encode()


def test_an_unrecorded_guest_gets_a_404_that_says_so_and_no_tracking_is_written(
    recording: tuple[Path, SandboxServer], replaying: SandboxServer
) -> None:
    guests_before = len(replaying.app.tenant.guests)
    answer = post(replaying, friendlyId=FLOW, browserId="never-recorded-1")
    assert answer.status_code == 404
    error = answer.json()
    assert set(error) == {"status", "code", "message", "developerMessage", "moreInfoUrl"}
    assert error["status"] == "404"
    assert error["message"] == (
        f"no recorded answer for friendlyId {FLOW} and browserId never-recorded-1 in the replayed runs: "
        "run.sqlite; replay serves only what was recorded"
    )
    recorded = rows(recording[0])[0]
    other_flow = post(
        replaying, friendlyId="hero_banner_default", **{recorded["identity"]: recorded["guest"]}
    )
    assert other_flow.status_code == 404  # the same guest in a flow that was not recorded: no guess
    for row in rows(recording[0])[:10]:
        assert post(replaying, friendlyId=FLOW, **{row["identity"]: row["guest"]}).status_code == 200
    tenant = replaying.app.tenant
    assert not tenant.tracking and not tenant.traces and len(tenant.guests) == guests_before
    assert post(replaying, friendlyId=FLOW, browserId="x", clientKey="").status_code == 401


def test_a_batch_against_the_replay_reproduces_the_runs_variants(
    recording: tuple[Path, SandboxServer], replaying: SandboxServer, tmp_path: Path
) -> None:
    options = BatchOptions(base_url=replaying.url, client_key="any-key", friendly_id=FLOW, concurrency=10)
    again = tmp_path / "again.sqlite"
    summary = run_batch_to_file(generate_guests(120, seed=21), options, again, progress=False)
    assert summary.ok == 120
    with RunStore.open(recording[0]) as first, RunStore.open(again) as second:
        a, b = first.to_dataframe(), second.to_dataframe()
    assert a["variant"].tolist() == b["variant"].tolist() and set(a["variant"]) == {"A", "B"}
    assert a["offers"].tolist() == b["offers"].tolist()
    assert not replaying.app.tenant.tracking and not replaying.app.tenant.traces


def test_sandbox_info_shows_what_is_replayed(
    recording: tuple[Path, SandboxServer], replaying: SandboxServer
) -> None:
    replay = httpx.get(f"{replaying.url}/sandbox/info", timeout=10).json()["replay"]
    assert replay["active"] and replay["flowIds"] == [FLOW] and replay["guests"] == 120
    (run,) = replay["runs"]
    assert run["file"] == "run.sqlite" and run["friendlyId"] == FLOW and run["replayable"] == 120
    assert run["headersRecorded"] and run["recordedAt"].endswith("Z") and run["status"] == "done"


def test_a_recording_keeps_no_secret(recording: tuple[Path, SandboxServer]) -> None:
    path, live = recording
    data = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith("run.sqlite"))
    assert live.client_key.encode() not in data  # the client key is never stored
    result = GuestResult(
        row=1, guest="g", identity="browserId", status_code=200, ok=True, body="{}",
        headers=[("Content-Type", "application/json"), ("Set-Cookie", "sid=s3cret"), ("X-Auth-Token", "t0k"),
                 ("Authorization", "Bearer abc"), ("x-api-key", "k3y"), ("X-Session-Id", "sess"),
                 ("Vary", "Origin"), ("Vary", "Accept")],
    )  # fmt: skip
    headers = orjson.loads(result.as_sql()[-2])
    assert headers == [["Content-Type", "application/json"], ["Vary", "Origin"], ["Vary", "Accept"]]


def _store(path: Path, *results: GuestResult) -> Path:
    with RunStore.create(path, RunMeta(FLOW, "https://tenant.example", "fp", len(results))) as store:
        store.write(results)
        store.set_status("done")
    return path


def test_a_cut_body_or_a_call_without_answer_is_never_served(tmp_path: Path) -> None:
    big = '{"x": "' + "y" * MAX_BODY_CHARS + '"}'
    path = _store(
        tmp_path / "cut.sqlite",
        GuestResult(
            1, "big", "browserId", 200, True, body=big, headers=[("content-type", "application/json")]
        ),
        GuestResult(2, "slow", "browserId", None, False, error="timeout", error_type="timeout"),
        GuestResult(3, "ok", "email", 503, False, body='{"status":"503"}', headers=[("Retry-After", "2")]),
    )
    with SandboxServer(replay=[path]) as server:
        cut = post(server, friendlyId=FLOW, browserId="big")
        assert cut.status_code == 404 and "cut at 100,000 characters" in cut.json()["message"]
        slow = post(server, friendlyId=FLOW, browserId="slow")
        assert slow.status_code == 404 and "got no answer (timeout)" in slow.json()["message"]
        unavailable = post(server, friendlyId=FLOW, email="ok")  # a recorded error is an answer, served
        assert unavailable.status_code == 503 and unavailable.content == b'{"status":"503"}'
        assert unavailable.headers["retry-after"] == "2"
        assert unavailable.headers["content-type"] == "application/json"  # none recorded: the API's type
        info = httpx.get(f"{server.url}/sandbox/replay", timeout=10).json()["runs"][0]
        assert info["replayable"] == 1 and info["notReplayable"] == {"body not exact": 1, "no answer": 1}


def test_an_edge_run_store_is_refused_with_what_replay_serves(tmp_path: Path) -> None:
    """Replay answers callFlows; an AEP Edge run (same store format, schema 3) must not be served as one."""
    path = tmp_path / "edge.sqlite"
    meta = RunMeta("lumen-web", "https://edge.adobedc.net", "fp", 1, provider="edge")
    with RunStore.create(path, meta) as store:
        store.write([GuestResult(1, "lena@example.de", "Email", 200, True, body='{"handle": []}')])
        store.set_status("done")
    with pytest.raises(RunStoreError, match="an AEP Edge run.*replay serves callFlows runs only"):
        load_recording(path, {})


def test_an_old_store_replays_with_json_content_type_and_says_headers_were_not_recorded(
    tmp_path: Path,
) -> None:
    path = _store(tmp_path / "old.sqlite", GuestResult(1, "b1", "browserId", 200, True, body='{"v": "A"}'))
    conn = sqlite3.connect(path)  # what a schema-1 store looks like: no headers, no body_exact
    conn.execute("ALTER TABLE results DROP COLUMN headers")
    conn.execute("ALTER TABLE results DROP COLUMN body_exact")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    with RunStore.open(path) as store:  # still opens, and a resume can still write to it
        store.write([GuestResult(2, "b2", "browserId", 200, True, body='{"v": "B"}', headers=[])])
        assert len(store.to_dataframe()) == 2
    with SandboxServer(replay=[path]) as server:
        answer = post(server, friendlyId=FLOW, browserId="b2")
        assert answer.status_code == 200 and answer.content == b'{"v": "B"}'
        assert answer.headers["content-type"] == "application/json"
        run = httpx.get(f"{server.url}/sandbox/info", timeout=10).json()["replay"]["runs"][0]
        assert run["schema"] == 1 and run["headersRecorded"] is False


def test_replay_latency_waits_the_recorded_latency(tmp_path: Path) -> None:
    path = _store(
        tmp_path / "slow.sqlite", GuestResult(1, "b1", "browserId", 200, True, latency_ms=800.0, body="{}")
    )
    with SandboxServer(replay=[path], replay_latency=True) as server:
        started = time.perf_counter()
        assert post(server, friendlyId=FLOW, browserId="b1").status_code == 200
        assert time.perf_counter() - started >= 0.75


def test_the_admin_route_replays_run_stores_only(
    recording: tuple[Path, SandboxServer], fresh_sandbox: SandboxServer, tmp_path: Path
) -> None:
    url = f"{fresh_sandbox.url}/sandbox/replay"
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:do-not-echo\n")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    for path in (secret, other, tmp_path, tmp_path / "missing.sqlite", Path("/dev/zero")):
        answer = httpx.put(url, json={"paths": [str(path)]}, timeout=10)
        assert answer.status_code == 400, path
        assert "do-not-echo" not in answer.text and "run store" in answer.json()["message"]
    assert httpx.put(url, json={"paths": "x"}, timeout=10).status_code == 400
    assert not fresh_sandbox.app.replay.active  # a refused load changes nothing
    evil = httpx.put(url, json={"paths": [str(recording[0])]}, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and not fresh_sandbox.app.replay.active
    loaded = httpx.put(url, json={"paths": [str(recording[0])]}, timeout=30)
    assert loaded.status_code == 200 and loaded.json()["guests"] == 120
    assert post(fresh_sandbox, friendlyId=FLOW, browserId="never").status_code == 404
    assert httpx.put(url, json={"paths": []}, timeout=10).json()["active"] is False
    key = fresh_sandbox.client_key
    assert post(fresh_sandbox, friendlyId=FLOW, browserId="never", clientKey=key).status_code == 200


def test_the_cli_refuses_a_file_that_is_not_a_run_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert main(["sandbox", "--port", "0", "--replay", str(notes)]) == 2
    assert f"{notes} is not a Flow Lab run store (not an SQLite file)" in capsys.readouterr().err


def test_the_preview_page_shows_the_recorded_answer(
    recording: tuple[Path, SandboxServer], replaying: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = next(r for r in rows(recording[0]) if r["identity"] == "browserId")
    monkeypatch.setenv("FLOWLAB_BASE_URL", replaying.url)
    monkeypatch.setenv("FLOWLAB_CLIENT_KEY", "the-live-tenants-key")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.session_state["friendly_id"] = FLOW
    at.session_state["pos"] = "lumen/de"
    at.run()
    at.checkbox(key="live_ack::Configured tenant (env)").check().run()
    at.text_input(key="browser_id").set_value(row["guest"]).run()
    at.button(key="call").click().run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Status"] == "200 OK"
    shown = [c.value for c in at.code if c.language == "json"]
    assert any(orjson.loads(c) == orjson.loads(row["body"]) for c in shown if c.strip().startswith("{"))
    assert {m.label: m.value for m in at.metric}["Variant"] == row["variant"]


def test_the_sandbox_page_replays_a_run_from_the_run_log(tmp_path: Path) -> None:
    from flowlab.batch.runlog import RunLog
    from flowlab.batch.runner import BatchOptions

    with SandboxServer(seed=8) as live:
        options = BatchOptions(base_url=live.url, client_key=live.client_key, friendly_id=FLOW, concurrency=5)
        record, handle = RunLog().start(generate_guests(12, seed=5), options, name="recorded", target="live")
        handle.wait()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    at.switch_page("app_pages/sandbox.py").run()
    label = next(o for o in at.multiselect(key="sandbox_replay_runs").options if o.startswith("recorded"))
    at.multiselect(key="sandbox_replay_runs").set_value([label]).run()
    at.button(key="sandbox_replay_start").click().run()
    try:
        assert not at.exception and not at.error, [e.value for e in at.error]
        shown = next(d.value for d in at.dataframe if "File" in d.value.columns)
        assert shown["File"].tolist() == [str(record.path)] and shown["Guests"].tolist() == [12]
        info = "\n".join(str(e.value) for e in at.info)
        assert "Replaying 12 recorded guests" in info
    finally:  # the app's built-in sandbox is shared by the process: back to the demo engine
        at.button(key="sandbox_replay_stop").click().run()
    assert "Nothing is being replayed" in "\n".join(str(e.value) for e in at.markdown)
