"""Every cell of the conversion table, through a real model rule."""

from __future__ import annotations

import dataclasses
import decimal
import enum
import fractions
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeweaver_telemetry import AnonymityConversion, FilteredKey
from codeweaver_telemetry.privacy import conversions
from codeweaver_telemetry.privacy.conversions import finite_float
from codeweaver_telemetry.privacy.hashing import InMemoryKeyProvider, keyed_hash
from codeweaver_telemetry.privacy.rules import TelemetryModel

KEY = b"k" * 32
PROVIDER = InMemoryKeyProvider(KEY)
C = AnonymityConversion


class Color(enum.Enum):
    RED = "red"
    ONE = 1


@dataclasses.dataclass
class Inner:
    x: int = 1


class Opaque:
    """An arbitrary object with no JSON form."""


class Holder(TelemetryModel):
    model_config = {"arbitrary_types_allowed": True}
    v: Any = None
    conv: Any = None

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {FilteredKey("v"): self.conv, FilteredKey("conv"): C.FORBIDDEN}


def run(conv: AnonymityConversion, value: object) -> dict[str, Any]:
    return Holder(v=value, conv=conv).serialize_for_telemetry(key_provider=PROVIDER)


NAN = float("nan")
INPUTS: dict[str, object] = {
    "none": None,
    "str": "abc",
    "empty_str": "",
    "bytes": b"ab",
    "list": [1, 2, "x", 2.5],
    "tuple": (1, 2),
    "set": {1, 2, 3},
    "frozenset": frozenset({"a"}),
    "dict": {"a": 1, "b": 2, "c": "x"},
    "int": 5,
    "zero": 0,
    "float": 2.5,
    "nan": NAN,
    "bool": True,
    "enum_str": Color.RED,
    "enum_int": Color.ONE,
    "model": Inner(),
    "other": Opaque(),
}

# (input, BOOLEAN, COUNT, DISTRIBUTION, AGGREGATE, TEXT_COUNT); HASH is checked separately.
TABLE: list[tuple[str, bool, int, dict[str, int], float, int]] = [
    ("none", False, 0, {}, 0, 0),
    ("str", True, 1, {"abc": 1}, 0, 3),
    ("empty_str", False, 1, {"": 1}, 0, 0),
    ("bytes", True, 1, {}, 0, 0),
    ("list", True, 4, {"1": 1, "2": 1, "x": 1, "2.5": 1}, 5.5, 0),
    ("tuple", True, 2, {"1": 1, "2": 1}, 3, 0),
    ("set", True, 3, {"1": 1, "2": 1, "3": 1}, 6, 0),
    ("frozenset", True, 1, {"a": 1}, 0, 0),
    ("dict", True, 3, {"1": 1, "2": 1, "x": 1}, 3, 0),
    ("int", True, 1, {"5": 1}, 5, 0),
    ("zero", False, 1, {"0": 1}, 0, 0),
    ("float", True, 1, {"2.5": 1}, 2.5, 0),
    ("nan", True, 1, {}, 0, 0),
    ("bool", True, 1, {"true": 1}, 0, 0),
    ("enum_str", True, 1, {"red": 1}, 0, 3),
    ("enum_int", True, 1, {"1": 1}, 1, 0),
    ("model", True, 1, {}, 0, 0),
    ("other", True, 1, {}, 0, 0),
]


@pytest.mark.parametrize(("name", "boolean", "count", "dist", "agg", "text"), TABLE)
def test_conversion_table(
    name: str, boolean: bool, count: int, dist: dict[str, int], agg: float, text: int
) -> None:
    """Each conversion gives the documented result for each input type."""
    value = INPUTS[name]
    assert run(C.BOOLEAN, value) == {"v": boolean}
    assert run(C.COUNT, value) == {"v": count}
    assert run(C.DISTRIBUTION, value) == {"v": dist}
    result = run(C.AGGREGATE, value)["v"]
    assert result == agg
    assert type(result) is type(agg) or isinstance(agg, int)
    assert run(C.TEXT_COUNT, value) == {"v": text}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_forbidden_is_absent_for_every_type(name: str) -> None:
    """FORBIDDEN removes the key whatever the value is."""
    assert run(C.FORBIDDEN, INPUTS[name]) == {}


