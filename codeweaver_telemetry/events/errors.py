# SPDX-License-Identifier: MIT OR Apache-2.0
"""Describe an exception without leaking anything personal: its type name, the in-app frames
as ``module:function`` (never a file path, a line number, a source line or a local), the type
names along its cause chain, its raw message cut short (for the caller to scrub or drop), and a
line-number-free signature that is the stable input to a keyed fingerprint hash.

A frame's function is its qualified name, the same on every supported Python: what
``co_qualname`` gives on 3.12+ (``func``, ``Class.method``, ``outer.<locals>.inner``,
``func.<locals>.<lambda>``, ``func.<locals>.<genexpr>``). Since 3.12 (PEP 709) list, set
and dict comprehensions run inline in the enclosing function, without a frame of their own;
on 3.10 and 3.11 their frames are left out and their names dropped from nested names
(``f.<locals>.<listcomp>.<lambda>`` is ``f.<locals>.<lambda>``), so a fingerprint does not
change with the Python version. Python 3.10 has no ``co_qualname``: there the name is read
from the code that defines the function (see :func:`_compiled_qualname`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import opcode
import os
import site
import sys
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import CodeType, FunctionType, MethodType, TracebackType
from typing import Any, Final, TypeAlias

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


#: Comprehensions that Python 3.12+ runs inline (PEP 709): no frame, no part of a name.
_INLINED_COMPREHENSIONS: Final = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>"})


def _without_comprehensions(qualname: str) -> str:
    """``f.<locals>.<listcomp>.<lambda>`` as Python 3.12+ names it: ``f.<locals>.<lambda>``."""
    if "comp>" not in qualname:
        return qualname
    return ".".join(part for part in qualname.split(".") if part not in _INLINED_COMPREHENSIONS)


if sys.version_info >= (3, 12):

    def _function_name(code: CodeType, namespace: Mapping[str, Any]) -> str | None:
        """The frame's function as ``co_qualname`` names it."""
        return code.co_qualname

elif sys.version_info >= (3, 11):

    def _function_name(code: CodeType, namespace: Mapping[str, Any]) -> str | None:
        """The frame's function as 3.12+ names it; None for a frame 3.12+ would not have."""
        if code.co_name in _INLINED_COMPREHENSIONS:
            return None
        return _without_comprehensions(code.co_qualname)

else:

    def _function_name(code: CodeType, namespace: Mapping[str, Any]) -> str | None:
        """The frame's function as 3.12+ names it; None for a frame 3.12+ would not have."""
        if code.co_name in _INLINED_COMPREHENSIONS:
            return None
        return _without_comprehensions(_compiled_qualname(code, namespace))


# -- Python 3.10: the qualified name the compiler gave a code object --------------------------
#
# The compiler has always computed a qualified name for every function, lambda, comprehension
# and class; 3.11 stores it as ``co_qualname``. On 3.10 a class body sets it first thing
# (``LOAD_CONST '<qualname>'; STORE_NAME __qualname__``), so a class body's name is read from
# its own code; a function's is passed to MAKE_FUNCTION as a constant of the *enclosing* code
# (``LOAD_CONST <code>; LOAD_CONST '<qualname>'; MAKE_FUNCTION``), so it is exact once the
# enclosing code object is found among the code objects nested in the module's functions and
# its classes' methods. Code defined directly in the module or in a module-level class body
# has no enclosing code left to read (the module's own code object is gone after import): its
# name is the function object's ``__qualname__`` (``Class.method``), when it ends with the
# code's own name (a ``functools.wraps`` wrapper carries another function's), else
# ``co_name``, which is right for a module-level function. A method reachable only through
# objects other than functions, classes, properties, static and class methods, ``functools``
# wrappers, closures and default values (say, a callback held by a framework object) is
# named by ``co_name``, and so is what is nested in it. A module's code objects are indexed
# in one walk (again only when a code object is missing from the index) and each name is
# cached per code object: naming a frame costs a few microseconds after the first time.

