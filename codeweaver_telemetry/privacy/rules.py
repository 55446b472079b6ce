# SPDX-License-Identifier: MIT OR Apache-2.0
"""Privacy rules declared on models, and the one serializer that applies them.

A model says what may leave the machine with ``_telemetry_keys()``, a mapping of
:class:`FilteredKey` (a field name or alias) to :class:`AnonymityConversion`. The serializer
walks the model's fields itself (it never dumps first and filters after), so:

- rules apply recursively: nested models, and lists, tuples, sets and dicts of models, are
  serialized with their own rules;
- rules hold by field name and by alias alike, whichever way the output is keyed;
- a rule that names no field raises :class:`TelemetryRuleError` on first use;
- a strict model (``_telemetry_strict = True``) sends only the fields it names;
- the output is JSON-safe, and every string in it has passed the scrubber unless its field
  is listed in ``_telemetry_trusted``;
- every string in the output, trusted or not, key or value, is valid Unicode: an unpaired
  surrogate becomes U+FFFD before anything else looks at the string, and a surrogate pair
  becomes its character (see :func:`~codeweaver_telemetry.privacy.conversions.valid_text`),
  so the output always encodes as UTF-8.

JSON-safety (for values with no rule): str keys; datetime/date/time -> ISO 8601; timedelta ->
seconds; UUID -> str; Enum -> its value (trusted: enum values are the developer's constants);
Decimal -> float; set/frozenset -> sorted list; NaN and infinities -> None; ints beyond 64 bits
-> float; bytes, bytearray and memoryview are *not sent* (the key is absent, or the item is
left out of its list); filesystem paths (``PurePath``) -> ``"<path>"``; a reference cycle ->
``"<cycle>"``; nesting deeper than 32 -> ``"<max_depth>"``; any other object is not sent.
Values under secret-sounding keys (``api_key``, ``password``...) become ``"<secret>"``.

Serialization never raises for a value it reads (only :class:`TelemetryRuleError` for wrong
rules, and the key provider's error when a HASH key cannot be had): a value that raises
while it is read (a mapping whose ``items()`` raises, a sequence whose iteration raises, a
model field whose getter raises) is not sent, as if absent, and logged once per type.

Two bases carry the rules: :class:`TelemetryModel` for pydantic models and
:class:`TelemetryMixin` for attrs classes and stdlib dataclasses (``BasedModel`` and
``DataclassSerializationMixin`` are their former names, kept as aliases).

Rules that do not depend on the instance can be declared once on the class instead:
``_telemetry_rules: ClassVar[Mapping[FilteredKey, AnonymityConversion]] = {...}``. The
default ``_telemetry_keys()`` returns a copy of them, and for a class that does not override
``_telemetry_keys()`` the serializer reads them from the class, once per serialization,
without calling ``_telemetry_keys()`` on each instance (an instance attribute that shadows
either is not looked at). The output is the same either way.

Cost: each class's rules are resolved once into a plan, compiled to one function per class
and rules (:func:`_compile`; rules from ``_telemetry_keys()`` are read from every instance,
class rules once per serialization, and a change makes a new plan). A field declared as a
model with rules, or a list of them, hands such values to the model's handler directly.
Short strings and dict keys are scrubbed once per process with the
default scrubber (:class:`_ScrubMemo`). Neither changes the output.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import keyword
import threading
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from math import isfinite
from pathlib import PurePath
from typing import Any, ClassVar, NewType

from pydantic import BaseModel

from codeweaver_telemetry._internal import in_forked_child, log_once
from codeweaver_telemetry.privacy import conversions
from codeweaver_telemetry.privacy.conversions import PROPERTY_KEY_LENGTH, finite_float, valid_text
from codeweaver_telemetry.privacy.hashing import (
    KeyedHasher,
    KeyProvider,
    get_default_key_provider,
)
from codeweaver_telemetry.privacy.scrubber import SECRET_MARKER, is_secret_key, scrub, scrub_cut

__all__ = [
    "CYCLE_MARKER",
    "DEPTH_MARKER",
    "MAX_DEPTH",
    "PATH_MARKER",
    "AnonymityConversion",
    "BasedModel",
    "DataclassSerializationMixin",
    "FilteredKey",
    "TelemetryMixin",
    "TelemetryModel",
    "TelemetryRuleError",
    "serialize_for_telemetry",
]

FilteredKey = NewType("FilteredKey", str)
"""The name (or alias) of a model field that a privacy rule applies to."""

CYCLE_MARKER = "<cycle>"
DEPTH_MARKER = "<max_depth>"
PATH_MARKER = "<path>"
MAX_DEPTH = 32
_INT_LIMIT = 2**63


class AnonymityConversion(enum.Enum):
    """How a field leaves the machine. See :mod:`codeweaver_telemetry.privacy.conversions`."""

    FORBIDDEN = "forbidden"
    """The field is absent from the output."""
    BOOLEAN = "boolean"
    """Truthiness; None gives False and the key is present."""
    COUNT = "count"
    """Number of items of a collection; 0 for None, 1 for any other present value."""
    HASH = "hash"
    """Keyed HMAC-SHA256 under the install's secret, 16 hex characters; None stays None."""
    DISTRIBUTION = "distribution"
    """``{value: count}`` over the scalar items of a collection; keys scrubbed."""
    AGGREGATE = "aggregate"
    """Sum of the numeric items (a dict: of its values)."""
    TEXT_COUNT = "text_count"
    """Character count of a string; 0 for None and non-strings."""


# Module-level aliases: comparing against these is cheaper than an Enum attribute lookup.
_HASH = AnonymityConversion.HASH
_TEXT_COUNT = AnonymityConversion.TEXT_COUNT
_COUNT = AnonymityConversion.COUNT
_BOOLEAN = AnonymityConversion.BOOLEAN
_DISTRIBUTION = AnonymityConversion.DISTRIBUTION
_AGGREGATE = AnonymityConversion.AGGREGATE


class TelemetryRuleError(ValueError):
    """A model's privacy rules are wrong: a rule names no field, or a value is not a rule."""


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()
_NO_HASHES: Mapping[object, str] = {}  # the hasher's memo before there is a hasher


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    out_name: str  # the key when serializing by alias
    declared: object = None  # the declared type, where the class says it (else None)


@dataclasses.dataclass(frozen=True)
class _ClassInfo:
    fields: tuple[_Field, ...]
    names: Mapping[str, str]  # field name or alias -> field name
    allow_extra: bool


