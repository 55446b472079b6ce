"""Totality: every conversion, and the serializer, return for any object at all.

The objects include hostile ones, whose dunder methods raise (``__repr__``, ``__iter__``,
``__len__``, ``__bool__``, ``__eq__``, ``__hash__``, ``items()``...), ints too long for
decimal text, NaN and infinities, text with unpaired surrogates, and models of each kind.
Whatever goes in, the output is JSON that encodes as UTF-8, and each converted value has
the type the conversion table promises.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from codeweaver_telemetry import (
    AnonymityConversion,
    BasedModel,
    DataclassSerializationMixin,
    FilteredKey,
    scrub,
    serialize_for_telemetry,
)
from codeweaver_telemetry.privacy import conversions
from codeweaver_telemetry.privacy.hashing import InMemoryKeyProvider, canonical_bytes

C = AnonymityConversion
K = FilteredKey
PROVIDER = InMemoryKeyProvider(b"t" * 32)
HEX = frozenset("0123456789abcdef")


def _raise(*args: object, **kwargs: object) -> Any:
    raise RuntimeError("hostile")


class _Pretty:
    """Hypothesis prints a failing example with _repr_pretty_, never the hostile __repr__."""

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(f"{type(self).__name__}(...)")


class ReprRaises(_Pretty):
    __repr__ = _raise
    __str__ = _raise


class BoolRaises(_Pretty):
    __bool__ = _raise
    __len__ = _raise


class EqHashRaises(_Pretty):
    __eq__ = _raise
    __hash__ = _raise


class GetattrRaises(_Pretty):
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)


class EverythingRaises(_Pretty):
    __repr__ = _raise
    __str__ = _raise
    __bool__ = _raise
    __len__ = _raise
    __iter__ = _raise
    __eq__ = _raise
    __hash__ = _raise


class HostileInt(_Pretty, int):
    __repr__ = _raise
    __str__ = _raise
    __index__ = _raise
    __int__ = _raise
    __add__ = _raise
    __radd__ = _raise
    __eq__ = _raise
    __hash__ = _raise


class HostileFloat(_Pretty, float):
    __repr__ = _raise
    __str__ = _raise
    __float__ = _raise
    __add__ = _raise
    __radd__ = _raise


class HostileStr(_Pretty, str):
    __str__ = _raise
    __len__ = _raise
    __eq__ = _raise
    __hash__ = _raise
    encode = _raise


class ItemsRaise(_Pretty, dict):  # type: ignore[type-arg]
    """A dict whose every way of reading raises."""

    items = _raise
    values = _raise
    keys = _raise
    __iter__ = _raise


class HalfItems(_Pretty, dict):  # type: ignore[type-arg]
    """A dict that raises halfway through being read (as one changed by another thread)."""

    def items(self) -> Iterator[tuple[Any, Any]]:  # type: ignore[override]
        yield from list(dict.items(self))[:1]
        raise RuntimeError("dictionary changed size during iteration")

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        yield from list(dict.values(self))[:1]
        raise RuntimeError("dictionary changed size during iteration")


class IterRaises(_Pretty, list):  # type: ignore[type-arg]
    __iter__ = _raise


class LenRaises(_Pretty, list):  # type: ignore[type-arg]
    __len__ = _raise


class BrokenMapping(_Pretty, Mapping[str, Any]):
    """A Mapping whose keys can be listed but whose values cannot be read."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = keys

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class Color(enum.Enum):
    RED = "red"
    ONE = 1
    NOTHING = None
    PAIR = ("a", 2)


