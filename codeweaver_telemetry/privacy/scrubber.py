# SPDX-License-Identifier: MIT OR Apache-2.0
"""Scrub outgoing text: secrets and personal data become typed markers; a path is only <path>."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeAlias

from codeweaver_telemetry.privacy.detectors import (
    CARD_MARKER,
    IBAN_MARKER,
    NUMBER_RULES,
    PHONE_MARKER,
    SSN_MARKER,
    TOKEN_MARKER,
    VENDOR_TOKENS,
    TokenRule,
    TokenScanner,
    number_spans,
)

__all__ = [
    "DEFAULT_PATTERNS",
    "DETECTORS",
    "MARKERS",
    "SECRET_MARKER",
    "TRUNCATION_MARK",
    "Detector",
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
    "passcode",
    "app_key",
    "account_key",
    "master_key",
    "activation_key",
    "license_key",
    "licence_key",
    "product_key",
    "srt",
    "hmac_key",
    "secret_key_base",
    "mfa_code",
)
# Short words that are secret only at the start of a word: ``db_pass``, ``PW``, ``--pass``,
# ``PIN``, but not ``bypass``, ``compass`` or ``spin``.
_SECRET_WORDS_AT_START: Final[tuple[str, ...]] = ("pass", "pw", "otp", "totp", "pin")

_KEY_SEP: Final = r"[_.\- ]?"
_SECRET_WORD_RE: Final = (
    "(?i:"
    + "|".join(word.replace("_", _KEY_SEP) for word in sorted(_SECRET_WORDS, key=len, reverse=True))
    + "|(?<![a-z])(?:"
    + "|".join(_SECRET_WORDS_AT_START)
    + "))"
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
    one alternation. ``source`` says where the format comes from; ``example`` is a made-up
    text that the pattern matches, which the tests scrub whole and cut at every offset.
    """

    name: str
    regex: str
    marker: str
    source: str = ""
    example: str = ""

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


# The characters besides its two cases that a case-insensitive regex matches for an ASCII
# letter (``(?i:s)`` also matches ``ſ``); a test checks this against every code point.
_FOLDS: Final[dict[str, str]] = {"i": "\u0130\u0131", "k": "\u212a", "s": "\u017f"}


def _letter_class(letter: str) -> str:
    """A class of exactly the characters that ``(?i:letter)`` matches (``letter``: a lower-case
    ASCII letter)."""
    return f"[{letter}{letter.upper()}{_FOLDS.get(letter, '')}]"


def _secret_word_dispatch() -> str:
    """The secret words as "first letter, second letter, then the rest".

    The rule starts with a class (the first letter) and a look-ahead for any second and third
    letter (a two-letter word needs no third), so that at most positions the regex engine
    gives up after a few table look-ups; each branch then starts with the class of its second
    letter (one look-up to skip it), and the first letter is confirmed by a look-behind. Words
    that share their first two letters keep their order (longest first; see
    ``_SECRET_WORD_RE``).
    """
    words = (*_SECRET_WORDS, *_SECRET_WORDS_AT_START)
    if any("_" in word[:3] for word in words):  # pragma: no cover - the table is fixed
        raise ValueError("a secret word needs three letters before a separator")
    groups: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for word in sorted(_SECRET_WORDS, key=len, reverse=True):
        groups.setdefault((word[0], word[1]), ([], []))[0].append(word[2:].replace("_", _KEY_SEP))
    for word in _SECRET_WORDS_AT_START:
        groups.setdefault((word[0], word[1]), ([], []))[1].append(word[2:])
    first = "".join(sorted({letter + letter.upper() for letter, _ in groups}))
    seconds = "".join(sorted({_letter_class(letter)[1:-1] for _, letter in groups}))
    thirds = "".join(sorted({_letter_class(word[2])[1:-1] for word in words if len(word) > 2}))
    shorts = sorted({_letter_class(word[1]) for word in words if len(word) == 2})
    ahead = "|".join([f"[{seconds}][{thirds}]", *shorts])
    branches = []
    for (letter, second), (rests, starts) in sorted(groups.items()):
        parts = [f"(?<={letter}.)(?:{'|'.join(rests)})"] if rests else []
        if starts:
            parts.append(f"(?<=(?<![a-z]){letter}.)(?:{'|'.join(starts)})")
        branches.append(f"{_letter_class(second)}(?i:{'|'.join(parts)})")
    return f"[{first}](?={ahead})(?:{'|'.join(branches)})"


# Secret assignments: ``key=value``, ``key: value``, ``"key": "value"``, ``key => value``.
_SCHEME: Final = r"(?i:bearer|basic|token|digest|negotiate|ntlm|apikey)[ \t]+"
_AUTH_SCHEME: Final = rf"(?:{_SCHEME}(?=\S))?"
# A value that starts with a PEM header or with a marker belongs to the rule that owns it; the
# check covers every way to read the separator, so that no shorter reading slips through.
_NOT_OWNED: Final = (
    rf"(?!(?:\\{{0,3}}[\"']\]?)?[ \t]*(?:=>|:=|=|:)[ \t]*(?:{_SCHEME})?"
    r"(?:\\{0,3}[\"'])?(?:-----BEGIN|<[a-z_]+>))"
)
# A value that is code with a literal fallback: ``os.environ.get("PASSWORD") or "hunter2"``,
# ``os.getenv("TOKEN", "default")``: the literal that follows is the secret.
_CODE_FALLBACK: Final = (
    r"[A-Za-z_][\w.]*\((?:[ \t]*(?P<kq>[\"'])[^\"'\n]*(?P=kq)[ \t]*,"
    r"|(?:[^()\n]|\([^()\n]*\))*\)[ \t]*(?:or|\|\||\?\?|\?:))[ \t]*"
)
# Values that stand for no secret: null, booleans, a template (``${DB_PASSWORD}``,
# ``{{ secrets.TOKEN }}``), stars, an angle-bracket placeholder or a marker.
_NOT_A_PLACEHOLDER: Final = (
    r"(?!(?:\\{0,3}[\"'])?(?:(?i:null|none|nil|true|false|undefined|redacted)"
    r"|\*+|\$\{[^}\n]*\}+|\{\{[^}\n]*\}\}|<[A-Za-z][\w -]*>)(?:\\{0,3}[\"'])?(?![\w-]))"
)
_QUOTED_BODY: Final = r"(?:(?!(?P=oq))(?:\\.|[^\\\n]))*"
_COLON_VALUE: Final = (
    r"(?![\[{])[^\s\"']+(?:[ \t]+(?!-----BEGIN|<[a-z_]+>)[^\s\"']+)*(?<![.,;)\]}])"
)
_EQUALS_VALUE: Final = r"(?![\[{])[^\s\"'&,;]+(?<![.)\]}])"