_INFO: dict[type, _ClassInfo] = {}
_INFO_LOCK = threading.Lock()


def _renew_info_lock() -> None:  # a fork may land while another thread holds it
    global _INFO_LOCK
    _INFO_LOCK = threading.Lock()


in_forked_child(_renew_info_lock)


def _class_info(cls: type) -> _ClassInfo:
    info = _INFO.get(cls)
    if info is None:
        with _INFO_LOCK:
            info = _INFO.get(cls) or _build_info(cls)
            _INFO[cls] = info
    return info


def _build_info(cls: type) -> _ClassInfo:
    fields: list[_Field] = []
    names: dict[str, str] = {}
    allow_extra = False
    if issubclass(cls, BaseModel):
        for name, finfo in cls.model_fields.items():
            if finfo.exclude is True:
                continue
            aliases = [a for a in (finfo.alias, finfo.serialization_alias) if a]
            if isinstance(finfo.validation_alias, str):
                aliases.append(finfo.validation_alias)
            out = finfo.serialization_alias or finfo.alias or name
            fields.append(_Field(name, out, finfo.annotation))
            names.update(dict.fromkeys(aliases, name))
            names[name] = name
        for name, cinfo in cls.model_computed_fields.items():
            out = cinfo.alias or name
            fields.append(_Field(name, out))
            names[out] = name
            names[name] = name
        allow_extra = cls.model_config.get("extra") == "allow"
    elif hasattr(cls, "__attrs_attrs__"):
        for attribute in cls.__attrs_attrs__:
            alias = getattr(attribute, "alias", None) or attribute.name
            fields.append(_Field(attribute.name, alias, attribute.type))
            names[alias] = attribute.name
            names[attribute.name] = attribute.name
    elif dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            fields.append(_Field(f.name, f.name, f.type))
            names[f.name] = f.name
    return _ClassInfo(tuple(fields), names, allow_extra)


def _resolve(cls: type, info: _ClassInfo, declared: object, what: str) -> list[str]:
    resolved = []
    for key in declared:  # type: ignore[attr-defined]
        name = info.names.get(key) if isinstance(key, str) else None
        if name is None:
            known = ", ".join(sorted(f.name for f in info.fields)) or "(none)"
            raise TelemetryRuleError(
                f"{cls.__qualname__}.{what} names {key!r}, which is not a field or alias of "
                f"the model; its fields are: {known}"
            )
        resolved.append(name)
    return resolved


_Step = tuple[str, str, "AnonymityConversion | None", bool, bool]
"""(field name, output key, rule or None, trusted, output key sounds secret)."""


@dataclasses.dataclass(frozen=True)
class _Plan:
    steps: tuple[_Step, ...]
    extra: bool  # also send pydantic extra fields
    order: tuple[Any, ...] | None  # the rules' keys, when two of them name one field
    run: Callable[[_Walker, Any], dict[str, Any]]  # the steps, compiled (_compile)


_Cached = tuple["Mapping[Any, Any] | None", _Plan, "tuple[Any, ...] | None"]
"""(a copy of the rules the plan was built for, the plan, ``plan.order``)."""

_PLANS: dict[tuple[bool, bool], dict[type, _Cached]] = {
    (by_alias, options): {} for by_alias in (False, True) for options in (False, True)
}
"""Per (by_alias, options): class -> the plan of the last rules seen for it."""
_MAX_PLANS = 4096
_GENERAL: set[type] = set()
"""Classes that override ``_telemetry_keys()``: the walker calls it for each instance."""
_CLASS_RUNS: dict[bool, dict[type, tuple[dict[Any, Any], Callable[[_Walker, Any], Any] | None]]]
_CLASS_RUNS = {False: {}, True: {}}
"""Per by_alias: class -> (a copy of the ``_telemetry_rules`` last seen, their compiled plan,
or None when the class takes the general path)."""


def _plan(cls: type, rules: Mapping[Any, Any] | None, by_alias: bool, options: bool) -> _Plan:
    """The validated, resolved steps for one class and its current rules (cached).

    The cache holds the last rules seen per class, as a copy, and compares them with the
    current rules as dicts (one C-level comparison; the walker makes it inline, see
    :meth:`_Walker.model`). Their order matters only when two keys name one field (a name
    and its alias: the later rule wins); such a plan also keeps the order of its keys, and
    the order is compared too.
    """
    plans = _PLANS[by_alias, options]
    current = rules if type(rules) is dict else dict(rules.items()) if rules else {}
    cached = plans.get(cls)
    if cached is not None and cached[0] == (None if rules is None else current):
        plan = cached[1]
        if plan.order is None or plan.order == tuple(current):
            return plan
    plan = _build_plan(cls, tuple(current.items()), by_alias, options)
    if len(plans) >= _MAX_PLANS:
        plans.clear()
    # Stored as given when None or a dict, so that the walker's inline check can hit.
    plans[cls] = (None if rules is None else dict(current), plan, plan.order)
    return plan


def _build_plan(
    cls: type, items: tuple[tuple[Any, Any], ...], by_alias: bool, options: bool
) -> _Plan:
    info = _class_info(cls)
    by_name: dict[str, AnonymityConversion] = {}
    names = _resolve(cls, info, [k for k, _ in items], "_telemetry_keys()")
    for name, (_, conv) in zip(names, items, strict=True):
        if not isinstance(conv, AnonymityConversion):
            raise TelemetryRuleError(
                f"{cls.__qualname__}._telemetry_keys() maps {name!r} to {conv!r}, "
                "which is not an AnonymityConversion"
            )
        by_name[name] = conv
    strict = bool(options and getattr(cls, "_telemetry_strict", False))
    allow: frozenset[str] = frozenset()
    trusted: frozenset[str] = frozenset()
    if options:
        allow = frozenset(
            _resolve(cls, info, getattr(cls, "_telemetry_allow", ()), "_telemetry_allow")
        )
        trusted = frozenset(
            _resolve(cls, info, getattr(cls, "_telemetry_trusted", ()), "_telemetry_trusted")
        )
    steps: list[_Step] = []
    for f in info.fields:
        key = valid_text(f.out_name if by_alias else f.name)
        rule = by_name.get(f.name)
        if rule is AnonymityConversion.FORBIDDEN:
            continue
        if rule is None and strict and f.name not in allow and f.name not in trusted:
            continue
        is_trusted = f.name in trusted
        steps.append((f.name, key, rule, is_trusted, not is_trusted and is_secret_key(key)))
    order = tuple(k for k, _ in items) if len(set(names)) < len(names) else None
    declared = {f.name: f.declared for f in info.fields}
    run = _compile(cls, tuple(steps), declared)
    return _Plan(tuple(steps), info.allow_extra and not strict, order, run)


