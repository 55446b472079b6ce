"""Shared fixtures: a clean, enabled-capable environment per test, and the loopback receiver."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry import TelemetryClient, TelemetrySettings
from codeweaver_telemetry._process import PROCESS
from codeweaver_telemetry.consent import CI_VARIABLES
from tests.receiver import PostHogReceiver, make_receiver

_CLEARED_PREFIXES = ("CODEWEAVER", "DO_NOT_TRACK", "XDG_")


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test starts outside CI, without DO_NOT_TRACK or any CODEWEAVER setting.

    CODEWEAVER_HOME and the XDG directories point into the test's temp dir, and the working
    directory is a fresh folder, so no real config file or state is ever read or written.
    Yields the CODEWEAVER_HOME directory.
    """
    for var in list(os.environ):
        if var.startswith(_CLEARED_PREFIXES) or var in CI_VARIABLES:
            monkeypatch.delenv(var, raising=False)
    home = tmp_path / "cw_home"
    monkeypatch.setenv("CODEWEAVER_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg_config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg_data"))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    PROCESS.reset()  # what an earlier test left behind, as in a new process
    yield home
    PROCESS.reset()


@pytest.fixture
def receiver() -> Iterator[PostHogReceiver]:
    """A PostHog-protocol server on 127.0.0.1 that records what arrives."""
    with make_receiver() as r:
        yield r


@pytest.fixture
def make_client(clean_env: Path) -> Iterator[Callable[..., TelemetryClient]]:
    """Build enabled-by-code clients (opt-in given in code); all are shut down afterwards."""
    made: list[TelemetryClient] = []

    def factory(**overrides: Any) -> TelemetryClient:
        sink = overrides.pop("sink", None)
        values: dict[str, Any] = {"enabled": True, "batch_interval_seconds": 0.05}
        values.update(overrides)
        c = TelemetryClient(TelemetrySettings(**values), sink=sink)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.shutdown(timeout=0.5)


@pytest.fixture
def build() -> Iterator[Callable[..., TelemetryClient]]:
    """Build clients exactly as given (no consent added); shut down after the test."""
    made: list[TelemetryClient] = []

    def factory(*args: Any, **kwargs: Any) -> TelemetryClient:
        built = TelemetryClient(*args, **kwargs)
        made.append(built)
        return built

    yield factory
    for built in made:
        built.shutdown(timeout=0.2)


@pytest.fixture
def telemetry_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture the package logger's records at DEBUG and above."""
    caplog.set_level(logging.DEBUG, logger="codeweaver_telemetry")
    return caplog
