"""How scores and ticket kinds are written, in figures and in report.md alike.

Scores are shown ×100 (accuracy %, F1, MCC, Spearman as in GLUE) unless they are losses / perplexities; ticket
kinds read "imp (own task)" or "imp from sst2"; file names are slugs of model, method and data fraction.
"""

from __future__ import annotations

from typing import Any

from tickets.study.matching import higher_is_better


def score_scale(metric: str) -> float:
    """Scores are shown ×100 (accuracy %, F1, MCC, Spearman as in GLUE) unless they are losses / perplexities."""
    return 100.0 if higher_is_better(metric) else 1.0


def score_unit(metric: str) -> str:
    """Axis label of a score: "test accuracy (%)", "test mcc (×100)", "test loss"."""
    return f"test {metric} (%)" if metric == "accuracy" else (f"test {metric} (×100)" if score_scale(metric) == 100
                                                                else f"test {metric}")


def format_pm(mean: float, std: float, metric: str, n: int | None = None) -> str:
    """"91.2 ± 0.4 (n=3)": mean ± sd on the metric's scale (3 decimals for losses), with n when given."""
    s = score_scale(metric)
    text = f"{mean * s:.1f} ± {std * s:.1f}" if s == 100 else f"{mean:.3f} ± {std:.3f}"
    return text + (f" (n={n})" if n is not None else "")


def format_pct(s: float | None) -> str:
    """A fraction (sparsity) as "59.0%"; "—" for None."""
    return "—" if s is None else f"{100 * s:.1f}%"


def format_fraction(f: float) -> str:
    """A training-data fraction: "all" for 1.0, else "0.25"."""
    return "all" if f == 1.0 else f"{f:g}"


def kind_label(method: str, pattern: str | None = None, robust: bool | None = False,
               adversarial_finetune: bool = False) -> str:
    """The label of a ticket kind: the method, then the pattern unless unstructured, then "robust" for tickets
    drawn under adversarial training and "adv-ft" for adversarial fine-tuning: "imp", "imp channel",
    "imp nm:2:4 robust"."""
    parts = [method]
    if pattern and pattern != "unstructured":
        parts.append(pattern)
    if robust:
        parts.append("robust")
    if adversarial_finetune:
        parts.append("adv-ft")
    return " ".join(parts)


def with_setting(label: str, setting: str | None) -> str:
    """A ticket kind's label with what sets its runs apart from others of the kind, in brackets: "imp [rewind
    step:5, limit 300]"; the bare label without one (``collect`` leaves it "" in a study of one setting)."""
    return f"{label} [{setting}]" if setting else label


def kind_order(source: str | None, method: str | None) -> tuple:
    """Sort key of a ticket kind (source task, method label): IMP first, then by method and source; a missing
    field sorts as ""."""
    return (method != "imp", method or "", source or "")


def pattern_name(pattern: str | None) -> str:
    """How a pattern is written in prose: "unstructured", "channel", "2:4" (for nm:2:4)."""
    if not pattern:
        return "unstructured"
    return pattern[3:] if pattern.startswith("nm:") else pattern


def ticket_label(source: str | None, target: str, method: str | None) -> str:
    """"imp (own task)" for a ticket drawn on the target, else "imp from <source>" ("ticket from an unknown
    task" when the fields are missing)."""
    method = method or "ticket"
    return f"{method} (own task)" if source == target else f"{method} from {source or 'an unknown task'}"


def slug(*parts: Any) -> str:
    """File-name-safe join of the non-empty parts with '-' (other characters than [A-Za-z0-9-_.] become '-')."""
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
