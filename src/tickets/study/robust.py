"""Robust tickets: double-win tickets and standard-vs-robust ticket transfer, read from finished transfer runs.

A transfer run (``OUT/transfer-<hash>/``) is one (ticket or dense) × target task × seed × training regime:
*standard* fine-tuning, or *adversarial* fine-tuning (``train.adversarial`` set). Its ``level-00/metrics.json``
holds the clean test score (SA) and, when run with ``--robust-eval``, the robust score (RA).

**Matching** (as in the studies issue): a ticket matches the dense model on a score when the ticket's mean over
seeds is at least the dense mean minus one (sample, ddof = 1) standard deviation of the dense scores over seeds
(``rule="std"``), or at least the dense mean (``rule="mean"``, stricter). With one dense seed the std is 0.

**Double-win** (Chen et al., ICML 2022): a ticket is double-win at a sparsity on a task when it matches the dense
model on SA *and* RA under *both* standard and adversarial transfer. Missing evidence (no adversarial runs, no
robust evaluation) makes the verdict unknown (``None``), never a silent yes or no.

Only the generic analysis lives here (reading runs, verdicts, tables, the comparison plot); the robust-tickets
study's own report (which find runs, which setup, its costs) is ``examples/robust_tickets_report.py``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from tickets.errors import TicketsError
from tickets.fileio import atomic_write, atomic_write_text, flatten, read_json, write_rows
from tickets.runs import TICKET_FILE, config_hash
from tickets.study.matching import Stat, at_least_dense, is_matching
from tickets.study.report.collect import DEFAULT_PATTERN, pattern_spec, ticket_header, ticket_name
from tickets.study.report.labels import with_setting
from tickets.study.report.settings import run_setting, setting_labels

RULES = ("std", "mean")
REGIMES = ("standard", "adversarial")


# ----------------------------------------------------------------------------------------------------------------
# reading runs


def adversarial_label(adv: dict | None) -> str:
    """"standard" or e.g. "pgd-3 eps 2" / "fgsm eps 8" (budgets as configured, /255 for images)."""
    if not adv:
        return "standard"
    name = f"pgd-{adv.get('steps')}" if adv.get("attack", "pgd") == "pgd" else adv.get("attack", "?")
    return f"{name} eps {adv.get('eps'):g}"


def _ticket_adversarial(ticket: dict) -> dict | None:
    """How the ticket was drawn: from the transfer metrics, else from the ticket file's own metadata."""
    if "adversarial" in ticket:
        return ticket["adversarial"]
    path = ticket.get("path")
    if path and Path(path).is_file():
        from tickets.ticket import load_ticket

        return load_ticket(path).meta.get("adversarial")
    return None


def _drawn_by(root: Path) -> dict[str, dict]:
    """Mask checksum → the metadata (source_task, method, level, seed, adversarial, pattern, …) of the tickets of
    every find run under ``root``: who drew a ticket whose transfer recorded no source (an exported file), and its
    pattern (from the run's config when the ticket file records none)."""
    out: dict[str, dict] = {}
    patterns: dict[Path, Any] = {}  # find run → the pattern its config names (tickets that do not record one)
    for path in sorted(root.rglob(f"find-*/level-*/{TICKET_FILE}")):
        header = ticket_header(path)
        if not header.get("checksum"):
            continue
        if header.get("pattern") is None:
            run = path.parent.parent
            if run not in patterns:
                try:
                    patterns[run] = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("pattern")
                except (OSError, yaml.YAMLError, AttributeError):
                    patterns[run] = None
            header = {**header, "pattern": patterns[run]}
        out.setdefault(header["checksum"], header)
    return out


def _known_ticket(t: dict, checksum: str | None, drawn_by: dict[str, dict]) -> dict:
    """A transfer's ticket record completed from the find run that drew the ticket (``_drawn_by``): a ticket
    exported to another tool's format (``tickets export --to torch-prune``) records no source task, method or
    level. Without such a find run: source "external" (or the file's name) and method "ticket"."""
    known = drawn_by.get(checksum or "", {})
    out = dict(t)
    for key in ("source_task", "method", "level", "seed", "adversarial"):
        if out.get(key) is None and key in known:
            out[key] = known[key]
    out["source_task"] = out.get("source_task") or ticket_name(t)
    out["method"] = out.get("method") or "ticket"
    return out


