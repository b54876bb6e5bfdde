"""Tables and plots from finished runs: what a paper would show, readable at a glance.

``write_report(DIR)`` (``tickets report DIR``) reads a study folder written by ``tickets run`` (``OUT/study-<name>``,
whose ``jobs.json`` lists the study's runs) or any folder of ``find-*`` / ``transfer-*`` run directories, and writes
``report.md`` with:

* score vs sparsity per ticket kind (method × source task) with error bars over seeds, against the dense band;
* the highest matching sparsity table (both criteria, see ``tickets.study.matching``);
* the transfer matrix (source task → target task) as heatmaps, one panel per sparsity;
* per-layer sparsity of the tickets;
* the overlap (IoU of kept weights) between tickets drawn on different tasks / by different methods / seeds;

and, for every figure, its data as CSV and JSON next to it. ``plot_sparsity_curves`` and ``markdown_table`` are
also used by ``tickets demo``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import yaml

from tickets.errors import TicketsError
from tickets.study.matching import (
    dense_baselines,
    higher_is_better,
    highest_matching_table,
    is_matching,
    ticket_curves,
    transfer_matrices,
    transfer_vs_own,
)
from tickets.runs import atomic_write, atomic_write_text, read_json

TICKET_FILE = "ticket.safetensors"
PRESET_TEXT = {
    "cnn": "every conv weight except the stem",
    "cnn-all": "every conv weight",
    "all": "every conv and linear weight",
    "bert": "Q, K, V, attention-out, FFN-in, FFN-out of every layer + pooler",
}


# ----------------------------------------------------------------------------------------------------------------
# plotting primitives (plot_sparsity_curves is also the demo's)
# ----------------------------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _density_axis(ax, sparsities: Sequence[float]) -> None:
    """Sparsity on a log-of-density axis (so 20 … 98% spread evenly), labelled in % sparsity."""
    ax.set_xscale("log")
    ticks = sorted({round(100 * (1 - s), 2) for s in sparsities}, reverse=True)
    ax.set_xlim(max(ticks) * 1.15, min(ticks) / 1.15) if ticks else None
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{100 - t:.0f}" if abs((100 - t) - round(100 - t)) < 0.05 or (100 - t) >= 10
                        else f"{100 - t:.1f}" for t in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("sparsity of the prunable set (%)")


def _draw_curves(ax, series: dict[str, Sequence[tuple]], dense: tuple[float, float] | None,
                 styles: dict[str, dict] | None = None, dense_label: str = "dense (pre-trained, fine-tuned)") -> None:
    """``series[label] = [(sparsity, mean, std[, matching]), …]``. Points whose 4th item is False are drawn
    hollow (not matching)."""
    if dense is not None:
        mean, std = dense
        ax.axhline(mean, color="black", lw=1, ls="--", label=dense_label)
        if std > 0:
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.08, lw=0)
    for label, points in series.items():
        pts = sorted(points, key=lambda p: p[0])
        xs = [100 * (1 - p[0]) for p in pts]
        style = dict(marker="o", ms=5, capsize=3, lw=1.5)
        style.update((styles or {}).get(label, {}))
        line = ax.errorbar(xs, [p[1] for p in pts], yerr=[p[2] for p in pts], label=label, **style)
        colour = line[0].get_color()
        hollow = [(x, p[1]) for x, p in zip(xs, pts) if len(p) > 3 and p[3] is False]
        if hollow:
            ax.plot([h[0] for h in hollow], [h[1] for h in hollow], ls="none", marker=style["marker"],
                    ms=style["ms"], mfc="white", mec=colour, mew=1.5, zorder=5)


def plot_sparsity_curves(
    series: dict[str, Sequence[tuple[float, float, float]]],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    dense: tuple[float, float] | None = None,
) -> Path:
    """Score vs sparsity per method. ``series[method] = [(sparsity, mean, std), …]``; ``dense = (mean, std)``
    draws the dense model's band. Sparsity is on a log-of-density axis so 20 … 98% spread evenly."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    _draw_curves(ax, series, dense)
    _density_axis(ax, [p[0] for pts in series.values() for p in pts])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    plt = _plt()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def _emit(fig, out: Path, name: str, alt: str, files: list[str], md: list[str]) -> None:
    """Save a report figure as ``out/name`` and list it: in ``files`` and as a markdown image in ``md``."""
    _save(fig, out / name)
    files.append(name)
    md.append(f"![{alt}]({name})")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# reading runs
# ----------------------------------------------------------------------------------------------------------------
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
                "train_seconds": float(m.get("train_seconds") or 0.0)}
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
    """Everything a report needs from ``directory`` (a study folder or a folder of runs)."""
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
            ctx["progress"] = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
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


