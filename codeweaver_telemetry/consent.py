# SPDX-License-Identifier: MIT OR Apache-2.0
"""Who decides whether telemetry is on: an ordered tuple of sources, first decisive wins.

Order (highest first)::

    config_error  DO_NOT_TRACK  disable_telemetry  ci  state_error  stored_choice=disabled
    enabled=false  enabled=true  stored_choice=enabled  policy

Every "off" source comes before every "on" source, so off always wins. ``policy`` always
decides: under ``opt-in`` it says off until something enables; under ``opt-out`` it says on,
except in the run that shows the notice (that run sends nothing and writes no id).

The table is :data:`SOURCES`: one small function per source, each reading
:class:`ConsentInputs` and returning a vote or None. Only showing the opt-out notice has a
side effect, and it is explicit: :func:`policy_verdict` returns a :class:`ShowNotice`
action, and :func:`policy_vote` performs it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from codeweaver_telemetry._internal import ENV_PREFIX, FALSE_WORDS, env_flag
from codeweaver_telemetry._types import ConsentSource, ConsentVote
from codeweaver_telemetry.state import StateError, StateStore, TelemetryState

if TYPE_CHECKING:  # settings pull in pydantic-settings; the off path never needs them
    from codeweaver_telemetry._config import SettingsView

__all__ = [
    "CI_VARIABLES",
    "ENVIRONMENT_SOURCES",
    "NOTICE",
    "SOURCES",
    "ConsentDecision",
    "ConsentInputs",
    "ShowNotice",
    "consent_sources",
    "decide",
    "environment_decision",
    "in_ci",
    "policy_verdict",
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


# -- the sources -------------------------------------------------------------------------------
# Each source reads what it needs and votes (allowed, reason), or returns None to pass. None
# of them acts, except through ShowNotice.perform(): the policy's verdict in the run that
# shows the opt-out notice.


@dataclass(frozen=True)
class ConsentInputs:
    """What the consent sources read: settings, the state store and how to show the notice.

    Args:
        settings: the settings in force.
        store: the state directory (stored choice, notice date).
        config_error: the settings error, if any (telemetry is then off).
        on_notice: shows the opt-out notice to the user; None: no way to show it.
        record_notice: False to never show (nor record) the notice: a read-only look
            (``codeweaver-telemetry status``).
    """

    settings: SettingsView
    store: StateStore
    config_error: str | None = None
    on_notice: Callable[[str], None] | None = None
    record_notice: bool = True

    @functools.cached_property
    def state(self) -> TelemetryState | StateError:
        """The state file, read once and only when a source needs it (in CI it never is)."""
        try:
            return self.store.read()
        except StateError as exc:
            return exc


InputSource: TypeAlias = Callable[[ConsentInputs], "ConsentVote | None"]
"""A consent source over :class:`ConsentInputs`; None means it has no opinion."""


def config_error_vote(inputs: ConsentInputs) -> ConsentVote | None:
    """Off when a setting is invalid."""
    if inputs.config_error:
        return ConsentVote(False, f"a setting is invalid: {inputs.config_error}")
    return None


def do_not_track_vote(inputs: ConsentInputs | None = None) -> ConsentVote | None:
    """Off when ``DO_NOT_TRACK`` is set. Reads the environment only.

    Fails closed: any value but an explicit false/0/no/off (or empty) means "do not track".
    """
    if _is_set(os.environ.get("DO_NOT_TRACK")):
        return ConsentVote(False, "DO_NOT_TRACK is set")
    return None


def disable_env_vote(inputs: ConsentInputs | None = None) -> ConsentVote | None:
    """Off when ``CODEWEAVER__TELEMETRY__DISABLE_TELEMETRY`` is true. Reads the environment
    only."""
    if env_flag(ENV_PREFIX + "DISABLE_TELEMETRY"):
        return ConsentVote(False, f"{ENV_PREFIX}DISABLE_TELEMETRY is true")
    return None


def disable_telemetry_vote(inputs: ConsentInputs) -> ConsentVote | None:
    """Off when the ``disable_telemetry`` setting is true, naming where it was set."""
    if inputs.settings.disable_telemetry:
        return disable_env_vote() or ConsentVote(
            False, "disable_telemetry in the config file or code is true"
        )
    return None


def ci_vote(inputs: ConsentInputs | None = None) -> ConsentVote | None:
    """Off when running in CI. Reads the environment only."""
    var = in_ci()
    if var:
        return ConsentVote(False, f"running in CI ({var} is set)")
    return None


def enabled_false_env_vote(inputs: ConsentInputs | None = None) -> ConsentVote | None:
    """Off when ``CODEWEAVER__TELEMETRY__ENABLED`` is false. Reads the environment only."""
    if env_flag(ENV_PREFIX + "ENABLED") is False:
        return ConsentVote(False, f"{ENV_PREFIX}ENABLED is false")
    return None


def state_error_vote(inputs: ConsentInputs) -> ConsentVote | None:
    """Off when the state file is unusable (the choice inside it cannot be trusted)."""
    current = inputs.state
    if isinstance(current, StateError):
        return ConsentVote(
            False,
            f"the state file {inputs.store.path} is unusable ({current}); delete it to reset",
        )
    return None


def _stored_choice_vote(
    inputs: ConsentInputs, choice: Literal["enabled", "disabled"]
) -> ConsentVote | None:
    current = inputs.state
    if isinstance(current, TelemetryState) and current.consent == choice:
        by = f" by {current.consent_by}" if current.consent_by else ""
        return ConsentVote(choice == "enabled", f"{choice}{by} on {current.consent_at}")
    return None


def stored_disabled_vote(inputs: ConsentInputs) -> ConsentVote | None:
    """Off when the user ran ``codeweaver-telemetry disable``."""
    return _stored_choice_vote(inputs, "disabled")


def stored_enabled_vote(inputs: ConsentInputs) -> ConsentVote | None:
    """On when the user ran ``codeweaver-telemetry enable``."""
    return _stored_choice_vote(inputs, "enabled")


def _enabled_vote(inputs: ConsentInputs, value: bool) -> ConsentVote | None:
    if inputs.settings.enabled is not value:
        return None
    where = (
        f"{ENV_PREFIX}ENABLED"
        if env_flag(ENV_PREFIX + "ENABLED") is value
        else "enabled in the config file or code"
    )
    return ConsentVote(value, f"{where} is {str(value).lower()}")


def enabled_false_vote(inputs: ConsentInputs) -> ConsentVote | None:
    """Off when the ``enabled`` setting is false, naming where it was set."""
    return _enabled_vote(inputs, False)


def enabled_true_vote(inputs: ConsentInputs) -> ConsentVote | None:
    """On when the ``enabled`` setting is true, naming where it was set."""
    return _enabled_vote(inputs, True)


@dataclass(frozen=True)
class ShowNotice:
    """The action the opt-out policy asks for in the run that shows the notice.

    :func:`policy_verdict` returns it instead of acting; :meth:`perform` is the one side
    effect of consent (the app's callback, and a write to the state file).
    """

    on_notice: Callable[[str], None]
    store: StateStore

    def perform(self) -> ConsentVote:
        """Show the notice and record it as shown; the vote is off either way.

        The run that shows the notice sends nothing; the next run is on. If the app's
        callback raises, or the state file cannot record the notice, it counts as not
        shown: off, and it is shown again next run.
        """
        try:
            self.on_notice(NOTICE)
        except Exception:  # the app's callback failed: the notice was not shown
            return ConsentVote(False, "opt-out policy, but showing the notice failed")
        try:
            self.store.mark_notice_shown()
        except (OSError, StateError):
            return ConsentVote(False, "opt-out policy, but the notice could not be recorded")
        return ConsentVote(
            False, "opt-out policy; the notice was shown this run, so nothing is sent"
        )


def policy_verdict(inputs: ConsentInputs) -> ConsentVote | ShowNotice:
    """The consent policy's vote, without side effects; a :class:`ShowNotice` when this run
    must show the opt-out notice (the vote then comes from performing it)."""
    if inputs.settings.consent_policy == "opt-in":
        return ConsentVote(
            False,
            "opt-in policy and not enabled yet (run `codeweaver-telemetry enable` "
            f"or set {ENV_PREFIX}ENABLED=1)",
        )
    current = inputs.state
    if isinstance(current, TelemetryState) and current.notice_shown_at:
        return ConsentVote(True, f"opt-out policy; notice shown on {current.notice_shown_at}")
    if not inputs.record_notice:
        return ConsentVote(False, "opt-out policy; the notice has not been shown yet")
    if inputs.on_notice is None:
        # A notice nobody sees is no notice: stay off, and do not record it as shown.
        return ConsentVote(
            False,
            "opt-out policy, but the app gave no way to show the notice (on_notice)",
        )
    return ShowNotice(inputs.on_notice, inputs.store)


def policy_vote(inputs: ConsentInputs) -> ConsentVote:
    """The consent policy, which always decides: :func:`policy_verdict`, and the notice
    shown when it asks for that."""
    verdict = policy_verdict(inputs)
    return verdict.perform() if isinstance(verdict, ShowNotice) else verdict


SOURCES: tuple[tuple[str, InputSource], ...] = (
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
"""Every consent source, highest precedence first, with the name a decision reports."""

ENVIRONMENT_SOURCES: tuple[tuple[str, Callable[[], ConsentVote | None]], ...] = (
    ("DO_NOT_TRACK", do_not_track_vote),
    ("disable_telemetry", disable_env_vote),
    ("ci", ci_vote),
    ("enabled", enabled_false_env_vote),
)
"""The "off" sources that read the environment only, in the order of :data:`SOURCES`."""


def environment_decision() -> ConsentDecision | None:
    """The decision when the environment alone turns telemetry off, else None.

    Cheap (no settings, no files): lets a client that is off anyway skip loading settings.
    Checks :data:`ENVIRONMENT_SOURCES`: ``DO_NOT_TRACK``, ``DISABLE_TELEMETRY``, CI,
    ``ENABLED=false``, in the order of :data:`SOURCES`.
    """
    for name, source in ENVIRONMENT_SOURCES:
        vote = source()
        if vote is not None:
            return ConsentDecision(vote.allowed, name, vote.reason)
    return None


def consent_sources(
    settings: SettingsView,
    store: StateStore,
    *,
    config_error: str | None = None,
    on_notice: Callable[[str], None] | None = None,
    record_notice: bool = True,
) -> tuple[tuple[str, ConsentSource], ...]:
    """:data:`SOURCES`, bound to these settings and this state directory, for :func:`decide`.

    Nothing is read until a source is asked; the state file is read at most once.
    """
    inputs = ConsentInputs(settings, store, config_error, on_notice, record_notice)
    return tuple((name, functools.partial(source, inputs)) for name, source in SOURCES)


def decide(sources: tuple[tuple[str, ConsentSource], ...]) -> ConsentDecision:
    """Ask each source in order; the first that votes decides. No vote at all means off."""
    for name, source in sources:
        vote = source()
        if vote is not None:
            return ConsentDecision(vote.allowed, name, vote.reason)
    return ConsentDecision(False, "default", "no source allowed telemetry")
