"""What the distributed executors share: the job function a worker runs, each job's resources, and the loop that
submits jobs as soon as they can run, collects results, retries, and prints progress with an ETA.

A worker needs no study: ``run_remote`` gets a job's kind and config, the output folder and the run options, and
goes through ``tickets.study.execute.execute_job`` — the path the local executor takes — so every job lands in
the run directory named by its content hash whichever machine ran it (the folders must be on a filesystem every
worker shares). The driver alone keeps the study's bookkeeping (jobs.json, progress.jsonl).
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from tickets.errors import TicketsError
from tickets.log import get_logger
from tickets.runs import RunBusy
from tickets.study.execute import WAIT_SECONDS, Executor, Study, execute_job, fmt_seconds
from tickets.study.plan import Job

DEFAULT_CPUS = 1.0
logger = get_logger(__name__)


def run_remote(kind: str, config: Any, out: str, run_kwargs: dict[str, Any], plugins: Sequence[str] = (),
               threads: int | None = None) -> dict[str, Any]:
    """Run one job on a worker (a Ray task, a Slurm job) and say how it went, as a plain dict.

    Imports the driver's plugin modules first (so their models, tasks and methods are known here), sets torch's
    intra-op threads to ``threads`` (the CPU cores the job asked for), then calls ``execute_job``. Returns
    ``{"status": "done", "run": <run directory>, ...}``, ``{"status": "error", "message": ...}`` for a
    TicketsError (bad input: retrying would not help, so it is not raised) or ``{"status": "busy", ...}`` when
    another live process is writing the run. Any other exception propagates, so the engine retries the job.
    Every answer carries ``wall`` and ``cpu`` (seconds), ``host`` and ``pid``."""
    t0, c0 = time.time(), time.process_time()
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}

    def timed(**fields: Any) -> dict[str, Any]:
        return {**info, **fields, "wall": time.time() - t0, "cpu": time.process_time() - c0}

    try:
        from tickets.registry import load_plugins

        load_plugins(list(plugins))
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        path = execute_job(kind, config, out, run_kwargs)
    except RunBusy as exc:
        return timed(status="busy", message=str(exc))
    except TicketsError as exc:
        return timed(status="error", message=str(exc))
    return timed(status="done", run=str(path))


def job_family(job: Job) -> str:
    """``find``, ``transfer`` or ``dense``: the key of the experiment's ``resources:`` mapping for ``job``."""
    return job.kind


def job_resources(study: Study, job: Job) -> dict[str, float]:
    """``{"cpus": c, "gpus": g}`` the experiment's ``resources:`` asks for ``job`` (defaults: 1 CPU, no GPU)."""
    res = study.exp.resources.get(job_family(job), {})
    return {"cpus": float(res.get("cpus", DEFAULT_CPUS)), "gpus": float(res.get("gpus", 0.0))}


def loaded_plugins() -> list[str]:
    """Plugin modules this process imported (``--plugin``, ``$TICKETS_PLUGINS``), for workers to import too."""
    from tickets import registry

    return [m for m in registry.loaded_plugins() if ":" not in m]


def _absolute(config: Any) -> Any:
    """A copy of a job's config whose file paths (ticket, weights) are absolute: workers may start elsewhere.
    Paths never enter run hashes (tickets are named by checksum, weights by sha256), so hashes do not move."""
    changes = {}
    for name in ("ticket", "weights"):
        value = getattr(config, name, None)
        if isinstance(value, (str, os.PathLike)) and value and not Path(value).is_absolute():
            changes[name] = str(Path(value).absolute())
    return dataclasses.replace(config, **changes) if changes else config


@dataclass
class Flight:
    """A submitted job: the engine's handle, which attempt this is, when it was submitted."""

    job: Job
    handle: Any
    attempt: int
    submitted: float


