# SPDX-License-Identifier: MIT OR Apache-2.0
"""Who decides whether telemetry is on: an ordered tuple of sources, first decisive wins.

Order (highest first)::

    config_error  DO_NOT_TRACK  disable_telemetry  ci  state_error  stored_choice=disabled
    enabled=false  enabled=true  stored_choice=enabled  policy

Every "off" source comes before every "on" source, so off always wins. ``policy`` always
decides: under ``opt-in`` it says off until something enables; under ``opt-out`` it says on,
except in the run that shows the notice (that run sends nothing and writes no id).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from codeweaver_telemetry._internal import ENV_PREFIX, FALSE_WORDS, env_flag
from codeweaver_telemetry._types import ConsentSource, ConsentVote
from codeweaver_telemetry.state import StateError, StateStore, TelemetryState

if TYPE_CHECKING:  # settings pull in pydantic-settings; the off path never needs them
    from codeweaver_telemetry.settings import TelemetrySettings

__all__ = [
    "CI_VARIABLES",
    "NOTICE",
    "ConsentDecision",
    "consent_sources",
    "decide",
    "environment_decision",
    "in_ci",
]

CI_VARIABLES = (
    # Generic: set by GitHub Actions, GitLab, CircleCI, Travis, Buildkite, Drone and others.
    "CI",
    "CONTINUOUS_INTEGRATION",
    # Vendor-specific.
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "CIRCLECI",
    "TRAVIS",
    "BUILDKITE",
    "JENKINS_URL",
    "TEAMCITY_VERSION",
    "TF_BUILD",  # Azure Pipelines
    "BITBUCKET_BUILD_NUMBER",
    "CODEBUILD_BUILD_ID",  # AWS CodeBuild
    "APPVEYOR",
    "DRONE",
    "SEMAPHORE",
    "HEROKU_TEST_RUN_ID",
)
"""Environment variables whose presence (with a value other than empty, false or 0) means CI."""

NOTICE = (
    "This tool collects anonymous usage statistics to improve it. Nothing is sent during "
    "this run. No paths, names, code or queries are collected. To turn it off, set "
    "DO_NOT_TRACK=1 or run `codeweaver-telemetry disable`."
)
"""The notice shown once under the opt-out policy."""


@dataclass(frozen=True)
class ConsentDecision:
    """The outcome: allowed or not, the name of the deciding source, and why."""

    allowed: bool
    source: str
    reason: str


def in_ci(environ: Mapping[str, str] | None = None) -> str | None:
    """The name of the CI variable that is set, or None outside CI."""
    env = os.environ if environ is None else environ
    for var in CI_VARIABLES:
        if _is_set(env.get(var)):
            return var
    return None


def _is_set(value: str | None) -> bool:
    """Whether a "presence" variable (CI, DO_NOT_TRACK) is set: present, not empty, not false.

    An empty value means unset, as for every setting; so does an explicit false/0/no/off.
    """
    if value is None:
        return False
    word = value.strip().lower()
    return bool(word) and word not in FALSE_WORDS


def environment_decision() -> ConsentDecision | None:
    """The decision when the environment alone turns telemetry off, else None.

    Cheap (no settings, no files): lets a client that is off anyway skip loading settings.
    Checks, in the same order as :func:`consent_sources`: ``DO_NOT_TRACK``,
    ``DISABLE_TELEMETRY``, CI, ``ENABLED=false``.
    """
    for name, source in (
        ("DO_NOT_TRACK", _do_not_track),
        ("disable_telemetry", _disable_env),
        ("ci", _ci),
        ("enabled", _enabled_false_env),
    ):
        vote = source()
        if vote is not None:
            return ConsentDecision(vote.allowed, name, vote.reason)
    return None


def _do_not_track() -> ConsentVote | None:
    # Fails closed: any value but an explicit false/0/no/off (or empty) means "do not track".
    if _is_set(os.environ.get("DO_NOT_TRACK")):
        return ConsentVote(False, "DO_NOT_TRACK is set")
    return None


def _disable_env() -> ConsentVote | None:
    if env_flag(ENV_PREFIX + "DISABLE_TELEMETRY"):
        return ConsentVote(False, f"{ENV_PREFIX}DISABLE_TELEMETRY is true")
    return None


def _ci() -> ConsentVote | None:
    var = in_ci()
    if var:
        return ConsentVote(False, f"running in CI ({var} is set)")
    return None


def _enabled_false_env() -> ConsentVote | None:
    if env_flag(ENV_PREFIX + "ENABLED") is False:
        return ConsentVote(False, f"{ENV_PREFIX}ENABLED is false")
    return None


def consent_sources(
    settings: TelemetrySettings,
    store: StateStore,
    *,
    config_error: str | None = None,
    on_notice: Callable[[str], None] | None = None,
    record_notice: bool = True,
) -> tuple[tuple[str, ConsentSource], ...]:
    """The ordered consent sources for these settings and this state directory."""
    cache: dict[str, TelemetryState | StateError] = {}

    def state() -> TelemetryState | StateError:
        if "s" not in cache:
            try:
                cache["s"] = store.read()
            except StateError as exc:
                cache["s"] = exc
        return cache["s"]

    def config() -> ConsentVote | None:
        if config_error:
            return ConsentVote(False, f"a setting is invalid: {config_error}")
        return None

    def disable() -> ConsentVote | None:
        if settings.disable_telemetry:
            return _disable_env() or ConsentVote(
                False, "disable_telemetry in the config file or code is true"
            )
        return None

    def state_error() -> ConsentVote | None:
        current = state()
        if isinstance(current, StateError):
            return ConsentVote(
                False, f"the state file {store.path} is unusable ({current}); delete it to reset"
            )
        return None

    def stored(choice: Literal["enabled", "disabled"]) -> ConsentSource:
        def source() -> ConsentVote | None:
            current = state()
            if isinstance(current, TelemetryState) and current.consent == choice:
                by = f" by {current.consent_by}" if current.consent_by else ""
                return ConsentVote(choice == "enabled", f"{choice}{by} on {current.consent_at}")
            return None

        return source

    def explicit(value: bool) -> ConsentSource:
        def source() -> ConsentVote | None:
            if settings.enabled is value:
                where = (
                    f"{ENV_PREFIX}ENABLED"
                    if env_flag(ENV_PREFIX + "ENABLED") is value
                    else "enabled in the config file or code"
                )
                return ConsentVote(value, f"{where} is {str(value).lower()}")
            return None

        return source

    def policy() -> ConsentVote:
        if settings.consent_policy == "opt-in":
            return ConsentVote(
                False,
                "opt-in policy and not enabled yet (run `codeweaver-telemetry enable` "
                f"or set {ENV_PREFIX}ENABLED=1)",
            )
        current = state()
        if isinstance(current, TelemetryState) and current.notice_shown_at:
            return ConsentVote(True, f"opt-out policy; notice shown on {current.notice_shown_at}")
        if not record_notice:
            return ConsentVote(False, "opt-out policy; the notice has not been shown yet")
        if on_notice is None:
            # A notice nobody sees is no notice: stay off, and do not record it as shown.
            return ConsentVote(
                False,
                "opt-out policy, but the app gave no way to show the notice (on_notice)",
            )
        try:
            on_notice(NOTICE)
        except Exception:  # the app's callback failed: the notice was not shown
            return ConsentVote(False, "opt-out policy, but showing the notice failed")
        try:
            store.mark_notice_shown()
        except (OSError, StateError):
            return ConsentVote(False, "opt-out policy, but the notice could not be recorded")
        return ConsentVote(
            False, "opt-out policy; the notice was shown this run, so nothing is sent"
        )

    return (
        ("config_error", config),
        ("DO_NOT_TRACK", _do_not_track),
        ("disable_telemetry", disable),
        ("ci", _ci),
        ("state_error", state_error),
        ("stored_choice", stored("disabled")),
        ("enabled", explicit(False)),
        ("enabled", explicit(True)),
        ("stored_choice", stored("enabled")),
        ("policy", policy),
    )


def decide(sources: tuple[tuple[str, ConsentSource], ...]) -> ConsentDecision:
    """Ask each source in order; the first that votes decides. No vote at all means off."""
    for name, source in sources:
        vote = source()
        if vote is not None:
            return ConsentDecision(vote.allowed, name, vote.reason)
    return ConsentDecision(False, "default", "no source allowed telemetry")
