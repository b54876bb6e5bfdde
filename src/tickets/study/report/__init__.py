"""`tickets report`: tables and plots from finished runs, what a paper would show, readable at a glance.

``write_report(DIR)`` reads a study folder written by ``tickets run`` (``OUT/study-<name>``) or any folder of
``find-*`` / ``transfer-*`` runs and writes ``report.md``, its figures (PNG) and the data behind every figure and
table (CSV + JSON). The package is split by job, one direction only (markdown → figures → labels; markdown →
collect → settings):

* ``collect.py``: finished run directories / a study folder → score rows and ticket records;
* ``settings.py``: what in a run's config sets it apart from runs of other seeds (runs of different settings never
  share a curve), and how that is written in labels;
* ``figures.py``: every matplotlib figure (also ``plot_sparsity_curves``, ``tickets demo``'s figure);
* ``labels.py``: how scores and ticket kinds are written (scale, units, ±, %, labels, file-name slugs);
* ``markdown.py``: ``write_report`` and the report.md assembly (``markdown_table`` is also the demo's).
"""

from tickets.study.report.collect import collect
from tickets.study.report.figures import plot_sparsity_curves
from tickets.study.report.markdown import markdown_table, write_report

__all__ = ["plot_sparsity_curves", "markdown_table", "write_report", "collect"]
