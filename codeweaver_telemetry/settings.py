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
``strict`` and the numeric timing and size settings (``batch_size``,
``batch_interval_seconds``, ``max_queue_size``, ``exit_timeout_seconds``,
``flag_timeout_seconds``, ``flag_refresh_seconds``, ``request_timeout_seconds``) are used.
Any other key there (``enabled = true``, ``consent_policy``, ``posthog_host``, the API keys,
``state_dir``, ``audit_log``, ``config_file``, ...) is ignored with one warning that names it;
put such settings in the user config file or in a file named by
``CODEWEAVER__TELEMETRY__CONFIG_FILE``. A file named explicitly, or the one in the user config
directory, is trusted with every setting.

Bad settings never reach the host program as an exception: :func:`load_settings` logs one
warning naming the setting, the problem and the fix, and returns settings with telemetry
off (keeping ``state_dir`` when code, environment or a trusted config file gives one, so an
opt-out recorded then lands where it will be read later). With ``strict=True`` (or
``CODEWEAVER__TELEMETRY__STRICT=1``) it raises :class:`TelemetryConfigError` instead, for tests
and development.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from codeweaver_telemetry._internal import ENV_PREFIX, TRUE_WORDS, logger

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "DEFAULT_HOST",
    "ENV_PREFIX",
    "TelemetryConfigError",
    "TelemetrySettings",
    "config_file_candidates",
    "default_state_dir",
    "load_settings",
]

DEFAULT_HOST = "https://us.i.posthog.com"
CONFIG_FILE_NAME = "codeweaver.toml"
_FILE_ALIASES = {"tools_above_privacy": "tools_over_privacy"}

# What a codeweaver.toml found in the working directory (an untrusted repository file) may set:
# only settings that reduce collection or tune timing and size.
_UNTRUSTED_FILE_KEYS = frozenset(
    {
        "disable_telemetry",
        "strict",
        "batch_size",
        "batch_interval_seconds",
        "max_queue_size",
        "exit_timeout_seconds",
        "flag_timeout_seconds",
        "flag_refresh_seconds",
        "request_timeout_seconds",
    }
)
_UNTRUSTED_FALSE_ONLY_KEYS = frozenset({"enabled", "tools_over_privacy"})
_BOOL = TypeAdapter(bool)


class TelemetryConfigError(ValueError):
    """A telemetry setting is invalid. Raised only in strict mode; otherwise logged once."""


def _platform_dir(kind: Literal["data", "config"]) -> Path:
    home = Path.home()
    if sys.platform == "win32":
        var = "LOCALAPPDATA" if kind == "data" else "APPDATA"
        base = os.environ.get(var)
        return Path(base) if base else home / "AppData" / ("Local" if kind == "data" else "Roaming")
    if sys.platform == "darwin":
        return home / "Library" / "Application Support"
    var = "XDG_DATA_HOME" if kind == "data" else "XDG_CONFIG_HOME"
    base = os.environ.get(var)
    if base and Path(base).is_absolute():
        return Path(base)
    return home / (".local/share" if kind == "data" else ".config")


def default_state_dir() -> Path:
    """``$CODEWEAVER_HOME/telemetry`` if set, else ``<user data dir>/codeweaver/telemetry``."""
    home = os.environ.get("CODEWEAVER_HOME")
    if home:
        return Path(home).expanduser() / "telemetry"
    return _platform_dir("data") / "codeweaver" / "telemetry"


