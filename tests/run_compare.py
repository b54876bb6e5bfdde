"""Helpers for tests that compare two output folders of the same study (local vs Ray vs Slurm executors)."""

from __future__ import annotations

from pathlib import Path


def run_names(out: Path) -> list[str]:
    """The run directories (find-*/transfer-*) in ``out``, sorted."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith(("find-", "transfer-")))


def without_timings(obj):
    """metrics.json minus what differs between any two runs: wall-clock figures and the out-dir path."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if "second" not in k and "time" not in k
                and k != "path"}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj
