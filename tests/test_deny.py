"""The user's deny lists: denied events and property paths never reach the wire, the local
log or the spool; a repository file may add entries but never remove one; ``deny`` and
``allow`` edit the deny file and ``status`` shows the lists."""

from __future__ import annotations

import copy
import fnmatch
import io
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from codeweaver_telemetry import TelemetryClient, _config, pipeline
from codeweaver_telemetry._types import Event
from codeweaver_telemetry.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from codeweaver_telemetry.pipeline import PROTECTED_PROPERTIES, DenyStage
from codeweaver_telemetry.settings import TelemetrySettings, load_settings
from codeweaver_telemetry.sinks.jsonl import read_log
from tests.helpers import wait_until
from tests.receiver import PostHogReceiver
from tests.test_cli import check_shape
from tests.test_spool import spool_text

PREFIX = "CODEWEAVER__TELEMETRY__"

SEARCH = {
    "query": {"text": "needle", "lang": "python"},
    "languages": ["python", "rust"],
    "results": {"token_count": 812, "returned": 10},
    "intent": "UNDERSTAND",
}


def deny_file_path() -> Path:
    return _config.deny_file()


def write_deny_file(text: str) -> Path:
    path = deny_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[telemetry]\n" + text, encoding="utf-8")
    return path


def finished(name: str, props: dict[str, Any], deny: DenyStage) -> Event | None:
    event = Event(name=name, properties=copy.deepcopy(props), timestamp=0.0, uuid="u")
    return pipeline.run(event, deny=deny)


# -- the stage ------------------------------------------------------------------------------------


def test_a_denied_event_is_dropped_and_counted_as_denied() -> None:
    """An event whose name matches a glob is dropped, and on_drop hears ``denied``."""
    reasons: list[str] = []
    deny = DenyStage(events=("debug_*", "ping"))
    for name in ("debug_cache", "ping"):
        event = Event(name=name, properties={"a": 1}, timestamp=0.0, uuid="u")
        assert pipeline.run(event, on_drop=reasons.append, deny=deny) is None
    kept = pipeline.run(Event("pings", {}, 0.0, "u"), on_drop=reasons.append, deny=deny)
    assert kept is not None, "a glob matches the whole name"
    assert reasons == ["denied", "denied"]


def test_property_globs_remove_nested_paths() -> None:
    """Dotted paths reach into maps; a match removes the whole value at that path."""
    done = finished("search", SEARCH, DenyStage(properties=("results.token_count", "languages")))
    assert done is not None
    props = done.properties
    assert props["results"] == {"returned": 10}
    assert "languages" not in props
    assert props["query"] == {"text": "needle", "lang": "python"}
    assert props["intent"] == "UNDERSTAND"


def test_a_map_emptied_by_the_deny_list_goes_and_one_left_nonempty_stays() -> None:
    """``query.*`` removes every key under ``query``, and ``query`` with them; a glob that
    leaves something keeps the map; a map that was empty before stays."""
    props = {**SEARCH, "empty": {}}
    done = finished("search", props, DenyStage(properties=("query.*", "empty.*")))
    assert done is not None
    assert "query" not in done.properties
    assert done.properties["empty"] == {}
    done = finished("search", SEARCH, DenyStage(properties=("query.t?xt",)))
    assert done is not None
    assert done.properties["query"] == {"lang": "python"}


def test_star_crosses_dots_and_brackets_are_literal() -> None:
    """``*`` matches any run of characters (dots too), ``?`` one; ``[`` is itself."""
    done = finished("search", SEARCH, DenyStage(properties=("*count",)))
    assert done is not None
    assert "token_count" not in done.properties["results"]
    assert finished("e[1]", {}, DenyStage(events=("e[1]",))) is None
    assert finished("e1", {}, DenyStage(events=("e[1]",))) is not None


