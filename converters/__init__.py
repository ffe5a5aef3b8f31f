"""Converters, one module per target, installed as ``bitedge.converters``.

Each target module defines a :class:`bitedge.converters.base.Converter` subclass and registers it
(``@register``); private helpers beside it start with ``_``. ``registry`` finds them, and targets of other
packages through the entry-point group ``bitedge.converters``. Importing a target module is cheap: runtime
imports (and torch) happen inside methods.
"""

from __future__ import annotations

import logging

from bitedge.converters.registry import converter_classes, get_converter, parse_target, register, target_names

# coremltools logs at import that its macOS-only runtime did not load: expected off macOS, and noise to users
logging.getLogger("coremltools").setLevel(logging.ERROR)

__all__ = ["converter_classes", "get_converter", "parse_target", "register", "target_names"]
