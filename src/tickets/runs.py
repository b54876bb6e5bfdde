"""Run directories: named by a hash of their resolved config, laid out by ``RunLayout``, locked while a process
writes them, with an append-only JSONL log and epoch checkpoints.

Layout (one directory per resolved config; ``RunLayout`` is the one place these names are spelled)::

    <out>/<kind>-<hash>/
        config.yaml            the resolved config (the hash's input)
        inputs.json            digests of the data files and weights the run read (checked when it is reused)
        log.jsonl              one JSON object per event, appended and flushed as it happens
        summary.json           find: every level's figures (written at the end)
        rewind.safetensors     find with rewind step:K: the weights (and optimizer state) at step K
        level-00/ ticket.safetensors  metrics.json  checkpoint.pt (while training)  DONE (written last)
        .lock                  held (flock) by the process writing the run

A level is finished when its DONE marker exists; reruns skip it. Every file is written by
``tickets.fileio.atomic_write`` (temporary file + rename), so a killed run never leaves a half-written file.
Under data-parallel training only rank 0 writes (those writes and ``RunDir.log`` do nothing on other ranks).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

from tickets.errors import TicketsError
from tickets.fileio import atomic_write, atomic_write_bytes, atomic_write_text, read_json, write_json
from tickets.fileio import json_default as _json_default
from tickets.runtime import is_main_process

__all__ = ["RunDir", "RunLayout", "RunBusy", "config_hash", "compare_inputs", "TICKET_FILE", "run_lock", "is_locked",
           "atomic_write", "atomic_write_bytes", "atomic_write_text", "read_json", "write_json"]

TICKET_FILE = "ticket.safetensors"


class RunBusy(TicketsError):
    """Another live process holds the run's lock (it is writing the run right now)."""
_LEVEL = re.compile(r"level-(\d+)$")


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if a != b:
                return _first_difference(a, b, f"{where}[{i}]")
    return f"{where or 'inputs'}: {str(old)[:80]} then, now {str(new)[:80]}"


def _content(entry: Any) -> Any:
    """What identifies one recorded input: its sha256 when it was read from a file, else its name (a loader such as
    ``sklearn.datasets.load_digits``). Paths are not identity: the same bytes under another data root, a symlink or
    a relative root are the same input."""
    if isinstance(entry, dict) and entry.get("sha256"):
        return entry["sha256"]
    return entry.get("file") if isinstance(entry, dict) else entry


def _model_content(model: dict) -> Any:
    files = model.get("files")
    return (model.get("id"), model.get("sha256"),
            None if files is None else sorted((Path(str(f.get("file"))).name, _content(f)) for f in files))


def compare_inputs(old: dict, new: dict) -> tuple[str | None, dict | None]:
    """Compare a run's recorded inputs (``inputs.json``) with the ones read now, by content.

    Returns ``(difference, upgrade)``: ``difference`` is None when they agree, else a short "where: then, now" text;
    ``upgrade`` is the record to write instead of ``old`` when ``old`` holds data entries without a sha256 where
    ``new`` has them (records written before text tasks' files were checksummed named only their splits, so there
    is nothing to compare; the current digests are adopted), else None. A file's path never decides: only its
    sha256 (or a non-file entry's name)."""
    if _model_content(old.get("model") or {}) != _model_content(new.get("model") or {}):
        return _first_difference(old.get("model"), new.get("model"), "model"), None
    old_data, new_data = list(old.get("data") or []), list(new.get("data") or [])
    unchecked = not any(isinstance(e, dict) and e.get("sha256") for e in old_data)
    if unchecked and any(isinstance(e, dict) and e.get("sha256") for e in new_data):
        return None, new
    if len(old_data) != len(new_data):
        return f"data: {len(old_data)} files then, {len(new_data)} now", None
    for i, (a, b) in enumerate(zip(old_data, new_data)):
        if _content(a) != _content(b):
            return f"data[{i}]: {_describe(a)} then, {_describe(b)} now", None
    return None, None


def _describe(entry: Any) -> str:
    if isinstance(entry, dict) and entry.get("sha256"):
        return f"{Path(str(entry.get('file'))).name} sha256 {entry['sha256'][:12]}"
    return str(entry.get("file") if isinstance(entry, dict) else entry)[:80]


