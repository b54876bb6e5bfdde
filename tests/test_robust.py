"""Double-win verdicts and the standard-vs-robust ticket comparison, on synthetic transfer runs (no training);
the robust-tickets study's own report (examples/robust_tickets_report.py) on a small fixture."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from tickets.config import to_dict
from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.runs import config_hash
from tickets.study.robust import (collect_transfers, compare_tickets, double_win, double_win_report, format_compare,
                                  matches, mean_std, plot_compare)
from tickets.ticket import Ticket, load_ticket, save_ticket

ADV = {"attack": "pgd", "eps": 2.0, "alpha": 1.0, "steps": 3, "clean_fraction": 0.0}
ROOT = Path(__file__).resolve().parents[1]


def fake_run(root: Path, name: str, *, task="cifar100", seed=0, ticket=None, adv=None, sa=0.5, ra=None,
             sparsity=0.0, setup: dict | None = None) -> None:
    """A finished transfer run; ``setup`` adds config keys (data, head, …) next to train.adversarial."""
    run = root / f"transfer-{name}"
    (run / "level-00").mkdir(parents=True)
    config = {"model": "resnet20-cifar10", "task": task, "seed": seed, **(setup or {}),
              "ticket": None if ticket is None else {"checksum": ticket["checksum"], "sparsity": sparsity}}
    config["train"] = {**config.get("train", {}), "adversarial": adv}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = {"task": task, "seed": seed, "primary_metric": "accuracy", "test": {"accuracy": sa},
               "sparsity": sparsity, "ticket": ticket}
    if ra is not None:
        metrics["robust"] = {"attack": "pgd", "eps": 2.0, "alpha": 0.5, "steps": 20, "examples": 500,
                             "robust_accuracy": ra, "clean_accuracy": sa}
    (run / "level-00" / "metrics.json").write_text(json.dumps(metrics))
    (run / "level-00" / "DONE").write_text("")


def ticket_info(level: int, drawn=None, checksum=None) -> dict:
    return {"checksum": checksum or f"sha256:{level}{'r' if drawn else 's'}", "source_task": "cifar10",
            "method": "imp", "level": level, "seed": 0, "adversarial": drawn, "path": "/nowhere"}


def test_mean_std_and_matching_rules():
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([0.4, 0.6])
    assert m == pytest.approx(0.5) and s == pytest.approx(0.1414, abs=1e-4)  # sample std (ddof 1)
    assert matches([0.37], [0.4, 0.6], "std") is True  # 0.37 ≥ 0.5 − 0.141
    assert matches([0.37], [0.4, 0.6], "mean") is False
    assert matches([0.5], [0.4, 0.6], "mean") is True
    assert matches([], [0.5]) is None and matches([0.5], []) is None
    with pytest.raises(TicketsError):
        matches([0.5], [0.5], "median")


@pytest.fixture
def runs(tmp_path):
    """Dense and two tickets (levels 1, 2) on cifar100, seeds 0/1, standard + adversarial transfer, all with RA.
    Level 1 matches everywhere; level 2 loses on adversarial RA. Level 3 has no adversarial runs at all."""
    for seed in (0, 1):
        fake_run(tmp_path, f"d-s{seed}", seed=seed, sa=0.60 + 0.01 * seed, ra=0.02)
        fake_run(tmp_path, f"da-s{seed}", seed=seed, adv=ADV, sa=0.50 + 0.01 * seed, ra=0.30 + 0.01 * seed)
        fake_run(tmp_path, f"t1-s{seed}", seed=seed, ticket=ticket_info(1), sparsity=0.4, sa=0.60, ra=0.02)
        fake_run(tmp_path, f"t1a-s{seed}", seed=seed, ticket=ticket_info(1), adv=ADV, sparsity=0.4, sa=0.51,
                 ra=0.31)
        fake_run(tmp_path, f"t2-s{seed}", seed=seed, ticket=ticket_info(2), sparsity=0.64, sa=0.61, ra=0.02)
        fake_run(tmp_path, f"t2a-s{seed}", seed=seed, ticket=ticket_info(2), adv=ADV, sparsity=0.64, sa=0.51,
                 ra=0.20)
        fake_run(tmp_path, f"t3-s{seed}", seed=seed, ticket=ticket_info(3), sparsity=0.78, sa=0.61, ra=0.02)
    (tmp_path / "transfer-unfinished" / "level-00").mkdir(parents=True)  # no DONE: ignored
    return tmp_path


def test_double_win_verdicts(runs):
    records = collect_transfers(runs)
    assert len(records) == 14
    assert {r["regime"] for r in records} == {"standard", "adversarial"}
    rows = {r["level"]: r for r in double_win(records)}
    assert rows[1]["double_win"] is True and rows[1]["missing"] == ""
    assert rows[2]["double_win"] is False and rows[2]["match_ra_adversarial"] is False
    assert rows[2]["match_sa_standard"] is True
    assert rows[3]["double_win"] is None and "adversarial" in rows[3]["missing"]
    assert rows[1]["sa_standard"][2] == 2 and rows[1]["dense_ra_adversarial"][0] == pytest.approx(0.305)
    # the stricter rule: ticket 1's standard SA (0.60) is below the dense mean (0.605)
    assert {r["level"]: r for r in double_win(records, "mean")}[1]["double_win"] is False


def test_double_win_cli_and_files(runs, tmp_path_factory, capsys):
    from tickets.cli import main

    out = tmp_path_factory.mktemp("dw") / "double-win"
    assert main(["double-win", str(runs), "--to", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| cifar100 | cifar10 imp standard | 40.0% |" in text and "| yes |" in text and "| no |" in text
    assert "Highest double-win sparsity" in text and "40.0%" in text
    assert out.with_suffix(".md").read_text() == text
    rows = json.loads(out.with_suffix(".json").read_text())
    assert {r["level"]: r["double_win"] for r in rows} == {1: True, 2: False, 3: None}
    assert "sa_standard_mean" in out.with_suffix(".csv").read_text().splitlines()[0]
    assert main(["double-win", str(runs / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_missing_robust_eval_is_unknown_not_a_verdict(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path, f"d-s{seed}", seed=seed, sa=0.6)
        fake_run(tmp_path, f"da-s{seed}", seed=seed, adv=ADV, sa=0.5)
        fake_run(tmp_path, f"t-s{seed}", seed=seed, ticket=ticket_info(1), sa=0.6, sparsity=0.4)
        fake_run(tmp_path, f"ta-s{seed}", seed=seed, ticket=ticket_info(1), adv=ADV, sa=0.5, sparsity=0.4)
    (row,) = double_win(collect_transfers(tmp_path))
    assert row["double_win"] is None and "--robust-eval" in row["missing"]
    assert "?" in double_win_report(tmp_path)


def test_compare_standard_and_robust_tickets(tmp_path):
    def find_dir(name: str, seed: int) -> Path:
        d = tmp_path / f"{name}-{seed}"
        for level in (1, 2):
            gen = torch.Generator().manual_seed(seed * 10 + level + 100 * len(name))
            mask = Mask({"w": torch.rand(40, generator=gen) > 0.3 * level})
            save_ticket(d / f"level-{level:02d}" / "ticket.safetensors",
                        Ticket(mask, {"model": "m", "level": level, "seed": seed, "method": "imp"}))
        return d

    finds = {"standard": [find_dir("std", 0), find_dir("std", 1)],
             "robust": [find_dir("robust", 0), find_dir("robust", 1)]}
    runs = tmp_path / "runs"
    for seed in (0, 1):
        fake_run(runs, f"d-s{seed}", task="fashion-mnist", seed=seed, sa=0.80 + 0.02 * seed)
        for kind, dirs in finds.items():
            for level in (1, 2):
                meta = load_ticket(dirs[seed] / f"level-{level:02d}" / "ticket.safetensors").meta
                score = 0.8 - 0.1 * level + (0.05 if kind == "robust" else 0.0)
                fake_run(runs, f"{kind}-{level}-s{seed}", task="fashion-mnist", seed=seed, sparsity=0.3 * level,
                         ticket=ticket_info(level, ADV if kind == "robust" else None, meta["checksum"]), sa=score)
    fake_run(runs, "other", task="fashion-mnist", ticket=ticket_info(1, checksum="sha256:foreign"), sa=0.1)
    rows = compare_tickets(collect_transfers(runs), finds)
    assert [(r["task"], r["level"]) for r in rows] == [("fashion-mnist", 1), ("fashion-mnist", 2)]
    assert rows[0]["standard"][0] == pytest.approx(0.7) and rows[0]["robust"][0] == pytest.approx(0.75)
    assert rows[0]["robust"][2] == 2 and rows[0]["dense"][2] == 2  # the foreign ticket is not counted
    assert rows[0]["robust_matches"] is False and rows[0]["standard_sparsity"] == pytest.approx(0.3)
    table = format_compare(rows, ["standard", "robust"])
    assert "| fashion-mnist | 1 | 30.0% |" in table and "+5.00" in table
    png = plot_compare(rows, ["standard", "robust"], tmp_path / "plot.png", title="t")
    assert png.stat().st_size > 1000


# -- the robust-tickets study's report (examples/robust_tickets_report.py) ---------------------------------------
def _example(name: str):
    """A module of examples/, loaded by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name[:-3].replace("-", "_"), ROOT / "examples" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study_report():
    return _example("robust_tickets_report.py")


