"""Guest samples: CSV formats, bad rows, malformed files, synthetic and sandbox samples."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowlab.admin import SandboxAdmin
from flowlab.batch.samples import (
    MAX_COLUMNS,
    MAX_FIELD_CHARS,
    GuestRow,
    GuestSample,
    generate_guests,
    guests_from_sandbox,
    read_guests,
)
from flowlab.errors import SampleError
from flowlab.sandbox import PERSONAS, SandboxServer

KEY, FLOW = "test-key", "checkout_ab_test"


def read_text(text: str) -> GuestSample:
    return read_guests(io.StringIO(text))


@pytest.fixture(scope="module")
def admin() -> Iterator[SandboxAdmin]:
    with SandboxServer() as server, SandboxAdmin(base_url=server.url) as client:
        yield client


# ---- identity forms, overrides, params, extras ----------------------------------------------------------


def test_each_identity_form_becomes_the_right_request() -> None:
    sample = read_text(
        "browserId,email,identifiers.provider,identifiers.id\n"
        "b-1,,,\n"
        ",lena@example.de,,\n"
        ",,LOYALTY,LY-1:extra\n"
    )
    assert not sample.problems
    assert [(g.row, g.kind, g.value) for g in sample.guests] == [
        (1, "browserId", "b-1"),
        (2, "email", "lena@example.de"),
        (3, "identifiers", "LOYALTY:LY-1:extra"),
    ]
    bodies = [g.to_request(KEY, FLOW).to_body() for g in sample.guests]
    assert bodies[0]["browserId"] == "b-1"
    assert bodies[1]["email"] == "lena@example.de"
    assert bodies[2]["identifiers"] == {"provider": "LOYALTY", "id": "LY-1:extra"}
    assert all(b["clientKey"] == KEY and b["friendlyId"] == FLOW for b in bodies)


def test_overrides_params_and_extra_columns() -> None:
    sample = read_text(
        "BrowserID,channel,pointOfSale,language,currencyCode,params.utm.campaign,params.utm.source,"
        "params.qty,params.score,params.vip,params.zip,segment,outcome\n"
        "b-1,mobile_web,lumen/de,de,eur,spring_trail,google,42,3.5,TRUE,007,gold,1\n"
        "b-2,,,,,,,,,,,visitor,\n"
    )
    first, second = sample.guests
    assert first.fields == {
        "channel": "mobile_web",
        "pointOfSale": "lumen/de",
        "language": "de",
        "currencyCode": "eur",
    }
    assert first.params == {"utm": {"campaign": "spring_trail", "source": "google"}, "qty": 42, "score": 3.5,
                            "vip": True, "zip": "007"}  # fmt: skip
    assert first.extra == {"segment": "gold", "outcome": 1}
    assert (
        second.fields == {}
        and second.params == {}
        and second.extra == {"segment": "visitor", "outcome": None}
    )
    assert sample.columns == ("segment", "outcome")
    body = first.to_request(KEY, FLOW, {"channel": "WEB", "language": "EN"}).to_body()
    assert body["channel"] == "MOBILE_WEB" and body["language"] == "de" and body["currencyCode"] == "EUR"
    defaults = second.to_request(
        KEY, FLOW, {"channel": "WEB", "language": "EN", "currencyCode": None}
    ).to_body()
    assert defaults["channel"] == "WEB" and defaults["language"] == "EN" and "currencyCode" not in defaults


def test_bom_semicolons_and_every_kind_of_source(tmp_path: Path) -> None:
    text = "browserId;segment\r\nb-1;a\r\n\r\nb-2;b\r\n"
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    samples = [
        read_guests(path),
        read_guests(str(path)),
        read_guests(io.BytesIO(path.read_bytes())),
        read_text("\ufeff" + text),
    ]
    for sample in samples:
        assert [(g.row, g.value, g.extra["segment"]) for g in sample.guests] == [
            (1, "b-1", "a"),
            (2, "b-2", "b"),
        ]
    assert len({s.fingerprint for s in samples}) == 1


# ---- bad rows: skipped, reported with row, line and field ----------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("b-1,x@y.com,,,,,", "row 1 (line 2): use only one of browserId, email or identifiers (got browserId and email)"),
        (",,,,,,gold", "row 1 (line 2): give one of browserId, email or identifiers to say who the guest is"),
        (",not-an-email,,,,,", "row 1 (line 2), column email: 'not-an-email' is not an email address"),
        ("b-1,,,,FOO,,", "row 1 (line 2), column channel: unknown channel 'FOO'"),
        ("b-1,,,,,xx,", "row 1 (line 2), column language: 'xx' is not an ISO 639 language code"),
        (",,LOYALTY,,,,", "row 1 (line 2), column identifiers.id:"),
        ("b-1,,,,,,,surplus", "row 1 (line 2): has 8 values but the header has 7 columns"),
    ],
)  # fmt: skip
def test_bad_rows_are_reported_and_skipped(row: str, expected: str) -> None:
    header = "browserId,email,identifiers.provider,identifiers.id,channel,language,segment"
    sample = read_text(f"{header}\n{row}\nb-ok,,,,,,\n")
    assert [g.value for g in sample.guests] == ["b-ok"]
    assert [g.row for g in sample.guests] == [2]
    assert str(sample.problems[0]).startswith(expected)
    assert sample.problems[0].row == 1 and sample.problems[0].line == 2


def test_row_numbers_count_guest_rows_and_lines_count_the_file() -> None:
    sample = read_text('browserId,note\nb-1,"two\nlines"\nb-1,x\n,x\n')
    assert [g.row for g in sample.guests] == [1, 2]
    (problem,) = sample.problems
    assert (problem.row, problem.line) == (3, 5)
    assert str(problem).startswith("row 3 (line 5): ")


# ---- files that cannot be used at all -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"browserId,segment\n", "has a header but no guest rows"),
        (b"segment,outcome\na,1\n", "no identity column. Add a browserId, email, or identifiers.provider"),
        (
            b"identifiers.provider,segment\nX,a\n",
            "has a identifiers.provider column but no identifiers.id column",
        ),
        (b"email,Email\na@b.c,a@b.c\n", "column 'Email' appears twice"),
        (b"browserId,params.utm,params.utm.campaign\nb,1,2\n", "params.utm and params.utm.campaign conflict"),
        (b"browserId,params.\nb,1\n", "needs a param name"),
        ("browserId,city\nb-1,K\xf6ln\n".encode("latin-1"), "is not UTF-8 text"),
        ("browserId\nb-1\n".encode("utf-16"), "is UTF-16 text"),
        (b"PK\x03\x04\x14\x00\x06\x00binary-xlsx", "is not a CSV file"),
        (b'[{"browserId": "b-1"}]', "looks like JSON, not CSV"),
        (b'browserId\n"b-1\x00"\n', "is not a CSV file"),
    ],
)
def test_malformed_files_raise_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "guests.csv"
    path.write_bytes(content)
    with pytest.raises(SampleError, match=message.replace("(", r"\(").replace(".", r"\.")) as raised:
        read_guests(path)
    assert str(path) in str(raised.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match="no such file"):
        read_guests(tmp_path / "nope.csv")


# ---- limits: columns, field size, quoting, linear time -------------------------------------------------


def test_a_csv_with_100k_columns_is_refused_fast_with_one_line() -> None:
    header = "browserId," + ",".join(f"c{i}" for i in range(99_999))
    text = header + "\n" + "".join(f"b-{i}\n" for i in range(300))  # short rows: each paid for every column
    started = time.perf_counter()
    with pytest.raises(SampleError) as raised:
        read_text(text)
    elapsed = time.perf_counter() - started
    assert str(raised.value) == (
        f"guest sample: line 1: 100,000 columns; a guest sample may have at most {MAX_COLUMNS:,}"
    )
    assert elapsed < 2.0  # was about 30 s, and then no error at all


def test_short_rows_under_a_wide_header_cost_only_their_own_cells() -> None:
    """Reading is linear in the file: a row is not padded to the header's width (once O(rows x columns))."""
    header = "browserId,segment," + ",".join(f"c{i}" for i in range(MAX_COLUMNS - 2))
    sample = read_text(header + "\nb-1,new\nb-2\n" + "b-3,old," + ",".join("x" * (MAX_COLUMNS - 2)) + "\n")
    assert [dict(g.extra) for g in sample.guests[:2]] == [{"segment": "new"}, {}]
    assert len(sample.guests[2].extra) == MAX_COLUMNS - 1 and not sample.problems


