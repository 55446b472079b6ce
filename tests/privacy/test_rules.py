"""serialize_for_telemetry requirements 1-6, each on pydantic, attrs and dataclass models."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import decimal
import enum
import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, Field, computed_field

import codeweaver_telemetry
from codeweaver_telemetry import (
    AnonymityConversion,
    FilteredKey,
    InMemorySink,
    TelemetryClient,
    TelemetryRuleError,
)
from codeweaver_telemetry.privacy import rules
from codeweaver_telemetry.privacy.hashing import InMemoryKeyProvider, get_default_key_provider
from codeweaver_telemetry.privacy.rules import (
    CYCLE_MARKER,
    TelemetryMixin,
    TelemetryModel,
    serialize_for_telemetry,
)
from codeweaver_telemetry.privacy.scrubber import scrub

C = AnonymityConversion
K = FilteredKey
PROVIDER = InMemoryKeyProvider(b"s" * 32)
KINDS = ["pydantic", "attrs", "dataclass"]


class Mode(enum.Enum):
    FAST = "fast"


# --------------------------------------------------------------------------------------
# The same three models in each kind: Repo (rules), Workspace (nested), Strict (allowlist).
# --------------------------------------------------------------------------------------
def repo_rules(self: object) -> dict[FilteredKey, AnonymityConversion]:
    return {K("path"): C.HASH, K("files"): C.COUNT, K("owner_email"): C.FORBIDDEN}


def workspace_rules(self: object) -> dict[FilteredKey, AnonymityConversion]:
    return {K("label"): C.TEXT_COUNT}


def strict_rules(self: object) -> dict[FilteredKey, AnonymityConversion]:
    return {K("files"): C.COUNT}


class PRepo(TelemetryModel):
    name: str
    path: str
    files: list[str]
    owner_email: str = "alice@example.com"
    _telemetry_keys = repo_rules  # type: ignore[assignment]


class PWorkspace(TelemetryModel):
    label: str
    repos: list[PRepo]
    by_name: dict[str, PRepo]
    pair: tuple[PRepo, ...]
    frozen: frozenset[str] = frozenset()
    _telemetry_keys = workspace_rules  # type: ignore[assignment]


class PStrict(TelemetryModel):
    _telemetry_strict: ClassVar[bool] = True
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset({"version"})
    _telemetry_trusted: ClassVar[frozenset[str]] = frozenset({"mode"})
    version: str
    mode: str
    files: list[str]
    secret_note: str
    _telemetry_keys = strict_rules  # type: ignore[assignment]


@attrs.define
class ARepo(TelemetryMixin):
    name: str
    path: str
    files: list[str]
    owner_email: str = "alice@example.com"
    _telemetry_keys = repo_rules


@attrs.define
class AWorkspace(TelemetryMixin):
    label: str
    repos: list[ARepo]
    by_name: dict[str, ARepo]
    pair: tuple[ARepo, ...]
    frozen: frozenset[str] = frozenset()
    _telemetry_keys = workspace_rules


@attrs.define
class AStrict(TelemetryMixin):
    _telemetry_strict: ClassVar[bool] = True
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset({"version"})
    _telemetry_trusted: ClassVar[frozenset[str]] = frozenset({"mode"})
    version: str
    mode: str
    files: list[str]
    secret_note: str
    _telemetry_keys = strict_rules


@dataclasses.dataclass
class DRepo(TelemetryMixin):
    name: str
    path: str
    files: list[str]
    owner_email: str = "alice@example.com"
    _telemetry_keys = repo_rules


@dataclasses.dataclass
class DWorkspace(TelemetryMixin):
    label: str
    repos: list[DRepo]
    by_name: dict[str, DRepo]
    pair: tuple[DRepo, ...]
    frozen: frozenset[str] = frozenset()
    _telemetry_keys = workspace_rules


@dataclasses.dataclass
class DStrict(TelemetryMixin):
    _telemetry_strict: ClassVar[bool] = True
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset({"version"})
    _telemetry_trusted: ClassVar[frozenset[str]] = frozenset({"mode"})
    version: str
    mode: str
    files: list[str]
    secret_note: str
    _telemetry_keys = strict_rules


CLASSES: dict[str, tuple[Any, Any, Any]] = {
    "pydantic": (PRepo, PWorkspace, PStrict),
    "attrs": (ARepo, AWorkspace, AStrict),
    "dataclass": (DRepo, DWorkspace, DStrict),
}


def make_workspace(kind: str) -> Any:
    repo_cls, ws_cls, _ = CLASSES[kind]
    a = repo_cls(name="alpha", path="/home/alice/alpha", files=["a.py", "b.py"])
    b = repo_cls(name="beta", path="/home/alice/beta", files=["c.py"])
    return ws_cls(
        label="my workspace",
        repos=[a, b],
        by_name={"alpha": a},
        pair=(b,),
        frozen=frozenset({"z", "y"}),
    )


def ser(obj: Any, **kw: Any) -> dict[str, Any]:
    out = obj.serialize_for_telemetry(key_provider=PROVIDER, **kw)
    assert isinstance(out, dict)
    return out


# 1. Recursive --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_rules_apply_recursively(kind: str) -> None:
    """Nested models in lists, tuples and dicts are serialized with their own rules."""
    out = ser(make_workspace(kind))
    assert out["label"] == len("my workspace")
    for repo in [*out["repos"], out["by_name"]["alpha"], *out["pair"]]:
        assert set(repo) == {"name", "path", "files"}, "FORBIDDEN owner_email must be absent"
        assert isinstance(repo["files"], int)
        assert len(repo["path"]) == 16
        assert "alice" not in json.dumps(repo)
    assert out["repos"][0]["files"] == 2
    assert out["frozen"] == ["y", "z"]


@pytest.mark.parametrize("kind", KINDS)
def test_hash_is_stable_within_an_install(kind: str) -> None:
    """The same value hashes the same within one key; a nested hash equals a top-level one."""
    out = ser(make_workspace(kind))
    assert out["repos"][0]["path"] == out["by_name"]["alpha"]["path"]
    assert out["repos"][0]["path"] != out["repos"][1]["path"]


# 2. Alias-aware ------------------------------------------------------------------------
class PAliased(TelemetryModel):
    model_config = ConfigDict(populate_by_name=True)
    query_text: str = Field(alias="queryText")
    user_path: str = Field(serialization_alias="userPath")
    count: int = 0

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        # one rule by field name, one by alias: both must hold either way of dumping
        return {K("query_text"): C.TEXT_COUNT, K("userPath"): C.FORBIDDEN}


@attrs.define
class AAliased(TelemetryMixin):
    _query_text: str  # attrs alias: query_text
    user_path: str = attrs.field(alias="userPath")
    count: int = 0

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("query_text"): C.TEXT_COUNT, K("userPath"): C.FORBIDDEN}


@pytest.mark.parametrize("by_alias", [False, True])
def test_pydantic_rules_hold_by_name_and_alias(by_alias: bool) -> None:
    """A rule naming a field or its alias applies whether output is keyed by alias or not."""
    m = PAliased(queryText="how does auth work", user_path="/home/bob/x")
    out = ser(m, by_alias=by_alias)
    key = "queryText" if by_alias else "query_text"
    assert out == {key: 18, "count": 0}
    assert "bob" not in json.dumps(out)


@pytest.mark.parametrize("by_alias", [False, True])
def test_attrs_rules_hold_by_name_and_alias(by_alias: bool) -> None:
    """attrs aliases (explicit and underscore-stripped) resolve to their attribute."""
    m = AAliased(query_text="how does auth work", userPath="/home/bob/x")
    out = ser(m, by_alias=by_alias)
    key = "query_text" if by_alias else "_query_text"
    assert out == {key: 18, "count": 0}


def test_dataclass_rules_hold_by_field_name() -> None:
    """Dataclasses have no aliases; rules by field name apply in both modes."""
    repo = DRepo(name="n", path="/home/carol/p", files=[])
    for by_alias in (False, True):
        out = ser(repo, by_alias=by_alias)
        assert set(out) == {"name", "path", "files"}
        assert "carol" not in json.dumps(out)


def typo_rules(self: object) -> dict[FilteredKey, AnonymityConversion]:
    return {K("pathh"): C.HASH}


class PTypo(TelemetryModel):
    path: str = "/home/x"
    _telemetry_keys = typo_rules  # type: ignore[assignment]


@attrs.define
class ATypo(TelemetryMixin):
    path: str = "/home/x"
    _telemetry_keys = typo_rules


@dataclasses.dataclass
class DTypo(TelemetryMixin):
    path: str = "/home/x"
    _telemetry_keys = typo_rules


@pytest.mark.parametrize("cls", [PTypo, ATypo, DTypo])
def test_rule_naming_no_field_is_an_error(cls: Any) -> None:
    """A rule whose key is not a field or alias raises on first use, naming the key."""
    with pytest.raises(TelemetryRuleError, match="pathh"):
        cls().serialize_for_telemetry()


def test_rule_value_must_be_a_conversion() -> None:
    """A rule mapped to something that is not an AnonymityConversion is an error."""

    class Bad(TelemetryModel):
        x: int = 1

        def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
            return {K("x"): "hash"}  # type: ignore[dict-item]

    with pytest.raises(TelemetryRuleError, match="AnonymityConversion"):
        Bad().serialize_for_telemetry()


# 3. Strict ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_strict_model_sends_only_listed_fields(kind: str) -> None:
    """A strict model drops every field that has no rule and is not allowed or trusted."""
    strict_cls = CLASSES[kind][2]
    m = strict_cls(
        version="0.5.0", mode="/home/dave/mode", files=["x", "y"], secret_note="top secret"
    )
    out = ser(m)
    assert out == {"version": "0.5.0", "mode": "/home/dave/mode", "files": 2}


@pytest.mark.parametrize("kind", KINDS)
def test_non_strict_model_sends_unlisted_fields_scrubbed(kind: str) -> None:
    """Without strict, unlisted fields go out, but only after the scrubber."""
    repo = CLASSES[kind][0](name="mail me: erin@example.com", path="p", files=[])
    out = ser(repo)
    assert out["name"] == "mail me: <email>"


# 4. Post-processing hook ------------------------------------------------------------------
def handler(self: Any, data: dict[str, Any]) -> dict[str, Any]:
    data.pop("name")  # remove
    data["files"] = data["files"] * 10  # replace
    data["extra_path"] = "/home/frank/added"  # add: must still be scrubbed
    data["extra_count"] = 3
    return data


class PHooked(PRepo):
    _telemetry_handler = handler  # type: ignore[assignment]


@attrs.define
class AHooked(ARepo):
    _telemetry_handler = handler


@dataclasses.dataclass
class DHooked(DRepo):
    _telemetry_handler = handler


@pytest.mark.parametrize("cls", [PHooked, AHooked, DHooked])
def test_handler_can_add_replace_and_remove_keys(cls: Any) -> None:
    """The hook's output is used whole; what it adds is scrubbed like everything else."""
    out = ser(cls(name="n", path="/p", files=["a", "b"]))
    assert "name" not in out
    assert out["files"] == 20
    assert out["extra_count"] == 3
    assert out["extra_path"] == "<path>"


