# SPDX-License-Identifier: MIT OR Apache-2.0
"""Where settings come from, without pydantic: paths, the config file, the host check, and
the quick resolver a client starts with.

:class:`~codeweaver_telemetry.settings.TelemetrySettings` (pydantic-settings) is the public,
typed model and the one place that reports a bad setting. Building it costs about 100 ms of
imports, so :func:`resolve` reads the same sources (environment, config file, defaults) for
``get_telemetry_client()`` and answers only when every value is one it reads exactly as the
model does: plain words, numbers and URLs. For anything else (a value out of range, an
unknown variable, a malformed file, an unusual spelling) it answers None, and the caller
builds the model, which gives the one clear message. A property test holds the two to
agreement.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from codeweaver_telemetry._files import (
    NotRegularFileError,
    TooLargeError,
    describe_os_error,
    read_regular,
)
from codeweaver_telemetry._internal import ENV_PREFIX

if TYPE_CHECKING:
    from codeweaver_telemetry.settings import TelemetrySettings

__all__ = [
    "CONFIG_FILE_MAX_BYTES",
    "CONFIG_FILE_NAME",
    "DEFAULT_HOST",
    "DENY_FILE_NAME",
    "DENY_KEYS",
    "FIELDS",
    "ResolvedSettings",
    "TelemetryConfigError",
    "config_file_candidates",
    "default_state_dir",
    "deny_file",
    "parse_deny_list",
    "resolve",
]

DEFAULT_HOST = "https://us.i.posthog.com"
CONFIG_FILE_NAME = "codeweaver.toml"
CONFIG_FILE_MAX_BYTES = 1 << 20
"""The largest config file read (1 MiB); a larger one is a configuration error."""
FILE_ALIASES = {"tools_above_privacy": "tools_over_privacy"}
DENY_KEYS = ("deny_events", "deny_properties")
"""The deny-list settings: their values from every source are joined, never replaced."""
DENY_FILE_NAME = "telemetry-deny.toml"
"""The trusted file ``codeweaver-telemetry deny`` / ``allow`` edit, in the user config
directory's ``codeweaver`` folder; always read, whichever config file is."""

# What a codeweaver.toml found in the working directory (an untrusted repository file) may set:
# only settings that reduce collection or tune timing and size.
UNTRUSTED_FILE_KEYS = frozenset(
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
        # Deny lists only remove data; a repository's entries are added to the user's.
        "deny_events",
        "deny_properties",
    }
)
UNTRUSTED_FALSE_ONLY_KEYS = frozenset({"enabled", "tools_over_privacy", "send_feature_flag_events"})


class TelemetryConfigError(ValueError):
    """A telemetry setting is invalid.

    :func:`~codeweaver_telemetry.settings.load_settings` raises it only in strict mode
    (otherwise it logs the message once); ``TelemetrySettings(...)`` built directly always
    raises it, with pydantic's ``ValidationError`` (inputs hidden) as ``__cause__``.
    """


# -- the fields ---------------------------------------------------------------------------------

_Kind = Literal[
    "bool", "opt_bool", "policy", "secret", "host", "int", "float", "opt_float", "path", "deny"
]


class FieldSpec:
    """One setting as the quick resolver reads it: its kind, default and bounds.

    The same as the ``TelemetrySettings`` field of that name (a test holds them equal).
    """

    __slots__ = ("default", "ge", "gt", "kind", "le")

    def __init__(
        self,
        kind: _Kind,
        default: object,
        *,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
    ) -> None:
        self.kind = kind
        self.default = default
        self.ge = ge
        self.gt = gt
        self.le = le

    def in_bounds(self, value: float) -> bool:
        """Whether ``value`` meets the field's bounds."""
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
        )


