"""Secrets never travel: a base URL with credentials is refused at every entry with a message that says
where the secret belongs, and every place that writes a URL out redacts it."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flowlab.admin import SandboxAdmin
from flowlab.batch.runner import BatchOptions, run_batch_to_file
from flowlab.batch.runs import RunMeta, RunStore
from flowlab.batch.samples import generate_guests
from flowlab.config import load_settings, resolve_base_url
from flowlab.errors import APIConnectionError, APITimeoutError, ConfigError, FlowLabError
from flowlab.http import FlowResponse, status_error
from flowlab.personalize.client import AsyncFlowClient, FlowClient
from flowlab.personalize.export import to_curl, to_postman, to_python
from flowlab.personalize.models import CallFlowRequest
from flowlab.sandbox import SandboxServer
from flowlab.workbench.advice import advise
from flowlab.workbench.preview import Preview
from flowlab.workbench.targets import Target, TargetError, TargetStore

ROOT = Path(__file__).resolve().parents[1]
SECRET_URL = "https://alice:hunter2pw@tenant.example.com/personalize?api_token=s3cr3t&region=eu"
SECRETS = ("s3cr3t", "hunter2pw", "alice")
VARIANTS = [
    SECRET_URL,
    "https://tenant.example.com?token=s3cr3t",
    "https://tenant.example.com/?Access_Token=s3cr3t",
    "https://tenant.example.com/?apikey=s3cr3t",
    "https://tenant.example.com/?api-key=s3cr3t",
    "https://tenant.example.com/?key=s3cr3t",
    "https://tenant.example.com/?client_secret=s3cr3t",
    "https://tenant.example.com/?password=s3cr3t",
    "https://tenant.example.com/?sig=s3cr3t",
    "https://tenant.example.com/?X-Amz-Signature=s3cr3t",
    "https://tenant.example.com/?sas_token=s3cr3t",
    "https://s3cr3t@tenant.example.com",
]
LEGIT = [
    "https://api-engage-eu.sitecorecloud.io",
    "http://127.0.0.1:8765",
    "https://proxy.example.com:8443/personalize/v1",
    "https://proxy.example.com/personalize?tenant=acme&client_key=pqsDATA",
]


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into: {text}"


def assert_says_where_secrets_go(message: str) -> None:
    assert "FLOWLAB_CLIENT_KEY" in message and "FLOWLAB_API_TOKEN" in message and "secrets" in message
    assert_clean(message)


def request() -> CallFlowRequest:
    return CallFlowRequest.build(clientKey="pqsDATA", friendlyId="checkout_ab_test", browserId="b-1")


# ---- refused at every entry ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", VARIANTS)
def test_the_library_refuses_credentials_in_a_base_url(url: str) -> None:
    for make in (
        lambda: resolve_base_url(base_url=url),
        lambda: FlowClient(base_url=url),
        lambda: AsyncFlowClient(base_url=url),
        lambda: SandboxAdmin(base_url=url),
    ):
        with pytest.raises(ConfigError) as caught:
            make()
        assert_says_where_secrets_go(str(caught.value))


def test_settings_refuse_credentials_in_flowlab_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLAB_BASE_URL", SECRET_URL)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("FLOWLAB_BASE_URL: ") and "a password (user:pass@)" in message
    assert "'api_token'" in message
    assert_says_where_secrets_go(message)


def test_the_target_form_refuses_credentials_on_the_base_url_field() -> None:
    with pytest.raises(TargetError) as caught:
        Target.sitecore("Acme", client_key="pqsDATA", base_url=SECRET_URL)
    (message,) = caught.value.for_field("base_url")
    assert_says_where_secrets_go(message)
    assert_clean(str(caught.value))


def test_the_cli_refuses_credentials_in_base_url_with_one_clean_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowlab", "call", "--base-url", SECRET_URL, "--client-key", "k",
         "--friendly-id", "f", "--browser-id", "b"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert_says_where_secrets_go(result.stderr)


@pytest.mark.parametrize("url", LEGIT)
def test_legit_base_urls_keep_working(url: str) -> None:
    assert resolve_base_url(base_url=url) == url
    assert Target.sitecore("t", client_key="k", base_url=url).base_url == url
    with FlowClient(base_url=url) as client:
        assert client.base_url == url


def test_a_sandbox_url_with_a_port_still_calls(sandbox: SandboxServer) -> None:
    with FlowClient(base_url=sandbox.url + "/", retries=0) as client:
        response = client.call(request().model_copy(update={"client_key": sandbox.client_key}))
    assert response.status_code == 200


# ---- redacted in every sink ---------------------------------------------------------------------------


def test_targets_json_never_holds_url_credentials(tmp_path: Path) -> None:
    store = TargetStore(tmp_path / "targets.json")
    store.save(Target("Acme", SECRET_URL, "pqsDATA"))  # built directly, past the form's checks
    text = store.path.read_text()
    assert_clean(text)
    assert "tenant.example.com" in text
    # a file edited by hand with credentials in it: the entry is skipped, and the message leaks nothing
    store.path.write_text(
        json.dumps({"targets": [{"name": "Hand", "baseUrl": SECRET_URL, "clientKey": "k"}]})
    )
    assert store.targets() == []
    (problem,) = store.problems
    assert "FLOWLAB_API_TOKEN" in problem
    assert_clean(problem)


def test_curl_python_and_postman_exports_redact_the_base_url() -> None:
    exports = [
        to_curl(request(), SECRET_URL),
        to_python(request(), SECRET_URL),
        json.dumps(to_postman(request(), SECRET_URL)),
    ]
    for text in exports:
        assert_clean(text)
        assert "tenant.example.com/personalize" in text and "region=eu" in text


def test_history_records_redact_the_url() -> None:
    assert_clean(json.dumps(Preview(request(), SECRET_URL).to_record()))


def test_error_messages_and_advice_redact_urls() -> None:
    url = SECRET_URL.replace("?", "/v2/callFlows?")
    response = FlowResponse(
        status_code=404, headers={}, text='{"message": "no flow"}', latency_ms=1.0, url=url
    )
    errors: list[FlowLabError] = [
        status_error(response),
        APIConnectionError(f"cannot connect to {url}: refused", url=url),
        APITimeoutError(f"no answer from {url} within the timeout", url=url),
        ConfigError(f"something about {url}."),
    ]
    for error in errors:
        advice = advise(error)
        texts = [str(error), repr(error), *map(str, error.args), advice.title, advice.detail, advice.fix]
        texts += [getattr(error, "message", ""), getattr(error, "url", "")]
        for text in texts:
            assert_clean(text)
    assert "tenant.example.com" in str(errors[0]) and "'404 Not Found'" in str(errors[0])


def test_run_metadata_never_holds_url_credentials(tmp_path: Path) -> None:
    meta = RunMeta("checkout_ab_test", SECRET_URL, "fp", 1)
    assert_clean(json.dumps(meta.to_record()))
    path = tmp_path / "run.sqlite"
    with RunStore.create(path, meta) as store:
        assert_clean(store.meta.base_url)
    with sqlite3.connect(path) as conn:
        assert_clean(json.dumps(conn.execute("SELECT * FROM meta").fetchall()))
    assert_clean(path.read_bytes().decode("latin-1"))


def test_a_batch_to_a_url_with_credentials_is_refused_and_leaks_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = BatchOptions(base_url=SECRET_URL, client_key="pqsDATA", friendly_id="checkout_ab_test")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as caught:
        run_batch_to_file(generate_guests(3, seed=1), options, tmp_path / "run.csv", progress=False)
    assert_says_where_secrets_go(str(caught.value))
    assert_clean(caplog.text)
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert_clean(file.read_bytes().decode("latin-1"))


def test_the_app_says_what_to_fix_when_flowlab_base_url_carries_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FLOWLAB_BASE_URL", SECRET_URL)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception
    (error,) = [str(e.value).replace("\\", "") for e in at.error]
    assert "FLOWLAB_BASE_URL" in error
    assert_says_where_secrets_go(error)