# An HTTP request line's target or a versioned API route is not a file path.
_NOT_A_ROUTE: Final = (
    "".join(f"(?<!{method} /)" for method in ("GET", "PUT", "POST", "HEAD", "PATCH", "DELETE"))
    + r"(?!(?:api|v[0-9]{1,2}(?:beta|alpha)?[0-9]*|graphql)/)"
    # a route template: /collections/{name}/points (looked for within 512 characters: an
    # unbounded look-ahead from every slash is quadratic on a long run without spaces)
    + r"(?![^\s\"'<>]{0,512}\{\w+\})"
)

_STREET_TYPES: Final = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl"
    "|Parkway|Pkwy|Terrace|Ter|Square|Sq|Highway|Hwy|Circle|Cir|Trail|Close|Crescent|Gardens"
    "|Row|Hill|Mews|Alley|Plaza|Walk|Green|Grove|Park|Rise|Broadway|Loop|Circuit|Esplanade"
    "|Quay|Wharf"
)

# One entry per kind of secret. At any position the first entry that matches wins, so the
# order matters: specific vendor formats before generic assignments, paths before addresses.
DEFAULT_PATTERNS: Final[tuple[Pattern, ...]] = (
    # PEM / OpenSSH / PGP private keys (RFC 7468 armour), also when the END line is cut off.
    Pattern(
        "private_key",
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[A-Za-z0-9+/=\s\\:,.#*;\[\]|]|-(?!----)"
        # a joint between string literals in code: ``...\n" + "MII...``, ``...\n"\n  "MII...``
        r"|[\"'`][ \t]*\+?[ \t]*(?:\r?\n[ \t]*\+?[ \t]*)?[\"'`])*"
        r"(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----)?",
        "<private_key>",
        "RFC 7468 textual encoding; OpenSSH and OpenPGP armour use the same frame",
        "-----BEGIN RSA PRIVATE KEY-----\n"
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
        "-----END RSA PRIVATE KEY-----",
    ),
    # Userinfo of any URL: ``scheme://user:pass@host`` keeps the scheme and the host.
    Pattern(
        "url_credentials",
        r"://(?<=[A-Za-z0-9+.-]://)"
        # The password's lazy run is bounded: unbounded, each ``://`` in a long run with
        # no ``@`` scanned to its end (quadratic; 50,000 ``http://a`` took minutes).
        r"(?P<secret>[^\s/\"'<>]+(?=@[\w\[])"
        r"|[^\s/\"'<>:@]+:[^\s\"'<>]{1,512}?(?=@[\w\[][^\s/@]*(?:[/:]|$)))@",
        "<credentials>",
        "RFC 3986 section 3.2.1 userinfo",
        "postgres://admin:p@ss#w0rd@db.example.com:5432/app",
    ),
    # ``file:`` URLs are local paths: nothing of them survives.
    Pattern(
        "file_url",
        r"[Ff]" + _not_after("A-Za-z0-9+.-") + r"(?i:ile):/[^\s\"'<>`|]*(?<![.,;)\]}])",
        "<path>",
        "RFC 8089 file URI scheme",
        "open file:///home/alice/notes.txt failed",
    ),
    # JSON Web Tokens: base64url header and payload, both JSON objects, so both start ``eyJ``.
    Pattern(
        "jwt",
        r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*)?",
        "<jwt>",
        "RFC 7519 compact serialisation",
        "got eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlc2lnbmF0dXJl",
    ),
    # Telegram bot tokens: the bot's numeric id, a colon, then AA and 33 base64url characters.
    Pattern(
        "telegram_bot_token",
        r"[0-9]" + _NOT_GLUED + r"[0-9]{6,10}:AA[A-Za-z0-9_-]{30,}",
        "<telegram_token>",
        "Telegram Bot API docs, 'Authorizing your bot'",
        "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1 rejected",
    ),
    # Incoming-webhook URLs carry their secret in the path.
    Pattern(
        "webhook_url",
        r"[hd](?:(?<=h)ooks\.slack\.com/(?:services|workflows|triggers)/"
        r"|(?<=h)ooks\.zapier\.com/hooks/catch/"
        r"|(?<![\w.]d)(?<=d)iscord(?:app)?\.com/api/webhooks/)(?P<secret>[A-Za-z0-9_/-]{8,})",
        SECRET_MARKER,
        "Slack, Zapier and Discord docs, incoming webhooks",
        "POST https://hooks.slack.com/services/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",
    ),
    # Braintree access tokens: access_token$environment$merchant$secret.
    Pattern(
        "braintree_token",
        r"a(?<![\w]a)ccess_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32}",
        "<braintree_token>",
        "Braintree docs, access tokens",
        "access_token$production$abcd1234efgh5678$0123456789abcdef0123456789abcdef",
    ),
    # ``os.getenv("API_TOKEN", "default")``, ``ENV.fetch("DB_PASSWORD", "...")``: the default.
    Pattern(
        "secret_env_default",
        rf"[gf](?:etenv|et|etch)\([ \t]*(?P<kq>[\"'])[\w.-]*{_SECRET_WORD_RE}(?P=kq)[ \t]*,[ \t]*"
        rf"(?P<oq>[\"'])(?P<secret>{_QUOTED_BODY})(?P=oq)?",
        SECRET_MARKER,
        "os.getenv, dict.get and Ruby's ENV.fetch",
        'os.getenv("API_TOKEN", "d3f4ult-t0ken-v4lue")',
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
        "sent Bearer abcdef1234567890abcd",
    ),
    # Assignments under a secret-sounding key (same words and last-word rule as is_secret_key):
    # the key and separator stay. Quoted values go whole; ``=`` values end at whitespace,
    # ``&``, ``,`` or ``;``; ``:`` values (HTTP headers, YAML) run to the end of the line. A
    # value that is code with a literal fallback loses the literal:
    # ``PASSWORD = os.environ.get("PASSWORD") or "<secret>"``.
    Pattern(
        "secret_assignment",
        rf"{_secret_word_dispatch()}{_NOT_OWNED}(?:\\{{0,3}}[\"']\]?)?[ \t]*"
        r"(?:=>|:=|=(?!=)|(?P<colon>:)(?!:))[ \t]*"
        rf"(?:{_CODE_FALLBACK}(?=[\"']))?{_AUTH_SCHEME}{_NOT_A_PLACEHOLDER}(?P<oq>\\{{0,3}}[\"'])?"
        rf"(?P<secret>(?(oq){_QUOTED_BODY}|(?(colon){_COLON_VALUE}|{_EQUALS_VALUE})))"
        r"(?(oq)(?P=oq)?)",
        SECRET_MARKER,
        "env files, query strings, HTTP headers, JSON, YAML and keyword arguments",
        "DB_PASSWORD=hunter2hunter2",
    ),
    # Command-line flags with a secret-sounding name and a separate value: --password hunter2.
    Pattern(
        "secret_cli_flag",
        rf"-{_AFTER_WORD}-?[A-Za-z0-9_-]{{0,40}}?{_SECRET_WORD_RE}[ \t]+(?P<oq>[\"'])?"
        r"(?!-|<(?!secret>))"
        rf"(?P<secret>(?(oq){_QUOTED_BODY}|{_EQUALS_VALUE}))(?(oq)(?P=oq)?)",
        SECRET_MARKER,
        "POSIX utility argument conventions",
        "run --password hunter2hunter2 now",
    ),
    # SQL: ``CREATE USER u IDENTIFIED BY 'pw'`` (Oracle, MySQL) and ``PASSWORD 'pw'`` (PostgreSQL).
    Pattern(
        "sql_password",
        r"[IiPp](?:(?<=[Ii])(?i:dentified)[ \t]+(?i:by)(?:[ \t]+(?i:password))?"
        r"|(?<=[Pp])(?i:assword))"
        r"[ \t]+(?P<oq>['\"`])(?P<secret>(?:(?P=oq)(?P=oq)|(?!(?P=oq))[^\n])+)(?P=oq)?",
        SECRET_MARKER,
        "Oracle, MySQL and PostgreSQL docs, CREATE/ALTER USER and ROLE",
        "CREATE USER app IDENTIFIED BY 'S3cr3t!Pass';",
    ),
    # Prose: ``the password is Copper!Saffron60``, ``password changed to ...``. Only a value
    # with a digit or a symbol is taken: ``password is required`` stays.
    Pattern(
        "password_prose",
        r"[Pp](?i:assword|asswd|assphrase|in code)[ \t]+"
        r"(?i:is|was|changed to|set to|reset to|is now|for \S+ is)[ \t]+[\"'`]?"
        r"(?P<secret>(?=[^\s\"'`]*(?:[0-9!#$%^&*?~@+=]|[._-][^\s\"'`]))(?!<[a-z_]+>)"
        r"[^\s\"'`]{4,}(?<![.,;:!?)]))",
        SECRET_MARKER,
        "prose around passwords in logs and messages",
        "the password is Copper!Saffron60",
    ),
    # Archive tools: ``unzip -P pw``, ``zip -P pw``, ``7z x -ppw``.
    Pattern(
        "archive_password_flag",
        r"[uz7](?:(?<=u)nzip|(?<=z)ip|(?<=7)z[ \t]+[a-z])(?:[ \t]+-[A-Za-z]+)*[ \t]+-[Pp][ \t]*"
        r"(?P<secret>[^\s\"'<-]\S*)",
        SECRET_MARKER,
        "zip(1), unzip(1) and 7-Zip manual pages",
        "unzip -P marble6marble6 backup.zip",
    ),
    # Asana personal access tokens: ``1/<user id>:<32 hex>`` (new ones ``2/<id>/<id>:<hex>``).
    Pattern(
        "asana_token",
        r"[12](?<![\w/.][12])/[0-9]{10,20}(?:/[0-9]{10,20})?:[0-9a-f]{32}(?![0-9a-f])",
        "<asana_token>",
        "Asana developer docs, personal access tokens",
        "with 1/1234567890123456:0123456789abcdef0123456789abcdef",
    ),
    # XML and .NET config: ``<add key="ClearTextPassword" value="..."/>``.
    Pattern(
        "xml_secret_attribute",
        r"[KkNn](?i:(?<=[Kk])ey|(?<=[Nn])ame)[ \t]*=[ \t]*(?P<kq>[\"'])"
        rf"[\w.:-]*?{_SECRET_WORD_RE}(?P=kq)[ \t]+(?i:value)[ \t]*=[ \t]*"
        r"(?P<oq>[\"'])(?P<secret>(?:(?!(?P=oq))[^\n])*)(?P=oq)?",
        SECRET_MARKER,
        ".NET configuration files (appSettings, NuGet packageSourceCredentials)",
        '<add key="ClearTextPassword" value="S3cr3tPassw0rd"/>',
    ),
    # XML elements: ``<password>...</password>``, ``<db:apiToken>...</db:apiToken>``.
    Pattern(
        "xml_secret_element",
        # (the look-ahead: the shape of an element, checked before the lazy search for a
        # secret word that ends the tag; the tag's characters include the words' separators)
        rf"<(?=[\w:. -]*>[^<\n]+</)(?P<tag>[\w:.-]*?{_SECRET_WORD_RE})>(?P<secret>[^<\n]+)"
        r"</(?P=tag)>",
        SECRET_MARKER,
        "XML 1.0 element syntax",
        "<password>S3cr3tPassw0rd</password>",
    ),
    # .netrc: ``machine host login alice password s3cret`` (on one line or several).
    Pattern(
        "netrc_password",
        r"[mMlL](?:(?<=[mM])(?i:achine)\s+\S+(?:\s+(?i:login)\s+\S+)?|(?<=[lL])(?i:ogin)\s+\S+)"
        r"\s+(?i:password|passwd)\s+(?P<secret>\"[^\"\n]*\"?|[^\s<\"]\S*)",
        SECRET_MARKER,
        "ftp(1) and curl(1) manual pages, the .netrc file",
        "machine api.example.com login alice password S3cr3tPassw0rd",
    ),
    # Passwords glued to or after a client's flag: ``mysql -u root -pSECRET``,
    # ``sshpass -p SECRET``, ``redis-cli -a SECRET``, ``docker login -p SECRET``,
    # ``ldapsearch -w SECRET``, ``ssh-keygen -N SECRET``, ``sqlcmd -P SECRET``,
    # ``sqlplus scott/SECRET@db``.
    Pattern(
        "client_password_flag",
        r"[msrdplMR](?:(?<=[mM])(?i:ysql|ysqldump|ysqladmin|ariadb|ariadb-dump)[^\n|;&]*?[ \t]-p"
        r"(?=[^\s-])"
        r"|(?<=s)shpass[ \t]+-p[ \t]*"
        r"|(?<=[rR])edis-cli[^\n|;&]*?[ \t]-a[ \t]+"
        r"|(?<=[dp])(?:ocker|odman)[ \t]+login[^\n|;&]*?[ \t]-p[ \t]+"
        r"|(?<=l)dap(?:search|modify|add|delete|passwd|whoami)[^\n|;&]*?[ \t]-w[ \t]+"
        r"|(?<=s)(?:sh-keygen[^\n|;&]*?[ \t]-N|qlcmd[^\n|;&]*?[ \t]-P)[ \t]+"
        r"|(?<=s)qlplus[ \t]+(?:-\w+[ \t]+)*[^\s/@]+/)"
        r"(?P<oq>[\"'])?(?P<secret>(?(oq)(?:(?!(?P=oq))[^\n])+|[^\s\"'<]\S*))(?(oq)(?P=oq)?)",
        SECRET_MARKER,
        "mysql(1), sshpass(1), redis-cli and docker login manual pages",
        "mysql -u root -pS3cr3tPassw0rd app",
    ),
    # Windows ``net use \\server\share PASSWORD /user:name``.
    Pattern(
        "net_use_password",
        r"[nN](?<![\w]n)(?<![\w]N)(?i:et)[ \t]+(?i:use)[ \t]+(?:[A-Za-z]:[ \t]+)?\S+[ \t]+"
        r"(?P<secret>(?![/*<])\S+)",
        SECRET_MARKER,
        "Microsoft docs, net use",
        r"net use \\fileserver\share S3cr3tPassw0rd /user:bob",
    ),
    # Kubernetes Secret manifests: every base64 value under ``data:``.
    Pattern(
        "kubernetes_secret_data",
        r"d" + _not_after(r"\w-") + r"ata:[ \t]*(?:\r?\n|\\n)"
        r"(?P<secret>(?P<ind>[ \t]+)[\w.-]+:[ \t]*[A-Za-z0-9+/]{2,}={0,2}[ \t]*"
        r"(?:(?:\r?\n|\\n)(?P=ind)[\w.-]+:[ \t]*[A-Za-z0-9+/]{2,}={0,2}[ \t]*)*)",
        SECRET_MARKER,
        "Kubernetes docs, Secret objects (data holds base64 values)",
        "kind: Secret\ndata:\n  password: UzNjcjN0UGFzc3cwcmQ=\n  user: YWRtaW5hZG1pbg==\n",
    ),
    # curl / wget style ``-u user:password`` and ``--user user:password``.
    Pattern(
        "cli_user_credentials",
        rf"-{_AFTER_WORD}(?:u|-user|-proxy-user)(?:[ \t]+|=)[\"']?"
        r"(?P<secret><credentials>|(?![-<])[^\s\"':<>]+:[^\s\"'<>]+)",
        "<credentials>",
        "curl(1) and wget(1) manual pages",
        "curl -u alice:S3cr3tPassw0rd https://api.example.com",
    ),
    # E-mail addresses, also percent-encoded (``alice%40example.com``) as found in URLs.
    Pattern(
        "email",
        r"[\w.+%-](?<![\w.+%-].)(?!(?<=g)it@[\w.-]+:)[\w.+%-]*(?:@|%40)"
        rf"(?:(?:[\w-]+\.)+[^\W\d_]{{2,}}(?![\w-])|{_V4}(?![\w.]))",
        "<email>",
        "RFC 5322 addr-spec, dot-atom subset; also user@IPv4 as in ssh and scp targets",
        "login failed for alice.smith@example.com",
    ),
    # Street addresses: a house number, up to three capitalised words and a street type
    # (``221B Baker Street``), the French order (``12 rue de la Paix``), and the name-first
    # forms of German and Dutch (``Hauptstraße 5``) and of Spanish and Italian (``Via Roma 12``).
    Pattern(
        "street_address",
        r"[0-9]" + _not_after(r"\w.,/:-") + r"[0-9]{0,4}[A-Za-z]?(?:[ -][0-9]{1,4}[A-Za-z]?)?,?[ ]"
        r"(?:(?:(?:[NSEW]\.?|North|South|East|West)[ ])?"
        r"(?:(?:[A-Z][A-Za-z'’.-]*|[0-9]{1,3}(?:st|nd|rd|th))[ ]){1,3}"
        rf"(?:{_STREET_TYPES})(?![\w-])\.?"
        r"|(?:bis[ ]|ter[ ])?(?i:rue|avenue|av\.|boulevard|bd|place|chemin|all[ée]e|impasse|quai"
        r"|cours|route|square)[ ](?:(?:de|du|des|la|le|les|l'|d')[ ]?){0,2}"
        r"[A-ZÉÈ][\w'’-]*(?:[ ](?:de[ ]|du[ ]|la[ ])?[A-ZÉÈ][\w'’-]*){0,3})",
        "<address>",
        "postal address conventions of the UPU member countries (house number first)",
        "ship to 221B Baker Street, London",
    ),
    Pattern(
        "street_address_name_first",
        r"[A-ZÄÖÜ](?<![\w-].)(?:[a-zäöüß]+(?:[ -][A-Z][a-zäöüß]+)?"
        r"(?:straße|strasse|str\.|gasse|weg|allee|platz|ring|damm|ufer|straat|laan|plein|gracht"
        r"|kade|steeg|singel|gatan|vägen|gata|vej|gade|katu)"
        r"|(?:[a-zäöü]+er[ ])?(?:Straße|Strasse|Weg|Allee|Platz|Gasse|Ring|Damm)"
        r"|(?:(?<=C)(?:alle|orso|arrer)|(?<=R)ue|(?<=V)ia(?:le)?|(?<=P)(?:iazza|aseo|laza)|(?<=L)argo"
        r"|(?<=A)(?:vda\.|venida)|(?<=R)ua)"
        r"[ ](?:(?:de|del|la|las|los|di|della|delle|dei|do|da|dos|das)[ ])*"
        r"[A-ZÁÉÍÓÚ][\w'’.-]*(?:[ ][A-ZÁÉÍÓÚ][\w'’.-]*){0,3},?)"
        r"[ ][0-9]{1,4}[A-Za-z]?(?![\w-]|\.\w)",
        "<address>",
        "postal address conventions of the UPU member countries (street name first)",
        "Lieferung an Hauptstraße 5, 10115 Berlin",
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
        r"C:\Users\Alice Smith\AppData\notes.txt",
    ),
    # UNC paths \\server\share\... (also with doubled, JSON-escaped backslashes).
    Pattern(
        "unc_path",
        r"\\" + _not_after(r"\\\w") + rf"\\+{_WCH}+{_WSEP}{_WTAIL}{_WEND}",
        "<path>",
        "Microsoft docs, UNC names",
        r"copied to \\fileserver01\finance\q3.xlsx",
    ),
    # Home directories by tilde: ~/..., ~user/..., ~user.
    Pattern(
        "tilde_path",
        "~" + _not_after(r"\w~/\\") + rf"(?:[A-Za-z_][\w.-]*(?:/+{_PTAIL})?|/+{_PTAIL})(?<!\.)",
        "<path>",
        "POSIX shell tilde expansion",
        "~alice/projects/plan.md",
    ),
    # Absolute POSIX paths of two or more segments (/home/alice/..., /Users/..., /etc/passwd).
    # A slash after a word, a dot, ``]`` or a marker is a URL path or a ratio (km/h) and stays;
    # so does the ``//`` after a URL scheme.
    Pattern(
        "posix_path",
        "/"
        + _not_after(r"\w./\\\]}~*+")
        + _NOT_A_ROUTE
        + rf"(?<![A-Za-z_]>/)(?!(?<=:/)/)/*{_PSEG_SP}/+(?={_PCH}){_PTAIL}(?<!\.)",
        "<path>",
        "POSIX.1 pathname resolution",
        "/home/alice/project/app.py",
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
        "nic aa:bb:cc:dd:ee:ff up",
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
        "from 2001:db8:85a3::8a2e:370:7334 ok",
    ),
    # IPv6 starting with ``::`` (::1, ::ffff:10.0.0.1); a bare ``::`` stays.
    Pattern(
        "ipv6_leading_double_colon",
        ":" + _not_after(r"\w:.") + rf":(?!1(?![\w:.]))(?=[0-9A-Fa-f:.]*\d)"
        rf"(?:(?:{_H16}:){{0,5}}{_V4}|{_H16}(?::{_H16}){{0,6}})(?![\w:]|\.\d)",
        "<ip>",
        "RFC 4291 section 2.2",
        "mapped ::ffff:10.0.0.1 ok",
    ),
    # IPv4 dotted quads (a fifth dotted number makes it a version or an OID, which stays).
    Pattern(
        "ipv4",
        r"\d(?=\d{0,2}\.)"
        + _not_after(r"\w.")
        + r"(?!(?<=1)27\.|(?<=0)\.0\.0\.0(?!\.?\d))"  # loopback and the unspecified address
        + r"(?<![A-Za-z]/.)(?<!ersion .)"  # Chrome/120.0.0.0, version 1.2.3.4
        + r"(?:(?<=[01])\d{0,2}|(?<=2)(?:5[0-5]|[0-4]\d|\d)?|(?<=[3-9])\d?)"
        rf"\.(?:{_OCTET}\.){{2}}{_OCTET}(?!\w|\.\d)",
        "<ip>",
        "RFC 791 dotted-decimal notation",
        "from 203.0.113.42 ok",
    ),
)