_LOAD_CONST: Final = opcode.opmap.get("LOAD_CONST", -1)
_MAKE_FUNCTION: Final = opcode.opmap.get("MAKE_FUNCTION", -1)
_EXTENDED_ARG: Final = opcode.opmap.get("EXTENDED_ARG", -1)
_STORE_NAME: Final = opcode.opmap.get("STORE_NAME", -1)
_CO_NEWLOCALS: Final = 0x2

#: At most this many objects are looked at to find where a code object was defined.
_WALK_LIMIT: Final = 20_000

#: Names found, by code object identity; the code object is kept so its id is not reused.
_QUALNAMES: dict[int, tuple[CodeType, str]] = {}
_QUALNAMES_MAX: Final = 2048

#: A code object's id -> the code, the code that encloses it, the function made from it.
_Index: TypeAlias = dict[int, tuple[CodeType, CodeType | None, FunctionType | None]]

#: The code objects of the modules named lately, by id of their globals (kept alongside).
_INDEXES: dict[int, tuple[Mapping[str, Any], _Index]] = {}
_INDEXES_MAX: Final = 32

_TYPE_DICT: Final = type.__dict__["__dict__"]
_LRU_WRAPPER: Final = type(functools.lru_cache(maxsize=None)(len))
_WITH_FUNC: Final = (staticmethod, classmethod, MethodType)
_WITH_FUNC_ATTR: Final = (functools.partial, functools.partialmethod, functools.cached_property)


def _compiled_qualname(code: CodeType, namespace: Mapping[str, Any]) -> str:
    """The qualified name the compiler gave ``code`` (3.11's ``co_qualname``); never raises.

    ``namespace`` is the globals of the code's module. The answer is cached per code object.
    """
    key = id(code)
    cached = _QUALNAMES.get(key)
    if cached is not None and cached[0] is code:
        return cached[1]
    name = code.co_name
    if name != "<module>":
        try:
            found = _search_qualname(code, namespace)
        except Exception:
            found = None
        if found is not None:
            name = found
    if len(_QUALNAMES) >= _QUALNAMES_MAX:
        _QUALNAMES.clear()
    _QUALNAMES[key] = (code, name)
    return name


def _plausible(qualname: object, name: str) -> str | None:
    """``qualname`` if it is a qualified name ending in ``name``, else None."""
    if isinstance(qualname, str) and (qualname == name or qualname.endswith("." + name)):
        return qualname
    return None


def _search_qualname(target: CodeType, namespace: Mapping[str, Any]) -> str | None:
    if not target.co_flags & _CO_NEWLOCALS:
        # A class body: it starts by setting __qualname__ to the compiler's name for it.
        return _class_body_qualname(target)
    cached = _INDEXES.get(id(namespace))
    index = cached[1] if cached is not None and cached[0] is namespace else None
    entry = index.get(id(target)) if index is not None else None
    if entry is None or entry[0] is not target:
        # Not indexed yet (or defined since): index the module (again), once per code object.
        index = _index_module(namespace)
        if len(_INDEXES) >= _INDEXES_MAX:
            _INDEXES.clear()
        _INDEXES[id(namespace)] = (namespace, index)
        entry = index.get(id(target))
        if entry is None or entry[0] is not target:
            return None
    _, parent, function = entry
    if parent is not None:
        made = _made_qualname(parent, target)
        if made is not None:
            return made
    if function is not None:
        return _plausible(function.__qualname__, target.co_name)
    return None


def _index_module(namespace: Mapping[str, Any]) -> _Index:
    """Every code object reachable from the module's functions: with the code that encloses
    it, else (defined in the module or a class body) with its function."""
    index: _Index = {}
    pending: list[CodeType] = []
    for function in _module_functions(namespace):
        code = function.__code__
        if id(code) not in index:
            index[id(code)] = (code, None, function)
            pending.append(code)
    visited: set[int] = set()
    while pending:
        parent = pending.pop()
        if id(parent) in visited:
            continue
        visited.add(id(parent))
        for const in parent.co_consts:
            if type(const) is CodeType:
                known = index.get(id(const))
                index[id(const)] = (const, parent, known[2] if known is not None else None)
                pending.append(const)
    return index


