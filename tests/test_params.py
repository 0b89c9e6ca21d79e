"""Params as key/value rows, and the utm helpers (both SDK styles)."""

from __future__ import annotations

import pytest

from flowlab.errors import RequestValidationError
from flowlab.personalize.params import merge_params, params_to_rows, rows_to_params, utm_from_url, utm_params


def test_rows_nest_dotted_keys_and_parse_json_values() -> None:
    rows = [
        {"key": "utm.campaign", "value": "spring_trail"},
        {"key": "utm.source", "value": "google"},
        {"key": "cartValue", "value": "120.5"},
        {"key": "vip", "value": "true"},
        {"key": "tags", "value": '["a", "b"]'},
        {"key": "zip", "value": '"01234"'},  # quoted: stays text
        {"key": "", "value": ""},
    ]
    assert rows_to_params(rows) == {
        "utm": {"campaign": "spring_trail", "source": "google"},
        "cartValue": 120.5,
        "vip": True,
        "tags": ["a", "b"],
        "zip": "01234",
    }


def test_rows_round_trip() -> None:
    params = {"utm": {"campaign": "x", "medium": "cpc"}, "n": 3, "flag": False, "empty": {}, "id": "123"}
    assert rows_to_params(params_to_rows(params)) == params


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"key": "a", "value": "1"}, {"key": "a", "value": "2"}], "twice"),
        ([{"key": "utm", "value": "x"}, {"key": "utm.campaign", "value": "y"}], "clashes"),
        ([{"key": "utm.campaign", "value": "y"}, {"key": "utm", "value": "x"}], "clashes"),
        ([{"key": "a..b", "value": "1"}], "empty part"),
        ([{"key": "", "value": "orphan"}], "no key"),
    ],
)
def test_bad_rows_name_the_params_field(rows: list[dict[str, str]], message: str) -> None:
    with pytest.raises(RequestValidationError, match=message) as caught:
        rows_to_params(rows)
    assert caught.value.for_field("params")


def test_utm_from_a_landing_page_url() -> None:
    url = "https://shop.example/de/?utm_source=google&UTM_Medium=cpc&utm_campaign=spring_trail&other=1#top"
    assert utm_from_url(url) == {"source": "google", "medium": "cpc", "campaign": "spring_trail"}
    assert utm_from_url("utm_campaign=run_club") == {"campaign": "run_club"}
    assert utm_from_url("https://shop.example/") == {}


def test_utm_styles() -> None:
    values = {"campaign": "spring_trail", "utm_source": "google", "term": " "}
    assert utm_params(values) == {"utm": {"campaign": "spring_trail", "source": "google"}}
    assert utm_params(values, "flat") == {"utm_campaign": "spring_trail", "utm_source": "google"}
    assert utm_params({}) == {}


def test_merge_keeps_other_keys() -> None:
    base = {"utm": {"source": "google"}, "page": "home"}
    assert merge_params(base, {"utm": {"campaign": "x"}}) == {
        "utm": {"source": "google", "campaign": "x"},
        "page": "home",
    }
