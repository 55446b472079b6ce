# SPDX-License-Identifier: MIT OR Apache-2.0
"""The state file: consent choice, notice flag, anonymous install id and HASH key.

``<state_dir>/state.json`` (mode 0600) is written atomically (temp file, fsync, rename)
under an exclusive lock file, so several processes can share one state directory. The id and
the key are created only once consent is given (:meth:`StateStore.ensure_identity`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

__all__ = ["STATE_FILE", "StateError", "StateStore", "TelemetryState"]

STATE_FILE = "state.json"
_LOCK_FILE = ".lock"
_VERSION = 1


class StateError(Exception):
    """The state file exists but cannot be read or understood."""


@dataclasses.dataclass(frozen=True)
class TelemetryState:
    """What the state file holds."""

    consent: Literal["enabled", "disabled"] | None = None
    consent_at: str | None = None
    consent_by: str | None = None
    notice_shown_at: str | None = None
    install_id: str | None = None
    hash_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": _VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: object) -> TelemetryState:
        if not isinstance(data, dict):
            raise StateError("the state file does not hold a JSON object")
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        for key, value in values.items():
            if value is not None and not isinstance(value, str):
                raise StateError(f"the state file has a bad value for {key!r}")
        if values.get("consent") not in (None, "enabled", "disabled"):
            raise StateError("the state file has a bad consent value")
        key = values.get("hash_key")
        if key is not None:
            try:
                if len(bytes.fromhex(key)) < 16:
                    raise ValueError
            except ValueError:
                raise StateError("the state file has a bad hash key") from None
        return cls(**values)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
            try:
                yield
            finally:
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        else:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return TelemetryState()
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(f"the state file could not be read ({type(exc).__name__})") from None
        try:
            return TelemetryState.from_json(json.loads(text))
        except (ValueError, TypeError) as exc:
            if isinstance(exc, StateError):
                raise
            raise StateError("the state file is not valid JSON") from None

    def update(self, change: Callable[[TelemetryState], TelemetryState]) -> TelemetryState:
        """Apply ``change`` under the lock and write the result atomically."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _exclusive(self.directory / _LOCK_FILE):
            current = self.read()
            new = change(current)
            if new != current:
                self._write(new)
            return new

    def _write(self, state: TelemetryState) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(state.to_json(), fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def set_consent(self, choice: Literal["enabled", "disabled"], by: str) -> TelemetryState:
        """Record the user's choice and its date. Disabling also forgets the id and key."""

        def change(state: TelemetryState) -> TelemetryState:
            new = dataclasses.replace(state, consent=choice, consent_at=_now(), consent_by=by)
            if choice == "disabled":
                new = dataclasses.replace(new, install_id=None, hash_key=None)
            return new

        return self.update(change)

    def mark_notice_shown(self) -> TelemetryState:
        """Record that the opt-out notice was shown (no id is created)."""
        return self.update(
            lambda s: s if s.notice_shown_at else dataclasses.replace(s, notice_shown_at=_now())
        )

    def ensure_identity(self) -> tuple[str, bytes]:
        """Return ``(install_id, hash_key)``, creating both on first call. Needs consent."""

        def change(state: TelemetryState) -> TelemetryState:
            if state.install_id and state.hash_key:
                return state
            return dataclasses.replace(
                state,
                install_id=state.install_id or str(uuid.uuid4()),
                hash_key=state.hash_key or secrets.token_hex(32),
            )

        state = self.update(change)
        assert state.install_id is not None
        assert state.hash_key is not None
        return state.install_id, bytes.fromhex(state.hash_key)
