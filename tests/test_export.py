"""Exports reproduce the exact request: curl really works against the sandbox."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from flowlab import CallFlowRequest
from flowlab.personalize.export import to_curl, to_postman, to_python
from flowlab.sandbox import SandboxServer


@pytest.fixture
def request_(sandbox: SandboxServer) -> CallFlowRequest:
    return CallFlowRequest.build(
        clientKey=sandbox.client_key, friendlyId="checkout_ab_test", browserId="it's-quoted", language="EN",
        params={"utm": {"campaign": "spring's"}},
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_command_runs_against_the_sandbox(request_: CallFlowRequest, sandbox: SandboxServer) -> None:
    command = to_curl(request_, sandbox.url)
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(out.stdout)["variant"] in {"A", "B"}


def test_python_snippet_runs(request_: CallFlowRequest, sandbox: SandboxServer) -> None:
    code = to_python(request_, sandbox.url)
    compile(code, "<snippet>", "exec")
    namespace: dict[str, object] = {"print": lambda *a: None}
    exec(code, namespace)  # the snippet is ours; it posts to the loopback sandbox
    assert namespace["response"].status_code == 200  # type: ignore[attr-defined]
    assert namespace["body"] == request_.to_body()


def test_postman_collection_v21(request_: CallFlowRequest, sandbox: SandboxServer) -> None:
    collection = to_postman([request_, request_], sandbox.url, name="Demo")
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    assert {v["key"] for v in collection["variable"]} == {"baseUrl", "clientKey"}
    item = collection["item"][0]["request"]
    assert item["url"]["raw"] == "{{baseUrl}}/v2/callFlows"
    body = json.loads(item["body"]["raw"])
    assert body["clientKey"] == "{{clientKey}}" and body["params"]["utm"]["campaign"] == "spring's"
    assert len(collection["item"]) == 2
