"""The local log's hash chain: every kind of tampering is found at its line, and crashes,
rotations, concurrent writers and old unchained logs never raise a false alarm."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeweaver_telemetry._logchain import (
    GENESIS,
    HEAD_FILE,
    LOG_FILE,
    OLD_LOG_FILE,
    REASONS,
    Head,
    LogCheck,
    line_hash,
    verify_log,
    write_head,
)
from codeweaver_telemetry._types import Event, ExportResult
from codeweaver_telemetry.sinks.jsonl import LocalJSONLSink, read_log

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file system features")


def ev(i: int, pad: int = 0) -> Event:
    return Event(
        name="e",
        properties={"i": i, "pad": "x" * pad},
        timestamp=time.time(),
        uuid=str(uuid.uuid4()),
        distinct_id="d",
    )


def fill(directory: Path, batches: int, size: int = 3, *, max_bytes: int = 1 << 30) -> None:
    sink = LocalJSONLSink(directory, max_bytes=max_bytes)
    for b in range(batches):
        assert sink.export([ev(b * size + i) for i in range(size)]) == ExportResult.SUCCESS


def raw_lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def put_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(x + b"\n" for x in lines))


def broken(check: LogCheck, reason: str, line: int, file: str = LOG_FILE) -> bool:
    assert check.reason in REASONS
    assert (check.intact, check.reason, check.first_break, check.file) == (
        False,
        reason,
        line,
        file,
    ), check
    return True


# -- the format ----------------------------------------------------------------------------


def test_each_line_carries_seq_and_the_hash_of_the_line_before(tmp_path: Path) -> None:
    """seq counts from 1; prev is SHA-256 over the previous line's bytes (64 zeros first);
    the head holds the last seq and hash."""
    fill(tmp_path, 2)
    lines = raw_lines(tmp_path / LOG_FILE)
    objs = [json.loads(x) for x in lines]
    assert [o["seq"] for o in objs] == [1, 2, 3, 4, 5, 6]
    assert objs[0]["prev"] == GENESIS
    for before, obj in zip(lines[:-1], objs[1:], strict=True):
        assert obj["prev"] == line_hash(before)
    assert list(objs[0])[-2:] == ["seq", "prev"]
    head = json.loads((tmp_path / HEAD_FILE).read_bytes())
    assert (head["seq"], head["hash"]) == (6, line_hash(lines[-1]))
    assert len((tmp_path / HEAD_FILE).read_bytes()) == 512


def test_read_log_returns_the_payloads_without_the_chain_fields(tmp_path: Path) -> None:
    """read_log yields exactly the payload dicts it always did."""
    fill(tmp_path, 1, 2)
    payloads = list(read_log(tmp_path))
    assert [sorted(p) for p in payloads] == [
        ["distinct_id", "event", "properties", "timestamp", "uuid"]
    ] * 2
    assert [p["properties"]["i"] for p in payloads] == [0, 1]


def test_an_intact_log_verifies_across_rotations(tmp_path: Path) -> None:
    """Two files, several rotations (the oldest lines dropped): intact, every kept line
    checked."""
    fill(tmp_path, 40, 3, max_bytes=2000)
    assert (tmp_path / OLD_LOG_FILE).exists()
    check = verify_log(tmp_path)
    kept = len(raw_lines(tmp_path / OLD_LOG_FILE)) + len(raw_lines(tmp_path / LOG_FILE))
    assert check == LogCheck(intact=True, lines=kept)
    first = json.loads(raw_lines(tmp_path / OLD_LOG_FILE)[0])
    assert first["seq"] > 1  # the chain's start moved forward


def test_an_empty_state_directory_is_intact(tmp_path: Path) -> None:
    assert verify_log(tmp_path / "none") == LogCheck(True, 0)
    assert verify_log(tmp_path) == LogCheck(True, 0)


# -- tampering ----------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 4, 8])
def test_an_edited_byte_is_found_at_its_line(tmp_path: Path, index: int) -> None:
    """One byte changed in the payload of a line (first, middle, last): `edited` there."""
    fill(tmp_path, 3)
    path = tmp_path / LOG_FILE
    lines = raw_lines(path)
    lines[index] = lines[index].replace(b'"i":', b'"j":')
    put_lines(path, lines)
    assert broken(verify_log(tmp_path), "edited", index + 1)


def test_an_edited_line_in_the_rotated_file_is_found(tmp_path: Path) -> None:
    """Line numbers count the rotated file first, then the current one."""
    fill(tmp_path, 12, 3, max_bytes=2000)
    old = tmp_path / OLD_LOG_FILE
    lines = raw_lines(old)
    lines[2] = lines[2].replace(b'"e"', b'"f"', 1)
    put_lines(old, lines)
    assert broken(verify_log(tmp_path), "edited", 3, OLD_LOG_FILE)


def test_a_removed_line_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    path = tmp_path / LOG_FILE
    lines = raw_lines(path)
    del lines[4]
    put_lines(path, lines)
    assert broken(verify_log(tmp_path), "removed", 5)


def test_two_swapped_lines_are_found_as_reordered(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    path = tmp_path / LOG_FILE
    lines = raw_lines(path)
    lines[3], lines[4] = lines[4], lines[3]
    put_lines(path, lines)
    assert broken(verify_log(tmp_path), "reordered", 4)


@pytest.mark.parametrize("kind", ["foreign", "duplicate", "forged"])
def test_an_inserted_line_is_found(tmp_path: Path, kind: str) -> None:
    """A line without chain fields, a copy of a line, or a line with a made-up seq/prev."""
    fill(tmp_path, 3)
    path = tmp_path / LOG_FILE
    lines = raw_lines(path)
    if kind == "foreign":
        extra = b'{"event":"x","distinct_id":"d","properties":{}}'
    elif kind == "duplicate":
        extra = lines[2]
    else:
        obj = json.loads(lines[3])
        obj["properties"]["i"] = 99
        extra = json.dumps(obj, separators=(",", ":")).encode()
    lines.insert(3, extra)
    put_lines(path, lines)
    assert broken(verify_log(tmp_path), "inserted", 4)


def test_a_log_cut_at_the_end_is_found_as_truncated(tmp_path: Path) -> None:
    """The last lines cut: the chain is whole, but it ends before the head's line."""
    fill(tmp_path, 3)
    path = tmp_path / LOG_FILE
    put_lines(path, raw_lines(path)[:7])
    assert broken(verify_log(tmp_path), "truncated", 8)