def test_a_field_over_the_size_cap_is_one_line_naming_row_line_and_column() -> None:
    big = "x" * (MAX_FIELD_CHARS + 1)
    with pytest.raises(SampleError) as raised:
        read_text(f"browserId,note\nb-1,ok\nb-2,{big}\nb-3,ok\n")
    assert str(raised.value) == (
        f"guest sample: row 2 (line 3), column note: a field of {MAX_FIELD_CHARS + 1:,} characters; "
        f"a field may have at most {MAX_FIELD_CHARS:,}"
    )
    with pytest.raises(SampleError, match=r"^guest sample: line 1, column 2: a field of 65,537 characters"):
        read_text(f"browserId,{big}\nb-1,x\n")
    exactly = read_text(f"browserId,note\nb-1,{'y' * MAX_FIELD_CHARS}\n")
    assert len(exactly.guests[0].extra["note"]) == MAX_FIELD_CHARS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (  # the quote runs to the end of the file
            'browserId,note\nb-1,ok\nb-2,"oops\nb-3,x\nb-4,y\n',
            "row 2 (line 3), column note: the quoted field that starts on line 3 is never closed; "
            'add the closing " or remove the opening one',
        ),
        (  # ... or meets the next opening quote, which used to swallow the rows in between
            'browserId,note\nb-1,ok\nb-2,"oops\nb-3,x\nb-4,"y"\n',
            "row 2 (line 3), column note: the quoted field that starts on line 3 has text after its closing "
            'quote: is a closing " missing? (Inside quotes, write a quote as "".)',
        ),
        (  # a multi-line field that is closed, then one that is not: the line of the second
            'browserId,note,more\nb-1,"two\nlines","open\nb-2,x\n',
            "row 1 (line 2), column more: the quoted field that starts on line 3 is never closed",
        ),
        (  # in the header
            'browserId,"note\nb-1,x\n',
            "line 1, column 2: the quoted field that starts on line 1 is never closed",
        ),
        (  # and one so long that it reaches the csv module's own field limit first
            'browserId,note\nb-1,"' + "z" * 140_000 + "\n",
            "row 1 (line 2), column note: the quoted field that starts on line 2 runs on for over 65,536 "
            'characters: is its closing " missing?',
        ),
    ],
)
def test_an_unterminated_quote_names_the_line_where_its_field_starts(text: str, message: str) -> None:
    with pytest.raises(SampleError) as raised:
        read_text(text)
    assert str(raised.value).startswith(f"guest sample: {message}")
    assert "\n" not in str(raised.value)


