# SPDX-License-Identifier: MIT OR Apache-2.0
"""The disk spool: finished events that could not be delivered before exit, kept for later.

Only events that have left the privacy pipeline are ever written (the same payloads the
local log shows). Each saving process writes one file ``spool-<tag>-<pid>-<random>.jsonl``
(mode 0600) with a temp file and a rename. The tag names the destination (a hash of the
PostHog host and project key, or ``local``), so spooled events only ever go where they
were meant to. A later run claims files by renaming them before reading, so two processes
never send the same spooled event twice; it takes at most ``limit`` events and leaves the
rest for later. The spool is bounded: past ``max_bytes`` in all, nothing more is written
and the events are counted as dropped. The spool never creates the state directory: after
``codeweaver-telemetry delete``, a process still running writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from codeweaver_telemetry._types import Event

__all__ = ["SPOOL_DIR", "Spool"]

SPOOL_DIR = "spool"
_PREFIX = "spool-"
_CLAIMED = ".claimed-"


class Spool:
    """Save and load finished events in ``directory``.

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

    def _size(self) -> int:
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    total += path.stat().st_size
        return total

    def save(self, events: Sequence[Event]) -> int:
        """Write ``events``; returns how many were kept (0 when the spool is full)."""
        if not events:
            return 0
        lines = "".join(
            json.dumps(
                {
                    "event": e.name,
                    "distinct_id": e.distinct_id,
                    "timestamp": e.timestamp,
                    "uuid": e.uuid,
                    "properties": e.properties,
                },
                ensure_ascii=False,
                separators=(",", ":"),
            )
            + "\n"
            for e in events
        )
        data = lines.encode("utf-8")
        if not self.directory.parent.is_dir():  # the state directory was deleted: keep nothing
            return 0
        self.directory.mkdir(mode=0o700, exist_ok=True)
        if self._size() + len(data) > self.max_bytes:
            return 0
        name = f"{self._prefix}{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.directory / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return len(events)

    def load(self, limit: int | None = None) -> list[Event]:
        """Claim and read spooled files of this tag, oldest first, up to ``limit`` events.

        A file is taken whole; if it holds more than is wanted, the rest is written back
        as a new file for a later run.
        """
        events: list[Event] = []
        try:
            paths = [p for p in self.directory.iterdir() if p.name.startswith(self._prefix)]
        except FileNotFoundError:
            return events
        names = [p.name for p in sorted(paths, key=_mtime)]
        for name in names:
            if limit is not None and len(events) >= limit:
                break
            claimed = self.directory / f"{_CLAIMED}{os.getpid()}-{name}"
            try:
                os.replace(self.directory / name, claimed)  # another process may win: fine
            except FileNotFoundError:
                continue
            try:
                with claimed.open(encoding="utf-8") as fh:
                    for line in fh:
                        event = _parse(line)
                        if event is not None:
                            events.append(event)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(claimed)
        if limit is not None and len(events) > limit:
            self.save(events[limit:])
            events = events[:limit]
        return events

    def clear(self) -> list[Path]:
        """Delete every spool file (the CLI's ``disable`` and ``delete``); returns them."""
        removed = []
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.iterdir():
                if path.name.startswith((_PREFIX, _CLAIMED, f".{_PREFIX}")):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)
        with contextlib.suppress(OSError):
            self.directory.rmdir()
        return removed


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _parse(line: str) -> Event | None:
    try:
        data = json.loads(line)
        props = data["properties"]
        if not isinstance(props, dict):
            return None
        return Event(
            name=str(data["event"]),
            properties=props,
            timestamp=float(data["timestamp"]),
            uuid=str(data["uuid"]),
            distinct_id=str(data["distinct_id"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
