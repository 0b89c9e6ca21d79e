"""The public surface: one sorted __all__, every module declares its own, lib never imports streamlit."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import flowlab

LIB = Path(__file__).resolve().parents[1] / "lib" / "flowlab"


def test_all_names_are_exported_and_sorted() -> None:
    public = [n for n in dir(flowlab) if (not n.startswith("_") or n == "__version__") and n != "annotations"]
    modules = {n for n in public if type(getattr(flowlab, n)).__name__ == "module"}
    assert sorted(flowlab.__all__, key=str.casefold) == flowlab.__all__
    assert set(flowlab.__all__) == set(public) - modules - {"importlib", "TYPE_CHECKING", "Any"}
    for name in flowlab.__all__:  # every lazy name resolves
        assert getattr(flowlab, name) is not None


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


#: The client core and the clients built on it: the only modules that may import an HTTP client library.
HTTP_MODULES = {"http.py", "admin.py", "personalize/client.py", "edge/client.py", "edge/auth.py"}


def test_http_lives_in_the_client_core() -> None:
    """Only the client core and each provider's client (and the sandbox, which *serves* HTTP) speak HTTP."""
    offenders = []
    for path in LIB.rglob("*.py"):
        relative = path.relative_to(LIB).as_posix()
        if relative in HTTP_MODULES or relative.startswith("sandbox/"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m.split(".")[0] in {"httpx", "aiohttp", "requests", "urllib3"} for m in mods):
                    offenders.append(relative)
    assert offenders == []
    assert all((LIB / name).is_file() for name in HTTP_MODULES)


def test_the_sandbox_never_imports_a_client_or_the_runner() -> None:
    """The sandbox serves the protocols; it must not lean on the code that calls them (design.md)."""
    code = (
        "import sys, flowlab.sandbox, flowlab.sandbox.workers, flowlab.sandbox.personalize.engine,"
        " flowlab.sandbox.personalize.replay, flowlab.sandbox.edge.routes;"
        "flowlab.sandbox.create_app();"
        "bad = ('flowlab.http', 'flowlab.admin', 'flowlab.personalize', 'flowlab.edge', 'flowlab.batch.runner',"
        " 'flowlab.workbench', 'streamlit');"
        "print(sorted(m for m in sys.modules if m.startswith(bad)))"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_providers_are_subpackages() -> None:
    """One subpackage per provider and per shared capability, the sandbox split the same way."""
    for package in (
        "personalize",
        "edge",
        "batch",
        "analysis",
        "workbench",
        "sandbox/personalize",
        "sandbox/edge",
    ):
        assert (LIB / package / "__init__.py").is_file(), package
    flat = sorted(p.name for p in LIB.glob("*.py"))
    assert flat == [
        "__init__.py",
        "__main__.py",
        "admin.py",
        "config.py",
        "csvsafe.py",
        "errors.py",
        "http.py",
        "jsonfile.py",
        "permissions.py",
        "redaction.py",
    ]