# 5. No mutation, JSON-safe ------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_serialization_never_mutates(kind: str) -> None:
    """The instance (and its nested objects) are unchanged after serialization."""
    ws = make_workspace(kind)
    before = copy.deepcopy(ws)
    ser(ws)
    ser(ws, by_alias=True)
    assert ws == before


class PTypes(TelemetryModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    when: dt.datetime = dt.datetime(2026, 11, 23, 14, 55, tzinfo=dt.timezone.utc)
    day: dt.date = dt.date(2026, 11, 23)
    ident: uuid.UUID = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")
    mode: Mode = Mode.FAST
    price: decimal.Decimal = decimal.Decimal("1.5")
    tags: set[str] = Field(default_factory=lambda: {"b", "a"})
    nan: float = math.nan
    inf: float = math.inf
    blob: bytes = b"\x00secret"
    where: Path = Path("/home/gina/x.py")
    big: int = 2**80
    anything: Any = None
    keyed: dict[Any, Any] = Field(default_factory=lambda: {1: "x", ("t",): "dropped"})


@attrs.define
class ATypes(TelemetryMixin):
    when: dt.datetime = dt.datetime(2026, 11, 23, 14, 55, tzinfo=dt.timezone.utc)
    day: dt.date = dt.date(2026, 11, 23)
    ident: uuid.UUID = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")
    mode: Mode = Mode.FAST
    price: decimal.Decimal = decimal.Decimal("1.5")
    tags: set[str] = attrs.Factory(lambda: {"b", "a"})
    nan: float = math.nan
    inf: float = math.inf
    blob: bytes = b"\x00secret"
    where: Path = Path("/home/gina/x.py")
    big: int = 2**80
    anything: Any = None
    keyed: dict[Any, Any] = attrs.Factory(lambda: {1: "x", ("t",): "dropped"})


@dataclasses.dataclass
class DTypes(TelemetryMixin):
    when: dt.datetime = dt.datetime(2026, 11, 23, 14, 55, tzinfo=dt.timezone.utc)
    day: dt.date = dt.date(2026, 11, 23)
    ident: uuid.UUID = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")
    mode: Mode = Mode.FAST
    price: decimal.Decimal = decimal.Decimal("1.5")
    tags: set[str] = dataclasses.field(default_factory=lambda: {"b", "a"})
    nan: float = math.nan
    inf: float = math.inf
    blob: bytes = b"\x00secret"
    where: Path = Path("/home/gina/x.py")
    big: int = 2**80
    anything: Any = None
    keyed: dict[Any, Any] = dataclasses.field(default_factory=lambda: {1: "x", ("t",): "y"})


@pytest.mark.parametrize("cls", [PTypes, ATypes, DTypes])
def test_output_is_json_safe(cls: Any) -> None:
    """Types map as documented; bytes are not sent; NaN/inf become None; sets sort."""
    out = ser(cls())
    assert out == {
        "when": "2026-11-23T14:55:00+00:00",
        "day": "2026-11-23",
        "ident": "123e4567-e89b-12d3-a456-426614174000",
        "mode": "fast",
        "price": 1.5,
        "tags": ["a", "b"],
        "nan": None,
        "inf": None,
        "where": "<path>",
        "big": float(2**80),
        "anything": None,
        "keyed": {"1": "x"},
    }
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("kind", KINDS)
def test_cycles_are_cut_with_a_marker(kind: str) -> None:
    """A reference cycle becomes "<cycle>", never a RecursionError."""
    ws = make_workspace(kind)
    loop: list[Any] = []
    loop.append(loop)
    ws.repos[0].files = loop
    ws.repos[1].files = ["x"]
    ws.label = "l"
    out = serialize_for_telemetry(ws, key_provider=PROVIDER)
    assert out["repos"][0]["files"] == 1  # COUNT rule of the list that contains itself
    deep: dict[str, Any] = {}
    deep["self"] = deep
    assert serialize_for_telemetry({"a": deep}) == {"a": {"self": CYCLE_MARKER}}


def test_model_cycle_is_cut() -> None:
    """A model reachable from itself is cut with the marker."""

    @dataclasses.dataclass
    class Node(TelemetryMixin):
        name: str
        nxt: Any = None

    a = Node("a")
    a.nxt = Node("b", a)
    assert serialize_for_telemetry(a) == {"name": "a", "nxt": {"name": "b", "nxt": CYCLE_MARKER}}


def test_very_deep_nesting_is_bounded() -> None:
    """Nesting beyond the depth limit is cut, never a RecursionError."""
    value: Any = "leaf"
    for _ in range(5000):
        value = [value]
    out = serialize_for_telemetry(value)
    assert "<max_depth>" in json.dumps(out)


# 6. Scrubber on every surviving string, unless trusted --------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_every_surviving_string_is_scrubbed(kind: str) -> None:
    """Strings in nested lists and dicts of a non-strict model are scrubbed."""
    ws = make_workspace(kind)
    ws.repos[0].name = "token ghp_" + "a" * 36
    ws.frozen = frozenset({"ip 10.1.2.3"})
    out = json.dumps(ser(ws))
    assert "ghp_" not in out
    assert "10.1.2.3" not in out


@pytest.mark.parametrize("kind", KINDS)
def test_trusted_fields_skip_the_scrubber(kind: str) -> None:
    """A field the model trusts goes out verbatim (the developer vouches for it)."""
    strict_cls = CLASSES[kind][2]
    out = ser(strict_cls(version="/opt/v", mode="/opt/mode", files=[], secret_note="x"))
    assert out["mode"] == "/opt/mode"
    assert out["version"] == "<path>"


def test_secret_sounding_keys_are_redacted() -> None:
    """Values under secret-sounding dict keys or field names become <secret>."""

    class Cfg(TelemetryModel):
        api_key: str = "abc123"
        token_count: int = 5
        settings: dict[str, Any] = Field(
            default_factory=lambda: {"DB-Password": "hunter2", "user": "ok", "Auth": None}
        )

    out = ser(Cfg())
    assert out == {
        "api_key": "<secret>",
        "token_count": 5,
        "settings": {"DB-Password": "<secret>", "user": "ok", "Auth": None},
    }


def test_plain_dicts_and_models_without_rules_are_safe() -> None:
    """serialize_for_telemetry works on any value: plain pydantic models, dicts, lists."""
    from pydantic import BaseModel

    class Plain(BaseModel):
        email: str = "h@example.com"

    out = serialize_for_telemetry({"m": Plain(), "items": [b"x", "/etc/passwd", 1]})
    assert out == {"m": {"email": "<email>"}, "items": ["<path>", 1]}


def test_pydantic_extra_fields_are_scrubbed_and_dropped_when_strict() -> None:
    """Extra fields of an extra='allow' model are sent scrubbed; strict models drop them."""

    class Loose(TelemetryModel):
        model_config = ConfigDict(extra="allow")
        a: int = 1

    class Tight(Loose):
        _telemetry_strict: ClassVar[bool] = True
        _telemetry_allow: ClassVar[frozenset[str]] = frozenset({"a"})

    assert ser(Loose(note="ip 192.168.1.20")) == {"a": 1, "note": "ip <ip>"}
    assert ser(Tight(note="x")) == {"a": 1}


# Property: any JSON-ish value serializes to JSON-safe output ---------------------------
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.decimals()
    | st.datetimes()
    | st.uuids()
    | st.sampled_from(list(Mode)),
    lambda children: (
        st.lists(children)
        | st.tuples(children, children)
        | st.frozensets(st.text() | st.integers())
        | st.dictionaries(st.text() | st.integers() | st.booleans(), children)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(value=anything)
def test_any_value_becomes_strict_json(value: object) -> None:
    """Whatever goes in, what comes out is strict JSON (no NaN, str keys) and never raises."""
    out = serialize_for_telemetry({"v": value}, key_provider=PROVIDER)
    json.dumps(out, allow_nan=False)


def test_counts_under_keys_that_scrub_to_one_marker_add_up() -> None:
    """Two distinct keys the scrubber turns into the same marker keep their total."""
    from codeweaver_telemetry import serialize_for_telemetry

    out = serialize_for_telemetry({"usage": {"a@example.com": 5, "b@example.org": 7, "c": 1}})
    assert out == {"usage": {"<email>": 12, "c": 1}}


# Values that raise when read are not sent ---------------------------------------------
class ItemsRaise(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("no items")


class IterRaises(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("no iteration")


def _not_sent_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "was not sent" in r.getMessage()]


def test_a_mapping_whose_items_raise_is_not_sent_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A mapping whose items() raises is left out as if absent, the rest of the value is
    sent, and the problem is logged once (not once per value)."""
    caplog.set_level(logging.WARNING, logger="codeweaver_telemetry")
    value = {"bad": ItemsRaise(a=1), "ok": 1, "list": [ItemsRaise(b=2), "x"]}
    assert serialize_for_telemetry(value) == {"ok": 1, "list": ["x"]}
    assert serialize_for_telemetry(ItemsRaise(a=1)) is None
    assert _not_sent_warnings(caplog) == [
        "codeweaver_telemetry: a value of type ItemsRaise was not sent "
        "(RuntimeError while reading it)"
    ]
    assert "no items" not in caplog.text, "the exception's message (user data) is not logged"


def test_a_sequence_whose_iteration_raises_is_not_sent() -> None:
    """A list whose iteration raises is left out of its dict or list, and of a model."""

    @dataclasses.dataclass
    class Holder(TelemetryMixin):
        items: Any = None
        n: int = 1

    assert serialize_for_telemetry({"l": IterRaises([1]), "n": 2}) == {"n": 2}
    assert serialize_for_telemetry([IterRaises([1]), 3]) == [3]
    assert ser(Holder(items=IterRaises([1]))) == {"n": 1}


def test_a_field_whose_getter_raises_is_left_out() -> None:
    """A computed field that raises costs that field, not the model."""

    class WithComputed(TelemetryModel):
        a: int = 1

        @computed_field  # type: ignore[prop-decorator]
        @property
        def broken(self) -> int:
            raise RuntimeError("bug")

    assert ser(WithComputed()) == {"a": 1}


def test_rule_and_key_errors_are_not_swallowed() -> None:
    """Errors that are not the value's still raise: wrong rules, and a key provider that
    cannot give the HASH key (even from deep inside a dict)."""

    class NoKey:
        def key(self) -> bytes:
            raise OSError("no key")

    repo = DRepo(name="n", path="/p", files=[])
    with pytest.raises(OSError, match="no key"):
        serialize_for_telemetry({"nested": [repo]}, key_provider=NoKey())
    with pytest.raises(TelemetryRuleError):
        serialize_for_telemetry({"nested": [DTypo()]})


# Valid text: no unpaired surrogate ever reaches the output -----------------------------
class Label(enum.Enum):
    ODD = "odd\udc00"


@dataclasses.dataclass
class Surrogates(TelemetryMixin):
    _telemetry_trusted: ClassVar[frozenset[str]] = frozenset({"trusted"})
    text: str = "a\ud800b"
    trusted: str = "t\udfff"
    pair: str = "\ud83d\ude00"
    label: Label = Label.ODD
    mapping: dict[Any, Any] = dataclasses.field(
        default_factory=lambda: {"k\ud800": "v\udbff", Label.ODD: 1, "\ud83d\ude00": 2}
    )
    langs: list[str] = dataclasses.field(default_factory=lambda: ["py\ud800", "py\udc01"])
    title: str = "\ud800\ud800"

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("langs"): C.DISTRIBUTION, K("title"): C.TEXT_COUNT}


def test_unpaired_surrogates_become_replacement_characters_everywhere() -> None:
    """Strings and keys, trusted or not, enum values and DISTRIBUTION keys: each unpaired
    surrogate becomes U+FFFD and each surrogate pair its character, so the output encodes
    as UTF-8."""
    out = ser(Surrogates())
    assert out == {
        "text": "a\ufffdb",
        "trusted": "t\ufffd",
        "pair": "\U0001f600",
        "label": "odd\ufffd",
        "mapping": {"k\ufffd": "v\ufffd", "odd\ufffd": 1, "\U0001f600": 2},
        "langs": {"py\ufffd": 2},
        "title": 2,
    }
    json.dumps(out, ensure_ascii=False).encode("utf-8")


def test_clean_strings_are_not_copied() -> None:
    """Serializing copies no string that is already valid text (ASCII or not)."""
    values = ["plain", "caf\u00e9 \u691c\u7d22 \U0001f600"]
    out = serialize_for_telemetry({"v": values}, scrubber=lambda s: s)
    assert all(a is b for a, b in zip(out["v"], values, strict=True))


# Arbitrary code points, with unpaired surrogates and surrogate pairs often among them.
any_text = st.lists(
    st.characters(exclude_categories=())
    | st.integers(0xD800, 0xDFFF).map(chr)
    | st.sampled_from(["a", "\ud83d\ude00"]),
    max_size=12,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        any_text | st.sampled_from(list(Label)),
        lambda children: st.lists(children) | st.dictionaries(any_text, children),
        max_leaves=10,
    ),
    trusted=st.booleans(),
)
def test_any_text_serializes_to_valid_utf8(value: object, trusted: bool) -> None:
    """Whatever code points the strings and keys hold, trusted or not, the output encodes
    as UTF-8."""
    out = serialize_for_telemetry(
        {"v": value}, key_provider=PROVIDER, scrubber=(lambda s: s) if trusted else None
    )
    json.dumps(out, ensure_ascii=False).encode("utf-8")


# -- the base classes' names -----------------------------------------------------------------


def test_former_base_names_are_aliases() -> None:
    """BasedModel and DataclassSerializationMixin still work: they are TelemetryModel and
    TelemetryMixin under their former names."""
    assert rules.BasedModel is TelemetryModel
    assert rules.DataclassSerializationMixin is TelemetryMixin
    assert codeweaver_telemetry.BasedModel is TelemetryModel
    assert codeweaver_telemetry.DataclassSerializationMixin is TelemetryMixin

    @dataclasses.dataclass
    class Old(rules.DataclassSerializationMixin):
        files: list[str]

        def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
            return {K("files"): C.COUNT}

    assert isinstance(Old(["a"]), TelemetryMixin)
    assert Old(["a", "b"]).serialize_for_telemetry() == {"files": 2}


# -- the HASH key is passed explicitly -------------------------------------------------------


class Hashed(TelemetryModel):
    path: str

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("path"): C.HASH}


def test_without_a_key_provider_hashes_use_the_process_key() -> None:
    """A direct call without key_provider= hashes under the per-process key: stable within
    the process, and not the hash a given key gives."""
    value = Hashed(path="/home/alice/repo")
    default = value.serialize_for_telemetry()["path"]
    assert default == value.serialize_for_telemetry(key_provider=get_default_key_provider())["path"]
    assert default == serialize_for_telemetry(value)["path"]
    assert default != value.serialize_for_telemetry(key_provider=PROVIDER)["path"]


def test_a_client_does_not_change_direct_hashes(
    make_client: Callable[..., TelemetryClient],
) -> None:
    """Starting a client leaves a direct call's hashes as they were (no last-client-wins
    default); key_provider=client.key_provider gives the hashes the client's events carry."""
    value = Hashed(path="/home/alice/repo")
    before = value.serialize_for_telemetry()["path"]
    sink = InMemorySink()
    client = make_client(sink=sink)
    client.capture_with_serialization("hashed", value)
    client.flush(2.0)
    sent = sink.events()[0]["properties"]["path"]
    assert value.serialize_for_telemetry()["path"] == before
    assert value.serialize_for_telemetry(key_provider=client.key_provider)["path"] == sent
    assert sent != before


# The fast paths give what the straightforward ones give ---------------------------------
secret_texts = st.sampled_from(
    [
        *("ok", "python", "alice@example.com", "/home/alice/x.py", "ghp_" + "a" * 36),
        *("\ud800x", "\ud83d\ude00 ok"),  # a lone surrogate, a surrogate pair
        "/home/alice/" + "x" * 2100,  # a path longer than the pipeline's cut
    ]
)
# Around the memo's length (200) and the pipeline's cut before scrubbing (2000).
long_texts = st.sampled_from([199, 200, 201, 2001, 2500]).map(lambda n: ("bob w " * n)[:n])
field_values = st.one_of(
    st.none(),
    st.booleans(),
    secret_texts,
    long_texts,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    anything,
)
conversions = st.none() | st.sampled_from(list(AnonymityConversion))


class Fields(TelemetryModel):
    """Fields of every kind a plan step can have: a secret-sounding name (``api_key``), a
    trusted one (``label``), an alias, a computed field that raises on odd ``n``."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)
    _telemetry_trusted: ClassVar[frozenset[str]] = frozenset({"label"})

    text: Any = None
    api_key: Any = None
    label: Any = None
    count: Any = Field(default=None, alias="Count")
    n: int = 0
    given_rules: dict[FilteredKey, AnonymityConversion] = Field(default_factory=dict, exclude=True)

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return self.given_rules

    @computed_field  # type: ignore[prop-decorator]
    @property
    def maybe(self) -> int:
        if self.n % 2:
            raise RuntimeError("odd")
        return self.n


@settings(max_examples=300, deadline=None)
@given(
    values=st.fixed_dictionaries(
        dict.fromkeys(("text", "api_key", "label", "count"), field_values)
    ),
    n=st.integers(0, 3),
    chosen=st.fixed_dictionaries(
        dict.fromkeys(("text", "api_key", "label", "Count", "maybe"), conversions)
    ),
    by_alias=st.booleans(),
    max_chars=st.sampled_from([None, 2000, 8]),
)
@example(  # TEXT_COUNT counts a surrogate pair as one character; a flag under a secret name
    values={"text": "\ud83d\ude00 ok", "api_key": True, "label": "\ud800", "count": 2**64},
    n=1,
    chosen=dict.fromkeys(("api_key", "label", "Count", "maybe"), None) | {"text": C.TEXT_COUNT},
    by_alias=True,
    max_chars=None,
)
def test_compiled_plans_match_the_steps_one_by_one(
    values: dict[str, Any],
    n: int,
    chosen: dict[str, AnonymityConversion | None],
    by_alias: bool,
    max_chars: int | None,
) -> None:
    """A plan compiled to one function gives what its steps give one by one (the
    reference, without memos), for any rules, values, alias choice and cut."""
    model_rules = {K(k): conv for k, conv in chosen.items() if conv is not None}
    obj = Fields(**values, n=n, given_rules=model_rules)
    plan = rules._plan(Fields, model_rules, by_alias, True)
    for _ in range(2):  # the second time, with warm memos
        fast = rules._Walker(PROVIDER, scrub, by_alias, max_chars)
        slow = rules._Walker(PROVIDER, scrub, by_alias, max_chars)
        assert repr(plan.run(fast, obj)) == repr(slow.steps(plan, obj))


def scrub_uncached(text: str) -> str:
    """The default scrubber behind a function of our own: the serializer's memo is off."""
    return scrub(text)


@settings(max_examples=300, deadline=None)
@given(value=field_values | st.dictionaries(st.text() | secret_texts | st.integers(), field_values))
def test_the_memo_changes_nothing(value: object) -> None:
    """Remembered scrub results of strings and keys are what the scrubber gives, cold and
    warm, with and without a cut."""
    for max_chars in (None, 2000, 8):
        expected = serialize_for_telemetry(
            {"v": value, "w": [value]},
            key_provider=PROVIDER,
            scrubber=scrub_uncached,
            max_string_chars=max_chars,
        )
        for _ in range(2):
            got = serialize_for_telemetry(
                {"v": value, "w": [value]}, key_provider=PROVIDER, max_string_chars=max_chars
            )
            assert repr(got) == repr(expected)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(st.text() | st.integers(), field_values, max_size=8))
def test_the_measured_bound_holds(value: dict[Any, Any]) -> None:
    """serialize_measured gives what serialize_for_telemetry gives, and its bound, when it
    gives one, is at least the compact JSON size in bytes."""
    out, bound = rules.serialize_measured(value, key_provider=PROVIDER, max_items=500)
    assert repr(out) == repr(serialize_for_telemetry(value, key_provider=PROVIDER))
    if bound is not None:
        text = json.dumps(out, separators=(",", ":"), ensure_ascii=False)
        assert len(text.encode("utf-8")) <= bound


# Rules declared on the class (_telemetry_rules) and fields declared as models -----------
class Leaf(TelemetryModel):
    """Rules on the class; they change between examples (set by the test)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _telemetry_rules: ClassVar[Mapping[FilteredKey, AnonymityConversion] | None] = {
        K("path"): C.HASH
    }
    text: Any = None
    path: Any = None


class LeafByMethod(TelemetryModel):
    """Leaf's fields, with Leaf's current rules returned by _telemetry_keys(): the
    reference path, called on every instance."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    text: Any = None
    path: Any = None

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion] | None:
        return None if Leaf._telemetry_rules is None else dict(Leaf._telemetry_rules)


