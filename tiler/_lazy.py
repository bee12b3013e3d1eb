"""Package names that load on first use (PEP 562), so that importing a package costs nothing."""

from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[list, Callable, Callable]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for a package exporting names of its private modules.

    Parameters
    ----------
    package : str
        The package's dotted name, e.g. ``"tiler.model"``.
    exports : mapping of str to str
        Public name -> the private module (relative to ``package``) that defines it.

    Returns
    -------
    tuple
        ``(__all__, __getattr__, __dir__)`` to assign at the package's top level.
    """
    names = sorted(exports)

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list:
        return names

    return names, __getattr__, __dir__