def test_study_find_configs_are_the_commands_it_runs(study_report, monkeypatch):
    """find_config(kind, seed) is the config `tickets find` builds from the script's own command lines."""
    from tickets.cli import main

    script = _example("robust-tickets.py")
    seen = []

    def fake_find_tickets(cfg, **kwargs):
        seen.append(cfg)
        return SimpleNamespace(path=Path(kwargs["out"]) / "find-x", levels=[])

    monkeypatch.setattr("tickets.verbs.find.find_tickets", fake_find_tickets)
    for kind, extra in (("standard", []), ("robust", script.ROBUST)):
        for seed in script.SEEDS:
            assert main([*script.FIND[1:], *extra, "--seed", str(seed), "--out", script.OUT, "--quiet"]) == 0
            mine = study_report.find_config(kind, seed)
            assert seen[-1] == mine and config_hash(to_dict(seen[-1])) == config_hash(to_dict(mine))
    assert len(seen) == 4 and seen[0] != seen[2]  # standard and robust differ
    with pytest.raises(TicketsError, match="unknown ticket kind"):
        study_report.find_config("fgsm", 0)


def test_study_find_run_paths_are_its_recorded_runs(study_report, shared_data, shared_models, tmp_path):
    """find_run_path resolves the study's configs to the find runs it made (names recorded in source.json)."""
    recorded = {(r["kind"], r["seed"]): r["run"]
                for r in json.loads((ROOT / "docs/results/robust-tickets/source.json").read_text())}
    assert len(recorded) == 4
    for (kind, seed), run in sorted(recorded.items()):
        cfg = study_report.find_config(kind, seed)
        assert study_report.find_run_path(cfg, tmp_path, data_root=shared_data, model_root=shared_models) == \
            tmp_path / run