def _ticket_pattern(t: dict, checksum: str | None, drawn_by: dict[str, dict]) -> str:
    """The pattern spec of a transfer's ticket: it is in the ticket file, not in the transfer's record of it — read
    from the find run under the root that drew it, else from the ticket file the record names (when it is still
    there), else "unstructured"."""
    meta = (drawn_by.get(checksum or "") or {}).get("pattern") or t.get("pattern")
    path = Path(str(t.get("path") or ""))
    if meta is None and t.get("path") and path.is_file():
        meta = ticket_header(path).get("pattern")
    return pattern_spec(meta)


def transfer_setup(config: dict) -> dict[str, Any]:
    """What must agree for transfer runs to be pooled over seeds and compared with a dense baseline in
    ``double_win``: the config's setting (``report.settings.run_setting``: training, data, head, weights, …, not the
    seed, task or ticket), without how adversarial training is set (that is the regime)."""
    return {k: v for k, v in run_setting(config, train_size=True).items() if not k.startswith("train.adversarial")}


def _with_setups(records: Sequence[dict]) -> list[dict]:
    """The records, each with ``setup``: what sets its ``transfer_setup`` apart from the other records' on its model
    and task ("limit 200"; "" when they all agree, ``report.settings.setting_labels``)."""
    by_task: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        by_task[(r["model"], r["task"])][r["path"]] = transfer_setup(r["config"])
    setups = {path: text for group in by_task.values() for path, text in setting_labels(group).items()}
    return [{**r, "setup": setups[r["path"]]} for r in records]


