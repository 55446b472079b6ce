"""PostHogSink over real HTTP: what each answer becomes, and the host's Retry-After carried
by the result; the posthog package is imported by one module only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import codeweaver_telemetry
from codeweaver_telemetry import flags
from codeweaver_telemetry._types import Event, ExportResult
from codeweaver_telemetry.sinks import posthog as posthog_sink
from codeweaver_telemetry.sinks.posthog import PostHogSink
from tests.receiver import CAPTURE, Fault, PostHogReceiver, refusing_url

PACKAGE = Path(codeweaver_telemetry.__file__).parent


def batch() -> list[Event]:
    return [Event("e", {"i": 1}, 1.0, "u1", "d")]


def sink_for(url: str) -> PostHogSink:
    return PostHogSink(api_key="phc_sink", host=url, timeout_s=2.0)


def test_a_429_with_retry_after_is_a_retry_that_carries_it(receiver: PostHogReceiver) -> None:
    receiver.fail_next(1, Fault.status(429, retry_after=2), route=CAPTURE)
    sink = sink_for(receiver.url)
    result = sink.export(batch())
    assert result == ExportResult.RETRY
    assert result.retry_after == 2.0
    assert sink.retry_after_s == 2.0, "still set for the worker until it reads the result"
    assert sink.export(batch()) == ExportResult.SUCCESS
    assert sink.retry_after_s == 0.0


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.status(503), ExportResult.RETRY),
        (Fault.status(429), ExportResult.RETRY),
        (Fault.status(413), ExportResult.SPLIT),
        (Fault.status(401), ExportResult.DROP),
        (Fault.status(422), ExportResult.DROP),
    ],
)
def test_each_answer_has_its_result(
    receiver: PostHogReceiver, fault: Fault, expected: ExportResult
) -> None:
    receiver.fail_next(1, fault, route=CAPTURE)
    sink = sink_for(receiver.url)
    result = sink.export(batch())
    assert result == expected
    assert result.retry_after is None
    assert sink.retry_after_s == 0.0


def test_an_unreachable_host_is_a_retry() -> None:
    with refusing_url() as url:
        result = sink_for(url).export(batch())
    assert result == ExportResult.RETRY
    assert result.retry_after is None


def test_posthog_flags_moved_to_flags_and_is_re_exported() -> None:
    assert posthog_sink.PostHogFlags is flags.PostHogFlags


def test_only_the_posthog_module_imports_posthog() -> None:
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(n == "posthog" or n.startswith("posthog.") for n in names):
                importers.add(path.relative_to(PACKAGE).as_posix())
    assert importers == {"_posthog.py"}
