"""Keyed hashing and the key providers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import codeweaver_telemetry
from codeweaver_telemetry.privacy import hashing
from codeweaver_telemetry.privacy.hashing import (
    InMemoryKeyProvider,
    canonical_bytes,
    get_default_key_provider,
    keyed_hash,
)


def test_in_memory_keys_differ_per_instance() -> None:
    """Two installs (providers) hash the same value differently."""
    a, b = InMemoryKeyProvider(), InMemoryKeyProvider()
    assert a.key() != b.key()
    assert keyed_hash("x", a.key()) != keyed_hash("x", b.key())
    assert keyed_hash("x", a.key()) == keyed_hash("x", a.key())


def test_short_keys_are_refused() -> None:
    """A key shorter than 16 bytes is a programming error."""
    with pytest.raises(ValueError, match="16 bytes"):
        InMemoryKeyProvider(b"short")


def test_repr_never_shows_the_key() -> None:
    """The key never appears in a repr."""
    p = InMemoryKeyProvider(b"0123456789abcdef-hunter2")
    assert "hunter2" not in repr(p)


def test_default_provider_is_one_random_key_per_process() -> None:
    """Without key_provider=, hashing uses one in-memory provider per process: the same on
    every call, a random key of full length."""
    provider = get_default_key_provider()
    assert isinstance(provider, InMemoryKeyProvider)
    assert get_default_key_provider() is provider
    assert len(provider.key()) == 32
    assert provider.key() == provider.key()


def test_default_provider_cannot_be_replaced() -> None:
    """Nothing installs a process-wide key any more: the key is passed explicitly, so no
    client decides what another caller's hashes are."""
    assert not hasattr(hashing, "set_default_key_provider")
    assert not hasattr(hashing, "FileKeyProvider")
    assert "set_default_key_provider" not in hashing.__all__


_KEY_PROBE = """
import json, os
from codeweaver_telemetry.privacy.hashing import get_default_key_provider
before = set(os.listdir("."))
key = get_default_key_provider().key().hex()
print(json.dumps({"key": key, "written": sorted(set(os.listdir(".")) - before)}))
"""


def test_default_key_differs_per_process_and_is_never_written(tmp_path: Path) -> None:
    """Two processes get two different default keys (hashes stable within a process only),
    and the key is not written anywhere (not even the working directory)."""
    root = Path(codeweaver_telemetry.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "CODEWEAVER_HOME": str(tmp_path / "home")}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _KEY_PROBE],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        for _ in range(2)
    ]
    assert runs[0]["key"] != runs[1]["key"]
    assert [run["written"] for run in runs] == [[], []]
    assert not (tmp_path / "home").exists()


def test_canonical_bytes_separate_types() -> None:
    """Equal-looking values of different types never share an encoding."""
    values = ["1", 1, 1.0, True, b"1", None, [1], {"1": 1}]
    assert len({canonical_bytes(v) for v in values}) == len(values)


@pytest.mark.parametrize("key", [b"k" * 16, b"k" * 32, b"x" * 64, b"long" * 40])
@pytest.mark.parametrize("value", ["/home/alice/repo", "", 42, b"\x00raw", [1, "a"], None])
def test_keyed_hash_is_standard_hmac_sha256(key: bytes, value: object) -> None:
    """The hash is exactly HMAC-SHA256 (RFC 2104) of the canonical bytes, cut to 16 hex."""
    import hashlib
    import hmac

    expected = hmac.new(key, canonical_bytes(value), hashlib.sha256).hexdigest()[:16]
    assert keyed_hash(value, key) == expected
    assert keyed_hash(value, key) == expected, "the remembered result is the same"


# canonical_bytes never raises --------------------------------------------------------------
class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class ItemsRaise(dict):  # type: ignore[type-arg]
    def items(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("no items")


def test_canonical_bytes_falls_back_to_repr_then_to_the_type() -> None:
    """What JSON cannot encode is encoded by its repr (equal dicts whose items() raises still
    encode equally), and what has no repr either by its qualified type name."""
    assert canonical_bytes(ItemsRaise(a=1)) == canonical_bytes(ItemsRaise(a=1))
    assert canonical_bytes(ItemsRaise(a=1)) != canonical_bytes(ItemsRaise(a=2))
    assert canonical_bytes(ReprRaises()) == b"o:" + f"{__name__}.ReprRaises".encode()
    assert canonical_bytes([ReprRaises()]) == b"o:builtins.list"


def test_canonical_bytes_of_huge_ints() -> None:
    """An int too long for decimal text (over 4300 digits) is encoded in hex, not an error;
    ordinary ints keep their decimal encoding."""
    assert canonical_bytes(10**5000) == b"i:" + hex(10**5000).encode()
    assert canonical_bytes(10**5000) != canonical_bytes(10**5000 + 1)
    assert canonical_bytes(-(2**80)) == b"i:" + str(-(2**80)).encode()
    assert canonical_bytes([10**5000]).startswith(b"o:")


def test_canonical_bytes_ignores_hostile_subclass_methods() -> None:
    """Subclasses of int, float and str encode as their value, whatever they override."""

    class Int(int):
        def __repr__(self) -> str:
            raise RuntimeError

        __str__ = __repr__

    class Float(float):
        def __repr__(self) -> str:
            raise RuntimeError

    class Str(str):
        def encode(self, *args: object) -> bytes:
            raise RuntimeError

    assert canonical_bytes(Int(5)) == canonical_bytes(5)
    assert canonical_bytes(Float(2.5)) == canonical_bytes(2.5)
    assert canonical_bytes(Str("a")) == canonical_bytes("a")
