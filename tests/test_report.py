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


def test_transfer_matrix_takes_rows_without_a_source_or_method():
    """Rows of a ticket read from another tool's file may carry no source / method: sorting them crashed."""
    rows = ROWS + [_row("transfer", "A", s, 0.9, source=None, method=None, level=1, sparsity=0.5) for s in (0, 1)]
    mats = transfer_matrices(rows)
    assert any(None in m["cells"] for m in mats)
    assert transfer_vs_own(rows) and highest_matching_table(rows)


def test_adversarially_fine_tuned_tickets_are_judged_against_the_adversarially_fine_tuned_dense_model(tmp_path):
    """A newcomer's double-win study: "imp adv-ft from cifar10" (0.115 ± 0.035) was compared with the standard dense
    run (0.135) — Δ −2.0, "≥ dense: no" — while the adversarially fine-tuned dense runs (0.110 ± 0.028) were left out
    of the report; against them the row is +0.5 and at least dense. Curves without any dense run get no verdict."""
    from tickets.study.matching import baseline_for
    from tickets.study.report import figures

    rows = [_row("dense", "T", s, v) for s, v in ((0, 0.11), (1, 0.16))]  # standard: 0.135
    rows += [_row("dense-adversarial", "T", s, v) for s, v in ((0, 0.13), (1, 0.09))]  # 0.110
    rows += [_row("transfer", "T", s, v, source="S", method="imp adv-ft", level=1, sparsity=0.5)
             for s, v in ((0, 0.14), (1, 0.09))]  # 0.115
    rows += [_row("transfer", "U", s, 0.5, source="S", method="imp", level=1, sparsity=0.5) for s in (0, 1)]
    (adv_row,) = [r for r in highest_matching_table(rows) if r["method"] == "imp adv-ft"]
    assert adv_row["dense"]["mean"] == pytest.approx(0.11)
    assert adv_row["at_least_dense"]["sparsity"] == 0.5
    (no_dense,) = [r for r in highest_matching_table(rows) if r["target"] == "U"]
    assert no_dense["dense"] is None and no_dense["within_1sd"] is None
    (mat,) = [m for m in transfer_matrices(rows) if m["method"] == "imp adv-ft"]
    assert mat["cells"]["S"]["T"]["dense"] == pytest.approx(0.11) and mat["cells"]["S"]["T"]["at_least_dense"]
    assert baseline_for("imp adv-ft", ("m", "U", 1.0), {}, {}) is None

    _, _, records = figures.curve_figures({"rows": rows}, tmp_path)
    point = next(r for r in records if r["method"] == "imp adv-ft")
    assert point["matching"] is True and point["at_least_dense"] is True
    assert {r["ticket"] for r in records if r["method"] is None} == {"dense", "dense adv-ft"}
    assert next(r for r in records if r["target"] == "U" and r["method"] == "imp")["matching"] is None


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


