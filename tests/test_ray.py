"""`tickets run --executor ray`: a local 2-CPU Ray cluster started by the test runs the tiny study; its run
directories, tickets and metrics equal the local executor's bit for bit; a rerun skips everything; a worker killed
mid-job (and one raising) is retried and the study completes; the `resources:` key is validated with lines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from run_compare import run_names, without_timings
from tickets.cli import main
from tickets.errors import TicketsError
from tickets.study.execute import EXECUTORS, run_experiment
from tickets.study.spec import load_experiment

STUDY = """\
name: tiny
models: [small-cnn]
seeds: [0, 1]
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
  find: {cpus: 1, gpus: 0}
  transfer: {cpus: 1}
  dense: {cpus: 1}
"""

FLAKY = """\
name: flaky
models: [small-cnn]
seeds: [0]
schedule: {sparsities: [0.5]}
train: {epochs: 1, batch_size: 32}
data: {train_size: 60, limit: 30}
dense: false
find:
  - tasks: [digits-5-9]
    methods: [crash-once, raise-once]
"""

# A plugin whose methods fail on their first attempt (a marker file remembers the attempt across processes):
# crash-once kills its own worker process mid-job, raise-once raises an unexpected error.
PLUGIN = '''\
import os
from pathlib import Path

from tickets.methods import METHODS
from tickets.methods.magnitude import OMP


def first_attempt(tag):
    marker = Path(os.environ["TICKETS_TEST_MARKERS"]) / tag
    if marker.exists():
        return False
    marker.write_text(str(os.getpid()))
    return True


class CrashOnce(OMP):
    """OMP whose first attempt kills its process, as the kernel's OOM killer would."""

    name = "crash-once"

    def draw(self, ctx, level, sparsity):
        if first_attempt("crash"):
            os._exit(3)
        return super().draw(ctx, level, sparsity)


class RaiseOnce(OMP):
    """OMP whose first attempt raises an unexpected error."""

    name = "raise-once"

    def draw(self, ctx, level, sparsity):
        if first_attempt("raise"):
            raise RuntimeError("injected failure on the first attempt")
        return super().draw(ctx, level, sparsity)