# ----------------------------------------------------------------------------------------------------------------
# data files
# ----------------------------------------------------------------------------------------------------------------
def _write_data(out: Path, stem: str, records: list[dict]) -> list[str]:
    """``stem.json`` (the records) and ``stem.csv`` (flattened: nested keys joined with '.')."""
    atomic_write_text(out / f"{stem}.json", json.dumps(records, indent=1, sort_keys=True, default=str) + "\n")
    flat = [_flatten(r) for r in records]
    keys: list[str] = []
    for r in flat:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in flat:
        w.writerow({k: _csv_value(r.get(k)) for k in keys})
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    return [f"{stem}.csv", f"{stem}.json"]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return v


# ----------------------------------------------------------------------------------------------------------------
# formatting helpers
# ----------------------------------------------------------------------------------------------------------------
def _scale(metric: str) -> float:
    """Scores are shown ×100 (accuracy %, F1, MCC, Spearman as in GLUE) unless they are losses / perplexities."""
    return 100.0 if higher_is_better(metric) else 1.0


def _unit(metric: str) -> str:
    return f"test {metric} (%)" if metric == "accuracy" else (f"test {metric} (×100)" if _scale(metric) == 100
                                                                else f"test {metric}")


def _pm(mean: float, std: float, metric: str, n: int | None = None) -> str:
    s = _scale(metric)
    text = f"{mean * s:.1f} ± {std * s:.1f}" if s == 100 else f"{mean:.3f} ± {std:.3f}"
    return text + (f" (n={n})" if n is not None else "")


def _pct(s: float | None) -> str:
    return "—" if s is None else f"{100 * s:.1f}%"


def _frac(f: float) -> str:
    return "all" if f == 1.0 else f"{f:g}"


def _ticket_label(source: str, target: str, method: str) -> str:
    return f"{method} (own task)" if source == target else f"{method} from {source}"


def _slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]


# ----------------------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------------------
def _grid_cols(n: int) -> int:
    """Columns for n panels: 2×2 for four, otherwise up to three a row."""
    return 2 if n == 4 else min(3, n)


