"""Long strings are cut before scrubbing; a secret that the cut splits never leaks a fragment.

Every check puts a secret at every offset around the cut: a filler that the scrubber shrinks
(a long path becomes ``<path>``) comes first, so whatever is left of the secret moves to the
front of the final window, which is where the old cut-then-scrub leaked it.
"""

from __future__ import annotations

import string
import time
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from codeweaver_telemetry import pipeline
from codeweaver_telemetry._types import Event
from codeweaver_telemetry.privacy.conversions import DISTRIBUTION_KEY_LENGTH
from codeweaver_telemetry.privacy.rules import (
    AnonymityConversion,
    BasedModel,
    FilteredKey,
    serialize_for_telemetry,
)
from codeweaver_telemetry.privacy.scrubber import (
    DEFAULT_PATTERNS,
    SECRET_MARKER,
    TRUNCATION_MARK,
    scrub,
    scrub_cut,
)

PROPERTY = settings(max_examples=30, deadline=None)
GRAM = 4  # any leaked fragment of 4 or more characters holds a leaked 4-gram
MARKERS_TEXT = " ".join({p.marker for p in DEFAULT_PATTERNS} | {SECRET_MARKER, TRUNCATION_MARK})
SUFFIX = " and then some more words" * 4


class Secret(NamedTuple):
    """A secret as it appears in text, and the part of it that must never be sent."""

    text: str
    sensitive: str


def _words(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=low, max_size=high)


LOWER = string.ascii_lowercase
ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
NAME = st.builds(lambda a, b: a + b, st.sampled_from(string.ascii_uppercase), _words(LOWER, 3, 7))


@st.composite
def emails(draw: st.DrawFn) -> Secret:
    local = draw(_words(LOWER, 3, 8)) + "." + draw(_words(LOWER, 3, 8))
    address = f"{local}@{draw(_words(LOWER, 4, 9))}.{draw(st.sampled_from(['com', 'org', 'io']))}"
    return Secret(address, address)


@st.composite
def github_tokens(draw: st.DrawFn) -> Secret:
    body = draw(_words(ALNUM, 36, 40))
    return Secret(f"gh{draw(st.sampled_from('pousr'))}_{body}", body)


@st.composite
def home_paths(draw: st.DrawFn) -> Secret:
    rest = f"{draw(_words(LOWER, 4, 8))}/{draw(_words(LOWER, 4, 8))}/{draw(_words(LOWER, 4, 8))}"
    return Secret(f"/home/{rest}", rest)


@st.composite
def spaced_paths(draw: st.DrawFn) -> Secret:
    """A directory named after a person: the space inside it is no end of the path."""
    rest = f"{draw(NAME)} {draw(NAME)}/{draw(_words(LOWER, 4, 8))}"
    kind = draw(st.sampled_from(["posix", "windows"]))
    if kind == "windows":
        rest = rest.replace("/", "\\")
        return Secret(f"C:\\Users\\{rest}\\notes.txt", rest)
    return Secret(f"/{rest}/notes.txt", rest)


@st.composite
def ipv4s(draw: st.DrawFn) -> Secret:
    # 127.x.x.x is loopback, which names no machine and stays (see test_corpora_recall).
    first = draw(st.integers(11, 223).filter(lambda n: n != 127))
    octets = [first, *(draw(st.integers(10, 254)) for _ in range(3))]
    address = ".".join(map(str, octets))
    return Secret(address, address)


_PLACEHOLDERS = frozenset({"null", "none", "nil", "true", "false", "undefined", "redacted"})


@st.composite
def key_values(draw: st.DrawFn) -> Secret:
    """``key=value``, ``key: several words`` (to the end of the line) and quoted values."""
    key = draw(st.sampled_from(["password", "api_key", "token", "client_secret"]))
    # Placeholder values (null, true, false, ...) hold no secret and stay as they are.
    words = draw(
        st.lists(_words(ALNUM, 5, 10), min_size=1, max_size=3).filter(
            lambda ws: ws[0].lower() not in _PLACEHOLDERS
        )
    )
    form = draw(st.sampled_from(["equals", "colon", "quoted"]))
    if form == "equals":
        return Secret(f"{key}={words[0]}", words[0])
    value = " ".join(words)
    if form == "colon":
        return Secret(f"{key}: {value}", value)
    return Secret(f'{key}="{value}"', value)


@st.composite
def bearer_tokens(draw: st.DrawFn) -> Secret:
    token = draw(_words(ALNUM, 12, 30)) + draw(st.sampled_from(string.digits))
    return Secret(f"Bearer {token}", token)