FIELDS: dict[str, FieldSpec] = {
    "disable_telemetry": FieldSpec("bool", False),
    "enabled": FieldSpec("opt_bool", None),
    "consent_policy": FieldSpec("policy", "opt-in"),
    "tools_over_privacy": FieldSpec("bool", False),
    "posthog_api_key": FieldSpec("secret", None),
    "posthog_personal_api_key": FieldSpec("secret", None),
    "posthog_host": FieldSpec("host", DEFAULT_HOST),
    "batch_size": FieldSpec("int", 10, ge=1, le=1000),
    "batch_interval_seconds": FieldSpec("float", 60.0, gt=0, le=3600),
    "max_queue_size": FieldSpec("int", 1000, ge=1, le=100_000),
    "exit_timeout_seconds": FieldSpec("float", 0.5, ge=0, le=30),
    "flag_timeout_seconds": FieldSpec("float", 0.5, ge=0, le=10),
    "flag_refresh_seconds": FieldSpec("float", 600.0, ge=1),
    "request_timeout_seconds": FieldSpec("float", 3.0, gt=0, le=60),
    "max_retries": FieldSpec("int", 3, ge=0, le=100),
    "send_feature_flag_events": FieldSpec("bool", True),
    "heartbeat_interval_seconds": FieldSpec("opt_float", None, ge=60, le=86_400),
    "spool_max_bytes": FieldSpec("int", 64 * 1024 * 1024, ge=0, le=16 * 1024**3),
    "state_dir": FieldSpec("path", None),
    "audit_log": FieldSpec("bool", True),
    "config_file": FieldSpec("path", None),
    "strict": FieldSpec("bool", False),
    "deny_events": FieldSpec("deny", ()),
    "deny_properties": FieldSpec("deny", ()),
}
"""Every setting, in the order of ``TelemetrySettings``."""

# The environment names of the API key, in the order they are read (besides these, each
# setting is read from ENV_PREFIX + its name, in any case).
API_KEY_ENV_NAMES = (ENV_PREFIX + "POSTHOG_API_KEY", "CODEWEAVER_POSTHOG_API_KEY")


# -- values and paths ---------------------------------------------------------------------------


def is_blank(value: object) -> bool:
    """Whether a setting's value is an empty or whitespace-only string, which means unset."""
    return isinstance(value, str) and not value.strip()


def env_value(name: str) -> str | None:
    """The environment variable ``name`` (matched as the settings match it, whatever the case),
    or None when it is unset or empty."""
    value = os.environ.get(name)
    if value is None:
        upper = name.upper()
        value = next((v for k, v in os.environ.items() if k.upper() == upper), None)
    return None if value is None or is_blank(value) else value


def platform_dir(kind: Literal["data", "config"]) -> Path:
    """The user data or config directory of this platform."""
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
    return platform_dir("data") / "codeweaver" / "telemetry"


def config_file_candidates(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """The config files looked for, in order; the first that exists is read.

    An empty ``explicit`` (or ``CONFIG_FILE`` variable) means unset: the default search.
    """
    if explicit is not None and is_blank(os.fspath(explicit)):
        explicit = None
    if explicit is None:
        explicit = env_value(ENV_PREFIX + "CONFIG_FILE")
    if explicit is not None:
        return [Path(explicit).expanduser()]
    return [
        Path.cwd() / CONFIG_FILE_NAME,
        platform_dir("config") / "codeweaver" / CONFIG_FILE_NAME,
    ]


def user_config_file() -> Path:
    """The config file in the user config directory (always trusted)."""
    return platform_dir("config") / "codeweaver" / CONFIG_FILE_NAME


def deny_file() -> Path:
    """The deny-list file the CLI edits (``<user config dir>/codeweaver/telemetry-deny.toml``)."""
    return platform_dir("config") / "codeweaver" / DENY_FILE_NAME


def parse_deny_list(value: object) -> tuple[str, ...]:
    """A deny list as given (a comma-separated string, or a list of such strings) as a tuple
    of entries: each stripped, empty ones left out, duplicates dropped (first kept).

    Raises:
        ValueError: ``value`` is neither a string nor a list or tuple of strings.
    """
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError("must be a comma-separated string or a list of strings")
    out: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str):
            raise ValueError("must be a comma-separated string or a list of strings")
        for part in item.split(","):
            entry = part.strip()
            if entry:
                out[entry] = None
    return tuple(out)