def _curve_figures(ctx: dict, out: Path) -> tuple[list[str], list[str], list[dict]]:
    """Score vs sparsity: one figure per model × data fraction, one panel per target task."""
    rows = ctx["rows"]
    dense = dense_baselines(rows)
    curves = ticket_curves(rows)
    records: list[dict] = []
    files: list[str] = []
    md: list[str] = []
    groups: dict[tuple, list[str]] = {}
    for (model, target, fraction, source, method) in curves:
        groups.setdefault((model, fraction), [])
        if target not in groups[(model, fraction)]:
            groups[(model, fraction)].append(target)
    for (model, target, fraction), d in dense.items():
        records.append({"model": model, "target": target, "fraction": fraction, "ticket": "dense", "source": None,
                        "method": None, "level": 0, "sparsity": 0.0, "mean": d.mean, "std": d.std, "n": d.n,
                        "seeds": d.seeds, "matching": None, "at_least_dense": None})
    kinds = sorted({(k[3], k[4]) for k in curves}, key=lambda sm: (sm[1] != "imp", sm[1], sm[0]))
    plt = _plt()
    for (model, fraction), targets in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        targets = sorted(targets, key=lambda t: (not any(k[3] == t and k[0] == model and k[2] == fraction and
                                                         k[4] != "imp" for k in curves), t))
        ncols = _grid_cols(len(targets))
        nrows = math.ceil(len(targets) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), dpi=110, squeeze=False)
        for ax in axes.flat[len(targets):]:
            ax.set_visible(False)
        for ax, target in zip(axes.flat, targets):
            d = dense.get((model, target, fraction))
            series, styles, metric = {}, {}, None
            for (m_, t_, f_, source, method), pts in sorted(curves.items(), key=lambda kv: kinds.index(
                    (kv[0][3], kv[0][4]))):
                if (m_, t_, f_) != (model, target, fraction):
                    continue
                metric = pts[0]["metric"]
                s = _scale(metric)
                higher = higher_is_better(metric)
                label = _ticket_label(source, target, method)
                series[label] = [(p["sparsity"], p["score"].mean * s, p["score"].std * s,
                                  None if d is None else is_matching(p["score"].mean, d, higher)) for p in pts]
                own = source == target
                styles[label] = dict(color=_COLOURS[kinds.index((source, method)) % len(_COLOURS)],
                                     ls="-" if own else "--", marker="o" if own else "s")
                for p in pts:
                    records.append({"model": model, "target": target, "fraction": fraction, "ticket": label,
                                    "source": source, "method": method, "level": p["level"],
                                    "sparsity": p["sparsity"], "mean": p["score"].mean, "std": p["score"].std,
                                    "n": p["score"].n, "seeds": p["score"].seeds,
                                    "matching": None if d is None else is_matching(p["score"].mean, d, higher),
                                    "at_least_dense": None if d is None else (
                                        p["score"].mean >= d.mean if higher else p["score"].mean <= d.mean)})
            s = _scale(metric or "accuracy")
            _draw_curves(ax, series, None if d is None else (d.mean * s, d.std * s), styles,
                         dense_label="dense θ0, fine-tuned (±1 sd)")
            _density_axis(ax, [p[0] for pts in series.values() for p in pts])
            ax.set_title(f"{target}", fontsize=10)
            ax.set_ylabel(_unit(metric or "accuracy"), fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        seeds = sorted({sd for k, pts in curves.items() if k[0] == model for p in pts for sd in p["score"].seeds})
        fig.suptitle(f"{model}: test score vs sparsity, mean ± sd over seeds {', '.join(map(str, seeds))}"
                     f"{'' if fraction == 1.0 else f', {fraction:g} of the training data'}\n"
                     "hollow marker = not matching (below dense mean − 1 sd); dashed = ticket transferred from "
                     "another task", fontsize=9)
        fig.tight_layout()
        name = f"curves-{_slug(model, '' if fraction == 1.0 else f'f{fraction:g}')}.png"
        alt = f"score vs sparsity, {model}{'' if fraction == 1.0 else f', fraction {fraction:g}'}"
        _emit(fig, out, name, alt, files, md)
    return files, md, records


def _matrix_figures(ctx: dict, out: Path) -> tuple[list[str], list[str], list[dict]]:
    """Transfer-matrix heatmaps: one figure per model × method × fraction, one panel per sparsity level."""
    mats = transfer_matrices(ctx["rows"])
    groups: dict[tuple, list[dict]] = {}
    for m in mats:
        groups.setdefault((m["model"], m["method"], m["fraction"]), []).append(m)
    files, md, records = [], [], []
    plt = _plt()
    import numpy as np

    for (model, method, fraction), levels in groups.items():
        # a matrix is worth drawing only when some ticket is moved to another task
        if not any(s != t for m in levels for s in m["cells"] for t in m["cells"][s]):
            continue
        targets = sorted({t for m in levels for t in m["targets"]})
        sources = [t for t in targets if any(t in m["sources"] for m in levels)]
        sources += sorted({s for m in levels for s in m["sources"]} - set(sources))
        ncols = _grid_cols(len(levels))
        nrows = math.ceil(len(levels) / ncols)
        w = 0.95 * len(targets) + 1.6
        fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols + 1.6, (0.62 * len(sources) + 1.5) * nrows + 0.8),
                                 dpi=110, squeeze=False, constrained_layout=True)
        for ax in axes.flat[len(levels):]:
            ax.set_visible(False)
        deltas = [c["delta"] for m in levels for cs in m["cells"].values() for c in cs.values()
                  if c["delta"] is not None]
        metric = next(c["metric"] for m in levels for cs in m["cells"].values() for c in cs.values())
        s = _scale(metric)
        # colours saturate at ±10 points so one collapsed cell does not wash out the rest (numbers are exact)
        lim = min(10.0, max([abs(x) * s for x in deltas] + [1.0]))
        image = None
        for k, (ax, m) in enumerate(zip(axes.flat, levels)):
            grid = np.full((len(sources), len(targets)), np.nan)
            for i, src in enumerate(sources):
                for j, tgt in enumerate(targets):
                    c = m["cells"].get(src, {}).get(tgt)
                    if c is None:
                        ax.text(j, i, "–", ha="center", va="center", fontsize=8, color="#999999")
                        continue
                    records.append({"model": model, "method": method, "fraction": fraction, "level": m["level"],
                                    "level_sparsity": m["sparsity"], "source": src, "target": tgt, **c})
                    if c["delta"] is not None:
                        grid[i, j] = c["delta"] * s
                    mark = " ✓" if c["matching"] else ""
                    delta = "" if c["delta"] is None else f"\n{c['delta'] * s:+.1f}"
                    dark = c["delta"] is not None and abs(c["delta"] * s) > 0.6 * lim
                    ax.text(j, i, f"{c['score'] * s:.1f}{mark}{delta}", ha="center", va="center", fontsize=8,
                            fontweight="bold" if src == tgt else "normal", color="white" if dark else "black")
            image = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_xticks(range(len(targets)))
            ax.set_xticklabels(targets, fontsize=8, rotation=25, ha="right")
            ax.set_yticks(range(len(sources)))
            ax.set_yticklabels(sources if k % ncols == 0 else [], fontsize=8)
            if k % ncols == 0:
                ax.set_ylabel("ticket drawn on", fontsize=8)
            ax.set_xlabel("fine-tuned on", fontsize=8)
            ax.set_title(f"{100 * m['sparsity']:.1f}% sparse", fontsize=9)
        if image is not None:
            cb = fig.colorbar(image, ax=list(axes.flat[:len(levels)]), shrink=0.9, extend="both")
            cb.set_label(f"Δ vs target's dense mean ({'points' if s == 100 else metric})", fontsize=8)
        fig.suptitle(f"{model}: {method} tickets moved from the task they were drawn on (rows) to the task they are "
                     f"fine-tuned on (columns){'' if fraction == 1.0 else f', {fraction:g} of the training data'}\n"
                     f"cell: mean test {metric}{' (%)' if s == 100 else ''} over seeds, below it Δ vs that task's "
                     "dense mean; ✓ matching (within 1 sd of dense); bold: drawn on the target itself", fontsize=8.5)
        name = f"transfer-matrix-{_slug(model, method, '' if fraction == 1.0 else f'f{fraction:g}')}.png"
        _emit(fig, out, name, f"transfer matrix, {model}, {method}", files, md)
    return files, md, records


