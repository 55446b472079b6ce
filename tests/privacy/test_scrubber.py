"""The scrubber: the last line of defence every outgoing string passes through."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import string
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from codeweaver_telemetry.privacy import detectors as detectors_module
from codeweaver_telemetry.privacy import scrubber as scrubber_module
from codeweaver_telemetry.privacy.scrubber import (
    DEFAULT_PATTERNS,
    SECRET_MARKER,
    Pattern,
    Scrubber,
    is_secret_key,
    scrub,
)

MARKERS = scrubber_module.MARKERS
ALL_MARKERS_TEXT = " ".join(MARKERS)

# Obviously fake token bodies of realistic lengths.
B36 = "A1b2C3d4E5" * 3 + "f6G7h8"
B40 = "Zy9Xw8Vu7T" * 4
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjoxOTAwMDAwMDAwfQ"
    ".c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
)
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
PROPERTY = settings(max_examples=200, deadline=None)


# ---------------------------------------------------------------------------------------------
# One realistic example per kind of catch
# ---------------------------------------------------------------------------------------------

CATCHES = [
    # e-mail addresses
    ("login failed for alice.smith+dev@example.co.uk (3 tries)", "alice.smith", "<email>"),
    ("invite sent to bob%40example.org via https://x.io/?to=", "bob%40example", "<email>"),
    ("ssh: connect to carol@10.0.0.5 port 22 refused", "carol@", "<email>"),
    # home and absolute paths on every OS
    ('File "/home/alice/project/app.py", line 3, in main', "alice", "<path>"),
    ("cannot read /root/.ssh/id_ed25519", "/root/.ssh", "<path>"),
    ("opened /Users/bob/Library/Caches/index.db", "bob", "<path>"),
    (r"C:\Users\Alice Smith\AppData\Local\app\log.txt not found", "Smith", "<path>"),
    (r"C:\Users\Alice Smith\AppData\Local\app\log.txt not found", "Alice", "<path>"),
    ("saved C:/Users/carol/Desktop/notes.md", "carol", "<path>"),
    (r"home is C:\Users\Dana Scully", "Scully", "<path>"),
    (r"copied to \\fileserver01\finance\q3.xlsx", "fileserver01", "<path>"),
    ("config at ~erin/.config/app.toml", "erin", "<path>"),
    ("config at ~frank", "frank", "<path>"),
    ("edited ~/secret-project/main.py", "secret-project", "<path>"),
    ("open file:///home/gina/Documents/cv.pdf", "gina", "<path>"),
    ("cat /etc/passwd", "/etc/passwd", "<path>"),
    ("loaded /opt/app/plugins/x.py", "/opt/app", "<path>"),
    ("data dir /var/lib/postgresql/16/main", "postgresql", "<path>"),
    ("PATH=/usr/bin:/home/hank/bin", "hank", "<path>"),
    # network addresses
    ("connect to 192.168.1.42:5432 failed", "192.168.1.42", "<ip>"),
    ("peer 2001:0db8:85a3:0000:0000:8a2e:0370:7334 reset", "8a2e:0370", "<ip>"),
    ("link-local fe80::1ff:fe23:4567:890a up", "fe80::1ff", "<ip>"),
    ("listening on [2001:db8::1]:8080", "2001:db8::1", "<ip>"),
    ("mapped ::ffff:10.0.0.1 accepted", "10.0.0.1", "<ip>"),
    ("bound to fd12::1 only", "fd12::1", "<ip>"),
    ("nic aa:bb:cc:dd:ee:ff is up", "aa:bb:cc:dd:ee:ff", "<mac>"),
    ("nic AA-BB-CC-DD-EE-0F is up", "AA-BB-CC-DD-EE-0F", "<mac>"),
    # URLs with credentials or secret query values
    ("clone https://ivan:hunter2@git.example.com/repo.git", "hunter2", "<credentials>"),
    ("db postgres://admin:s3cr3t@db.internal:5432/app", "s3cr3t", "<credentials>"),
    ("GET https://api.example.com/v1/items?token=abc123xyz&page=2", "abc123xyz", "<secret>"),
    ("GET https://api.example.com/v1/items?page=2&api_key=k3y9", "k3y9", "<secret>"),
    ("redirect https://app.example.com/cb#access_token=at_55aa", "at_55aa", "<secret>"),
    ("https://bucket.s3.amazonaws.com/f?X-Amz-Signature=9f8e7d6c", "9f8e7d6c", "<secret>"),
    ("https://acct.blob.core.windows.net/c/f?sv=2022&sig=Zm9vYmFy", "Zm9vYmFy", "<secret>"),
    # tokens in HTTP authentication
    (f"token {JWT} expired", JWT.split(".")[1], "<jwt>"),
    (f"token {JWT} expired", JWT.split(".")[2], "<jwt>"),
    ("sending Bearer abc123def456ghi", "abc123def456ghi", SECRET_MARKER),
    ("sending Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA", SECRET_MARKER),
    ("Authorization: Bearer xyz", "xyz", SECRET_MARKER),
    ('curl -H "Authorization: Bearer tok_9f8e7d" https://api.x.io', "9f8e7d", SECRET_MARKER),
    # private keys
    (f"key:\n{PEM}\ndone", "MIIEowIBAAKCAQEA", "<private_key>"),
    (f"{PEM[:90]}", "MIIEowIBAAKCAQEA", "<private_key>"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n", "b3BlbnNza", "<private_key>"),
    (
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBk=\n-----END EC PRIVATE KEY-----",
        "MHcCAQ",
        "<private_key>",
    ),
    ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkq\n", "MIIFHzBJ", "<private_key>"),
    (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n-----END PRIVATE KEY-----",
        "MIIEvQ",
        "<private_key>",
    ),
    # vendor tokens
    ("aws key AKIAIOSFODNN7EXAMPLE in env", "IOSFODNN7EXAMPLE", "<aws_key>"),
    ("sts key ASIAY34FZKBOKMUTVV7A", "Y34FZKBOKMUTVV7A", "<aws_key>"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtn", "<secret>"),
    (f"push with ghp_{B36}", B36, "<github_token>"),
    (f"app token ghs_{B36}", B36, "<github_token>"),
    (f"oauth gho_{B36}", B36, "<github_token>"),
    (f"user ghu_{B36} refresh ghr_{B36}", B36, "<github_token>"),
    (f"fine-grained github_pat_{B36[:22]}_{B40}{B36[:19]}", B40, "<github_token>"),
    ("gitlab glpat-xYz12_AbC34-dEf56gHi78", "xYz12_AbC34", "<gitlab_token>"),
    ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGh", "<slack_token>"),
    ("slack xoxp-123456789012-1234567890123-9876543210", "9876543210", "<slack_token>"),
    (f"openai sk-{B36}{B36[:12]}", B36, "<openai_key>"),
    (f"openai sk-proj-{B40}_{B36}-x", B40, "<openai_key>"),
    (f"anthropic sk-ant-api03-{B40}{B36}-AA", B40, "<anthropic_key>"),
    (f"stripe sk_live_{B36[:24]}", B36[:24], "<stripe_key>"),
    (f"stripe rk_test_{B36[:24]}", B36[:24], "<stripe_key>"),
    (f"google AIza{B36[:35]}", B36[:35], "<google_key>"),
    (f"hub hf_{B36[:34]}", B36[:34], "<hf_token>"),
    (f"posthog phx_{B40}abc", B40, "<posthog_key>"),
    # assignments under secret-sounding keys
    ("password=hunter2&user=bob", "hunter2", SECRET_MARKER),
    ('{"password": "correct horse battery staple"}', "horse", SECRET_MARKER),
    ("{'client_secret': 'cs-9f8e'}", "cs-9f8e", SECRET_MARKER),
    ("'api_key'='k-1234 5678'", "5678", SECRET_MARKER),
    ("export API_TOKEN=tkn_7890", "tkn_7890", SECRET_MARKER),
    ("GitHub-Token: abc987", "abc987", SECRET_MARKER),
    ("db.password = 'p@ss w0rd'", "w0rd", SECRET_MARKER),
    ("session_id=f00dcafe; path=/", "f00dcafe", SECRET_MARKER),
    ("x-api-key: K9x8Y7", "K9x8Y7", SECRET_MARKER),
    ("mysql --password hunter3 -h db", "hunter3", SECRET_MARKER),
    ("curl -u jane:pa55 https://x.io", "pa55", "<credentials>"),
]


@pytest.mark.parametrize(("text", "secret", "marker"), CATCHES)
def test_each_kind_of_secret_is_replaced_by_its_marker(text: str, secret: str, marker: str) -> None:
    """A realistic example of every kind of secret loses the secret and gains its marker."""
    assert secret in text
    scrubbed = scrub(text)
    assert secret not in scrubbed
    assert marker in scrubbed


# ---------------------------------------------------------------------------------------------
# Ordinary telemetry is left alone
# ---------------------------------------------------------------------------------------------

UNCHANGED = [
    "3.11.7",
    "0.5.0",
    "1.2.3rc1",
    "v2.0.0-beta.1",
    "hybrid",
    "UNDERSTAND",
    "dense",
    "rerank",
    "codeweaver_search",
    "$feature/new_reranker",
    "python",
    "C++",
    "TypeScript",
    "C#",
    "2026-11-23T14:55:02Z",
    "2026-11-23T14:55:02.123456+00:00",
    "123e4567-e89b-12d3-a456-426614174000",
    "12:30:45",
    "Indexing finished in 4.2 seconds for 1,204 files.",
    "The quick brown fox jumps over the lazy dog",
    "token_count=5",
    "tokens: 12",
    "tokens_saved=120, author_count=3, session_count: 7, password_length=12",
    "https://us.i.posthog.com",
    "https://example.com/docs/page",
    "see https://example.com/api/v1/x?page=2&sort=desc",
    "125.5",
    "-3",
    "1e-9",
    "std::vector<int>",
    "a::b",
    "mode: hybrid",
    "N/A",
    "and/or",
    "application/json",
    "1/2 km/h",
    "85%",
    "99.5% of queries under 20 ms",
    "# Results\n\n- **dense**: 12\n- _sparse_: 3\n\n[docs](https://example.com/docs)",
    "| lang | files |\n|---|---|\n| python | 12 |",
    "Basic authentication is disabled",
    "use a Bearer token.",
    "task-1234567890abcdefghijklmnopqrstuvwxyz",
    "mask_live_abcdefghijklmnopqrstuvwxyz",
    "risk-free-abcdefghijklmnopqrstuvwxyz0123",
    "dead::beef",
    "1.2.3.4.5",
    "phc_abcdefghijklmnopqrstuvwxyz0123456789",
]


@pytest.mark.parametrize("text", UNCHANGED)
def test_ordinary_telemetry_is_returned_unchanged(text: str) -> None:
    """Versions, enums, languages, timestamps, UUIDs, numbers, URLs and prose pass through."""
    assert scrub(text) == text


# ---------------------------------------------------------------------------------------------
# Exact shapes of the output
# ---------------------------------------------------------------------------------------------

EXACT = [
    ("password=hunter2&user=bob", "password=<secret>&user=bob"),
    ('{"password": "hunter two", "n": 1}', '{"password": "<secret>", "n": 1}'),
    ("'secret'='x y'", "'secret'='<secret>'"),
    ("Authorization: Bearer xyz", "Authorization: Bearer <secret>"),
    ("Bearer abc123def456", "Bearer <secret>"),
    ("https://user:pass@host.example.com/x?y=1", "https://<credentials>@host.example.com/x?y=1"),
    ("https://h.example.com/cb?token=abc&ok=1", "https://h.example.com/cb?token=<secret>&ok=1"),
    ('File "/home/alice/x.py", line 3', 'File "<path>", line 3'),
    (r"C:\Users\Alice Smith\Documents\report.docx", "<path>"),
    ("/home/josé/projets/été.txt", "<path>"),
    ("see /etc/hosts.", "see <path>."),
    ("copied /opt/app and/or N/A", "copied <path> and/or N/A"),
    (
        "http://10.0.0.1/api/v1 and http://[::1]:8080/x",
        "http://<ip>/api/v1 and http://[::1]:8080/x",
    ),
    ('{"path": "C:\\\\Users\\\\bob\\\\x.py"}', '{"path": "<path>"}'),
    ("private_key: " + PEM, "private_key: <private_key>"),
    (f"sk-ant-api03-{B40}", "<anthropic_key>"),
    (f"sk-{B40}", "<openai_key>"),
]


@pytest.mark.parametrize(("text", "expected"), EXACT)
def test_only_the_secret_part_is_replaced(text: str, expected: str) -> None:
    """Keys, separators, quotes, hosts and auth-scheme words stay; the secret goes whole."""
    assert scrub(text) == expected


def test_nothing_of_a_path_survives() -> None:
    """A path becomes exactly <path>: no drive, user, directory or file name is left."""
    text = r"C:\Users\Alice Smith\My Projects\demo\main.py"
    assert scrub(text) == "<path>"
    assert scrub("/Users/al/Library/Application Support/Code/x.json ok") == "<path> ok"
    assert scrub("~/My Documents/cv.pdf") == "<path>"


def test_a_truncated_private_key_is_removed_to_its_last_key_character() -> None:
    """A PEM block without END line loses all of its body, not just the BEGIN line."""
    text = '-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0\\nAQEFAASC", "user": "bob"}'
    scrubbed = scrub(text)
    assert "MIIE" not in scrubbed
    assert "AQEFAASC" not in scrubbed
    assert scrubbed.endswith('"user": "bob"}')


def test_anthropic_keys_get_anthropic_marker_not_openai() -> None:
    """``sk-ant-`` is Anthropic even though OpenAI keys also start with ``sk-``."""
    scrubbed = scrub(f"key sk-ant-admin01-{B40}{B36}")
    assert "<anthropic_key>" in scrubbed
    assert "<openai_key>" not in scrubbed


# ---------------------------------------------------------------------------------------------
# is_secret_key
# ---------------------------------------------------------------------------------------------

SECRET_KEYS = [
    "password",
    "PASSWORD",
    "passwd",
    "pwd",
    "secret",
    "token",
    "GitHub-Token",
    "githubToken",
    "x-api-key",
    "api_key",
    "apikey",
    "API KEY",
    "aws_secret_access_key",
    "AWS_ACCESS_KEY",
    "Authorization",
    "auth",
    "db.password",
    "credentials",
    "credential",
    "private_key",
    "session",
    "session_id",
    "sessionId",
    "cookie",
    "Set-Cookie",
    "secret_key",
    "client_secret",
    "signature",
    "X-Amz-Signature",
    "sig",
    " token ",
]
NOT_SECRET_KEYS = [
    "token_count",
    "tokens",
    "tokens_saved",
    "author_count",
    "author",
    "session_count",
    "password_length",
    "secret_sauce_enabled",
    "auth_method_count",
    "monkey",
    "key",
    "name",
    "signature_count",
    "",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_sounding_keys_are_secret(key: str) -> None:
    """A key whose last word is a secret word is secret, whatever its case and separators."""
    assert is_secret_key(key)


@pytest.mark.parametrize("key", NOT_SECRET_KEYS)
def test_keys_whose_last_word_is_harmless_are_not_secret(key: str) -> None:
    """A secret word that is not the last word (``token_count``) does not make a key secret."""
    assert not is_secret_key(key)


def test_is_secret_key_handles_huge_keys() -> None:
    """Only the end of a key decides, so a megabyte key is answered at once."""
    assert is_secret_key("x" * 1_000_000 + "_password")
    assert not is_secret_key("password_" + "x" * 1_000_000)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

ACME = Pattern("acme_token", r"acme_[0-9a-f]{16}", "<acme_token>", "ACME internal tokens")


def test_extra_patterns_add_to_the_defaults_without_changing_them() -> None:
    """extra_patterns extends a copy: the module defaults and scrub() stay as they were."""
    before = DEFAULT_PATTERNS
    custom = Scrubber(extra_patterns=[ACME])
    text = "acme_0123456789abcdef from alice@example.com"
    assert custom(text) == "<acme_token> from <email>"
    assert scrub(text) == "acme_0123456789abcdef from <email>"
    assert before is DEFAULT_PATTERNS
    assert ACME not in DEFAULT_PATTERNS
    assert custom.patterns[0] == ACME
    assert custom.patterns[1:] == DEFAULT_PATTERNS


def test_patterns_replace_the_defaults() -> None:
    """patterns= is the whole rule set; a list passed in is copied, not kept."""
    rules = [ACME]
    custom = Scrubber(patterns=rules)
    rules.append(DEFAULT_PATTERNS[0])
    assert custom.patterns == (ACME,)
    assert custom("acme_0123456789abcdef alice@example.com") == "<acme_token> alice@example.com"
    assert custom("hybrid") == "hybrid"


def test_a_secret_group_limits_what_is_replaced() -> None:
    """A custom pattern with a ``secret`` group keeps the rest of its match."""
    pin = Pattern("pin", r"\bPIN (?P<secret>\d{4,8})\b", "<pin>", "card terminals")
    assert Scrubber(patterns=[pin])("entered PIN 123456 twice") == "entered PIN <pin> twice"


def test_custom_patterns_may_reuse_group_names() -> None:
    """Named groups of different patterns do not clash once combined."""
    one = Pattern("one", r"(?P<q>['\"])one(?P=q)", "<one>")
    two = Pattern("two", r"(?P<q>['\"])two(?P=q)", "<two>")
    assert Scrubber(patterns=[one, two])("'one' \"two\" 'two\"") == "<one> <two> 'two\""


@pytest.mark.parametrize(
    ("regex", "message"),
    [
        ("(unclosed", "not a valid regex"),
        (r"(a)\1", "named back-references"),
        (r"(a)?(?(1)b|c)", "named conditionals"),
        ("x*", "empty string"),
    ],
)
def test_unusable_patterns_are_refused(regex: str, message: str) -> None:
    """A pattern that cannot work inside the combined regex is refused when it is made."""
    with pytest.raises(ValueError, match=message):
        Pattern("bad", regex, "<bad>")


def test_a_scrubber_needs_patterns_and_a_pattern_needs_a_marker() -> None:
    """An empty rule set or a rule without name or marker is a configuration error."""
    with pytest.raises(ValueError, match="at least one pattern"):
        Scrubber(patterns=[])
    with pytest.raises(ValueError, match="name and a marker"):
        Pattern("x", "x", "")


def test_patterns_are_frozen() -> None:
    """A Pattern cannot be changed after the fact."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        cast(Any, DEFAULT_PATTERNS[0]).marker = "<x>"


