# SPDX-License-Identifier: MIT OR Apache-2.0
"""The hash chain of the local log, its head, and :func:`verify_log`.

Each line of ``events.jsonl`` is the payload object with two more top-level fields at its
end: ``seq`` (1, 2, 3, ...) and ``prev``, the SHA-256 (lowercase hex) of the previous
line's exact bytes without its newline; the first line of a chain has ``prev`` =
:data:`GENESIS` (64 zeros)::

    {"event":"e",...,"properties":{...},"seq":7,"prev":"9f86d0...0f00a08"}

The chain runs on from ``events.jsonl.1`` into ``events.jsonl``: a rotation starts the new
file with the next ``seq`` and the last hash of the old one.

The head, ``events.head`` (mode 0600; one 512-byte record, JSON padded with spaces,
rewritten in place with a single write under the state directory's lock right after each
append; :func:`verify_log` reads under the same lock), records where the chain must end
and where the kept part of it must start::

    {"version":1,"seq":812,"hash":"<sha256 of line 812>","size":40960,
     "oldest":{"seq":401,"prev":"<hash>"},"current":{"seq":655,"prev":"<hash>"}}

``oldest`` is the first chained line of the oldest file kept (``events.jsonl.1`` once a
rotation happened), ``current`` the first line of ``events.jsonl``, and ``size`` the size
of ``events.jsonl`` after the line at ``seq`` (so the writer notices, with one ``fstat``,
when the file is not as it left it). A rotation moves ``current`` to ``oldest``: when the
older file is dropped, the chain's verifiable start moves forward with it, and the head
says where it now is, so deleting ``events.jsonl.1`` is still seen.

The writer trusts the head, not the file: new lines always chain from the head. A log
whose end was cut therefore keeps the evidence after the next write (a gap in ``seq``).
The one exception is a crash between the append and the head update: lines after the
head's line that chain from it are the writer's own, and the next append adopts them
(the head lags by at most the batch that was being written, and :func:`verify_log`
accepts such a lag).

What the chain proves, and what it does not: it is unkeyed. It shows edits, removals,
insertions, reordering and truncation made without recomputing the hashes (by hand, by a
tool, by a disk error). Someone who rewrites every line after an edit *and* the head
consistently is not detected; for that the head would have to be kept out of their
reach.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codeweaver_telemetry._files import LOCK_FILE, exclusive_lock, overwrite_small, read_regular

__all__ = [
    "GENESIS",
    "HEAD_FILE",
    "LOG_FILE",
    "OLD_LOG_FILE",
    "REASONS",
    "Head",
    "LogCheck",
    "chain_lines",
    "line_hash",
    "read_head",
    "rebuild_head",
    "reconcile",
    "verify_log",
    "write_head",
]

LOG_FILE = "events.jsonl"
"""The current file of the local log."""

OLD_LOG_FILE = LOG_FILE + ".1"
"""The rotated (older) file of the local log."""

HEAD_FILE = "events.head"
"""The head of the chain: last ``seq`` and hash, and where the kept chain starts."""

GENESIS = "0" * 64
"""``prev`` of the first line of a chain."""

REASONS = frozenset(
    {
        "edited",
        "removed",
        "reordered",
        "inserted",
        "truncated",
        "rotated_file_missing",
        "head_missing",
        "unreadable",
        "unchained",
    }
)
"""Every value :attr:`LogCheck.reason` may take."""

_MAX_READ = 64 * 1024 * 1024  # as read_log: far above what rotation keeps
_MAX_HEAD = 4096
_HEAD_SIZE = 512  # one disk sector: the largest head is about 330 bytes


def line_hash(raw: bytes) -> str:
    """SHA-256 (lowercase hex) of one line's exact bytes, without its newline."""
    return hashlib.sha256(raw).hexdigest()


