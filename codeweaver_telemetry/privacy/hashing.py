# SPDX-License-Identifier: MIT OR Apache-2.0
"""Keyed hashing for the HASH conversion: HMAC-SHA256 under a per-install secret key.

The key never leaves the machine. Without it, a hash cannot be matched against a dictionary
of likely values (paths, repository names, e-mail addresses), and two installs hash the same
value differently. Output is 16 lowercase hex characters (64 bits): short enough to be a plain
JSON string, long enough that collisions inside one install are negligible for analytics.

The key is always passed explicitly: the client holds the install's key (kept in
``state.json``) and hands it to its own pipeline. A direct ``serialize_for_telemetry()``
call without ``key_provider=`` uses :func:`get_default_key_provider`, a random key of this
process that nothing can replace, so no client changes what another caller's hashes are.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import ClassVar, Protocol, runtime_checkable

__all__ = [
    "HASH_HEX_LENGTH",
    "InMemoryKeyProvider",
    "KeyProvider",
    "KeyedHasher",
    "canonical_bytes",
    "get_default_key_provider",
    "keyed_hash",
]

HASH_HEX_LENGTH = 16
"""Length of every HASH output, in lowercase hex characters."""

_KEY_BYTES = 32
KEY_FILE_NAME = "hash_key"
"""The key file the removed ``FileKeyProvider`` kept in the state directory. The library
no longer writes it; the name stays so that ``codeweaver-telemetry`` can still delete one
left by an earlier version."""


@runtime_checkable
class KeyProvider(Protocol):
    """Anything that returns the install's secret HMAC key (at least 16 bytes)."""

    def key(self) -> bytes:
        """Return the secret key; the same bytes on every call."""
        ...


class InMemoryKeyProvider:
    """A key held in memory: random per instance unless one is given.

    The client wraps the install's stored key in one. Without a key, hashes are stable
    within the process only, which is the safe failure (never a guessable hash).
    """

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) < 16:
            raise ValueError("a HASH key must be at least 16 bytes")
        self._key = key if key is not None else secrets.token_bytes(_KEY_BYTES)

    def key(self) -> bytes:
        """Return the key."""
        return self._key

    def __repr__(self) -> str:
        return "InMemoryKeyProvider(<secret>)"


_PROCESS_KEY_PROVIDER: KeyProvider = InMemoryKeyProvider()


def get_default_key_provider() -> KeyProvider:
    """The provider used when ``serialize_for_telemetry`` is not given one.

    One :class:`InMemoryKeyProvider` per process, with a random key that is never written
    anywhere: its hashes are stable within the process only. Nothing replaces it; pass
    ``key_provider=client.key_provider`` for the install's stable hashes.
    """
    return _PROCESS_KEY_PROVIDER


def _json_default(value: object) -> object:
    if isinstance(value, (set, frozenset)):
        return sorted(repr(v) for v in value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="python")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    attrs_fields = getattr(type(value), "__attrs_attrs__", None)
    if attrs_fields is not None:
        return {a.name: getattr(value, a.name) for a in attrs_fields}
    return repr(value)


def _int_text(value: int) -> str:
    number = int.__index__(value)  # the number itself, whatever a subclass overrides
    try:
        return str(number)
    except ValueError:  # more digits than Python writes in decimal; hex has no limit
        return hex(number)


def _type_only(value: object) -> bytes:
    try:
        cls = type(value)
        name = f"{cls.__module__}.{cls.__qualname__}"
        return b"o:" + name.encode("utf-8", "surrogatepass")
    except Exception:  # a metaclass that hides its names
        return b"o:"


def canonical_bytes(value: object) -> bytes:
    """Encode ``value`` so that equal values give equal bytes and types do not collide.

    ``"1"``, ``1``, ``1.0`` and ``True`` all encode differently. Collections and models are
    encoded as sorted JSON of their raw content.

    Never raises. A value JSON cannot encode (a cycle, unsortable keys, an object whose
    ``items()`` or ``__iter__`` raises) is encoded by its ``repr``; a value whose repr
    raises too, by its type alone (``b"o:"`` and the qualified type name).
    """
    if type(value) is str:
        return b"s:" + value.encode("utf-8", "surrogatepass")
    try:
        return _canonical(value)
    except Exception:  # not JSON-encodable: its repr, or else its type
        try:
            return b"j:" + str.encode(repr(value), "utf-8", "surrogatepass")
        except Exception:
            return _type_only(value)


def _canonical(value: object) -> bytes:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None:
        return b"n:"
    # The base types' own methods: a subclass's overrides may raise or lie.
    if isinstance(value, str):
        return b"s:" + str.encode(value, "utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"b:" + bytes(value)
    if isinstance(value, bool):
        return b"t:1" if value else b"t:0"
    if isinstance(value, int):
        return b"i:" + _int_text(value).encode("ascii")
    if isinstance(value, float):
        return b"f:" + float.__repr__(value).encode("ascii")
    text = json.dumps(value, sort_keys=True, default=_json_default, ensure_ascii=False)
    return b"j:" + text.encode("utf-8", "surrogatepass")


def keyed_hash(value: object, key: bytes) -> str:
    """HMAC-SHA256 of ``canonical_bytes(value)`` under ``key``, as 16 lowercase hex chars."""
    return KeyedHasher.for_key(key)(value)


class KeyedHasher:
    """``keyed_hash`` for one key: HMAC-SHA256 (RFC 2104) with the key schedule done once.

    The inner and outer SHA-256 states are keyed once and copied per value (a C-level copy),
    and recent results are remembered (values such as paths repeat across events).
    """

    __slots__ = ("_inner", "_memo", "_outer")
    _cache: ClassVar[dict[bytes, KeyedHasher]] = {}
    _MEMO_SIZE: ClassVar[int] = 4096

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self._memo: dict[object, str] = {}

    @property
    def memo(self) -> Mapping[object, str]:
        """Recent results, ``value -> hash`` (str values of at most 256 characters).

        A hit is what calling the hasher would return; callers only read it.
        """
        return self._memo

    @classmethod
    def forget_all(cls) -> None:
        """Drop every cached hasher (and with it the keys they hold)."""
        cls._cache.clear()

    @classmethod
    def for_key(cls, key: bytes) -> KeyedHasher:
        """A shared hasher for ``key`` (a few keys per process at most)."""
        hasher = cls._cache.get(key)
        if hasher is None:
            if len(cls._cache) > 16:
                cls._cache.clear()
            hasher = cls._cache[key] = cls(key)
        return hasher

    def __call__(self, value: object) -> str:
        memo_key = value if type(value) is str and len(value) <= 256 else None
        if memo_key is not None:
            found = self._memo.get(memo_key)
            if found is not None:
                return found
        inner = self._inner.copy()
        inner.update(canonical_bytes(value))
        outer = self._outer.copy()
        outer.update(inner.digest())
        result = outer.hexdigest()[:HASH_HEX_LENGTH]
        if memo_key is not None:
            if len(self._memo) >= self._MEMO_SIZE:
                self._memo.clear()
            self._memo[memo_key] = result
        return result

    def __repr__(self) -> str:
        return "KeyedHasher(<secret>)"
