# SPDX-License-Identifier: MIT OR Apache-2.0
"""Keyed hashing for the HASH conversion: HMAC-SHA256 under a per-install secret key.

The key never leaves the machine. Without it, a hash cannot be matched against a dictionary
of likely values (paths, repository names, e-mail addresses), and two installs hash the same
value differently. Output is 16 lowercase hex characters (64 bits): short enough to be a plain
JSON string, long enough that collisions inside one install are negligible for analytics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from codeweaver_telemetry._files import read_regular
from codeweaver_telemetry._internal import in_forked_child

__all__ = [
    "HASH_HEX_LENGTH",
    "FileKeyProvider",
    "InMemoryKeyProvider",
    "KeyProvider",
    "KeyedHasher",
    "canonical_bytes",
    "get_default_key_provider",
    "keyed_hash",
    "set_default_key_provider",
]

HASH_HEX_LENGTH = 16
"""Length of every HASH output, in lowercase hex characters."""

_KEY_BYTES = 32
_MAX_KEY_FILE_BYTES = 4096
KEY_FILE_NAME = "hash_key"


@runtime_checkable
class KeyProvider(Protocol):
    """Anything that returns the install's secret HMAC key (at least 16 bytes)."""

    def key(self) -> bytes:
        """Return the secret key; the same bytes on every call."""
        ...


class InMemoryKeyProvider:
    """A key held in memory: random per instance unless one is given.

    This is the default until the client wires the install's stored key: hashes are then
    stable within the process only, which is the safe failure (never a guessable hash).
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


class FileKeyProvider:
    """A key kept in ``<state_dir>/hash_key``, created on first use with mode 0600.

    Creation is safe with several processes at once: the key is written to a private temp
    file and linked into place; if another process won the race, its key is used. Nothing
    is ever written through a symbolic link planted at the path (a hard link or rename
    never follows one). The file is read without blocking and at most 4 KiB of it: a FIFO,
    a device or a larger file at the path makes :meth:`key` raise an ``OSError``.

    Args:
        state_dir: the directory that holds the key file. It is created (0700) on first use.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self._path = Path(state_dir) / KEY_FILE_NAME
        self._key: bytes | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """Where the key lives."""
        return self._path

    def key(self) -> bytes:
        """Return the stored key, creating it on first use.

        Raises:
            OSError: the key file cannot be read or created (not a regular file, too
                large, permissions...).
            ValueError: the key file does not hold a key (not hex, or too short).
        """
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = self._load_or_create()
        return self._key

    def _load_or_create(self) -> bytes:
        existing = self._read()
        if existing is not None:
            return existing
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".hash_key.", dir=self._path.parent)
        try:
            os.write(fd, secrets.token_hex(_KEY_BYTES).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, self._path)  # atomic, and fails if another process got there first
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system
                if not self._path.exists():
                    os.replace(tmp, self._path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        stored = self._read()
        if stored is None:
            raise OSError(f"could not read back the HASH key at {self._path}")
        return stored

    def _read(self) -> bytes | None:
        # Bounded and non-blocking: a FIFO or a device planted at the path is refused with
        # an OSError instead of hanging the worker, and so is a file over 4 KiB.
        try:
            data = read_regular(self._path, _MAX_KEY_FILE_BYTES)
        except FileNotFoundError:
            return None
        key = bytes.fromhex(data.decode("ascii").strip())
        if len(key) < 16:
            raise ValueError(f"the HASH key file {self._path} is too short; delete it to renew")
        return key

    def __repr__(self) -> str:
        return f"FileKeyProvider({str(self._path.parent)!r})"


_default_lock = threading.Lock()


def _renew_default_lock() -> None:  # a fork may land while another thread holds it
    global _default_lock
    _default_lock = threading.Lock()


in_forked_child(_renew_default_lock)
_default_provider: KeyProvider = InMemoryKeyProvider()


def get_default_key_provider() -> KeyProvider:
    """Return the provider used when ``serialize_for_telemetry`` is not given one."""
    return _default_provider


def set_default_key_provider(provider: KeyProvider) -> KeyProvider:
    """Install ``provider`` as the process default and return the previous one."""
    global _default_provider
    with _default_lock:
        previous, _default_provider = _default_provider, provider
    return previous


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