@pytest.mark.parametrize("name", sorted(set(INPUTS) - {"none"}))
def test_hash_is_keyed_hex16_for_every_type(name: str) -> None:
    """HASH of any present value is 16 lowercase hex chars, keyed by the install secret."""
    out = run(C.HASH, INPUTS[name])["v"]
    assert isinstance(out, str)
    assert len(out) == 16
    assert all(c in "0123456789abcdef" for c in out)
    other = Holder(v=INPUTS[name], conv=C.HASH).serialize_for_telemetry(
        key_provider=InMemoryKeyProvider(b"z" * 32)
    )["v"]
    assert other != out, "a different install key must give a different hash"


def test_hash_of_none_stays_none() -> None:
    """HASH keeps an absent value absent-valued (None), not a hash of a constant."""
    assert run(C.HASH, None) == {"v": None}


def test_hash_is_hmac_not_plain_sha() -> None:
    """The hash is the keyed HMAC of the canonical bytes, so a dictionary attack needs the key."""
    import hashlib

    out = run(C.HASH, "/home/alice/project")["v"]
    assert out == keyed_hash("/home/alice/project", KEY)
    assert out not in hashlib.sha256(b"/home/alice/project").hexdigest()


def test_hash_distinguishes_types() -> None:
    """ "1", 1, 1.0 and True hash differently."""
    outs = {run(C.HASH, v)["v"] for v in ("1", 1, 1.0, True)}
    assert len(outs) == 4


def test_distribution_keys_are_scrubbed_and_capped() -> None:
    """DISTRIBUTION keys pass the scrubber; more than 100 keys fold into <other>."""
    out = run(C.DISTRIBUTION, ["alice@example.com", "bob@example.org", "python"])["v"]
    assert out == {"<email>": 2, "python": 1}
    many = [f"k{i}" for i in range(150)] + ["k0"]
    dist = run(C.DISTRIBUTION, many)["v"]
    assert len(dist) == conversions.DISTRIBUTION_MAX_KEYS + 1
    assert dist["k0"] == 2
    assert dist[conversions.OTHER_KEY] == 50
    assert sum(dist.values()) == 151


def test_aggregate_ignores_bools_and_non_finite() -> None:
    """AGGREGATE sums numbers only: bools, NaN, inf and strings are ignored."""
    assert run(C.AGGREGATE, [1, True, NAN, math.inf, "3", 2.0])["v"] == 3.0
    assert run(C.AGGREGATE, [1, 2, 3])["v"] == 6
    assert isinstance(run(C.AGGREGATE, [1, 2, 3])["v"], int)


def test_key_limits_are_defined_once() -> None:
    """The limits on keys and the overflow key, as documented (one definition each)."""
    assert conversions.OTHER_KEY == "<other>"
    assert conversions.MAX_COUNTED_KEYS == conversions.DISTRIBUTION_MAX_KEYS == 100
    assert conversions.DISTRIBUTION_KEY_LENGTH == 100
    assert conversions.STATISTICS_KEY_LENGTH == 64
    assert conversions.PROPERTY_KEY_LENGTH == 200


def test_distribution_keys_are_cut_to_the_key_length() -> None:
    """A long DISTRIBUTION key is cut to DISTRIBUTION_KEY_LENGTH characters."""
    (key,) = run(C.DISTRIBUTION, ["x" * 150])["v"]
    assert key == "x" * conversions.DISTRIBUTION_KEY_LENGTH


class LyingFloat(float):
    def __float__(self) -> float:
        raise RuntimeError("no float")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5, 1.5),
        (-0.0, -0.0),
        (3, 3.0),
        (decimal.Decimal("2.5"), 2.5),
        (fractions.Fraction(1, 4), 0.25),
        (LyingFloat(2.0), 2.0),
        (NAN, None),
        (math.inf, None),
        (-math.inf, None),
        (decimal.Decimal("NaN"), None),
        (decimal.Decimal("Infinity"), None),
        (10**400, None),
        (True, None),
        (False, None),
        ("1.5", None),
        (None, None),
        ([1.0], None),
    ],
)
def test_finite_float(value: object, expected: float | None) -> None:
    """finite_float: any real number as a finite float; None for bools, non-numbers, NaN,
    infinities and numbers beyond the float range; a float subclass read as its value."""
    result = finite_float(value)
    assert result == expected
    assert result is None or type(result) is float