def _short_names(names: list[str]) -> list[str]:
    """Tensor names without the common prefix and the '.weight' suffix (layer1.0.conv1)."""
    stripped = [n[:-7] if n.endswith(".weight") else n for n in names]
    parts = [s.split(".") for s in stripped]
    k = 0
    while parts and all(len(p) > k + 1 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    return [".".join(p[k:]) for p in parts]


def _load_masks(paths: list[str]) -> dict[str, Any]:
    from tickets.ticket import load_ticket

    return {p: load_ticket(p).mask for p in paths}


def _layer_figures(ctx: dict, out: Path) -> tuple[list[str], list[str], list[dict]]:
    """Per-layer sparsity of the tickets (mean over seeds): one figure per model, one panel per level."""
    files, md, records = [], [], []
    plt = _plt()
    by_model: dict[str, list[dict]] = {}
    for t in ctx["tickets"]:
        by_model.setdefault(t["model"], []).append(t)
    for model, tickets in by_model.items():
        levels = sorted({t["level"] for t in tickets})
        kinds = sorted({(t["source"], t["method"]) for t in tickets}, key=lambda sm: (sm[1] != "imp", sm[1], sm[0]))
        names: list[str] | None = None
        data: dict[tuple, dict[str, list[float]]] = {}
        sizes: dict[str, int] = {}
        overall: dict[int, list[float]] = {}
        for level in levels:
            at = [t for t in tickets if t["level"] == level]
            masks = _load_masks([t["path"] for t in at])
            for t in at:
                mask = masks[t["path"]]
                names = names or mask.names
                sizes = sizes or {n: mask[n].numel() for n in mask.names}
                per = mask.per_tensor_sparsity()
                overall.setdefault(level, []).append(mask.sparsity)
                for n, v in per.items():
                    data.setdefault((level, t["source"], t["method"]), {}).setdefault(n, []).append(v)
        if not names:
            continue
        short = _short_names(names)
        for (level, source, method), per in data.items():
            for n, sh in zip(names, short):
                vals = per.get(n, [])
                if vals:
                    records.append({"model": model, "level": level, "source": source, "method": method,
                                    "tensor": n, "weights": sizes[n], "sparsity": sum(vals) / len(vals),
                                    "n": len(vals)})
        nrows = len(levels)
        fig, axes = plt.subplots(nrows, 1, figsize=(max(7.5, 0.3 * len(names) + 2.5), 2.0 * nrows + 1.6), dpi=110,
                                 squeeze=False, sharex=True)
        xs = list(range(len(names)))
        for ax, level in zip(axes[:, 0], levels):
            for i, (source, method) in enumerate(kinds):
                per = data.get((level, source, method))
                if not per:
                    continue
                ys = [100 * sum(per[n]) / len(per[n]) for n in names]
                # widest first, so lines of identical masks stay visible as nested bands
                ax.plot(xs, ys, marker=_MARKERS[i % len(_MARKERS)], ms=4 + 0.5 * (len(kinds) - i), mfc="none",
                        lw=1.0 + 3.5 * (len(kinds) - 1 - i) / max(1, len(kinds) - 1), alpha=0.8,
                        color=_COLOURS[i % len(_COLOURS)],
                        ls="-" if method == "imp" else ("--" if method == "omp" else ":"),
                        label=f"{method} on {source}")
            target = 100 * sum(overall[level]) / len(overall[level])
            ax.axhline(target, color="black", lw=0.8, ls=":")
            ax.set_ylim(-3, 103)
            ax.set_ylabel("sparsity (%)", fontsize=8)
            ax.set_title(f"tickets at {target:.1f}% sparsity of the prunable set (dotted line)", fontsize=9)
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7.5, ncol=min(3, len(kinds)), loc="lower center", bbox_to_anchor=(0.5, 1.12),
                          frameon=False)
        ax = axes[-1, 0]
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{s} ({sizes[n] / 1000:.1f}k)" for s, n in zip(short, names)], rotation=60, ha="right",
                           fontsize=7)
        ax.set_xlabel("prunable tensor, in model order (its number of weights)", fontsize=8)
        fig.suptitle(f"{model}: per-layer sparsity of the tickets (pruned / weights of each tensor), mean over "
                     "seeds\nlines on top of each other = the same per-layer profile", fontsize=9)
        fig.tight_layout()
        name = f"layer-sparsity-{_slug(model)}.png"
        _emit(fig, out, name, f"per-layer sparsity, {model}", files, md)
    return files, md, records


