# SPDX-License-Identifier: MIT OR Apache-2.0
"""Tests for describing an exception by type, in-app frames and cause chain, without leaks."""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from codeweaver_telemetry.events.errors import (
    MAX_CAUSES,
    MAX_FRAMES,
    MAX_MESSAGE_CHARS,
    UNPRINTABLE_MESSAGE,
    ErrorDescription,
    describe_exception,
    type_name,
)
from codeweaver_telemetry.privacy.hashing import InMemoryKeyProvider

MODULE = __name__
assert MODULE == "tests.events.test_errors"


class MyError(Exception):
    """A custom error defined in this test module."""


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _catch(fn: Callable[[], object], **kwargs: object) -> ErrorDescription:
    """Call ``fn``, which must raise, and describe what it raised."""
    try:
        fn()
    except Exception as exc:
        return describe_exception(exc, **kwargs)  # type: ignore[arg-type]
    raise AssertionError("fn did not raise")


def _raise_value_error(message: str = "boom") -> None:
    raise ValueError(message)


def _also_raise_value_error(message: str = "boom") -> None:
    raise ValueError(message)


def _recurse(depth: int) -> None:
    if depth == 0:
        raise ValueError("deep")
    _recurse(depth - 1)


class _Widget:
    """Methods of every kind, for qualified frame names."""

    def method(self) -> None:
        raise ValueError("method")

    @classmethod
    def make(cls) -> None:
        raise ValueError("classmethod")

    @staticmethod
    def check() -> None:
        raise ValueError("staticmethod")

    @property
    def size(self) -> int:
        raise ValueError("property")

    @functools.cached_property
    def area(self) -> int:
        raise ValueError("cached property")

    scale = lambda self: _raise_value_error("lambda")  # noqa: E731

    def spawn(self) -> None:
        def child() -> None:
            raise ValueError("nested in a method")

        child()

    class Part:
        def fit(self) -> None:
            raise ValueError("nested class")


