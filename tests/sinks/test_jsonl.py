"""LocalJSONLSink and read_log: whole lines or none, never through a link, never blocking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from codeweaver_telemetry._logchain import HEAD_FILE, OLD_LOG_FILE, LogCheck, verify_log
from codeweaver_telemetry._types import Event, ExportResult
from codeweaver_telemetry.sinks.jsonl import LOG_FILE, LocalJSONLSink, read_log
from tests.helpers import within

ROOT = Path(__file__).resolve().parents[2]
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file system features")


def ev(i: int, pad: int = 0) -> Event:
    return Event(
        name="e",
        properties={"i": i, "pad": "x" * pad},
        timestamp=time.time(),
        uuid=str(uuid.uuid4()),
        distinct_id="d",
    )


@posix_only
def test_a_symlinked_log_is_never_appended_through(tmp_path: Path) -> None:
    """events.jsonl planted as a link to another file: the batch is refused (RETRY) and the
    file it names is untouched."""
    target = tmp_path / "victim.txt"
    target.write_text("precious\n", encoding="utf-8")
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(target, state / LOG_FILE)
    assert LocalJSONLSink(state).export([ev(1)]) == ExportResult.RETRY
    assert target.read_text(encoding="utf-8") == "precious\n"


@posix_only
def test_a_fifo_at_the_log_never_blocks_a_writer_or_a_reader(tmp_path: Path) -> None:
    """A FIFO at events.jsonl: export answers RETRY and read_log reads nothing, at once."""
    os.mkfifo(tmp_path / LOG_FILE)
    assert within(lambda: LocalJSONLSink(tmp_path).export([ev(1)])) == ExportResult.RETRY
    assert within(lambda: list(read_log(tmp_path))) == []


def test_read_log_survives_a_partial_last_line(tmp_path: Path) -> None:
    """A log cut in the middle of its last line (an older version on a full disk) still
    reads: every whole line, and the partial one is skipped."""
    sink = LocalJSONLSink(tmp_path)
    assert sink.export([ev(1), ev(2)]) == ExportResult.SUCCESS
    with (tmp_path / LOG_FILE).open("a", encoding="utf-8") as fh:
        fh.write('{"event":"cut","properties":{"i":')
    assert [e["properties"]["i"] for e in read_log(tmp_path)] == [1, 2]


FULL_DISK_CHILD = textwrap.dedent(
    """
    import logging, resource, signal, sys, time, uuid
    from pathlib import Path
    from codeweaver_telemetry._types import Event
    from codeweaver_telemetry.sinks.jsonl import LocalJSONLSink

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    state = Path(sys.argv[1])
    sink = LocalJSONLSink(state)
    small = [Event("e", {"i": i}, time.time(), str(uuid.uuid4()), "d") for i in range(3)]
    print("first", sink.export(small).name, flush=True)
    size = (state / "events.jsonl").stat().st_size
    # The file may grow by 100 more bytes only: the next batch is cut by the kernel.
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, size + 100))
    big = [Event("e", {"pad": "x" * 80, "i": i}, time.time(), str(uuid.uuid4()), "d")
           for i in range(5)]
    print("second", sink.export(big).name, flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_leaves_no_partial_line_and_says_why(tmp_path: Path) -> None:
    """When the file system refuses part of a batch, the log is cut back to whole lines, the
    batch is kept for retry, and the one warning says why."""
    state = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(state)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "first SUCCESS" in result.stdout
    assert "second RETRY" in result.stdout
    assert "file size limit" in result.stdout, result.stdout
    text = (state / LOG_FILE).read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert [json.loads(line)["properties"]["i"] for line in text.splitlines()] == [0, 1, 2]
    assert verify_log(state) == LogCheck(True, 3)  # the head never moved past the cut


def _append_many(directory: str, tag: int) -> None:
    sink = LocalJSONLSink(directory, max_bytes=20_000)
    for i in range(40):
        sink.export([ev(tag * 1000 + i, pad=300)])


@posix_only
def test_processes_sharing_the_log_write_whole_lines(tmp_path: Path) -> None:
    """Four processes appending (and rotating) at once: every line read back is whole."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), n)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    for name in (LOG_FILE, LOG_FILE + ".1"):
        path = tmp_path / name
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                json.loads(line)  # raises on a torn line
    assert verify_log(tmp_path).intact


def test_lines_are_taken_back_when_the_head_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lines and the head go together: if the head update fails, the batch is cut
    back out of the log and kept for a later try, and the chain stays intact."""
    from codeweaver_telemetry.sinks import jsonl

    sink = LocalJSONLSink(tmp_path)
    assert sink.export([ev(1)]) == ExportResult.SUCCESS
    before = (tmp_path / LOG_FILE).read_bytes()

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonl, "write_head", fail)
    assert sink.export([ev(2), ev(3)]) == ExportResult.RETRY
    assert (tmp_path / LOG_FILE).read_bytes() == before
    monkeypatch.undo()
    assert sink.export([ev(2), ev(3)]) == ExportResult.SUCCESS
    assert verify_log(tmp_path) == LogCheck(True, 3)
    assert [e["properties"]["i"] for e in read_log(tmp_path)] == [1, 2, 3]


@posix_only
def test_a_symlinked_head_is_never_written_through(tmp_path: Path) -> None:
    """events.head planted as a link: the batch is refused and the file it names is kept."""
    target = tmp_path / "victim.txt"
    target.write_text("precious\n", encoding="utf-8")
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(target, state / HEAD_FILE)
    assert LocalJSONLSink(state).export([ev(1)]) == ExportResult.RETRY
    assert target.read_text(encoding="utf-8") == "precious\n"


def test_rotation_continues_the_chain_into_the_new_file(tmp_path: Path) -> None:
    """The new file's first line carries the next seq and the hash of the old file's last."""
    from codeweaver_telemetry._logchain import line_hash

    sink = LocalJSONLSink(tmp_path, max_bytes=500)
    while not (tmp_path / OLD_LOG_FILE).exists():
        assert sink.export([ev(1, pad=50)]) == ExportResult.SUCCESS
    assert sink.export([ev(2)]) == ExportResult.SUCCESS
    last_old = (tmp_path / OLD_LOG_FILE).read_bytes().split(b"\n")[-2]
    first_new = json.loads((tmp_path / LOG_FILE).read_bytes().split(b"\n")[0])
    assert first_new["prev"] == line_hash(last_old)
    assert first_new["seq"] == json.loads(last_old)["seq"] + 1
    assert verify_log(tmp_path).intact
