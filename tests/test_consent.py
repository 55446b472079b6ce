"""Consent: which source decides whether telemetry is on, one test per precedence pair.

Off always wins: config error > DO_NOT_TRACK > DISABLE_TELEMETRY > CI > unusable state file >
stored disable > ENABLED=false > ENABLED=true > stored enable > policy.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import codeweaver_telemetry
from codeweaver_telemetry import InMemorySink, TelemetryClient
from codeweaver_telemetry._internal import env_flag
from codeweaver_telemetry._types import ConsentVote
from codeweaver_telemetry.consent import (
    ENVIRONMENT_SOURCES,
    NOTICE,
    NOTICE_UPDATED,
    SOURCES,
    AppNotice,
    ConsentDecision,
    ConsentInputs,
    NoticeNotShown,
    ShowNotice,
    ci_vote,
    config_error_vote,
    consent_sources,
    decide,
    disable_telemetry_vote,
    do_not_track_vote,
    enabled_false_vote,
    enabled_true_vote,
    environment_decision,
    in_ci,
    notice_text,
    policy_verdict,
    policy_vote,
    state_error_vote,
    stored_disabled_vote,
    stored_enabled_vote,
)
from codeweaver_telemetry.settings import TelemetrySettings, load_settings
from codeweaver_telemetry.state import STATE_FILE, StateStore

PREFIX = "CODEWEAVER__TELEMETRY__"
REPO_ROOT = Path(codeweaver_telemetry.__file__).resolve().parent.parent


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> StateStore:
    return StateStore(state_dir)


def _settings(**overrides: Any) -> TelemetrySettings:
    settings, error = load_settings(**overrides)
    assert error is None, error
    return settings


def _decide(store: StateStore, **kwargs: Any) -> ConsentDecision:
    settings, error = load_settings()
    return decide(consent_sources(settings, store, config_error=error, **kwargs))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("codeweaver_telemetry") and r.levelno >= logging.WARNING
    ]


# -- DO_NOT_TRACK -------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["2", "y", "please", "TRUE "])
def test_do_not_track_fails_closed(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Any DO_NOT_TRACK value but an explicit false/0/no/off means off, even with ENABLED=1."""
    monkeypatch.setenv("DO_NOT_TRACK", value)
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    decision = _decide(store)
    assert not decision.allowed
    assert decision.source == "DO_NOT_TRACK"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "Yes", "on", "ON", " 1 "])
