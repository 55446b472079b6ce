# SPDX-License-Identifier: MIT OR Apache-2.0
"""The disk spool: finished events that could not be delivered yet, kept for later.

Only events that have left the privacy pipeline are ever written (the same payloads the
local log shows), each with the install id it was made for. Events are written in
segments: one gzip-compressed JSON-lines file of at most :data:`SEGMENT_EVENTS` events,
``spool-<tag>-<time>-<pid>-<random>-<count>.jsonl.gz`` (mode 0600), written to a temp
file, fsynced once and renamed into place. The tag names the destination (a hash of the
PostHog host and project key, or ``local``), so spooled events only ever go where they
were meant to; the time (when the segment's newest event was captured) orders segments
oldest first, for draining and for dropping, and the count lets a full spool say how
many events it dropped without reading them.

A run drains the spool one segment at a time: :meth:`Spool.claim` renames the oldest file
of its tag (so two processes never send the same spooled event twice) and reads it; the
claim is then either finished (:meth:`Claim.done`, the file is deleted) or what is still
unsent is saved again (``save(..., replacing=claim.path)``, which does not count the
claimed file against the bound) before the claimed file is deleted. A claim left by a
process that died (or by an earlier process that had this pid) is taken back into the
spool by the next :meth:`Spool.claim`, so a process killed in the middle of sending a
segment loses nothing: the next run sends the segment again, and PostHog drops what it
already has by uuid. Lines are written and read by ``_codec`` (``spool_line``,
``from_spool_line``): loaded payloads are held to what the pipeline can make, no ``$``
event but ``$feature_flag_called``, no ``$`` property but the library's; a malformed
line is skipped. Plain ``.jsonl`` files (written by earlier versions) are read too.

The spool is bounded and keeps the newest events: a save that would take it past
``max_bytes`` first deletes the unclaimed segments of its tag whose events are oldest, and
a segment older than those is itself not written (:meth:`Spool.store` says how many of
each). The spool never creates the state
directory (after ``codeweaver-telemetry delete``, a process still running writes
nothing), never writes through a symbolic link and refuses a symlinked spool directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from codeweaver_telemetry._codec import from_spool_line, spool_line
from codeweaver_telemetry._files import ensure_private_dir, read_regular, write_atomic
from codeweaver_telemetry._internal import in_forked_child
from codeweaver_telemetry._types import Event

__all__ = ["SEGMENT_EVENTS", "SPOOL_DIR", "Claim", "Spool", "Stored"]

SPOOL_DIR = "spool"
SEGMENT_EVENTS = 1000
"""The most events one spool file holds (and one drain request sends)."""
_PREFIX = "spool-"
_CLAIMED = ".claimed-"
_SUFFIX = ".jsonl.gz"
_MAX_FILE_BYTES = 64 * 1024 * 1024  # a claimed file larger than this is not read
_MAX_TEXT_BYTES = 256 * 1024 * 1024  # nor one that inflates past this (a damaged file)


class Stored(NamedTuple):
    """What :meth:`Spool.store` did with the events it was given."""

    kept: int
    """Events written."""
    refused: int
    """Events not written: older than everything the bound would have had to drop."""
    evicted: int
    """Events of older segments deleted to make room."""


class Claim:
    """One spool file taken by this process: its events, and what becomes of the file."""

    def __init__(self, spool: Spool, path: Path, events: list[Event]) -> None:
        self.spool = spool
        self.path = path
        self.events = events

    def done(self) -> None:
        """Every event of the file was delivered (or dropped on purpose): delete it."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def give_back(self, unsent: Sequence[Event]) -> int:
        """Return ``unsent`` to the spool for a later try; returns how many were kept.

        Raises:
            OSError: they could not be written (the claimed file is deleted all the same).
        """
        try:
            kept = self.spool.save(unsent, replacing=self.path) if unsent else 0
        finally:
            self.done()
        return kept


