"""report.md: the setup, the story in a few bullets, tables, the figures, and the data files beside them.

``write_report(DIR)`` (``tickets report DIR``) reads the runs (collect.py), draws the figures (figures.py), writes
the data behind every figure and table as CSV + JSON (``tickets.fileio.write_rows``) and assembles ``report.md``:

* score vs sparsity per ticket kind (method × source task) with error bars over seeds, against the dense band;
* the highest matching sparsity table (both criteria, see ``tickets.study.matching``);
* the transfer matrix (source task → target task) as heatmaps, one panel per sparsity;
* per-layer sparsity of the tickets;
* the overlap (IoU of kept weights) between tickets drawn on different tasks / by different methods / seeds;
* when the study holds several sparsity patterns or robust tickets (``patterns.has_kinds``): score vs sparsity per
  pattern with standard and robust tickets side by side, robust − standard per pattern and target with a verdict,
  the highest matching sparsity per pattern × kind × target, robust accuracy on the source task, and score vs the
  latency ``benchmarks/compaction.py`` measured (its JSON, looked up by ``patterns.find_latency_file``).

``markdown_table`` is also ``tickets demo``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tickets.fileio import atomic_write_text, write_rows
from tickets.study.matching import (
    baseline_for,
    dense_baselines,
    higher_is_better,
    highest_matching_table,
    ticket_curves,
    transfer_vs_own,
)
from tickets.study.report.collect import collect
from tickets.study.report.figures import (
    curve_figures,
    latency_figures,
    layer_figures,
    matrix_figures,
    overlap_figures,
    pattern_figures,
)
from tickets.study.report.labels import (
    format_fraction,
    format_pct,
    format_pm,
    kind_order,
    pattern_name,
    score_scale,
    ticket_label,
)
from tickets.study.report.patterns import (
    find_latency_file,
    has_kinds,
    kind_parts,
    load_latency,
    pattern_summary,
    robust_vs_standard,
)

PRESET_TEXT = {
    "cnn": "every conv weight except the stem",
    "cnn-all": "every conv weight",
    "all": "every conv and linear weight",
    "bert": "Q, K, V, attention-out, FFN-in, FFN-out of every layer + pooler",
}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table: ``header`` cells, then one line per row; floats with 4 decimals."""

    def cell(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def rows_metric(rows: list[dict], model: str, target: str) -> str:
    """The metric of ``model`` on ``target`` in the score rows ("accuracy" when none is there)."""
    return next((r["metric"] for r in rows if r["model"] == model and r["target"] == target), "accuracy")


def _data_files(out: Path, stem: str, records: list[dict]) -> list[str]:
    """``out/stem.csv`` + ``out/stem.json`` of ``records`` (``tickets.fileio.write_rows``); their file names."""
    return [path.name for path in write_rows(records, out / stem)]


def _setup_lines(ctx: dict) -> list[str]:
    """The Setup section: models, tasks, seeds, methods, training, the sparsity denominator, matching, compute."""
    configs = ctx["configs"]
    rows = ctx["rows"]
    lines = []
    models = sorted({r["model"] for r in rows})
    tasks = sorted({r["target"] for r in rows})
    declared = list(ctx["seeds"] or [])
    others = sorted({r["seed"] for r in rows} - set(declared), key=str)
    one_set = not others and (ctx.get("file") or len(declared) <= 1)  # a study's seeds, no block adding its own
    seeds = (f"{', '.join(map(str, declared))}" + (f"; blocks with their own seeds add {', '.join(map(str, others))}"
                                                   if others else "")
             + (" (every mean ± sd is over these seeds; " if one_set else
                " (every mean ± sd is over the seeds of its runs, listed with each point; ")
             + "sd is the sample standard deviation)")
    lines.append(f"- **Models**: {', '.join(models)}. **Tasks**: {', '.join(tasks)}. **Seeds**: {seeds}.")
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
    lines += _setting_lines(ctx)
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
    train_seconds = sum(r.get("train_seconds", 0.0) for r in rows)
    compute = ctx.get("run_compute") or {}
    if compute:
        cpu = sum(c["cpu_seconds"] for c in compute.values())
        wall = sum(c["wall_seconds"] for c in compute.values())
        jobs = sum(c["jobs"] for c in compute.values())
        own = compute.get(Path(ctx["dir"]).name)
        by = ", ".join(f"{name} {c['jobs']} ({c['cpu_seconds'] / 3600:.2f} CPU-h)" for name, c in compute.items())
        where = ("all run by this study's own process" if own and len(compute) == 1 else
                 f"run by study folder (phases or other files sharing the runs): {by}")
        lines.append(f"- **Compute**: the study's runs took {cpu / 3600:.2f} CPU-hours (process CPU time) and "
                     f"{wall / 3600:.2f} h of job wall time over {jobs} finished jobs, {where}; the training "
                     f"loops of all runs the report reads (evaluation not counted) took "
                     f"{train_seconds / 3600:.2f} h wall.")
    else:
        lines.append(f"- **Compute**: fine-tuning in the runs read took {train_seconds / 3600:.2f} h wall.")
    return lines


def _setting_lines(ctx: dict) -> list[str]:
    """Setup bullets when runs differ in more than the seed: which settings the curves are split by (their labels
    name them in brackets), and the dense baselines that mix several settings."""
    lines = []
    settings = sorted({r["setting"] for r in ctx["rows"] if r.get("setting")})
    if settings:
        lines.append("- **Settings**: some runs differ in more than the seed, so their tickets are kept apart: each "
                     "such ticket kind is labelled with what sets it apart, in brackets — "
                     f"{'; '.join(f'[{s}]' for s in settings)}.")
    for d in ctx.get("mixed_dense", []):
        data = "" if d["fraction"] == 1.0 else f" ({d['fraction']:g} of the training data)"
        what = "adversarially fine-tuned dense" if d["kind"] == "dense-adversarial" else "dense"
        lines.append(f"- **Mixed dense baseline**: the {what} runs of {d['model']} on {d['target']}{data} differ in "
                     f"more than the seed ({'; '.join(d['settings'])}), so its baseline mixes settings: report each "
                     "setting's runs from a folder of their own to compare them with a baseline of their setting.")
    return lines


def _findings(ctx: dict, table: list[dict], vs_own: list[dict], overlap: list[dict]) -> list[str]:
    """The story in a few bullets: matching sparsities, methods compared, transfer vs own tickets, overlap."""
    lines = []
    by_task: dict[tuple, list[dict]] = {}
    for r in table:
        by_task.setdefault((r["model"], r["target"], r["fraction"]), []).append(r)
    for (model, target, fraction), recs in by_task.items():
        kinds = "; ".join(f"{ticket_label(r['source'], target, r['method'])} "
                          + ("no dense baseline" if r["dense"] is None else
                             f"**{format_pct(r['within_1sd'] and r['within_1sd']['sparsity'])}** / "
                             f"{format_pct(r['at_least_dense'] and r['at_least_dense']['sparsity'])}") for r in recs)
        data = "" if fraction == 1.0 else f" ({fraction:g} of the training data)"
        lines.append(f"- Highest matching sparsity on **{target}**{data} (within 1 sd / ≥ dense mean): {kinds}; "
                     f"tested up to {format_pct(max(r['max_sparsity'] for r in recs))}.")
    curves = ticket_curves(ctx["rows"])
    dense = dense_baselines(ctx["rows"])
    for (model, target, fraction), recs in by_task.items():
        own = [r for r in recs if r["source"] == target]
        if len(own) < 2:
            continue
        metric = own[0]["metric"]
        sc = score_scale(metric)
        # methods meet at equal sparsity (to 0.1%), not equal level numbers: one-shot runs with explicit levels
        # number them 1, 2, 3 where IMP's schedule reaches them at 3, 5, 7
        pts = {r["method"]: {round(p["sparsity"], 3): p
                             for p in curves[(model, target, fraction, target, r["method"])]} for r in own}
        levels = sorted(set.intersection(*(set(v) for v in pts.values())))
        if not levels:
            continue
        sign = 1 if higher_is_better(metric) else -1
        best = [max(pts, key=lambda m: sign * pts[m][lv]["score"].mean) for lv in levels]
        top = levels[-1]
        scores = ", ".join(f"{m} {pts[m][top]['score'].mean * sc:.1f}" for m in sorted(
            pts, key=lambda m: -sign * pts[m][top]["score"].mean))
        d = dense.get((model, target, fraction))  # shown for reference: the standard fine-tune's mean
        wins = ", ".join(f"{m} at {best.count(m)}" for m in sorted(set(best), key=lambda m: -best.count(m)))
        lines.append(f"- Methods on **{target}**: best at {len(levels)} sparsities — {wins}; at "
                     f"{format_pct(pts[own[0]['method']][top]['sparsity'])}: {scores}"
                     f"{'' if d is None else f' (dense {d.mean * sc:.1f})'}.")
    for v in vs_own:
        ahead = "higher" if v["mean_diff"] > 0 else "lower"
        data = "" if v["fraction"] == 1.0 else f" ({v['fraction']:g} of the training data)"
        scale = score_scale(rows_metric(ctx["rows"], v["model"], v["target"]))
        lines.append(f"- On **{v['target']}**{data}, {v['method']} tickets from **{v['source']}** scored {ahead} "
                     f"than {v['target']}'s own {v['method']} tickets on average ({v['mean_diff'] * scale:+.1f} "
                     f"points), better at {v['wins']} of {len(v['levels'])} sparsities.")
    groups: dict[str, list[dict]] = {}
    kinds = {f"{t['method']} on {t['source']}": (t["method"], t["source"]) for t in ctx["tickets"]}
    for r in overlap:
        if r["pairs"] != "same seed":
            continue
        (ma, sa), (mb, sb) = kinds[r["a"]], kinds[r["b"]]
        if ma == mb and sa != sb:
            groups.setdefault(f"{ma} tickets drawn on different tasks", []).append(r)
        elif sa == sb and ma != mb:
            pair = " and ".join(sorted((ma, mb), key=lambda m: kind_order(None, m)))
            groups.setdefault(f"{pair} tickets drawn on the same task", []).append(r)
    for what, recs in groups.items():
        lo, hi = min(r["iou"] for r in recs), max(r["iou"] for r in recs)
        rl, rh = min(r["random_expectation"] for r in recs), max(r["random_expectation"] for r in recs)
        span = f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}"
        rspan = f"{rl:.2f}" if f"{rl:.2f}" == f"{rh:.2f}" else f"{rl:.2f}–{rh:.2f}"
        lines.append(f"- Overlap: {what} share IoU {span} of their kept weights at "
                     f"{format_pct(min(r['sparsity'] for r in recs))}–{format_pct(max(r['sparsity'] for r in recs))} "
                     f"sparsity (two random masks: {rspan}).")
    return lines


