"""A small JSON file that is written atomically: saved targets and personas live in files like this.

A crash or a second app process in the middle of a save must never leave half a file behind, so writes go
to a temporary file in the same folder and are moved into place with ``os.replace`` (atomic on POSIX and
Windows). The file is private to the user (mode 0600): it holds client keys, which are public but still
nobody else's business; its folder is made 0700 on the way (``flowlab.permissions``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from flowlab.errors import ConfigError
from flowlab.permissions import private_dir

__all__ = ["JsonFile"]


class JsonFile:
    """One JSON document on disk: ``read()`` it (None when missing), ``write()`` it atomically."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"JsonFile({str(self.path)!r})"

    def read(self) -> Any:
        """The parsed document, or None when the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            return json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise ConfigError(f"{self.path} is not valid JSON ({exc}); fix or delete it") from None

    def write(self, data: Any) -> None:
        """Replace the file with ``data`` as JSON, atomically (never a half-written file)."""
        try:
            private_dir(self.path.parent)  # the data dir: 0700, tightened if an older version left it open
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, ensure_ascii=False, sort_keys=False)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
