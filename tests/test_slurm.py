"""`tickets run --executor slurm` through submitit, tested with submitit's local executor (each job a subprocess,
as on a Slurm node): the same run directories, tickets and metrics as the local executor; transfers submitted only
once their ticket exists; a crashed job resubmitted; the `slurm:` key validated with lines and mapped onto
submitit's parameters."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from run_compare import run_names, without_timings
from tickets.cli import main
from tickets.errors import TicketsError
from tickets.study.execute import run_experiment
from tickets.study.spec import load_experiment

STUDY = """\
name: tiny
models: [small-cnn]
seeds: [0]
schedule: {kind: geometric, rate: 0.5, levels: 2}
train: {epochs: 2, batch_size: 32, optimizer: adamw, lr: 0.003}
data: {train_size: 200, limit: 100}
find:
  - tasks: [digits-5-9]
    methods: [imp]
transfer:
  - from: [digits-5-9]
    to: [digits-0-4]
    methods: [imp]
resources:
  find: {cpus: 1}
slurm: {partition: cpu, time_min: 10, cpus_per_task: 1, array_parallelism: 4, mem_gb: 2}
"""

PLUGIN = '''\
import os
from pathlib import Path

from tickets.methods import METHODS
from tickets.methods.magnitude import OMP


class RaiseOnce(OMP):
    """OMP whose first attempt raises an unexpected error (a marker file remembers the attempt)."""

    name = "raise-once-slurm"

    def draw(self, ctx, level, sparsity):
        marker = Path(os.environ["TICKETS_TEST_MARKERS"]) / "raise"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            raise RuntimeError("injected failure on the first attempt")
        return super().draw(ctx, level, sparsity)


METHODS.register("raise-once-slurm", RaiseOnce)
'''
PLUGIN_MODULE = "tickets_test_flaky_slurm"




@pytest.fixture
def worker_env(monkeypatch):
    """Job subprocesses import tickets from this checkout (as an installed package would be found on a node)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    return monkeypatch


@pytest.mark.slurm
def test_slurm_local_equals_local_executor(worker_env, tmp_path, capsys):
    pytest.importorskip("submitit")
    exp = tmp_path / "study.yaml"
    exp.write_text(STUDY)
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    assert run_experiment(exp, out=local, device="cpu", progress=False, report=False,
                          stream=open(os.devnull, "w")) == 0
    assert run_experiment(exp, out=slurm, device="cpu", progress=False, report=False, executor="slurm",
                          executor_options={"cluster": "local", "poll_seconds": 0.5}) == 0
    text = capsys.readouterr().out
    names = run_names(local)
    assert names == run_names(slurm) and len(names) == 5  # 2 dense, 1 find, 2 transfers
    n = 0
    for name in names:
        for f in sorted((local / name).rglob("*")):
            rel = f.relative_to(local / name)
            if f.name == "ticket.safetensors":
                assert f.read_bytes() == (slurm / name / rel).read_bytes(), rel
                n += 1
            elif f.name == "metrics.json":
                a, b = json.loads(f.read_text()), json.loads((slurm / name / rel).read_text())
                assert a["test"] == b["test"] and without_timings(a) == without_timings(b), rel
                n += 1
    assert n == 3 * 2 + 4  # the find's 3 levels (ticket + metrics), 4 transfer and dense runs (metrics)
    # each job ran in its own process (the job logs submitit keeps), transfers in a later wave than the find
    logs = list((slurm / "study-tiny" / "slurm").glob("*_log.out"))
    assert len(logs) == 5
    submitted = [ln for ln in text.splitlines() if "] submitted " in ln]
    assert [("transfer" in ln) for ln in submitted] == [False] * 3 + [True] * 2
    assert "5/5 jobs done" in text


