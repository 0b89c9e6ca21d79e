"""Screenshots of every page for the README: ``.venv/bin/python scripts/screenshots.py [--out docs/screenshots]``.

Starts the app the way a user does (``streamlit run app.py``, built-in sandbox, a throw-away data dir),
drives Debian's Chromium with Playwright (never a downloaded browser), and writes one full-page PNG per page:
Preview after calling a demo persona, Compare after comparing two personas, History, Sandbox (plus its
Offers tab), Batch run while and after running 5,000 generated guests through the demo A/B test, and
Analysis of that run (and its Latency tab), the Sandbox page's Replay tab, then the demo export imported
(Import export tab), the Connections page after sending MaxMind and the Triggers page after closing Lena's
session. Exits non-zero if any step fails.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from appdriver import CHROMIUM, CHROMIUM_ARGS, ROOT, choose as pick, settle, start_app

VIEWPORT = {"width": 1400, "height": 900}
MAX_HEIGHT = 3200


def nav(page: Page, title: str) -> None:
    page.locator("[data-testid='stSidebarNav'] a", has_text=title).first.click()
    settle(page)


def shoot(page: Page, out: Path, name: str, max_height: int = MAX_HEIGHT) -> None:
    """A full-page PNG: Streamlit scrolls its main area, not the document, so grow the window to fit it."""
    page.mouse.move(0, 0)
    for _ in range(2):  # resizing can reflow the page once
        height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        page.set_viewport_size(
            {"width": VIEWPORT["width"], "height": min(max(height, VIEWPORT["height"]), max_height)}
        )
        page.wait_for_timeout(400)
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def batch_and_analysis(page: Page, out: Path) -> None:
    """Batch run: 5,000 generated guests on the demo A/B test (paced a little, to catch the progress panel),
    then the finished run, then its Analysis page."""
    nav(page, "Batch run")
    page.wait_for_selector(".st-key-batch_start button:not([disabled])", timeout=30_000)
    rate = page.locator(".st-key-batch_rps input")
    rate.fill("1500")
    rate.press("Enter")
    settle(page)
    page.locator(".st-key-batch_start button:not([disabled])").first.click()
    page.wait_for_selector(".st-key-batch_cancel", timeout=20_000)
    page.wait_for_timeout(1500)
    shoot(page, out, "batch-running")
    page.wait_for_selector(".st-key-batch_export_parquet", timeout=120_000)
    settle(page)
    shoot(page, out, "batch")
    nav(page, "Analysis")
    page.wait_for_selector("[data-testid='stVegaLiteChart']", timeout=60_000)
    settle(page)
    page.wait_for_timeout(1000)  # charts finish drawing
    shoot(page, out, "analysis")


def edge_pages(page: Page, out: Path) -> None:
    """AEP Edge: Lena's checkout on Edge preview, then the preset journey; back to Sitecore Personalize."""
    page.locator(".st-key-target_provider button", has_text="AEP Edge").click()
    settle(page)
    nav(page, "Edge preview")
    page.wait_for_selector(".st-key-edge_call button:not([disabled])", timeout=30_000)
    page.locator(".st-key-edge_call button").click()
    page.wait_for_selector(".st-key-edge_why", timeout=20_000)
    settle(page)
    shoot(page, out, "edge-preview")
    nav(page, "Journey")
    page.locator(".st-key-journey_play button").click()
    page.wait_for_selector("[data-testid='stVegaLiteChart']", timeout=30_000)
    settle(page)
    page.wait_for_timeout(1000)  # the chart finishes drawing
    shoot(page, out, "journey")
    nav(page, "Batch run")  # 5,000 sandbox identities sending a checkout, then membership on Analysis
    page.wait_for_selector(".st-key-batch_start button:not([disabled])", timeout=30_000)
    page.locator(".st-key-batch_start button:not([disabled])").first.click()
    page.wait_for_selector(".st-key-batch_export_parquet", timeout=120_000)
    settle(page)
    nav(page, "Analysis")
    page.wait_for_selector("[data-testid='stVegaLiteChart']", timeout=60_000)
    settle(page)
    page.wait_for_timeout(1000)  # charts finish drawing
    shoot(page, out, "analysis-edge")
    page.locator(".st-key-target_provider button", has_text="Sitecore Personalize").click()
    settle(page)


