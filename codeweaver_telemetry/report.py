# SPDX-License-Identifier: MIT OR Apache-2.0
"""A summary of logged payloads: counts, sessions, latencies, errors, usage and flags.

:func:`summarize` is a pure function over payload dicts (the shape :func:`read_log` yields:
``event``, ``distinct_id``, ``timestamp``, ``uuid``, ``properties``); it returns a frozen
:class:`Report`, which ``codeweaver-telemetry report`` prints and :meth:`Report.to_json`
turns into the fields of its ``--json`` document. :func:`spooled_events` counts what waits
in the spool (the only function here that reads a file).

Percentiles are nearest-rank: for ``n`` values sorted ascending, the ``p``-th percentile is
the value at 1-based rank ``ceil(p * n / 100)`` (at least 1). It is always one of the
values, so it lies between the smallest and the largest; with no values it is None.

Days are UTC calendar days of each payload's ``timestamp``; a payload whose timestamp
cannot be read counts under the day ``"unknown"`` (and is left out whenever ``since`` or
``until`` is given). Values that are not finite numbers (``null``, a string, a bool) are left
out of the distributions.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeweaver_telemetry._types import (
    ERROR_EVENT,
    FLAG_CALLED_EVENT,
    SEARCH_EVENT,
    SESSION_EVENT,
)

__all__ = [
    "LATENCY_BUCKETS_MS",
    "PERCENTILE_METHOD",
    "UNKNOWN_DAY",
    "ErrorGroup",
    "Report",
    "Summary",
    "histogram",
    "parse_instant",
    "payload_size",
    "percentile",
    "spooled_events",
    "summarize",
]

PERCENTILE_METHOD = "nearest-rank"
"""How :func:`percentile` picks its value (see the module docstring)."""
UNKNOWN_DAY = "unknown"
"""The day a payload counts under when its timestamp cannot be read."""
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000,
)  # fmt: skip
"""Upper bounds (inclusive, ms) of the search latency histogram; a last bucket (``le``
null) holds everything slower."""

_FLAG_PREFIX = "$feature/"
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def percentile(values: Sequence[float], p: int) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ``values``; None when empty.

    Args:
        values: the numbers, in any order.
        p: the percentile, 1 to 100.

    Returns:
        The value at 1-based rank ``ceil(p * n / 100)`` of the sorted values.
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))  # ceil, in integers
    return ordered[rank - 1]


def histogram(
    values: Sequence[float], bounds: Sequence[float] = LATENCY_BUCKETS_MS
) -> tuple[int, ...]:
    """How many ``values`` fall in each bucket: ``(-inf, b0]``, ``(b0, b1]``, ..., then
    one bucket above the last bound (``len(bounds) + 1`` counts)."""
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    return tuple(counts)


def parse_instant(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime; UTC when it has no offset.

    A date alone (``2026-12-01``) is its midnight, UTC. ``Z`` is read as ``+00:00``.

    Raises:
        ValueError: the text is not an ISO 8601 date or date-time.
    """
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    if _DATE_ONLY.fullmatch(text):
        day = dt.date.fromisoformat(text)
        return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


