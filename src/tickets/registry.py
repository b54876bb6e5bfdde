"""Registries: name → implementation, one per concept (models, tasks, methods, patterns, executors).

Adding a model, task, ticket-drawing method, sparsity pattern or study executor is one new file plus one
``REGISTRY.register(...)`` line (in the package's ``__init__`` for built-ins, or in your own module). The CLI's
``choices``, ``tickets models | tasks | methods | patterns`` and experiment-file validation all read the
registries, so a registered name works everywhere at once (the lesson of open_lth's ``registry.py`` files).

Entries may be given as ``"package.module:attribute"`` strings: they are imported on first use, so ``import
tickets`` stays fast and an optional dependency (``transformers``) is needed only when its entry is used.

A *family* is a name prefix standing for many names (``hf:<id-or-path>``, ``glue/<task>``, ``mlm/<corpus>``); its
entry receives the full name.

Plugins from outside the package register themselves when imported. ``load_plugins()`` imports the modules named
in ``$TICKETS_PLUGINS`` (comma-separated) and every ``tickets.plugins`` entry point of installed packages; the CLI
calls it at start (``--plugin MODULE`` adds one more), so a plugin's names are valid in every command.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from tickets.errors import TicketsError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered name: its target (an object or a lazy ``"module:attr"`` string), help text and metadata."""

    name: str
    target: T | str
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    family: bool = False  # ``name`` is a prefix (``hf:``) standing for every name that starts with it
    display: str = ""  # how a family is listed (``hf:<id-or-path>``)

    def load(self) -> T:
        """The target, importing it on first use."""
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            try:
                obj = importlib.import_module(module)
                for part in attr.split(".") if attr else ():
                    obj = getattr(obj, part)
            except ImportError as exc:
                missing = getattr(exc, "name", None) or str(exc)
                hint = self.meta.get("install", "install its optional dependency")
                raise TicketsError(f"{self.name!r} needs the Python package {missing!r}: {hint}") from None
            self.target = obj
        return self.target  # type: ignore[return-value]


class Registry(Generic[T]):
    """Name → entry for one concept. ``kind`` names the concept in messages ("model", "task", ...)."""

    def __init__(self, kind: str, *, listing: str = ""):
        self.kind = kind
        self.listing = listing  # the command that lists the names, for error messages
        self._entries: dict[str, Entry[T]] = {}
        self._families: dict[str, Entry[T]] = {}

    # -- registering -------------------------------------------------------------------------------------------
    def register(self, name: str, target: T | str | None = None, *, help: str = "", replace: bool = False,
                 **meta: Any):
        """Register ``target`` under ``name``. Without ``target``, returns a decorator.

        ``meta`` holds what other code may ask of the entry without loading it (a model's ``family`` and
        ``modality``, a task's ``modality``, ...). Registering a taken name is an error unless ``replace``.
        """
        if target is None:
            def decorate(obj: T) -> T:
                self.register(name, obj, help=help, replace=replace, **meta)
                return obj
            return decorate
        if not isinstance(name, str) or not name or name != name.strip():
            raise TicketsError(f"bad {self.kind} name {name!r}: use a non-empty name without surrounding spaces")
        if name in self._entries and not replace:
            raise TicketsError(f"{self.kind} {name!r} is registered already: pick another name or pass replace=True")
        self._entries[name] = Entry(name, target, help or _doc_line(target), dict(meta))
        return target

    def register_family(self, prefix: str, target: T | str, *, display: str, help: str = "", replace: bool = False,
                        **meta: Any) -> None:
        """Register every name starting with ``prefix`` (``hf:``, ``glue/``); ``display`` is how it is listed."""
        if prefix in self._families and not replace:
            raise TicketsError(f"{self.kind} family {prefix!r} is registered already: pass replace=True")
        self._families[prefix] = Entry(prefix, target, help or _doc_line(target), dict(meta), True, display)

    def unregister(self, name: str) -> None:
        """Remove a name (or family prefix); tests and plugins use it to clean up."""
        self._entries.pop(name, None)
        self._families.pop(name, None)

    # -- looking up --------------------------------------------------------------------------------------------
    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name`` (exact names first, then the longest matching family prefix)."""
        if isinstance(name, str):
            if name in self._entries:
                return self._entries[name]
            for prefix in sorted(self._families, key=len, reverse=True):
                if name.startswith(prefix) and len(name) > len(prefix):
                    return self._families[prefix]
        raise TicketsError(f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}"
                           + (f" (see `{self.listing}`)" if self.listing else ""))

    def get(self, name: str) -> T:
        """The implementation registered for ``name`` (imported on first use); TicketsError listing the choices."""
        return self.entry(name).load()

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata given at registration, without importing the entry."""
        return self.entry(name).meta

    def __contains__(self, name: object) -> bool:
        try:
            self.entry(name)  # type: ignore[arg-type]
            return True
        except TicketsError:
            return False

    def names(self, *, families: bool = True) -> list[str]:
        """Exact names in registration order, then families as displayed (``hf:<id-or-path>``)."""
        out = list(self._entries)
        if families:
            out += [e.display or e.name for e in self._families.values()]
        return out

    def entries(self) -> Iterator[Entry[T]]:
        yield from self._entries.values()
        yield from self._families.values()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def listing_text(self) -> str:
        """One line per name with its help, for ``tickets models`` etc."""
        rows = [(e.display or e.name, e.help) for e in self.entries()]
        width = max((len(n) for n, _ in rows), default=0)
        return "\n".join(f"{n.ljust(width)}  {h}".rstrip() for n, h in rows)


def _doc_line(target: Any) -> str:
    if isinstance(target, str):
        return ""
    doc = getattr(target, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


_PLUGINS_LOADED: set[str] = set()


def load_plugins(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import plugin modules so they register their names: ``$TICKETS_PLUGINS`` (comma-separated module names),
    installed packages' ``tickets.plugins`` entry points, and ``extra``. Returns the modules imported now.

    TicketsError naming the module when one cannot be imported."""
    names = [m.strip() for m in os.environ.get("TICKETS_PLUGINS", "").split(",") if m.strip()] + list(extra)
    loaded = []
    for module in names:
        if module in _PLUGINS_LOADED:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise TicketsError(f"plugin module {module!r} could not be imported ({exc}): check --plugin / "
                               "TICKETS_PLUGINS and that the module is on PYTHONPATH") from None
        _PLUGINS_LOADED.add(module)
        loaded.append(module)
    try:
        from importlib.metadata import entry_points

        eps = entry_points(group="tickets.plugins")
    except Exception:  # pragma: no cover - broken metadata of an unrelated package
        eps = ()
    for ep in eps:
        if ep.value in _PLUGINS_LOADED:
            continue
        try:
            ep.load()
        except Exception as exc:
            raise TicketsError(f"plugin {ep.name!r} ({ep.value}) failed to load ({type(exc).__name__}: {exc}): "
                               "fix or uninstall that package") from None
        _PLUGINS_LOADED.add(ep.value)
        loaded.append(ep.value)
    return loaded


def loaded_plugins() -> list[str]:
    """The plugin modules imported so far (to import the same ones in worker processes)."""
    return sorted(_PLUGINS_LOADED)


Factory = Callable[..., Any]
