"""Connections during execution (#11): against the real sandbox over loopback, with a small fake upstream.

The fake upstream is a real HTTP server on 127.0.0.1 (``http.server`` in a thread) that records what it
receives: so these tests see the headers, bodies and timings a connection actually sends, and a sandbox
that calls nothing else (offline by default: the demo's own connections answer from the built-in mocks).
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from flowlab.__main__ import UsageError, _connection_routes
from flowlab.admin import SandboxAdmin
from flowlab.sandbox import SandboxServer
from flowlab.sandbox.personalize.dmn import MASK

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "fixtures" / "sitecore-demo"
MAXMIND_REF = "a857d8f1-6f36-47e7-8687-8e57e2614999"
AZURE_REF = "f59fd04e-dc92-41bc-83ac-436efaf8123c"


class Upstream:
    """A fake data system: records every request; answers by path (slow, token, geo, translate, echo)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.tokens = 0
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the caller gave up (a timeout test)
                    pass

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                seen = {"method": self.command, "path": parts.path, "query": query,
                        "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}  # fmt: skip
                upstream.requests.append(seen)
                if parts.path == "/token":
                    upstream.tokens += 1
                    form = {k: v[0] for k, v in parse_qs(body).items()}
                    if form.get("grant_type") != "client_credentials":
                        self.answer(400, {"error": "unsupported_grant_type"})
                        return
                    self.answer(200, {"access_token": f"tok-{upstream.tokens}", "token_type": "Bearer",
                                      "expires_in": 3600})  # fmt: skip
                elif parts.path == "/slow":
                    time.sleep(int(query.get("ms", "1000")) / 1000)
                    self.answer(200, {"slow": True})
                elif parts.path.startswith("/geoip/v2.1/city/"):
                    self.answer(
                        200,
                        {"city": {"names": {"en": "Fakeville"}}, "country": {"names": {"en": "Upstream"}}},
                    )
                elif parts.path == "/translate":
                    self.answer(200, [{"translations": [{"text": "Salut", "to": query.get("to")}]}])
                elif parts.path == "/big":  # over the sandbox's 1 MiB limit for an answer
                    self.answer(200, {"pad": "x" * (1024 * 1024 + 10)})
                elif parts.path == "/drop":  # hangs up without a word
                    self.close_connection = True
                elif parts.path == "/drip":  # a byte every 0.2 s: each read is quick, the answer never ends
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    try:
                        for _ in range(100):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass
                elif parts.path == "/cookie":
                    data = json.dumps({"cookie": self.headers.get("Cookie")}).encode()
                    self.send_response(200)
                    self.send_header("Set-Cookie", "session=guest-a; Path=/")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif parts.path.startswith("/status/"):
                    self.answer(int(parts.path.rsplit("/", 1)[1]), {"error": "as asked"})
                else:
                    self.answer(200, seen)

            do_GET = do_POST = do_PUT = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def seen(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def demo_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(seed=11, load=[DEMO]) as server:
        yield server


def connection(name: str, url: str, **extra: Any) -> dict[str, Any]:
    """Sitecore's connection JSON (the shape of the demo export), GET with no inputs unless told."""
    data: dict[str, Any] = {
        "name": name, "description": "test", "auth": {"authType": "NONE"},
        "request": {"requestType": "GET", "connectionUrl": url}, "urlParameters": [], "inputMappings": [],
        "outputMappings": [{"label": "Answer", "outputReference": "answer", "type": "Object"}],
        "customHeaders": [{"name": "Accept", "value": "application/json"}], "systemType": "DATA_SYSTEM",
        "connectionTimeout": 1000, "socketTimeout": 1000,
    }  # fmt: skip
    data.update(extra)
    return data


def model_and_flow(
    friendly_id: str, conn: dict[str, Any], mappings: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A decision model whose connection node calls ``conn`` (mappings filled in), and a flow running it."""
    embedded = json.loads(json.dumps(conn))
    for group in ("urlParameters", "inputMappings"):
        for item in embedded.get(group, []):
            item["mapping"] = (mappings or {}).get(item["key"], "")
    model = {
        "ref": f"{friendly_id}-model", "name": f"{friendly_id} model", "nodes": [
            {"id": "who", "name": "Who", "type": "programmable", "outputReference": "who",
             "source": "(function () { return request.params.who || 'nobody'; })();"},
            {"id": "call", "name": "Call it", "type": "connection", "outputReference": "answer",
             "connection": embedded, "requires": ["who"]},
            {"id": "read", "name": "Read it", "type": "programmable", "outputReference": "seen",
             "source": "(function () { return answer ? JSON.stringify(answer).length : 0; })();"},
        ],
    }  # fmt: skip
    template = '{"size": ${getDecisionModelResultNode("Read it").outputs[0].seen?c}}'
    flow = {
        "friendlyId": friendly_id, "name": friendly_id, "type": "INTERACTIVE_API_FLOW", "status": "LIVE",
        "variants": [{"ref": f"{friendly_id}_v", "name": "Only", "isControl": True, "tasks": [
            {"implementation": "decisionModelTask", "input": {"decisionModelRefs": [model["ref"]]}},
            {"implementation": "templateRenderTask", "input": {"template": template}}]}],
        "traffic": {"splits": [{"ref": f"{friendly_id}_v", "split": 100}]},
    }  # fmt: skip
    return model, flow


def load(
    admin: SandboxAdmin, friendly_id: str, conn: dict[str, Any], mappings: dict[str, str] | None = None
) -> str:
    stored = admin.add_connection(conn)
    conn = {**conn, "ref": stored["ref"]}
    model, flow = model_and_flow(friendly_id, conn, mappings)
    admin.load_decision_model(model)
    admin.load_flow(flow)
    return str(stored["ref"])


def call(
    server: SandboxServer, friendly_id: str, browser_id: str = "b-conn", **params: Any
) -> httpx.Response:
    body = {"clientKey": server.client_key, "channel": "WEB", "language": "EN", "browserId": browser_id,
            "friendlyId": friendly_id, "params": params}  # fmt: skip
    return httpx.post(f"{server.url}/v2/callFlows", json=body, timeout=30)


def trace(server: SandboxServer, response: httpx.Response) -> dict[str, Any]:
    ref = response.headers["x-flowlab-execution"]
    return dict(httpx.get(f"{server.url}/sandbox/executions/{ref}").json())


def test_demo_welcome_message_answers_from_the_mock_systems(demo_sandbox: SandboxServer) -> None:
    reply = call(demo_sandbox, "dynamic_welcome_message", ipAddress="81.2.69.160", browserLanguage="fr")
    assert reply.status_code == 200, reply.text
    message = reply.json()["message"]
    assert message.startswith("Bienvenue à PLAY! Summit") and "visiting us from" in message
    assert (
        call(demo_sandbox, "dynamic_welcome_message", ipAddress="81.2.69.160", browserLanguage="fr").json()[
            "message"
        ]
        == message
    )  # deterministic: the same IP is the same city
    calls = trace(demo_sandbox, reply)["connections"]
    assert [c["node"] for c in calls] == ["Get City from MaxMind", "Azure Translation"]
    geo, translate = calls
    assert geo["via"] == "mock" and geo["status"] == 200 and geo["inputs"] == {"ipAddress": "81.2.69.160"}
    assert geo["request"]["url"].endswith("/sandbox/mocks/maxmind/geoip/v2.1/city/81.2.69.160")
    assert geo["request"]["headers"]["Authorization"] == f"Basic {MASK}"  # BASIC from the export, masked
    assert set(geo["outputs"]) == {"city", "country", "location", "subdivisions"} and geo["latencyMs"] > 0
    assert translate["inputs"] == {"inputLanguage": "en", "outputLanguage": "fr", "text": "Welcome to"}
    assert translate["request"]["headers"]["Ocp-Apim-Subscription-Key"] == MASK
    assert json.loads(translate["request"]["body"]) == [{"text": "Welcome to"}]
    # a top-level array answer is exposed under the Array output reference (azureTranslation.result[0]...)
    assert translate["outputs"]["result"][0]["translations"][0] == {"text": "Bienvenue à", "to": "fr"}


def test_connections_are_listed_once_by_ref_with_secrets_masked(demo_sandbox: SandboxServer) -> None:
    with SandboxAdmin(base_url=demo_sandbox.url) as admin:
        listed = {c["ref"]: c for c in admin.connections()}
        assert {MAXMIND_REF, AZURE_REF} <= set(listed)
        geo = listed[MAXMIND_REF]  # in the library and embedded in the model: one entry
        assert geo["usedBy"] == ["decision model 'Dynamic Welcome Message', node 'Get City from MaxMind'"]
        assert geo["routing"]["via"] == "mock"
        azure = admin.connection("Azure Translation")  # by name too
        assert (
            next(h for h in azure["customHeaders"] if h["name"] == "Ocp-Apim-Subscription-Key")["value"]
            == MASK
        )
        tested = admin.test_connection(MAXMIND_REF, {"ipAddress": "8.8.8.8"})
        assert tested["response"]["status"] == 200 and tested["outputs"]["city"]["names"]["en"]
        assert tested["request"]["method"] == "GET" and tested["request"]["url"].endswith("/city/8.8.8.8")
        assert tested["latencyMs"] > 0 and tested["error"] is None
        reserved = admin.test_connection(MAXMIND_REF, {"ipAddress": "10.0.0.1"})
        assert (
            reserved["response"]["body"]["code"] == "IP_ADDRESS_RESERVED" and "HTTP 400" in reserved["error"]
        )
        http = httpx.post(
            f"{demo_sandbox.url}/sandbox/connections/{MAXMIND_REF}/test", json={"inputs": {"ip": "1"}}
        )
        assert http.status_code == 400 and "ipAddress" in http.json()["developerMessage"]
        missing = httpx.get(f"{demo_sandbox.url}/sandbox/connections/no-such-connection")
        assert missing.status_code == 404
        for model in admin.decision_models():  # secrets masked in every answer
            for node in model["nodes"]:
                for header in (node.get("connection") or {}).get("customHeaders", []):
                    assert header["name"] != "Ocp-Apim-Subscription-Key" or header["value"] == MASK


def test_a_socket_timeout_fails_the_flow_the_way_sitecore_records_it(
    fresh_sandbox: SandboxServer, upstream: Upstream
) -> None:
    slow = connection("Slow system", f"{upstream.url}/slow?ms=3000", socketTimeout=300)
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        load(admin, "slow_flow", slow)
        started = time.perf_counter()
        reply = call(fresh_sandbox, "slow_flow")
        elapsed = time.perf_counter() - started
        assert reply.status_code == 500 and "Read timed out" in reply.json()["message"]
        assert (
            elapsed < 2.5
        )  # the 300 ms socket timeout, not the upstream's 3 s (a loaded CI machine is slow)
        calls = trace(fresh_sandbox, reply)["connections"]
        assert calls[0]["error"] == "Read timed out" and calls[0]["status"] is None
        assert 290 <= calls[0]["latencyMs"] < 1500, calls[0]  # the call itself ended at its socket timeout
        guest_ref = trace(fresh_sandbox, reply)["guest"]["ref"]
        record = admin.tracking(guest_ref)[-1]["arbitraryData"]
        assert record["category"] == "FAILED"
        execution = record["flowExecution"]
        assert execution["status"] == "ERROR" and execution["error"] == "Read timed out"
        assert execution["errorCategory"] == "ERROR"
        # the nodes that completed are in the decision record, as in the reference
        assert any('"who"' in r for r in execution["decision"]["results"])
        failing = load(admin, "failing_flow", connection("Failing", f"{upstream.url}/status/503"))
        failed = call(fresh_sandbox, "failing_flow")
        assert failed.status_code == 500 and "HTTP 503" in failed.json()["message"] and failing


def test_refused_dropped_oversized_and_dripping_systems_fail_with_clear_errors(
    fresh_sandbox: SandboxServer, upstream: Upstream
) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    quick = {"connectionTimeout": 300, "socketTimeout": 300}
    cases = {
        f"http://127.0.0.1:{closed_port}/x": "Connection refused",
        f"{upstream.url}/drop": "Connection reset",
        f"{upstream.url}/big": "the response is larger than the sandbox's limit of 1,048,576 bytes (HTTP 200)",
        f"{upstream.url}/drip": "Read timed out",  # connect + socket timeout + 0.5 s in all
    }
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        for i, (url, error) in enumerate(cases.items()):
            ref = admin.add_connection(connection(f"Failing {i}", url, **quick))["ref"]
            started = time.perf_counter()
            tested = admin.test_connection(ref, {})
            assert tested["error"] == error, (url, tested)
            assert tested["response"]["status"] is None and time.perf_counter() - started < 3
        # no cookie jar: what one call's answer set never rides along on the next (another guest's) call
        ref = admin.add_connection(connection("Cookies", f"{upstream.url}/cookie"))["ref"]
        first, second = admin.test_connection(ref, {}), admin.test_connection(ref, {})
        assert first["response"]["body"] == second["response"]["body"] == {"cookie": None}


def test_basic_oauth_and_custom_headers_are_sent_and_masked(
    fresh_sandbox: SandboxServer, upstream: Upstream
) -> None:
    basic = connection(
        "Basic echo", f"{upstream.url}/basic/${{who}}?apikey=k-secret-1&q=1",
        auth={"authType": "BASIC", "username": "ann", "password": "pw-secret"},
        urlParameters=[{"label": "Who", "key": "who", "type": "String", "exampleValue": "x"}],
        customHeaders=[{"name": "X-Api-Key", "value": "h-secret"}, {"name": "X-Plain", "value": "visible"}],
    )  # fmt: skip
    oauth = connection(
        "OAuth echo", f"{upstream.url}/oauth",
        request={"requestType": "POST", "connectionUrl": f"{upstream.url}/oauth",
                 "requestBody": '{"who": "${who}", "n": ${n}}'},
        auth={"authType": "oauth", "clientId": "cid", "clientSecret": "cs-secret",
              "accessTokenUrl": f"{upstream.url}/token", "scope": "read", "credentialsIn": "HEADER"},
        inputMappings=[{"key": "who"}, {"key": "n"}],
    )  # fmt: skip
    body_creds = connection(
        "OAuth body", f"{upstream.url}/oauth-body",
        auth={"authType": "OAUTH2", "clientId": "cid2", "clientSecret": "cs2-secret",
              "accessTokenUrl": f"{upstream.url}/token", "credentialsIn": "BODY"},
    )  # fmt: skip
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        load(admin, "basic_flow", basic, {"who": "who"})
        load(admin, "oauth_flow", oauth, {"who": "who", "n": '"7"'})
        load(admin, "oauth_body_flow", body_creds)
        reply = call(fresh_sandbox, "basic_flow", who='Ann "the" O')
        assert reply.status_code == 200, reply.text
        sent = upstream.seen("/basic/Ann%20%22the%22%20O")[-1]
        assert sent["headers"]["authorization"] == "Basic " + base64.b64encode(b"ann:pw-secret").decode()
        assert sent["headers"]["x-api-key"] == "h-secret" and sent["query"] == {
            "apikey": "k-secret-1",
            "q": "1",
        }
        shown = trace(fresh_sandbox, reply)["connections"][0]["request"]
        assert shown["headers"]["Authorization"] == f"Basic {MASK}" and shown["headers"]["X-Api-Key"] == MASK
        assert shown["headers"]["X-Plain"] == "visible" and f"apikey={MASK}&q=1" in shown["url"]
        listed = admin.connection("Basic echo")
        assert listed["auth"]["password"] == MASK and "k-secret-1" not in json.dumps(listed)

        tokens_before = upstream.tokens
        for i in range(3):
            assert call(fresh_sandbox, "oauth_flow", browser_id=f"oa-{i}", who=f'Bo"b{i}').status_code == 200
        assert upstream.tokens == tokens_before + 1  # fetched once, cached until it expires
        token_request = upstream.seen("/token")[-1]
        assert (
            token_request["headers"]["authorization"]
            == "Basic " + base64.b64encode(b"cid:cs-secret").decode()
        )
        assert parse_qs(token_request["body"]) == {"grant_type": ["client_credentials"], "scope": ["read"]}
        posted = upstream.seen("/oauth")
        assert all(r["headers"]["authorization"] == f"Bearer tok-{tokens_before + 1}" for r in posted[-3:])
        assert json.loads(posted[-1]["body"]) == {"who": 'Bo"b2', "n": 7}  # JSON-escaped inside quotes
        oauth_trace = trace(fresh_sandbox, call(fresh_sandbox, "oauth_flow", browser_id="oa-x", who="z"))
        assert oauth_trace["connections"][0]["request"]["headers"]["Authorization"] == f"Bearer {MASK}"
        assert "cs-secret" not in json.dumps(admin.connections())

        assert call(fresh_sandbox, "oauth_body_flow").status_code == 200
        form = parse_qs(upstream.seen("/token")[-1]["body"])
        assert form["client_id"] == ["cid2"] and form["client_secret"] == ["cs2-secret"]
        assert "authorization" not in upstream.seen("/token")[-1]["headers"]


def test_routing_flags_and_the_admin_route(upstream: Upstream, tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(DEMO, export)
    with SandboxServer(load=[export], connections_to=upstream.url) as server:
        reply = call(server, "dynamic_welcome_message", ipAddress="81.2.69.160", browserLanguage="fr")
        assert reply.status_code == 200, reply.text
        assert reply.json()["message"] == "Salut PLAY! Summit, we don't know who you are yet and we see you're " \
            "visiting us from Fakeville, Upstream."  # fmt: skip
        assert upstream.seen("/geoip/v2.1/city/81.2.69.160")  # path kept
        assert upstream.seen("/translate")[-1]["query"] == {"api-version": "3.0", "from": "en", "to": "fr"}
        assert [c["via"] for c in trace(server, reply)["connections"]] == ["connections-to"] * 2
    with SandboxServer(load=[export], connection_routes={"get city from maxmind": upstream.url}) as server:
        calls = trace(server, call(server, "dynamic_welcome_message", ipAddress="81.2.69.161"))["connections"]
        assert [c["via"] for c in calls] == ["override", "mock"]
        with SandboxAdmin(base_url=server.url) as admin:
            routed = admin.route_connection(AZURE_REF, upstream.url)
            assert routed["routing"]["via"] == "override" and routed["routing"]["url"].startswith(
                upstream.url
            )
            calls = trace(server, call(server, "dynamic_welcome_message", ipAddress="81.2.69.162"))[
                "connections"
            ]
            assert [c["via"] for c in calls] == ["override", "override"]
            assert admin.route_connection(AZURE_REF, None)["routing"]["via"] == "mock"
            bad = httpx.put(f"{server.url}/sandbox/connections/{AZURE_REF}", json={"baseUrl": "ftp://x"})
            assert bad.status_code == 400 and "not an http(s) base URL" in bad.json()["message"]
            # offline by default: an unknown host is refused with what to do, never called
            admin.add_connection(connection("Elsewhere", "https://api.example.com/v1/x"))
            refused = admin.test_connection("Elsewhere")
            assert (
                refused["response"]["status"] is None and "does not call api.example.com" in refused["error"]
            )
            assert "--connection" in refused["error"]
            # a DESTINATION's delivery is captured by the mock, its API key masked
            admin.add_connection(connection(
                "Send", "https://api.moosend.com/v3/subscribers/list/subscribe.json?apikey=sk-1",
                request={"requestType": "POST", "requestBody": '{"Email": "a@b.c", "Name": "A"}',
                         "connectionUrl": "https://api.moosend.com/v3/subscribers/list/subscribe.json?apikey=sk-1"},
                systemType="DESTINATION"))  # fmt: skip
            delivered = admin.test_connection("Send")
            assert delivered["response"]["body"]["Code"] == 0 and delivered["via"] == "mock"
            log = httpx.get(f"{server.url}/sandbox/mocks/deliveries").json()
            assert log["items"][0]["body"] == {"Email": "a@b.c", "Name": "A"} and "sk-1" not in json.dumps(
                log
            )
    assert _connection_routes(["Get City=http://127.0.0.1:1"]) == {"Get City": "http://127.0.0.1:1"}
    with pytest.raises(UsageError, match="NAME_OR_REF=URL"):
        _connection_routes(["no url here"])


def test_a_slow_connection_does_not_block_other_requests(
    fresh_sandbox: SandboxServer, upstream: Upstream
) -> None:
    slow = connection("Slow second", f"{upstream.url}/slow?ms=1000", socketTimeout=5000)
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        load(admin, "slow_ok_flow", slow)
    assert call(fresh_sandbox, "checkout_ab_test", browser_id="warm").status_code == 200
    result: dict[str, Any] = {}

    def slow_call() -> None:
        started = time.perf_counter()
        result["reply"] = call(fresh_sandbox, "slow_ok_flow", browser_id="slowpoke")
        result["s"] = time.perf_counter() - started

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.2)  # the slow request now waits on its connection
    quick = []
    for i in range(5):
        started = time.perf_counter()
        assert call(fresh_sandbox, "checkout_ab_test", browser_id=f"quick-{i}").status_code == 200
        quick.append(time.perf_counter() - started)
    assert thread.is_alive()  # all five answered while the connection still waited
    thread.join(timeout=10)
    assert result["reply"].status_code == 200 and result["s"] >= 1.0
    assert max(quick) < 0.5, quick


def test_bad_connection_json_is_a_clear_400(sandbox: SandboxServer) -> None:
    url = f"{sandbox.url}/sandbox/connections"
    no_url = httpx.post(url, json={"name": "x", "request": {"requestType": "GET"}})
    assert no_url.status_code == 400 and "request.connectionUrl" in no_url.json()["message"]
    bad_auth = httpx.post(url, json=connection("y", "http://127.0.0.1:9/", auth={"authType": "KERBEROS"}))
    assert bad_auth.status_code == 400 and "auth.authType" in bad_auth.json()["message"]
    bad_timeout = httpx.post(url, json=connection("z", "http://127.0.0.1:9/", socketTimeout=0))
    assert bad_timeout.status_code == 400 and "socketTimeout" in bad_timeout.json()["message"]


def test_the_mock_systems_honour_the_latency_and_fault_knobs() -> None:
    with SandboxServer(load=[DEMO], latency_ms=120) as server, SandboxAdmin(base_url=server.url) as admin:
        slow = admin.test_connection(MAXMIND_REF, {"ipAddress": "8.8.4.4"})
        assert slow["response"]["status"] == 200 and slow["latencyMs"] >= 120
        assert (
            httpx.put(f"{server.url}/sandbox/knobs", json={"latencyMs": 0, "faults": "503=1"}).status_code
            == 200
        )
        failed = admin.test_connection(MAXMIND_REF, {"ipAddress": "8.8.4.4"})
        assert failed["response"]["status"] == 503 and failed["error"] == "HTTP 503 from the connection"


def test_a_stopped_sandbox_closes_its_connection_pool(upstream: Upstream) -> None:
    """Connection calls keep a keep-alive pool on the server's loop; stopping the sandbox closes it, so no
    'Unclosed client session' surfaces later (it failed an unrelated test's setup in CI once)."""
    import gc

    import aiohttp

    def open_sessions() -> set[int]:
        gc.collect()
        return {id(o) for o in gc.get_objects() if isinstance(o, aiohttp.ClientSession) and not o.closed}

    before = open_sessions()
    with SandboxServer() as server:
        with SandboxAdmin(base_url=server.url) as admin:
            load(admin, "pool_flow", connection("Pooled", f"{upstream.url}/echo"))
        assert call(server, "pool_flow").status_code == 200
        assert open_sessions() - before  # the call went through a pooled session
    assert not open_sessions() - before


def test_a_connection_that_starts_its_model_is_called_once_and_never_past_a_failing_condition(
    fresh_sandbox: SandboxServer, upstream: Upstream
) -> None:
    """The engine calls a model's leading connection before the first worker trip (one round trip less):
    the answer and trace are the same, it is called once, and never for a variant whose condition fails."""
    lead = connection("Leading call", f"{upstream.url}/lead", inputMappings=[{"key": "k", "mapping": '"v"'}])
    lead["request"] = {"requestType": "POST", "connectionUrl": f"{upstream.url}/lead",
                       "requestBody": '{"k": "${k}"}'}  # fmt: skip
    with SandboxAdmin(base_url=fresh_sandbox.url) as admin:
        stored = admin.add_connection(lead)
        model = {
            "ref": "lead-model", "name": "Lead model", "nodes": [
                {"id": "call", "name": "Call first", "type": "connection", "outputReference": "answer",
                 "connection": {**lead, "ref": stored["ref"]}},
                {"id": "read", "name": "Read it", "type": "programmable", "outputReference": "seen",
                 "source": "(function () { return answer.body; })();", "requires": ["call"]},
            ],
        }  # fmt: skip
        admin.load_decision_model(model)
        for friendly_id, condition in (
            ("lead_open", None),
            ("lead_gated", "(function () { return false; })();"),
        ):
            tasks: list[dict[str, Any]] = [
                {"implementation": "decisionModelTask", "input": {"decisionModelRefs": ["lead-model"]}},
                {"implementation": "templateRenderTask",
                 "input": {"template": '{"seen": ${toJSON(getDecisionModelResultNode("Read it").outputs[0].seen)}}'}},
            ]  # fmt: skip
            if condition:
                tasks.insert(0, {"implementation": "conditionsTask", "input": {"rules": [
                    {"id": "scriptCondition", "friendlyId": "gate", "ruleData": {"expression": condition}}]}})  # fmt: skip
            admin.load_flow({
                "friendlyId": friendly_id, "name": friendly_id, "type": "INTERACTIVE_API_FLOW", "status": "LIVE",
                "variants": [{"ref": f"{friendly_id}_v", "name": "Only", "isControl": True, "tasks": tasks}],
                "traffic": {"splits": [{"ref": f"{friendly_id}_v", "split": 100}]},
            })  # fmt: skip
    before = len(upstream.seen("/lead"))
    reply = call(fresh_sandbox, "lead_open")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"seen": '{"k": "v"}'}  # the echo of what was sent, read by the next node
    assert len(upstream.seen("/lead")) == before + 1
    calls = trace(fresh_sandbox, reply)["connections"]
    assert [(c["node"], c["inputs"], c["status"]) for c in calls] == [("Call first", {"k": "v"}, 200)]
    gated = call(fresh_sandbox, "lead_gated")
    assert len(upstream.seen("/lead")) == before + 1, gated.text  # the condition failed: nobody was called
    assert not trace(fresh_sandbox, gated).get("connections")
