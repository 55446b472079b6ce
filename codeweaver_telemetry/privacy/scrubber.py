# SPDX-License-Identifier: MIT OR Apache-2.0
"""Scrub outgoing text: secrets and personal data become typed markers; a path is only <path>."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "DEFAULT_PATTERNS",
    "SECRET_MARKER",
    "TRUNCATION_MARK",
    "Pattern",
    "Scrubber",
    "cut_words",
    "is_secret_key",
    "scrub",
    "scrub_cut",
]

#: Replaces the value under a secret-sounding key, in text and in mappings alike.
SECRET_MARKER: Final = "<secret>"  # noqa: S105 - a marker, not a credential

#: Ends a string that was cut short.
TRUNCATION_MARK: Final = "\u2026"

# Returned instead of the input if scrubbing ever fails: fail closed, never pass text through.
_FAIL_CLOSED_MARKER: Final = "<redacted>"

# ---------------------------------------------------------------------------------------------
# Secret-sounding key names
# ---------------------------------------------------------------------------------------------

# A key is secret when its LAST word is one of these (``token`` yes, ``token_count`` no).
# An underscore stands for an optional separator, so ``api_key`` also covers ``apiKey``,
# ``x-api-key``, ``API KEY`` and ``apikey``.
_SECRET_WORDS: Final[tuple[str, ...]] = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "private_key",
    "session",
    "session_id",
    "cookie",
    "access_key",
    "secret_key",
    "signing_key",
    "encryption_key",
    "signature",
    "sig",
    "jwt",
)

_KEY_SEP: Final = r"[_.\- ]?"
_SECRET_WORD_RE: Final = (
    "(?i:"
    + "|".join(word.replace("_", _KEY_SEP) for word in sorted(_SECRET_WORDS, key=len, reverse=True))
    + ")"
)
_SECRET_KEY_END: Final = re.compile(_SECRET_WORD_RE + r"\Z")
# The longest secret word with separators is far shorter; only a key's tail can decide.
_KEY_TAIL: Final = 64


@functools.lru_cache(maxsize=4096)
def _secret_key_tail(tail: str) -> bool:
    return _SECRET_KEY_END.search(tail) is not None


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret: its last word sounds like one.

    Case does not matter and ``-``, ``_``, ``.`` and spaces are interchangeable separators,
    so ``GitHub-Token``, ``x-api-key``, ``aws_secret_access_key``, ``Authorization`` and
    ``db.password`` are secret, while ``token_count``, ``tokens``, ``author_count`` and
    ``password_length`` are not: the secret word must come last. Results are cached.
    """
    return _secret_key_tail(key.strip()[-_KEY_TAIL:])


# ---------------------------------------------------------------------------------------------
# Patterns
# ---------------------------------------------------------------------------------------------

_DIGITS: Final = frozenset("0123456789")
# Escapes (skipped), named groups, named back-references and named conditionals in a regex.
_GROUP_SYNTAX: Final = re.compile(
    r"\\(?P<esc>.)|\(\?P<(?P<def>\w+)>|\(\?P=(?P<ref>\w+)\)|\(\?\((?P<cond>\w+)\)",
    re.DOTALL,
)


def _prefix_group_names(regex: str, prefix: str) -> str:
    """Rename every named group of ``regex`` so that many rules can share one alternation."""

    def rename(match: re.Match[str]) -> str:
        if match.group("def") is not None:
            return f"(?P<{prefix}{match.group('def')}>"
        if match.group("ref") is not None:
            return f"(?P={prefix}{match.group('ref')})"
        if match.group("cond") is not None:
            return f"(?({prefix}{match.group('cond')})"
        return match.group(0)

    return _GROUP_SYNTAX.sub(rename, regex)


