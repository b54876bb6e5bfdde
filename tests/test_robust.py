"""Double-win verdicts and the standard-vs-robust ticket comparison, on synthetic transfer runs (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.study.robust import (collect_transfers, compare_tickets, double_win, double_win_report, format_compare,
                            matches, mean_std, plot_compare)
from tickets.ticket import Ticket, load_ticket, save_ticket

ADV = {"attack": "pgd", "eps": 2.0, "alpha": 1.0, "steps": 3, "clean_fraction": 0.0}


def fake_run(root: Path, name: str, *, task="cifar100", seed=0, ticket=None, adv=None, sa=0.5, ra=None,
             sparsity=0.0) -> None:
    run = root / f"transfer-{name}"
    (run / "level-00").mkdir(parents=True)
    config = {"model": "resnet20-cifar10", "task": task, "seed": seed, "train": {"adversarial": adv},
              "ticket": None if ticket is None else {"checksum": ticket["checksum"], "sparsity": sparsity}}
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
