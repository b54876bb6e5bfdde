"""Reading finished runs into what a report needs: score rows and ticket records.

``collect(DIR)`` reads a study folder written by ``tickets run`` (``OUT/study-<name>``: ``jobs.json`` lists its runs,
``progress.jsonl`` its compute) or any folder of ``find-*`` / ``transfer-*`` run directories. Every finished level
(``DONE`` + ``metrics.json``) becomes one score row; every ticket of a find run one ticket record. Nothing here
draws or formats: figures.py and markdown.py take it from here.

**Ticket kinds.** A row's ticket is told apart by its drawing method, its sparsity *pattern* and whether it was
drawn *robustly* (IMP under adversarial training):

* find runs: ``pattern`` from the run's config (absent: ``unstructured``), ``robust`` when its ``train.adversarial``
  is set;
* transfer runs: the find runs of the collection whose ticket has the transferred mask's checksum (the transfer's
  config names it) give method, pattern, robustness, source task and level; without one, the transfer's recorded
  ticket (``method``, ``source_task``, ``level``, ``adversarial``; a record without a source task — a foreign file —
  is called by its file's name, without a method "ticket") and the ticket file's metadata (``pattern``). Two kinds that drew the *same* mask (a coarse channel ranking that
  training did not change) share their transfer runs: such a run gives one row per kind.

**Settings.** Runs whose configs differ in more than the seed never share a curve (``settings.py``): a row's
``setting`` says what sets its runs apart ("rewind step:5, limit 300"; "" in a study of one setting) and its label
carries it in brackets. A transfer's kind, source and level come from the find run that drew its ticket (by mask
checksum), so a ticket exported to another tool's format (which records no source) is placed like the original.
Runs with the very same config, seed included, are read once (``repeats``).

``method`` in a row is the kind's label — the bare method for unstructured standard tickets (so existing studies
read as before), else e.g. ``imp channel``, ``imp nm:2:4 robust`` (``labels.kind_label``); ``base_method``,
``pattern`` and ``robust`` keep the parts. Runs fine-tuned adversarially are kept apart too: a dense run becomes
kind ``dense-adversarial`` (never a standard dense baseline) and a ticket transfer gets ``adv-ft`` in its label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tickets.errors import TicketsError
from tickets.fileio import read_json
from tickets.runs import TICKET_FILE, config_hash
from tickets.study.report.labels import kind_label, with_setting
from tickets.study.report.settings import dense_setting, run_setting, setting_labels

DEFAULT_PATTERN = "unstructured"


def _position(method: str, level: int) -> int:
    """Schedule position of a run level: IMP's level i is position i (level 0 is dense); one-shot level i is i+1."""
    return level if method == "imp" else level + 1


def _done_levels(run: Path) -> list[Path]:
    return sorted(d for d in run.glob("level-*") if (d / "DONE").exists() and (d / "metrics.json").exists())


def _adversarial(config: dict) -> bool:
    """True when the run trained under adversarial examples (``train.adversarial`` set in its config)."""
    return bool((config.get("train") or {}).get("adversarial"))


def _robust_scores(m: dict) -> dict:
    """Clean and robust accuracy of a level measured with ``robust_eval`` (None without it)."""
    r = m.get("robust") if isinstance(m.get("robust"), dict) else {}
    return {"robust_accuracy": r.get("robust_accuracy"), "robust_clean": r.get("clean_accuracy")}


def ticket_header(path: str | Path) -> dict[str, Any]:
    """The metadata of a ticket file (checksum, ``meta.*`` entries JSON-decoded) from its safetensors header alone;
    {} when the file is missing or unreadable."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception:  # a missing or foreign file: the caller falls back to what the run recorded
        return {}
    out: dict[str, Any] = {"checksum": raw.get("checksum")}
    for key, value in raw.items():
        if key.startswith("meta."):
            try:
                out[key[5:]] = json.loads(value)
            except ValueError:
                out[key[5:]] = value
    return out


def pattern_spec(meta: Any) -> str:
    """A ticket's pattern record (``Pattern.describe()`` dict, a spec string or None) as a spec: ``nm:2:4``."""
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        return f"{meta['name']}:{meta['options']}" if meta.get("options") else meta["name"]
    return meta if isinstance(meta, str) and meta else DEFAULT_PATTERN


def _find_ticket_path(path: str | None, run: Path) -> Path | None:
    """The file a transfer's recorded ticket path names, also when the path was relative to another directory."""
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        return p
    parts = p.parts
    for i, part in enumerate(parts):  # .../find-<hash>/level-NN/ticket.safetensors, under the run's own --out
        if part.startswith("find-"):
            candidate = run.parent.joinpath(*parts[i:])
            if candidate.is_file():
                return candidate
    return None


