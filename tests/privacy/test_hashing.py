"""Keyed hashing and the key providers."""

from __future__ import annotations

import contextlib
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
from tests.helpers import within


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


# The key file: bounded, non-blocking, never written through a link -----------------------
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file system features")


@posix_only
def test_a_fifo_at_the_key_path_raises_at_once(tmp_path: Path) -> None:
    """A FIFO planted at hash_key makes key() raise an OSError at once, never hang (opening
    a FIFO for reading would wait for a writer forever)."""
    fifo = tmp_path / "hash_key"
    os.mkfifo(fifo)
    provider = FileKeyProvider(tmp_path)
    try:
        outcome = within(provider.key)
    finally:
        # If a regression left the reader blocked in open(), a writer lets it go.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert isinstance(outcome, OSError)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO is left as it was"


def test_an_oversized_key_file_is_refused(tmp_path: Path) -> None:
    """A key file far larger than any real one is refused with an OSError, not read whole."""
    (tmp_path / "hash_key").write_text("ab" * 8192, encoding="ascii")
    with pytest.raises(OSError, match="larger than"):
        FileKeyProvider(tmp_path).key()


@posix_only
def test_a_dangling_symlink_at_the_key_path_is_never_written_through(tmp_path: Path) -> None:
    """hash_key planted as a link to a file that does not exist: the key is not written
    through it (the file it names is never created), and key() raises an OSError."""
    victim = tmp_path / "elsewhere" / "victim"
    victim.parent.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(victim, state / "hash_key")
    with pytest.raises(OSError, match="could not read back"):
        FileKeyProvider(state).key()
    assert not victim.exists()
    assert os.path.islink(state / "hash_key")
    assert [p.name for p in state.iterdir()] == ["hash_key"], "no temp file is left behind"


@posix_only
def test_a_symlink_to_a_file_is_never_written_through(tmp_path: Path) -> None:
    """hash_key planted as a link to someone else's file: that file is left untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n", encoding="utf-8")
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(victim, state / "hash_key")
    with pytest.raises(ValueError, match="hexadecimal"):  # read through the link: no key
        FileKeyProvider(state).key()
    assert victim.read_text(encoding="utf-8") == "precious\n"


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
