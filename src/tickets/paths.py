"""Where data and weights live: an explicit argument, else an environment variable, else a clear error."""

from __future__ import annotations

import os
from pathlib import Path

from tickets.errors import TicketsError


def data_root(arg: str | os.PathLike | None = None, *, required: bool = True) -> Path | None:
    """Data root from ``--data-root`` or ``TICKETS_DATA``."""
    return _root(arg, "TICKETS_DATA", "--data-root", "data", required)


def model_root(arg: str | os.PathLike | None = None, *, required: bool = True) -> Path | None:
    """Model-weights root from ``--model-root`` or ``TICKETS_MODELS``."""
    return _root(arg, "TICKETS_MODELS", "--model-root", "model", required)


def _root(arg, env: str, flag: str, what: str, required: bool) -> Path | None:
    value = arg if arg not in (None, "") else os.environ.get(env)
    if value in (None, ""):
        if required:
            raise TicketsError(f"no {what} root given: pass {flag} DIR or set {env}")
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise TicketsError(f"{what} root {str(path)!r} is not a directory: fix {flag} or {env}")
    return path
