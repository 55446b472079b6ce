"""TelemetryClient: what a captured event looks like, sessions, snapshots, never raising."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from codeweaver_telemetry import (
    AnonymityConversion,
    BasedModel,
    ExportResult,
    FilteredKey,
    FunctionSink,
    InMemorySink,
    TelemetryClient,
    TelemetrySettings,
    get_telemetry_client,
    testing,
)
from codeweaver_telemetry import client as client_module
from codeweaver_telemetry.client import ClientState
from codeweaver_telemetry.pipeline import MAX_STRING_CHARS, TRUNCATION_MARK
from tests.helpers import SLACK_S, wait_until
from tests.receiver import PostHogReceiver

C = AnonymityConversion
K = FilteredKey
MakeClient = Callable[..., TelemetryClient]
THREAD_NAME = "codeweaver-telemetry"
HEX = set("0123456789abcdef")


# -- models and helpers ---------------------------------------------------------------------
class Repo(BasedModel):
    name: str
    path: str
    files: list[str]
    owner_email: str = "alice@example.com"

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("path"): C.HASH, K("files"): C.COUNT, K("owner_email"): C.FORBIDDEN}


class StrictSearch(BasedModel):
    _telemetry_strict: ClassVar[bool] = True
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset({"mode"})
    mode: str
    results: list[str]
    query: str

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("results"): C.COUNT}


class BadRules(BasedModel):
    name: str

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("no_such_field"): C.HASH}


class SearchDone:
    """Not a model: anything with to_posthog_event()."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    def to_posthog_event(self) -> tuple[str, dict[str, Any]]:
        return "search_done", {"hits": 3, "repo": self.repo}


@dataclasses.dataclass
class Stubborn:
    """A dataclass that refuses to be deep-copied."""

    x: int = 1

    def __deepcopy__(self, memo: dict[int, Any]) -> Stubborn:
        raise RuntimeError("no copies")


class Opaque:
    """An object with no JSON-safe form."""


def sent(sink: InMemorySink, name: str | None = None) -> list[dict[str, Any]]:
    return [e for e in sink.events() if name is None or e["event"] == name]


def only(sink: InMemorySink, name: str) -> dict[str, Any]:
    events = sent(sink, name)
    assert len(events) == 1, [e["event"] for e in sink.events()]
    return events[0]["properties"]


def telemetry_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == THREAD_NAME}


@pytest.fixture
def sink() -> InMemorySink:
    return InMemorySink()


@pytest.fixture
def client(make_client: MakeClient, sink: InMemorySink) -> TelemetryClient:
    c = make_client(sink=sink)
    assert c.enabled
    return c


