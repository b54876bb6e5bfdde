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


def option(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | None = None, flag: str | None = None,
           choices: Choices | None = None, metavar: str | None = None, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None, since: int = 1,
           hashed: bool = True, cli: bool = True, prefix: str | None = None, enable: str | None = None,
           enable_field: str | None = None, parse: Callable[[str], Any] | None = None,
           check: Callable[[Any], str | None] | None = None) -> Any:
    """A config field with everything the CLI, YAML, validation and hashing need.

    ``help``: the flag's help text (and docs). ``flag``: the CLI flag when not ``--<field-name>``. ``choices``: the
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


def choices_of(f: Field) -> list[str] | None:
    c = f.metadata.get("choices")
    if c is None:
        return None
    return list(c() if callable(c) else c)


# -- building and checking --------------------------------------------------------------------------------------
def from_dict(cls: type, data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and value once.

    TicketsError (naming ``where.key``, the problem and the fix) for an unknown key, a wrongly typed value, a value
    outside its bounds or choices, or a non-finite number. Ints are accepted where floats are expected."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TicketsError(f"{where or 'the config'} must be a mapping of keys to values, got "
                           f"{type(data).__name__} {data!r:.60}")
    fields = {f.name: (f, hint) for f, hint in fields_of(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise TicketsError(f"unknown key {key!r}{' in ' + where if where else ''}: valid keys are "
                               f"{', '.join(sorted(fields))}")
        f, hint = fields[key]
        kwargs[key] = check_value(f, hint, value, f"{where}.{key}" if where else key)
    try:
        return cls(**kwargs)
    except TicketsError:
        raise
    except TypeError as exc:  # a required field is missing
        raise TicketsError(f"{where or 'config'}: {exc}: add the missing key") from None


def check_value(f: Field, hint: Any, value: Any, where: str) -> Any:
    """``value`` converted to the field's type and checked against its constraints; TicketsError otherwise."""
    inner, optional = unwrap_optional(hint)
    if value is None:
        if optional:
            return None
        raise TicketsError(f"{where} cannot be empty (null): give a value")
    out = _coerce(inner, value, where)
    _check_constraints(f, out, where)
    return out


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TicketsError(f"{where} must be a list, got {value!r:.60}")
        (arg,) = typing.get_args(hint) or (Any,)
        return [_coerce(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TicketsError(f"{where} must be a number, got {value!r:.60}")
        if not math.isfinite(float(value)):
            raise TicketsError(f"{where} must be a finite number, got {value}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TicketsError(f"{where} must be an integer, got {value!r:.60}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise TicketsError(f"{where} must be true or false, got {value!r:.60}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise TicketsError(f"{where} must be a string, got {value!r:.60}")
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
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            ok = all(bound is None or test(v, bound) for bound, test in (
                (meta.get("ge"), lambda a, b: a >= b), (meta.get("gt"), lambda a, b: a > b),
                (meta.get("le"), lambda a, b: a <= b), (meta.get("lt"), lambda a, b: a < b)))
            if not ok:
                raise TicketsError(f"{where} must be {bounds_text(meta)}, got {v}")
        choices = choices_of(f)
        if choices is not None and isinstance(v, str) and v not in choices:
            raise TicketsError(f"{where} must be one of {', '.join(choices)}, got {v!r}")
    check = meta.get("check")
    if check is not None:
        problem = check(value)
        if problem:
            raise TicketsError(f"{where}: {problem}")


def validate(obj: Any, where: str = "config") -> None:
    """Re-check every field of a built config (after defaults were filled in): TicketsError on the first bad one."""
    for f, hint in fields_of(type(obj)):
        value = getattr(obj, f.name)
        name = f"{where}.{f.name}" if where else f.name
        if value is None:
            if not unwrap_optional(hint)[1]:
                raise TicketsError(f"{name} cannot be empty (null): give a value")
            continue
        if dataclasses.is_dataclass(value):
            validate(value, name)
            continue
        check_value(f, hint, value, name)


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