def chain_lines(payload_lines: Sequence[str], seq: int, prev: str) -> tuple[bytes, int, str]:
    """Chain compact JSON objects after the line ``(seq, prev-hash)``.

    Args:
        payload_lines: one compact JSON object per item (no newline), each ending in ``}``.
        seq: the ``seq`` of the chain's last line (0 for none).
        prev: that line's hash (:data:`GENESIS` for none).

    Returns:
        The bytes to append (each line with its newline), and the new last ``seq`` and hash.
    """
    out = []
    sha256 = hashlib.sha256
    for text in payload_lines:
        seq += 1
        raw = f'{text[:-1]},"seq":{seq},"prev":"{prev}"}}'.encode()
        prev = sha256(raw).hexdigest()
        out.append(raw)
    out.append(b"")
    return b"\n".join(out), seq, prev


@dataclasses.dataclass(frozen=True)
class Head:
    """The head of the chain, as kept in ``events.head`` (see the module docstring)."""

    seq: int = 0
    hash: str = GENESIS
    size: int = 0
    oldest_seq: int = 1
    oldest_prev: str = GENESIS
    current_seq: int = 1
    current_prev: str = GENESIS

    def to_json(self) -> dict[str, Any]:
        """The head as the JSON object of ``events.head``."""
        return {
            "version": 1,
            "seq": self.seq,
            "hash": self.hash,
            "size": self.size,
            "oldest": {"seq": self.oldest_seq, "prev": self.oldest_prev},
            "current": {"seq": self.current_seq, "prev": self.current_prev},
        }

    @classmethod
    def from_json(cls, data: object) -> Head:
        """Read a head back.

        Raises:
            ValueError: not a head this version wrote.
        """
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a log head")
        oldest, current = data.get("oldest"), data.get("current")
        if not isinstance(oldest, dict) or not isinstance(current, dict):
            raise ValueError("not a log head")
        head = cls(
            seq=_int(data.get("seq")),
            hash=_hex(data.get("hash")),
            size=_int(data.get("size")),
            oldest_seq=_int(oldest.get("seq")),
            oldest_prev=_hex(oldest.get("prev")),
            current_seq=_int(current.get("seq")),
            current_prev=_hex(current.get("prev")),
        )
        if not 1 <= head.oldest_seq <= head.current_seq <= head.seq + 1:
            raise ValueError("not a log head")
        return head

    def advanced(self, seq: int, hash: str, size: int) -> Head:
        """The head after lines up to ``seq`` were appended (the file now ``size`` bytes)."""
        return dataclasses.replace(self, seq=seq, hash=hash, size=size)

    def rotated(self) -> Head:
        """The head once ``events.jsonl`` became ``events.jsonl.1`` (the new file is empty)."""
        return dataclasses.replace(
            self,
            size=0,
            oldest_seq=self.current_seq,
            oldest_prev=self.current_prev,
            current_seq=self.seq + 1,
            current_prev=self.hash,
        )


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("not a log head")
    return value


def _hex(value: object) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError("not a log head")
    int(value, 16)
    return value


def read_head(directory: Path) -> Head | None:
    """The head in ``directory``; None when there is none.

    Raises:
        OSError: it could not be read (or is not a regular file).
        ValueError: it is not a valid head.
    """
    try:
        data = read_regular(directory / HEAD_FILE, _MAX_HEAD)
    except FileNotFoundError:
        return None
    return Head.from_json(json.loads(data))


def write_head(directory: Path, head: Head) -> None:
    """Write the head: one fixed-size record (:data:`_HEAD_SIZE` bytes, JSON padded with
    spaces) overwritten in place with a single write, never through a link. The caller
    holds the state directory's lock, as every reader does.
    """
    text = json.dumps(head.to_json(), separators=(",", ":"))
    overwrite_small(directory / HEAD_FILE, text.ljust(_HEAD_SIZE - 1).encode() + b"\n")


# -- reading the log back ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Line:
    number: int  # 1-based, in old + current
    file: str
    raw: bytes
    whole: bool  # ended by a newline
    seq: int | None
    prev: str | None

    @property
    def chained(self) -> bool:
        return self.seq is not None


def _parse(number: int, file: str, raw: bytes, whole: bool) -> _Line:
    seq: int | None = None
    prev: str | None = None
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        s, p = obj.get("seq"), obj.get("prev")
        if isinstance(s, int) and not isinstance(s, bool) and isinstance(p, str):
            seq, prev = s, p
    return _Line(number, file, raw, whole, seq, prev)


