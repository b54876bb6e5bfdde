"""Run directories named by a hash of their resolved config; atomic writes; an append-only JSONL log.

Layout (one directory per resolved config)::

    <out>/<kind>-<hash>/
        config.yaml            the resolved config (the hash's input)
        log.jsonl              one JSON object per event, appended and flushed as it happens
        level-00/ ticket.safetensors  metrics.json  checkpoint.pt (while training)  DONE (written last)

A level is finished when its DONE marker exists; reruns skip it. Everything is written to a temporary file in
the same directory and renamed into place, so a killed run never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from tickets.errors import TicketsError
from tickets.fileio import atomic_write, atomic_write_bytes, atomic_write_text, read_json, write_json
from tickets.fileio import json_default as _json_default

__all__ = ["RunDir", "config_hash", "atomic_write", "atomic_write_bytes", "atomic_write_text", "read_json",
           "write_json"]


def config_hash(config: dict) -> str:
    """12 hex digits of sha256 over the canonical JSON of the config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class RunDir:
    """One run's directory. Creating it with the same config again returns the same directory (resume)."""

    def __init__(self, out: str | os.PathLike, kind: str, config: dict):
        self.config = config
        self.hash = config_hash(config)
        self.path = Path(out) / f"{kind}-{self.hash}"
        self.path.mkdir(parents=True, exist_ok=True)
        cfg_file = self.path / "config.yaml"
        text = yaml.safe_dump(config, sort_keys=True)
        if cfg_file.exists():
            if yaml.safe_load(cfg_file.read_text()) != yaml.safe_load(text):
                raise TicketsError(
                    f"run directory {self.path} holds a different config: remove it or choose another --out"
                )
        else:
            atomic_write_text(cfg_file, text)

    # -- log ---------------------------------------------------------------------------------------------
    def log(self, event: str, **fields: Any) -> None:
        """Append one event to log.jsonl and flush it to disk now (incremental, crash-safe)."""
        record = {"time": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
        with open(self.path / "log.jsonl", "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def events(self) -> list[dict]:
        log = self.path / "log.jsonl"
        if not log.exists():
            return []
        out = []
        for line in log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: ignore it
                continue
        return out

    # -- levels ------------------------------------------------------------------------------------------
    def level_dir(self, level: int) -> Path:
        d = self.path / f"level-{level:02d}"
        d.mkdir(exist_ok=True)
        return d

    def is_done(self, level: int) -> bool:
        return (self.path / f"level-{level:02d}" / "DONE").exists()

    def mark_done(self, level: int) -> None:
        atomic_write_text(self.level_dir(level) / "DONE", "")

    def checkpoint_path(self, level: int) -> Path:
        return self.level_dir(level) / "checkpoint.pt"

    def save_checkpoint(self, level: int, state: dict) -> None:
        atomic_write(self.checkpoint_path(level), lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, level: int) -> dict | None:
        path = self.path / f"level-{level:02d}" / "checkpoint.pt"
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=True, map_location="cpu")
        except Exception:  # a checkpoint we cannot read is only lost time: start the level again
            return None

    def drop_checkpoint(self, level: int) -> None:
        (self.path / f"level-{level:02d}" / "checkpoint.pt").unlink(missing_ok=True)
