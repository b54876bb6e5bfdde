"""Every ticket-drawing method under every structured pattern, end to end through the CLI on a small CNN: each
level's ticket honours its pattern when loaded back, a rerun redoes nothing (level 0's dense ticket of an N:M walk
included — it used to fail verification and retrain), and a structured ticket transfers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickets.ticket import load_ticket

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--model", "small-cnn", "--task", "digits-5-9", "--epochs", "1", "--train-size", "120", "--max-steps", "2",
          "--batch-size", "32", "--device", "cpu", "--threads", "1", "--quiet"]


def _cli(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tickets", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("pattern", ["channel", "nm:2:4"])
@pytest.mark.parametrize("method", ["imp", "omp", "random", "reverse", "reinit"])
def test_every_method_draws_valid_structured_tickets(method, pattern, tmp_path):
    levels = ["--sparsities", "0.3,0.5"] if pattern == "channel" else []
    first = _cli("find", *COMMON, "--method", method, "--pattern", pattern, *levels, "--out", "runs", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (run,) = [r for r in (tmp_path / "runs").glob("find-*")  # reinit also runs the IMP it takes masks from
              if f"method: {method}" in (r / "config.yaml").read_text()]
    tickets = sorted(run.glob("level-*/ticket.safetensors"))
    assert len(tickets) >= (2 if method == "imp" else 1)
    for path in tickets:
        t = load_ticket(path)  # verifies the mask against the recorded pattern
        assert t.meta["pattern"]["name"] == pattern.split(":")[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary  # the run finished and summarised
    if method != "imp":
        return
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("level-*/metrics.json")}
    again = _cli("find", *COMMON, "--method", method, "--pattern", pattern, *levels, "--out", "runs", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "redoing" not in again.stderr
    assert {p: p.stat().st_mtime_ns for p in run.glob("level-*/metrics.json")} == stamps  # nothing retrained


def test_imp_walks_an_nm_list_and_a_channel_ticket_transfers(tmp_path):
    walk = _cli("find", *COMMON, "--pattern", "nm:3:4,2:4", "--out", "runs", cwd=tmp_path)
    assert walk.returncode == 0, walk.stderr
    (run,) = (tmp_path / "runs").glob("find-*")
    sparsities = [round(load_ticket(p).meta["sparsity"], 3) for p in sorted(run.glob("level-*/ticket.safetensors"))]
    assert sparsities == [0.0, 0.25, 0.5]
    chan = _cli("find", *COMMON, "--method", "omp", "--pattern", "channel", "--sparsities", "0.5", "--out", "c",
                cwd=tmp_path)
    assert chan.returncode == 0, chan.stderr
    ticket = sorted((tmp_path / "c").glob("find-*/level-*/ticket.safetensors"))[-1]
    moved = _cli("transfer", *[a for a in COMMON if a != "digits-5-9"][:3], "digits-0-4", *COMMON[4:],
                 "--ticket", str(ticket), "--out", "t", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert "50.00%" in moved.stdout or "sparsity" in moved.stdout