def demo_export_zip(path: Path) -> Path:
    """Sitecore's demo export (the repo's fixtures: interactive and triggered parts) as one zip."""
    import zipfile

    fixtures = ROOT / "tests" / "fixtures"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in ("sitecore-demo", "sitecore-demo-triggered"):
            for file in sorted((fixtures / folder).rglob("*")):
                if file.is_file() and file.parent != fixtures / folder:
                    archive.write(file, "export/" + file.relative_to(fixtures / folder).as_posix())
    return path


def import_connections_triggers(page: Page, out: Path, tmp: Path) -> None:
    """Sandbox → Import export (the demo zip), Connections (MaxMind sent), Triggers (Lena's session closed)."""
    nav(page, "Sandbox")
    page.get_by_role("tab", name="Import export").click()
    page.locator(".st-key-sandbox_import_file input[type='file']").set_input_files(
        str(demo_export_zip(tmp / "sitecore-demo-export.zip"))
    )
    settle(page)
    page.locator(".st-key-sandbox_import button").click()
    page.wait_for_selector("text=Loaded", timeout=20_000)
    settle(page)
    page.get_by_role("tab", name="Import export").click()
    settle(page)
    shoot(page, out, "sandbox-import", max_height=1700)
    nav(page, "Connections")
    pick(page, "connections_pick", "Get City from MaxMind")
    page.locator(".st-key-connections_send button").click()
    page.wait_for_selector("text=Went to", timeout=20_000)
    settle(page)
    page.get_by_role("tab", name="Mapped outputs").click()
    settle(page)
    shoot(page, out, "connections")
    nav(page, "Triggers")
    pick(page, "triggers_persona", "Lena Vogel")
    page.locator(".st-key-triggers_action button", has_text="Close the session").click()
    settle(page)
    page.locator(".st-key-triggers_close button").click()
    page.wait_for_selector("[data-testid='stExpander'] summary:has-text('DELIVERED')", timeout=20_000)
    page.wait_for_timeout(_SETTLE_MS)
    settle(page)
    shoot(page, out, "triggers")


_SETTLE_MS = 7000  # the Triggers page refreshes deliveries for a few seconds after firing, then settles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_app(Path(tmp))
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(url)
                page.wait_for_selector(".st-key-persona", timeout=30_000)
                settle(page)
                pick(page, "persona", "Lena Vogel")
                page.locator(".st-key-call button").click()
                page.wait_for_selector(".fl-card", timeout=20_000)
                settle(page)
                shoot(page, out, "preview")

                nav(page, "Compare")
                page.locator(".st-key-compare_run button").click()
                page.wait_for_selector(".fl-card", timeout=20_000)
                settle(page)
                shoot(page, out, "compare")

                nav(page, "History")
                shoot(page, out, "history")

                edge_pages(page, out)

                nav(page, "Sandbox")
                shoot(page, out, "sandbox")
                page.get_by_role("tab", name="Offers").click()
                page.wait_for_selector(".fl-card", timeout=20_000)
                settle(page)
                shoot(page, out, "sandbox-offers", max_height=1700)

                batch_and_analysis(page, out)
                page.get_by_role("tab", name="Latency").click()
                settle(page)
                shoot(page, out, "analysis-latency")

                nav(page, "Sandbox")  # the run just made, replayed offline
                page.get_by_role("tab", name="Replay").click()
                settle(page)
                shoot(page, out, "sandbox-replay", max_height=1700)

                import_connections_triggers(page, out, Path(tmp))
                browser.close()
        finally:
            process.kill()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