def ticket_name(t: dict) -> str:
    """What to call a transferred ticket no find run of the collection drew, when its record names no source task:
    its file's name ("masks.pt"), else "external"."""
    return Path(t["path"]).name if t.get("path") else "external"


def _transfer_kinds(run: Path, config: dict, m: dict, sources: dict[str, list[dict]]) -> list[dict]:
    """The ticket kinds a transfer run's ticket belongs to (see the module docstring): method, pattern, robust,
    source (task), level (schedule position) and lineage (the names of the find runs that drew
    the ticket, () when none of the collection did)."""
    t = m.get("ticket") or {}
    checksum = (config.get("ticket") or {}).get("checksum") or t.get("checksum")
    found = sources.get(checksum) if checksum else None
    if found and t.get("source_task"):  # the recorded source task picks among finds that drew the same mask
        found = [k for k in found if k["source"] == t["source_task"]] or found
    if found:  # a ticket of a find run read here (also when exported to another format: nothing else recorded)
        kinds: dict[tuple, dict] = {}
        for k in found:
            kind = kinds.setdefault((k["method"], k["pattern"], k["robust"], k["source"]), {**k, "lineage": ()})
            kind["lineage"] += (k["run"],)
        return [kinds[key] for key in sorted(kinds, key=str)]
    method = t.get("method") or "ticket"
    robust = bool(t.get("adversarial")) if "adversarial" in t else None
    pattern = None
    path = _find_ticket_path(t.get("path"), run)
    if path is not None:
        find_config = path.parent.parent / "config.yaml"
        if find_config.is_file():
            fc = yaml.safe_load(find_config.read_text()) or {}
            pattern = fc.get("pattern") or DEFAULT_PATTERN
            robust = _adversarial(fc) if robust is None else robust
        else:
            header = ticket_header(path)
            pattern = pattern_spec(header.get("pattern"))
            if robust is None and "adversarial" in header:
                robust = bool(header["adversarial"])
    return [{"method": method, "pattern": pattern or DEFAULT_PATTERN, "robust": bool(robust),
             "source": t.get("source_task") or ticket_name(t),
             "level": _position(t.get("method", ""), int(t.get("level") or 0)), "lineage": ()}]


def _read_run(run: Path, config: dict, fraction: float | None, job: dict | None = None,
              sources: dict[str, list[dict]] | None = None) -> tuple[list[dict], list[dict]]:
    """Rows (scores) and ticket records of one run directory (``config``: its config.yaml). ``sources``: mask
    checksum → the ticket kinds of the find runs that drew it (filled by the find runs read here). Rows carry
    ``lineage``: the find runs their ticket comes from (``_split_by_setting`` reads it)."""
    sources = {} if sources is None else sources
    rows, tickets = [], []
    adversarial = _adversarial(config)
    for level_dir in _done_levels(run):
        m = read_json(level_dir / "metrics.json")
        metric = m["primary_metric"]
        base = {"model": config["model"], "seed": config["seed"], "metric": metric, "score": m["test"][metric],
                "sparsity": float(m.get("sparsity", 0.0)), "run": run.name,
                "train_size": config["data"].get("train_size"), "fraction": fraction,
                "train_seconds": float(m.get("train_seconds") or 0.0),
                "degenerate": m["test"].get("degenerate"), **_robust_scores(m)}
        if run.name.startswith("find-"):
            method = config["method"]
            pattern = config.get("pattern") or DEFAULT_PATTERN
            kind = {"base_method": method, "pattern": pattern, "robust": adversarial,
                    "method": kind_label(method, pattern, adversarial)}
            pos = _position(method, m["level"])
            if pos == 0:  # IMP's dense level: kept as a fallback baseline
                rows.append({**base, "kind": "find-dense", "source": None, "method": None, "base_method": None,
                             "pattern": None, "robust": adversarial, "target": config["task"], "level": 0})
                continue
            rows.append({**base, **kind, "kind": "find", "source": config["task"], "target": config["task"],
                         "level": pos, "lineage": (run.name,)})
            path = level_dir / TICKET_FILE
            tickets.append({"model": config["model"], "source": config["task"], "method": kind["method"],
                            "base_method": method, "pattern": pattern, "robust": adversarial, "level": pos,
                            "seed": config["seed"], "sparsity": base["sparsity"], "run": run.name,
                            "path": str(path), "report": m.get("sparsity_report")})
            checksum = ticket_header(path).get("checksum")
            if checksum:
                entry = {"method": method, "pattern": pattern, "robust": adversarial, "source": config["task"],
                         "level": pos, "run": run.name}
                if entry not in sources.setdefault(checksum, []):
                    sources[checksum].append(entry)
        else:
            t = m.get("ticket")
            if t is None:
                rows.append({**base, "kind": "dense-adversarial" if adversarial else "dense", "source": None,
                             "method": None, "base_method": None, "pattern": None, "robust": None,
                             "target": config["task"], "level": 0})
            else:
                for k in _transfer_kinds(run, config, m, sources):
                    level = job["level"] if job and job.get("level") else k["level"]
                    rows.append({**base, "kind": "transfer", "source": k["source"],
                                 "method": kind_label(k["method"], k["pattern"], k["robust"], adversarial),
                                 "base_method": k["method"], "pattern": k["pattern"], "robust": k["robust"],
                                 "target": config["task"], "level": level, "lineage": k["lineage"]})
    return rows, tickets


