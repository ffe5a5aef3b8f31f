"""The target registry: each target is one module that registers its converter here; core code asks here.

Built-in targets are the public modules of this package (``converters/onnx.py``, ...; private helpers start
with ``_``), imported on first use. Targets outside bitedge register through the entry-point group
``bitedge.converters`` (``name = "package.module:ConverterClass"``). An outside target can never break a
built-in one or bitedge itself:

- built-ins win: an outside target named like a built-in one (or registering a converter under a built-in's
  name) is left out, and the built-in is used;
- one that fails to load, however (an exception, ``sys.exit()``, any ``BaseException`` but Ctrl-C), is listed
  as unusable with the reason, and the rest load as usual.

``problems()`` gives one line per outside target that was left out, naming it and its package.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, TypeVar

from bitedge.errors import BitEdgeError, MissingRuntimeError, UnknownTargetError

if TYPE_CHECKING:
    from bitedge.converters.base import Converter

ENTRY_POINT_GROUP = "bitedge.converters"
_INFRASTRUCTURE = {"base", "registry"}  # modules of this package that are not targets

_classes: dict[str, type[Converter]] = {}
_builtin: set[str] = set()  # names of the targets bitedge itself ships
_broken: dict[str, str] = {}  # outside targets that failed to load -> why
_problems: list[str] = []  # one line per outside target left out
_instances: dict[str, Converter] = {}
_loaded = False

C = TypeVar("C", bound="type[Converter]")


class _BuiltinName(BitEdgeError):
    """An outside converter claimed the name of a built-in target."""


def register(cls: C) -> C:
    """Class decorator: make ``cls`` the converter of the target ``cls.name``."""
    existing = _classes.get(cls.name)
    if existing is not None and existing is not cls:
        if cls.name in _builtin:
            raise _BuiltinName(f"it claims the name of the built-in target {cls.name!r}, which wins")
        raise BitEdgeError(
            f"two converters claim the target {cls.name!r}: {existing.__module__} and {cls.__module__}; "
            "uninstall one of the packages that provide them"
        )
    _classes[cls.name] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import bitedge.converters as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_") and module.name not in _INFRASTRUCTURE:
            importlib.import_module(f"{package.__name__}.{module.name}")
    _builtin.update(_classes)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _load_outside(entry)


def _load_outside(entry: EntryPoint) -> None:
    """Load one outside target; whatever it does while loading, leave it out with the reason if it fails."""
    from bitedge.converters.base import Converter

    before = dict(_classes)
    try:
        loaded = entry.load()
        if isinstance(loaded, type) and issubclass(loaded, Converter):
            register(loaded)
    except KeyboardInterrupt:  # the user's Ctrl-C, not the plugin's doing
        raise
    except BaseException as exc:  # an outside package's bug (even sys.exit) must not break bitedge
        _classes.clear()
        _classes.update(before)  # nothing it registered before failing stays
        why = exc.args[0] if isinstance(exc, _BuiltinName) else _failure(exc)
        _leave_out(entry, why)
        return
    if entry.name not in _classes:
        _leave_out(entry, f"it registers no converter named {entry.name!r}")


def _failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) while loading"
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"it failed to load ({type(exc).__name__}{': ' + first if first else ''})"


def _leave_out(entry: EntryPoint, why: str) -> None:
    package = f", package {entry.dist.name}" if entry.dist is not None else ""
    line = f"outside target {entry.name!r} ({entry.value}{package}) is not usable: {why}"
    if entry.name in _builtin:
        line += f"; the built-in {entry.name} target is used"
    else:
        _broken[entry.name] = f"{entry.value}{package}: {why}"
    _problems.append(line)


def problems() -> list[str]:
    """One line per outside target left out (failed to load, or named like a built-in one)."""
    _load()
    return list(_problems)


def converter_classes() -> list[type[Converter]]:
    """Every registered converter class, built-in first (in module order), then outside ones."""
    _load()
    return list(_classes.values())


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a target bitedge itself ships."""
    _load()
    return name in _builtin


def target_names() -> list[str]:
    """Every target name, usable or not."""
    _load()
    return list(dict.fromkeys([*_classes, *_broken]))


def parse_target(text: str) -> str:
    """A target name as the user typed it, checked against the registry."""
    if not isinstance(text, str):
        raise UnknownTargetError(f"a target name must be a string, got {type(text).__name__}: {text!r}")
    name = text.lower()
    if name not in target_names():
        raise UnknownTargetError(f"unknown target {text!r}; choose from {', '.join(target_names())}")
    return name


def get_converter(name: str) -> Converter:
    """The converter of target ``name``."""
    _load()
    if name not in _classes and name in _broken:
        raise MissingRuntimeError(f"target {name} is not usable: {_broken[name]}")
    if name not in _classes:
        raise UnknownTargetError(f"unknown target {name!r}; choose from {', '.join(target_names())}")
    if name not in _instances:
        _instances[name] = _classes[name]()
    return _instances[name]
