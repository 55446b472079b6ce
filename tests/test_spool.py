"""The disk spool: what a run could not deliver is kept (scrubbed) and sent by the next run."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from codeweaver_telemetry import Event, TelemetryClient
from codeweaver_telemetry._spool import SPOOL_DIR, Spool
from codeweaver_telemetry.cli import main as cli_main
from tests.receiver import CAPTURE, PostHogReceiver

SECRET_PATH = "/home/alice/private-project/notes.txt"


def spool_text(state_dir: Path) -> str:
    directory = state_dir / SPOOL_DIR
    if not directory.exists():
        return ""
    return "".join(p.read_text(encoding="utf-8") for p in sorted(directory.iterdir()))


def wire(make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, **kw: object):
    return make_client(
        posthog_api_key="phc_spool",
        posthog_host=receiver.url,
        request_timeout_seconds=2.0,
        **kw,
    )


def test_undelivered_events_are_spooled_scrubbed_and_sent_by_the_next_run(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A hanging host at exit: events go to the spool (after the privacy pipeline), and the
    next run delivers them exactly once."""
    receiver.hang(route=CAPTURE)
    first = wire(make_client, receiver, exit_timeout_seconds=0.8)
    for i in range(5):
        first.capture("offline", {"i": i, "file": SECRET_PATH})
    started = time.monotonic()
    first.shutdown()
    assert time.monotonic() - started < 0.8 + 0.5, "spooling stays within the exit bound"
    assert first.stats()["spooled"] == 5
    text = spool_text(first.settings.resolved_state_dir)
    assert SECRET_PATH not in text
    assert "alice" not in text
    assert "<path>" in text
    receiver.heal()
    receiver.clear()
    second = wire(make_client, receiver)
    second.capture("online", {})
    assert second.flush(5)
    events = receiver.wait_for_events(6)
    assert sorted(e["properties"]["i"] for e in events if e["event"] == "offline") == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert [e["event"] for e in events].count("online") == 1
    assert spool_text(second.settings.resolved_state_dir) == "", "the spool was emptied"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_spool_files_are_private(tmp_path: Path) -> None:
    """Spool files are mode 0600 and leave no temp files behind."""
    spool = Spool(tmp_path / "spool")
    spool.save([Event("e", {"a": 1}, 0.0, "u1", "d")])
    files = list((tmp_path / "spool").iterdir())
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600


def test_spool_is_bounded(tmp_path: Path) -> None:
    """Past max_bytes nothing more is written; save says how many it kept."""
    spool = Spool(tmp_path / "spool", max_bytes=400)
    event = Event("e", {"pad": "x" * 100}, 0.0, "u", "d")
    assert spool.save([event]) == 1
    assert spool.save([event] * 10) == 0
    assert len(spool.load()) == 1


def test_each_spooled_event_is_loaded_once(tmp_path: Path) -> None:
    """Loading claims the files: a second loader (another process) gets nothing."""
    spool = Spool(tmp_path / "spool")
    spool.save([Event("e", {}, 1.5, "u1", "d"), Event("f", {}, 2.5, "u2", "d")])
    first = Spool(tmp_path / "spool").load()
    assert [(e.name, e.uuid, e.timestamp) for e in first] == [("e", "u1", 1.5), ("f", "u2", 2.5)]
    assert Spool(tmp_path / "spool").load() == []


def test_broken_spool_lines_are_skipped(tmp_path: Path) -> None:
    """A damaged spool file costs its damaged lines, never the run."""
    directory = tmp_path / "spool"
    directory.mkdir()
    good = json.dumps(
        {"event": "ok", "distinct_id": "d", "timestamp": 1, "uuid": "u", "properties": {}}
    )
    (directory / "spool-local-1-aa.jsonl").write_text(f"not json\n{good}\n[1]\n", encoding="utf-8")
    assert [e.name for e in Spool(directory).load()] == ["ok"]


def test_a_disabled_client_leaves_the_spool_alone(
    make_client: Callable[..., TelemetryClient],
    receiver: PostHogReceiver,
    monkeypatch: pytest.MonkeyPatch,
    clean_env: Path,
) -> None:
    """With telemetry off, spooled events are neither sent nor touched."""
    state_dir = clean_env / "telemetry"
    state_dir.mkdir(parents=True)
    assert Spool(state_dir / SPOOL_DIR).save([Event("old", {}, 0.0, "u", "d")]) == 1
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    client = TelemetryClient.from_options(
        enabled=True, posthog_api_key="phc_x", posthog_host=receiver.url
    )
    client.capture("new", {})
    client.shutdown()
    assert receiver.requests() == []
    assert '"old"' in spool_text(state_dir)


@pytest.mark.parametrize("command", ["disable", "delete"])
def test_cli_disable_and_delete_remove_the_spool(clean_env: Path, command: str) -> None:
    """Opting out, or deleting local data, also removes events not yet sent."""
    state_dir = clean_env / "telemetry"
    state_dir.mkdir(parents=True)
    assert Spool(state_dir / SPOOL_DIR).save([Event("old", {}, 0.0, "u", "d")]) == 1
    assert '"old"' in spool_text(state_dir)
    out = io.StringIO()
    assert cli_main([command], out=out) == 0
    assert spool_text(state_dir) == ""


def test_a_run_takes_at_most_its_limit_and_leaves_the_rest(tmp_path: Path) -> None:
    """A run loads up to its limit; the rest stays spooled for later runs, nothing is lost."""
    spool = Spool(tmp_path / "spool")
    spool.save([Event("e", {"i": i}, float(i), f"u{i}", "d") for i in range(10)])
    first = spool.load(limit=3)
    rest = spool.load()
    assert [e.properties["i"] for e in first] == [0, 1, 2]
    assert sorted(e.properties["i"] for e in rest) == list(range(3, 10))


def test_spooled_events_only_go_to_their_own_destination(tmp_path: Path) -> None:
    """Events spooled for one PostHog project are never loaded by a client of another."""
    Spool(tmp_path / "spool", tag="aaaa").save([Event("mine", {}, 0.0, "u", "d")])
    assert Spool(tmp_path / "spool", tag="bbbb").load() == []
    assert [e.name for e in Spool(tmp_path / "spool", tag="aaaa").load()] == ["mine"]


def test_the_spool_never_recreates_a_deleted_state_directory(tmp_path: Path) -> None:
    """After the state directory is deleted, a still-running process spools nothing."""
    spool = Spool(tmp_path / "gone" / "spool")
    assert spool.save([Event("e", {}, 0.0, "u", "d")]) == 0
    assert not (tmp_path / "gone").exists()


def test_both_halves_of_a_split_batch_are_spooled_at_exit(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A 413 split whose first half hangs at exit: the half not yet sent is spooled too."""
    from tests.receiver import Fault

    receiver.fail_next(1, Fault.status(413), route=CAPTURE)
    client = wire(make_client, receiver, exit_timeout_seconds=0.8)
    for i in range(4):
        client.capture("split", {"i": i})
    receiver.wait_for_requests(1, route=CAPTURE)
    receiver.hang(route=CAPTURE)
    client.shutdown()
    assert client.stats()["spooled"] == 4
