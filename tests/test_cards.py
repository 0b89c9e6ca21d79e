"""Offer cards: every attribute escaped, rich text only through a strict allow-list, safe URLs only."""

from __future__ import annotations

import pytest

from flowlab.personalize.offers import Offer
from ui.cards import format_price, offer_card_html, offer_cards_html, safe_image_src


def test_prices_are_locale_neutral() -> None:
    assert format_price(129.0, "EUR") == "€129.00"
    assert format_price(1299.5, "usd") == "$1,299.50"
    assert format_price(99.0, "CHF") == "99.00 CHF"
    assert format_price(5.0) == "5.00"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://cdn.example/a.png", True),
        ("http://cdn.example/a.png", True),
        ("data:image/png;base64,iVBORw0KGgo=", True),
        ("data:image/svg+xml;base64,PHN2Zy8+", True),
        ("javascript:alert(1)", False),
        (" JaVaScRiPt:alert(1)", False),
        ("data:text/html;base64,PHNjcmlwdD4=", False),
        ("vbscript:msgbox(1)", False),
        ("x", False),
        ("//evil.example/a.png", False),
        ("https://", False),
        ("https://a.example/\x00x.png", False),
    ],
)
def test_only_http_and_data_image_urls_load(url: str, allowed: bool) -> None:
    assert (safe_image_src(url) is not None) is allowed


def test_every_attribute_is_escaped() -> None:
    offer = Offer(
        title="<img src=x onerror=alert(1)>",
        text="<script>alert(2)</script>",
        badge='"><svg onload=alert(3)>',
        cta_text="<b>Go</b>",
        cta_url="javascript:alert(4)",
        image_url='https://cdn.example/a.png"onerror="alert(5)',
        name="<i>n</i>",
        ref="r-1",
        price=10.0,
        currency="<EUR>",
    )
    html = offer_card_html(offer)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<svg" not in html and "javascript:" not in html.split("fl-url")[0]
    assert 'src="https://cdn.example/a.png&quot;onerror=&quot;alert(5)"' in html  # stays inside the attribute
    assert "image not shown" in offer_card_html(Offer(title="t", image_url="https://a.example/x y.png"))
    assert '<span class="fl-cta">&lt;b&gt;Go&lt;/b&gt;</span>' in html  # not a link: the URL is not http(s)
    assert "10.00 &lt;EUR&gt;" in html


def test_simple_formatting_survives_and_anything_else_shows_as_typed() -> None:
    assert '<div class="fl-text"><b>10%</b> off<br>today</div>' in offer_card_html(
        Offer(title="t", text="<b>10%</b> off<br>today")
    )
    escaped = offer_card_html(Offer(title="t", text='<b onclick="x()">hi</b>'))
    assert "&lt;b onclick=&quot;x()&quot;&gt;hi&lt;/b&gt;" in escaped
    assert "a &lt; b" in offer_card_html(Offer(title="t", text="a < b"))


def test_links_open_only_http_urls_in_a_new_tab() -> None:
    html = offer_card_html(Offer(title="t", cta_text="Shop", cta_url="https://shop.example/x?a=1&b=2"))
    assert 'href="https://shop.example/x?a=1&amp;b=2" target="_blank" rel="noopener noreferrer"' in html
    relative = offer_card_html(Offer(title="t", cta_text="Shop", cta_url="/sale"))
    assert "href" not in relative and "→ /sale" in relative


def test_the_grid_has_its_style_and_every_card() -> None:
    html = offer_cards_html([Offer(title="a"), Offer(title="b")])
    assert html.startswith("\n<style>") and html.count('class="fl-card"') == 2
