# SPDX-License-Identifier: MIT OR Apache-2.0
"""TelemetrySettings: code arguments, then environment, then config file, then defaults.

Environment variables use the prefix ``CODEWEAVER__TELEMETRY__`` (double underscores), e.g.
``CODEWEAVER__TELEMETRY__BATCH_SIZE=20``. The API key is also read from
``CODEWEAVER_POSTHOG_API_KEY``.

The config file is TOML with a ``[telemetry]`` table. The first of these that exists is read:

1. the path given as ``config_file=`` in code or ``CODEWEAVER__TELEMETRY__CONFIG_FILE``
   (it must exist);
2. ``codeweaver.toml`` in the working directory;
3. ``codeweaver.toml`` in the user config directory (``$XDG_CONFIG_HOME/codeweaver`` or
   ``~/.config/codeweaver`` on Linux, ``~/Library/Application Support/codeweaver`` on macOS,
   ``%APPDATA%\\codeweaver`` on Windows).

A ``codeweaver.toml`` found in the working directory comes with whatever repository you
happen to be in, so it is not trusted: it may only reduce collection or tune timing. From
that file only ``disable_telemetry``, ``enabled = false``, ``tools_over_privacy = false``,
``send_feature_flag_events = false``, ``strict`` and the numeric timing and size settings
(``batch_size``, ``batch_interval_seconds``, ``max_queue_size``, ``exit_timeout_seconds``,
``flag_timeout_seconds``, ``flag_refresh_seconds``, ``request_timeout_seconds``,
``max_retries``) and the deny lists (``deny_events``, ``deny_properties``: added to the
user's, never replacing them) are used.
Any other key there (``enabled = true``, ``consent_policy``, ``posthog_host``, the API keys,
``state_dir``, ``audit_log``, ``config_file``, ...) is ignored with one warning that names it;
put such settings in the user config file or in a file named by
``CODEWEAVER__TELEMETRY__CONFIG_FILE``. A file named explicitly, or the one in the user config
directory, is trusted with every setting.

The deny lists (``deny_events``, ``deny_properties``: a comma-separated string, or in TOML a
list of strings) are joined from every source instead of the first one winning: code, the
environment, the config file read (a working-directory file too: it may add entries, never
remove one), the user config file when a working-directory file is read instead of it, and
the deny file ``telemetry-deny.toml`` next to the user config file, which
``codeweaver-telemetry deny`` / ``allow`` edit and which is always read.

An empty (or whitespace-only) value means unset, the same way for every setting and every
source: ``CODEWEAVER__TELEMETRY__POSTHOG_API_KEY=`` in the environment, ``posthog_api_key = ""``
in the config file and ``posthog_api_key=""`` in code are all as if the setting were not
given, so the next source (or the default) applies.

The config file is read without blocking and only if it is a regular file of at most 1 MiB:
a FIFO, a device or a larger file is a configuration error, never a hang.

Bad settings never reach the host program as an exception: :func:`load_settings` logs one
warning naming the setting, the problem and the fix, and returns settings with telemetry
off (keeping ``state_dir`` when code, environment or a trusted config file gives one, so an
opt-out recorded then lands where it will be read later). With ``strict=True`` (or
``CODEWEAVER__TELEMETRY__STRICT=1``) it raises :class:`TelemetryConfigError` instead, for tests
and development. Building ``TelemetrySettings(...)`` directly raises
:class:`TelemetryConfigError` (never pydantic's ``ValidationError``) with the same message.
"""

from __future__ import annotations

import contextvars
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from codeweaver_telemetry._config import (
    API_KEY_ENV_NAMES,
    CONFIG_FILE_MAX_BYTES,
    CONFIG_FILE_NAME,
    DEFAULT_HOST,
    DENY_KEYS,
    TelemetryConfigError,
    config_file_candidates,
    default_state_dir,
    deny_file,
    parse_deny_list,
    read_toml_table,
)
from codeweaver_telemetry._config import UNTRUSTED_FALSE_ONLY_KEYS as _UNTRUSTED_FALSE_ONLY_KEYS
from codeweaver_telemetry._config import UNTRUSTED_FILE_KEYS as _UNTRUSTED_FILE_KEYS
from codeweaver_telemetry._config import env_value as _env_value
from codeweaver_telemetry._config import host_problem as _host_problem
from codeweaver_telemetry._config import is_blank as _is_text_blank
from codeweaver_telemetry._config import read_config_table as _read_config_table
from codeweaver_telemetry._config import user_config_file as _user_config_file
from codeweaver_telemetry._internal import ENV_PREFIX, logger