@st.composite
def private_keys(draw: st.DrawFn) -> Secret:
    body = "\n".join(draw(st.lists(_words(B64, 16, 24), min_size=2, max_size=3)))
    return Secret(f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----", body)


SECRETS = st.one_of(
    emails(),
    github_tokens(),
    home_paths(),
    spaced_paths(),
    ipv4s(),
    key_values(),
    bearer_tokens(),
    private_keys(),
)


def placed(secret: Secret, limit: int) -> Iterator[str]:
    """The secret starting at every offset from just after ``limit`` to just before it.

    The filler before it is a path, which the scrubber turns into a short ``<path>``.
    """
    for k in range(-2, len(secret.text) + 3):
        filler = "/srv/" + "x" * (limit - k - 6)
        yield f"{filler} {secret.text}{SUFFIX}"


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON-like value: keys and values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def leaks(secret: Secret, text: str, outputs: Iterable[str]) -> list[str]:
    """The 4-character fragments of the sensitive part found in ``outputs``.

    Fragments that the input has outside the secret's sensitive part, or that a marker has,
    are not counted: seeing them proves nothing.
    """
    benign = text.replace(secret.sensitive, "\0") + MARKERS_TEXT
    sent = "\0".join(outputs)
    sensitive = secret.sensitive
    grams = {sensitive[i : i + GRAM] for i in range(len(sensitive) - GRAM + 1)}
    return sorted(g for g in grams if g not in benign and g in sent)


class Tagged(BasedModel):
    """A model that sends a DISTRIBUTION of its tags."""

    tags: list[str]

    _telemetry_strict: ClassVar[bool] = True

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {FilteredKey("tags"): AnonymityConversion.DISTRIBUTION}


def run(**fields: Any) -> Event:
    event = pipeline.run(Event(timestamp=0.0, uuid="u", **fields))
    assert event is not None
    return event


def own_properties(event: Event) -> dict[str, Any]:
    return {k: v for k, v in event.properties.items() if not k.startswith("$")}


@PROPERTY
@given(SECRETS)
def test_pipeline_string_values_and_keys_never_leak_a_cut_secret(secret: Secret) -> None:
    """A property value or key longer than the pre-cut, with a secret at any offset around
    the cut, is sent with no fragment of the secret, within MAX_STRING_CHARS/MAX_KEY_CHARS."""
    for text in placed(secret, 2 * pipeline.MAX_STRING_CHARS):
        props = own_properties(run(name="e", properties={"value": text, text: 1}))
        assert leaks(secret, text, strings_in(props)) == [], props
        assert all(len(k) <= pipeline.MAX_KEY_CHARS for k in props)
        assert len(props["value"]) <= pipeline.MAX_STRING_CHARS


@PROPERTY
@given(SECRETS, st.integers(200, 2000))
def test_serialize_for_telemetry_never_leaks_a_cut_secret(secret: Secret, limit: int) -> None:
    """serialize_for_telemetry(max_string_chars=N) sends no fragment of a secret that the
    cut at N splits, wherever the secret sits around N."""
    for text in placed(secret, limit):
        out = serialize_for_telemetry({"value": text}, max_string_chars=limit)
        assert leaks(secret, text, strings_in(out)) == [], out


@PROPERTY
@given(SECRETS)
def test_event_names_never_leak_a_cut_secret(secret: Secret) -> None:
    """A long event name with a secret around its pre-cut is sent with no fragment of it,
    within MAX_NAME_CHARS."""
    for text in placed(secret, 2 * pipeline.MAX_NAME_CHARS):
        name = run(name=text, properties={}).name
        assert leaks(secret, text, [name]) == [], name
        assert 0 < len(name) <= pipeline.MAX_NAME_CHARS


@PROPERTY
@given(SECRETS)
def test_distribution_keys_never_leak_a_cut_secret(secret: Secret) -> None:
    """DISTRIBUTION keys with a secret around their pre-cut hold no fragment of it, through
    the pipeline and through serialize_for_telemetry, within DISTRIBUTION_KEY_LENGTH."""
    for text in placed(secret, 2 * DISTRIBUTION_KEY_LENGTH):
        model = Tagged(tags=[text])
        for tags in (
            own_properties(run(name="e", properties={}, model=model))["tags"],
            model.serialize_for_telemetry()["tags"],
        ):
            assert leaks(secret, text, tags) == [], tags
            assert all(len(key) <= DISTRIBUTION_KEY_LENGTH for key in tags)


def test_a_cut_drops_the_split_word_and_marks_the_cut() -> None:
    """scrub_cut keeps whole words only, ends with the truncation mark, and gives just the
    mark when no whitespace is left; text within the limit is only scrubbed."""
    assert scrub_cut("one two three", 13) == "one two three"
    assert scrub_cut("one two three", 9) == "one two" + TRUNCATION_MARK
    assert scrub_cut("one two three", 8) == "one two" + TRUNCATION_MARK
    assert scrub_cut("one two three", 7) == "one two" + TRUNCATION_MARK
    assert scrub_cut("one two three", 6) == "one" + TRUNCATION_MARK
    assert scrub_cut("x" * 50, 10) == TRUNCATION_MARK
    assert scrub_cut("mail bob@example.com", 30) == scrub("mail bob@example.com")


def test_a_spaced_directory_is_dropped_with_the_word_it_starts_in() -> None:
    """A cut after ``/Alice`` of ``/Alice Smith/notes`` (a lone ``/Alice`` is no path to the
    scrubber) drops ``/Alice`` too; prose with capitals and no slash is kept."""
    assert scrub_cut("see /Alice Smith/notes now", 11) == "see" + TRUNCATION_MARK
    assert scrub_cut("see Alice Smith Jones now", 16) == "see Alice Smith" + TRUNCATION_MARK


def test_a_huge_string_is_not_scrubbed_whole() -> None:
    """Cutting keeps a megabyte string cheap: only the first ``limit`` characters are read."""
    text = ("word " * 200_000) + "x" * 1_000_000
    started = time.perf_counter()
    for _ in range(20):
        out = scrub_cut(text, 2000)
    assert time.perf_counter() - started < 1.0
    assert len(out) <= 2000
