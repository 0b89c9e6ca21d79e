"""Offer cards: what the guest would see, drawn so a marketer can read it without the JSON.

Offer attributes are untrusted: anyone who can edit an offer in the tenant (or load one into the sandbox)
controls them. So every value is escaped with ``html.escape`` before it goes into the card; the text field
may carry simple formatting (bold, italics, lists), which passes through nh3 with a strict allow-list and no
attributes at all, and is shown escaped whenever nh3 would have to remove anything. Images load only from
``http(s)://`` or ``data:image/`` URLs; links open only ``http(s)://`` URLs, in a new tab. ``st.html`` runs no
scripts either (``unsafe_allow_javascript`` stays off), so this is defence in depth.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import nh3
import streamlit as st

from flowlab.personalize.offers import Offer

__all__ = ["format_price", "offer_card_html", "offer_cards_html", "render_offer_cards", "safe_image_src"]

_SYMBOLS = {"EUR": "€", "GBP": "£", "USD": "$", "JPY": "¥", "INR": "₹"}
_RICH_TAGS = {"b", "strong", "i", "em", "u", "br", "p", "ul", "ol", "li", "small"}
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|jpg|gif|webp|avif|svg\+xml)(;[a-z0-9=.+-]+)*,", re.I)
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

_STYLE = """
<style>
.fl-cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:16px;margin:4px 0 8px}
.fl-card{border:1px solid rgba(128,128,128,.28);border-radius:12px;overflow:hidden;display:flex;
 flex-direction:column;background:rgba(128,128,128,.04)}
.fl-img{position:relative;aspect-ratio:2/1;background:rgba(128,128,128,.12);display:flex;align-items:center;
 justify-content:center;color:rgba(128,128,128,.9);font-size:.8rem}
.fl-img img{width:100%;height:100%;object-fit:cover;display:block}
.fl-badge{position:absolute;top:10px;right:10px;background:#111827;color:#fff;font-size:.72rem;
 font-weight:700;padding:3px 9px;border-radius:999px;letter-spacing:.02em}
.fl-body{padding:12px 14px 14px;display:flex;flex-direction:column;gap:6px;flex:1}
.fl-title{font-weight:700;font-size:1.05rem;line-height:1.3;word-break:break-word}
.fl-text{font-size:.9rem;opacity:.85;line-height:1.4;word-break:break-word}
.fl-text p{margin:0 0 .4em}
.fl-price{font-weight:700;font-size:1.05rem}
.fl-cta{align-self:flex-start;margin-top:auto;background:#ff4b4b;color:#fff!important;text-decoration:none;
 padding:6px 14px;border-radius:8px;font-size:.85rem;font-weight:600}
.fl-url{font-family:monospace;font-size:.72rem;opacity:.65;word-break:break-all}
.fl-meta{font-size:.72rem;opacity:.6;border-top:1px solid rgba(128,128,128,.2);padding-top:6px;
 word-break:break-word}
.fl-empty{font-size:.9rem;opacity:.75;padding:8px 0}
</style>
"""


def format_price(price: float, currency: str = "") -> str:
    """``€129.95`` for currencies with a well-known symbol, else ``129.95 CHF`` (locale-neutral)."""
    code = currency.strip().upper()
    amount = f"{price:,.2f}"
    if code in _SYMBOLS:
        return f"{_SYMBOLS[code]}{amount}"
    return f"{amount} {code}".strip()


def safe_image_src(url: str) -> str | None:
    """The URL if an image may load from it (``http(s)://`` or ``data:image/…``), else None."""
    candidate = url.strip()
    if candidate.lower().startswith(("https://", "http://")):
        return candidate if len(candidate) > 8 and not _CONTROL.search(candidate) else None
    if _DATA_IMAGE.match(candidate):  # the media type is checked; the payload is escaped like any text
        return candidate
    return None


def _safe_link(url: str) -> str | None:
    candidate = url.strip()
    if _CONTROL.search(candidate):
        return None
    return candidate if candidate.lower().startswith(("https://", "http://")) else None


def _rich_text(text: str) -> str:
    """Simple formatting survives; anything nh3 would strip means the text is shown escaped, as typed."""
    cleaned = nh3.clean(text, tags=_RICH_TAGS, attributes={}, link_rel=None, strip_comments=True)
    return cleaned if cleaned == text else html.escape(text)


def offer_card_html(offer: Offer) -> str:
    """One card; every attribute value is escaped (see the module docstring)."""
    esc = html.escape
    src = safe_image_src(offer.image_url) if offer.image_url else None
    if src is not None:
        image = f'<img src="{esc(src, quote=True)}" alt="{esc(offer.title, quote=True)}" loading="lazy">'
    elif offer.image_url:
        image = "<span>image not shown: only http(s) and data:image URLs load</span>"
    else:
        image = "<span>no image</span>"
    badge = f'<span class="fl-badge">{esc(offer.badge)}</span>' if offer.badge else ""
    parts = [f'<div class="fl-card"><div class="fl-img">{image}{badge}</div><div class="fl-body">']
    parts.append(f'<div class="fl-title">{esc(offer.title)}</div>')
    if offer.text:
        parts.append(f'<div class="fl-text">{_rich_text(offer.text)}</div>')
    if offer.price is not None:
        parts.append(f'<div class="fl-price">{esc(format_price(offer.price, offer.currency))}</div>')
    if offer.cta_text or offer.cta_url:
        label = esc(offer.cta_text or "Open")
        link = _safe_link(offer.cta_url)
        if link is not None:
            href = esc(link, quote=True)
            parts.append(
                f'<a class="fl-cta" href="{href}" target="_blank" rel="noopener noreferrer">{label}</a>'
            )
        else:
            parts.append(f'<span class="fl-cta">{label}</span>')
        if offer.cta_url:
            parts.append(f'<div class="fl-url">→ {esc(offer.cta_url)}</div>')
    meta = " · ".join(p for p in (offer.name if offer.name != offer.title else "", offer.ref[:8]) if p)
    if meta:
        parts.append(f'<div class="fl-meta">{esc(meta)}</div>')
    parts.append("</div></div>")
    return "".join(parts)


def offer_cards_html(offers: Sequence[Offer]) -> str:
    """All cards in a responsive grid, with their stylesheet."""
    cards = "".join(offer_card_html(o) for o in offers)
    return f'{_STYLE}<div class="fl-cards">{cards}</div>'


def render_offer_cards(offers: Sequence[Offer], *, empty: str = "The response carries no offers.") -> None:
    """Draw the cards (or say there are none)."""
    if not offers:
        st.html(f'{_STYLE}<div class="fl-empty">{html.escape(empty)}</div>')
        return
    st.html(offer_cards_html(offers))