@dataclass(frozen=True, slots=True)
class Pattern:
    """One scrub rule: whatever ``regex`` matches is replaced by ``marker``.

    If the regex has a group named ``secret``, only that part is replaced and the rest of the
    match (a key and its separator, quotes, a URL's ``://`` and ``@``) stays. Flags must be
    scoped, e.g. ``(?i:...)``, and back-references named, because all rules are merged into
    one alternation. ``source`` says where the format comes from.
    """

    name: str
    regex: str
    marker: str
    source: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.marker:
            raise ValueError("a scrub pattern needs a name and a marker")
        for token in _GROUP_SYNTAX.finditer(self.regex):
            if token.group("esc") in _DIGITS:
                raise ValueError(f"pattern {self.name!r}: use named back-references only")
        if re.search(r"\(\?\(\d", self.regex):
            raise ValueError(f"pattern {self.name!r}: use named conditionals only")
        try:
            compiled = re.compile(f"(?:{self.regex})")
        except re.error as exc:
            raise ValueError(f"pattern {self.name!r} is not a valid regex: {exc}") from exc
        if compiled.fullmatch("") is not None:
            raise ValueError(f"pattern {self.name!r} matches the empty string")


# --- Building blocks --------------------------------------------------------------------------
# Speed: every default regex starts with a literal or a character class, so that the regex
# engine skips a rule at a position with one table look-up. Boundaries are therefore checked by
# a look-behind placed just after the first character.


def _not_after(chars: str, width: int = 1) -> str:
    """A look-behind to put after the first ``width`` characters of a match.

    It holds when the character before the match is none of ``chars``, or when it is the letter
    of a ``\\n``, ``\\r`` or ``\\t`` escape: JSON and repr text put one before every line.
    """
    dots = "." * width
    return rf"(?:(?<![{chars}]{dots})|(?<=\\[nrt]{dots}))"


_NOT_GLUED: Final = _not_after("A-Za-z0-9")  # not glued to a preceding letter or digit
_AFTER_WORD: Final = _not_after(r"\w-")

_OCTET: Final = r"(?:25[0-5]|2[0-4]\d|[01]?\d?\d)"
_V4: Final = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H16: Final = r"[0-9A-Fa-f]{1,4}"
_HEX2: Final = r"[0-9A-Fa-f]{2}"

# Windows: a path segment may hold spaces and apostrophes inside (``Alice Smith``, ``O'Brien``).
_WCH: Final = r"""[^\s\\/:*?"<>|,;']"""
_WSEG_SP: Final = rf"{_WCH}+(?:[ ']{_WCH}+)*"
_WSEG: Final = rf"{_WCH}+(?:'{_WCH}+)*"
_WSEP: Final = r"[\\/]+"
_WTAIL: Final = rf"(?:{_WSEG_SP}{_WSEP})*(?:{_WSEG})?"
_WEND: Final = r"(?<![.)\]}])"
# POSIX: segments end at whitespace, quotes, brackets and the usual text punctuation. A
# directory (not the last segment) may hold single spaces before capitalised words, as in
# ``Application Support/``; prose (``/etc/hosts and then cache/dir``) does not look like that.
_PCH: Final = r"""[^\s/\\"'`<>|:;,()\[\]{}*?=&#]"""
_PSEG_SP: Final = rf"{_PCH}+(?: [A-Z0-9]{_PCH}*)*"
_PTAIL: Final = rf"(?:{_PSEG_SP}/+)*(?:{_PCH}+)?"


def _secret_word_dispatch() -> str:
    """The secret words as "first letter, then the rest", so the rule starts with a class."""
    rests: dict[str, list[str]] = {}
    for word in sorted(_SECRET_WORDS, key=len, reverse=True):
        rests.setdefault(word[0], []).append(word[1:].replace("_", _KEY_SEP))
    first = "".join(letter + letter.upper() for letter in sorted(rests))
    branches = "|".join(f"(?<={letter})(?:{'|'.join(r)})" for letter, r in sorted(rests.items()))
    return f"[{first}](?i:{branches})"


# Secret assignments: ``key=value``, ``key: value``, ``"key": "value"``, ``key => value``.
_SCHEME: Final = r"(?i:bearer|basic|token|digest|negotiate|ntlm)[ \t]+"
_AUTH_SCHEME: Final = rf"(?:{_SCHEME}(?=\S))?"
# A value that starts with a PEM header or with a marker belongs to the rule that owns it; the
# check covers every way to read the separator, so that no shorter reading slips through.
_NOT_OWNED: Final = (
    rf"(?!(?:\\{{0,3}}[\"'])?[ \t]*(?:=>|:=|=|:)[ \t]*(?:{_SCHEME})?"
    r"(?:\\{0,3}[\"'])?(?:-----BEGIN|<[a-z_]+>))"
)
_QUOTED_BODY: Final = r"(?:(?!(?P=oq))(?:\\.|[^\\\n]))*"
_COLON_VALUE: Final = (
    r"(?![\[{])[^\s\"']+(?:[ \t]+(?!-----BEGIN|<[a-z_]+>)[^\s\"']+)*(?<![.,;)\]}])"
)
_EQUALS_VALUE: Final = r"(?![\[{])[^\s\"'&,;]+(?<![.)\]}])"