def _split(data: bytes) -> list[tuple[bytes, bool]]:
    parts = data.split(b"\n")
    last = parts.pop()
    out = [(p, True) for p in parts]
    if last:
        out.append((last, False))
    return out


def _read_files(directory: Path) -> dict[str, bytes | None]:
    """The bytes of the rotated and the current file (None for a file that is not there).

    Raises:
        OSError: a file exists but cannot be read.
    """
    files: dict[str, bytes | None] = {}
    for name in (OLD_LOG_FILE, LOG_FILE):
        try:
            files[name] = read_regular(directory / name, _MAX_READ)
        except FileNotFoundError:
            files[name] = None
    return files


def _lines(files: dict[str, bytes | None]) -> list[_Line]:
    """Every line of old + current, numbered from 1."""
    lines: list[_Line] = []
    for name, data in files.items():
        for raw, whole in _split(data or b""):
            lines.append(_parse(len(lines) + 1, name, raw, whole))
    return lines


def rebuild_head(directory: Path) -> Head:
    """A head rebuilt from the log, for a missing or unreadable ``events.head``: the last
    chained line is the end; the first chained lines of each file the starts. A log with no
    chained line gives a new chain (:class:`Head` ``()``), with ``size`` set.

    Raises:
        OSError: a log file exists but cannot be read.
    """
    lines = _lines(_read_files(directory))
    size = sum(len(x.raw) + x.whole for x in lines if x.file == LOG_FILE)
    chained = [x for x in lines if x.chained]
    if not chained:
        return Head(size=size)
    last = chained[-1]
    first = chained[0]
    in_current = [x for x in chained if x.file == LOG_FILE]
    start = in_current[0] if in_current else None
    assert last.seq is not None
    assert first.seq is not None
    assert first.prev is not None
    if start is None or start.seq is None or start.prev is None:
        current_seq, current_prev = last.seq + 1, line_hash(last.raw)
    else:
        current_seq, current_prev = start.seq, start.prev
    oldest_seq, oldest_prev = first.seq, first.prev
    if not 1 <= oldest_seq <= current_seq <= last.seq + 1:  # a broken chain: start anew here
        oldest_seq, oldest_prev = current_seq, current_prev = last.seq + 1, line_hash(last.raw)
    return Head(
        seq=last.seq,
        hash=line_hash(last.raw),
        size=size,
        oldest_seq=oldest_seq,
        oldest_prev=oldest_prev,
        current_seq=current_seq,
        current_prev=current_prev,
    )


def reconcile(data: bytes, head: Head) -> tuple[Head, bytes]:
    """The head to chain from, given ``events.jsonl`` as it is (``data``), when its size is
    not the one the head recorded; and a separator to write first.

    Lines after the head's end of file (``head.size``) that chain from the head's line (a
    batch whose head update was lost to a crash) are adopted. Anything else (a cut end,
    lines written by something else) is left as it is: the new lines chain from the head,
    so the break stays visible. A file that does not end with a newline (cut mid-line)
    gets one first, so that the fragment stays a line of its own.
    """
    separator = b"\n" if data and not data.endswith(b"\n") else b""
    seq, last = head.seq, head.hash
    at = head.size
    if at <= len(data) and (at == 0 or data[at - 1 : at] == b"\n"):
        for raw, whole in _split(data[at:]):
            line = _parse(0, LOG_FILE, raw, whole)
            if not whole or line.seq != seq + 1 or line.prev != last:
                break
            seq, last = seq + 1, line_hash(raw)
    return head.advanced(seq, last, len(data) + len(separator)), separator


# -- verification ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogCheck:
    """What :func:`verify_log` found.

    Attributes:
        intact: True when nothing shows tampering (also for a log with no chain at all).
        lines: the lines checked (chained lines, and any line where the chain broke).
        first_break: where the chain first breaks, as a 1-based line number in the
            rotated file followed by the current one; None when intact or when the
            problem is not a line (an unreadable file, a missing head).
        file: the file that line is in (``events.jsonl.1``, ``events.jsonl``), or the file
            that could not be read, or ``events.head``; None when intact.
        reason: None when intact; else one of :data:`REASONS` (see :func:`verify_log`).
            ``"unchained"`` comes with ``intact=True``: the log holds no chained line (it
            was written by a version before the chain), which is not tampering.
        unchained: lines without ``seq``/``prev`` before the chain starts (a log from an
            older version, upgraded).
    """

    intact: bool
    lines: int
    first_break: int | None = None
    file: str | None = None
    reason: str | None = None
    unchained: int = 0


