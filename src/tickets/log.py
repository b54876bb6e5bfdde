"""The library logger: ``logging.getLogger("tickets")`` and its children (``tickets.verbs.find`` …).

As in Hugging Face's ``utils/logging``, a library only emits records; the application decides where they go.
``import tickets`` adds no handler (Python then shows warnings and errors only); the ``tickets`` command calls
``enable_console()`` so progress lines go to stderr, and ``--quiet`` keeps only warnings. Progress *bars* are
tqdm's and appear only on a terminal.
"""

from __future__ import annotations

import logging
import sys

ROOT = "tickets"


def get_logger(name: str | None = None) -> logging.Logger:
    """The logger for ``name`` (a module's ``__name__``) under the library's root logger ``tickets``."""
    if not name or name == ROOT:
        return logging.getLogger(ROOT)
    return logging.getLogger(name if name.startswith(ROOT + ".") else f"{ROOT}.{name}")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # progress lines indent under their run; a warning starts its own line, so it drops the indent
        return f"tickets: warning: {text.lstrip()}" if record.levelno >= logging.WARNING else text


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is at the time of the record (tests swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging sets it in __init__; the live sys.stderr is used instead
        pass


_HANDLER: logging.Handler | None = None


def enable_console(level: int = logging.INFO) -> None:
    """Send the library's records at ``level`` and above to stderr, one line each; warnings are prefixed
    ``tickets: warning:``. Calling it again only changes the level."""
    global _HANDLER
    root = logging.getLogger(ROOT)
    if _HANDLER is None:
        _HANDLER = _Stderr()
        _HANDLER.setFormatter(_OneLine("%(message)s"))
        root.addHandler(_HANDLER)
    root.setLevel(level)
    _HANDLER.setLevel(level)


def is_verbose() -> bool:
    """True when INFO records are shown (progress lines are worth computing)."""
    return logging.getLogger(ROOT).isEnabledFor(logging.INFO)
