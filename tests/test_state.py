"""StateStore: the state file holding consent, the notice flag, the install id and HASH key."""

from __future__ import annotations

import json
import multiprocessing
import os
import runpy
import stat
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeweaver_telemetry import InMemorySink, TelemetryClient
from codeweaver_telemetry import state as state_module
from codeweaver_telemetry.settings import load_settings
from codeweaver_telemetry.state import STATE_FILE, StateError, StateStore, TelemetryState
from tests.helpers import within

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def _raw(store: StateStore) -> dict[str, Any]:
    return json.loads(store.path.read_text(encoding="utf-8"))


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in (STATE_FILE, ".lock"))


def test_no_file_reads_as_empty_state(store: StateStore) -> None:
    """A fresh install has no choice, no notice, no id and no key, and reading creates nothing."""
    assert store.read() == TelemetryState()
    assert not store.directory.exists()


def test_set_consent_records_choice_date_and_who(store: StateStore) -> None:
    """`enable` records the choice, when it was made and by whom, and it survives a re-read."""
    store.set_consent("enabled", by="cli")
    fresh = StateStore(store.directory).read()
    assert fresh.consent == "enabled"
    assert fresh.consent_by == "cli"
    assert fresh.consent_at
    assert fresh.consent_at[:4].isdigit()
    raw = _raw(store)
    assert raw["consent"] == "enabled"
    assert raw["consent_by"] == "cli"


@posix_only
def test_state_file_is_private(store: StateStore) -> None:
    """The state file (which holds the HASH key) is readable by its owner only (0600)."""
    store.set_consent("enabled", by="cli")
    store.ensure_identity()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_disable_forgets_id_and_key(store: StateStore) -> None:
    """Disabling deletes the install id and the HASH key, not just the flag."""
    store.set_consent("enabled", by="cli")
    store.ensure_identity()
    store.set_consent("disabled", by="cli")
    state = StateStore(store.directory).read()
    assert state.consent == "disabled"
    assert state.install_id is None
    assert state.hash_key is None
    raw = _raw(store)
    assert raw.get("install_id") is None
    assert raw.get("hash_key") is None


def test_identity_is_created_once_and_stable(store: StateStore) -> None:
    """The install id and key are made once and then reused by every later StateStore."""
    first_id, first_key = store.ensure_identity()
    assert first_id
    assert len(first_key) >= 16
    again = StateStore(store.directory).ensure_identity()
    assert again == (first_id, first_key)
    assert StateStore(store.directory).read().install_id == first_id


def test_identity_after_disable_is_new(store: StateStore) -> None:
    """Re-enabling after a disable gives a new id: the old one cannot be linked again."""
    old_id, _ = store.ensure_identity()
    store.set_consent("disabled", by="cli")
    store.set_consent("enabled", by="cli")
    new_id, _ = store.ensure_identity()
    assert new_id != old_id


def test_writes_leave_no_temp_files(store: StateStore) -> None:
    """Every update replaces the file atomically; no temporary file is left behind."""
    store.set_consent("enabled", by="cli")
    store.mark_notice_shown()
    store.ensure_identity()
    store.set_consent("disabled", by="cli")
    assert _leftovers(store.directory) == []


