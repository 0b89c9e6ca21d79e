"""The README stays true: its Python example runs, and every setting, CLI flag and page is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowlab.__main__ import build_parser
from flowlab.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_exactly_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert [c.split()[0] for c in commands] == ["./scripts/app", "./scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


def test_readme_python_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block is not None
    exec(compile(block.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("200 ") and ("A" in out or "B" in out)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`FLOWLAB_{name.upper()}`" in README


def _flags() -> list[tuple[str, str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    out = []
    for command, subparser in sub.choices.items():  # type: ignore[union-attr]
        for action in subparser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    out.append((command, flag))
    return out


@pytest.mark.parametrize("command, flag", _flags())
def test_every_cli_flag_is_documented(command: str, flag: str) -> None:
    assert f"python -m flowlab {command}" in README
    assert flag in README, f"{command} {flag} is not in the README"


def test_every_page_is_listed() -> None:
    app = (ROOT / "app.py").read_text()
    for title in re.findall(r'st\.Page\([^)]*title="([^"]+)"', app):
        assert f"**{title}**" in README, f"page {title!r} is not described in the README"
