"""Privacy rules on your own models: pydantic, attrs and stdlib dataclasses alike.

``_telemetry_keys()`` maps each ``FilteredKey`` to an ``AnonymityConversion``. Fields
without a rule are sent after the scrubber; a strict model (``_telemetry_strict = True``)
sends only the fields it names. The script prints ``serialize_for_telemetry()`` of each
model, then sends one with ``client.capture_with_serialization()`` and one inside a custom
event class (``EVENT_NAME``, ``to_posthog_event()``) with ``client.capture_from_event()``.

Run: ``.venv/bin/python examples/custom_model_rules.py`` (after ``./scripts/demo`` built the
venv), or ``python examples/custom_model_rules.py`` with the package installed. All state
lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import attrs

from codeweaver_telemetry import (
    AnonymityConversion,
    BasedModel,
    DataclassSerializationMixin,
    FilteredKey,
    TelemetryClient,
    read_log,
)

Rules = dict[FilteredKey, AnonymityConversion]


class IndexJob(BasedModel):
    """Pydantic. ``backend`` has no rule, so it is sent after the scrubber."""

    repo_path: str
    files: list[str]
    owner_email: str
    api_token: str | None
    backend: str

    def _telemetry_keys(self) -> Rules:
        return {
            FilteredKey("repo_path"): AnonymityConversion.HASH,  # keyed hash, 16 hex chars
            FilteredKey("files"): AnonymityConversion.COUNT,  # how many
            FilteredKey("owner_email"): AnonymityConversion.FORBIDDEN,  # never sent
            FilteredKey("api_token"): AnonymityConversion.BOOLEAN,  # was one given?
        }


@attrs.define
class EmbeddingBatch(DataclassSerializationMixin):
    """attrs, strict: only ``provider`` (allowed) and the fields with rules are sent."""

    _telemetry_strict: ClassVar[bool] = True
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset({"provider"})

    provider: str
    languages: list[str]
    token_counts: list[int]
    cache_dir: str  # no rule, not allowed: dropped

    def _telemetry_keys(self) -> Rules:
        return {
            FilteredKey("languages"): AnonymityConversion.DISTRIBUTION,  # {value: count}
            FilteredKey("token_counts"): AnonymityConversion.AGGREGATE,  # their sum
        }


@dataclasses.dataclass
class QueryRecord(DataclassSerializationMixin):
    """A stdlib dataclass. ``note`` has no rule, so it is sent after the scrubber."""

    query: str
    user: str
    note: str

    def _telemetry_keys(self) -> Rules:
        return {
            FilteredKey("query"): AnonymityConversion.TEXT_COUNT,  # its length
            FilteredKey("user"): AnonymityConversion.HASH,
        }


@dataclasses.dataclass
class ReindexFinished:
    """A custom event: ``to_posthog_event()`` gives the name and properties. The model
    among the properties keeps its own rules in the pipeline."""

    EVENT_NAME: ClassVar[str] = "reindex_finished"
    batch: EmbeddingBatch
    seconds: float

    def to_posthog_event(self) -> tuple[str, dict[str, Any]]:
        return self.EVENT_NAME, {"batch": self.batch, "seconds": self.seconds}


def main() -> None:
    job = IndexJob(
        repo_path="/home/alice/acme",
        files=["a.py", "b.py", "c.rs"],
        owner_email="alice@example.com",
        api_token="sk-not-a-real-token",  # noqa: S106 - a fake value
        backend="qdrant",
    )
    batch = EmbeddingBatch("voyage", ["python", "python", "rust"], [120, 80], "/home/alice/.c")
    record = QueryRecord("who is alice@example.com", "alice", "see /home/alice/notes.txt")
    with tempfile.TemporaryDirectory(prefix="codeweaver-example-") as home:
        os.environ["CODEWEAVER_HOME"] = home  # state dir: <home>/telemetry
        # enabled=True opts in for this example only; a real app asks the user first.
        client = TelemetryClient.from_options(enabled=True)
        for model in (job, batch, record):
            print(f"== {type(model).__name__}")
            print(f"input : {model!r}")
            print(f"output: {json.dumps(model.serialize_for_telemetry())}\n")

        with client:
            client.capture_with_serialization("index_job", job)
            client.capture_from_event(ReindexFinished(batch=batch, seconds=3.25))

        events = list(read_log(Path(home) / "telemetry"))
        if not client.enabled:
            print(f"telemetry is off ({client.decision.source}: {client.decision.reason})")
            print(f"nothing was recorded for sending ({len(events)} events in the local log)")
        else:
            print("== recorded for sending")
            for event in events:
                print(f"\n{event['event']}")
                print(json.dumps(event["properties"], indent=2, ensure_ascii=False))
        client.shutdown()


if __name__ == "__main__":
    main()
