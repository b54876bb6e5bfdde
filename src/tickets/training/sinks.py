"""Logging sinks: where a fine-tune's per-epoch figures go besides the run's ``log.jsonl``.

``--log-to tensorboard,mlflow`` adds one callback per sink to every fine-tune of a run. Each sink is a registry
entry (``SINKS.register(name, factory)``), a factory ``(run_dir: Path, level: int) -> Callback``:

* ``tensorboard``: event files under ``<run>/tensorboard/level-NN/`` (``torch.utils.tensorboard``; needs the
  ``tensorboard`` package): scalars ``train/loss``, ``train/lr``, ``train/examples_per_second``, ``val/<metric>``
  per epoch (x-axis: optimizer steps) and ``test/<metric>`` once at the end;
* ``mlflow``: one MLflow run per level named ``<run-dir>/level-NN`` with the same metrics (step = optimizer steps)
  and the level's sparsity as a parameter; tracking URI ``$MLFLOW_TRACKING_URI`` (e.g. ``sqlite:///mlflow.db`` or
  a tracking server), else a local file store ``<out>/mlruns`` next to the run directories (needs ``mlflow`` or
  ``mlflow-skinny``). A resumed level (after a kill) continues its unfinished MLflow run rather than starting a
  second one; a level run again after its run FINISHED gets a new run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from tickets.errors import TicketsError
from tickets.runs import RunLayout
from tickets.training import SINKS, parse_sinks  # noqa: F401  (parse_sinks re-exported)
from tickets.training.callbacks import Callback, LoopState

class Sink(Callback):
    """A callback that also receives the level's final (test) figures through ``finish``."""

    def finish(self, metrics: dict[str, Any]) -> None: ...


def _scalars(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))
            and not isinstance(v, bool)}


class TensorBoardSink(Sink):
    """Per-epoch scalars to TensorBoard event files."""

    key = "tensorboard"

    def __init__(self, run_dir: Path, level: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TicketsError("--log-to tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.logdir = Path(run_dir) / "tensorboard" / RunLayout(run_dir).level(level).name
        self.writer = SummaryWriter(log_dir=str(self.logdir))
        self.step = 0

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        self.step = state.step
        values = {"train/loss": record["train_loss"], "train/lr": record["lr"],
                  "train/examples_per_second": record["examples_per_second"], **_scalars("val", record["val"])}
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=state.step)
        self.writer.flush()

    def finish(self, metrics: dict[str, Any]) -> None:
        for tag, value in _scalars("test", metrics.get("test", {})).items():
            self.writer.add_scalar(tag, value, global_step=self.step)
        if "sparsity" in metrics:
            self.writer.add_scalar("sparsity", float(metrics["sparsity"]), global_step=self.step)
        self.writer.close()


class MLflowSink(Sink):
    """Per-epoch metrics to an MLflow run (one per level)."""

    key = "mlflow"

    def __init__(self, run_dir: Path, level: int):
        try:
            import mlflow
        except ImportError:
            raise TicketsError("--log-to mlflow needs the mlflow package: pip install mlflow") from None
        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local file store next to the runs (MLflow 3 keeps it only behind this opt-in)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (Path(run_dir).parent / "mlruns").resolve().as_uri()
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        exp_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "tickets")
        exp = self.client.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(exp_name)
        name = f"{Path(run_dir).name}/{RunLayout(run_dir).level(level).name}"
        tags = {"tickets.run": name, "tickets.run_dir": str(Path(run_dir).resolve())}
        self.step = 0
        previous = self._unfinished(exp_id, tags)
        if previous is not None:  # a resumed level (the last attempt was killed): keep logging to its run
            self.run_id = previous.info.run_id
            if previous.info.status != "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
            steps = [m.step for m in self.client.get_metric_history(self.run_id, "train_loss")]
            self.step = max(steps, default=0)
        else:  # a first attempt, or a rerun of a level whose run already FINISHED: a new run
            self.run_id = self.client.create_run(exp_id, run_name=name, tags=tags).info.run_id

    def _unfinished(self, exp_id: str, tags: dict[str, str]) -> Any:
        """The latest run of this level (same run name and run directory) if it never finished, else None."""
        if "'" in tags["tickets.run"]:
            return None
        runs = self.client.search_runs([exp_id], filter_string=f"tags.`tickets.run` = '{tags['tickets.run']}'",
                                       order_by=["attributes.start_time DESC"])
        runs = [r for r in runs if r.data.tags.get("tickets.run_dir") == tags["tickets.run_dir"]]
        return runs[0] if runs and runs[0].info.status != "FINISHED" else None

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        self.step = state.step
        values = {"train_loss": record["train_loss"], "lr": record["lr"],
                  "examples_per_second": record["examples_per_second"],
                  **{k.replace("/", "_"): v for k, v in _scalars("val", record["val"]).items()}}
        for key, value in values.items():
            self.client.log_metric(self.run_id, key, float(value), step=state.step)

    def finish(self, metrics: dict[str, Any]) -> None:
        for key, value in _scalars("test", metrics.get("test", {})).items():
            self.client.log_metric(self.run_id, key.replace("/", "_"), value, step=self.step)
        if "sparsity" in metrics:
            self.client.log_param(self.run_id, "sparsity", f"{float(metrics['sparsity']):.6f}")
        self.client.set_terminated(self.run_id)


def make_sinks(names: Sequence[str], run_dir: Path, level: int) -> list[Sink]:
    """One callback per sink name for level ``level`` of the run in ``run_dir``."""
    return [SINKS.get(name)(run_dir, level) for name in names]
