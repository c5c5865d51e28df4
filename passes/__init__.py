"""The pass registry: an explicit list, plus third-party passes from entry points.

Third parties register a ``Pass`` subclass under the ``onnxopt.passes`` entry-point group.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from onnxopt.errors import BadInputError
from onnxopt.pass_api import Pass

logger = logging.getLogger(__name__)

# Each pass module adds its class here, in the order `onnxopt passes` lists them.
BUILTIN_PASSES: list[type[Pass]] = []

# Presets: named pass lists. "default" is what `onnxopt optimize` runs without options.
PRESETS: dict[str, list[str]] = {}


# "module:Class" of each built-in pass, one per line, in listing order.
_BUILTIN_MODULES: list[str] = [
]


def _register_builtins() -> None:
    # Imported lazily so each pass module can import from onnxopt without import cycles.
    import importlib

    for spec in _BUILTIN_MODULES:
        module_name, _, class_name = spec.partition(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        BUILTIN_PASSES.append(getattr(module, class_name))


def all_passes() -> dict[str, type[Pass]]:
    """Every known pass by CLI name: built-ins first, then entry points."""
    if not BUILTIN_PASSES:
        _register_builtins()
    registry = {cls.name: cls for cls in BUILTIN_PASSES}
    for entry in entry_points(group="onnxopt.passes"):
        try:
            cls = entry.load()
        except Exception as error:  # a broken plugin must not take the tool down
            logger.warning("cannot load pass plugin %s: %s", entry.name, error)
            continue
        registry.setdefault(cls.name, cls)
    return registry


def get_pass(name: str) -> type[Pass]:
    """The pass class for a CLI name, or a BadInputError listing the known names."""
    registry = all_passes()
    if name not in registry:
        raise BadInputError(f"unknown pass {name!r} (known: {', '.join(registry)})")
    return registry[name]
