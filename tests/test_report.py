"""Matching on hand-made numbers, and `tickets report` on a tiny real study: files, figures, data behind them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tickets.cli import main
from tickets.study.execute import run_experiment
from tickets.study.matching import (
    Stat,
    at_least_dense,
    highest_matching,
    highest_matching_table,
    is_matching,
    transfer_matrices,
    transfer_vs_own,
)
from tickets.study.report import markdown_table, plot_sparsity_curves

TINY = """\
name: tiny-report
description: A tiny study for the report tests.
models: [small-cnn]
seeds: [0, 1]
schedule: {kind: geometric, rate: 0.5, levels: 2}
train: {epochs: 1, batch_size: 32, optimizer: adamw, lr: 0.003}
data: {train_size: 120, limit: 60}
find:
  - tasks: [digits-5-9]
    methods: [imp, omp]
transfer:
  - from: [digits-5-9]
    to: [digits-0-4]
    methods: [imp]
"""


# -- matching on hand-made numbers -------------------------------------------------------------------------------
def _row(kind, target, seed, score, *, source=None, method=None, level=0, sparsity=0.0, metric="accuracy",
         fraction=1.0, model="m"):
    return {"model": model, "kind": kind, "source": source, "method": method, "target": target, "fraction": fraction,
            "level": level, "sparsity": sparsity, "seed": seed, "score": score, "metric": metric}


DENSE = [_row("dense", "A", s, v) for s, v in zip((0, 1, 2), (0.90, 0.92, 0.94))]  # mean 0.92, sample sd 0.02
ROWS = DENSE + [
    # own-task tickets on A: 0.91 (matching, below dense), 0.93 (at least dense), 0.85 (not matching)
    *[_row("find", "A", s, v, source="A", method="imp", level=1, sparsity=0.5) for s, v in zip((0, 1, 2),
                                                                                               (0.90, 0.91, 0.92))],
    *[_row("find", "A", s, v, source="A", method="imp", level=2, sparsity=0.75) for s, v in zip((0, 1, 2),
                                                                                                (0.93, 0.93, 0.93))],
    *[_row("find", "A", s, v, source="A", method="imp", level=3, sparsity=0.9) for s, v in zip((0, 1, 2),
                                                                                               (0.84, 0.85, 0.86))],
    # tickets from B transferred to A: 0.899 at 50% is just outside one sd — must NOT match
    *[_row("transfer", "A", s, v, source="B", method="imp", level=1, sparsity=0.5)
      for s, v in zip((0, 1, 2), (0.898, 0.899, 0.9))],
    *[_row("transfer", "A", s, v, source="B", method="imp", level=2, sparsity=0.75)
      for s, v in zip((0, 1, 2), (0.95, 0.95, 0.95))],
]


def test_stat_is_mean_and_sample_sd():
    s = Stat.of([0.90, 0.92, 0.94], [2, 0, 1])
    assert s.mean == pytest.approx(0.92) and s.std == pytest.approx(0.02) and s.n == 3 and s.seeds == [0, 1, 2]
    assert Stat.of([0.5]).std == 0.0


def test_matching_criteria():
    dense = Stat.of([0.90, 0.92, 0.94])
    assert is_matching(0.91, dense) and not at_least_dense(0.91, dense)  # within one sd, below the mean
    assert is_matching(0.90, dense)  # exactly one sd below: matching
    assert not is_matching(0.8999, dense)  # must NOT match
    assert is_matching(0.97, dense) and at_least_dense(0.92, dense)
    one_seed = Stat.of([0.9])  # sd 0: both criteria are "at least the dense score"
    assert not is_matching(0.8999, one_seed) and is_matching(0.9, one_seed)
    loss = Stat.of([1.0, 1.2])  # lower is better: mean 1.1, sd 0.141
    assert is_matching(1.2, loss, higher=False) and not is_matching(1.3, loss, higher=False)
    assert at_least_dense(1.05, loss, higher=False) and not at_least_dense(1.15, loss, higher=False)


def test_highest_matching_sparsity():
    dense = Stat.of([0.90, 0.92, 0.94])
    pts = [(0.5, 0.91), (0.75, 0.93), (0.9, 0.85)]
    assert highest_matching(pts, dense) == 0.75
    assert highest_matching(pts, dense, strict=True) == 0.75
    assert highest_matching([(0.5, 0.91)], dense, strict=True) is None
    assert highest_matching([(0.5, 0.85), (0.9, 0.8)], dense) is None


def test_highest_matching_table_and_transfer_matrix_on_hand_rows():
    table = {(r["source"], r["target"]): r for r in highest_matching_table(ROWS)}
    own, moved = table[("A", "A")], table[("B", "A")]
    assert own["dense"]["mean"] == pytest.approx(0.92) and own["dense"]["std"] == pytest.approx(0.02)
    assert own["within_1sd"]["sparsity"] == 0.75 and own["at_least_dense"]["sparsity"] == 0.75
    assert own["max_sparsity"] == 0.9
    # B's tickets: 50% (0.899) does not match, 75% (0.95) does under both criteria
    assert moved["within_1sd"]["sparsity"] == 0.75 and moved["at_least_dense"]["sparsity"] == 0.75

    mats = {m["level"]: m for m in transfer_matrices(ROWS)}
    assert set(mats) == {1, 2, 3}
    cell = mats[1]["cells"]["B"]["A"]
    assert cell["score"] == pytest.approx(0.899) and cell["matching"] is False
    assert cell["delta"] == pytest.approx(0.899 - 0.92)
    assert mats[1]["cells"]["A"]["A"]["score"] == pytest.approx(0.91) and mats[1]["cells"]["A"]["A"]["matching"]
    assert mats[2]["cells"]["B"]["A"]["at_least_dense"] is True
    assert mats[1]["sources"][0] == "A"  # the target's own row first: the diagonal is a diagonal

    (vs,) = transfer_vs_own(ROWS)
    assert vs["source"] == "B" and vs["target"] == "A" and vs["wins"] == 1
    assert [round(lv["diff"], 4) for lv in vs["levels"]] == [round(0.899 - 0.91, 4), round(0.95 - 0.93, 4)]


def test_plot_sparsity_curves_and_markdown_table_keep_working(tmp_path):
    """The demo's use: series of (sparsity, mean, std) and a dense (mean, std)."""
    png = plot_sparsity_curves({"imp": [(0.3, 0.9, 0.01), (0.51, 0.88, 0.0)], "omp": [(0.3, 0.85, 0.02)]},
                               tmp_path / "c.png", title="t", ylabel="acc", dense=(0.91, 0.01))
    assert png.stat().st_size > 1000
    assert markdown_table(["a", "b"], [[1, 0.5]]) == "| a | b |\n|---|---|\n| 1 | 0.5000 |"