# One entry per kind of secret. At any position the first entry that matches wins, so the
# order matters: specific vendor formats before generic assignments, paths before addresses.
DEFAULT_PATTERNS: Final[tuple[Pattern, ...]] = (
    # PEM / OpenSSH / PGP private keys (RFC 7468 armour), also when the END line is cut off.
    Pattern(
        "private_key",
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[A-Za-z0-9+/=\s\\:,.]|-(?!----))*"
        r"(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----)?",
        "<private_key>",
        "RFC 7468 textual encoding; OpenSSH and OpenPGP armour use the same frame",
    ),
    # Userinfo of any URL: ``scheme://user:pass@host`` keeps the scheme and the host.
    Pattern(
        "url_credentials",
        r"://(?<=[A-Za-z0-9+.-]://)(?P<secret>[^\s/?#@\"'<>]+)@",
        "<credentials>",
        "RFC 3986 section 3.2.1 userinfo",
    ),
    # ``file:`` URLs are local paths: nothing of them survives.
    Pattern(
        "file_url",
        r"[Ff]" + _not_after("A-Za-z0-9+.-") + r"(?i:ile):/[^\s\"'<>`|]*(?<![.,;)\]}])",
        "<path>",
        "RFC 8089 file URI scheme",
    ),
    # JSON Web Tokens: base64url header and payload, both JSON objects, so both start ``eyJ``.
    Pattern(
        "jwt",
        r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*)?",
        "<jwt>",
        "RFC 7519 compact serialisation",
    ),
    # AWS access key ids: AKIA (long-term), ASIA (STS temporary), ABIA, ACCA + 16 upper alnum.
    Pattern(
        "aws_access_key_id",
        rf"A{_NOT_GLUED}(?:KIA|SIA|BIA|CCA)[A-Z0-9]{{16}}(?![A-Za-z0-9])",
        "<aws_key>",
        "AWS IAM user guide, unique identifier prefixes",
    ),
    # GitHub: classic PATs and app tokens, prefixes ghp_ gho_ ghu_ ghs_ ghr_ + 36 alphanumerics,
    # and fine-grained PATs github_pat_ + 22 + _ + 59.
    Pattern(
        "github_token",
        rf"g{_NOT_GLUED}(?:h[pousr]_[A-Za-z0-9]{{36,}}|ithub_pat_[A-Za-z0-9_]{{22,}})",
        "<github_token>",
        "GitHub docs, 'About authentication to GitHub', token formats",
    ),
    # GitLab: personal (glpat-), deploy (gldt-), runner (glrt-), trigger (glptt-) tokens.
    Pattern(
        "gitlab_token",
        rf"g{_NOT_GLUED}l(?:pat|dt|rt|ptt|soat)-[A-Za-z0-9_-]{{20,}}(?:\.[A-Za-z0-9_-]+)*",
        "<gitlab_token>",
        "GitLab docs, 'Token prefixes'",
    ),
    # Slack: bot (xoxb-), user (xoxp-), app (xoxa-), refresh (xoxr-), legacy (xoxs-, xoxo-),
    # app-level (xapp-).
    Pattern(
        "slack_token",
        rf"x{_NOT_GLUED}(?:ox[abposr]-[A-Za-z0-9-]{{10,}}|app-\d-[A-Za-z0-9-]{{10,}})",
        "<slack_token>",
        "Slack API docs, 'Token types'",
    ),
    # Anthropic: sk-ant-api03-..., sk-ant-admin01-...; listed before OpenAI, which shares sk-.
    Pattern(
        "anthropic_key",
        rf"s{_NOT_GLUED}k-ant-[A-Za-z0-9_-]{{20,}}",
        "<anthropic_key>",
        "Anthropic console, API key format",
    ),
    # OpenAI: legacy sk- + 48, project sk-proj-, service account sk-svcacct-, admin sk-admin-.
    Pattern(
        "openai_key",
        rf"s{_NOT_GLUED}k-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{{20,}}",
        "<openai_key>",
        "OpenAI platform docs, API key formats",
    ),
    # Stripe: secret (sk_) and restricted (rk_) keys in live and test mode.
    Pattern(
        "stripe_key",
        rf"[sr]{_NOT_GLUED}k_(?:live|test)_[A-Za-z0-9]{{16,}}",
        "<stripe_key>",
        "Stripe docs, 'API keys'",
    ),
    # Stripe webhook signing secrets: whsec_ + 24 or more.
    Pattern(
        "stripe_webhook_secret",
        rf"w{_NOT_GLUED}hsec_[A-Za-z0-9]{{24,}}",
        "<stripe_key>",
        "Stripe docs, 'Check the webhook signatures'",
    ),
    # Google API keys: AIza + 35 characters.
    Pattern(
        "google_api_key",
        rf"A{_NOT_GLUED}Iza[A-Za-z0-9_-]{{35,}}",
        "<google_key>",
        "Google Cloud docs, 'Manage API keys'",
    ),
    # Google OAuth: client secrets GOCSPX-, access tokens ya29.
    Pattern(
        "google_oauth",
        rf"[Gy]{_NOT_GLUED}(?:(?<=G)OCSPX-[A-Za-z0-9_-]{{24,}}|(?<=y)a29\.[A-Za-z0-9_-]{{20,}})",
        "<google_key>",
        "Google Identity docs, OAuth 2.0 client secrets and access tokens",
    ),
    # Hugging Face user access tokens: hf_ + 30 or more alphanumerics.
    Pattern(
        "huggingface_token",
        rf"h{_NOT_GLUED}f_[A-Za-z0-9]{{30,}}",
        "<hf_token>",
        "Hugging Face docs, 'User access tokens'",
    ),
    # PostHog personal API keys phx_ (project keys phc_ are public by design and stay).
    Pattern(
        "posthog_personal_key",
        rf"p{_NOT_GLUED}hx_[A-Za-z0-9]{{20,}}",
        "<posthog_key>",
        "PostHog docs, 'Personal API keys'",
    ),
    # npm access tokens: npm_ + 36.
    Pattern(
        "npm_token",
        rf"n{_NOT_GLUED}pm_[A-Za-z0-9]{{36,}}",
        "<npm_token>",
        "npm docs, 'About access tokens'",
    ),
    # PyPI API tokens: macaroons serialised as pypi-AgEIcHlwaS5vcmc... (base64 of 'pypi.org').
    Pattern(
        "pypi_token",
        rf"p{_NOT_GLUED}ypi-AgE[A-Za-z0-9_-]{{50,}}",
        "<pypi_token>",
        "PyPI help, 'API tokens'",
    ),
    # HTTP auth schemes outside a header: ``Bearer <token>``, ``Basic <base64>``; a plain word
    # after the scheme (``Basic authentication``) is prose and stays.
    Pattern(
        "http_auth",
        rf"[Bb]{_AFTER_WORD}(?:earer|EARER|asic|ASIC)[ \t]+"
        r"(?P<secret>(?!-|[A-Z]?[a-z]+(?![A-Za-z0-9_~+/=-]|\.[A-Za-z0-9]))"
        r"[A-Za-z0-9._~+/-]{6,}=*(?<!\.))",
        SECRET_MARKER,
        "RFC 6750 (Bearer) and RFC 7617 (Basic)",
    ),
    # Assignments under a secret-sounding key (same words and last-word rule as is_secret_key):
    # the key and separator stay. Quoted values go whole; ``=`` values end at whitespace, ``&``,
    # ``,`` or ``;``; ``:`` values (HTTP headers, YAML) run to the end of the line.
    Pattern(
        "secret_assignment",
        rf"{_secret_word_dispatch()}{_NOT_OWNED}(?:\\{{0,3}}[\"'])?[ \t]*"
        r"(?:=>|:=|=(?!=)|(?P<colon>:)(?!:))[ \t]*"
        rf"{_AUTH_SCHEME}(?P<oq>\\{{0,3}}[\"'])?"
        rf"(?P<secret>(?(oq){_QUOTED_BODY}|(?(colon){_COLON_VALUE}|{_EQUALS_VALUE})))"
        r"(?(oq)(?P=oq)?)",
        SECRET_MARKER,
        "env files, query strings, HTTP headers, JSON, YAML and keyword arguments",
    ),
    # Command-line flags with a secret-sounding name and a separate value: --password hunter2.
    Pattern(
        "secret_cli_flag",
        rf"-{_AFTER_WORD}-?[A-Za-z0-9_-]{{0,40}}?{_SECRET_WORD_RE}[ \t]+(?P<oq>[\"'])?"
        r"(?!-|<(?!secret>))"
        rf"(?P<secret>(?(oq){_QUOTED_BODY}|{_EQUALS_VALUE}))(?(oq)(?P=oq)?)",
        SECRET_MARKER,
        "POSIX utility argument conventions",
    ),
    # curl / wget style ``-u user:password`` and ``--user user:password``.
    Pattern(
        "cli_user_credentials",
        rf"-{_AFTER_WORD}(?:u|-user|-proxy-user)(?:[ \t]+|=)[\"']?"
        r"(?P<secret><credentials>|(?![-<])[^\s\"':<>]+:[^\s\"'<>]+)",
        "<credentials>",
        "curl(1) and wget(1) manual pages",
    ),
    # E-mail addresses, also percent-encoded (``alice%40example.com``) as found in URLs.
    Pattern(
        "email",
        r"[\w.+%-](?<![\w.+%-].)[\w.+%-]*(?:@|%40)"
        rf"(?:(?:[\w-]+\.)+[^\W\d_]{{2,}}(?![\w-])|{_V4}(?![\w.]))",
        "<email>",
        "RFC 5322 addr-spec, dot-atom subset; also user@IPv4 as in ssh and scp targets",
    ),
    # Windows drive paths (C:\Users\Alice Smith\..., C:/Users/...); a profile name may hold spaces.
    Pattern(
        "windows_path",
        r"[A-Za-z]:"
        + _not_after("A-Za-z0-9", 2)
        + _WSEP
        + rf"(?:(?i:users|documents and settings){_WSEP}{_WSEG_SP}(?:{_WSEP}{_WTAIL})?|{_WTAIL})"
        rf"{_WEND}",
        "<path>",
        "Microsoft docs, 'Naming Files, Paths, and Namespaces'",
    ),
    # UNC paths \\server\share\... (also with doubled, JSON-escaped backslashes).
    Pattern(
        "unc_path",
        r"\\" + _not_after(r"\\\w") + rf"\\+{_WCH}+{_WSEP}{_WTAIL}{_WEND}",
        "<path>",
        "Microsoft docs, UNC names",
    ),
    # Home directories by tilde: ~/..., ~user/..., ~user.
    Pattern(
        "tilde_path",
        "~" + _not_after(r"\w~/\\") + rf"(?:[A-Za-z_][\w.-]*(?:/+{_PTAIL})?|/+{_PTAIL})(?<!\.)",
        "<path>",
        "POSIX shell tilde expansion",
    ),
    # Absolute POSIX paths of two or more segments (/home/alice/..., /Users/..., /etc/passwd).
    # A slash after a word, a dot, ``]`` or a marker is a URL path or a ratio (km/h) and stays;
    # so does the ``//`` after a URL scheme.
    Pattern(
        "posix_path",
        "/"
        + _not_after(r"\w./\\\]~")
        + rf"(?<![A-Za-z_]>/)(?!(?<=:/)/)/*{_PSEG_SP}/+{_PTAIL}(?<!\.)",
        "<path>",
        "POSIX.1 pathname resolution",
    ),
    # MAC addresses: aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF and Cisco aabb.ccdd.eeff.
    Pattern(
        "mac_address",
        r"[0-9A-Fa-f](?=[0-9A-Fa-f](?:[:-]|[0-9A-Fa-f]{2}\.))"
        + _not_after(r"\w:.-")
        + rf"(?:[0-9A-Fa-f](?:(?::{_HEX2}){{5}}(?![\w:])"
        rf"|(?:-{_HEX2}){{5}}(?![\w-]))"
        r"|[0-9A-Fa-f]{3}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}(?![\w.]))",
        "<mac>",
        "IEEE 802 MAC-48 notation",
    ),
    # IPv6 (full or compressed, with an embedded IPv4 tail) starting with a hex group. It needs
    # a digit somewhere, so C++ scopes such as ``a::b`` stay.
    Pattern(
        "ipv6",
        r"[0-9A-Fa-f](?=[0-9A-Fa-f]{0,3}:)"
        + _not_after(r"\w:.")
        + rf"(?:(?<=\d)|(?=[0-9A-Fa-f:.]*\d))[0-9A-Fa-f]{{0,3}}"
        rf"(?:(?::{_H16}){{7}}|(?::{_H16}){{5}}:{_V4}"
        rf"|(?::{_H16}){{0,6}}::(?:(?:{_H16}:){{0,5}}{_V4}|{_H16}(?::{_H16}){{0,6}})?)"
        r"(?![\w:]|\.\d)",
        "<ip>",
        "RFC 4291 section 2.2 and RFC 5952",
    ),
    # IPv6 starting with ``::`` (::1, ::ffff:10.0.0.1); a bare ``::`` stays.
    Pattern(
        "ipv6_leading_double_colon",
        ":" + _not_after(r"\w:.") + rf":(?=[0-9A-Fa-f:.]*\d)"
        rf"(?:(?:{_H16}:){{0,5}}{_V4}|{_H16}(?::{_H16}){{0,6}})(?![\w:]|\.\d)",
        "<ip>",
        "RFC 4291 section 2.2",
    ),
    # IPv4 dotted quads (a fifth dotted number makes it a version or an OID, which stays).
    Pattern(
        "ipv4",
        r"\d(?=\d{0,2}\.)"
        + _not_after(r"\w.")
        + r"(?:(?<=[01])\d{0,2}|(?<=2)(?:5[0-5]|[0-4]\d|\d)?|(?<=[3-9])\d?)"
        rf"\.(?:{_OCTET}\.){{2}}{_OCTET}(?!\w|\.\d)",
        "<ip>",
        "RFC 791 dotted-decimal notation",
    ),
)