class Tree(TelemetryModel):
    """Fields declared as a model and a list of models: compiled to call them directly."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _telemetry_rules: ClassVar[Mapping[FilteredKey, AnonymityConversion]] = {
        K("label"): C.TEXT_COUNT
    }
    label: Any = None
    leaf: Leaf | None = None
    leaves: list[Leaf] = Field(default_factory=list)
    more: list[Leaf] | None = None


class TreeByMethod(TelemetryModel):
    """Tree, with nothing declared: the general path everywhere."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    label: Any = None
    leaf: Any = None
    leaves: Any = None
    more: Any = None

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {K("label"): C.TEXT_COUNT}


def twin(value: Any) -> Any:
    """The same value with Leaf and Tree replaced by their ...ByMethod twins."""
    if isinstance(value, Leaf):
        return LeafByMethod.model_construct(text=value.text, path=value.path)
    if isinstance(value, list):
        return [twin(item) for item in value]
    return value


leaf_or_value = st.builds(Leaf.model_construct, text=field_values, path=field_values) | (
    field_values
)
leaf_rules = st.none() | st.dictionaries(
    st.sampled_from(["text", "path"]).map(K), st.sampled_from(list(AnonymityConversion))
)


@settings(max_examples=300, deadline=None)
@given(
    label=field_values,
    leaf=leaf_or_value,
    leaves=st.lists(leaf_or_value, max_size=4),
    more=st.none() | st.lists(leaf_or_value, max_size=3),
    chosen=leaf_rules,
    by_alias=st.booleans(),
    max_chars=st.sampled_from([None, 2000, 8]),
    repeat=st.booleans(),
)
def test_class_rules_and_declared_models_match_the_general_path(
    label: Any,
    leaf: Any,
    leaves: list[Any],
    more: list[Any] | None,
    chosen: dict[FilteredKey, AnonymityConversion] | None,
    by_alias: bool,
    max_chars: int | None,
    repeat: bool,
) -> None:
    """Rules declared in ``_telemetry_rules``, and fields declared as models or lists of
    models, give what ``_telemetry_keys()`` and undeclared fields give, for any values and
    rules (changed on the class between calls), alias choice and cut."""
    if repeat and leaves:
        leaves.append(leaves[0])  # the same model twice in one list is not a cycle
    old = Leaf._telemetry_rules
    Leaf._telemetry_rules = chosen
    try:
        tree = Tree.model_construct(label=label, leaf=leaf, leaves=leaves, more=more)
        reference = TreeByMethod.model_construct(
            label=label, leaf=twin(leaf), leaves=twin(leaves), more=twin(more)
        )
        for _ in range(2):  # the second time, with warm memos
            got = serialize_for_telemetry(
                tree, key_provider=PROVIDER, by_alias=by_alias, max_string_chars=max_chars
            )
            expected = serialize_for_telemetry(
                reference, key_provider=PROVIDER, by_alias=by_alias, max_string_chars=max_chars
            )
            assert repr(got) == repr(expected)
    finally:
        Leaf._telemetry_rules = old


