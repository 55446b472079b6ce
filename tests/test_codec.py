"""The payload codec: one encoding of a finished event for the wire, the local log, previews
and the spool, pinned byte for byte, and a strict decoding of what the spool reads back."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry._codec import (
    from_payload,
    from_spool_line,
    payload_line,
    spool_line,
    to_message,
    to_payload,
)
from codeweaver_telemetry._spool import Spool
from codeweaver_telemetry._types import Event, ExportResult
from codeweaver_telemetry.sinks import memory
from codeweaver_telemetry.sinks.jsonl import LOG_FILE, LocalJSONLSink
from codeweaver_telemetry.sinks.memory import InMemorySink
from codeweaver_telemetry.sinks.posthog import PostHogSink
from tests.receiver import CAPTURE, PostHogReceiver

UUID = "0190a5e2-7c3b-7d4e-8f00-000000000001"


def events() -> list[Event]:
    """Unicode, escapes, nesting, every JSON scalar, library ``$`` keys and a flag exposure."""
    return [
        Event(
            "codeweaver_search",
            {
                "query_len": 12,
                "ratio": 0.25,
                "ok": True,
                "none": None,
                "text": 'héllo ✓ "q" \\ \n',
                "nested": {"a": [1, 2.5, "x"]},
                "$lib": "codeweaver-telemetry",
                "$feature/new-ui": "test",
            },
            1700000000.123456,
            UUID,
            "install-1",
        ),
        Event("e", {}, 0.0, "u2", "d"),
        Event(
            "$feature_flag_called",
            {"$feature_flag": "f", "$feature_flag_response": True},
            1.5,
            "u3",
            "d",
        ),
    ]


PROPS_LOCAL = (
    '{"query_len":12,"ratio":0.25,"ok":true,"none":null,"text":"héllo ✓ \\"q\\" \\\\ \\n",'
    '"nested":{"a":[1,2.5,"x"]},"$lib":"codeweaver-telemetry","$feature/new-ui":"test"}'
)

LOG_LINES = (
    '{"event":"codeweaver_search","distinct_id":"install-1",'
    f'"timestamp":"2023-11-14T22:13:20.123456+00:00","uuid":"{UUID}","properties":{PROPS_LOCAL}}}\n'
    '{"event":"e","distinct_id":"d","timestamp":"1970-01-01T00:00:00+00:00","uuid":"u2",'
    '"properties":{}}\n'
    '{"event":"$feature_flag_called","distinct_id":"d",'
    '"timestamp":"1970-01-01T00:00:01.500000+00:00","uuid":"u3",'
    '"properties":{"$feature_flag":"f","$feature_flag_response":true}}\n'
)

SPOOL_LINES = (
    '{"event":"codeweaver_search","distinct_id":"install-1","timestamp":1700000000.123456,'
    f'"uuid":"{UUID}","properties":{PROPS_LOCAL}}}\n'
    '{"event":"e","distinct_id":"d","timestamp":0.0,"uuid":"u2","properties":{}}\n'
    '{"event":"$feature_flag_called","distinct_id":"d","timestamp":1.5,"uuid":"u3",'
    '"properties":{"$feature_flag":"f","$feature_flag_response":true}}\n'
)

WIRE_BODY = (
    '{"batch":[{"type":"capture","event":"codeweaver_search","distinct_id":"install-1",'
    '"properties":{"query_len":12,"ratio":0.25,"ok":true,"none":null,'
    '"text":"h\u00e9llo \u2713 \\"q\\" \\\\ \\n","nested":{"a":[1,2.5,"x"]},'
    '"$lib":"codeweaver-telemetry","$feature/new-ui":"test"},'
    f'"timestamp":"2023-11-14T22:13:20.123456+00:00","uuid":"{UUID}"}},'
    '{"type":"capture","event":"e","distinct_id":"d","properties":{},'
    '"timestamp":"1970-01-01T00:00:00+00:00","uuid":"u2"},'
    '{"type":"capture","event":"$feature_flag_called","distinct_id":"d",'
    '"properties":{"$feature_flag":"f","$feature_flag_response":true},'
    '"timestamp":"1970-01-01T00:00:01.500000+00:00","uuid":"u3"}],'
    '"sent_at":"<sent_at>","api_key":"phc_pin"}'
)


# -- pinned encodings: these must never change ------------------------------------------------


def test_the_local_log_lines_are_pinned(tmp_path: Path) -> None:
    """Each line is the payload, byte for byte, with the chain's ``seq`` and ``prev`` (the
    SHA-256 of the line before; 64 zeros first) spliced in at its end."""
    assert LocalJSONLSink(tmp_path).export(events()) == ExportResult.SUCCESS
    prev = "0" * 64
    expected = []
    for seq, line in enumerate(LOG_LINES.splitlines(), start=1):
        chained = f'{line[:-1]},"seq":{seq},"prev":"{prev}"}}'
        expected.append(chained)
        prev = hashlib.sha256(chained.encode("utf-8")).hexdigest()
    assert (tmp_path / LOG_FILE).read_bytes() == "".join(f"{x}\n" for x in expected).encode()


def test_the_preview_payloads_are_pinned() -> None:
    sink = InMemorySink()
    sink.export(events())
    lines = [json.dumps(p, ensure_ascii=False, separators=(",", ":")) for p in sink.events()]
    assert lines == LOG_LINES.splitlines()


def test_the_spool_files_are_pinned(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert spool.save(events()) == 3
    [path] = (tmp_path / "spool").iterdir()
    assert path.name.endswith("-3.jsonl.gz")  # the segment's event count, gzip framing
    # A segment holds its events oldest first (the spool drops by age).
    lines = SPOOL_LINES.splitlines(keepends=True)
    by_age = "".join([lines[1], lines[2], lines[0]])
    assert gzip.decompress(path.read_bytes()) == by_age.encode("utf-8")
    loaded = spool.load()
    assert [(e.name, e.timestamp, e.uuid, e.distinct_id) for e in loaded] == [
        (e.name, e.timestamp, e.uuid, e.distinct_id)
        for e in sorted(events(), key=lambda e: e.timestamp)
    ]


def test_the_wire_body_is_pinned(receiver: PostHogReceiver) -> None:
    sink = PostHogSink(api_key="phc_pin", host=receiver.url, timeout_s=2.0)
    assert sink.export(events()) == ExportResult.SUCCESS
    [request] = receiver.requests(route=CAPTURE)
    assert request.gzipped
    body = request.decoded_body.decode("utf-8")
    body = re.sub(r'"sent_at":"[^"]*"', '"sent_at":"<sent_at>"', body)
    assert body == WIRE_BODY


def test_spooled_lines_are_held_to_what_the_pipeline_makes(tmp_path: Path) -> None:
    """Lines edited by hand: ``$`` events but the flag exposure and unknown ``$`` keys are
    dropped, the privacy flags forced, broken lines skipped."""
    directory = tmp_path / "spool"
    directory.mkdir()
    lines = [
        {"event": "$identify", "distinct_id": "d", "timestamp": 1, "uuid": "a", "properties": {}},
        {
            "event": "ok",
            "distinct_id": "d",
            "timestamp": 2,
            "uuid": "b",
            "properties": {
                "$set": {"email": "x"},
                "$ip": "1.2.3.4",
                "$lib": "l",
                "$feature/f": True,
                "$geoip_disable": False,
                "plain": 1,
            },
        },
        {"event": "no_props", "distinct_id": "d", "timestamp": 3, "uuid": "c"},
        {"event": "bad_props", "distinct_id": "d", "timestamp": 3, "uuid": "c", "properties": []},
        {"event": "bad_ts", "distinct_id": "d", "timestamp": "x", "uuid": "c", "properties": {}},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + "not json\n[1]\n"
    (directory / "spool-local-1-aa.jsonl").write_text(text, encoding="utf-8")
    [event] = Spool(directory).load()
    assert event.name == "ok"
    assert event.timestamp == 2.0
    assert event.properties == {
        "$lib": "l",
        "$feature/f": True,
        "$geoip_disable": True,
        "plain": 1,
        "$process_person_profile": False,
    }


# -- the codec itself -------------------------------------------------------------------------


def test_every_encoder_shares_one_shape() -> None:
    """The log line is the payload; the message is the payload with ``type``; the spool
    line is the payload with the epoch timestamp."""
    event = events()[0]
    payload = to_payload(event)
    assert payload_line(event) == LOG_LINES.splitlines()[0]
    assert spool_line(event) == SPOOL_LINES.splitlines()[0]
    assert to_message(event) == {"type": "capture", **payload}
    assert memory.to_payload is to_payload


def test_a_payload_reads_back_as_the_event() -> None:
    for event in events():
        for encoded in (to_payload(event), json.loads(spool_line(event))):
            back = from_payload(encoded)
            assert back is not None
            assert (back.name, back.timestamp, back.uuid, back.distinct_id) == (
                event.name,
                event.timestamp,
                event.uuid,
                event.distinct_id,
            )
            assert back.properties == {
                **event.properties,
                "$process_person_profile": False,
                "$geoip_disable": True,
            }
            assert payload_line(back) == payload_line(
                Event(event.name, back.properties, event.timestamp, event.uuid, event.distinct_id)
            )


def good() -> dict[str, Any]:
    return {"event": "e", "distinct_id": "d", "timestamp": 1.5, "uuid": "u", "properties": {}}


@pytest.mark.parametrize(
    "change",
    [
        {"event": "$identify"},
        {"event": "$set"},
        {"event": 7},
        {"event": None},
        {"distinct_id": 1},
        {"uuid": None},
        {"properties": []},
        {"properties": None},
        {"properties": {1: "non-string key"}},
        {"timestamp": True},
        {"timestamp": "x"},
        {"timestamp": "2023-11-14T22:13:20"},  # no offset: ambiguous
        {"timestamp": float("nan")},
        {"timestamp": float("inf")},
        {"timestamp": 1e300},
        {"timestamp": 10**400},
        {"timestamp": None},
        {"timestamp": [1]},
    ],
    ids=repr,
)
def test_anything_malformed_is_none(change: dict[str, Any]) -> None:
    assert from_payload(good()) is not None
    assert from_payload({**good(), **change}) is None


@pytest.mark.parametrize("missing", ["event", "distinct_id", "timestamp", "uuid", "properties"])
def test_a_missing_field_is_none(missing: str) -> None:
    data = good()
    del data[missing]
    assert from_payload(data) is None


@pytest.mark.parametrize("data", [None, [], "{}", 1, b"{}"], ids=repr)
def test_a_payload_that_is_not_a_dict_is_none(data: object) -> None:
    assert from_payload(data) is None


@pytest.mark.parametrize("line", [b"", b"not json", b"[1]", b"\xff\xfe", "null", b'{"a":1}'])
def test_a_broken_spool_line_is_none(line: bytes | str) -> None:
    assert from_spool_line(line) is None


def test_decoding_holds_properties_to_what_the_pipeline_makes() -> None:
    data = {
        **good(),
        "event": "$feature_flag_called",
        "properties": {
            "$feature_flag": "f",
            "$feature/f": "v",
            "$lib": "l",
            "$set": {"email": "x"},
            "$ip": "1.2.3.4",
            "$process_person_profile": True,
            "plain": 1,
        },
    }
    event = from_payload(data)
    assert event is not None
    assert event.properties == {
        "$feature_flag": "f",
        "$feature/f": "v",
        "$lib": "l",
        "$process_person_profile": False,
        "plain": 1,
        "$geoip_disable": True,
    }
    assert data["properties"]["$process_person_profile"] is True, "the input is not changed"


def test_an_iso_timestamp_with_an_offset_reads_as_epoch_seconds() -> None:
    event = from_payload({**good(), "timestamp": "2023-11-14T23:13:20.123456+01:00"})
    assert event is not None
    assert event.timestamp == 1700000000.123456


# -- ExportResult -----------------------------------------------------------------------------


def test_export_results_compare_by_kind() -> None:
    waited = ExportResult.retry(5.0)
    assert waited == ExportResult.RETRY
    assert hash(waited) == hash(ExportResult.RETRY)
    assert waited.retry_after == 5.0
    assert waited.value == "retry"
    assert waited.name == "RETRY"
    assert waited != ExportResult.SUCCESS
    assert len({ExportResult.SUCCESS, ExportResult.RETRY, waited, ExportResult.DROP}) == 3
    assert ExportResult.retry() is ExportResult.RETRY
    assert ExportResult("split") is ExportResult.SPLIT
    for kind in (ExportResult.SUCCESS, ExportResult.RETRY, ExportResult.DROP, ExportResult.SPLIT):
        assert kind.retry_after is None
        assert kind  # truthy: ``handler(batch) or ExportResult.SUCCESS`` keeps a result
    assert [r.value for r in (ExportResult.SUCCESS, ExportResult.DROP, ExportResult.SPLIT)] == [
        "success",
        "drop",
        "split",
    ]
    assert ExportResult.SUCCESS != "success"


@pytest.mark.parametrize("after", [None, 0, 0.0, -1.0, float("nan"), float("inf")])
def test_a_retry_without_a_usable_wait_is_plain_retry(after: float | None) -> None:
    assert ExportResult.retry(after) is ExportResult.RETRY


def test_export_results_are_immutable_and_readable() -> None:
    waited = ExportResult.retry(2)
    with pytest.raises(AttributeError):
        waited._retry_after = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ExportResult.SUCCESS._value = "drop"  # type: ignore[misc]
    assert repr(ExportResult.SUCCESS) == "ExportResult.SUCCESS"
    assert repr(waited) == "ExportResult.retry(after=2.0)"
    assert pickle.loads(pickle.dumps(waited)).retry_after == 2.0  # noqa: S301 - our own bytes
    assert pickle.loads(pickle.dumps(ExportResult.DROP)) is ExportResult.DROP  # noqa: S301
    assert copy.deepcopy(ExportResult.SPLIT) is ExportResult.SPLIT
    with pytest.raises(ValueError, match="not a valid"):
        ExportResult("maybe")
    with pytest.raises(ValueError, match="only a RETRY"):
        ExportResult("drop", 3.0)