# Strings up to this length have their result remembered, in at most this many entries.
_MEMO_TEXT: Final = 64
_MEMO_ENTRIES: Final = 4096

# Passes before giving up on a fixed point (one or two are the rule) and failing closed.
_MAX_PASSES: Final = 8

# Characters next to which a replaced span cannot start, end or extend another match.
_SEPARATORS: Final = frozenset(" \t\n\r\f\v\"',;()[]{}=&")

# Short strings made only of these characters cannot hold any default pattern: every vendor
# token is at least 20 characters long and everything else needs punctuation or a space.
_FAST_SAFE: Final = re.compile(r"[A-Za-z0-9_+#$]{0,19}")

# Something every default pattern needs: one of its punctuation marks, a digit-dot-digit run,
# a hex.hex run (Cisco MACs) or a literal vendor prefix. Text with none of these (most prose,
# enum values, identifiers) cannot match, so it skips the big alternation. Keep this in step
# with DEFAULT_PATTERNS: a property test checks that text without a trigger never changes.
_TRIGGER_CHARS: Final = frozenset("@:=/\\~-")
_DOTTED: Final = re.compile(r"\d\.\d|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}|ya29\.")
_PREFIXES: Final = (
    "%40",
    "eyJ",
    "AKIA",
    "ASIA",
    "ABIA",
    "ACCA",
    "AIza",
    "xox",
    "xapp",
    "GOCSPX",
    "pypi",
    "earer",
    "EARER",
    "asic",
    "ASIC",
)
_UNDERSCORE_PREFIXES: Final = (
    "gh",
    "github_pat_",
    "whsec_",
    "k_live_",
    "k_test_",
    "hf_",
    "phx_",
    "npm_",
)