# Strings up to this length have their result remembered, in at most this many entries.
_MEMO_TEXT: Final = 64
_MEMO_ENTRIES: Final = 4096

# Passes before giving up on a fixed point (one or two are the rule) and failing closed.
_MAX_PASSES: Final = 8

# Characters next to which a replaced span cannot start, end or extend another match.
_SEPARATORS: Final = frozenset(" \t\n\r\f\v\"',;()[]{}=&<>")

# Short strings made only of these characters cannot hold any default pattern or detector:
# tokens have at least 17 characters, and those without a digit (no hex value) at least 20
# (random shapes and vendor formats alike), personal numbers 12 digits or separators, and
# everything else needs punctuation or a space. Identifiers and enum values end here.
_FAST_SAFE: Final = re.compile(r"[A-Za-z_#$]{0,19}|[A-Za-z0-9_#$]{0,11}")

# Something every default pattern and detector needs: one of its punctuation marks, a
# digit-dot-digit run, a hex.hex run (Cisco MACs), a long run of token characters, digits in
# groups, or a literal word. Text with none of these (most prose, enum values, identifiers)
# cannot match, so it skips the full pass. Keep this in step with DEFAULT_PATTERNS and the
# detectors: a property test checks that text without a trigger never changes.
_TRIGGER_CHARS: Final = "@:=/\\~-"
_TRIGGER: Final = re.compile(f"[{re.escape(_TRIGGER_CHARS)}]")  # one scan in C
# Speed: each of these starts with one literal or one class, so that the regex engine skips
# in C to where a match may start (an alternation of repeats would be tried at every position).
_DOTTED: Final = re.compile(r"\.(?:(?<=\d\.)\d|(?<=[0-9A-Fa-f]{4}\.)[0-9A-Fa-f]{4})")
# What the number detectors need: five digits within seven characters (every card, SSN and
# telephone form has such a cluster, and so has a plain number of eight digits), the start of
# an IBAN, or an international number (a property test holds the number detectors to it).
# The token detectors need a run of 17 token characters.
_CONTEXT_FREE: Final = re.compile(
    r"[0-9A-Z+](?:(?<=[0-9])[ ()./-]?[0-9]{2}[ ()./-]?[0-9]{2}|(?<=[A-Z])[A-Z][0-9]{2}"
    r"|(?<=\+)[0-9])"
)
_TOKEN_RUN: Final = re.compile(r"[A-Za-z0-9_+.~]{17}")


