"""Tables and plots from finished runs: what a paper would show, readable at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tickets.runs import atomic_write


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if dense is not None:
        mean, std = dense
        ax.axhline(mean, color="black", lw=1, ls="--", label="dense (pre-trained, fine-tuned)")
        if std > 0:
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.08, lw=0)
    for method, points in series.items():
        pts = sorted(points)
        xs = [100 * (1 - s) for s, _, _ in pts]
        ax.errorbar(xs, [m for _, m, _ in pts], yerr=[sd for _, _, sd in pts], marker="o", ms=4, capsize=3,
                    label=method)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = sorted({round(100 * (1 - s), 1) for pts in series.values() for s, _, _ in pts}, reverse=True)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{100 - t:.0f}" if (100 - t) >= 10 or t == 100 else f"{100 - t:.1f}" for t in ticks],
                       fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("sparsity of the prunable set (%)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