def test_default_patterns_are_named_documented_and_typed() -> None:
    """Every default rule has a unique name, a stated source and a <typed> marker."""
    names = [p.name for p in DEFAULT_PATTERNS]
    assert len(names) == len(set(names))
    for pattern in DEFAULT_PATTERNS:
        assert pattern.source
        assert re.fullmatch(r"<[a-z_]+>", pattern.marker)
        assert pattern.marker in MARKERS


@pytest.mark.parametrize("marker", [*MARKERS, "<redacted>"])
def test_markers_are_left_alone(marker: str) -> None:
    """Scrubbing output again finds nothing new in a marker, alone or after a key."""
    assert scrub(marker) == marker
    assert scrub(f"password={marker}") == f"password={marker}"
    assert scrub(f"path={marker}/x") == f"path={marker}/x"


# ---------------------------------------------------------------------------------------------
# Robustness
# ---------------------------------------------------------------------------------------------

PATHOLOGICAL = [
    "a" * 100_000,
    "/" * 100_000,
    "\\" * 100_000,
    "@" * 50_000,
    ":" * 50_000,
    "-" * 100_000,
    "." * 100_000,
    "a@" * 50_000,
    "a:" * 50_000,
    "ab::" * 30_000,
    "1." * 50_000,
    "1:" * 50_000,
    "ff:" * 50_000,
    "a." * 50_000,
    "%40" * 30_000,
    "password=" * 20_000,
    "password: a " * 20_000,
    'token="\\' * 50_000,
    "http://a" * 50_000,
    "x:/a" * 50_000,
    "=/a:b" * 40_000,
    "s://u:a/" * 40_000,
    "-----BEGIN PRIVATE KEY-----" * 10_000,
    "C:\\a " * 30_000,
    "~a/" * 30_000,
    "eyJaaaaaa." * 50_000,
    "Bearer aaaaaa1 " * 30_000,
]


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=lambda t: f"{t[:12]!r}x{len(t)}")
def test_pathological_inputs_finish(text: str) -> None:
    """Inputs built to provoke backtracking are scrubbed in linear time and stay stable."""
    once = scrub(text)
    assert scrub(once) == once


