"""Helpers the AppTest page tests share: an element kind's text, and the demo export as a user zips it."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

__all__ = ["FIXTURES", "demo_zip", "text"]

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
