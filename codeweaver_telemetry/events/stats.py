# SPDX-License-Identifier: MIT OR Apache-2.0
"""Per-session activity statistics with bounded memory, however long the session runs.

:class:`SessionStatistics` counts what a session did (requests, searches, tokens, languages,
failovers, setup, usage, timings, errors) behind one lock, and :meth:`SessionStatistics.snapshot`
turns that into a plain dict for an event. Latencies go into a :class:`LatencySketch`, a
log-bucket histogram that answers percentiles within 1% relative error in at most
:data:`MAX_BUCKETS` buckets. Every string-keyed map keeps at most :data:`MAX_KEYS` keys (plus
``"<other>"``), each cut to :data:`MAX_KEY_CHARS` characters.

Recording never raises: input of the wrong type is dropped quietly. The keys are stored as
given (cut to length); scrubbing happens later in the pipeline.
"""

from __future__ import annotations

import enum
import functools
import math
import numbers
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, ParamSpec, TypedDict, cast

import attrs

from codeweaver_telemetry.events._props import Prop
from codeweaver_telemetry.events.errors import type_name
from codeweaver_telemetry.privacy.conversions import (
    MAX_COUNTED_KEYS,
    OTHER_KEY,
    STATISTICS_KEY_LENGTH,
    finite_float,
)

__all__ = [
    "MAX_BUCKETS",
    "MAX_KEYS",
    "MAX_KEY_CHARS",
    "OTHER_KEY",
    "RELATIVE_ACCURACY",
    "FailoverStats",
    "HeartbeatCounters",
    "LatencySketch",
    "LatencyStats",
    "RequestStats",
    "SearchStats",
    "SessionStatistics",
    "SetupStats",
    "TimingStats",
    "TokenStats",
    "as_key",
    "error_kind",
    "finite_float",
]

RELATIVE_ACCURACY = 0.01
"""Relative error bound of :meth:`LatencySketch.quantile` (alpha)."""

MAX_BUCKETS = 2048
"""Most buckets one :class:`LatencySketch` holds; beyond it the lowest buckets are merged."""

MAX_KEYS = MAX_COUNTED_KEYS
"""Most distinct keys in each string-keyed map of :class:`SessionStatistics`."""

MAX_KEY_CHARS = STATISTICS_KEY_LENGTH
"""Keys are cut to this many characters."""


# -- the shapes of a snapshot, as the session and heartbeat events send them ----------------------
class LatencyStats(TypedDict):
    """A latency summary in milliseconds (floats rounded to 3 places)."""

    avg: Annotated[float | None, Prop("mean; null when nothing was recorded")]
    min: Annotated[float | None, Prop("smallest; null when nothing was recorded")]
    max: Annotated[float | None, Prop("largest; null when nothing was recorded")]
    p50: Annotated[float | None, Prop("median, within 1% relative error")]
    p95: Annotated[float | None, Prop("95th percentile, within 1% relative error")]


class TimingStats(LatencyStats):
    """One timer's summary: how many times it ran, and its latency in milliseconds."""

    count: Annotated[int, Prop("runs timed")]


class SetupStats(TypedDict):
    """``setup`` of the session event."""

    success: Annotated[
        bool | None,
        Prop("last `record_setup` (or `setup_success`); null if never recorded", rule="boolean"),
    ]
    attempts: Annotated[int, Prop("sum of `record_setup` attempts (or `setup_attempts`)")]
    error_kinds: Annotated[
        dict[str, int],
        Prop(
            "`record_setup` error kinds and `config_errors`, counted by exception type name",
            rule="type-name keys, never messages",
        ),
    ]


class RequestStats(TypedDict):
    """``requests`` of the session event."""

    total: Annotated[int, Prop("`record_request` calls")]
    successful: Annotated[int, Prop("`record_request(ok=True)` calls")]
    failed: Annotated[int, Prop("`record_request(ok=False)` calls")]
    success_rate: Annotated[
        float | None, Prop("successful / total, 4 decimals; null without requests")
    ]


class SearchStats(TypedDict):
    """``searches`` of the session event."""

    total: Annotated[int, Prop("search events captured in the session")]
    by_intent: Annotated[dict[str, int], Prop("searches per intent", rule="label keys")]
    by_strategy: Annotated[dict[str, int], Prop("searches per strategy", rule="label keys")]
    latency_ms: Annotated[LatencyStats, Prop("`execution_time_ms` of the searches")]


