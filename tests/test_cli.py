"""The user's CLI: status says why, enable/disable are recorded, export and delete work,
and every command speaks JSON (``--json``) in the documented shape with the documented exit
statuses."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry import TelemetryClient
from codeweaver_telemetry.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    JSON_COMMON_FIELDS,
    JSON_ERROR_FIELDS,
    JSON_FIELDS,
    JSON_SCHEMA_VERSION,
    main,
)
from codeweaver_telemetry.flags import FLAGS_FILE, FlagFile
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


def test_delete_waits_for_the_state_lock_and_says_when_it_cannot(
    clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    """delete works under the state lock, so a consent change in flight is never cut; while
    another process holds it, delete fails cleanly (exit 1) and removes nothing."""
    from codeweaver_telemetry._files import LOCK_FILE, exclusive_lock

    client = make_client()
    client.capture("x", {})
    client.shutdown(timeout=5)
    directory = state_dir(clean_env)
    before = sorted(p.name for p in directory.iterdir())
    out = io.StringIO()
    with exclusive_lock(directory / LOCK_FILE):
        assert main(["delete", "--json"], out=out) == 1
    document = json.loads(out.getvalue())
    assert "holds the lock" in document["error"]
    assert sorted(p.name for p in directory.iterdir()) == before
    assert LOCK_FILE in run("delete")  # and once it is free, the lock file goes too
    assert not directory.exists()


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
    "Broken pipe" message, and the status a shell gives for SIGPIPE (with --json too)."""
    for command in (
        ["status"],
        ["export"],
        ["preview"],
        ["status", "--json"],
        ["--json", "export"],
        ["flags", "--json"],
        ["flags"],
    ):
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


# -- --json and exit statuses ---------------------------------------------------------------------


def check_shape(document: Any, command: str) -> dict[str, Any]:
    """Assert that ``document`` is exactly the documented shape for ``command``: the common
    fields, then the command's own fields (or the error field when ``ok`` is false), each
    of its documented type; returns it."""
    assert isinstance(document, dict)
    assert document["schema_version"] == JSON_SCHEMA_VERSION == 1
    assert document["command"] == command
    own = JSON_FIELDS[command] if document.get("ok") else JSON_ERROR_FIELDS
    if command == "verify-log" and not document.get("ok"):  # a broken chain: where, and why
        own = {**JSON_FIELDS[command], **JSON_ERROR_FIELDS}
    expected = {**JSON_COMMON_FIELDS, **own}
    assert set(document) == set(expected), (command, sorted(document))
    for field, kind in expected.items():
        _check_type(document[field], kind, f"{command}.{field}")
    if command == "flags" and document["ok"]:
        entry_fields = {"key": str, "value": bool | str, "fetched_at": str, "source": str}
        for entry in document["flags"]:
            assert set(entry) == set(entry_fields)
            for field, kind in entry_fields.items():
                _check_type(entry[field], kind, f"flags[].{field}")
            assert entry["source"] in ("remote", "local")
    return document


def _check_type(value: Any, kind: Any, where: str) -> None:
    kinds = kind.__args__ if isinstance(kind, types.UnionType) else (kind,)
    kinds = tuple(type(None) if k is None else k for k in kinds)
    if isinstance(value, bool):  # a JSON true is no number
        assert bool in kinds, (where, value)
    else:
        assert isinstance(value, kinds), (where, value, kinds)


def run_json(*argv: str, code: int = EXIT_OK) -> dict[str, Any]:
    """Run with --json after the command; check the exit status and the document's shape."""
    out = io.StringIO()
    assert main([*argv, "--json"], out=out) == code
    document = json.loads(out.getvalue())
    assert document["ok"] is (code == EXIT_OK)
    command = next(a for a in argv if not a.startswith("-"))
    return check_shape(document, command)


def test_the_documented_shapes_cover_every_command() -> None:
    """JSON_FIELDS names exactly the CLI's commands, and no command field hides a common one."""
    assert set(JSON_FIELDS) == {
        "status",
        "enable",
        "disable",
        "preview",
        "export",
        "delete",
        "flags",
        "deny",
        "allow",
        "verify-log",
        "schema",
        "report",
        "serve",
    }
    for fields in JSON_FIELDS.values():
        assert not set(fields) & set(JSON_COMMON_FIELDS)