def _broken(lines: int, at: _Line | None, reason: str, *, unchained: int) -> LogCheck:
    return LogCheck(
        intact=False,
        lines=lines,
        first_break=at.number if at else None,
        file=at.file if at else None,
        reason=reason,
        unchained=unchained,
    )


def verify_log(state_dir: Path) -> LogCheck:
    """Check the local log's hash chain against itself and against its head.

    The chain starts at the first chained line of the oldest file present (lines before it
    without ``seq``/``prev`` are an older version's, counted in ``unchained``); the head
    says which line that must be and where the chain must end. A head that lags the file
    by lines that chain from it (a crash before the head update) is accepted.

    Told apart, at the first break (``first_break`` names the line):

    - ``edited``: a line's bytes changed (the next line's ``prev`` no longer matches, or
      the line no longer holds its ``seq``/``prev``, or it is the last line and no longer
      matches the head). The line named is the one changed, when the chain can tell; a
      change to a ``prev`` field and to the line before it look alike only when the
      line is the last one.
    - ``removed``: lines are missing (``seq`` jumps, and the missing numbers appear
      nowhere later); also lines cut from the start of the oldest file.
    - ``reordered``: ``seq`` jumps forward and the skipped numbers come later.
    - ``inserted``: a line that belongs to no slot (a foreign or copied line, whether or
      not it has ``seq``/``prev``).
    - ``truncated``: the log ends before the head's line (lines cut at the end, or the
      last line cut mid-line), or both files are gone.
    - ``rotated_file_missing``: ``events.jsonl.1`` is gone while the head says the chain
      starts in it.
    - ``head_missing``: chained lines but no ``events.head`` (nothing bounds the end).
    - ``unreadable``: a log file or the head exists but cannot be read (or the head is not
      valid).

    Not told apart: a removed line followed by an inserted one that takes its ``seq``
    (``edited``); several tamperings at once (the first is named); removals from the start
    of the oldest file beyond what the head records. Nothing shows a rewrite that
    recomputes every hash and the head.

    Args:
        state_dir: the state directory (``client.settings.resolved_state_dir``).

    Returns:
        A :class:`LogCheck`.
    """
    directory = Path(state_dir)
    if not directory.is_dir():
        return LogCheck(True, 0)
    try:
        # Under the writers' lock: a batch or a rotation half-seen would look like tampering.
        with exclusive_lock(directory / LOCK_FILE):
            head, files = _snapshot(directory)
    except OSError as exc:
        if isinstance(exc, _Unreadable):
            return LogCheck(False, 0, None, exc.name, "unreadable")
        # No lock (a read-only directory, or held for seconds): read without it.
        try:
            head, files = _snapshot(directory)
        except _Unreadable as again:
            return LogCheck(False, 0, None, again.name, "unreadable")
    present = {name: data is not None for name, data in files.items()}
    return _Verifier(_lines(files), present, head).run()