def _instructions(code: CodeType) -> Iterator[tuple[int, int]]:
    """``(opcode, argument)`` of each instruction of 3.10 wordcode, EXTENDED_ARG applied."""
    raw = code.co_code
    extended = 0
    for offset in range(0, len(raw) - 1, 2):
        op = raw[offset]
        arg = raw[offset + 1] | extended
        if op == _EXTENDED_ARG:
            extended = arg << 8
            continue
        extended = 0
        yield op, arg


def _made_qualname(parent: CodeType, child: CodeType) -> str | None:
    """The name ``parent`` gives ``child`` with ``LOAD_CONST child; LOAD_CONST name;
    MAKE_FUNCTION`` (the 3.10 bytecode for a def, a lambda or a comprehension)."""
    consts = parent.co_consts
    first = second = -1  # the constants loaded by the last two instructions, or -1
    for op, arg in _instructions(parent):
        if op == _LOAD_CONST:
            first, second = second, arg
            continue
        if (
            op == _MAKE_FUNCTION
            and 0 <= first < len(consts)
            and 0 <= second < len(consts)
            and consts[first] is child
        ):
            return _plausible(consts[second], child.co_name)
        first = second = -1
    return None


def _class_body_qualname(body: CodeType) -> str | None:
    """The name a class body gives itself first: ``LOAD_CONST name; STORE_NAME __qualname__``
    (MAKE_FUNCTION gets only the bare class name)."""
    consts = body.co_consts
    loaded = -1
    for op, arg in _instructions(body):
        if (
            op == _STORE_NAME
            and 0 <= arg < len(body.co_names)
            and body.co_names[arg] == "__qualname__"
        ):
            return _plausible(consts[loaded], body.co_name) if loaded >= 0 else None
        loaded = arg if op == _LOAD_CONST and arg < len(consts) else -1
    return None


def _module_functions(namespace: Mapping[str, Any]) -> list[FunctionType]:
    """The functions with these globals reachable from them through the module's classes,
    methods, properties, static and class methods, ``functools`` wrappers and closures."""
    functions: list[FunctionType] = []
    seen: dict[int, object] = {}  # holds what it saw, so no id is reused during the walk
    pending: list[object] = list(namespace.values())
    looked = 0
    while pending and looked < _WALK_LIMIT:
        obj = pending.pop()
        looked += 1
        if id(obj) in seen:
            continue
        seen[id(obj)] = obj
        with contextlib.suppress(Exception):  # a hostile object is skipped
            pending.extend(_links(obj, namespace, functions))
    return functions


def _links(
    obj: object, namespace: Mapping[str, Any], functions: list[FunctionType]
) -> list[object]:
    """Note ``obj`` if it is a function of the module; return what it leads to."""
    kind = type(obj)
    if type(obj) is FunctionType:
        if obj.__globals__ is not namespace:
            return []
        functions.append(obj)
        return _function_links(obj)
    if isinstance(obj, type) and issubclass(kind, type):  # a class, whatever its __class__
        attributes = _TYPE_DICT.__get__(obj, kind)
        if attributes.get("__module__") != namespace.get("__name__"):
            return []
        return list(attributes.values())
    if kind in _WITH_FUNC:
        return [obj.__func__]  # type: ignore[attr-defined]
    if kind in _WITH_FUNC_ATTR:
        return [obj.func]  # type: ignore[attr-defined]
    if type(obj) is property:
        return [obj.fget, obj.fset, obj.fdel]
    if kind is _LRU_WRAPPER:
        return [obj.__dict__.get("__wrapped__")]
    return []


def _function_links(function: FunctionType) -> list[object]:
    """What a function refers to that may be (or hold) another function of the module."""
    links: list[object] = [function.__dict__.get("__wrapped__")]
    for cell in function.__closure__ or ():
        with contextlib.suppress(ValueError):  # an empty cell
            links.append(cell.cell_contents)
    links.extend(function.__defaults__ or ())
    links.extend((function.__kwdefaults__ or {}).values())
    return links


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
        function = _function_name(code, frame.f_globals)
        if function is not None:
            kept.append(f"{module}:{function}")
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