def test_failed_write_keeps_old_state_and_no_temp_file(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails half-way leaves the previous state intact and no temp file."""
    store.set_consent("enabled", by="cli")
    before = store.path.read_bytes()

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(state_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.set_consent("disabled", by="cli")
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert _leftovers(store.directory) == []
    assert store.read().consent == "enabled"


# The child loads state.py on its own (it needs only the standard library), so four spawned
# interpreters start in a fraction of the time a full package import would take.
_CHILD = """
import importlib.util
import sys
import threading
spec = importlib.util.spec_from_file_location("_cw_state", STATE_PY)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
barrier.wait(timeout=20)
install_id, key = module.StateStore(DIRECTORY).ensure_identity()
results.put((install_id, key.hex()))
"""


def test_processes_racing_for_identity_agree(tmp_path: Path) -> None:
    """Several processes sharing a state dir, starting at once, all get the same id and key."""
    ctx = multiprocessing.get_context("spawn")
    directory = str(tmp_path / "shared")
    script = tmp_path / "child.py"
    script.write_text(_CHILD, encoding="utf-8")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    shared = {
        "STATE_PY": state_module.__file__,
        "DIRECTORY": directory,
        "barrier": barrier,
        "results": results,
    }
    procs = [
        ctx.Process(target=runpy.run_path, args=(str(script),), kwargs={"init_globals": shared})
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    try:
        got = [results.get(timeout=20) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
    assert all(proc.exitcode == 0 for proc in procs)
    assert len(got) == 4
    assert len(set(got)) == 1
    assert StateStore(directory).read().install_id == got[0][0]
    assert _leftovers(Path(directory)) == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        pytest.param(b"{not json", "not JSON", id="not-json"),
        pytest.param(b"", "empty file", id="empty"),
        pytest.param(b'["enabled"]', "not an object", id="list"),
        pytest.param(b'{"consent": 1}', "consent is a number", id="consent-int"),
        pytest.param(b'{"install_id": ["x"]}', "id is a list", id="id-list"),
        pytest.param(b'{"consent": "maybe"}', "bad consent value", id="consent-value"),
        pytest.param(b'{"hash_key": "abcd"}', "hash key too short", id="short-key"),
        pytest.param(b'{"hash_key": "' + b"zz" * 32 + b'"}', "hash key not hex", id="hex"),
        pytest.param(b"\xff\xfe\x00\x81garbage", "bytes that are not UTF-8", id="not-utf8"),
    ],
)
def test_corrupt_state_raises_state_error(store: StateStore, content: bytes, why: str) -> None:
    """A state file that is damaged in any way is reported as StateError, nothing else."""
    store.directory.mkdir(parents=True)
    store.path.write_bytes(content)
    with pytest.raises(StateError):
        store.read()


def test_corrupt_state_is_not_overwritten(store: StateStore) -> None:
    """Updating a corrupt state file fails with StateError instead of silently resetting it."""
    store.directory.mkdir(parents=True)
    store.path.write_text('{"consent": "maybe"}', encoding="utf-8")
    with pytest.raises(StateError):
        store.ensure_identity()
    assert store.path.read_text(encoding="utf-8") == '{"consent": "maybe"}'


def test_clients_sharing_a_state_dir_share_distinct_id(
    build: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clients (e.g. two tools of one install) report under one anonymous id."""
    monkeypatch.setenv("CODEWEAVER__TELEMETRY__ENABLED", "1")
    settings, error = load_settings()
    assert error is None
    first = build(settings, sink=InMemorySink())
    second = build(load_settings()[0], sink=InMemorySink())
    assert first.enabled
    assert second.enabled
    assert first.distinct_id
    assert first.distinct_id == second.distinct_id
    assert StateStore(settings.resolved_state_dir).read().install_id == first.distinct_id


def test_state_dir_is_private(store: StateStore) -> None:
    """The state directory is created owner-only (0700) on POSIX."""
    if sys.platform == "win32":
        pytest.skip("POSIX file modes")
    old = os.umask(0o022)
    try:
        store.set_consent("enabled", by="cli")
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


# -- hardening: the id, odd files, the consent watch ------------------------------------------
@pytest.mark.parametrize(
    "install_id",
    [
        "/home/alice/projects/secret",
        "alice@example.com",
        "not-a-uuid",
        "{12345678-1234-5678-1234-567812345678}",
        "urn:uuid:12345678-1234-5678-1234-567812345678",
        "12345678123456781234567812345678",
        "",
    ],
)
def test_an_install_id_that_is_not_a_uuid_is_a_corrupt_state_file(
    store: StateStore, install_id: str
) -> None:
    """The id is sent as distinct_id: a path or an e-mail written into the file is refused."""
    store.directory.mkdir(parents=True)
    store.path.write_text(json.dumps({"install_id": install_id}), encoding="utf-8")
    with pytest.raises(StateError, match="install id"):
        store.read()


def test_a_tampered_install_id_turns_telemetry_off_and_is_never_sent(
    build: Callable[..., TelemetryClient],
    monkeypatch: pytest.MonkeyPatch,
    telemetry_logs: pytest.LogCaptureFixture,
) -> None:
    """A state file whose id was replaced by an e-mail: off, with one warning; nothing sent."""
    monkeypatch.setenv("CODEWEAVER__TELEMETRY__ENABLED", "1")
    settings, _ = load_settings()
    store = StateStore(settings.resolved_state_dir)
    store.ensure_identity()
    data = _raw(store)
    data["install_id"] = "alice@example.com"
    store.path.write_text(json.dumps(data), encoding="utf-8")
    sink = InMemorySink()
    client = build(settings, sink=sink)
    client.capture("anything")
    client.flush(1)
    assert not client.enabled
    assert client.decision.source == "state_error"
    assert sink.events() == []
    warnings = [r for r in telemetry_logs.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "install id" in warnings[0].getMessage()


@posix_only
def test_a_fifo_at_state_json_never_hangs_the_client(
    monkeypatch: pytest.MonkeyPatch, telemetry_logs: pytest.LogCaptureFixture, clean_env: Path
) -> None:
    """A FIFO planted at state.json: get_telemetry_client() returns at once, off, one warning."""
    from codeweaver_telemetry import get_telemetry_client

    monkeypatch.setenv("CODEWEAVER__TELEMETRY__ENABLED", "1")
    state_dir = clean_env / "telemetry"
    state_dir.mkdir(parents=True)
    os.mkfifo(state_dir / STATE_FILE)
    client = within(get_telemetry_client)
    assert isinstance(client, TelemetryClient)
    assert not client.enabled
    assert client.decision.source == "state_error"
    assert "not a regular file" in client.decision.reason


def test_an_oversized_state_file_is_refused_not_read_whole(store: StateStore) -> None:
    """A state file far larger than any real one (here 1 MiB of padding) is corrupt."""
    store.directory.mkdir(parents=True)
    store.path.write_text('{"pad": "' + "x" * (1 << 20) + '"}', encoding="utf-8")
    with pytest.raises(StateError, match="could not be read"):
        store.read()


@posix_only
def test_a_symlinked_lock_file_is_never_followed(store: StateStore, tmp_path: Path) -> None:
    """A .lock planted as a link to a file elsewhere: no file is created there."""
    store.directory.mkdir(parents=True)
    outside = tmp_path / "outside-lock"
    os.symlink(outside, store.directory / ".lock")
    with pytest.raises(OSError, match="link"):
        store.set_consent("enabled", by="cli")
    assert not outside.exists()


@posix_only
def test_a_symlink_at_state_json_is_replaced_never_written_through(
    store: StateStore, tmp_path: Path
) -> None:
    """Writing the state replaces a link at state.json; the file it named is untouched."""
    store.directory.mkdir(parents=True)
    target = tmp_path / "elsewhere.json"
    target.write_text("{}", encoding="utf-8")
    os.symlink(target, store.path)
    store.set_consent("disabled", by="cli")
    assert target.read_text(encoding="utf-8") == "{}"
    assert not store.path.is_symlink()
    assert store.read().consent == "disabled"


def test_the_consent_watch_follows_the_stored_choice(store: StateStore) -> None:
    """The watch allows the current id; disable, delete or a new id end it for good."""
    from codeweaver_telemetry.state import ConsentWatch

    install_id, _ = store.ensure_identity()
    watch = ConsentWatch(store, install_id)
    assert watch()
    assert watch(), "unchanged file: same answer"
    store.set_consent("disabled", by="cli")
    assert not watch()
    store.set_consent("enabled", by="cli")
    store.ensure_identity()  # a new id after the disable
    assert not watch(), "the forgotten id never sends again"

    other_id, _ = store.ensure_identity()
    second = ConsentWatch(store, other_id)
    assert second()
    store.path.unlink()  # codeweaver-telemetry delete
    assert not second()


_uuid_like = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "urn:uuid:" + str(u)),
    st.from_regex(r"[0-9a-fA-F_\-]{30,40}", fullmatch=True),
    st.text(max_size=40),
)


