# SPDX-License-Identifier: MIT OR Apache-2.0
"""What a search event needs, read on the caller's thread: attribute reads, nothing more.

This module is light on purpose (no pydantic, no scrubber): the first search an app
captures should not pay for loading the privacy core on its own thread. The event itself is
built on the worker, by :func:`codeweaver_telemetry.events.schemas.build_search_event`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from codeweaver_telemetry._types import Deferred

__all__ = ["MAX_MATCHES", "PendingSearch"]

MAX_MATCHES = 1000
"""Matches read for the score summary and match types (all are counted)."""


def _frozen(value: object) -> object:
    """An app-given label in a form that cannot change later (str and enums are)."""
    if type(value) is str or value is None or isinstance(value, (str, enum.Enum)):
        return value
    return str(value)


@dataclasses.dataclass(slots=True)
class PendingSearch(Deferred):
    """What a search event needs, gathered on the caller's thread as plain immutable data.

    :meth:`gather` only reads attributes (a few microseconds); :meth:`build` (on the
    worker, by the pipeline) makes the :class:`SearchEvent`: labels, the score summary,
    distributions.
    """

    candidates: object
    returned: object
    token_count: object
    matched: tuple[tuple[object, object], ...]
    languages: tuple[object, ...]
    status: object
    warning_count: int
    index_state: object
    index_coverage: object
    intent: object
    strategies: tuple[object, ...]
    elapsed: object
    query: str
    opted_in: bool

    @classmethod
    def gather(
        cls,
        response: object,
        *,
        query: object,
        intent_type: object,
        strategies: object = (),
        execution_time_ms: object = None,
        tools_over_privacy: bool = False,
    ) -> PendingSearch:
        """Read ``response`` and the arguments; never keeps a reference to mutable data."""
        all_matches = _list(getattr(response, "matches", None))
        matched = []
        for match in all_matches[:MAX_MATCHES]:  # the score summary reads the first 1000
            score = getattr(match, "score", None)
            if score is None:  # only then: a missing attribute is slow on pydantic models
                score = getattr(match, "relevance_score", None)
            matched.append((score, _frozen(getattr(match, "match_type", None))))
        returned = getattr(response, "returned", None)
        state = getattr(response, "index_state", None)
        return cls(
            candidates=getattr(response, "candidates", 0),
            returned=returned if returned is not None else len(all_matches),
            token_count=getattr(response, "token_count", 0),
            matched=tuple(matched),
            languages=tuple(_frozen(x) for x in _list(getattr(response, "languages", None))),
            status=_frozen(getattr(response, "status", None) or "unknown"),
            warning_count=len(_list(getattr(response, "warnings", None))),
            index_state=_frozen(state),
            index_coverage=getattr(response, "index_coverage", None),
            intent=_frozen(intent_type),
            strategies=tuple(_frozen(x) for x in _list(strategies)),
            elapsed=execution_time_ms,
            # str.__str__: an exact copy of a str subclass, without calling its overrides.
            query=str.__str__(query) if isinstance(query, str) else "",
            opted_in=bool(tools_over_privacy),
        )

    def build(self) -> object:
        """The finished :class:`~codeweaver_telemetry.events.SearchEvent` (on the worker)."""
        from codeweaver_telemetry.events.schemas import build_search_event

        return build_search_event(self)


def _list(value: object) -> list[Any]:
    """Items of a collection; one str, exception or class is one item; None is none.

    A list is returned as is (callers only read it).
    """
    if type(value) is list:
        return value
    if value is None or isinstance(value, bytes):
        return []
    if isinstance(value, (str, BaseException, type)):
        return [value]
    if isinstance(value, Mapping):
        return list(value)
    if not isinstance(value, Iterable):
        return []
    try:
        return list(value)
    except TypeError:
        return []