def test_the_privacy_flags_can_never_be_denied() -> None:
    """``*`` removes every property but ``$process_person_profile`` and ``$geoip_disable``;
    other library properties can be denied."""
    done = finished("search", SEARCH, DenyStage(properties=("*",)))
    assert done is not None
    assert done.properties == {"$process_person_profile": False, "$geoip_disable": True}
    done = finished("search", SEARCH, DenyStage(properties=("$lib*", "$os_version")))
    assert done is not None
    assert not {"$lib", "$lib_version", "$os_version"} & set(done.properties)
    assert done.properties["$os"]


def test_no_deny_list_changes_nothing() -> None:
    """Without a deny stage, or with empty lists, the result is the plain pipeline's."""
    plain = finished("search", SEARCH, DenyStage())
    other = pipeline.run(Event("search", copy.deepcopy(SEARCH), 0.0, "u"))
    assert plain is not None
    assert other is not None
    assert plain.properties == other.properties
    assert not DenyStage()


# -- property test: no denied path survives, nothing else is removed -----------------------------

_keys = st.text(alphabet="abq_.$", min_size=1, max_size=3)
_leaves = st.one_of(st.integers(-5, 5), st.booleans(), st.text("xy", max_size=2), st.none())
_trees = st.recursive(
    st.dictionaries(_keys, _leaves, max_size=4),
    lambda children: st.dictionaries(_keys, st.one_of(_leaves, children), max_size=4),
    max_leaves=20,
)
_globs = st.lists(st.text(alphabet="abq_.$*?", min_size=1, max_size=4), max_size=4)


