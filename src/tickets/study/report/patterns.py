"""Sparsity patterns side by side: standard vs robust tickets per pattern, and score vs measured latency.

Plain functions over ``collect``'s rows (hand-made rows in the tests), used by figures.py and markdown.py when a
study holds more than one pattern or any robust ticket (``has_kinds``):

* ``robust_vs_standard(rows)``: per model × pattern × method × target × data fraction, robust minus standard
  scores in *paired cells*: the same schedule position and the i-th fine-tuning seed of each kind (the same seed
  when both kinds use the same seeds, as transfers do). Mean, sample sd and standard error over the cells (seeds ×
  levels), the cells each kind wins, the cells where both kinds drew the *same* mask (one transfer run serves
  both), and a verdict: "robust ahead" / "standard ahead" when the mean difference is beyond two standard errors
  over at least ``MIN_CELLS`` cells, else "no clear difference". Cells of one ticket lineage are not independent (level
  k+1's ticket is drawn from level k's), so the standard error is a rough guide, not a test.
* ``pattern_summary(records)``: the same, pooled over the transfer targets of each pattern (the headline).
* ``kind_parts(rows)``: kind label → (method, pattern, robust), to split ``highest_matching_table``'s records.
* ``load_latency(path)`` / ``latency_at(...)``: the latencies ``benchmarks/compaction.py`` measured (its JSON), and
  the relative latency of a ticket at any sparsity by linear interpolation between the measured sparsities (dense
  = 1 at sparsity 0). Unstructured and N:M tickets have no CPU kernel that skips zeros: the benchmark measures
  their masked models, which run at dense speed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tickets.study.matching import higher_is_better, is_adversarial_fine_tune
from tickets.study.report.labels import with_setting

LATENCY_FILE = "compaction.json"
LATENCY_ENV = "TICKETS_LATENCY_JSON"
# the setting the score-vs-latency figure uses (the table gives onnxruntime and batch 1 too)
LATENCY_SETTING = {"engine": "eager", "batch": 64, "threads": 1}


def has_kinds(rows: list[dict]) -> bool:
    """True when the rows hold tickets of more than one pattern, or any robust ticket."""
    tickets = [r for r in rows if r["kind"] in ("find", "transfer")]
    return len({r.get("pattern") for r in tickets}) > 1 or any(r.get("robust") for r in tickets)


def kind_parts(rows: list[dict]) -> dict[str, tuple[str, str, bool]]:
    """Kind label (a row's ``method``) → (method, pattern, robust): the method is the base method with the row's
    setting, if any (``labels.with_setting``: "imp [rewind step:5]"), so that kinds of different settings stay
    apart."""
    out = {}
    for r in rows:
        if r["kind"] in ("find", "transfer") and r.get("method"):
            out[r["method"]] = (with_setting(r.get("base_method") or r["method"], r.get("setting")),
                                r.get("pattern") or "unstructured", bool(r.get("robust")))
    return out


def patterns_in(rows: list[dict]) -> list[str]:
    """The patterns of the rows' tickets: unstructured first, then in name order."""
    pats = {r.get("pattern") or "unstructured" for r in rows if r["kind"] in ("find", "transfer")}
    return sorted(pats, key=lambda p: (p != "unstructured", p))


MIN_CELLS = 3  # fewer paired cells give no verdict


def _stats(diffs: list[float], same: int = 0) -> dict[str, Any]:
    """Mean, sample sd, standard error, wins and verdict of paired differences; ``same``: cells in which both kinds
    are the very same run (identical masks)."""
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    se = sd / math.sqrt(n) if n > 1 else float("inf")
    wins_r = sum(d > 0 for d in diffs)
    wins_s = sum(d < 0 for d in diffs)
    if n >= MIN_CELLS and abs(mean) > 2 * se:
        verdict = "robust ahead" if mean > 0 else "standard ahead"
    else:
        verdict = "no clear difference"
    return {"n": n, "mean_diff": mean, "sd": sd, "se": se if n > 1 else None, "robust_wins": wins_r,
            "standard_wins": wins_s, "ties": n - wins_r - wins_s, "same_ticket": same, "verdict": verdict}


def robust_vs_standard(rows: list[dict]) -> list[dict]:
    """Robust minus standard tickets, per model × pattern × method × source × target × fraction (see the module
    docstring). ``diff`` is signed so that positive means the robust ticket is better (for losses: lower). Each
    record: the keys above, ``own_task`` (tickets scored on the task they were drawn on: robust ones were trained
    adversarially there), ``cells`` [{level, sparsity_standard, sparsity_robust, seed_standard, seed_robust,
    standard, robust, diff}] and ``_stats`` (n, mean_diff, sd, se, robust_wins, standard_wins, ties, verdict)."""
    groups: dict[tuple, dict[bool, dict[int, dict[int, dict]]]] = {}
    for r in rows:
        if r["kind"] not in ("find", "transfer") or not r["level"] or is_adversarial_fine_tune(r.get("method")):
            continue
        key = (r["model"], r.get("pattern") or "unstructured",
               with_setting(r.get("base_method") or r["method"], r.get("setting")), r["source"], r["target"],
               r["fraction"])
        by_level = groups.setdefault(key, {}).setdefault(bool(r.get("robust")), {}).setdefault(r["level"], {})
        if r["seed"] not in by_level or r["kind"] == "transfer":  # as ticket_curves: the transfer row wins
            by_level[r["seed"]] = r
    out = []
    for (model, pattern, method, source, target, fraction), kinds in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][1] != "unstructured", kv[0][1], kv[0][2], kv[0][3] != kv[0][4], kv[0][4], -kv[0][5])):
        if True not in kinds or False not in kinds:
            continue
        cells = []
        for level in sorted(set(kinds[True]) & set(kinds[False])):
            std, rob = kinds[False][level], kinds[True][level]
            for s_seed, r_seed in zip(sorted(std), sorted(rob)):
                a, b = std[s_seed], rob[r_seed]
                sign = 1 if higher_is_better(a["metric"]) else -1
                cells.append({"level": level, "sparsity_standard": a["sparsity"], "sparsity_robust": b["sparsity"],
                              "seed_standard": s_seed, "seed_robust": r_seed, "standard": a["score"],
                              "robust": b["score"], "diff": sign * (b["score"] - a["score"]), "metric": a["metric"],
                              "same_ticket": a.get("run") is not None and a.get("run") == b.get("run")})
        if not cells:
            continue
        out.append({"model": model, "pattern": pattern, "method": method, "source": source, "target": target,
                    "fraction": fraction, "own_task": source == target, "metric": cells[0]["metric"],
                    "cells": cells, **_stats([c["diff"] for c in cells], sum(c["same_ticket"] for c in cells))})
    return out


