"""The seams other work lands on: registries open to plugins, configs as the one source of flags and YAML keys,
the loop's callbacks (order, state across a resume, metric direction), logging sinks, and an import graph
without cycles."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tickets.cli import main
from tickets.config import TrainConfig
from tickets.tasks import Task
from tickets.training.callbacks import Callback
from tickets.training.loop import fine_tune

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
FAST = ["--epochs", "1", "--batch-size", "32", "--device", "cpu", "--quiet"]


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "tickets.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env)


def test_plugin_method_and_task_run_through_the_cli(tmp_path):
    """A method and a task registered from outside the package work in `tickets find`, the listings and an
    experiment file; the toy method (θ0²) draws exactly OMP's masks."""
    out = tmp_path / "runs"
    common = ["--model", "small-cnn", "--task", "toy-blobs", "--sparsities", "0.5,0.8", *FAST, "--out", str(out)]
    toy = _cli("find", "--plugin", "toy_plugin", "--method", "toy-square", *common, cwd=tmp_path)
    assert toy.returncode == 0, toy.stderr
    omp = _cli("find", "--plugin", "toy_plugin", "--method", "omp", *common, cwd=tmp_path)
    assert omp.returncode == 0, omp.stderr
    from tickets.ticket import load_ticket

    runs = {json.loads(json.dumps(__import__("yaml").safe_load((p / "config.yaml").read_text())))["method"]: p
            for p in out.glob("find-*")}
    for level in (0, 1):
        a = load_ticket(runs["toy-square"] / f"level-{level:02d}" / "ticket.safetensors")
        b = load_ticket(runs["omp"] / f"level-{level:02d}" / "ticket.safetensors")
        assert a.mask.equal(b.mask) and a.meta["method"] == "toy-square"
    listing = _cli("methods", "--plugin", "toy_plugin", cwd=tmp_path)
    assert "toy-square" in listing.stdout
    tasks = _cli("tasks", cwd=tmp_path)  # without the plugin the name is unknown
    assert "toy-blobs" not in tasks.stdout
    exp = tmp_path / "exp.yaml"
    exp.write_text("models: [small-cnn]\nfind:\n  - tasks: [toy-blobs]\n    methods: [toy-square]\n")
    dry = _cli("run", str(exp), "--dry-run", "--plugin", "toy_plugin", "--out", str(out), cwd=tmp_path)
    assert dry.returncode == 0 and "done" in dry.stdout, dry.stderr
    unknown = _cli("find", "--method", "toy-square", *common, cwd=tmp_path)
    assert unknown.returncode == 2 and "toy-square" in unknown.stderr and unknown.stderr.count("\n") == 1