def collect(directory: str | Path) -> dict[str, Any]:
    """Everything a report needs from ``directory`` (a study folder or a folder of runs), as one dict:

    ``rows`` (one per finished level: model, kind "dense" | "dense-adversarial" | "find" | "transfer", source,
    method (the ticket kind's label), base_method, pattern, robust, target, fraction, level = schedule position,
    sparsity, seed, metric, score (test), robust_accuracy / robust_clean (with ``robust_eval``, else None),
    train_size, train_seconds, run, setting), ``tickets`` (one per ticket of a find run: model, source, method
    (label), base_method, pattern, robust, level, seed, sparsity, run, setting, path, report), ``configs`` (run name
    → config.yaml), ``repeats`` (a repeated run's name → the run read instead, ``_drop_repeats``), ``mixed_dense``
    (dense baselines whose runs differ in more than the seed, ``_mixed_dense``), and the study's ``name``, ``description``, ``seeds``, ``models`` and
    ``run_compute`` (:func:`run_compute`: the compute of its runs per study folder that ran them; empty without a
    study). Raises TicketsError when ``directory`` is not a directory or holds no finished level."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TicketsError(f"{str(directory)!r} is not a directory: pass OUT/study-<name> (from `tickets run`) or a "
                           "folder of find-*/transfer-* runs")
    jobs_file = directory / "jobs.json"
    ctx: dict[str, Any] = {"dir": directory, "name": directory.name, "description": "", "seeds": None,
                           "run_compute": {}}
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
        ctx["run_compute"] = run_compute(directory, seen)
    else:
        runs = sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(("find-", "transfer-"))
                      and (p / "config.yaml").exists())
        entries = [(p, None, None) for p in runs]
    if not entries:
        raise TicketsError(f"no finished runs in {directory}: run the study first (`tickets run EXPERIMENT.yaml`)")
    configs = {run.name: yaml.safe_load((run / "config.yaml").read_text()) for run, _, _ in entries}
    entries, repeats = _drop_repeats(entries, configs)
    configs = {run.name: configs[run.name] for run, _, _ in entries}
    rows, tickets = [], []
    sources: dict[str, list[dict]] = {}
    # find runs first: the transfers' ticket kinds are looked up by mask checksum among their tickets
    for run, fraction, job in sorted(entries, key=lambda e: not e[0].name.startswith("find-")):
        r, t = _read_run(run, configs[run.name], fraction, job, sources)
        rows += r
        tickets += t
    _fill_fractions(rows)
    dense_keys = {(r["model"], r["target"], r["fraction"]) for r in rows if r["kind"] == "dense"}
    for r in rows:  # without dense runs, IMP's own dense level is the baseline (an adversarial one is kept apart)
        if r["kind"] == "find-dense" and (r["model"], r["target"], r["fraction"]) not in dense_keys:
            r["kind"] = "dense-adversarial" if r["robust"] else "dense"
            r["robust"] = None
    rows = [r for r in rows if r["kind"] != "find-dense"]
    if not rows:
        raise TicketsError(f"no finished levels in the runs of {directory}: wait for the study to finish a level")
    rows = _split_by_setting(rows, tickets, configs)
    ctx.update(rows=rows, tickets=tickets, configs=configs, repeats=repeats, mixed_dense=_mixed_dense(rows, configs))
    if ctx["seeds"] is None:
        ctx["seeds"] = sorted({r["seed"] for r in rows})
    ctx.setdefault("models", sorted({r["model"] for r in rows}))
    return ctx


def _drop_repeats(entries: list[tuple[Path, float | None, dict | None]], configs: dict[str, dict]
                  ) -> tuple[list[tuple[Path, float | None, dict | None]], dict[str, str]]:
    """Runs with the very same config, seed included (a run repeated in another folder and copied in), are one
    measurement: the one with the most finished levels is read (the first on a tie), the others not, so no score
    counts twice. Returns (the entries to read, {repeat's name: name of the run read instead})."""
    by_config: dict[str, list[tuple[Path, float | None, dict | None]]] = {}
    for entry in entries:
        by_config.setdefault(config_hash(configs[entry[0].name]), []).append(entry)
    repeats: dict[str, str] = {}
    for group in by_config.values():
        best = max(group, key=lambda e: len(_done_levels(e[0])))
        repeats.update({e[0].name: best[0].name for e in group if e is not best})
    return [e for e in entries if e[0].name not in repeats], repeats


def _split_by_setting(rows: list[dict], tickets: list[dict], configs: dict[str, dict]) -> list[dict]:
    """Runs whose configs differ in more than the seed never share a curve (``settings``): every find and transfer
    row gets ``setting``, what sets its runs apart ("" when nothing does), and its ``method`` label that text in
    brackets (``labels.with_setting``: "imp [rewind step:5, limit 300]"); the find runs' tickets get the same.

    * A ticket's *lineage* is its find run: find runs of one model × task × method × pattern are compared with
      each other, and every row of a lineage (the find run's own, transfers of its tickets) carries its text. A
      transfer run whose ticket several lineages drew (the same mask) gives one row per lineage text.
    * Transfers are compared with the other transfers of their curve (model, source, target, data fraction, kind):
      their own differences are added as "fine-tune …"."""
    groups: dict[tuple, dict[str, dict]] = {}
    for name, c in configs.items():
        if name.startswith("find-"):
            key = (c.get("model"), c.get("task"), c.get("method"), c.get("pattern") or DEFAULT_PATTERN)
            groups.setdefault(key, {})[name] = run_setting(c, train_size=True)
    lineage = {name: text for group in groups.values() for name, text in setting_labels(group).items()}
    out = []
    for r in rows:
        texts = sorted({lineage.get(name, "") for name in r.pop("lineage", ())}) or [""]
        out += [{**r, "setting": text} for text in texts]
    curves: dict[tuple, dict[str, dict]] = {}
    for r in out:
        if r["kind"] == "transfer":
            key = (r["model"], r["source"], r["target"], r["fraction"], r["method"], r["setting"])
            curves.setdefault(key, {})[r["run"]] = run_setting(configs[r["run"]], train_size=False)
    own = {key: setting_labels(group) for key, group in curves.items()}
    for r in out:
        if r["kind"] == "transfer":
            text = own[(r["model"], r["source"], r["target"], r["fraction"], r["method"], r["setting"])][r["run"]]
            r["setting"] = "; ".join(t for t in (r["setting"], text and f"fine-tune {text}") if t)
        if r["kind"] in ("find", "transfer"):
            r["method"] = with_setting(r["method"], r["setting"])
    for t in tickets:
        t["setting"] = lineage.get(t["run"], "")
        t["method"] = with_setting(t["method"], t["setting"])
    return out


def _mixed_dense(rows: list[dict], configs: dict[str, dict]) -> list[dict]:
    """Dense baselines (model × target × data fraction) whose runs differ in more than the seed: the report says
    so, as it cannot tell which tickets each belongs to. Each record: model, target, fraction, kind and
    ``settings`` (what sets the runs apart, one text per setting)."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["kind"] in ("dense", "dense-adversarial"):
            key = (r["model"], r["target"], r["fraction"], r["kind"])
            groups.setdefault(key, {})[r["run"]] = dense_setting(configs[r["run"]],
                                                                 train_size=r["run"].startswith("find-"))
    out = []
    for (model, target, fraction, kind), group in groups.items():
        texts = sorted(set(setting_labels(group).values()))
        if texts != [""]:
            out.append({"model": model, "target": target, "fraction": fraction, "kind": kind, "settings": texts})
    return out


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


def run_compute(study_dir: Path, runs: set[str]) -> dict[str, dict[str, float]]:
    """CPU and wall seconds spent on ``runs`` (run directory names), per study folder that ran them.

    A study's jobs may be run by other study folders in the same output directory (priority phases, another
    experiment file sharing runs): every ``study-*/progress.jsonl`` there is read and its ``done`` records for
    these runs are summed per folder. Returns {folder name: {"jobs", "cpu_seconds", "wall_seconds"}}; runs no
    study recorded (run by hand, or by a killed process) count nowhere."""
    out: dict[str, dict[str, float]] = {}
    folders = sorted(p for p in study_dir.parent.glob("study-*") if (p / "progress.jsonl").is_file())
    for folder in folders:
        for rec in _json_lines(folder / "progress.jsonl"):
            if rec.get("status") != "done" or rec.get("run") not in runs:
                continue
            acc = out.setdefault(folder.name, {"jobs": 0, "cpu_seconds": 0.0, "wall_seconds": 0.0})
            acc["jobs"] += 1
            acc["cpu_seconds"] += float(rec.get("cpu_seconds") or 0.0)
            acc["wall_seconds"] += float(rec.get("wall_seconds") or 0.0)
    return out


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