def collect_transfers(root: str | Path) -> list[dict]:
    """One record per finished transfer run under ``root`` (searched recursively).

    Keys: ``path, model, task, seed, regime ("standard" | "adversarial"), train_adv (label), sparsity, level,
    ticket (None for dense, else {checksum, source_task, method, level, seed, drawn: label, pattern: spec}; completed
    from the find run under ``root`` that drew it when the transfer recorded none, see ``_known_ticket``; the pattern
    comes from that run's ticket file, "unstructured" when no find run under ``root`` drew it), group (what seeds are
    pooled over: "dense" or "<source_task> <method> [<pattern>] <drawn>", the pattern named unless unstructured —
    channel and unstructured tickets of one level are never pooled), sa, ra (None without --robust-eval), robust
    (the attack settings), config``. A run found twice (the same config, seed included, under another folder or
    name) is listed once.
    """
    root = Path(root)
    if not root.is_dir():
        raise TicketsError(f"{root} is not a directory: pass the --out directory of your transfer runs")
    records = []
    drawn_by: dict[str, dict] | None = None  # read only when a transfer needs it
    for done in sorted(root.rglob("transfer-*/level-00/DONE")):
        run = done.parent.parent
        try:
            config = yaml.safe_load((run / "config.yaml").read_text())
            m = read_json(done.parent / "metrics.json")
        except (OSError, ValueError, yaml.YAMLError):
            continue  # a damaged run is skipped, not fatal
        adv = (config.get("train") or {}).get("adversarial")
        t = m.get("ticket")
        ticket = None
        if t is not None:
            drawn_by = _drawn_by(root) if drawn_by is None else drawn_by
            checksum = (config.get("ticket") or {}).get("checksum") or t.get("checksum")
            if not (t.get("source_task") and t.get("method")):
                t = _known_ticket(t, checksum, drawn_by)
            drawn = adversarial_label(_ticket_adversarial(t))
            pattern = _ticket_pattern(t, checksum, drawn_by)
            ticket = {"checksum": t.get("checksum"), "source_task": t.get("source_task"), "method": t.get("method"),
                      "level": t.get("level"), "seed": t.get("seed"), "drawn": drawn, "pattern": pattern}
        robust = m.get("robust")
        records.append({
            "path": str(run),
            "model": config.get("model"),
            "task": m.get("task", config.get("task")),
            "seed": m.get("seed", config.get("seed")),
            "regime": "adversarial" if adv else "standard",
            "train_adv": adversarial_label(adv),
            "sparsity": float(m.get("sparsity", 0.0)),
            "level": None if ticket is None else ticket["level"],
            "ticket": ticket,
            "group": "dense" if ticket is None else " ".join(
                [ticket["source_task"], ticket["method"]]
                + ([] if ticket["pattern"] == DEFAULT_PATTERN else [ticket["pattern"]]) + [ticket["drawn"]]),
            "sa": m["test"][m["primary_metric"]],
            "ra": None if not robust else robust["robust_accuracy"],
            "robust": None if not robust else {k: robust[k] for k in ("attack", "eps", "alpha", "steps", "examples")},
            "config": config,
        })
    # a run copied in from another folder (the same config, seed included) is one measurement, counted once
    seen: set[str] = set()
    unique = []
    for r in records:
        key = config_hash(r["config"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


# ----------------------------------------------------------------------------------------------------------------
# statistics


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value), via ``matching.Stat``."""
    values = list(values)
    if not values:
        return math.nan, math.nan
    stat = Stat.of(values)
    return stat.mean, stat.std


def matches(ticket: Sequence[float], dense: Sequence[float], rule: str = "std") -> bool | None:
    """Does the ticket match the dense model (the rules of ``matching``)? ``None`` when either side is empty."""
    if rule not in RULES:
        raise TicketsError(f"matching rule must be one of {', '.join(RULES)}, got {rule!r}")
    ticket = [v for v in ticket if v is not None]
    dense = [v for v in dense if v is not None]
    if not ticket or not dense:
        return None
    criterion = is_matching if rule == "std" else at_least_dense
    return criterion(Stat.of(ticket).mean, Stat.of(dense))


def _groupby(records: Iterable[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        out[tuple(r[k] for k in keys)].append(r)
    return out


# ----------------------------------------------------------------------------------------------------------------
# double-win


def double_win(records: Sequence[dict], rule: str = "std") -> list[dict]:
    """One row per (model, task, ticket group, level, setup): SA/RA mean ± std under both regimes, the dense
    figures of the same setup, four matching verdicts and ``double_win`` (True / False / None when evidence is
    missing, see ``missing``). Runs of different setups (``transfer_setup``) are never pooled: a ticket row's
    ``ticket`` names its setup in brackets when its model and task have several among ``records`` ("cifar10 imp
    standard [limit 200]")."""
    if rule not in RULES:
        raise TicketsError(f"matching rule must be one of {', '.join(RULES)}, got {rule!r}")
    records = _with_setups(records)
    dense = _groupby([r for r in records if r["ticket"] is None], "model", "task", "regime", "setup")
    rows = []
    tickets = _groupby([r for r in records if r["ticket"] is not None], "model", "task", "group", "level", "setup")
    for (model, task, group, level, setup), runs in sorted(tickets.items(), key=lambda kv: tuple(map(str, kv[0]))):
        row: dict[str, Any] = {"model": model, "task": task, "ticket": with_setting(group, setup),
                               "level": level, "sparsity": statistics.fmean(r["sparsity"] for r in runs)}
        verdicts, missing = [], []
        for regime in REGIMES:
            mine = [r for r in runs if r["regime"] == regime]
            base = dense.get((model, task, regime, setup), [])
            for score in ("sa", "ra"):
                t_vals = [r[score] for r in mine if r[score] is not None]
                d_vals = [r[score] for r in base if r[score] is not None]
                key = f"{score}_{regime}"
                row[key] = mean_std(t_vals) + (len(t_vals),)
                row[f"dense_{key}"] = mean_std(d_vals) + (len(d_vals),)
                verdict = matches(t_vals, d_vals, rule)
                row[f"match_{key}"] = verdict
                verdicts.append(verdict)
                if verdict is None:
                    what = "runs" if not mine or not base else "--robust-eval"
                    side = "ticket" if not t_vals else "dense"
                    missing.append(f"{regime} {score.upper()}: no {side} {what}")
        row["double_win"] = None if None in verdicts and False not in verdicts else all(v is True for v in verdicts)
        row["missing"] = "; ".join(missing)
        rows.append(row)
    return rows


def highest_double_win(rows: Sequence[dict]) -> dict[tuple, float | None]:
    """(model, task, ticket group) → the highest sparsity at which the ticket is double-win (None: never)."""
    best: dict[tuple, float | None] = {}
    for r in rows:
        key = (r["model"], r["task"], r["ticket"])
        best.setdefault(key, None)
        if r["double_win"] is True and (best[key] is None or r["sparsity"] > best[key]):
            best[key] = r["sparsity"]
    return best


def format_stat(stat: tuple | None) -> str:
    """A ``(mean, std, n)`` of fractions as "mm.mm ± s.ss" (percent); "–" when n is 0 or the mean is missing."""
    if not stat or stat[2] == 0 or stat[0] is None or math.isnan(stat[0]):
        return "–"
    return f"{100 * stat[0]:.2f} ± {100 * stat[1]:.2f}"


def _yes(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def format_double_win(rows: Sequence[dict], rule: str = "std") -> str:
    """Markdown: per task and ticket, SA/RA (%, mean ± std over seeds) under both regimes and the verdict."""
    if not rows:
        return "no ticket transfer runs found (double-win needs transfer runs of tickets and of the dense model)\n"
    lines = [f"Double-win: matching = ticket mean ≥ dense mean{' − 1 std' if rule == 'std' else ''} over seeds, "
             "on SA and RA, under standard (std) and adversarial (adv) transfer.", "",
             "| task | ticket | sparsity | SA std | RA std | SA adv | RA adv | dense SA std | dense RA std | "
             "dense SA adv | dense RA adv | double-win |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        marks = [f"{format_stat(r[k])}{'' if r['match_' + k] is not False else ' ✗'}"
                 for k in ("sa_standard", "ra_standard", "sa_adversarial", "ra_adversarial")]
        dense = [format_stat(r["dense_" + k])
                 for k in ("sa_standard", "ra_standard", "sa_adversarial", "ra_adversarial")]
        lines.append(f"| {r['task']} | {r['ticket']} | {100 * r['sparsity']:.1f}% | " + " | ".join(marks) + " | "
                     + " | ".join(dense) + f" | {_yes(r['double_win'])} |")
    best = highest_double_win(rows)
    lines += ["", "Highest double-win sparsity:", ""]
    for (model, task, group), s in sorted(best.items(), key=lambda kv: tuple(map(str, kv[0]))):
        lines.append(f"- {model} → {task}, {group}: " + ("none" if s is None else f"{100 * s:.1f}%"))
    unknown = [r for r in rows if r["double_win"] is None]
    if unknown:
        lines += ["", f"? = not decidable: {unknown[0]['missing']} (and {len(unknown) - 1} more rows)"
                  if len(unknown) > 1 else f"? = not decidable: {unknown[0]['missing']}"]
    lines.append("✗ = does not match the dense model on that score.")
    return "\n".join(lines) + "\n"


def double_win_report(root: str | Path, rule: str = "std", out: str | Path | None = None) -> str:
    """The double-win table of every transfer run under ``root``; with ``out``, also ``out``.md/.csv/.json."""
    rows = double_win(collect_transfers(root), rule)
    text = format_double_win(rows, rule)
    if out is not None:
        stem = Path(out).with_suffix("")
        atomic_write_text(stem.with_suffix(".md"), text)
        write_rows([flatten(r) for r in rows], stem)  # (mean, std, n) → *_mean/_std/_n keys, in JSON as in CSV
    return text


# ----------------------------------------------------------------------------------------------------------------
# standard vs robust tickets (issue 4 §5)


def ticket_checksums(find_dir: str | Path) -> dict[str, int]:
    """checksum → level of every ticket of a find run."""
    from tickets.ticket import load_ticket

    from tickets.runs import RunLayout

    out = {}
    layout = RunLayout(find_dir)
    for path in (layout.ticket(i) for i in layout.levels() if layout.ticket(i).exists()):
        meta = load_ticket(path).meta
        out[meta["checksum"]] = int(meta["level"])
    return out


def has_setup(config: dict, setup: dict | None) -> bool:
    """Does a run's resolved config agree with every key of ``setup`` (nested; a None value = key absent/None)?"""
    for key, want in (setup or {}).items():
        have = config.get(key)
        if isinstance(want, dict):
            if not isinstance(have, dict) or not has_setup(have, want):
                return False
        elif have != want:
            return False
    return True


def setup_key(config: dict) -> str:
    """What must be equal for two transfer runs to be compared: training, data, head, init and robust eval."""
    keys = ("train", "data", "head", "init", "reverse", "robust_eval")
    return json.dumps({k: config.get(k) for k in keys}, sort_keys=True, default=str)


def compare_tickets(records: Sequence[dict], finds: dict[str, Sequence[str | Path]], *, regime: str = "standard",
                    rule: str = "std", setup: dict | None = None) -> list[dict]:
    """Transfer scores (SA) of each kind of ticket (``finds[kind]`` = its find run directories, one per seed) vs
    the dense model, per target task and level. Dense runs are those of the same model, task and regime; only
    runs whose config agrees with ``setup`` (e.g. ``{"data": {"train_size": 2000}, "robust_eval": None}``) count,
    so runs of other studies in the same folder never mix in."""
    records = [r for r in records if has_setup(r["config"], setup)]
    owner: dict[str, list[tuple[str, int]]] = defaultdict(list)  # identical masks share one transfer run
    for kind, dirs in finds.items():
        for d in dirs:
            for checksum, level in ticket_checksums(d).items():
                owner[checksum].append((kind, level))
    mine = [r for r in records if r["regime"] == regime and r["ticket"] and r["ticket"]["checksum"] in owner]
    if not mine:
        return []
    models = {r["model"] for r in mine}
    setups = {r["task"]: {setup_key(x["config"]) for x in mine if x["task"] == r["task"]} for r in mine}
    for task, keys in setups.items():
        if len(keys) > 1:
            raise TicketsError(f"the ticket transfers to {task} were run with {len(keys)} different training setups: "
                               "pass setup={...} (e.g. the train/data keys of one of them) to compare one at a time")
    dense = _groupby([r for r in records if r["ticket"] is None and r["regime"] == regime and r["model"] in models
                      and setup_key(r["config"]) in setups.get(r["task"], ())], "task")
    rows = []
    by = defaultdict(list)
    for r in mine:
        for kind, level in owner[r["ticket"]["checksum"]]:
            by[(r["task"], level, kind)].append(r)
    for task in sorted({k[0] for k in by}):
        d_sa = [r["sa"] for r in dense.get((task,), [])]
        for level in sorted({k[1] for k in by if k[0] == task}):
            row: dict[str, Any] = {"task": task, "level": level, "dense": mean_std(d_sa) + (len(d_sa),)}
            for kind in finds:
                runs = by.get((task, level, kind), [])
                vals = [r["sa"] for r in runs]
                row[kind] = mean_std(vals) + (len(vals),)
                row[f"{kind}_sparsity"] = statistics.fmean(r["sparsity"] for r in runs) if runs else math.nan
                row[f"{kind}_matches"] = matches(vals, d_sa, rule)
            rows.append(row)
    return rows


def plot_compare(rows: Sequence[dict], kinds: Sequence[str], path: str | Path, *, title: str) -> Path:
    """One panel per target task: transfer accuracy vs sparsity per ticket kind (error bars: std over seeds),
    the dense model as a dashed line with a ±1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.0), dpi=120, squeeze=False)
    colors = ["tab:blue", "tab:red", "tab:green", "tab:purple"]
    for ax, task in zip(axes[0], tasks):
        trows = [r for r in rows if r["task"] == task]
        xs_all = []
        for i, (color, kind) in enumerate(zip(colors, kinds)):
            pts = [(r[f"{kind}_sparsity"], r[kind]) for r in trows if r[kind][2]]
            if not pts:
                continue
            shift = 0.8 * (i - (len(kinds) - 1) / 2)  # side by side, so error bars do not hide each other
            xs = [100 * s + shift for s, _ in pts]
            xs_all += xs
            ax.errorbar(xs, [100 * v[0] for _, v in pts], yerr=[100 * v[1] for _, v in pts], marker="o",
                        capsize=3, color=color, label=f"{kind} tickets")
        d = trows[0]["dense"]
        if d[2]:
            ax.axhline(100 * d[0], color="black", ls="--", lw=1, label="dense (θ0, fine-tuned) ± 1 std")
            ax.axhspan(100 * (d[0] - d[1]), 100 * (d[0] + d[1]), color="grey", alpha=0.2, lw=0)
        ax.set_title(task)
        ax.set_xlabel("sparsity of the prunable set (%)")
        ax.set_ylabel("test accuracy after transfer (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def format_compare(rows: Sequence[dict], kinds: Sequence[str], rule: str = "std") -> str:
    """Markdown table of ``compare_tickets`` rows (accuracy %, mean ± std over seeds; * = matches dense)."""
    diff_head = f" {kinds[1]} − {kinds[0]} |" if len(kinds) >= 2 else ""
    head = "| target | level | sparsity | dense | " + " | ".join(kinds) + " |" + diff_head
    lines = [head, "|---|---:|---:|---:|" + "---:|" * len(kinds) + ("---:|" if diff_head else "")]
    for r in rows:
        cells = [f"{format_stat(r[k])}{' *' if r[f'{k}_matches'] else ''}" for k in kinds]
        diff = ""
        if len(kinds) >= 2 and r[kinds[0]][2] and r[kinds[1]][2]:
            diff = f"{100 * (r[kinds[1]][0] - r[kinds[0]][0]):+.2f}"
        sp = r[f"{kinds[0]}_sparsity"]
        lines.append(f"| {r['task']} | {r['level']} | {100 * sp:.1f}% | {format_stat(r['dense'])} | "
                     + " | ".join(cells) + " |" + (f" {diff} |" if diff_head else ""))
    lines.append("")
    lines.append(f"Accuracy in %, mean ± std (ddof 1) over seeds; * = matches the dense model "
                 f"({'within one std of the dense mean' if rule == 'std' else 'at least the dense mean'}).")
    return "\n".join(lines) + "\n"
