# SPDX-License-Identifier: MIT OR Apache-2.0
"""The privacy pipeline every event takes, on the background worker: a list of stages.

``DEFAULT_STAGES`` is, in order:

1. :func:`serialize_stage`: the caller's snapshot (dict properties and/or a model) becomes
   JSON-safe through :func:`~codeweaver_telemetry.privacy.rules.serialize_for_telemetry`:
   the model's rules, the scrubber on every string, the secret-key denylist. Every string
   (the event name, keys, values, session metadata, flags) is made valid Unicode first, an
   unpaired surrogate becoming U+FFFD, so a finished event always encodes as UTF-8. Keys the
   caller gives that start with ``$`` are dropped: PostHog gives them special meaning
   (``$set`` would write a person profile, ``$ip`` a location).
2. :func:`limits_stage`: strings are cut to :data:`MAX_STRING_CHARS`, keys to
   :data:`MAX_KEY_CHARS`, dicts and lists to :data:`MAX_ITEMS` entries. An event whose
   properties are still larger than :data:`MAX_EVENT_BYTES` as JSON has its largest nested
   maps and lists halved until it fits (a map of counts keeps its largest entries and sums
   the rest under ``<other>``), so a full session event is trimmed, not lost; an event that
   cannot be made to fit is dropped.
3. :func:`context_stage`: the library's own properties are added last, so the caller cannot
   override them: ``$session_id``, ``$process_person_profile: false``,
   ``$geoip_disable: true``, ``$lib``, ``$lib_version``, ``$os``, ``$os_version``,
   ``$python_version`` and the session's ``$feature/<key>`` flags.

The session's metadata (serialized once, by the first event of the session that needs it)
is merged under the event's own properties in step 1, so it counts towards the limits of
step 2.

:class:`DenyStage` applies the user's deny lists (``deny_events``, ``deny_properties``) after
those three, when :func:`run` is given one (``deny=``): a denied event is dropped (reason
``denied``), denied properties are removed. Glob syntax: ``*`` matches any run of
characters (dots included), ``?`` exactly one; every other character stands for itself,
and a glob must match the whole name or path. A property's path is its keys from the top
joined with dots (``query.text``); paths go through maps only (a list is one value, removed
whole or not at all). A path that matches removes the whole value at that path; a map that
the removal leaves empty is removed too (so ``query.*`` removes ``query``), while a map that
was empty before stays. ``$process_person_profile`` and ``$geoip_disable`` are never
removed: they keep PostHog from building a person profile and from looking up a location.

A stage returns None to drop the event; a stage that raises drops the event too (never passes
it on raw). Stages are plain callables ``(Event) -> Event | None``.

:func:`run` with ``DEFAULT_STAGES`` walks the properties once: the serializer also measures
what it writes (:func:`~codeweaver_telemetry.privacy.rules.serialize_measured`), and an
event it shows to be within every limit skips step 2, which would leave it as it is.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from codeweaver_telemetry._internal import logger
from codeweaver_telemetry._types import (
    FLAG_CALLED_EVENT,
    Deferred,
    Event,
    SessionMetadata,
    Stage,
)
from codeweaver_telemetry.privacy.conversions import (
    OTHER_KEY,
    PROPERTY_KEY_LENGTH,
    finite_float,
    valid_text,
)
from codeweaver_telemetry.privacy.hashing import KeyProvider
from codeweaver_telemetry.privacy.rules import serialize_for_telemetry, serialize_measured
from codeweaver_telemetry.privacy.scrubber import TRUNCATION_MARK, scrub_cut

__all__ = [
    "DEFAULT_STAGES",
    "MAX_EVENT_BYTES",
    "MAX_ITEMS",
    "MAX_KEY_CHARS",
    "MAX_NAME_CHARS",
    "MAX_STRING_CHARS",
    "PROTECTED_PROPERTIES",
    "TRUNCATION_MARK",
    "DenyStage",
    "compile_globs",
    "context_stage",
    "library_properties",
    "limits_stage",
    "run",
    "serialize_stage",
]

MAX_STRING_CHARS = 1000
MAX_KEY_CHARS = PROPERTY_KEY_LENGTH
MAX_NAME_CHARS = 200
MAX_ITEMS = 500
MAX_EVENT_BYTES = 64 * 1024
_PRE_CUT = 2 * MAX_STRING_CHARS  # longer strings are cut (at whitespace) before scrubbing


def serialize_stage(event: Event) -> Event | None:
    """Turn the caller's snapshot into JSON-safe, scrubbed properties (one path for all).

    Events named with a leading ``$`` are dropped: PostHog reserves those names
    (``$identify``, ``$create_alias``, ``$groupidentify``...) and some write person data.
    The one exception is the library's own ``$feature_flag_called`` (an exposure, made by
    the client when the app reads a flag; an app cannot send it itself).
    Hashes use the key of the client that captured the event (``context["key_provider"]``).
    """
    return _serialize(event)[0]


def _serialize(event: Event) -> tuple[Event | None, int | None]:
    """:func:`serialize_stage`, and a bound on the size of the properties as compact JSON
    (None when the serializer cannot vouch for them being within the limits, see
    :func:`~codeweaver_telemetry.privacy.rules.serialize_measured`)."""
    name = scrub_cut(valid_text(event.name), 2 * MAX_NAME_CHARS)[:MAX_NAME_CHARS]
    if not name or (name.startswith("$") and not _library_exposure(event)):
        logger.warning("codeweaver_telemetry: an event with a reserved or empty name was dropped")
        return None, None
    keys = event.context.get("key_provider")
    metadata = event.context.get("metadata")
    props: dict[str, Any] = {}
    size: int | None = 0
    if metadata:
        props.update(_session_metadata(metadata, keys))
        size = _flat_size(props)
    if isinstance(event.model, Deferred):
        event.model = event.model.build()
    for given in (event.model, event.properties):
        if given is None or (given is event.properties and not given):
            continue
        serialized, bound = serialize_measured(
            given, max_string_chars=_PRE_CUT, key_provider=keys, max_items=MAX_ITEMS
        )
        if isinstance(serialized, dict):
            props.update(serialized)
            size = None if size is None or bound is None else size + bound
    event.properties = {k: v for k, v in props.items() if not str(k).startswith("$")}
    event.model = None
    event.name = name
    if not event.uuid:
        event.uuid = str(uuid.uuid4())
    return event, size


def _flat_size(props: dict[str, Any]) -> int | None:
    """A bound on the compact JSON size of ``props`` (serialized session metadata), as
    :func:`~codeweaver_telemetry.privacy.rules.serialize_measured` counts it; None unless
    every value is a scalar and every key and string is short (the limits would not cut).
    Containers are left to :func:`limits_stage`, which copies them: the metadata's
    own containers are shared by every event of the session."""
    chars = 0
    for key, value in props.items():
        t = type(value)
        if t is str:
            chars += len(value)
            if len(value) > MAX_KEY_CHARS:
                return None
        elif t is not int and t is not float and t is not bool and value is not None:
            return None
        if len(key) > MAX_KEY_CHARS:
            return None
        chars += len(key)
    return 6 * chars + 32 * (len(props) + 1)


def _session_metadata(metadata: SessionMetadata, keys: KeyProvider | None) -> dict[str, Any]:
    """Serialize a session's metadata the first time an event of the session needs it."""
    if metadata.serialized is None:
        try:
            serialized = serialize_for_telemetry(
                metadata.raw, max_string_chars=_PRE_CUT, key_provider=keys
            )
        except Exception as exc:  # bad metadata costs the metadata, never the events
            logger.warning(
                "codeweaver_telemetry: session metadata was dropped (%s: %s)",
                type(exc).__name__,
                exc,
            )
            serialized = {}
        metadata.serialized = {
            k: v for k, v in (serialized or {}).items() if not str(k).startswith("$")
        }
    return metadata.serialized