class Progress:
    """Counts and an ETA for the whole study: remaining fine-tunes × wall seconds per fine-tune so far (which
    already reflects how many jobs run at once)."""

    def __init__(self, jobs: list[Job]):
        self.total = len(jobs)
        self.units_total = sum(j.units for j in jobs)
        self.units_done = 0
        self.finished = 0
        self.failed = 0
        self.started = time.time()

    def done(self, job: Job) -> None:
        """``job`` finished here: its fine-tunes count towards the rate."""
        self.units_done += job.units
        self.finished += 1

    def drop(self, job: Job, *, failed: bool) -> None:
        """``job`` needs no more work from us: it failed, or another process finished it (no time of ours)."""
        self.units_total -= job.units
        if failed:
            self.failed += 1
        else:
            self.finished += 1

    def line(self, submitted: int, waiting: int) -> str:
        """``3/10 jobs done, 1 failed, 2 submitted, 4 waiting; 1m20s elapsed, ~3m40s left``."""
        elapsed = time.time() - self.started
        eta = ""
        if self.units_done:
            left = max(0, self.units_total - self.units_done)
            eta = f", ~{fmt_seconds(elapsed / self.units_done * left)} left"
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.finished}/{self.total} jobs done{failed}, {submitted} submitted, {waiting} waiting; "
                f"{fmt_seconds(elapsed)} elapsed{eta}")


