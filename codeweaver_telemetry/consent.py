# SPDX-License-Identifier: MIT OR Apache-2.0
"""Who decides whether telemetry is on: an ordered tuple of sources, first decisive wins.

Order (highest first)::

    config_error  DO_NOT_TRACK  disable_telemetry  ci  state_error  stored_choice=disabled
    enabled=false  enabled=true  stored_choice=enabled  policy

Every "off" source comes before every "on" source, so off always wins. ``policy`` always
decides: under ``opt-in`` it says off until something enables; under ``opt-out`` it says on,
except in the run that shows the notice (that run sends nothing and writes no id).

The notice has a version (an int, 1 by default). An app raises it when what it collects
changes: the state file records the version shown, and a higher one is shown again, in a
run that sends nothing, as on a first run.

The table is :data:`SOURCES`: one small function per source, each reading
:class:`ConsentInputs` and returning a vote or None. Only showing the opt-out notice has a
side effect, and it is explicit: :func:`policy_verdict` returns a :class:`ShowNotice`
action, and :func:`policy_vote` performs it.
"""

from __future__ import annotations

import functools
import os
import sys
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
    "NOTICE_UPDATED",
    "SOURCES",
    "AppNotice",
    "ConsentDecision",
    "ConsentInputs",
    "NoticeNotShown",
    "ShowNotice",
    "consent_sources",
    "decide",
    "environment_decision",
    "in_ci",
    "notice_text",
    "notice_version_error",
    "policy_verdict",
    "terminal_notice",
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

NOTICE_UPDATED = "What this tool collects has changed since you were last told. " + NOTICE
"""The notice shown again to a user who saw an earlier version of it."""


def notice_text(shown_version: int) -> str:
    """The text to show a user who has seen notice ``shown_version`` (0: none) so far."""
    return NOTICE_UPDATED if shown_version > 0 else NOTICE


class NoticeNotShown(Exception):
    """Raised by a notice callback that could not show the notice to anyone.

    The notice then counts as not shown, as when the callback raises anything else: the run
    stays off, nothing is recorded, and the notice is offered again on the next run. The
    message says why, and appears in the decision's reason.
    """


def terminal_notice(text: str) -> None:
    """Show the notice on standard error, when standard error is a terminal (a TTY).

    The built-in ``on_notice``: pass ``on_notice=terminal_notice`` to
    :func:`~codeweaver_telemetry.get_telemetry_client`. A person at a terminal reads it; piped
    output and the logs of a non-interactive run never receive it. In such a run it raises
    :class:`NoticeNotShown` and writes nothing, so telemetry stays off and sends nothing
    until a run at a terminal shows the notice.

    Raises:
        NoticeNotShown: standard error is not a terminal, or writing to it failed.
    """
    stream = sys.stderr
    try:
        interactive = stream is not None and stream.isatty()
    except (OSError, ValueError):  # closed, or a stand-in without a descriptor
        interactive = False
    if not interactive:
        raise NoticeNotShown("standard error is not a terminal")
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError) as exc:
        raise NoticeNotShown(f"writing to the terminal failed ({type(exc).__name__})") from None


def notice_version_error(version: object) -> str | None:
    """Why ``version`` is not a notice version (a whole number from 1), or None if it is."""
    if isinstance(version, int) and not isinstance(version, bool) and version >= 1:
        return None
    return f"notice_version must be a whole number from 1, not {version!r}"