def test_every_command_prints_its_documented_json(
    clean_env: Path, make_client: Callable[..., TelemetryClient], tmp_path: Path
) -> None:
    """Each command's --json document has the documented fields and types, and says the
    same as its text output."""
    status = run_json("status")
    assert status["enabled"] is False
    assert status["source"] == "policy"
    assert status["install_id"] is None
    assert status["destination"] == "local"
    assert run_json("flags")["flags"] == []
    enable = run_json("enable")
    assert (enable["recorded"], enable["enabled"], enable["source"]) == (
        "enabled",
        True,
        "stored_choice",
    )
    client = make_client()
    client.capture("exported", {"n": 1})
    assert client.flush(5)
    status = run_json("status")
    assert status["enabled"] is True
    assert status["install_id"] == client.distinct_id
    assert status["logged_payloads"] == 1
    assert status["state_file"] == str(state_dir(clean_env) / STATE_FILE)
    preview = run_json("preview", "-n", "1")
    assert [e["event"] for e in preview["events"]] == ["exported"]
    assert preview["limit"] == 1
    export = run_json("export")
    assert export["output"] is None
    assert [e["event"] for e in export["events"]] == ["exported"]
    assert "hash_key" not in export["state"]
    target = tmp_path / "export.json"
    export = run_json("export", "-o", str(target))
    assert export["output"] == str(target)
    assert export["state"] is None
    assert export["events"] is None
    assert [e["event"] for e in json.loads(target.read_text())["events"]] == ["exported"]
    client.shutdown(timeout=5)
    disable = run_json("disable")
    assert (disable["recorded"], disable["enabled"]) == ("disabled", False)
    assert disable["source"] == "stored_choice"
    assert disable["config_error"] is None
    delete = run_json("delete")
    assert delete["state_dir_removed"] is not state_dir(clean_env).exists()
    assert str(state_dir(clean_env) / STATE_FILE) in delete["deleted"]
    assert delete["install_id"] is None, "disable forgot it"
    nothing = run_json("delete")
    assert nothing["deleted"] == []
    assert nothing["state_dir_removed"] is False


def test_json_may_come_before_or_after_the_command(clean_env: Path) -> None:
    """`--json status` and `status --json` print the same document; without it, text."""
    before, after = io.StringIO(), io.StringIO()
    assert main(["--json", "status"], out=before) == 0
    assert main(["status", "--json"], out=after) == 0
    assert json.loads(before.getvalue()) == json.loads(after.getvalue())
    check_shape(json.loads(before.getvalue()), "status")
    assert run("status").startswith("Telemetry is OFF.")
    for command in JSON_FIELDS:
        if command in ("enable", "disable", "delete", "deny", "allow", "serve"):
            continue  # they change things (deny/allow: tests/test_deny.py); serve runs on
            # until interrupted (tests/test_web.py)
        out = io.StringIO()
        assert main(["--json", command], out=out) == 0
        check_shape(json.loads(out.getvalue()), command)