def test_a_log_cut_mid_line_is_found_as_truncated(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    path = tmp_path / LOG_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    assert broken(verify_log(tmp_path), "truncated", 9)


def test_a_cut_stays_visible_after_the_next_write(tmp_path: Path) -> None:
    """The writer chains from the head, not from the cut file: the gap stays in the log."""
    fill(tmp_path, 3)
    path = tmp_path / LOG_FILE
    put_lines(path, raw_lines(path)[:5])
    fill(tmp_path, 1)
    assert broken(verify_log(tmp_path), "removed", 6)


def test_a_mid_line_cut_stays_visible_after_the_next_write(tmp_path: Path) -> None:
    """The fragment stays a line of its own; the next batch starts on a new line."""
    fill(tmp_path, 3)
    path = tmp_path / LOG_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    fill(tmp_path, 1)
    check = verify_log(tmp_path)
    assert not check.intact
    assert check.first_break == 9
    assert all(isinstance(p, dict) for p in read_log(tmp_path))
    assert len(list(read_log(tmp_path))) == 8 + 3


def test_a_deleted_rotated_file_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 12, 3, max_bytes=2000)
    (tmp_path / OLD_LOG_FILE).unlink()
    assert broken(verify_log(tmp_path), "rotated_file_missing", 1, OLD_LOG_FILE)


