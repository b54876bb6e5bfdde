"""``tickets run STUDY.yaml --executor slurm [--retries N]``: every job a Slurm job, through submitit.

The driver (this process) submits the jobs that can run now — every dense baseline and find, and each transfer
once its source find has finished — one job array per wave and resource shape, then polls; a transfer whose
ticket appears goes out in the next wave, so dependencies are honoured without Slurm knowing about them. Jobs
run ``run_remote`` (``tickets.study.executors.base``) on the compute nodes and write the same content-hashed run
directories as any other executor, so ``--out`` must be on a filesystem the nodes share; a crashed job (an
exception other than TicketsError, a node failure, a time-out) is resubmitted up to ``--retries`` times and then
resumes from its last finished level. Keep the driver alive for the whole study (tmux, or a small CPU job of its
own); if it dies, rerunning the same command waits for the jobs still running and submits the rest.

The experiment file's ``slurm:`` mapping sets the partition, time limit, memory, array parallelism, account, QOS
and constraint; each family's ``resources:`` (cpus, gpus) win over ``slurm.cpus_per_task`` /
``slurm.gpus_per_node`` for that family. Logs of every job are in ``OUT/study-<name>/slurm/``.

``cluster`` (Python API only) picks submitit's backend: ``slurm`` (default; needs ``sbatch``), or ``local``
(subprocesses on this machine, what the tests use) or ``debug`` (in this process).
"""

from __future__ import annotations

import math
import shutil
import time
from typing import Any

import submitit

from tickets.errors import TicketsError
from tickets.study.execute import Study
from tickets.study.executors.base import RemoteExecutor, _one_line, run_remote
from tickets.study.plan import Job

DEFAULT_TIME_MIN = 12 * 60  # submitit's own default (5 minutes) would kill most fine-tunes
CLUSTERS = ("slurm", "local", "debug")


class SlurmExecutor(RemoteExecutor):
    """Every job a Slurm job (one array per wave and resource shape) through submitit; waves honour dependencies."""

    name = "slurm"
    resubmit = True
    poll_seconds = 15.0

    def __init__(self, *, retries: int = 1, cluster: str = "slurm", poll_seconds: float | None = None,
                 **unknown: Any):
        super().__init__(retries=retries, poll_seconds=poll_seconds, **unknown)
        if cluster not in CLUSTERS:
            raise TicketsError(f"unknown submitit cluster {cluster!r}: choose one of {', '.join(CLUSTERS)}")
        self.cluster = cluster
        self._executor: Any = None
        self._study: Study | None = None

    def open(self, study: Study) -> None:
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise TicketsError("--executor slurm needs Slurm's `sbatch` on PATH: run `tickets run` on a Slurm login "
                               "node, or use --executor local or ray")
        self._study = study
        self._executor = submitit.AutoExecutor(folder=study.sdir / "slurm", cluster=self.cluster)

    def parameters(self, study: Study, family: str, res: dict[str, float]) -> dict[str, Any]:
        """submitit parameters of one job of ``family`` asking for ``res`` (cpus, gpus)."""
        s = study.exp.slurm
        given = study.exp.resources.get(family, {})
        cpus = given.get("cpus", s.get("cpus_per_task", res["cpus"]))
        gpus = given.get("gpus", s.get("gpus_per_node", res["gpus"]))
        params: dict[str, Any] = {
            "name": f"tickets-{study.exp.name}-{family}",
            "timeout_min": int(s.get("time_min", DEFAULT_TIME_MIN)),
            "cpus_per_task": max(1, math.ceil(cpus)),
            "gpus_per_node": math.ceil(gpus),
            "mem_gb": s.get("mem_gb"),
        }
        for key in ("partition", "array_parallelism", "account", "qos", "constraint"):
            if key in s:
                params[f"slurm_{key}"] = s[key]
        return params

    def payload(self, study: Study, job: Job, resources: dict[str, float]) -> tuple:
        kind, config, out, run_kwargs, plugins, _ = super().payload(study, job, resources)
        threads = self.parameters(study, job.kind, resources)["cpus_per_task"]
        return kind, config, out, run_kwargs, plugins, threads

    def submit(self, jobs: list[tuple[Job, dict[str, float], tuple]]) -> list[Any]:
        study = self._study
        groups: dict[tuple, list[int]] = {}
        params = []
        for i, (job, res, _) in enumerate(jobs):
            p = self.parameters(study, job.kind, res)
            params.append(p)
            groups.setdefault(tuple(sorted((k, v) for k, v in p.items() if v is not None)), []).append(i)
        handles: list[Any] = [None] * len(jobs)
        for key, members in groups.items():
            self._executor.update_parameters(**dict(key))
            submitted = []
            try:
                with self._executor.batch():  # one job array per resource shape
                    for i in members:
                        submitted.append(self._executor.submit(run_remote, *jobs[i][2]))
            except Exception as exc:  # sbatch refused (bad partition, account, limits)
                raise TicketsError(f"Slurm refused the jobs ({_one_line(exc)}): check the experiment's slurm: "
                                   "settings") from None
            for i, handle in zip(members, submitted):
                handles[i] = handle
        return handles

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]:
        deadline = time.time() + timeout
        while True:
            done = [h for h in handles if h.done()]
            if done or time.time() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.time())))
        out = []
        for h in done:
            try:
                out.append((h, h.result()))
            except Exception as exc:  # the job raised, was killed, or timed out
                out.append((h, _JobFailed(h, exc)))
        return out

    def describe(self, exc: BaseException) -> str:
        return str(exc)


class _JobFailed(Exception):
    """A Slurm job that did not return: the last line of its error, and where its log is."""

    def __init__(self, job: Any, exc: BaseException):
        # submitit's message: a header, the job's traceback between lines of dashes, then where the logs are;
        # the traceback's last line names the error
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        cuts = [i for i, ln in enumerate(lines) if set(ln) == {"-"}]
        body = lines[cuts[0] + 1:cuts[1]] if len(cuts) >= 2 else lines
        last = body[-1] if body else type(exc).__name__
        try:
            log = f"; log: {job.paths.stderr}"
        except Exception:  # pragma: no cover - a job submitit cannot name paths for
            log = ""
        super().__init__(f"job {job.job_id}: {_one_line(Exception(last))}{log}")