def test_quotes_that_are_closed_still_read_as_before() -> None:
    sample = read_text('browserId,note,size\nb-1,"a, ""quoted"" note",5" screen\nb-2,"multi\nline",\n')
    assert [dict(g.extra) for g in sample.guests] == [
        {"note": 'a, "quoted" note', "size": '5" screen'},
        {"note": "multi\nline", "size": None},
    ]


def test_the_cli_reports_a_wide_csv_and_a_bad_quote_in_one_line(tmp_path: Path) -> None:
    wide = tmp_path / "wide.csv"
    wide.write_text("browserId," + ",".join(f"c{i}" for i in range(99_999)) + "\nb-1\n")
    quote = tmp_path / "quote.csv"
    quote.write_text('browserId,segment\nb-1,a\nb-2,"b\nb-3,c\n')
    for path, fragment in (
        (wide, f"{wide}: line 1: 100,000 columns; a guest sample may have at most 1,000"),
        (quote, f"{quote}: row 2 (line 3), column segment: the quoted field that starts on line 3 is never"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "flowlab", "batch", "--friendly-id", FLOW, "--guests", str(path),
             "--out", str(tmp_path / "out.sqlite"), "--quiet"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr == f"error: {fragment}" + result.stderr.split(fragment, 1)[1]
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert not (tmp_path / "out.sqlite").exists()


# ---- synthetic samples ----------------------------------------------------------------------------------


def test_generated_samples_are_deterministic_per_seed() -> None:
    one, again, other = (
        generate_guests(300, seed=1),
        generate_guests(300, seed=1),
        generate_guests(300, seed=2),
    )
    assert one.guests == again.guests and one.fingerprint == again.fingerprint
    assert one.fingerprint != other.fingerprint
    assert len({g.value for g in one.guests}) == 300
    assert all(g.kind == "browserId" for g in one.guests)
    assert one.columns == ("segment", "tier", "campaign", "device")


def test_generated_values_follow_the_arguments() -> None:
    sample = generate_guests(
        2_000, seed=5, channels=["MOBILE_APP"], points_of_sale=["lumen/fr"], languages=["en"],
        campaigns=["run_club", None], tier_mix={"gold": 3, "none": 1},
    )  # fmt: skip
    assert {g.fields["channel"] for g in sample.guests} == {"MOBILE_APP"}
    assert {(g.fields["pointOfSale"], g.fields["language"], g.fields["currencyCode"]) for g in sample} == {
        ("lumen/fr", "en", "EUR")
    }
    tiers = Counter(g.extra["tier"] for g in sample)
    assert set(tiers) == {"gold", "none"} and 0.7 < tiers["gold"] / 2_000 < 0.8
    for guest in sample:
        campaign = guest.extra["campaign"]
        assert (guest.params.get("utm", {}).get("campaign")) == campaign
        assert guest.extra["segment"] == ("member" if guest.extra["tier"] != "none" else
                                          "campaign_visitor" if campaign else "visitor")  # fmt: skip
        guest.to_request(KEY, FLOW)  # every generated row is a valid request


def test_generation_checks_its_arguments_like_a_csv() -> None:
    with pytest.raises(SampleError, match="unknown channel 'TV'"):
        generate_guests(3, seed=1, channels=["TV"])
    with pytest.raises(SampleError, match="tier_mix"):
        generate_guests(3, seed=1, tier_mix={})


def test_to_csv_reads_back_to_the_same_sample(tmp_path: Path) -> None:
    sample = generate_guests(500, seed=9)
    mixed = GuestSample(
        [*sample.guests[:3], GuestRow(4, "identifiers", "LOYALTY:LY-9", {}, {"n": 1}, {"segment": "x"}),
         GuestRow(5, "email", "a@b.co", {"language": "FR"}, {}, {"tier": "gold"})],
        columns=sample.columns,
    )  # fmt: skip
    again = read_guests(sample.to_csv(tmp_path / "sample.csv"))
    assert again.guests == sample.guests and again.fingerprint == sample.fingerprint
    again = read_guests(mixed.to_csv(tmp_path / "mixed.csv"))  # columns a row lacks read back as None
    for read, written in zip(again.guests, mixed.guests, strict=True):
        assert (read.row, read.kind, read.value, read.fields, read.params) == (
            written.row, written.kind, written.value, written.fields, written.params
        )  # fmt: skip
        assert {k: v for k, v in read.extra.items() if v is not None} == {
            k: v for k, v in written.extra.items() if v is not None
        }
    frame = mixed.to_dataframe()
    assert list(frame["row"]) == [1, 2, 3, 4, 5]
    assert frame.loc[3, "identifiers.provider"] == "LOYALTY"


# ---- the sandbox's demo guests --------------------------------------------------------------------------


def test_sandbox_guests_come_with_their_attributes(admin: SandboxAdmin) -> None:
    sample = guests_from_sandbox(admin, 40)
    assert len(sample) == 40 and not sample.problems
    lena = sample.guests[0]
    assert (lena.kind, lena.value) == ("browserId", PERSONAS[0]["browserId"])
    assert lena.fields == {"pointOfSale": "lumen/de", "language": "DE"}
    assert lena.extra["tier"] == "gold" and lena.extra["country"] == "DE" and lena.extra["orders"] == 9
    assert {"guestRef", "tier", "device", "loyaltyPoints"} <= set(sample.columns)
    assert [g.row for g in sample.guests] == list(range(1, 41))