_SCALARS = frozenset({int, float, bool, type(None)})


def _limit(value: Any) -> Any:
    t = type(value)
    if t in _SCALARS:  # most values: numbers
        return value
    if t is str or isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            return value[: MAX_STRING_CHARS - 1] + TRUNCATION_MARK
        return value
    if t is dict or isinstance(value, dict):
        if len(value) <= MAX_ITEMS and all(len(k) <= MAX_KEY_CHARS for k in value):
            return {k: _limit(v) for k, v in value.items()}
        out = {}
        for index, (k, v) in enumerate(value.items()):
            if index >= MAX_ITEMS:
                break
            out[k[:MAX_KEY_CHARS]] = _limit(v)
        return out
    if t is list or isinstance(value, list):
        return [_limit(v) for v in value[:MAX_ITEMS]]
    return value


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _largest_container(value: Any) -> tuple[Any, int] | None:
    """The map or list to trim next, and its size in JSON bytes.

    Innermost containers first (maps of counts, lists of values): the largest of those with
    more than one entry. Only when there are none, the largest container of containers,
    so that a structure such as ``searches`` keeps its keys while its maps are trimmed.
    """
    leaf: tuple[Any, int] | None = None
    other: tuple[Any, int] | None = None
    stack = [value]
    while stack:
        current = stack.pop()
        children = current.values() if isinstance(current, dict) else current
        nested = [c for c in children if isinstance(c, (dict, list)) and c]
        stack.extend(nested)
        if current is value or len(current) < 2:
            continue
        size = _json_size(current)
        if not nested:
            if leaf is None or size > leaf[1]:
                leaf = (current, size)
        elif other is None or size > other[1]:
            other = (current, size)
    return leaf or other


