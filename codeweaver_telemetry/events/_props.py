# SPDX-License-Identifier: MIT OR Apache-2.0
"""What a shipped event's property means: the marker the event models put on their fields.

A field is written ``name: Annotated[type, Prop("meaning", ...)]``; the schema catalog
(:mod:`codeweaver_telemetry.events.catalog`) reads these markers, the field types and the
models' privacy rules, so the property table and the JSON Schemas come from the models.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Prop"]


@dataclass(frozen=True, slots=True)
class Prop:
    """The meaning of one property, and what its Python type does not say.

    Args:
        meaning: one line for the property table and the schema's ``description``.
        rule: the privacy rule when the library computes the value before the model (a
            label, a count, a map keyed by labels); otherwise the catalog derives it from the
            model's rules (``_telemetry_rules``, ``_telemetry_allow``, ``_telemetry_trusted``).
        wire: the type as sent, when the field's own type is looser (a ``dict[str, Any]``
            filled from the session statistics: its ``TypedDict``, or ``dict[str, int]``).
        omitted_when_none: the model leaves the key out, rather than sending null, when the
            value is None (its ``_telemetry_handler`` pops it).
    """

    meaning: str
    rule: str | None = None
    wire: object = None
    omitted_when_none: bool = False