def test_aggregate_beyond_the_float_range_is_zero() -> None:
    """An int AGGREGATE beyond 64 bits is a float, and 0 beyond the float range."""
    assert run(C.AGGREGATE, [2**63, 1])["v"] == float(2**63 + 1)
    assert run(C.AGGREGATE, [10**400])["v"] == 0
    assert run(C.AGGREGATE, [1e308, 1e308])["v"] == 0


class BadBool:
    def __bool__(self) -> bool:
        raise RuntimeError("no truth")

    def __len__(self) -> int:
        raise RuntimeError("no length")


def test_hostile_objects_do_not_raise() -> None:
    """Objects whose __bool__/__len__ raise still convert."""
    assert run(C.BOOLEAN, BadBool()) == {"v": True}
    assert run(C.COUNT, BadBool()) == {"v": 1}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(value=json_values, conv=st.sampled_from(list(C)))
def test_conversions_are_total(value: object, conv: AnonymityConversion) -> None:
    """Every conversion accepts any value and gives a JSON-typed result."""
    out = run(conv, value)
    if conv is C.FORBIDDEN:
        assert out == {}
        return
    result = out["v"]
    expected: dict[AnonymityConversion, tuple[type, ...]] = {
        C.BOOLEAN: (bool,),
        C.COUNT: (int,),
        C.HASH: (str, type(None)),
        C.DISTRIBUTION: (dict,),
        C.AGGREGATE: (int, float),
        C.TEXT_COUNT: (int,),
    }
    assert isinstance(result, expected[conv])
    if isinstance(result, float):
        assert math.isfinite(result)


# Totality: objects that raise when read -----------------------------------------------------
def _raise(*args: object) -> Any:
    raise RuntimeError("hostile")


class ReprRaises:
    __repr__ = _raise


class ItemsRaise(dict):  # type: ignore[type-arg]
    items = _raise
    values = _raise


class HalfRead(dict):  # type: ignore[type-arg]
    """Raises halfway through its values, as a dict changed by another thread."""

    def values(self) -> Any:
        yield from list(dict.values(self))[:1]
        raise RuntimeError("dictionary changed size during iteration")


class IterRaises(list):  # type: ignore[type-arg]
    __iter__ = _raise


class LenRaises(list):  # type: ignore[type-arg]
    __len__ = _raise


class EverythingRaises:
    __repr__ = __bool__ = __len__ = __iter__ = __eq__ = _raise
    __hash__ = _raise


class HostileInt(int):
    __repr__ = __str__ = __index__ = __add__ = __radd__ = _raise


@pytest.mark.parametrize(
    "value",
    [ReprRaises(), [ReprRaises()], [1, ReprRaises()], ItemsRaise(a=1), EverythingRaises()],
    ids=["repr", "repr_in_list", "repr_in_list2", "items", "everything"],
)
def test_hash_is_total(value: object) -> None:
    """HASH gives 16 hex chars even for an object whose __repr__ raises (alone or in a list)
    and for a dict whose items() raises."""
    out = run(C.HASH, value)["v"]
    assert isinstance(out, str)
    assert len(out) == 16
    assert all(c in "0123456789abcdef" for c in out)


def test_hash_keeps_equal_unreadable_values_equal() -> None:
    """Equal dicts whose items() raises hash equally, and unequal ones differently."""
    assert run(C.HASH, ItemsRaise(a=1)) == run(C.HASH, ItemsRaise(a=1))
    assert run(C.HASH, ItemsRaise(a=1)) != run(C.HASH, ItemsRaise(a=2))
    assert run(C.HASH, HostileInt(5)) == run(C.HASH, 5)