def test_a_megabyte_of_logs_is_scrubbed_whole() -> None:
    """A 1 MB log keeps its shape and loses every address and path."""
    line = "2026-11-23T14:55:02Z INFO mode=hybrid user=alice@example.com dir=/home/alice/p ok\n"
    text = line * (1_000_000 // len(line) + 1)
    scrubbed = scrub(text)
    assert "alice" not in scrubbed
    assert scrubbed.count("<email>") == scrubbed.count("<path>") == text.count("\n")


@pytest.mark.parametrize(
    "text",
    ["", "\x00\x01\x7f", "\ud800 lone surrogate", "\u202e\u200b", "🔑 ключ 鍵", "\r\n\t\v\f"],
)
def test_odd_strings_never_raise(text: str) -> None:
    """Empty strings, control characters, lone surrogates and emoji are handled."""
    assert scrub(scrub(text)) == scrub(text)


def test_a_failure_inside_the_scrubber_fails_closed() -> None:
    """If scrubbing cannot run, nothing of the input is returned (and nothing is raised)."""
    assert scrub(cast(str, b"alice@example.com")) == "<redacted>"


# ---------------------------------------------------------------------------------------------
# Property tests: generated secrets in realistic surroundings
# ---------------------------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdefABCDEF"
B64URL = ALNUM + "-_"
FILLER_WORDS = (
    "request",
    "done",
    "INFO",
    "WARN",
    "search",
    "took",
    "results",
    "retrying",
    "the",
    "query",
    "finished",
    "cache",
    "miss",
    "ok",
    "chunks",
)


class Secret(NamedTuple):
    """Generated sensitive text, the parts that must vanish, and text that may legitimately stay."""

    text: str
    parts: tuple[str, ...]
    kept: tuple[str, ...] = ()
    marker: str = ""


def _text(alphabet: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=min_size, max_size=max_size)


def _with_digit(alphabet: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return _text(alphabet, min_size, max_size).filter(lambda s: any(c.isdigit() for c in s))


fillers = st.lists(
    st.tuples(st.sampled_from(FILLER_WORDS), st.sampled_from([" ", ", ", ". ", " - ", "; "])),
    max_size=5,
).map(lambda pairs: "".join(w + sep for w, sep in pairs) + "end")

posix_users = st.from_regex(r"[a-z_][a-z0-9_]{2,11}", fullmatch=True)
segments = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,10}(\.[a-z]{1,4})?", fullmatch=True)
win_users = st.lists(st.from_regex(r"[A-Z][a-z]{2,8}", fullmatch=True), min_size=1, max_size=2)


@st.composite
def emails(draw: st.DrawFn) -> Secret:
    local = draw(st.from_regex(r"[a-z0-9]{3,10}([._+-][a-z0-9]{1,8}){0,2}", fullmatch=True))
    labels = draw(
        st.lists(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True), min_size=1, max_size=3)
    )
    tld = draw(st.from_regex(r"[a-z]{2,6}", fullmatch=True))
    address = f"{local}@{'.'.join(labels)}.{tld}"
    return Secret(address, (local, address), marker="<email>")