def _may_match(text: str) -> bool:
    """Cheap: False only when no default pattern can match anywhere in ``text``."""
    if not _TRIGGER_CHARS.isdisjoint(text):
        return True
    if "." in text and _DOTTED.search(text) is not None:
        return True
    if "_" in text and any(p in text for p in _UNDERSCORE_PREFIXES):
        return True
    return any(p in text for p in _PREFIXES)


# marker, name of the secret group (None: the whole match is replaced)
_Rule: TypeAlias = "tuple[str, str | None]"


class Scrubber:
    """Replaces every match of its patterns by the pattern's marker, in one combined regex.

    ``patterns`` replaces the defaults, ``extra_patterns`` are tried before them at each
    position (so a more specific custom rule wins). Configuration is copied: the module
    defaults are never changed. Calling a scrubber never raises; should matching ever fail,
    the whole text is replaced by ``<redacted>``.
    """

    __slots__ = ("_fast", "_memo", "_patterns", "_regex", "_rules")

    def __init__(
        self,
        *,
        patterns: Sequence[Pattern] | None = None,
        extra_patterns: Sequence[Pattern] = (),
    ) -> None:
        base = DEFAULT_PATTERNS if patterns is None else tuple(patterns)
        self._patterns: tuple[Pattern, ...] = (*extra_patterns, *base)
        if not self._patterns:
            raise ValueError("a scrubber needs at least one pattern")
        self._rules: dict[str, _Rule] = {}
        branches: list[str] = []
        for index, pattern in enumerate(self._patterns):
            # The rule is told by an empty group closing its branch: a group at the start would
            # stop the engine from skipping the branch on its first character.
            tag = f"r{index}"
            has_secret = "secret" in re.compile(f"(?:{pattern.regex})").groupindex
            self._rules[tag] = (pattern.marker, f"{tag}_secret" if has_secret else None)
            branches.append(f"(?:{_prefix_group_names(pattern.regex, tag + '_')})(?P<{tag}>)")
        try:
            self._regex = re.compile("|".join(branches))
        except re.error as exc:  # pragma: no cover - each pattern compiled on its own already
            raise ValueError(f"scrub patterns do not combine: {exc}") from exc
        self._fast = all(p in DEFAULT_PATTERNS for p in self._patterns)
        # Short strings repeat across events (languages, statuses, names): remember them.
        self._memo: dict[str, str] = {}

    @property
    def patterns(self) -> tuple[Pattern, ...]:
        """The patterns in the order they are tried."""
        return self._patterns

    def __call__(self, text: str) -> str:
        """Return ``text`` with every secret and personal datum replaced by its marker."""
        if len(text) <= _MEMO_TEXT:
            found = self._memo.get(text)
            if found is None:
                found = self._scrub(text)
                if len(self._memo) >= _MEMO_ENTRIES:
                    self._memo.clear()
                self._memo[text] = found
            return found
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        try:
            if self._fast and (_FAST_SAFE.fullmatch(text) is not None or not _may_match(text)):
                return text
            scrubbed, glued = self._pass(text)
            # A replacement glued to its neighbours can expose them (``fe80::1eyJ...`` is an
            # address once the JWT is a marker), so then scrub again until nothing changes:
            # that is what makes scrubbing idempotent.
            passes = 1
            while glued:
                if passes == _MAX_PASSES:
                    return _FAIL_CLOSED_MARKER
                again = self._pass(scrubbed)[0]
                passes += 1
                if again == scrubbed:
                    break
                scrubbed = again
            return scrubbed
        except Exception:  # fail closed: never let unscrubbed text through
            return _FAIL_CLOSED_MARKER

    def _pass(self, text: str) -> tuple[str, bool]:
        """One left-to-right pass; also tells whether a replacement touched a non-separator."""
        parts: list[str] = []
        last = 0
        glued = False
        size = len(text)
        rules = self._rules
        for match in self._regex.finditer(text):
            start, end = match.span()
            marker, secret = rules[match.lastgroup or ""]
            cut_start, cut_end = start, end
            if secret is not None and (span := match.span(secret))[0] >= 0:
                cut_start, cut_end = span
            if not glued and (
                (cut_start > 0 and text[cut_start - 1] not in _SEPARATORS)
                or (cut_end < size and text[cut_end] not in _SEPARATORS)
            ):
                glued = True
            parts.append(text[last:cut_start])
            parts.append(marker)
            parts.append(text[cut_end:end])
            last = end
        if not parts:
            return text, False
        parts.append(text[last:])
        return "".join(parts), glued