def config_hash(config: dict) -> str:
    """12 hex digits of sha256 over the canonical JSON of the (hash view of the resolved) config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class RunLayout:
    """The file names inside one run directory (no I/O): ``layout.ticket(3)`` is ``<run>/level-03/ticket.safetensors``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunLayout({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def inputs(self) -> Path:
        return self.path / "inputs.json"

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def rewind(self) -> Path:
        return self.path / "rewind.safetensors"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    def level(self, level: int) -> Path:
        return self.path / f"level-{level:02d}"

    def ticket(self, level: int) -> Path:
        return self.level(level) / TICKET_FILE

    def metrics(self, level: int) -> Path:
        return self.level(level) / "metrics.json"

    def done(self, level: int) -> Path:
        return self.level(level) / "DONE"

    def checkpoint(self, level: int) -> Path:
        return self.level(level) / "checkpoint.pt"

    def best(self, level: int) -> Path:
        return self.level(level) / "best.safetensors"

    def weights(self) -> Path:
        return self.path / "model.safetensors"

    def levels(self) -> list[int]:
        """Level numbers that have a folder, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.path.iterdir() if p.is_dir() and (m := _LEVEL.match(p.name)))

    def done_levels(self) -> list[int]:
        """Levels whose DONE marker exists."""
        return [i for i in self.levels() if self.done(i).exists()]

    @staticmethod
    def level_of(path: str | os.PathLike) -> int | None:
        """The level number of a ``level-NN`` folder (or a file in one), None otherwise."""
        p = Path(path)
        for part in (p.name, p.parent.name):
            m = _LEVEL.match(part)
            if m:
                return int(m.group(1))
        return None


@contextlib.contextmanager
def run_lock(path: str | os.PathLike, *, wait: bool = False) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed). Yields True when held, False when another
    process holds it (``wait=False``). The operating system releases it when the holder dies, even by
    ``kill -9``, so a crashed run never looks alive."""
    import fcntl

    from tickets.runtime import is_main_process

    if not is_main_process():  # data-parallel ranks > 0 work inside rank 0's lock and write nothing
        yield True
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fh = open(p, "a")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def is_locked(path: str | os.PathLike) -> bool:
    """Is ``path``'s lock held by a live process right now (without taking it)?"""
    if not Path(path).exists():
        return False
    with run_lock(path) as got:
        return not got


class RunDir:
    """One run's directory. Creating it with the same config again returns the same directory (resume)."""

    def __init__(self, out: str | os.PathLike, kind: str, config: dict):
        self.config = config
        self.hash = config_hash(config)
        self.path = Path(out) / f"{kind}-{self.hash}"
        self.layout = RunLayout(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise TicketsError(f"--out {out} is a file, not a directory: choose a directory for the runs") from None
        cfg_file = self.layout.config
        text = yaml.safe_dump(config, sort_keys=True)
        if cfg_file.exists():
            try:
                same = yaml.safe_load(cfg_file.read_text()) == yaml.safe_load(text)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                same = None
            if same is None:  # unreadable: it is ours to rewrite (the name says which config it is)
                atomic_write_text(cfg_file, text)
            elif not same:
                raise TicketsError(
                    f"run directory {self.path} holds a different config: remove it or choose another --out"
                )
        else:
            atomic_write_text(cfg_file, text)

    # -- inputs ------------------------------------------------------------------------------------------
    def check_inputs(self, inputs: dict) -> None:
        """Record ``inputs`` (data files and weights by sha256, see ``Prepared.inputs``) in ``inputs.json`` the
        first time; later, refuse with one line when their contents differ (``compare_inputs``: by sha256, not by
        path) — the same config on other data or weights must not silently return this run's results."""
        path = self.layout.inputs
        if path.exists():
            try:
                old = read_json(path)
            except (OSError, ValueError):
                old = None
                if self.layout.done_levels():  # finished work whose inputs can no longer be checked
                    raise TicketsError(f"{str(path)!r} is unreadable, so the finished levels of {self.path} cannot be "
                                       "checked against these data and weights: delete that run directory to "
                                       "recompute it (or restore inputs.json)") from None
            if old is not None:
                what, upgrade = compare_inputs(old, inputs)
                if what is not None:
                    raise TicketsError(f"run directory {self.path} was computed from other inputs ({what}): choose "
                                       "another --out for these data/weights, or delete that run to recompute it")
                if upgrade is None:
                    return
                self.log("inputs_recorded", reason="the record named data splits without their sha256")
        try:
            write_json(path, inputs)
        except OSError:  # a finished run in a read-only folder made before inputs were recorded: nothing to record
            if not self.layout.done_levels():
                raise

    # -- log ---------------------------------------------------------------------------------------------
    def log(self, event: str, **fields: Any) -> None:
        """Append one event to log.jsonl and flush it to disk now (incremental, crash-safe). A torn last line
        left by a killed process is completed first, so the log stays one JSON object per line. Does nothing on
        ranks > 0 of a data-parallel run (``tickets.runtime.is_main_process``): rank 0 alone writes."""
        if not is_main_process():
            return
        record = {"time": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
        path = self.layout.log
        with open(path, "ab+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())

    def events(self) -> list[dict]:
        """The log's events (lines that do not parse — a line cut by a crash — are skipped)."""
        log = self.layout.log
        if not log.exists():
            return []
        out = []
        for line in log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    # -- levels ------------------------------------------------------------------------------------------
    def level_dir(self, level: int) -> Path:
        d = self.layout.level(level)
        d.mkdir(exist_ok=True)
        return d

    def is_done(self, level: int) -> bool:
        return self.layout.done(level).exists()

    def mark_done(self, level: int) -> None:
        self.level_dir(level)
        atomic_write_text(self.layout.done(level), "")

    def unmark_done(self, level: int) -> None:
        """Open a finished level again (its artefacts failed to verify, or the next level needs it retrained)."""
        self.layout.done(level).unlink(missing_ok=True)

    def checkpoint_path(self, level: int) -> Path:
        return self.level_dir(level) / "checkpoint.pt"

    def save_checkpoint(self, level: int, state: dict) -> None:
        import torch

        atomic_write(self.checkpoint_path(level), lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, level: int) -> dict | None:
        """The level's epoch checkpoint, or None (absent, or unreadable: then only time is lost)."""
        import torch

        path = self.layout.checkpoint(level)
        if not path.exists():
            return None
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception:  # a checkpoint we cannot read is only lost time: start the level again
            self.log("checkpoint_unreadable", level=level)
            return None
        return state if isinstance(state, dict) else None

    def drop_checkpoint(self, level: int) -> None:
        self.layout.checkpoint(level).unlink(missing_ok=True)
