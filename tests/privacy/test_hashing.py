"""Keyed hashing and the key providers."""

from __future__ import annotations

import multiprocessing
import os
import stat
import sys
from pathlib import Path

import pytest

from codeweaver_telemetry import FileKeyProvider, InMemoryKeyProvider
from codeweaver_telemetry.privacy.hashing import (
    canonical_bytes,
    get_default_key_provider,
    keyed_hash,
    set_default_key_provider,
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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_file_provider_creates_a_private_key_once(tmp_path: Path) -> None:
    """The key file is created on first use with mode 0600 and reused afterwards."""
    state = tmp_path / "state"
    p = FileKeyProvider(state)
    assert not state.exists(), "nothing is written before the key is needed"
    key = p.key()
    assert stat.S_IMODE(os.stat(p.path).st_mode) == 0o600
    assert FileKeyProvider(state).key() == key
    assert len(key) == 32
    assert list(state.iterdir()) == [p.path], "no temp files are left behind"


def _key_in_child(state: str, queue: multiprocessing.Queue[bytes]) -> None:
    queue.put(FileKeyProvider(state).key())


def test_file_provider_is_safe_across_processes(tmp_path: Path) -> None:
    """Several processes creating the key at once all end up with the same key."""
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[bytes] = ctx.Queue()
    procs = [ctx.Process(target=_key_in_child, args=(str(tmp_path), queue)) for _ in range(4)]
    for proc in procs:
        proc.start()
    keys = {queue.get(timeout=30) for _ in procs}
    for proc in procs:
        proc.join(timeout=30)
    assert keys == {FileKeyProvider(tmp_path).key()}


def test_corrupt_key_file_is_an_error_not_a_weak_key(tmp_path: Path) -> None:
    """A truncated key file is refused rather than used as a weak key."""
    (tmp_path / "hash_key").write_text("abcd")
    with pytest.raises(ValueError, match="too short"):
        FileKeyProvider(tmp_path).key()


def test_default_provider_can_be_swapped() -> None:
    """The process default can be replaced (the client wires the install key this way)."""
    mine = InMemoryKeyProvider(b"m" * 32)
    previous = set_default_key_provider(mine)
    try:
        assert get_default_key_provider() is mine
    finally:
        set_default_key_provider(previous)


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
