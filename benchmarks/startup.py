"""Start-up CPU of a small ResNet-20 job, per process, with and without the torch._dynamo import.

    python benchmarks/startup.py [--rounds 10]

Each round starts, in alternating order, two fresh Python processes running the same tiny job through the
CLI (``tickets transfer --model resnet20-cifar10 --task cifar10 --train-size 100 --epochs 1 --max-steps 1
--limit 64 --threads 1 --quiet``: imports, data, model, one optimizer step, one evaluation, run files) and
measures their CPU (user + system, from ``getrusage(RUSAGE_CHILDREN)``):

* ``now``: the project as it is (the optimizer no longer imports torch._dynamo, see ``training/loop.py``);
* ``before``: the same job with ``import torch._dynamo`` first, which is what every optimizer did before
  (``add_param_group`` / ``step`` import it in torch 2.13).

Prints both medians, the per-round before/now ratio, whether each process ended with torch._dynamo imported,
and, for scale, the CPU of processes that only ``import torch``, ``import tickets.cli`` and ``import
torch._dynamo``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from _timing import ROOT, child_cpu_seconds, describe, interleave, parser, print_ratios, setup

JOB = ["transfer", "--model", "resnet20-cifar10", "--task", "cifar10", "--train-size", "100", "--epochs", "1",
       "--max-steps", "1", "--limit", "64", "--threads", "1", "--quiet"]

PROBE = ("import atexit, sys; atexit.register(lambda: print('dynamo-imported', 'torch._dynamo' in sys.modules, "
         "file=sys.stderr)); ")


def python(code: str, env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{out.stderr[-3000:]}")
    return out.stderr


def main(argv: list[str] | None = None) -> None:
    ap = parser(__doc__)
    args = ap.parse_args(argv)
    setup(args)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    seen: dict[str, set] = {"now": set(), "before": set()}
    with tempfile.TemporaryDirectory() as tmp:
        def job(pre: str, label: str):
            def run():
                code = (PROBE + pre + "from tickets.cli import main; "
                        f"sys.exit(main({JOB + ['--out', os.path.join(tmp, label)]!r}))")
                err = python(code, env)
                seen[label].add("dynamo-imported True" in err)
            return run

        times = interleave({"before": job("import torch._dynamo; ", "before"), "now": job("", "now")},
                           rounds=args.rounds, clock=child_cpu_seconds)
    print("CPU per process of a tiny ResNet-20 transfer job (speed-up = before / variant):")
    print_ratios(times, baseline="before")
    saved = [b - n for b, n in zip(times["before"], times["now"])]
    print(f"  CPU saved per process: {describe(saved)} s")
    for label, flags in seen.items():
        print(f"  {label}: torch._dynamo imported at exit: {sorted(flags)}")
    parts = {"import torch": "import torch", "import tickets.cli": "import tickets.cli",
             "import torch, then torch._dynamo": "import torch; import torch._dynamo"}
    scale = interleave({k: (lambda c=c: python(c, env)) for k, c in parts.items()}, rounds=max(3, args.rounds // 3),
                       clock=child_cpu_seconds)
    print("for scale, CPU per process that only imports:")
    for k, v in scale.items():
        print(f"  {k:36s} {describe(v)} s")


if __name__ == "__main__":
    main()