def _signed(x: float, metric: str) -> str:
    return f"{x * score_scale(metric):+.2f}"


def pattern_headlines(summary: list[dict], metric_of) -> list[str]:
    """One bullet per pattern: do robust tickets transfer better at this scale? (``pattern_summary`` records)."""
    lines = []
    for p in summary:
        metric = metric_of(p)
        per = "; ".join(f"{t['target']} {_signed(t['mean_diff'], metric)} ({t['robust_wins']}–{t['standard_wins']})"
                        for t in p["targets"])
        se = "" if p["se"] is None else f", standard error {p['se'] * score_scale(metric):.2f}"
        answer = {"robust ahead": "**yes**", "standard ahead": "**no — standard tickets transfer better**",
                  "no clear difference": "**not measurably**"}[p["verdict"]]
        data = "" if p["fraction"] == 1.0 else f", {p['fraction']:g} of the data"
        ties = f", {p['ties']} ties" if p["ties"] else ""
        if p["same_ticket"]:
            ties += f" ({p['same_ticket']} cells are one run: both kinds drew the same mask)"
        lines.append(f"- **{pattern_name(p['pattern'])}** ({p['method']}{data}): do robust tickets transfer better? "
                     f"{answer}: robust − standard {_signed(p['mean_diff'], metric)} points on average over {p['n']} "
                     f"paired cells (targets × levels × seeds{se}); robust better in {p['robust_wins']}, standard in "
                     f"{p['standard_wins']}{ties}. Per target (mean, robust–standard wins): {per}.")
    return lines