@st.composite
def home_paths(draw: st.DrawFn) -> Secret:
    rest = draw(st.lists(segments, max_size=3))
    kind = draw(st.sampled_from(["linux", "mac", "windows", "unc", "tilde", "file"]))
    if kind == "windows":
        words = draw(win_users)
        user = " ".join(words)
        sep = draw(st.sampled_from(["\\", "/"]))
        drive = draw(st.sampled_from("CDE"))
        path = sep.join([f"{drive}:", "Users", user, *rest])
        return Secret(path, (user, *words), marker="<path>")
    user = draw(posix_users)
    if kind == "unc":
        server = draw(st.from_regex(r"[a-z][a-z0-9-]{3,10}", fullmatch=True))
        path = "\\".join(["", "", server, "home", user, *rest])
        return Secret(path, (server, user), marker="<path>")
    root = {"linux": "/home/", "mac": "/Users/", "tilde": "~", "file": "file:///home/"}[kind]
    path = root + "/".join([user, *rest])
    return Secret(path, (user, path), marker="<path>")


@st.composite
def absolute_paths(draw: st.DrawFn) -> Secret:
    root = draw(st.sampled_from(["/etc", "/opt", "/var/lib", "/srv", "/usr/local", "/tmp"]))
    rest = draw(st.lists(segments, min_size=1, max_size=4))
    path = "/".join([root, *rest])
    return Secret(path, (path, "/".join(rest)), marker="<path>")


