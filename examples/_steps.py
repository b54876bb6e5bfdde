"""The step runner shared by the study scripts in this folder (robust-tickets.py, upstream.py): each step is one
`tickets` command, logged to a steps.jsonl with its wall and CPU seconds and run directory, retried when it fails
for a reason other than bad input (exit 2), and skipped work is the command's own (runs resume by content hash).
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import time
from pathlib import Path


def run_step(log: Path, name: str, argv: list[str], *, retries: int = 3, pause: float = 60.0) -> str:
    """Run one command; append ``{step, argv, rc, attempt, wall_s, cpu_s, time, run, json}`` to ``log``; return
    its stdout. Retries up to ``retries`` times unless it exits 2 (bad input); SystemExit when it keeps failing."""
    for attempt in range(1, retries + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(argv)}", flush=True)
        proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        run = re.search(r"^run: (.+)$", proc.stdout, re.M)
        record = {"step": name, "argv": argv, "rc": proc.returncode, "attempt": attempt,
                  "wall_s": round(time.time() - t0, 1), "cpu_s": round(cpu, 1), "time": time.time(),
                  "run": run.group(1).strip() if run else None,
                  "json": json_tail(proc.stdout) if "--json" in argv else None}
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(proc.stdout, end="", flush=True)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: rc {proc.returncode}, wall {record['wall_s']} s, "
              f"cpu {record['cpu_s']} s", flush=True)
        if proc.returncode == 0:
            return proc.stdout
        if proc.returncode == 2:  # bad input: retrying will not help
            break
        time.sleep(pause)
    raise SystemExit(f"step {name} failed; fix it and rerun this script (finished work is kept)")


def json_tail(stdout: str):
    """The JSON object a `--json` command printed last, or None."""
    try:
        return json.loads(stdout[stdout.index("{"):])
    except ValueError:
        return None


def run_path(stdout: str) -> str:
    """The run directory a `tickets find|transfer|pretrain` command printed (``run: <path>``)."""
    match = re.search(r"^run: (.+)$", stdout, re.M)
    if not match:
        raise SystemExit("could not find the run directory in the command's output")
    return match.group(1).strip()


def read_steps(log: str | Path) -> dict[str, dict]:
    """Last successful record per step of a steps.jsonl, with the CPU and wall seconds of the attempt that did the
    work (the largest: a later attempt that only found the work done costs nothing). Failed attempts and
    unreadable lines are ignored; a missing file gives {}."""
    steps: dict[str, dict] = {}
    path = Path(log)
    if not path.exists():
        return steps
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("rc") != 0:
            continue
        prev = steps.get(r["step"])
        if prev is not None:
            r = {**r, "cpu_s": max(r["cpu_s"], prev["cpu_s"]), "wall_s": max(r["wall_s"], prev["wall_s"])}
        steps[r["step"]] = r
    return steps
