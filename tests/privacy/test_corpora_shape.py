"""The scrubber corpora themselves: sizes, well-formed cases, valid check digits, determinism.

These tests check the measuring stick, not the scrubber: recall is asserted elsewhere.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.privacy import corpora
from tests.privacy.corpora import Case, leaks, measure, ordinary_strings, pii_cases, secret_cases

SECRET_KINDS = {"token_free", "token_keyed", "password_syntax", "pem", "url_password"}
PII_KINDS = {"pii_phone", "pii_card", "pii_iban", "pii_ssn", "pii_address", "pii_email"}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    compact = iban.replace(" ", "")
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def test_corpus_sizes() -> None:
    secrets, pii, ordinary = secret_cases(), pii_cases(), ordinary_strings()
    assert len(secrets) >= 1000
    assert len({c.provider for c in secrets}) >= 100
    assert len(pii) >= 300
    assert len(ordinary) >= 500
    assert len(set(ordinary)) == len(ordinary)
    assert {c.kind for c in secrets} == SECRET_KINDS
    assert {c.kind for c in pii} == PII_KINDS
    assert 20 <= sum(c.kind == "pem" for c in secrets) <= 40


def test_every_secret_is_long_and_in_its_text() -> None:
    for case in secret_cases() + pii_cases():
        assert case.secrets, case
        for secret in case.secrets:
            assert len(secret) >= corpora.WINDOW, case
            assert secret in case.text, case


def test_generated_numbers_are_valid() -> None:
    pii = pii_cases()
    cards = [re.sub(r"[ -]", "", c.secrets[0]) for c in pii if c.kind == "pii_card"]
    assert cards
    assert all(n.isdigit() and 14 <= len(n) <= 16 and luhn_ok(n) for n in cards)
    ibans = [c.secrets[0] for c in pii if c.kind == "pii_iban"]
    assert len({i[:2] for i in ibans}) >= 10
    assert all(iban_ok(i) for i in ibans)
    for case in pii:
        if case.kind == "pii_ssn":
            area, group, serial = case.secrets[0].split("-")
            assert area not in {"000", "666"}
            assert not area.startswith("9")
            assert group != "00"
            assert serial != "0000"


def test_ordinary_strings_hold_no_card_numbers() -> None:
    for text in ordinary_strings():
        for run in re.findall(r"\d{12,19}", text):
            assert not luhn_ok(run), text


def test_generation_is_deterministic_and_fast() -> None:
    start = time.perf_counter()
    first = (secret_cases(), pii_cases(), ordinary_strings())
    elapsed = time.perf_counter() - start
    assert first == (secret_cases(), pii_cases(), ordinary_strings())
    assert elapsed < 2.0  # about 0.1 s; the bound only catches a runaway generator


def test_leaks_sees_a_secret_left_in_place_and_not_a_replaced_one() -> None:
    case = Case("auth failed for abcdEFGH12345678 (status 401)", ("abcdEFGH12345678",), "t", "p")
    assert leaks(case, case.text) == ["abcdEFGH12345678"]
    assert leaks(case, "auth failed for <secret> (status 401)") == []
    assert leaks(case, "auth failed for abcdEFGH<secret>") == ["abcdEFGH12345678"]
    assert leaks(case, "auth failed for abcdEFG<secret>") == []  # 7 characters is no window


def test_leaks_ignores_windows_the_surrounding_text_shares() -> None:
    case = Case("status 401 status 401xyz", ("status 401xyz",), "t", "p")
    assert leaks(case, "status 401 <secret>") == []
    assert leaks(case, "status 401 status 401xyz") == ["status 401xyz"]


@pytest.mark.parametrize("mode", ["identity", "oracle"])
def test_measure_scores_the_extremes(mode: str) -> None:
    cases = secret_cases()[:50] + pii_cases()[:50]
    redacted: dict[str, str] = {}
    for case in cases:
        text = case.text
        for secret in sorted(case.secrets, key=len, reverse=True):
            text = text.replace(secret, "<secret>")
        redacted[case.text] = text
    report = measure((lambda s: s) if mode == "identity" else (lambda s: redacted.get(s, s)), cases)
    assert report.total == 100
    assert report.caught == (0 if mode == "identity" else 100)
    assert len(report.missed) == 100 - report.caught
    assert report.false_positives == []
    assert report.ordinary_total == len(ordinary_strings())
    assert sum(t for _, t in report.by_kind.values()) == 100
    assert report.strings_per_second > 0
    assert "caught" in report.summary()
