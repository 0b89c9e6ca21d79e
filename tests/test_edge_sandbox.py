"""EdgeClient end to end against the real sandbox's Edge Network and IMS, over loopback."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from pydantic import SecretStr

from flowlab.edge import AsyncEdgeClient, EdgeClient, EdgeCredentials, InteractRequest
from flowlab.edge.export import to_python
from flowlab.errors import APIStatusError, AuthenticationError, BadRequestError
from flowlab.sandbox import SandboxServer

KNOWN = ("Email", "lena.vogel@example.de")  # a demo profile (GET /sandbox/edge/profiles)


def _first_known(sandbox: SandboxServer) -> tuple[str, str]:
    page = httpx.get(f"{sandbox.url}/sandbox/edge/profiles", params={"limit": 1}).json()
    identity = page["items"][0]["identity"]
    return identity["namespace"], identity["id"]


def test_authenticated_call_returns_audiences_and_attributes(fresh_sandbox: SandboxServer) -> None:
    identity = _first_known(fresh_sandbox)
    with EdgeClient.for_sandbox(fresh_sandbox.url) as edge:
        answer = edge.interact(identity=identity, event_type="web.webpagedetails.pageViews")
        again = edge.interact(identity=identity)
        assert edge.tokens.fetches == 1  # one IMS token for both calls
    assert answer.status_code == 200
    assert re.fullmatch(r".+-[0-9a-f]{16}", answer.request_id or "")  # the 2026 entropy suffix (§0.6)
    assert answer.on_edge is True and answer.segment_ids
    with_attributes = [d for d in answer.destinations if d.attributes]
    assert with_attributes, answer.destinations
    assert again.segment_ids == answer.segment_ids


def test_without_a_token_the_same_call_loses_the_attributes(fresh_sandbox: SandboxServer) -> None:
    identity = _first_known(fresh_sandbox)
    with EdgeClient.for_sandbox(fresh_sandbox.url, authenticated=False) as edge:
        answer = edge.interact(identity=identity)
    assert answer.ok and answer.segment_ids
    assert all(d.attributes == {} for d in answer.destinations)


def test_an_expired_token_is_refreshed_once_and_the_call_succeeds(fresh_sandbox: SandboxServer) -> None:
    identity = _first_known(fresh_sandbox)
    with EdgeClient.for_sandbox(fresh_sandbox.url) as edge:
        edge.interact(identity=identity)
        # a day on the sandbox's simulated clock: IMS tokens last 24 h, so the cached one is now expired
        advanced = httpx.post(f"{fresh_sandbox.url}/sandbox/edge/clock", json={"advanceSeconds": 90_000})
        assert advanced.status_code == 200, advanced.text
        answer = edge.interact(identity=identity)
        assert edge.tokens.fetches == 2
    assert answer.ok and answer.attempts == 1


def test_unknown_identity_v1_and_the_other_spelling(fresh_sandbox: SandboxServer) -> None:
    with EdgeClient.for_sandbox(fresh_sandbox.url, version=1) as edge:
        answer = edge.interact(identity=("Email", "nobody-at-all@example.org"))
    assert answer.ok and answer.on_edge is False and answer.destinations == []
    with EdgeClient.for_sandbox(fresh_sandbox.url, datastream_param="dataStreamId", region="irl1") as edge:
        answer = edge.interact(identity=_first_known(fresh_sandbox))
    assert answer.ok and answer.location_hint == "irl1"


def test_sandbox_errors_map_onto_the_error_tree(fresh_sandbox: SandboxServer) -> None:
    info = httpx.get(f"{fresh_sandbox.url}/sandbox/info").json()["edge"]
    disabled = next(d["id"] for d in info["datastreams"] if not d["enabled"])
    with EdgeClient(base_url=fresh_sandbox.url, datastream_id="no-such-stream") as edge:
        with pytest.raises(BadRequestError) as unknown:
            edge.interact(identity=KNOWN)
    assert unknown.value.error_code == "EXEG-0003-400"
    with EdgeClient(base_url=fresh_sandbox.url, datastream_id=disabled) as edge:
        with pytest.raises(APIStatusError) as off:
            edge.interact(identity=KNOWN)
    assert off.value.status_code == 422 and off.value.error_code == "EXEG-0004-422"
    secret = "not-the-" + info["credentials"]["clientSecret"]
    wrong = EdgeCredentials(
        client_id=info["credentials"]["clientId"],
        client_secret=SecretStr(secret),
        org_id=info["orgId"],
        ims_url=fresh_sandbox.url,
    )
    with EdgeClient.for_sandbox(fresh_sandbox.url, credentials=wrong) as edge:
        with pytest.raises(AuthenticationError) as refused:
            edge.interact(identity=KNOWN)
    assert (
        "IMS refused" in str(refused.value) and secret not in str(refused.value) + refused.value.response.text
    )


def test_async_client_against_the_sandbox(fresh_sandbox: SandboxServer) -> None:
    identity = _first_known(fresh_sandbox)

    async def run() -> list[int]:
        async with AsyncEdgeClient.for_sandbox(fresh_sandbox.url) as edge:
            answers = await asyncio.gather(*(edge.interact(identity=identity) for _ in range(10)))
            assert edge.tokens.fetches == 1
        return [len(a.segment_ids) for a in answers]

    counts = asyncio.run(run())
    assert len(set(counts)) == 1 and counts[0] > 0


def test_the_python_export_runs_against_the_sandbox(
    fresh_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with EdgeClient.for_sandbox(fresh_sandbox.url) as edge:
        monkeypatch.setenv("ACCESS_TOKEN", edge.token().value.get_secret_value())
        request = InteractRequest.build(identity=_first_known(fresh_sandbox))
        code = to_python(request, edge.base_url, edge.datastream_id, credentials=edge.credentials)
    exec(compile(code, "export", "exec"), {})
    assert capsys.readouterr().out.startswith("200\n")