def _declared_models(declared: object) -> tuple[type | None, type | None]:
    """The model class a field is declared to hold, and the one its list is declared to
    hold (``M``, ``list[M]``, either ``| None``), where that class has privacy rules."""
    direct = items = None
    union = typing.get_origin(declared) in (typing.Union, types.UnionType)
    for arg in typing.get_args(declared) if union else (declared,):
        if typing.get_origin(arg) is list:
            args = typing.get_args(arg)
            if len(args) == 1 and _is_rules_class(args[0]):
                items = args[0]
        elif _is_rules_class(arg):
            direct = arg
    return direct, items


def _is_rules_class(t: object) -> bool:
    """``t`` is a class whose instances the walker serializes with their rules."""
    if not isinstance(t, type) or typing.get_origin(t) is not None:  # list[int] passes as a type
        return False
    return _handler_for(t) is _Walker.rules_model


def _compile(
    cls: type, steps: tuple[_Step, ...], declared: Mapping[str, object] | None = None
) -> Callable[[_Walker, Any], dict[str, Any]]:
    """The steps of a plan as one function ``(walker, obj) -> dict``, generated once per plan.

    It does what :meth:`_Walker.steps` does for these steps, with the rule, trust and
    secret of each field fixed: no loop, no dispatch on the rule, plain attribute reads.
    Only field names that are ASCII identifiers are written into the source (as
    ``obj.name``), other names are constants of the namespace; keys are written as their
    ``repr()``, a string literal whatever the key holds (a str subclass is a constant).

    A field ``declared`` to hold a model with rules (``M``, ``list[M]``) checks for a value
    of exactly that type first and hands it to :meth:`_Walker.rules_model` (a list: to
    :meth:`_Walker.model_list`) directly, as :meth:`_Walker.value` would in the end.
    """
    ns: dict[str, Any] = {
        "_ABSENT": _ABSENT,
        "_NO_HASHES": _NO_HASHES,
        "SECRET_MARKER": SECRET_MARKER,
        "valid_text": valid_text,
        "isfinite": isfinite,
        "_big_int": _big_int,
        "_INT_LIMIT": _INT_LIMIT,
        "conversions": conversions,
    }
    lines = ["def run(w, obj):", "    out = {}", "    memo = w._memo"]
    if any(rule is _HASH for _, _, rule, _, _ in steps):
        lines.append("    hashes = w._hasher.memo if w._hasher is not None else _NO_HASHES")
    for i, (name, key, rule, trusted, secret) in enumerate(steps):
        ns[f"N{i}"], ns[f"R{i}"] = name, rule
        plain = name.isascii() and name.isidentifier() and not keyword.iskeyword(name)
        lines += [
            "    try:",
            f"        v = obj.{name}" if plain else f"        v = getattr(obj, N{i})",
            "    except AttributeError:",  # getattr's default: absent
            "        pass" if rule is not None else f"        w.value(_ABSENT, {trusted})",
            "    except Exception as exc:  # a property or computed field that raises",
            f'        w.unreadable(exc, "the field", f"{{type(obj).__qualname__}}.{{N{i}}}")',
            "    else:",
        ]
        ns[f"K{i}"] = key  # a str subclass (an odd alias) stays itself, as a constant
        literal = str.__repr__(key) if type(key) is str else f"K{i}"
        direct, items = _declared_models((declared or {}).get(name))
        ns[f"M{i}"], ns[f"L{i}"] = direct, items
        source = _step_source(
            i,
            literal,
            rule,
            trusted,
            secret,
            model=direct is not None,
            model_list=items is not None,
        )
        lines += ["        " + line for line in source]
    lines.append("    return out")
    code = compile("\n".join(lines), f"<telemetry plan of {cls.__qualname__}>", "exec")
    exec(code, ns)  # noqa: S102 - our own source; names checked above, all else constants
    run: Callable[[_Walker, Any], dict[str, Any]] = ns["run"]
    return run


_DIRECT = {
    _COUNT: "to_count(v)",
    _BOOLEAN: "to_boolean(v)",
    _AGGREGATE: "to_aggregate(v)",
    _DISTRIBUTION: "to_distribution(v, w.scrubbed)",
}
"""The calls :meth:`_Walker.convert` makes for these rules (looked up when they run)."""


def _step_source(
    i: int,
    k: str,
    rule: AnonymityConversion | None,
    trusted: bool,
    secret: bool,
    *,
    model: bool = False,
    model_list: bool = False,
) -> list[str]:
    """Source for step ``i``, with ``v`` read: what :meth:`_Walker.steps` does with it.
    ``k`` is the output key as source: a literal, or the name of a constant. ``model``: the
    field is declared to hold the model class ``M{i}``; ``model_list``: a list of models."""
    if rule is _HASH:
        return [
            "if type(v) is str:",
            "    h = hashes.get(v)",
            f"    out[{k}] = h if h is not None else w.convert(R{i}, v)",
            "else:",
            f"    out[{k}] = w.convert(R{i}, v)",
        ]
    if rule is _TEXT_COUNT:
        return [f"out[{k}] = len(v) if type(v) is str and v.isascii() else w.convert(R{i}, v)"]
    if rule in _DIRECT:  # convert(), without its dispatch on the rule
        return [f"out[{k}] = conversions.{_DIRECT[rule]}"]
    if rule is not None:
        return [f"out[{k}] = w.convert(R{i}, v)"]
    if secret:  # never trusted
        return [f"out[{k}] = v if v is None or type(v) is bool else SECRET_MARKER"]
    text = (
        [f"    out[{k}] = valid_text(v)"]
        if trusted
        else [
            "    found = memo.get(v)",
            f"    out[{k}] = found if found is not None else w.text(v)",
        ]
    )
    declared: list[str] = []
    for check, condition, handler, type_name in (
        (model, f"t is M{i}", "w.rules_model", "t.__qualname__"),
        (model_list, "t is list", "w.model_list", '"list"'),
    ):
        if check:  # value()'s handler for the type, called directly
            declared += [
                f"{'elif' if declared else 'if'} {condition}:",
                "    try:",
                f"        converted = {handler}(v, {trusted}{f', L{i}' if model_list else ''})",
                "    except Exception as exc:",
                f'        w.unreadable(exc, "a value of type", {type_name})',
                "    else:",
                f"        out[{k}] = converted",
            ]
    return [
        "t = type(v)",
        *declared,
        f"{'elif' if declared else 'if'} t is str:",
        *text,
        "elif t is int:",
        f"    out[{k}] = v if -_INT_LIMIT < v < _INT_LIMIT else _big_int(v)",
        "elif t is float:",
        f"    out[{k}] = v if isfinite(v) else None",
        "elif v is None or t is bool:",
        f"    out[{k}] = v",
        "else:",
        f"    converted = w.value(v, {trusted})",
        "    if converted is not _ABSENT:",
        f"        out[{k}] = converted",
    ]