@given(_uuid_like)
def test_install_id_check_is_the_canonical_uuid_form(value: str) -> None:
    """An install id is accepted exactly when it is a UUID in its canonical form, as
    ``str(uuid.UUID(value)) == value.lower()`` decides (the check imports no uuid)."""
    try:
        canonical = len(value) == 36 and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        canonical = False
    assert state_module._is_uuid(value) is canonical


# -- the notice version -------------------------------------------------------------------------


def test_notice_version_is_recorded_with_its_date(store: StateStore) -> None:
    """Marking the notice shown records its version (1 by default) and a date, in the file."""
    state = store.mark_notice_shown()
    assert (state.notice_version, state.shown_notice_version) == (1, 1)
    assert state.notice_shown_at
    assert _raw(store)["notice_version"] == 1
    assert store.read() == state


def test_an_old_state_file_reads_as_notice_version_1(store: StateStore) -> None:
    """A state file written before notices had versions (only ``notice_shown_at``) reads as
    version 1, and marking version 1 again does not even rewrite it."""
    store.directory.mkdir(parents=True)
    old = {
        "version": 1,
        "consent": None,
        "notice_shown_at": "2024-05-01T10:00:00+00:00",
        "install_id": str(uuid.uuid4()),
        "hash_key": "ab" * 32,
    }
    store.path.write_text(json.dumps(old), encoding="utf-8")
    before = store.path.read_bytes()
    state = store.read()
    assert (state.notice_version, state.shown_notice_version) == (1, 1)
    assert state.install_id == old["install_id"]
    store.mark_notice_shown(1)
    assert store.path.read_bytes() == before


