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
``max_retries``) are used.
Any other key there (``enabled = true``, ``consent_policy``, ``posthog_host``, the API keys,
``state_dir``, ``audit_log``, ``config_file``, ...) is ignored with one warning that names it;
put such settings in the user config file or in a file named by
``CODEWEAVER__TELEMETRY__CONFIG_FILE``. A file named explicitly, or the one in the user config
directory, is trusted with every setting.

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
import ipaddress
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

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

from codeweaver_telemetry._files import (
    NotRegularFileError,
    TooLargeError,
    describe_os_error,
    read_regular,
)
from codeweaver_telemetry._internal import ENV_PREFIX, logger

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
CONFIG_FILE_MAX_BYTES = 1 << 20
"""The largest config file read (1 MiB); a larger one is a configuration error."""
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
        "max_retries",
    }
)
_UNTRUSTED_FALSE_ONLY_KEYS = frozenset(
    {"enabled", "tools_over_privacy", "send_feature_flag_events"}
)
_BOOL = TypeAdapter(bool)

# The config file read while building settings in this thread/context (for error messages).
_CONFIG_PATH: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "codeweaver_telemetry_config_path", default=None
)


class TelemetryConfigError(ValueError):
    """A telemetry setting is invalid.

    :func:`load_settings` raises it only in strict mode (otherwise it logs the message once);
    ``TelemetrySettings(...)`` built directly always raises it, with pydantic's
    ``ValidationError`` (inputs hidden) as ``__cause__``.
    """


def _is_blank(value: object) -> bool:
    """Whether a setting's value is empty or whitespace only, which means unset."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return isinstance(value, str) and not value.strip()


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings given in code, without the empty ones (an empty value means unset)."""
    return {key: value for key, value in values.items() if not _is_blank(value)}