def test_status_exits_0_on_and_off(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """status reports, it does not test: exit 0 whether telemetry is on or off, with
    enabled, source and reason in JSON."""
    off = run_json("status")
    assert (off["enabled"], off["source"]) == (False, "policy")
    assert "opt-in" in off["reason"]
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    on = run_json("status")
    assert (on["enabled"], on["source"]) == (True, "enabled")
    assert on["reason"]
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    off = run_json("status")
    assert (off["enabled"], off["source"]) == (False, "DO_NOT_TRACK")
    monkeypatch.setenv(PREFIX + "BATCH_SIZE", "abc")
    broken = run_json("status")
    assert (broken["enabled"], broken["source"]) == (False, "config_error")
    assert "batch_size" in broken["config_error"]


def test_a_failure_exits_1_with_an_error_document(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command that fails exits 1: text on stderr, or with --json one error document on
    stdout (and nothing on stderr)."""
    target = str(tmp_path / "missing-dir" / "export.json")
    failed = run_json("export", "-o", target, code=EXIT_FAILURE)
    assert "export.json" in failed["error"]
    assert capsys.readouterr().err == ""
    out = io.StringIO()
    assert main(["export", "-o", target], out=out) == EXIT_FAILURE
    assert out.getvalue() == ""
    assert capsys.readouterr().err.startswith("codeweaver-telemetry: ")


@pytest.mark.parametrize(
    "argv",
    [["bogus"], [], ["status", "--bogus"], ["preview", "-n", "x"], ["--json"]],
    ids=["unknown-command", "no-command", "unknown-option", "bad-value", "json-alone"],
)
def test_a_usage_error_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error is argparse's: status 2 and a usage line on stderr."""
    with pytest.raises(SystemExit) as caught:
        main(argv, out=io.StringIO())
    assert caught.value.code == EXIT_USAGE == 2
    assert "usage: codeweaver-telemetry" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(clean_env: Path) -> None:
    """`python -m codeweaver_telemetry status --json` prints the status document; a usage
    error exits 2 there too."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "codeweaver_telemetry", "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    document = check_shape(json.loads(done.stdout), "status")
    assert document["enabled"] is False
    assert done.stderr == ""
    bad = subprocess.run(
        [sys.executable, "-m", "codeweaver_telemetry", "bogus"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert bad.returncode == EXIT_USAGE
    assert "usage: codeweaver-telemetry" in bad.stderr


def test_importing_the_package_does_not_load_the_cli() -> None:
    """`import codeweaver_telemetry` stays cheap: neither the CLI nor __main__ is loaded."""
    code = (
        "import sys, codeweaver_telemetry;"
        "print(sorted(m for m in sys.modules if m.startswith('codeweaver_telemetry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "['codeweaver_telemetry']"


def _flag_file(directory: Path, install_id: str) -> Path:
    FlagFile(directory, install_id=install_id, source="remote").write({"exp": "b", "on": True})
    return directory / FLAGS_FILE


def test_flags_shows_the_cached_flags_without_a_request(
    clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    """`flags` shows each cached flag with its value, fetch date and source, in text and
    JSON; flags cached for another install id are not this install's."""
    client = make_client()
    assert client.distinct_id is not None
    client.shutdown()
    path = _flag_file(state_dir(clean_env), client.distinct_id)
    document = run_json("flags")
    assert document["install_id"] == client.distinct_id
    assert document["refreshed"] is False
    assert document["source"] == "remote"
    assert document["flags_file"] == str(path)
    assert [(f["key"], f["value"]) for f in document["flags"]] == [("exp", "b"), ("on", True)]
    assert {f["fetched_at"] for f in document["flags"]} == {document["fetched_at"]}
    assert document["fetched_at"].endswith("+00:00")
    text = run("flags")
    lines = text.splitlines()
    assert lines[0].split() == ["flag", "value", "fetched", "at", "(UTC)", "source"]
    assert lines[1].split() == ["exp", "b", document["fetched_at"], "remote"]
    assert lines[2].split() == ["on", "true", document["fetched_at"], "remote"]
    _flag_file(state_dir(clean_env), "00000000-0000-4000-8000-000000000000")
    assert run_json("flags")["flags"] == []
    assert "No feature flags are cached" in run("flags")


def test_flags_with_an_unreadable_cache_exits_1(clean_env: Path) -> None:
    """A flags.json that is not a flag file is reported (exit 1), never trusted."""
    directory = state_dir(clean_env)
    directory.mkdir(parents=True)
    (directory / FLAGS_FILE).write_text("{not json", encoding="utf-8")
    failed = run_json("flags", code=EXIT_FAILURE)
    assert "--refresh" in failed["error"]


def test_flags_refresh_without_a_key_or_consent_exits_1(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flags --refresh` with telemetry off, or without a PostHog key, says why and exits 1."""
    off = run_json("flags", "--refresh", code=EXIT_FAILURE)
    assert "telemetry is off" in off["error"]
    monkeypatch.setenv(PREFIX + "ENABLED", "1")
    no_key = run_json("flags", "--refresh", code=EXIT_FAILURE)
    assert "no PostHog API key" in no_key["error"]


def test_disable_and_delete_remove_the_flag_cache(
    clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    """The cached flags belong to the install id: disable and delete remove them."""
    client = make_client()
    assert client.distinct_id is not None
    client.shutdown()
    path = _flag_file(state_dir(clean_env), client.distinct_id)
    disable = run_json("disable")
    assert disable["removed"] == [str(path)]
    assert not path.exists()
    assert "Removed the cached feature flags." not in run("disable"), "only when there were"
    _flag_file(state_dir(clean_env), client.distinct_id)
    (state_dir(clean_env) / f".{FLAGS_FILE}.abc.tmp").write_text("", encoding="utf-8")
    text = run("delete")
    assert f"Deleted {path}" in text
    assert not path.exists()
    assert not list(state_dir(clean_env).glob(f".{FLAGS_FILE}.*")), "its temp files too"


def test_verify_log_says_intact_or_where_the_chain_breaks(
    clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    """verify-log exits 0 on the log a client wrote, and 1 with the line and the reason once
    a byte of it is changed (text and --json)."""
    assert run_json("verify-log")["intact"] is True  # no log yet: nothing to doubt
    client = make_client()
    for i in range(3):
        client.capture("logged", {"i": i})
    assert client.flush(5)
    client.shutdown(timeout=5)
    intact = run_json("verify-log")
    assert (intact["intact"], intact["lines"], intact["first_break"]) == (True, 3, None)
    assert "intact: 3 chained lines" in run("verify-log")
    log = state_dir(clean_env) / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"i":1', b'"i":7')
    log.write_bytes(b"".join(lines))
    broken = run_json("verify-log", code=EXIT_FAILURE)
    assert (broken["intact"], broken["first_break"], broken["reason"]) == (False, 2, "edited")
    assert "line 2" in broken["error"]
    out = io.StringIO()
    assert main(["verify-log"], out=out) == EXIT_FAILURE
    assert "NOT intact: line 2 (events.jsonl): edited" in out.getvalue()


def test_schema_lists_every_shipped_event(clean_env: Path) -> None:
    """schema prints every shipped event with its properties; --json gives one JSON Schema
    per event, each property with a description and a privacy rule."""
    document = run_json("schema")
    events = document["events"]
    assert {"codeweaver_search", "codeweaver_session", "codeweaver_error"} <= set(events)
    search = events["codeweaver_search"]
    assert search["properties"]["intent"]["x-privacy-rule"]
    assert search["properties"]["intent"]["description"]
    text = run("schema")
    assert "codeweaver_session" in text
    assert "intent" in text