class TokenStats(TypedDict):
    """``tokens`` of the session event: sums of ``record_tokens``."""

    generated: Annotated[int, Prop("tokens generated (sum of `record_tokens`)")]
    delivered: Annotated[int, Prop("tokens delivered (sum of `record_tokens`)")]
    saved: Annotated[int, Prop("tokens saved (sum of `record_tokens`)")]


class FailoverStats(TypedDict):
    """``failover`` of the session event."""

    count: Annotated[int, Prop("`record_failover` calls")]
    seconds: Annotated[float, Prop("seconds spent in failover, 3 decimals")]


class HeartbeatCounters(TypedDict):
    """``counters`` of the heartbeat event: the session's totals so far."""

    requests: Annotated[int, Prop("requests recorded in the session so far")]
    searches: Annotated[int, Prop("searches captured in the session so far")]
    errors: Annotated[int, Prop("errors captured in the session so far")]
    failovers: Annotated[int, Prop("failovers recorded in the session so far")]


_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
_ITEM_SIZE = array("q").itemsize

_P = ParamSpec("_P")


def _quiet(method: Callable[_P, None]) -> Callable[_P, None]:
    """Make a recording method swallow any error: statistics must never break the caller."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            return

    return wrapper


def _as_duration(value: object) -> float | None:
    """``value`` as a finite, non-negative float (a duration), or None."""
    result = finite_float(value)
    return result if result is not None and result >= 0 else None


def _as_count(value: object) -> int:
    """``value`` as a non-negative int; bools, non-integers and negatives count as 0."""
    if type(value) is int:  # the common case, first
        return max(value, 0)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return 0
    result = int(value)
    return max(result, 0)


def as_key(value: object) -> str | None:
    """``value`` as a plain str key cut to :data:`MAX_KEY_CHARS`, or None if it is no name.

    A str (or str subclass) is taken as is; an :class:`enum.Enum` gives its value when that is
    a str and its name otherwise. Anything else is not a key.
    """
    if type(value) is str:  # the common case, first
        return value if len(value) <= MAX_KEY_CHARS else _cut(value)
    if isinstance(value, str):  # str subclasses, and str enum members (their value)
        raw = value
    elif isinstance(value, enum.Enum):
        raw = value.value if isinstance(value.value, str) else value.name
    else:
        return None
    # str.__str__ turns a str subclass into an exact str without calling an override.
    raw = str.__str__(raw)
    return raw if len(raw) <= MAX_KEY_CHARS else _cut(raw)


def _cut(key: str) -> str:
    """Cut a long key so that the scrubber, later, still recognises what it must redact."""
    # Imported here: the scrubber compiles its patterns on import, and most keys are short.
    from codeweaver_telemetry.privacy.scrubber import cut_words

    return cut_words(key, MAX_KEY_CHARS)


def error_kind(item: object) -> str | None:
    """The kind name of a str, an exception instance or an exception class; never a message.

    Type names are cut from the left (the class name stays); None for anything else.
    """
    if isinstance(item, BaseException):
        return type_name(type(item))[-MAX_KEY_CHARS:]
    if isinstance(item, type) and issubclass(item, BaseException):
        return type_name(item)[-MAX_KEY_CHARS:]
    return as_key(item)


def _tally(items: object, key: Callable[[object], str | None] = as_key) -> dict[str, int]:
    """Count ``items`` by ``key(item)``, skipping items without a key.

    A str, enum, exception or class is one item, not a collection. Anything that cannot be
    iterated, or fails part way, counts as no items at all.
    """
    if isinstance(items, (str, enum.Enum, BaseException, type)):
        items = (items,)
    counts: dict[str, int] = {}
    try:
        for item in cast("Iterable[object]", items):
            name = key(item)
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
    except Exception:
        return {}
    return counts


def _bounded_key(mapping: Mapping[str, object], key: str) -> str:
    """``key`` if ``mapping`` has it or still has room, else :data:`OTHER_KEY`."""
    if key in mapping or len(mapping) < MAX_KEYS:
        return key
    return OTHER_KEY


def _bump(mapping: dict[str, int], key: str, amount: int = 1) -> None:
    """Add ``amount`` to ``mapping[key]``, or to ``"<other>"`` once the map is full."""
    key = _bounded_key(mapping, key)
    mapping[key] = mapping.get(key, 0) + amount


class LatencySketch:
    """Bounded-memory quantile estimator with a guaranteed relative error.

    How percentiles are kept: a value ``x > 0`` is counted in bucket
    ``ceil(log(x) / log(gamma))`` with ``gamma = (1 + a) / (1 - a)`` and ``a`` =
    :data:`RELATIVE_ACCURACY` (0.01), so bucket ``i`` holds ``(gamma**(i-1), gamma**i]``. The
    buckets are one contiguous array of counters starting at the lowest bucket index seen.
    :meth:`quantile` finds the bucket holding the nearest-rank sample (rank ``ceil(q * count)``,
    at least 1, of the sorted values) and answers ``2 * gamma**i / (gamma + 1)``, clamped into
    ``[min, max]``. Values ``<= 0`` are counted in a separate zero bucket and answered as 0.0
    (clamped likewise). NaN and infinities are ignored entirely, as are bools and non-numbers.

    Error bound: a quantile is within 1% relative error of the true sample value of that rank;
    ``count``, ``min``, ``max`` and the average are exact (the sum is a float sum).

    Memory: at most :data:`MAX_BUCKETS` (2048) buckets of 8 bytes, which covers a range of
    about 1:10**17 (say 1 ns to 3 years in milliseconds). When a value would stretch the range
    further, the lowest buckets are merged into one, so only the lowest quantiles lose accuracy
    (they are then overestimated). Measured with ``sys.getsizeof`` (CPython 3.11, 64-bit): about
    170 bytes empty, about 4 KB for latencies spanning 1 ms to 10 s (about 460 buckets), and
    at most about 17.6 KB when all 2048 buckets are in use, however many values were added.

    Not thread-safe by itself; :class:`SessionStatistics` guards its sketches with its lock.
    """

    __slots__ = ("_count", "_counts", "_max", "_min", "_offset", "_sum", "_zero")

    def __init__(self) -> None:
        """Start empty."""
        self._counts: array[int] = array("q")
        self._offset = 0  # bucket index of self._counts[0]
        self._zero = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    def __repr__(self) -> str:
        """Short description: count, min and max."""
        return f"LatencySketch(count={self._count}, min={self.min}, max={self.max})"

    @property
    def count(self) -> int:
        """Number of values added (NaN, infinities and non-numbers are not counted)."""
        return self._count

    @property
    def sum(self) -> float:
        """Sum of the values added."""
        return self._sum

    @property
    def min(self) -> float | None:
        """Smallest value added, or None when empty."""
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        """Largest value added, or None when empty."""
        return self._max if self._count else None

    @property
    def bucket_count(self) -> int:
        """Number of buckets allocated (never more than :data:`MAX_BUCKETS`), zero bucket aside."""
        return len(self._counts)

    def add(self, value: float) -> None:
        """Count ``value``; NaN, infinities, bools and non-numbers are ignored."""
        x = finite_float(value)
        if x is None:
            return
        self._count += 1
        self._sum += x
        self._min = min(self._min, x)
        self._max = max(self._max, x)
        if x > 0:
            self._add_to_bucket(math.ceil(math.log(x) / _LOG_GAMMA), 1)
        else:
            self._zero += 1

    def merge(self, other: LatencySketch) -> None:
        """Add every value counted by ``other`` into this sketch (``other`` is unchanged)."""
        if not isinstance(other, LatencySketch):
            raise TypeError(f"cannot merge {type(other).__name__} into a LatencySketch")
        if not other._count:
            return
        buckets = list(other._counts)  # a copy: ``other`` may be ``self``
        offset = other._offset
        self._count += other._count
        self._sum += other._sum
        self._zero += other._zero
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        for position, n in enumerate(buckets):
            if n:
                self._add_to_bucket(offset + position, n)

    def quantile(self, q: float) -> float | None:
        """Estimate of the ``q``-quantile (``0 <= q <= 1``), or None when empty.

        Raises ValueError if ``q`` is not a number between 0 and 1.
        """
        return self._quantiles((q,))[0]

    def summary(self) -> dict[str, float | int | None]:
        """``count``, ``avg``, ``min``, ``max``, ``p50`` and ``p95``, floats rounded to 3 places.

        All but ``count`` are None when nothing was added; ``avg`` is also None if the sum
        overflowed to infinity.
        """
        if not self._count:
            return {"count": 0, "avg": None, "min": None, "max": None, "p50": None, "p95": None}
        p50, p95 = self._quantiles((0.5, 0.95))
        avg = self._sum / self._count
        return {
            "count": self._count,
            "avg": None if (finite := finite_float(avg)) is None else round(finite, 3),
            "min": round(self._min, 3),
            "max": round(self._max, 3),
            "p50": None if p50 is None else round(p50, 3),
            "p95": None if p95 is None else round(p95, 3),
        }

    def _quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Estimates for the ascending quantiles ``qs`` in one pass over the buckets."""
        ranks: list[int] = []
        for q in qs:
            if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 <= q <= 1:
                raise ValueError(f"quantile must be a number between 0 and 1, not {q!r}")
            ranks.append(max(1, math.ceil(q * self._count)))
        if not self._count:
            return [None] * len(qs)
        answers: list[float | None] = []
        seen = self._zero
        position = 0
        counts = self._counts
        for rank in ranks:
            if rank <= self._zero:
                estimate = 0.0
            else:
                while seen < rank and position < len(counts):
                    seen += counts[position]
                    position += 1
                index = self._offset + position - 1
                try:
                    estimate = 2 * _GAMMA**index / (_GAMMA + 1)
                except OverflowError:  # only next to the largest floats: max is the answer
                    estimate = self._max
            answers.append(min(max(estimate, self._min), self._max))
        return answers

    def _add_to_bucket(self, index: int, n: int) -> None:
        """Add ``n`` to bucket ``index``, growing the array and merging the lowest if needed."""
        counts = self._counts
        position = index - self._offset
        if 0 <= position < len(counts):
            counts[position] += n
            return
        if not counts:
            self._offset = index
            counts.append(n)
            return
        low = self._offset
        high = low + len(counts) - 1
        if index < low:
            # Below the range: grow downwards, but never past MAX_BUCKETS buckets in all.
            index = max(index, high - MAX_BUCKETS + 1)
            if index < low:
                grown = array("q", bytes(_ITEM_SIZE * (low - index)))
                grown.extend(counts)
                self._counts = counts = grown
                self._offset = index
            counts[0] += n
            return
        # Above the range: grow upwards; merge what falls off the bottom into the new lowest.
        new_low = max(low, index - MAX_BUCKETS + 1)
        if new_low > low:
            cut = new_low - low
            merged = sum(counts[:cut])
            kept = counts[cut:]
            kept.frombytes(bytes(_ITEM_SIZE * (index - new_low + 1 - len(kept))))
            kept[0] += merged
            self._counts = counts = kept
            self._offset = new_low
        else:
            counts.frombytes(bytes(_ITEM_SIZE * (index - high)))
        counts[index - self._offset] += n