def _may_hold_token(text: str) -> bool:
    return _TOKEN_RUN.search(text) is not None


# Words (lower case) that patterns without a trigger character start from or need.
_PREFIXES: Final = (
    "%40",
    "$",
    "eyj",
    "earer",
    "asic",
    "dentified",
    "assw",
    "assp",
    "et(",
    "etenv(",
    "etch(",
    "nzip",
    "zip -",
    "7z ",
    "in code",
)


def _stem_trie(stems: Sequence[str]) -> str:
    """One alternative per first letter, so that the regex engine tries few at a position."""
    rests: dict[str, list[str]] = {}
    for stem in stems:
        rests.setdefault(stem[0], []).append(re.escape(stem[1:]))
    return "|".join(
        f"{re.escape(first)}(?:{'|'.join(sorted(rest, key=len, reverse=True))})"
        for first, rest in rests.items()
    )


# A street address: a house number before a capitalised word, an ordinal, a direction or a
# French street type; or a street-first form (``Hauptstraße 5``, ``Via Roma 12``). Two
# regexes, each starting from a character class or a few literals, so each scan is quick.
# What follows a house number (a range such as ``12-14B`` ends with a digit too: only the
# last digit is looked at, which spares the engine an optional group at every digit).
_AFTER_HOUSE_NUMBER: Final = (
    r"[A-Za-z]?,? (?:[NSEW]\.? |North |South |East |West )?"
    r"(?:[A-Z]|[0-9]{1,3}(?:st|nd|rd|th) |(?:bis |ter )?(?i:rue|avenue|av\.|boulevard|bd|place"
    r"|chemin|all[ée]e|impasse|quai|cours|route|square) )"
)
_STREET_SUFFIXES: Final = (
    *("straße", "strasse", "str.", "gasse", "weg", "allee", "platz", "ring", "damm", "ufer"),
    *("straat", "laan", "plein", "gracht", "kade", "steeg", "singel", "gatan", "vägen"),
    *("gata", "vej", "gade", "katu"),
)
_STREET_WORDS: Final = (
    *("Calle", "Corso", "Carrer", "Rue", "Via", "Viale", "Piazza", "Paseo", "Plaza", "Largo"),
    *("Avda.", "Avenida", "Rua"),
)
# Street nouns written apart (``Lange Straße 5``); glued to the name they are suffixes.
_STREET_NOUNS: Final = ("Straße", "Strasse", "Weg", "Allee", "Platz", "Gasse", "Ring", "Damm")


