"""``tickets run STUDY.yaml --executor ray [--address auto|HOST:PORT] [--retries N]``: every job a Ray task.

Each find / transfer / dense job becomes one task of ``run_remote`` with the CPUs and GPUs the experiment's
``resources:`` asks for its family (``ray.remote(num_cpus=…, num_gpus=…)``); a transfer is submitted the moment
its source find has finished, so transfers of one seed run while another seed's find still trains. A task whose
worker dies (killed, out of memory) or raises anything but a TicketsError is retried up to ``--retries`` times by
Ray (``max_retries`` / ``retry_exceptions``). Results land in the content-hashed run directories of ``--out``,
which must be on a filesystem every node shares, so a rerun — with any executor, on any machine — skips what is
done. Without ``--address`` a Ray instance is started on this machine (or the one ``$RAY_ADDRESS`` names is used)
and stopped at the end; ``auto`` joins the cluster ``ray start`` set up here; ``HOST:PORT`` a remote one (every
node needs ``tickets`` installed, see docs/experiments.md). When this process already called ``ray.init``, that
connection is used as it is.
"""

from __future__ import annotations

import os
from typing import Any

import ray

from tickets.errors import TicketsError
from tickets.study.execute import Study
from tickets.study.executors.base import RemoteExecutor, _one_line, run_remote
from tickets.study.plan import Job

# passed to the workers of a cluster this executor connects to (a local one inherits the whole environment)
FORWARDED_ENV = ("TICKETS_DATA", "TICKETS_MODELS", "TICKETS_CACHE", "TICKETS_PLUGINS", "HF_HUB_OFFLINE",
                 "TRANSFORMERS_OFFLINE", "HF_HOME")


class RayExecutor(RemoteExecutor):
    """Every job a Ray task with its family's resources; transfers start as soon as their ticket exists."""

    name = "ray"
    poll_seconds = 10.0

    def __init__(self, *, address: str | None = None, retries: int = 2, poll_seconds: float | None = None,
                 **unknown: Any):
        super().__init__(retries=retries, poll_seconds=poll_seconds, **unknown)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise TicketsError(f"--address must be auto or HOST:PORT, got {address!r}")
        self.address = address
        self._owns = False
        self._task: Any = None

    def open(self, study: Study) -> None:
        if ray.is_initialized():
            if self.address is not None:
                study.say(f"note: Ray is already initialised in this process; --address {self.address} is ignored")
        else:
            kwargs: dict[str, Any] = {"address": self.address, "log_to_driver": True}
            env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
            if env:
                kwargs["runtime_env"] = {"env_vars": env}
            if self.address is None and not os.environ.get("RAY_ADDRESS"):
                kwargs["include_dashboard"] = False
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or os.environ.get("RAY_ADDRESS") or "a new local instance"
                raise TicketsError(f"could not connect to Ray at {where} ({_one_line(exc)}): start a cluster with "
                                   "`ray start --head` and pass --address auto, or drop --address") from None
            self._owns = True
        self._task = ray.remote(run_remote)
        self._check_capacity(study)

    def _check_capacity(self, study: Study) -> None:
        """Say when a job family asks for more than the whole cluster has now (its tasks wait for a node)."""
        have = ray.cluster_resources()
        for family, res in sorted(study.exp.resources.items()):
            for key, ray_key in (("cpus", "CPU"), ("gpus", "GPU")):
                want = res.get(key, 0.0)
                if want > have.get(ray_key, 0.0):
                    study.say(f"note: {family} jobs ask for {want:g} {ray_key} but the Ray cluster has "
                              f"{have.get(ray_key, 0.0):g}: they wait until such a node joins")

    def submit(self, jobs: list[tuple[Job, dict[str, float], tuple]]) -> list[Any]:
        refs = []
        for job, res, args in jobs:
            opts = dict(num_cpus=res["cpus"], num_gpus=res["gpus"], max_retries=self.retries,
                        retry_exceptions=True, name=job.label())
            refs.append(self._task.options(**opts).remote(*args))
        return refs

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, Any]]:
        ready, rest = ray.wait(handles, num_returns=1, timeout=timeout)
        if ready and rest:  # collect everything else that is finished too, without waiting
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        out = []
        for ref in ready:
            try:
                out.append((ref, ray.get(ref)))
            except Exception as exc:  # the task failed after its retries, or its worker died for good
                out.append((ref, exc))
        return out

    def describe(self, exc: BaseException) -> str:
        cause = getattr(exc, "cause", None)
        if isinstance(exc, ray.exceptions.RayTaskError) and cause is not None:
            text = f"{type(cause).__name__}: {_one_line(cause)}"
        elif isinstance(exc, ray.exceptions.WorkerCrashedError):
            text = "its worker died (killed, or out of memory)"
        else:
            text = f"{type(exc).__name__}: {_one_line(exc)}"
        return f"{text} (after {self.retries} retr{'y' if self.retries == 1 else 'ies'})"

    def close(self) -> None:
        if self._owns:
            ray.shutdown()
            self._owns = False