def _paths(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every path in ``tree`` with its value (maps included)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = prefix + key
        out[path] = value
        if isinstance(value, dict):
            out.update(_paths(value, path + "."))
    return out


def _chains(
    tree: dict[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    """Every node as (its keys from the top, its value)."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in tree.items():
        chain = (*prefix, key)
        out.append((chain, value))
        if isinstance(value, dict):
            out.extend(_chains(value, chain))
    return out


def _denied(chain: tuple[str, ...], globs: list[str]) -> bool:
    """Whether the node or one of its ancestors matches (fnmatch as the reference)."""
    if chain[0] in PROTECTED_PROPERTIES and len(chain) == 1:
        return False
    return any(
        fnmatch.fnmatchcase(".".join(chain[:i]), glob)
        for i in range(1, len(chain) + 1)
        for glob in globs
        if not (i == 1 and chain[0] in PROTECTED_PROPERTIES)
    )


@given(tree=_trees, globs=_globs)
@hypothesis_settings(max_examples=400, deadline=None)
def test_no_denied_path_survives_and_nothing_else_is_removed(
    tree: dict[str, Any], globs: list[str]
) -> None:
    """For random property trees and globs: every surviving node has no matching path (its
    own or an ancestor's), every leaf without one survives unchanged, and a map is empty
    afterwards only if it was empty before."""
    result = copy.deepcopy(tree)
    stage = DenyStage(properties=globs)
    out = stage(Event("e", result, 0.0, "u"))
    assert out is not None
    after = dict(_chains(out.properties))
    for chain, value in after.items():
        assert not _denied(chain, globs), chain
        if value == {}:
            assert dict(_chains(tree))[chain] == {}, "only maps empty before stay empty"
    for chain, value in _chains(tree):
        leaf = not isinstance(value, dict) or not value
        if leaf and not _denied(chain, globs):
            assert after.get(chain, "<missing>") == value, chain
    # Event globs on names: the same matching as fnmatch on the whole name.
    for name in _paths(tree):
        expected = any(fnmatch.fnmatchcase(name, glob) for glob in globs)
        assert DenyStage(events=globs).denies_event(name) is expected


# -- end to end: wire, local log, spool ----------------------------------------------------------


def _wire(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, **kw: Any
) -> TelemetryClient:
    return make_client(
        posthog_api_key="phc_denyTest0123456789",
        posthog_host=receiver.url,
        request_timeout_seconds=2.0,
        **kw,
    )


DENY = {"deny_events": "debug_*", "deny_properties": "query.*,results.token_count,languages"}


def _assert_clean(text: str) -> None:
    for word in ("debug_cache", "needle", "token_count", "languages", "rust"):
        assert word not in text, word


def test_denied_data_never_reaches_the_wire_or_the_audit_log(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """Through the real sink to the loopback receiver: the denied event is not sent, the
    denied paths are not in what is sent, and stats() counts ``denied``."""
    client = _wire(make_client, receiver, **DENY)
    client.capture("debug_cache", {"hits": 3})
    client.capture("search", copy.deepcopy(SEARCH))
    assert client.flush(5)
    (event,) = receiver.wait_for_events(1)
    assert event["event"] == "search"
    props = event["properties"]
    assert props["results"] == {"returned": 10}
    assert props["intent"] == "UNDERSTAND"
    assert "query" not in props
    assert "languages" not in props
    assert props["$process_person_profile"] is False
    assert props["$geoip_disable"] is True
    assert client.stats()["dropped"].get("denied") == 1
    for request in receiver.capture_requests():
        _assert_clean(request.text)
    assert wait_until(lambda: len(list(read_log(client.settings.resolved_state_dir))) == 1)
    _assert_clean(json.dumps(list(read_log(client.settings.resolved_state_dir))))


def test_denied_data_never_reaches_the_local_log(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """Without a PostHog key (the local log only), the same holds for the log."""
    client = make_client(**DENY)
    client.capture("debug_cache", {"hits": 3})
    client.capture("search", copy.deepcopy(SEARCH))
    assert client.flush(5)
    logged = list(read_log(client.settings.resolved_state_dir))
    assert [e["event"] for e in logged] == ["search"]
    _assert_clean(json.dumps(logged))
    assert client.stats()["dropped"].get("denied") == 1


def test_denied_data_never_reaches_the_spool(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """With the host down, what waits in the spool has been through the deny lists."""
    receiver.refuse()
    client = _wire(make_client, receiver, exit_timeout_seconds=0.5, max_retries=0, **DENY)
    client.capture("debug_cache", {"hits": 3})
    client.capture("search", copy.deepcopy(SEARCH))
    client.shutdown()
    assert client.stats()["spooled"] == 1
    text = spool_text(client.settings.resolved_state_dir)
    assert '"search"' in text
    assert "returned" in text
    _assert_clean(text)


def test_default_deny_lists_leave_the_plain_pipeline(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """No deny list: the worker runs the plain pipeline (no deny stage at all)."""
    from codeweaver_telemetry import _startup

    assert _startup._pipeline(TelemetrySettings()) is _startup._run_pipeline
    denying = _startup._pipeline(TelemetrySettings(deny_events="x"))  # type: ignore[arg-type]
    assert denying is not _startup._run_pipeline


# -- where the lists come from --------------------------------------------------------------------


def test_lists_join_code_environment_and_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every source adds to the lists (a comma string, or a TOML list); none replaces another."""
    monkeypatch.setenv(PREFIX + "DENY_EVENTS", "a, b*")
    write_deny_file('deny_events = ["c"]\ndeny_properties = "x.y, z"\n')
    user = _config.user_config_file()
    user.write_text('[telemetry]\ndeny_events = ["d", "a"]\n', encoding="utf-8")
    settings = TelemetrySettings(deny_events=["e"])  # type: ignore[arg-type]
    assert settings.deny_events == ("e", "a", "b*", "d", "c")
    assert settings.deny_properties == ("x.y", "z")


def test_a_repository_file_adds_entries_but_cannot_remove_the_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A codeweaver.toml in the working directory adds to the lists (without a warning), and
    the user's entries (deny file, user config file) still count while it is read."""
    write_deny_file('deny_events = ["from_cli"]\n')
    _config.user_config_file().write_text(
        '[telemetry]\ndeny_properties = ["user.*"]\n', encoding="utf-8"
    )
    Path("codeweaver.toml").write_text(
        '[telemetry]\ndeny_events = []\ndeny_properties = ["repo.secret"]\n', encoding="utf-8"
    )
    settings, error = load_settings()
    assert error is None
    assert settings.deny_events == ("from_cli",), "an empty list in the repository removes nothing"
    assert set(settings.deny_properties) == {"user.*", "repo.secret"}


def test_a_bad_deny_value_is_a_configuration_error() -> None:
    """``deny_events = 5`` names the setting and the file, and turns telemetry off."""
    write_deny_file("deny_events = 5\n")
    settings, error = load_settings()
    assert error is not None
    assert "deny_events" in error
    assert str(deny_file_path()) in error
    assert settings.disable_telemetry is True


def test_the_quick_resolver_steps_aside_for_deny_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve() answers as before without deny lists and returns None when any source may
    hold one (the model joins them)."""
    assert _config.resolve() is not None
    monkeypatch.setenv(PREFIX + "DENY_EVENTS", "a")
    assert _config.resolve() is None
    monkeypatch.delenv(PREFIX + "DENY_EVENTS")
    write_deny_file("")
    assert _config.resolve() is None
    deny_file_path().unlink()
    Path("codeweaver.toml").write_text("[telemetry]\nbatch_size = 5\n", encoding="utf-8")
    assert _config.resolve() is not None
    _config.user_config_file().write_text("[telemetry]\n", encoding="utf-8")
    assert _config.resolve() is None, "the user file behind a repository file may deny"


@given(
    env=st.none() | st.lists(st.sampled_from(["a", "b*", " c ", "", ","]), max_size=3),
    file=st.none() | st.lists(st.sampled_from(["a", "d?", "e.f"]), max_size=3),
    repo=st.none() | st.lists(st.sampled_from(["a", "g", "h.*"]), max_size=3),
)
@hypothesis_settings(max_examples=60, deadline=None)
def test_the_lists_are_the_union_of_their_sources(
    env: list[str] | None, file: list[str] | None, repo: list[str] | None
) -> None:
    """Whatever each source holds, the list is their union in source order, and resolve()
    either agrees (no deny list anywhere) or steps aside."""
    from unittest import mock

    environment = {PREFIX + "DENY_EVENTS": ",".join(env)} if env is not None else {}
    deny_path = deny_file_path()
    repo_path = Path.cwd() / "codeweaver.toml"
    try:
        if file is not None:
            write_deny_file(f"deny_events = {json.dumps(file)}\n")
        if repo is not None:
            repo_path.write_text(f"[telemetry]\ndeny_events = {json.dumps(repo)}\n")
        with mock.patch.dict(os.environ, environment):
            quick = _config.resolve()
            settings, error = load_settings()
    finally:
        for path in (deny_path, repo_path):
            if path.exists():
                path.unlink()
    assert error is None
    expected: dict[str, None] = {}
    for source in (env, repo, file):
        for item in source or ():
            for part in item.split(","):
                if part.strip():
                    expected[part.strip()] = None
    assert settings.deny_events == tuple(expected)
    if quick is not None:
        assert quick.deny_events == () == settings.deny_events
        assert quick.to_settings() == settings


# -- the command line -----------------------------------------------------------------------------


def cli(*argv: str, code: int = EXIT_OK) -> str:
    out = io.StringIO()
    assert main(list(argv), out=out) == code
    return out.getvalue()


def cli_json(*argv: str, code: int = EXIT_OK) -> dict[str, Any]:
    document = json.loads(cli(*argv, "--json", code=code))
    return check_shape(document, argv[0])


def test_deny_and_allow_edit_the_deny_file_and_status_shows_it() -> None:
    """``deny`` creates the deny file (0600) and adds entries; ``status`` shows the lists in
    text and JSON; ``allow`` removes them."""
    assert "denied events:     (none)" in cli("status")
    assert "Denied: event 'debug_*'." in cli("deny", "event", "debug_*")
    document = cli_json("deny", "property", "query.*")
    assert (document["kind"], document["entry"], document["changed"]) == (
        "property",
        "query.*",
        True,
    )
    assert document["deny_file"] == str(deny_file_path())
    assert document["deny_properties"] == ["query.*"]
    assert cli_json("deny", "property", "query.*")["changed"] is False
    path = deny_file_path()
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = cli("status")
    assert "denied events:     debug_*" in text
    assert "denied properties: query.*" in text
    status = cli_json("status")
    assert (status["deny_events"], status["deny_properties"]) == (["debug_*"], ["query.*"])
    assert load_settings()[0].deny_events == ("debug_*",)
    assert "Allowed: event 'debug_*'." in cli("allow", "event", "debug_*")
    allowed = cli_json("allow", "property", "query.*")
    assert allowed["changed"] is True
    assert allowed["deny_properties"] == []
    assert cli_json("allow", "event", "never_denied")["changed"] is False
    assert cli_json("status")["deny_events"] == []


def test_deny_keeps_the_other_list_and_reads_what_is_there() -> None:
    """An edit keeps the other list of the deny file as it was."""
    write_deny_file('deny_events = ["kept"]\n')
    cli("deny", "property", "a.b")
    settings = load_settings()[0]
    assert (settings.deny_events, settings.deny_properties) == (("kept",), ("a.b",))


def test_allow_cannot_remove_a_repository_entry() -> None:
    """An entry only the repository's codeweaver.toml adds: a clear message, exit 1, and it
    stays denied."""
    Path("codeweaver.toml").write_text('[telemetry]\ndeny_events = ["repo_only"]\n')
    document = cli_json("allow", "event", "repo_only", code=EXIT_FAILURE)
    assert "repository" in document["error"]
    assert "cannot be removed" in document["error"]
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", err)
        cli("allow", "event", "repo_only", code=EXIT_FAILURE)
    assert "cannot be removed" in err.getvalue()
    assert load_settings()[0].deny_events == ("repo_only",)


def test_allow_names_the_trusted_source_it_cannot_edit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry set in the environment is named there (exit 1)."""
    monkeypatch.setenv(PREFIX + "DENY_EVENTS", "from_env")
    document = cli_json("allow", "event", "from_env", code=EXIT_FAILURE)
    assert PREFIX + "DENY_EVENTS" in document["error"]


@pytest.mark.parametrize("name", ["", "  ", "a,b", "bad\nname"])
def test_deny_refuses_unusable_names(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty name, a comma or a control character is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        main(["deny", "event", name])
    assert exc.value.code == EXIT_USAGE
    assert not deny_file_path().exists()


def test_a_broken_deny_file_fails_the_command_cleanly() -> None:
    """A deny file that is not TOML: exit 1 naming it, nothing rewritten."""
    path = deny_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not toml [", encoding="utf-8")
    document = cli_json("deny", "event", "x", code=EXIT_FAILURE)
    assert str(path) in document["error"]
    assert path.read_text(encoding="utf-8") == "not toml ["


def test_a_new_deny_applies_to_the_next_client(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """What ``deny`` writes is read by the next client built from the settings."""
    cli("deny", "event", "secret_event")
    client = make_client()
    assert client.settings.deny_events == ("secret_event",)
    client.capture("secret_event", {})
    client.capture("fine", {})
    assert client.flush(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not list(read_log(client.settings.resolved_state_dir)):
        time.sleep(0.01)
    assert [e["event"] for e in read_log(client.settings.resolved_state_dir)] == ["fine"]


def test_events_spooled_before_a_deny_are_filtered_when_drained(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """An earlier run spooled events (host down); the user then denies them: the next run
    drains the spool without sending or logging what is denied now."""
    receiver.refuse()
    first = _wire(make_client, receiver, exit_timeout_seconds=0.5, max_retries=0)
    first.capture("debug_cache", {"hits": 3})
    first.capture("search", copy.deepcopy(SEARCH))
    first.shutdown()
    assert first.stats()["spooled"] == 2
    receiver.accept()
    second = _wire(make_client, receiver, **DENY)
    second.capture("online", {})
    assert second.flush(5)
    state_dir = second.settings.resolved_state_dir
    assert wait_until(lambda: spool_text(state_dir) == ""), "the spool was drained"
    events = receiver.wait_for_events(2)
    assert sorted(e["event"] for e in events) == ["online", "search"]
    for request in receiver.capture_requests():
        _assert_clean(request.text)
    _assert_clean(json.dumps(list(read_log(state_dir))))