def test_do_not_track_beats_stored_opt_in(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """DO_NOT_TRACK (1/true/yes/on, any case) beats a stored opt-in."""
    store.set_consent("enabled", by="cli")
    monkeypatch.setenv("DO_NOT_TRACK", value)
    decision = _decide(store)
    assert not decision.allowed
    assert decision.source == "DO_NOT_TRACK"


def test_do_not_track_beats_enabled_env(
    build: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DO_NOT_TRACK=1 beats CODEWEAVER__TELEMETRY__ENABLED=1: a real client stays off."""
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    sink = InMemorySink()
    client = build(_settings(), sink=sink)
    client.capture("ping")
    client.flush(0.2)
    assert not client.enabled
    assert client.decision.source == "DO_NOT_TRACK"
    assert sink.events() == []


@pytest.mark.parametrize("value", ["0", "false", "FALSE", "no", "off", ""])
def test_do_not_track_false_does_not_disable(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """DO_NOT_TRACK=0/false leaves a user's opt-in in force."""
    monkeypatch.setenv("DO_NOT_TRACK", value)
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    decision = _decide(store)
    assert decision.allowed
    assert decision.source == "enabled"


def test_do_not_track_beats_disable_telemetry_in_reporting(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With both DO_NOT_TRACK and DISABLE_TELEMETRY set, DO_NOT_TRACK is named as the source."""
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv(PREFIX + "DISABLE_TELEMETRY", "1")
    decision = _decide(store)
    assert (decision.allowed, decision.source) == (False, "DO_NOT_TRACK")


# -- DISABLE_TELEMETRY --------------------------------------------------------------------------


def test_disable_telemetry_beats_enabled(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DISABLE_TELEMETRY=1 beats ENABLED=1."""
    monkeypatch.setenv(PREFIX + "DISABLE_TELEMETRY", "1")
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    decision = _decide(store)
    assert not decision.allowed
    assert decision.source == "disable_telemetry"
    assert PREFIX + "DISABLE_TELEMETRY" in decision.reason


def test_disable_telemetry_beats_enabled_in_code(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's DISABLE_TELEMETRY=1 beats an app that passes enabled=True in code."""
    monkeypatch.setenv(PREFIX + "DISABLE_TELEMETRY", "1")
    decision = decide(consent_sources(_settings(enabled=True), store))
    assert (decision.allowed, decision.source) == (False, "disable_telemetry")


def test_disable_telemetry_beats_ci_in_reporting(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DISABLE_TELEMETRY is reported ahead of CI when both are set."""
    monkeypatch.setenv(PREFIX + "DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("CI", "true")
    assert _decide(store).source == "disable_telemetry"


# -- CI -----------------------------------------------------------------------------------------

CI_SETTINGS = [
    ("CI", "true"),
    ("CI", "1"),
    ("GITHUB_ACTIONS", "true"),
    ("GITLAB_CI", "true"),
    ("CIRCLECI", "true"),
    ("BUILDKITE", "true"),
    ("JENKINS_URL", "https://jenkins.example.com/"),
    ("TF_BUILD", "True"),
    ("CONTINUOUS_INTEGRATION", "yes"),
]


@pytest.mark.parametrize(("var", "value"), CI_SETTINGS)
def test_ci_beats_enabled(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    """Running in CI beats ENABLED=1: test runs never send telemetry."""
    monkeypatch.setenv(var, value)
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    decision = _decide(store)
    assert not decision.allowed
    assert decision.source == "ci"
    assert var in decision.reason


@pytest.mark.parametrize(("var", "value"), CI_SETTINGS[:3])
def test_ci_beats_stored_opt_in(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    """Running in CI beats a stored opt-in."""
    store.set_consent("enabled", by="cli")
    monkeypatch.setenv(var, value)
    decision = _decide(store)
    assert (decision.allowed, decision.source) == (False, "ci")


@pytest.mark.parametrize("value", ["false", "0", "False", "no", ""])
def test_ci_false_is_not_ci(store: StateStore, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """CI=false / CI=0 (as some shells and tools export) does not count as CI."""
    monkeypatch.setenv("CI", value)
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    decision = _decide(store)
    assert (decision.allowed, decision.source) == (True, "enabled")


# -- stored choice and ENABLED ------------------------------------------------------------------


def test_stored_disable_beats_enabled_env(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`codeweaver-telemetry disable` beats ENABLED=1 in the environment."""
    store.set_consent("disabled", by="cli")
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    decision = _decide(store)
    assert not decision.allowed
    assert decision.source == "stored_choice"


def test_enabled_false_beats_stored_enable(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENABLED=false beats a stored opt-in."""
    store.set_consent("enabled", by="cli")
    monkeypatch.setenv(PREFIX + "ENABLED", "false")
    decision = _decide(store)
    assert not decision.allowed
    assert decision.source == "enabled"


def test_enabled_true_is_reported_before_stored_enable(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ENABLED=1 and a stored opt-in, telemetry is on and ENABLED is named the source."""
    store.set_consent("enabled", by="cli")
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    decision = _decide(store)
    assert (decision.allowed, decision.source) == (True, "enabled")


def test_stored_enable_turns_on_under_opt_in(
    build: Callable[..., TelemetryClient], state_dir: Path
) -> None:
    """A stored opt-in (from `codeweaver-telemetry enable`) turns a real client on."""
    StateStore(state_dir).set_consent("enabled", by="cli")
    client = build(_settings(state_dir=state_dir), sink=InMemorySink())
    assert client.enabled
    assert client.decision.source == "stored_choice"
    assert client.distinct_id


def test_opt_in_with_nothing_is_off(store: StateStore) -> None:
    """Under the default opt-in policy, with nothing set, telemetry is off (source "policy")."""
    decision = _decide(store)
    assert not decision.allowed
    assert decision.source == "policy"
    assert not store.path.exists()


def test_policy_beats_nothing_default_client(build: Callable[..., TelemetryClient]) -> None:
    """A client built from a clean environment is off, decided by the opt-in policy."""
    client = build()
    assert not client.enabled
    assert client.decision.source == "policy"
    assert client.distinct_id is None


# -- opt-out ------------------------------------------------------------------------------------


def test_opt_out_first_run_shows_notice_and_sends_nothing(
    build: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    """Opt-out: the first run shows the notice once, sends nothing and writes no install id."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    monkeypatch.setenv(PREFIX + "STATE_DIR", str(state_dir))
    notices: list[str] = []
    sink = InMemorySink()
    first = build(_settings(), sink=sink, on_notice=notices.append)
    first.capture("ping")
    first.shutdown(timeout=0.2)
    assert not first.enabled
    assert first.decision.source == "policy"
    assert notices == [NOTICE]
    assert sink.events() == []
    state = StateStore(state_dir).read()
    assert state.notice_shown_at
    assert state.install_id is None
    assert state.hash_key is None
    assert (
        json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8")).get("install_id") is None
    )


def test_opt_out_without_a_way_to_show_the_notice_stays_off(
    build: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    """Opt-out with no on_notice: the notice cannot be shown, so it is not recorded as shown
    and telemetry stays off, run after run."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    monkeypatch.setenv(PREFIX + "STATE_DIR", str(state_dir))
    for _ in range(2):
        client = build(_settings(), sink=InMemorySink())
        assert not client.enabled
        assert client.decision.source == "policy"
        assert "on_notice" in client.decision.reason
    assert not (state_dir / STATE_FILE).exists()


def test_opt_out_notice_callback_that_fails_is_not_recorded(
    build: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    """If the app's notice callback raises, the notice was not shown: off, nothing recorded."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    monkeypatch.setenv(PREFIX + "STATE_DIR", str(state_dir))

    def broken(text: str) -> None:
        raise OSError("no terminal")

    client = build(_settings(), sink=InMemorySink(), on_notice=broken)
    assert not client.enabled
    assert StateStore(state_dir).read().notice_shown_at is None


def test_opt_out_second_run_is_on(
    build: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    """Opt-out: the run after the notice is on, and the notice is not shown again."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    monkeypatch.setenv(PREFIX + "STATE_DIR", str(state_dir))
    notices: list[str] = []
    build(_settings(), sink=InMemorySink(), on_notice=notices.append).shutdown(timeout=0.2)
    sink = InMemorySink()
    second = build(_settings(), sink=sink, on_notice=notices.append)
    second.capture("ping")
    second.flush(2.0)
    assert second.enabled
    assert second.decision.source == "policy"
    assert notices == [NOTICE]
    assert [e["event"] for e in sink.events()] == ["ping"]
    assert StateStore(state_dir).read().install_id == second.distinct_id


def test_opt_out_notice_via_decide_is_recorded_once(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """consent_sources shows the opt-out notice exactly once across runs."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    notices: list[str] = []
    first = _decide(store, on_notice=notices.append)
    second = _decide(store, on_notice=notices.append)
    assert (first.allowed, first.source) == (False, "policy")
    assert (second.allowed, second.source) == (True, "policy")
    assert notices == [NOTICE]


def test_do_not_track_beats_opt_out_policy(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under opt-out, DO_NOT_TRACK still wins and no notice is shown or recorded."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    store.mark_notice_shown()
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    notices: list[str] = []
    decision = _decide(store, on_notice=notices.append)
    assert (decision.allowed, decision.source) == (False, "DO_NOT_TRACK")
    assert notices == []


# -- the table of sources, one function each ---------------------------------------------------


def test_sources_table_is_in_precedence_order() -> None:
    """SOURCES lists every source once, off before on, with the names decisions report."""
    expected = (
        ("config_error", config_error_vote),
        ("DO_NOT_TRACK", do_not_track_vote),
        ("disable_telemetry", disable_telemetry_vote),
        ("ci", ci_vote),
        ("state_error", state_error_vote),
        ("stored_choice", stored_disabled_vote),
        ("enabled", enabled_false_vote),
        ("enabled", enabled_true_vote),
        ("stored_choice", stored_enabled_vote),
        ("policy", policy_vote),
    )
    assert expected == SOURCES
    names = [name for name, _ in SOURCES]
    env_names = [name for name, _ in ENVIRONMENT_SOURCES]
    assert env_names == ["DO_NOT_TRACK", "disable_telemetry", "ci", "enabled"]
    positions = [names.index(name) for name in env_names]
    assert positions == sorted(positions), "the environment check keeps the table's order"


def test_consent_sources_binds_the_table(store: StateStore) -> None:
    """consent_sources gives the table's names, in its order, bound to these inputs."""
    bound = consent_sources(_settings(), store)
    assert [name for name, _ in bound] == [name for name, _ in SOURCES]
    assert [source() for _, source in bound][-1] == policy_vote(ConsentInputs(_settings(), store))


def _inputs(store: StateStore, **settings: Any) -> ConsentInputs:
    return ConsentInputs(_settings(**settings), store)


def test_each_source_votes_on_its_own(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every source function can be asked alone; each says None when it has no opinion."""
    plain = _inputs(store)
    for name, source in SOURCES[:-1]:
        assert source(plain) is None, name
    assert config_error_vote(ConsentInputs(_settings(), store, "bad")) == ConsentVote(
        False, "a setting is invalid: bad"
    )
    assert disable_telemetry_vote(_inputs(store, disable_telemetry=True)) == ConsentVote(
        False, "disable_telemetry in the config file or code is true"
    )
    assert enabled_true_vote(_inputs(store, enabled=True)) == ConsentVote(
        True, "enabled in the config file or code is true"
    )
    assert enabled_false_vote(_inputs(store, enabled=True)) is None
    monkeypatch.setenv("GITLAB_CI", "true")
    assert ci_vote() == ConsentVote(False, "running in CI (GITLAB_CI is set)")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    assert do_not_track_vote() == ConsentVote(False, "DO_NOT_TRACK is set")


def test_stored_choice_sources(store: StateStore) -> None:
    """stored_disabled_vote and stored_enabled_vote read the stored choice, and who made it."""
    store.set_consent("disabled", by="cli")
    vote = stored_disabled_vote(_inputs(store))
    assert vote is not None
    assert not vote.allowed
    assert vote.reason.startswith("disabled by cli on ")
    assert stored_enabled_vote(_inputs(store)) is None
    store.set_consent("enabled", by="cli")
    fresh = _inputs(store)
    assert stored_disabled_vote(fresh) is None
    assert stored_enabled_vote(fresh) is not None


def test_state_file_is_read_once_and_only_when_needed(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs read the state file lazily, and once for all the sources."""
    reads: list[int] = []
    real_read = StateStore.read

    def counting(self: StateStore) -> Any:
        reads.append(1)
        return real_read(self)

    monkeypatch.setattr(StateStore, "read", counting)
    monkeypatch.setenv("CI", "true")
    assert _decide(store).source == "ci"
    assert reads == []
    monkeypatch.delenv("CI")
    assert _decide(store).source == "policy"
    assert reads == [1]


def test_unusable_state_file_source(store: StateStore) -> None:
    """state_error_vote names the file; the stored-choice sources then pass."""
    store.directory.mkdir(parents=True)
    store.path.write_text("{broken", encoding="utf-8")
    inputs = _inputs(store)
    vote = state_error_vote(inputs)
    assert vote is not None
    assert not vote.allowed
    assert str(store.path) in vote.reason
    assert stored_disabled_vote(inputs) is None
    assert stored_enabled_vote(inputs) is None


def test_policy_verdict_has_no_side_effects(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under opt-out, the first run's verdict is a ShowNotice action: nothing is shown or
    written until the action is performed, and performing it records the notice."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    notices: list[str] = []
    inputs = ConsentInputs(_settings(), store, on_notice=notices.append)
    verdict = policy_verdict(inputs)
    assert verdict == ShowNotice(notices.append, store)
    assert notices == []
    assert not store.path.exists()
    assert isinstance(verdict, ShowNotice)
    assert verdict.perform() == ConsentVote(
        False, "opt-out policy; the notice was shown this run, so nothing is sent"
    )
    assert notices == [NOTICE]
    assert store.read().notice_shown_at


@pytest.mark.parametrize(
    ("policy", "on_notice", "record", "reason"),
    [
        ("opt-in", print, True, "opt-in policy and not enabled yet"),
        ("opt-out", None, True, "the app gave no way to show the notice (on_notice)"),
        ("opt-out", print, False, "opt-out policy; the notice has not been shown yet"),
    ],
)
def test_policy_verdict_without_a_notice_to_show(
    store: StateStore,
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
    on_notice: Callable[[str], None] | None,
    record: bool,
    reason: str,
) -> None:
    """Opt-in, opt-out with no on_notice, and a read-only look all vote off at once."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", policy)
    verdict = policy_verdict(
        ConsentInputs(_settings(), store, on_notice=on_notice, record_notice=record)
    )
    assert isinstance(verdict, ConsentVote)
    assert not verdict.allowed
    assert reason in verdict.reason
    assert not store.path.exists()


def test_show_notice_that_cannot_be_recorded_stays_off(tmp_path: Path) -> None:
    """Performing ShowNotice when the state file cannot be written: off, "not recorded"."""
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    notices: list[str] = []
    vote = ShowNotice(notices.append, StateStore(blocker / "state")).perform()
    assert vote == ConsentVote(False, "opt-out policy, but the notice could not be recorded")
    assert notices == [NOTICE]


def test_show_notice_whose_callback_fails_stays_off(store: StateStore) -> None:
    """Performing ShowNotice with a callback that raises: off, and nothing recorded."""

    def broken(text: str) -> None:
        raise RuntimeError("no terminal")

    vote = ShowNotice(broken, store).perform()
    assert vote == ConsentVote(False, "opt-out policy, but showing the notice failed")
    assert not store.path.exists()


# -- an empty value means unset ------------------------------------------------------------------

EMPTY_MEANS_UNSET = [
    "DO_NOT_TRACK",
    "CI",
    "GITHUB_ACTIONS",
    PREFIX + "DISABLE_TELEMETRY",
    PREFIX + "ENABLED",
    PREFIX + "CONSENT_POLICY",
    PREFIX + "STATE_DIR",
    PREFIX + "STRICT",
]


@pytest.mark.parametrize("blank", [pytest.param("", id="empty"), pytest.param(" \t", id="blank")])
@pytest.mark.parametrize("var", EMPTY_MEANS_UNSET)
def test_empty_variable_means_unset(
    store: StateStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    var: str,
    blank: str,
) -> None:
    """An empty (or blank) DO_NOT_TRACK, CI or CODEWEAVER__TELEMETRY__* variable is as if it were
    not set: a stored opt-in stays in force, and nothing warns."""
    caplog.set_level(logging.DEBUG, logger="codeweaver_telemetry")
    store.set_consent("enabled", by="cli")
    monkeypatch.setenv(var, blank)
    assert env_flag(var) is None
    assert in_ci() is None
    assert environment_decision() is None
    decision = _decide(store)
    assert (decision.allowed, decision.source) == (True, "stored_choice")
    assert _warnings(caplog) == []


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_enabled_variable_is_not_named_as_the_source(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, blank: str, enabled: bool
) -> None:
    """With ENABLED empty and `enabled` given in code, the code decides and is named, not the
    empty variable."""
    monkeypatch.setenv(PREFIX + "ENABLED", blank)
    assert environment_decision() is None
    decision = decide(consent_sources(_settings(enabled=enabled), store))
    assert (decision.allowed, decision.source) == (enabled, "enabled")
    assert PREFIX + "ENABLED" not in decision.reason
    assert "config file or code" in decision.reason


@pytest.mark.parametrize(
    ("value", "allowed"), [("y", True), ("T", True), ("n", False), ("F", False)]
)
def test_enabled_variable_is_read_as_the_settings_read_it(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, value: str, allowed: bool
) -> None:
    """ENABLED=y/n (words the settings accept as booleans) is named as the deciding source,
    the same as ENABLED=1/0."""
    monkeypatch.setenv(PREFIX + "ENABLED", value)
    assert _settings().enabled is allowed
    assert env_flag(PREFIX + "ENABLED") is allowed
    decision = _decide(store)
    assert (decision.allowed, decision.source) == (allowed, "enabled")
    assert PREFIX + "ENABLED" in decision.reason


# -- errors -------------------------------------------------------------------------------------


def test_config_error_beats_everything(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config error turns telemetry off even with ENABLED=1 and a stored opt-in."""
    store.set_consent("enabled", by="cli")
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    monkeypatch.setenv(PREFIX + "BATCH_SIZE", "abc")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("CI", "true")
    decision = _decide(store)
    assert not decision.allowed
    assert decision.source == "config_error"
    assert "batch_size" in decision.reason


def test_config_error_in_client(build: Callable[..., TelemetryClient]) -> None:
    """A config error given to a client beats settings that would otherwise enable it."""
    client = build(_settings(enabled=True), sink=InMemorySink(), config_error="bad setting")
    assert not client.enabled
    assert client.decision.source == "config_error"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'{"consent": "maybe"}', id="bad-consent"),
        pytest.param(b"\xff\xfe\x00\x81", id="not-utf8"),
    ],
)
def test_corrupt_state_file_is_off_with_one_warning(
    build: Callable[..., TelemetryClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    state_dir: Path,
    content: bytes,
) -> None:
    """A corrupt state file turns telemetry off (source "state_error") with one warning."""
    state_dir.mkdir(parents=True)
    (state_dir / STATE_FILE).write_bytes(content)
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    monkeypatch.setenv(PREFIX + "STATE_DIR", str(state_dir))
    caplog.set_level(logging.DEBUG, logger="codeweaver_telemetry")
    client = build()
    client.capture("ping")
    client.flush(0.2)
    assert not client.enabled
    assert client.decision.source == "state_error"
    warnings = _warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert str(state_dir / STATE_FILE) in warnings[0].getMessage()
    assert (state_dir / STATE_FILE).read_bytes() == content


def test_state_error_beats_stored_disable_and_enabled(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unusable state file beats ENABLED=1 (the choice inside it cannot be trusted)."""
    store.directory.mkdir(parents=True)
    store.path.write_text("[]", encoding="utf-8")
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    decision = _decide(store)
    assert (decision.allowed, decision.source) == (False, "state_error")


def test_ci_beats_state_error_in_reporting(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In CI the state file is not even consulted: CI is named as the source."""
    store.directory.mkdir(parents=True)
    store.path.write_text("{broken", encoding="utf-8")
    monkeypatch.setenv("CI", "true")
    assert _decide(store).source == "ci"


# -- a disabled client leaves no trace ------------------------------------------------------------

DISABLED_SETUPS: dict[str, dict[str, str]] = {
    "do_not_track": {"DO_NOT_TRACK": "1", PREFIX + "ENABLED": "1"},
    "disable_telemetry": {PREFIX + "DISABLE_TELEMETRY": "1", PREFIX + "ENABLED": "1"},
    "ci": {"GITHUB_ACTIONS": "true", PREFIX + "ENABLED": "1"},
    "opt_in_default": {},
    "config_error": {PREFIX + "BATCH_SIZE": "abc", PREFIX + "ENABLED": "1"},
}


@pytest.mark.parametrize("setup", list(DISABLED_SETUPS))
def test_disabled_client_writes_no_install_id(
    build: Callable[..., TelemetryClient],
    monkeypatch: pytest.MonkeyPatch,
    clean_env: Path,
    setup: str,
) -> None:
    """When telemetry is off, no install id (or anything else) is written to the state dir."""
    for var, value in DISABLED_SETUPS[setup].items():
        monkeypatch.setenv(var, value)
    client = build()
    client.start_session({"k": "v"})
    client.capture("ping", {"a": 1})
    client.get_feature_flag("flag")
    client.end_session()
    client.shutdown(timeout=0.2)
    assert not client.enabled
    assert client.distinct_id is None
    state_file = clean_env / "telemetry" / STATE_FILE
    if state_file.exists():
        assert not json.loads(state_file.read_text(encoding="utf-8")).get("install_id")
    assert not (clean_env / "telemetry" / "events.jsonl").exists()


@pytest.mark.parametrize("setup", ["do_not_track", "disable_telemetry", "ci", "opt_in_default"])
def test_deliberately_disabled_client_logs_no_warning(
    build: Callable[..., TelemetryClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    setup: str,
) -> None:
    """A user who turned telemetry off (or never turned it on) sees no warning at all."""
    for var, value in DISABLED_SETUPS[setup].items():
        monkeypatch.setenv(var, value)
    caplog.set_level(logging.DEBUG, logger="codeweaver_telemetry")
    client = build()
    client.capture("ping")
    client.shutdown(timeout=0.2)
    assert not client.enabled
    assert _warnings(caplog) == []


def test_stored_disable_leaves_no_install_id(
    build: Callable[..., TelemetryClient], store: StateStore, state_dir: Path
) -> None:
    """After `disable`, running a client does not bring the install id back."""
    store.set_consent("enabled", by="cli")
    store.ensure_identity()
    store.set_consent("disabled", by="cli")
    client = build(_settings(state_dir=state_dir, enabled=True))
    client.capture("ping")
    assert not client.enabled
    assert client.decision.source == "stored_choice"
    assert json.loads(store.path.read_text(encoding="utf-8")).get("install_id") is None


_IMPORT_PROBE = textwrap.dedent(
    """
    import json, sys, time
    from codeweaver_telemetry import TelemetryClient
    client = TelemetryClient()
    client.start_session({"tool": "x"})
    client.capture("ping", {"a": 1})
    client.get_feature_flag("flag", default=False)
    client.get_all_feature_flags()
    client.end_session()
    client.flush(0.2)
    # An enabled client loads posthog on its flag thread, in the background: give it the
    # time (a disabled one has no such thread, and must not have loaded it by now).
    deadline = time.monotonic() + (10 if client.decision.allowed else 0)
    while "posthog" not in sys.modules and time.monotonic() < deadline:
        time.sleep(0.01)
    client.shutdown(timeout=0.2)
    print(json.dumps({
        "enabled_at_start": client.decision.allowed,
        "source": client.decision.source,
        "posthog": "posthog" in sys.modules,
    }))
    """
)


def _run_probe(extra_env: dict[str, str]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env[PREFIX + "POSTHOG_API_KEY"] = "phc_probe"
    env[PREFIX + "POSTHOG_HOST"] = "http://127.0.0.1:9"
    env[PREFIX + "EXIT_TIMEOUT_SECONDS"] = "0.2"
    env[PREFIX + "FLAG_TIMEOUT_SECONDS"] = "0"
    env.update(extra_env)
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("setup", ["do_not_track", "opt_in_default", "config_error"])
def test_disabled_client_never_imports_posthog(setup: str) -> None:
    """A disabled client (with an API key set) never imports posthog, whatever it is asked."""
    result = _run_probe(DISABLED_SETUPS[setup])
    assert result["enabled_at_start"] is False
    assert result["posthog"] is False


def test_enabled_client_does_import_posthog() -> None:
    """Control for the probe above: an enabled client with an API key does load posthog."""
    result = _run_probe({PREFIX + "ENABLED": "1"})
    assert result["enabled_at_start"] is True
    assert result["source"] == "enabled"
    assert result["posthog"] is True


# -- the notice version -------------------------------------------------------------------------


def test_a_higher_notice_version_is_shown_again(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opt-out: once version 1 was shown, an app at version 2 shows the updated notice
    again (an off vote, from ShowNotice), and version 1 alone no longer turns it on."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    store.mark_notice_shown(1)
    notices: list[str] = []
    inputs = ConsentInputs(_settings(), store, on_notice=notices.append, notice_version=2)
    verdict = policy_verdict(inputs)
    assert verdict == ShowNotice(notices.append, store, 2, NOTICE_UPDATED)
    assert isinstance(verdict, ShowNotice)
    assert not verdict.perform().allowed
    assert notices == [NOTICE_UPDATED]
    assert store.read().notice_version == 2
    again = policy_verdict(ConsentInputs(_settings(), store, notice_version=2))
    assert again == ConsentVote(
        True, f"opt-out policy; notice version 2 shown on {store.read().notice_shown_at}"
    )


def test_a_first_notice_at_a_higher_version_is_the_plain_notice(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who never saw any notice sees the plain one, whatever its version."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    notices: list[str] = []
    decision = _decide(store, on_notice=notices.append, notice_version=3)
    assert (decision.allowed, decision.source) == (False, "policy")
    assert notices == [NOTICE]
    assert store.read().notice_version == 3
    assert store.read().install_id is None


def test_a_lower_or_equal_notice_version_is_not_shown_again(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app at or below the recorded version shows nothing and is on."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    store.mark_notice_shown(2)
    notices: list[str] = []
    for version in (1, 2):
        decision = _decide(store, on_notice=notices.append, notice_version=version)
        assert (decision.allowed, decision.source) == (True, "policy")
    assert notices == []


def test_consent_sources_takes_the_version_from_an_app_notice(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AppNotice (what a client hands to start-up) brings its version; the callback the
    app gave is the one called."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    store.mark_notice_shown(1)
    notices: list[str] = []
    decision = _decide(store, on_notice=AppNotice(notices.append, 2))
    assert not decision.allowed
    assert "shown this run" in decision.reason
    assert notices == [NOTICE_UPDATED]


def test_a_raised_version_without_a_callback_stays_off(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 was shown, the app is at version 2 and gave no on_notice: off, and the
    new version is not recorded."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    store.mark_notice_shown(1)
    decision = _decide(store, on_notice=AppNotice(None, 2))
    assert not decision.allowed
    assert "(on_notice)" in decision.reason
    assert store.read().notice_version == 1


def test_a_read_only_look_names_the_version_not_yet_shown(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only look at a raised version says which version is missing, and writes
    nothing."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    store.mark_notice_shown(1)
    before = store.path.read_bytes()
    decision = _decide(store, on_notice=print, record_notice=False, notice_version=2)
    assert not decision.allowed
    assert "notice version 2 has not been shown yet (version 1 was)" in decision.reason
    assert store.path.read_bytes() == before


@pytest.mark.parametrize("version", [0, -1, True])
def test_a_bad_notice_version_votes_off(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, version: Any
) -> None:
    """A notice version that is not a whole number from 1 votes off, shows nothing."""
    monkeypatch.setenv(PREFIX + "CONSENT_POLICY", "opt-out")
    notices: list[str] = []
    verdict = policy_verdict(
        ConsentInputs(_settings(), store, on_notice=notices.append, notice_version=version)
    )
    assert isinstance(verdict, ConsentVote)
    assert not verdict.allowed
    assert "notice_version" in verdict.reason
    assert notices == []
    assert not store.path.exists()


def test_a_callback_that_raises_notice_not_shown_says_why(store: StateStore) -> None:
    """A callback may raise NoticeNotShown: not shown, not recorded, and its message is in
    the reason."""

    def no_display(text: str) -> None:
        raise NoticeNotShown("no display")

    vote = ShowNotice(no_display, store).perform()
    assert vote == ConsentVote(False, "opt-out policy, but the notice was not shown (no display)")
    assert not store.path.exists()


def test_notice_text_depends_on_what_was_shown() -> None:
    """The plain notice for a user who saw none; the updated one after an earlier version."""
    assert notice_text(0) == NOTICE
    assert notice_text(1) == notice_text(4) == NOTICE_UPDATED
    assert NOTICE_UPDATED.endswith(NOTICE)