_DEFAULT_SCRUBBER: Final = Scrubber()


def scrub(text: str) -> str:
    """Return ``text`` with secrets and personal data replaced whole by typed markers.

    Markers: ``<email>``, ``<path>``, ``<ip>``, ``<mac>``, ``<jwt>``, ``<private_key>``,
    ``<secret>``, ``<credentials>`` and one per vendor token (``<github_token>``, ...).
    Nothing of a filesystem path survives; a URL keeps its scheme, host and path but loses its
    userinfo and secret query values. Never raises; ``scrub(scrub(x)) == scrub(x)``.
    """
    return _DEFAULT_SCRUBBER(text)


# ---------------------------------------------------------------------------------------------
# Cutting long text before scrubbing it
# ---------------------------------------------------------------------------------------------

# Everything up to and including the last whitespace character (``\s``, as in the patterns).
_UP_TO_LAST_SPACE: Final = re.compile(r".*\s", re.DOTALL)
# After a single space, a POSIX directory segment goes on with a capital or a digit.
_SEGMENT_GOES_ON: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def _word_start(text: str, end: int) -> int:
    """Index of the first character of the word that ends at ``end``."""
    match = _UP_TO_LAST_SPACE.match(text, 0, end)
    return 0 if match is None else match.end()


def _safe_cut(text: str, limit: int) -> int:
    """Where to cut ``text`` (longer than ``limit``) so that no secret is cut unrecognisably.

    The cut falls on whitespace at or before ``limit``: the word the limit splits is dropped
    whole. No default pattern matches across whitespace except these, and a cut at
    whitespace inside them leaves a part that is still recognised or holds nothing secret:

    - a PEM block: the BEGIN line stays and the pattern takes a block without its END line;
      a cut inside the BEGIN line leaves no key material;
    - a secret assignment: its ``key: value`` (to the end of the line) or quoted value
      matches without its end (the opening quote stays); a cut between key and value leaves
      only the key; the same holds for ``--password "..."`` flags and ``Bearer <token>``;
    - a Windows or UNC path whose segment holds a space (``C:\\Users\\Alice Smith``): the
      part before the space is a path already;
    - a POSIX path whose directory holds single spaces before capitals or digits
      (``/Alice Smith/notes``): the part before the space may be a lone ``/Alice``, which is
      no path on its own, so a word with a slash that such a chain of words leads back to
      is dropped too.
    """
    match = _UP_TO_LAST_SPACE.match(text, 0, limit + 1)
    if match is None:
        return 0
    cut = match.end() - 1  # text[cut] is whitespace; the word before it is whole
    at = cut
    while text[at] == " " and text[at + 1 : at + 2] in _SEGMENT_GOES_ON:
        start = _word_start(text, at)
        if start == at:  # two whitespace characters: no path goes on across them
            break
        if "/" in text[start:at]:  # a path may start in this word: drop it
            if start == 0:
                return 0
            cut = start - 1
        if start == 0:
            break
        at = start - 1
    return cut


