"""One registry type for everything a config names: models, methods, datasets, search spaces.

A registry maps a name to an entry (a spec or a constructor). Entries register themselves next
to their definition, as timm's models do:

    @MODELS.register("resnet8", style="cifar", student_lr=0.05)
    def resnet8(num_classes): ...

    METHODS.add(MethodSpec(name="kd", ...))     # an object that carries its own name

A registry whose entries live one per module in a package (`package=...`) imports that whole
package the first time it is read, so a new entry is its file: no import line to add anywhere.
An unknown name is a `UnknownNameError` (a UserError, so `ltkd` prints it as one line) that
lists the known names.

This module imports nothing heavy: registries of torch-free specs (methods, datasets, search
spaces) can be read by commands that never load torch.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from trainables.errors import UserError

T = TypeVar("T")
_MISSING: Any = object()


class UnknownNameError(UserError, ValueError, KeyError):
    """A name no registry entry has; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Ordered name -> entry; `what` names the kind of entry in errors ("architecture", "method", ...).

    unknown: the error message for an unknown name, formatted with what, name and known.
    package: the dotted name of a package whose every module registers one or more entries; it is
    imported (all its modules) on first read. make: for `register(name, **fields)`, builds the entry
    from the decorated object and the fields (default: the object itself).
    """

    def __init__(self, what: str, package: str | None = None, make: Callable[..., T] | None = None,
                 unknown: str = "unknown {what} '{name}' (known: {known})"):
        self.what = what
        self.unknown = unknown  # the error for a name nobody registered
        self.package = package
        self.make = make
        self._entries: dict[str, T] = {}
        self._loaded = package is None

    # ----------------------------------------------------------------------- registration

    def add(self, entry: T, name: str | None = None) -> T:
        """Register `entry` under `name` (default: its `name` attribute); a name registered twice is an error."""
        name = name if name is not None else getattr(entry, "name")
        if name in self._entries:
            raise ValueError(f"{self.what} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str | None = None, **fields: Any) -> Callable[[Any], Any]:
        """Decorator: register the decorated object (through `make`, with `fields`) under `name`.

        Returns the decorated object unchanged, so the definition stays usable as written.
        """
        def decorate(obj: Any) -> Any:
            key = name or obj.__name__
            self.add(self.make(key, obj, **fields) if self.make is not None else obj, key)
            return obj
        return decorate

    # ----------------------------------------------------------------------- lookup

    @property
    def loaded(self) -> bool:
        """Whether the package's modules have been imported (always, for a registry without a package)."""
        return self._loaded

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before importing: the modules register into this very registry
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")

    def get(self, name: str, default: Any = _MISSING) -> T:
        """The entry called `name`; an UnknownNameError (or `default`, when given) if there is none."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not _MISSING:
                return default
            known = ", ".join(self.names())
            raise UnknownNameError(self.unknown.format(what=self.what, name=name, known=known)) from None

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._entries.items())

    def values(self) -> list[T]:
        self._load()
        return list(self._entries.values())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    # Item assignment and deletion: what `pytest.MonkeyPatch.setitem` needs, so a test can register a
    # throwaway entry for its duration. Code registers with `add` / `register`.
    def __setitem__(self, name: str, entry: T) -> None:
        self._load()
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        self._load()
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries) if self._loaded else 'not loaded'})"