def _overlap_figures(ctx: dict, out: Path) -> tuple[list[str], list[str], list[dict]]:
    """IoU of kept weights between ticket kinds at the same level (same seed), and across seeds (diagonal)."""
    import numpy as np

    files, md, records = [], [], []
    plt = _plt()
    by_model: dict[str, list[dict]] = {}
    for t in ctx["tickets"]:
        by_model.setdefault(t["model"], []).append(t)
    for model, tickets in by_model.items():
        levels = sorted({t["level"] for t in tickets})
        kinds = sorted({(t["source"], t["method"]) for t in tickets}, key=lambda sm: (sm[1] != "imp", sm[1], sm[0]))
        if len(kinds) < 2 and len({t["seed"] for t in tickets}) < 2:
            continue
        labels = [f"{m} on {s}" for s, m in kinds]
        panels = []
        for level in levels:
            at = [t for t in tickets if t["level"] == level]
            masks = _load_masks([t["path"] for t in at])
            idx = {(t["source"], t["method"], t["seed"]): masks[t["path"]] for t in at}
            density = 1 - sum(t["sparsity"] for t in at) / len(at)
            grid = np.full((len(kinds), len(kinds)), np.nan)
            for i, a in enumerate(kinds):
                for j, b in enumerate(kinds):
                    if j < i:
                        grid[i, j] = grid[j, i]
                        continue
                    seeds_a = sorted(s for (sa, ma, s) in idx if (sa, ma) == a)
                    seeds_b = sorted(s for (sb, mb, s) in idx if (sb, mb) == b)
                    if i == j:  # the same kind across seeds: how stable is the ticket?
                        pairs = [(x, y) for x in seeds_a for y in seeds_b if x < y]
                    else:  # different kinds, same seed
                        pairs = [(x, x) for x in seeds_a if x in seeds_b]
                    vals = [idx[(a[0], a[1], x)].iou(idx[(b[0], b[1], y)]) for x, y in pairs]
                    if vals:
                        grid[i, j] = sum(vals) / len(vals)
                        records.append({"model": model, "level": level, "sparsity": 1 - density,
                                        "a": labels[i], "b": labels[j],
                                        "pairs": "across seeds" if i == j else "same seed",
                                        "iou": grid[i, j], "n": len(vals),
                                        "random_expectation": density / (2 - density)})
            panels.append((level, 1 - density, grid))
        ncols = _grid_cols(len(panels))
        nrows = math.ceil(len(panels) / ncols)
        side = 0.7 * len(kinds) + 0.6
        fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols + 3.2, side * nrows + 2.2), dpi=110,
                                 squeeze=False, constrained_layout=True)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        image = None
        for k, (ax, (level, sparsity, grid)) in enumerate(zip(axes.flat, panels)):
            image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
            for i in range(len(kinds)):
                for j in range(len(kinds)):
                    v = grid[i, j]
                    ax.text(j, i, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7.5,
                            color="white" if not np.isnan(v) and v < 0.6 else "black")
            ax.set_xticks(range(len(kinds)))
            ax.set_xticklabels(labels if k // ncols == nrows - 1 or k + ncols >= len(panels) else [], rotation=35,
                               ha="right", fontsize=7.5)
            ax.set_yticks(range(len(kinds)))
            ax.set_yticklabels(labels if k % ncols == 0 else [], fontsize=7.5)
            d = 1 - sparsity
            ax.set_title(f"{100 * sparsity:.1f}% sparse (two random masks: {d / (2 - d):.2f})", fontsize=8.5)
        if image is not None:
            fig.colorbar(image, ax=list(axes.flat[:len(panels)]), shrink=0.8).set_label("IoU of kept weights",
                                                                                          fontsize=8)
        fig.suptitle(f"{model}: overlap of tickets, IoU of kept weights over the prunable set\n"
                     "off-diagonal: two kinds, same seed (mean over seeds); diagonal: one kind across seeds",
                     fontsize=8.5)
        name = f"overlap-{_slug(model)}.png"
        _emit(fig, out, name, f"ticket overlap, {model}", files, md)
    return files, md, records