class Spool:
    """Save and claim finished events in ``directory``.

    Args:
        directory: the spool directory (created 0700 on first save, inside an existing
            state directory).
        tag: the destination; files of other tags are left alone.
        max_bytes: the most the spool may hold on disk.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        tag: str = "local",
        max_bytes: int = 2 * 1024 * 1024,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._prefix = f"{_PREFIX}{tag}-"
        self._lock = threading.Lock()  # the worker and a capturing thread may both save

    def save(self, events: Sequence[Event], *, replacing: Path | None = None) -> int:
        """Write ``events`` in segments; returns how many were kept (see :meth:`store`,
        which also says what the bound cost).

        Raises:
            OSError: as :meth:`store`.
        """
        return self.store(events, replacing=replacing).kept

    def store(self, events: Sequence[Event], *, replacing: Path | None = None) -> Stored:
        """Write ``events`` in segments of at most :data:`SEGMENT_EVENTS`.

        The spool keeps the newest events: to make room, the segments whose events are
        oldest are deleted first, and a segment older than all that would have to go for
        it is not written (``refused``). ``replacing``: a claimed file these events come
        from, deleted right after; it does not count against the bound (handing a claim
        back never loses it to its own size). Nothing is written when the state directory
        is gone.

        Raises:
            OSError: a segment could not be written (a full disk, a symlinked directory);
                the events of that segment and the ones after it were not kept.
        """
        kept = refused = evicted = 0
        if not events:
            return Stored(0, 0, 0)
        if not self.directory.parent.is_dir():  # the state directory was deleted: keep nothing
            return Stored(0, 0, 0)
        ensure_private_dir(self.directory)
        events = sorted(events, key=_capture_time)  # segments of like age: old ones go first
        for start in range(0, len(events), SEGMENT_EVENTS):
            part = events[start : start + SEGMENT_EVENTS]
            data = _encode(part)
            age = _newest_ns(part)
            with self._lock:
                room, freed = self._make_room(len(data), age, replacing)
                evicted += freed
                if not room:
                    refused += len(part)
                    continue
                name = (
                    f"{self._prefix}{age:020d}-{os.getpid()}-"
                    f"{secrets.token_hex(4)}-{len(part)}{_SUFFIX}"
                )
                write_atomic(self.directory, name, data)
            kept += len(part)
        return Stored(kept, refused, evicted)

    def _make_room(self, need: int, age_ns: int, replacing: Path | None) -> tuple[bool, int]:
        """Make room for a segment of ``need`` bytes whose newest event is ``age_ns``
        (under the lock): (whether it may be written, events deleted for it)."""
        if need > self.max_bytes:
            return False, 0
        segments: list[tuple[float, int, str, int]] = []  # (age, 0, name, size)
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if replacing is not None and entry.name == replacing.name:
                    continue
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
                total += size
                if entry.name.startswith(self._prefix):
                    segments.append((_order(entry), 0, entry.name, size))
        victims: list[str] = []
        fits = True
        # The new segment (rank 1) counts as newer than a stored one of the same age.
        for _, _, name, size in sorted([*segments, (age_ns / 1e9, 1, "", need)]):
            if total + need <= self.max_bytes:
                break
            if not name:  # the new segment is the oldest left: it is the one that goes
                fits = False
                break
            victims.append(name)
            total -= size
        else:
            fits = total + need <= self.max_bytes
        freed = 0
        for name in victims:
            path = self.directory / name
            count = _count_of(name) if name.endswith(_SUFFIX) else len(_read(path))
            try:
                os.unlink(path)
            except FileNotFoundError:  # drained by another process meanwhile
                continue
            except OSError:
                return False, freed
            freed += count
        return fits, freed

    def has_files(self) -> bool:
        """Whether any file of this tag waits (claimed by a dead process included)."""
        try:
            with os.scandir(self.directory) as entries:
                return any(self._mine(entry.name) for entry in entries)
        except OSError:
            return False

    def _mine(self, name: str) -> bool:
        if name.startswith(self._prefix):
            return True
        return name.startswith(_CLAIMED) and self._prefix in name

    def claim(self, keep: Callable[[Event], bool] | None = None) -> Claim | None:
        """Take the oldest file of this tag, or None when there is none.

        Events for which ``keep`` returns False (made for an install id that is no longer
        the current one) are left out of the claim; they are deleted with the file.
        """
        if self.directory.is_symlink():  # never read events from outside the state directory
            return None
        self._recover_abandoned()
        while True:
            try:
                with os.scandir(self.directory) as entries:
                    found = [
                        (_order(e), e.name) for e in entries if e.name.startswith(self._prefix)
                    ]
            except OSError:
                return None
            if not found:
                return None
            for _, name in sorted(found):
                claimed = self.directory / f"{_CLAIMED}{_claimer()}-{name}"
                try:
                    os.replace(self.directory / name, claimed)  # another process may win
                except FileNotFoundError:
                    continue
                except OSError:  # read-only or not ours to rename: nothing to claim here
                    return None
                events = _read(claimed)
                if keep is not None:
                    events = [e for e in events if keep(e)]
                return Claim(self, claimed, events)

    def _recover_abandoned(self) -> None:
        """Put back files claimed by processes that no longer run."""
        try:
            with os.scandir(self.directory) as entries:
                names = [e.name for e in entries if e.name.startswith(_CLAIMED)]
        except OSError:
            return
        for name in names:
            pid_text, _, rest = name[len(_CLAIMED) :].partition("-")
            token, _, original = rest.partition("-")
            if not original.startswith(self._prefix) or not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if pid == os.getpid():
                if token == _CLAIM_TOKEN[0]:
                    continue  # this process's own claim
            elif _alive(pid):
                continue
            # A dead process's claim, or one of an earlier process that had this pid (a
            # container's pid 1 in the last run, say): back into the spool.
            with contextlib.suppress(OSError):
                os.replace(self.directory / name, self.directory / original)

    def load(self, limit: int | None = None) -> list[Event]:
        """Claim and read whole files of this tag, oldest first, up to ``limit`` events.

        If the last file holds more than is wanted, the rest goes back to the spool.
        """
        events: list[Event] = []
        while limit is None or len(events) < limit:
            claim = self.claim()
            if claim is None:
                break
            room = len(claim.events) if limit is None else limit - len(events)
            events.extend(claim.events[:room])
            claim.give_back(claim.events[room:])
        return events

    def clear(self) -> list[Path]:
        """Delete every spool file (the CLI's ``disable`` and ``delete``); returns them."""
        removed = []
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for path in self.directory.iterdir():
                if path.name.startswith((_PREFIX, _CLAIMED, f".{_PREFIX}")):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
        with contextlib.suppress(OSError):
            self.directory.rmdir()
        return removed


_CLAIM_TOKEN = [secrets.token_hex(4)]  # renewed in a forked child (which has its own pid)


def _renew_claim_token() -> None:
    _CLAIM_TOKEN[0] = secrets.token_hex(4)


in_forked_child(_renew_claim_token)


def _claimer() -> str:
    """``<pid>-<token>``: whose claim a file is, told apart from an earlier process that
    had the same pid."""
    return f"{os.getpid()}-{_CLAIM_TOKEN[0]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def _order(entry: os.DirEntry[str]) -> float:
    """How old a spool file's events are: the capture time of its newest event (in its
    name), else the file's mtime."""
    parts = entry.name.split("-")
    if len(parts) >= 6 and parts[2].isdigit() and len(parts[2]) == 20:
        return int(parts[2]) / 1e9
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def _capture_time(event: Event) -> float:
    return event.timestamp


def _newest_ns(events: Sequence[Event]) -> int:
    """When the newest of ``events`` was captured, in nanoseconds (now, if none can say).

    A segment is as old as its newest event: one that also holds an old event kept for
    retry (spooled at exit with the newest ones) is still among the newest segments."""
    try:
        return max(0, min(int(max(e.timestamp for e in events) * 1e9), 10**20 - 1))
    except (OverflowError, ValueError):
        return time.time_ns()


def _count_of(name: str) -> int:
    """The event count a segment's name ends with (0 when it has none)."""
    tail = name[: -len(_SUFFIX)].rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _encode(events: Sequence[Event]) -> bytes:
    text = "".join([spool_line(e) + "\n" for e in events]).encode("utf-8")
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip framing: `zcat` reads a segment
    return packer.compress(text) + packer.flush()


def _read(path: Path) -> list[Event]:
    try:
        data = read_regular(path, _MAX_FILE_BYTES)
    except OSError:
        return []
    if data[:2] == b"\x1f\x8b":
        unpacker = zlib.decompressobj(47)
        try:
            data = unpacker.decompress(data, _MAX_TEXT_BYTES)
        except zlib.error:  # damaged: none of it is read
            data = b""
    events = []
    for line in data.splitlines():
        event = from_spool_line(line)
        if event is not None:
            events.append(event)
    return events
