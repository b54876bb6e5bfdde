"""Config dataclasses as the one source of CLI flags, YAML keys, validation and the run hash.

The idea follows open_lth's ``foundations/hparams.py``: a config is a dataclass whose fields carry their help text
and constraints (``option(...)``); the CLI's flags are generated from them (``tickets.cli``), YAML keys are the
field names, values are checked once where a config is built (``from_dict``), and the run hash is taken over the
fields (``hash_view``).

**Hash stability.** Every field present when the hash format was frozen (``since=1``, the default) is always
hashed, so runs made then keep their directories (a regression test pins several). A field added later is
declared with ``since=2`` (or higher) and enters the hash *only when it differs from its default*: adding an
option never moves an existing run. Fields with ``hashed=False`` never enter it (run-time switches).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import MISSING, Field, field
from typing import Any, Callable

from tickets.errors import TicketsError

Choices = tuple[str, ...] | Callable[[], list[str]]


class ConfigError(TicketsError):
    """A TicketsError about one key of a config, with the key's path (``("train", "epochs")``, list items by index)
    relative to the mapping ``from_dict`` / ``validate`` was given: callers that know where that mapping came from
    (a YAML file: ``tickets.yamlio.YamlDocument.error``) cite the file and line. ``unknown``: the error is an
    unknown key (the last component of ``key``)."""

    def __init__(self, message: str, key: tuple = (), *, unknown: bool = False):
        super().__init__(message)
        self.key = tuple(key)
        self.unknown = unknown


def option(default: Any = MISSING, *, help: str | Callable[[], str], factory: Callable[[], Any] | None = None,
           flag: str | None = None, choices: Choices | None = None, metavar: str | None = None, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None, since: int = 1,
           hashed: bool = True, cli: bool = True, prefix: str | None = None, enable: str | None = None,
           enable_field: str | None = None, parse: Callable[[str], Any] | None = None,
           check: Callable[[Any], str | None] | None = None) -> Any:
    """A config field with everything the CLI, YAML, validation and hashing need.

    ``help``: the flag's help text (and docs); a function returning it when the text lists a registry's names
    (``help_of`` calls it). ``flag``: the CLI flag when not ``--<field-name>``. ``choices``: the
    allowed strings (a tuple, or a function reading a registry). ``ge/gt/le/lt``: numeric bounds (floats must also
    be finite). ``since``: hash format the field appeared in (>1: hashed only when not default). ``hashed``: False
    for run-time switches. ``cli``: False for YAML-only keys. For a nested dataclass: ``prefix`` for its flags; for
    an optional one, ``enable`` names the flag that switches it on (``enable_field``: the child field that flag
    sets, e.g. ``--adv pgd`` sets ``attack``). ``parse``: CLI text → value. ``check``: value → error text or None.
    """
    meta = dict(help=help, flag=flag, choices=choices, metavar=metavar, ge=ge, gt=gt, le=le, lt=lt, since=since,
                hashed=hashed, cli=cli, prefix=prefix, enable=enable, enable_field=enable_field, parse=parse,
                check=check)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# -- introspection ----------------------------------------------------------------------------------------------
def fields_of(cls: type) -> list[tuple[Field, Any]]:
    """(field, resolved type hint) of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` → (X, True); anything else → (hint, False)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def default_of(f: Field) -> Any:
    """A field's default value (calling its factory)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


def help_of(f: Field) -> str:
    """A field's help text (calling it when it is a function, so registry listings are current)."""
    text = f.metadata.get("help")
    return (text() if callable(text) else text) or ""


def choices_of(f: Field) -> list[str] | None:
    c = f.metadata.get("choices")
    if c is None:
        return None
    return list(c() if callable(c) else c)


# -- building and checking --------------------------------------------------------------------------------------
def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and value once.

    ConfigError (a TicketsError naming ``where.key``, the problem and the fix; ``.key`` holds the key's path) for
    an unknown key (with the valid ones, and where the key belongs when it is an option of a nested block, e.g.
    ``epochs`` → ``train.epochs``), a wrongly typed value, a value outside its bounds or choices, an empty list or
    string where the option wants a value, or a non-finite number. Ints are accepted where floats are expected."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got "
                          f"{type(data).__name__} {data!r:.60}")
    fields = {f.name: (f, hint) for f, hint in fields_of(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(unknown_key_message((cls,), (key,), where), (key,), unknown=True)
        f, hint = fields[key]
        try:
            kwargs[key] = check_value(f, hint, value, f"{where}.{key}" if where else key)
        except ConfigError as exc:
            exc.key = (key,) + exc.key
            if exc.unknown:  # an unknown key in a nested block may belong elsewhere in this one
                exc.args = (unknown_key_message((cls,), exc.key, where),)
            raise
        except TicketsError as exc:
            raise ConfigError(str(exc), (key,)) from None
    try:
        return cls(**kwargs)
    except TicketsError:
        raise
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or 'config'}: {exc}: add the missing key") from None


# -- unknown keys: where they belong -----------------------------------------------------------------------------
def key_index(roots: tuple[type, ...]) -> list[tuple[tuple[str, ...], str]]:
    """Every option of the config classes ``roots`` (nested blocks walked) as (key path, its CLI flag without
    dashes): ``(("train", "adversarial", "eps"), "adv_eps")``; a block's enabling flag (``--adv``) names the field
    it sets."""
    out: list[tuple[tuple[str, ...], str]] = []

    def walk(cls: type, path: tuple[str, ...], prefix: str) -> None:
        for f, hint in fields_of(cls):
            inner, _ = unwrap_optional(hint)
            meta = f.metadata
            if dataclasses.is_dataclass(inner):
                out.append((path + (f.name,), f.name))
                enable, field_name = meta.get("enable"), meta.get("enable_field")
                if enable and field_name:
                    out.append((path + (f.name, field_name), _bare(enable)))
                walk(inner, path + (f.name,), prefix + (meta.get("prefix") or ""))
                continue
            out.append((path + (f.name,), _bare(meta.get("flag") or f"--{prefix}{f.name.replace('_', '-')}")))

    for root in roots:
        walk(root, (), "")
    return out


def _bare(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def unknown_key_message(roots: tuple[type, ...], key: tuple, where: str = "") -> str:
    """``unknown key 'epochs': did you mean train.epochs? …`` for the unknown key ``key[-1]`` at path ``key[:-1]``
    of a config made of ``roots``: where the key belongs when it names an option elsewhere (by key or by flag),
    the valid keys at that level, and a close spelling among them."""
    import difflib

    *parent, name = key
    level: list[str] = []
    for root in roots:
        cls: Any = root
        for part in parent:
            match = [hint for f, hint in fields_of(cls) if f.name == part] if dataclasses.is_dataclass(cls) else []
            cls = unwrap_optional(match[0])[0] if match else None
            if cls is None or not dataclasses.is_dataclass(cls):
                break
        if cls is not None and dataclasses.is_dataclass(cls):
            level += [f.name for f in dataclasses.fields(cls)]
    bare = str(name).replace("-", "_")
    options = [(path, flag) for path, flag in key_index(roots) if path != tuple(key)]
    index = [(path, flag) for path, flag in options if bare in (path[-1], flag)]
    if not index and not difflib.get_close_matches(bare, level, n=1):  # a misspelt option of another block
        close = difflib.get_close_matches(bare, [n for path, flag in options for n in (path[-1], flag)], n=1)
        index = [(path, flag) for path, flag in options if close and close[0] in (path[-1], flag)]
    index.sort(key=lambda item: item[1] != bare)  # the option whose flag is --<key> first (--eps: robust_eval.eps)
    elsewhere = list(dict.fromkeys(".".join(path) for path, _ in index))
    at = ".".join(str(p) for p in [where, *parent] if p)
    head = f"unknown key {name!r}{' in ' + at if at else ''}"
    if bare in level:  # `batch-size` for `batch_size`
        return f"{head}: did you mean {'.'.join([*map(str, parent), bare])}? keys are spelled with underscores"
    valid = f"valid keys{' here' if elsewhere else ''} are {', '.join(sorted(level))}"
    if elsewhere:
        parts = elsewhere[0].split(".")
        nested = "".join(f"{p}: {{" for p in parts[:-1]) + f"{parts[-1]}: ..." + "}" * (len(parts) - 1)
        return (f"{head}: did you mean {' or '.join(elsewhere[:3])}? write `{nested}` (keys nest as in a run's "
                f"config.yaml); {valid}")
    close = difflib.get_close_matches(bare, level, n=1)
    return f"{head}: {valid}" + (f"; did you mean {close[0]}?" if close else "")


def check_value(f: Field, hint: Any, value: Any, where: str) -> Any:
    """``value`` converted to the field's type and checked against its constraints; ConfigError otherwise (an empty
    list, or an empty string for an option whose default is not empty, included: given explicitly, they would
    otherwise fall back to the default unseen)."""
    inner, optional = unwrap_optional(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} cannot be empty (null): give a value")
    out = _coerce(inner, value, where)
    if isinstance(out, list) and not out:
        raise ConfigError(f"{where} is an empty list: give at least one value, or leave it out for the default")
    if isinstance(out, str) and not out.strip() and default_of(f) != "":
        raise ConfigError(f"{where} is empty: give a value, or leave it out for the default")
    _check_constraints(f, out, where)
    return out


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r:.60}")
        (arg,) = typing.get_args(hint) or (Any,)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(_coerce(arg, v, f"{where}[{i}]"))
            except ConfigError as exc:
                exc.key = (i,) + exc.key
                raise
        return out
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r:.60}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{where} must be a finite number, got {value}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r:.60}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r:.60}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r:.60}")
        return value
    return value


def bounds_text(meta: Any) -> str:
    """``in [0, 1)``, ``>= 1``, ``> 0``: a field's numeric bounds as words."""
    lo = ("[", meta.get("ge")) if meta.get("ge") is not None else ("(", meta.get("gt"))
    hi = ("]", meta.get("le")) if meta.get("le") is not None else (")", meta.get("lt"))
    if lo[1] is not None and hi[1] is not None:
        return f"in {lo[0]}{lo[1]:g}, {hi[1]:g}{hi[0]}"
    if lo[1] is not None:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
    if hi[1] is not None:
        return f"{'<=' if hi[0] == ']' else '<'} {hi[1]:g}"
    return ""


def _check_constraints(f: Field, value: Any, where: str) -> None:
    meta = f.metadata
    values = value if isinstance(value, list) else [value]
    for i, v in enumerate(values):
        item = (i,) if isinstance(value, list) else ()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            ok = all(bound is None or test(v, bound) for bound, test in (
                (meta.get("ge"), lambda a, b: a >= b), (meta.get("gt"), lambda a, b: a > b),
                (meta.get("le"), lambda a, b: a <= b), (meta.get("lt"), lambda a, b: a < b)))
            if not ok:
                raise ConfigError(f"{where} must be {bounds_text(meta)}, got {v}", item)
        choices = choices_of(f)
        if choices is not None and isinstance(v, str) and v not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {v!r}", item)
    check = meta.get("check")
    if check is not None:
        problem = check(value)
        if problem:
            raise ConfigError(f"{where}: {problem}")


def validate(obj: Any, where: str = "config") -> None:
    """Re-check every field of a built config (after defaults were filled in): ConfigError on the first bad one."""
    for f, hint in fields_of(type(obj)):
        value = getattr(obj, f.name)
        name = f"{where}.{f.name}" if where else f.name
        try:
            if value is None:
                if not unwrap_optional(hint)[1]:
                    raise ConfigError(f"{name} cannot be empty (null): give a value")
                continue
            if dataclasses.is_dataclass(value):
                validate(value, name)
                continue
            check_value(f, hint, value, name)
        except ConfigError as exc:
            exc.key = (f.name,) + exc.key
            raise


# -- dicts and hashes -------------------------------------------------------------------------------------------
def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict (recursively): the form written to config.yaml."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def hash_view(obj: Any) -> Any:
    """The dict the run hash is taken over: every field, except fields added since the hash format was frozen
    (``since`` > 1) while they hold their default, and run-time switches (``hashed=False``)."""
    if not dataclasses.is_dataclass(obj):
        return obj
    out = {}
    for f, _ in fields_of(type(obj)):
        value = getattr(obj, f.name)
        if not f.metadata.get("hashed", True):
            continue
        if f.metadata.get("since", 1) > 1 and value == default_of(f):
            continue
        out[f.name] = hash_view(value) if dataclasses.is_dataclass(value) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def merge(base: dict, overrides: dict) -> dict:
    """Nested dict merge; ``overrides`` wins (a YAML file + CLI flags)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