@attrs.define(eq=False, repr=False)
class SessionStatistics:
    """One session's activity counts, safe to record from many threads at once.

    Every ``record_*`` method takes its lock briefly, never raises (input of the wrong type is
    dropped quietly, bools are not numbers, NaN and infinities are ignored) and uses O(1)
    memory per distinct key. Each string-keyed map (intents, strategies, error kinds,
    languages, usage, timings, errors) holds at most :data:`MAX_KEYS` keys; later new keys are
    counted under ``"<other>"``. Keys are cut to :data:`MAX_KEY_CHARS` characters; an
    :class:`enum.Enum` key gives its str value (or its name). Latencies are kept in
    :class:`LatencySketch` instances, so memory stays bounded however long the session is:
    about 20 KB (``tracemalloc``) after a million searches and requests with typical
    latencies, and about 1.9 MB at worst (every map full of 64-character keys and 101 timing
    sketches using all their buckets).

    :meth:`snapshot` returns a plain-dict copy for an event; :meth:`counters` a few totals for
    a heartbeat.
    """

    # Re-entrant: a signal handler may record while its thread is inside a record_* call.
    _lock: threading.RLock = attrs.field(init=False, factory=threading.RLock)
    _recorded: bool = attrs.field(init=False, default=False)
    _setup_success: bool | None = attrs.field(init=False, default=None)
    _setup_attempts: int = attrs.field(init=False, default=0)
    _setuperror_kinds: dict[str, int] = attrs.field(init=False, factory=dict)
    _requests_total: int = attrs.field(init=False, default=0)
    _requests_successful: int = attrs.field(init=False, default=0)
    _searches_total: int = attrs.field(init=False, default=0)
    _by_intent: dict[str, int] = attrs.field(init=False, factory=dict)
    _by_strategy: dict[str, int] = attrs.field(init=False, factory=dict)
    _search_latency: LatencySketch = attrs.field(init=False, factory=LatencySketch)
    _tokens_generated: int = attrs.field(init=False, default=0)
    _tokens_delivered: int = attrs.field(init=False, default=0)
    _tokens_saved: int = attrs.field(init=False, default=0)
    _languages: dict[str, int] = attrs.field(init=False, factory=dict)
    _failover_count: int = attrs.field(init=False, default=0)
    _failover_seconds: float = attrs.field(init=False, default=0.0)
    _usage: dict[str, int] = attrs.field(init=False, factory=dict)
    _timings: dict[str, LatencySketch] = attrs.field(init=False, factory=dict)
    _errors: dict[str, int] = attrs.field(init=False, factory=dict)

    def __repr__(self) -> str:
        """The heartbeat counters."""
        return f"SessionStatistics({self.counters()})"

    @_quiet
    def record_request(self, ok: bool = True, latency_ms: float | None = None) -> None:
        """Count one request, successful or failed; ``latency_ms`` is a timing named "request".

        A non-bool ``ok`` drops the call; a bad ``latency_ms`` drops only the latency.
        """
        if not isinstance(ok, bool):
            return
        latency = _as_duration(latency_ms)
        with self._lock:
            self._recorded = True
            self._requests_total += 1
            if ok:
                self._requests_successful += 1
            if latency is not None:
                self._timing_sketch("request").add(latency)

    @_quiet
    def record_search(
        self,
        *,
        intent: str | None = None,
        strategies: Iterable[str] = (),
        latency_ms: float | None = None,
    ) -> None:
        """Count one search by intent (None or not a name: "unknown") and by each strategy.

        A single str counts as one strategy; strategies that are not names are skipped, and a
        bad ``latency_ms`` is dropped.
        """
        intent_key = as_key(intent) or "unknown"
        by_strategy = _tally(strategies)
        latency = _as_duration(latency_ms)
        with self._lock:
            self._recorded = True
            self._searches_total += 1
            _bump(self._by_intent, intent_key)
            for key, n in by_strategy.items():
                _bump(self._by_strategy, key, n)
            if latency is not None:
                self._search_latency.add(latency)

    @_quiet
    def record_tokens(self, generated: int = 0, delivered: int = 0, saved: int = 0) -> None:
        """Add token counts; negatives, bools and non-integers count as 0."""
        amounts = (_as_count(generated), _as_count(delivered), _as_count(saved))
        if not any(amounts):
            return
        with self._lock:
            self._recorded = True
            self._tokens_generated += amounts[0]
            self._tokens_delivered += amounts[1]
            self._tokens_saved += amounts[2]

    @_quiet
    def record_languages(self, languages: Iterable[str] | Mapping[str, int]) -> None:
        """Add to the language distribution.

        A mapping adds its counts (non-positive or non-integer counts are skipped); any other
        iterable adds 1 per item; a single str is one language, not a string of characters.
        """
        if isinstance(languages, Mapping):
            counts: dict[str, int] = {}
            for name, value in languages.items():
                key, amount = as_key(name), _as_count(value)
                if key is not None and amount:
                    counts[key] = counts.get(key, 0) + amount
        else:
            counts = _tally(languages)
        if not counts:
            return
        with self._lock:
            self._recorded = True
            for key, n in counts.items():
                _bump(self._languages, key, n)

    @_quiet
    def record_failover(self, seconds: float = 0.0) -> None:
        """Count one failover lasting ``seconds`` (negative or bad durations add 0)."""
        duration = finite_float(seconds) or 0.0
        with self._lock:
            self._recorded = True
            self._failover_count += 1
            total = self._failover_seconds + max(0.0, duration)
            if finite_float(total) is not None:
                self._failover_seconds = total

    @_quiet
    def record_setup(
        self,
        success: bool,
        attempts: int = 1,
        error_kinds: Iterable[str | BaseException | type[BaseException]] = (),
    ) -> None:
        """Record a setup outcome: ``success`` of the last call wins, ``attempts`` add up.

        ``error_kinds`` become a distribution of type names: an exception instance or class
        gives ``qualname`` for builtins and ``module.qualname`` otherwise; a str is the kind.
        No message is ever kept. A non-bool ``success`` drops the call.
        """
        if not isinstance(success, bool):
            return
        tries = _as_count(attempts)
        kinds = _tally(error_kinds, error_kind)
        with self._lock:
            self._recorded = True
            self._setup_success = success
            self._setup_attempts += tries
            for key, n in kinds.items():
                _bump(self._setuperror_kinds, key, n)

    @_quiet
    def record_usage(self, name: str, count: int = 1) -> None:
        """Add ``count`` (a positive int) uses of ``name``."""
        key = as_key(name)
        amount = _as_count(count)
        if key is None or not amount:
            return
        with self._lock:
            self._recorded = True
            _bump(self._usage, key, amount)

    @_quiet
    def record_timing(self, name: str, ms: float) -> None:
        """Add a duration in milliseconds to the timing sketch of ``name``."""
        key = as_key(name)
        value = _as_duration(ms)
        if key is None or value is None:
            return
        with self._lock:
            self._recorded = True
            self._timing_sketch(key).add(value)

    @_quiet
    def record_error(self, fingerprint: str) -> None:
        """Count one error with this fingerprint."""
        key = as_key(fingerprint)
        if key is None:
            return
        with self._lock:
            self._recorded = True
            _bump(self._errors, key)

    def empty(self) -> bool:
        """True when nothing was ever recorded (ignored input does not count)."""
        with self._lock:
            return not self._recorded

    def counters(self) -> dict[str, int]:
        """Totals for a heartbeat: ``requests``, ``searches``, ``errors`` and ``failovers``."""
        with self._lock:
            return {
                "requests": self._requests_total,
                "searches": self._searches_total,
                "errors": sum(self._errors.values()),
                "failovers": self._failover_count,
            }

    def snapshot(self) -> dict[str, Any]:
        """A new plain-dict copy of everything recorded, safe to hand to another thread.

        Shape: ``setup`` (success, attempts, error_kinds), ``requests`` (total, successful,
        failed, success_rate rounded to 4 places or None), ``searches`` (total, by_intent,
        by_strategy, latency_ms with avg/min/max/p50/p95), ``tokens``, ``languages``,
        ``failover`` (count, seconds rounded to 3), ``usage``, ``timings`` (name to
        count/avg/min/max/p50/p95) and ``errors``.
        """
        with self._lock:
            total = self._requests_total
            successful = self._requests_successful
            latency = self._search_latency.summary()
            del latency["count"]
            return {
                "setup": {
                    "success": self._setup_success,
                    "attempts": self._setup_attempts,
                    "error_kinds": dict(self._setuperror_kinds),
                },
                "requests": {
                    "total": total,
                    "successful": successful,
                    "failed": total - successful,
                    "success_rate": round(successful / total, 4) if total else None,
                },
                "searches": {
                    "total": self._searches_total,
                    "by_intent": dict(self._by_intent),
                    "by_strategy": dict(self._by_strategy),
                    "latency_ms": latency,
                },
                "tokens": {
                    "generated": self._tokens_generated,
                    "delivered": self._tokens_delivered,
                    "saved": self._tokens_saved,
                },
                "languages": dict(self._languages),
                "failover": {
                    "count": self._failover_count,
                    "seconds": round(self._failover_seconds, 3),
                },
                "usage": dict(self._usage),
                "timings": {name: sketch.summary() for name, sketch in self._timings.items()},
                "errors": dict(self._errors),
            }

    def _timing_sketch(self, key: str) -> LatencySketch:
        """The sketch for ``key`` (or the shared ``"<other>"`` one); call with the lock held."""
        key = _bounded_key(self._timings, key)
        sketch = self._timings.get(key)
        if sketch is None:
            sketch = self._timings[key] = LatencySketch()
        return sketch