__all__ = [
    "CONFIG_FILE_MAX_BYTES",
    "CONFIG_FILE_NAME",
    "DEFAULT_HOST",
    "ENV_PREFIX",
    "TelemetryConfigError",
    "TelemetrySettings",
    "config_file_candidates",
    "default_state_dir",
    "load_settings",
]

_BOOL = TypeAdapter(bool)


# The config file read while building settings in this thread/context (for error messages).
_CONFIG_PATH: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "codeweaver_telemetry_config_path", default=None
)


def _is_blank(value: object) -> bool:
    """Whether a setting's value is empty or whitespace only, which means unset."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return _is_text_blank(value)


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings given in code, without the empty ones (an empty value means unset)."""
    return {key: value for key, value in values.items() if not _is_blank(value)}


def _is_false(value: object) -> bool:
    try:
        return _BOOL.validate_python(value) is False
    except ValidationError:
        return False


def _untrusted_may_set(key: str, value: object) -> bool:
    """Whether a working-directory config file may set ``key`` to ``value``."""
    if key in _UNTRUSTED_FILE_KEYS:
        return True
    return key in _UNTRUSTED_FALSE_ONLY_KEYS and _is_false(value)


class _ConfigFileSource:
    """The ``[telemetry]`` table of the first config file found (a plain settings source).

    From an untrusted file (``codeweaver.toml`` in the working directory) only the keys that
    reduce collection or tune timing are kept; the rest are dropped with one warning.

    :meth:`deny` is the source of the deny lists, first in precedence: it joins them from
    every source (see the module), reading the config file once for both.
    """

    def __init__(self, explicit: str | os.PathLike[str] | None, in_code: Mapping[str, Any]) -> None:
        self.explicit = explicit
        self.in_code = in_code
        self.path: Path | None = None
        self._read: tuple[Path | None, dict[str, Any], bool] | None = None

    def _table(self) -> tuple[Path | None, dict[str, Any], bool]:
        if self._read is None:
            self._read = _read_config_table(self.explicit)
        return self._read

    def deny(self) -> dict[str, Any]:
        """The deny lists, joined from code, environment, the config files and the deny file.

        Raises:
            TelemetryConfigError: a deny list is not a string or a list of strings, or a file
                holding one is unreadable.
        """
        path, table, trusted = self._table()
        given: list[tuple[str, str, object]] = []  # (key, where, value)
        for key in DENY_KEYS:
            if key in self.in_code:
                given.append((key, "given in code", self.in_code[key]))
            env_name = ENV_PREFIX + key.upper()
            text = _env_value(env_name)
            if text is not None:
                given.append((key, env_name, text))
        files: list[tuple[Path, dict[str, Any]]] = []
        if path is not None:
            files.append((path, table))
        if not trusted:  # the user's own file still counts for what it denies
            user_table = read_toml_table(_user_config_file(), "deny_events/deny_properties")
            if user_table is not None:
                files.append((_user_config_file(), user_table))
        deny_path = deny_file()
        deny_table = read_toml_table(deny_path, "deny_events/deny_properties")
        if deny_table is not None:
            extra = sorted(set(deny_table) - set(DENY_KEYS))
            if extra:
                raise TelemetryConfigError(
                    f"{', '.join(extra)}: not a deny setting, in {deny_path}; only "
                    "deny_events and deny_properties belong in that file; remove it"
                )
            files.append((deny_path, deny_table))
        for file_path, file_table in files:
            for key in DENY_KEYS:
                if key in file_table:
                    given.append((key, f"in [telemetry] of {file_path}", file_table[key]))
        joined: dict[str, dict[str, None]] = {}
        for key, where, value in given:
            try:
                entries = parse_deny_list(value)
            except ValueError as exc:
                raise TelemetryConfigError(
                    f"{key} ({where}): {exc}; give names or globs separated by commas"
                ) from None
            joined.setdefault(key, {}).update(dict.fromkeys(entries))
        return {key: tuple(entries) for key, entries in joined.items()}

    def __call__(self) -> dict[str, Any]:
        self.path, table, trusted = self._table()
        _CONFIG_PATH.set(self.path)
        known = set(TelemetrySettings.model_fields)
        for key in table:
            if key not in known:
                raise TelemetryConfigError(
                    f"{key}: unknown setting in [telemetry] of {self.path}"
                    f"{_did_you_mean(key, known)}; fix or remove it"
                )
        if "posthog_api_key" in table and any(_env_value(n) for n in API_KEY_ENV_NAMES):
            # The environment wins; passed on too, the file's key would be a second input
            # for the one field, which pydantic refuses as an extra input.
            table = {key: value for key, value in table.items() if key != "posthog_api_key"}
        if trusted:
            return table
        ignored = [key for key, value in table.items() if not _untrusted_may_set(key, value)]
        if ignored:
            logger.warning(
                "codeweaver_telemetry: ignored %s in [telemetry] of %s: a codeweaver.toml in "
                "the working directory may only turn telemetry off or tune timing and sizes; "
                "to use these settings, put them in the user config file (%s) or in a file "
                "named by %sCONFIG_FILE",
                ", ".join(ignored),
                self.path,
                _user_config_file(),
                ENV_PREFIX,
            )
        return {key: value for key, value in table.items() if key not in ignored}