_Handler = Callable[["_Walker", Any, bool], Any]
"""Turns one value into its JSON-safe form (or _ABSENT); chosen once per type."""


def _h_int(w: _Walker, v: Any, trusted: bool) -> Any:
    v = int(v)
    return v if -_INT_LIMIT < v < _INT_LIMIT else _big_int(v)


def _h_float(w: _Walker, v: Any, trusted: bool) -> Any:
    return finite_float(float(v))  # float() first: a __float__ that raises means "not sent"


def _h_bool(w: _Walker, v: Any, trusted: bool) -> Any:
    return bool(v)


def _h_str(w: _Walker, v: Any, trusted: bool) -> Any:
    text = str(v)
    if type(text) is not str:  # a __str__ that returns a str subclass again
        text = str.__str__(text)
    return w.value(text, trusted)


def _h_enum(w: _Walker, v: Any, trusted: bool) -> Any:
    return w.value(v.value, trusted=True)  # enum values are the developer's constants


def _h_iso(w: _Walker, v: Any, trusted: bool) -> Any:
    return valid_text(v.isoformat())


def _h_seconds(w: _Walker, v: Any, trusted: bool) -> Any:
    return v.total_seconds()


def _h_text(w: _Walker, v: Any, trusted: bool) -> Any:
    return valid_text(str(v))


def _h_decimal(w: _Walker, v: Any, trusted: bool) -> Any:
    return float(v) if v.is_finite() else None


def _h_path(w: _Walker, v: Any, trusted: bool) -> Any:
    return PATH_MARKER


def _h_absent(w: _Walker, v: Any, trusted: bool) -> Any:
    return _ABSENT


def _h_other(w: _Walker, v: Any, trusted: bool) -> Any:
    log_once(
        30,
        "codeweaver_telemetry: a value of type %s was not sent (no JSON-safe form)",
        type(v).__qualname__,
    )
    return _ABSENT


def _set(w: _Walker, v: Any, trusted: bool) -> Any:
    return sorted(w.sequence(v, trusted), key=_sort_key)


def _model(w: _Walker, v: Any, trusted: bool) -> Any:
    return w.model(v, None)


def _h_sequence(w: _Walker, v: Any, trusted: bool) -> Any:
    # guarded(), inline: lists and dicts are the most common containers.
    stack = w._stack
    ident = id(v)
    if ident in stack:
        return CYCLE_MARKER
    if len(stack) >= MAX_DEPTH:
        return DEPTH_MARKER
    stack.add(ident)
    try:
        return w.sequence(v, trusted)
    finally:
        stack.discard(ident)


def _h_set(w: _Walker, v: Any, trusted: bool) -> Any:
    return w.guarded(v, trusted, _set)


def _h_mapping(w: _Walker, v: Any, trusted: bool) -> Any:
    stack = w._stack  # guarded(), inline
    ident = id(v)
    if ident in stack:
        return CYCLE_MARKER
    if len(stack) >= MAX_DEPTH:
        return DEPTH_MARKER
    stack.add(ident)
    try:
        return w.mapping(v, trusted)
    finally:
        stack.discard(ident)


def _h_model(w: _Walker, v: Any, trusted: bool) -> Any:
    return w.guarded(v, trusted, _model)


_HANDLERS: dict[type, _Handler] = {
    int: _h_int,
    float: _h_float,
    list: _h_sequence,
    tuple: _h_sequence,
    dict: _h_mapping,
    set: _h_set,
    frozenset: _h_set,
    bytes: _h_absent,
}


def _classify(t: type) -> _Handler:
    handler = _handler_for(t)
    if len(_HANDLERS) < 10_000:
        _HANDLERS[t] = handler
    return handler


def _handler_for(t: type) -> _Handler:
    # Order matters: Enum before its mixed-in base, bool before int.
    if issubclass(t, enum.Enum):
        return _h_enum
    if issubclass(t, bool):
        return _h_bool
    if issubclass(t, str):
        return _h_str
    if issubclass(t, int):
        return _h_int
    if issubclass(t, float):
        return _h_float
    if issubclass(t, (bytes, bytearray, memoryview)):
        return _h_absent
    if issubclass(t, (dt.datetime, dt.date, dt.time)):
        return _h_iso
    if issubclass(t, dt.timedelta):
        return _h_seconds
    if issubclass(t, uuid.UUID):
        return _h_text
    if issubclass(t, decimal.Decimal):
        return _h_decimal
    if issubclass(t, PurePath):
        return _h_path
    if issubclass(t, _TelemetryRules):
        return _Walker.rules_model
    if issubclass(t, Mapping):
        return _h_mapping
    if issubclass(t, (list, tuple)):
        return _h_sequence
    if issubclass(t, (set, frozenset)):
        return _h_set
    if issubclass(t, BaseModel) or hasattr(t, "__attrs_attrs__") or dataclasses.is_dataclass(t):
        return _h_model
    return _h_other


_MEMO_CHARS = PROPERTY_KEY_LENGTH
"""Strings of at most this many characters, before and after scrubbing, are remembered."""
_MEMO_ENTRIES = 4096


class _ScrubMemo:
    """What the default scrubber made of short strings and dict keys, for the whole process.

    The same keys and values come back in every event (``status``, ``"ok"``, language
    names). A remembered one costs one dict lookup instead of the cut check, the scrubber's
    call layers and, for a key, the secret-key check. Only the default :func:`scrub` is
    remembered (a scrubber passed in is called every time), and only strings of at most
    :data:`_MEMO_CHARS` characters, before and after scrubbing: a hit is never cut and never
    longer than that.
    """

    __slots__ = ("keys", "values")

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        """raw string -> its valid, scrubbed text."""
        self.keys: dict[str, tuple[str, bool]] = {}
        """raw dict key -> (its valid, scrubbed text, whether that text names a secret)."""

    def clear(self) -> None:
        """Forget everything (to measure the cold path)."""
        self.values.clear()
        self.keys.clear()


