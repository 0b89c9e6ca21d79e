"""Outcomes against a real sandbox: its simulated outcomes, outcomes CSVs, split mapping and lift in words."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from flowlab import analysis
from flowlab.admin import SandboxAdmin
from flowlab.analysis.outcomes import (
    control_label,
    expected_shares,
    label_variants,
    lift_sentences,
    read_outcomes,
    sandbox_outcomes,
    true_lifts,
    with_outcomes,
)
from flowlab.batch.runlog import load_results
from flowlab.batch.runner import BatchOptions, run_batch_to_file
from flowlab.batch.samples import generate_guests, guests_from_sandbox
from flowlab.errors import SampleError
from flowlab.sandbox import SandboxServer

FLOW = "checkout_ab_test"


@pytest.fixture(scope="module")
def tenant() -> Iterator[SandboxServer]:
    with SandboxServer(seed=5) as server:
        yield server


@pytest.fixture(scope="module")
def ab_run(tenant: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """3,000 generated guests through the demo A/B experiment."""
    path = tmp_path_factory.mktemp("ab") / "run.sqlite"
    options = BatchOptions(base_url=tenant.url, client_key=tenant.client_key, friendly_id=FLOW)
    summary = run_batch_to_file(generate_guests(3000, seed=21), options, path, progress=False)
    assert summary.ok == 3000
    return load_results(path)


@pytest.fixture(scope="module")
def admin(tenant: SandboxServer) -> Iterator[SandboxAdmin]:
    with SandboxAdmin(base_url=tenant.url) as client:
        yield client


def flow_summary(admin: SandboxAdmin, friendly_id: str = FLOW) -> dict[str, object]:
    return next(f for f in admin.flows() if f["friendlyId"] == friendly_id)


# ---- the sandbox's outcomes -----------------------------------------------------------------------------


def test_sandbox_outcomes_are_keyed_like_the_batch(admin: SandboxAdmin, ab_run: pd.DataFrame) -> None:
    table = sandbox_outcomes(admin, FLOW)
    assert list(table.columns) == ["guest", "converted", "revenue", "true_variant"]
    assert table["converted"].dtype == bool and table["revenue"].dtype == float
    assert set(ab_run["guest"]) <= set(table["guest"])  # every guest the batch called has an outcome
    assert set(table["true_variant"]) == {"A – Free shipping", "B – 10% off"}
    assert (table.loc[table["converted"], "revenue"] > 0).all()
    assert (table.loc[~table["converted"], "revenue"] == 0).all()
    assert 0.08 < table["converted"].mean() < 0.35  # new guests convert at 10-25% (x the variant lift)


def test_demo_guests_join_by_browser_id(tenant: SandboxServer, admin: SandboxAdmin, tmp_path: Path) -> None:
    sample = guests_from_sandbox(admin, 40)
    options = BatchOptions(
        base_url=tenant.url, client_key=tenant.client_key, friendly_id="recommendations_3way"
    )
    run_batch_to_file(sample, options, tmp_path / "demo.sqlite", progress=False)
    joined = with_outcomes(
        load_results(tmp_path / "demo.sqlite"), sandbox_outcomes(admin, "recommendations_3way")
    )
    assert (joined["true_variant"] != "").all()
    assert set(joined["true_variant"]) <= {"bestsellers", "tier", "tier_country"}


def test_detection_agrees_with_the_truth(admin: SandboxAdmin, ab_run: pd.DataFrame) -> None:
    joined = with_outcomes(ab_run, sandbox_outcomes(admin, FLOW))
    assert len(joined) == len(ab_run) and joined["row"].tolist() == ab_run["row"].tolist()
    assert analysis.detection_accuracy(joined) == 1.0
    assert "true_variant" not in ab_run.columns  # the input is not modified


def test_the_known_lift_is_recovered_with_its_interval(admin: SandboxAdmin, ab_run: pd.DataFrame) -> None:
    joined = with_outcomes(ab_run, sandbox_outcomes(admin, FLOW))
    flow = flow_summary(admin)
    control = control_label(flow, joined)
    assert control == "A"
    table = analysis.conversion_by_variant(joined, control=control)
    b = table[table["variant"] == "B"].iloc[0]
    truth = true_lifts(admin.flow(FLOW), label_variants(flow, joined))
    assert truth == pytest.approx({"A": 0.0, "B": 0.25})
    assert b["lift_low"] < 0.25 < b["lift_high"]  # the demo's B converts 25% better by construction
    (sentence,) = lift_sentences(table)
    assert sentence.startswith("B converts ") and " than A (" in sentence and "95% CI" in sentence


# ---- mapping the flow's variants onto detected labels ---------------------------------------------------


def test_expected_shares_by_truth_by_name_and_without_runs(admin: SandboxAdmin, ab_run: pd.DataFrame) -> None:
    flow = flow_summary(admin)
    joined = with_outcomes(ab_run, sandbox_outcomes(admin, FLOW))
    assert expected_shares(flow) == {"A – Free shipping": 0.5, "B – 10% off": 0.5}
    assert expected_shares(flow, joined) == {"A": 0.5, "B": 0.5}  # by the true variants
    assert expected_shares(flow, ab_run) == {"A": 0.5, "B": 0.5}  # by name: "A" is "A – Free shipping"
    assert label_variants(flow, ab_run) == {"A": "A – Free shipping", "B": "B – 10% off"}
    health = analysis.split_health(joined, expected_shares(flow, joined))
    assert health.verdict.startswith("Healthy split") and not health.srm


def test_three_way_split_maps_exact_names_first(admin: SandboxAdmin) -> None:
    flow = flow_summary(admin, "recommendations_3way")
    runs = pd.DataFrame({"variant": ["tier", "tier_country", "bestsellers", "tier"], "ok": [True] * 4})
    assert label_variants(flow, runs) == {
        "bestsellers": "bestsellers",
        "tier": "tier",
        "tier_country": "tier_country",
    }
    shares = expected_shares(flow, runs)
    assert sum(shares.values()) == pytest.approx(1.0) and shares["bestsellers"] > shares["tier"]
    assert control_label(flow, runs) == "bestsellers"


def test_unmatched_labels_get_equal_shares_and_missing_variants_stay(admin: SandboxAdmin) -> None:
    flow = flow_summary(admin)
    fingerprints = pd.DataFrame({"variant": ["#1a2b", "#3c4d", "#1a2b"], "ok": [True, True, True]})
    assert expected_shares(flow, fingerprints) == {"#1a2b": 0.5, "#3c4d": 0.5}
    only_a = pd.DataFrame({"variant": ["A", "A", "(No matching variant)"], "ok": [True, True, True]})
    # B matched no label, so it is expected under its own name: a variant nobody got is a mismatch.
    assert expected_shares(flow, only_a) == {"A": 0.5, "B – 10% off": 0.5}
    assert control_label(flow, fingerprints) is None


def test_many_labels_for_one_variant_share_its_split(admin: SandboxAdmin) -> None:
    flow = flow_summary(admin)
    runs = pd.DataFrame(
        {
            "variant": ["#x", "#x", "#x", "#y", "B", "B", "B", "B"],
            "true_variant": ["A – Free shipping"] * 4 + ["B – 10% off"] * 4,
            "ok": [True] * 8,
        }
    )
    assert expected_shares(flow, runs) == pytest.approx({"#x": 0.375, "#y": 0.125, "B": 0.5})


# ---- outcomes CSVs --------------------------------------------------------------------------------------


def test_read_outcomes_accepts_the_usual_spellings(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text(
        "Guest;Converted;Revenue\ng1;yes;12.50\ng2;No;\ng3;1;3\ng4;FALSE;0\ng5;t;\n", encoding="utf-8"
    )
    table = read_outcomes(path)
    assert table["guest"].tolist() == ["g1", "g2", "g3", "g4", "g5"]
    assert table["converted"].tolist() == [True, False, True, False, True]
    assert table["revenue"].tolist() == [12.5, 0.0, 3.0, 0.0, 0.0]


def test_read_outcomes_from_an_upload_with_a_browser_id_column() -> None:
    upload = io.BytesIO("\ufeffbrowserId,converted\nb-1,true\nb-2,false\n".encode())
    upload.name = "shop-export.csv"
    table = read_outcomes(upload)
    assert table.to_dict("list") == {
        "guest": ["b-1", "b-2"],
        "converted": [True, False],
        "revenue": [0.0, 0.0],
    }


def test_read_outcomes_names_row_line_and_column_of_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("guest,converted,revenue\ng1,yes,10\n,no,\ng3,maybe,5\ng4,yes,€12\n", encoding="utf-8")
    with pytest.raises(SampleError) as caught:
        read_outcomes(path)
    message = str(caught.value)
    assert message.startswith("bad.csv: 3 row(s) need fixing")
    assert "row 2 (line 3), column guest: no guest" in message
    assert "row 3 (line 4), column converted: 'maybe' is not yes/no, true/false or 1/0" in message
    assert "row 4 (line 5), column revenue: '€12' is not a number" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("guest,converted\n", "has a header but no rows"),
        ("guest,revenue\ng1,3\n", "needs converted in the header"),
        (
            "id,converted\n1,yes\n",
            "needs a guest column (guest, browserId or email) in the header (found: id, converted)",
        ),
    ],
)
def test_read_outcomes_refuses_unusable_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "o.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SampleError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_outcomes(path)


def test_a_csv_joins_onto_the_run_and_guests_without_outcomes_did_not_convert() -> None:
    runs = pd.DataFrame({"guest": ["g1", "g2", "g3"], "variant": ["A", "B", "B"], "ok": [True, True, True]})
    table = read_outcomes(io.StringIO("guest,converted,revenue\ng2,yes,20\ng2,yes,5\ng9,yes,1\n"))
    joined = with_outcomes(runs, table)
    assert joined["converted"].tolist() == [False, True, False]
    assert joined["revenue"].tolist() == [0.0, 25.0, 0.0]
    assert "true_variant" not in joined.columns


# ---- lift in words --------------------------------------------------------------------------------------


def conversion(a: tuple[int, int], b: tuple[int, int]) -> pd.DataFrame:
    rows = [("A", i < a[1]) for i in range(a[0])] + [("B", i < b[1]) for i in range(b[0])]
    runs = pd.DataFrame(rows, columns=["variant", "converted"])
    return analysis.conversion_by_variant(runs, control="A")


def test_lift_sentence_for_a_clear_win() -> None:
    (sentence,) = lift_sentences(conversion((10_000, 500), (10_000, 620)))
    assert sentence.startswith("B converts 24% better than A (6.2% vs 5.0% of guests; 95% CI ")
    assert "p < 0.001): unlikely to be chance." in sentence


def test_lift_sentence_for_a_loss_and_for_noise() -> None:
    (loss,) = lift_sentences(conversion((10_000, 600), (10_000, 480)))
    assert loss.startswith("B converts 20% worse than A") and "95% CI −" in loss and "to −" in loss
    (noise,) = lift_sentences(conversion((300, 15), (300, 17)))
    assert " to +" in noise and noise.endswith("this could be chance; more guests would tell.")


def test_lift_sentence_when_the_control_never_converted() -> None:
    assert lift_sentences(conversion((50, 0), (50, 3))) == [
        "B cannot be compared with A yet: A has no conversions."
    ]
    assert (
        lift_sentences(analysis.conversion_by_variant(pd.DataFrame({"variant": [], "converted": []}))) == []
    )
