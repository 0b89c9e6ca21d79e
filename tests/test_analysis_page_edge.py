"""The Analysis page on an AEP Edge run (AppTest): audience membership, not variants."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from flowlab.batch.runlog import RunLog, load_results
from flowlab.batch.runner import BatchOptions
from flowlab.batch.samples import edge_sample_from_sandbox
from flowlab.edge.provider import EdgeProvider
from flowlab.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def texts(elements: object) -> list[str]:
    return [str(e.value).replace("\\", "") for e in elements]  # type: ignore[attr-defined]


def edge_run(server: SandboxServer, n: int, *, authenticated: bool = True) -> None:
    url = server.url
    options = BatchOptions(base_url=url, provider=EdgeProvider.for_sandbox(url, authenticated=authenticated))
    sample = edge_sample_from_sandbox(url, limit=n)
    _, handle = RunLog().start(sample, options, name="edge run", target="AEP Edge sandbox", is_sandbox=True)
    assert handle.wait(60)


def analysis() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("app_pages/analysis.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_an_edge_run_shows_membership_by_dimension_and_attributes(fresh_sandbox: SandboxServer) -> None:
    edge_run(fresh_sandbox, 1250)  # the demo's 1,200 profiles and 50 first-time visitors
    run = load_results(RunLog().runs()[0].path)
    at = analysis()
    (sentence,) = [i for i in texts(at.info) if "identities answered" in i]
    assert sentence.startswith("1,250 identities answered: the biggest audience is ")
    (rates,) = [d.value for d in at.dataframe if "rate_low" in d.value.columns]
    assert "Gold and platinum members" in set(rates["name"])  # names from the sandbox, not ids
    assert (rates["guests"] == 1250).all()
    gold = rates.set_index("name").loc["Gold and platinum members"]
    members = int(run["segments"].map(lambda s: gold["audience"] in s).sum())
    assert gold["members"] == members and 0 < members < 1250
    assert len(at.get("vega_lite_chart")) >= 2  # the membership chart, latency (errors: none)
    # no variant sections on an Edge run
    assert not [s for s in at.subheader if s.value in ("Split health", "Conversion and lift")]
    assert not any(s.startswith(("Healthy split", "Sample ratio mismatch")) for s in texts(at.success))

    by = at.selectbox(key="analysis_edge_by")
    assert {"profile", "loyaltyTier", "countryCode"} <= set(by.options)
    by.set_value("profile").run()
    assert not at.exception, at.exception
    (rates,) = [d.value for d in at.dataframe if "rate_low" in d.value.columns]
    assert set(rates["profile"]) == {"known", "new"}
    assert (rates.loc[rates["profile"] == "new", "guests"] == 50).all()
    (sentence,) = [i for i in texts(at.info) if "identities answered" in i]
    assert "across 2 levels of profile" in sentence
    (attributes,) = [d.value for d in at.dataframe if "top_values" in d.value.columns]
    assert {"loyaltyTier", "countryCode"} <= set(attributes["attribute"])


def test_an_unauthenticated_edge_run_says_why_there_are_no_attributes(fresh_sandbox: SandboxServer) -> None:
    edge_run(fresh_sandbox, 200, authenticated=False)
    at = analysis()
    assert any(i.startswith("No row carried a profile attribute.") for i in texts(at.info))
    assert any("identities answered" in i for i in texts(at.info))