@dataclass(frozen=True)
class AppNotice:
    """What the app gave for the notice: how to show it and its version.

    A client hands it to start-up in place of the ``on_notice`` callback, and
    :func:`consent_sources` takes it apart again; the callback and the version then reach
    :class:`ConsentInputs` separately. Calling it calls ``show``.

    Args:
        show: the app's ``on_notice`` callback; None: the app gave no way to show it.
        version: the version of the notice (a whole number from 1).
    """

    show: Callable[[str], None] | None
    version: int = 1

    def __call__(self, text: str) -> None:
        if self.show is None:
            raise NoticeNotShown("the app gave no way to show the notice (on_notice)")
        self.show(text)


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
        notice_version: the version of the app's notice; shown again when the state file
            records a lower one.
    """

    settings: SettingsView
    store: StateStore
    config_error: str | None = None
    on_notice: Callable[[str], None] | None = None
    record_notice: bool = True
    notice_version: int = 1

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

    Args:
        on_notice: the app's callback.
        store: the state directory, where the notice is recorded as shown.
        version: the version of the notice to show and record.
        text: the text to show (:data:`NOTICE`, or :data:`NOTICE_UPDATED` for a user who
            saw an earlier version).
    """

    on_notice: Callable[[str], None]
    store: StateStore
    version: int = 1
    text: str = NOTICE

    def perform(self) -> ConsentVote:
        """Show the notice and record its version as shown; the vote is off either way.

        The run that shows the notice sends nothing; the next run is on. If the app's
        callback raises (:class:`NoticeNotShown` or anything else), or the state file
        cannot record the notice, it counts as not shown: off, and it is shown again next
        run.
        """
        try:
            self.on_notice(self.text)
        except NoticeNotShown as exc:  # nobody could see it: not shown, and it says why
            return ConsentVote(False, f"opt-out policy, but the notice was not shown ({exc})")
        except Exception:  # the app's callback failed: the notice was not shown
            return ConsentVote(False, "opt-out policy, but showing the notice failed")
        try:
            self.store.mark_notice_shown(self.version)
        except (OSError, StateError, ValueError):
            return ConsentVote(False, "opt-out policy, but the notice could not be recorded")
        return ConsentVote(
            False, "opt-out policy; the notice was shown this run, so nothing is sent"
        )


def policy_verdict(inputs: ConsentInputs) -> ConsentVote | ShowNotice:
    """The consent policy's vote, without side effects; a :class:`ShowNotice` when this run
    must show the opt-out notice (the vote then comes from performing it): no notice shown
    yet, or only a version lower than ``inputs.notice_version``."""
    if inputs.settings.consent_policy == "opt-in":
        return ConsentVote(
            False,
            "opt-in policy and not enabled yet (run `codeweaver-telemetry enable` "
            f"or set {ENV_PREFIX}ENABLED=1)",
        )
    current = inputs.state
    wanted = inputs.notice_version
    problem = notice_version_error(wanted)
    if problem:
        return ConsentVote(False, f"opt-out policy, but {problem}")
    shown = current.shown_notice_version if isinstance(current, TelemetryState) else 0
    if isinstance(current, TelemetryState) and shown >= wanted:
        which = "notice" if wanted == 1 else f"notice version {wanted}"
        return ConsentVote(True, f"opt-out policy; {which} shown on {current.notice_shown_at}")
    if not inputs.record_notice:
        if shown == 0:
            return ConsentVote(False, "opt-out policy; the notice has not been shown yet")
        return ConsentVote(
            False,
            f"opt-out policy; notice version {wanted} has not been shown yet (version {shown} was)",
        )
    if inputs.on_notice is None:
        # A notice nobody sees is no notice: stay off, and do not record it as shown.
        return ConsentVote(
            False,
            "opt-out policy, but the app gave no way to show the notice (on_notice)",
        )
    return ShowNotice(inputs.on_notice, inputs.store, wanted, notice_text(shown))


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
    notice_version: int | None = None,
) -> tuple[tuple[str, ConsentSource], ...]:
    """:data:`SOURCES`, bound to these settings and this state directory, for :func:`decide`.

    Nothing is read until a source is asked; the state file is read at most once.

    Args:
        on_notice: shows the opt-out notice; an :class:`AppNotice` also brings its version.
        notice_version: the version of the notice; default: the :class:`AppNotice`'s, or 1.
    """
    if isinstance(on_notice, AppNotice):
        if notice_version is None:
            notice_version = on_notice.version
        on_notice = on_notice.show
    inputs = ConsentInputs(
        settings,
        store,
        config_error,
        on_notice,
        record_notice,
        1 if notice_version is None else notice_version,
    )
    return tuple((name, functools.partial(source, inputs)) for name, source in SOURCES)


def decide(sources: tuple[tuple[str, ConsentSource], ...]) -> ConsentDecision:
    """Ask each source in order; the first that votes decides. No vote at all means off."""
    for name, source in sources:
        vote = source()
        if vote is not None:
            return ConsentDecision(vote.allowed, name, vote.reason)
    return ConsentDecision(False, "default", "no source allowed telemetry")