def pattern_summary(records: list[dict]) -> list[dict]:
    """Per model × pattern × method × fraction: ``robust_vs_standard`` cells pooled over the *transfer* targets
    (own-task records left out), with the per-target records' verdicts listed (``targets``)."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        if not rec["own_task"]:
            groups.setdefault((rec["model"], rec["pattern"], rec["method"], rec["fraction"]), []).append(rec)
    out = []
    for (model, pattern, method, fraction), recs in groups.items():
        cells = [c for r in recs for c in r["cells"]]
        out.append({"model": model, "pattern": pattern, "method": method, "fraction": fraction,
                    "targets": [{"target": r["target"], "mean_diff": r["mean_diff"], "n": r["n"],
                                 "robust_wins": r["robust_wins"], "standard_wins": r["standard_wins"],
                                 "verdict": r["verdict"]} for r in recs],
                    **_stats([c["diff"] for c in cells], sum(c["same_ticket"] for c in cells))})
    return out


# ----------------------------------------------------------------------------------------------------------------
# measured latency (benchmarks/compaction.py)
# ----------------------------------------------------------------------------------------------------------------
def find_latency_file(*candidates: str | os.PathLike | None) -> Path | None:
    """The compaction benchmark's JSON: the first of ``$TICKETS_LATENCY_JSON`` and ``candidates`` (files, or
    folders holding ``compaction.json``) that exists; None when none does."""
    for c in (os.environ.get(LATENCY_ENV), *candidates):
        if not c:
            continue
        p = Path(c)
        if p.is_dir():
            p = p / LATENCY_FILE
        if p.is_file():
            return p
    return None


def load_latency(path: str | os.PathLike) -> dict[str, Any]:
    """``benchmarks/compaction.py``'s JSON: ``{"meta": {...}, "records": [...]}``; each record has model, pattern,
    variant (dense | masked | compact), target_sparsity, sparsity (achieved, prunable set), engine (eager |
    onnxruntime), batch, threads and ``speedup_vs_dense`` (median over rounds of dense time / this time)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError(f"{path} is not a compaction benchmark result (no records)")
    return data


def latency_at(records: list[dict], model: str, pattern: str, sparsity: float, *, engine: str = "eager",
               batch: int = 64, threads: int = 1) -> dict[str, Any] | None:
    """Relative latency (time / dense time) of ``model`` with a ``pattern`` ticket at ``sparsity``: linear in
    sparsity between the benchmark's measured points (the compact model where one exists, else the masked one;
    dense = 1 at 0). None when the benchmark has no point for this model, pattern and setting. Returns
    ``{"relative_latency", "variant", "interpolated" (False when a measured sparsity is within 0.005),
    "extrapolated" (beyond the highest measured sparsity: the last point is used)}``."""
    pts = [r for r in records if r.get("model") == model and r.get("pattern") == pattern and
           r.get("engine") == engine and r.get("batch") == batch and r.get("threads") == threads and
           r.get("speedup_vs_dense")]
    if not pts:
        return None
    variant = "compact" if any(r["variant"] == "compact" for r in pts) else "masked"
    curve = sorted((float(r["sparsity"]), 1.0 / float(r["speedup_vs_dense"])) for r in pts
                   if r["variant"] == variant)
    curve = [(0.0, 1.0)] + [p for p in curve if p[0] > 0]
    exact = next((v for s, v in curve if abs(s - sparsity) <= 0.005), None)
    if exact is not None:
        return {"relative_latency": exact, "variant": variant, "interpolated": False, "extrapolated": False}
    if sparsity >= curve[-1][0]:
        return {"relative_latency": curve[-1][1], "variant": variant, "interpolated": True, "extrapolated": True}
    for (s0, v0), (s1, v1) in zip(curve, curve[1:]):
        if s0 <= sparsity <= s1:
            v = v0 + (v1 - v0) * (sparsity - s0) / (s1 - s0)
            return {"relative_latency": v, "variant": variant, "interpolated": True, "extrapolated": False}
    return None