@pytest.mark.slurm
def test_slurm_resubmits_a_crashed_job(worker_env, tmp_path, capsys):
    pytest.importorskip("submitit")
    from tickets import registry
    from tickets.methods import METHODS

    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / f"{PLUGIN_MODULE}.py").write_text(PLUGIN)
    markers = tmp_path / "markers"
    markers.mkdir()
    worker_env.setenv("PYTHONPATH", os.pathsep.join((str(plugin_dir), os.environ["PYTHONPATH"])))
    worker_env.setenv("TICKETS_TEST_MARKERS", str(markers))
    worker_env.syspath_prepend(str(plugin_dir))
    registry.load_plugins([PLUGIN_MODULE])
    try:
        exp = tmp_path / "flaky.yaml"
        exp.write_text("models: [small-cnn]\nschedule: {sparsities: [0.5]}\ntrain: {epochs: 1}\n"
                       "data: {train_size: 60, limit: 30}\ndense: false\n"
                       "find:\n  - tasks: [digits-5-9]\n    methods: [raise-once-slurm]\n")
        out = tmp_path / "runs"
        assert run_experiment(exp, out=out, device="cpu", progress=False, report=False, executor="slurm",
                              executor_options={"cluster": "local", "poll_seconds": 0.5, "retries": 1}) == 0
    finally:
        METHODS.unregister("raise-once-slurm")
        registry._PLUGINS_LOADED.discard(PLUGIN_MODULE)
        sys.modules.pop(PLUGIN_MODULE, None)
    text = capsys.readouterr().out
    assert "RuntimeError: injected failure on the first attempt" in text and "retry 1/1" in text
    assert int((markers / "raise").read_text()) != os.getpid()  # the first attempt ran in a job process
    assert len(list((out / "study-flaky" / "slurm").glob("*_log.out"))) == 2
    (run,) = [p for p in out.iterdir() if p.name.startswith("find-")]
    assert (run / "level-00" / "DONE").exists()


def test_slurm_without_sbatch_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    if shutil.which("sbatch"):
        pytest.skip("this machine has Slurm")
    exp = tmp_path / "study.yaml"
    exp.write_text(STUDY)
    assert main(["run", str(exp), "--executor", "slurm", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tickets: error: --executor slurm needs Slurm's `sbatch` on PATH: run `tickets run` on a Slurm "
                   "login node, or use --executor local or ray"]


def test_slurm_key_is_validated_with_its_line(tmp_path):
    base = STUDY.split("slurm:")[0]
    line = base.count("\n") + 1
    exp = tmp_path / "bad.yaml"
    cases = {
        "slurm: {partition: gpu, time_min: 0}\n": "slurm.time_min must be a whole number >= 1, got 0",
        "slurm: {gpus_per_node: 1.5}\n": "slurm.gpus_per_node must be a whole number >= 0",
        "slurm: {partition: ''}\n": "slurm.partition must be a non-empty name",
        "slurm: {nodes: 2}\n": "unknown key 'nodes' in slurm: valid keys are account, array_parallelism",
        "slurm: {mem_gb: -4}\n": "slurm.mem_gb must be a number > 0",
    }
    for tail, message in cases.items():
        exp.write_text(base + tail)
        with pytest.raises(TicketsError) as err:
            load_experiment(exp)
        assert str(err.value).startswith(f"{exp}:{line}: ") and message in str(err.value), str(err.value)


def test_slurm_parameters_from_yaml(tmp_path):
    pytest.importorskip("submitit")
    from tickets.study.executors.base import job_resources
    from tickets.study.executors.slurm import SlurmExecutor
    from tickets.study.plan import plan

    exp_path = tmp_path / "study.yaml"
    exp_path.write_text(STUDY.replace("find: {cpus: 1}", "find: {cpus: 3, gpus: 1}"))
    exp = load_experiment(exp_path)
    _, jobs = plan(exp, tmp_path / "runs")

    class FakeStudy:  # what SlurmExecutor.parameters reads
        pass

    study = FakeStudy()
    study.exp = exp
    ex = SlurmExecutor(cluster="local")
    find = next(j for j in jobs if j.kind == "find")
    dense = next(j for j in jobs if j.kind == "dense")
    p_find = ex.parameters(study, "find", job_resources(study, find))
    p_dense = ex.parameters(study, "dense", job_resources(study, dense))
    assert p_find == {"name": "tickets-tiny-find", "timeout_min": 10, "cpus_per_task": 3, "gpus_per_node": 1,
                      "mem_gb": 2, "slurm_partition": "cpu", "slurm_array_parallelism": 4}
    assert (p_dense["cpus_per_task"], p_dense["gpus_per_node"]) == (1, 0)  # slurm.cpus_per_task; no GPU
    with pytest.raises(TicketsError, match="unknown submitit cluster"):
        SlurmExecutor(cluster="pbs")