octets = st.integers(0, 255).map(str)
# Loopback and the unspecified address name no machine: they stay (see the loopback test).
ipv4s = (
    st.lists(octets, min_size=4, max_size=4)
    .map(".".join)
    .filter(lambda a: not a.startswith("127.") and a != "0.0.0.0")  # noqa: S104
)


@st.composite
def ip_addresses(draw: st.DrawFn) -> Secret:
    if draw(st.booleans()):
        address = draw(ipv4s)
        return Secret(address, (address,), marker="<ip>")
    groups = draw(st.lists(_text(HEX, 1, 4), min_size=8, max_size=8))
    form = draw(st.sampled_from(["full", "compressed", "v4"]))
    if form == "v4":
        address = "::ffff:" + draw(ipv4s)
    elif form == "compressed":
        start = draw(st.integers(0, 7))
        stop = draw(st.integers(start + 1, 8))
        head, tail = ":".join(groups[:start]), ":".join(groups[stop:])
        assume(head or tail)
        address = f"{head}::{tail}"
    else:
        address = ":".join(groups)
    # Documented gap: a compressed address without any digit (dead::beef) reads as a C++ scope.
    assume(any(c.isdigit() for c in address) and address != "::1")
    return Secret(address, (address,), marker="<ip>")


@st.composite
def mac_addresses(draw: st.DrawFn) -> Secret:
    octs = draw(st.lists(_text("0123456789abcdef", 2, 2), min_size=6, max_size=6))
    address = draw(st.sampled_from([":", "-"])).join(octs)
    address = address.upper() if draw(st.booleans()) else address
    return Secret(address, (address,), marker="<mac>")


@st.composite
def jwts(draw: st.DrawFn) -> Secret:
    header = "eyJ" + draw(_text(B64URL, 10, 30))
    payload = "eyJ" + draw(_text(B64URL, 16, 80))
    signature = draw(_text(B64URL, 16, 43))
    token = f"{header}.{payload}.{signature}"
    return Secret(token, (payload, signature), marker="<jwt>")


def _slack_body() -> st.SearchStrategy[str]:
    return st.tuples(
        _text(string.digits, 10, 13), _text(string.digits, 10, 13), _text(ALNUM, 24, 24)
    ).map("-".join)


