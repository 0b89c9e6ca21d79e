"""Helpers the AppTest page tests share: an element kind's text, the demo export as a user zips it, and
waiting for a Batch page run to end."""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["FIXTURES", "demo_zip", "text", "wait_for_batch"]

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def text(at: Any, *kinds: str) -> str:
    """Every element of these kinds (``markdown``, ``error``…) as one string, Markdown escapes undone."""
    return re.sub(r"\\(.)", r"\1", "\n".join(str(e.value) for k in kinds for e in getattr(at, k)))


def demo_zip(*folders: str, top: str | None = None) -> bytes:
    """Sitecore's demo export fixtures zipped the way a user would: each folder's files under ``top`` (or
    under the folder's own name), without the fixtures' own LICENSE/README beside them when ``top`` is set."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in folders or ("sitecore-demo",):
            root = FIXTURES / folder
            for path in sorted(root.rglob("*")):
                if not path.is_file() or (top is not None and path.parent == root):
                    continue
                name = (
                    f"{top}/{path.relative_to(root).as_posix()}"
                    if top
                    else path.relative_to(FIXTURES).as_posix()
                )
                archive.write(path, name)
    return buffer.getvalue()


def wait_for_batch(at: Any, what: str = "the batch") -> None:
    """Re-run the page until its run ends (no Cancel button left), at most 60 s; the page shows no exception."""
    deadline = time.monotonic() + 60
    while any(b.key == "batch_cancel" for b in at.button):
        assert time.monotonic() < deadline, f"{what} did not finish in time"
        time.sleep(0.3)
        at.run()
    assert not at.exception, at.exception
