"""The library API's arguments, checked against their type hints at the boundary (``@checked``).

Python would let ``bitedge.convert(model=None)`` or ``precisions="fp16"`` through to fail far away, or worse,
mean something else (``precisions=[]`` read as "every precision"). Each argument of a checked function is held
to its annotation: a wrong type, or None where a value is needed, is a ``BadInputError`` naming the argument;
a single string where a sequence is expected is that one item (``targets="onnx"``); an empty sequence names
nothing and is refused (leave the argument out for the default).
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bitedge.errors import BadInputError

F = TypeVar("F", bound=Callable[..., Any])


def checked(function: F) -> F:
    """Check (and normalize) every argument of ``function`` against its annotation on each call."""
    signature = inspect.signature(function)
    hints: dict[str, Any] = {}

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not hints:  # resolved on first use, parameters only (a return type may exist only for type checkers)
            hints.update(_parameter_hints(function))
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            bound.arguments[name] = _check(f"{function.__name__}(): {name}", hints[name], value)
        return function(*bound.args, **bound.kwargs)

    return typing.cast(F, wrapper)


def _parameter_hints(function: Callable[..., Any]) -> dict[str, Any]:
    class Parameters:
        pass

    Parameters.__annotations__ = {k: v for k, v in function.__annotations__.items() if k != "return"}
    return typing.get_type_hints(Parameters, globalns=function.__globals__)


def _check(where: str, hint: Any, value: Any) -> Any:
    origin, options = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in options:
            return None
        values = [o for o in options if o is not type(None)]
        if len(values) == 1:  # X | None given a value: X's own message says what is wrong
            return _check(where, values[0], value)
        for option in values:
            try:
                return _check(where, option, value)
            except BadInputError:
                continue
        raise BadInputError(f"{where} must be {' or '.join(_name(o) for o in options)}, got {_shown(value)}")
    if hint is Path:
        if isinstance(value, str | os.PathLike) and not isinstance(value, bytes):
            return value
        raise BadInputError(f"{where} must be a path (str or Path), got {_shown(value)}")
    if origin is collections.abc.Sequence:
        item = options[0] if options else Any
        items = [value] if isinstance(value, str | os.PathLike) else value
        if not isinstance(items, list | tuple):
            raise BadInputError(f"{where} must be a list whose items are each {_name(item)}, got {_shown(value)}")
        if not items:
            raise BadInputError(f"{where} is empty, so it names nothing; leave it out (None) for the default")
        return [_check(f"{where}[{i}]", item, v) for i, v in enumerate(items)]
    if origin is collections.abc.Mapping:
        if not isinstance(value, collections.abc.Mapping):
            raise BadInputError(f"{where} must be a mapping (dict), got {_shown(value)}")
        return value
    if origin is collections.abc.Callable:
        if not callable(value):
            raise BadInputError(f"{where} must be callable, got {_shown(value)}")
        return value
    if hint in (int, float, bool, str):
        ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise BadInputError(f"{where} must be {_name(hint)}, got {_shown(value)}")
        return value
    return value  # a hint this checker does not know: the function checks it itself


def _name(hint: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "True or False", type(None): "None",
             Path: "a path"}  # fmt: skip
    if typing.get_origin(hint) is collections.abc.Sequence:
        return "a list"
    if typing.get_origin(hint) is collections.abc.Callable:
        return "callable"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value: Any) -> str:
    return "None" if value is None else f"{type(value).__name__} {value!r}"[:120]
