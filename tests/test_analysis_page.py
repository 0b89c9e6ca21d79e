"""The Analysis page through the app's entry point (AppTest), on runs made with the Batch run page."""

from __future__ import annotations

from pathlib import Path

import pytest
from pagetext import wait_for_batch
from streamlit.testing.v1 import AppTest

from flowlab.analysis.planning import sample_size
from flowlab.batch.runlog import RunLog, load_results
from flowlab.batch.runner import BatchOptions
from flowlab.batch.samples import generate_guests
from flowlab.sandbox import SandboxServer
from flowlab.workbench.targets import CONFIGURED_NAME

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def texts(elements: object) -> list[str]:
    """Element values as a person reads them (the page escapes Markdown in untrusted text)."""
    return [str(e.value).replace("\\", "") for e in elements]  # type: ignore[attr-defined]


def app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    return at


def run_batch(at: AppTest, n: int, *, seed: int = 42, **text: str) -> None:
    """Run a batch from the Batch run page and wait for it to end."""
    at.switch_page("app_pages/batch.py")
    at.run()
    for key, value in text.items():
        widget = at.multiselect(key=key) if key == "batch_pos" else at.text_input(key=key)
        widget.set_value([value] if key == "batch_pos" else value)
    at.number_input(key="batch_n").set_value(n)
    at.number_input(key="batch_seed").set_value(seed)
    at.run()
    at.button(key="batch_start").click()
    at.run()
    wait_for_batch(at)


def analysis(at: AppTest) -> AppTest:
    at.switch_page("app_pages/analysis.py")
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


def test_without_runs_the_page_points_to_the_batch_page() -> None:
    at = analysis(app())
    assert texts(at.info) == ["No runs yet: start one on the Batch run page."]


def test_a_sandbox_run_shows_the_verdict_the_known_lift_and_the_charts() -> None:
    at = app()
    run_batch(at, 2000)
    analysis(at)
    assert at.selectbox(key="analysis_run").value == RunLog().runs()[0].id
    assert at.segmented_control(key="analysis_outcomes").value == "sandbox"
    successes = texts(at.success)
    assert any(
        s.startswith("Healthy split: observed shares match the expected 50/50 (p = ") for s in successes
    )
    (lift,) = [s for s in [*successes, *texts(at.info), *texts(at.warning)] if "converts" in s]
    assert lift.startswith("B converts ") and " than A (" in lift and "95% CI " in lift and ", p " in lift
    assert any(
        "The sandbox's truth: B was built to convert 25% better than A" in c for c in texts(at.caption)
    )
    assert "Detection agrees with the sandbox's true assignment for 100.0% of served guests." in successes
    assert charts(at) >= 6  # split, conversion, lift, breakdown, offers, latency
    split = at.dataframe[0].value
    assert split["variant"].tolist() == ["A", "B"] and split["flow variant"].tolist() == [
        "A – Free shipping",
        "B – 10% off",
    ]
    assert "No failed calls." in successes
    assert {m.label for m in at.metric} >= {"p50", "p95", "p99", "Served"}
    (label,) = at.selectbox(key="analysis_run").options
    assert label.count("2,000 guests") == 1 and " · done · " in label and label.endswith(" UTC")
    captions = texts(at.caption)
    assert any("· 2,000 generated guests (seed 42)" in c for c in captions)  # not generated(n=2000, seed=42)
    assert not any("biggest levels" in c for c in captions)  # 4 points of sale: nothing was pooled


def test_breakdowns_and_run_table_filters_rerender_without_errors() -> None:
    at = app()
    run_batch(at, 600)
    analysis(at)
    dimensions = at.selectbox(key="analysis_dimension").options
    assert {"pointOfSale", "channel", "tier", "campaign", "device"} <= set(dimensions)
    at.selectbox(key="analysis_dimension").set_value("tier").run()
    at.number_input(key="analysis_levels").set_value(3).run()
    assert not at.exception
    assert any("The 3 biggest levels" in c for c in texts(at.caption))
    at.multiselect(key="analysis_filter_variants").set_value(["B"]).run()
    frame = load_results(RunLog().runs()[0].path)
    b = int((frame["variant"] == "B").sum())
    assert any(
        c.startswith(f"{b:,} of 600 guests match; showing the first {b:,}.") for c in texts(at.caption)
    )
    at.selectbox(key="analysis_filter_ok").set_value("failed").run()
    assert any(c.startswith("0 of 600 guests match") for c in texts(at.caption))
    at.selectbox(key="analysis_filter_dimension").set_value("tier").run()
    at.multiselect(key="analysis_filter_levels").set_value(["gold"]).run()
    assert not at.exception


