# SPDX-License-Identifier: MIT OR Apache-2.0
"""Describe an exception without leaking anything personal: its type name, the in-app frames
as ``module:function`` (never a file path, a line number, a source line or a local), the type
names along its cause chain, its raw message cut short (for the caller to scrub or drop), and a
line-number-free signature that is the stable input to a keyed fingerprint hash.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import site
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from types import CodeType, TracebackType
from typing import Final

__all__ = [
    "MAX_CAUSES",
    "MAX_FRAMES",
    "MAX_MESSAGE_CHARS",
    "UNKNOWN_MODULE",
    "UNPRINTABLE_MESSAGE",
    "ErrorDescription",
    "describe_exception",
    "type_name",
]

#: At most this many in-app frames are kept: the innermost ones, where it broke.
MAX_FRAMES: Final = 20

#: At most this many type names are kept along the ``__cause__`` / ``__context__`` chain.
MAX_CAUSES: Final = 5

#: The raw message is cut to this many characters.
MAX_MESSAGE_CHARS: Final = 1000

#: Stands for a module (of a frame or a class) whose name cannot be read.
UNKNOWN_MODULE: Final = "<unknown>"

#: The message of an exception whose ``str()`` raises.
UNPRINTABLE_MESSAGE: Final = "<unprintable>"

_OWN_PACKAGE: Final = "codeweaver_telemetry"
_OWN_PREFIX: Final = _OWN_PACKAGE + "."
_LIBRARY_DIR_NAMES: Final = tuple(
    os.sep + name + os.sep for name in ("site-packages", "dist-packages")
)
_UNKNOWN_NAME: Final = "<unknown>"


@dataclass(frozen=True, slots=True)
class ErrorDescription:
    """What may be said about an exception; only ``message`` can hold user text.

    ``type_name`` is ``ValueError`` for a builtin, ``module.QualName`` otherwise. ``frames`` are
    the in-app frames as ``module:function``, outermost first, at most :data:`MAX_FRAMES` (the
    innermost). ``cause_types`` are the type names along the cause / context chain, nearest
    first, at most :data:`MAX_CAUSES`. ``message`` is ``str(exc)`` cut to
    :data:`MAX_MESSAGE_CHARS`: raw, so the caller decides whether to send it (scrubbed).
    ``signature`` is ``type_name`` and the frames joined by newlines: no line numbers, so a
    fingerprint hashed from it survives edits elsewhere in a file.
    """

    type_name: str
    frames: tuple[str, ...]
    cause_types: tuple[str, ...]
    message: str
    signature: str


def type_name(tp: type) -> str:
    """Return ``QualName`` for a builtin type, ``module.QualName`` for any other; never raises."""
    try:
        qualname = getattr(tp, "__qualname__", None)
        if not isinstance(qualname, str):
            qualname = getattr(tp, "__name__", None)
        if not isinstance(qualname, str):
            qualname = _UNKNOWN_NAME
        module = getattr(tp, "__module__", None)
        if not isinstance(module, str):
            module = UNKNOWN_MODULE
    except Exception:
        return _UNKNOWN_NAME
    if module == "builtins":
        return qualname
    return f"{module}.{qualname}"


if sys.version_info >= (3, 11):

    def _function_name(code: CodeType) -> str:
        return code.co_qualname

else:

    def _function_name(code: CodeType) -> str:
        return code.co_name


def _normalise(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


@functools.cache
def _library_prefixes() -> tuple[str, ...]:
    """Directories holding the standard library and installed packages, normalised, once."""
    candidates: list[str] = []
    # Each source may be missing or broken (old virtualenv site.py, odd sysconfig): skip it.
    with contextlib.suppress(Exception):
        paths = sysconfig.get_paths()
        candidates.extend(
            paths.get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib")
        )
    with contextlib.suppress(Exception):
        candidates.extend(site.getsitepackages())
    with contextlib.suppress(Exception):
        candidates.append(site.getusersitepackages())
    prefixes: dict[str, None] = {}
    for candidate in candidates:
        if not candidate:
            continue
        for variant in (candidate, os.path.realpath(candidate)):
            normalised = _normalise(variant).rstrip(os.sep)
            if normalised:
                prefixes[normalised + os.sep] = None
    return tuple(prefixes)


@functools.lru_cache(maxsize=4096)
def _is_library_file(filename: str) -> bool:
    """Whether a code object's file is a frozen module, the stdlib or an installed package."""
    if filename.startswith("<"):
        # A pseudo-file: frozen stdlib modules are library code; <string>, <stdin> are the app's.
        return filename.startswith("<frozen ")
    normalised = _normalise(filename)
    if normalised.startswith(_library_prefixes()):
        return True
    return any(name in normalised for name in _LIBRARY_DIR_NAMES)


def _in_app_names(in_app: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    if in_app is None:
        return None
    names = (in_app,) if isinstance(in_app, str) else tuple(n for n in in_app if isinstance(n, str))
    return names, tuple(name + "." for name in names)


def _frames(
    tb: TracebackType | None, names: tuple[tuple[str, ...], tuple[str, ...]] | None
) -> tuple[str, ...]:
    kept: collections.deque[str] = collections.deque(maxlen=MAX_FRAMES)
    while tb is not None:
        frame = tb.tb_frame
        tb = tb.tb_next
        module = frame.f_globals.get("__name__")
        if not isinstance(module, str):
            module = UNKNOWN_MODULE
        if module == _OWN_PACKAGE or module.startswith(_OWN_PREFIX):
            continue
        code = frame.f_code
        if names is None:
            if _is_library_file(code.co_filename):
                continue
        elif module not in names[0] and not module.startswith(names[1]):
            continue
        kept.append(f"{module}:{_function_name(code)}")
    return tuple(kept)


def _cause_types(exc: BaseException) -> tuple[str, ...]:
    found: list[str] = []
    seen = {id(exc)}
    current = exc
    while len(found) < MAX_CAUSES:
        nxt = current.__cause__
        if nxt is None and not current.__suppress_context__:
            nxt = current.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        found.append(type_name(type(nxt)))
        current = nxt
    return tuple(found)


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        return UNPRINTABLE_MESSAGE
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    # The message is scrubbed later: a plain cut could leave half an e-mail it would miss.
    from codeweaver_telemetry.privacy.scrubber import cut_words

    return cut_words(text, MAX_MESSAGE_CHARS)


def describe_exception(
    exc: BaseException, *, in_app: Sequence[str] | None = None
) -> ErrorDescription:
    """Describe ``exc`` by type, in-app frames, cause chain and raw message; never raises.

    Frames are read from ``exc.__traceback__`` and named ``module:function`` from the frame's
    globals and code object only. A frame is in-app when its module is one of ``in_app`` (or a
    submodule of one) if ``in_app`` is given, else when its file is neither in the standard
    library, a frozen module nor an installed package. Frames of ``codeweaver_telemetry`` are
    never in-app.
    """
    name = type_name(type(exc))
    try:
        frames = _frames(exc.__traceback__, _in_app_names(in_app))
    except Exception:
        frames = ()
    try:
        causes = _cause_types(exc)
    except Exception:
        causes = ()
    return ErrorDescription(
        type_name=name,
        frames=frames,
        cause_types=causes,
        message=_message(exc),
        signature=name + "\n" + "\n".join(frames),
    )
