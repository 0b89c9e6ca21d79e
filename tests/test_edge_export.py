"""Edge exports send what the client sends, run as written, and never carry the token or the secret."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from flowlab.edge import InteractRequest
from flowlab.edge.export import to_curl, to_postman, to_python
from tests.test_edge_client import SECRET, StandIn, creds, stand_in

REQUEST = InteractRequest.build(
    identity=("Email", "o'brien@example.com"),  # a quote, to prove the shell quoting
    event_type="commerce.checkouts",
    page_url="https://shop.example.com/checkout",
    data={"note": "héllo & $HOME `x`"},
)


@pytest.fixture
def adobe() -> Iterator[StandIn]:
    with stand_in() as state:
        yield state


def _token(adobe: StandIn) -> str:
    adobe.valid_tokens.add("eyJ-exported")
    return "eyJ-exported"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_runs_and_sends_the_same_request_as_the_client(adobe: StandIn) -> None:
    command = to_curl(REQUEST, adobe.url, "ds-1", credentials=creds(adobe), region="va6")
    env = {"PATH": os.environ["PATH"], "ACCESS_TOKEN": _token(adobe), "HOME": "/nonexistent"}
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["requestId"] == "3c600138-d785-42ca-a025-bb725f4b5da9"
    [call] = adobe.interacts()
    assert call.path == "/ee/va6/v2/interact" and call.query == {"datastreamId": ["ds-1"]}
    assert call.body == REQUEST.body_bytes()
    assert call.headers["Authorization"] == "Bearer eyJ-exported"
    assert call.headers["x-api-key"] == "flowlab-test-client"


def test_python_snippet_runs_with_the_token_from_the_environment(
    adobe: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACCESS_TOKEN", _token(adobe))
    exec(compile(to_python(REQUEST, adobe.url, "ds-1", credentials=creds(adobe)), "export", "exec"), {})
    assert capsys.readouterr().out.startswith("200\n")
    [call] = adobe.interacts()
    assert (
        json.loads(call.body) == REQUEST.to_body() and call.headers["Authorization"] == "Bearer eyJ-exported"
    )


def test_unauthenticated_exports_have_no_auth_at_all(adobe: StandIn) -> None:
    for text in (to_curl(REQUEST, adobe.url, "ds-1"), to_python(REQUEST, adobe.url, "ds-1", version=1)):
        assert "Authorization" not in text and "ACCESS_TOKEN" not in text and "x-api-key" not in text
    assert "/ee/v1/interact?configId=ds-1" in to_python(REQUEST, adobe.url, "ds-1", version=1)
    collection = to_postman(REQUEST, adobe.url, "ds-1")
    assert [i["name"] for i in collection["item"]] == [
        "interact · commerce.checkouts · Email o'brien@example.com"
    ]
    assert {v["key"] for v in collection["variable"]} == {"baseUrl", "datastreamId"}


def test_postman_uses_variables_for_the_token_and_leaves_the_secret_empty(adobe: StandIn) -> None:
    collection = to_postman([REQUEST, REQUEST], adobe.url, "ds-1", credentials=creds(adobe))
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables["accessToken"] == "" and variables["clientSecret"] == ""
    assert variables["datastreamId"] == "ds-1" and variables["baseUrl"] == adobe.url
    token_item, *interacts = collection["item"]
    assert token_item["request"]["url"]["raw"] == "{{imsUrl}}/ims/token/v3"
    assert len(interacts) == 2
    request = interacts[0]["request"]
    assert {"key": "Authorization", "value": "Bearer {{accessToken}}"} in request["header"]
    assert request["url"]["raw"] == "{{baseUrl}}/ee/v2/interact?datastreamId={{datastreamId}}"
    assert json.loads(request["body"]["raw"]) == REQUEST.to_body()


def test_no_export_ever_carries_the_secret_or_a_token(adobe: StandIn) -> None:
    credentials = creds(adobe)
    texts = [
        to_curl(REQUEST, adobe.url, "ds-1", credentials=credentials),
        to_python(REQUEST, adobe.url, "ds-1", credentials=credentials),
        json.dumps(to_postman(REQUEST, adobe.url, "ds-1", credentials=credentials)),
    ]
    assert all(SECRET not in t and "eyJ" not in t for t in texts)