VENDORS: list[tuple[list[str], st.SearchStrategy[str], str]] = [
    (["AKIA", "ASIA"], _text(string.ascii_uppercase + string.digits, 16, 16), "<aws_key>"),
    (["ghp_", "gho_", "ghu_", "ghs_", "ghr_"], _text(ALNUM, 36, 36), "<github_token>"),
    (
        ["github_pat_"],
        st.tuples(_text(ALNUM, 22, 22), _text(ALNUM, 59, 59)).map("_".join),
        "<github_token>",
    ),
    (["glpat-"], _text(B64URL, 20, 20), "<gitlab_token>"),
    (["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"], _slack_body(), "<slack_token>"),
    (["sk-"], _text(ALNUM, 48, 48), "<openai_key>"),
    (["sk-proj-", "sk-svcacct-"], _text(B64URL, 40, 120), "<openai_key>"),
    (["sk-ant-api03-", "sk-ant-admin01-"], _text(B64URL, 80, 95), "<anthropic_key>"),
    (["sk_live_", "rk_live_", "sk_test_", "rk_test_"], _text(ALNUM, 24, 99), "<stripe_key>"),
    (["AIza"], _text(B64URL, 35, 35), "<google_key>"),
    (["hf_"], _text(ALNUM, 34, 34), "<hf_token>"),
    (["phx_"], _text(ALNUM, 43, 43), "<posthog_key>"),
]


@st.composite
def vendor_tokens(draw: st.DrawFn) -> Secret:
    prefixes, bodies, marker = draw(st.sampled_from(VENDORS))
    prefix, body = draw(st.sampled_from(prefixes)), draw(bodies)
    return Secret(prefix + body, (body,), marker=marker)


SECRET_WORD_FORMS = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apiKey",
    "api-key",
    "auth",
    "authorization",
    "credentials",
    "private_key",
    "session",
    "session_id",
    "cookie",
    "access_key",
    "secret_key",
    "signature",
    "sig",
]
KEY_PREFIXES = ["", "db_", "aws_secret_", "github-", "x-", "my.", "client_", "SERVICE_", "user "]


@st.composite
def secret_keys(draw: st.DrawFn) -> str:
    word = draw(st.sampled_from(SECRET_WORD_FORMS))
    word = draw(st.sampled_from([word, word.upper(), word[:1].upper() + word[1:]]))
    return draw(st.sampled_from(KEY_PREFIXES)) + word


# Unquoted values stop at whitespace and at & , ; " ' as documented; quoted ones may hold spaces.
unquoted_values = _with_digit(ALNUM + "!@#$%^*_+./:~=", 6, 30).filter(
    lambda v: v[0] in ALNUM and not v.endswith((".", ":"))
)
quoted_values = _with_digit(ALNUM + " !@#$%^*_+./:~=&,;", 6, 30).filter(lambda v: v[0] in ALNUM)


@st.composite
def secret_assignments(draw: st.DrawFn) -> Secret:
    key = draw(secret_keys())
    style = draw(st.integers(0, 7))
    value = draw(quoted_values if style >= 3 else unquoted_values)
    text = [
        f"{key}={value}",
        f"{key}: {value}",
        f"export {key.upper().replace(' ', '_').replace('-', '_').replace('.', '_')}={value}",
        f'"{key}": "{value}"',
        f"'{key}'='{value}'",
        f'{key} = "{value}"',
        f"{key}: '{value}'",
        f'{key} => "{value}"',
    ][style]
    return Secret(text, (value,), kept=(key,), marker=SECRET_MARKER)


@st.composite
def url_secrets(draw: st.DrawFn) -> Secret:
    host = draw(st.from_regex(r"[a-z]{3,10}\.(example|internal)\.(com|io|net)", fullmatch=True))
    path = "/" + "/".join(
        draw(st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), max_size=3))
    )
    if draw(st.booleans()):
        scheme = draw(
            st.sampled_from(["https", "http", "postgres", "redis", "mongodb+srv", "amqp"])
        )
        user = draw(st.from_regex(r"[a-z][a-z0-9]{3,11}", fullmatch=True))
        password = draw(_with_digit(ALNUM + "!$*-_.~", 6, 24))
        url = f"{scheme}://{user}:{password}@{host}{path}"
        return Secret(url, (user, password), kept=(host, path), marker="<credentials>")
    key = draw(
        st.sampled_from(
            ["token", "access_token", "api_key", "apikey", "sig", "signature", "X-Amz-Signature"]
        )
    )
    value = draw(_with_digit(ALNUM + "%-_~", 8, 40))
    url = f"https://{host}{path}?page=2&{key}={value}&sort=asc"
    return Secret(url, (value,), kept=(host, path, key), marker=SECRET_MARKER)


@st.composite
def auth_headers(draw: st.DrawFn) -> Secret:
    if draw(st.booleans()):
        token = draw(_with_digit(B64URL, 12, 60).filter(lambda t: t[0] != "-"))
        scheme = "Bearer"
    else:
        user, password = draw(_text(ALNUM, 3, 12)), draw(_text(ALNUM + "!#$%", 4, 20))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        # Documented: after a bare "Basic" a plain word (``Basic authentication``) is prose.
        assume(not re.fullmatch(r"[A-Z]?[a-z]+", token))
        scheme = "Basic"
    style = draw(st.integers(0, 3))
    text = [
        f"{scheme} {token}",
        f"Authorization: {scheme} {token}",
        f'curl -s -H "Authorization: {scheme} {token}" https://api.example.com/v1',
        f'{{"headers": {{"Authorization": "{scheme} {token}"}}}}',
    ][style]
    return Secret(text, (token.rstrip("="),), marker=SECRET_MARKER)


