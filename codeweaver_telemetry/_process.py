# SPDX-License-Identifier: MIT OR Apache-2.0
"""All process-wide state of the library, in one object: the process-wide client, the live
clients, the exit hooks (atexit and the multiprocessing finaliser), the fork hook, and the
one exit budget that every client's shutdown is handed as a deadline.

``PROCESS.reset()`` is the one documented reset (``testing.reset_telemetry_client`` uses it).
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from codeweaver_telemetry._internal import in_forked_child, internal_errors

__all__ = ["PROCESS", "Process", "spool_reserve"]

# Writing undelivered events to the spool is local and quick: at exit it keeps this share
# of the bound (at most 0.2 s) even when earlier flushes used the bound up.
_SPOOL_RESERVE_MAX = 0.2
_SPOOL_RESERVE_SHARE = 0.25


def spool_reserve(exit_timeout: float) -> float:
    """The part of an exit bound kept for writing the spool."""
    return min(_SPOOL_RESERVE_MAX, exit_timeout * _SPOOL_RESERVE_SHARE)


class Exiting(Protocol):
    """What the process needs of a client at exit and after a fork."""

    def exit_bound(self) -> tuple[float, float]:
        """(its exit timeout, what is left of it after flushes that timed out)."""
        ...

    def shutdown_by(self, deadline: float) -> None:
        """Shut down, waiting no later than ``deadline`` (``time.monotonic()``)."""
        ...

    def after_fork(self) -> None:
        """In a forked child: fresh locks, no share in the parent's session."""
        ...


class Process:
    """The library's process-wide state. There is one: :data:`PROCESS`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: object | None = None
        self._building = threading.local()
        self._live: weakref.WeakSet[Exiting] = weakref.WeakSet()
        self._hooked = False
        self._child_exit_registered = False

    # -- the process-wide client ------------------------------------------------------------
    def client(self, build: Callable[[], object], busy: Callable[[], object]) -> object:
        """The process-wide client, built by ``build()`` on first call.

        Asked again while it is being built (say, from a notice callback), the answer is
        ``busy()`` (an off client) rather than a wait on ourselves.
        """
        client = self._client
        if client is not None:
            return client
        if getattr(self._building, "active", False):
            return busy()
        with self._lock:
            if self._client is None:
                self._building.active = True
                try:
                    self._client = build()
                finally:
                    self._building.active = False
            return self._client

    def install(self, client: object | None) -> object | None:
        """Make ``client`` the process-wide client; return the one it replaces."""
        with self._lock:
            previous, self._client = self._client, client
        return previous

    def reset(self, timeout_s: float = 0.5) -> None:
        """Shut the process-wide client down (within ``timeout_s``) and forget it, with what
        the process remembers besides (repeated warnings already logged, hashers of earlier
        keys): the next ``get_telemetry_client()`` builds a fresh client from the
        environment as it is then, as in a new process."""
        client = self.install(None)
        shutdown = getattr(client, "shutdown", None)
        if callable(shutdown):
            shutdown(timeout=timeout_s)
        from codeweaver_telemetry._internal import forget_duplicates

        forget_duplicates()
        hashing = sys.modules.get("codeweaver_telemetry.privacy.hashing")
        if hashing is not None:
            hashing.KeyedHasher.forget_all()

    # -- live clients and exit --------------------------------------------------------------
    def started(self, client: Exiting) -> None:
        """A client turned on: flush it at exit (the hooks are registered once)."""
        self._live.add(client)
        if not self._hooked:
            self._hooked = True
            atexit.register(self.exit)
            self._register_child_exit()

    def stopped(self, client: Exiting) -> None:
        """A client shut down: nothing left to do for it at exit."""
        self._live.discard(client)

    def exit(self) -> None:
        """At exit: one deadline for every live client, the longest bound among them."""
        clients = list(self._live)
        if not clients:
            return
        deadline = time.monotonic() + spool_reserve(1.0)
        with internal_errors("exit"):
            bounds = [client.exit_bound() for client in clients]
            reserve = spool_reserve(max(timeout for timeout, _ in bounds))
            deadline = time.monotonic() + max(reserve, *(left for _, left in bounds))
        for client in clients:
            with internal_errors("exit"):
                client.shutdown_by(deadline)

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and each live client renewed."""
        self._lock = threading.Lock()
        if self._hooked and not self._child_exit_registered:
            with internal_errors("fork"):
                self._register_child_exit()  # multiprocessing was loaded after start
        for client in list(self._live):
            with internal_errors("fork"):
                client.after_fork()

    def _register_child_exit(self) -> None:
        # A multiprocessing child ends with os._exit(), so atexit never runs there; its
        # finalizers do. Register the exit flush as one, here and in every child that
        # multiprocessing forks. Only once multiprocessing is loaded (importing it costs a
        # client's start 5-10 ms): a process that loads it later registers in its forked
        # children (``after_fork``, which runs before multiprocessing's own child set-up
        # runs the after-fork callbacks), and a spawned child has it loaded from its start.
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is None:
            return
        self._child_exit_registered = True

        def register(_: object = None) -> None:
            mp_util.Finalize(None, self.exit, exitpriority=10)

        register()
        mp_util.register_after_fork(self, register)


#: The one process object.
PROCESS = Process()
in_forked_child(PROCESS.after_fork)