def read_toml_table(path: Path, label: str) -> dict[str, Any] | None:
    """The ``[telemetry]`` table of ``path`` (empty-string values left out), or None when
    the file does not exist. ``label`` names the setting in error messages.

    Raises:
        TelemetryConfigError: the file is not a regular file, too large, unreadable or not
            TOML, or its ``[telemetry]`` is not a table.
    """
    try:
        raw = read_regular(path, CONFIG_FILE_MAX_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except NotRegularFileError:
        raise TelemetryConfigError(
            f"{label}: {path} is not a regular file; replace it with a regular TOML file, "
            "or remove it"
        ) from None
    except TooLargeError:
        raise TelemetryConfigError(
            f"{label}: {path} is larger than {CONFIG_FILE_MAX_BYTES // (1 << 20)} MiB; "
            "fix or remove the file"
        ) from None
    except OSError as exc:
        raise TelemetryConfigError(
            f"{label}: {path} could not be read ({describe_os_error(exc)}); "
            "fix its permissions or remove the file"
        ) from None
    data = _parse_toml(raw, path, label)
    table = data.get("telemetry", {})
    if not isinstance(table, dict):
        raise TelemetryConfigError(
            f"{label}: [telemetry] in {path} must be a table; fix or remove it"
        )
    return {str(k): v for k, v in table.items() if not is_blank(v)}


def _parse_toml(raw: bytes, path: Path, label: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TelemetryConfigError(
            f"{label}: {path} could not be read ({type(exc).__name__}: {exc}); "
            "fix or remove the file"
        ) from None
    return data


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def read_config_table(
    explicit: str | os.PathLike[str] | None,
) -> tuple[Path | None, dict[str, Any], bool]:
    """``(path, [telemetry] table, trusted)`` of the first config file found.

    ``trusted`` is False only for ``codeweaver.toml`` found in the working directory (unless
    that is the user config file itself): such a file comes with whatever repository the user
    is in. Keys whose value is an empty string are left out (an empty value means unset).

    The file is read with :func:`~codeweaver_telemetry._files.read_regular`: never blocking
    on open, only a regular file, at most :data:`CONFIG_FILE_MAX_BYTES`.

    Raises:
        TelemetryConfigError: the file is named but missing, not a regular file, too large,
            unreadable or not TOML, or its ``[telemetry]`` is not a table.
    """
    if explicit is not None and is_blank(os.fspath(explicit)):
        explicit = None
    in_code = explicit is not None
    named = in_code or env_value(ENV_PREFIX + "CONFIG_FILE") is not None
    if in_code:
        unset = "fix the path given as config_file in code"
    else:
        unset = f"fix the path or unset {ENV_PREFIX}CONFIG_FILE"
    for index, path in enumerate(config_file_candidates(explicit)):
        try:
            raw = read_regular(path, CONFIG_FILE_MAX_BYTES)
        except (FileNotFoundError, NotADirectoryError):
            if named:
                raise TelemetryConfigError(f"config_file: {path} does not exist; {unset}") from None
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
        data = _parse_toml(raw, path, "config_file")
        table = data.get("telemetry", {})
        if not isinstance(table, dict):
            raise TelemetryConfigError(
                f"config_file: [telemetry] in {path} must be a table; fix or remove it"
            )
        trusted = named or index > 0 or _same_path(path, user_config_file())
        return (
            path,
            {FILE_ALIASES.get(str(k), str(k)): v for k, v in table.items() if not is_blank(v)},
            trusted,
        )
    return None, {}, True


# -- the PostHog host ---------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 in dotted-quad form, or ``::1`` (host as parsed, no brackets)."""
    if host == "localhost":
        return True
    import ipaddress

    try:
        address = ipaddress.ip_address(host)  # strict: "0x7f.1" or "2130706433" are refused
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address.is_loopback
    return address == ipaddress.IPv6Address("::1") and address.scope_id is None


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


# A plain URL: http(s), a DNS name whose last label starts with a letter, a dotted quad
# without leading zeros, or [::1]; an optional port 1-65535 without leading zeros; a path of
# unreserved characters. Every parser reads such a URL the same way, so it needs no urllib3.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_URL = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>(?:" + _LABEL + r"\.)*[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"|(?:" + _OCTET + r"\.){3}" + _OCTET + r"|\[::1\])"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
    r"(?P<path>(?:/[A-Za-z0-9._~-]*)*)",
    re.ASCII,
)


def host_problem(value: str) -> str | None:
    """Why ``value`` (already stripped) may not be the PostHog host, or None when it may."""
    if plain_host_ok(value):
        return None
    return checked_host_problem(value)


def plain_host_ok(value: str) -> bool:
    """Whether ``value`` is a plain URL that may be the PostHog host, read without urllib3.

    True only when :func:`checked_host_problem` finds no problem either (a property test
    holds them to that); False says nothing, the full check decides.
    """
    plain = _PLAIN_URL.fullmatch(value)
    if plain is None or int(plain["port"] or 1) > 65535 or len(plain["host"]) > 253:
        return False
    return plain["scheme"] == "https" or is_loopback(plain["host"].lower().strip("[]"))


def checked_host_problem(value: str) -> str | None:
    """:func:`host_problem` in full: both URL parsers must read ``value`` the same way."""
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
    if scheme == "http" and not is_loopback(host):
        return (
            "must be an https:// URL (http:// is allowed only for loopback: localhost, "
            "127.x.x.x or [::1])"
        )
    return None


# -- what the client reads ----------------------------------------------------------------------


if TYPE_CHECKING:  # only annotations name them: no Protocol classes built at start-up
    from typing import Protocol

    class SecretValue(Protocol):
        """A secret setting: pydantic's ``SecretStr``, or :class:`Secret`."""

        def get_secret_value(self) -> str:
            """The secret itself."""
            ...

    class SettingsView(Protocol):
        """What the client's start-up and core read of the settings: ``TelemetrySettings``, or
        the :class:`ResolvedSettings` the quick resolver returns."""

        @property
        def disable_telemetry(self) -> bool: ...
        @property
        def enabled(self) -> bool | None: ...
        @property
        def consent_policy(self) -> Literal["opt-in", "opt-out"]: ...
        @property
        def tools_over_privacy(self) -> bool: ...
        @property
        def posthog_api_key(self) -> SecretValue | None: ...
        @property
        def posthog_personal_api_key(self) -> SecretValue | None: ...
        @property
        def posthog_host(self) -> str: ...
        @property
        def batch_size(self) -> int: ...
        @property
        def batch_interval_seconds(self) -> float: ...
        @property
        def max_queue_size(self) -> int: ...
        @property
        def exit_timeout_seconds(self) -> float: ...
        @property
        def flag_timeout_seconds(self) -> float: ...
        @property
        def flag_refresh_seconds(self) -> float: ...
        @property
        def request_timeout_seconds(self) -> float: ...
        @property
        def max_retries(self) -> int: ...
        @property
        def send_feature_flag_events(self) -> bool: ...
        @property
        def heartbeat_interval_seconds(self) -> float | None: ...
        @property
        def spool_max_bytes(self) -> int: ...
        @property
        def audit_log(self) -> bool: ...
        @property
        def deny_events(self) -> tuple[str, ...]: ...
        @property
        def deny_properties(self) -> tuple[str, ...]: ...
        @property
        def resolved_state_dir(self) -> Path: ...
        @property
        def model_fields_set(self) -> set[str]: ...


class Secret:
    """A secret setting read by :func:`resolve`; its repr never shows the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        """The secret itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class ResolvedSettings:
    """Settings read by :func:`resolve`: the values ``TelemetrySettings()`` would hold.

    :meth:`to_settings` builds that model from them (without reading any source again).
    """

    disable_telemetry: bool
    enabled: bool | None
    consent_policy: Literal["opt-in", "opt-out"]
    tools_over_privacy: bool
    posthog_api_key: Secret | None
    posthog_personal_api_key: Secret | None
    posthog_host: str
    batch_size: int
    batch_interval_seconds: float
    max_queue_size: int
    exit_timeout_seconds: float
    flag_timeout_seconds: float
    flag_refresh_seconds: float
    request_timeout_seconds: float
    max_retries: int
    send_feature_flag_events: bool
    heartbeat_interval_seconds: float | None
    spool_max_bytes: int
    state_dir: Path | None
    audit_log: bool
    config_file: Path | None
    strict: bool
    deny_events: tuple[str, ...]
    deny_properties: tuple[str, ...]

    def __init__(self, values: Mapping[str, object]) -> None:
        for name, field in FIELDS.items():
            setattr(self, name, values.get(name, field.default))
        self._fields_set = frozenset(values)

    @property
    def model_fields_set(self) -> set[str]:
        """The settings a source gave (the others are defaults), as pydantic names them."""
        return set(self._fields_set)

    @property
    def resolved_state_dir(self) -> Path:
        """The state directory in use."""
        return self.state_dir.expanduser() if self.state_dir else default_state_dir()

    def to_settings(self) -> TelemetrySettings:
        """The same settings as a ``TelemetrySettings`` model (imports pydantic)."""
        from pydantic import SecretStr

        from codeweaver_telemetry.settings import TelemetrySettings

        values: dict[str, Any] = {name: getattr(self, name) for name in FIELDS}
        for name in ("posthog_api_key", "posthog_personal_api_key"):
            secret = values[name]
            if secret is not None:
                values[name] = SecretStr(secret.get_secret_value())
        return TelemetrySettings.model_construct(_fields_set=set(self._fields_set), **values)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in FIELDS)
        return f"ResolvedSettings({shown})"