class _Unreadable(OSError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _snapshot(directory: Path) -> tuple[Head | None, dict[str, bytes | None]]:
    try:
        head = read_head(directory)
    except (OSError, ValueError):
        raise _Unreadable(HEAD_FILE) from None
    try:
        files = _read_files(directory)
    except OSError as exc:
        raise _Unreadable(Path(exc.filename).name if exc.filename else LOG_FILE) from None
    return head, files


class _Verifier:
    def __init__(self, lines: list[_Line], present: dict[str, bool], head: Head | None) -> None:
        self.lines = lines
        self.present = present
        self.head = head
        self.hashes = [line_hash(x.raw) for x in lines]

    def run(self) -> LogCheck:
        lines, head = self.lines, self.head
        start = next((i for i, x in enumerate(lines) if x.chained), None)
        if start is None:
            return self._no_chain()
        skipped = start
        first = lines[start]
        if head is None:
            return LogCheck(False, 0, None, HEAD_FILE, "head_missing", skipped)
        assert first.seq is not None
        if first.seq > head.oldest_seq:  # the start of the kept chain is gone
            if first.seq == head.oldest_seq + 1 and start > 0:  # lost its chain fields
                return _broken(1, lines[start - 1], "edited", unchained=skipped - 1)
            if not self.present[OLD_LOG_FILE] and head.oldest_seq < head.current_seq:
                return LogCheck(False, 0, 1, OLD_LOG_FILE, "rotated_file_missing", skipped)
            return _broken(1, first, "removed", unchained=skipped)
        if first.seq == head.oldest_seq and first.prev != head.oldest_prev:
            return _broken(1, first, "edited", unchained=skipped)
        seq, prev = first.seq, self.hashes[start]
        for i in range(start + 1, len(lines)):
            line = lines[i]
            if line.seq == seq + 1 and line.prev == prev and line.whole:
                seq, prev = seq + 1, self.hashes[i]
                continue
            at, reason = self._classify(i, seq + 1, prev)
            return _broken(at.number - lines[start].number + 1, at, reason, unchained=skipped)
        return self._end(start, seq, prev)

    def _no_chain(self) -> LogCheck:
        head = self.head
        if head is not None and head.seq > 0:
            if not self.lines:
                return LogCheck(False, 0, 1, LOG_FILE, "truncated")
            last = self.lines[-1]  # the head's line should be chained: it lost its fields
            return _broken(1, last, "edited" if last.whole else "truncated", unchained=0)
        if not self.lines:
            return LogCheck(True, 0)
        return LogCheck(True, 0, reason="unchained", unchained=len(self.lines))

    def _end(self, start: int, seq: int, prev: str) -> LogCheck:
        head = self.head
        assert head is not None
        checked = len(self.lines) - start
        skipped = start
        last = self.lines[-1]
        if seq < head.seq:
            return LogCheck(False, checked, last.number + 1, last.file, "truncated", skipped)
        if seq == head.seq and prev != head.hash:
            return _broken(checked, last, "edited", unchained=skipped)
        if seq > head.seq:  # the head lags (a crash before its update): its line must hold
            line = next(
                (i for i in range(start, len(self.lines)) if self.lines[i].seq == head.seq),
                None,
            )
            if line is not None and self.hashes[line] != head.hash:
                return _broken(checked, self.lines[line], "edited", unchained=skipped)
        return LogCheck(True, checked, unchained=skipped)

    def _classify(self, i: int, want: int, prev: str) -> tuple[_Line, str]:
        """Why line ``i`` breaks the chain, which expected ``want`` after hash ``prev``."""
        lines, hashes = self.lines, self.hashes
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        head = self.head
        assert head is not None

        def continues(other: _Line | None) -> bool:  # the slot ``want`` goes on after i
            return other is not None and other.seq == want and other.prev == prev

        if not line.chained:
            if continues(nxt):
                return line, "inserted"
            if nxt is None and not line.whole:
                return line, "truncated"
            return line, "edited"
        assert line.seq is not None
        if line.seq == want:  # its own slot, but prev does not match the line before
            if continues(nxt):
                return line, "inserted"
            links = (nxt is not None and nxt.prev == hashes[i]) or (
                nxt is None and head.seq == want and head.hash == hashes[i]
            )
            if links and i > 0:  # the line before changed
                return lines[i - 1], "edited"
            return line, "edited"
        if continues(nxt):
            if nxt is not None and line.seq == want + 1 and line.prev == hashes[i + 1]:
                return line, "reordered"
            return line, "inserted"
        if (nxt is not None and nxt.seq == want + 1) or (nxt is None and head.seq == want):
            return line, "edited"  # it holds the slot, with its seq changed
        if line.seq < want:  # a second line in a slot already taken
            before = lines[i - 1]
            if (
                line.seq == want - 1
                and line.prev == before.prev
                and nxt is not None
                and nxt.prev == hashes[i]
            ):
                return before, "inserted"  # the chain goes on from this one: the first is extra
            return line, "inserted"
        if any(x.seq == want for x in lines[i + 1 :]):
            return line, "reordered"
        if nxt is None and not line.whole:
            return line, "truncated"
        return line, "removed"