def test_class_rules_are_what_telemetry_keys_returns() -> None:
    """By default _telemetry_keys() returns a copy of _telemetry_rules, or None."""
    leaf = Leaf()
    assert leaf._telemetry_keys() == {"path": C.HASH}
    assert leaf._telemetry_keys() is not Leaf._telemetry_rules
    assert LeafByMethod.__mro__[1]._telemetry_rules is None  # TelemetryModel's default
    assert TelemetryModel()._telemetry_keys() is None


def test_model_cycles_through_declared_fields_are_cut() -> None:
    """A model reached again through a field declared as a model (or a list of them) is
    cut with the marker, as through any other field."""
    tree = Tree.model_construct(label="x", leaf=None, leaves=[], more=None)
    tree.leaves.append(tree)  # type: ignore[arg-type]
    tree.leaf = tree  # type: ignore[assignment]
    out = serialize_for_telemetry(tree, key_provider=PROVIDER)
    assert out == {"label": 1, "leaf": CYCLE_MARKER, "leaves": [CYCLE_MARKER], "more": None}


@pytest.mark.parametrize("kind", KINDS)
def test_class_rules_work_on_every_kind(kind: str) -> None:
    """_telemetry_rules applies on pydantic, attrs and dataclass models, and a later change
    of them, or a hook added later, is honoured by the next call."""
    rules_: ClassVar[Mapping[FilteredKey, AnonymityConversion]] = {K("path"): C.FORBIDDEN}
    if kind == "pydantic":

        class Model(TelemetryModel):
            _telemetry_rules = rules_  # type: ignore[misc]
            path: str = "/home/alice/x"
            n: int = 1

        obj: Any = Model()
    elif kind == "attrs":

        @attrs.define
        class AModel(TelemetryMixin):
            _telemetry_rules = rules_  # type: ignore[misc]
            path: str = "/home/alice/x"
            n: int = 1

        obj = AModel()
    else:

        @dataclasses.dataclass
        class DModel(TelemetryMixin):
            _telemetry_rules = rules_  # type: ignore[misc]
            path: str = "/home/alice/x"
            n: int = 1

        obj = DModel()
    assert serialize_for_telemetry(obj) == {"n": 1}
    type(obj)._telemetry_rules = {K("n"): C.BOOLEAN}
    assert serialize_for_telemetry(obj) == {"path": scrub("/home/alice/x"), "n": True}
    type(obj)._telemetry_handler = lambda self, data: {"n": data["n"]}
    assert serialize_for_telemetry(obj) == {"n": True}


def test_class_rules_that_are_not_a_mapping_are_an_error() -> None:
    """_telemetry_rules must be a mapping: anything else raises TelemetryRuleError."""

    @dataclasses.dataclass
    class Wrong(TelemetryMixin):
        _telemetry_rules = [("n", C.COUNT)]  # type: ignore[assignment]
        n: int = 1

    with pytest.raises(TelemetryRuleError, match="not a mapping"):
        serialize_for_telemetry(Wrong())
