"""The target registry: each target is one module that registers its converter here; core code asks here.

Built-in targets are the public modules of this package (``converters/onnx.py``, ...; private helpers start
with ``_``), imported on first use. Targets outside bitedge register through the entry-point group
``bitedge.converters`` (``name = "package.module:ConverterClass"``); one that fails to load is reported as
unusable, with the reason, and never breaks the rest.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

from bitedge.errors import BitEdgeError, MissingRuntimeError, UnknownTargetError

if TYPE_CHECKING:
    from bitedge.converters.base import Converter

ENTRY_POINT_GROUP = "bitedge.converters"
_INFRASTRUCTURE = {"base", "registry"}  # modules of this package that are not targets

_classes: dict[str, type[Converter]] = {}
_broken: dict[str, str] = {}  # outside targets that failed to load -> why
_instances: dict[str, Converter] = {}
_loaded = False

C = TypeVar("C", bound="type[Converter]")


def register(cls: C) -> C:
    """Class decorator: make ``cls`` the converter of the target ``cls.name``."""
    existing = _classes.get(cls.name)
    if existing is not None and existing is not cls:
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
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:  # an outside package's bug must not break bitedge: report it as unusable
            _broken[entry.name] = f"its converter {entry.value} failed to load ({type(exc).__name__}: {exc})"
            continue
        from bitedge.converters.base import Converter

        if isinstance(loaded, type) and issubclass(loaded, Converter):
            register(loaded)
        if entry.name not in _classes:
            _broken[entry.name] = f"{entry.value} registers no converter named {entry.name!r}"


def converter_classes() -> list[type[Converter]]:
    """Every registered converter class, built-in first (in module order), then outside ones."""
    _load()
    return list(_classes.values())


def target_names() -> list[str]:
    """Every target name, usable or not."""
    _load()
    return list(dict.fromkeys([*_classes, *_broken]))


def parse_target(text: str) -> str:
    """A target name as the user typed it, checked against the registry."""
    name = text.lower()
    if name not in target_names():
        raise UnknownTargetError(f"unknown target {text!r}; choose from {', '.join(target_names())}")
    return name


def get_converter(name: str) -> Converter:
    """The converter of target ``name``."""
    _load()
    if name in _broken:
        raise MissingRuntimeError(f"target {name} is not usable: {_broken[name]}")
    if name not in _classes:
        raise UnknownTargetError(f"unknown target {name!r}; choose from {', '.join(target_names())}")
    if name not in _instances:
        _instances[name] = _classes[name]()
    return _instances[name]
