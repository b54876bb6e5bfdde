"""Reading finished runs into what a report needs: score rows and ticket records.

``collect(DIR)`` reads a study folder written by ``tickets run`` (``OUT/study-<name>``: ``jobs.json`` lists its runs,
``progress.jsonl`` its compute) or any folder of ``find-*`` / ``transfer-*`` run directories. Every finished level
(``DONE`` + ``metrics.json``) becomes one score row; every ticket of a find run one ticket record. Nothing here
draws or formats: figures.py and markdown.py take it from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tickets.errors import TicketsError
from tickets.fileio import read_json

TICKET_FILE = "ticket.safetensors"


def _position(method: str, level: int) -> int:
    """Schedule position of a run level: IMP's level i is position i (level 0 is dense); one-shot level i is i+1."""
    return level if method == "imp" else level + 1


def _done_levels(run: Path) -> list[Path]:
    return sorted(d for d in run.glob("level-*") if (d / "DONE").exists() and (d / "metrics.json").exists())


def _read_run(run: Path, fraction: float | None, job: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Rows (scores) and ticket records of one run directory."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    rows, tickets = [], []
    for level_dir in _done_levels(run):
        m = read_json(level_dir / "metrics.json")
        metric = m["primary_metric"]
        base = {"model": config["model"], "seed": config["seed"], "metric": metric, "score": m["test"][metric],
                "sparsity": float(m.get("sparsity", 0.0)), "run": run.name,
                "train_size": config["data"].get("train_size"), "fraction": fraction,
                "train_seconds": float(m.get("train_seconds") or 0.0),
                "degenerate": m["test"].get("degenerate")}
        if run.name.startswith("find-"):
            method = config["method"]
            pos = _position(method, m["level"])
            if pos == 0:  # IMP's dense level: kept as a fallback baseline
                rows.append({**base, "kind": "find-dense", "source": None, "method": None,
                             "target": config["task"], "level": 0})
                continue
            rows.append({**base, "kind": "find", "source": config["task"], "method": method,
                         "target": config["task"], "level": pos})
            tickets.append({"model": config["model"], "source": config["task"], "method": method, "level": pos,
                            "seed": config["seed"], "sparsity": base["sparsity"],
                            "path": str(level_dir / TICKET_FILE), "report": m.get("sparsity_report")})
        else:
            t = m.get("ticket")
            if t is None:
                rows.append({**base, "kind": "dense", "source": None, "method": None, "target": config["task"],
                             "level": 0})
            else:
                level = job["level"] if job and job.get("level") else _position(t.get("method", ""),
                                                                                int(t.get("level", 0)))
                rows.append({**base, "kind": "transfer", "source": t.get("source_task"), "method": t.get("method"),
                             "target": config["task"], "level": level})
    return rows, tickets


def collect(directory: str | Path) -> dict[str, Any]:
    """Everything a report needs from ``directory`` (a study folder or a folder of runs), as one dict:

    ``rows`` (one per finished level: model, kind "dense" | "find" | "transfer", source, method, target, fraction,
    level = schedule position, sparsity, seed, metric, score (test), train_size, train_seconds, run), ``tickets``
    (one per ticket of a find run: model, source, method, level, seed, sparsity, path, report), ``configs``
    (run name → config.yaml), and the study's ``name``, ``description``, ``seeds``, ``models``, ``progress``
    (progress.jsonl records; empty without a study). Raises TicketsError when ``directory`` is not a directory
    or holds no finished level."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TicketsError(f"{str(directory)!r} is not a directory: pass OUT/study-<name> (from `tickets run`) or a "
                           "folder of find-*/transfer-* runs")
    jobs_file = directory / "jobs.json"
    ctx: dict[str, Any] = {"dir": directory, "name": directory.name, "description": "", "seeds": None,
                           "progress": []}
    entries: list[tuple[Path, float | None, dict | None]] = []
    if jobs_file.exists():
        study = read_json(jobs_file)
        out = directory.parent
        ctx.update(name=study.get("name", directory.name), description=study.get("description", ""),
                   seeds=study.get("seeds"), models=study.get("models"), file=study.get("file"))
        seen = set()
        for job in study["jobs"]:
            if job.get("run") and job["run"] not in seen and (out / job["run"]).is_dir():
                seen.add(job["run"])
                entries.append((out / job["run"], job.get("fraction", 1.0), job))
        progress = directory / "progress.jsonl"
        if progress.exists():
            ctx["progress"] = _json_lines(progress)
    else:
        runs = sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(("find-", "transfer-"))
                      and (p / "config.yaml").exists())
        entries = [(p, None, None) for p in runs]
    if not entries:
        raise TicketsError(f"no finished runs in {directory}: run the study first (`tickets run EXPERIMENT.yaml`)")
    rows, tickets, configs = [], [], {}
    for run, fraction, job in entries:
        r, t = _read_run(run, fraction, job)
        rows += r
        tickets += t
        configs[run.name] = yaml.safe_load((run / "config.yaml").read_text())
    _fill_fractions(rows)
    dense_keys = {(r["model"], r["target"], r["fraction"]) for r in rows if r["kind"] == "dense"}
    for r in rows:  # without dense runs, IMP's own dense level is the baseline
        if r["kind"] == "find-dense" and (r["model"], r["target"], r["fraction"]) not in dense_keys:
            r["kind"] = "dense"
    rows = [r for r in rows if r["kind"] != "find-dense"]
    if not rows:
        raise TicketsError(f"no finished levels in the runs of {directory}: wait for the study to finish a level")
    ctx.update(rows=rows, tickets=tickets, configs=configs)
    if ctx["seeds"] is None:
        ctx["seeds"] = sorted({r["seed"] for r in rows})
    ctx.setdefault("models", sorted({r["model"] for r in rows}))
    return ctx


def _fill_fractions(rows: list[dict]) -> None:
    """Without a jobs.json, a run's data fraction is its train_size over the largest one on the same task."""
    largest: dict[tuple, float] = {}
    for r in rows:
        if r["fraction"] is None and r["train_size"]:
            k = (r["model"], r["target"])
            largest[k] = max(largest.get(k, 0), r["train_size"])
    for r in rows:
        if r["fraction"] is None:
            n = largest.get((r["model"], r["target"]))
            r["fraction"] = round(r["train_size"] / n, 6) if n and r["train_size"] else 1.0


def _json_lines(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file; a line cut by a killed writer (or otherwise unreadable) is skipped."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