def test_no_notice_is_version_0(store: StateStore) -> None:
    """A state with no notice shown has shown version 0 (and records no version)."""
    store.set_consent("enabled", by="cli")
    state = store.read()
    assert state.notice_version is None
    assert state.shown_notice_version == 0


def test_a_higher_notice_version_is_recorded_with_a_new_date(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Showing a higher version records it and its date; the id and key are kept."""
    monkeypatch.setattr(state_module, "_now", lambda: "2024-01-01T00:00:00+00:00")
    store.mark_notice_shown(1)
    install_id, _ = store.ensure_identity()
    monkeypatch.setattr(state_module, "_now", lambda: "2025-01-01T00:00:00+00:00")
    state = store.mark_notice_shown(3)
    assert (state.notice_version, state.notice_shown_at) == (3, "2025-01-01T00:00:00+00:00")
    assert state.install_id == install_id


def test_the_notice_version_never_goes_down(store: StateStore) -> None:
    """Marking a version at or below the recorded one changes nothing (an older app sharing
    the state directory does not undo a newer app's notice)."""
    shown = store.mark_notice_shown(2)
    assert store.mark_notice_shown(1) == shown
    assert store.mark_notice_shown(2) == shown
    assert store.read().notice_version == 2


@pytest.mark.parametrize("version", [0, -1, True, 1.5, "2"])
def test_marking_a_bad_notice_version_raises(store: StateStore, version: Any) -> None:
    """A notice version is a whole number from 1; anything else is refused before writing."""
    with pytest.raises(ValueError, match="notice version"):
        store.mark_notice_shown(version)
    assert not store.path.exists()


@pytest.mark.parametrize("value", [0, -2, True, 1.0, "1", [1]])
def test_a_bad_notice_version_is_a_corrupt_state_file(store: StateStore, value: Any) -> None:
    """A stored notice version that is not a whole number from 1 makes the file unusable."""
    store.directory.mkdir(parents=True)
    data = {"version": 1, "notice_shown_at": "2024-05-01T10:00:00+00:00", "notice_version": value}
    store.path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(StateError, match="notice_version"):
        store.read()
