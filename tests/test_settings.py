"""TelemetrySettings: defaults, every environment variable, precedence, config files, bad input."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

import codeweaver_telemetry
from codeweaver_telemetry import Event, FunctionSink, InMemorySink, TelemetryClient, _config
from codeweaver_telemetry.settings import (
    DEFAULT_HOST,
    TelemetryConfigError,
    TelemetrySettings,
    config_file_candidates,
    load_settings,
)
from codeweaver_telemetry.sinks.jsonl import LOG_FILE
from codeweaver_telemetry.state import STATE_FILE, StateStore
from tests.helpers import wait_until
from tests.receiver import CAPTURE, DEFINITIONS, FLAGS, PostHogReceiver

PREFIX = "CODEWEAVER__TELEMETRY__"
SECRET = "phc_SUPERSECRET123"
REPO_ROOT = Path(codeweaver_telemetry.__file__).resolve().parent.parent


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set CODEWEAVER__TELEMETRY__<NAME> variables: env(BATCH_SIZE="3")."""

    def setter(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(PREFIX + name, value)

    return setter


def _ok(**overrides: Any) -> TelemetrySettings:
    settings, error = load_settings(**overrides)
    assert error is None, error
    return settings


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("codeweaver_telemetry") and r.levelno >= logging.WARNING
    ]