METHODS.register("crash-once", CrashOnce)
METHODS.register("raise-once", RaiseOnce)
'''
PLUGIN_MODULE = "tickets_test_flaky_ray"


def _devnull():
    return open(os.devnull, "w")




def assert_same_results(a: Path, b: Path, n_runs: int) -> int:
    """Same run directories, same files in them, tickets equal byte for byte, metrics equal (timings aside)."""
    names = run_names(a)
    assert names == run_names(b) and len(names) == n_runs
    compared = 0
    for name in names:
        files_a = sorted(str(p.relative_to(a / name)) for p in (a / name).rglob("*")
                         if p.is_file() and not p.name.startswith("."))
        files_b = sorted(str(p.relative_to(b / name)) for p in (b / name).rglob("*")
                         if p.is_file() and not p.name.startswith("."))
        assert files_a == files_b, name
        for rel in files_a:
            if rel.endswith("ticket.safetensors"):
                assert (a / name / rel).read_bytes() == (b / name / rel).read_bytes(), f"{name}/{rel}"
                compared += 1
            elif rel.endswith("metrics.json"):
                ma, mb = (json.loads((x / name / rel).read_text()) for x in (a, b))
                assert ma["test"] == mb["test"], f"{name}/{rel}"  # the scores, exactly
                assert without_timings(ma) == without_timings(mb), f"{name}/{rel}"
                compared += 1
    return compared


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray instance with 2 CPUs; its workers see the flaky plugin and the marker folder."""
    ray = pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("ray-plugin")
    (root / f"{PLUGIN_MODULE}.py").write_text(PLUGIN)
    markers = root / "markers"
    markers.mkdir()
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "TICKETS_TEST_MARKERS")}
    src = str(Path(__file__).resolve().parents[1] / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), src, saved["PYTHONPATH"]) if p)
    os.environ["TICKETS_TEST_MARKERS"] = str(markers)
    sys.path.insert(0, str(root))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield {"markers": markers}
    finally:
        ray.shutdown()
        sys.path.remove(str(root))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def flaky_plugin(ray_cluster):
    """The flaky methods registered in this process (workers import the module as a plugin of the study)."""
    from tickets import registry
    from tickets.methods import METHODS

    registry.load_plugins([PLUGIN_MODULE])
    for marker in ray_cluster["markers"].iterdir():
        marker.unlink()
    try:
        yield ray_cluster["markers"]
    finally:
        METHODS.unregister("crash-once")
        METHODS.unregister("raise-once")
        registry._PLUGINS_LOADED.discard(PLUGIN_MODULE)
        sys.modules.pop(PLUGIN_MODULE, None)


@pytest.mark.ray
def test_ray_equals_local_bit_for_bit_and_rerun_skips(ray_cluster, tmp_path, capsys):
    exp = tmp_path / "study.yaml"
    exp.write_text(STUDY)
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert run_experiment(exp, out=local, device="cpu", progress=False, report=False, stream=_devnull()) == 0
    assert main(["run", str(exp), "--executor", "ray", "--retries", "1", "--out", str(distributed), "--device",
                 "cpu", "--no-report", "--threads", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    # 2 finds × 3 levels (ticket + metrics each) + 8 transfer and dense runs (metrics)
    assert assert_same_results(local, distributed, n_runs=10) == 2 * 3 * 2 + 8
    # the first wave holds every dense and find job, and no transfer (no ticket exists yet); ETA lines are printed
    lines = text.splitlines()
    first = next(i for i, ln in enumerate(lines) if "] submitted " in ln)
    first_wave = lines[first:first + next(i for i, ln in enumerate(lines[first:]) if "] submitted " not in ln)]
    assert len(first_wave) == 6 and not any("transfer imp" in ln for ln in first_wave)
    assert "left" in text and "10/10 jobs done" in text
    progress = (distributed / "study-tiny" / "progress.jsonl").read_text().splitlines()
    assert len(progress) == 10 and all(json.loads(p)["status"] == "done" for p in progress)
    # a rerun (here with the local executor, as when a study moves between machines) finds everything done
    assert main(["run", str(exp), "--out", str(distributed), "--no-report", "--quiet"]) == 0
    assert "10 jobs, 10 already done" in capsys.readouterr().out
    assert len((distributed / "study-tiny" / "progress.jsonl").read_text().splitlines()) == 10


@pytest.mark.ray
def test_ray_retries_a_killed_worker_and_an_unexpected_error(flaky_plugin, tmp_path):
    exp = tmp_path / "flaky.yaml"
    exp.write_text(FLAKY)
    out = tmp_path / "runs"
    assert run_experiment(exp, out=out, device="cpu", progress=False, report=False, stream=_devnull(),
                          executor="ray", executor_options={"retries": 1}) == 0
    # both first attempts really happened (and failed) in a worker, not in this process
    pids = {tag: int((flaky_plugin / tag).read_text()) for tag in ("crash", "raise")}
    assert os.getpid() not in pids.values()
    done = [json.loads(line) for line in (out / "study-flaky" / "progress.jsonl").read_text().splitlines()]
    assert sorted(d["job"] for d in done if d["status"] == "done") == [
        "find crash-once small-cnn digits-5-9 seed 0", "find raise-once small-cnn digits-5-9 seed 0"]
    assert all((out / d["run"] / "level-00" / "DONE").exists() for d in done)


@pytest.mark.ray
def test_ray_without_retries_reports_the_failure_and_goes_on(flaky_plugin, tmp_path, capsys):
    exp = tmp_path / "flaky.yaml"
    exp.write_text(FLAKY.replace("[crash-once, raise-once]", "[raise-once, omp]"))
    out = tmp_path / "runs"
    assert run_experiment(exp, out=out, device="cpu", progress=False, report=False,
                          executor="ray", executor_options={"retries": 0}) == 1
    text = capsys.readouterr().out
    assert "failed: find raise-once small-cnn digits-5-9 seed 0: RuntimeError: injected failure" in text
    statuses = {json.loads(ln)["job"]: json.loads(ln)["status"]
                for ln in (out / "study-flaky" / "progress.jsonl").read_text().splitlines()}
    assert statuses == {"find raise-once small-cnn digits-5-9 seed 0": "failed",
                        "find omp small-cnn digits-5-9 seed 0": "done"}


# -- no cluster needed ---------------------------------------------------------------------------------------------
def test_resources_key_is_validated_with_its_line(tmp_path):
    base = STUDY.split("resources:")[0]
    exp = tmp_path / "bad.yaml"
    cases = {  # the tail appended to the study, the message, and its line counted from the `resources:` line
        "resources:\n  find: {cpus: 0}\n": ("resources.find.cpus must be a number > 0", 1),
        "resources:\n  find: {cpus: 1}\n  train: {cpus: 1}\n": ("unknown key 'train' in resources", 2),
        "resources:\n  dense: {gpus: -1}\n": ("resources.dense.gpus must be a number >= 0", 1),
        "resources:\n  dense: {memory: 4}\n": ("unknown key 'memory' in resources.dense", 1),
        "resources: [1, 2]\n": ("resources must be a mapping", 0),
    }
    for tail, (message, offset) in cases.items():
        line = base.count("\n") + 1 + offset
        exp.write_text(base + tail)
        with pytest.raises(TicketsError) as err:
            load_experiment(exp)
        assert f"{exp}:{line}: " in str(err.value) and message in str(err.value), (tail, str(err.value))
    exp.write_text(STUDY)
    assert load_experiment(exp).resources == {"find": {"cpus": 1.0, "gpus": 0.0}, "transfer": {"cpus": 1.0},
                                              "dense": {"cpus": 1.0}}


def test_resources_do_not_move_run_hashes(tmp_path):
    from tickets.study.plan import plan

    with_res, without = tmp_path / "a.yaml", tmp_path / "b.yaml"
    with_res.write_text(STUDY)
    without.write_text(STUDY.split("resources:")[0])
    runs = [[j.run for j in plan(load_experiment(p), tmp_path / "runs")[1]] for p in (with_res, without)]
    assert runs[0] == runs[1]


def test_executor_options_are_checked(tmp_path):
    exp = tmp_path / "study.yaml"
    exp.write_text(STUDY)
    assert main(["run", str(exp), "--retries", "1", "--out", str(tmp_path / "o")]) == 2  # local takes none
    assert "ray" in EXECUTORS and "slurm" in EXECUTORS
    if "ray" in sys.modules or _has("ray"):
        with pytest.raises(TicketsError, match="--retries must be a whole number"):
            EXECUTORS.get("ray")(retries=-1)
        with pytest.raises(TicketsError, match="takes no option cluster"):
            EXECUTORS.get("ray")(cluster="local")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