# ----------------------------------------------------------------------------------------------------------------
# report.md
# ----------------------------------------------------------------------------------------------------------------
def _setup_lines(ctx: dict) -> list[str]:
    configs = ctx["configs"]
    rows = ctx["rows"]
    lines = []
    models = sorted({r["model"] for r in rows})
    tasks = sorted({r["target"] for r in rows})
    lines.append(f"- **Models**: {', '.join(models)}. **Tasks**: {', '.join(tasks)}. "
                 f"**Seeds**: {', '.join(str(s) for s in ctx['seeds'])} (every mean ± sd is over these seeds; sd is "
                 "the sample standard deviation).")
    methods = sorted({c["method"] for c in configs.values() if "method" in c})
    levels = sorted({round(lv, 4) for c in configs.values() for lv in c.get("levels", []) if lv > 0})
    if methods:
        lines.append(f"- **Ticket methods**: {', '.join(methods)}; sparsity levels "
                     f"{', '.join(f'{100 * s:.1f}%' for s in levels)} of the prunable set.")
    train = {}
    for c in configs.values():
        t, d = c["train"], c["data"]
        key = (t["epochs"], t["optimizer"], t["lr"], t["lr_schedule"], t["batch_size"], t["weight_decay"],
               d.get("train_size"), d.get("val_fraction"), d.get("val_size"), d.get("limit"), d.get("augment"))
        train.setdefault(key, 0)
        train[key] += 1
    for (ep, opt, lr, sched, bs, wd, ts, vf, vs, limit, aug), n in sorted(train.items(), key=lambda kv: -kv[1]):
        val = f"{vs} examples" if vs else f"{vf:.0%}"
        lines.append(f"- **Training** ({n} runs): {ep} epochs per fine-tune, {opt} lr {lr:g} ({sched}), batch {bs}, "
                     f"weight decay {wd:g}; {'a seeded subset of ' + str(ts) if ts else 'all'} training examples "
                     f"per run ({val} of it carved off for model selection){', augmented' if aug else ''}; "
                     f"scores on {'the first ' + str(limit) if limit else 'all'} test examples.")
    lines.append("- **Fine-tuning**: every ticket is θ0 (the pre-trained weights) under its mask, with a fresh "
                 "head for the task, fine-tuned with the mask held fixed; the dense baseline is θ0 fine-tuned "
                 "the same way without a mask.")
    denominators: dict[tuple, list[dict]] = {}
    for t in ctx["tickets"]:
        rep = t.get("report") or {}
        p = rep.get("prunable")
        if p:
            pset = ctx["configs"].get(Path(t["path"]).parent.parent.name, {}).get("prunable")
            preset = f"preset `{pset['preset']}` ({PRESET_TEXT.get(pset['preset'], 'see docs')})" if isinstance(
                pset, dict) else "the prunable set"
            denominators.setdefault((t["model"], preset, p["tensors"], p["total"]), []).append(rep.get("model"))
    texts = []
    for (model, preset, tensors, total), wholes in sorted(denominators.items()):
        fracs = sorted({round(100 * w["prunable_fraction"], 1) for w in wholes if w})
        share = "" if not fracs else (f" = {fracs[0]}% of the model's parameters" if len(fracs) == 1 else
                                      f" = {fracs[0]}–{fracs[-1]}% of the model's parameters (the head's size "
                                      "depends on the task)")
        texts.append(f"{model}: {preset}, {tensors} tensors, {total:,} weights{share}")
    if texts:
        lines.append("- **Denominator**: every sparsity is the pruned fraction of the *prunable set*, not of the "
                     f"whole model — {'; '.join(texts)}. Heads, biases and normalisation layers are never pruned.")
    lines.append("- **Matching**: a ticket is *matching* when its mean score is within one standard deviation of "
                 "the dense model's mean (mean ≥ dense mean − dense sd), and *at least dense* when mean ≥ dense mean "
                 "(the stricter criterion). The highest matching sparsity is the largest sparsity at which it "
                 "matches.")
    progress = [p for p in ctx["progress"] if p.get("status") == "done"]
    train_seconds = sum(r.get("train_seconds", 0.0) for r in rows)
    if progress:
        cpu = sum(p["cpu_seconds"] for p in progress)
        wall = sum(p["wall_seconds"] for p in progress)
        lines.append(f"- **Compute**: this study ran {len(progress)} jobs in {wall / 3600:.2f} h wall, "
                     f"{cpu / 3600:.2f} CPU-hours (process CPU time); the training loops of all runs the report "
                     f"reads (including runs reused from elsewhere; evaluation not counted) took "
                     f"{train_seconds / 3600:.2f} h wall.")
    else:
        lines.append(f"- **Compute**: fine-tuning in the runs read took {train_seconds / 3600:.2f} h wall.")
    return lines


