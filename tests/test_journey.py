"""Journeys against the real sandbox: same-page, next-page and next-session, and the pure chart builder."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from flowlab.errors import ConfigError
from flowlab.sandbox import SandboxServer
from flowlab.workbench.journey import (
    TIMELINE_COLUMNS,
    hit,
    journey_chart,
    new_session,
    parse_wait,
    play_journey,
    preset_journey,
    wait,
)

LENA = ("Email", "lena.vogel@example.de")


@pytest.fixture
def journey_sandbox(fresh_sandbox: SandboxServer) -> Iterator[SandboxServer]:
    yield fresh_sandbox  # play_journey resets the sandbox: keep that away from the shared one


def _first(timeline: pd.DataFrame, name: str) -> pd.Series:
    rows = timeline[timeline.audience == name]
    assert len(rows), f"{name} never appeared"
    return rows.iloc[0]


def test_checkout_is_same_page_and_purchase_arrives_after_the_clock_step(
    journey_sandbox: SandboxServer,
) -> None:
    journey = play_journey(preset_journey(), base_url=journey_sandbox.url, identity=LENA)
    timeline = journey.timeline
    assert tuple(timeline.columns) == TIMELINE_COLUMNS
    labels = [h.label for h in journey.hits]
    assert labels == ["Page view", "Checkout", "Page view", "Purchase", "Page view", "Page view"]
    checkout = _first(timeline, "Checking out today")
    assert (checkout.first_seen_hit, checkout.timing, checkout.evaluation) == (1, "same-page", "edge")
    bought = _first(timeline, "Purchased in the last 7 days")
    assert bought.evaluation == "streaming" and bought.timing != "same-page"
    assert bought.qualified_hit == 3 and bought.first_seen_hit == 4  # the page view after the +10 min step
    assert journey.hits[4].simulated_ms - journey.hits[3].simulated_ms == 10 * 60_000
    assert "Purchased in the last 7 days" not in set(timeline[timeline.hit == 3].audience)
    assert _first(timeline, "Gold and platinum members").timing == "before the journey"
    assert journey.hits[-1].session == 2
    summary = " ".join(journey.summary())
    assert "Checking out today appeared on the same page as the checkout (hit 2)" in summary
    assert "10 simulated minutes after the purchase (hit 4), on the next page after the +10 min" in summary
    # replaying (the sandbox is reset first) gives the same answer
    again = play_journey(preset_journey(), base_url=journey_sandbox.url, identity=LENA)
    pd.testing.assert_frame_equal(again.timeline, timeline)


def test_a_purchase_just_before_a_new_session_shows_up_next_session(journey_sandbox: SandboxServer) -> None:
    steps = [hit("Purchase"), new_session("+1 h"), hit("Page view")]
    journey = play_journey(steps, base_url=journey_sandbox.url, identity=LENA, authenticated=False)
    assert _first(journey.timeline, "Purchased in the last 7 days").timing == "next-session"
    assert all(not d.attributes for h in journey.hits for d in h.response.destinations)


def test_a_journey_needs_a_hit_and_the_sandbox() -> None:
    with pytest.raises(ConfigError, match="at least one hit"):
        play_journey([wait("+2 min")], base_url="http://127.0.0.1:9", identity=LENA)
    with pytest.raises(ConfigError, match="simulated"):
        play_journey([hit("Page view")], base_url="http://127.0.0.1:9", identity=LENA)


def test_waits_read_as_people_write_them() -> None:
    assert parse_wait("+2 min") == 120 and parse_wait("10 min") == 600 and parse_wait("next day") == 86_400
    assert parse_wait("+1 h") == 3600 and parse_wait("30 s") == 30
    with pytest.raises(ValueError, match="next day"):
        parse_wait("soon")


def test_chart_encodes_hits_audiences_and_timing() -> None:
    timeline = pd.DataFrame(
        [
            {"hit": 0, "hit_label": "1. Checkout", "session": 1, "simulated_time": pd.Timestamp("2026-10-01T09:00Z"),
             "audience_id": "a", "audience": "Checking out today", "evaluation": "edge", "first_seen_hit": 0,
             "qualified_hit": 0, "timing": "same-page"},
            {"hit": 1, "hit_label": "2. Page view", "session": 1, "simulated_time": pd.Timestamp("2026-10-01T09:10Z"),
             "audience_id": "b", "audience": "Purchased", "evaluation": "streaming", "first_seen_hit": 1,
             "qualified_hit": 0, "timing": "next-page"},
        ],
        columns=list(TIMELINE_COLUMNS),
    )  # fmt: skip
    spec = journey_chart(timeline).to_dict()
    encoding = spec["encoding"]
    assert encoding["x"]["field"] == "hit_label" and encoding["x"]["sort"] == ["1. Checkout", "2. Page view"]
    assert encoding["y"]["field"] == "audience"
    assert encoding["color"]["field"] == "timing"
    assert encoding["color"]["scale"]["domain"][:3] == ["same-page", "next-page", "next-session"]
    assert spec["mark"]["type"] == "square"