def test_lines_cut_from_the_start_are_found(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    path = tmp_path / LOG_FILE
    put_lines(path, raw_lines(path)[2:])
    assert broken(verify_log(tmp_path), "removed", 1)


def test_a_deleted_log_is_found_as_truncated(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    (tmp_path / LOG_FILE).unlink()
    assert broken(verify_log(tmp_path), "truncated", 1)


def test_a_deleted_log_is_written_again_and_the_gap_stays_visible(tmp_path: Path) -> None:
    """Removing events.jsonl by hand (the head stays) does not stop the log: the next batch
    starts a new file, chained from the head, so the removed lines show as a break."""
    fill(tmp_path, 2)
    (tmp_path / LOG_FILE).unlink()
    fill(tmp_path, 1)
    assert [p["properties"]["i"] for p in read_log(tmp_path)] == [0, 1, 2]
    assert broken(verify_log(tmp_path), "removed", 1)


def test_a_missing_head_is_reported_then_rebuilt_by_the_writer(tmp_path: Path) -> None:
    """Without events.head nothing bounds the end: `head_missing`. The next append rebuilds
    it from the log (with a warning) and the chain goes on."""
    fill(tmp_path, 2)
    (tmp_path / HEAD_FILE).unlink()
    check = verify_log(tmp_path)
    assert (check.intact, check.reason, check.file) == (False, "head_missing", HEAD_FILE)
    fill(tmp_path, 1)
    assert verify_log(tmp_path) == LogCheck(True, 9)


def test_an_unreadable_head_is_reported(tmp_path: Path) -> None:
    fill(tmp_path, 1)
    (tmp_path / HEAD_FILE).write_text("{not json", encoding="utf-8")
    check = verify_log(tmp_path)
    assert (check.intact, check.reason, check.file) == (False, "unreadable", HEAD_FILE)


# -- crashes, upgrades, concurrency ----------------------------------------------------------


def test_a_crash_before_the_head_update_is_no_false_alarm(tmp_path: Path) -> None:
    """Lines written, head left behind (a crash between the two): verify accepts the lag,
    and the next append adopts the lines and goes on from them."""
    fill(tmp_path, 2)
    head = (tmp_path / HEAD_FILE).read_bytes()
    fill(tmp_path, 1)
    (tmp_path / HEAD_FILE).write_bytes(head)  # the update that never happened
    assert verify_log(tmp_path) == LogCheck(True, 9)
    fill(tmp_path, 1)
    assert verify_log(tmp_path) == LogCheck(True, 12)
    seqs = [json.loads(x)["seq"] for x in raw_lines(tmp_path / LOG_FILE)]
    assert seqs == list(range(1, 13))
    assert json.loads((tmp_path / HEAD_FILE).read_bytes())["seq"] == 12


def test_a_crash_before_the_head_update_across_a_rotation_is_no_false_alarm(
    tmp_path: Path,
) -> None:
    """The lost head update was the first batch of a new file after a rotation (the head
    that rotation wrote before renaming the file is left)."""
    sink = LocalJSONLSink(tmp_path, max_bytes=1500)
    i = 0
    while not (tmp_path / OLD_LOG_FILE).exists():
        head = (tmp_path / HEAD_FILE).read_bytes() if (tmp_path / HEAD_FILE).exists() else None
        sink.export([ev(i), ev(i + 1)])
        i += 2
    assert head is not None
    write_head(tmp_path, Head.from_json(json.loads(head)).rotated())
    assert verify_log(tmp_path).intact
    sink.export([ev(i)])
    check = verify_log(tmp_path)
    assert check.intact, check
    assert len(list(read_log(tmp_path))) == i + 1


def test_a_crash_in_the_very_first_batch_is_no_false_alarm(tmp_path: Path) -> None:
    """The head is written before the first line, so a crash after the first append leaves
    a lagging head, not a missing one."""
    fill(tmp_path, 1)
    (tmp_path / HEAD_FILE).unlink()
    (tmp_path / "fresh").mkdir()
    sink = LocalJSONLSink(tmp_path / "fresh")
    sink._head(tmp_path / "fresh")  # what the first export writes before any line
    (tmp_path / "fresh" / LOG_FILE).write_bytes((tmp_path / LOG_FILE).read_bytes())
    assert verify_log(tmp_path / "fresh") == LogCheck(True, 3)


def test_an_old_unchained_log_reads_and_verifies_as_unchained(tmp_path: Path) -> None:
    """A log from before the chain: read_log reads it, verify says `unchained` (intact).
    The next append starts the chain after the old lines (an upgrade)."""
    old = {"event": "e", "distinct_id": "d", "timestamp": "t", "properties": {}}
    lines = [json.dumps(dict(old, uuid=str(n)), separators=(",", ":")) for n in range(4)]
    (tmp_path / LOG_FILE).write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    assert [p["uuid"] for p in read_log(tmp_path)] == ["0", "1", "2", "3"]
    assert verify_log(tmp_path) == LogCheck(True, 0, reason="unchained", unchained=4)
    fill(tmp_path, 2)
    assert verify_log(tmp_path) == LogCheck(True, 6, unchained=4)
    assert len(list(read_log(tmp_path))) == 10


def _append_many(directory: str, tag: int) -> None:
    sink = LocalJSONLSink(directory, max_bytes=30_000)
    for i in range(60):
        assert sink.export([ev(tag * 1000 + i * 2, pad=100), ev(tag * 1000 + i * 2 + 1)]) == (
            ExportResult.SUCCESS
        )


@posix_only
def test_four_processes_appending_leave_one_valid_chain(tmp_path: Path) -> None:
    """Four processes appending batches and rotating at once: one intact chain, each event
    of the kept lines exactly once, seq without a gap."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), n)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    check = verify_log(tmp_path)
    assert check.intact, check
    lines = raw_lines(tmp_path / OLD_LOG_FILE) + raw_lines(tmp_path / LOG_FILE)
    objs = [json.loads(x) for x in lines]
    seqs = [o["seq"] for o in objs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert seqs[-1] == 4 * 60 * 2  # every event got its seq once
    ids = [o["properties"]["i"] for o in objs]
    assert len(set(ids)) == len(ids)


@posix_only
def test_four_processes_without_rotation_keep_every_event(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_fill_big, args=(str(tmp_path), n)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    assert verify_log(tmp_path) == LogCheck(True, 4 * 50 * 2)
    ids = sorted(p["properties"]["i"] for p in read_log(tmp_path))
    assert ids == sorted(n * 1000 + i for n in range(4) for i in range(100))


def _fill_big(directory: str, tag: int) -> None:
    sink = LocalJSONLSink(directory)
    for i in range(50):
        sink.export([ev(tag * 1000 + i * 2), ev(tag * 1000 + i * 2 + 1)])


# -- properties ---------------------------------------------------------------------------

batches = st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=8)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=batches, max_bytes=st.sampled_from([600, 2000, 1 << 20]))
def test_any_sequence_of_batches_verifies(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], max_bytes: int
) -> None:
    directory = tmp_path_factory.mktemp("log")
    sink = LocalJSONLSink(directory, max_bytes=max_bytes)
    for n, size in enumerate(sizes):
        assert sink.export([ev(n * 10 + i, pad=n) for i in range(size)]) == ExportResult.SUCCESS
    check = verify_log(directory)
    assert check.intact, check
    assert check.reason is None


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=batches,
    where=st.floats(min_value=0, max_value=1, exclude_max=True),
    byte=st.integers(min_value=0, max_value=255),
    data=st.data(),
)
def test_any_single_byte_change_is_found(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    where: float,
    byte: int,
    data: st.DataObject,
) -> None:
    """Any one byte of any line (not its newline) changed to any other value: not intact,
    and the break is named at that line (or, for a change to a `prev` field, the line
    before it)."""
    directory = tmp_path_factory.mktemp("log")
    sink = LocalJSONLSink(directory, max_bytes=1500)
    for n, size in enumerate(sizes):
        sink.export([ev(n * 10 + i) for i in range(size)])
    files = [f for f in (OLD_LOG_FILE, LOG_FILE) if (directory / f).exists()]
    name = data.draw(st.sampled_from(files))
    path = directory / name
    lines = raw_lines(path)
    index = int(where * len(lines))
    line = bytearray(lines[index])
    offset = data.draw(st.integers(min_value=0, max_value=len(line) - 1))
    if byte == line[offset]:
        byte ^= 0x01
    line[offset] = byte
    lines[index] = bytes(line)
    put_lines(path, lines)
    check = verify_log(directory)
    assert not check.intact, check
    assert check.reason in REASONS
    number = index + 1
    if name == LOG_FILE and (directory / OLD_LOG_FILE).exists():
        number += len(raw_lines(directory / OLD_LOG_FILE))
    if byte == ord("\n"):  # the line became two: the break is at the first half or after
        assert check.first_break in (number, number + 1), check
    else:
        assert check.first_break in (number, number - 1), check