def _findings(ctx: dict, table: list[dict], vs_own: list[dict], overlap: list[dict]) -> list[str]:
    """The story in a few bullets: matching sparsities, methods compared, transfer vs own tickets, overlap."""
    lines = []
    by_task: dict[tuple, list[dict]] = {}
    for r in table:
        by_task.setdefault((r["model"], r["target"], r["fraction"]), []).append(r)
    for (model, target, fraction), recs in by_task.items():
        kinds = "; ".join(f"{_ticket_label(r['source'], target, r['method'])} "
                          f"**{_pct(r['within_1sd'] and r['within_1sd']['sparsity'])}** / "
                          f"{_pct(r['at_least_dense'] and r['at_least_dense']['sparsity'])}" for r in recs)
        data = "" if fraction == 1.0 else f" ({fraction:g} of the training data)"
        lines.append(f"- Highest matching sparsity on **{target}**{data} (within 1 sd / ≥ dense mean): {kinds}; "
                     f"tested up to {_pct(max(r['max_sparsity'] for r in recs))}.")
    curves = ticket_curves(ctx["rows"])
    dense = dense_baselines(ctx["rows"])
    for (model, target, fraction), recs in by_task.items():
        own = [r for r in recs if r["source"] == target]
        if len(own) < 2:
            continue
        metric = own[0]["metric"]
        sc = _scale(metric)
        pts = {r["method"]: {p["level"]: p for p in curves[(model, target, fraction, target, r["method"])]}
               for r in own}
        levels = sorted(set.intersection(*(set(v) for v in pts.values())))
        if not levels:
            continue
        sign = 1 if higher_is_better(metric) else -1
        best = [max(pts, key=lambda m: sign * pts[m][lv]["score"].mean) for lv in levels]
        top = levels[-1]
        scores = ", ".join(f"{m} {pts[m][top]['score'].mean * sc:.1f}" for m in sorted(
            pts, key=lambda m: -sign * pts[m][top]["score"].mean))
        d = dense.get((model, target, fraction))
        wins = ", ".join(f"{m} at {best.count(m)}" for m in sorted(set(best), key=lambda m: -best.count(m)))
        lines.append(f"- Methods on **{target}**: best at {len(levels)} sparsities — {wins}; at "
                     f"{_pct(pts[own[0]['method']][top]['sparsity'])}: {scores}"
                     f"{'' if d is None else f' (dense {d.mean * sc:.1f})'}.")
    for v in vs_own:
        ahead = "higher" if v["mean_diff"] > 0 else "lower"
        data = "" if v["fraction"] == 1.0 else f" ({v['fraction']:g} of the training data)"
        scale = _scale(rows_metric(ctx["rows"], v["model"], v["target"]))
        lines.append(f"- On **{v['target']}**{data}, {v['method']} tickets from **{v['source']}** scored {ahead} "
                     f"than {v['target']}'s own {v['method']} tickets on average ({v['mean_diff'] * scale:+.1f} "
                     f"points), better at {v['wins']} of {len(v['levels'])} sparsities.")
    groups: dict[str, list[dict]] = {}
    for r in overlap:
        if r["pairs"] != "same seed":
            continue
        (ma, sa), (mb, sb) = r["a"].split(" on ", 1), r["b"].split(" on ", 1)
        if ma == mb and sa != sb:
            groups.setdefault(f"{ma} tickets drawn on different tasks", []).append(r)
        elif sa == sb and ma != mb:
            pair = " and ".join(sorted((ma, mb), key=lambda m: (m != "imp", m)))
            groups.setdefault(f"{pair} tickets drawn on the same task", []).append(r)
    for what, recs in groups.items():
        lo, hi = min(r["iou"] for r in recs), max(r["iou"] for r in recs)
        rl, rh = min(r["random_expectation"] for r in recs), max(r["random_expectation"] for r in recs)
        span = f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"
        rspan = f"{rl:.2f}" if f"{rl:.2f}" == f"{rh:.2f}" else f"{rl:.2f}–{rh:.2f}"
        lines.append(f"- Overlap: {what} share IoU {span} of their kept weights at "
                     f"{_pct(min(r['sparsity'] for r in recs))}–{_pct(max(r['sparsity'] for r in recs))} sparsity "
                     f"(two random masks: {rspan}).")
    return lines