def test_comparing_two_runs_of_the_same_guests() -> None:
    at = app()
    run_batch(at, 300, seed=7, batch_name="before")
    run_batch(at, 300, seed=7, batch_name="after")
    analysis(at)
    assert at.selectbox(key="analysis_compare").value == RunLog().runs()[1].id
    summary = next(i for i in texts(at.info) if "served in both runs" in i)
    assert summary.startswith("300 guests were served in both runs; 0 (0.0%) got a different variant.")


def test_a_tenant_run_takes_an_outcomes_csv_and_a_typed_split(live_tenant: SandboxServer) -> None:
    at = app()
    at.checkbox(key=f"live_ack::{CONFIGURED_NAME}").check()
    run_batch(at, 200, batch_flow_text="checkout_ab_test", batch_pos="lumen/de")
    analysis(at)
    assert list(at.segmented_control(key="analysis_outcomes").options) == [
        "Upload an outcomes CSV",
        "No outcomes",
    ]
    assert any(i.startswith("Pick outcomes above") for i in texts(at.info))
    frame = load_results(RunLog().runs()[0].path)
    lines = ["guest,converted,revenue"]
    for i, (guest, variant) in enumerate(zip(frame["guest"], frame["variant"], strict=True)):
        converted = i % (4 if variant == "B" else 8) == 0
        lines.append(f"{guest},{'yes' if converted else 'no'},{'40' if converted else ''}")
    at.file_uploader(key="analysis_outcomes_csv").set_value(
        ("outcomes.csv", "\n".join(lines).encode(), "text/csv")
    )
    at.run()
    assert not at.exception, at.exception
    (lift,) = [s for s in [*texts(at.success), *texts(at.info), *texts(at.warning)] if "converts" in s]
    assert lift.startswith("B converts ") and "better than A" in lift
    (start,) = [c for c in texts(at.caption) if c.startswith("Starting from the observed control rate (")]
    assert "a live tenant's flow definition (and its sampleSizeConfig) is not readable here." in start
    assert any("guests per variant needed to detect a 20% lift" in w for w in texts(at.warning))
    at.text_input(key="analysis_split").set_value("A=90, B=10").run()
    assert any(e.startswith("Sample ratio mismatch: ") for e in texts(at.error))
    bad = b"guest,converted\ng1,maybe\n"
    at.file_uploader(key="analysis_outcomes_csv").set_value(("bad.csv", bad, "text/csv"))
    at.run()
    assert any("row 1 (line 2), column converted: 'maybe' is not yes/no" in e for e in texts(at.error))
    assert not at.exception


def test_a_run_whose_sandbox_has_stopped_still_opens() -> None:
    """The app's sandbox gets a new port on every start, so yesterday's sandbox runs point nowhere."""
    with SandboxServer(seed=2) as gone:
        options = BatchOptions(base_url=gone.url, client_key=gone.client_key, friendly_id="checkout_ab_test")
        _, handle = RunLog().start(
            generate_guests(100, seed=1), options, target="old sandbox", is_sandbox=True
        )
        assert handle.wait(30)
    at = analysis(app())
    assert list(at.segmented_control(key="analysis_outcomes").options) == [
        "Upload an outcomes CSV",
        "No outcomes",
    ]
    assert any(s.startswith("Healthy split") for s in texts(at.success))
    assert any("equal share for every variant seen" in c for c in texts(at.caption))
    at.switch_page("app_pages/batch.py")
    at.run()
    assert not at.exception
    resume = [b for b in at.button if b.key in ("batch_resume", "batch_rerun_failed")]
    assert resume == []  # nothing to resume or re-run: the run is done and nothing failed


