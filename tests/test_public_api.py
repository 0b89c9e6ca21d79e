"""The public surface: one sorted __all__, every module declares its own, lib never imports streamlit."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import flowlab

LIB = Path(__file__).resolve().parents[1] / "lib" / "flowlab"


def test_all_names_are_exported_and_sorted() -> None:
    public = [
        n for n in vars(flowlab) if (not n.startswith("_") or n == "__version__") and n != "annotations"
    ]
    modules = {n for n in public if type(getattr(flowlab, n)).__name__ == "module"}
    assert sorted(flowlab.__all__, key=str.casefold) == flowlab.__all__
    assert set(flowlab.__all__) == set(public) - modules


def test_every_module_declares_all() -> None:
    for info in pkgutil.walk_packages([str(LIB)], prefix="flowlab."):
        module = importlib.import_module(info.name)
        if info.name.endswith("__main__"):
            continue
        assert hasattr(module, "__all__"), f"{info.name} has no __all__"
        for name in module.__all__:
            assert hasattr(module, name), f"{info.name}.__all__ names missing {name}"


def test_the_library_never_imports_streamlit() -> None:
    offenders = []
    for path in LIB.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
                offenders.append(str(path.relative_to(LIB)))
    assert offenders == []


def test_http_lives_in_one_module() -> None:
    """Only client.py (and the sandbox, which *serves* HTTP) may import an HTTP client library."""
    offenders = []
    for path in LIB.rglob("*.py"):
        if path.name == "client.py" or "sandbox" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m.split(".")[0] in {"httpx", "aiohttp", "requests", "urllib3"} for m in mods):
                    offenders.append(path.name)
    assert offenders == []