@dataclass(frozen=True)
class Summary:
    """A distribution of numbers: how many, their total, min, nearest-rank p50/p95, max."""

    count: int = 0
    total: float = 0.0
    """The sum (the largest float, with its sign, should it overflow)."""
    min: float | None = None
    p50: float | None = None
    p95: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """The summary of ``values`` (all zero and None when there are none)."""
        if not values:
            return cls()
        return cls(
            count=len(values),
            total=_total(values),
            min=min(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            max=max(values),
        )

    def to_json(self) -> dict[str, Any]:
        """``{"count", "total", "min", "p50", "p95", "max"}``."""
        return {
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "p50": self.p50,
            "p95": self.p95,
            "max": self.max,
        }


def _total(values: Sequence[float]) -> float:
    """The exact sum, or the largest float when it overflows (never inf in JSON)."""
    try:
        total = math.fsum(values)
    except OverflowError:
        total = math.inf if sum(values) > 0 else -math.inf
    if math.isinf(total):
        return math.copysign(sys.float_info.max, total)
    return total


@dataclass(frozen=True)
class ErrorGroup:
    """The ``codeweaver_error`` events of one fingerprint."""

    fingerprint: str
    """The event's ``fingerprint`` (``""`` when it has none)."""
    type: str | None
    """The exception type the group's first event names."""
    count: int
    """Error events with this fingerprint."""
    unhandled: int
    """Of those, how many say ``handled: false``."""

    def to_json(self) -> dict[str, Any]:
        """``{"fingerprint", "type", "count", "unhandled"}``."""
        return {
            "fingerprint": self.fingerprint,
            "type": self.type,
            "count": self.count,
            "unhandled": self.unhandled,
        }


@dataclass(frozen=True)
class Report:
    """What :func:`summarize` found; every mapping is sorted by key (errors: most first)."""

    since: dt.datetime | None
    until: dt.datetime | None
    payloads: int
    """Payloads in the range."""
    bytes: int
    """Their total size as compact JSON, UTF-8 (the size each takes in the log, without the
    chain's ``seq`` and ``prev``)."""
    events: dict[str, int]
    """Payloads per event name."""
    days: dict[str, int]
    """Payloads per UTC day (``YYYY-MM-DD``, or :data:`UNKNOWN_DAY`)."""
    sessions: int
    """``codeweaver_session`` events."""
    session_ids: int
    """Distinct ``$session_id`` values over all payloads."""
    session_duration_seconds: Summary
    """The session events' ``duration_seconds`` (null durations left out)."""
    search_latency_ms: Summary
    """The search events' ``execution_time_ms``."""
    errors: tuple[ErrorGroup, ...]
    """Error events by fingerprint, most first (then by fingerprint)."""
    usage: dict[str, int]
    """The session events' ``usage`` maps, summed."""
    flags: dict[str, dict[str, int]]
    """Flag key -> value seen -> payloads that carried it (``$feature/<key>``, or a
    ``$feature_flag_called``'s ``$feature_flag_response``). A value is shown as text:
    ``true``/``false`` for a bool, the variant as it is."""
    flag_exposures: dict[str, dict[str, int]]
    """The same, counting ``$feature_flag_called`` events only."""
    latency_histogram: tuple[int, ...] = ()
    """Searches per latency bucket: one count per bound of :data:`LATENCY_BUCKETS_MS`
    (latency <= the bound and above the one before), then one for slower ones."""
    deny_events: tuple[str, ...] = ()
    """The deny lists in effect (what the pipeline refuses to send)."""
    deny_properties: tuple[str, ...] = ()
    spooled: int = 0
    """Events in the spool, not sent yet (not in the log, not in the counts above)."""
    dropped: dict[str, int] | None = field(default=None)
    """Events a running client dropped, by reason; None when not known (the log cannot
    know what never reached it; only a running client counts drops)."""

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready fields (those of ``codeweaver-telemetry report --json``)."""
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "percentile_method": PERCENTILE_METHOD,
            "payloads": self.payloads,
            "bytes": self.bytes,
            "events": dict(self.events),
            "days": dict(self.days),
            "sessions": {
                "count": self.sessions,
                "session_ids": self.session_ids,
                "duration_seconds": self.session_duration_seconds.to_json(),
            },
            "search_latency_ms": self.search_latency_ms.to_json(),
            "latency_histogram": [
                {"le": bound, "count": count}
                for bound, count in zip(
                    (*LATENCY_BUCKETS_MS, None), self.latency_histogram, strict=False
                )
            ],
            "errors": [group.to_json() for group in self.errors],
            "usage": dict(self.usage),
            "flags": {k: dict(v) for k, v in self.flags.items()},
            "flag_exposures": {k: dict(v) for k, v in self.flag_exposures.items()},
            "deny_events": list(self.deny_events),
            "deny_properties": list(self.deny_properties),
            "spooled": self.spooled,
            "dropped": dict(self.dropped) if self.dropped is not None else None,
        }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _timestamp(payload: Mapping[str, Any]) -> dt.datetime | None:
    text = payload.get("timestamp")
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_instant(text)
    except (ValueError, OverflowError):
        return None


def _number(value: object) -> float | None:
    """A finite int or float (never a bool); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _flag_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return _ENCODER.encode(value)


def payload_size(payload: Mapping[str, Any]) -> int:
    """The payload's size as compact JSON (non-ASCII kept), in UTF-8 bytes."""
    return len(_ENCODER.encode(dict(payload)).encode("utf-8", "surrogatepass"))


def _in_range(
    payload: Mapping[str, Any], since: dt.datetime | None, until: dt.datetime | None
) -> bool:
    if since is None and until is None:
        return True
    when = _timestamp(payload)
    if when is None:
        return False
    return (since is None or when >= since) and (until is None or when < until)


def _sorted(counter: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counter.items()))


