# SPDX-License-Identifier: MIT OR Apache-2.0
"""The state file: consent choice, notice shown (date and version), install id and HASH key.

``<state_dir>/state.json`` (mode 0600) is written atomically (temp file, fsync, rename)
under an exclusive lock file, so several processes can share one state directory. The id and
the key are created only once consent is given (:meth:`StateStore.ensure_identity`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from codeweaver_telemetry._files import LOCK_FILE as _LOCK_FILE
from codeweaver_telemetry._files import (
    ensure_private_dir,
    exclusive_lock,
    read_regular,
    write_atomic,
)

__all__ = ["STATE_FILE", "ConsentWatch", "StateError", "StateStore", "TelemetryState"]

STATE_FILE = "state.json"
_VERSION = 1
_MAX_STATE_BYTES = 64 * 1024  # a real state file is a few hundred bytes


class StateError(Exception):
    """The state file exists but cannot be read or understood."""


@dataclasses.dataclass(frozen=True)
class TelemetryState:
    """What the state file holds."""

    consent: Literal["enabled", "disabled"] | None = None
    consent_at: str | None = None
    consent_by: str | None = None
    notice_shown_at: str | None = None
    notice_version: int | None = None
    """The version of the opt-out notice last shown (None: never shown). A file written
    before notices had versions, with only ``notice_shown_at``, reads as version 1."""
    install_id: str | None = None
    hash_key: str | None = None

    @property
    def shown_notice_version(self) -> int:
        """The highest notice version shown to this install; 0 when none was."""
        if self.notice_version is not None:
            return self.notice_version
        return 1 if self.notice_shown_at else 0

    def to_json(self) -> dict[str, Any]:
        return {"version": _VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: object) -> TelemetryState:
        if not isinstance(data, dict):
            raise StateError("the state file does not hold a JSON object")
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        notice_version = values.pop("notice_version", None)
        for key, value in values.items():
            if value is not None and not isinstance(value, str):
                raise StateError(f"the state file has a bad value for {key!r}")
        if notice_version is not None and not _is_notice_version(notice_version):
            raise StateError("the state file has a bad value for 'notice_version'")
        if notice_version is None and values.get("notice_shown_at"):
            notice_version = 1  # written before notices had versions
        if values.get("consent") not in (None, "enabled", "disabled"):
            raise StateError("the state file has a bad consent value")
        install_id = values.get("install_id")
        if install_id is not None and not _is_uuid(install_id):
            # It is sent as distinct_id: anything but a UUID (a path, an e-mail written in
            # by hand or by another program) must never leave the machine.
            raise StateError("the state file has a bad install id (not a UUID)")
        key = values.get("hash_key")
        if key is not None:
            try:
                if len(bytes.fromhex(key)) < 16:
                    raise ValueError
            except ValueError:
                raise StateError("the state file has a bad hash key") from None
        return cls(**values, notice_version=notice_version)


def _is_notice_version(value: object) -> bool:
    """A notice version is a whole number from 1 (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII
)