# -- what one event looks like --------------------------------------------------------------
def test_capture_arrives_with_the_library_properties(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """A captured event arrives after flush with the install id and no person profile or IP."""
    client.capture("indexed", {"files": 12, "mode": "fast"})
    assert client.flush(5)
    (event,) = sent(sink)
    assert event["event"] == "indexed"
    assert event["distinct_id"] == client.distinct_id
    assert event["distinct_id"]
    props = event["properties"]
    assert props["files"] == 12
    assert props["mode"] == "fast"
    assert props["$process_person_profile"] is False
    assert props["$lib"] == "codeweaver-telemetry"
    assert "$ip" not in props
    assert "$session_id" not in props


def test_callers_dollar_keys_are_not_sent(client: TelemetryClient, sink: InMemorySink) -> None:
    """$set, $set_once, $ip and a forged $session_id from the caller never leave the machine."""
    client.capture(
        "spoof",
        {
            "$set": {"email": "a@example.com"},
            "$set_once": {"name": "Alice"},
            "$ip": "203.0.113.9",
            "$session_id": "forged",
            "$process_person_profile": True,
            "ok": 1,
        },
    )
    assert client.flush(5)
    props = only(sink, "spoof")
    assert "$set" not in props
    assert "$set_once" not in props
    assert "$ip" not in props
    assert "$session_id" not in props
    assert props["$process_person_profile"] is False
    assert props["ok"] == 1


def test_session_id_is_attached_inside_a_session_only(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """Events inside a session carry its $session_id; events before and after do not."""
    client.capture("before")
    session_id = client.start_session()
    assert session_id is not None
    assert client.session_id == session_id
    client.capture("during")
    client.end_session()
    client.capture("after")
    assert client.flush(5)
    assert "$session_id" not in only(sink, "before")
    assert only(sink, "during")["$session_id"] == session_id
    assert only(sink, "after").get("$session_id") is None
    assert client.session_id is None


# -- snapshots ------------------------------------------------------------------------------
def test_the_callers_dict_is_never_mutated(client: TelemetryClient, sink: InMemorySink) -> None:
    """capture() and the pipeline leave the caller's dict, and everything in it, unchanged."""
    props: dict[str, Any] = {
        "path": "/home/alice/project",
        "$set": {"plan": "pro"},
        "nested": {"items": [1, {"email": "bob@example.com"}], "nan": math.nan},
        "blob": b"raw",
        "long": "x" * (MAX_STRING_CHARS * 2),
    }
    before = copy.deepcopy(props)
    client.capture("e", props)
    assert client.flush(5)
    assert sent(sink, "e")
    assert props.keys() == before.keys()
    assert props["path"] == before["path"]
    assert props["$set"] == before["$set"]
    assert props["nested"]["items"] == before["nested"]["items"]
    assert math.isnan(props["nested"]["nan"])
    assert props["blob"] == b"raw"
    assert props["long"] == before["long"]


def test_mutating_the_callers_data_after_capture_changes_nothing_sent(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """What is sent is what the data held at capture time, nested lists and dicts included."""
    props: dict[str, Any] = {"tags": ["a", "b"], "cfg": {"depth": 1, "langs": ["py"]}}
    client.capture("e", props)
    props["tags"].append("c")
    props["cfg"]["depth"] = 99
    props["cfg"]["langs"].clear()
    props["extra"] = True
    assert client.flush(5)
    got = only(sink, "e")
    assert got["tags"] == ["a", "b"]
    assert got["cfg"] == {"depth": 1, "langs": ["py"]}
    assert "extra" not in got


def test_mutating_a_model_after_capture_changes_nothing_sent(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """A model captured with capture_with_serialization is sent as it was at capture time."""
    repo = Repo(name="demo", path="/src/demo", files=["a.py"])
    client.capture_with_serialization("repo", repo)
    repo.files.extend(["b.py", "c.py"])
    repo.name = "changed"
    assert client.flush(5)
    got = only(sink, "repo")
    assert got["files"] == 1
    assert got["name"] == "demo"


# -- models and rules -----------------------------------------------------------------------
def test_capture_from_event_applies_nested_model_rules(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """capture_from_event sends the object's event; models among its properties keep their rules."""
    repo = Repo(name="demo", path="/home/alice/demo", files=["a.py", "b.py"])
    client.capture_from_event(SearchDone(repo))
    assert client.flush(5)
    props = only(sink, "search_done")
    assert props["hits"] == 3
    sent_repo = props["repo"]
    assert sent_repo["name"] == "demo"
    assert sent_repo["files"] == 2
    assert "owner_email" not in sent_repo
    assert len(sent_repo["path"]) == 16
    assert set(sent_repo["path"]) <= HEX


def test_capture_with_serialization_applies_the_models_rules(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """HASH gives a stable keyed hash, COUNT a number, FORBIDDEN removes the field."""
    client.capture_with_serialization(
        "repo", Repo(name="demo", path="/home/alice/demo", files=["a", "b", "c"])
    )
    client.capture_with_serialization("repo", Repo(name="other", path="/home/alice/demo", files=[]))
    assert client.flush(5)
    first, second = (e["properties"] for e in sent(sink, "repo"))
    assert first["files"] == 3
    assert "owner_email" not in first
    assert "alice" not in str(first)
    assert len(first["path"]) == 16
    assert set(first["path"]) <= HEX
    assert first["path"] == second["path"]


def test_capture_with_serialization_of_a_strict_model_sends_only_listed_fields(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """A strict model sends only fields with a rule or in its allowlist."""
    model = StrictSearch(mode="hybrid", results=["x", "y"], query="where is my password")
    client.capture_with_serialization("search", model)
    assert client.flush(5)
    props = only(sink, "search")
    assert props["mode"] == "hybrid"
    assert props["results"] == 2
    assert "query" not in props


def test_a_model_whose_rules_name_a_missing_field_is_dropped_and_counted(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """A rule naming no field drops the event (counted stage_error) without raising."""
    client.capture_with_serialization("bad_direct", BadRules(name="x"))
    client.capture("bad_nested", {"model": BadRules(name="x")})
    client.capture("fine")
    assert client.flush(5)
    assert [e["event"] for e in sent(sink)] == ["fine"]
    assert client.stats()["dropped"]["stage_error"] == 2


# -- sessions -------------------------------------------------------------------------------
def test_start_session_is_idempotent(client: TelemetryClient) -> None:
    """A second start_session returns the running session's id."""
    first = client.start_session({"a": 1})
    assert first is not None
    assert client.start_session({"b": 2}) == first
    assert client.session_id == first


def test_session_metadata_is_scrubbed_and_attached_to_every_event(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """Session metadata is scrubbed once and attached to every event of the session."""
    client.start_session(
        {"cwd": "/home/alice/secret-project", "contact": "alice@example.com", "mode": "fast"}
    )
    client.capture("one")
    client.capture("two", {"mode": "slow"})
    client.end_session()
    client.capture("outside")
    assert client.flush(5)
    for name in ("one", "two", "codeweaver_session"):
        props = only(sink, name)
        assert props["cwd"] == "<path>", name
        assert props["contact"] == "<email>", name
        assert "alice" not in str(props)
    assert only(sink, "one")["mode"] == "fast"
    assert "cwd" not in only(sink, "outside")


def test_end_session_sends_one_session_event_at_once(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """end_session sends exactly one codeweaver_session event with its duration, right away
    (not at the next batch interval), without waiting for it."""
    session_id = client.start_session()
    client.capture("work")
    time.sleep(0.02)
    client.end_session()
    assert wait_until(lambda: bool(sent(sink, "codeweaver_session")), timeout=2)
    props = only(sink, "codeweaver_session")
    assert props["duration_seconds"] > 0
    assert props["$session_id"] == session_id
    assert sent(sink, "work")
    client.end_session()
    assert client.flush(5)
    assert len(sent(sink, "codeweaver_session")) == 1


def test_with_block_ends_the_session_and_flushes(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """Leaving `with client:` sends the session event and flushes."""
    with client as c:
        assert c is client
        c.start_session()
        c.capture("inside")
    assert len(sent(sink, "codeweaver_session")) == 1
    assert sent(sink, "inside")
    assert client.session_id is None


def test_with_block_lets_the_exception_through_and_still_sends_the_session(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """An exception in `with client:` propagates unchanged, and the session event is still sent."""
    error = KeyError("the host's own error")

    def host_code() -> None:
        with client:
            client.start_session()
            raise error

    with pytest.raises(KeyError) as info:
        host_code()
    assert info.value is error
    assert len(sent(sink, "codeweaver_session")) == 1


def test_async_with_ends_the_session_and_flushes(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """`async with client:` ends the session and flushes, and lets exceptions through."""
    error = ValueError("async host error")

    async def main() -> None:
        async with client:
            client.start_session()
            client.capture("inside")
        async with client:
            client.start_session()
            raise error

    with pytest.raises(ValueError, match="async host error") as info:
        asyncio.run(main())
    assert info.value is error
    assert len(sent(sink, "codeweaver_session")) == 2
    assert sent(sink, "inside")


def test_unserializable_metadata_still_gives_a_coherent_session(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """Metadata that cannot be serialized never leaves a session without its $session_id."""
    session_id = client.start_session({"model": BadRules(name="x")})
    running = client.session_id
    client.capture("during")
    assert client.flush(5)
    assert session_id == running or session_id is None
    if running is not None:
        assert only(sink, "during").get("$session_id") == running


def test_session_metadata_obeys_the_size_limits(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """A long string in session metadata is cut to MAX_STRING_CHARS like any other property."""
    client.start_session({"note": "word " * 1000})
    client.capture("e")
    assert client.flush(5)
    assert len(only(sink, "e")["note"]) <= MAX_STRING_CHARS


# -- never raises ---------------------------------------------------------------------------
def _cyclic() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    items: list[Any] = [1]
    items.append(items)
    d["items"] = items
    return d


@pytest.mark.parametrize(
    ("value", "check"),
    [
        pytest.param(Opaque(), lambda p: "v" not in p, id="unserializable"),
        pytest.param(_cyclic(), lambda p: p["v"]["a"] == 1, id="cyclic"),
        pytest.param(math.nan, lambda p: p["v"] is None, id="nan"),
        pytest.param(float("inf"), lambda p: p["v"] is None, id="inf"),
        pytest.param(b"\x00bytes", lambda p: "v" not in p, id="bytes"),
        pytest.param(Stubborn(), lambda p: p["v"] == {"x": 1}, id="deepcopy-raises"),
        pytest.param({Opaque(): 1, (1, 2): 2, "k": 3}, lambda p: p["v"] == {"k": 3}, id="keys"),
        pytest.param(10**40, lambda p: p["v"] == pytest.approx(1e40), id="huge-int"),
    ],
)
def test_capture_never_raises_on_bad_input(
    client: TelemetryClient,
    sink: InMemorySink,
    value: object,
    check: Callable[[dict[str, Any]], bool],
) -> None:
    """Bad input never raises into the caller: it arrives as a JSON-safe value or is left out."""
    client.capture("bad", {"v": value, "ok": True})
    client.capture_from_event(_Wrap({"v": value, "ok": True}))
    assert client.flush(5)
    events = sent(sink, "bad")
    assert len(events) == 2
    for event in events:
        props = event["properties"]
        assert props["ok"] is True
        assert check(props)


class _Wrap:
    def __init__(self, props: dict[str, Any]) -> None:
        self.props = props

    def to_posthog_event(self) -> tuple[str, dict[str, Any]]:
        return "bad", self.props


def test_broken_callers_objects_never_raise(client: TelemetryClient, sink: InMemorySink) -> None:
    """Objects that raise on every touch, and wrong argument types, never raise into the caller."""

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("str")

        def __bool__(self) -> bool:
            raise RuntimeError("bool")

        def to_posthog_event(self) -> tuple[str, dict[str, Any]]:
            raise RuntimeError("event")

    hostile: Any = Hostile()
    client.capture(hostile)
    client.capture("e", hostile)
    client.capture("e", ["not", "a", "dict"])  # type: ignore[arg-type]
    client.capture_from_event(hostile)
    client.capture_with_serialization("m", hostile)
    client.start_session(hostile)
    client.capture("fine")
    assert client.flush(5)
    assert sent(sink, "fine")


def test_a_huge_string_arrives_cut(client: TelemetryClient, sink: InMemorySink) -> None:
    """A 1 MB text arrives cut to MAX_STRING_CHARS, ending with the truncation mark; one
    1 MB word (nothing to cut it at safely) arrives as the mark alone."""
    client.capture("big", {"blob": "a " * 500_000, "word": "a" * 1_000_000})
    assert client.flush(20)
    props = only(sink, "big")
    assert len(props["blob"]) == MAX_STRING_CHARS
    assert props["blob"].endswith(TRUNCATION_MARK)
    assert props["word"] == TRUNCATION_MARK


def test_a_huge_string_does_not_stall_delivery(client: TelemetryClient, sink: InMemorySink) -> None:
    """An event with a 1 MB string, and the one after it, are delivered within the exit bound."""
    client.capture("big", {"blob": "a" * 1_000_000})
    client.capture("next")
    assert client.flush(client.settings.exit_timeout_seconds)
    assert sent(sink, "next")


def test_a_sink_that_raises_never_reaches_the_caller(make_client: MakeClient) -> None:
    """A sink that raises is the client's problem, not the caller's: flush just says False."""

    def broken(batch: object) -> ExportResult:
        raise OSError("disk on fire")

    client = make_client(sink=FunctionSink(broken))
    client.start_session()
    client.capture("e")
    assert client.flush(1) is False
    client.end_session()
    client.shutdown(timeout=0.2)


def test_after_shutdown_every_method_is_a_quiet_no_op(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """After shutdown() every public method returns quietly and nothing more is sent."""
    client.start_session()
    client.capture("before")
    client.shutdown()
    delivered = [e["event"] for e in sent(sink)]
    assert delivered == ["before", "codeweaver_session"]
    assert not client.enabled
    client.capture("after")
    client.capture_from_event(SearchDone(Repo(name="n", path="/p", files=[])))
    client.capture_with_serialization("after", Repo(name="n", path="/p", files=[]))
    assert client.start_session() is None
    client.end_session()
    assert client.get_feature_flag("beta", default="dflt") == "dflt"
    assert client.get_all_feature_flags() == {}
    assert client.flush(0.5) is True
    client.shutdown()
    with client:
        client.capture("after")

    async def main() -> None:
        async with client:
            client.capture("after")

    asyncio.run(main())
    assert [e["event"] for e in sent(sink)] == delivered
    assert client.stats()["pending"] == 0


# -- the process-wide client ----------------------------------------------------------------
def test_get_telemetry_client_is_one_object_across_threads() -> None:
    """Eight threads asking at once get the same client; _reset_for_tests gives a fresh one."""
    barrier = threading.Barrier(8)
    got: list[TelemetryClient] = []
    lock = threading.Lock()

    def ask() -> None:
        barrier.wait()
        c = get_telemetry_client()
        with lock:
            got.append(c)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 8
    assert all(c is got[0] for c in got)
    assert get_telemetry_client() is got[0]
    client_module._reset_for_tests()
    fresh = get_telemetry_client()
    assert fresh is not got[0]
    assert get_telemetry_client() is fresh


# -- telemetry off --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "settings"),
    [
        pytest.param({}, {}, id="opt-in-default"),
        pytest.param({"DO_NOT_TRACK": "1"}, {"enabled": True}, id="do-not-track"),
        pytest.param({"CI": "true"}, {"enabled": True}, id="ci"),
        pytest.param({}, {"enabled": True, "disable_telemetry": True}, id="disabled"),
    ],
)
def test_telemetry_off_is_a_no_op_everywhere(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    sink: InMemorySink,
    env: dict[str, str],
    settings: dict[str, Any],
) -> None:
    """With telemetry off, every method is a no-op: no events, no threads, no files."""
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    before = telemetry_threads()
    client = TelemetryClient(TelemetrySettings(**settings), sink=sink)
    assert not client.enabled
    assert client.distinct_id is None
    client.capture("e", {"a": 1})
    client.capture_from_event(SearchDone(Repo(name="n", path="/p", files=[])))
    client.capture_with_serialization("m", Repo(name="n", path="/p", files=[]))
    assert client.start_session({"cwd": "/home/alice"}) is None
    assert client.session_id is None
    assert client.get_feature_flag("beta", default=True) is True
    assert client.get_feature_flag("beta") is None
    assert client.get_all_feature_flags() == {}
    client.end_session()
    assert client.flush() is True
    with client:
        client.capture("e")
    client.shutdown()
    assert client.stats() == {"sent": 0, "dropped": {}, "pending": 0, "spooled": 0}
    assert sink.events() == []
    assert telemetry_threads() - before == set()
    assert not clean_env.exists() or list(clean_env.rglob("*")) == []


def test_the_default_process_client_is_off_and_writes_nothing(clean_env: Path) -> None:
    """Out of the box (opt-in, nothing enabled) the process-wide client is off, writing nothing."""
    client = get_telemetry_client()
    assert not client.enabled
    assert client.decision.source == "policy"
    client.start_session()
    client.capture("e")
    assert client.flush() is True
    assert client.stats() == {"sent": 0, "dropped": {}, "pending": 0, "spooled": 0}
    assert not clean_env.exists() or list(clean_env.rglob("*")) == []


# -- threads --------------------------------------------------------------------------------
def test_captures_from_many_threads_all_arrive_exactly_once(
    make_client: MakeClient, sink: InMemorySink
) -> None:
    """8 threads x 200 captures: all 1,600 events arrive, each exactly once."""
    client = make_client(sink=sink, max_queue_size=5000, batch_size=100)
    client.start_session()
    barrier = threading.Barrier(8)

    def work(thread: int) -> None:
        barrier.wait()
        for i in range(200):
            client.capture("tick", {"thread": thread, "i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert client.flush(10)
    ticks = sent(sink, "tick")
    assert len(ticks) == 1600
    assert len({e["uuid"] for e in ticks}) == 1600
    pairs = {(e["properties"]["thread"], e["properties"]["i"]) for e in ticks}
    assert pairs == {(t, i) for t in range(8) for i in range(200)}
    assert client.stats()["dropped"] == {}


# -- testing.capture_events -----------------------------------------------------------------
def test_capture_events_records_even_in_ci_and_restores_the_previous_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """capture_events() records into its sink even with CI=true, then restores the old client."""
    monkeypatch.setenv("CI", "true")
    previous = get_telemetry_client()
    assert not previous.enabled
    with testing.capture_events() as captured:
        inside = get_telemetry_client()
        assert inside is not previous
        assert inside.enabled
        inside.capture("recorded", {"where": "/home/alice/x"})
        assert inside.flush(5)
        assert [e["event"] for e in captured.events()] == ["recorded"]
        assert captured.events()[0]["properties"]["where"] == "<path>"
        # Consent is forced for this in-memory client only.
        assert not TelemetryClient(TelemetrySettings(enabled=True)).enabled
    assert get_telemetry_client() is previous
    assert not previous.enabled
    assert not inside.enabled


def test_capture_events_flushes_on_leaving_the_block() -> None:
    """Events captured in the block are in the sink once the block is left, without a flush."""
    with testing.capture_events() as captured:
        get_telemetry_client().capture("late")
    assert [e["event"] for e in captured.events()] == ["late"]


def test_non_string_event_names_are_dropped(make_client: Callable[..., TelemetryClient]) -> None:
    """An event name that is not a str is dropped (never sent as "None"), without raising."""
    sink = InMemorySink()
    client = make_client(sink=sink)
    client.capture(None, {"a": 1})  # type: ignore[arg-type]
    client.capture(42, {"a": 1})  # type: ignore[arg-type]
    client.capture("ok", {})
    assert client.flush(5)
    assert [e["event"] for e in sink.events()] == ["ok"]


def test_strict_mode_raises_config_errors_through_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With STRICT=1 a bad setting raises TelemetryConfigError from TelemetryClient()."""
    from codeweaver_telemetry import TelemetryConfigError

    monkeypatch.setenv("CODEWEAVER__TELEMETRY__STRICT", "1")
    monkeypatch.setenv("CODEWEAVER__TELEMETRY__BATCH_SIZE", "abc")
    with pytest.raises(TelemetryConfigError, match="batch_size"):
        TelemetryClient()


class _NoCopyNoJson:
    def __deepcopy__(self, memo: object) -> object:
        raise TypeError("no copies")


def test_uncopyable_unknown_objects_are_not_sent(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """An object that can be neither copied nor serialized is left out, not sent as null."""
    sink = InMemorySink()
    client = make_client(sink=sink)
    client.capture("e", {"o": _NoCopyNoJson(), "k": 1})
    assert client.flush(5)
    props = sink.events()[0]["properties"]
    assert "o" not in props
    assert props["k"] == 1


def test_leaving_with_waits_one_bound_and_exit_waits_no_more(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """With a hanging sink, leaving the with block waits one exit bound, not two, and a
    shutdown after it waits only what is left of the bound."""
    release = threading.Event()

    def hang(batch: object) -> ExportResult:
        release.wait(10)
        return ExportResult.SUCCESS

    client = make_client(sink=FunctionSink(hang), exit_timeout_seconds=0.5)
    try:
        start = time.monotonic()
        with client:
            client.start_session({"v": 1})
            client.capture("e", {})
        took_with = time.monotonic() - start
        start = time.monotonic()
        client.shutdown()
        took_shutdown = time.monotonic() - start
    finally:
        release.set()
    assert took_with < 0.5 + SLACK_S, took_with
    assert took_shutdown < 0.2, took_shutdown


def test_from_options_never_raises_on_bad_values() -> None:
    """from_options with a bad value logs and stays off instead of raising into the host."""
    client = TelemetryClient.from_options(enabled=True, batch_size="lots")
    assert not client.enabled
    assert client.decision.source == "config_error"
    assert "batch_size" in client.decision.reason


def test_from_options_builds_an_enabled_client(tmp_path: Path) -> None:
    """from_options passes code values over the environment, like TelemetrySettings."""
    sink = InMemorySink()
    client = TelemetryClient.from_options(sink=sink, enabled=True, state_dir=tmp_path / "s")
    try:
        assert client.enabled
        client.capture("opt", {})
        assert client.flush(5)
        assert [e["event"] for e in sink.events()] == ["opt"]
    finally:
        client.shutdown(timeout=1)


def test_reserved_event_names_are_dropped(make_client: Callable[..., TelemetryClient]) -> None:
    """Names PostHog reserves ($identify, $create_alias...) never go out."""
    sink = InMemorySink()
    client = make_client(sink=sink)
    for name in ("$identify", "$create_alias", "$groupidentify", "ok"):
        client.capture(name, {"$set": {"email": "x"}})
    assert client.flush(5)
    assert [e["event"] for e in sink.events()] == ["ok"]


def test_each_client_hashes_with_its_own_install_key(
    make_client: Callable[..., TelemetryClient], tmp_path: Path
) -> None:
    """Starting a second client (another install) does not change the first one's hashes."""

    class Repo(BasedModel):
        path: str

        def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
            return {FilteredKey("path"): AnonymityConversion.HASH}

    sink = InMemorySink()
    first = make_client(sink=sink)
    first.capture_with_serialization("r", Repo(path="/srv/x"))
    assert first.flush(5)
    other_sink = InMemorySink()
    second = make_client(sink=other_sink, state_dir=tmp_path / "other-install")
    first.capture_with_serialization("r", Repo(path="/srv/x"))
    second.capture_with_serialization("r", Repo(path="/srv/x"))
    assert first.flush(5)
    assert second.flush(5)
    a, b = (e["properties"]["path"] for e in sink.events())
    assert a == b, "the first client's hash is stable"
    assert other_sink.events()[0]["properties"]["path"] != a, "another install hashes apart"


def test_a_forked_child_does_not_end_the_parents_session(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A multiprocessing child that never uses telemetry sends nothing at its exit: the
    session event is sent once, by the parent."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    client = make_client(posthog_api_key="phc_fork", posthog_host=receiver.url)
    client.start_session({"v": 1})
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=int)  # does nothing with telemetry
    child.start()
    child.join(30)
    assert child.exitcode == 0
    client.end_session()
    receiver.wait_for_events(1)
    time.sleep(0.3)  # a child's late event would have arrived by now
    assert [e["event"] for e in receiver.events()] == ["codeweaver_session"]


def test_a_recovered_host_gives_exit_its_whole_bound_back(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """A flush that timed out during a slow spell does not cost exit its bound once the
    host answers again: everything queued later is still delivered at shutdown."""
    gate = threading.Event()
    delivered: list[str] = []

    def slow_then_fine(batch: Any) -> ExportResult:
        gate.wait(5)
        delivered.extend(e.name for e in batch)
        return ExportResult.SUCCESS

    client = make_client(sink=FunctionSink(slow_then_fine), exit_timeout_seconds=1.0)
    client.capture("during_slow_spell", {})
    assert client.flush(0.2) is False
    gate.set()
    assert wait_until(lambda: delivered == ["during_slow_spell"])
    for i in range(20):
        client.capture(f"later{i}", {})
    client.shutdown()
    assert len(delivered) == 21


def test_on_notice_may_call_get_telemetry_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """A notice callback that asks for the client does not deadlock."""
    monkeypatch.setenv("CODEWEAVER__TELEMETRY__CONSENT_POLICY", "opt-out")
    seen: list[object] = []

    def notice(text: str) -> None:
        seen.append(get_telemetry_client())

    done = threading.Event()

    def build() -> None:
        get_telemetry_client(on_notice=notice)
        done.set()

    threading.Thread(target=build, daemon=True).start()
    assert done.wait(10), "get_telemetry_client deadlocked"
    assert len(seen) == 1


# -- hardening: metadata that cannot be used ---------------------------------------------------
class _RaisingMapping(dict):  # type: ignore[type-arg]
    def items(self):  # type: ignore[no-untyped-def,override]
        raise RuntimeError("cannot iterate")


@pytest.mark.parametrize(
    "metadata",
    [["a", "b"], 42, "version 1", b"raw", _RaisingMapping(x=1)],
    ids=["list", "int", "str", "bytes", "raising-mapping"],
)
def test_start_session_with_unusable_metadata_still_starts_the_session(
    client: TelemetryClient,
    sink: InMemorySink,
    telemetry_logs: pytest.LogCaptureFixture,
    metadata: object,
) -> None:
    """Metadata that is no mapping (or fails while read) is ignored with one warning; the
    session, its events and its session event all go out."""
    session_id = client.start_session(metadata)  # type: ignore[arg-type]
    assert session_id is not None
    client.capture("inside", {"n": 1})
    client.end_session()
    assert client.flush(5)
    assert only(sink, "inside")["$session_id"] == session_id
    assert only(sink, "codeweaver_session")["$session_id"] == session_id
    warnings = [r.getMessage() for r in telemetry_logs.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "metadata" in warnings[0]


def test_one_bad_metadata_value_costs_only_that_value(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """A value that cannot be read is left out; the rest of the metadata is kept."""
    client.start_session({"version": "1.2", "bad": _RaisingMapping(x=1), "n": 3})
    client.capture("inside", {})
    assert client.flush(5)
    props = only(sink, "inside")
    assert props["version"] == "1.2"
    assert props["n"] == 3
    assert "bad" not in props


def test_event_uuids_do_not_follow_the_apps_random_seed(
    client: TelemetryClient, sink: InMemorySink
) -> None:
    """An app that seeds `random` (for reproducible runs) still gets fresh event uuids: two
    runs never send the same ones (PostHog would drop the second as duplicates)."""
    import random
    import uuid as uuid_module

    random.seed(42)
    first = [client.capture("e") for _ in range(3)]
    random.seed(42)
    second = [client.capture("e") for _ in range(3)]
    assert len(set(first) | set(second)) == 6
    for value in first:
        assert value is not None
        parsed = uuid_module.UUID(value)
        assert parsed.version == 4
        assert str(parsed) == value


def test_capture_returns_no_uuid_for_an_event_the_full_queue_refused(
    make_client: MakeClient, sink: InMemorySink
) -> None:
    """The uuid comes back only for an event that was queued (without a spool, a full
    queue refuses)."""
    client = make_client(
        sink=sink, max_queue_size=1, batch_interval_seconds=60.0, spool_max_bytes=0
    )
    assert client.capture("first") is not None
    assert client.capture("refused") is None


def test_a_timeout_that_is_no_number_never_raises(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """flush("5") and shutdown("5") answer quietly; shutdown still closes the client."""
    client = make_client()
    assert client.flush("5") is False  # type: ignore[arg-type]
    client.shutdown("5")  # type: ignore[arg-type]
    assert client.state is ClientState.CLOSED
    assert not client.enabled


def test_session_id_is_a_canonical_uuid7(make_client: MakeClient) -> None:
    """$session_id is a UUID version 7 (RFC 4122 variant) in its canonical form."""
    import uuid

    client = make_client(sink=InMemorySink())
    first = client.start_session()
    assert first is not None
    client.end_session()
    second = client.start_session()
    assert second is not None
    for session_id in (first, second):
        parsed = uuid.UUID(session_id)
        assert str(parsed) == session_id
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    assert first != second


def test_snapshot_keeps_uuids_and_decimals_as_they_are() -> None:
    """UUID and Decimal values are immutable: the snapshot keeps the very object (the
    snapshot module checks for them without importing uuid or decimal itself)."""
    import decimal
    import uuid

    from codeweaver_telemetry._snapshot import snapshot

    value = uuid.uuid4()
    amount = decimal.Decimal("1.25")
    copied = snapshot({"id": value, "amounts": [amount]})
    assert copied["id"] is value
    assert copied["amounts"][0] is amount


def test_end_session_builds_the_session_event_on_the_worker(
    make_client: Callable[..., TelemetryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """end_session() only reads the session's facts: the event model (whose first build
    imports the models and compiles the scrubber) is built on the worker thread."""
    from codeweaver_telemetry._session import PendingSession

    built_on: list[threading.Thread] = []
    original = PendingSession.model

    def model(self: PendingSession) -> Any:
        built_on.append(threading.current_thread())
        return original(self)

    monkeypatch.setattr(PendingSession, "model", model)
    sink = InMemorySink()
    client = make_client(sink=sink)
    client.start_session({"v": 1})
    client.end_session()
    assert client.flush(5)
    assert [e["event"] for e in sent(sink)] == ["codeweaver_session"]
    assert built_on
    assert threading.current_thread() not in built_on


def test_a_session_event_that_cannot_be_built_still_sends_its_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from codeweaver_telemetry._session import PendingSession

    with caplog.at_level("WARNING", logger="codeweaver_telemetry"):
        built = PendingSession({}, 1.25, {"no_such_fact": 1}).build()
    assert built == {"duration_seconds": 1.25}
    assert "session statistics could not be read" in caplog.text
