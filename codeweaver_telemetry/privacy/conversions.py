# SPDX-License-Identifier: MIT OR Apache-2.0
"""Total anonymity conversions: every conversion has a defined result for every input type.

An ``Enum`` member is first replaced by its ``.value``; "model" means a pydantic model, an
attrs class or a dataclass instance; "other" is any object not listed above it.

============ ======= ======== ===== ===================== ============== ==========
input        BOOLEAN COUNT    HASH  DISTRIBUTION          AGGREGATE      TEXT_COUNT
============ ======= ======== ===== ===================== ============== ==========
None         False   0        None  {}                    0              0
str          s != "" 1        hex16 {scrub(s): 1}         0              len(s)
bytes        len > 0 1        hex16 {}                    0              0
list, tuple  len > 0 len      hex16 counts of items       sum of items   0
set, fset    len > 0 len      hex16 counts of items       sum of items   0
dict         len > 0 len      hex16 counts of values      sum of values  0
int          v != 0  1        hex16 {"v": 1}, huge: {}    v, huge: float 0
float        bool(v) 1        hex16 {"v": 1}, NaN/inf: {} v, NaN/inf: 0  0
bool         v       1        hex16 {"true"/"false": 1}   0              0
model        True    1        hex16 {}                    0              0
other        bool(o) len or 1 hex16 {}                    0              0
unreadable   bool(o) len or 1 hex16 {}                    0              0
============ ======= ======== ===== ===================== ============== ==========

Details:

- COUNT counts *items*: a collection counts its members, any other present value is one
  item, and None is none. Use TEXT_COUNT for the length of a string.
- HASH is :func:`~codeweaver_telemetry.privacy.hashing.keyed_hash`: 16 lowercase hex
  characters, HMAC-SHA256 under the install's secret key. None stays None (absence is not
  worth hashing).
- DISTRIBUTION counts the scalar items (str, int, finite float, bool) of a collection; None,
  bytes, nested collections and models inside it are skipped. Keys are strings (``True`` ->
  ``"true"``), scrubbed (a key over 200 characters is first cut at a word boundary, see
  :func:`~codeweaver_telemetry.privacy.scrubber.scrub_cut`), cut to 100 characters, and at
  most 100 distinct keys are kept (the most frequent); the rest are summed under
  ``"<other>"``.
- AGGREGATE sums the int and finite float items (bools are flags, not quantities, and are
  skipped); the result is an int when every summed item is an int.
- BOOLEAN of an object whose ``__bool__`` (or ``__len__``) raises is True (the value is
  present); COUNT of an object whose ``__len__`` raises is 1.
- "unreadable" is a collection or object that raises when it is read: its ``__iter__``,
  ``__len__``, ``values()``, ``items()``, ``__eq__``, ``__hash__``, ``__bool__`` or
  ``__repr__`` raises (a hostile or broken object, or a dict changed by another thread while
  it is read). It converts like "other": nothing of a half-read collection is counted or
  summed. HASH still gives hex16: see
  :func:`~codeweaver_telemetry.privacy.hashing.canonical_bytes`.
- The limits on keys (:data:`MAX_COUNTED_KEYS`, the ``*_KEY_LENGTH`` constants,
  :data:`OTHER_KEY`) and :func:`finite_float` are defined here once for the whole package:
  the session statistics and the pipeline's size cap use them too.
- "huge": an int of more digits than Python writes in decimal (4300 by default) is skipped
  by DISTRIBUTION, like NaN. An AGGREGATE beyond 64 bits (|sum| >= 2**63) is a float, like
  every int of that size in the output, and 0 beyond the float range, like infinity.
- Strings are made valid Unicode first (:func:`valid_text`): an unpaired surrogate becomes
  U+FFFD, so every DISTRIBUTION key encodes as UTF-8. TEXT_COUNT counts the characters of
  the valid text (a surrogate pair written as two code units is one character).
"""

from __future__ import annotations

import decimal
import enum
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import cast

from codeweaver_telemetry.privacy.hashing import keyed_hash