def _pattern_section(ctx: dict, out: Path, latency_file: Path | None) -> tuple[list[str], list[str], list[str],
                                                                              list[str]]:
    """The patterns section: (markdown lines, PNG names, data file names, headline bullets)."""
    rows = ctx["rows"]
    pngs, data_files = [], []
    records = robust_vs_standard(rows)
    summary = pattern_summary(records)
    fig_png, fig_md, fig_rec = pattern_figures(ctx, out)
    pngs += fig_png
    data_files += _data_files(out, "pattern_curves", fig_rec)
    data_files += _data_files(out, "robust_vs_standard", [{**{k: v for k, v in r.items() if k != "cells"}, **c}
                                                          for r in records for c in r["cells"]])
    data_files += _data_files(out, "pattern_summary", [{k: v for k, v in r.items() if k != "targets"}
                                                       for r in summary])

    def metric_of(rec: dict) -> str:
        return next((r["metric"] for r in rows if r["model"] == rec["model"]), "accuracy")

    headlines = pattern_headlines(summary, metric_of)
    lines = ["## Sparsity patterns: standard vs robust tickets", "",
             "Tickets of each pattern, drawn by plain IMP (*standard*) and by IMP under adversarial training "
             "(*robust*), scored on every task. Robust − standard is taken in paired cells: the same schedule "
             "position and the i-th fine-tuning seed of each kind (transfers share their seeds); positive = the "
             "robust ticket is better. A verdict needs the mean difference beyond two standard errors (cells of one "
             "IMP lineage are correlated, so this is a rough guide). On the task the tickets were drawn on, robust "
             "tickets were themselves trained adversarially, so their clean score there is not a transfer "
             "result.", ""]
    if headlines:
        lines += ["**Do robust tickets transfer better?**", ""] + headlines + [""]
    lines += fig_md + [""]
    tab = []
    for r in records:
        tab.append([r["model"], pattern_name(r["pattern"]), r["method"],
                    r["target"] + (" (own task)" if r["own_task"] else ""), format_fraction(r["fraction"]),
                    r["n"], _signed(r["mean_diff"], r["metric"]), f"{r['sd'] * score_scale(r['metric']):.2f}",
                    f"{r['robust_wins']} / {r['standard_wins']} / {r['ties']}", r["same_ticket"], r["verdict"]])
    if tab:
        lines += ["Robust − standard per pattern and task (points; mean and sd over cells = levels × seeds):", "",
                  markdown_table(["model", "pattern", "method", "task", "data", "cells", "mean", "sd",
                                  "robust / standard wins / ties", "same mask", "verdict"], tab), ""]
    parts = kind_parts(rows)
    table = [r for r in highest_matching_table(rows) if r["method"] in parts and "adv-ft" not in r["method"]]
    if table:
        lines += ["Highest matching sparsity per pattern × kind × task (within 1 sd of dense / at least the dense "
                  "mean; — none):", "",
                  markdown_table(["model", "pattern", "kind", "task", "data", "highest matching (1 sd)",
                                  "highest ≥ dense", "tested up to"],
                                 [[r["model"], pattern_name(parts[r["method"]][1]),
                                   f"{'robust' if parts[r['method']][2] else 'standard'} {parts[r['method']][0]}",
                                   r["target"] + ("" if r["source"] != r["target"] else " (own task)"),
                                   format_fraction(r["fraction"]),
                                   format_pct(r["within_1sd"] and r["within_1sd"]["sparsity"]),
                                   format_pct(r["at_least_dense"] and r["at_least_dense"]["sparsity"]),
                                   format_pct(r["max_sparsity"])]
                                  for r in sorted(table, key=lambda r: (r["model"], r["target"] != r["source"],
                                                                        r["target"], parts[r["method"]][1] !=
                                                                        "unstructured", parts[r["method"]][1],
                                                                        parts[r["method"]][2]))]), ""]
    ra = [r for r in fig_rec if r["robust_accuracy"] is not None]
    if ra:
        lines += ["Robust accuracy on the task the tickets were drawn on (robust_eval after each find level; clean "
                  "= the level's test score):", "",
                  markdown_table(["model", "pattern", "kind", "task", "sparsity", "clean", "robust"],
                                 [[r["model"], pattern_name(r["pattern"]), f"{r['kind']} {r['method']}",
                                   r["target"], format_pct(r["sparsity"]),
                                   f"{100 * r['mean']:.1f}", f"{100 * r['robust_accuracy']:.1f}"] for r in ra]), ""]
    latency = None
    if latency_file is not None:
        try:
            latency = load_latency(latency_file)
        except (OSError, ValueError) as exc:
            lines += [f"Score vs latency: the compaction benchmark's file {latency_file} could not be read ({exc}).",
                      ""]
    lat_png, lat_md, lat_rec = latency_figures(ctx, out, latency)
    pngs += lat_png
    if lat_rec:
        data_files += _data_files(out, "score_vs_latency", lat_rec)
    lines += ["### Score vs measured latency", ""]
    if latency is None and latency_file is None:
        lines += ["No latencies: the compaction benchmark's JSON was not found (run `python benchmarks/"
                  "compaction.py --json DIR/compaction.json` and put it beside this report, or set "
                  "$TICKETS_LATENCY_JSON).", ""]
    elif latency is not None and not lat_md:
        lines += [f"The compaction benchmark ({latency_file.name}) measured none of this study's models and "
                  "patterns.", ""]
    elif latency is not None:
        meta = latency.get("meta", {})
        command = f", run as `{meta['command']}`" if meta.get("command") else ""
        lines += [f"Latencies from `{latency_file.name}` (benchmarks/compaction.py{command}): the median over "
                  "interleaved rounds "
                  "of the deployable model's time over the dense model's, measured on CPU — channel tickets "
                  "compacted (pruned channels removed), unstructured and 2:4 tickets as masked models (no CPU "
                  "kernel skips their zeros). A ticket's latency is interpolated linearly in sparsity between the "
                  "benchmark's measured tickets (dense = 1).", ""] + lat_md + [""]
        seen, tab = set(), []
        for r in sorted(lat_rec, key=lambda r: (r["model"], r["pattern"] != "unstructured", r["pattern"],
                                                r["sparsity"])):
            key = (r["model"], r["pattern"], round(r["sparsity"], 3))
            if key in seen or r["relative_latency_eager_b64_t1"] is None:
                continue
            seen.add(key)
            tab.append([r["model"], pattern_name(r["pattern"]), format_pct(r["sparsity"])] +
                       ["—" if r[f"relative_latency_{k}"] is None else f"{r[f'relative_latency_{k}']:.2f}"
                        for k in ("eager_b64_t1", "onnxruntime_b64_t1", "eager_b1_t1", "onnxruntime_b1_t1")])
        lines += [markdown_table(["model", "pattern", "ticket sparsity", "eager b64", "onnxruntime b64", "eager b1",
                                  "onnxruntime b1"], tab), "",
                  "(latency / dense latency, 1 thread; < 1 is faster)", ""]
    return lines, pngs, data_files, headlines