# -- the quick resolver -------------------------------------------------------------------------

_TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "f", "n"})
_INT = re.compile(r"(?:0|[1-9][0-9]{0,11})", re.ASCII)
_FLOAT = re.compile(r"(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,12})?", re.ASCII)


_KNOWN_UPPER = frozenset(name.upper() for name in FIELDS)


class _Unsure(Exception):
    """A value the quick resolver does not read with certainty: build the model instead."""


def _from_env(field: FieldSpec, text: str) -> object:
    """An environment value, as the model reads it; :class:`_Unsure` when in doubt."""
    kind = field.kind
    if kind in ("bool", "opt_bool"):
        word = text.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _Unsure
    if kind == "int":
        if _INT.fullmatch(text) is None:
            raise _Unsure
        return _bounded(field, int(text))
    if kind in ("float", "opt_float"):
        if _FLOAT.fullmatch(text) is None:
            raise _Unsure
        return _bounded(field, float(text))
    return _from_text(field, text)


def _from_file(field: FieldSpec, value: object) -> object:
    """A config file value (a TOML type), as the model reads it; :class:`_Unsure` when in
    doubt."""
    kind = field.kind
    if kind in ("bool", "opt_bool"):
        if isinstance(value, bool):
            return value
        raise _Unsure
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return _bounded(field, value)
        raise _Unsure
    if kind in ("float", "opt_float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number):
                return _bounded(field, number)
        raise _Unsure
    if isinstance(value, str):
        return _from_text(field, value)
    raise _Unsure


def _bounded(field: FieldSpec, value: float) -> Any:
    if not field.in_bounds(value):
        raise _Unsure
    return value


def _from_text(field: FieldSpec, text: str) -> object:
    kind = field.kind
    if kind == "policy":
        if text in ("opt-in", "opt-out"):
            return text
        raise _Unsure
    if kind == "secret":
        return Secret(text)
    if kind == "path":
        return Path(text)
    if kind == "deny":  # never read here: resolve() steps aside for deny lists
        raise _Unsure
    if kind == "host":
        stripped = text.strip()
        if host_problem(stripped) is not None:
            raise _Unsure
        return stripped.rstrip("/")
    raise _Unsure


def _untrusted_may_set(key: str, value: object) -> bool:
    """Whether a working-directory config file surely may set ``key`` to ``value``."""
    return key in UNTRUSTED_FILE_KEYS or (key in UNTRUSTED_FALSE_ONLY_KEYS and value is False)


def _environment() -> dict[str, str]:
    """The environment as the settings read it: names in lower case (the last spelling wins),
    and empty or whitespace-only values dropped, as unset."""
    lowered = {name.lower(): value for name, value in os.environ.items() if value != ""}
    return {name: value for name, value in lowered.items() if not is_blank(value)}


def _env_name(name: str) -> tuple[str, ...]:
    if name == "posthog_api_key":
        return tuple(n.lower() for n in API_KEY_ENV_NAMES)
    return ((ENV_PREFIX + name).lower(),)


def resolve() -> ResolvedSettings | None:
    """The settings from environment, config file and defaults, without pydantic.

    Returns None unless every value given is one this reads exactly as ``TelemetrySettings``
    does; the caller then builds the model (through ``load_settings``), which reports
    anything wrong. Deny lists are left to the model: any deny setting (in the environment,
    the config file read, the deny file, or the user config file behind a working-directory
    file) gives None. No side effects: nothing is logged or written.
    """
    try:
        return _resolve()
    except Exception:  # _Unsure, a config file error, or anything unforeseen: the model decides
        return None


def _resolve() -> ResolvedSettings:
    for name, value in os.environ.items():
        upper = name.upper()  # as load_settings looks for unknown settings
        if (
            upper.startswith(ENV_PREFIX)
            and not is_blank(value)
            and upper[len(ENV_PREFIX) :] not in _KNOWN_UPPER
        ):
            raise _Unsure  # an unknown setting: the model names it
    environment = _environment()
    values: dict[str, object] = {}
    for name, field in FIELDS.items():
        for env_name in _env_name(name):
            text = environment.get(env_name)
            if text is not None:
                values[name] = _from_env(field, text)
                break
    if os.path.lexists(deny_file()):
        raise _Unsure  # deny lists: the model joins them
    _, table, trusted = read_config_table(None)
    if not trusted and os.path.lexists(user_config_file()):
        raise _Unsure  # its deny lists count too: the model reads them
    for key, value in table.items():
        spec = FIELDS.get(key)
        if spec is None:
            raise _Unsure  # an unknown setting: the model names it
        if not trusted and not _untrusted_may_set(key, value):
            raise _Unsure  # ignored with a warning: the model's source logs it
        if key not in values:  # the environment wins
            values[key] = _from_file(spec, value)
    return ResolvedSettings(values)