_MEMO = _ScrubMemo()
_DEFAULT_SCRUB = scrub  # the function whose results the memo holds, even if rules.scrub is patched


class _Walker:
    """One serialization: key provider, scrubber, alias choice and the cycle guard.

    It also measures what its dicts and lists hold, for :func:`serialize_measured`: the
    characters of their strings and keys (``chars``), their entries plus one per container
    (``items``), their largest length (``widest``) and whether some string is longer than
    :data:`_MEMO_CHARS` (``long``). ``measured`` turns False once a model is serialized:
    model output is not measured.
    """

    __slots__ = (
        "_class_runs",
        "_hasher",
        "_key_error",
        "_keys",
        "_max",
        "_memo",
        "_plans",
        "_provider",
        "_ready",
        "_remember",
        "_rule_plans",
        "_scrub",
        "_stack",
        "by_alias",
        "chars",
        "items",
        "long",
        "measured",
        "widest",
    )

    def __init__(
        self,
        provider: KeyProvider,
        scrubber: Callable[[str], str],
        by_alias: bool,
        max_chars: int | None = None,
    ) -> None:
        self._provider = provider
        self._hasher: KeyedHasher | None = None
        self._key_error: BaseException | None = None
        self._stack: set[int] = set()
        self._scrub = scrubber
        self._max = max_chars
        self.by_alias = by_alias
        self._plans = _PLANS[by_alias, False]
        self._rule_plans = _PLANS[by_alias, True]
        self._class_runs = _CLASS_RUNS[by_alias]
        self._ready: dict[type, Callable[[_Walker, Any], dict[str, Any]] | None] = {}
        """Model classes seen in this walk (a class may change between walks): the compiled
        plan of those whose rules are their ``_telemetry_rules``, else None."""
        # The shared memo holds scrub() of uncut strings: only for the default scrubber, and
        # only when no string it holds would be cut. Otherwise every lookup misses.
        self._remember = scrubber is _DEFAULT_SCRUB and (
            max_chars is None or max_chars >= _MEMO_CHARS
        )
        self._memo: dict[str, str] = _MEMO.values if self._remember else {}
        self._keys: dict[str, tuple[str, bool]] = _MEMO.keys if self._remember else {}
        self.chars = 0
        self.items = 0
        self.widest = 0
        self.long = False
        self.measured = True

    def scrub(self, text: str) -> str:
        # Cutting first keeps a huge string from stalling the worker; scrub_cut drops the
        # word the cut would split, so no half secret slips past the scrubber.
        if self._max is not None and len(text) > self._max:
            return scrub_cut(text, self._max, self._scrub)
        return self._scrub(text)

    def text(self, raw: str) -> str:
        """The valid, scrubbed form of a str (not a subclass) that the memo did not hold."""
        out = self.scrub(valid_text(raw))
        if len(out) > _MEMO_CHARS:
            self.long = True
        elif self._remember and len(raw) <= _MEMO_CHARS:
            memo = self._memo
            if len(memo) >= _MEMO_ENTRIES:
                memo.clear()
            memo[raw] = out
        return out

    def scrubbed(self, raw: str) -> str:
        """:meth:`text`, or what the memo holds for ``raw``."""
        found = self._memo.get(raw)
        return found if found is not None else self.text(raw)

    def key(self, raw: object) -> tuple[str, bool] | None:
        """The scrubbed output key for a dict key the memo did not hold, and whether it
        names a secret; None for a key that is not sent."""
        key = _dict_key(raw)
        if key is None:
            return None
        key = self.scrub(key)
        found = (key, is_secret_key(key))
        if len(key) > _MEMO_CHARS:
            self.long = True
        elif self._remember and type(raw) is str and len(raw) <= _MEMO_CHARS:
            keys = self._keys
            if len(keys) >= _MEMO_ENTRIES:
                keys.clear()
            keys[raw] = found
        return found

    def hasher(self) -> KeyedHasher:
        if self._hasher is None:
            try:
                self._hasher = KeyedHasher.for_key(self._provider.key())
            except Exception as exc:  # no key: not a problem of the value being read
                self._key_error = exc
                raise
        return self._hasher

    # -- values ----------------------------------------------------------------------
    def value(self, v: Any, trusted: bool = False) -> Any:
        t = type(v)
        if t is str:
            if trusted:
                return valid_text(v)
            found = self._memo.get(v)
            return found if found is not None else self.text(v)
        if v is None or t is bool:
            return v
        try:
            handler = _HANDLERS.get(t) or _classify(t)
            return handler(self, v, trusted)
        except Exception as exc:
            self.unreadable(exc, "a value of type", type(v).__qualname__)
            return _ABSENT

    def unreadable(self, exc: Exception, what: str, name: str) -> None:
        """Something raised while it was read: log it once (it is not sent).

        Errors that are not the value's (wrong rules, no HASH key) are raised again.
        """
        if isinstance(exc, TelemetryRuleError) or exc is self._key_error:
            raise exc
        log_once(
            30,
            "codeweaver_telemetry: %s %s was not sent (%s while reading it)",
            what,
            name,
            type(exc).__name__,
        )

    def guarded(self, v: Any, trusted: bool, convert: _Handler) -> Any:
        """Run ``convert`` on a container, cutting cycles and excessive depth."""
        ident = id(v)
        if ident in self._stack:
            return CYCLE_MARKER
        if len(self._stack) >= MAX_DEPTH:
            return DEPTH_MARKER
        self._stack.add(ident)
        try:
            return convert(self, v, trusted)
        finally:
            self._stack.discard(ident)

    def sequence(self, v: Any, trusted: bool) -> list[Any]:
        """The items of a list, tuple or set, each made JSON-safe; items not sent are left
        out. Iterating ``v`` may raise: then the whole sequence is not sent (``value()``)."""
        out: list[Any] = []
        append = out.append
        memo = self._memo
        chars = 0
        for item in v:
            t = type(item)
            # The common types inline, exactly as value() and its handlers convert them.
            if t is str and not trusted:
                found = memo.get(item)
                if found is None:
                    found = self.text(item)
                chars += len(found)
                append(found)
            elif t is int:
                append(item if -_INT_LIMIT < item < _INT_LIMIT else _big_int(item))
            elif t is float:
                append(item if isfinite(item) else None)
            elif item is None or t is bool:
                append(item)
            else:
                try:  # value(), inline
                    converted = (_HANDLERS.get(t) or _classify(t))(self, item, trusted)
                except Exception as exc:
                    self.unreadable(exc, "a value of type", t.__qualname__)
                    continue
                if converted is _ABSENT:
                    continue
                if type(converted) is str:
                    chars += self._measure(converted)
                append(converted)
        self._count(chars, len(out))
        return out

    def mapping(self, m: Mapping[Any, Any], trusted: bool) -> dict[str, Any]:
        """A mapping made JSON-safe: keys as text, scrubbed unless ``trusted``; a value under
        a secret-sounding key becomes the secret marker. ``items()`` may raise: then the
        whole mapping is not sent (``value()``)."""
        if trusted:
            return self._trusted_mapping(m)
        out: dict[str, Any] = {}
        memo = self._memo
        keys = self._keys
        chars = 0
        for k, val in m.items():
            found_key = keys.get(k) if type(k) is str else None
            if found_key is None:
                found_key = self.key(k)
                if found_key is None:
                    continue
            key, secret = found_key
            t = type(val)
            if secret and val is not None and t is not bool:
                out[key] = SECRET_MARKER
                chars += len(key) + len(SECRET_MARKER)
                continue
            # The common types inline, exactly as value() and its handlers convert them.
            converted: Any
            if t is str:
                converted = memo.get(val)
                if converted is None:
                    converted = self.text(val)
                chars += len(converted)
            elif t is int:
                converted = val if -_INT_LIMIT < val < _INT_LIMIT else _big_int(val)
            elif t is float:
                converted = val if isfinite(val) else None
            elif val is None or t is bool:
                converted = val
            else:
                converted = self.value(val, False)
                if converted is _ABSENT:
                    continue
                if type(converted) is str:
                    chars += self._measure(converted)
            chars += len(key)
            if key in out:
                _merge(out, key, converted)
            else:
                out[key] = converted
        self._count(chars, len(out))
        return out

    def _trusted_mapping(self, m: Mapping[Any, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        chars = 0
        for k, val in m.items():
            key = _dict_key(k)
            if key is None:
                continue
            converted = self.value(val, True)
            if converted is _ABSENT:
                continue
            chars += self._measure(key)
            if type(converted) is str:
                chars += self._measure(converted)
            if key in out:
                _merge(out, key, converted)
            else:
                out[key] = converted
        self._count(chars, len(out))
        return out

    def _measure(self, text: str) -> int:
        size = len(text)
        if size > _MEMO_CHARS:
            self.long = True
        return size

    def _count(self, chars: int, entries: int) -> None:
        self.chars += chars
        self.items += entries + 1
        self.widest = max(self.widest, entries)

    # -- models ----------------------------------------------------------------------
    def rules_model(self, obj: Any, trusted: bool) -> Any:
        """The handler of models with privacy rules: their own rules and class options, then
        their hook. Guarded against cycles and depth like :meth:`guarded`, inline."""
        stack = self._stack
        ident = id(obj)
        if ident in stack:
            return CYCLE_MARKER
        if len(stack) >= MAX_DEPTH:
            return DEPTH_MARKER
        stack.add(ident)
        try:
            cls = type(obj)
            run = self._ready.get(cls, _ABSENT)
            if run is _ABSENT:  # the first instance of its class in this walk
                run = self._class_plan(cls)
            if run is not None:  # the class's own rules: _telemetry_keys() is not called
                self.measured = False
                return run(self, obj)
            rules = obj._telemetry_keys()
            cached = self._rule_plans.get(cls)  # model(), inline
            if cached is not None and cached[0] == rules and cached[2] is None:
                plan = cached[1]
            else:
                plan = _plan(cls, rules, self.by_alias, True)
            self.measured = False
            out = plan.run(self, obj)
            if plan.extra:
                extra = getattr(obj, "__pydantic_extra__", None)
                if extra:
                    out.update(self.mapping(extra, trusted=False))
            if cls._telemetry_handler is _NO_HOOK:
                return out
            handled = obj._telemetry_handler(dict(out))
            result: dict[str, Any] = {}
            for k, v in handled.items():
                key = _dict_key(k)
                if key is None:
                    continue
                if key in out and out[key] is v:
                    result[key] = v
                    continue
                result.update(self.mapping({key: v}, trusted=False))
            return result
        finally:
            stack.discard(ident)

    def model_list(self, v: list[Any], trusted: bool, model: type) -> Any:
        """A list in a field declared as ``list[model]``: what ``value()`` gives for it, with
        its models handed to :meth:`rules_model` directly (or, when their class is ready,
        serialized here). Called from compiled plans only: the output is not measured."""
        stack = self._stack
        ident = id(v)  # _h_sequence(), inline
        if ident in stack:
            return CYCLE_MARKER
        if len(stack) >= MAX_DEPTH:
            return DEPTH_MARKER
        stack.add(ident)
        try:
            out: list[Any] = []
            append = out.append
            ready = self._ready
            for item in v:
                t = type(item)
                run = ready.get(t)
                if run is None:
                    if t is not model:  # sequence() decides
                        out += self.sequence((item,), trusted)
                        continue
                    try:  # its handler, called directly
                        append(self.rules_model(item, trusted))
                    except Exception as exc:
                        self.unreadable(exc, "a value of type", t.__qualname__)
                    continue
                item_id = id(item)  # rules_model(), inline
                if item_id in stack:
                    append(CYCLE_MARKER)
                elif len(stack) >= MAX_DEPTH:
                    append(DEPTH_MARKER)
                else:
                    stack.add(item_id)
                    try:
                        append(run(self, item))
                    except Exception as exc:
                        self.unreadable(exc, "a value of type", t.__qualname__)
                    finally:
                        stack.discard(item_id)
            return out
        finally:
            stack.discard(ident)

    def _class_plan(self, cls: Any) -> Callable[[_Walker, Any], dict[str, Any]] | None:
        """The compiled plan of a class whose rules are its ``_telemetry_rules`` (it does not
        override ``_telemetry_keys()``), has no hook and sends no extra fields; None for any
        other class, which takes the general path. Remembered for the rest of this walk.

        ``cls`` has the rule hooks (:func:`_handler_for`), though a class may have deleted
        one: then ``rules_model()`` fails as it always did."""
        run = None
        try:
            if cls in _GENERAL:
                pass
            elif cls._telemetry_keys is not _CLASS_RULES:
                if len(_GENERAL) < _MAX_PLANS:
                    _GENERAL.add(cls)  # the general path calls _telemetry_keys(): always right
            elif cls._telemetry_handler is _NO_HOOK:
                rules = cls._telemetry_rules
                if rules is not None:
                    cached = self._class_runs.get(cls)
                    if cached is not None and cached[0] == rules:  # as dicts: one C call
                        run = cached[1]
                    else:
                        run = self._class_run(cls, rules)
        except AttributeError:
            pass
        self._ready[cls] = run
        return run

    def _class_run(
        self, cls: type, rules: object
    ) -> Callable[[_Walker, Any], dict[str, Any]] | None:
        """The compiled plan of ``cls`` for these class rules, or None for the general path
        (rules that are not a mapping, or a plan that sends extra fields)."""
        runs = self._class_runs
        if not isinstance(rules, Mapping):  # _telemetry_keys() raises
            return None
        plan = _plan(cls, rules, self.by_alias, True)
        run = None if plan.extra else plan.run
        if plan.order is None:  # else their order matters too: _plan() compares it
            if len(runs) >= _MAX_PLANS:
                runs.clear()
            runs[cls] = (dict(rules.items()), run)
        return run

    def model(self, obj: Any, rules: Mapping[Any, Any] | None, *, options: bool = False) -> Any:
        """Serialize a model with ``rules``; ``options``: honour the class's strict/allow/trust."""
        cls = type(obj)
        cached = (self._rule_plans if options else self._plans).get(cls)
        if cached is not None and cached[0] == rules and cached[2] is None:
            plan = cached[1]  # the usual case: the rules of the last call, inline
        else:
            plan = _plan(cls, rules, self.by_alias, options)
        self.measured = False
        out = plan.run(self, obj)
        if plan.extra:
            extra = getattr(obj, "__pydantic_extra__", None)
            if extra:
                out.update(self.mapping(extra, trusted=False))
        return out

    def steps(self, plan: _Plan, obj: Any) -> dict[str, Any]:
        """The steps of ``plan`` on ``obj``, one by one, without the memos: what
        ``plan.run`` (compiled from them, see :func:`_compile`) does in one function. Kept
        as the reference the tests compare the compiled plans with."""
        out: dict[str, Any] = {}
        for name, key, rule, trusted, secret in plan.steps:
            try:
                value = getattr(obj, name, _ABSENT)
            except Exception as exc:  # a property or computed field that raises
                self.unreadable(exc, "the field", f"{type(obj).__qualname__}.{name}")
                continue
            t = type(value)
            if rule is not None:
                if value is not _ABSENT:
                    out[key] = self.convert(rule, value)
            elif secret and value is not None and t is not bool and value is not _ABSENT:
                out[key] = SECRET_MARKER
            elif t is str:
                value = valid_text(value)
                out[key] = value if trusted else self.scrub(value)
            elif t is int or t is bool or value is None:
                out[key] = (
                    value if t is not int or -_INT_LIMIT < value < _INT_LIMIT else _big_int(value)
                )
            else:
                converted = self.value(value, trusted)
                if converted is not _ABSENT:
                    out[key] = converted
        return out

    def convert(self, conv: AnonymityConversion, value: Any) -> Any:
        if conv is _HASH:
            hasher = self._hasher or self.hasher()
            return hasher(value) if type(value) is str else conversions.to_hash(value, hasher)
        if conv is _TEXT_COUNT:
            if type(value) is str and value.isascii():
                return len(value)
            return conversions.to_text_count(value)
        if conv is _COUNT:
            return conversions.to_count(value)
        if conv is _BOOLEAN:
            return conversions.to_boolean(value)
        if conv is _DISTRIBUTION:
            return conversions.to_distribution(value, self.scrubbed)
        if conv is _AGGREGATE:
            return conversions.to_aggregate(value)
        raise TelemetryRuleError(f"unknown conversion {conv!r}")  # pragma: no cover


def _merge(out: dict[str, Any], key: str, converted: Any) -> None:
    """Two keys scrubbed to one marker (``{"a@x.io": 5, "b@y.io": 7}``): counts add up,
    anything else is replaced by the later value."""
    earlier = out[key]
    if _is_count(earlier) and _is_count(converted):
        out[key] = earlier + converted
    else:
        out[key] = converted


def _is_count(v: object) -> bool:
    return type(v) is int or type(v) is float


def _big_int(v: int) -> float | None:
    try:
        return float(v)
    except OverflowError:
        return None


def _dict_key(k: object) -> str | None:
    """The output key for a dict key: valid text, or None for a key that is not sent."""
    if type(k) is str:
        return k if k.isascii() else valid_text(k)
    if isinstance(k, enum.Enum):
        k = k.value
    text = conversions.scalar_text(k)
    if text is not None:
        return valid_text(text)
    if isinstance(k, uuid.UUID):
        text = str(k)
        return valid_text(text) if isinstance(text, str) else None
    return None


def _sort_key(item: Any) -> tuple[str, str]:
    return (type(item).__name__, repr(item))


class _TelemetryRules:
    """The rule hooks shared by :class:`TelemetryModel` and :class:`TelemetryMixin`."""

    __slots__ = ()

    _telemetry_strict: ClassVar[bool] = False
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset()
    _telemetry_trusted: ClassVar[frozenset[str]] = frozenset()
    _telemetry_rules: ClassVar[Mapping[FilteredKey, AnonymityConversion] | None] = None
    """The class's rules, when they do not depend on the instance (see :meth:`_telemetry_keys`)."""

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion] | None:
        """Return the privacy rules of this model: ``{FilteredKey(field): conversion}``.

        Override it for rules that depend on the instance. By default it returns a copy of
        the class's ``_telemetry_rules`` (None when the class declares none).

        Raises:
            TelemetryRuleError: ``_telemetry_rules`` is not a mapping.
        """
        rules = type(self)._telemetry_rules
        if rules is None:
            return None
        if not isinstance(rules, Mapping):
            raise TelemetryRuleError(
                f"{type(self).__qualname__}._telemetry_rules is {rules!r}, not a mapping of "
                "FilteredKey to AnonymityConversion"
            )
        return dict(rules)

    def _telemetry_handler(self, serialized: dict[str, Any]) -> dict[str, Any]:
        """Post-process the serialized output; may add, replace or remove keys.

        Whatever this returns is used as the output. Keys it adds and values it replaces go
        through the same JSON-safety and scrubbing as everything else.
        """
        return serialized

    def serialize_for_telemetry(
        self,
        *,
        by_alias: bool = False,
        key_provider: KeyProvider | None = None,
        scrubber: Callable[[str], str] | None = None,
    ) -> dict[str, Any]:
        """Return what this model may send: its rules applied, JSON-safe, scrubbed.

        Args:
            by_alias: key the output by field aliases instead of field names.
            key_provider: the HASH key. Pass ``key_provider=client.key_provider`` for the
                install's stable hashes (the ones the client's events carry). Without it,
                a random key of this process is used
                (:func:`~codeweaver_telemetry.privacy.hashing.get_default_key_provider`):
                hashes are then stable within the process only.
            scrubber: the string scrubber; defaults to :func:`scrub`.

        Returns:
            A new dict; the model is not modified.

        Raises:
            TelemetryRuleError: the model's rules name a field it does not have.
        """
        result = serialize_for_telemetry(
            self, by_alias=by_alias, key_provider=key_provider, scrubber=scrubber
        )
        return result if isinstance(result, dict) else {}


def serialize_for_telemetry(
    obj: object,
    *,
    by_alias: bool = False,
    key_provider: KeyProvider | None = None,
    scrubber: Callable[[str], str] | None = None,
    max_string_chars: int | None = None,
) -> Any:
    """Serialize any value the way it may leave the machine.

    Models with rules use their rules; other models, dicts, lists and scalars are made
    JSON-safe and scrubbed. Returns None for a value that is not sent at all (bytes, an
    unknown object).

    HASH values depend on the key: pass ``key_provider=client.key_provider`` for the
    install's stable hashes, the same ones the client's events carry. A call without it
    hashes under a random key of this process
    (:func:`~codeweaver_telemetry.privacy.hashing.get_default_key_provider`), never written
    anywhere: stable within the process only, and never the install's key, whatever
    clients exist.

    Args:
        obj: the value.
        by_alias: key model output by field aliases.
        key_provider: the HASH key (default: the per-process random key, see above).
        scrubber: the string scrubber (default: :func:`scrub`).
        max_string_chars: scrub only the first this many characters of a longer string, cut
            at whitespace and marked as cut (see
            :func:`~codeweaver_telemetry.privacy.scrubber.scrub_cut`; the pipeline passes
            twice its final limit, so a huge string never stalls the worker).
    """
    walker = _Walker(
        key_provider or get_default_key_provider(), scrubber or scrub, by_alias, max_string_chars
    )
    result = walker.value(obj)
    return None if result is _ABSENT else result


def serialize_measured(
    obj: object,
    *,
    key_provider: KeyProvider | None = None,
    max_string_chars: int | None = None,
    max_items: int,
) -> tuple[Any, int | None]:
    """:func:`serialize_for_telemetry` with the default scrubber, and a bound on the result.

    The bound, measured during the one walk, is at least the size in UTF-8 bytes of the
    result as compact JSON (``separators=(",", ":")``, ``ensure_ascii=False``): it counts 6
    bytes per character of every key and string (a ``\\u001f`` escape) and 32 bytes per
    entry and per container (quotes, separators, and a number of at most 24 characters). It
    is None when the walk cannot vouch for the result: it is not a dict, it holds the output
    of a model (not measured), a string or key longer than
    :data:`~codeweaver_telemetry.privacy.conversions.PROPERTY_KEY_LENGTH` characters, or a
    dict or list of more than ``max_items`` entries. The pipeline skips its size limits for
    a result with a bound within them.

    Args:
        obj: the value.
        key_provider: the HASH key (as for :func:`serialize_for_telemetry`).
        max_string_chars: as for :func:`serialize_for_telemetry`.
        max_items: the largest dict or list the bound vouches for.

    Returns:
        The serialized value (None if it is not sent) and the bound, or None.
    """
    walker = _Walker(key_provider or get_default_key_provider(), scrub, False, max_string_chars)
    result = walker.value(obj)
    if result is _ABSENT:
        return None, None
    if type(result) is not dict or not walker.measured or walker.long or walker.widest > max_items:
        return result, None
    return result, 6 * walker.chars + 32 * walker.items


class TelemetryModel(_TelemetryRules, BaseModel):
    """A pydantic v2 model with privacy rules and ``serialize_for_telemetry()``.

    Formerly ``BasedModel`` (still an alias).

    Class options (set in the class body):

    - ``_telemetry_strict = True``: allowlist; only fields with a rule, or listed in
      ``_telemetry_allow`` / ``_telemetry_trusted``, are sent.
    - ``_telemetry_allow = frozenset({...})``: fields sent as their scrubbed value.
    - ``_telemetry_trusted = frozenset({...})``: fields sent without the scrubber (for
      enum-like values the developer vouches for).
    - ``_telemetry_rules = {FilteredKey(...): AnonymityConversion...}``: the rules, declared
      once for the class instead of returned by ``_telemetry_keys()`` on every instance
      (faster). ``_telemetry_keys()``, where a class overrides it, wins.

    .. versionchanged:: Unreleased
       ``_telemetry_rules``.
    """

    _telemetry_strict: ClassVar[bool] = False
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset()
    _telemetry_trusted: ClassVar[frozenset[str]] = frozenset()
    _telemetry_rules: ClassVar[Mapping[FilteredKey, AnonymityConversion] | None] = None


class TelemetryMixin(_TelemetryRules):
    """Mix into an attrs class or a stdlib dataclass for privacy rules and
    ``serialize_for_telemetry()``.

    The same class options as :class:`TelemetryModel` apply. Works with slotted classes.
    Formerly ``DataclassSerializationMixin`` (still an alias).
    """

    __slots__ = ()


_NO_HOOK = _TelemetryRules._telemetry_handler
_CLASS_RULES = _TelemetryRules._telemetry_keys

BasedModel = TelemetryModel
"""Former name of :class:`TelemetryModel`, kept as an alias."""
DataclassSerializationMixin = TelemetryMixin
"""Former name of :class:`TelemetryMixin`, kept as an alias."""
