"""Rank-aware I/O (tickets.runtime): only rank 0 writes files and log lines in a data-parallel process group.

Two CPU processes in a gloo group (torch.multiprocessing.spawn) each try to write the same files; only rank 0's
land. Without a process group, every function answers as a single process and every write happens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tickets import runtime
from tickets.fileio import atomic_write_text, read_json, write_json, write_rows
from tickets.runs import RunDir


def test_single_process_is_rank_zero_and_writes(tmp_path):
    assert not dist.is_initialized()
    assert (runtime.rank(), runtime.world_size(), runtime.is_main_process()) == (0, 1, True)
    runtime.barrier()  # returns at once without a group
    atomic_write_text(tmp_path / "a.txt", "x")
    run = RunDir(tmp_path, "find", {"k": 1})
    run.log("hello")
    assert (tmp_path / "a.txt").read_text() == "x"
    assert [e["event"] for e in run.events()] == ["hello"]


def _worker(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        assert runtime.rank() == rank and runtime.world_size() == world
        assert runtime.is_main_process() == (rank == 0)
        root = Path(out)
        # every rank writes the same path with its own content, and a path of its own
        atomic_write_text(root / "shared.txt", f"rank {rank}")
        write_json(root / f"only-{rank}.json", {"rank": rank})
        write_rows([{"rank": rank}], root / f"rows-{rank}")
        run = RunDir(root / "runs", "find", {"same": "config"})  # config.yaml: rank 0 only
        run.log("event", rank=rank)
        run.mark_done(0)
        run.save_checkpoint(1, {"w": torch.full((2,), float(rank))})
        runtime.barrier()  # rank 0 has written everything: every rank may read now
        assert read_json(root / "only-0.json") == {"rank": 0}
        assert (root / "shared.txt").read_text() == "rank 0"
        runtime.barrier()
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_group_only_rank_zero_writes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    assert (out / "shared.txt").read_text() == "rank 0"
    assert (out / "only-0.json").exists() and not (out / "only-1.json").exists()
    assert (out / "rows-0.csv").exists() and not (out / "rows-1.csv").exists()
    run = next((out / "runs").glob("find-*"))
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(e["event"], e["rank"]) for e in lines] == [("event", 0)]
    assert (run / "config.yaml").exists() and (run / "level-00" / "DONE").exists()
    ckpt = torch.load(run / "level-01" / "checkpoint.pt", weights_only=True)
    assert torch.equal(ckpt["w"], torch.zeros(2))  # rank 0's state, not rank 1's
    leftovers = [p.name for p in out.rglob(".*.tmp")]
    assert leftovers == []


def test_fileio_does_not_import_torch():
    """The rank check must not pull torch into light modules (fileio is imported by report-only tools)."""
    import subprocess
    import sys

    code = "import sys, tickets.fileio, tickets.runtime; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["cpu", "auto"])
def test_resolve_device_still_resolves(name):
    assert runtime.resolve_device(name).type == "cpu" or torch.cuda.is_available()
