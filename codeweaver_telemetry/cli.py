# SPDX-License-Identifier: MIT OR Apache-2.0
"""``codeweaver-telemetry``: see, change, export and delete what telemetry keeps and sends.

Commands::

    status    is telemetry on, which source decided, and why
    enable    record your opt-in (off-sources such as DO_NOT_TRACK still win)
    disable   record your opt-out and forget the install id, HASH key and cached flags
    preview   print the last payloads sent (the local log)
    export    write the state (without secrets) and the local log as JSON
    delete    remove the files telemetry keeps locally; prints the id to quote to the vendor
    flags     the feature flags cached for this install; ``--refresh`` fetches them first
    deny      ``deny event NAME`` / ``deny property PATH``: never send that event or property
    allow     ``allow event NAME`` / ``allow property PATH``: undo a ``deny``
    verify-log  check the local log's hash chain; exit 1 with the first broken line
    schema    every event the library ships and every property it can carry
    report    a summary of the local log: events per name and day, sessions, search
              latency, errors, usage, flags, size, and what is not in the log;
              ``--since``/``--until`` (ISO 8601, UTC without an offset) narrow it;
              ``--html FILE`` also writes it as one self-contained HTML page: the
              summary, charts (per day, per event, search latency, usage) and the
              newest 200 payloads (``--payloads N``) with their exact JSON; the page
              has no script and loads nothing (its Content-Security-Policy is
              ``default-src 'none'``); it holds the payloads' text, so treat it like
              the log itself
    serve     the dashboard and web API on 127.0.0.1 (needs the ``[web]`` extra); prints
              the URL with its random token and serves until interrupted

``deny`` and ``allow`` edit the deny file, ``telemetry-deny.toml`` beside the user config file
(``<user config dir>/codeweaver/``, created 0600 when missing); the settings always read it.
NAME and PATH may use the ``*`` and ``?`` globs. ``allow`` removes only what ``deny`` wrote:
an entry that the environment or a config file sets must be removed there, and one that a
repository's ``codeweaver.toml`` adds cannot be removed at all (exit status 1, saying so).

``python -m codeweaver_telemetry`` runs the same commands.

Exit status: 0 when the command did what it was asked (``status`` exits 0 whether telemetry
is on or off); 1 when it failed (a file could not be read or written, or ``flags
--refresh`` could not fetch: telemetry off, no PostHog key, no install id yet, the host
refused); 2 for a usage error (argparse's: an unknown command or option, or a
``report --since``/``--until`` that is not an ISO 8601 date or date-time); 141 when stdout
was closed early (``| head``), as a shell reports for SIGPIPE.

``--json`` (before or after the command) prints one JSON document on stdout instead of
text. Every document has ``schema_version`` (1), ``command`` (the command's name) and
``ok`` (true, or false with exit status 1). A failure is
``{"schema_version": 1, "command": ..., "ok": false, "error": "<message>"}``. The other
fields of each command (every field is always present; ``null`` where noted):

=========  ==================================================================================
command    fields
=========  ==================================================================================
status     ``enabled`` (bool), ``source`` (the deciding source), ``reason`` (str), ``policy``
           (``opt-in``/``opt-out``), ``destination`` (``posthog``/``local``),
           ``posthog_host`` (str or null), ``state_dir``, ``state_file``, ``log_file``
           (str), ``install_id`` (str or null), ``logged_payloads`` (int),
           ``config_error`` (str or null), ``deny_events``, ``deny_properties`` (lists of
           str: the deny lists in effect)
enable     ``recorded`` (``"enabled"``), ``enabled``, ``source``, ``reason`` (the decision
           now: DO_NOT_TRACK and the other off-sources still win), ``config_error``
disable    ``recorded`` (``"disabled"``), ``enabled``, ``source``, ``reason``,
           ``removed`` (list of paths: unsent spool files and the flag cache),
           ``config_error``
preview    ``limit`` (int), ``events`` (list of payloads, oldest first)
export     ``output`` (the file written by ``-o``, or null), ``state_dir`` (str),
           ``state`` (object without the HASH key, or a string saying why it is unreadable;
           null with ``-o``), ``events`` (list; null with ``-o``: both are in the file)
delete     ``state_dir`` (str), ``deleted`` (list of paths), ``state_dir_removed`` (bool),
           ``install_id`` (str or null: quote it to the vendor to delete what was sent)
flags      ``install_id`` (str or null), ``refreshed`` (bool), ``flags_file`` (str),
           ``fetched_at`` (ISO 8601 UTC, or null), ``source`` (``remote``/``local``, or
           null), ``flags`` (list of ``{"key", "value", "fetched_at", "source"}``)
deny       ``kind`` (``event``/``property``), ``entry`` (str), ``changed`` (bool: false when
           it was already in the deny file), ``deny_file`` (str), ``deny_events``,
           ``deny_properties`` (lists of str: the deny lists in effect afterwards)
allow      the same fields as ``deny``; ``changed`` is false when the entry was not denied
verify-log ``log_file`` (str), ``intact`` (bool), ``lines`` (int: lines checked),
           ``unchained`` (int: older lines without the chain), ``first_break`` (int or
           null: 1-based, the rotated file's lines first), ``file`` (str or null),
           ``reason`` (str or null: ``edited``, ``removed``, ``reordered``, ``inserted``,
           ``truncated``, ``rotated_file_missing``, ...); not intact: ``ok`` false, exit 1,
           with ``error`` saying where
serve      ``url`` (str: the address to open, token included), ``port`` (int); printed once
           the server listens, which then runs until interrupted
schema     ``event_schema_version`` (int), ``events`` (event name -> JSON Schema, draft
           2020-12, each property with ``description`` and ``x-privacy-rule``)
report     ``log_file`` (str), ``html`` (the file ``--html`` wrote, or null), ``since``, ``until``
           (ISO 8601 UTC, or null), ``percentile_method`` (``"nearest-rank"``), ``payloads``,
           ``bytes`` (int: compact JSON size), ``events`` (name -> int), ``days`` (UTC
           ``YYYY-MM-DD`` or ``unknown`` -> int), ``sessions`` (``{"count", "session_ids",
           "duration_seconds"}``), ``search_latency_ms`` (a summary: ``{"count", "total", "min",
           "p50", "p95", "max"}``, numbers or null), ``latency_histogram`` (list of ``{"le": bound
           in ms or null for the last, "count"}``), ``errors`` (list of ``{"fingerprint", "type",
           "count", "unhandled"}``, most first), ``usage`` (name -> int), ``flags``,
           ``flag_exposures`` (key -> value -> int), ``deny_events``, ``deny_properties`` (lists of
           str), ``spooled`` (int: events waiting in the spool, unsent), ``dropped`` (always null
           here: only a running client counts its drops); see :mod:`codeweaver_telemetry.report`
=========  ==================================================================================

:data:`JSON_FIELDS` holds the same table as types.

This is the only module that prints. It never starts a client, and sends nothing except
``flags --refresh``: one flag request for the install id, only while telemetry is on.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from codeweaver_telemetry._config import (
    CONFIG_FILE_NAME,
    deny_file,
    parse_deny_list,
    read_config_table,
    read_toml_table,
    user_config_file,
)
from codeweaver_telemetry._files import LOCK_FILE as _LOCK_FILE
from codeweaver_telemetry._files import ensure_private_dir, exclusive_lock, write_atomic
from codeweaver_telemetry._internal import ENV_PREFIX
from codeweaver_telemetry._spool import SPOOL_DIR, Spool
from codeweaver_telemetry.consent import ConsentDecision, consent_sources, decide
from codeweaver_telemetry.flags import (
    FLAGS_FILE,
    FlagFile,
    FlagFileError,
    StoredFlags,
    read_flag_file,
)
from codeweaver_telemetry.privacy.hashing import KEY_FILE_NAME
from codeweaver_telemetry.settings import (
    TelemetryConfigError,
    TelemetrySettings,
    load_settings,
)
from codeweaver_telemetry.sinks.jsonl import LOG_FILE, read_log
from codeweaver_telemetry.state import (
    STATE_FILE,
    StateError,
    StateStore,
    TelemetryState,
)

if TYPE_CHECKING:
    from codeweaver_telemetry.report import Report

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "JSON_COMMON_FIELDS",
    "JSON_ERROR_FIELDS",
    "JSON_FIELDS",
    "JSON_SCHEMA_VERSION",
    "CommandFailed",
    "main",
    "run_command",
    "status_fields",
]

EXIT_OK = 0
"""The command did what it was asked (``status`` says ON or OFF: both are 0)."""
EXIT_FAILURE = 1
"""The command failed; the message (or the JSON document's ``error``) says why."""
EXIT_USAGE = 2
"""A usage error: an unknown command or option (argparse's status)."""
EXIT_BROKEN_PIPE = 141
"""The exit status when stdout was closed early (128 + SIGPIPE, as a shell reports)."""

JSON_SCHEMA_VERSION = 1
"""The ``schema_version`` of every ``--json`` document; it changes only if a field is
removed or changes meaning (new fields may be added within a version)."""

JSON_COMMON_FIELDS: dict[str, Any] = {"schema_version": int, "command": str, "ok": bool}
"""Fields of every ``--json`` document, with their JSON types (as Python types)."""

JSON_ERROR_FIELDS: dict[str, Any] = {"error": str}
"""The fields a failed command adds (``ok`` is false, exit status 1)."""

_FLAG_ENTRY_FIELDS: dict[str, Any] = {
    "key": str,
    "value": bool | str,
    "fetched_at": str,
    "source": str,
}

_DENY_EDIT_FIELDS: dict[str, Any] = {
    "kind": str,
    "entry": str,
    "changed": bool,
    "deny_file": str,
    "deny_events": list,
    "deny_properties": list,
}

JSON_FIELDS: dict[str, dict[str, Any]] = {
    "status": {
        "enabled": bool,
        "source": str,
        "reason": str,
        "policy": str,
        "destination": str,
        "posthog_host": str | None,
        "state_dir": str,
        "state_file": str,
        "log_file": str,
        "install_id": str | None,
        "logged_payloads": int,
        "config_error": str | None,
        "deny_events": list,
        "deny_properties": list,
    },
    "enable": {
        "recorded": str,
        "enabled": bool,
        "source": str,
        "reason": str,
        "config_error": str | None,
    },
    "disable": {
        "recorded": str,
        "enabled": bool,
        "source": str,
        "reason": str,
        "removed": list,
        "config_error": str | None,
    },
    "preview": {"limit": int, "events": list},
    "export": {
        "output": str | None,
        "state_dir": str,
        "state": dict | str | None,
        "events": list | None,
    },
    "delete": {
        "state_dir": str,
        "deleted": list,
        "state_dir_removed": bool,
        "install_id": str | None,
    },
    "flags": {
        "install_id": str | None,
        "refreshed": bool,
        "flags_file": str,
        "fetched_at": str | None,
        "source": str | None,
        "flags": list,
    },
    "deny": _DENY_EDIT_FIELDS,
    "allow": _DENY_EDIT_FIELDS,
    "verify-log": {
        "log_file": str,
        "intact": bool,
        "lines": int,
        "unchained": int,
        "first_break": int | None,
        "file": str | None,
        "reason": str | None,
    },
    "schema": {"event_schema_version": int, "events": dict},
    "serve": {"url": str, "port": int},
    "report": {
        "log_file": str,
        "html": str | None,
        "since": str | None,
        "until": str | None,
        "percentile_method": str,
        "payloads": int,
        "bytes": int,
        "events": dict,
        "days": dict,
        "sessions": dict,
        "search_latency_ms": dict,
        "latency_histogram": list,
        "errors": list,
        "usage": dict,
        "flags": dict,
        "flag_exposures": dict,
        "deny_events": list,
        "deny_properties": list,
        "spooled": int,
        "dropped": dict | None,
    },
}
"""Each command's own ``--json`` fields (beside :data:`JSON_COMMON_FIELDS`), with their JSON
types as Python types (``None`` for null). Every field is always present. Each entry of
``flags``'s list has ``key`` (str), ``value`` (bool or str), ``fetched_at`` (str) and
``source`` (str)."""

# The files the library writes in the state directory: the state file and its lock, the HASH
# key file an earlier version wrote (hash_key), the local log and its rotated copy, the flag
# cache, and their temp files.
# The local log's head (the tamper-evident chain's last hash) lives beside the log.
_LOG_HEAD_FILE = "events.head"
_OWNED_FILES = (
    STATE_FILE,
    _LOCK_FILE,
    KEY_FILE_NAME,
    LOG_FILE,
    LOG_FILE + ".1",
    _LOG_HEAD_FILE,
    FLAGS_FILE,
)
_OWNED_PATTERNS = (
    ".state.*.tmp",
    f".{KEY_FILE_NAME}.*",
    f".{FLAGS_FILE}.*.tmp",
    f".{_LOG_HEAD_FILE}.*",
)


class CommandFailed(Exception):
    """A command could not do what it was asked: exit status 1, with this message."""


class _Output:
    """Where a command's result goes: text lines, or one JSON document."""

    def __init__(self, stream: TextIO, command: str, *, as_json: bool) -> None:
        self.stream = stream
        self.command = command
        self.as_json = as_json

    def line(self, text: str) -> None:
        """A line of the human output (nothing with ``--json``)."""
        if not self.as_json:
            print(text, file=self.stream)

    def document(self, fields: dict[str, Any], *, error: str | None = None) -> None:
        """The ``--json`` document (nothing without ``--json``); with ``error``, ``ok`` is
        false and the document says why (the command exits 1)."""
        if self.as_json:
            if error is None:
                self._dump({"ok": True, **fields})
            else:
                self._dump({"ok": False, **fields, "error": error})

    def failure(self, message: str) -> None:
        """Say why the command failed: the JSON error document, or a line on stderr."""
        if self.as_json:
            self._dump({"ok": False, "error": message})
        else:
            print(f"codeweaver-telemetry: {message}", file=sys.stderr)

    def _dump(self, fields: dict[str, Any]) -> None:
        head = {"schema_version": JSON_SCHEMA_VERSION, "command": self.command}
        print(json.dumps({**head, **fields}, indent=2, ensure_ascii=False), file=self.stream)


class _Capture(_Output):
    """An output that keeps the ``--json`` document instead of printing it."""

    def __init__(self, command: str) -> None:
        super().__init__(io.StringIO(), command, as_json=True)
        self.result: dict[str, Any] | None = None

    def _dump(self, fields: dict[str, Any]) -> None:
        self.result = {"schema_version": JSON_SCHEMA_VERSION, "command": self.command, **fields}


PREVIEW_PAYLOADS = 10
"""How many payloads ``preview`` prints unless ``-n`` says otherwise."""

HTML_PAYLOADS = 200
"""How many payloads (the newest) ``report --html`` puts in the page unless ``--payloads``
says otherwise."""

_DEFAULT_OPTIONS: dict[str, Any] = {
    "payloads": HTML_PAYLOADS,
    "n": PREVIEW_PAYLOADS,
    "output": None,
    "refresh": False,
    "since": None,
    "until": None,
    "html": None,
}


def run_command(command: str, **options: Any) -> tuple[int, dict[str, Any]]:
    """Run one command in this process as ``--json`` would: (exit status, its document).

    This is how the web API (:mod:`codeweaver_telemetry.web`) applies exactly the CLI's
    rules. ``options`` are the parsed options of the command, by their argparse names
    (``n`` for ``preview``, ``output`` for ``export``, ``refresh`` for ``flags``, ``since``
    and ``until`` (aware datetimes) and ``html`` for ``report``, ``kind`` and ``name`` for
    ``deny``/``allow``). A command that fails gives status 1 and
    ``{"schema_version", "command", "ok": false, "error"}``; nothing is printed.
    """
    args = argparse.Namespace(command=command, json=True, **{**_DEFAULT_OPTIONS, **options})
    output = _Capture(command)
    try:
        code = _run(args, output)
    except (CommandFailed, OSError, StateError) as exc:
        output.failure(str(exc))
        code = EXIT_FAILURE
    if output.result is None:  # every command writes its document; this is a guard
        output.failure(f"{command} gave no result")
        code = EXIT_FAILURE
    assert output.result is not None
    return code, output.result


def _decision(settings: TelemetrySettings, store: StateStore, error: str | None) -> ConsentDecision:
    """The consent decision as a client would make it now, without recording a notice."""
    return decide(consent_sources(settings, store, config_error=error, record_notice=False))


def _config_problem(error: str | None, out: _Output) -> None:
    if error:
        out.line(f"Configuration problem: {error}")


def _state(store: StateStore) -> TelemetryState | None:
    try:
        return store.read()
    except StateError:
        return None


def status_fields(*, logged_payloads: int | None = None) -> dict[str, Any]:
    """The fields of ``status --json`` (without the common ones): the decision a client would
    make now, where events go, and what is kept.

    Args:
        logged_payloads: the payloads in the local log, when the caller has read it already;
            counted here otherwise.
    """
    settings, error = load_settings()
    store = StateStore(settings.resolved_state_dir)
    decision = _decision(settings, store, error)
    state = _state(store)
    remote = settings.posthog_api_key is not None
    if logged_payloads is None:
        logged_payloads = sum(1 for _ in read_log(store.directory))
    return {
        "enabled": decision.allowed,
        "source": decision.source,
        "reason": decision.reason,
        "policy": settings.consent_policy,
        "destination": "posthog" if remote else "local",
        "posthog_host": settings.posthog_host if remote else None,
        "state_dir": str(store.directory),
        "state_file": str(store.path),
        "log_file": str(store.directory / LOG_FILE),
        "install_id": state.install_id if state else None,
        "logged_payloads": logged_payloads,
        "config_error": error,
        "deny_events": list(settings.deny_events),
        "deny_properties": list(settings.deny_properties),
    }


def cmd_status(out: _Output) -> int:
    fields = status_fields()
    destination = (
        f"PostHog at {fields['posthog_host']}"
        if fields["destination"] == "posthog"
        else f"the local log only ({fields['log_file']})"
    )
    out.line(f"Telemetry is {'ON' if fields['enabled'] else 'OFF'}.")
    out.line(f"  decided by: {fields['source']}")
    out.line(f"  why:        {fields['reason']}")
    out.line(f"  policy:     {fields['policy']}")
    out.line(f"  sends to:   {destination}")
    out.line(f"  state:      {fields['state_file']}")
    out.line(f"  install id: {fields['install_id'] or '(none)'}")
    out.line(f"  logged:     {fields['logged_payloads']} payloads in {fields['log_file']}")
    out.line(f"  denied events:     {_listed(fields['deny_events'])}")
    out.line(f"  denied properties: {_listed(fields['deny_properties'])}")
    out.document(fields)
    return EXIT_OK


def _listed(entries: Sequence[str]) -> str:
    return ", ".join(entries) if entries else "(none)"


def _decision_fields(decision: ConsentDecision) -> dict[str, Any]:
    return {"enabled": decision.allowed, "source": decision.source, "reason": decision.reason}


def cmd_enable(out: _Output) -> int:
    settings, error = load_settings()
    store = StateStore(settings.resolved_state_dir)
    store.set_consent("enabled", by="cli")
    decision = _decision(settings, store, error)
    out.line("Recorded: telemetry enabled.")
    _config_problem(error, out)
    if not decision.allowed:
        why = "the configuration problem above" if error else decision.reason
        out.line(f"It stays off for now: {why} ({decision.source}).")
    out.document({"recorded": "enabled", **_decision_fields(decision), "config_error": error})
    return EXIT_OK


def _remove(path: Path) -> bool:
    """Remove one file (or a link planted in its place); False when there was none."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def cmd_disable(out: _Output) -> int:
    settings, error = load_settings()
    directory = settings.resolved_state_dir
    store = StateStore(directory)
    store.set_consent("disabled", by="cli")
    out.line("Recorded: telemetry disabled. The install id and HASH key were removed.")
    unsent = Spool(directory / SPOOL_DIR).clear()
    if unsent:
        out.line(f"Removed {len(unsent)} spool file(s) of events not yet sent.")
    removed = [str(p) for p in unsent]
    flags_file = directory / FLAGS_FILE
    if _remove(flags_file):
        out.line("Removed the cached feature flags.")
        removed.append(str(flags_file))
    _config_problem(error, out)
    decision = _decision(settings, store, error)
    out.document(
        {
            "recorded": "disabled",
            **_decision_fields(decision),
            "removed": removed,
            "config_error": error,
        }
    )
    return EXIT_OK


def cmd_preview(out: _Output, limit: int) -> int:
    settings, _ = load_settings()
    events = list(read_log(settings.resolved_state_dir))
    shown = events[-limit:]
    out.document({"limit": limit, "events": shown})
    if not events:
        out.line("Nothing has been sent yet (the local log is empty).")
        return EXIT_OK
    for event in shown:
        out.line(json.dumps(event, indent=2, ensure_ascii=False))
    return EXIT_OK


def export_document(directory: Path) -> dict[str, Any]:
    """Everything kept locally, as one JSON-ready dict; the HASH key is never included."""
    store = StateStore(directory)
    try:
        state: dict[str, Any] | str = store.read().to_json()
    except StateError as exc:
        state = f"unreadable: {exc}"
    if isinstance(state, dict):
        state.pop("hash_key", None)
    return {"state_dir": str(directory), "state": state, "events": list(read_log(directory))}


def cmd_export(out: _Output, output: str | None) -> int:
    settings, _ = load_settings()
    document = export_document(settings.resolved_state_dir)
    if output:
        text = json.dumps(document, indent=2, ensure_ascii=False)
        Path(output).write_text(text + "\n", encoding="utf-8")
        out.line(f"Wrote {output}.")
        out.document({"output": output, **document, "state": None, "events": None})
    else:
        out.line(json.dumps(document, indent=2, ensure_ascii=False))
        out.document({"output": None, **document})
    return EXIT_OK


def _owned_files(directory: Path) -> list[Path]:
    """The files in ``directory`` that the library wrote (never a directory, never others)."""
    found = [directory / name for name in _OWNED_FILES]
    for pattern in _OWNED_PATTERNS:
        found.extend(sorted(directory.glob(pattern)))
    return [p for p in found if p.is_symlink() or p.is_file()]


def cmd_delete(out: _Output) -> int:
    settings, _ = load_settings()
    directory = settings.resolved_state_dir
    result: dict[str, Any] = {
        "state_dir": str(directory),
        "deleted": [],
        "state_dir_removed": False,
        "install_id": None,
    }
    if not directory.is_dir():
        why = "is not a directory" if directory.exists() else "does not exist"
        out.line(f"Nothing to delete: {directory} {why}.")
        out.document(result)
        return EXIT_OK
    lock = directory / _LOCK_FILE
    had_lock = lock.is_file()
    try:
        # Under the state lock: a consent change in flight finishes first (its temp file is
        # never removed under it), and one that comes after waits for the delete.
        with exclusive_lock(lock):
            state = _state(StateStore(directory))
            deleted = Spool(directory / SPOOL_DIR).clear()
            deleted.extend(p for p in _owned_files(directory) if p != lock and _remove(p))
    except TimeoutError:
        raise CommandFailed(
            f"another process holds the lock of {directory}; nothing was deleted, try again"
        ) from None
    if _remove(lock) and had_lock:  # the lock goes last (and is not news if we made it)
        deleted.append(lock)
    # (a file another process removed first, such as a temp file, is simply not listed)
    if not deleted:
        out.line(f"Nothing to delete: no telemetry files in {directory}.")
        out.document(result)
        return EXIT_OK
    for path in deleted:
        out.line(f"Deleted {path}")
    try:
        directory.rmdir()
    except OSError:  # not empty: the other files are not ours to remove
        out.line(f"Kept {directory}: it holds files that are not telemetry's.")
    else:
        out.line(f"Deleted {directory}")
        result["state_dir_removed"] = True
    install_id = state.install_id if state else None
    if install_id:
        out.line(
            "Data already sent cannot be deleted from here. To have it deleted, give the "
            f"vendor this install id: {install_id}"
        )
    result.update(deleted=[str(p) for p in deleted], install_id=install_id)
    out.document(result)
    return EXIT_OK


def _fetch_flags(settings: TelemetrySettings, error: str | None) -> StoredFlags:
    """Fetch this install's flags once (one request, no retry) and store them.

    Raises:
        CommandFailed: telemetry is off, there is no PostHog key or install id, or the
            fetch failed; nothing is sent in the first three cases.
    """
    directory = settings.resolved_state_dir
    store = StateStore(directory)
    decision = _decision(settings, store, error)
    if not decision.allowed:
        raise CommandFailed(
            f"telemetry is off ({decision.source}: {decision.reason}); nothing was fetched"
        )
    if settings.posthog_api_key is None:
        raise CommandFailed(
            "no PostHog API key is configured (CODEWEAVER__TELEMETRY__POSTHOG_API_KEY), "
            "so there are no flags to fetch; nothing was fetched"
        )
    install_id = store.read().install_id
    if not install_id:
        raise CommandFailed(
            "this install has no id yet (the app creates it when it first runs with "
            "telemetry on); nothing was fetched"
        )
    from codeweaver_telemetry.flags import PostHogFlags

    source = PostHogFlags.from_settings(settings, install_id)
    try:
        values = source()
    except Exception as exc:  # FlagFetchError, or whatever local evaluation raised
        why = str(exc) or type(exc).__name__
        raise CommandFailed(
            f"the flags could not be fetched from {settings.posthog_host} ({why})"
        ) from None
    finally:
        source.shutdown()
    return FlagFile(directory, install_id=install_id, source=source.evaluation).write(values)


def _show(value: bool | str) -> str:
    """A flag value as text: ``true``/``false``, or the variant as it is."""
    return json.dumps(value) if isinstance(value, bool) else value


def _cached_flags(directory: Path) -> tuple[str | None, StoredFlags | None]:
    """(this install's id, the flags cached for it); never a request.

    Flags stored for another install id (one since forgotten) are not this install's.

    Raises:
        CommandFailed: ``flags.json`` is there but unreadable.
    """
    state = _state(StateStore(directory))
    install_id = state.install_id if state else None
    try:
        stored = read_flag_file(directory)
    except FlagFileError as exc:
        raise CommandFailed(
            f"{directory / FLAGS_FILE}: {exc}; `codeweaver-telemetry flags --refresh` replaces it"
        ) from None
    if stored is None or stored.install_id != install_id:
        return install_id, None
    return install_id, stored


def cmd_flags(out: _Output, *, refresh: bool) -> int:
    settings, error = load_settings()
    directory = settings.resolved_state_dir
    if refresh:
        stored: StoredFlags | None = _fetch_flags(settings, error)
        install_id = stored.install_id if stored else None
    else:
        install_id, stored = _cached_flags(directory)
    values = sorted(stored.values.items()) if stored else []
    out.document(
        {
            "install_id": install_id,
            "refreshed": refresh,
            "flags_file": str(directory / FLAGS_FILE),
            "fetched_at": stored.fetched_at if stored else None,
            "source": stored.source if stored else None,
            "flags": [
                {
                    "key": key,
                    "value": value,
                    "fetched_at": stored.fetched_at,
                    "source": stored.source,
                }
                for key, value in values
                if stored
            ],
        }
    )
    if stored is None:
        out.line(
            "No feature flags are cached for this install. "
            "`codeweaver-telemetry flags --refresh` fetches them."
        )
        return EXIT_OK
    if not values:
        out.line(f"No feature flags are defined for this install (fetched {stored.fetched_at}).")
        return EXIT_OK
    rows = [("flag", "value", "fetched at (UTC)", "source")]
    rows += [(key, _show(value), stored.fetched_at, stored.source) for key, value in values]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for key, value, fetched_at, source in rows:
        cells = (key.ljust(widths[0]), value.ljust(widths[1]), fetched_at.ljust(widths[2]))
        out.line("  ".join((*cells, source)))
    return EXIT_OK


_DENY_KEY = {"event": "deny_events", "property": "deny_properties"}
_DENY_LABEL = "deny_events/deny_properties"


def _deny_file_table() -> dict[str, Any]:
    """The deny file's ``[telemetry]`` table (empty when there is no file).

    Raises:
        CommandFailed: the file is unreadable or not TOML.
    """
    try:
        return read_toml_table(deny_file(), _DENY_LABEL) or {}
    except TelemetryConfigError as exc:
        raise CommandFailed(str(exc)) from None


def _deny_file_text(table: dict[str, Any]) -> str:
    lines = [
        "# The deny lists of codeweaver telemetry, edited by `codeweaver-telemetry deny` and",
        "# `codeweaver-telemetry allow` (globs: * any run of characters, ? one character).",
        "[telemetry]",
    ]
    for key in ("deny_events", "deny_properties"):
        entries = parse_deny_list(table.get(key, ()))
        # A JSON string is a TOML basic string (escapes included; no lone surrogates here).
        quoted = ", ".join(json.dumps(e, ensure_ascii=False) for e in entries)
        lines.append(f"{key} = [{quoted}]")
    return "\n".join(lines) + "\n"


def _other_sources(key: str, entry: str) -> tuple[list[str], Path | None]:
    """Where else ``entry`` is listed under ``key``: (trusted places, the repository file
    that lists it, if any)."""
    trusted: list[str] = []
    repository: Path | None = None
    env_name = ENV_PREFIX + key.upper()
    env = os.environ.get(env_name)
    if env is not None and entry in parse_deny_list(env):
        trusted.append(env_name)
    tables: list[tuple[Path | None, dict[str, Any], bool]] = []
    try:
        path, table, is_trusted = read_config_table(None)
        tables.append((path, table, is_trusted))
        if not is_trusted:
            user_table = read_toml_table(user_config_file(), _DENY_LABEL)
            if user_table is not None:
                tables.append((user_config_file(), user_table, True))
    except TelemetryConfigError as exc:
        raise CommandFailed(str(exc)) from None
    for file_path, file_table, file_trusted in tables:
        try:
            listed = entry in parse_deny_list(file_table.get(key, ()))
        except ValueError:
            listed = False
        if listed and file_path is not None:
            if file_trusted:
                trusted.append(str(file_path))
            else:
                repository = file_path
    return trusted, repository


def cmd_deny(out: _Output, kind: str, entry: str, *, allow: bool) -> int:
    """``deny``/``allow``: add ``entry`` to, or remove it from, the deny file."""
    key = _DENY_KEY[kind]
    table = _deny_file_table()
    path = deny_file()
    try:
        entries = list(parse_deny_list(table.get(key, ())))
    except ValueError as exc:
        raise CommandFailed(f"{key} in {path}: {exc}; fix or remove the file") from None
    changed = (entry in entries) is allow
    if changed:
        if allow:
            entries.remove(entry)
        else:
            entries.append(entry)
        ensure_private_dir(path.parent, parents=True, follow=True)
        write_atomic(path.parent, path.name, _deny_file_text({**table, key: entries}).encode())
    settings, _ = load_settings()
    effective: tuple[str, ...] = getattr(settings, key)
    if allow and entry in effective:
        trusted, repository = _other_sources(key, entry)
        if repository is not None and not trusted:
            raise CommandFailed(
                f"{kind} {entry!r} is denied by the repository's {CONFIG_FILE_NAME} "
                f"({repository}); a repository file may add deny entries, and they cannot "
                "be removed here: it stays denied"
            )
        where = ", ".join(trusted) if trusted else "another source"
        raise CommandFailed(
            f"{kind} {entry!r} is also denied by {where}; remove it there (it stays denied)"
        )
    what = f"{kind} {entry!r}"
    if allow:
        out.line(f"Allowed: {what}." if changed else f"Nothing to do: {what} was not denied.")
    else:
        out.line(f"Denied: {what}." if changed else f"Nothing to do: {what} was already denied.")
    out.line(f"  deny file:         {path}")
    out.line(f"  denied events:     {_listed(settings.deny_events)}")
    out.line(f"  denied properties: {_listed(settings.deny_properties)}")
    out.document(
        {
            "kind": kind,
            "entry": entry,
            "changed": changed,
            "deny_file": str(path),
            "deny_events": list(settings.deny_events),
            "deny_properties": list(settings.deny_properties),
        }
    )
    return EXIT_OK


def _deny_entry(parser: argparse.ArgumentParser, text: str) -> str:
    """The NAME or PATH of ``deny``/``allow``, stripped; a usage error when unusable."""
    entry = text.strip()
    if not entry or "," in entry or any(not c.isprintable() for c in entry):
        parser.error(f"{text!r}: give one name or path, without commas or control characters")
    try:
        entry.encode("utf-8")
    except UnicodeEncodeError:
        parser.error(f"{text!r}: not valid text")
    return entry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codeweaver-telemetry", description="See and control codeweaver telemetry."
    )
    json_help = "print one JSON document (schema_version 1) instead of text"
    parser.add_argument("--json", action="store_true", help=json_help)
    # Also accepted after the command; SUPPRESS keeps a --json given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", parents=[common], help="is telemetry on, and why")
    sub.add_parser("enable", parents=[common], help="opt in")
    sub.add_parser("disable", parents=[common], help="opt out and forget the install id")
    preview = sub.add_parser("preview", parents=[common], help="print the last payloads sent")
    preview.add_argument(
        "-n", type=int, default=PREVIEW_PAYLOADS, help=f"how many (default {PREVIEW_PAYLOADS})"
    )
    export = sub.add_parser("export", parents=[common], help="everything kept locally, as JSON")
    export.add_argument("-o", "--output", help="write to this file instead of stdout")
    sub.add_parser("delete", parents=[common], help="remove everything kept locally")
    flags = sub.add_parser(
        "flags", parents=[common], help="the feature flags cached for this install"
    )
    flags.add_argument(
        "--refresh",
        action="store_true",
        help="fetch them from PostHog first (the only command that sends a request)",
    )
    for command, help_text in (
        ("deny", "never send an event or property (edits the deny file)"),
        ("allow", "undo a deny (edits the deny file)"),
    ):
        edit = sub.add_parser(command, parents=[common], help=help_text)
        edit.add_argument("kind", choices=("event", "property"), help="what NAME is")
        edit.add_argument(
            "name", help="an event name, or a dotted property path; * and ? are globs"
        )
    sub.add_parser(
        "verify-log",
        parents=[common],
        help="check that the local log is complete and unaltered (exit 1 where it is not)",
    )
    sub.add_parser(
        "schema", parents=[common], help="every event shipped and every property it can carry"
    )
    report = sub.add_parser(
        "report", parents=[common], help="a summary of the local log (what was sent)"
    )
    when = "an ISO 8601 date or date-time, UTC when it has no offset"
    report.add_argument(
        "--since", type=_instant, metavar="WHEN", help=f"from this instant on ({when})"
    )
    report.add_argument(
        "--until", type=_instant, metavar="WHEN", help=f"before this instant ({when})"
    )
    report.add_argument(
        "--html",
        metavar="FILE",
        help="also write the report as one self-contained HTML page (charts and payloads; "
        "it loads nothing from the network when opened)",
    )
    report.add_argument(
        "--payloads",
        type=_count,
        default=HTML_PAYLOADS,
        metavar="N",
        help=f"with --html: the newest N payloads in the page (default {HTML_PAYLOADS})",
    )
    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="the dashboard and web API on 127.0.0.1, behind a random token ([web] extra)",
    )
    serve.add_argument(
        "--port", type=int, default=0, help="the port to listen on (default: a free one)"
    )
    return parser


def _count(text: str) -> int:
    """``--payloads``: a whole number >= 0; a usage error (exit 2) otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _instant(text: str) -> datetime:
    """``--since``/``--until``: an aware UTC datetime; a usage error (exit 2) otherwise."""
    from codeweaver_telemetry.report import parse_instant

    try:
        return parse_instant(text)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or date-time (2026-12-01, 2026-12-01T09:30Z)"
        ) from None


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code (see the module: 0, 1, 2 or 141)."""
    stream = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)  # a usage error exits 2 here (argparse)
    if args.command in ("deny", "allow"):
        args.name = _deny_entry(parser, args.name)
    output = _Output(stream, args.command, as_json=args.json)
    try:
        try:
            code = _run(args, output)
        except BrokenPipeError:
            raise
        except (CommandFailed, OSError, StateError) as exc:
            output.failure(str(exc))
            code = EXIT_FAILURE
        stream.flush()  # a closed pipe shows here, not as a traceback at exit
    except BrokenPipeError:
        # The reader went away (`codeweaver-telemetry status | head`): stop quietly, as
        # other command-line tools do, with the status a shell gives for SIGPIPE.
        _silence_stdout(stream)
        return EXIT_BROKEN_PIPE
    return code


def cmd_verify_log(out: _Output) -> int:
    from codeweaver_telemetry._logchain import verify_log

    settings, _ = load_settings()
    directory = settings.resolved_state_dir
    check = verify_log(directory)
    where = (
        f"line {check.first_break} ({check.file})"
        if check.first_break is not None
        else (check.file or str(directory / LOG_FILE))
    )
    error = None if check.intact else f"the local log is not intact: {where}: {check.reason}"
    out.document(
        {
            "log_file": str(directory / LOG_FILE),
            "intact": check.intact,
            "lines": check.lines,
            "unchained": check.unchained,
            "first_break": check.first_break,
            "file": check.file,
            "reason": check.reason,
        },
        error=error,
    )
    if not check.intact:
        out.line(f"The local log is NOT intact: {where}: {check.reason}.")
        return EXIT_FAILURE
    older = f" ({check.unchained} older lines have no chain)" if check.unchained else ""
    out.line(f"The local log is intact: {check.lines} chained lines{older}.")
    return EXIT_OK


def cmd_schema(out: _Output) -> int:
    from codeweaver_telemetry.events.catalog import json_schemas, schema_document
    from codeweaver_telemetry.events.schemas import SCHEMA_VERSION

    out.document({"event_schema_version": SCHEMA_VERSION, "events": json_schemas()})
    if not out.as_json:
        out.stream.write(schema_document(as_json=False))
    return EXIT_OK


def local_report(
    *, since: datetime | None = None, until: datetime | None = None
) -> tuple[Report, list[dict[str, Any]], Path]:
    """The report of the local log as the settings place it: (the report, every payload of
    the log oldest first, the log file)."""
    from codeweaver_telemetry.report import spooled_events, summarize

    settings, _ = load_settings()
    directory = settings.resolved_state_dir
    payloads = list(read_log(directory))
    report = summarize(
        payloads,
        since=since,
        until=until,
        deny_events=settings.deny_events,
        deny_properties=settings.deny_properties,
        spooled=spooled_events(directory / SPOOL_DIR),
    )
    return report, payloads, directory / LOG_FILE


def cmd_report(
    out: _Output,
    *,
    since: datetime | None,
    until: datetime | None,
    html: str | None = None,
    payloads: int = 0,
) -> int:
    report, logged, log_file = local_report(since=since, until=until)
    directory = log_file.parent
    fields = report.to_json()
    if html is not None:
        from codeweaver_telemetry._html import render_report_html, report_payloads

        page = render_report_html(
            report,
            report_payloads(logged, since=since, until=until),
            log_file=str(directory / LOG_FILE),
            generated_at=datetime.now(timezone.utc),
            max_payloads=payloads,
        )
        target = Path(html)
        # 0600 like the log it copies, written whole (temp file and rename: a link planted
        # at the name is replaced, never followed).
        write_atomic(target.parent, target.name, page.encode("utf-8", "surrogatepass"))
    out.document({"log_file": str(directory / LOG_FILE), "html": html, **fields})
    if html is not None:
        out.line(f"Wrote {html} (open it in a browser; it loads nothing from the network).")
    if out.as_json:
        return EXIT_OK
    window = ""
    if since or until:
        window = f" from {fields['since'] or 'the start'} until {fields['until'] or 'now'}"
    out.line(f"Local log report{window} ({directory / LOG_FILE})")
    out.line(f"  payloads: {report.payloads} ({_size(report.bytes)} as compact JSON)")
    _table(out, "Events per name", report.events)
    _table(out, "Events per day (UTC)", report.days)
    durations = report.session_duration_seconds
    out.line(f"Sessions: {report.sessions} session events, {report.session_ids} session ids")
    out.line(
        f"  duration (s): {durations.count} known, total {_num(durations.total)}, "
        f"p50 {_num(durations.p50)}, p95 {_num(durations.p95)}, max {_num(durations.max)}"
    )
    latency = report.search_latency_ms
    out.line(
        f"Search latency (ms): {latency.count} searches, p50 {_num(latency.p50)}, "
        f"p95 {_num(latency.p95)}, max {_num(latency.max)} (nearest-rank percentiles)"
    )
    out.line("Errors by fingerprint:" + ("" if report.errors else " (none)"))
    for group in report.errors:
        unhandled = f", {group.unhandled} unhandled" if group.unhandled else ""
        label = group.fingerprint or "(no fingerprint)"
        out.line(f"  {label}  {group.type or '?'}  {group.count}{unhandled}")
    _table(out, "Usage (summed over sessions)", report.usage)
    for title, flags in (
        ("Flags seen (payloads per value)", report.flags),
        ("Flag exposures ($feature_flag_called)", report.flag_exposures),
    ):
        _table(
            out,
            title,
            {k: ", ".join(f"{v}: {n}" for v, n in values.items()) for k, values in flags.items()},
        )
    out.line("Not in this log:")
    out.line(f"  denied events:     {_listed(report.deny_events)}")
    out.line(f"  denied properties: {_listed(report.deny_properties)}")
    out.line(f"  spooled, not sent yet: {report.spooled} events")
    out.line(
        "  dropped: not known here (the log holds only what was sent; a running client "
        'counts its drops: client.stats()["dropped"])'
    )
    return EXIT_OK


def cmd_serve(out: _Output, *, port: int) -> int:
    try:
        from codeweaver_telemetry.web import start_dashboard
    except ImportError as exc:
        raise CommandFailed(
            f"serve needs the web extra ({exc.name or exc} is missing): "
            "pip install 'codeweaver-telemetry[web]'"
        ) from None
    if not 0 <= port <= 65535:
        raise CommandFailed(f"--port must be between 0 and 65535, not {port}")
    dashboard = start_dashboard(port)
    out.line(f"Telemetry dashboard: {dashboard.url}")
    out.line("Serving on 127.0.0.1 only; the token in the URL is needed. Ctrl-C stops it.")
    out.document({"url": dashboard.url, "port": dashboard.port})
    out.stream.flush()
    with contextlib.suppress(KeyboardInterrupt):
        dashboard.wait()
    return EXIT_OK


def _table(out: _Output, title: str, rows: Mapping[str, object]) -> None:
    out.line(f"{title}:" + ("" if rows else " (none)"))
    width = max((len(k) for k in rows), default=0)
    for key, value in rows.items():
        out.line(f"  {key.ljust(width)}  {value}")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size} bytes, {size / 1024:.1f} KiB"


def _run(args: argparse.Namespace, out: _Output) -> int:
    if args.command == "status":
        return cmd_status(out)
    if args.command == "enable":
        return cmd_enable(out)
    if args.command == "disable":
        return cmd_disable(out)
    if args.command == "preview":
        return cmd_preview(out, args.n)
    if args.command == "export":
        return cmd_export(out, args.output)
    if args.command == "flags":
        return cmd_flags(out, refresh=args.refresh)
    if args.command in ("deny", "allow"):
        return cmd_deny(out, args.kind, args.name, allow=args.command == "allow")
    if args.command == "verify-log":
        return cmd_verify_log(out)
    if args.command == "schema":
        return cmd_schema(out)
    if args.command == "serve":
        return cmd_serve(out, port=args.port)
    if args.command == "report":
        return cmd_report(
            out, since=args.since, until=args.until, html=args.html, payloads=args.payloads
        )
    return cmd_delete(out)


def _silence_stdout(stream: TextIO) -> None:
    """Point the closed stdout at /dev/null, so the interpreter's final flush is quiet."""
    if stream is not sys.stdout:
        return
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