def _behind_digit(words: Sequence[str]) -> str:
    """A regex to put after a digit: one of ``words`` is right before it. Common letters start
    the words, so the scan starts from the (rarer) digit and looks back: at the words' last
    two characters first, then one look-behind per length of word."""
    by_size: dict[int, list[str]] = {}
    for word in words:
        by_size.setdefault(len(word), []).append(re.escape(word))
    behind = "|".join(f"(?<=(?:{'|'.join(found)})[0-9])" for _, found in sorted(by_size.items()))
    ends = "".join(
        f"[{re.escape(''.join(sorted({word[at] for word in words})))}]" for at in (-2, -1)
    )
    return f"(?<={ends}[0-9])(?:{behind})"


# The words above as one regex (the engine tries only the few that start with each letter).
_PREFIX_WORDS: Final = re.compile(_stem_trie(_PREFIXES))
# A house number before what follows one, or a street's suffix or noun before a number
# (``Hauptstraße 5``, ``Lange Straße 5``): one scan over the digits of the text.
_STREET_NUMBER_HINT: Final = re.compile(
    f"[0-9](?:{_AFTER_HOUSE_NUMBER}|"
    + _behind_digit(
        [f"{word}{tail}" for word in (*_STREET_SUFFIXES, *_STREET_NOUNS) for tail in (" ", ", ")]
    )
    + ")"
)
_STREET_WORD_HINT: Final = re.compile(f"(?:{_stem_trie(_STREET_WORDS)}) ")
_DIGIT: Final = re.compile(r"[0-9]")