__all__ = [
    "DISTRIBUTION_KEY_LENGTH",
    "DISTRIBUTION_MAX_KEYS",
    "MAX_COUNTED_KEYS",
    "OTHER_KEY",
    "PROPERTY_KEY_LENGTH",
    "STATISTICS_KEY_LENGTH",
    "finite_float",
    "scalar_text",
    "to_aggregate",
    "to_boolean",
    "to_count",
    "to_distribution",
    "to_hash",
    "to_text_count",
    "valid_text",
]

# -- the limits on keys, for the whole package ------------------------------------------------
OTHER_KEY = "<other>"
"""The key that sums the counts a capped map had no room for: in a DISTRIBUTION, in each map
of session statistics, and where the pipeline halves a map of counts to fit an event."""
MAX_COUNTED_KEYS = 100
"""At most this many distinct keys (besides :data:`OTHER_KEY`) in a DISTRIBUTION and in each
string-keyed map of session statistics."""
DISTRIBUTION_MAX_KEYS = MAX_COUNTED_KEYS
"""At most this many distinct keys in a DISTRIBUTION; the rest are summed under OTHER_KEY."""
DISTRIBUTION_KEY_LENGTH = 100
"""DISTRIBUTION keys are cut to this many characters."""
STATISTICS_KEY_LENGTH = 64
"""Keys of the session statistics maps (and event labels) are cut to this many characters."""
PROPERTY_KEY_LENGTH = 200
"""Event property keys, ``$feature/<key>`` flag keys and flag string values are cut to this
many characters by the pipeline."""

_COLLECTIONS = (list, tuple, set, frozenset, dict)
_BUILTIN_COLLECTIONS = frozenset(_COLLECTIONS)
_SEQUENCES = frozenset({list, tuple, set, frozenset})
_BINARY = (bytes, bytearray, memoryview)
_INT_LIMIT = 2**63