UNREADABLE: dict[str, object] = {
    "items_raise": ItemsRaise(a=1, b=2),
    "half_read": HalfRead(a=1, b=2),
    "iter_raises": IterRaises([1, 2]),
    "len_raises": LenRaises([1, 2]),
    "everything_raises": EverythingRaises(),
}
# (input, BOOLEAN, COUNT, DISTRIBUTION, AGGREGATE, TEXT_COUNT): the "unreadable" row.
UNREADABLE_TABLE: list[tuple[str, bool, int, dict[str, int], float, int]] = [
    ("items_raise", True, 2, {}, 0, 0),
    ("half_read", True, 2, {}, 0, 0),  # nothing of a half-read collection counts
    ("iter_raises", True, 2, {}, 0, 0),
    ("len_raises", True, 1, {"1": 1, "2": 1}, 3, 0),  # iterating a list needs no __len__
    ("everything_raises", True, 1, {}, 0, 0),
]


@pytest.mark.parametrize(("name", "boolean", "count", "dist", "agg", "text"), UNREADABLE_TABLE)
def test_unreadable_values_convert_like_other(
    name: str, boolean: bool, count: int, dist: dict[str, int], agg: float, text: int
) -> None:
    """A value whose __iter__, __len__, values(), items(), __bool__... raises gets the
    "other" result of each conversion (the table's "unreadable" row), never an error."""
    value = UNREADABLE[name]
    assert run(C.BOOLEAN, value) == {"v": boolean}
    assert run(C.COUNT, value) == {"v": count}
    assert run(C.DISTRIBUTION, value) == {"v": dist}
    assert run(C.AGGREGATE, value) == {"v": agg}
    assert run(C.TEXT_COUNT, value) == {"v": text}
    assert run(C.FORBIDDEN, value) == {}


def test_subclass_overrides_do_not_break_conversions() -> None:
    """An int subclass whose __repr__, __index__ and __add__ raise counts as its value."""
    assert run(C.AGGREGATE, [HostileInt(2), 3])["v"] == 5
    assert run(C.DISTRIBUTION, [HostileInt(2)])["v"] == {"2": 1}


def test_huge_ints() -> None:
    """An AGGREGATE beyond 64 bits is a float (beyond the float range, 0); DISTRIBUTION
    skips an int too long to write in decimal, like NaN."""
    assert run(C.AGGREGATE, [2**62, 2**62])["v"] == float(2**63)
    assert isinstance(run(C.AGGREGATE, [2**63])["v"], float)
    assert run(C.AGGREGATE, [10**5000, 1])["v"] == 0
    assert run(C.AGGREGATE, [2**62, 1])["v"] == 2**62 + 1
    assert run(C.DISTRIBUTION, [10**5000, 1])["v"] == {"1": 1}
    assert run(C.COUNT, 10**5000)["v"] == 1


# Valid text -------------------------------------------------------------------------------
def test_valid_text_joins_pairs_and_replaces_unpaired_surrogates() -> None:
    """A surrogate pair inside a str becomes its character; an unpaired surrogate becomes
    U+FFFD; the result always encodes as UTF-8."""
    assert conversions.valid_text("\ud83d\ude00") == "\U0001f600"
    assert conversions.valid_text("a\ud800b") == "a\ufffdb"
    assert conversions.valid_text("\udfff") == "\ufffd"
    assert conversions.valid_text("\ude00\ud83d") == "\ufffd\ufffd", "a pair in the wrong order"
    assert conversions.valid_text("\ud800\ud800\udc00") == "\ufffd\U00010000"
    assert conversions.valid_text("\ufeff\ud800") == "\ufeff\ufffd", "a BOM is kept"
    for text in ("\ud800", "x\U0001f600\udbff", "\udc00" * 3):
        conversions.valid_text(text).encode("utf-8")


@pytest.mark.parametrize("text", ["plain ascii", "", "caf\u00e9 \u691c\u7d22 \U0001f600"])
def test_valid_text_does_not_copy_clean_strings(text: str) -> None:
    """A string with no surrogates is returned as it is: the same object, not a copy."""
    assert conversions.valid_text(text) is text


def test_distribution_keys_and_text_count_use_valid_text() -> None:
    """DISTRIBUTION keys are valid text; TEXT_COUNT counts the characters of valid text."""
    out = run(C.DISTRIBUTION, ["a\ud800", "a\udfff", "\ud83d\ude00"])["v"]
    assert out == {"a\ufffd": 2, "\U0001f600": 1}
    assert run(C.TEXT_COUNT, "\ud83d\ude00")["v"] == 1
    assert run(C.TEXT_COUNT, "a\ud800")["v"] == 2