def _address_hint(text: str) -> bool:
    """Whether ``text`` may hold a street address."""
    if " " not in text or _DIGIT.search(text) is None:
        return False
    return (
        _STREET_NUMBER_HINT.search(text) is not None or _STREET_WORD_HINT.search(text) is not None
    )


# The characters other than ASCII letters that a case-insensitive regex letter matches
# (see _FOLDS), and the letter each stands for.
_TO_ASCII: Final = str.maketrans(
    {char: letter for letter, chars in _FOLDS.items() for char in chars}
)


def _folded_lower(text: str) -> str:
    """``text`` in lower case, with the characters of ``_TO_ASCII`` as the ASCII letter they
    stand for: a lower-case word is in it wherever a ``(?i:...)`` regex finds the word."""
    return text.lower() if text.isascii() else text.translate(_TO_ASCII).lower()


def _regex_may_match(text: str) -> bool:
    """Cheap: False only when no default regex pattern can match anywhere in ``text``."""
    if _TRIGGER.search(text) is not None:
        return True
    if "." in text and _DOTTED.search(text) is not None:
        return True
    low = _folded_lower(text)
    if _PREFIX_WORDS.search(low) is not None:
        return True
    return _address_hint(text)


def _may_match(text: str) -> bool:
    """Cheap: False only when no default pattern or detector can match anywhere in ``text``."""
    return _regex_may_match(text) or _CONTEXT_FREE.search(text) is not None or _may_hold_token(text)


# Gates: most default patterns can only match text that passes a cheap test (a character, a
# word stem, a short regex). The scrubber checks the gates once per text and runs a combined
# regex of just the patterns whose gate is open, which is what the full alternation would
# have matched, at a fraction of its cost (the secret-key and e-mail rules alone cost more
# than all the gates). A pattern without a gate always runs.
_GATE_SECRET: Final = 1  # a secret-sounding word or a client that takes a password
_GATE_AT: Final = 2
_GATE_IPV6: Final = 4
_GATE_IPV4: Final = 8
_GATE_MAC: Final = 16
_GATE_ADDRESS: Final = 32
_GATE_PATH: Final = 64
_GATE_DRIVE: Final = 128  # C:\ or a file: URL
_GATE_LABELS: Final = 256  # Telegram's :AA and a manifest's data:
_GATE_LITERALS: Final = 512  # PEM armour, a JWT's eyJ, Braintree's $, curl's -u
# A secret-sounding word, and also a word that one of the rarer secret patterns needs.
_GATE_SECRET_WORDS: Final = 1024
_STEMS: Final = (
    *("pass", "pw", "secret", "token", "key", "auth", "credential", "session", "cookie"),
    *("sig", "jwt", "srt", "otp", "pin", "mfa", "identified", "bearer", "basic", "in code"),
    *("mysql", "mariadb", "redis", "docker", "podman", "zip", "7z", "net ", "ldap"),
    *("ssh-keygen", "sqlcmd", "sqlplus"),
)


# The words the secret patterns start from (lower case), as one regex.
_SECRET_STEMS: Final = re.compile(_stem_trie(_STEMS))
# Words (lower case) of which the secret patterns other than secret_assignment and
# secret_cli_flag need one: getenv(/get(/fetch(, Bearer/Basic, IDENTIFIED BY, password
# and passphrase (SQL, prose, .netrc), pin code, zip and 7z, an XML value= or closing tag,
# and the clients that take a password on their command line; net use is checked apart.
_RARE_SECRET_WORDS: Final = (
    *("et(", "etch(", "etenv(", "bearer", "basic", "dentified", "assw", "assp", "in code"),
    *("zip", "7z", "value", "</", "sql", "mariadb", "sshpass", "redis", "docker", "podman"),
    *("ldap", "keygen"),
)
# Each gate regex starts with its rarest character (a literal or a small class) and looks
# back for what comes before it, so that the regex engine skips ahead in C: a gate that
# started with a digit or a hex letter would be tried at most positions of a hex token.
_IPV4_GATE: Final = re.compile(r"\.(?<=[0-9]\.)[0-9]")  # a digit, a dot, a digit
# A house number before a word, or a number after a space (``221B Baker``, ``Weg 5``): broader
# than _address_hint and cheaper; at this point a wider gate costs less than a precise one.
# (A range such as ``12-14`` ends with a digit too, so only the last digit is looked at.)
_ADDRESS_GATE: Final = re.compile(
    r" (?:[0-9]|(?=[^\W\d_])(?:(?<=[0-9] )|(?<=[0-9], )|(?<=[0-9][A-Za-z] )|(?<=[0-9][A-Za-z], )))"
)
_IPV6_GATE: Final = re.compile(r":(?<=[0-9A-Fa-f]:)[0-9A-Fa-f]{1,4}:")
# Three pairs of hex digits with colons or dashes between them (a date's 2026-09-01 has two),
# or Cisco's dotted form: one regex per separator, each starting with it, as a literal is
# found faster than a class.
_MAC_COLON_GATE: Final = re.compile(r":(?<=[0-9A-Fa-f]{2}:)[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-]")
_MAC_DASH_GATE: Final = re.compile(r"-(?<=[0-9A-Fa-f]{2}-)[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-]")
_MAC_DOT_GATE: Final = re.compile(r"\.[0-9A-Fa-f]{4}\.")
_GATES: Final[dict[str, int]] = {
    **dict.fromkeys(("secret_assignment", "secret_cli_flag"), _GATE_SECRET),
    **dict.fromkeys(
        (
            "secret_env_default",
            "http_auth",
            "sql_password",
            "password_prose",
            "archive_password_flag",
            "xml_secret_attribute",
            "xml_secret_element",
            "netrc_password",
            "client_password_flag",
            "net_use_password",
        ),
        _GATE_SECRET_WORDS,
    ),
    "email": _GATE_AT,
    "url_credentials": _GATE_AT,
    **dict.fromkeys(("telegram_bot_token", "kubernetes_secret_data"), _GATE_LABELS),
    **dict.fromkeys(("windows_path", "file_url"), _GATE_DRIVE),
    **dict.fromkeys(("ipv6", "ipv6_leading_double_colon"), _GATE_IPV6),
    **dict.fromkeys(
        ("private_key", "jwt", "braintree_token", "cli_user_credentials"), _GATE_LITERALS
    ),
    "ipv4": _GATE_IPV4,
    "mac_address": _GATE_MAC,
    "street_address": _GATE_ADDRESS,
    "street_address_name_first": _GATE_ADDRESS,
    **dict.fromkeys(
        ("posix_path", "tilde_path", "unc_path", "webhook_url", "asana_token"), _GATE_PATH
    ),
}