def write_report(directory: str | Path, *, to: str | Path | None = None) -> Path:
    """Write ``report.md`` + PNGs + CSV/JSON for the study or runs in ``directory`` (into ``to`` if given)."""
    ctx = collect(directory)
    out = Path(to) if to else Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = ctx["rows"]
    table = highest_matching_table(rows)
    vs_own = transfer_vs_own(rows)
    dense = dense_baselines(rows)

    data_files = _write_data(out, "scores", [{k: r[k] for k in ("model", "kind", "source", "method", "target",
                                                                "fraction", "level", "sparsity", "seed", "metric",
                                                                "score", "train_size", "run")} for r in rows])
    curve_png, curve_md, curve_rec = _curve_figures(ctx, out)
    data_files += _write_data(out, "curves", curve_rec)
    data_files += _write_data(out, "highest_matching", table)
    matrix_png, matrix_md, matrix_rec = _matrix_figures(ctx, out)
    data_files += _write_data(out, "transfer_matrix", matrix_rec)
    data_files += _write_data(out, "transfer_vs_own", [{**{k: v for k, v in r.items() if k != "levels"}, **lv}
                                                       for r in vs_own for lv in r["levels"]])
    layer_png, layer_md, layer_rec = _layer_figures(ctx, out)
    data_files += _write_data(out, "layer_sparsity", layer_rec)
    overlap_png, overlap_md, overlap_rec = _overlap_figures(ctx, out)
    data_files += _write_data(out, "overlap_iou", overlap_rec)

    lines = [f"# Study: {ctx['name']}", ""]
    if ctx["description"]:
        lines += [ctx["description"].strip(), ""]
    lines += ["## Setup", ""] + _setup_lines(ctx) + [""]
    findings = _findings(ctx, table, vs_own, overlap_rec)
    if findings:
        lines += ["## At a glance", ""] + findings + [""]

    lines += ["## Dense baselines", "",
              markdown_table(["model", "task", "training data", "metric", "mean ± sd (×100)", "seeds"],
                             [[m, t, _frac(f), rows_metric(rows, m, t), _pm(d.mean, d.std, rows_metric(rows, m, t)),
                               ", ".join(map(str, d.seeds))] for (m, t, f), d in sorted(dense.items())]), ""]

    lines += ["## Score vs sparsity", "",
              "Each panel is one task: the dense model (dashed line, grey band ±1 sd), tickets drawn on that task "
              "(solid) and tickets drawn on another task and transferred (dashed). Error bars: ±1 sd over seeds. "
              "Hollow markers are *not* matching.", ""] + curve_md + [""]
    tab = []
    for r in curve_rec:
        if r["ticket"] == "dense":
            continue
        d = dense.get((r["model"], r["target"], r["fraction"]))
        metric = rows_metric(rows, r["model"], r["target"])
        tab.append([r["target"], _frac(r["fraction"]), r["ticket"], _pct(r["sparsity"]),
                    _pm(r["mean"], r["std"], metric, r["n"]),
                    "" if d is None else f"{(r['mean'] - d.mean) * _scale(metric):+.1f}",
                    "yes" if r["matching"] else "no", "yes" if r["at_least_dense"] else "no"])
    lines += ["<details><summary>every point (table)</summary>", "",
              markdown_table(["task", "data", "ticket", "sparsity", "score mean ± sd", "Δ vs dense", "matching",
                              "≥ dense"], tab), "", "</details>", ""]

    lines += ["## Highest matching sparsity", "",
              "Per model × task × ticket kind: the largest sparsity at which the ticket is matching (within 1 sd of "
              "dense) and at least the dense mean; — means no tested sparsity qualifies.", "",
              markdown_table(["model", "task", "data", "ticket", "dense mean ± sd", "highest matching (1 sd)",
                              "score there", "highest ≥ dense", "score there", "tested up to"],
                             [[r["model"], r["target"], _frac(r["fraction"]),
                               _ticket_label(r["source"], r["target"], r["method"]),
                               "—" if r["dense"] is None else _pm(r["dense"]["mean"], r["dense"]["std"], r["metric"],
                                                                  r["dense"]["n"]),
                               _pct(r["within_1sd"] and r["within_1sd"]["sparsity"]),
                               "" if not r["within_1sd"] else _pm(r["within_1sd"]["score"]["mean"],
                                                                  r["within_1sd"]["score"]["std"], r["metric"]),
                               _pct(r["at_least_dense"] and r["at_least_dense"]["sparsity"]),
                               "" if not r["at_least_dense"] else _pm(r["at_least_dense"]["score"]["mean"],
                                                                      r["at_least_dense"]["score"]["std"],
                                                                      r["metric"]),
                               _pct(r["max_sparsity"])] for r in table]), ""]

    if matrix_md:
        lines += ["## Transfer matrix", "",
                  "Rows: the task a ticket was drawn on; columns: the task it was fine-tuned on. Each cell is the "
                  "mean test score over seeds; colour and the second number are the difference to the target's "
                  "dense mean (blue = better than dense); ✓ marks matching cells; the bold diagonal holds tickets "
                  "drawn on the target itself.", ""] + matrix_md + [""]
        if vs_own:
            lines += ["Transferred tickets minus the target's own tickets (same method, sparsity and data; "
                      "positive = the transferred ticket is better):", "",
                      markdown_table(["target", "data", "ticket from", "method"] +
                                     [f"{_pct(lv['sparsity'])}" for lv in vs_own[0]["levels"]] + ["better at"],
                                     [[v["target"], _frac(v["fraction"]), v["source"], v["method"]] +
                                      [f"{lv['diff'] * _scale(rows_metric(rows, v['model'], v['target'])):+.1f}"
                                       for lv in v["levels"]] +
                                      [f"{v['wins']}/{len(v['levels'])}"] for v in vs_own]), ""]
    if layer_md:
        lines += ["## Per-layer sparsity", "",
                  "Sparsity of each prunable tensor (pruned / weights of that tensor) in the tickets drawn by each "
                  "method on each task, mean over seeds; the dotted line is the overall sparsity of the prunable "
                  "set.", ""] + layer_md + [""]
    if overlap_md:
        lines += ["## Overlap between tickets", "",
                  "IoU = |kept ∩ kept′| / |kept ∪ kept′| over the prunable set, for tickets at the same sparsity. "
                  "Off-diagonal: two ticket kinds with the same seed (mean over seeds); diagonal: the same kind "
                  "drawn with different seeds. Two random masks of density d overlap by d / (2 − d) in "
                  "expectation (given in each panel's title).", ""] + overlap_md + [""]
    lines += ["## Files", "",
              "Data behind every figure and table (CSV and JSON): " + ", ".join(f"`{f}`" for f in data_files) + ".",
              f"Run directories: {len(ctx['configs'])} "
              f"({'listed in jobs.json' if (Path(directory) / 'jobs.json').exists() else 'in ' + str(directory)}); "
              "scores are `test` in each level's `metrics.json`.", ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    for png in curve_png + matrix_png + layer_png + overlap_png:
        assert (out / png).stat().st_size > 0
    return report


def rows_metric(rows: list[dict], model: str, target: str) -> str:
    return next((r["metric"] for r in rows if r["model"] == model and r["target"] == target), "accuracy")


__all__ = ["plot_sparsity_curves", "markdown_table", "write_report", "collect"]