def test_plugin_pattern_runs_through_the_cli(tmp_path, monkeypatch):
    """A sparsity pattern registered from outside the package (toy-pairs: weights pruned in adjacent pairs) draws
    tickets in `tickets find` with any method, is recorded in them and listed by `tickets patterns`."""
    out = tmp_path / "runs"
    run = _cli("find", "--plugin", "toy_plugin", "--pattern", "toy-pairs", "--method", "omp", "--model", "small-cnn",
               "--task", "toy-blobs", "--sparsities", "0.5,0.8", *FAST, "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    monkeypatch.syspath_prepend(str(PLUGINS))
    __import__("toy_plugin")  # reading the ticket back verifies it against its declared pattern
    from tickets.ticket import load_ticket

    (run_dir,) = out.glob("find-*")
    masks = []
    for level, sparsity in enumerate((0.5, 0.8)):
        ticket = load_ticket(run_dir / f"level-{level:02d}" / "ticket.safetensors")
        assert ticket.meta["pattern"]["name"] == "toy-pairs"
        assert ticket.mask.sparsity == pytest.approx(sparsity, abs=1e-3)
        for name, m in ticket.mask.items():
            pairs = m.reshape(-1, 2)
            assert pairs[:, 0].equal(pairs[:, 1]), name
        masks.append(ticket.mask)
    assert all((masks[1][n] <= masks[0][n]).all() for n in masks[0].names)  # nested
    assert "toy-pairs" in _cli("patterns", "--plugin", "toy_plugin", cwd=tmp_path).stdout


def test_plugin_executor_runs_a_study_through_the_cli(tmp_path):
    """A study executor registered from outside the package runs a study's dense, find and transfer jobs into the
    same content-hashed run directories the local executor uses (a rerun with it finds them all done)."""
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: toy\nmodels: [small-cnn]\nschedule: {kind: explicit, sparsities: [0.5]}\n"
                   "train: {epochs: 1, batch_size: 32}\nfind:\n  - tasks: [toy-blobs]\n    methods: [omp]\n"
                   "transfer:\n  - from: [toy-blobs]\n    to: [toy-blobs]\n    methods: [omp]\n"
                   "    fractions: [0.5]\n")
    args = ["run", str(exp), "--plugin", "toy_plugin", "--device", "cpu", "--quiet", "--no-report",
            "--out", str(tmp_path / "runs")]
    plain = tmp_path / "plain.yaml"  # no plugin task, so the file checks and the executor is what is unknown
    plain.write_text("models: [small-cnn]\nfind:\n  - tasks: [digits]\n")
    unknown = _cli("run", str(plain), "--executor", "toy-in-order", "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert unknown.returncode == 2 and "toy-in-order" in unknown.stderr and unknown.stderr.count("\n") == 1
    toy = _cli(*args, "--executor", "toy-in-order", cwd=tmp_path)
    assert toy.returncode == 0, toy.stdout + toy.stderr
    assert "with the toy-in-order executor" in toy.stdout
    jobs = json.loads((tmp_path / "runs" / "study-toy" / "jobs.json").read_text())["jobs"]
    assert sorted(j["kind"] for j in jobs) == ["dense", "dense", "find", "transfer"]
    assert all(j["status"] == "done" for j in jobs), jobs
    again = _cli(*args, cwd=tmp_path)  # the local executor: nothing left to run
    assert again.returncode == 0 and "4 jobs, 4 already done" in again.stdout, again.stdout + again.stderr


def test_eval_honours_and_checks_every_config_key(tmp_path, capsys):
    good = tmp_path / "eval.yaml"
    good.write_text("model: small-cnn\ntask: digits\ndata: {limit: 20, val_size: 0}\nseed: 3\ndevice: cpu\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: small-cnn\ntask: digits\nbogus_key: 1\n")
    from tickets.models import load_model
    from tickets.ticket import Ticket, save_ticket
    from tickets.masks import Mask

    spec = load_model("small-cnn")
    ticket = tmp_path / "t.safetensors"
    save_ticket(ticket, Ticket(Mask.ones_like(spec.module, ["conv1.weight"]), {"model": "small-cnn"}))
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in spec.module.state_dict().items()}, str(weights))
    assert main(["eval", "--config", str(good), "--weights", str(weights), "--ticket", str(ticket), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["examples"] == 20  # data.limit from the file was honoured
    assert main(["eval", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'bogus_key'" in err and err.count("\n") == 1


class _Recorder(Callback):
    key = "recorder"

    def __init__(self):
        self.events, self.calls = [], 0

    def on_train_begin(self, state):
        self.events.append("train_begin")

    def on_resume(self, state):
        self.events.append("resume")

    def on_epoch_begin(self, state):
        self.events.append("epoch_begin")

    def on_batch(self, state, batch):
        self.events.append("batch")
        return batch

    def before_optimizer_step(self, state):
        self.events.append("before_step")

    def after_optimizer_step(self, state):
        self.calls += 1
        self.events.append(f"after_step:{state.step}")

    def on_evaluate(self, state, split, metrics):
        self.events.append(f"evaluate:{split}")

    def on_epoch_end(self, state, record):
        self.events.append("epoch_end")

    def on_train_end(self, state):
        self.events.append("train_end")

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def _digits(train_size=64):
    from tickets.models import load_model
    from tickets.tasks import DataConfig, load_task

    spec = load_model("small-cnn")
    spec.adapt_to(load_task("digits", model=spec), "fresh", 0)
    task = load_task("digits", model=spec, data=DataConfig(train_size=train_size, val_size=16, limit=32))
    return spec, task


def test_callbacks_run_in_documented_order_and_keep_state_across_a_resume():
    spec, task = _digits()
    cfg = TrainConfig(epochs=2, batch_size=24, optimizer="sgd", lr=0.01)  # 48 examples → 2 steps per epoch
    rec = _Recorder()
    saved = {}
    from tickets.training.callbacks import CheckpointCallback

    ckpt = CheckpointCallback(lambda state: saved.setdefault("ckpt", state), [rec])
    start = {k: v.clone() for k, v in spec.module.state_dict().items()}
    fine_tune(spec.module, task, cfg, device="cpu", callbacks=[rec, ckpt], progress=False)
    assert rec.events[:8] == ["train_begin", "epoch_begin", "batch", "before_step", "after_step:1", "batch",
                              "before_step", "after_step:2"]
    assert rec.events[8:10] == ["evaluate:val", "epoch_end"] and rec.events[-1] == "train_end"
    assert saved["ckpt"]["callbacks"]["recorder"] == {"calls": 2}  # saved after epoch 1 (not after the last)
    again = _Recorder()
    spec.module.load_state_dict(start)  # a level resumes from its start weights plus the checkpoint
    fine_tune(spec.module, task, cfg, device="cpu", callbacks=[again], resume=saved["ckpt"], progress=False)
    assert again.events[:2] == ["train_begin", "resume"] and again.calls == 4  # 2 restored + 2 in epoch 2


class _ScriptedLoss:
    """A metric whose value per evaluation is scripted: val loss 0.5, 0.3, 0.4 over three epochs."""

    values = []

    def update(self, outputs, batch):
        pass

    def compute(self):
        return {"loss": _ScriptedLoss.values.pop(0)}


def test_model_selection_follows_the_metric_direction():
    spec, task = _digits()
    lossy = Task(task.name, task.kind, task.num_outputs, task.train, task.val, task.test, "loss", _ScriptedLoss,
                 task.loss_fn)
    _ScriptedLoss.values = [0.5, 0.3, 0.4]
    result = fine_tune(spec.module, lossy, TrainConfig(epochs=3, batch_size=32, optimizer="sgd", lr=0.01),
                       device="cpu", progress=False)
    assert result.best_epoch == 1 and result.val["loss"] == 0.3  # the lowest loss, not the highest


def test_tensorboard_and_mlflow_sinks_write_what_they_were_given(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs"
    assert main(["find", "--model", "small-cnn", "--task", "digits-5-9", "--sparsities", "0.5", "--train-size",
                 "200", "--epochs", "2", "--out", str(out), "--log-to", "tensorboard,mlflow", "--device", "cpu",
                 "--quiet"]) == 0
    run = next(out.glob("find-*"))
    metrics = json.loads((run / "level-01" / "metrics.json").read_text())
    acc = EventAccumulator(str(run / "tensorboard" / "level-01"))
    acc.Reload()
    val = [e.value for e in acc.Scalars("val/accuracy")]
    assert val == pytest.approx([h["val"]["accuracy"] for h in metrics["history"]])
    assert acc.Scalars("test/accuracy")[0].value == pytest.approx(metrics["test"]["accuracy"])
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("tickets").experiment_id])
    level1 = next(r for r in runs if r.info.run_name.endswith("level-01"))
    history = client.get_metric_history(level1.info.run_id, "train_loss")
    assert [m.value for m in history] == pytest.approx([h["train_loss"] for h in metrics["history"]])
    assert [m.step for m in history] == [h["step"] for h in metrics["history"]]
    assert float(level1.data.params["sparsity"]) == pytest.approx(metrics["sparsity"])


def test_cli_progress_goes_through_the_library_logger(tmp_path, capsys, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="tickets"):
        assert main(["transfer", "--model", "small-cnn", "--task", "digits-5-9", "--train-size", "200", *FAST[:4],
                     "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert any("epoch 1/1" in r.getMessage() for r in caplog.records)
    assert "epoch 1/1" in capsys.readouterr().err
    assert main(["transfer", "--model", "small-cnn", "--task", "digits-5-9", "--train-size", "200", *FAST[:4],
                 "--out", str(tmp_path / "q"), "--device", "cpu", "--quiet"]) == 0
    assert "epoch" not in capsys.readouterr().err


def _imports(path: Path, package_root: Path) -> set[str]:
    """Every tickets module ``path`` imports (module level or inside functions)."""
    tree = ast.parse(path.read_text())
    mod = ".".join(path.relative_to(package_root.parent).with_suffix("").parts)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("tickets")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tickets"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m != mod}


def test_the_import_graph_has_no_cycles():
    root = REPO / "src" / "tickets"
    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {m: {i for i in _imports(p, root) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ re-exporting its submodules is not a cycle of the code's dependencies
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for n in graph[m]:
            if m.startswith(n + ".") or n.startswith(m + "."):
                continue
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles
    # only the entry points (`tickets` script, `python -m tickets`) sit above the CLI
    assert not any("tickets.cli" in deps for m, deps in graph.items() if m not in ("tickets.cli", "tickets.__main__"))


# docs/architecture.md's layers, top to bottom (a name is a module or a package of the same rank), and the
# function-level imports it lists as going back up; any other upward import fails the test below.
LAYERS = ["cli", "study", "verbs", "training", "tasks", "config", "methods integrations", "ticket", "patterns",
          "pruning", "masks"]
UPWARD = {("tickets.verbs.demo", "tickets.study.report"), ("tickets.config", "tickets.training"),
          ("tickets.tasks.contrastive", "tickets.training.probe"), ("tickets.ticket", "tickets.integrations.hub")}


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if module.count(".") else ""
    return next((i for i, names in enumerate(LAYERS) if top in names.split()), None)


def test_module_level_imports_never_go_back_up_the_layers():
    """Module-level imports go down docs/architecture.md's layers only; the function-level ones that go back up
    are exactly those it lists."""
    root = REPO / "src" / "tickets"
    upward, at_module_level = set(), []
    for path in root.rglob("*.py"):
        mod = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tickets.")):
                continue
            here, there = _layer(mod), _layer(node.module)
            if here is not None and there is not None and there < here:
                if id(node) in in_function:
                    upward.add((mod, node.module))
                else:
                    at_module_level.append(f"{mod}:{node.lineno} -> {node.module}")
    assert not at_module_level
    assert upward == UPWARD


def test_generated_flags_cover_every_config_field():
    """Every CLI field of the configs has a flag (and --help shows it), so YAML keys and flags cannot drift."""
    import dataclasses

    from tickets.cli import _FLAGS_BY_COMMAND, build_parser
    from tickets.config import EvalConfig, FindConfig, TransferConfig
    from tickets.hparams import fields_of, unwrap_optional

    build_parser()

    def leaves(cls):
        for f, hint in fields_of(cls):
            inner, _ = unwrap_optional(hint)
            if dataclasses.is_dataclass(inner):
                yield from leaves(inner)
            elif f.metadata.get("cli", True):
                yield f

    for command, cls in (("find", FindConfig), ("transfer", TransferConfig), ("eval", EvalConfig)):
        n = sum(1 for _ in leaves(cls))
        assert len(_FLAGS_BY_COMMAND[command]) >= n - 1  # the enable flag stands for its block's first field
        assert not math.isnan(n)
