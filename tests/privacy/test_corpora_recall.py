"""Recall and false positives of the scrubber on the generated corpora (tests/privacy/corpora).

The goals of scrubber v2: at least 95% of secrets and personal data removed whole, at most 1%
of ordinary telemetry strings changed. Throughput is measured in bench/bench_privacy.py,
never asserted here.
"""

from __future__ import annotations

import pytest

from codeweaver_telemetry.privacy.scrubber import scrub
from tests.privacy.corpora import Report, measure


@pytest.fixture(scope="module")
def report() -> Report:
    return measure(scrub)


def test_at_least_95_percent_of_secrets_and_personal_data_go(report: Report) -> None:
    """No 8-character piece of the secret survives in at least 95% of the cases."""
    assert report.recall >= 0.95, report.summary()


def test_every_kind_is_caught_at_least_90_percent_of_the_time(report: Report) -> None:
    """No class of secret is left behind: tokens without a key name, password syntaxes,
    personal numbers, addresses, PEM keys in code and logs, URL passwords."""
    weak = {kind: pair for kind, pair in report.by_kind.items() if pair[0] < 0.9 * pair[1]}
    assert not weak, report.summary()


def test_at_most_1_percent_of_ordinary_strings_change(report: Report) -> None:
    """Versions, module paths, model names, UUIDs, routes, loopback URLs... stay as they are."""
    assert len(report.false_positives) <= report.ordinary_total // 100, report.false_positives


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:6333/collections",
        "POST /v1/embeddings",
        "GET /api/v2/users/{id}",
        "http://localhost:8000/docs",
        "http://[::1]:8080/",
        "listening on 0.0.0.0:8080",
        "PUT /collections/{name}/points/search",
        "/batch/",
    ],
)
def test_loopback_urls_and_api_routes_are_not_personal(text: str) -> None:
    """A loopback address names no machine and an API route is not a file path."""
    assert scrub(text) == text