def config_file_candidates(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """The config files looked for, in order; the first that exists is read."""
    if explicit is None:
        explicit = os.environ.get(ENV_PREFIX + "CONFIG_FILE") or None
    if explicit is not None:
        return [Path(explicit).expanduser()]
    return [
        Path.cwd() / CONFIG_FILE_NAME,
        _platform_dir("config") / "codeweaver" / CONFIG_FILE_NAME,
    ]


def _user_config_file() -> Path:
    return _platform_dir("config") / "codeweaver" / CONFIG_FILE_NAME


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _read_config_table(
    explicit: str | os.PathLike[str] | None,
) -> tuple[Path | None, dict[str, Any], bool]:
    """``(path, [telemetry] table, trusted)`` of the first config file found.

    ``trusted`` is False only for ``codeweaver.toml`` found in the working directory (unless
    that is the user config file itself): such a file comes with whatever repository the user
    is in.
    """
    named = explicit is not None or bool(os.environ.get(ENV_PREFIX + "CONFIG_FILE"))
    for index, path in enumerate(config_file_candidates(explicit)):
        if not path.is_file():
            if named:
                raise TelemetryConfigError(
                    f"config_file: {path} does not exist or is not a file; "
                    f"fix the path or unset {ENV_PREFIX}CONFIG_FILE"
                )
            continue
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise TelemetryConfigError(
                f"config_file: {path} could not be read ({type(exc).__name__}: {exc}); "
                "fix or remove the file"
            ) from None
        table = data.get("telemetry", {})
        if not isinstance(table, dict):
            raise TelemetryConfigError(
                f"config_file: [telemetry] in {path} must be a table; fix or remove it"
            )
        trusted = named or index > 0 or _same_path(path, _user_config_file())
        return path, {_FILE_ALIASES.get(str(k), str(k)): v for k, v in table.items()}, trusted
    return None, {}, True


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
    """

    def __init__(self, explicit: str | os.PathLike[str] | None) -> None:
        self.explicit = explicit
        self.path: Path | None = None

    def __call__(self) -> dict[str, Any]:
        self.path, table, trusted = _read_config_table(self.explicit)
        known = set(TelemetrySettings.model_fields)
        for key in table:
            if key not in known:
                raise TelemetryConfigError(
                    f"{key}: unknown setting in [telemetry] of {self.path}"
                    f"{_did_you_mean(key, known)}; fix or remove it"
                )
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


def _did_you_mean(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name.lower(), sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TelemetrySettings(BaseSettings):
    """All telemetry settings. Build with :func:`load_settings` to get the safe behaviour."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
    )

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
        validation_alias=AliasChoices(ENV_PREFIX + "POSTHOG_API_KEY", "CODEWEAVER_POSTHOG_API_KEY"),
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
        default=1.0, ge=0, le=30, description="seconds the process may wait at exit, 0-30"
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
    heartbeat_interval_seconds: float | None = Field(
        default=None,
        ge=60,
        le=86_400,
        description="seconds between heartbeat events, 60-86400; unset means no heartbeat",
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

    @field_validator("posthog_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme == "https" and parts.hostname:
            return value.strip().rstrip("/")
        if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
            return value.strip().rstrip("/")
        raise ValueError("must be an https:// URL (http:// is allowed only for loopback)")

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
        return (init_settings, env_settings, _ConfigFileSource(explicit))  # type: ignore[return-value]


def _unknown_env_setting() -> str | None:
    known = {name.upper() for name in TelemetrySettings.model_fields}
    for var in os.environ:
        upper = var.upper()
        if upper.startswith(ENV_PREFIX) and upper[len(ENV_PREFIX) :] not in known:
            name = upper[len(ENV_PREFIX) :]
            hint = _did_you_mean(name.lower(), {k.lower() for k in known})
            return f"{var}: unknown setting{hint}; fix or unset it"
    return None


def _describe(exc: ValidationError, given_in_code: Mapping[str, Any]) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        field = str(error["loc"][0]) if error["loc"] else "settings"
        name = field.lower().removeprefix(ENV_PREFIX.lower())
        info = TelemetrySettings.model_fields.get(name)
        fix = info.description if info is not None and info.description else "a valid value"
        if name in given_in_code:
            problems.append(f"{name} (given in code): {error['msg']}; pass {fix}")
            continue
        env_name = ENV_PREFIX + name.upper()
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
    if "strict" in overrides:  # code beats the environment, as for every setting
        strict = bool(overrides["strict"])
    else:
        strict = os.environ.get(ENV_PREFIX + "STRICT", "").strip().lower() in TRUE_WORDS
    error: str | None = _unknown_env_setting()
    settings: TelemetrySettings | None = None
    if error is None:
        try:
            settings = TelemetrySettings(**overrides)
        except ValidationError as exc:
            error = _describe(exc, overrides)
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