def valid_text(text: str) -> str:
    """``text`` as valid Unicode: each unpaired surrogate becomes U+FFFD, and a surrogate
    pair (two code units, as left by a UTF-16 decoding gone wrong) becomes its character.

    A string with no surrogates (every ASCII string, nearly every other) is returned as
    is, not copied. Strings with surrogates cannot be encoded as UTF-8, so one of them
    would make a whole event fail to encode.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 keeps pairs and lone surrogates as code units; decoding joins the pairs
        # and replaces the rest. Both steps run in C. The encoder writes one byte-order
        # mark and the decoder takes exactly that one, so a U+FEFF in the text is kept.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def finite_float(value: object) -> float | None:
    """``value`` as a finite float, or None.

    Any real number converts (int, float, Decimal, Fraction, numpy scalars); None for
    bools, non-numbers, NaN, infinities and numbers beyond the float range. A float (or a
    float subclass) is read as its own value, never through an overridden ``__float__``.
    The one finite-number check of the package: NaN and infinities are not JSON.
    """
    if type(value) is float:  # the common case, first
        return value if math.isfinite(value) else None
    if isinstance(value, float):
        result = float.__float__(value)
    elif isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        return None
    else:
        try:
            result = float(value)
        except (ArithmeticError, ValueError, TypeError):  # 10**400 overflows
            return None
    return result if math.isfinite(result) else None


def _unwrap(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


def _is_model(value: object) -> bool:
    cls = type(value)
    return (
        hasattr(cls, "model_fields")
        or hasattr(cls, "__attrs_attrs__")
        or hasattr(cls, "__dataclass_fields__")
    )


def to_boolean(value: object) -> bool:
    """Truthiness, with None -> False and models -> True; never raises."""
    value = _unwrap(value)
    if value is None:
        return False
    if _is_model(value):
        return True
    try:
        return bool(value)
    except Exception:  # an object whose __bool__ raises is still a present value
        return True


def to_count(value: object) -> int:
    """Number of items: len() of a collection, 0 for None, 1 for any other value."""
    if type(value) in _BUILTIN_COLLECTIONS:  # the usual case: their len() never raises
        return len(value)  # type: ignore[arg-type]
    value = _unwrap(value)
    if value is None:
        return 0
    if isinstance(value, (str, *_BINARY, int, float)) or _is_model(value):
        return 1
    if isinstance(value, (*_COLLECTIONS, Sized)):
        try:
            return len(value)
        except Exception:  # a broken __len__ still leaves one present value
            return 1
    return 1


def to_hash(value: object, key: bytes | Callable[[object], str]) -> str | None:
    """Keyed hash (16 hex chars) of the value; None stays None.

    ``key`` is the install key, or a prepared hasher (``KeyedHasher``) for speed.
    """
    if type(value) is not str:
        value = _unwrap(value)
        if value is None:
            return None
    if isinstance(key, bytes):
        return keyed_hash(value, key)
    return key(value)


def scalar_text(item: object) -> str | None:
    """The text of a str, bool, int or float (``True`` -> ``"true"``), else None.

    Read with the base types' own methods: a subclass's overrides may raise or lie. An int
    with more digits than Python writes in decimal has no text. Shared by DISTRIBUTION keys
    and the serializer's dict keys.
    """
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, str):
        return str.__str__(item)
    if isinstance(item, int):
        try:
            return int.__repr__(item)
        except ValueError:
            return None
    if isinstance(item, float):
        return float.__repr__(item)
    return None


def _distribution_key(item: object) -> str | None:
    item = _unwrap(item)
    if isinstance(item, float) and finite_float(item) is None:  # NaN and infinities
        return None
    return scalar_text(item)


def _items(value: object) -> Iterable[object]:
    """The items a DISTRIBUTION or AGGREGATE looks at: a dict's values, a collection's
    members, or the value itself."""
    if type(value) in _SEQUENCES:  # the usual case, without the ABC checks below
        return cast("Iterable[object]", value)
    if isinstance(value, Mapping):
        return value.values()
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    return (value,)


def _counts(items: Iterable[object]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        key = item if type(item) is str else _distribution_key(item)
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return counts


def to_distribution(value: object, scrub: Callable[[str], str]) -> dict[str, int]:
    """``{item: count}`` over the scalar items of a collection (dict: its values)."""
    if type(value) not in _SEQUENCES:  # no Enum, no None
        value = _unwrap(value)
        if value is None:
            return {}
    try:
        counts = _counts(_items(value))
    except Exception:  # unreadable: nothing of a half-read collection is counted
        return {}
    ranked = (
        sorted(counts.items(), key=lambda kv: -kv[1])
        if len(counts) > DISTRIBUTION_MAX_KEYS
        else counts.items()
    )
    result: dict[str, int] = {}
    rest = 0
    for index, (key, count) in enumerate(ranked):
        if index >= DISTRIBUTION_MAX_KEYS:
            rest += count
            continue
        text = valid_text(key)
        if len(text) > 2 * DISTRIBUTION_KEY_LENGTH:
            # Imported here: the key limits and finite_float above stay importable (by the
            # session statistics) without loading the scrubber.
            from codeweaver_telemetry.privacy.scrubber import scrub_cut

            text = scrub_cut(text, 2 * DISTRIBUTION_KEY_LENGTH, scrub)
        else:
            text = scrub(text)
        safe = text[:DISTRIBUTION_KEY_LENGTH]
        result[safe] = result.get(safe, 0) + count
    if rest:
        result[OTHER_KEY] = result.get(OTHER_KEY, 0) + rest
    return result


def _number(item: object) -> int | float | None:
    item = _unwrap(item)
    if isinstance(item, bool):
        return None
    # The base types' own conversions: a subclass's __add__ or __index__ may raise.
    if isinstance(item, int):
        return item if type(item) is int else int.__index__(item)
    if isinstance(item, float):
        return finite_float(item)  # its own value; NaN and infinities are skipped
    return None


def to_aggregate(value: object) -> int | float:
    """Sum of the numeric items (dict: its values); non-numbers, bools, NaN/inf ignored."""
    total: int | float = 0
    try:
        for item in _items(_unwrap(value)):
            number = _number(item)
            if number is not None:
                total += number
    except Exception:  # unreadable: nothing of a half-read collection is summed
        return 0
    if isinstance(total, int) and -_INT_LIMIT < total < _INT_LIMIT:
        return total
    result = finite_float(total)  # beyond 64 bits: a float; beyond the float range: 0
    return 0 if result is None else result


def to_text_count(value: object) -> int:
    """Character count of a string; 0 for None and anything that is not a string."""
    value = _unwrap(value)
    return len(valid_text(str.__str__(value))) if isinstance(value, str) else 0