class PBox(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    v: Any = None


@attrs.define
class ABox:
    v: Any = None


@dataclasses.dataclass
class DBox:
    v: Any = None


class RBox(BasedModel):
    """A nested model with rules of its own."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    v: Any = None
    w: Any = None

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("w"): C.HASH}


# Text with arbitrary code points, unpaired surrogates and surrogate pairs often among them.
# (The surrogates come from a map: st.characters() ranges merge, and drop surrogates.)
text = st.lists(
    st.characters(exclude_categories=())
    | st.integers(0xD800, 0xDFFF).map(chr)
    | st.sampled_from(["a", "\u00e9", "/", "@", " ", "\ud83d\ude00"]),
    max_size=12,
).map("".join)
# Ints beyond 64 bits, and beyond the 4300 digits Python writes in decimal (made in a map
# of small numbers: hypothesis may describe a strategy by the repr of its elements, and
# such ints have none).
huge = st.tuples(st.sampled_from([63, 64, 80, 16_610]), st.sampled_from([1, -1, 0])).map(
    lambda bits_sign: (
        2 ** bits_sign[0] - 1 if bits_sign[1] == 0 else bits_sign[1] * 2 ** bits_sign[0]
    )
)
HOSTILE = [
    ReprRaises,
    BoolRaises,
    EqHashRaises,
    GetattrRaises,
    EverythingRaises,
    lambda: HostileInt(7),
    lambda: HostileFloat(2.5),
    lambda: HostileStr("x\ud800y"),
    lambda: ItemsRaise(a=1),
    lambda: IterRaises([1, 2]),
    lambda: LenRaises([1, 2]),
    lambda: BrokenMapping(["a"]),
    object,
]
hashable = st.none() | st.booleans() | st.integers() | huge | text
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge
    | st.floats()
    | text
    | st.binary(max_size=8)
    | st.sampled_from(list(Color))
    | st.sampled_from(HOSTILE).map(lambda make: make())
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    items = st.lists(children, max_size=4)
    mappings = st.dictionaries(hashable | st.floats() | st.sampled_from(list(Color)), children)
    return (
        items
        | items.map(tuple)
        | st.frozensets(hashable, max_size=4)
        | st.sets(hashable, max_size=4)
        | mappings
        | mappings.map(ItemsRaise)
        | mappings.map(HalfItems)
        | items.map(IterRaises)
        | items.map(LenRaises)
        | st.builds(PBox, v=children)
        | st.builds(ABox, v=children)
        | st.builds(DBox, v=children)
        | st.builds(RBox, v=children, w=children)
    )


anything = st.recursive(leaves, containers, max_leaves=12)


class PHolder(BasedModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    v: Any = None
    conv: Any = None

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("v"): self.conv, K("conv"): C.FORBIDDEN}


@attrs.define
class AHolder(DataclassSerializationMixin):
    v: Any = None
    conv: Any = None

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("v"): self.conv, K("conv"): C.FORBIDDEN}


HOLDERS: list[type[Any]] = [PHolder, AHolder]


def strict_utf8_json(out: object) -> None:
    """The output is strict JSON (no NaN) that encodes as UTF-8."""
    json.dumps(out, allow_nan=False, ensure_ascii=False).encode("utf-8")


def hashes_to_none(value: object) -> bool:
    return value is None or (isinstance(value, enum.Enum) and value.value is None)


def check_converted(conv: AnonymityConversion, value: object, result: object) -> None:
    """``result`` has the type the conversion table promises for ``conv``."""
    if conv is C.BOOLEAN:
        assert type(result) is bool
    elif conv in (C.COUNT, C.TEXT_COUNT):
        assert type(result) is int
        assert result >= 0
    elif conv is C.HASH:
        if hashes_to_none(value):
            assert result is None
        else:
            assert isinstance(result, str)
            assert len(result) == 16
            assert set(result) <= HEX
    elif conv is C.DISTRIBUTION:
        assert type(result) is dict
        assert len(result) <= conversions.DISTRIBUTION_MAX_KEYS + 1
        for key, count in result.items():
            assert type(key) is str
            assert len(key) <= conversions.DISTRIBUTION_KEY_LENGTH
            assert type(count) is int
            assert count >= 1
    elif conv is C.AGGREGATE:
        assert type(result) in (int, float)
        assert math.isfinite(result)  # type: ignore[arg-type]
        if type(result) is int:
            assert -(2**63) < result < 2**63
    else:  # pragma: no cover - FORBIDDEN never reaches a value
        raise AssertionError(conv)


@settings(max_examples=400, deadline=None)
@given(
    value=anything,
    conv=st.sampled_from(list(C)),
    holder=st.sampled_from(HOLDERS),
)
def test_every_conversion_is_total_through_a_model(
    value: object, conv: AnonymityConversion, holder: type[Any]
) -> None:
    """Each of the seven conversions, applied by a real model's rules (pydantic and attrs,
    field typed Any), returns for any object; the output is UTF-8 JSON and the converted
    value has the documented type (FORBIDDEN: the key is absent)."""
    out = holder(v=value, conv=conv).serialize_for_telemetry(key_provider=PROVIDER)
    strict_utf8_json(out)
    assert "conv" not in out
    if conv is C.FORBIDDEN:
        assert out == {}
        return
    assert set(out) == {"v"}
    check_converted(conv, value, out["v"])


@settings(max_examples=300, deadline=None)
@given(value=anything)
def test_conversion_functions_are_total(value: object) -> None:
    """The conversion functions themselves never raise, and canonical_bytes gives bytes."""
    assert type(conversions.to_boolean(value)) is bool
    assert type(conversions.to_count(value)) is int
    assert type(conversions.to_text_count(value)) is int
    check_converted(C.AGGREGATE, value, conversions.to_aggregate(value))
    check_converted(C.DISTRIBUTION, value, conversions.to_distribution(value, scrub))
    check_converted(C.HASH, value, conversions.to_hash(value, PROVIDER.key()))
    assert type(canonical_bytes(value)) is bytes


@settings(max_examples=300, deadline=None)
@given(value=anything, key=text)
def test_the_serializer_is_total(value: object, key: str) -> None:
    """Without a rule, any object serializes (a value that cannot be read is left out) to
    strict JSON that encodes as UTF-8."""
    out = serialize_for_telemetry({key: value, "list": [value, 1]}, key_provider=PROVIDER)
    strict_utf8_json(out)
    assert isinstance(out, dict)
    assert out["list"][-1] == 1, "the rest of a list survives an unreadable item"