def _deny_help(what: str) -> str:
    return (
        f"{what} never sent: comma-separated names with * and ? globs, joined from every "
        "source (a repository's codeweaver.toml may add entries, never remove one)"
    )


def _did_you_mean(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name.lower(), sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class TelemetrySettings(BaseSettings):
    """All telemetry settings. Build with :func:`load_settings` to get the safe behaviour."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        # An empty variable means unset, under either name of the API key too (the empty
        # ones are dropped before any name is looked up; whitespace-only ones as well, see
        # settings_customise_sources).
        env_ignore_empty=True,
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
        # The chained ValidationError must not echo values: a URL may carry a password.
        hide_input_in_errors=True,
    )

    if not TYPE_CHECKING:  # type checkers keep the field-typed signature pydantic gives

        def __init__(self, **values: Any) -> None:
            """Build from code arguments over the environment, config file and defaults.

            Empty values (``""``, whitespace) mean unset. A bad value raises
            :class:`TelemetryConfigError` naming the setting, where it was given and the fix.
            """
            given = {k: v for k, v in values.items() if k.startswith("_") or not _is_blank(v)}
            token = _CONFIG_PATH.set(None)
            try:
                super().__init__(**given)
            except ValidationError as exc:
                raise TelemetryConfigError(_describe(exc, given, _CONFIG_PATH.get())) from exc
            finally:
                _CONFIG_PATH.reset(token)

    disable_telemetry: bool = Field(
        default=False, description="true turns telemetry off whatever else is set"
    )
    enabled: bool | None = Field(
        default=None,
        description="true opts in (under the opt-in policy); false turns telemetry off",
    )
    consent_policy: Literal["opt-in", "opt-out"] = Field(
        default="opt-in",
        description="'opt-in' (nothing until enabled) or 'opt-out' (on after a notice run)",
    )
    tools_over_privacy: bool = Field(
        default=False,
        description="true adds scrubbed query text and keyed hashes to search events",
    )
    posthog_api_key: SecretStr | None = Field(
        default=None,
        # Only the two documented environment names: a bare POSTHOG_API_KEY belongs to
        # some other app. In code and in the config file the field name is used.
        validation_alias=AliasChoices(*API_KEY_ENV_NAMES),
        description="a PostHog project API key (phc_...); unset means the local log only",
    )
    posthog_personal_api_key: SecretStr | None = Field(
        default=None,
        description="a PostHog feature-flags secret key, for local flag evaluation",
    )
    posthog_host: str = Field(
        default=DEFAULT_HOST,
        description="an https:// URL, or http:// to 127.0.0.1, ::1 or localhost",
    )
    batch_size: int = Field(default=10, ge=1, le=1000, description="a whole number 1-1000")
    batch_interval_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="seconds between sends, above 0 and up to 3600"
    )
    max_queue_size: int = Field(
        default=1000, ge=1, le=100_000, description="a whole number 1-100000"
    )
    exit_timeout_seconds: float = Field(
        default=0.5, ge=0, le=30, description="seconds the process may wait at exit, 0-30"
    )
    flag_timeout_seconds: float = Field(
        default=0.5, ge=0, le=10, description="seconds a first flag lookup may wait, 0-10"
    )
    flag_refresh_seconds: float = Field(
        default=600.0, ge=1, description="seconds before cached flags are refetched, >= 1"
    )
    request_timeout_seconds: float = Field(
        default=3.0, gt=0, le=60, description="seconds per HTTP request, above 0 and up to 60"
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        le=100,
        description="failed tries after which an event waits in the disk spool, 0-100",
    )
    send_feature_flag_events: bool = Field(
        default=True,
        description="true sends $feature_flag_called when the app reads a flag "
        "(PostHog experiments count exposures from it)",
    )
    heartbeat_interval_seconds: float | None = Field(
        default=None,
        ge=60,
        le=86_400,
        description="seconds between heartbeat events, 60-86400; unset means no heartbeat",
    )
    spool_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        le=16 * 1024**3,
        description="bytes the disk spool may hold, 0 (no spool) to 16 GiB",
    )
    state_dir: Path | None = Field(
        default=None,
        description="a writable directory (default: $CODEWEAVER_HOME/telemetry, else the "
        "user data dir)",
    )
    audit_log: bool = Field(
        default=True, description="true keeps a local log of every payload sent"
    )
    config_file: Path | None = Field(default=None, description="a path to a TOML file")
    strict: bool = Field(
        default=False, description="true raises configuration errors instead of logging them"
    )
    deny_events: tuple[str, ...] = Field(
        default=(), description=_deny_help("event names (globs match the whole name)")
    )
    deny_properties: tuple[str, ...] = Field(
        default=(),
        description=_deny_help("dotted property paths (query.*, results.token_count)"),
    )

    @field_validator("deny_events", "deny_properties", mode="before")
    @classmethod
    def _split_deny(cls, value: object) -> tuple[str, ...]:
        return parse_deny_list(value)

    @field_validator("posthog_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        text = value.strip()
        problem = _host_problem(text)
        if problem is not None:
            raise ValueError(problem)
        return text.rstrip("/")

    @property
    def resolved_state_dir(self) -> Path:
        """The state directory in use."""
        return self.state_dir.expanduser() if self.state_dir else default_state_dir()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence, highest first: code arguments, environment, config file, defaults."""
        init_kwargs: Mapping[str, Any] = getattr(init_settings, "init_kwargs", {})
        explicit = init_kwargs.get("config_file")
        if isinstance(env_settings, EnvSettingsSource):
            # Whitespace-only counts as empty, so it means unset: drop it before any name
            # is looked up, so that it cannot hide the API key's other name either. The deny
            # lists are read by the deny source (comma lists, not JSON).
            env_settings.env_vars = {
                name: value
                for name, value in env_settings.env_vars.items()
                if (value is None or not _is_blank(value)) and name not in _DENY_ENV_NAMES
            }
        files = _ConfigFileSource(explicit, init_kwargs)
        # The deny source comes first: its joined lists win over each source's own.
        return (files.deny, init_settings, env_settings, files)  # type: ignore[return-value]


_DENY_ENV_NAMES = frozenset((ENV_PREFIX + key).lower() for key in DENY_KEYS)


def _unknown_env_setting() -> str | None:
    known = {name.upper() for name in TelemetrySettings.model_fields}
    for var, value in os.environ.items():
        upper = var.upper()
        if _is_blank(value):  # an empty variable is unset, whatever its name
            continue
        if upper.startswith(ENV_PREFIX) and upper[len(ENV_PREFIX) :] not in known:
            name = upper[len(ENV_PREFIX) :]
            hint = _did_you_mean(name.lower(), {k.lower() for k in known})
            return f"{var}: unknown setting{hint}; fix or unset it"
    return None


def _env_names(name: str) -> list[str]:
    """The environment variables that set field ``name``, in the order they are read."""
    info = TelemetrySettings.model_fields[name]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [ENV_PREFIX + name.upper()]


def _field_name(loc: str) -> str:
    """The field an error location names (a field name, or one of its aliases)."""
    lowered = loc.lower()
    for name in TelemetrySettings.model_fields:
        if lowered == name or lowered in (n.lower() for n in _env_names(name)):
            return name
    return lowered.removeprefix(ENV_PREFIX.lower())


def _describe(
    exc: ValidationError, given_in_code: Mapping[str, Any], config_path: Path | None = None
) -> str:
    """One line per problem: the setting, where it was given, what is wrong and the fix."""
    in_code = {_field_name(str(key)) for key in given_in_code if not str(key).startswith("_")}
    known = set(TelemetrySettings.model_fields)
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        name = _field_name(str(error["loc"][0])) if error["loc"] else "settings"
        info = TelemetrySettings.model_fields.get(name)
        if info is None:
            where = "given in code" if name in in_code else "given"
            problems.append(
                f"{name} ({where}): unknown setting{_did_you_mean(name, known)}; remove it"
            )
            continue
        fix = info.description or "a valid value"
        if name in in_code:
            problems.append(f"{name} (given in code): {error['msg']}; pass {fix}")
            continue
        env_name = next((var for var in _env_names(name) if _env_value(var) is not None), None)
        if env_name is None and config_path is not None:
            problems.append(
                f"{name} (in [telemetry] of {config_path}): {error['msg']}; "
                f"set it to {fix}, or remove it"
            )
            continue
        env_name = env_name or ENV_PREFIX + name.upper()
        problems.append(f"{name} ({env_name}): {error['msg']}; set it to {fix}, or unset it")
    return "; ".join(problems)


def load_settings(**overrides: Any) -> tuple[TelemetrySettings, str | None]:
    """Build settings from code, environment and config file, never raising (unless strict).

    Returns:
        ``(settings, error)``. When ``error`` is not None the settings are the defaults with
        telemetry off, and ``error`` says which setting is wrong and how to fix it.

    Raises:
        TelemetryConfigError: only in strict mode.
    """
    overrides = _given(overrides)  # an empty value means unset, in code as elsewhere
    strict = _strict(overrides)
    error: str | None = _unknown_env_setting()
    settings: TelemetrySettings | None = None
    if error is None:
        try:
            settings = TelemetrySettings(**overrides)
        except TelemetryConfigError as exc:
            error = str(exc)
        except Exception as exc:  # anything else while reading settings is still a config error
            error = f"settings could not be read ({type(exc).__name__})"
    if error is None and settings is not None:
        return settings, None
    message = f"codeweaver_telemetry: {error}. Telemetry is off until this is fixed."
    if strict:
        raise TelemetryConfigError(message)
    logger.warning("%s", message)
    fallback = TelemetrySettings.model_construct(
        disable_telemetry=True, state_dir=_fallback_state_dir(overrides)
    )
    return fallback, error


def _strict(overrides: Mapping[str, Any]) -> bool:
    """Whether strict mode is asked for, read as the ``strict`` setting itself is read."""
    value = overrides["strict"] if "strict" in overrides else _env_value(ENV_PREFIX + "STRICT")
    try:
        return _BOOL.validate_python(value) is True
    except ValidationError:  # not a boolean: reported as a bad setting, not strict
        return False


def _as_dir(value: object) -> Path | None:
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        return Path(value)
    return None


def _fallback_state_dir(overrides: Mapping[str, Any]) -> Path | None:
    """``state_dir`` as normal loading would take it (code, env, trusted config file).

    Used when another setting is invalid, so the state directory (and the opt-out stored in
    it) stays where the user put it. Cheap, and never raises: None means the default.
    """
    try:
        if "state_dir" in overrides:
            return _as_dir(overrides["state_dir"])
        name = ENV_PREFIX + "STATE_DIR"
        for var, value in os.environ.items():
            if var.upper() == name:
                return _as_dir(value)
        _, table, trusted = _read_config_table(overrides.get("config_file"))
        return _as_dir(table.get("state_dir")) if trusted else None
    except Exception:  # best effort: the error being reported is the one that matters
        return None
