# SPDX-License-Identifier: MIT OR Apache-2.0
"""``codeweaver-telemetry``: see, change, export and delete what telemetry keeps and sends.

Commands::

    status    is telemetry on, which source decided, and why
    enable    record your opt-in (off-sources such as DO_NOT_TRACK still win)
    disable   record your opt-out and forget the install id and HASH key
    preview   print the last payloads sent (the local log)
    export    write the state (without secrets) and the local log as JSON
    delete    remove the files telemetry keeps locally; prints the id to quote to the vendor

This is the only module that prints. It never starts a client or sends anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from codeweaver_telemetry._files import LOCK_FILE as _LOCK_FILE
from codeweaver_telemetry._spool import SPOOL_DIR, Spool
from codeweaver_telemetry.consent import ConsentDecision, consent_sources, decide
from codeweaver_telemetry.privacy.hashing import KEY_FILE_NAME
from codeweaver_telemetry.settings import TelemetrySettings, load_settings
from codeweaver_telemetry.sinks.jsonl import LOG_FILE, read_log
from codeweaver_telemetry.state import (
    STATE_FILE,
    StateError,
    StateStore,
    TelemetryState,
)

__all__ = ["EXIT_BROKEN_PIPE", "main"]

EXIT_BROKEN_PIPE = 141
"""The exit status when stdout was closed early (128 + SIGPIPE, as a shell reports)."""

# The files the library writes in the state directory: the state file and its lock, the HASH
# key file an earlier version wrote (hash_key), the local log and its rotated copy, and their
# temp files.
_OWNED_FILES = (STATE_FILE, _LOCK_FILE, KEY_FILE_NAME, LOG_FILE, LOG_FILE + ".1")
_OWNED_PATTERNS = (".state.*.tmp", f".{KEY_FILE_NAME}.*")


def _decision(settings: TelemetrySettings, store: StateStore, error: str | None) -> ConsentDecision:
    """The consent decision as a client would make it now, without recording a notice."""
    return decide(consent_sources(settings, store, config_error=error, record_notice=False))


def _config_problem(error: str | None, out: TextIO) -> None:
    if error:
        print(f"Configuration problem: {error}", file=out)


def _state(store: StateStore) -> TelemetryState | None:
    try:
        return store.read()
    except StateError:
        return None


def cmd_status(out: TextIO) -> int:
    settings, error = load_settings()
    store = StateStore(settings.resolved_state_dir)
    decision = _decision(settings, store, error)
    state = _state(store)
    destination = (
        f"PostHog at {settings.posthog_host}"
        if settings.posthog_api_key is not None
        else f"the local log only ({store.directory / LOG_FILE})"
    )
    logged = sum(1 for _ in read_log(store.directory))
    print(f"Telemetry is {'ON' if decision.allowed else 'OFF'}.", file=out)
    print(f"  decided by: {decision.source}", file=out)
    print(f"  why:        {decision.reason}", file=out)
    print(f"  policy:     {settings.consent_policy}", file=out)
    print(f"  sends to:   {destination}", file=out)
    print(f"  state:      {store.path}", file=out)
    print(f"  install id: {(state.install_id if state else None) or '(none)'}", file=out)
    print(f"  logged:     {logged} payloads in {store.directory / LOG_FILE}", file=out)
    return 0


def cmd_enable(out: TextIO) -> int:
    settings, error = load_settings()
    store = StateStore(settings.resolved_state_dir)
    store.set_consent("enabled", by="cli")
    decision = _decision(settings, store, error)
    print("Recorded: telemetry enabled.", file=out)
    _config_problem(error, out)
    if not decision.allowed:
        why = "the configuration problem above" if error else decision.reason
        print(f"It stays off for now: {why} ({decision.source}).", file=out)
    return 0


def cmd_disable(out: TextIO) -> int:
    settings, error = load_settings()
    store = StateStore(settings.resolved_state_dir)
    store.set_consent("disabled", by="cli")
    print("Recorded: telemetry disabled. The install id and HASH key were removed.", file=out)
    unsent = Spool(settings.resolved_state_dir / SPOOL_DIR).clear()
    if unsent:
        print(f"Removed {len(unsent)} spool file(s) of events not yet sent.", file=out)
    _config_problem(error, out)
    return 0


def cmd_preview(out: TextIO, limit: int) -> int:
    settings, _ = load_settings()
    events = list(read_log(settings.resolved_state_dir))
    if not events:
        print("Nothing has been sent yet (the local log is empty).", file=out)
        return 0
    for event in events[-limit:]:
        print(json.dumps(event, indent=2, ensure_ascii=False), file=out)
    return 0


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


def cmd_export(out: TextIO, output: str | None) -> int:
    settings, _ = load_settings()
    text = json.dumps(export_document(settings.resolved_state_dir), indent=2, ensure_ascii=False)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        print(f"Wrote {output}.", file=out)
    else:
        print(text, file=out)
    return 0


def _owned_files(directory: Path) -> list[Path]:
    """The files in ``directory`` that the library wrote (never a directory, never others)."""
    found = [directory / name for name in _OWNED_FILES]
    for pattern in _OWNED_PATTERNS:
        found.extend(sorted(directory.glob(pattern)))
    return [p for p in found if p.is_symlink() or p.is_file()]


def cmd_delete(out: TextIO) -> int:
    settings, _ = load_settings()
    directory = settings.resolved_state_dir
    if not directory.is_dir():
        why = "is not a directory" if directory.exists() else "does not exist"
        print(f"Nothing to delete: {directory} {why}.", file=out)
        return 0
    state = _state(StateStore(directory))
    deleted = Spool(directory / SPOOL_DIR).clear()
    for path in _owned_files(directory):
        try:
            path.unlink()
        except FileNotFoundError:  # another process removed it first (e.g. a temp file)
            continue
        deleted.append(path)
    if not deleted:
        print(f"Nothing to delete: no telemetry files in {directory}.", file=out)
        return 0
    for path in deleted:
        print(f"Deleted {path}", file=out)
    try:
        directory.rmdir()
    except OSError:  # not empty: the other files are not ours to remove
        print(f"Kept {directory}: it holds files that are not telemetry's.", file=out)
    else:
        print(f"Deleted {directory}", file=out)
    if state and state.install_id:
        print(
            "Data already sent cannot be deleted from here. To have it deleted, give the "
            f"vendor this install id: {state.install_id}",
            file=out,
        )
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code."""
    stream = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="codeweaver-telemetry", description="See and control codeweaver telemetry."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="is telemetry on, and why")
    sub.add_parser("enable", help="opt in")
    sub.add_parser("disable", help="opt out and forget the install id")
    preview = sub.add_parser("preview", help="print the last payloads sent")
    preview.add_argument("-n", type=int, default=10, help="how many (default 10)")
    export = sub.add_parser("export", help="everything kept locally, as JSON")
    export.add_argument("-o", "--output", help="write to this file instead of stdout")
    sub.add_parser("delete", help="remove everything kept locally")
    args = parser.parse_args(argv)
    try:
        code = _run(args, stream)
        stream.flush()  # a closed pipe shows here, not as a traceback at exit
    except BrokenPipeError:
        # The reader went away (`codeweaver-telemetry status | head`): stop quietly, as
        # other command-line tools do, with the status a shell gives for SIGPIPE.
        _silence_stdout(stream)
        return EXIT_BROKEN_PIPE
    except (OSError, StateError) as exc:
        print(f"codeweaver-telemetry: {exc}", file=sys.stderr)
        return 1
    return code


def _run(args: argparse.Namespace, stream: TextIO) -> int:
    if args.command == "status":
        return cmd_status(stream)
    if args.command == "enable":
        return cmd_enable(stream)
    if args.command == "disable":
        return cmd_disable(stream)
    if args.command == "preview":
        return cmd_preview(stream, args.n)
    if args.command == "export":
        return cmd_export(stream, args.output)
    return cmd_delete(stream)


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
