"""Running a planned study: ``run_experiment(path)`` and the Executor interface (local here; ray and slurm in
``tickets.study.executors``, registered below).

An executor receives a ``Study`` (the checked experiment, its jobs with predicted run directories, and what a job
needs to run) and runs every job that is not done, respecting that a transfer needs its source ticket. Jobs go
through the Python API (``find_tickets`` / ``transfer``), so each lands in the run directory named by its content
hash whatever executor ran it, and a rerun skips what is done. A run another process is writing right now is
recognised by its lock (``runs.run_lock``, released by the operating system when that process dies) and waited
for, never trained twice.

The study's own bookkeeping lives in ``OUT/study-<name>/``: ``experiment.yaml`` (the file as given), ``jobs.json``
(every job, its axes, run directory and status) and ``progress.jsonl`` (one line per job run, with wall and CPU
seconds). ``tickets report OUT/study-<name>`` turns it into report.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from tickets.errors import TicketsError
from tickets.fileio import atomic_write_text, write_json
from tickets.log import get_logger
from tickets.registry import Registry
from tickets.runs import RunBusy, RunLayout, is_locked
from tickets.study.plan import Expander, Job, format_plan, plan
from tickets.study.spec import STATUSES, Experiment, load_experiment

logger = get_logger(__name__)
WAIT_SECONDS = 30


def study_dir(out: Path, exp: Experiment) -> Path:
    return out / f"study-{exp.name}"


def fmt_seconds(s: float) -> str:
    """``75`` → ``1m15s``; ``7300`` → ``2h01m``."""
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def execute_job(kind: str, config: Any, out: str | os.PathLike, run_kwargs: dict[str, Any]) -> Path:
    """Run one job (``kind`` find | transfer | dense, its FindConfig / TransferConfig) through the Python API in
    this process and return its run directory. Every executor ends here, in this process or on a worker
    (``tickets.study.executors.base.run_remote``), so a job lands in the same content-hashed directory
    whichever executor ran it. Raises what the verbs raise (TicketsError, RunBusy)."""
    if kind == "find":
        from tickets.verbs.find import find_tickets

        return find_tickets(config, out=out, **run_kwargs).path
    from tickets.verbs.transfer import transfer

    return transfer(config, out=out, **run_kwargs).path


@dataclass
class Study:
    """A planned study being run: what an executor needs, and the bookkeeping it must keep."""

    exp: Experiment
    expander: Expander
    jobs: list[Job]
    out: Path
    run_kwargs: dict[str, Any]  # device, data_root, model_root, progress, log_to
    say: Callable[[str], None]
    failed: list[tuple[Job, str]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def sdir(self) -> Path:
        return study_dir(self.out, self.exp)

    def index(self, job: Job) -> int:
        return next(i for i, j in enumerate(self.jobs, 1) if j is job)

    def predict(self, job: Job) -> None:
        self.expander.predict(job, self.out)

    def running_elsewhere(self, job: Job) -> bool:
        """Is another live process writing this job's run (or, for a transfer still waiting, its source)?"""
        run = job.run if job.run is not None else (job.source_job.run if job.source_job else None)
        return run is not None and is_locked(RunLayout(run).lock)

    def execute(self, job: Job) -> Path:
        """Run ``job`` in this process; returns its run directory."""
        return execute_job(job.kind, job.config, self.out, self.run_kwargs)

    def finished(self, job: Job, run_path: Path, wall: float, cpu: float) -> None:
        if job.run is not None and Path(run_path).resolve() != job.run.resolve():
            self.say(f"    note: ran in {run_path}, predicted {job.run} (the dry-run prediction drifted)")
        job.run, job.actual, job.status = Path(run_path), True, "done"
        self.progress(job, "done", wall, cpu)
        self.say(f"    done in {fmt_seconds(wall)} (cpu {fmt_seconds(cpu)}): {os.path.relpath(run_path, self.out)}")
        self.write_jobs()

    def fail(self, job: Job, message: str, wall: float = 0.0, cpu: float = 0.0) -> None:
        self.failed.append((job, message))
        self.say(f"    FAILED: {message}")
        self.progress(job, "failed", wall, cpu, message)

    def progress(self, job: Job, status: str, wall: float, cpu: float, error: str = "") -> None:
        record = {"time": round(time.time(), 3), "job": job.label(), "kind": job.kind, "status": status,
                  "run": None if job.run is None else os.path.relpath(job.run, self.out),
                  "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}
        if error:
            record["error"] = error
        self.sdir.mkdir(parents=True, exist_ok=True)
        with open(self.sdir / "progress.jsonl", "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def write_jobs(self) -> None:
        records = []
        for j in self.jobs:
            r = j.to_record(self.out)
            r["line"] = self.exp.located.line(j.path) if j.path else None
            records.append(r)
        write_json(self.sdir / "jobs.json", {"name": self.exp.name, "description": self.exp.description,
                                             "file": str(self.exp.file), "out": str(self.out),
                                             "models": self.exp.models, "seeds": self.exp.seeds, "jobs": records})


class Executor:
    """How a study's jobs run. Subclasses set ``name`` and implement ``run(study)``: run every job not done
    (a transfer only once its source ticket exists), calling ``study.finished`` / ``study.fail`` per job."""

    name: ClassVar[str] = ""

    def __init__(self, **options: Any):
        if options:
            raise TicketsError(f"executor {self.name!r} takes no options, got {', '.join(options)}")

    def run(self, study: Study) -> None:
        raise NotImplementedError


class LocalExecutor(Executor):
    """Every job in this process, one after the other: seed by seed, dense → find → transfer within a seed."""

    name = "local"

    def run(self, study: Study) -> None:
        units_total = sum(j.units for j in study.jobs if j.status != "done")
        units_done, work = 0, 0.0
        pending = [j for j in study.jobs if j.status != "done"]
        while pending:
            deferred, progressed = [], False
            for job in pending:
                study.predict(job)
                if job.status == "done":
                    progressed = True
                    continue
                if job.kind == "transfer" and job.run is None:
                    src = job.source_job
                    if src.status == "done" or any(f is src for f, _ in study.failed):
                        study.fail(job, f"its ticket ({src.label()}) was not produced")
                    else:
                        deferred.append(job)
                    continue
                if study.running_elsewhere(job):
                    job.note = "running in another process"
                    deferred.append(job)
                    continue
                eta = ""
                if units_done:
                    eta = f", ~{fmt_seconds(max(0.0, (units_total - units_done) * work / units_done))} left"
                study.say(f"[{study.index(job)}/{len(study.jobs)}] {job.label()} ... "
                          f"({fmt_seconds(time.time() - study.started)} elapsed{eta})")
                t0, c0 = time.time(), time.process_time()
                try:
                    run_path = study.execute(job)
                except RunBusy:  # another process locked the run between the check and the start
                    job.note = "running in another process"
                    study.say("  another process took it first; back to it when that process is done")
                    deferred.append(job)
                    continue
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # one bad job must not sink a long study: report it, go on
                    if not isinstance(exc, TicketsError):
                        traceback.print_exc(file=sys.stderr)
                    msg = str(exc) if isinstance(exc, TicketsError) else f"{type(exc).__name__}: {exc}"
                    study.fail(job, msg, time.time() - t0, time.process_time() - c0)
                    continue
                wall = time.time() - t0
                units_done += job.units
                work += wall
                progressed = True
                study.finished(job, run_path, wall, time.process_time() - c0)
            pending = deferred
            if pending and not progressed:
                waiting = [j for j in pending if study.running_elsewhere(j)]
                if not waiting:
                    for j in pending:
                        study.fail(j, j.note or "could not start")
                    break
                study.say(f"waiting for {len(waiting)} run(s) another process is writing, e.g. {waiting[0].label()} "
                          "...")
                time.sleep(WAIT_SECONDS)


EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register("local", LocalExecutor, help="every job in this process, one after the other")
EXECUTORS.register("ray", "tickets.study.executors.ray:RayExecutor", install='pip install -e ".[ray]"',
                   help="every job a Ray task with its resources; transfers start once their ticket exists")
EXECUTORS.register("slurm", "tickets.study.executors.slurm:SlurmExecutor", install='pip install -e ".[slurm]"',
                   help="every job a Slurm job (arrays per wave) through submitit")


def run_experiment(
    path: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    dry_run: bool = False,
    device: str = "auto",
    data_root=None,
    model_root=None,
    progress: bool = True,
    report: bool = True,
    stream=None,
    executor: str = "local",
    executor_options: dict | None = None,
    log_to: Sequence[str] = (),
) -> int:
    """Validate, expand and (unless ``dry_run``) run an experiment file with ``executor``. Returns 0 when every
    job is done, 1 otherwise (failed jobs are listed; one bad job never stops the others). A dry run runs nothing
    but rewrites an existing study folder's ``jobs.json`` with the current plan, so a report made after other
    processes (or priority phase files of the same study) finished runs lists them."""
    stream = stream or sys.stdout
    exp = load_experiment(path)
    out_dir = Path(out or exp.out or "runs")
    runner = EXECUTORS.get(executor)(**(executor_options or {}))
    ex, jobs = plan(exp, out_dir, data_root=data_root, model_root=model_root)
    if dry_run:
        print(format_plan(jobs, out_dir), file=stream)
        existing = Study(exp, ex, jobs, out_dir, {}, lambda msg: None)
        if existing.sdir.is_dir():  # refresh the index `tickets report` reads: runs that other processes (or
            existing.write_jobs()   # priority phase files of the same study) finished get listed
        return 0

    def say(msg: str) -> None:
        print(msg, file=stream, flush=True)

    study = Study(exp, ex, jobs, out_dir, dict(device=device, data_root=data_root, model_root=model_root,
                                                progress=progress, log_to=list(log_to)), say)
    study.sdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study.sdir / "experiment.yaml", Path(path).read_text())
    study.write_jobs()
    units = sum(j.units for j in jobs if j.status != "done")
    say(f"study {exp.name}: {len(jobs)} jobs, {sum(j.status == 'done' for j in jobs)} already done; "
        f"about {units} fine-tunes to run with the {runner.name} executor -> {study.sdir}")
    runner.run(study)
    for job in jobs:
        study.predict(job)
    study.write_jobs()
    counts = {s: sum(j.status == s for j in jobs) for s in STATUSES}
    say(f"study {exp.name}: {counts['done']}/{len(jobs)} jobs done in {fmt_seconds(time.time() - study.started)}")
    for job, msg in study.failed:
        say(f"  failed: {job.label()}: {msg}")
    if report:
        from tickets.study.report import write_report

        say(f"report: {write_report(study.sdir)}")
    return 0 if not study.failed and counts["done"] == len(jobs) else 1