def sandbox_run(server: SandboxServer, n: int, *, seed: int = 1) -> None:
    """A finished run of the demo A/B test against ``server`` (kept running: the page reads its truth)."""
    options = BatchOptions(base_url=server.url, client_key=server.client_key, friendly_id="checkout_ab_test")
    _, handle = RunLog().start(generate_guests(n, seed=seed), options, target="sandbox", is_sandbox=True)
    assert handle.wait(60)


def test_the_planner_starts_from_the_flows_sample_size_config_and_is_editable(
    fresh_sandbox: SandboxServer,
) -> None:
    sandbox_run(fresh_sandbox, 400)
    at = analysis(app())
    (plan,) = [s for s in [*texts(at.success), *texts(at.warning)] if "guests per variant needed" in s]
    served = load_results(RunLog().runs()[0].path).query("ok")["variant"].value_counts().min()
    assert plan.startswith(f"{served:,} of the 8,158 guests per variant needed to detect a 20% lift on a 5% ")
    assert "at 95% confidence and 80% power" in plan and "this run can detect a lift of " in plan
    assert any(
        "Starting from the flow's sampleSizeConfig (checkout_ab_test)." in c for c in texts(at.caption)
    )
    assert at.number_input(key="analysis_plan_baseline").value == 5.0
    at.number_input(key="analysis_plan_lift").set_value(50.0).run()
    (plan,) = [s for s in [*texts(at.success), *texts(at.warning)] if "guests per variant needed" in s]
    assert f"of the {sample_size(0.05, 0.5):,} guests per variant needed to detect a 50% lift" in plan
    at.number_input(key="analysis_plan_baseline").set_value(95.0).run()  # 95% + 50% is past 100%
    assert any("a rate cannot reach 100%" in e for e in texts(at.error)) and not at.exception


def lift_intervals(at: AppTest) -> list[str]:
    (table,) = [d.value for d in at.dataframe if "lift 95% interval" in d.value.columns]
    return list(table["lift 95% interval"])


def test_the_interval_kind_switch_says_which_intervals_are_shown(fresh_sandbox: SandboxServer) -> None:
    sandbox_run(fresh_sandbox, 600)
    at = analysis(app())
    assert at.segmented_control(key="analysis_intervals").value == "fixed"
    assert any(c.startswith("Shown: fixed-horizon 95% intervals") for c in texts(at.caption))
    fixed = lift_intervals(at)
    (peeking,) = [i for i in texts(at.info) if i.startswith("Does peeking change the verdict? B: ")]
    assert "looks" in peeking
    at.segmented_control(key="analysis_intervals").set_value("sequential").run()
    assert not at.exception, at.exception
    assert any(c.startswith("Shown: always-valid 95% intervals") for c in texts(at.caption))
    assert not any(c.startswith("Shown: fixed-horizon") for c in texts(at.caption))
    sequential = lift_intervals(at)
    assert sequential != fixed  # the always-valid interval is a different (wider) one


def test_the_budget_sentence_on_a_sandbox_with_real_latency() -> None:
    with SandboxServer(seed=3, latency_ms="real") as slow:
        sandbox_run(slow, 300)
        at = analysis(app())
        frame = load_results(RunLog().runs()[0].path).query("ok")
        over = {v: float((g["latency_ms"] > 400).mean()) for v, g in frame.groupby("variant")}
        assert max(over.values()) > 0  # the real knob puts some calls past 400 ms
        (line,) = [s for s in [*texts(at.warning), *texts(at.success)] if s.startswith("With ")]
        assert line.startswith("With JSS's 400 ms timeout, ") and "guests would have seen the default" in line
        worst = max(over, key=over.__getitem__)
        assert f"of {worst}'s guests would have seen the default" in line
        assert at.number_input(key="analysis_budget").value == 400
        assert any(
            "Sitecore JSS's personalize middleware gives up after 400 ms" in c for c in texts(at.caption)
        )
        at.number_input(key="analysis_budget").set_value(100_000 // 2).run()
        (line,) = [s for s in [*texts(at.warning), *texts(at.success)] if s.startswith("With ")]
        assert line.startswith("With a 50,000 ms timeout, no guest would have seen the default")