class RemoteExecutor(Executor):
    """A study run by an engine that runs jobs elsewhere. Subclasses implement ``open`` / ``submit`` / ``wait`` /
    ``describe`` / ``close``; this class decides what can run (a transfer once its ticket exists, nothing another
    process is writing), submits it with its resources, and books results into the study.

    ``retries``: how often a job that crashed (an exception other than TicketsError, or a killed worker) is run
    again. Engines that retry themselves (Ray) get it as their own setting; others (``resubmit = True``) are
    resubmitted by this loop."""

    resubmit: ClassVar[bool] = False
    poll_seconds: float = 10.0

    def __init__(self, *, retries: int = 2, poll_seconds: float | None = None, **unknown: Any):
        if unknown:
            raise TicketsError(f"executor {self.name!r} takes no option {', '.join(sorted(unknown))}: drop "
                               f"{', '.join('--' + k.replace('_', '-') for k in sorted(unknown))}")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise TicketsError(f"--retries must be a whole number >= 0, got {retries!r}")
        self.retries = retries
        if poll_seconds is not None:
            if not isinstance(poll_seconds, (int, float)) or poll_seconds <= 0:
                raise TicketsError(f"poll_seconds must be a number > 0, got {poll_seconds!r}")
            self.poll_seconds = float(poll_seconds)

    # -- what an engine implements -----------------------------------------------------------------------------
    def open(self, study: Study) -> None:
        """Connect to the engine (TicketsError naming the fix when it cannot)."""

    def submit(self, jobs: list[tuple[Job, dict[str, float], tuple]]) -> list[Any]:
        """Submit ``(job, resources, args of run_remote)`` items; one handle per item, in order."""
        raise NotImplementedError

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]:
        """Handles finished within ``timeout`` seconds (returns as soon as one is), each with its outcome: the
        dict ``run_remote`` returned, or the exception the engine raised for it."""
        raise NotImplementedError

    def describe(self, exc: BaseException) -> str:
        """One line for a failed job's exception."""
        return _one_line(exc)

    def close(self) -> None:
        """Disconnect; called even when the loop fails."""

    # -- the loop ----------------------------------------------------------------------------------------------
    def payload(self, study: Study, job: Job, resources: dict[str, float]) -> tuple:
        return (job.kind, _absolute(job.config), str(Path(study.out).absolute()), self._run_kwargs,
                self._plugins, max(1, math.ceil(resources["cpus"])))

    def run(self, study: Study) -> None:
        todo = [j for j in study.jobs if j.status != "done"]
        if not todo:
            return
        from tickets import paths

        kw = dict(study.run_kwargs)
        for key, find in (("data_root", paths.data_root), ("model_root", paths.model_root)):
            root = find(kw.get(key), required=False)  # the driver's roots, absolute, so every worker reads them
            kw[key] = None if root is None else str(Path(root).absolute())
        self._run_kwargs = kw
        self._plugins = loaded_plugins()
        self.open(study)
        try:
            self._loop(study, todo)
        finally:
            self.close()

    def _loop(self, study: Study, todo: list[Job]) -> None:
        say = study.say
        progress = Progress(todo)
        waiting: list[Job] = list(todo)
        flights: list[Flight] = []
        crashes: dict[int, int] = {}  # id(job) → how often it crashed

        def failed(job: Job) -> bool:
            return any(f is job for f, _ in study.failed)

        while True:
            ready, still = [], []
            for job in waiting:
                study.predict(job)
                if job.status == "done":  # another process finished it meanwhile
                    progress.drop(job, failed=False)
                    continue
                if job.kind == "transfer" and job.run is None:
                    src = job.source_job
                    if failed(src) or src.status == "done":
                        study.fail(job, f"its ticket ({src.label()}) was not produced")
                        progress.drop(job, failed=True)
                    else:
                        still.append(job)
                    continue
                if study.running_elsewhere(job):
                    job.note = "running in another process"
                    still.append(job)
                    continue
                ready.append(job)
            waiting = still
            if ready:
                flights += self._submit(study, ready, crashes, progress, len(flights), len(waiting))
            if not flights:
                if not waiting:
                    break
                blocked = [j for j in waiting if study.running_elsewhere(j)]
                if not blocked:
                    for j in waiting:
                        study.fail(j, j.note or "could not start")
                        progress.drop(j, failed=True)
                    break
                say(f"waiting for {len(blocked)} run(s) another process is writing, e.g. {blocked[0].label()} ...")
                time.sleep(WAIT_SECONDS)
                continue
            for handle, outcome in self.wait([f.handle for f in flights], self.poll_seconds):
                flight = next(f for f in flights if f.handle is handle or f.handle == handle)
                flights.remove(flight)
                job = flight.job
                if isinstance(outcome, BaseException):
                    crashes[id(job)] = n = crashes.get(id(job), 0) + 1
                    if self.resubmit and n <= self.retries:
                        say(f"[{study.index(job)}/{len(study.jobs)}] {job.label()} crashed "
                            f"({self.describe(outcome)}); retry {n}/{self.retries}")
                        flights += self._submit(study, [job], crashes, progress, len(flights), len(waiting))
                        continue
                    logger.warning("%s failed: %s", job.label(), outcome)  # the engine's full report
                    wall = time.time() - flight.submitted
                    study.fail(job, self.describe(outcome), wall, 0.0)
                    progress.drop(job, failed=True)
                elif outcome.get("status") == "busy":
                    job.note = "running in another process"
                    waiting.append(job)
                    continue
                elif outcome.get("status") == "error":
                    study.fail(job, outcome["message"], outcome["wall"], outcome["cpu"])
                    progress.drop(job, failed=True)
                else:
                    progress.done(job)
                    say(f"[{study.index(job)}/{len(study.jobs)}] finished {job.label()} on {outcome['host']} -- "
                        f"{progress.line(len(flights), len(waiting))}")
                    study.finished(job, Path(outcome["run"]), outcome["wall"], outcome["cpu"])

    def _submit(self, study: Study, jobs: list[Job], crashes: dict[int, int], progress: Progress, running: int,
                waiting: int) -> list[Flight]:
        items = [(job, res, self.payload(study, job, res)) for job in jobs for res in [job_resources(study, job)]]
        handles = self.submit(items)
        now = time.time()
        for job, res, _ in items:
            gpus = f", {res['gpus']:g} GPU" if res["gpus"] else ""
            again = f", attempt {crashes[id(job)] + 1}" if id(job) in crashes else ""
            study.say(f"[{study.index(job)}/{len(study.jobs)}] submitted {job.label()} ({res['cpus']:g} CPU{gpus}"
                      f"{again})")
        study.say(f"    {progress.line(running + len(items), waiting)}")
        return [Flight(job, h, crashes.get(id(job), 0) + 1, now) for (job, _, _), h in zip(items, handles)]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