# -- the report of a tiny real study -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    (root / "exp.yaml").write_text(TINY)
    out = root / "runs"
    assert run_experiment(root / "exp.yaml", out=out, device="cpu", progress=False, report=True,
                          stream=open("/dev/null", "w")) == 0
    return out, out / "study-tiny-report"


def test_report_files(study):
    out, sdir = study
    report = (sdir / "report.md").read_text()
    for section in ("## Setup", "## Dense baselines", "## Score vs sparsity", "## Highest matching sparsity",
                    "## Transfer matrix", "## Per-layer sparsity", "## Overlap between tickets"):
        assert section in report
    assert "Seeds**: 0, 1" in report and "Denominator" in report and "prunable set" in report
    assert "preset `cnn`" in report
    pngs = sorted(sdir.glob("*.png"))
    assert {p.name for p in pngs} == {"curves-small-cnn.png", "transfer-matrix-small-cnn-imp.png",
                                      "layer-sparsity-small-cnn.png", "overlap-small-cnn.png"}
    for p in pngs:
        assert p.stat().st_size > 5000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({p.name})" in report
    # no tickets are drawn on digits-0-4 itself, so there is nothing to compare the transferred ones with
    assert json.loads((sdir / "transfer_vs_own.json").read_text()) == []
    for stem in ("scores", "curves", "highest_matching", "transfer_matrix", "layer_sparsity", "overlap_iou"):
        with open(sdir / f"{stem}.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert rows, stem
        assert json.loads((sdir / f"{stem}.json").read_text())
    scores = list(csv.DictReader(open(sdir / "scores.csv")))
    assert len(scores) == 2 * (2 + 2 + 2 + 2)  # per seed: imp 2 + omp 2 levels, 2 transfers, 2 dense


def _mean_test(runs: list[Path], level: str = "level-00") -> float:
    vals = []
    for r in runs:
        m = json.loads((r / level / "metrics.json").read_text())
        vals.append(m["test"][m["primary_metric"]])
    return sum(vals) / len(vals)


def test_heatmap_values_equal_the_transfer_metrics(study):
    out, sdir = study
    jobs = json.loads((sdir / "jobs.json").read_text())["jobs"]
    cells = json.loads((sdir / "transfer_matrix.json").read_text())
    assert {(c["source"], c["target"]) for c in cells} == {("digits-5-9", "digits-5-9"), ("digits-5-9", "digits-0-4")}
    for c in cells:
        if c["source"] != c["target"]:  # transferred: the mean over seeds of the transfer runs' test score
            runs = [out / j["run"] for j in jobs if j["kind"] == "transfer" and j["level"] == c["level"]]
            assert len(runs) == 2
            assert c["score"] == pytest.approx(_mean_test(runs), abs=1e-12)
        else:  # diagonal: the find runs' own level (IMP numbers its dense level 0, so position = level)
            runs = [out / j["run"] for j in jobs if j["kind"] == "find" and j["method"] == "imp"]
            assert c["score"] == pytest.approx(_mean_test(runs, f"level-{c['level']:02d}"), abs=1e-12)
        dense_runs = [out / j["run"] for j in jobs if j["kind"] == "dense" and j["task"] == c["target"]]
        assert c["dense"] == pytest.approx(_mean_test(dense_runs), abs=1e-12)
        assert c["delta"] == pytest.approx(c["score"] - c["dense"])
        assert c["seeds"] == [0, 1] and math.isfinite(c["std"])


def test_layer_sparsity_and_overlap_data(study):
    _, sdir = study
    layers = json.loads((sdir / "layer_sparsity.json").read_text())
    for rec in layers:
        assert 0.0 <= rec["sparsity"] <= 1.0 and rec["weights"] > 0
    # weighted by tensor size, per-layer sparsities add up to the ticket's overall sparsity (the prunable set)
    imp1 = [r for r in layers if r["method"] == "imp" and r["level"] == 1]
    total = sum(r["weights"] for r in imp1)
    assert sum(r["sparsity"] * r["weights"] for r in imp1) / total == pytest.approx(0.5, abs=1e-3)
    iou = json.loads((sdir / "overlap_iou.json").read_text())
    pairs = {(r["a"], r["b"], r["level"]) for r in iou}
    assert ("imp on digits-5-9", "omp on digits-5-9", 1) in pairs  # different methods, same seed
    assert ("imp on digits-5-9", "imp on digits-5-9", 1) in pairs  # the same kind across seeds
    assert all(0.0 <= r["iou"] <= 1.0 for r in iou)


def test_report_cli_on_a_folder_of_runs(study, tmp_path, capsys):
    out, _ = study
    assert main(["report", str(out), "--to", str(tmp_path / "rep")]) == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "curves-small-cnn.png").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
