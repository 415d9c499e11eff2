"""Module aliases: old import paths that keep working after a module moved.

:func:`install` registers a finder on :data:`sys.meta_path` that answers ``import OLD`` (and
``from OLD import name``) with a stand-in module whose attributes are looked up, on first use, in
the new modules. A *moved* alias warns once with a :class:`FutureWarning` naming the new path; a
*public* alias (an advertised short path such as ``vipann.convert``) does not warn.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["AliasModule", "install"]


class AliasModule(types.ModuleType):
    """A module whose attributes live in other modules (searched in order, imported lazily).

    Args:
        name: The alias's own dotted name.
        targets: The modules that hold its attributes.
    """

    def __init__(self, name: str, targets: Sequence[str]) -> None:
        super().__init__(name, f"Alias of {', '.join(targets)}.")
        self.__alias_targets__ = tuple(targets)

    def _modules(self) -> list[types.ModuleType]:
        return [importlib.import_module(t) for t in self.__alias_targets__]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for module in self._modules():
            if hasattr(module, name):
                return getattr(module, name)
        targets = ", ".join(self.__alias_targets__)
        raise AttributeError(f"module {self.__name__!r} (now {targets}) has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        names: set[str] = set()
        for module in self._modules():
            names.update(getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")])
        return sorted(names)


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, moved: Mapping[str, Sequence[str]], public: Mapping[str, Sequence[str]]) -> None:
        self.moved = dict(moved)
        self.public = dict(public)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.moved or fullname in self.public:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        targets = self.moved.get(spec.name) or self.public[spec.name]
        if len(targets) == 1 and spec.name in self.public:
            return importlib.import_module(targets[0])
        return AliasModule(spec.name, targets)

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__spec__.name if module.__spec__ is not None else module.__name__
        if name in self.moved:
            warnings.warn(
                f"{name} moved to {' and '.join(self.moved[name])}; import from there "
                f"(the old path will be removed in a future release)",
                FutureWarning,
                stacklevel=2,
            )


def install(moved: Mapping[str, Sequence[str]], public: Mapping[str, Sequence[str]] | None = None) -> None:
    """Make old module paths importable.

    Args:
        moved: Old dotted name -> the new modules holding its names (import warns).
        public: Short public names -> their modules (no warning); a single target is the module itself.
    """
    for finder in sys.meta_path:
        if isinstance(finder, _AliasFinder):
            finder.moved.update(moved)
            finder.public.update(public or {})
            return
    sys.meta_path.append(_AliasFinder(moved, public or {}))