# Compiled combinations of gated patterns kept per scrubber (97 occur in the test corpora).
_MAX_VARIANTS: Final = 128


def _open_gates(text: str) -> int:
    """The gates ``text`` opens (see _GATES)."""
    low = _folded_lower(text)
    gates = 0
    if _SECRET_STEMS.search(low) is not None:
        gates = _GATE_SECRET
        if any(map(low.__contains__, _RARE_SECRET_WORDS)) or ("net" in low and "use" in low):
            gates |= _GATE_SECRET_WORDS
    if "@" in text or "%40" in text:
        gates |= _GATE_AT
    if ":" in text:
        if "::" in text or _IPV6_GATE.search(text) is not None:
            gates |= _GATE_IPV6
        if ":/" in text or ":\\" in text:
            gates |= _GATE_DRIVE
        if ":AA" in text or "ata:" in text:
            gates |= _GATE_LABELS
    if "." in text and _IPV4_GATE.search(text) is not None:
        gates |= _GATE_IPV4
    if (
        (":" in text and _MAC_COLON_GATE.search(text) is not None)
        or ("-" in text and _MAC_DASH_GATE.search(text) is not None)
        or ("." in text and _MAC_DOT_GATE.search(text) is not None)
    ):
        gates |= _GATE_MAC
    if _ADDRESS_GATE.search(text) is not None:
        gates |= _GATE_ADDRESS
    if "/" in text or "\\" in text or "~" in text:
        gates |= _GATE_PATH
    if "-----" in text or "eyJ" in text or "$" in text or "-u" in text:
        gates |= _GATE_LITERALS
    return gates


# marker, name of the secret group (None: the whole match is replaced)
_Rule: TypeAlias = "tuple[str, str | None]"


class Scrubber:
    """Replaces every secret and personal datum in text by its marker.

    It runs its regex patterns as one combined regex, then the detectors a regex cannot
    decide alone: personal numbers with a check (cards, IBANs, SSNs, telephone numbers), then
    tokens (``vendor_tokens`` by prefix, and random-looking values by their shape).

    ``patterns`` replaces the default patterns, ``extra_patterns`` are tried before them at
    each position (so a more specific custom rule wins); ``vendor_tokens`` replaces the default
    token table. ``context_free=False`` turns off the detectors that need no key name around
    a value (numbers and token shapes; vendor prefixes stay). Configuration is copied: the
    module defaults are never changed. Calling a scrubber never raises; should matching ever
    fail, the whole text is replaced by ``<redacted>``.
    """

    __slots__ = (
        "_all",
        "_branches",
        "_compiled",
        "_context_free",
        "_fast",
        "_memo",
        "_patterns",
        "_rules",
        "_tokens",
    )

    def __init__(
        self,
        *,
        patterns: Sequence[Pattern] | None = None,
        extra_patterns: Sequence[Pattern] = (),
        vendor_tokens: Sequence[TokenRule] | None = None,
        context_free: bool = True,
    ) -> None:
        self._context_free = context_free
        self._tokens = TokenScanner(
            VENDOR_TOKENS if vendor_tokens is None else tuple(vendor_tokens), shapes=context_free
        )
        base = DEFAULT_PATTERNS if patterns is None else tuple(patterns)
        self._patterns: tuple[Pattern, ...] = (*extra_patterns, *base)
        if not self._patterns:
            raise ValueError("a scrubber needs at least one pattern")
        self._rules: dict[str, _Rule] = {}
        self._branches: list[tuple[int, str]] = []
        defaults = set(DEFAULT_PATTERNS)
        for index, pattern in enumerate(self._patterns):
            # The rule is told by an empty group closing its branch: a group at the start would
            # stop the engine from skipping the branch on its first character.
            tag = f"r{index}"
            groups = re.compile(f"(?:{pattern.regex})").groupindex
            secret = f"{tag}_secret" if "secret" in groups else None
            self._rules[tag] = (pattern.marker, secret)
            gate = _GATES.get(pattern.name, 0) if pattern in defaults else 0
            branch = f"(?:{_prefix_group_names(pattern.regex, tag + '_')})(?P<{tag}>)"
            self._branches.append((gate, branch))
        self._compiled: dict[int, re.Pattern[str]] = {}
        self._all: re.Pattern[str] | None = None
        self._fast = all(p in defaults for p in self._patterns) and (
            vendor_tokens is None or all(r in VENDOR_TOKENS for r in vendor_tokens)
        )
        if not self._fast:  # patterns of the caller's: refuse ones that do not combine now
            try:
                _ = self._regex
            except re.error as exc:  # pragma: no cover - each pattern compiled on its own
                raise ValueError(f"scrub patterns do not combine: {exc}") from exc
        # (The default patterns combine, as the tests check; their regex of every pattern is
        # compiled on first use: 0.13 s that an import, or a first event, need not pay.)
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
            regex = numbers = True
            if self._fast:
                if _FAST_SAFE.fullmatch(text) is not None:
                    return text
                regex = _regex_may_match(text)
                numbers = _CONTEXT_FREE.search(text) is not None
                if not (regex or numbers or _may_hold_token(text)):
                    return text
            scrubbed, glued = self._pass(text, regex=regex, numbers=numbers)
            # A replacement glued to its neighbours can expose them (``fe80::1eyJ...`` is an
            # address once the JWT is a marker), so then scrub again until nothing changes:
            # that is what makes scrubbing idempotent.
            passes = 1
            while glued:
                if passes == _MAX_PASSES:
                    return _FAIL_CLOSED_MARKER
                again = self._pass(scrubbed, numbers=_CONTEXT_FREE.search(scrubbed) is not None)[0]
                passes += 1
                if again == scrubbed:
                    break
                scrubbed = again
            return scrubbed
        except Exception:  # fail closed: never let unscrubbed text through
            return _FAIL_CLOSED_MARKER

    def _pass(
        self, text: str, *, regex: bool | None = None, numbers: bool = True
    ) -> tuple[str, bool]:
        """One pass of every stage; also tells whether a replacement touched a non-separator.

        ``regex``: whether the regex stage may match (None: find out); ``numbers``: whether
        the text may hold a personal number (False only when ``_CONTEXT_FREE`` found none of
        the digit groups every form has).
        """
        glued = False
        if regex is None:
            regex = not self._fast or _regex_may_match(text)
        if regex:
            text, glued = self._regex_pass(text)
        if self._context_free and numbers:
            spans = number_spans(text)
            if spans:
                text, again = _replace(text, spans)
                glued = glued or again
        spans = self._tokens.spans(text)
        if spans:
            text, again = _replace(text, spans)
            glued = glued or again
        return text, glued

    @property
    def _regex(self) -> re.Pattern[str]:
        """The combined regex of every pattern (compiled on first use)."""
        if self._all is None:
            self._all = re.compile("|".join(branch for _, branch in self._branches))
        return self._all

    def _regex_for(self, gates: int) -> re.Pattern[str]:
        """The combined regex of the patterns whose gate is open (or that have none).

        At most ``_MAX_VARIANTS`` are kept (each is up to about 80 KiB); past that, an
        unusual combination runs the regex of every pattern, which finds the same matches.
        """
        found = self._compiled.get(gates)
        if found is None:
            if len(self._compiled) >= _MAX_VARIANTS:
                return self._regex
            chosen = [branch for gate, branch in self._branches if not gate or gate & gates]
            found = re.compile("|".join(chosen) if chosen else "(?!)")
            self._compiled[gates] = found
        return found

    def _regex_pass(self, text: str) -> tuple[str, bool]:
        """One left-to-right pass of the combined regex."""
        regex = self._regex_for(_open_gates(text)) if self._fast else self._regex
        parts: list[str] = []
        last = 0
        glued = False
        rules = self._rules
        for match in regex.finditer(text):
            start, end = match.span()
            marker, secret = rules[match.lastgroup or ""]
            cut_start, cut_end = start, end
            if secret is not None and (span := match.span(secret))[0] >= 0:
                cut_start, cut_end = span
                if cut_start == cut_end:  # an empty value (password: "") holds no secret
                    continue
            glued = glued or _glued(text, cut_start, cut_end)
            parts.append(text[last:cut_start])
            parts.append(marker)
            parts.append(text[cut_end:end])
            last = end
        if not parts:
            return text, False
        parts.append(text[last:])
        return "".join(parts), glued


