"""A registry of classes found by name, shared by the data models and the score models:
the built-in classes live in the modules of a package (all imported on the first look-up),
a user's in a plugin module named by the config's ``plugins`` list. Torch-free."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from .errors import InputError


class Registry:
    """Classes with a ``name`` attribute, by name. ``what`` names them in messages
    (``"data model"``); ``lookup`` names the config entry that asks for them."""

    def __init__(self, what: str, lookup: str, package: str, path: list[str],
                 check: Callable[[type], None] | None = None):
        self.what, self.lookup, self.package, self.path = what, lookup, package, path
        self.check = check
        self.classes: dict[str, type] = {}
        self._loaded = False

    def register(self, cls: type) -> type:
        """Class decorator: add ``cls`` under ``cls.name`` (TypeError if the name is taken by
        another class, or if ``check`` refuses it)."""
        if self.check is not None:
            self.check(cls)
        other = self.classes.get(cls.name)
        if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"{self.what} name {cls.name!r} is taken by {other.__module__}.{other.__qualname__}")
        self.classes[cls.name] = cls
        return cls

    def _load_builtins(self) -> None:
        if not self._loaded:
            for info in pkgutil.iter_modules(self.path):
                importlib.import_module(f"{self.package}.{info.name}")
            self._loaded = True

    def get(self, name: str) -> type:
        """The class registered under ``name`` (one line naming the choices if none is)."""
        self._load_builtins()
        if name not in self.classes:
            raise InputError(f"unknown {self.lookup} {name!r}: use one of {sorted(self.classes)} "
                             "(or name the module of your own in the config's plugins)")
        return self.classes[name]

    def all(self) -> dict[str, type]:
        """Every registered class (the built-in ones and the plugins loaded so far)."""
        self._load_builtins()
        return dict(self.classes)
