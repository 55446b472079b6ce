"""The user's CLI: status says why, enable/disable are recorded, export and delete work."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from codeweaver_telemetry import TelemetryClient
from codeweaver_telemetry.cli import main
from codeweaver_telemetry.state import STATE_FILE, StateStore

PREFIX = "CODEWEAVER__TELEMETRY__"


def run(*argv: str) -> str:
    out = io.StringIO()
    assert main(list(argv), out=out) == 0
    return out.getvalue()


def state_dir(home: Path) -> Path:
    return home / "telemetry"


def test_status_says_off_and_why_by_default(clean_env: Path) -> None:
    """Out of the box (opt-in policy) status says OFF, decided by the policy, and how to opt in."""
    text = run("status")
    assert "Telemetry is OFF" in text
    assert "decided by: policy" in text
    assert "codeweaver-telemetry enable" in text
    assert not state_dir(clean_env).exists(), "status writes nothing"


def test_enable_turns_it_on_and_status_says_so(clean_env: Path) -> None:
    """`enable` records the choice; status then says ON, decided by the stored choice."""
    assert "Recorded: telemetry enabled." in run("enable")
    text = run("status")
    assert "Telemetry is ON" in text
    assert "decided by: stored_choice" in text
    assert StateStore(state_dir(clean_env)).read().consent_by == "cli"


def test_enable_under_do_not_track_explains_it_stays_off(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enabling while DO_NOT_TRACK is set records the choice but says it stays off, and why."""
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    text = run("enable")
    assert "stays off" in text
    assert "DO_NOT_TRACK" in text


def test_disable_forgets_the_install_id(
    clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    """`disable` removes the id and key; a later client is off because of the stored choice."""
    client = make_client()
    assert client.distinct_id
    client.shutdown()
    run("disable")
    state = StateStore(state_dir(clean_env)).read()
    assert state.install_id is None
    assert state.hash_key is None
    assert "decided by: stored_choice" in run("status")


def test_preview_and_export_show_the_local_log_without_secrets(
    clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    """preview prints logged payloads; export includes state and events but never the HASH key."""
    assert "Nothing has been sent yet" in run("preview")
    client = make_client()
    client.capture("exported", {"n": 1})
    assert client.flush(5)
    assert '"event": "exported"' in run("preview", "-n", "1")
    document = json.loads(run("export"))
    assert [e["event"] for e in document["events"]] == ["exported"]
    assert document["state"]["install_id"] == client.distinct_id
    assert "hash_key" not in document["state"]
    key = StateStore(state_dir(clean_env)).read().hash_key
    assert key is not None
    assert key not in json.dumps(document)


def test_delete_removes_everything_and_prints_the_id(
    clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    """delete removes the state dir and prints the install id to quote to the vendor."""
    client = make_client()
    client.capture("x", {})
    client.shutdown(timeout=5)
    text = run("delete")
    assert client.distinct_id is not None
    assert client.distinct_id in text
    assert not state_dir(clean_env).exists()
    assert "Nothing to delete" in run("delete")


def test_delete_keeps_files_that_are_not_telemetrys(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_client: Callable[..., TelemetryClient],
) -> None:
    """With STATE_DIR pointing at a project folder, delete removes only the library's files."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "notes.txt").write_text("mine", encoding="utf-8")
    (project / "src" / "main.py").write_text("print()", encoding="utf-8")
    monkeypatch.setenv(PREFIX + "STATE_DIR", str(project))
    client = make_client()
    client.capture("x", {})
    client.shutdown(timeout=5)
    ours = [".state.abc.tmp", ".hash_key.xyz", "hash_key", "events.jsonl.1"]
    for name in ours:
        (project / name).write_text("", encoding="utf-8")
    ours += [STATE_FILE, ".lock", "events.jsonl"]
    assert all((project / name).exists() for name in ours)
    text = run("delete")
    for name in ours:
        assert not (project / name).exists(), name
        assert f"Deleted {project / name}" in text, name
    assert (project / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (project / "src" / "main.py").exists()
    assert "Kept" in text
    assert client.distinct_id is not None
    assert client.distinct_id in text
    assert "Nothing to delete" in run("delete")
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt", "src"]


def test_disable_with_a_bad_setting_uses_the_configured_state_dir(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With another setting invalid, disable still writes to STATE_DIR and names the problem."""
    target = tmp_path / "my-state"
    monkeypatch.setenv(PREFIX + "STATE_DIR", str(target))
    monkeypatch.setenv(PREFIX + "BATCH_SIZE", "abc")
    text = run("disable")
    assert "Recorded: telemetry disabled." in text
    assert "batch_size" in text
    assert PREFIX + "BATCH_SIZE" in text
    assert StateStore(target).read().consent == "disabled"
    assert not state_dir(clean_env).exists(), "nothing is written to the default directory"
    status = run("status")
    assert "decided by: config_error" in status
    assert "batch_size" in status
    assert str(target / STATE_FILE) in status
    monkeypatch.delenv(PREFIX + "BATCH_SIZE")
    status = run("status")
    assert "Telemetry is OFF" in status
    assert "decided by: stored_choice" in status, "the opt-out outlives the fix"


def test_enable_with_a_bad_setting_names_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """enable records the choice in STATE_DIR and says the bad setting keeps telemetry off."""
    target = tmp_path / "my-state"
    monkeypatch.setenv(PREFIX + "STATE_DIR", str(target))
    monkeypatch.setenv(PREFIX + "BATCH_SIZE", "abc")
    text = run("enable")
    assert "Configuration problem:" in text
    assert "batch_size" in text
    assert "stays off" in text
    assert StateStore(target).read().consent == "enabled"


def test_console_script_entry_point_runs(clean_env: Path) -> None:
    """`python -m codeweaver_telemetry.cli status` works as the console script does."""
    out = subprocess.run(
        [sys.executable, "-m", "codeweaver_telemetry.cli", "status"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Telemetry is OFF" in out.stdout


def test_a_closed_stdout_ends_the_cli_quietly(clean_env: Path) -> None:
    """`codeweaver-telemetry status | head` with the reader gone: no traceback, no
    "Broken pipe" message, and the status a shell gives for SIGPIPE."""
    from codeweaver_telemetry.cli import EXIT_BROKEN_PIPE

    for command in (["status"], ["export"], ["preview"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "codeweaver_telemetry.cli", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()  # the reader is gone before anything is written
        err = proc.stderr.read().decode()
        assert proc.wait(30) == EXIT_BROKEN_PIPE, err
        assert err == "", err
