"""The Sandbox page's "Import export folder (zip)" action through the real entrypoint (AppTest, #11)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pagetext import demo_zip, text
from streamlit.testing.v1 import AppTest

from flowlab.admin import SandboxAdmin
from ui.target import sandbox_server

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def report_table(at: AppTest) -> Any:
    """The import report's table (None when none is shown)."""
    return next((d.value for d in at.dataframe if "loaded/skipped" in d.value.columns), None)


@pytest.fixture
def sandbox_page() -> Iterator[AppTest]:
    """The Sandbox page; the app's sandbox (shared by every AppTest of the process) is reset afterwards."""
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("app_pages/sandbox.py").run()
    assert not at.exception
    yield at
    with SandboxAdmin(base_url=sandbox_server().url, timeout=30) as admin:
        admin.reset()


def test_importing_the_demo_zip_shows_every_file_loaded_or_skipped(sandbox_page: AppTest) -> None:
    at = sandbox_page
    at.file_uploader(key="sandbox_import_file").set_value(
        ("sitecore-demo.zip", demo_zip(), "application/zip")
    )
    at.run()
    at.button(key="sandbox_import").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Files"], metrics["Loaded"], metrics["Skipped"]) == ("11", "7", "4")
    rows = report_table(at)
    assert rows is not None
    assert list(rows.columns) == ["file", "kind", "name", "loaded/skipped", "reason"]
    by_name = {r["name"]: r for r in rows.to_dict("records")}
    assert by_name["Get City from MaxMind"]["kind"] == "connection"
    assert by_name["Get City from MaxMind"]["loaded/skipped"] == "loaded"
    assert by_name["LICENSE"]["loaded/skipped"] == "skipped" and by_name["LICENSE"]["reason"]
    flows = next(d.value for d in at.dataframe if "friendlyId" in d.value.columns)
    assert "dynamic_welcome_message" in set(flows["friendlyId"])  # the Flows tab shows what was loaded


def test_a_file_that_is_not_a_zip_is_a_clear_message(sandbox_page: AppTest) -> None:
    at = sandbox_page
    at.file_uploader(key="sandbox_import_file").set_value(
        ("export.zip", b"not a zip at all", "application/zip")
    )
    at.run()
    at.button(key="sandbox_import").click().run()
    assert not at.exception
    errors = text(at, "error")
    assert "not a zip archive" in errors and "What to do" in errors
    assert report_table(at) is None


def test_a_zip_over_the_upload_limit_is_refused_before_sending(sandbox_page: AppTest) -> None:
    at = sandbox_page
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("export/big.json", "x" * (1024 * 1024 + 1))
    at.file_uploader(key="sandbox_import_file").set_value(("big.zip", buffer.getvalue(), "application/zip"))
    at.run()
    at.button(key="sandbox_import").click().run()
    assert not at.exception
    errors = text(at, "error")
    assert "over the sandbox's 1,024 KB limit" in errors and "--load DIR" in errors
