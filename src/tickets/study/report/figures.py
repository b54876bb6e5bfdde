"""Every figure of a report, drawn with matplotlib (Agg) and written atomically as PNG.

* ``plot_sparsity_curves``: score vs sparsity per method against the dense band (also ``tickets demo``'s figure);
* ``curve_figures``: score vs sparsity, one figure per model × data fraction, one panel per target task;
* ``matrix_figures``: transfer-matrix heatmaps (source task → target task), one panel per sparsity;
* ``layer_figures``: per-layer sparsity of the tickets;
* ``overlap_figures``: IoU of kept weights between ticket kinds and across seeds.

Each ``*_figures(ctx, out)`` takes ``collect``'s context, writes its PNGs into ``out`` and returns
``(file names, markdown image lines, data records)``; the records become the CSV/JSON beside the figure.
Colours and markers of ticket kinds are fixed here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from tickets.fileio import atomic_write
from tickets.study.matching import (
    baseline_for,
    dense_baselines,
    higher_is_better,
    is_adversarial_fine_tune,
    is_matching,
    ticket_curves,
    transfer_matrices,
)
from tickets.study.report.labels import kind_order, score_scale, score_unit, slug, ticket_label, with_setting

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf"]


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


def _grid_cols(n: int) -> int:
    """Columns for n panels: 2×2 for four, otherwise up to three a row."""
    return 2 if n == 4 else min(3, n)


def curve_figures(ctx: dict, out: Path) -> tuple[list[str], list[str], list[dict]]:
    """Score vs sparsity: one figure per model × data fraction, one panel per target task."""
    rows = ctx["rows"]
    dense, adv_dense = dense_baselines(rows), dense_baselines(rows, adversarial=True)
    curves = ticket_curves(rows)
    records: list[dict] = []
    files: list[str] = []
    md: list[str] = []
    groups: dict[tuple, list[str]] = {}
    for (model, target, fraction, source, method) in curves:
        groups.setdefault((model, fraction), [])
        if target not in groups[(model, fraction)]:
            groups[(model, fraction)].append(target)
    for ticket, baselines in (("dense", dense), ("dense adv-ft", adv_dense)):
        for (model, target, fraction), d in baselines.items():
            records.append({"model": model, "target": target, "fraction": fraction, "ticket": ticket,
                            "source": None, "method": None, "level": 0, "sparsity": 0.0, "mean": d.mean,
                            "std": d.std, "n": d.n, "seeds": d.seeds, "matching": None, "at_least_dense": None})
    kinds = sorted({(k[3], k[4]) for k in curves}, key=lambda sm: kind_order(*sm))
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
                s = score_scale(metric)
                higher = higher_is_better(metric)
                label = ticket_label(source, target, method)
                b = baseline_for(method, (model, target, fraction), dense, adv_dense)  # adv-ft: its own dense
                series[label] = [(p["sparsity"], p["score"].mean * s, p["score"].std * s,
                                  None if b is None else is_matching(p["score"].mean, b, higher)) for p in pts]
                own = source == target
                styles[label] = dict(color=_COLOURS[kinds.index((source, method)) % len(_COLOURS)],
                                     ls="-" if own else "--", marker="o" if own else "s")
                for p in pts:
                    records.append({"model": model, "target": target, "fraction": fraction, "ticket": label,
                                    "source": source, "method": method, "level": p["level"],
                                    "sparsity": p["sparsity"], "mean": p["score"].mean, "std": p["score"].std,
                                    "n": p["score"].n, "seeds": p["score"].seeds,
                                    "matching": None if b is None else is_matching(p["score"].mean, b, higher),
                                    "at_least_dense": None if b is None else (
                                        p["score"].mean >= b.mean if higher else p["score"].mean <= b.mean)})
            s = score_scale(metric or "accuracy")
            _draw_curves(ax, series, None if d is None else (d.mean * s, d.std * s), styles,
                         dense_label="dense θ0, fine-tuned (±1 sd)")
            _density_axis(ax, [p[0] for pts in series.values() for p in pts])
            ax.set_title(f"{target}", fontsize=10)
            ax.set_ylabel(score_unit(metric or "accuracy"), fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        seeds = sorted({sd for k, pts in curves.items() if k[0] == model for p in pts for sd in p["score"].seeds})
        fig.suptitle(f"{model}: test score vs sparsity, mean ± sd over seeds {', '.join(map(str, seeds))}"
                     f"{_of_data(fraction)}\n"
                     "hollow marker = not matching (below dense mean − 1 sd); dashed = ticket transferred from "
                     "another task", fontsize=9)
        fig.tight_layout()
        name = f"curves-{slug(model, _fraction_tag(fraction))}.png"
        alt = f"score vs sparsity, {model}{'' if fraction == 1.0 else f', fraction {fraction:g}'}"
        _emit(fig, out, name, alt, files, md)
    return files, md, records


def matrix_figures(ctx: dict, out: Path) -> tuple[list[str], list[str], list[dict]]:
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
        sources += sorted({s for m in levels for s in m["sources"]} - set(sources), key=str)
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
        s = score_scale(metric)
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
                     f"fine-tuned on (columns){_of_data(fraction)}\n"
                     f"cell: mean test {metric}{' (%)' if s == 100 else ''} over seeds, below it Δ vs that task's "
                     "dense mean; ✓ matching (within 1 sd of dense); bold: drawn on the target itself", fontsize=8.5)
        name = f"transfer-matrix-{slug(model, method, _fraction_tag(fraction))}.png"
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


def _of_data(fraction: float, what: str = "training data") -> str:
    """Title suffix for a run on part of the training data ("" for all of it)."""
    return "" if fraction == 1.0 else f", {fraction:g} of the {what}"


def _fraction_tag(fraction: float) -> str:
    """File-name part for a run on part of the training data ("" for all of it)."""
    return "" if fraction == 1.0 else f"f{fraction:g}"


def _tickets_by_model(ctx: dict) -> list[tuple[str, list[dict], list[tuple[str, str]]]]:
    """(model, its tickets, their (source, method) kinds — IMP first) per model of the study (figures pair the
    tickets by sparsity, not by level number)."""
    by_model: dict[str, list[dict]] = {}
    for t in ctx["tickets"]:
        by_model.setdefault(t["model"], []).append(t)
    return [(model, tickets, sorted({(t["source"], t["method"]) for t in tickets}, key=lambda sm: kind_order(*sm)))
            for model, tickets in by_model.items()]


def layer_figures(ctx: dict, out: Path) -> tuple[list[str], list[str], list[dict]]:
    """Per-layer sparsity of the tickets (mean over seeds): one figure per model, one panel per sparsity.

    Tickets share a panel by sparsity (to 0.1%), not by level number, as in ``overlap_figures``: a one-shot run's
    level 3 of explicit 30/50/70% levels is 70%, IMP's level 3 of the BERT schedule 30%. A record's ``level`` is the
    lowest level number among the tickets of its panel."""
    files, md, records = [], [], []
    plt = _plt()
    for model, tickets, kinds in _tickets_by_model(ctx):
        names: list[str] | None = None
        data: dict[tuple, dict[str, list[float]]] = {}  # (panel sparsity, source, method) → tensor → values
        sizes: dict[str, int] = {}
        overall: dict[float, list[float]] = {}
        panels: dict[float, int] = {}  # panel sparsity → the lowest level number in it (for the records)
        for key in sorted({round(t["sparsity"], 3) for t in tickets}):
            at = [t for t in tickets if round(t["sparsity"], 3) == key]
            panels[key] = min(t["level"] for t in at)
            masks = _load_masks([t["path"] for t in at])
            for t in at:
                mask = masks[t["path"]]
                names = names or mask.names
                sizes = sizes or {n: mask[n].numel() for n in mask.names}
                per = mask.per_tensor_sparsity()
                overall.setdefault(key, []).append(mask.sparsity)
                for n, v in per.items():
                    data.setdefault((key, t["source"], t["method"]), {}).setdefault(n, []).append(v)
        if not names:
            continue
        short = _short_names(names)
        for (key, source, method), per in data.items():
            for n, sh in zip(names, short):
                vals = per.get(n, [])
                if vals:
                    records.append({"model": model, "level": panels[key], "source": source, "method": method,
                                    "tensor": n, "weights": sizes[n], "sparsity": sum(vals) / len(vals),
                                    "n": len(vals)})
        nrows = len(panels)  # one panel per sparsity
        fig, axes = plt.subplots(nrows, 1, figsize=(max(7.5, 0.3 * len(names) + 2.5), 2.0 * nrows + 1.6), dpi=110,
                                 squeeze=False, sharex=True)
        xs = list(range(len(names)))
        for ax, key in zip(axes[:, 0], panels):
            for i, (source, method) in enumerate(kinds):
                per = data.get((key, source, method))
                if not per:
                    continue
                ys = [100 * sum(per[n]) / len(per[n]) for n in names]
                # widest first, so lines of identical masks stay visible as nested bands
                ax.plot(xs, ys, marker=_MARKERS[i % len(_MARKERS)], ms=4 + 0.5 * (len(kinds) - i), mfc="none",
                        lw=1.0 + 3.5 * (len(kinds) - 1 - i) / max(1, len(kinds) - 1), alpha=0.8,
                        color=_COLOURS[i % len(_COLOURS)],
                        ls="-" if method == "imp" else ("--" if method == "omp" else ":"),
                        label=f"{method} on {source}")
            target = 100 * sum(overall[key]) / len(overall[key])
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
        name = f"layer-sparsity-{slug(model)}.png"
        _emit(fig, out, name, f"per-layer sparsity, {model}", files, md)
    return files, md, records


def overlap_figures(ctx: dict, out: Path) -> tuple[list[str], list[str], list[dict]]:
    """IoU of kept weights between ticket kinds at the same sparsity (same seed), and across seeds (diagonal).

    Tickets are paired by sparsity (to 0.1%), not by level number: IMP's level 5 (50%) meets OMP's level 1 when
    OMP's explicit levels are 30/50/70%. A record's ``level`` is the lowest level number among the paired tickets."""
    import numpy as np

    files, md, records = [], [], []
    plt = _plt()
    for model, tickets, kinds in _tickets_by_model(ctx):
        if len(kinds) < 2 and len({t["seed"] for t in tickets}) < 2:
            continue
        labels = [f"{m} on {s}" for s, m in kinds]
        panels = []
        for key in sorted({round(t["sparsity"], 3) for t in tickets}):
            at = [t for t in tickets if round(t["sparsity"], 3) == key]
            level = min(t["level"] for t in at)
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
        name = f"overlap-{slug(model)}.png"
        _emit(fig, out, name, f"ticket overlap, {model}", files, md)
    return files, md, records


# ----------------------------------------------------------------------------------------------------------------
# sparsity patterns: standard vs robust tickets, score vs measured latency
# ----------------------------------------------------------------------------------------------------------------
_KIND_STYLE = {False: dict(color="#1f77b4", ls="-", marker="o"), True: dict(color="#d62728", ls="--", marker="s")}


def _targets_in_order(rows: list[dict], model: str) -> list[str]:
    """Source tasks (tickets drawn there) first, then the other targets by name."""
    sources = {r["source"] for r in rows if r["model"] == model and r["kind"] == "find"}
    targets = {r["target"] for r in rows if r["model"] == model and r["kind"] in ("find", "transfer")}
    return sorted(targets, key=lambda t: (t not in sources, t))


def pattern_figures(ctx: dict, out: Path) -> tuple[list[str], list[str], list[dict]]:
    """Score vs sparsity per pattern (rows) and target task (columns), standard vs robust tickets side by side:
    one figure per model × data fraction. Records: one per curve point (kind "standard" | "robust")."""
    from tickets.study.report.labels import pattern_name
    from tickets.study.report.patterns import kind_parts, patterns_in

    rows = ctx["rows"]
    dense = dense_baselines(rows)
    adv_dense = dense_baselines(rows, adversarial=True)
    curves = ticket_curves(rows)
    parts = kind_parts(rows)
    robust_acc: dict[tuple, list[float]] = {}
    for r in rows:
        if r["kind"] == "find" and r.get("robust_accuracy") is not None:
            robust_acc.setdefault((r["model"], r["method"], r["fraction"], r["level"]), []).append(
                r["robust_accuracy"])
    files, md, records = [], [], []
    plt = _plt()
    for model, fraction in sorted({(k[0], k[2]) for k in curves}, key=lambda mf: (mf[0], -mf[1])):
        mrows = [r for r in rows if r["model"] == model]
        pats = patterns_in(mrows)
        targets = _targets_in_order(mrows, model)
        fig, axes = plt.subplots(len(pats), len(targets), figsize=(3.9 * len(targets), 3.1 * len(pats)),
                                 dpi=110, squeeze=False)
        for i, pattern in enumerate(pats):
            for j, target in enumerate(targets):
                ax = axes[i, j]
                d = dense.get((model, target, fraction))
                series, styles, metric = {}, {}, None
                for (m_, t_, f_, source, label), pts in curves.items():
                    if (m_, t_, f_) != (model, target, fraction) or label not in parts:
                        continue
                    method, pat, robust = parts[label]
                    if pat != pattern or is_adversarial_fine_tune(label):
                        continue
                    metric = pts[0]["metric"]
                    s = score_scale(metric)
                    higher = higher_is_better(metric)
                    name = f"{'robust' if robust else 'standard'} {method}" + ("" if source == target else
                                                                              f" from {source}")
                    series[name] = [(p["sparsity"], p["score"].mean * s, p["score"].std * s,
                                     None if d is None else is_matching(p["score"].mean, d, higher)) for p in pts]
                    styles[name] = dict(_KIND_STYLE[robust])
                    for p in pts:
                        ra = robust_acc.get((model, label, fraction, p["level"])) if source == target else None
                        records.append({"model": model, "fraction": fraction, "pattern": pattern, "target": target,
                                        "source": source, "method": method,
                                        "kind": "robust" if robust else "standard", "level": p["level"],
                                        "sparsity": p["sparsity"], "mean": p["score"].mean, "std": p["score"].std,
                                        "n": p["score"].n, "seeds": p["score"].seeds,
                                        "robust_accuracy": None if not ra else sum(ra) / len(ra),
                                        "matching": None if d is None else is_matching(p["score"].mean, d, higher)})
                s = score_scale(metric or "accuracy")
                _draw_curves(ax, series, None if d is None else (d.mean * s, d.std * s), styles,
                             dense_label="dense, fine-tuned (±1 sd)")
                a = adv_dense.get((model, target, fraction))
                if a is not None:
                    ax.axhline(a.mean * s, color=_KIND_STYLE[True]["color"], lw=1, ls=":",
                               label="dense, adversarially fine-tuned")
                pts_all = [p[0] for pts in series.values() for p in pts]
                if pts_all:
                    _density_axis(ax, pts_all)
                ax.set_title(f"{pattern_name(pattern)} · {target}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(score_unit(metric or "accuracy"), fontsize=8)
                ax.grid(alpha=0.3)
                ax.tick_params(labelsize=7)
                ax.xaxis.label.set_size(7)
                if series:
                    ax.legend(fontsize=6, loc="best")
        fig.suptitle(f"{model}: standard vs robust tickets per pattern (rows) and task (columns)\n"
                     f"mean ± sd over seeds{_of_data(fraction)}; "
                     "hollow = not matching; robust = IMP under adversarial training\n(on the task they were drawn "
                     "on, robust tickets are scored after adversarial fine-tuning)", fontsize=8.5)
        fig.tight_layout()
        name = f"patterns-{slug(model, _fraction_tag(fraction))}.png"
        _emit(fig, out, name, f"standard vs robust tickets per pattern, {model}", files, md)
    return files, md, records


def latency_figures(ctx: dict, out: Path, latency: dict | None) -> tuple[list[str], list[str], list[dict]]:
    """Score vs measured relative latency (benchmarks/compaction.py; eager, batch 64, 1 thread on the x axis), one
    panel per target task, every ticket kind a line (colour: pattern; dashed: robust). Nothing without
    ``latency`` or when the benchmark has no point for the study's models."""
    from tickets.study.report.labels import pattern_name
    from tickets.study.report.patterns import LATENCY_SETTING, kind_parts, latency_at, patterns_in

    if not latency:
        return [], [], []
    recs = latency["records"]
    rows = ctx["rows"]
    dense = dense_baselines(rows)
    curves = ticket_curves(rows)
    parts = kind_parts(rows)
    settings_of = {r["method"]: r.get("setting") for r in rows if r["kind"] in ("find", "transfer")}
    settings = {"eager_b64_t1": ("eager", 64, 1), "onnxruntime_b64_t1": ("onnxruntime", 64, 1),
                "eager_b1_t1": ("eager", 1, 1), "onnxruntime_b1_t1": ("onnxruntime", 1, 1)}
    files, md, records = [], [], []
    plt = _plt()
    for model, fraction in sorted({(k[0], k[2]) for k in curves}, key=lambda mf: (mf[0], -mf[1])):
        mrows = [r for r in rows if r["model"] == model]
        pats = patterns_in(mrows)
        colours = {p: _COLOURS[(i + 2) % len(_COLOURS)] for i, p in enumerate(pats)}
        targets = _targets_in_order(mrows, model)
        drawn = False
        ncols = _grid_cols(len(targets))
        nrows = math.ceil(len(targets) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), dpi=110, squeeze=False)
        for ax in axes.flat[len(targets):]:
            ax.set_visible(False)
        for ax, target in zip(axes.flat, targets):
            metric = None
            for (m_, t_, f_, source, label), pts in sorted(curves.items(), key=lambda kv: str(kv[0])):
                if (m_, t_, f_) != (model, target, fraction) or label not in parts or is_adversarial_fine_tune(label):
                    continue
                method, pattern, robust = parts[label]
                metric = pts[0]["metric"]
                s = score_scale(metric)
                xs, ys, es = [], [], []
                for p in pts:
                    rel = {k: latency_at(recs, model, pattern, p["sparsity"], engine=e, batch=b, threads=t)
                           for k, (e, b, t) in settings.items()}
                    main = rel["eager_b64_t1"]
                    records.append({"model": model, "target": target, "fraction": fraction, "ticket": label,
                                    "source": source, "pattern": pattern, "robust": robust, "level": p["level"],
                                    "sparsity": p["sparsity"], "mean": p["score"].mean, "std": p["score"].std,
                                    "n": p["score"].n,
                                    **{f"relative_latency_{k}": None if v is None else v["relative_latency"]
                                       for k, v in rel.items()},
                                    "latency_variant": None if main is None else main["variant"],
                                    "interpolated": None if main is None else main["interpolated"],
                                    "extrapolated": None if main is None else main["extrapolated"]})
                    if main is not None:
                        xs.append(main["relative_latency"])
                        ys.append(p["score"].mean * s)
                        es.append(p["score"].std * s)
                if xs:
                    drawn = True
                    ax.errorbar(xs, ys, yerr=es, color=colours[pattern], ls="--" if robust else "-",
                                marker="s" if robust else "o", mfc="white" if robust else colours[pattern], ms=5,
                                capsize=2, lw=1.2,
                                label=with_setting(f"{pattern_name(pattern)} {'robust' if robust else 'standard'}",
                                                   settings_of[label]))
            d = dense.get((model, target, fraction))
            s = score_scale(metric or "accuracy")
            if d is not None:
                ax.errorbar([1.0], [d.mean * s], yerr=[d.std * s], color="black", marker="*", ms=9, ls="none",
                            capsize=2, label="dense")
            ax.set_xlabel(f"latency / dense latency ({LATENCY_SETTING['engine']}, batch {LATENCY_SETTING['batch']}, "
                          f"{LATENCY_SETTING['threads']} thread, measured)", fontsize=7)
            ax.set_ylabel(score_unit(metric or "accuracy"), fontsize=8)
            ax.set_title(target, fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6, loc="best")
        if not drawn:
            import matplotlib.pyplot as mplt

            mplt.close(fig)
            continue
        fig.suptitle(f"{model}: test score vs measured CPU latency of the ticket's deployable model"
                     f"{_of_data(fraction, 'data')}\n"
                     "channel: the compacted model; unstructured and 2:4: the masked model (no sparse CPU kernel)\n"
                     "latency: benchmarks/compaction.py, interpolated in sparsity between its measured tickets",
                     fontsize=8.5)
        fig.tight_layout()
        name = f"score-vs-latency-{slug(model, _fraction_tag(fraction))}.png"
        _emit(fig, out, name, f"score vs measured latency, {model}", files, md)
    return files, md, records