def _halve(container: Any) -> None:
    """Keep the larger half of a map of counts (the rest summed under ``<other>``), the
    first half of any other dict or list."""
    if isinstance(container, list):
        del container[max(1, len(container) // 2) :]
        return
    items = list(container.items())
    keep = max(1, len(items) // 2)
    counts = all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in items)
    if counts:
        items.sort(key=lambda kv: kv[1], reverse=True)
    container.clear()
    container.update(items[:keep])
    if counts:
        container[OTHER_KEY] = container.get(OTHER_KEY, 0) + sum(v for _, v in items[keep:])


def _shrink(props: dict[str, Any], limit: int) -> bool:
    """Halve the largest nested maps and lists until ``props`` fits; False if it cannot."""
    for _ in range(64):
        if _json_size(props) <= limit:
            return True
        found = _largest_container(props)
        if found is None:
            return False
        _halve(found[0])
    return _json_size(props) <= limit


def limits_stage(event: Event) -> Event | None:
    """Cap sizes; trim the largest maps and lists of an event that is still too large (a
    map of counts keeps its largest entries and sums the rest under ``<other>``), and drop
    it only when trimming cannot make it fit."""
    event.properties = _limit(event.properties)
    if _json_size(event.properties) > MAX_EVENT_BYTES and not _shrink(
        event.properties, MAX_EVENT_BYTES
    ):
        logger.warning(
            "codeweaver_telemetry: an event %r was dropped: its properties exceed %d bytes",
            event.name,
            MAX_EVENT_BYTES,
        )
        return None
    return event


_LIBRARY_PROPERTIES: dict[str, Any] | None = None


def library_properties() -> dict[str, Any]:
    """What the library says about itself and the platform: no host, user, locale or zone."""
    global _LIBRARY_PROPERTIES
    if _LIBRARY_PROPERTIES is None:
        from codeweaver_telemetry import __version__

        system = platform.system()
        release = platform.mac_ver()[0] if system == "Darwin" else platform.release()
        _LIBRARY_PROPERTIES = {
            "$lib": "codeweaver-telemetry",
            "$lib_version": __version__,
            "$os": {"Darwin": "Mac OS X"}.get(system, system),
            # Only the leading version numbers: kernel build strings can name a machine.
            "$os_version": _leading_version(release),
            "$python_version": ".".join(str(p) for p in sys.version_info[:3]),
            "$geoip_disable": True,
            "$process_person_profile": False,
        }
    return _LIBRARY_PROPERTIES


def _leading_version(release: str) -> str:
    parts: list[str] = []
    for part in release.replace("-", ".").split("."):
        if not part.isdigit() or len(parts) == 3:
            break
        parts.append(part)
    return ".".join(parts)


def _flag_properties(flags: Mapping[Any, Any]) -> dict[str, Any]:
    """``$feature/<key>`` properties; keys and string values pass the scrubber and caps.

    Flags come from PostHog or, for a search event, from the app: neither is trusted.
    """
    out: dict[str, Any] = {}
    for index, (key, given) in enumerate(flags.items()):
        if index >= MAX_ITEMS:
            break
        if not isinstance(key, str) or not key:
            continue
        if isinstance(given, str):
            value: Any = scrub_cut(valid_text(given), MAX_KEY_CHARS)
        elif isinstance(given, bool) or (
            isinstance(given, (int, float))
            and finite_float(given) is not None
            and abs(given) < 2**53
        ):
            value = given
        else:  # NaN and infinities are not JSON; other types are no flag values
            continue
        out[f"$feature/{scrub_cut(valid_text(key), MAX_KEY_CHARS)}"] = value
    return out


def _library_exposure(event: Event) -> bool:
    """The library's own ``$feature_flag_called``: only the client sets ``flag_called`` in
    an event's context."""
    return event.name == FLAG_CALLED_EVENT and "flag_called" in event.context


def context_stage(event: Event) -> Event | None:
    """Add the session's metadata, flags and the library's own properties, last.

    An exposure (``$feature_flag_called``) gets ``$feature_flag``,
    ``$feature_flag_response`` and ``$feature/<key>`` for the flag that was read, through
    the same scrubbing as every flag property.
    """
    ctx = event.context
    props = event.properties
    flags = ctx.get("flags")
    if flags:
        props.update(_flag_properties(flags))
    called = ctx.get("flag_called")
    if called is not None and event.name == FLAG_CALLED_EVENT:
        exposure = _flag_properties(dict([called]))
        if not exposure:
            return None  # no usable key or value: no exposure to report
        ((feature, value),) = exposure.items()
        props.update(exposure)
        props["$feature_flag"] = feature.removeprefix("$feature/")
        props["$feature_flag_response"] = value
    props.update(library_properties())
    session_id = ctx.get("session_id")
    if session_id:
        props["$session_id"] = session_id
    event.properties = props
    event.context = {}
    return event


DEFAULT_STAGES: tuple[Stage, ...] = (serialize_stage, limits_stage, context_stage)
"""The privacy pipeline, in order."""

PROTECTED_PROPERTIES = frozenset({"$process_person_profile", "$geoip_disable"})
"""Top-level properties no deny glob removes: the privacy flags PostHog obeys."""


def compile_globs(globs: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern matching any of ``globs`` whole (``*``: any run, ``?``: one character,
    anything else literal); None for no globs."""
    parts = []
    for glob in globs:
        parts.append("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob))
    if not parts:
        return None
    return re.compile("(?:" + "|".join(parts) + r")\Z", re.DOTALL)


class DenyStage:
    """Drop denied events and remove denied property paths (the user's deny lists).

    Args:
        events: globs on event names; a match drops the event.
        properties: globs on dotted property paths; a match removes the value there.
    """

    def __init__(self, *, events: Iterable[str] = (), properties: Iterable[str] = ()) -> None:
        self.events = tuple(events)
        self.properties = tuple(properties)
        self._events = compile_globs(self.events)
        self._properties = compile_globs(self.properties)

    def __bool__(self) -> bool:
        return self._events is not None or self._properties is not None

    def denies_event(self, name: str) -> bool:
        """Whether an event named ``name`` is dropped."""
        return self._events is not None and self._events.match(name) is not None

    def __call__(self, event: Event) -> Event | None:
        if self._events is not None and self._events.match(event.name) is not None:
            return None
        if self._properties is not None:
            _remove_paths(event.properties, "", self._properties, top=True)
        return event


def _remove_paths(
    props: dict[str, Any], prefix: str, pattern: re.Pattern[str], *, top: bool
) -> None:
    """Remove from ``props`` (in place) every key whose path matches, and maps the removal
    leaves empty."""
    for key in list(props):
        path = prefix + str(key)
        if top and key in PROTECTED_PROPERTIES:
            continue
        if pattern.match(path) is not None:
            del props[key]
            continue
        value = props[key]
        if type(value) is dict and value:
            _remove_paths(value, path + ".", pattern, top=False)
            if not value:
                del props[key]


def run(
    event: Event,
    stages: Sequence[Stage] | Iterable[Stage] = DEFAULT_STAGES,
    on_drop: Callable[[str], None] | None = None,
    *,
    deny: DenyStage | None = None,
) -> Event | None:
    """Pass ``event`` through ``stages``, then ``deny``; None if a stage dropped it or raised.

    ``on_drop`` is told why: ``"stage_error"``, ``"denied"`` (``deny`` dropped it), or
    ``"dropped_by_<stage name>"``.

    With :data:`DEFAULT_STAGES` (the object itself), :func:`limits_stage` is skipped for an
    event whose properties the serializer has measured to be within every limit, where it
    would only copy them: the result is the same.

    .. versionchanged:: deny lists: ``deny=``.
    """
    if deny is not None:
        return _run_denying(event, stages, on_drop, deny)
    if stages is not DEFAULT_STAGES:
        return _run(event, stages, on_drop)
    try:
        done, size = _serialize(event)
    except Exception as exc:  # a failing stage drops the event, never passes it on raw
        _failed(serialize_stage, exc, on_drop)
        return None
    if done is None:
        _dropped(serialize_stage, on_drop)
        return None
    if size is not None and size <= MAX_EVENT_BYTES and len(done.properties) <= MAX_ITEMS:
        return _run(done, (context_stage,), on_drop)
    return _run(done, (limits_stage, context_stage), on_drop)


def _run_denying(
    event: Event,
    stages: Sequence[Stage] | Iterable[Stage],
    on_drop: Callable[[str], None] | None,
    deny: DenyStage,
) -> Event | None:
    """:func:`run` with a deny stage: ``stages`` first, then ``deny``."""
    done = run(event, stages, on_drop)
    if done is None:
        return None
    try:
        kept = deny(done)
    except Exception as exc:  # a failing stage drops the event, never passes it on raw
        _failed(deny, exc, on_drop)
        return None
    if kept is None and on_drop is not None:
        on_drop("denied")
    return kept


def _run(
    event: Event,
    stages: Sequence[Stage] | Iterable[Stage],
    on_drop: Callable[[str], None] | None,
) -> Event | None:
    current: Event | None = event
    for stage in stages:
        try:
            current = stage(current)  # type: ignore[arg-type]
        except Exception as exc:  # a failing stage drops the event, never passes it on raw
            _failed(stage, exc, on_drop)
            return None
        if current is None:
            _dropped(stage, on_drop)
            return None
    return current


def _stage_name(stage: Stage) -> str:
    return getattr(stage, "__name__", type(stage).__name__)


def _failed(stage: Stage, exc: Exception, on_drop: Callable[[str], None] | None) -> None:
    logger.warning(
        "codeweaver_telemetry: an event was dropped: stage %s failed (%s%s)",
        _stage_name(stage),
        type(exc).__name__,
        f": {exc}" if type(exc).__name__ == "TelemetryRuleError" else "",
    )
    if on_drop is not None:
        on_drop("stage_error")


def _dropped(stage: Stage, on_drop: Callable[[str], None] | None) -> None:
    if on_drop is not None:
        on_drop(f"dropped_by_{_stage_name(stage)}")