def _env_value(name: str) -> str | None:
    """The environment variable ``name`` (matched as the settings match it, whatever the case),
    or None when it is unset or empty."""
    value = os.environ.get(name)
    if value is None:
        upper = name.upper()
        value = next((v for k, v in os.environ.items() if k.upper() == upper), None)
    return None if value is None or _is_blank(value) else value


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
    """The config files looked for, in order; the first that exists is read.

    An empty ``explicit`` (or ``CONFIG_FILE`` variable) means unset: the default search.
    """
    if explicit is not None and _is_blank(os.fspath(explicit)):
        explicit = None
    if explicit is None:
        explicit = _env_value(ENV_PREFIX + "CONFIG_FILE")
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
    is in. Keys whose value is an empty string are left out (an empty value means unset).

    The file is read with :func:`~codeweaver_telemetry._files.read_regular`: never blocking
    on open, only a regular file, at most :data:`CONFIG_FILE_MAX_BYTES`.
    """
    if explicit is not None and _is_blank(os.fspath(explicit)):
        explicit = None
    in_code = explicit is not None
    named = in_code or _env_value(ENV_PREFIX + "CONFIG_FILE") is not None
    if in_code:
        unset = "fix the path given as config_file in code"
    else:
        unset = f"fix the path or unset {ENV_PREFIX}CONFIG_FILE"
    for index, path in enumerate(config_file_candidates(explicit)):
        try:
            raw = read_regular(path, CONFIG_FILE_MAX_BYTES)
        except (FileNotFoundError, NotADirectoryError):
            if named:
                raise TelemetryConfigError(
                    f"config_file: {path} does not exist or is not a file; {unset}"
                ) from None
            continue
        except NotRegularFileError:
            fix = unset if named else "replace it with a regular TOML file, or remove it"
            raise TelemetryConfigError(
                f"config_file: {path} is not a regular file (a FIFO, a device or a directory); "
                f"{fix}"
            ) from None
        except TooLargeError:
            raise TelemetryConfigError(
                f"config_file: {path} is larger than {CONFIG_FILE_MAX_BYTES // (1 << 20)} MiB; "
                "keep only the [telemetry] table there, or remove the file"
            ) from None
        except OSError as exc:
            raise TelemetryConfigError(
                f"config_file: {path} could not be read ({describe_os_error(exc)}); "
                "fix its permissions or remove the file"
            ) from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
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
        return (
            path,
            {_FILE_ALIASES.get(str(k), str(k)): v for k, v in table.items() if not _is_blank(v)},
            trusted,
        )
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
        _CONFIG_PATH.set(self.path)
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


_IPV6_LOOPBACK = ipaddress.IPv6Address("::1")


def _is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 in dotted-quad form, or ``::1`` (host as parsed, no brackets)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)  # strict: "0x7f.1" or "2130706433" are refused
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_loopback
    return address == _IPV6_LOOPBACK and address.scope_id is None


class _HostError(ValueError):
    """Why a PostHog host URL is refused (the message never holds the URL itself)."""


def _url_parts(url: str) -> tuple[str, str, int | None, str]:
    """``(scheme, host, port, path)`` of ``url``, as both the HTTP stack and urlsplit read it.

    urllib3's ``parse_url`` is what ``requests`` (and so the posthog SDK) uses to decide where
    to connect; ``urlsplit`` is what most other code uses. The URL is accepted only when they
    agree on the scheme, the host and the port.
    """
    from urllib3.util import parse_url  # lazy: only when a host is validated

    try:
        split = urlsplit(url)
        split_port = split.port
        parsed = parse_url(url)
    except ValueError:  # urllib3's LocationParseError is a ValueError too
        raise _HostError("is not a valid URL (or its port is not a number 1-65535)") from None
    split_host = split.hostname or ""
    parsed_host = (parsed.host or "").lower()
    if parsed_host.startswith("[") and parsed_host.endswith("]"):
        parsed_host = parsed_host[1:-1]
    if (
        (parsed.scheme or "") != split.scheme.lower()
        or parsed_host != split_host
        or parsed.port != split_port
    ):
        raise _HostError(
            "is ambiguous: URL parsers disagree on its host or port (write a plain "
            "scheme://host[:port][/path], with an ASCII host name)"
        )
    return split.scheme.lower(), split_host, split_port, parsed.path or ""


def _host_problem(value: str) -> str | None:
    """Why ``value`` (already stripped) may not be the PostHog host, or None when it may."""
    if not value:
        return "is empty"
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return "must not contain spaces or control characters"
    if "\\" in value:
        return "must not contain a backslash"
    if "@" in value:
        return "must not contain user-info (user:password@)"
    if "?" in value or "#" in value:
        return "must not contain a query (?) or a fragment (#)"
    try:
        scheme, host, port, path = _url_parts(value)
        if scheme not in {"http", "https"}:
            return "must be an https:// URL (http:// is allowed only for loopback)"
        if not host:
            return "has no host name"
        if "%" in host:
            return "must not contain a percent-encoded host or an IPv6 zone"
        if port is not None and not 1 <= port <= 65535:
            return "has a port outside 1-65535"
        # Round trip: the URL rebuilt from its parts reads the same way again.
        netloc = f"[{host}]" if ":" in host else host
        rebuilt = f"{scheme}://{netloc}{'' if port is None else f':{port}'}{path}"
        if _url_parts(rebuilt)[:3] != (scheme, host, port):
            return "does not read the same once normalised; write a plain scheme://host[:port]"
    except _HostError as exc:
        return str(exc)
    if scheme == "http" and not _is_loopback(host):
        return (
            "must be an https:// URL (http:// is allowed only for loopback: localhost, "
            "127.x.x.x or [::1])"
        )
    return None


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
            # is looked up, so that it cannot hide the API key's other name either.
            env_settings.env_vars = {
                name: value
                for name, value in env_settings.env_vars.items()
                if value is None or not _is_blank(value)
            }
        return (init_settings, env_settings, _ConfigFileSource(explicit))  # type: ignore[return-value]


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
