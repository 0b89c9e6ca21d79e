"""Simulate before you publish (#11): a sandbox flow in any status runs only when asked explicitly."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pagetext import wait_for_batch
from streamlit.testing.v1 import AppTest

from flowlab.__main__ import EXIT_USAGE, main
from flowlab.admin import SandboxAdmin
from flowlab.analysis.stats import compare_runs
from flowlab.batch.runlog import RunLog
from flowlab.batch.runner import BatchOptions, run_batch_to_file, store_path_for
from flowlab.batch.runs import RunStore
from flowlab.batch.samples import generate_guests
from flowlab.personalize.provider import SIMULATE_HEADER as CLIENT_HEADER
from flowlab.sandbox import SandboxServer
from flowlab.sandbox.app import SIMULATE_HEADER
from flowlab.workbench.explain import explain_trace

ROOT = Path(__file__).resolve().parents[1]


def _body(server: SandboxServer, friendly_id: str, browser_id: str = "sim-1") -> dict[str, Any]:
    return {"clientKey": server.client_key, "channel": "WEB", "language": "EN", "pointOfSale": "lumen/de",
            "browserId": browser_id, "friendlyId": friendly_id}  # fmt: skip


def test_a_draft_flow_runs_only_with_the_simulate_header(sandbox: SandboxServer) -> None:
    url = f"{sandbox.url}/v2/callFlows"
    plain = httpx.post(url, json=_body(sandbox, "summer_sale"))
    assert plain.status_code == 404
    assert "summer_sale is DRAFT" in plain.text
    wrong = httpx.post(url, json=_body(sandbox, "summer_sale"), headers={SIMULATE_HEADER: "yes"})
    assert wrong.status_code == 400  # a clear message, not a silent live-only run
    assert "must be 1" in wrong.json()["message"]
    off = httpx.post(url, json=_body(sandbox, "summer_sale"), headers={SIMULATE_HEADER: "0"})
    assert off.status_code == 404
    simulated = httpx.post(url, json=_body(sandbox, "summer_sale"), headers={"X-Flowlab-Simulate": "1"})
    assert simulated.status_code == 200, simulated.text
    assert simulated.json()  # the draft's offers
    trace = httpx.get(f"{sandbox.url}/sandbox/executions/{simulated.headers['x-flowlab-execution']}").json()
    assert trace["simulated"] is True
    assert any("summer_sale is DRAFT" in w for w in trace["warnings"])
    paused = httpx.post(url, json=_body(sandbox, "winter_clearance"), headers={"X-Flowlab-Simulate": "1"})
    assert paused.status_code == 200, paused.text
    legacy = httpx.get(url, params={"message": httpx.Request("POST", url, json=_body(sandbox, "summer_sale"))
                                    .content.decode()}, headers={"X-Flowlab-Simulate": "1"})  # fmt: skip
    assert legacy.status_code == 200, legacy.text
    live = httpx.post(url, json=_body(sandbox, "guest_greeting"), headers={"X-Flowlab-Simulate": "1"})
    assert live.status_code == 200  # a live flow simulates as itself


def test_the_client_sends_the_header_the_sandbox_reads() -> None:
    assert CLIENT_HEADER.lower() == SIMULATE_HEADER


def test_the_simulate_header_is_in_the_openapi_document(sandbox: SandboxServer) -> None:
    spec = httpx.get(f"{sandbox.url}/sandbox/openapi.json").json()
    for method in ("post", "get"):
        params = spec["paths"]["/v2/callFlows"][method]["parameters"]
        assert any(p["name"].lower() == SIMULATE_HEADER and p["in"] == "header" for p in params), method


# ---- the runner and the CLI -------------------------------------------------------------------------


@pytest.fixture
def not_a_sandbox(tmp_path: Path) -> Iterator[str]:
    """A plain web server on loopback: what a live tenant looks like to ``is_sandbox`` (no /sandbox/info)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _sample_csv(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "guests.csv"
    generate_guests(n, seed=11).to_csv(path)
    return path


def test_cli_simulate_is_refused_on_a_live_base_url(
    not_a_sandbox: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guests = _sample_csv(tmp_path, 5)
    out = tmp_path / "sim.csv"
    code = main(["batch", "--base-url", not_a_sandbox, "--client-key", "k", "--friendly-id", "summer_sale",
                 "--simulate", "--guests", str(guests), "--out", str(out), "-q"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "--simulate runs a flow in any status on a Flow Lab sandbox only" in err
    assert "is not one" in err and "Traceback" not in err
    assert not out.exists() and not store_path_for(out).exists()  # refused before a store or a call
    code = main(["batch", "--provider", "edge", "--simulate", "--guests", str(guests), "--out", str(out)])
    assert code == EXIT_USAGE and "leave out --provider edge" in capsys.readouterr().err


def test_cli_simulate_runs_a_draft_flow_on_the_sandbox_and_records_it(
    sandbox: SandboxServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guests = _sample_csv(tmp_path, 40)
    target = ["--base-url", sandbox.url, "--client-key", sandbox.client_key]
    plain = tmp_path / "plain.csv"
    assert (
        main(
            [
                "batch",
                *target,
                "--friendly-id",
                "summer_sale",
                "--guests",
                str(guests),
                "--out",
                str(plain),
                "-q",
            ]
        )
        != 0
    )
    simulated = tmp_path / "sim.csv"
    code = main(["batch", *target, "--friendly-id", "summer_sale", "--simulate", "--guests", str(guests),
                 "--out", str(simulated), "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with RunStore.open(store_path_for(simulated)) as store:
        meta = store.meta
        frame = store.to_dataframe()
    assert meta.simulate is True and meta.to_record()["simulate"] is True
    assert meta.options["simulate"] is True
    assert frame["ok"].all() and (frame["status_code"] == 200).all()
    with RunStore.open(store_path_for(plain)) as store:
        assert store.meta.simulate is False and "simulate" not in store.meta.to_record()
        assert (store.to_dataframe()["status_code"] == 404).all()
    resumed = main(["batch", *target, "--friendly-id", "summer_sale", "--guests", str(guests), "--out", str(simulated),
                    "--resume", "-q"])  # fmt: skip
    assert resumed == EXIT_USAGE and "simulate is False, the stored run's is True" in capsys.readouterr().err


def test_a_simulated_draft_against_the_live_flow_over_1000_guests(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    """The acceptance scenario: the DRAFT summer sale hero, simulated, against today's live default hero."""
    sample = generate_guests(1000, seed=5)
    runs = {}
    for name, friendly_id, simulate in (("live", "hero_banner_default", False), ("sim", "summer_sale", True)):
        options = BatchOptions(base_url=sandbox.url, client_key=sandbox.client_key, friendly_id=friendly_id,
                               concurrency=50, simulate=simulate)  # fmt: skip
        summary = run_batch_to_file(sample, options, tmp_path / f"{name}.sqlite", progress=False)
        assert summary.failed == 0, summary.describe()
        with RunStore.open(tmp_path / f"{name}.sqlite") as store:
            assert store.meta.simulate is simulate
            runs[name] = store.to_dataframe()
    comparison = compare_runs(runs["live"], runs["sim"])
    assert comparison.common_guests == 1000
    assert (
        0 < comparison.changed_count <= 1000 and comparison.changed_share == comparison.changed_count / 1000
    )
    assert comparison.changed_count >= comparison.switched_count
    first = comparison.changed.iloc[0]
    assert (
        first["variant_before"] != first["variant_after"] or first["offers_before"] != first["offers_after"]
    )
    assert "got a different" in comparison.summary
    # Why: both executions are in the sandbox; the simulated one says it was simulated.
    with SandboxAdmin(base_url=sandbox.url) as admin:
        live_trace = admin.execution(first["execution_before"])
        sim_trace = admin.execution(first["execution_after"])
    assert sim_trace.get("simulated") is True and "simulated" not in live_trace
    assert explain_trace(sim_trace).flow == "summer_sale"
    assert explain_trace(live_trace).flow == "hero_banner_default"


# ---- the app: Batch run (simulate) and Analysis (simulated vs live) -----------------------------------


def _offered(at: AppTest, flow: str) -> bool:
    return any(str(o).startswith(f"{flow} ") for o in at.selectbox(key="batch_flow").options)


def _app_batch(at: AppTest, flow: str, *, simulate: bool, n: int = 300) -> None:
    at.switch_page("app_pages/batch.py")
    at.run()
    if simulate:
        at.checkbox(key="batch_simulate").check()
        at.run()
    assert _offered(at, flow) is (simulate or flow != "summer_sale")
    at.selectbox(key="batch_flow").set_value(flow)
    at.number_input(key="batch_n").set_value(n)
    at.number_input(key="batch_seed").set_value(3)
    at.run()
    at.button(key="batch_start").click()
    at.run()
    wait_for_batch(at)


def test_the_batch_page_simulates_a_draft_and_analysis_compares_it_with_live() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/batch.py")
    at.run()
    assert not _offered(at, "summer_sale")  # live flows only, by default
    _app_batch(at, "hero_banner_default", simulate=False)
    _app_batch(at, "summer_sale", simulate=True)
    newest = RunLog().runs()[0]
    assert newest.friendly_id == "summer_sale" and newest.ok == 300
    with RunStore.open(newest.path) as store:
        assert store.meta.simulate is True
    assert RunLog().options(newest.id).simulate is True  # a resume from the page stays simulated

    at.switch_page("app_pages/analysis.py")
    at.run()
    assert not at.exception, at.exception
    assert "#### Simulated vs live" in [str(m.value) for m in at.markdown]
    changed = next(m for m in at.metric if m.label == "Guests whose answer changed")
    assert changed.value == "100.0%"
    assert (
        at.selectbox(key="analysis_compare").value == RunLog().runs()[1].id
    )  # the live run over the same guests
    guests = at.selectbox(key="analysis_why_guest").options
    assert len(guests) == 20
    at.selectbox(key="analysis_why_guest").set_value(guests[1]).run()
    assert not at.exception, at.exception
    shown = " ".join(str(m.value).replace("\\", "") for m in at.markdown)
    assert "of summer_sale" in shown and "of hero_banner_default" in shown
