"""The public surface is exactly __all__, and module dependencies point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import codeweaver_telemetry

PACKAGE = Path(codeweaver_telemetry.__file__).parent


def test_all_lists_exactly_the_public_names() -> None:
    """__all__ is sorted, every name in it resolves, and nothing else public is exposed."""
    exported = codeweaver_telemetry.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert getattr(codeweaver_telemetry, name) is not None
    public = {
        name
        for name in dir(codeweaver_telemetry)
        if not name.startswith("_")
        and not isinstance(getattr(codeweaver_telemetry, name), type(codeweaver_telemetry))
        and name not in {"annotations", "contextlib", "importlib", "TYPE_CHECKING", "Any"}
    }
    assert public == set(exported)


def test_exported_names_present_as_the_package() -> None:
    """Classes and functions say they live in codeweaver_telemetry, not a private module."""
    for name in codeweaver_telemetry.__all__:
        value = getattr(codeweaver_telemetry, name)
        if isinstance(value, type) or (callable(value) and hasattr(value, "__code__")):
            assert value.__module__ == "codeweaver_telemetry", name


def test_importing_the_package_is_light() -> None:
    """`import codeweaver_telemetry` and an off client load neither pydantic nor posthog."""
    import subprocess
    import sys

    code = (
        "import os, sys; os.environ['DO_NOT_TRACK'] = '1';"
        "import codeweaver_telemetry as t; c = t.get_telemetry_client();"
        "c.start_session({'a': 1}); c.capture('x', {'a': 1}); c.get_feature_flag('f');"
        "c.shutdown(); assert not c.enabled;"
        "print(sorted(m for m in ('pydantic', 'pydantic_settings', 'posthog') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def test_dependencies_point_one_way() -> None:
    """The layout's import directions: only __init__, _api and testing import the client;
    events, privacy and sinks never do (nor consent, the worker, settings or state); the
    client's core, start-up and process modules never import the façade; event models import
    only the privacy core; only _posthog.py imports posthog."""
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        imported = imports_of(path)
        ours = {m for m in imported if m.startswith("codeweaver_telemetry")}
        if "codeweaver_telemetry.client" in ours:
            assert name in {
                "codeweaver_telemetry",
                "codeweaver_telemetry._api",
                "codeweaver_telemetry.testing",
            }, name
        if name.startswith("codeweaver_telemetry.events"):
            allowed = (
                "codeweaver_telemetry.privacy",
                "codeweaver_telemetry.events",
                "codeweaver_telemetry._types",
                "codeweaver_telemetry._api",  # the helpers' old names, looked up lazily
            )
            assert all(m.startswith(allowed) for m in ours), (name, ours)
        if name in {
            "codeweaver_telemetry._core",
            "codeweaver_telemetry._startup",
            "codeweaver_telemetry._process",
            "codeweaver_telemetry._session",
            "codeweaver_telemetry._snapshot",
            "codeweaver_telemetry._worker",
            "codeweaver_telemetry._delivery",
        }:
            assert "codeweaver_telemetry.client" not in ours, name
            assert "codeweaver_telemetry._api" not in ours, name
        if name.startswith(("codeweaver_telemetry.privacy", "codeweaver_telemetry.sinks")):
            for forbidden in ("client", "consent", "_worker", "settings", "state", "_api"):
                assert f"codeweaver_telemetry.{forbidden}" not in ours, (name, forbidden)
        if name.startswith("codeweaver_telemetry.sinks"):
            assert "codeweaver_telemetry.pipeline" not in ours
            assert not any(m.startswith("codeweaver_telemetry.privacy") for m in ours), name
        if name == "codeweaver_telemetry._types":
            assert ours == set(), "_types imports nothing of ours"
        if any(m == "posthog" or m.startswith("posthog.") for m in imported):
            assert name == "codeweaver_telemetry._posthog", name
