# SPDX-License-Identifier: MIT OR Apache-2.0
"""The one encoding of a finished event, and its strict decoding.

Every place a finished :class:`~codeweaver_telemetry._types.Event` leaves the process as
JSON takes its shape from here:

- :func:`to_payload`: the payload dict (``event``, ``distinct_id``, ``timestamp`` as
  ISO 8601 in UTC, ``uuid``, ``properties``) that previews and ``InMemorySink`` show;
  :func:`payload_line` is that dict as one compact JSON line of the local log.
- :func:`to_message`: the same fields as a PostHog ``capture`` message for ``/batch/``;
  :func:`message_json` is that message as JSON text.
- :func:`spool_line`: the spool's line, the payload with the timestamp kept as epoch
  seconds (so a spooled event keeps its exact timestamp).

:func:`from_payload` (and :func:`from_spool_line`) reads a payload back into an event, held
to what the privacy pipeline can have made: a spool file edited by hand (or by another
program) cannot smuggle ``$identify`` or ``$set`` past it. Anything malformed is None.

This module imports nothing of the package but its vocabulary (``_types``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from codeweaver_telemetry._types import FLAG_CALLED_EVENT, LIBRARY_KEYS, Event

__all__ = [
    "from_payload",
    "from_spool_line",
    "message_json",
    "payload_line",
    "spool_line",
    "to_message",
    "to_payload",
]


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat()


# One encoder for every line: json.dumps() with arguments builds a new encoder per call.
# No NaN or Infinity (not JSON): the pipeline makes none; should one be there, it is null.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_text = _ENCODER.encode  # a str as a JSON string literal (the C encoder's fast path)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no such number)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _compact(data: Any) -> str:
    try:
        return _ENCODER.encode(data)
    except ValueError:  # a non-finite float
        return _ENCODER.encode(_finite(data))


def _parts(event: Event) -> tuple[str, str]:
    """(the properties as compact JSON, the timestamp as ISO 8601), encoded once per event:
    the wire, the local log and the spool each reuse them (a finished event's properties
    do not change)."""
    parts = event.encoded
    if parts is None:
        parts = event.encoded = (_compact(event.properties), _iso(event.timestamp))
    return parts


def to_payload(event: Event) -> dict[str, Any]:
    """The finished event as one JSON-ready dict (the shape the local log and previews use).

    ``properties`` is the event's own dict, not a copy.
    """
    return {
        "event": event.name,
        "distinct_id": event.distinct_id,
        "timestamp": _iso(event.timestamp),
        "uuid": event.uuid,
        "properties": event.properties,
    }


def payload_line(event: Event) -> str:
    """:func:`to_payload` as one line of compact JSON, non-ASCII kept (no newline)."""
    properties, timestamp = _parts(event)
    return (
        f'{{"event":{_text(event.name)},"distinct_id":{_text(event.distinct_id)},'
        f'"timestamp":"{timestamp}","uuid":{_text(event.uuid)},"properties":{properties}}}'
    )


def to_message(event: Event) -> dict[str, Any]:
    """The finished event as a PostHog ``capture`` message (one item of a ``/batch/``)."""
    return {
        "type": "capture",
        "event": event.name,
        "distinct_id": event.distinct_id,
        "properties": event.properties,
        "timestamp": _iso(event.timestamp),
        "uuid": event.uuid,
    }


def message_json(event: Event) -> str:
    """:func:`to_message` as compact JSON, non-ASCII kept: one item of a ``/batch/`` body."""
    properties, timestamp = _parts(event)
    return (
        f'{{"type":"capture","event":{_text(event.name)},'
        f'"distinct_id":{_text(event.distinct_id)},"properties":{properties},'
        f'"timestamp":"{timestamp}","uuid":{_text(event.uuid)}}}'
    )


def spool_line(event: Event) -> str:
    """The event as one line of a spool file (no newline): the payload's fields, in its
    order, with ``timestamp`` as epoch seconds. The install id it was made for is its
    ``distinct_id``; the destination is the spool file's tag, not a field."""
    properties, _ = _parts(event)
    return (
        f'{{"event":{_text(event.name)},"distinct_id":{_text(event.distinct_id)},'
        f'"timestamp":{_compact(event.timestamp)},"uuid":{_text(event.uuid)},'
        f'"properties":{properties}}}'
    )


def from_spool_line(line: bytes | str) -> Event | None:
    """One spool line read back with :func:`from_payload`; None when it is not JSON or not
    a valid payload."""
    try:
        data = json.loads(line)
    except (ValueError, TypeError):  # JSON and Unicode errors are ValueErrors
        return None
    return from_payload(data)


def from_payload(data: object) -> Event | None:
    """A payload (of :func:`to_payload` or :func:`spool_line`) as an event, or None.

    Strict: ``data`` must be a dict whose ``event``, ``distinct_id`` and ``uuid`` are
    strings, whose ``properties`` is a dict with string keys, and whose ``timestamp`` is
    epoch seconds (a number, not a bool) or an ISO 8601 string with a UTC offset, that a
    datetime can hold. The event is held to what the pipeline makes: a ``$`` event other
    than ``$feature_flag_called`` is None; ``$`` properties other than the library's
    (:data:`~codeweaver_telemetry._types.LIBRARY_KEYS`) and ``$feature/<key>`` are left
    out; ``$process_person_profile`` is False and ``$geoip_disable`` True, whatever the
    payload said.
    """
    if not isinstance(data, dict):
        return None
    name = data.get("event")
    distinct_id = data.get("distinct_id")
    uuid = data.get("uuid")
    props = data.get("properties")
    timestamp = _timestamp(data.get("timestamp"))
    if (
        not isinstance(name, str)
        or not isinstance(distinct_id, str)
        or not isinstance(uuid, str)
        or not isinstance(props, dict)
        or timestamp is None
    ):
        return None
    if name.startswith("$") and name != FLAG_CALLED_EVENT:
        return None
    if not all(isinstance(k, str) for k in props):
        return None
    kept = {k: v for k, v in props.items() if _allowed_key(k)}
    kept["$process_person_profile"] = False
    kept["$geoip_disable"] = True
    return Event(
        name=name, properties=kept, timestamp=timestamp, uuid=uuid, distinct_id=distinct_id
    )


def _allowed_key(key: str) -> bool:
    return not key.startswith("$") or key in LIBRARY_KEYS or key.startswith("$feature/")


def _timestamp(value: object) -> float | None:
    """Epoch seconds from a number or an ISO 8601 string with an offset; None when it is
    neither, or no datetime can hold it (so encoding the event again cannot fail)."""
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str):
            moment = dt.datetime.fromisoformat(value)
            if moment.utcoffset() is None:
                return None
            seconds = moment.timestamp()
        else:
            return None
        if not math.isfinite(seconds):
            return None
        dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return seconds