def test_study_report_files(study_report, tmp_path, monkeypatch):
    """robust_transfer_report on finds, transfers and a steps log: tables, CSV/JSON columns, costs, plot."""
    shared = study_report.SHARED_SETUP
    finds, out = {}, tmp_path / "runs"
    for kind in ("standard", "robust"):
        for seed in (0, 1):
            d = tmp_path / "finds" / f"{kind}-{seed}"
            levels = []
            for level in (0, 1, 2):
                gen = torch.Generator().manual_seed(seed * 10 + level + 100 * len(kind))
                mask = Mask({"w": torch.rand(40, generator=gen) >= 0.3 * level})
                save_ticket(d / f"level-{level:02d}" / "ticket.safetensors",
                            Ticket(mask, {"model": "m", "level": level, "seed": seed, "method": "imp"}))
                m = {"level": level, "sparsity": 0.3 * level, "primary_metric": "accuracy",
                     "test": {"accuracy": 0.9 - 0.05 * level}, "train_seconds": 10.0}
                if kind == "robust":
                    m["robust"] = {**ADV, "alpha": 0.5, "steps": 20, "examples": 500, "robust_accuracy": 0.3,
                                   "clean_accuracy": 0.88}
                (d / f"level-{level:02d}" / "metrics.json").write_text(json.dumps(m))
                levels.append(m)
                if level:
                    checksum = load_ticket(d / f"level-{level:02d}" / "ticket.safetensors").meta["checksum"]
                    fake_run(out, f"{kind}-{level}-s{seed}", task="fashion-mnist", seed=seed, sparsity=0.3 * level,
                             ticket=ticket_info(level, ADV if kind == "robust" else None, checksum), setup=shared,
                             sa=0.8 - 0.1 * level + (0.05 if kind == "robust" else 0.0))
            (d / "summary.json").write_text(json.dumps({"config": {"seed": seed}, "levels": levels}))
            finds[(kind, seed)] = d
    for seed in (0, 1):
        fake_run(out, f"dense-s{seed}", task="fashion-mnist", seed=seed, sa=0.81, setup=shared)
    other = {**shared, "data": {"train_size": 500}}  # another study's runs in the same folder: never counted
    fake_run(out, "dense-other", task="fashion-mnist", sa=0.2, setup=other)
    checksum = load_ticket(finds[("standard", 0)] / "level-01" / "ticket.safetensors").meta["checksum"]
    fake_run(out, "standard-other", task="fashion-mnist", sparsity=0.3, ticket=ticket_info(1, None, checksum), sa=0.2,
             setup=other)
    steps = tmp_path / "steps.jsonl"
    log = [{"step": f"find-{k}-s{s}", "rc": 0, "cpu_s": c, "wall_s": c} for k, c in (("standard", 100.0),
                                                                                     ("robust", 400.0)) for s in (0, 1)]
    log += [{"step": "find-robust-s0", "rc": 0, "cpu_s": 1.0, "wall_s": 1.0},  # a resume that skipped: not its cost
            {"step": "find-robust-s1", "rc": 1, "cpu_s": 900.0, "wall_s": 900.0},  # failed attempt: ignored
            {"step": "cost-find-standard", "rc": 0, "cpu_s": 10.0, "wall_s": 10.0},
            {"step": "cost-find-pgd3", "rc": 0, "cpu_s": 40.0, "wall_s": 40.0}]
    steps.write_text("".join(json.dumps(r) + "\n" for r in log) + "not json\n")
    assert study_report.read_steps(steps)["find-robust-s0"]["cpu_s"] == 400.0
    assert study_report.read_steps(steps)["find-robust-s1"]["cpu_s"] == 400.0
    monkeypatch.setattr(study_report, "find_run_path",  # the finds named in the steps log, without loading data
                        lambda cfg, out: finds[("robust" if cfg.train.adversarial else "standard", cfg.seed)])

    results = tmp_path / "results"
    text = study_report.robust_transfer_report(out, results, steps)
    for name in ("transfer.md", "transfer.csv", "transfer.json", "source.csv", "source.json", "costs.json",
                 "robust-tickets.png"):
        assert (results / name).stat().st_size > 0, name
    assert not (results / "double-win.md").exists()  # no run has robust accuracy
    assert "| fashion-mnist | 1 | 30.0% | 81.00 ± 0.00 | 70.00 ± 0.00 | 75.00 ± 0.00 | +5.00 |" in text
    assert (results / "transfer.md").read_text() in text
    header = (results / "transfer.csv").read_text().splitlines()[0].split(",")
    assert header == ["task", "level"] + [f"{k}_{s}" for k in ("dense",) for s in ("mean", "std", "n")] + \
        [f"{k}_{s}" for k in ("standard", "robust") for s in ("mean", "std", "n", "sparsity", "matches")]
    rows = json.loads((results / "transfer.json").read_text())
    assert [(r["level"], r["dense_n"], r["robust_n"]) for r in rows] == [(1, 2, 2), (2, 2, 2)]  # "other" excluded
    source = json.loads((results / "source.json").read_text())
    assert len(source) == 12 and {r["robust_attack"] for r in source} == {None, "pgd-20 eps 2"}
    costs = json.loads((results / "costs.json").read_text())
    assert costs["robust_over_standard"]["find_cpu_s_mean"] == pytest.approx(4.0)
    assert costs["drawing_over_standard"] == {"standard": 1.0, "pgd3": 4.0}
    assert "| robust | 2 | 60.0% | 80.00 ± 0.00 | 30.00 ± 0.00 (pgd-20 eps 2; 500) |" in text