def _glued(text: str, start: int, end: int) -> bool:
    """Whether a replacement of ``text[start:end]`` touches a character that is no separator
    (then a second pass may find more: what it joined was hidden from the first)."""
    return (start > 0 and text[start - 1] not in _SEPARATORS) or (
        end < len(text) and text[end] not in _SEPARATORS
    )


def _replace(text: str, spans: Sequence[tuple[int, int, str]]) -> tuple[str, bool]:
    """``text`` with each (start, end, marker) span replaced; whether one was glued."""
    parts: list[str] = []
    last = 0
    glued = False
    for start, end, marker in spans:
        if start < last:
            continue
        glued = glued or _glued(text, start, end)
        parts.append(text[last:start])
        parts.append(marker)
        last = end
    parts.append(text[last:])
    return "".join(parts), glued


class Detector(NamedTuple):
    """One row of the scrubber's table of detectors, whatever its kind."""

    name: str
    kind: str  # "pattern", "vendor_token", "number" or "shape"
    marker: str
    source: str
    examples: tuple[str, ...]


#: What the default scrubber detects, one row each: regex patterns, vendor tokens, personal
#: numbers and random-looking tokens. The README's table of markers is checked against it.
DETECTORS: Final[tuple[Detector, ...]] = (
    *(Detector(p.name, "pattern", p.marker, p.source, (p.example,)) for p in DEFAULT_PATTERNS),
    *(Detector(r.name, "vendor_token", r.marker, r.source, (r.example,)) for r in VENDOR_TOKENS),
    *(Detector(r.name, "number", r.marker, r.source, r.examples) for r in NUMBER_RULES),
    Detector(
        "random_token",
        "shape",
        TOKEN_MARKER,
        "shape: 20 or more characters (17 of hex) whose mix of letters and digits and whose "
        "letter pairs look random rather than like words",
        (
            "error while indexing: hL3kQ9vX2mRt7YwZ4nBp8sJd (status 401)",
            "commit 3f9a0c1e5b7d2468ace0bdf13579b2468ace0bd1 pushed",
        ),
    ),
)

#: Every marker the default scrubber writes.
MARKERS: Final[tuple[str, ...]] = tuple(
    dict.fromkeys(
        [
            *(p.marker for p in DEFAULT_PATTERNS),
            *(r.marker for r in VENDOR_TOKENS),
            TOKEN_MARKER,
            CARD_MARKER,
            IBAN_MARKER,
            PHONE_MARKER,
            SSN_MARKER,
        ]
    )
)

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
    cut = _drop_open_secret(text, match.end() - 1)
    if cut <= 0:
        return 0
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


# A group of a number written in groups: a telephone number, a card, an IBAN, an SSN.
_NUMBER_GROUP: Final = re.compile(r"[+(]?[0-9A-Z][0-9A-Z().-]*,?")
# A house number, and the words an address puts between it and the street type.
_HOUSE_NUMBER: Final = re.compile(r"[0-9]{1,5}[A-Za-z]?(?:-[0-9]{1,4}[A-Za-z]?)?,?")
_ADDRESS_WORD: Final = re.compile(r"[A-Z][\w'’.-]*|de|du|des|la|le|les|rue|avenue|bis|ter")
_STREET_NAME_FIRST: Final = re.compile(
    r"\w*(?:stra(?:ß|ss)e|str\.|gasse|weg|allee|platz|ring|damm|ufer|straat|laan|plein|gracht"
    r"|kade|steeg|singel|Straße|Strasse|Weg|Allee|Platz|Gasse|Ring|Damm)|Via|Viale|Calle",
)
_ADDRESS_REACH: Final = 5


def _drop_open_secret(text: str, cut: int) -> int:
    """Move a cut (``text[cut]`` is whitespace) back before a secret that may go on past it.

    Telephone, card and IBAN numbers are written in groups (``020 7946 0958``), and a street
    address spans words (``221B Baker Street``): when the dropped word could continue one,
    the groups or words before the cut are dropped too, so that no part of it survives
    unrecognised (``020 7946``). Returns the new cut, or 0 to drop everything.
    """
    following = text[cut + 1 : cut + 2]
    at = cut
    if following.isalpha():  # an address may go on: 221B Baker | Street
        for _ in range(_ADDRESS_REACH):
            start = _word_start(text, at)
            if at <= 0 or text[at] != " " or start == at:
                return cut
            word = text[start:at]
            at = start - 1
            if _HOUSE_NUMBER.fullmatch(word) is not None:
                break
            if _ADDRESS_WORD.fullmatch(word) is None:
                return cut
        else:
            return cut
    elif not (following.isdigit() or following in "+("):
        return cut
    # Groups of a number may go on: 020 7946 | 0958.
    while at > 0 and text[at] == " ":
        start = _word_start(text, at)
        word = text[start:at]
        if start == at or _NUMBER_GROUP.fullmatch(word) is None:
            if _STREET_NAME_FIRST.fullmatch(word.rstrip(",")) is not None:
                at = start - 1  # Hauptstraße | 5
            break
        at = start - 1
    return max(at, 0)


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