def cut_words(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters for the scrubber to see later.

    Cutting first and scrubbing later is safe only when the cut cannot split a secret into a
    part the scrubber no longer recognises (``alice.smith@e``): so the cut drops the word it
    would split, as :func:`scrub_cut` does, and marks the end with :data:`TRUNCATION_MARK`.
    Text of at most ``limit`` characters is returned unchanged.
    """
    if len(text) <= limit:
        return text
    cut = _safe_cut(text, max(limit - 1, 0))
    return text[:cut] + TRUNCATION_MARK


def scrub_cut(text: str, limit: int, scrubber: Callable[[str], str] = scrub) -> str:
    """Scrub ``text``, or for text longer than ``limit``, at most its first ``limit`` characters.

    A long string is cut before scrubbing so that scrubbing stays fast; the cut drops the word
    it would split (see :func:`_safe_cut`), since a secret cut in two (``alice.smith@e``) is no
    longer recognised. The result then ends with :data:`TRUNCATION_MARK`, and is just the mark
    when the first ``limit`` characters hold no whitespace. Markers can be longer or shorter
    than what they replace: a caller with a length limit cuts the result again.
    """
    if len(text) <= limit:
        return scrubber(text)
    cut = _safe_cut(text, max(limit, 0))
    return (scrubber(text[:cut]) if cut else "") + TRUNCATION_MARK