def _wrapping(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


@_wrapping
def _decorated() -> None:
    raise ValueError("decorated")


@functools.cache
def _cached() -> None:
    (lambda: _raise_value_error("lambda"))()  # noqa: PLC3002


_module_lambda = lambda: _raise_value_error("lambda")  # noqa: E731


def _define_global() -> None:
    global _made_global

    def _made_global() -> None:
        raise ValueError("declared global")

    _made_global()


def _make_local_class() -> type:
    class Local:
        def run(self) -> None:
            raise ValueError("local class")

    return Local


_LocalClass = _make_local_class()


def test_raised_error_gives_module_function_frames_without_paths_or_lines() -> None:
    """A ValueError raised in this module names its frames module:qualname, nothing else."""

    def inner() -> None:
        raise ValueError("secret /home/alice/file.txt line 42")

    try:
        inner()
    except ValueError as exc:
        desc = describe_exception(exc)
    assert desc.type_name == "ValueError"
    qualname = "test_raised_error_gives_module_function_frames_without_paths_or_lines"
    assert desc.frames == (f"{MODULE}:{qualname}", f"{MODULE}:{qualname}.<locals>.inner")
    for text in (*desc.frames, desc.signature):
        assert "/" not in text
        assert "\\" not in text
        assert ".py" not in text
        assert not re.search(r"\d", text)
    assert desc.signature == "ValueError\n" + "\n".join(desc.frames)


def test_stdlib_frames_are_dropped() -> None:
    """An error raised deep inside json keeps only the in-app (test) frame, not json's."""
    try:
        json.loads("{")
    except ValueError as exc:
        desc = describe_exception(exc)
    assert desc.type_name == "json.decoder.JSONDecodeError"
    assert desc.frames == (f"{MODULE}:test_stdlib_frames_are_dropped",)
    assert all(not frame.startswith("json") for frame in desc.frames)


def test_custom_exception_type_name_is_qualified() -> None:
    """A custom class defined in this module is named module.QualName."""

    def fail() -> None:
        raise MyError("x")

    desc = _catch(fail)
    assert desc.type_name == f"{MODULE}.MyError"


def test_type_name_rules() -> None:
    """Builtins are bare, others module.QualName, with <locals> kept as is."""

    class Local(Exception):
        pass

    assert type_name(KeyError) == "KeyError"
    assert type_name(json.JSONDecodeError) == "json.decoder.JSONDecodeError"
    assert type_name(Local) == f"{MODULE}.test_type_name_rules.<locals>.Local"


def test_type_name_without_module_does_not_raise() -> None:
    """A class with no __module__ at all still gets a name, and so does its exception."""
    namespace: dict[str, object] = {}
    # type() called where globals have no __name__ leaves the class without __module__.
    scope: dict[str, object] = {"__builtins__": {"type": type, "Exception": Exception}}
    exec('Orphan = type("Orphan", (Exception,), {})', scope, namespace)  # noqa: S102
    orphan = namespace["Orphan"]
    assert isinstance(orphan, type)
    with pytest.raises(AttributeError):
        _ = orphan.__module__
    assert type_name(orphan) == "<unknown>.Orphan"
    desc = describe_exception(orphan("x"))
    assert desc.type_name == "<unknown>.Orphan"
    assert desc.message == "x"


def test_type_name_with_hostile_metaclass_does_not_raise() -> None:
    """A metaclass whose __module__ raises still gives a description."""

    class Hostile(type):
        @property
        def __module__(cls) -> str:  # type: ignore[override]
            raise RuntimeError("no module")

    weird = Hostile("Weird", (Exception,), {})
    assert isinstance(type_name(weird), str)
    desc = describe_exception(weird("x"))
    assert desc.type_name == type_name(weird)


def test_in_app_names_select_frames_by_module() -> None:
    """in_app=("tests",) keeps this module's frames; an unknown name keeps none."""
    kept = _catch(_raise_value_error, in_app=("tests",))
    assert kept.frames == (
        f"{MODULE}:_catch",
        f"{MODULE}:_raise_value_error",
    )
    assert _catch(_raise_value_error, in_app=(MODULE,)).frames == kept.frames
    assert _catch(_raise_value_error, in_app=("nonexistent",)).frames == ()
    # A name matches whole dotted segments only, never a bare prefix.
    assert _catch(_raise_value_error, in_app=("test",)).frames == ()
    assert _catch(_raise_value_error, in_app=("tests.events.test_err",)).frames == ()


def test_in_app_as_a_bare_string_is_one_name() -> None:
    """A single string is taken as one module name, not as a sequence of characters."""
    desc = _catch(_raise_value_error, in_app="tests")
    assert desc.frames == (f"{MODULE}:_catch", f"{MODULE}:_raise_value_error")


def test_in_app_can_include_stdlib_modules() -> None:
    """With explicit in_app names, a stdlib module's frames can be kept."""
    desc = _catch(lambda: json.loads("{"), in_app=("json", "tests"))
    assert desc.frames[0] == f"{MODULE}:_catch"
    assert any(frame.startswith("json.decoder:") for frame in desc.frames)
    assert all("/" not in frame for frame in desc.frames)


def test_own_library_frames_are_never_in_app() -> None:
    """An error raised inside codeweaver_telemetry keeps only the caller's frames."""

    def make_provider() -> None:
        InMemoryKeyProvider(b"short")

    desc = _catch(make_provider)
    assert desc.type_name == "ValueError"
    qualname = "test_own_library_frames_are_never_in_app"
    assert desc.frames == (f"{MODULE}:_catch", f"{MODULE}:{qualname}.<locals>.make_provider")
    # Even when asked for by name, the library's own frames are left out.
    named = _catch(make_provider, in_app=("codeweaver_telemetry",))
    assert named.frames == ()
    both = _catch(make_provider, in_app=("codeweaver_telemetry", "tests"))
    assert both.frames == desc.frames


def test_signature_is_stable_and_message_independent() -> None:
    """Same place, same signature; another function, another one; the message doesn't count."""
    first = _catch(_raise_value_error)
    second = _catch(_raise_value_error)
    other_message = _catch(lambda: _raise_value_error("something else entirely"))
    other_function = _catch(_also_raise_value_error)
    assert first.signature == second.signature
    assert first == second
    assert other_message.frames[-1] == first.frames[-1]
    assert other_message.message != first.message
    assert (
        _catch(lambda: _raise_value_error("a")).signature
        == _catch(lambda: _raise_value_error("b")).signature
    )
    assert other_function.signature != first.signature


def test_deep_recursion_keeps_innermost_frames() -> None:
    """Fifty recursive frames give MAX_FRAMES (20) frames: the innermost ones."""
    try:
        _recurse(50)
    except ValueError as exc:
        desc = describe_exception(exc)
        full = describe_exception(exc, in_app=("tests",))
    assert MAX_FRAMES == 20
    assert len(desc.frames) == MAX_FRAMES
    assert desc.frames == (f"{MODULE}:_recurse",) * MAX_FRAMES
    assert full == desc
    # The outermost (this test's own) frame is the one that was dropped.
    assert f"{MODULE}:test_deep_recursion_keeps_innermost_frames" not in desc.frames


def test_short_traceback_is_kept_whole() -> None:
    """Fewer than MAX_FRAMES frames are all kept, outermost first."""
    try:
        _recurse(3)
    except ValueError as exc:
        desc = describe_exception(exc)
    assert desc.frames == (
        f"{MODULE}:test_short_traceback_is_kept_whole",
        *(f"{MODULE}:_recurse",) * 4,
    )


def test_explicit_cause() -> None:
    """raise B from A lists A's type as the cause."""

    def fail() -> None:
        try:
            raise MyError("inner")
        except MyError as inner:
            raise ValueError("outer") from inner

    desc = _catch(fail)
    assert desc.type_name == "ValueError"
    assert desc.cause_types == (f"{MODULE}.MyError",)


def test_implicit_context() -> None:
    """An error raised while handling another lists the handled one."""

    def fail() -> None:
        try:
            raise KeyError("missing")
        except KeyError:
            raise MyError("while handling")  # noqa: B904

    desc = _catch(fail)
    assert desc.cause_types == ("KeyError",)


def test_from_none_suppresses_context() -> None:
    """raise X from None gives no cause types."""

    def fail() -> None:
        try:
            raise KeyError("missing")
        except KeyError:
            raise MyError("quiet") from None

    assert _catch(fail).cause_types == ()


def test_chain_is_nearest_first_and_bounded() -> None:
    """A long chain lists nearest first and stops at MAX_CAUSES."""
    kinds = [KeyError, TypeError, OSError, MyError, IndexError, LookupError, RuntimeError]
    errors = [kind("e") for kind in kinds]
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    desc = describe_exception(ValueError("top"))
    assert desc.cause_types == ()
    top = ValueError("top")
    top.__cause__ = errors[0]
    desc = describe_exception(top)
    assert len(desc.cause_types) == MAX_CAUSES == 5
    assert desc.cause_types == (
        "KeyError",
        "TypeError",
        "OSError",
        f"{MODULE}.MyError",
        "IndexError",
    )


def test_suppressed_context_still_follows_cause() -> None:
    """With __suppress_context__ set, __cause__ is followed and __context__ is not."""
    exc = ValueError("x")
    exc.__context__ = KeyError("ctx")
    exc.__cause__ = TypeError("cause")
    assert exc.__suppress_context__
    assert describe_exception(exc).cause_types == ("TypeError",)
    exc.__cause__ = None
    exc.__suppress_context__ = True
    assert describe_exception(exc).cause_types == ()
    exc.__suppress_context__ = False
    assert describe_exception(exc).cause_types == ("KeyError",)


def test_context_cycle_terminates() -> None:
    """a.__context__ = b; b.__context__ = a: the walk stops instead of looping."""
    a = KeyError("a")
    b = TypeError("b")
    a.__context__ = b
    b.__context__ = a
    assert describe_exception(a).cause_types == ("TypeError",)
    assert describe_exception(b).cause_types == ("KeyError",)
    self_loop = ValueError("self")
    self_loop.__context__ = self_loop
    assert describe_exception(self_loop).cause_types == ()


def test_unprintable_message() -> None:
    """An exception whose __str__ raises is described with message '<unprintable>'."""

    def fail() -> None:
        raise _Unprintable()

    desc = _catch(fail)
    assert desc.message == UNPRINTABLE_MESSAGE == "<unprintable>"
    assert desc.type_name == f"{MODULE}._Unprintable"
    assert desc.frames


def test_never_raised_exception_has_no_frames() -> None:
    """An exception that was never raised has no traceback, hence no frames."""
    exc = MyError("never raised")
    assert exc.__traceback__ is None
    desc = describe_exception(exc)
    assert desc.frames == ()
    assert desc.signature == f"{MODULE}.MyError\n"
    assert desc.message == "never raised"


def test_message_is_cut_without_splitting_a_word() -> None:
    """The raw message is cut to MAX_MESSAGE_CHARS (1000) characters at a word boundary:
    the word the cut would split (half an e-mail the scrubber would miss) is dropped."""
    assert MAX_MESSAGE_CHARS == 1000
    message = "failed: " + "x" * 980 + " mail alice.smith@example.com and more"
    desc = describe_exception(ValueError(message))
    assert len(desc.message) <= 1000
    assert "alice" not in desc.message
    assert desc.message.startswith("failed: xxx")
    assert describe_exception(ValueError("short")).message == "short"


def test_description_is_frozen() -> None:
    """An ErrorDescription cannot be changed after the fact."""
    desc = describe_exception(ValueError("x"))
    with pytest.raises(AttributeError):
        desc.message = "y"  # type: ignore[misc]


def test_frame_without_module_name_is_unknown() -> None:
    """A frame whose globals have no __name__ is named <unknown>:function."""
    globals_: dict[str, object] = {"__builtins__": __builtins__}
    exec("def nameless():\n    raise ValueError('x')\n", globals_)  # noqa: S102
    nameless = globals_["nameless"]
    assert callable(nameless)
    desc = _catch(nameless)
    assert desc.frames[-1] == "<unknown>:nameless"


def test_keyboard_interrupt_is_described() -> None:
    """A BaseException that is not an Exception is described too."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as exc:
        desc = describe_exception(exc)
    assert desc.type_name == "KeyboardInterrupt"
    assert desc.frames == (f"{MODULE}:test_keyboard_interrupt_is_described",)


def _baseline(message: str) -> ErrorDescription:
    """Describe a ValueError raised from one fixed place with the given message."""
    try:
        _raise_value_error(message)
    except ValueError as exc:
        return describe_exception(exc)
    raise AssertionError("unreachable")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_message_never_reaches_default_fields(message: str) -> None:
    """Arbitrary message text never changes or appears in frames, signature or type_name."""
    desc = _baseline(message)
    reference = _baseline("reference message")
    assert desc.type_name == reference.type_name
    assert desc.frames == reference.frames
    assert desc.signature == reference.signature
    assert desc.cause_types == reference.cause_types
    assert desc.message == message[:MAX_MESSAGE_CHARS]
    assume(len(message) >= 6)
    assume(message not in reference.signature)
    for field in (desc.type_name, desc.signature, *desc.frames):
        assert message not in field


def _names(desc: ErrorDescription) -> tuple[str, ...]:
    """The frames without the module prefix (all are this module's)."""
    assert all(frame.startswith(MODULE + ":") for frame in desc.frames), desc.frames
    return tuple(frame[len(MODULE) + 1 :] for frame in desc.frames)


def test_methods_are_named_by_class_qualname() -> None:
    """Methods, class/static methods, properties and nested classes: Class.name, on every
    Python version (3.10 has no co_qualname)."""
    widget = _Widget()
    here = "test_methods_are_named_by_class_qualname.<locals>.<lambda>"
    assert _names(_catch(widget.method)) == ("_catch", "_Widget.method")
    assert _names(_catch(_Widget.make)) == ("_catch", "_Widget.make")
    assert _names(_catch(_Widget.check)) == ("_catch", "_Widget.check")
    assert _names(_catch(lambda: widget.size)) == ("_catch", here, "_Widget.size")
    assert _names(_catch(lambda: widget.area)) == ("_catch", here, "_Widget.area")
    assert _names(_catch(widget.scale)) == ("_catch", "_Widget.<lambda>", "_raise_value_error")
    assert _names(_catch(widget.spawn)) == (
        "_catch",
        "_Widget.spawn",
        "_Widget.spawn.<locals>.child",
    )
    assert _names(_catch(_Widget.Part().fit)) == ("_catch", "_Widget.Part.fit")
    assert _names(_catch(_LocalClass().run)) == ("_catch", "_make_local_class.<locals>.Local.run")


def test_nested_functions_lambdas_and_wrappers_are_named_by_qualname() -> None:
    """Nested functions, lambdas, decorators' wrappers, cached functions and names declared
    global get their compile-time qualified names."""
    q = "test_nested_functions_lambdas_and_wrappers_are_named_by_qualname"

    def outer() -> None:
        def inner() -> None:
            (lambda: _raise_value_error("lambda"))()  # noqa: PLC3002

        inner()

    assert _names(_catch(outer)) == (
        "_catch",
        f"{q}.<locals>.outer",
        f"{q}.<locals>.outer.<locals>.inner",
        f"{q}.<locals>.outer.<locals>.inner.<locals>.<lambda>",
        "_raise_value_error",
    )
    # A wrapper keeps its own name: functools.wraps changes __qualname__, not the code's.
    assert _names(_catch(_decorated)) == ("_catch", "_wrapping.<locals>.wrapper", "_decorated")
    assert _names(_catch(_cached)) == (
        "_catch",
        "_cached",
        "_cached.<locals>.<lambda>",
        "_raise_value_error",
    )
    assert _names(_catch(_module_lambda)) == ("_catch", "<lambda>", "_raise_value_error")
    assert _names(_catch(_define_global)) == ("_catch", "_define_global", "_made_global")


def test_comprehension_frames_are_named_as_on_python_3_12() -> None:
    """List, set and dict comprehensions have no frame of their own since Python 3.12
    (PEP 709): on older versions theirs is left out and their name dropped from nested
    names, so the frames, hence the fingerprint, are the same on every version. Generator
    expressions keep their frame everywhere."""
    q = "test_comprehension_frames_are_named_as_on_python_3_12"

    def in_list() -> object:
        return [_raise_value_error() for _ in range(1)]

    def in_set() -> object:
        return {_raise_value_error() for _ in range(1)}

    def in_dict() -> object:
        return {i: _raise_value_error() for i in range(1)}

    def lambda_in_list() -> object:
        return [(lambda: _raise_value_error("lambda"))() for _ in range(1)]  # noqa: PLC3002

    def in_generator() -> object:
        return list(_raise_value_error() for _ in range(1))  # noqa: C400

    def generator_in_list() -> object:
        return [list(_raise_value_error() for _ in range(1)) for _ in range(1)]  # noqa: C400

    for fn in (in_list, in_set, in_dict):
        assert _names(_catch(fn)) == ("_catch", f"{q}.<locals>.{fn.__name__}", "_raise_value_error")
    assert _names(_catch(lambda_in_list)) == (
        "_catch",
        f"{q}.<locals>.lambda_in_list",
        f"{q}.<locals>.lambda_in_list.<locals>.<lambda>",
        "_raise_value_error",
    )
    assert _names(_catch(in_generator)) == (
        "_catch",
        f"{q}.<locals>.in_generator",
        f"{q}.<locals>.in_generator.<locals>.<genexpr>",
        "_raise_value_error",
    )
    assert _names(_catch(generator_in_list)) == (
        "_catch",
        f"{q}.<locals>.generator_in_list",
        f"{q}.<locals>.generator_in_list.<locals>.<genexpr>",
        "_raise_value_error",
    )


def test_class_body_frame_is_named_by_class_qualname() -> None:
    """An error raised while a class body runs names the frame by the class's qualname."""
    q = "test_class_body_frame_is_named_by_class_qualname"

    def build() -> None:
        class Body:
            class Inner:
                _raise_value_error()

    assert _names(_catch(build)) == (
        "_catch",
        f"{q}.<locals>.build",
        f"{q}.<locals>.build.<locals>.Body",
        f"{q}.<locals>.build.<locals>.Body.Inner",
        "_raise_value_error",
    )


class _HostileMeta(type):
    def __getattribute__(cls, name: str) -> Any:
        raise RuntimeError("no attributes here")


class _Liar:
    """Claims to be a class and refuses every attribute."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("no attributes here")


def test_naming_survives_hostile_module_contents() -> None:
    """Objects that raise on any attribute in the module do not stop naming the frames."""
    namespace: dict[str, Any] = {
        "__name__": "tests.hostile",
        "__builtins__": __builtins__,
        "weird": _HostileMeta("Weird", (), {}),
        "liar": _Liar(),
    }
    source = "class Holder:\n    def go(self):\n        raise ValueError('x')\n"
    exec(source, namespace)  # noqa: S102
    holder = namespace["Holder"]()
    desc = describe_exception(_raised(holder.go), in_app=("tests.hostile",))
    assert desc.frames == ("tests.hostile:Holder.go",)


def test_a_rewritten_qualname_does_not_rename_the_frame() -> None:
    """The frame is named as the code was compiled, whatever __qualname__ says later."""
    namespace: dict[str, Any] = {"__name__": "tests.renamed", "__builtins__": __builtins__}
    source = "def renamed():\n    raise ValueError('x')\nrenamed.__qualname__ = 'Other.thing'\n"
    exec(source, namespace)  # noqa: S102
    desc = describe_exception(_raised(namespace["renamed"]), in_app=("tests.renamed",))
    assert desc.frames == ("tests.renamed:renamed",)


def _raised(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("fn did not raise")