@st.composite
def private_keys(draw: st.DrawFn) -> Secret:
    kind = draw(st.sampled_from(["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED ", "DSA "]))
    b64 = string.ascii_letters + string.digits + "+/"
    lines = draw(st.lists(_text(b64, 64, 64), min_size=1, max_size=5))
    lines.append(draw(_text(b64, 16, 63)) + "==")
    body = "\n".join(lines)
    header = f"-----BEGIN {kind}PRIVATE KEY-----"
    block = f"{header}\n{body}\n-----END {kind}PRIVATE KEY-----"
    if draw(st.booleans()):  # cut off somewhere after the first 16 characters of the body
        block = block[: len(header) + 1 + draw(st.integers(16, len(body)))]
    parts = tuple(line[:16] for line in lines if line[:16] in block)
    return Secret(block, parts, marker="<private_key>")


@st.composite
def cli_secrets(draw: st.DrawFn) -> Secret:
    if draw(st.booleans()):
        user = draw(st.from_regex(r"[a-z][a-z0-9]{3,9}", fullmatch=True))
        password = draw(_with_digit(ALNUM + "!$*_.~", 6, 20))
        text = f"curl -u {user}:{password} https://x.example.com"
        return Secret(text, (user, password), marker="<credentials>")
    flag = draw(st.sampled_from(["--password", "--db-password", "--api-key", "--token", "-secret"]))
    value = draw(unquoted_values.filter(lambda v: not v.startswith("-")))
    return Secret(f"tool {flag} {value} --verbose", (value,), kept=(flag,), marker=SECRET_MARKER)


ALL_SECRETS = st.one_of(
    emails(),
    home_paths(),
    absolute_paths(),
    ip_addresses(),
    mac_addresses(),
    jwts(),
    vendor_tokens(),
    secret_assignments(),
    url_secrets(),
    auth_headers(),
    private_keys(),
    cli_secrets(),
)

Context = Callable[[str, str, str], str]
CONTEXTS: list[Context] = [
    lambda before, s, after: f"{before} {s} {after}",
    lambda before, s, after: f"2026-11-23T14:55:02Z ERROR [worker-3] {before}: {s}\n{after}",
    lambda before, s, after: json.dumps({"event": "error", "message": f"{before} {s} {after}"}),
    lambda before, s, after: json.dumps({"detail": f"{before}\n{s}\n{after}"}, ensure_ascii=False),
    lambda before, s, after: repr({"detail": f"{before} {s} {after}", "n": 3}),
    lambda before, s, after: f"{before}\n\t{s}\n{after}",
]


def _assert_vanishes(secret: Secret, document: str, baseline: str) -> str:
    # Parts of one or two characters are too short to be evidence of a leak.
    parts = [part for part in secret.parts if len(part) >= 3]
    assert parts
    for part in parts:
        # A part that legitimately appears elsewhere (filler, a key, a host, a marker) proves
        # nothing; hypothesis draws another example.
        assume(part not in baseline and part not in ALL_MARKERS_TEXT)
        assume(not any(part in kept for kept in secret.kept))
    scrubbed = scrub(document)
    for part in parts:
        assert part not in scrubbed, (document, scrubbed, part)
    return scrubbed


@PROPERTY
@given(secret=ALL_SECRETS, context=st.sampled_from(CONTEXTS), before=fillers, after=fillers)
def test_generated_secrets_never_survive_in_any_surroundings(
    secret: Secret, context: Context, before: str, after: str
) -> None:
    """A generated secret in a log line, JSON, a repr or across lines loses its sensitive part."""
    _assert_vanishes(secret, context(before, secret.text, after), context(before, "", after))


@PROPERTY
@given(secret=ALL_SECRETS, before=fillers, after=fillers)
def test_generated_secrets_get_their_typed_marker(secret: Secret, before: str, after: str) -> None:
    """Standing alone between filler words, a generated secret is replaced by its own marker."""
    scrubbed = _assert_vanishes(secret, f"{before} {secret.text} {after}", f"{before}  {after}")
    assert secret.marker
    assert secret.marker in scrubbed


@PROPERTY
@given(secret=st.one_of(home_paths(), absolute_paths()), line=st.integers(1, 9999))
def test_paths_in_python_tracebacks_vanish(secret: Secret, line: int) -> None:
    """The file path of every traceback frame becomes <path>; the line number stays."""
    template = (
        'Traceback (most recent call last):\n  File "{}", line {}, in main\n    run()\n'
        "ValueError: bad input"
    )
    document = template.format(secret.text, line)
    scrubbed = _assert_vanishes(secret, document, template.format("", line))
    assert f'File "<path>", line {line}, in main' in scrubbed


@PROPERTY
@given(
    secret=st.one_of(emails(), vendor_tokens(), jwts(), ip_addresses()),
    host=st.sampled_from(["https://api.example.com/v1/search", "http://localhost:8080/x"]),
)
def test_secrets_in_url_queries_vanish_and_the_url_stays(secret: Secret, host: str) -> None:
    """A secret passed as a query value is removed while scheme, host and path remain."""
    document = f"GET {host}?q={secret.text}&page=2 200"
    scrubbed = _assert_vanishes(secret, document, f"GET {host}?q=&page=2 200")
    assert scrubbed.startswith(f"GET {host}?q=")
    assert scrubbed.endswith("&page=2 200")


@PROPERTY
@given(secret=st.one_of(vendor_tokens(), jwts()), var=secret_keys())
def test_tokens_in_shell_commands_vanish(secret: Secret, var: str) -> None:
    """Tokens in curl headers and exported variables of a shell command are removed."""
    name = re.sub(r"[^A-Za-z0-9]", "_", var).upper()
    template = 'export {}={} && curl -H "Authorization: Bearer {}" https://api.example.com'
    document = template.format(name, secret.text, secret.text)
    _assert_vanishes(secret, document, template.format(name, "", ""))