def test_compute_counts_the_study_runs_whichever_study_folder_ran_them(study, tmp_path):
    from tickets.study.report.collect import collect, run_compute

    out, sdir = study
    assert "all run by this study's own process" in (sdir / "report.md").read_text()
    runs = {j["run"] for j in json.loads((sdir / "jobs.json").read_text())["jobs"]}
    own = run_compute(sdir, runs)
    assert list(own) == [sdir.name] and own[sdir.name]["jobs"] == len(runs)
    # a phase folder beside the study ran one of its runs; a third folder ran a run that is not the study's
    study_dir = tmp_path / "out" / sdir.name
    study_dir.mkdir(parents=True)
    (study_dir / "progress.jsonl").write_text("")
    run = sorted(runs)[0]
    lines = {"study-x-p1": [{"run": run, "status": "done", "cpu_seconds": 3600.0, "wall_seconds": 4000.0},
                            {"run": run, "status": "failed", "cpu_seconds": 99.0, "wall_seconds": 99.0}],
             "study-other": [{"run": "find-000000000000", "status": "done", "cpu_seconds": 5.0,
                              "wall_seconds": 5.0}]}
    for name, records in lines.items():
        (tmp_path / "out" / name).mkdir()
        (tmp_path / "out" / name / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert run_compute(study_dir, runs) == {"study-x-p1": {"jobs": 1, "cpu_seconds": 3600.0, "wall_seconds": 4000.0}}
    assert collect(sdir)["run_compute"] == own


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


# -- sparsity patterns and robust tickets: hand-made run folders --------------------------------------------------
ADV = {"attack": "pgd", "eps": 2.0, "alpha": 1.0, "steps": 3, "clean_fraction": 0.0}
TRAIN = {"epochs": 1, "optimizer": "sgd", "lr": 0.05, "lr_schedule": "cosine", "batch_size": 64,
         "weight_decay": 0.0005}
DATA = {"train_size": 100, "val_fraction": 0.1, "val_size": None, "limit": 50, "augment": True}


def _mask(seed: int, sparsity: float):
    """A deterministic mask over one 4×8 tensor with round(32 × sparsity) weights pruned."""
    import torch

    from tickets.masks import Mask

    order = torch.randperm(32, generator=torch.Generator().manual_seed(seed))
    kept = torch.ones(32, dtype=torch.bool)
    kept[order[:round(32 * sparsity)]] = False
    return Mask({"w": kept.view(4, 8)})


def _write_level(run: Path, level: int, score: float, sparsity: float, *, ticket=None, extra=None, ra=None):
    from tickets.ticket import save_ticket

    d = run / f"level-{level:02d}"
    d.mkdir(parents=True)
    m = {"level": level, "primary_metric": "accuracy", "test": {"accuracy": score}, "sparsity": sparsity,
         "train_seconds": 1.0, **(extra or {})}
    if ra is not None:
        m["robust"] = {"robust_accuracy": ra, "clean_accuracy": score}
    (d / "metrics.json").write_text(json.dumps(m))
    if ticket is not None:
        save_ticket(d / "ticket.safetensors", ticket)
    (d / "DONE").write_text("")


def _find_run(root: Path, name: str, seed: int, scores: list[float], *, pattern=None, adversarial=False,
              masks=None, ra=None, extra=None):
    """IMP on task S: level 0 dense, then one ticket per level (sparsity 0.5, 0.75), as many levels as scores;
    ``extra``: more config keys (rewind, data, …)."""
    import yaml as _yaml

    from tickets.ticket import Ticket

    run = root / name
    run.mkdir()
    cfg = {"model": "m", "task": "S", "method": "imp", "seed": seed, "levels": [0.0, 0.5, 0.75][:len(scores)],
           "train": {**TRAIN, "adversarial": ADV if adversarial else None}, "data": DATA, **(extra or {})}
    if pattern:
        cfg["pattern"] = pattern
    (run / "config.yaml").write_text(_yaml.safe_dump(cfg))
    tickets = {}
    for level, (score, sparsity) in enumerate(zip(scores, (0.0, 0.5, 0.75))):
        t = None
        if level:
            mask = masks[level] if masks else _mask(seed * 10 + level, sparsity)
            t = Ticket(mask, {"model": "m", "source_task": "S", "method": "imp", "level": level, "seed": seed,
                              "adversarial": ADV if adversarial else None})
            tickets[level] = t
        _write_level(run, level, score, sparsity, ticket=t, ra=None if ra is None else ra[level])
    return run


def _transfer_run(root: Path, name: str, target: str, seed: int, score: float, *, ticket_path=None, checksum=None,
                  sparsity=0.0, adversarial=False, ticket_meta=None, record=None, train=None, data=None):
    """A finished transfer run; ``record``: the ticket record its metrics hold, as is (default: one naming source
    task S and method imp); ``train`` / ``data``: config keys over the defaults."""
    import yaml as _yaml

    run = root / name
    run.mkdir()
    cfg = {"model": "m", "task": target, "seed": seed,
           "train": {**TRAIN, "adversarial": ADV if adversarial else None, **(train or {})}, "data": {**DATA, **(data or {})},
           "ticket": None if checksum is None else {"checksum": checksum, "sparsity": sparsity}}
    (run / "config.yaml").write_text(_yaml.safe_dump(cfg))
    ticket = record
    if ticket_path is not None and record is None:
        ticket = {"path": str(ticket_path), "source_task": "S", "method": "imp", "checksum": checksum,
                  **(ticket_meta or {})}
    _write_level(run, 0, score, sparsity, extra={"ticket": ticket})
    return run


def _checksum(run: Path, level: int) -> str:
    from tickets.study.report.collect import ticket_header

    return ticket_header(run / f"level-{level:02d}" / "ticket.safetensors")["checksum"]


@pytest.fixture
def pattern_runs(tmp_path):
    """Unstructured standard (seeds 0, 1) and robust (seeds 100, 101) tickets; channel standard (200, 201) and robust
    (300, 301) tickets that drew the *same* masks; transfers of all to T with fine-tuning seeds 0, 1; dense runs
    (one of them adversarial); and one transfer of a lone 2:4 ticket file outside any find run."""
    from tickets.masks import Mask
    from tickets.ticket import Ticket, save_ticket

    root = tmp_path / "runs"
    root.mkdir()
    for seed, (s, t) in enumerate([(0.90, 0.80), (0.92, 0.82)]):
        _transfer_run(root, f"transfer-dense-S-{seed}", "S", seed, s)
        _transfer_run(root, f"transfer-dense-T-{seed}", "T", seed, t)
    _transfer_run(root, "transfer-dense-S-adv", "S", 100, 0.70, adversarial=True)
    finds = {
        ("unstructured", False, 0): _find_run(root, "find-u0", 0, [0.9, 0.89, 0.85], ra=[0.0, 0.01, 0.02]),
        ("unstructured", False, 1): _find_run(root, "find-u1", 1, [0.9, 0.91, 0.87], ra=[0.0, 0.03, 0.00]),
        ("unstructured", True, 0): _find_run(root, "find-r0", 100, [0.8, 0.86, 0.84], adversarial=True,
                                             ra=[0.5, 0.45, 0.40]),
        ("unstructured", True, 1): _find_run(root, "find-r1", 101, [0.8, 0.88, 0.84], adversarial=True,
                                             ra=[0.5, 0.47, 0.42]),
    }
    for i in (0, 1):
        masks = {1: _mask(700 + i, 0.5), 2: _mask(800 + i, 0.75)}  # identical in both kinds: training moved nothing
        finds[("channel", False, i)] = _find_run(root, f"find-c{i}", 200 + i, [0.9, 0.8, 0.7], pattern="channel",
                                                 masks=masks)
        finds[("channel", True, i)] = _find_run(root, f"find-cr{i}", 300 + i, [0.8, 0.7, 0.6], pattern="channel",
                                                adversarial=True, masks=masks)
    # transfers to T: robust − standard = +0.02, +0.01 (level 1), +0.03, 0.00 (level 2) for unstructured
    scores = {("unstructured", False): {1: (0.78, 0.80), 2: (0.75, 0.77)},
              ("unstructured", True): {1: (0.80, 0.81), 2: (0.78, 0.77)},
              ("channel", False): {1: (0.70, 0.71), 2: (0.60, 0.62)}}
    for (pattern, robust), by_level in scores.items():
        for level, pair in by_level.items():
            for seed, score in enumerate(pair):
                src = finds[(pattern, robust, seed)]
                _transfer_run(root, f"transfer-{pattern}-{int(robust)}-{level}-{seed}", "T", seed, score,
                              ticket_path=src / f"level-{level:02d}" / "ticket.safetensors",
                              checksum=_checksum(src, level), sparsity=0.5 if level == 1 else 0.75,
                              ticket_meta={"level": level})
    # a 2:4 ticket that no find run of the folder drew: pattern from the file, robustness from the transfer's record
    lone = tmp_path / "lone.safetensors"
    nm = Mask({"w": __import__("torch").tensor([[1, 1, 0, 0] * 2] * 4, dtype=__import__("torch").bool)})
    save_ticket(lone, Ticket(nm, {"model": "m", "source_task": "S", "method": "imp", "level": 1,
                                  "pattern": {"name": "nm", "options": "2:4"}}))
    from tickets.study.report.collect import ticket_header

    _transfer_run(root, "transfer-nm", "T", 0, 0.79, ticket_path=lone, checksum=ticket_header(lone)["checksum"],
                  sparsity=0.5, ticket_meta={"adversarial": ADV, "level": 1})
    return root


def test_collect_tells_patterns_and_robust_tickets_apart(pattern_runs):
    from tickets.study.report.collect import collect

    ctx = collect(pattern_runs)
    rows = ctx["rows"]
    kinds = {(r["kind"], r["method"], r["target"]) for r in rows}
    assert ("dense-adversarial", None, "S") in kinds  # the adversarial dense run is no standard baseline
    assert sum(r["kind"] == "dense" and r["target"] == "S" for r in rows) == 2
    for label in ("imp", "imp robust", "imp channel", "imp channel robust"):
        assert ("find", label, "S") in kinds and ("transfer", label, "T") in kinds
    assert ("transfer", "imp nm:2:4 robust", "T") in kinds
    by = {(r["method"], r["kind"]): r for r in rows if r["kind"] in ("find", "transfer")}
    assert by[("imp channel robust", "transfer")]["pattern"] == "channel"
    assert by[("imp channel robust", "transfer")]["robust"] is True and by[("imp", "transfer")]["robust"] is False
    # one channel transfer run serves both kinds (the same mask): same run, same score, two rows
    shared = [r for r in rows if r["run"] == "transfer-channel-0-1-0"]
    assert sorted(r["method"] for r in shared) == ["imp channel", "imp channel robust"]
    assert len({r["score"] for r in shared}) == 1
    robust_find = [r for r in rows if r["method"] == "imp robust" and r["kind"] == "find" and r["level"] == 1]
    assert sorted(r["robust_accuracy"] for r in robust_find) == [0.45, 0.47]
    assert {t["method"] for t in ctx["tickets"]} == {"imp", "imp robust", "imp channel", "imp channel robust"}


def test_robust_vs_standard_pairs_cells(pattern_runs):
    from tickets.study.report.collect import collect
    from tickets.study.report.patterns import pattern_summary, robust_vs_standard

    recs = {(r["pattern"], r["target"]): r for r in robust_vs_standard(collect(pattern_runs)["rows"])}
    u = recs[("unstructured", "T")]
    assert [round(c["diff"], 6) for c in u["cells"]] == [0.02, 0.01, 0.03, 0.0]
    assert u["mean_diff"] == pytest.approx(0.015)
    diffs = [0.02, 0.01, 0.03, 0.0]
    sd = math.sqrt(sum((d - 0.015) ** 2 for d in diffs) / 3)
    assert u["sd"] == pytest.approx(sd) and u["se"] == pytest.approx(sd / 2)
    assert (u["robust_wins"], u["standard_wins"], u["ties"]) == (3, 0, 1)
    assert u["verdict"] == "robust ahead" and u["mean_diff"] > 2 * u["se"]
    c = recs[("channel", "T")]
    assert c["same_ticket"] == 4 and c["ties"] == 4 and c["verdict"] == "no clear difference"
    own = recs[("unstructured", "S")]  # different seeds per kind on the source task: paired by seed order
    assert own["own_task"] and [(x["seed_standard"], x["seed_robust"]) for x in own["cells"]][:2] == [(0, 100),
                                                                                                      (1, 101)]
    assert [round(x["diff"], 6) for x in own["cells"]] == [-0.03, -0.03, -0.01, -0.03]
    assert ("nm:2:4", "T") not in recs  # robust only: nothing to pair with
    summary = {s["pattern"]: s for s in pattern_summary(list(recs.values()))}
    assert set(summary) == {"unstructured", "channel"}  # own-task records are not transfer evidence
    assert summary["unstructured"]["n"] == 4 and summary["unstructured"]["targets"][0]["target"] == "T"


def test_latency_interpolation():
    from tickets.study.report.patterns import latency_at

    recs = [{"model": "m", "pattern": "channel", "variant": "compact", "sparsity": s, "engine": "eager", "batch": 64,
             "threads": 1, "speedup_vs_dense": sp} for s, sp in ((0.5, 2.0), (0.75, 4.0))]
    recs += [{"model": "m", "pattern": "channel", "variant": "masked", "sparsity": 0.5, "engine": "eager",
              "batch": 64, "threads": 1, "speedup_vs_dense": 1.0},
             {"model": "m", "pattern": "nm:2:4", "variant": "masked", "sparsity": 0.5, "engine": "eager", "batch": 64,
              "threads": 1, "speedup_vs_dense": 0.8}]
    at = latency_at(recs, "m", "channel", 0.5)
    assert at == {"relative_latency": 0.5, "variant": "compact", "interpolated": False, "extrapolated": False}
    assert latency_at(recs, "m", "channel", 0.25)["relative_latency"] == pytest.approx(0.75)  # halfway to dense
    assert latency_at(recs, "m", "channel", 0.625)["relative_latency"] == pytest.approx(0.375)
    far = latency_at(recs, "m", "channel", 0.9)
    assert far["extrapolated"] and far["relative_latency"] == pytest.approx(0.25)
    assert latency_at(recs, "m", "nm:2:4", 0.5)["relative_latency"] == pytest.approx(1.25)  # masked: slower
    assert latency_at(recs, "m", "unstructured", 0.5) is None
    assert latency_at(recs, "m", "channel", 0.5, batch=1) is None


def test_report_patterns_section(pattern_runs, tmp_path):
    from tickets.study.report import write_report

    out = tmp_path / "rep"
    report = write_report(pattern_runs, to=out).read_text()
    assert "## Sparsity patterns: standard vs robust tickets" in report
    assert "**Do robust tickets transfer better?**" in report
    assert "- **unstructured** (imp): do robust tickets transfer better? **yes**: robust − standard +1.50 points" in report
    assert "robust better in 3, standard in 0, 1 ties" in report
    assert "**channel** (imp): do robust tickets transfer better? **not measurably**" in report
    assert "4 cells are one run: both kinds drew the same mask" in report
    assert "No latencies" in report and "![standard vs robust tickets per pattern, m](patterns-m.png)" in report
    assert (out / "patterns-m.png").stat().st_size > 5000
    rvs = json.loads((out / "robust_vs_standard.json").read_text())
    assert len(rvs) == 4 * 2 + 4 * 2  # 4 cells × (unstructured, channel) × (own task, T)
    # with the benchmark's JSON beside the report: the score-vs-latency figure and table
    recs = [{"model": "m", "pattern": p, "variant": v, "sparsity": s, "engine": e, "batch": b, "threads": 1,
             "speedup_vs_dense": sp}
            for e in ("eager", "onnxruntime") for b in (1, 64)
            for p, v, s, sp in (("channel", "compact", 0.5, 2.0), ("channel", "compact", 0.75, 4.0),
                                ("unstructured", "masked", 0.5, 1.0), ("unstructured", "masked", 0.75, 1.0))]
    (out / "compaction.json").write_text(json.dumps({"meta": {"command": "python benchmarks/compaction.py"},
                                                     "records": recs}))
    report = write_report(pattern_runs, to=out).read_text()
    assert "No latencies" not in report and "(score-vs-latency-m.png)" in report
    lat = json.loads((out / "score_vs_latency.json").read_text())
    channel = {round(r["sparsity"], 2): r["relative_latency_eager_b64_t1"] for r in lat if r["pattern"] == "channel"}
    assert channel == {0.5: pytest.approx(0.5), 0.75: pytest.approx(0.25)}
    assert all(r["relative_latency_onnxruntime_b1_t1"] == pytest.approx(1.0) for r in lat
               if r["pattern"] == "unstructured")


def test_overlap_pairs_tickets_by_sparsity_not_by_level_number(tmp_path, monkeypatch):
    """IMP numbers its dense start level 0 and OMP does not: IMP's 50% ticket (level 2 here) must meet OMP's 50%
    ticket (level 1), never OMP's level-2 ticket of another sparsity (the text study's report paired them by level
    number and printed IoUs of 30% vs 10% tickets)."""
    import torch

    from tickets.masks import Mask
    from tickets.study.report import figures

    gen = torch.Generator().manual_seed(0)
    score = torch.rand(40, 10, generator=gen)

    def top(keep):  # keep the `keep` largest of a shared score
        flat = score.flatten()
        m = torch.zeros_like(flat, dtype=torch.bool)
        m[flat.argsort(descending=True)[:keep]] = True
        return Mask({"w": m.view_as(score)})

    noisy = score + 0.05 * torch.rand(40, 10, generator=gen)
    def top_noisy(keep):
        flat = noisy.flatten()
        m = torch.zeros_like(flat, dtype=torch.bool)
        m[flat.argsort(descending=True)[:keep]] = True
        return Mask({"w": m.view_as(score)})

    masks = {"imp0": top(400), "imp1": top(300), "imp2": top(200), "omp0": top_noisy(300), "omp1": top_noisy(200),
             "omp2": top_noisy(100)}
    tickets = [dict(path=p, model="m", source="t", method=p[:3], seed=0, level=int(p[3]),
                    sparsity=1 - masks[p].num_kept / 400) for p in masks]
    monkeypatch.setattr(figures, "_load_masks", lambda paths: {p: masks[p] for p in paths})
    _, _, records = figures.overlap_figures({"tickets": tickets}, tmp_path)
    cross = {round(r["sparsity"], 3): r for r in records if r["a"] != r["b"]}
    assert set(cross) == {0.25, 0.5}  # 0% (IMP only) and 75% (OMP only) have no partner
    assert cross[0.5]["iou"] == pytest.approx(masks["imp2"].iou(masks["omp1"]))
    assert cross[0.25]["iou"] == pytest.approx(masks["imp1"].iou(masks["omp0"]))
    assert cross[0.5]["level"] == 1



def test_methods_and_layer_panels_meet_at_equal_sparsity_not_level_number(tmp_path, monkeypatch):
    """IMP's BERT schedule reaches 30 / 50 / 70% at levels 3 / 5 / 7; OMP with explicit levels numbers them 1 / 2 / 3.
    The text study's report compared "methods at 30%" with OMP's and random's 70% scores (level 3 of each) and drew
    IMP's 30% and OMP's 70% tickets in one per-layer panel."""
    import torch

    from tickets.masks import Mask
    from tickets.study.report import figures
    from tickets.study.report.markdown import _findings

    imp = {lv: 0.80 - 0.01 * lv for lv in range(1, 8)}  # level lv = lv * 10%
    omp = {1: 0.81, 2: 0.79, 3: 0.70}  # 30 / 50 / 70%
    rows = list(DENSE)
    for seed in (0, 1, 2):
        rows += [_row("find", "A", seed, v, source="A", method="imp", level=lv, sparsity=lv / 10)
                 for lv, v in imp.items()]
        rows += [_row("find", "A", seed, v, source="A", method="omp", level=lv, sparsity=0.1 + 0.2 * lv)
                 for lv, v in omp.items()]
    lines = _findings({"rows": rows, "tickets": []}, highest_matching_table(rows), [], [])
    (methods,) = [line for line in lines if line.startswith("- Methods on")]
    assert "best at 3 sparsities" in methods and "at 70.0%: imp 73.0, omp 70.0" in methods, methods

    masks = {f"imp{lv}": Mask({"w": torch.arange(100) >= 10 * lv}) for lv in (1, 3, 7)}
    masks |= {f"omp{lv}": Mask({"w": torch.arange(100) < 100 - (10 + 20 * lv)}) for lv in (1, 3)}
    tickets = [dict(path=p, model="m", source="A", method=p[:3], seed=0, level=int(p[3]),
                    sparsity=1 - masks[p].num_kept / 100) for p in masks]
    monkeypatch.setattr(figures, "_load_masks", lambda paths: {p: masks[p] for p in paths})
    _, _, records = figures.layer_figures({"tickets": tickets}, tmp_path)
    # one panel per sparsity; its level is the lowest level number in it (as in the overlap records), so the 10%
    # and 30% panels both say level 1 — and must still not pool their tickets (n = 1 each, values unmixed)
    got = sorted((r["level"], r["method"], round(r["sparsity"], 2), r["n"]) for r in records)
    assert got == [(1, "imp", 0.1, 1), (1, "imp", 0.3, 1), (1, "omp", 0.3, 1), (3, "imp", 0.7, 1),
                   (3, "omp", 0.7, 1)], got

# -- runs of different settings, repeated runs, tickets without a recorded source -------------------------------
def _scores_of(curve: list[dict]) -> dict[int, list]:
    return {p["level"]: [round(p["score"].mean, 6), p["score"].n] for p in curve}


def test_runs_of_different_settings_never_share_a_curve(tmp_path):
    """The newcomer's folder: IMP with rewind step:5 and limit 300 beside IMP with the default rewind and limit 500,
    same task, method and seed. The old report made one "imp (own task)" curve of both (step:5's scores at the
    levels both have, the other run's beyond). Now: one curve per setting, each of its own runs, labelled by what
    differs; a run whose levels are the first of another's schedule (seed 1 below) shares that run's curve."""
    from tickets.study.matching import ticket_curves
    from tickets.study.report import write_report
    from tickets.study.report.collect import collect

    root = tmp_path / "runs"
    root.mkdir()
    theta0 = {"rewind": "theta0", "data": {**DATA, "limit": 500}}
    a = _find_run(root, "find-a", 0, [0.9, 0.80, 0.70], extra=theta0)
    _find_run(root, "find-a1", 1, [0.9, 0.84], extra=theta0)
    _find_run(root, "find-b", 0, [0.9, 0.60], extra={"rewind": "step:5", "data": {**DATA, "limit": 300}},
              masks={1: _mask(99, 0.5)})  # (a mask both settings drew would make its transfers rows of both)
    for name, epochs, score in (("transfer-e1", 1, 0.5), ("transfer-e3", 3, 0.55)):  # fine-tuned two ways
        _transfer_run(root, name, "T", 0, score, ticket_path=a / "level-01" / "ticket.safetensors",
                      checksum=_checksum(a, 1), sparsity=0.5, ticket_meta={"level": 1}, train={"epochs": epochs})
    ctx = collect(root)
    own_a, own_b = "imp [rewind theta0, limit 500]", "imp [rewind step:5, limit 300]"
    assert {r["method"] for r in ctx["rows"] if r["kind"] == "find"} == {own_a, own_b}
    assert {t["method"] for t in ctx["tickets"]} == {own_a, own_b}
    curves = ticket_curves(ctx["rows"])
    assert _scores_of(curves[("m", "S", 1.0, "S", own_a)]) == {1: [0.82, 2], 2: [0.7, 1]}
    assert _scores_of(curves[("m", "S", 1.0, "S", own_b)]) == {1: [0.6, 1]}
    moved = {k[4]: _scores_of(v) for k, v in curves.items() if k[1] == "T"}
    assert moved == {f"{own_a[:-1]}; fine-tune epochs 1]": {1: [0.5, 1]},
                     f"{own_a[:-1]}; fine-tune epochs 3]": {1: [0.55, 1]}}
    assert ctx["mixed_dense"] == [{"model": "m", "target": "S", "fraction": 1.0, "kind": "dense",
                                   "settings": ["limit 300", "limit 500"]}]
    report = write_report(root, to=tmp_path / "rep").read_text()
    assert "imp [rewind step:5, limit 300] (own task)" in report and "**Mixed dense baseline**" in report
    assert "- **Settings**: some runs differ in more than the seed" in report
    curve_rows = list(csv.DictReader(open(tmp_path / "rep" / "curves.csv")))
    assert {r["ticket"] for r in curve_rows if r["target"] == "S"} == {"dense", f"{own_a} (own task)",
                                                                       f"{own_b} (own task)"}


def test_a_study_of_one_setting_keeps_its_labels(pattern_runs):
    """Nothing differs but seeds (and robust vs standard, which the kind already says): no brackets anywhere."""
    from tickets.study.report.collect import collect

    ctx = collect(pattern_runs)
    assert not any(r.get("setting") for r in ctx["rows"]) and ctx["mixed_dense"] == [] and ctx["repeats"] == {}
    assert not any("[" in r["method"] for r in ctx["rows"] if r["method"])


def test_setting_labels_name_only_what_differs():
    from tickets.study.report.settings import run_setting, setting_labels

    base = {"model": "m", "task": "S", "method": "imp", "seed": 0, "rewind": "theta0", "levels": [0.0, 0.5, 0.75],
            "schedule": {"kind": "geometric", "levels": 2, "rate": 0.5}, "save_weights": False,
            "train": {**TRAIN, "adversarial": None}, "data": DATA}

    def labels(**configs):
        return setting_labels({k: run_setting(c, train_size=True) for k, c in configs.items()})

    # seeds, schedules cut short, output switches: one setting
    assert labels(a=base, b={**base, "seed": 1, "levels": [0.0, 0.5], "schedule": {"levels": 1},
                             "save_weights": True}) == {"a": "", "b": ""}
    assert labels(a=base, b={**base, "levels": [0.0, 0.6]}) == {"a": "levels 0,0.5,0.75", "b": "levels 0,0.6"}
    assert labels(a=base, b={**base, "rewind": "step:5", "train": {**base["train"], "lr": 0.01}}) == {
        "a": "rewind theta0, lr 0.05", "b": "rewind step:5, lr 0.01"}
    digest = "ab" * 32  # weights enter a config by content: written as 12 hex digits, absent as "default"
    assert labels(a=base, b={**base, "weights": {"sha256": digest}}) == {"a": "weights default",
                                                                         "b": "weights abababababab"}
    # robust is the kind's, not a setting: only how adversarial training is set is compared, between robust runs
    robust = {**base, "train": {**TRAIN, "adversarial": ADV}}
    assert labels(a=base, r=robust) == {"a": "", "r": ""}
    step5 = {**base, "rewind": "step:5"}  # the robust run reads like the standard run of its rewind: they pair
    assert labels(a=base, b=step5, r=robust) == {"a": "rewind theta0", "b": "rewind step:5", "r": "rewind theta0"}
    assert labels(a=base, r=robust, r8={**base, "train": {**TRAIN, "adversarial": {**ADV, "eps": 8.0}}}) == {
        "a": "", "r": "adversarial.eps 2", "r8": "adversarial.eps 8"}
    # a transfer's train_size is its data fraction, a find run's is part of its setting
    small = {**base, "data": {**DATA, "train_size": 50}}
    assert run_setting(small, train_size=False) == run_setting(base, train_size=False)
    assert labels(a=base, b=small) == {"a": "train_size 100", "b": "train_size 50"}


def test_a_repeated_run_is_read_once(tmp_path):
    """The same config and seed in two run directories (a run repeated elsewhere and copied in) is one
    measurement: read once (the copy with more finished levels), and the report says so."""
    import shutil

    from tickets.study.report import write_report
    from tickets.study.report.collect import collect

    root = tmp_path / "runs"
    root.mkdir()
    _find_run(root, "find-a", 0, [0.9, 0.8, 0.7])
    shutil.copytree(root / "find-a", root / "find-a-copy")
    (root / "find-a" / "level-02" / "DONE").unlink()  # the copy got further: it is the one read
    ctx = collect(root)
    assert ctx["repeats"] == {"find-a": "find-a-copy"}
    assert {r["run"] for r in ctx["rows"]} == {"find-a-copy"} and len(ctx["tickets"]) == 2
    report = write_report(root, to=tmp_path / "rep").read_text()
    assert "find-a (read: find-a-copy)" in report
    assert len(list(csv.DictReader(open(tmp_path / "rep" / "scores.csv")))) == 3  # dense level + 2 tickets


def _exported_ticket_runs(tmp_path: Path) -> Path:
    """A find run, a transfer of its level-2 ticket exported to another tool's format (the transfer records only
    checksum, format and path), a transfer of a foreign file no find run drew, and dense runs on T of two data
    limits."""
    root = tmp_path / "runs"
    root.mkdir()
    src = _find_run(root, "find-u0", 0, [0.9, 0.89, 0.85])
    _transfer_run(root, "transfer-x", "T", 0, 0.7, checksum=_checksum(src, 2), sparsity=0.75,
                  record={"checksum": _checksum(src, 2), "format": "pytorch-prune", "path": str(tmp_path / "masks.pt")})
    _transfer_run(root, "transfer-lone", "T", 0, 0.6, checksum="sha256:" + "0" * 64, sparsity=0.5,
                  record={"checksum": "sha256:" + "0" * 64, "format": "pytorch-prune", "path": "/x/nni.pt"})
    _transfer_run(root, "transfer-dense-T", "T", 0, 0.8)
    _transfer_run(root, "transfer-dense-T-300", "T", 0, 0.2, data={"limit": 300})
    return root


def test_a_ticket_exported_to_another_format_keeps_its_source(tmp_path, capsys):
    """`tickets transfer --ticket masks.pt` (exported with `tickets export --to torch-prune`) records no source
    task: the report crashed sorting None with task names. The find run that drew the mask gives source, method
    and level; a file no find run drew is called by its name, its method "ticket"."""
    from tickets.study.report.collect import collect

    root = _exported_ticket_runs(tmp_path)
    moved = {r["run"]: r for r in collect(root)["rows"] if r["kind"] == "transfer"}
    assert (moved["transfer-x"]["source"], moved["transfer-x"]["method"], moved["transfer-x"]["level"]) == ("S", "imp", 2)
    assert (moved["transfer-lone"]["source"], moved["transfer-lone"]["method"]) == ("nni.pt", "ticket")
    assert main(["report", str(root), "--to", str(tmp_path / "rep")]) == 0
    tickets = {r["ticket"] for r in csv.DictReader(open(tmp_path / "rep" / "curves.csv"))}
    assert {"imp from S", "ticket from nni.pt"} <= tickets


def test_double_win_names_exported_tickets_and_keeps_setups_apart(tmp_path):
    """The same cause in `tickets double-win`: "None None standard" became "S imp standard"; and a dense run with
    another data limit is no baseline for the ticket (runs of different setups are never pooled)."""
    from tickets.study.robust import collect_transfers, double_win, double_win_report

    root = _exported_ticket_runs(tmp_path)
    rows = {r["ticket"]: r for r in double_win(collect_transfers(root))}
    assert set(rows) == {"S imp standard [limit 50]", "nni.pt ticket standard [limit 50]"}
    assert rows["S imp standard [limit 50]"]["level"] == 2
    assert rows["S imp standard [limit 50]"]["dense_sa_standard"] == (0.8, 0.0, 1)
    assert "None" not in double_win_report(root)


def test_double_win_never_pools_tickets_of_different_patterns(pattern_runs):
    """Channel and unstructured tickets of one level and source are different tickets: `tickets double-win` pooled
    them into one "S imp standard" row (the group named source, method and robustness only)."""
    from tickets.study.robust import collect_transfers, double_win

    rows = {(r["ticket"], r["level"]): r for r in double_win(collect_transfers(pattern_runs))}
    assert {"S imp standard", "S imp channel standard", "S imp nm:2:4 pgd-3 eps 2"} <= {t for t, _ in rows}, rows
    unstructured, channel = rows[("S imp standard", 1)], rows[("S imp channel standard", 1)]
    assert unstructured["sa_standard"][0] == pytest.approx(0.79) and unstructured["sa_standard"][2] == 2
    assert channel["sa_standard"][0] == pytest.approx(0.705) and channel["sa_standard"][2] == 2


def test_setup_names_the_seeds_blocks_add(pattern_runs, tmp_path):
    """The Setup line said "Seeds: 0, 1 (every mean ± sd is over these seeds)" while the robust and channel blocks
    ran seeds 100…301 and the dense baseline pooled them (docs/results/patterns now reads "0, 1; blocks with their
    own seeds add 100, 101, …"); a plain folder of runs with several seed sets says the same."""
    from tickets.study.report import write_report

    write_report(pattern_runs, to=tmp_path / "rep")
    line = next(x for x in (tmp_path / "rep" / "report.md").read_text().splitlines() if "**Seeds**" in x)
    assert "over the seeds of its runs, listed with each point" in line, line  # a folder of runs, not a study


def test_double_win_counts_a_copied_run_once(pattern_runs):
    import shutil

    from tickets.study.robust import collect_transfers

    before = collect_transfers(pattern_runs)
    copy = pattern_runs / "elsewhere"
    copy.mkdir()
    shutil.copytree(pattern_runs / "transfer-unstructured-0-1-0", copy / "transfer-unstructured-0-1-0")
    shutil.copytree(pattern_runs / "transfer-dense-T-0", copy / "transfer-copied-dense")
    assert len(collect_transfers(pattern_runs)) == len(before)


def test_kinds_sort_with_missing_fields(tmp_path):
    """Every sort of ticket kinds takes a missing source or method (rows and tickets read by other tools)."""
    from tickets.study.report import figures
    from tickets.study.report.labels import ticket_label

    rows = ROWS + [_row("transfer", "A", 0, 0.9, source=None, method="imp", level=1, sparsity=0.5)]
    files, _, records = figures.curve_figures({"rows": rows}, tmp_path)
    assert files and "imp from an unknown task" in {r["ticket"] for r in records}
    tickets = [{"model": "m", "source": s, "method": m, "level": 1} for s, m in (("A", "imp"), (None, "omp"),
                                                                               ("B", None))]
    (_, _, kinds), = figures._tickets_by_model({"tickets": tickets})
    assert kinds == [("A", "imp"), ("B", None), (None, "omp")]
    assert ticket_label(None, "A", None) == "ticket from an unknown task"