def write_report(directory: str | Path, *, to: str | Path | None = None, latency: str | Path | None = None) -> Path:
    """Write ``report.md`` + PNGs + CSV/JSON for the study or runs in ``directory`` (into ``to`` if given).

    ``latency``: the compaction benchmark's JSON for the score-vs-latency figure of a patterns study; default: the
    first of $TICKETS_LATENCY_JSON, ``to/compaction.json`` and ``directory/compaction.json`` that exists."""
    ctx = collect(directory)
    out = Path(to) if to else Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = ctx["rows"]
    table = highest_matching_table(rows)
    vs_own = transfer_vs_own(rows)
    dense, adv_dense = dense_baselines(rows), dense_baselines(rows, adversarial=True)

    data_files = _data_files(out, "scores", [{k: r.get(k) for k in ("model", "kind", "source", "method", "target",
                                                                    "fraction", "level", "sparsity", "seed", "metric",
                                                                    "score", "train_size", "run", "base_method",
                                                                    "pattern", "robust", "robust_accuracy")}
                                             for r in rows])
    curve_png, curve_md, curve_rec = curve_figures(ctx, out)
    data_files += _data_files(out, "curves", curve_rec)
    data_files += _data_files(out, "highest_matching", table)
    matrix_png, matrix_md, matrix_rec = matrix_figures(ctx, out)
    data_files += _data_files(out, "transfer_matrix", matrix_rec)
    data_files += _data_files(out, "transfer_vs_own", [{**{k: v for k, v in r.items() if k != "levels"}, **lv}
                                                       for r in vs_own for lv in r["levels"]])
    layer_png, layer_md, layer_rec = layer_figures(ctx, out)
    data_files += _data_files(out, "layer_sparsity", layer_rec)
    overlap_png, overlap_md, overlap_rec = overlap_figures(ctx, out)
    data_files += _data_files(out, "overlap_iou", overlap_rec)

    pattern_lines, pattern_png, headlines = [], [], []
    if has_kinds(rows):
        latency_file = find_latency_file(latency, out, directory)
        pattern_lines, pattern_png, pattern_data, headlines = _pattern_section(ctx, out, latency_file)
        data_files += pattern_data

    lines = [f"# Study: {ctx['name']}", ""]
    if ctx["description"]:
        lines += [ctx["description"].strip(), ""]
    lines += ["## Setup", ""] + _setup_lines(ctx) + [""]
    findings = _findings(ctx, table, vs_own, overlap_rec) + [
        h.replace("- **", "- Patterns, **", 1) for h in headlines]
    if findings:
        lines += ["## At a glance", ""] + findings + [""]

    lines += ["## Dense baselines", "",
              markdown_table(["model", "task", "training data", "fine-tuning", "metric", "mean ± sd (×100)", "seeds"],
                             [[m, t, format_fraction(f), how, rows_metric(rows, m, t),
                               format_pm(d.mean, d.std, rows_metric(rows, m, t)), ", ".join(map(str, d.seeds))]
                              for how, baselines in (("standard", dense), ("adversarial", adv_dense))
                              for (m, t, f), d in sorted(baselines.items())]), ""]

    lines += ["## Score vs sparsity", "",
              "Each panel is one task: the dense model (dashed line, grey band ±1 sd), tickets drawn on that task "
              "(solid) and tickets drawn on another task and transferred (dashed). Error bars: ±1 sd over seeds. "
              "Hollow markers are *not* matching.", ""] + curve_md + [""]
    tab = []
    verdict = {True: "yes", False: "no", None: "— (no dense baseline)"}
    for r in curve_rec:
        if r["ticket"] in ("dense", "dense adv-ft"):  # the dense baselines themselves
            continue
        d = baseline_for(r["method"], (r["model"], r["target"], r["fraction"]), dense, adv_dense)
        metric = rows_metric(rows, r["model"], r["target"])
        tab.append([r["target"], format_fraction(r["fraction"]), r["ticket"], format_pct(r["sparsity"]),
                    format_pm(r["mean"], r["std"], metric, r["n"]),
                    "" if d is None else f"{(r['mean'] - d.mean) * score_scale(metric):+.1f}",
                    verdict[r["matching"]], verdict[r["at_least_dense"]]])
    lines += ["<details><summary>every point (table)</summary>", "",
              markdown_table(["task", "data", "ticket", "sparsity", "score mean ± sd", "Δ vs dense", "matching",
                              "≥ dense"], tab), "", "</details>", ""]

    lines += ["## Highest matching sparsity", "",
              "Per model × task × ticket kind: the largest sparsity at which the ticket is matching (within 1 sd of "
              "dense) and at least the dense mean; — means no tested sparsity qualifies.", "",
              markdown_table(["model", "task", "data", "ticket", "dense mean ± sd", "highest matching (1 sd)",
                              "score there", "highest ≥ dense", "score there", "tested up to"],
                             [[r["model"], r["target"], format_fraction(r["fraction"]),
                               ticket_label(r["source"], r["target"], r["method"]),
                               "—" if r["dense"] is None else format_pm(r["dense"]["mean"], r["dense"]["std"],
                                                                         r["metric"], r["dense"]["n"]),
                               format_pct(r["within_1sd"] and r["within_1sd"]["sparsity"]),
                               "" if not r["within_1sd"] else format_pm(r["within_1sd"]["score"]["mean"],
                                                                        r["within_1sd"]["score"]["std"], r["metric"]),
                               format_pct(r["at_least_dense"] and r["at_least_dense"]["sparsity"]),
                               "" if not r["at_least_dense"] else format_pm(r["at_least_dense"]["score"]["mean"],
                                                                            r["at_least_dense"]["score"]["std"],
                                                                            r["metric"]),
                               format_pct(r["max_sparsity"])] for r in table]), ""]

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
                                     [f"{format_pct(lv['sparsity'])}" for lv in vs_own[0]["levels"]] + ["better at"],
                                     [[v["target"], format_fraction(v["fraction"]), v["source"], v["method"]] +
                                      [f"{lv['diff'] * score_scale(rows_metric(rows, v['model'], v['target'])):+.1f}"
                                       for lv in v["levels"]] +
                                      [f"{v['wins']}/{len(v['levels'])}"] for v in vs_own]), ""]
    lines += pattern_lines
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
    degenerate = [r for r in rows if r.get("degenerate")]
    if degenerate:
        lines += ["## Degenerate fine-tunes", "",
                  "These runs ended predicting (almost) a single class on the test split: their scores are a "
                  "majority-class baseline, not a measure of the ticket. They are included in the figures above; "
                  "read them as failures to train.", "",
                  markdown_table(["run", "kind", "target", "ticket", "sparsity", "seed", "verdict"],
                                 [[r["run"], r["kind"], r["target"], f"{r.get('source') or '-'} {r.get('method') or ''}",
                                   format_pct(r["sparsity"]), r["seed"], r["degenerate"]] for r in degenerate]), ""]
    lines += ["## Files", "",
              "Data behind every figure and table (CSV and JSON): " + ", ".join(f"`{f}`" for f in data_files) + ".",
              f"Run directories: {len(ctx['configs'])} "
              f"({'listed in jobs.json' if (Path(directory) / 'jobs.json').exists() else 'in ' + str(directory)}); "
              "scores are `test` in each level's `metrics.json`."]
    if ctx["repeats"]:
        lines.append("Repeated runs (the same config and seed as a run read here) are read once: "
                     + ", ".join(f"{a} (read: {b})" for a, b in sorted(ctx["repeats"].items())) + ".")
    lines.append("")
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    for png in curve_png + matrix_png + layer_png + overlap_png + pattern_png:
        assert (out / png).stat().st_size > 0
    return report
