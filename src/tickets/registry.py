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

    def __init__(self, kind: str, *, listing: str = "", allowed: dict[str, tuple[str, ...]] | None = None):
        self.kind = kind
        self.listing = listing  # the command that lists the names, for error messages
        self.allowed = dict(allowed or {})  # meta key → the values it may take (checked at registration)
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
        self._check_meta(name, meta)
        self._entries[name] = Entry(name, target, help or _doc_line(target), dict(meta))
        return target

    def register_family(self, prefix: str, target: T | str, *, display: str, help: str = "", replace: bool = False,
                        **meta: Any) -> None:
        """Register every name starting with ``prefix`` (``hf:``, ``glue/``); ``display`` is how it is listed."""
        if prefix in self._families and not replace:
            raise TicketsError(f"{self.kind} family {prefix!r} is registered already: pass replace=True")
        self._check_meta(prefix, meta)
        self._families[prefix] = Entry(prefix, target, help or _doc_line(target), dict(meta), True, display)

    def _check_meta(self, name: str, meta: dict[str, Any]) -> None:
        for key, choices in self.allowed.items():
            if key in meta and meta[key] not in choices:
                raise TicketsError(f"{self.kind} {name!r} is registered with {key}={meta[key]!r}: register it with "
                                   f"{key}= one of {', '.join(map(repr, choices))}")

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
                           + (f" (see `{self.listing}`)" if self.listing else "")
                           + ", or load the plugin that registers it (--plugin MODULE or TICKETS_PLUGINS)")

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


class _PluginError(TicketsError):
    """A --plugin value tickets itself cannot use (not a file, a clashing name): reported as it is."""


def _describe(obj: Any) -> str:
    """``module.qualname`` of a factory, for messages."""
    module = getattr(obj, "__module__", None) or ""
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return f"{module}.{qual}" if module else qual


def call_factory(kind: str, name: str, factory: Any, args: tuple, kwargs: dict[str, Any], *, returns: type,
                 signature: str, fix: str) -> Any:
    """``factory(*args, **kwargs)`` for registry entry ``name`` of ``kind`` ("model", "task"), checked: a factory
    whose signature does not take these arguments, or one returning something other than ``returns``, is a
    TicketsError naming the entry, its factory and the expected ``signature`` / ``fix`` (a plugin's mistake, not
    a crash inside tickets). A TypeError raised inside the factory is left alone."""
    import inspect

    where = _describe(factory)
    if not callable(factory):
        raise TicketsError(f"{kind} {name!r} is registered with {where!r}, which is not callable: register a "
                           f"factory {signature}")
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without introspectable signature: just call it
        sig = None
    if sig is not None:
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TicketsError(f"{kind} {name!r}: its factory {where}{sig} cannot be called with "
                               f"({', '.join(['name'] + list(kwargs))}) ({exc}): define it as {signature}") from None
    out = factory(*args, **kwargs)
    if not isinstance(out, returns):
        raise TicketsError(f"{kind} {name!r}: its factory {where} returned {type(out).__name__}, not a "
                           f"{returns.__name__}: {fix}")
    return out


def _plugin_path(module: str) -> Any:
    """The file a ``--plugin`` value names (``myplug.py``, ``./x/myplug.py``, an absolute path), or None for a
    module name. TicketsError for a ``.py`` name that is not a file."""
    from pathlib import Path

    if not (module.endswith(".py") or "/" in module or os.sep in module):
        return None
    path = Path(module).expanduser()
    if not path.is_file():
        stem = Path(module).name.removesuffix(".py")
        raise _PluginError(f"plugin {module!r} is not a file: pass the module name ({stem}) with its folder on "
                           "PYTHONPATH, or a path to the plugin's .py file")
    if path.suffix != ".py" or not path.stem.isidentifier():
        raise _PluginError(f"plugin file {module!r} is not a Python module file: pass a file named like "
                           "my_plugin.py")
    return path.resolve()


def _import_plugin(module: str) -> str:
    """Import one plugin (a module name or a .py file); returns the key it is remembered by."""
    import sys

    path = _plugin_path(module)
    if path is None:
        importlib.import_module(module)
        return module
    name = path.stem
    known = sys.modules.get(name)
    if known is not None:
        if getattr(known, "__file__", None) and os.path.realpath(known.__file__) == str(path):
            return str(path)
        raise _PluginError(f"plugin file {module!r} is named like the module {name!r} imported already: rename "
                           "the file")
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise _PluginError(f"plugin file {module!r} cannot be imported: pass a Python module file")
    mod = module_from_spec(spec)
    sys.modules[name] = mod  # so pickling what it defines (worker processes) finds it by name
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return str(path)


def _plugin_failure(module: str, exc: BaseException) -> TicketsError:
    """One line for a plugin that failed to import: what went wrong where, and the fix."""
    if isinstance(exc, TicketsError):  # e.g. a name registered twice: say which plugin did it
        return TicketsError(f"plugin module {module!r} failed to import: {exc}")
    if isinstance(exc, ImportError):
        missing = getattr(exc, "name", None)
        own = module.removesuffix(".py").replace("/", ".").split(".")[-1]
        if missing is None or missing == module or module.startswith(missing + ".") or missing == own:
            return TicketsError(f"plugin module {module!r} could not be imported ({exc}): check --plugin / "
                                "TICKETS_PLUGINS and that the module is on PYTHONPATH (or pass the path to its "
                                ".py file)")
        return TicketsError(f"plugin module {module!r} failed to import: it needs the Python package {missing!r} "
                            f"({exc}): install it, or fix the plugin's imports")
    if isinstance(exc, SyntaxError):
        return TicketsError(f"plugin module {module!r} failed to import: SyntaxError: {exc}: fix the plugin")
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return TicketsError(f"plugin module {module!r} failed to import: {type(exc).__name__}"
                        + (f": {text}" if text else "") + " (raised while importing it): fix the plugin (rerun with "
                        "TICKETS_DEBUG=1 for the traceback)")


def load_plugins(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import plugin modules so they register their names: ``$TICKETS_PLUGINS`` (comma-separated module names),
    installed packages' ``tickets.plugins`` entry points, and ``extra``. A value ending in ``.py`` or holding a
    ``/`` is a file, imported from its path (under its file name as module name). Returns the modules imported now.

    TicketsError naming the module when one cannot be imported (not found, a missing dependency, a SyntaxError or
    any exception raised while importing it)."""
    names = [m.strip() for m in os.environ.get("TICKETS_PLUGINS", "").split(",") if m.strip()] + list(extra)
    loaded = []
    for module in names:
        if module in _PLUGINS_LOADED:
            continue
        try:
            key = _import_plugin(module)
        except Exception as exc:
            if isinstance(exc, _PluginError):
                raise
            raise _plugin_failure(module, exc) from exc
        _PLUGINS_LOADED.update({module, key})  # the name given and, for a .py path, the file it resolved to
        loaded.append(key)
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