def summarize(
    payloads: Iterable[Mapping[str, Any]],
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    deny_events: Sequence[str] = (),
    deny_properties: Sequence[str] = (),
    spooled: int = 0,
    dropped: Mapping[str, int] | None = None,
) -> Report:
    """Summarize ``payloads`` (oldest first or in any order).

    Args:
        payloads: payload dicts, as :func:`~codeweaver_telemetry.read_log` yields them;
            anything that is not a mapping is skipped.
        since: keep payloads at or after this instant (aware; inclusive).
        until: keep payloads before this instant (aware; exclusive).
        deny_events: the deny lists in effect, reported as they are.
        deny_properties: likewise.
        spooled: events waiting in the spool (:func:`spooled_events`).
        dropped: drops by reason, when a running client can say (``client.stats()
            ["dropped"]``); None when not known.

    Returns:
        The :class:`Report`.
    """
    count = 0
    size = 0
    names: Counter[str] = Counter()
    days: Counter[str] = Counter()
    sessions = 0
    session_ids: set[str] = set()
    durations: list[float] = []
    latencies: list[float] = []
    errors: dict[str, list[Any]] = {}  # fingerprint -> [type, count, unhandled]
    usage: Counter[str] = Counter()
    flags: dict[str, Counter[str]] = {}
    exposures: dict[str, Counter[str]] = {}
    for payload in payloads:
        if not isinstance(payload, Mapping) or not _in_range(payload, since, until):
            continue
        count += 1
        size += payload_size(payload)
        name = payload.get("event")
        name = name if isinstance(name, str) else str(name)
        names[name] += 1
        when = _timestamp(payload)
        days[when.date().isoformat() if when is not None else UNKNOWN_DAY] += 1
        raw = payload.get("properties")
        props: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        session_id = props.get("$session_id")
        if isinstance(session_id, str):
            session_ids.add(session_id)
        seen_here: dict[str, str] = {}
        for key, value in props.items():
            if isinstance(key, str) and key.startswith(_FLAG_PREFIX) and len(key) > 9:
                seen_here[key[len(_FLAG_PREFIX) :]] = _flag_value(value)
        if name == SESSION_EVENT:
            sessions += 1
            duration = _number(props.get("duration_seconds"))
            if duration is not None:
                durations.append(duration)
            used = props.get("usage")
            if isinstance(used, Mapping):
                for label, calls in used.items():
                    if isinstance(calls, int) and not isinstance(calls, bool):
                        usage[str(label)] += calls
        elif name == SEARCH_EVENT:
            latency = _number(props.get("execution_time_ms"))
            if latency is not None:
                latencies.append(latency)
        elif name == ERROR_EVENT:
            fingerprint = props.get("fingerprint")
            group = errors.setdefault(
                fingerprint if isinstance(fingerprint, str) else "", [None, 0, 0]
            )
            kind = props.get("type")
            if group[0] is None and isinstance(kind, str):
                group[0] = kind
            group[1] += 1
            if props.get("handled") is False:
                group[2] += 1
        elif name == FLAG_CALLED_EVENT:
            called = props.get("$feature_flag")
            if isinstance(called, str) and called:
                if called not in seen_here:
                    seen_here[called] = _flag_value(props.get("$feature_flag_response"))
                exposures.setdefault(called, Counter())[seen_here[called]] += 1
        for key, value in seen_here.items():
            flags.setdefault(key, Counter())[value] += 1
    groups = sorted(
        (ErrorGroup(fp, kind, n, unhandled) for fp, (kind, n, unhandled) in errors.items()),
        key=lambda g: (-g.count, g.fingerprint),
    )
    return Report(
        since=since,
        until=until,
        payloads=count,
        bytes=size,
        events=_sorted(names),
        days=_sorted(days),
        sessions=sessions,
        session_ids=len(session_ids),
        session_duration_seconds=Summary.of(durations),
        search_latency_ms=Summary.of(latencies),
        latency_histogram=histogram(latencies),
        errors=tuple(groups),
        usage=_sorted(usage),
        flags={k: _sorted(v) for k, v in sorted(flags.items())},
        flag_exposures={k: _sorted(v) for k, v in sorted(exposures.items())},
        deny_events=tuple(deny_events),
        deny_properties=tuple(deny_properties),
        spooled=spooled,
        dropped=dict(dropped) if dropped is not None else None,
    )


def spooled_events(spool_dir: str | Path) -> int:
    """How many events wait in the spool directory, unsent: the lines of its segments
    (every destination's, and the ones a process is sending now). Reads nothing else and
    claims nothing; a missing or unreadable directory counts 0.

    Args:
        spool_dir: ``<state_dir>/spool``.
    """
    import zlib

    from codeweaver_telemetry._files import read_regular

    total = 0
    try:
        names = sorted(p.name for p in Path(spool_dir).iterdir())
    except OSError:
        return 0
    for name in names:
        if not name.startswith(("spool-", ".claimed-")):
            continue  # temp files (".spool-...") are writes in progress
        if not name.endswith((".jsonl.gz", ".jsonl")):
            continue
        try:
            data = read_regular(Path(spool_dir) / name, 64 * 1024 * 1024)
        except OSError:
            continue
        if data[:2] == b"\x1f\x8b":
            try:
                data = zlib.decompressobj(47).decompress(data, 256 * 1024 * 1024)
            except zlib.error:
                continue
        total += sum(1 for line in data.splitlines() if line.strip())
    return total