@PROPERTY
@given(
    secrets=st.lists(ALL_SECRETS, min_size=1, max_size=4),
    joiner=st.sampled_from(["", " ", ",", "\n"]),
)
def test_scrubbing_mixed_documents_is_idempotent(secrets: list[Secret], joiner: str) -> None:
    """Secrets of every kind, even glued to each other, give output that scrubs to itself."""
    once = scrub(joiner.join(s.text for s in secrets))
    assert scrub(once) == once


@PROPERTY
@given(text=st.text())
def test_scrub_is_idempotent_on_arbitrary_text(text: str) -> None:
    """scrub(scrub(x)) == scrub(x) for any text at all."""
    once = scrub(text)
    assert scrub(once) == once


@PROPERTY
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300) | st.binary().map(repr))
def test_scrub_never_raises_and_returns_a_string(text: str) -> None:
    """Any text, including control characters and escapes, comes back as a string."""
    assert isinstance(scrub(text), str)


@PROPERTY
@given(
    prefix=st.sampled_from(["", "db", "aws", "github", "my", "user"]),
    sep=st.sampled_from(["_", "-", ".", ""]),
    word=st.sampled_from([*SECRET_WORD_FORMS, "count", "length", "tokens", "author", "enabled"]),
    suffix=st.sampled_from(["", "_count", "-length", ".enabled", "_saved"]),
)
def test_is_secret_key_and_text_assignments_agree(
    prefix: str, sep: str, word: str, suffix: str
) -> None:
    """A key is scrubbed in ``key=value`` text exactly when is_secret_key says it is secret."""
    key = f"{prefix}{sep if prefix else ''}{word}{suffix}"
    expected = word in SECRET_WORD_FORMS and not suffix
    assert is_secret_key(key) is expected
    assert (scrub(f"{key}=v4lue9") == f"{key}=<secret>") is expected


# The pre-check ----------------------------------------------------------------------------
_NEAR_MISSES = ["Bear", "Basi", "sk", "gh", "AKI", "AIz", "eyj", "xo", "hf", "phx", "npm", "pyp"]
_NO_TRIGGER_TEXT = st.lists(
    st.text(
        alphabet=st.characters(
            blacklist_characters="@:=/\\~-", blacklist_categories=("Cs",), max_codepoint=0x2FF
        ),
        max_size=30,
    )
    | st.sampled_from(_NEAR_MISSES),
    max_size=8,
).map(" ".join)


@PROPERTY
@given(text=_NO_TRIGGER_TEXT)
def test_text_without_a_trigger_is_never_changed_by_the_full_pass(text: str) -> None:
    """The cheap pre-check never skips text the full regex would have changed."""
    from codeweaver_telemetry.privacy import scrubber as module

    assume(not module._may_match(text))
    assert module._DEFAULT_SCRUBBER._pass(text)[0] == text


def _full_pass(text: str) -> str:
    """One pass of every stage with every pattern: no pre-check, no gates, no fast exit."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scrubber_module, "_open_gates", lambda _text: -1)  # every gate open
        return scrubber_module._DEFAULT_SCRUBBER._pass(text, regex=True, numbers=True)[0]


_VENDOR_PREFIXES = sorted({p for rule in detectors_module.VENDOR_TOKENS for p in rule.prefixes})


@PROPERTY
@given(
    text=st.from_regex(scrubber_module._FAST_SAFE, fullmatch=True)
    | st.text(alphabet=string.ascii_letters + "_#$", min_size=15, max_size=19)
    | st.text(alphabet="abcdefABCDEF_0123456789", max_size=19)
    | st.builds(
        lambda prefix, body: (prefix + body)[:19],
        st.sampled_from(_VENDOR_PREFIXES),
        st.text(alphabet=string.ascii_letters + "_", max_size=19),
    )
)
def test_the_fast_exit_gives_what_the_full_pass_gives(text: str) -> None:
    """A short identifier or enum value that ends at the fast exit is what the full pass
    makes of it: unchanged (no token without a digit is shorter than 20 characters)."""
    assume(scrubber_module._FAST_SAFE.fullmatch(text) is not None)
    assert scrub(text) == text
    assert _full_pass(text) == text


@PROPERTY
@given(text=_NO_TRIGGER_TEXT | st.text(max_size=60))
def test_the_pre_check_and_gates_give_what_the_full_pass_gives(text: str) -> None:
    """Whatever the pre-check skips and the gates leave out, one pass gives what one pass of
    every stage with every pattern gives."""
    assert scrubber_module._DEFAULT_SCRUBBER._pass(text)[0] == _full_pass(text)


def test_every_letter_a_case_insensitive_regex_reads_as_ascii_is_folded() -> None:
    """``(?i:s)`` also matches ``ſ``, ``(?i:k)`` the Kelvin sign, ``(?i:i)`` ``İ`` and ``ı``:
    the gates read such text with those letters as ASCII, or they would miss what the
    patterns find."""
    everything = "".join(map(chr, range(0x110000)))
    found = {char for char in re.findall("(?i)[a-z]", everything) if not char.isascii()}
    assert found == set("".join(scrubber_module._FOLDS.values()))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("paſſword=hunter2hunter2", "paſſword=<secret>"),
        ("the paſſword is Copper!Saffron60", "the paſſword is <secret>"),
        ("CREATE USER x IDENTıFIED BY 'S3cr3t!Pass'", "CREATE USER x IDENTıFIED BY '<secret>'"),
    ],
)
def test_letters_that_fold_to_ascii_are_scrubbed_as_the_patterns_read_them(
    text: str, expected: str
) -> None:
    """A secret word spelt with ``ſ`` or ``ı`` is one to the patterns, so also to the gates."""
    assert scrub(text) == expected
    assert _full_pass(text) == expected