def _is_uuid(value: str) -> bool:
    """True for a UUID in its canonical 36-character form (any case): what
    ``str(uuid.UUID(value)) == value.lower()`` accepts, without importing uuid."""
    return _CANONICAL_UUID.fullmatch(value) is not None


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class StateStore:
    """Read and update the state file in one directory.

    Args:
        directory: the telemetry state directory (created 0700 on first write).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def path(self) -> Path:
        """The state file."""
        return self.directory / STATE_FILE

    def read(self) -> TelemetryState:
        """The current state; an empty state when there is no file yet.

        Raises:
            StateError: the file exists but is unreadable or corrupt.
        """
        try:
            # Never blocks (a FIFO at state.json is refused) and reads a bounded size.
            text = read_regular(self.path, _MAX_STATE_BYTES).decode("utf-8")
        except FileNotFoundError:
            return TelemetryState()
        except (OSError, UnicodeDecodeError) as exc:
            what = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
            raise StateError(
                f"the state file could not be read ({what or type(exc).__name__})"
            ) from None
        try:
            return TelemetryState.from_json(json.loads(text))
        except (ValueError, TypeError) as exc:
            if isinstance(exc, StateError):
                raise
            raise StateError("the state file is not valid JSON") from None

    def update(self, change: Callable[[TelemetryState], TelemetryState]) -> TelemetryState:
        """Apply ``change`` under the lock and write the result atomically."""
        ensure_private_dir(self.directory, parents=True, follow=True)
        with exclusive_lock(self.directory / _LOCK_FILE):
            current = self.read()
            new = change(current)
            if new != current:
                self._write(new)
            return new

    def _write(self, state: TelemetryState) -> None:
        data = json.dumps(state.to_json(), indent=2).encode("utf-8")
        write_atomic(self.directory, STATE_FILE, data)

    def set_consent(self, choice: Literal["enabled", "disabled"], by: str) -> TelemetryState:
        """Record the user's choice and its date. Disabling also forgets the id and key."""

        def change(state: TelemetryState) -> TelemetryState:
            new = dataclasses.replace(state, consent=choice, consent_at=_now(), consent_by=by)
            if choice == "disabled":
                new = dataclasses.replace(new, install_id=None, hash_key=None)
            return new

        return self.update(change)

    def mark_notice_shown(self, version: int = 1) -> TelemetryState:
        """Record that the opt-out notice ``version`` was shown, and when (no id is created).

        A version at or below the one recorded changes nothing: the date stays that of the
        first showing of the highest version, and the recorded version never goes down.

        Raises:
            ValueError: ``version`` is not a whole number from 1.
        """
        if not _is_notice_version(version):
            raise ValueError(f"a notice version is a whole number from 1, not {version!r}")

        def change(state: TelemetryState) -> TelemetryState:
            if state.shown_notice_version >= version:
                return state
            return dataclasses.replace(state, notice_shown_at=_now(), notice_version=version)

        return self.update(change)

    def ensure_identity(self) -> tuple[str, bytes]:
        """Return ``(install_id, hash_key)``, creating both on first call. Needs consent."""

        def change(state: TelemetryState) -> TelemetryState:
            if state.install_id and state.hash_key:
                return state
            import secrets
            import uuid

            return dataclasses.replace(
                state,
                install_id=state.install_id or str(uuid.uuid4()),
                hash_key=state.hash_key or secrets.token_hex(32),
            )

        state = self.update(change)
        assert state.install_id is not None
        assert state.hash_key is not None
        return state.install_id, bytes.fromhex(state.hash_key)


class ConsentWatch:
    """Whether ``install_id`` may still send, by the state file as it is now.

    Called before every export and spool write: the stored choice may change while a
    process runs (``codeweaver-telemetry disable`` in another shell, ``delete``, a new id).
    The file is read again only when it changed (a ``stat`` otherwise). Once the answer is
    "no" it stays "no" for this process: an id that was forgotten is never sent again.

    Args:
        store: the state directory's store.
        install_id: the id this process sends as.
    """

    def __init__(self, store: StateStore, install_id: str) -> None:
        self._store = store
        self._install_id = install_id
        self._seen: tuple[int, int, int] | None = None
        self._allowed = True

    def __call__(self) -> bool:
        """True while the stored consent allows this install id to send."""
        if not self._allowed:
            return False
        try:
            info = os.stat(self._store.path)
        except OSError:  # deleted (`codeweaver-telemetry delete`) or unreachable
            self._allowed = False
            return False
        seen = (info.st_mtime_ns, info.st_size, info.st_ino)
        if seen == self._seen:
            return True
        try:
            state = self._store.read()
        except StateError:  # corrupt: fail closed, as at start
            self._allowed = False
            return False
        self._allowed = state.consent != "disabled" and state.install_id == self._install_id
        self._seen = seen
        return self._allowed
