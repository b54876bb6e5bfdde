"""What every benchmark shares: one torch thread, CPU time, interleaved rounds, ratio summaries, common flags.

The machine the figures come from is shared, so wall time says little: every benchmark measures the CPU time of
its own process (``resource.getrusage``: user + system, all threads) and compares variants as *ratios inside one
process*, the variants interleaved round by round (the order rotates each round) so that other load hits all of
them alike. A figure is the median of the per-round ratios, with their spread (min–max and the interquartile
range), never a single run.

Use::

    from _timing import parser, setup, interleave, print_ratios
    args = parser(__doc__).parse_args()
    setup(args)                                   # torch threads (1 by default), data / model roots
    times = interleave({"before": f, "after": g}, rounds=args.rounds)
    print_ratios(times, baseline="before")
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"


def cpu_seconds() -> float:
    """CPU seconds used by this process so far (user + system, every thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child_cpu_seconds() -> float:
    """CPU seconds used by this process's finished children (user + system)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def parser(doc: str | None, *, rounds: int = 10) -> argparse.ArgumentParser:
    """The flags every benchmark takes: ``--rounds`` (at least 10 by default), ``--threads`` (1: the project's
    CPU setting), ``--data-root`` and ``--model-root`` (default $TICKETS_DATA / $TICKETS_MODELS, else
    ../shared)."""
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    ap.add_argument("--rounds", type=int, default=rounds, help=f"interleaved rounds (default {rounds})")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as `--threads 1`)")
    ap.add_argument("--data-root", default=os.environ.get("TICKETS_DATA", str(SHARED / "data")))
    ap.add_argument("--model-root", default=os.environ.get("TICKETS_MODELS", str(SHARED / "models")))
    return ap


def setup(args: argparse.Namespace) -> None:
    """Apply the common flags: torch threads, and the data / model roots as the project reads them."""
    import torch

    torch.set_num_threads(args.threads)
    os.environ["TICKETS_DATA"] = args.data_root
    os.environ["TICKETS_MODELS"] = args.model_root
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def interleave(variants: dict[str, Callable[[], Any]], *, rounds: int, warmup: int = 1,
               clock: Callable[[], float] = cpu_seconds) -> dict[str, list[float]]:
    """Run every variant once per round, in an order that rotates each round, after ``warmup`` untimed rounds;
    returns the CPU seconds of each call per variant."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = clock()
            variants[name]()
            times[name].append(clock() - t0)
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def ratios(num: list[float], den: list[float]) -> list[float]:
    """Per-round ratios num/den (rounds paired, so shared-machine load cancels)."""
    return [a / b for a, b in zip(num, den) if b > 0]


def describe(values: list[float], fmt: str = "{:.2f}") -> str:
    """``median [q1–q3, min–max]`` of a list."""
    q1, med, q3 = quartiles(values)
    f = fmt.format
    return f"{f(med)} [IQR {f(q1)}–{f(q3)}, range {f(min(values))}–{f(max(values))}, n={len(values)}]"


def print_ratios(times: dict[str, list[float]], *, baseline: str, title: str = "", per: float = 1.0,
                 unit: str = "s", speedup: bool = True, file=sys.stdout) -> dict[str, float]:
    """Print each variant's median CPU time (divided by ``per``, e.g. per step) and its per-round ratio to
    ``baseline``: ``baseline / variant`` (a speed-up) when ``speedup``, else ``variant / baseline`` (a cost
    ratio). Returns the median ratio per variant."""
    if title:
        print(title, file=file)
    out = {}
    for name, values in times.items():
        r = ratios(times[baseline], values) if speedup else ratios(values, times[baseline])
        out[name] = statistics.median(r) if r else float("nan")
        label = f"{baseline}/{name}" if speedup else f"{name}/{baseline}"
        print(f"  {name:24s} median {statistics.median(values) / per:9.4f} {unit}   {label} {describe(r)}",
              file=file)
    return out


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


# -- the project's pieces, shared by the benchmarks -----------------------------------------------------------------
MODELS = {"resnet20": ("resnet20-cifar10", "cifar10"), "resnet56": ("resnet56-cifar10", "cifar10"),
          "minilm": ("minilm-l6", "glue/sst2")}


def prepared(key: str, args: argparse.Namespace, train_size: int = 2000, head: str | None = None):
    """``tickets.verbs.prepare.prepare`` for a benchmark model key (resnet20, resnet56, minilm): pre-trained
    weights, the task's seeded training subset, the model's default prunable set. ResNets keep their CIFAR-10
    head (``pretrained``); MiniLM gets a fresh SST-2 head, as at the start of a fine-tune."""
    from tickets.tasks import DataConfig
    from tickets.verbs.prepare import prepare

    model, task = MODELS[key]
    head = head or ("fresh" if key == "minilm" else "pretrained")
    return prepare(model, task, data=DataConfig(train_size=train_size), head=head, data_root=args.data_root,
                   model_root=args.model_root)


def train_config(p, **overrides):
    """The resolved TrainConfig the project would train ``p`` with (family defaults + the model's recipe)."""
    from tickets.config import TrainConfig, resolve_train

    return resolve_train(TrainConfig(**overrides), p.family, p.recipe)


def magnitude_mask(p, sparsity: float):
    """Global magnitude pruning of θ0 over the prunable set (what OMP / IMP level 1 draws)."""
    from tickets.masks import Mask
    from tickets.pruning import magnitude_prune

    ones = Mask.ones_like(p.model, p.names)
    return ones if sparsity == 0 else magnitude_prune({n: p.theta0[n] for n in p.names}, ones, sparsity)


def training_batches(p, cfg, n: int, seed: int = 0) -> list:
    """The first ``n`` training batches of an epoch, as the loop draws them (shuffled, augmented, dynamic
    padding for text)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for batch in p.task.train.batches(cfg.batch_size, shuffle=True, generator=gen, augment=True):
        out.append(batch)
        if len(out) == n:
            break
    return out


def legacy_apply_(mask, model) -> None:
    """``Mask.apply_`` as it was before issue 11 (``masked_fill_`` of the inverted mask, per tensor): the
    "before" of the mask-work figures."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            params[name].masked_fill_(~m.to(params[name].device), 0)


def legacy_mask_grads_(mask, model) -> None:
    """``Mask.mask_grads_`` as it was before issue 11."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            grad = params[name].grad
            if grad is not None:
                grad.masked_fill_(~m.to(grad.device), 0)