def _write_toml(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


# -- defaults -----------------------------------------------------------------------------------


def test_defaults() -> None:
    """With nothing configured: batches of 10 every 60 s to PostHog US, opt-in, short bounds."""
    settings = _ok()
    assert settings.batch_size == 10
    assert settings.batch_interval_seconds == 60
    assert settings.posthog_host == "https://us.i.posthog.com" == DEFAULT_HOST
    assert settings.exit_timeout_seconds == 0.5
    assert settings.flag_timeout_seconds == 0.5
    assert settings.consent_policy == "opt-in"
    assert settings.disable_telemetry is False
    assert settings.enabled is None
    assert settings.posthog_api_key is None
    assert settings.audit_log is True
    assert settings.strict is False


def test_default_state_dir_is_under_codeweaver_home(clean_env: Path) -> None:
    """By default the state lives in $CODEWEAVER_HOME/telemetry."""
    assert _ok().resolved_state_dir == clean_env / "telemetry"


# -- every environment variable -----------------------------------------------------------------


def test_env_disable_telemetry(
    build: Callable[..., TelemetryClient], env: Callable[..., None]
) -> None:
    """DISABLE_TELEMETRY=1 turns a client off even when ENABLED=1."""
    env(DISABLE_TELEMETRY="1", ENABLED="1")
    client = build()
    assert client.settings.disable_telemetry is True
    assert client.enabled is False
    assert client.decision.source == "disable_telemetry"


@pytest.mark.parametrize(("value", "on"), [("1", True), ("true", True), ("0", False)])
def test_env_enabled(
    build: Callable[..., TelemetryClient], env: Callable[..., None], value: str, on: bool
) -> None:
    """ENABLED=1 opts a client in; ENABLED=0 keeps it off."""
    env(ENABLED=value)
    client = build()
    assert client.settings.enabled is on
    assert client.enabled is on
    assert client.decision.source == "enabled"


def test_env_consent_policy(
    build: Callable[..., TelemetryClient], env: Callable[..., None]
) -> None:
    """CONSENT_POLICY=opt-out shows a notice on the first run, then turns telemetry on."""
    env(CONSENT_POLICY="opt-out")
    notices: list[str] = []
    first = build(on_notice=notices.append)
    assert first.settings.consent_policy == "opt-out"
    assert not first.enabled
    assert len(notices) == 1
    second = build(on_notice=notices.append)
    assert second.enabled
    assert second.decision.source == "policy"
    assert len(notices) == 1


def test_env_consent_policy_invalid_is_config_error(env: Callable[..., None]) -> None:
    """CONSENT_POLICY accepts only opt-in / opt-out."""
    env(CONSENT_POLICY="always")
    settings, error = load_settings()
    assert settings.disable_telemetry is True
    assert error is not None
    assert "consent_policy" in error


def test_env_tools_over_privacy(
    build: Callable[..., TelemetryClient], env: Callable[..., None]
) -> None:
    """TOOLS_OVER_PRIVACY=1 is read and reaches the client's settings."""
    assert _ok().tools_over_privacy is False
    env(TOOLS_OVER_PRIVACY="1")
    assert build().settings.tools_over_privacy is True


@pytest.mark.parametrize("var", [PREFIX + "POSTHOG_API_KEY", "CODEWEAVER_POSTHOG_API_KEY"])
def test_env_api_key_and_host_send_to_posthog(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    receiver: PostHogReceiver,
    var: str,
) -> None:
    """An API key (either variable) plus POSTHOG_HOST make events arrive at that host."""
    monkeypatch.setenv(var, "phc_test_key")
    env(ENABLED="1", POSTHOG_HOST=receiver.url)
    client = build()
    assert client.settings.posthog_host == receiver.url.rstrip("/")
    client.capture("hello", {"n": 1})
    assert client.flush(5.0)
    events = receiver.wait_for_events(1, timeout=5.0)
    assert [e["event"] for e in events] == ["hello"]
    assert events[0]["distinct_id"] == client.distinct_id
    assert "phc_test_key" in receiver.transcript()


def test_no_api_key_means_local_log_only(
    build: Callable[..., TelemetryClient], env: Callable[..., None], receiver: PostHogReceiver
) -> None:
    """Without an API key nothing goes to the host; events land in the local log instead."""
    env(ENABLED="1", POSTHOG_HOST=receiver.url)
    client = build()
    client.capture("hello")
    assert client.flush(2.0)
    assert receiver.requests() == []
    assert (client.settings.resolved_state_dir / LOG_FILE).exists()


def test_api_key_in_code_beats_env(env: Callable[..., None]) -> None:
    """An API key passed in code is used, ahead of one in the environment."""
    env(POSTHOG_API_KEY="phc_from_env")
    settings = _ok(posthog_api_key="phc_from_code")
    assert settings.posthog_api_key is not None
    assert settings.posthog_api_key.get_secret_value() == "phc_from_code"


@pytest.mark.parametrize("name", [PREFIX + "POSTHOG_API_KEY", "CODEWEAVER_POSTHOG_API_KEY"])
def test_api_key_in_env_beats_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    """An API key in the environment (under either name) is used ahead of one in the config
    file, without a configuration error."""
    path = _write_toml(tmp_path / "c.toml", '[telemetry]\nposthog_api_key = "phc_from_file"\n')
    monkeypatch.setenv(PREFIX + "CONFIG_FILE", str(path))
    monkeypatch.setenv(name, "phc_from_env")
    settings, error = load_settings()
    assert error is None
    assert settings.posthog_api_key is not None
    assert settings.posthog_api_key.get_secret_value() == "phc_from_env"


def test_unprefixed_posthog_api_key_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A POSTHOG_API_KEY set for some other app is not picked up (only the documented names)."""
    monkeypatch.setenv("POSTHOG_API_KEY", "phc_someone_elses_project")
    assert _ok().posthog_api_key is None


@pytest.mark.parametrize(("personal", "route"), [(True, DEFINITIONS), (False, FLAGS)])
def test_env_personal_api_key_switches_to_local_evaluation(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    receiver: PostHogReceiver,
    personal: bool,
    route: str,
) -> None:
    """POSTHOG_PERSONAL_API_KEY makes flags come from local evaluation (definitions endpoint)."""
    receiver.set_flags({"beta": True})
    env(ENABLED="1", POSTHOG_API_KEY="phc_test", POSTHOG_HOST=receiver.url)
    env(FLAG_TIMEOUT_SECONDS="5")
    if personal:
        env(POSTHOG_PERSONAL_API_KEY="phs_personal_test")
    client = build()
    assert (client.settings.posthog_personal_api_key is not None) is personal
    assert client.get_feature_flag("beta", default=False) is True
    assert receiver.requests(route)
    other = FLAGS if personal else DEFINITIONS
    assert receiver.requests(other) == []


def test_env_batch_size(build: Callable[..., TelemetryClient], env: Callable[..., None]) -> None:
    """BATCH_SIZE=3 sends a batch as soon as 3 events are queued, without waiting the interval."""
    env(ENABLED="1", BATCH_SIZE="3", BATCH_INTERVAL_SECONDS="3600")
    settings, error = load_settings()
    assert error is None
    assert settings.batch_size == 3
    sink = InMemorySink()
    client = build(settings, sink=sink)
    for i in range(2):
        client.capture("e", {"i": i})
    time.sleep(0.2)
    assert sink.events() == []
    client.capture("e", {"i": 2})
    assert wait_until(lambda: len(sink.events()) == 3)


def test_env_batch_interval_seconds(
    build: Callable[..., TelemetryClient], env: Callable[..., None]
) -> None:
    """BATCH_INTERVAL_SECONDS bounds how long one event waits before it is sent."""
    env(ENABLED="1", BATCH_INTERVAL_SECONDS="0.05", BATCH_SIZE="100")
    sink = InMemorySink()
    client = build(_ok(), sink=sink)
    assert client.settings.batch_interval_seconds == 0.05
    client.capture("lonely")
    assert wait_until(lambda: len(sink.events()) == 1)


def test_env_max_queue_size(
    build: Callable[..., TelemetryClient], env: Callable[..., None]
) -> None:
    """MAX_QUEUE_SIZE bounds memory: without a spool (SPOOL_MAX_BYTES=0), events beyond
    it are dropped and counted; with one, they overflow to it and none is lost."""
    env(ENABLED="1", MAX_QUEUE_SIZE="2", BATCH_SIZE="100", BATCH_INTERVAL_SECONDS="3600")
    sink = InMemorySink()
    kept = build(_ok(), sink=sink)
    for i in range(5):
        kept.capture("e", {"i": i})
    assert kept.stats()["dropped"] == {}
    assert kept.flush(5)
    assert sorted(e["properties"]["i"] for e in sink.events()) == list(range(5))
    kept.shutdown(timeout=0.5)
    env(SPOOL_MAX_BYTES="0")
    client = build(_ok(), sink=InMemorySink())
    for i in range(5):
        client.capture("e", {"i": i})
    assert client.settings.max_queue_size == 2
    assert client.settings.spool_max_bytes == 0
    assert client.stats()["dropped"].get("queue_full") == 3


def test_env_exit_timeout_seconds(
    build: Callable[..., TelemetryClient], env: Callable[..., None]
) -> None:
    """EXIT_TIMEOUT_SECONDS bounds how long a default flush (and exit) waits on a slow sink."""
    env(ENABLED="1", EXIT_TIMEOUT_SECONDS="0.1")

    def slow(batch: Sequence[Event]) -> None:
        time.sleep(1.0)

    client = build(_ok(), sink=FunctionSink(slow))
    assert client.settings.exit_timeout_seconds == 0.1
    client.capture("e")
    start = time.monotonic()
    delivered = client.flush()
    assert time.monotonic() - start < 0.6
    assert delivered is False


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FLAG_TIMEOUT_SECONDS", "0.25", 0.25),
        ("FLAG_REFRESH_SECONDS", "120", 120.0),
        ("REQUEST_TIMEOUT_SECONDS", "7.5", 7.5),
        ("EXIT_TIMEOUT_SECONDS", "2", 2.0),
    ],
)
def test_env_time_bounds_reach_client(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    name: str,
    value: str,
    expected: float,
) -> None:
    """Time-bound variables are parsed and reach the client's settings."""
    attr = name.lower()
    assert getattr(_ok(), attr) != expected
    env(**{name: value})
    assert getattr(build().settings, attr) == expected


def test_env_state_dir(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    tmp_path: Path,
    clean_env: Path,
) -> None:
    """STATE_DIR moves state.json (and the install id) to that directory."""
    custom = tmp_path / "custom_state"
    env(ENABLED="1", STATE_DIR=str(custom))
    client = build(_ok(), sink=InMemorySink())
    assert client.enabled
    assert (custom / STATE_FILE).exists()
    assert client.distinct_id in (custom / STATE_FILE).read_text(encoding="utf-8")
    assert not (clean_env / "telemetry" / STATE_FILE).exists()


@pytest.mark.parametrize(("audit", "logged"), [("false", False), ("true", True)])
def test_env_audit_log(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    receiver: PostHogReceiver,
    audit: str,
    logged: bool,
) -> None:
    """AUDIT_LOG=false keeps no local events.jsonl when sending to PostHog (true keeps one)."""
    env(ENABLED="1", POSTHOG_API_KEY="phc_test", POSTHOG_HOST=receiver.url, AUDIT_LOG=audit)
    client = build()
    client.capture("hello")
    assert client.flush(5.0)
    receiver.wait_for_events(1, timeout=5.0)
    assert (client.settings.resolved_state_dir / LOG_FILE).exists() is logged


def test_env_config_file(
    build: Callable[..., TelemetryClient], env: Callable[..., None], tmp_path: Path
) -> None:
    """CONFIG_FILE points at a TOML file whose [telemetry] table is used."""
    path = _write_toml(tmp_path / "conf" / "tele.toml", "[telemetry]\nenabled = true\n")
    env(CONFIG_FILE=str(path))
    client = build()
    assert client.settings.enabled is True
    assert client.enabled
    assert config_file_candidates() == [path]


@pytest.mark.parametrize("how", ["env", "code"])
def test_strict_raises_on_bad_settings(
    env: Callable[..., None], how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """STRICT=1 (or strict=True in code) raises TelemetryConfigError instead of logging."""
    env(BATCH_SIZE="abc")
    if how == "env":
        env(STRICT="1")
    kwargs = {"strict": True} if how == "code" else {}
    with pytest.raises(TelemetryConfigError, match="batch_size"):
        load_settings(**kwargs)
    assert _warnings(caplog) == []


def test_strict_without_errors_is_fine(env: Callable[..., None]) -> None:
    """STRICT=1 with good settings just loads them."""
    env(STRICT="1", BATCH_SIZE="4")
    settings = _ok()
    assert settings.strict is True
    assert settings.batch_size == 4


# -- an empty value means unset ------------------------------------------------------------------

FIELDS = list(TelemetrySettings.model_fields)
BLANKS = [pytest.param("", id="empty"), pytest.param("  \t", id="whitespace")]


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize("field", FIELDS)
def test_empty_env_value_means_unset(
    env: Callable[..., None], telemetry_logs: pytest.LogCaptureFixture, field: str, blank: str
) -> None:
    """CODEWEAVER__TELEMETRY__<SETTING>= (empty or blank) is as if it were not set, for every
    setting: the defaults, no config error, no warning."""
    defaults = _ok()
    env(**{field.upper(): blank})
    settings, error = load_settings()
    assert error is None, error
    assert settings == defaults
    assert _warnings(telemetry_logs) == []


@pytest.mark.parametrize("blank", BLANKS)
@pytest.mark.parametrize("var", [PREFIX + "POSTHOG_API_KEY", "CODEWEAVER_POSTHOG_API_KEY"])
def test_empty_api_key_variable_means_no_key(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    receiver: PostHogReceiver,
    var: str,
    blank: str,
) -> None:
    """An empty API key (either variable) is no key: events stay in the local log, and nothing
    is sent to the host."""
    monkeypatch.setenv(var, blank)
    env(ENABLED="1", POSTHOG_HOST=receiver.url)
    assert _ok().posthog_api_key is None
    client = build()
    assert client.enabled
    client.capture("hello")
    assert client.flush(2.0)
    assert receiver.requests() == []
    assert (client.settings.resolved_state_dir / LOG_FILE).exists()


@pytest.mark.parametrize("blank", BLANKS)
def test_empty_api_key_does_not_hide_the_other_name(
    monkeypatch: pytest.MonkeyPatch, blank: str
) -> None:
    """An empty CODEWEAVER__TELEMETRY__POSTHOG_API_KEY lets CODEWEAVER_POSTHOG_API_KEY be read."""
    monkeypatch.setenv(PREFIX + "POSTHOG_API_KEY", blank)
    monkeypatch.setenv("CODEWEAVER_POSTHOG_API_KEY", "phc_other_name")
    key = _ok().posthog_api_key
    assert key is not None
    assert key.get_secret_value() == "phc_other_name"


@pytest.mark.parametrize("blank", BLANKS)
def test_empty_env_value_falls_back_to_config_file(
    env: Callable[..., None], tmp_path: Path, blank: str
) -> None:
    """An empty variable does not hide the config file: the next source applies."""
    _write_toml(_user_config(tmp_path), "[telemetry]\nbatch_size = 5\nenabled = true\n")
    env(BATCH_SIZE=blank, ENABLED=blank)
    settings = _ok()
    assert settings.batch_size == 5
    assert settings.enabled is True


@pytest.mark.parametrize("blank", BLANKS)
def test_empty_unknown_env_variable_is_not_an_error(
    env: Callable[..., None], telemetry_logs: pytest.LogCaptureFixture, blank: str
) -> None:
    """An empty variable with a misspelt name is unset too: no config error, no warning."""
    env(DISABLE_TELEMTRY=blank)
    assert load_settings() == (_ok(), None)
    assert _warnings(telemetry_logs) == []


@pytest.mark.parametrize("where", ["user", "cwd"])
def test_empty_values_in_config_file_mean_unset(
    tmp_path: Path, telemetry_logs: pytest.LogCaptureFixture, where: str
) -> None:
    """`posthog_api_key = ""` (or any empty string) in [telemetry] is as if the key were absent,
    in the user's file and in ./codeweaver.toml alike (which then warns about nothing)."""
    defaults = _ok()
    body = "[telemetry]\n" + "".join(
        f'{name} = "{blank}"\n'
        for name, blank in [
            ("posthog_api_key", ""),
            ("posthog_personal_api_key", ""),
            ("posthog_host", ""),
            ("state_dir", ""),
            ("config_file", ""),
            ("consent_policy", "  "),
            ("enabled", ""),
            ("batch_size", ""),
            ("heartbeat_interval_seconds", " "),
            ("tools_above_privacy", ""),
        ]
    )
    _write_toml(_user_config(tmp_path) if where == "user" else Path.cwd() / "codeweaver.toml", body)
    settings, error = load_settings()
    assert error is None, error
    assert settings == defaults
    assert _warnings(telemetry_logs) == []


@pytest.mark.parametrize("blank", ["", "   ", SecretStr("")])
@pytest.mark.parametrize("field", FIELDS)
def test_empty_value_in_code_means_unset(field: str, blank: object) -> None:
    """`posthog_api_key=""` (any setting, empty or blank) in code is as if it were not passed,
    both for load_settings and for TelemetrySettings(...)."""
    defaults = _ok()
    assert load_settings(**{field: blank}) == (defaults, None)
    assert TelemetrySettings(**{field: blank}) == defaults


def test_empty_value_in_code_falls_back_to_env(env: Callable[..., None], clean_env: Path) -> None:
    """An empty value in code does not hide the environment: the next source applies."""
    env(POSTHOG_API_KEY="phc_from_env", BATCH_SIZE="7")
    settings = _ok(posthog_api_key="", batch_size=" ", state_dir="")
    assert settings.posthog_api_key is not None
    assert settings.posthog_api_key.get_secret_value() == "phc_from_env"
    assert settings.batch_size == 7
    assert settings.resolved_state_dir == clean_env / "telemetry"


# -- precedence ---------------------------------------------------------------------------------


def test_code_beats_env(env: Callable[..., None]) -> None:
    """A value passed in code beats the same setting in the environment."""
    env(BATCH_SIZE="7", POSTHOG_HOST="https://env.example.com")
    settings = _ok(batch_size=3, posthog_host="https://code.example.com")
    assert settings.batch_size == 3
    assert settings.posthog_host == "https://code.example.com"


def test_env_beats_config_file(env: Callable[..., None]) -> None:
    """The environment beats ./codeweaver.toml."""
    _write_toml(
        Path.cwd() / "codeweaver.toml", "[telemetry]\nbatch_size = 5\nexit_timeout_seconds = 2.0\n"
    )
    env(BATCH_SIZE="7", EXIT_TIMEOUT_SECONDS="3")
    settings = _ok()
    assert settings.batch_size == 7
    assert settings.exit_timeout_seconds == 3.0


def test_config_file_beats_default() -> None:
    """./codeweaver.toml beats the built-in defaults."""
    _write_toml(Path.cwd() / "codeweaver.toml", "[telemetry]\nbatch_size = 5\n")
    settings = _ok()
    assert settings.batch_size == 5
    assert settings.exit_timeout_seconds == 0.5


def test_code_beats_config_file() -> None:
    """A value passed in code beats the config file."""
    _write_toml(Path.cwd() / "codeweaver.toml", "[telemetry]\nbatch_size = 5\n")
    assert _ok(batch_size=2).batch_size == 2


def test_code_config_file_argument_beats_env_config_file(
    env: Callable[..., None], tmp_path: Path
) -> None:
    """config_file= in code is read instead of the one named by CONFIG_FILE."""
    from_env = _write_toml(tmp_path / "env.toml", "[telemetry]\nbatch_size = 5\n")
    from_code = _write_toml(tmp_path / "code.toml", "[telemetry]\nbatch_size = 6\n")
    env(CONFIG_FILE=str(from_env))
    assert _ok(config_file=from_code).batch_size == 6


# -- config file --------------------------------------------------------------------------------


def test_config_file_search_order_explicit_first(env: Callable[..., None], tmp_path: Path) -> None:
    """CONFIG_FILE is read instead of ./codeweaver.toml and the user config file."""
    explicit = _write_toml(tmp_path / "explicit.toml", "[telemetry]\nbatch_size = 1\n")
    _write_toml(Path.cwd() / "codeweaver.toml", "[telemetry]\nbatch_size = 2\n")
    _write_toml(
        tmp_path / "xdg_config" / "codeweaver" / "codeweaver.toml", "[telemetry]\nbatch_size = 3\n"
    )
    env(CONFIG_FILE=str(explicit))
    assert _ok().batch_size == 1


def test_config_file_search_order_cwd_before_user_dir(tmp_path: Path) -> None:
    """./codeweaver.toml is read in preference to $XDG_CONFIG_HOME/codeweaver/codeweaver.toml."""
    _write_toml(Path.cwd() / "codeweaver.toml", "[telemetry]\nbatch_size = 2\n")
    _write_toml(
        tmp_path / "xdg_config" / "codeweaver" / "codeweaver.toml", "[telemetry]\nbatch_size = 3\n"
    )
    assert _ok().batch_size == 2


def test_config_file_in_user_config_dir(tmp_path: Path) -> None:
    """$XDG_CONFIG_HOME/codeweaver/codeweaver.toml is read when there is no ./codeweaver.toml."""
    _write_toml(
        tmp_path / "xdg_config" / "codeweaver" / "codeweaver.toml", "[telemetry]\nbatch_size = 3\n"
    )
    assert _ok().batch_size == 3


def test_config_file_without_telemetry_table_is_ignored() -> None:
    """A codeweaver.toml with other tables but no [telemetry] leaves the defaults."""
    _write_toml(Path.cwd() / "codeweaver.toml", "[indexer]\nthreads = 4\n")
    assert _ok().batch_size == 10


def test_config_file_tools_above_privacy_alias(tmp_path: Path) -> None:
    """`tools_above_privacy` in the file is accepted as the old name of tools_over_privacy."""
    _write_toml(_user_config(tmp_path), "[telemetry]\ntools_above_privacy = true\n")
    assert _ok().tools_over_privacy is True


def test_config_file_full_table(tmp_path: Path, telemetry_logs: pytest.LogCaptureFixture) -> None:
    """Every kind of value (bool, str, int, float, path, secret) can come from the user's file."""
    _write_toml(
        _user_config(tmp_path),
        "[telemetry]\n"
        "enabled = true\n"
        'consent_policy = "opt-out"\n'
        f'posthog_api_key = "{SECRET}"\n'
        'posthog_host = "https://eu.i.posthog.com/"\n'
        "batch_interval_seconds = 5.5\n"
        'state_dir = "/tmp/cw-state"\n',
    )
    settings = _ok()
    assert settings.enabled is True
    assert settings.consent_policy == "opt-out"
    assert settings.posthog_api_key is not None
    assert settings.posthog_api_key.get_secret_value() == SECRET
    assert settings.posthog_host == "https://eu.i.posthog.com"
    assert settings.batch_interval_seconds == 5.5
    assert settings.state_dir == Path("/tmp/cw-state")
    assert _warnings(telemetry_logs) == []


# -- the config file is read safely --------------------------------------------------------------


def _config_path(where: str, tmp_path: Path, env: Callable[..., None]) -> Path:
    """Where to put the config file: ./codeweaver.toml, the user's, or one named by CONFIG_FILE."""
    path = {
        "cwd": Path.cwd() / "codeweaver.toml",
        "user": _user_config(tmp_path),
        "named": tmp_path / "named" / "tele.toml",
    }[where]
    path.parent.mkdir(parents=True, exist_ok=True)
    if where == "named":
        env(CONFIG_FILE=str(path))
    return path


def _load_with_timeout(path: Path, timeout: float = 10.0) -> tuple[TelemetrySettings, str | None]:
    """load_settings() in a thread: a hang fails the test instead of hanging the run."""
    result: list[tuple[TelemetrySettings, str | None]] = []
    thread = threading.Thread(target=lambda: result.append(load_settings()), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():  # stuck opening the FIFO: give it a writer so the thread can end
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"load_settings() hung on {path}")
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("where", ["cwd", "user", "named"])
def test_fifo_config_file_is_an_error_not_a_hang(
    where: str, tmp_path: Path, env: Callable[..., None], telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """A FIFO at codeweaver.toml (or CONFIG_FILE) never hangs: one warning naming the file and
    the fix, and telemetry off."""
    env(ENABLED="1")
    path = _config_path(where, tmp_path, env)
    os.mkfifo(path)
    settings, error = _load_with_timeout(path)
    assert settings.disable_telemetry is True
    assert error is not None
    assert "config_file" in error
    assert str(path) in error
    assert "not a regular file" in error
    warnings = _warnings(telemetry_logs)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert str(path) in warnings[0].getMessage()
    assert "remove" in warnings[0].getMessage() or "fix" in warnings[0].getMessage()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_device_config_file_is_an_error(
    tmp_path: Path, env: Callable[..., None], telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """./codeweaver.toml linking to a device (/dev/zero) is a config error, not an endless read."""
    (Path.cwd() / "codeweaver.toml").symlink_to("/dev/zero")
    settings, error = _load_with_timeout(Path.cwd() / "codeweaver.toml")
    assert settings.disable_telemetry is True
    assert error is not None
    assert "codeweaver.toml" in error
    assert "not a regular file" in error
    assert len(_warnings(telemetry_logs)) == 1


@pytest.mark.parametrize("where", ["cwd", "user", "named"])
def test_oversize_config_file_is_an_error(
    where: str, tmp_path: Path, env: Callable[..., None], telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """A config file of 2 MiB is not read: one warning naming the file and the limit, and
    telemetry off."""
    env(ENABLED="1")
    path = _config_path(where, tmp_path, env)
    padding = ("#" + "x" * 1022 + "\n") * 2048  # 2 MiB of comments
    path.write_text("[telemetry]\nbatch_size = 5\n" + padding, encoding="utf-8")
    assert path.stat().st_size > 2 * (1 << 20) - 1
    settings, error = _load_with_timeout(path)
    assert settings.disable_telemetry is True
    assert error is not None
    assert str(path) in error
    assert "1 MiB" in error
    warnings = _warnings(telemetry_logs)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert str(path) in warnings[0].getMessage()


def test_config_file_of_exactly_one_mib_is_read(tmp_path: Path) -> None:
    """The 1 MiB limit is inclusive: a file of exactly 1 MiB is still read."""
    head = "[telemetry]\nbatch_size = 5\n"
    path = _write_toml(_user_config(tmp_path), head + "#" * ((1 << 20) - len(head) - 1) + "\n")
    assert path.stat().st_size == 1 << 20
    assert _ok().batch_size == 5


# -- config file in the working directory (untrusted) -------------------------------------------


def _user_config(tmp_path: Path) -> Path:
    return tmp_path / "xdg_config" / "codeweaver" / "codeweaver.toml"


TRUSTED_ONLY_TABLE = (
    "[telemetry]\n"
    "enabled = true\n"
    'consent_policy = "opt-out"\n'
    'posthog_host = "https://collector.attacker.example"\n'
    f'posthog_api_key = "{SECRET}"\n'
    'posthog_personal_api_key = "phx_ATTACKER"\n'
    'state_dir = "/tmp/attacker-state"\n'
    "audit_log = false\n"
    "tools_over_privacy = true\n"
    "batch_size = 4\n"
)
ATTACKER_TABLE = TRUSTED_ONLY_TABLE + 'config_file = "/tmp/attacker.toml"\n'


def test_cwd_config_cannot_redirect_or_opt_in(telemetry_logs: pytest.LogCaptureFixture) -> None:
    """An attacker's ./codeweaver.toml is ignored except for timing, with ONE warning.

    The warning names every ignored key, the file and the fix, and never a value.
    """
    path = _write_toml(Path.cwd() / "codeweaver.toml", ATTACKER_TABLE)
    settings = _ok()
    assert settings.posthog_host == DEFAULT_HOST
    assert settings.posthog_api_key is None
    assert settings.posthog_personal_api_key is None
    assert settings.enabled is None
    assert settings.consent_policy == "opt-in"
    assert settings.state_dir is None
    assert settings.audit_log is True
    assert settings.tools_over_privacy is False
    assert settings.config_file is None
    assert settings.batch_size == 4, "timing and sizes are still honoured"
    warnings = _warnings(telemetry_logs)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    for key in (
        "enabled",
        "consent_policy",
        "posthog_host",
        "posthog_api_key",
        "posthog_personal_api_key",
        "state_dir",
        "audit_log",
        "tools_over_privacy",
        "config_file",
    ):
        assert key in message, key
    assert "batch_size" not in message
    assert str(path) in message
    assert "user config file" in message
    assert PREFIX + "CONFIG_FILE" in message
    assert SECRET not in telemetry_logs.text
    assert "collector.attacker.example" not in telemetry_logs.text


def test_cwd_config_enabled_true_is_ignored(
    build: Callable[..., TelemetryClient], telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """`enabled = true` in ./codeweaver.toml does not opt the user in."""
    _write_toml(Path.cwd() / "codeweaver.toml", "[telemetry]\nenabled = true\n")
    client = build()
    assert client.settings.enabled is None
    assert client.enabled is False
    assert client.decision.source == "policy"
    assert len(_warnings(telemetry_logs)) == 1


@pytest.mark.parametrize("value", ["false", '"no"', "0"])
def test_cwd_config_enabled_false_is_honoured(
    value: str, build: Callable[..., TelemetryClient], telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """`enabled = false` in ./codeweaver.toml turns telemetry off, even over a stored opt-in."""
    _write_toml(Path.cwd() / "codeweaver.toml", f"[telemetry]\nenabled = {value}\n")
    settings = _ok()
    assert settings.enabled is False
    StateStore(settings.resolved_state_dir).set_consent("enabled", by="cli")
    client = build()
    assert client.enabled is False
    assert client.decision.source == "enabled"
    assert _warnings(telemetry_logs) == []


def test_cwd_config_disable_telemetry_is_honoured(
    build: Callable[..., TelemetryClient], env: Callable[..., None]
) -> None:
    """`disable_telemetry = true` in ./codeweaver.toml turns telemetry off, even when enabled."""
    _write_toml(Path.cwd() / "codeweaver.toml", "[telemetry]\ndisable_telemetry = true\n")
    env(ENABLED="1")
    client = build()
    assert client.settings.disable_telemetry is True
    assert client.enabled is False
    assert client.decision.source == "disable_telemetry"


@pytest.mark.parametrize(("value", "expected"), [("true", False), ("false", False)])
def test_cwd_config_tools_over_privacy_only_false(
    value: str, expected: bool, telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """tools_over_privacy (or its alias) from ./codeweaver.toml is used only when false."""
    _write_toml(Path.cwd() / "codeweaver.toml", f"[telemetry]\ntools_above_privacy = {value}\n")
    assert _ok(tools_over_privacy=False).tools_over_privacy is expected
    assert len(_warnings(telemetry_logs)) == (1 if value == "true" else 0)


def test_cwd_config_timing_and_strict_are_honoured(
    telemetry_logs: pytest.LogCaptureFixture,
) -> None:
    """The numeric timing and size settings and strict may come from ./codeweaver.toml."""
    _write_toml(
        Path.cwd() / "codeweaver.toml",
        "[telemetry]\n"
        "batch_size = 3\n"
        "batch_interval_seconds = 2.5\n"
        "max_queue_size = 50\n"
        "exit_timeout_seconds = 0.5\n"
        "flag_timeout_seconds = 0.25\n"
        "flag_refresh_seconds = 30\n"
        "request_timeout_seconds = 1.5\n"
        "strict = true\n",
    )
    settings = _ok()
    assert (settings.batch_size, settings.max_queue_size) == (3, 50)
    assert settings.batch_interval_seconds == 2.5
    assert settings.exit_timeout_seconds == 0.5
    assert settings.flag_timeout_seconds == 0.25
    assert settings.flag_refresh_seconds == 30
    assert settings.request_timeout_seconds == 1.5
    assert settings.strict is True
    assert _warnings(telemetry_logs) == []


@pytest.mark.parametrize("how", ["env", "code"])
def test_explicit_config_file_is_trusted(
    how: str, env: Callable[..., None], tmp_path: Path, telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """A file named by CONFIG_FILE or config_file= may set anything, even in the working dir."""
    path = _write_toml(Path.cwd() / "codeweaver.toml", TRUSTED_ONLY_TABLE)
    if how == "env":
        env(CONFIG_FILE=str(path))
    settings = _ok(**({"config_file": path} if how == "code" else {}))
    assert settings.posthog_host == "https://collector.attacker.example"
    assert settings.enabled is True
    assert settings.consent_policy == "opt-out"
    assert settings.audit_log is False
    assert settings.state_dir == Path("/tmp/attacker-state")
    assert _warnings(telemetry_logs) == []


def test_user_config_dir_file_is_trusted(
    tmp_path: Path, telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """The codeweaver.toml in the user config directory may set anything."""
    _write_toml(_user_config(tmp_path), TRUSTED_ONLY_TABLE)
    settings = _ok()
    assert settings.posthog_host == "https://collector.attacker.example"
    assert settings.enabled is True
    assert settings.tools_over_privacy is True
    assert _warnings(telemetry_logs) == []


def test_user_config_dir_as_working_dir_is_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """Running from the user config directory reads the user's own file, trusted."""
    path = _write_toml(_user_config(tmp_path), "[telemetry]\nenabled = true\n")
    monkeypatch.chdir(path.parent)
    assert _ok().enabled is True
    assert _warnings(telemetry_logs) == []


# -- bad settings -------------------------------------------------------------------------------


def _bad_batch_size(env: Callable[..., None], tmp_path: Path) -> None:
    env(BATCH_SIZE="abc")


def _bad_host(env: Callable[..., None], tmp_path: Path) -> None:
    env(POSTHOG_HOST="http://example.com")


def _invalid_toml(env: Callable[..., None], tmp_path: Path) -> None:
    env(CONFIG_FILE=str(_write_toml(tmp_path / "bad.toml", "[telemetry\nbatch_size = = 3\n")))


def _not_utf8_toml(env: Callable[..., None], tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"[telemetry]\nbatch_size = 5 # \xff\xfe\n")
    env(CONFIG_FILE=str(path))


def _missing_config_file(env: Callable[..., None], tmp_path: Path) -> None:
    env(CONFIG_FILE=str(tmp_path / "nope.toml"))


def _config_file_is_dir(env: Callable[..., None], tmp_path: Path) -> None:
    (tmp_path / "a_dir.toml").mkdir()
    env(CONFIG_FILE=str(tmp_path / "a_dir.toml"))


def _unknown_file_key(env: Callable[..., None], tmp_path: Path) -> None:
    _write_toml(Path.cwd() / "codeweaver.toml", "[telemetry]\nbatch_sise = 3\n")


def _telemetry_not_table(env: Callable[..., None], tmp_path: Path) -> None:
    _write_toml(Path.cwd() / "codeweaver.toml", 'telemetry = "off"\n')


def _typo_env(env: Callable[..., None], tmp_path: Path) -> None:
    env(DISABLE_TELEMTRY="1")


def _out_of_range(env: Callable[..., None], tmp_path: Path) -> None:
    env(BATCH_SIZE="0")


def _bad_host_backslash(env: Callable[..., None], tmp_path: Path) -> None:
    env(POSTHOG_HOST="http://example.com\\@127.0.0.1")


def _oversize_config_file(env: Callable[..., None], tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_bytes(b"[telemetry]\n" + b"#" * (2 << 20) + b"\n")
    env(CONFIG_FILE=str(path))


def _bad_value_in_config_file(env: Callable[..., None], tmp_path: Path) -> None:
    _write_toml(_user_config(tmp_path), '[telemetry]\nbatch_size = "many"\n')


BAD_SETTINGS: dict[str, tuple[Callable[[Callable[..., None], Path], None], tuple[str, ...]]] = {
    # name: (how to break it, fragments the message must contain)
    "batch_size_abc": (_bad_batch_size, ("batch_size", PREFIX + "BATCH_SIZE", "set it to")),
    "batch_size_zero": (_out_of_range, ("batch_size", "1-1000")),
    "http_host": (_bad_host, ("posthog_host", PREFIX + "POSTHOG_HOST", "https://")),
    "invalid_toml": (_invalid_toml, ("config_file", "bad.toml", "fix")),
    "not_utf8_toml": (_not_utf8_toml, ("config_file", "binary.toml", "fix")),
    "missing_config_file": (_missing_config_file, ("config_file", "nope.toml", "fix")),
    "config_file_is_dir": (_config_file_is_dir, ("config_file", "a_dir.toml", "fix")),
    "unknown_file_key": (_unknown_file_key, ("batch_sise", "batch_size", "fix")),
    "telemetry_not_table": (_telemetry_not_table, ("[telemetry]", "codeweaver.toml", "fix")),
    "typo_env": (_typo_env, (PREFIX + "DISABLE_TELEMTRY", "disable_telemetry", "fix")),
    "host_backslash": (_bad_host_backslash, ("posthog_host", PREFIX + "POSTHOG_HOST", "backslash")),
    "oversize_config_file": (_oversize_config_file, ("config_file", "big.toml", "1 MiB")),
    "bad_value_in_config_file": (
        _bad_value_in_config_file,
        ("batch_size", "in [telemetry] of", "codeweaver.toml", "remove it"),
    ),
}


@pytest.fixture(params=list(BAD_SETTINGS))
def bad_setting(
    request: pytest.FixtureRequest, env: Callable[..., None], tmp_path: Path
) -> tuple[str, ...]:
    """Break the configuration in one way; return what the message must mention."""
    breaker, fragments = BAD_SETTINGS[request.param]
    env(ENABLED="1")
    breaker(env, tmp_path)
    return fragments


def test_bad_setting_turns_telemetry_off_with_message(bad_setting: tuple[str, ...]) -> None:
    """A bad setting never raises: settings come back disabled with a message naming the fix."""
    settings, message = load_settings()
    assert settings.disable_telemetry is True
    assert message is not None
    for fragment in bad_setting:
        assert fragment in message, (fragment, message)


def test_bad_setting_logs_exactly_one_warning(
    bad_setting: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """A bad setting logs one warning on the package logger, naming the setting and the fix."""
    caplog.set_level(logging.DEBUG, logger="codeweaver_telemetry")
    _, message = load_settings()
    warnings = _warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].name == "codeweaver_telemetry"
    assert message is not None
    assert message in warnings[0].getMessage()
    assert bad_setting[0] in warnings[0].getMessage()


def test_bad_setting_client_is_off_and_quiet(
    bad_setting: tuple[str, ...],
    build: Callable[..., TelemetryClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client built from bad settings is off (source config_error), never raises, warns once."""
    caplog.set_level(logging.DEBUG, logger="codeweaver_telemetry")
    client = build()
    client.start_session()
    client.capture("ping")
    assert client.get_feature_flag("f", default="d") == "d"
    client.end_session()
    assert client.enabled is False
    assert client.decision.source == "config_error"
    assert bad_setting[0] in client.decision.reason
    warnings = _warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_bad_setting_strict_in_code_raises(bad_setting: tuple[str, ...]) -> None:
    """strict=True in code turns any bad setting into TelemetryConfigError."""
    with pytest.raises(TelemetryConfigError) as info:
        load_settings(strict=True)
    assert bad_setting[0] in str(info.value)


def test_bad_setting_strict_in_env_raises(
    bad_setting: tuple[str, ...], env: Callable[..., None]
) -> None:
    """CODEWEAVER__TELEMETRY__STRICT=1 turns any bad setting into TelemetryConfigError."""
    env(STRICT="1")
    with pytest.raises(TelemetryConfigError) as info:
        load_settings()
    assert bad_setting[0] in str(info.value)


# -- TelemetrySettings(...) built directly -------------------------------------------------------


@pytest.mark.parametrize("strict", [True, False])
def test_direct_construction_raises_config_error(strict: bool) -> None:
    """TelemetrySettings(...) with a bad value raises TelemetryConfigError (a ValueError), strict
    or not, chaining pydantic's ValidationError, with the message load_settings gives."""
    with pytest.raises(TelemetryConfigError) as info:
        TelemetrySettings(strict=strict, batch_size="lots")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, ValidationError)
    message = str(info.value)
    assert "batch_size (given in code)" in message
    assert "a whole number 1-1000" in message
    assert load_settings(batch_size="lots")[1] == message


def _given_in_code(env: Callable[..., None], tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    return {"batch_size": "lots"}, ["batch_size (given in code)", "pass a whole number 1-1000"]


def _given_in_env(env: Callable[..., None], tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    env(BATCH_SIZE="lots")
    return {}, [f"batch_size ({PREFIX}BATCH_SIZE)", "set it to a whole number 1-1000"]


def _given_in_file(env: Callable[..., None], tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    path = _write_toml(_user_config(tmp_path), '[telemetry]\nbatch_size = "lots"\n')
    return {}, [f"batch_size (in [telemetry] of {path})", "set it to a whole number 1-1000"]


def _given_in_named_file(
    env: Callable[..., None], tmp_path: Path
) -> tuple[dict[str, Any], list[str]]:
    path = _write_toml(tmp_path / "named.toml", "[telemetry]\nbatch_size = 0\n")
    return {"config_file": path}, [f"batch_size (in [telemetry] of {path})", "1-1000"]


@pytest.mark.parametrize(
    "where", [_given_in_code, _given_in_env, _given_in_file, _given_in_named_file]
)
def test_direct_construction_names_where_the_value_was_given(
    env: Callable[..., None],
    tmp_path: Path,
    where: Callable[[Callable[..., None], Path], tuple[dict[str, Any], list[str]]],
) -> None:
    """The error names where the bad value came from (code, the variable, or the config file)
    and the fix; TelemetrySettings(...) and load_settings(...) say the same."""
    kwargs, fragments = where(env, tmp_path)
    with pytest.raises(TelemetryConfigError) as info:
        TelemetrySettings(**kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert load_settings(**kwargs)[1] == message


def test_direct_construction_unknown_setting_in_code() -> None:
    """An unknown keyword in code is named, with a suggestion, as a TelemetryConfigError."""
    with pytest.raises(TelemetryConfigError, match=r"batch_sise \(given in code\).*batch_size"):
        TelemetrySettings(batch_sise=3)


def test_direct_construction_error_never_shows_values() -> None:
    """Neither the error nor its chained ValidationError (nor the traceback) echoes a value: a
    URL may carry a password."""
    with pytest.raises(TelemetryConfigError) as info:
        TelemetrySettings(posthog_host=f"http://user:{SECRET}@127.0.0.1")
    assert "posthog_host (given in code)" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in str(info.value.__cause__)
    assert SECRET not in "".join(traceback.format_exception(info.value))


# -- state_dir survives a bad setting -----------------------------------------------------------


def _state_dir_in_code(env: Callable[..., None], target: Path) -> dict[str, Any]:
    return {"state_dir": target}


def _state_dir_in_env(env: Callable[..., None], target: Path) -> dict[str, Any]:
    env(STATE_DIR=str(target))
    return {}


def _state_dir_in_config_file(env: Callable[..., None], target: Path) -> dict[str, Any]:
    path = _write_toml(target.parent / "explicit.toml", f"[telemetry]\nstate_dir = '{target}'\n")
    env(CONFIG_FILE=str(path))
    return {}


def _state_dir_in_user_config(env: Callable[..., None], target: Path) -> dict[str, Any]:
    user = target.parent / "xdg_config" / "codeweaver" / "codeweaver.toml"
    _write_toml(user, f"[telemetry]\nstate_dir = '{target}'\n")
    return {}


@pytest.mark.parametrize(
    "where",
    [_state_dir_in_code, _state_dir_in_env, _state_dir_in_config_file, _state_dir_in_user_config],
)
def test_bad_setting_keeps_state_dir(
    where: Callable[[Callable[..., None], Path], dict[str, Any]],
    env: Callable[..., None],
    tmp_path: Path,
) -> None:
    """With another setting invalid, the fallback settings keep the configured state_dir."""
    target = tmp_path / "my-state"
    overrides = where(env, target)
    env(BATCH_SIZE="abc")
    settings, message = load_settings(**overrides)
    assert message is not None
    assert "batch_size" in message
    assert settings.disable_telemetry is True
    assert settings.resolved_state_dir == target


def test_bad_setting_ignores_cwd_state_dir(env: Callable[..., None], clean_env: Path) -> None:
    """The fallback does not take state_dir from ./codeweaver.toml (it is untrusted there)."""
    _write_toml(Path.cwd() / "codeweaver.toml", "[telemetry]\nstate_dir = '/tmp/attacker'\n")
    env(BATCH_SIZE="abc")
    settings, message = load_settings()
    assert message is not None
    assert settings.resolved_state_dir == clean_env / "telemetry"


@pytest.mark.parametrize("bad", [{"state_dir": 123}, {"config_file": 123}])
def test_bad_setting_fallback_never_raises(bad: dict[str, Any], clean_env: Path) -> None:
    """An unusable state_dir or config_file gives the default directory, not an exception."""
    settings, message = load_settings(**bad)
    assert message is not None
    assert settings.resolved_state_dir == clean_env / "telemetry"


# -- hosts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:8000",
        "http://127.0.0.1",
        "http://[::1]:8000",
        "http://localhost:8000",
        "http://LOCALHOST",
        "https://us.i.posthog.com",
        "https://eu.i.posthog.com",
        "https://posthog.example.org:8443/ingest",
        "https://10.0.0.5",
    ],
)
def test_allowed_hosts(env: Callable[..., None], host: str) -> None:
    """http:// is accepted for loopback (127.0.0.1, ::1, localhost); https:// for any host."""
    env(POSTHOG_HOST=host)
    assert _ok().posthog_host == host.rstrip("/")


@pytest.mark.parametrize(
    "host",
    [
        "http://example.com",
        "http://10.0.0.5",
        "http://192.168.1.10:8000",
        "http://localhost.example.com",
        "http://[::2]",
        "ftp://127.0.0.1",
        "us.i.posthog.com",
        "https://",
    ],
)
def test_rejected_hosts(env: Callable[..., None], host: str) -> None:
    """Plain http:// to a non-loopback host (or no scheme/host) is rejected: events stay private."""
    env(POSTHOG_HOST=host)
    settings, error = load_settings()
    assert settings.disable_telemetry is True
    assert error is not None
    assert "posthog_host" in error


# The "http only for loopback" rule, as the HTTP stack (urllib3, under requests) reads the URL.
HOST_TABLE = [
    # accepted
    ("http://127.0.0.1:8000/", True),
    ("http://[::1]:9/", True),
    ("https://eu.i.posthog.com", True),
    ("https://us.i.posthog.com/", True),
    ("http://localhost:8010/ingest", True),
    ("http://127.8.9.10:1", True),
    ("http://127.0.0.1:65535", True),
    ("https://posthog.example.org:8443/ingest/", True),
    ("https://10.0.0.5", True),
    ("https://xn--exmple-cua.com", True),
    ("  https://eu.i.posthog.com  ", True),
    # refused: another host hides behind a loopback-looking URL
    ("http://example.com\\@127.0.0.1", False),
    ("http:\\\\127.0.0.1", False),
    ("http://127.0.0.1@example.com", False),
    ("http://user:pw@127.0.0.1", False),
    ("https://user:pw@eu.i.posthog.com", False),
    ("http://127.0.0.1#@example.com", False),
    ("http://127.0.0.1?x@example.com", False),
    ("https://eu.i.posthog.com/?x=1", False),
    ("https://eu.i.posthog.com#frag", False),
    # refused: not plain, or read differently by different parsers
    ("https://exa mple.com", False),
    ("https://example.com/\tx", False),
    ("http://127.0.0.1\x7f", False),
    ("https://ho%73t.example.com", False),
    ("https://exämple.com", False),
    ("http://[::1%25lo]:8000", False),
    ("http://[::1", False),
    # refused: not loopback (or not plainly so) over http
    ("http://localhost.example.com", False),
    ("http://0x7f.1", False),
    ("http://2130706433", False),
    ("http://127.1", False),
    ("http://[::ffff:127.0.0.1]", False),
    ("http://localhost.", False),
    # refused: wrong scheme, no host, bad port
    ("ftp://127.0.0.1", False),
    ("file:///etc/passwd", False),
    ("//127.0.0.1", False),
    ("https:///eu.i.posthog.com", False),
    ("http://127.0.0.1:0", False),
    ("http://127.0.0.1:65536", False),
    ("https://eu.i.posthog.com:-1", False),
]


@pytest.mark.parametrize("how", ["code", "env"])
@pytest.mark.parametrize(("host", "accepted"), HOST_TABLE)
def test_host_table(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    telemetry_logs: pytest.LogCaptureFixture,
    host: str,
    accepted: bool,
    how: str,
) -> None:
    """Accepted: https:// to any host, http:// to localhost, 127.0.0.0/8 and [::1] only, in a
    plain form every parser reads the same. Anything else: one warning naming posthog_host, and
    telemetry off."""
    kwargs: dict[str, Any] = {"enabled": True}
    if how == "code":
        kwargs["posthog_host"] = host
    else:
        env(POSTHOG_HOST=host)
    settings, error = load_settings(**kwargs)
    if accepted:
        assert error is None, error
        assert settings.posthog_host == host.strip().rstrip("/")
        assert _warnings(telemetry_logs) == []
        return
    assert error is not None
    assert "posthog_host" in error
    assert settings.disable_telemetry is True
    assert settings.posthog_host == DEFAULT_HOST
    warnings = _warnings(telemetry_logs)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "posthog_host" in warnings[0].getMessage()
    client = build(settings, config_error=error, sink=InMemorySink())
    assert client.enabled is False
    assert client.decision.source == "config_error"


def test_host_check_does_not_load_urllib3_on_import() -> None:
    """The host check imports urllib3 only when it runs: importing the settings stays cheap."""
    code = "import sys, codeweaver_telemetry.settings; print('urllib3' in sys.modules)"
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"


def test_rejected_host_in_code() -> None:
    """A non-loopback http:// host passed in code is rejected just the same."""
    settings, error = load_settings(posthog_host="http://example.com", enabled=True)
    assert settings.disable_telemetry is True
    assert error is not None
    assert "posthog_host" in error


# -- the API key is a secret ---------------------------------------------------------------------


def test_api_key_is_secret_in_repr_and_str(env: Callable[..., None]) -> None:
    """The API key never shows in repr(settings) or str(settings)."""
    env(POSTHOG_API_KEY=SECRET, POSTHOG_PERSONAL_API_KEY="phs_PERSONALSECRET")
    settings = _ok()
    assert isinstance(settings.posthog_api_key, SecretStr)
    assert settings.posthog_api_key.get_secret_value() == SECRET
    for text in (repr(settings), str(settings), repr(settings.model_dump())):
        assert SECRET not in text
        assert "phs_PERSONALSECRET" not in text


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param({"BATCH_SIZE": "abc"}, id="env-error"),
        pytest.param({"POSTHOG_HOST": "http://example.com"}, id="host-error"),
        pytest.param({"POSTHOG_API_KEYS": SECRET}, id="typo-var-holding-key"),
    ],
)
def test_api_key_not_in_config_error_or_logs(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
    break_it: dict[str, str],
) -> None:
    """Neither the config-error message nor any log record contains the API key."""
    caplog.set_level(logging.DEBUG, logger="codeweaver_telemetry")
    env(POSTHOG_API_KEY=SECRET, ENABLED="1", **break_it)
    _, message = load_settings()
    assert message is not None
    assert SECRET not in message
    client = build()
    assert client.decision.source == "config_error"
    assert SECRET not in client.decision.reason
    assert SECRET not in repr(client)
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in (record.exc_text or "")
    assert SECRET not in caplog.text


def test_api_key_not_in_config_file_error(caplog: pytest.LogCaptureFixture) -> None:
    """A broken config file that holds the key does not echo it in the message."""
    _write_toml(
        Path.cwd() / "codeweaver.toml",
        f'[telemetry]\nposthog_api_key = "{SECRET}"\nbatch_size = "many"\n',
    )
    _, message = load_settings()
    assert message is not None
    assert "batch_size" in message
    assert SECRET not in message
    assert SECRET not in caplog.text


def test_api_key_not_logged_by_enabled_client(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    receiver: PostHogReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A working client sending to PostHog logs nothing that contains the key."""
    caplog.set_level(logging.DEBUG, logger="codeweaver_telemetry")
    env(POSTHOG_API_KEY=SECRET, ENABLED="1", POSTHOG_HOST=receiver.url)
    client = build()
    client.start_session()
    client.capture("hello")
    client.end_session()
    receiver.wait_for_events(2, timeout=5.0)
    assert SECRET not in repr(client)
    assert SECRET not in repr(client.settings)
    assert SECRET not in caplog.text


# -- timing variables change behaviour, on the wire ------------------------------------------
def _wire_env(env: Callable[..., None], receiver: PostHogReceiver, **extra: str) -> None:
    env(
        ENABLED="1",
        POSTHOG_API_KEY="phc_timing",
        POSTHOG_HOST=receiver.url,
        **extra,
    )


@pytest.mark.parametrize(("budget", "expected"), [("0.05", "control"), ("3", "variant_b")])
def test_env_flag_timeout_bounds_the_first_lookup(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    receiver: PostHogReceiver,
    budget: str,
    expected: str,
) -> None:
    """FLAG_TIMEOUT_SECONDS decides whether a slow /flags/ answer is waited for."""
    receiver.set_flags({"exp": "variant_b"})
    receiver.slow(0.6, route=FLAGS)
    _wire_env(env, receiver, FLAG_TIMEOUT_SECONDS=budget)
    client = build()
    assert client.get_feature_flag("exp", default="control") == expected


def test_env_flag_refresh_refetches_stale_flags(
    build: Callable[..., TelemetryClient], env: Callable[..., None], receiver: PostHogReceiver
) -> None:
    """FLAG_REFRESH_SECONDS: once the cache is older, a lookup refetches in the background."""
    receiver.set_flags({"exp": "a"})
    _wire_env(env, receiver, FLAG_REFRESH_SECONDS="1")
    client = build()
    assert client.get_feature_flag("exp") == "a"
    receiver.set_flags({"exp": "b"})
    time.sleep(1.1)
    client.get_feature_flag("exp")  # stale: starts the refetch, answers from the cache
    receiver.wait_for_requests(2, route=FLAGS)
    assert wait_until(lambda: client.get_feature_flag("exp") == "b"), "the refresh never arrived"


@pytest.mark.parametrize(("timeout", "fails"), [("0.2", True), ("5", False)])
def test_env_request_timeout_bounds_each_request(
    build: Callable[..., TelemetryClient],
    env: Callable[..., None],
    receiver: PostHogReceiver,
    timeout: str,
    fails: bool,
) -> None:
    """REQUEST_TIMEOUT_SECONDS: a slower answer than the timeout counts as a failure."""
    receiver.slow(0.8, route=CAPTURE)
    _wire_env(env, receiver, REQUEST_TIMEOUT_SECONDS=timeout)
    client = build()
    client.capture("timed", {})
    assert client.flush(3) is (not fails)


# -- the quick resolver (settings read without pydantic at client start) -----------------------

_ENV_WORDS = [
    "",
    " ",
    "1",
    "0",
    "true",
    "FALSE",
    "Yes",
    "t",
    "n",
    "maybe",
    "2",
    "10",
    "0.5",
    "60",
    "600",
    "3.0",
    "-1",
    "+5",
    "010",
    "1e3",
    "1_000",
    " 5",
    "5 ",
    "100000",
    "100001",
    "3600.5",
    "86400",
    "opt-in",
    "opt-out",
    "Opt-In",
    "https://eu.i.posthog.com",
    "https://EU.i.posthog.com/",
    "http://127.0.0.1:9",
    "http://localhost:8000/",
    "http://[::1]:80",
    "http://example.com",
    "https://h.example.com:8443/x/",
    " https://a.example.com ",
    "https://a.example.com:0",
    "https://a.example.com:70000",
    "https://1.2.3.4",
    "http://127.1",
    "https://a_b.example.com",
    "ftp://x.example.com",
    "phc_x",
    "/tmp/cw-state",
    "~/state",
    "inf",
    "nan",
    "65",
    "0.0",
    "17179869184",
]
_ENV_NAMES = [*(PREFIX + name.upper() for name in _config.FIELDS), "CODEWEAVER_POSTHOG_API_KEY"]
_ENV_NAMES += [PREFIX + "BOGUS", PREFIX + "ENABLE", PREFIX.lower() + "batch_size"]
_KIND_WORDS = {
    "bool": ["1", "0", "true", "FALSE", "Yes", "t", "n", "on", "OFF", "maybe", " 1"],
    "int": ["1", "10", "0", "1000", "100000", "3", "010", "+5", "-1", "1_000", "17179869184"],
    "float": ["0", "0.5", "60", "600", "3.0", "3600", "3600.5", "86400", "1e3", "inf", "30"],
    "policy": ["opt-in", "opt-out", "Opt-In", "opt_in"],
}
_env_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
)


def _env_value_for(name: str) -> st.SearchStrategy[str]:
    field = _config.FIELDS.get(name.upper().removeprefix(PREFIX).lower())
    kind = field.kind.removeprefix("opt_") if field is not None else ""
    typed = st.sampled_from(_KIND_WORDS.get(kind, _ENV_WORDS))
    return st.one_of(typed, typed, typed, typed, st.sampled_from(_ENV_WORDS), _env_text)


_environments = st.lists(st.sampled_from(_ENV_NAMES), unique=True, max_size=5).flatmap(
    lambda names: st.fixed_dictionaries({name: _env_value_for(name) for name in names})
)
_FILE_KEYS = [*_config.FIELDS, "tools_above_privacy", "bogus"]


def _file_value_for(key: str) -> st.SearchStrategy[object]:
    field = _config.FIELDS.get(key)
    kind = field.kind.removeprefix("opt_") if field is not None else ""
    typed: st.SearchStrategy[object] = {
        "bool": st.booleans(),
        "int": st.integers(min_value=-3, max_value=200_000),
        "float": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1, 100_000),
    }.get(kind, st.sampled_from(_ENV_WORDS))
    return st.one_of(typed, typed, typed, typed, st.sampled_from(_ENV_WORDS), st.text(max_size=6))


_tables = st.lists(st.sampled_from(_FILE_KEYS), unique=True, max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({key: _file_value_for(key) for key in keys})
)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if abs(value) == float("inf"):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


_plain_environments = st.lists(st.sampled_from(_ENV_NAMES[:-3]), unique=True, max_size=5).flatmap(
    lambda names: st.fixed_dictionaries(
        {name: st.sampled_from(_plain_words(name)) for name in names}
    )
)


def _plain_words(name: str) -> list[str]:
    field = _config.FIELDS.get(name.upper().removeprefix(PREFIX).lower())
    kind = field.kind.removeprefix("opt_") if field is not None else ""
    return _KIND_WORDS.get(kind, _ENV_WORDS)


@given(
    environment=_environments,
    table=st.none() | _tables,
    trusted=st.booleans(),
)
@hypothesis_settings(max_examples=400, deadline=None)
def test_quick_resolver_agrees_with_the_model(
    environment: dict[str, str], table: dict[str, object] | None, trusted: bool
) -> None:
    """On any environment and config file, the quick resolver either gives exactly the
    settings load_settings() gives (values, their types, which were set), or steps aside
    (None) so that the model reads them; it never accepts what the model refuses."""
    _check_agreement(environment, table, trusted)


@given(environment=_plain_environments, table=st.none() | _tables, trusted=st.booleans())
@hypothesis_settings(max_examples=300, deadline=None)
def test_quick_resolver_agrees_on_mostly_valid_settings(
    environment: dict[str, str], table: dict[str, object] | None, trusted: bool
) -> None:
    """The same agreement, on environments of mostly valid words for each setting."""
    _check_agreement(environment, table, trusted)


_deny_lists = st.lists(st.sampled_from(["a", "b*", "q.?", " ", "x,y", ""]), max_size=3)


@given(
    environment=_plain_environments,
    table=st.none() | _tables,
    trusted=st.booleans(),
    deny=st.none() | st.fixed_dictionaries({"deny_events": _deny_lists}),
)
@hypothesis_settings(max_examples=150, deadline=None)
def test_quick_resolver_agrees_with_deny_lists_anywhere(
    environment: dict[str, str],
    table: dict[str, object] | None,
    trusted: bool,
    deny: dict[str, list[str]] | None,
) -> None:
    """The same agreement with a deny file (``telemetry-deny.toml``) present or not: the
    resolver steps aside whenever a deny list may be set, so the model joins them."""
    _check_agreement(environment, table, trusted, deny)


def _check_agreement(
    environment: dict[str, str],
    table: dict[str, object] | None,
    trusted: bool,
    deny: dict[str, list[str]] | None = None,
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("CODEWEAVER__")}
    with tempfile.TemporaryDirectory() as folder:
        base["XDG_CONFIG_HOME"] = str(Path(folder) / "xdg")
        if deny is not None:
            deny_path = Path(folder) / "xdg" / "codeweaver" / _config.DENY_FILE_NAME
            deny_path.parent.mkdir(parents=True)
            deny_path.write_text(
                "[telemetry]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in deny.items()),
                encoding="utf-8",
            )
        if table is not None:
            text = "[telemetry]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items())
            if trusted:
                path = Path(folder) / "named.toml"
                environment = {**environment, PREFIX + "CONFIG_FILE": str(path)}
            else:
                path = Path(folder) / "codeweaver.toml"  # in the working directory
            path.write_text(text, encoding="utf-8")
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            with mock.patch.dict(os.environ, {**base, **environment}, clear=True):
                quick = _config.resolve()
                try:
                    model, error = load_settings()
                except TelemetryConfigError:  # strict mode asked for, and a bad value
                    model, error = None, "strict"
        finally:
            os.chdir(cwd)
    event("quick path" if quick is not None else "the model decides")
    if quick is None:
        return
    assert error is None
    assert model is not None
    built = quick.to_settings()
    assert built == model
    assert quick.model_fields_set == model.model_fields_set == built.model_fields_set
    for name in _config.FIELDS:
        ours, theirs = getattr(quick, name), getattr(model, name)
        if isinstance(theirs, SecretStr):
            assert ours is not None
            assert ours.get_secret_value() == theirs.get_secret_value()
        else:
            assert ours == theirs, name
            assert type(ours) is type(theirs), name
    assert quick.resolved_state_dir == model.resolved_state_dir
    assert deny is None, "a deny file makes the resolver step aside"


def test_quick_resolver_reads_plain_settings() -> None:
    """Plain values, from the environment and a trusted config file, take the quick path."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.toml"
        path.write_text(
            "[telemetry]\nbatch_size = 20\nexit_timeout_seconds = 1\ntools_above_privacy = true\n",
            encoding="utf-8",
        )
        values = {
            PREFIX + "ENABLED": "1",
            PREFIX + "POSTHOG_API_KEY": SECRET,
            PREFIX + "POSTHOG_HOST": "http://127.0.0.1:9",
            PREFIX + "CONFIG_FILE": str(path),
            PREFIX + "FLAG_TIMEOUT_SECONDS": "0.25",
        }
        with mock.patch.dict(os.environ, values):
            quick = _config.resolve()
            model = TelemetrySettings()
    assert quick is not None
    assert quick.to_settings() == model
    assert (quick.enabled, quick.batch_size, quick.tools_over_privacy) == (True, 20, True)
    assert (quick.exit_timeout_seconds, quick.flag_timeout_seconds) == (1.0, 0.25)
    assert SECRET not in repr(quick)


def test_quick_resolver_fields_match_the_model() -> None:
    """The resolver's table of fields has the model's fields, defaults and bounds."""
    import annotated_types

    assert list(_config.FIELDS) == list(TelemetrySettings.model_fields)
    for name, field in _config.FIELDS.items():
        info = TelemetrySettings.model_fields[name]
        assert field.default == info.default, name
        bounds = {"ge": None, "gt": None, "le": None}
        for meta in info.metadata:
            for kind, cls in (("ge", annotated_types.Ge), ("gt", annotated_types.Gt)):
                if isinstance(meta, cls):
                    bounds[kind] = getattr(meta, kind)
            if isinstance(meta, annotated_types.Le):
                bounds["le"] = meta.le
        assert (field.ge, field.gt, field.le) == (bounds["ge"], bounds["gt"], bounds["le"]), name


_hosts = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https", "HTTPS", "ftp", "http:"]),
    st.one_of(
        st.sampled_from(
            [
                "localhost",
                "127.0.0.1",
                "127.1",
                "[::1]",
                "::1",
                "0x7f.0.0.1",
                "2130706433",
                "a.example.com",
                "EU.I.POSTHOG.COM",
                "1.2.3.4",
                "256.1.1.1",
                "01.2.3.4",
                "a..b",
                "-a.com",
                "a-.com",
                "xn--bcher-kva.example",
                "bücher.example",
                "a.b.c.d.e",
                "1a.b2",
            ]
        ),
        st.from_regex(r"[a-zA-Z0-9.\-\[\]:_%]{0,20}", fullmatch=True),
    ),
    st.one_of(st.just(""), st.from_regex(r":[0-9]{0,6}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"/[a-zA-Z0-9._~/\-%]{0,10}", fullmatch=True)),
)


@given(url=_hosts)
@hypothesis_settings(max_examples=500, deadline=None)
def test_plain_host_check_agrees_with_the_full_check(url: str) -> None:
    """The host check without urllib3 accepts only hosts the full check accepts."""
    if _config.plain_host_ok(url):
        assert _config.checked_host_problem(url) is None, url


def test_enabled_client_starts_without_pydantic(tmp_path: Path) -> None:
    """A client started from plain settings (on, with a key and a loopback host) loads
    neither pydantic, pydantic-settings nor urllib3 (so not posthog's transport either);
    `client.settings` then builds the model, with the values the client runs with."""
    code = (
        "import sys, codeweaver_telemetry as t; c = t.get_telemetry_client(); "
        "assert c.enabled, c.decision; "
        "print(sorted(m for m in ('pydantic', 'pydantic_settings', 'urllib3', 'posthog') "
        "if m in sys.modules)); "
        "s = c.settings; print(type(s).__name__, s.posthog_host, s.batch_size); c.shutdown(0)"
    )
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("CODEWEAVER__")}
    environ.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "CODEWEAVER_HOME": str(tmp_path / "home"),
            PREFIX + "ENABLED": "1",
            PREFIX + "POSTHOG_API_KEY": "phc_x",
            PREFIX + "POSTHOG_HOST": "http://127.0.0.1:9/",
            PREFIX + "BATCH_SIZE": "7",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "TelemetrySettings http://127.0.0.1:9 7"]
