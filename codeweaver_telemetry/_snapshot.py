# SPDX-License-Identifier: MIT OR Apache-2.0
"""What the caller's thread does to an event before it is queued: a snapshot of the caller's
data (later mutation cannot change what is sent), its uuid and its timestamp."""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import PurePath
from typing import Any

from codeweaver_telemetry._internal import in_forked_child, logger

__all__ = ["UncopyableValue", "epoch", "metadata_snapshot", "new_uuid", "snapshot", "uuid7"]

_IMMUTABLE_TYPES = frozenset({str, int, float, bool, type(None), bytes})
_IMMUTABLE = (
    str,
    int,
    float,
    bytes,
    enum.Enum,
    dt.date,
    dt.time,
    dt.timedelta,
    PurePath,
)
# Immutable too, checked only when their module is loaded (a value can be one only then):
# importing uuid and decimal would cost every client's start-up a few milliseconds.
_LATE_IMMUTABLE = (("uuid", "UUID"), ("decimal", "Decimal"))
_SNAPSHOT_DEPTH = 32


def snapshot(value: Any, depth: int = 0) -> Any:
    """Copy containers so later mutation by the caller cannot change what is sent."""
    t = type(value)
    if t in _IMMUTABLE_TYPES or isinstance(value, _IMMUTABLE):
        return value
    if depth >= _SNAPSHOT_DEPTH:
        return "<max_depth>"
    if t is dict or isinstance(value, Mapping):
        return {k: snapshot(v, depth + 1) for k, v in value.items()}
    if t is list:
        return [snapshot(v, depth + 1) for v in value]
    if t is tuple:
        return tuple(snapshot(v, depth + 1) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    if _late_immutable(value):
        return value
    try:
        import copy

        return copy.deepcopy(value)
    except Exception:  # what cannot be copied is serialized now (rules and scrubber apply)
        from codeweaver_telemetry.privacy.rules import serialize_for_telemetry

        try:
            wrapped = serialize_for_telemetry({"v": value})
        except Exception:
            wrapped = {}
        if "v" in wrapped:
            return wrapped["v"]
        return UncopyableValue()  # no JSON-safe form either: it is not sent


def _late_immutable(value: object) -> bool:
    """Whether ``value`` is a ``uuid.UUID`` or a ``decimal.Decimal``."""
    for module_name, name in _LATE_IMMUTABLE:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(value, getattr(module, name)):
            return True
    return False


def metadata_snapshot(metadata: object) -> dict[str, Any]:
    """A snapshot of session metadata; what cannot be used is left out (one warning).

    The session starts whatever the metadata is: a list, a number, a string or a mapping
    that fails while it is read costs the metadata, never the session.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        logger.warning(
            "codeweaver_telemetry: session metadata must be a mapping, not %s; it was ignored",
            type(metadata).__name__,
        )
        return {}
    copied: dict[Any, Any] = {}
    failed: Exception | None = None
    try:
        for key, value in metadata.items():
            try:
                copied[key] = snapshot(value)
            except Exception as exc:  # this value only
                failed = exc
    except Exception as exc:  # iterating the mapping itself failed: keep what was read
        failed = exc
    if failed is not None:
        logger.warning(
            "codeweaver_telemetry: session metadata could not be read whole (%s); what "
            "could not be read was ignored",
            type(failed).__name__,
        )
    return copied


class UncopyableValue:
    """Stands in for a caller's object that could not be snapshotted; never sent."""

    __slots__ = ()


# Event uuids (version 4 layout): 74 random bits drawn once per process, then a counter
# from a random start in the last 48 bits. Unique, not secret, and cheap on the caller's
# thread (about a twelfth of str(uuid.uuid4())): only uniqueness matters to PostHog, which
# drops an event whose uuid it already has. Drawn from the OS, so an app's random.seed(42)
# cannot make two runs send the same uuids, and drawn again in a forked child.
_UUID_TEMPLATE = ""
_UUID_COUNTER: Iterator[int] = iter(())


def _renew_uuids() -> None:
    global _UUID_TEMPLATE, _UUID_COUNTER
    h = secrets.token_hex(10)
    variant = "89ab"[int(h[15], 16) & 3]
    _UUID_TEMPLATE = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{variant}{h[16:19]}-%012x"
    _UUID_COUNTER = itertools.count(secrets.randbelow(1 << 47))


def new_uuid() -> str:
    """A new event uuid."""
    return _UUID_TEMPLATE % (next(_UUID_COUNTER) & 0xFFFFFFFFFFFF)


_renew_uuids()
in_forked_child(_renew_uuids)


def epoch(timestamp: object) -> float:
    """Seconds since the epoch for an aware datetime; the time now (and one warning) else."""
    if isinstance(timestamp, dt.datetime) and timestamp.utcoffset() is not None:
        try:
            return timestamp.timestamp()
        except (OverflowError, OSError, ValueError):
            pass
    what = (
        "a naive datetime (give one with a time zone, such as datetime.now(timezone.utc))"
        if isinstance(timestamp, dt.datetime)
        else f"a {type(timestamp).__name__}, not a timezone-aware datetime"
    )
    logger.warning(
        "codeweaver_telemetry: an event's timestamp was refused: %s; the capture time is used",
        what,
    )
    return time.time()


def uuid7() -> str:
    """A UUID version 7 (time-ordered), the form PostHog expects for ``$session_id``."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    h = f"{value:032x}"  # the canonical form, as str(uuid.UUID(int=value)) writes it
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
